//! Property tests over everything a client's bytes or a plugin's outputs
//! go through before the session acts on them: framing, the UTF-8 check of
//! names, russh-sftp's decoding as the session calls it, path
//! normalisation, long names, and the validation of plugin listings. Every
//! test's name has `fuzz` in it; `PROPTEST_CASES` sets how many cases each
//! runs (README: a long run).

use bytes::Bytes;
use proptest::prelude::*;
use russh_sftp::protocol::Packet;

use super::{attrs, framing, names, paths};
use crate::plugin::{DirEntry, DirPage, FileInfo, FileKind, validate};

/// One runtime for every case of the frame reader (it only reads a slice).
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
    std::sync::LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().unwrap());

/// A well-formed request of a random type, its strings and numbers random:
/// the decoder's deep paths, not only its first length check.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let kinds = prop::sample::select(vec![1u8, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 200]);
    let field = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|s| {
            let mut f = (s.len() as u32).to_be_bytes().to_vec();
            f.extend(s);
            f
        }),
        any::<u32>().prop_map(|n| n.to_be_bytes().to_vec()),
        any::<u64>().prop_map(|n| n.to_be_bytes().to_vec()),
        Just(b"\0\0\0\x18posix-rename@openssh.com".to_vec()),
        Just(b"\0\0\0\x09copy-data".to_vec()),
        Just(u32::MAX.to_be_bytes().to_vec()),
    ];
    (kinds, any::<u32>(), prop::collection::vec(field, 0..8)).prop_map(|(kind, id, fields)| {
        let mut p = vec![kind];
        p.extend(id.to_be_bytes());
        p.extend(fields.concat());
        p
    })
}

/// A request, cut short or with one byte changed.
fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
    (request(), any::<usize>(), any::<u8>(), any::<bool>()).prop_map(|(mut p, at, byte, cut)| {
        if cut {
            p.truncate(at % (p.len() + 1));
        } else {
            let len = p.len();
            p[at % len] = byte;
        }
        p
    })
}

/// Names a plugin might give: short ones of the troublesome characters,
/// any string, and ones about the length bound.
fn plugin_name() -> impl Strategy<Value = String> {
    let troublesome = proptest::string::string_regex("[a./\u{0}\u{1b}]{0,4}").unwrap();
    let long = (250usize..260).prop_map(|n| "x".repeat(n));
    prop_oneof![troublesome, any::<String>(), long]
}

fn raw_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..300), request(), mangled_request()]
}

