//! File names must be UTF-8: the contract carries names as strings, and a
//! lossy decode would turn two different names into the same one. Checked on
//! the raw packet, before decoding replaces bad bytes with U+FFFD.

use super::framing::WireReader;

/// How many path strings follow the request id, by packet type.
fn path_count(packet_type: u8, body: &mut WireReader<'_>) -> usize {
    match packet_type {
        // OPEN, SETSTAT, OPENDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, LSTAT, READLINK
        3 | 9 | 11 | 13 | 14 | 15 | 16 | 17 | 7 | 19 => 1,
        // RENAME, SYMLINK
        18 | 20 => 2,
        // EXTENDED: the request name, then its own arguments.
        200 => match body.string() {
            Some(b"posix-rename@openssh.com") | Some(b"hardlink@openssh.com") => 2,
            Some(b"statvfs@openssh.com") => 1,
            _ => 0,
        },
        _ => 0,
    }
}

/// The request id of a packet naming a path that is not valid UTF-8.
pub fn non_utf8_name(raw: &[u8]) -> Option<u32> {
    let (&packet_type, rest) = raw.split_first()?;
    let id = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let mut body = WireReader::new(&rest[4..]);
    let count = path_count(packet_type, &mut body);
    for _ in 0..count {
        // A truncated packet is left to the decoder to refuse.
        let name = body.string()?;
        if std::str::from_utf8(name).is_err() {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(packet_type: u8, strings: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![packet_type, 0, 0, 0, 9];
        for s in strings {
            p.extend_from_slice(&(s.len() as u32).to_be_bytes());
            p.extend_from_slice(s);
        }
        p
    }

    #[test]
    fn bad_names_are_found_in_every_position() {
        assert_eq!(non_utf8_name(&packet(17, &[b"/ok\xff"])), Some(9));
        assert_eq!(non_utf8_name(&packet(17, &[b"/ok"])), None);
        assert_eq!(non_utf8_name(&packet(18, &[b"/a", b"/b\xc3"])), Some(9));
        assert_eq!(non_utf8_name(&packet(200, &[b"posix-rename@openssh.com", b"/a", b"\xfe"])), Some(9));
        // Handles are opaque: a READ is never refused here.
        assert_eq!(non_utf8_name(&packet(5, &[b"\xff"])), None);
    }
}
