//! File info to SFTP attributes and `ls -l` long names.

use russh_sftp::protocol::FileAttributes;

use crate::plugin::{FileInfo, FileKind, SetAttrs};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

pub fn type_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::Directory => S_IFDIR,
        FileKind::Symlink => S_IFLNK,
        FileKind::File | FileKind::Other => S_IFREG,
    }
}

pub fn to_attrs(info: &FileInfo, uid: u32, gid: u32) -> FileAttributes {
    FileAttributes {
        size: Some(info.size),
        uid: Some(uid),
        user: None,
        gid: Some(gid),
        group: None,
        permissions: Some(type_bits(info.kind) | (info.permissions & 0o7777)),
        atime: Some(clamp_time(info.accessed)),
        mtime: Some(clamp_time(info.modified)),
    }
}

/// SFTP v3 times are 32-bit.
fn clamp_time(seconds: u64) -> u32 {
    seconds.min(u32::MAX as u64) as u32
}

/// What a client asked to change, in contract terms. `None` if nothing.
pub fn to_set_attrs(attrs: &FileAttributes) -> Option<SetAttrs> {
    let set = SetAttrs {
        size: attrs.size,
        permissions: attrs.permissions.map(|p| p & 0o7777),
        accessed: attrs.atime.map(u64::from),
        modified: attrs.mtime.map(u64::from),
    };
    let empty = set.size.is_none() && set.permissions.is_none() && set.accessed.is_none() && set.modified.is_none();
    (!empty).then_some(set)
}

/// `-rw-r--r--   1 alice    alice        1234 Nov 23 18:00 name`
pub fn long_name(name: &str, info: &FileInfo, owner: &str, now: u64) -> String {
    let mut mode = String::with_capacity(10);
    mode.push(match info.kind {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        _ => '-',
    });
    for shift in [6u32, 3, 0] {
        let bits = (info.permissions >> shift) & 7;
        mode.push(if bits & 4 != 0 { 'r' } else { '-' });
        mode.push(if bits & 2 != 0 { 'w' } else { '-' });
        mode.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let when = chrono::DateTime::from_timestamp(info.modified.min(i64::MAX as u64) as i64, 0).unwrap_or_default();
    // Like ls: the year instead of the time for dates over six months away.
    let six_months = 182 * 24 * 3600;
    let date = if info.modified.saturating_add(six_months) < now || info.modified > now.saturating_add(six_months) {
        when.format("%b %e  %Y")
    } else {
        when.format("%b %e %H:%M")
    };
    format!("{mode}    1 {owner:<8} {owner:<8} {:>8} {date} {}", info.size, escape_for_display(name))
}

/// `name` as `ls -b` shows it: control characters (C0, DEL, C1) and the
/// invisible bidirectional controls as octal escapes of their UTF-8 bytes,
/// a backslash doubled. For the long names a client prints as they are:
/// a plugin or another client chose the name, and an ESC sequence or a
/// right-to-left override must not reach the user's terminal. The exact
/// name still goes in the `filename` field.
pub fn escape_for_display(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if needs_escape(c) {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\{byte:03o}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped_for_display() {
        assert!(matches!(escape_for_display("plain name.txt"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape_for_display("a\u{1b}[31mred"), "a\\033[31mred");
        assert_eq!(escape_for_display("line\r\nbreak\u{7f}"), "line\\015\\012break\\177");
        assert_eq!(escape_for_display("cod\u{202e}txt.exe"), "cod\\342\\200\\256txt.exe");
        assert_eq!(escape_for_display("back\\slash"), "back\\134slash", "an escape cannot be forged");
        assert_eq!(escape_for_display("\u{85}c1"), "\\302\\205c1");
        assert_eq!(escape_for_display("été 日本"), "été 日本");
    }

    fn info(kind: FileKind, permissions: u32) -> FileInfo {
        FileInfo { kind, size: 1234, permissions, modified: 1_700_000_000, accessed: 1_700_000_000, version: None }
    }

    #[test]
    fn attrs_carry_type_bits() {
        let a = to_attrs(&info(FileKind::Directory, 0o755), 1, 2);
        assert_eq!(a.permissions, Some(0o040755));
        let a = to_attrs(&info(FileKind::File, 0o644), 1, 2);
        assert_eq!(a.permissions, Some(0o100644));
        assert_eq!((a.uid, a.gid, a.size), (Some(1), Some(2), Some(1234)));
    }

    #[test]
    fn long_name_looks_like_ls() {
        let line = long_name("notes.txt", &info(FileKind::File, 0o640), "alice", 1_700_000_100);
        assert!(line.starts_with("-rw-r-----"), "{line}");
        assert!(line.ends_with(" notes.txt"), "{line}");
        assert!(line.contains(" 1234 "), "{line}");
        let dir = long_name("d", &info(FileKind::Directory, 0o755), "alice", 1_700_000_100);
        assert!(dir.starts_with("drwxr-xr-x"), "{dir}");
        // A plugin's time is any u64: no overflow.
        let far = FileInfo { modified: u64::MAX, ..info(FileKind::File, 0o644) };
        assert!(long_name("f", &far, "alice", 1_700_000_100).ends_with(" f"));
    }
}
