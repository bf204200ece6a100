//! What a write that keeps the content started from, and the check at
//! commit that it is still what the name holds. Such a write copies the
//! current file and renames the copy over the name at `finish`; if
//! another upload (an append too) was committed meanwhile, that rename
//! would silently drop it. So the commit compares the file under the name
//! with the base and answers `conflict` instead of losing the other write.
//! A truncating write starts from nothing: the last one to commit wins, as
//! rename-over does on any POSIX server.

use wasftp_sdk::prelude::*;

/// The content a keep-content write started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The name was free: it must still be at commit.
    Absent,
    /// The file of this version (identity, mtime and size, see
    /// [`crate::attrs::version`]): a change in place or a replacement
    /// since gives another.
    Version(String),
}

impl Base {
    /// The base of a write starting from the file described by `current`
    /// (none when the name is free).
    pub fn of(current: Option<&FileInfo>) -> Base {
        match current.and_then(|info| info.version.clone()) {
            Some(version) => Base::Version(version),
            None => Base::Absent,
        }
    }

    /// Ok when `current` (what the name holds now, none when it is free)
    /// is still the base; `conflict` when it was changed, replaced,
    /// removed or taken since.
    pub fn check(&self, current: Option<&FileInfo>) -> Result<()> {
        let unchanged = match (self, current) {
            (Base::Absent, None) => true,
            (Base::Version(base), Some(now)) => now.kind == FileKind::File && now.version.as_deref() == Some(base.as_str()),
            _ => false,
        };
        if unchanged { Ok(()) } else { Err(conflict()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: &str) -> FileInfo {
        FileInfo {
            kind: FileKind::File,
            size: 3,
            permissions: 0o644,
            modified: 10,
            accessed: 10,
            version: Some(version.into()),
        }
    }

    #[test]
    fn the_base_it_started_from_commits() {
        let base = Base::of(Some(&file("id1-10.0-3")));
        assert_eq!(base, Base::Version("id1-10.0-3".into()));
        assert_eq!(base.check(Some(&file("id1-10.0-3"))), Ok(()));
        assert_eq!(Base::of(None).check(None), Ok(()), "a name still free");
    }

    #[test]
    fn another_commit_meanwhile_is_a_conflict_not_a_silent_loss() {
        let base = Base::of(Some(&file("id1-10.0-3")));
        // Another append renamed into place: a new inode, a new size.
        assert_eq!(base.check(Some(&file("id2-11.0-6"))), Err(Error::Conflict));
        // Changed in place (a SETSTAT size), or removed.
        assert_eq!(base.check(Some(&file("id1-12.0-0"))), Err(Error::Conflict));
        assert_eq!(base.check(None), Err(Error::Conflict));
        // Replaced by something that is no file (a link, a directory).
        let link = FileInfo { kind: FileKind::Symlink, version: None, ..file("") };
        assert_eq!(base.check(Some(&link)), Err(Error::Conflict));
        // A name free at the start, taken by another upload since.
        assert_eq!(Base::Absent.check(Some(&file("id3-13.0-1"))), Err(Error::Conflict));
    }
}
