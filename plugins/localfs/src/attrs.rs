//! What a file's description says where WASI has nothing to tell: mode
//! bits (WASI has none) and the version a reader can pin.

use wasftp_sdk::prelude::*;

/// The mode reported for `kind`: WASI reports no mode bits and cannot
/// set any, so these are fixed, and say whether the folder is writable.
pub fn permissions(kind: FileKind, read_only: bool) -> u32 {
    match (kind, read_only) {
        (FileKind::Symlink, _) => 0o777,
        (FileKind::Directory, false) => 0o755,
        (FileKind::Directory, true) => 0o555,
        (FileKind::File | FileKind::Other, false) => 0o644,
        (FileKind::File | FileKind::Other, true) => 0o444,
    }
}

/// A file's version: its identity (the host's hash of device and inode),
/// its modification time to the nanosecond and its size. An overwrite is
/// a new inode (uploads are renamed into place) and an in-place change
/// moves the mtime, so either gives another version.
pub fn version(identity: (u64, u64), modified: (u64, u32), size: u64) -> String {
    let ((upper, lower), (seconds, nanos)) = (identity, modified);
    format!("{upper:016x}{lower:016x}-{seconds}.{nanos:09}-{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_kind_and_the_folder() {
        assert_eq!(permissions(FileKind::File, false), 0o644);
        assert_eq!(permissions(FileKind::Directory, false), 0o755);
        assert_eq!(permissions(FileKind::Symlink, false), 0o777);
        assert_eq!(permissions(FileKind::File, true), 0o444);
        assert_eq!(permissions(FileKind::Directory, true), 0o555);
        assert_eq!(permissions(FileKind::Symlink, true), 0o777);
    }

    #[test]
    fn versions_are_short_printable_and_change_with_each_part() {
        let base = version((u64::MAX, 1), (u64::MAX, 999_999_999), u64::MAX);
        assert!(base.len() <= 256 && base.bytes().all(|b| b.is_ascii_graphic()), "{base}");
        let v = |id: u64, secs: u64, nanos: u32, size: u64| version((0, id), (secs, nanos), size);
        let one = v(1, 10, 5, 100);
        assert_eq!(one, "00000000000000000000000000000001-10.000000005-100");
        for other in [v(2, 10, 5, 100), v(1, 11, 5, 100), v(1, 10, 6, 100), v(1, 10, 5, 101)] {
            assert_ne!(one, other);
        }
    }
}
