//! Every plugin output is checked before the host uses it: a plugin is
//! untrusted, so names, lengths and counts are bounded here.

use super::bindings::{Capabilities, DirPage, FileInfo};
use super::error::StorageError;

/// Longest file name (bytes), in a client's request and in a plugin's
/// output alike: NAME_MAX, what clients expect.
pub const MAX_NAME_LEN: usize = 255;
/// Longest path (link target, cursor) a plugin may return (bytes).
pub const MAX_PATH_LEN: usize = 4096;
/// Most entries one `list-dir` page may hold, whatever limit was asked.
pub const MAX_PAGE_ENTRIES: u32 = 1024;
/// Bounds of the preferred chunk sizes a plugin may declare.
pub const MIN_CHUNK: u32 = 4 * 1024;
pub const MAX_CHUNK: u32 = 8 * 1024 * 1024;

fn invalid(what: String) -> StorageError {
    StorageError::PluginFailed(format!("invalid plugin output: {what}"))
}

pub fn name(name: &str) -> Result<(), StorageError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("empty, \".\" or \"..\" name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("name of {} bytes (max {MAX_NAME_LEN})", name.len())));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(invalid("name contains '/' or NUL".into()));
    }
    Ok(())
}

pub fn path(path: &str) -> Result<(), StorageError> {
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(format!("path of {} bytes (max {MAX_PATH_LEN})", path.len())));
    }
    if path.contains('\0') {
        return Err(invalid("path contains NUL".into()));
    }
    Ok(())
}

/// Longest version tag (ETag, generation) a plugin may return (bytes).
pub const MAX_VERSION_LEN: usize = 256;

/// Longest `writer.recovery-token`.
pub const MAX_RECOVERY_TOKEN_LEN: usize = 1024;

pub fn file_info(info: &FileInfo) -> Result<(), StorageError> {
    if info.permissions > 0o7777 {
        return Err(invalid(format!("permissions {:o} beyond 0o7777", info.permissions)));
    }
    if let Some(version) = &info.version {
        if version.is_empty() {
            return Err(invalid("an empty version (say none instead)".into()));
        }
        if version.len() > MAX_VERSION_LEN {
            return Err(invalid(format!("version of {} bytes (max {MAX_VERSION_LEN})", version.len())));
        }
        // It is shown in logs and handed back to the plugin: printable only.
        if !version.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(invalid("version with bytes that are not printable ASCII".into()));
        }
    }
    Ok(())
}

/// Checks a page; entries whose name is longer than a client can use are
/// left out so the rest of the directory still lists: how many were.
pub fn dir_page(page: &mut DirPage, cursor: Option<&str>, limit: u32) -> Result<usize, StorageError> {
    let max = limit.clamp(1, MAX_PAGE_ENTRIES) as usize;
    if page.entries.len() > max {
        return Err(invalid(format!("{} entries in a page of at most {max}", page.entries.len())));
    }
    let listed = page.entries.len();
    page.entries.retain(|entry| entry.name.len() <= MAX_NAME_LEN);
    let left_out = listed - page.entries.len();
    for entry in &page.entries {
        name(&entry.name)?;
        file_info(&entry.info)?;
    }
    if let Some(next) = &page.next_cursor {
        path(next)?;
        if cursor == Some(next.as_str()) {
            // The same cursor again would keep a client listing forever.
            return Err(invalid("a page whose next cursor is the cursor it was asked for".into()));
        }
        if listed == 0 {
            // A cursor with no entries would let a plugin keep a client listing forever.
            return Err(invalid("empty page with a next cursor".into()));
        }
    }
    Ok(left_out)
}

pub fn read(data_len: usize, asked: u32) -> Result<(), StorageError> {
    if data_len > asked as usize {
        return Err(invalid(format!("read returned {data_len} bytes, {asked} asked")));
    }
    Ok(())
}

pub fn capabilities(caps: &mut Capabilities) -> Result<(), StorageError> {
    if caps.name.len() > 64 || caps.version.len() > 64 {
        return Err(invalid("plugin name or version longer than 64 bytes".into()));
    }
    // Both name the plugin in logs and in `wasftp plugin info`.
    if caps.name.is_empty() || caps.version.is_empty() {
        return Err(invalid("an empty plugin name or version".into()));
    }
    let printable = |text: &str| text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !printable(&caps.name) || !printable(&caps.version) {
        return Err(invalid("a plugin name or version with bytes that are not printable ASCII".into()));
    }
    caps.read_chunk = caps.read_chunk.clamp(MIN_CHUNK, MAX_CHUNK);
    caps.write_chunk = caps.write_chunk.clamp(MIN_CHUNK, MAX_CHUNK);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_separators_or_nul_are_rejected() {
        assert!(name("a/b").is_err());
        assert!(name("a\0b").is_err());
        assert!(name("..").is_err());
        assert!(name("").is_err());
        assert!(name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(name("ok.txt").is_ok());
    }

    #[test]
    fn versions_are_bounded_and_printable() {
        let info = |version: &str| FileInfo {
            kind: crate::plugin::FileKind::File,
            size: 0,
            permissions: 0o644,
            modified: 0,
            accessed: 0,
            version: Some(version.into()),
        };
        assert!(file_info(&info("\"0x8d9f\"")).is_ok(), "an S3 ETag");
        assert!(file_info(&info(&"e".repeat(MAX_VERSION_LEN + 1))).is_err());
        assert!(file_info(&info("a\nb")).is_err());
        assert!(file_info(&info("caf\u{e9}")).is_err());
    }

    #[test]
    fn reads_longer_than_asked_are_rejected() {
        assert!(read(11, 10).is_err());
        assert!(read(10, 10).is_ok());
    }

    #[test]
    fn a_plugin_name_or_version_must_be_printable() {
        let caps = |name: &str, version: &str| Capabilities {
            name: name.into(),
            version: version.into(),
            scope: crate::plugin::InstanceScope::Stateless,
            random_write: false,
            append: false,
            atomic_rename: false,
            set_info: false,
            symlinks: false,
            hard_links: false,
            read_chunk: 4096,
            write_chunk: 4096,
            durable_sync: false,
            max_file_size: None,
            copy: false,
            abort_orphans: false,
        };
        assert!(capabilities(&mut caps("memory", "0.1.0 beta")).is_ok());
        for (name, version) in [("red\x1b[31m", "1"), ("ok", "1\n2"), ("bidi\u{202e}", "1")] {
            assert!(capabilities(&mut caps(name, version)).is_err(), "{name:?} {version:?}");
        }
    }
}