/// 200 000 cases a property by default (about 15 s for all of them in
/// the dev profile on a 2-core machine); `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// What the reader loop does with a packet body: never a panic, and a
    /// name refused as not UTF-8 is answered with the packet's own id.
    #[test]
    fn fuzz_packet_bodies_are_decoded_or_refused_without_panics(raw in raw_input()) {
        let refused = names::non_utf8_name(&raw);
        if let Some(id) = refused {
            prop_assert_eq!(Some(id), framing::raw_request_id(&raw));
        }
        let mut body = Bytes::from(raw.clone());
        let _ = Packet::try_from(&mut body);
    }

    /// Frames off the wire: a body is exactly its declared length, within
    /// the bound; anything else is refused before it is read.
    #[test]
    fn fuzz_frames_are_bounded_and_exact(stream in prop::collection::vec(any::<u8>(), 0..600), lengths in prop::collection::vec(prop_oneof![0u32..300, Just(framing::MAX_PACKET), Just(framing::MAX_PACKET + 1), Just(u32::MAX)], 0..4)) {
        // Some frames with lengths near the edges, then random bytes.
        let mut input = Vec::new();
        for length in &lengths {
            input.extend(length.to_be_bytes());
            input.extend(std::iter::repeat_n(7u8, (*length).min(300) as usize));
        }
        input.extend(&stream);
        RUNTIME.block_on(async {
            let mut reader = input.as_slice();
            for _ in 0..16 {
                let before = reader.len();
                match framing::read_packet(&mut reader).await {
                    Ok(framing::Incoming::Packet(body)) => {
                        let declared = u32::from_be_bytes(input[input.len() - before..][..4].try_into().unwrap());
                        prop_assert_eq!(body.len() as u32, declared);
                        prop_assert!(declared > 0 && declared <= framing::MAX_PACKET);
                        prop_assert_eq!(before - reader.len(), 4 + body.len());
                    }
                    Ok(framing::Incoming::Oversized { length, .. }) => {
                        prop_assert!(length == 0 || length > framing::MAX_PACKET);
                        break;
                    }
                    Ok(framing::Incoming::Closed) | Err(_) => break,
                }
            }
            Ok(())
        })?;
    }

    /// Client paths: always absolute, no `.`, `..` or empty segments, the
    /// same when normalised again, and never outside the user's root.
    #[test]
    fn fuzz_client_paths_stay_under_the_root(path in "[a-z./\\\\\u{0}-\u{1f}é]{0,40}", root in prop::sample::select(vec!["/", "/home/alice", "/t/x"])) {
        let Some(normal) = paths::normalize(&path) else {
            prop_assert!(path.contains('\0'));
            return Ok(());
        };
        prop_assert!(normal.starts_with('/'));
        prop_assert!(normal == "/" || !normal.ends_with('/'));
        prop_assert!(normal.split('/').skip(1).all(|s| normal == "/" || (!s.is_empty() && s != "." && s != "..")));
        let again = paths::normalize(&normal);
        prop_assert_eq!(again.as_deref(), Some(normal.as_str()));
        let plugin = paths::to_plugin(root, &normal);
        prop_assert!(plugin.starts_with(root));
        prop_assert_eq!(paths::to_client(root, &plugin), Some(normal));
    }

    /// A long name is one line a terminal prints as it is: no control or
    /// bidirectional character, and two names never look the same.
    #[test]
    fn fuzz_long_names_are_one_printable_line(a in any::<String>(), b in any::<String>(), size in any::<u64>(), permissions in any::<u32>(), modified in any::<u64>()) {
        let info = FileInfo { kind: FileKind::File, size, permissions, modified, accessed: 0, version: None };
        let line = attrs::long_name(&a, &info, "alice", 1_800_000_000);
        prop_assert!(!line.chars().any(|c| c.is_control()), "{:?}", line);
        prop_assert!(!line.chars().any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')), "a bidirectional control in {:?}", line);
        if a != b {
            prop_assert_ne!(attrs::escape_for_display(&a), attrs::escape_for_display(&b));
        }
    }

    /// A listing page validation accepts holds only names a client may be
    /// given, at most the page size asked for; anything else is refused,
    /// never a panic.
    #[test]
    fn fuzz_plugin_listings_pass_only_valid_names(
        names in prop::collection::vec(plugin_name(), 0..12),
        permissions in prop::collection::vec(prop_oneof![Just(0o644u32), any::<u32>()], 12),
        next in proptest::option::of("[a-z\u{0}]{0,6}"),
        cursor in proptest::option::of("[a-z]{0,3}"),
        limit in 0u32..20,
    ) {
        let entries = names.iter().zip(&permissions).map(|(name, &permissions)| DirEntry {
            name: name.clone(),
            info: FileInfo { kind: FileKind::File, size: 1, permissions, modified: 0, accessed: 0, version: None },
        }).collect();
        let mut page = DirPage { entries, next_cursor: next };
        if validate::dir_page(&mut page, cursor.as_deref(), limit).is_ok() {
            prop_assert!(page.entries.len() <= limit.clamp(1, validate::MAX_PAGE_ENTRIES) as usize);
            for entry in &page.entries {
                let name = entry.name.as_str();
                prop_assert!(!name.is_empty() && name != "." && name != "..");
                prop_assert!(!name.contains('/') && !name.contains('\0') && name.len() <= validate::MAX_NAME_LEN);
                prop_assert!(entry.info.permissions <= 0o7777);
            }
            if let Some(next) = &page.next_cursor {
                prop_assert!(!next.contains('\0') && cursor.as_deref() != Some(next.as_str()));
            }
        }
    }
}
