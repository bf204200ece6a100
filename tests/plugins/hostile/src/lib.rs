//! Adversarial wasftp plugin for the host's sandbox tests. Never bundled.
//! The path argument picks the misbehaviour (see each method).

use std::hint::black_box;

use wasftp_sdk::prelude::*;

const MIB: usize = 1 << 20;
const HUGE: usize = 10 * 1000 * 1000;

pub struct Hostile;

fn ok_info(kind: FileKind, size: u64) -> FileInfo {
    FileInfo {
        kind,
        size,
        permissions: 0o644,
        modified: 0,
        accessed: 0,
        version: None,
    }
}

fn entry(name: String) -> DirEntry {
    DirEntry {
        name,
        info: ok_info(FileKind::File, 1),
    }
}

/// Pure wasm computation that never ends (no host calls).
fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks until an allocation fails, which
/// aborts (Rust's default): the instance traps.
fn bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xA5u8; MIB]));
        black_box(&hoard);
    }
}

/// Allocates 1 MiB chunks fallibly until one fails, then frees them all and
/// answers no-space: the instance survives.
fn fallible_bomb() -> Result<FileInfo> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(MIB).is_err() || hoard.try_reserve(1).is_err() {
            return Err(Error::NoSpace);
        }
        chunk.resize(MIB, 0xA5);
        hoard.push(black_box(chunk));
    }
}

impl Guest for Hostile {
    type Session = HostileSession;
    type Reader = HostileReader;
    type Writer = HostileWriter;

    /// `("init", "spin")` spins forever, `("init", "panic")` panics.
    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        for (k, v) in &config {
            match (k.as_str(), v.as_str()) {
                ("init", "spin") => spin(),
                ("init", "panic") => panic!("hostile plugin: panic in init"),
                _ => {}
            }
        }
        Ok(())
    }

    fn describe() -> Capabilities {
        Capabilities {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            scope: InstanceScope::Stateless,
            random_write: false,
            append: false,
            atomic_rename: false,
            copy: false,
            abort_orphans: false,
            set_info: false,
            symlinks: false,
            hard_links: false,
            read_chunk: 4096,
            write_chunk: 4096,
            durable_sync: false,
            max_file_size: None,
        }
    }

    fn maintain() -> Result<()> {
        Ok(())
    }

    fn abort_orphan(_token: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn open_session(_context: SessionContext) -> Result<Session> {
        Ok(Session::new(HostileSession))
    }
}

pub struct HostileSession;

impl GuestSession for HostileSession {
    /// `/slash`, `/nul`: a bad name; `/huge-name`: a 10 MB name; `/many`:
    /// 100 000 entries in one page; `/giant-page`: 2 million; `/ok`: `a`, `b`.
    ///
    /// Listings with cursors: `/cycle` gives cursor `A`, then `B`, then `A`
    /// again; `/endless` a new name and a new cursor on every page;
    /// `/same-name-forever` the same name with a new cursor on every page;
    /// `/dups` `a`, `b`, then `b`, `c`, `a`.
    fn list_dir(&self, path: String, cursor: Option<String>, _limit: u32) -> Result<DirPage> {
        let page = |names: &[&str], next: Option<String>| DirPage {
            entries: names.iter().map(|n| entry(n.to_string())).collect(),
            next_cursor: next,
        };
        let at: u64 = cursor.as_deref().and_then(|c| c.trim_start_matches(['A', 'B', 'n']).parse().ok()).unwrap_or(0);
        match path.as_str() {
            "/cycle" => {
                let next = match cursor.as_deref() {
                    None => "A",
                    Some("A") => "B",
                    _ => "A",
                };
                let name = format!("c-{}", cursor.as_deref().unwrap_or("start"));
                return Ok(page(&[&name], Some(next.into())));
            }
            "/endless" => return Ok(page(&[&format!("e{at}")], Some(format!("n{}", at + 1)))),
            "/same-name-forever" => return Ok(page(&["same"], Some(format!("n{}", at + 1)))),
            "/dups" => {
                return Ok(match cursor {
                    None => page(&["a", "b"], Some("n1".into())),
                    Some(_) => page(&["b", "c", "a"], None),
                });
            }
            _ => {}
        }
        let entries = match path.as_str() {
            "/slash" => vec![entry("a/b".into())],
            "/nul" => vec![entry("a\0b".into())],
            "/huge-name" => vec![entry("x".repeat(HUGE))],
            "/many" => (0..100_000).map(|i| entry(format!("f{i}"))).collect(),
            "/giant-page" => (0..2_000_000).map(|_| entry("f".into())).collect(),
            "/ok" => vec![entry("a".into()), entry("b".into())],
            _ => return Err(Error::NotFound),
        };
        Ok(DirPage {
            entries,
            next_cursor: None,
        })
    }

    /// `/spin` loops, `/bomb` allocates without bound, `/bomb-fallible` too
    /// but answers no-space when memory runs out, `/panic` panics, `/ok` is a
    /// 42-byte file. `/log-flood` and `/stderr-flood` write 200 000 lines of
    /// 340 bytes (68 MB) to the log or stderr, `/log-one` one line; all
    /// three then answer an empty file. `/huge-error` fails with an `io`
    /// error of 100 MiB.
    fn file_info(&self, path: String) -> Result<FileInfo> {
        let line = "flood ".repeat(56);
        match path.as_str() {
            "/log-flood" => {
                for _ in 0..200_000 {
                    wasftp_sdk::log::warn(&line);
                }
                return Ok(ok_info(FileKind::File, 0));
            }
            "/stderr-flood" => {
                for _ in 0..200_000 {
                    eprintln!("{line}");
                }
                return Ok(ok_info(FileKind::File, 0));
            }
            "/log-one" => {
                wasftp_sdk::log::warn("one line");
                return Ok(ok_info(FileKind::File, 0));
            }
            "/huge-error" => return Err(Error::Io("e".repeat(100 * MIB))),
            "/cycle" | "/endless" | "/same-name-forever" | "/dups" => return Ok(ok_info(FileKind::Directory, 0)),
            _ => {}
        }
        match path.as_str() {
            "/spin" => spin(),
            "/bomb" => bomb(),
            "/bomb-fallible" => fallible_bomb(),
            "/panic" => panic!("hostile plugin: panic in file-info"),
            "/ok" => Ok(ok_info(FileKind::File, 42)),
            _ => Err(Error::NotFound),
        }
    }

    /// `/huge-read`: a reader that returns 1 MiB more than asked;
    /// `/giant-read`: 120 MiB whatever was asked.
    fn open_read(&self, path: String, _version: Option<String>) -> Result<Reader> {
        match path.as_str() {
            "/huge-read" => Ok(Reader::new(HostileReader::Extra(MIB))),
            "/giant-read" => Ok(Reader::new(HostileReader::Always(120 * MIB))),
            _ => Err(Error::NotFound),
        }
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.file_info(path)
    }

    fn begin_write(&self, _path: String, _options: WriteOptions) -> Result<Writer> {
        Err(Error::Unsupported)
    }
    fn make_dir(&self, _path: String, _permissions: Option<u32>) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn remove_dir(&self, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn remove_file(&self, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn rename(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn copy_file(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn set_info(&self, _path: String, _attrs: SetAttrs) -> Result<()> {
        Err(Error::Unsupported)
    }

    /// `/huge`: a 10 MB target.
    fn read_link(&self, path: String) -> Result<String> {
        match path.as_str() {
            "/huge" => Ok("t".repeat(HUGE)),
            _ => Err(Error::Unsupported),
        }
    }
    fn make_link(&self, _target: String, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn hard_link(&self, _src: String, _dst: String) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn space(&self, _path: String) -> Result<SpaceInfo> {
        Err(Error::Unsupported)
    }
}

pub enum HostileReader {
    /// This many bytes more than asked.
    Extra(usize),
    /// This many bytes, whatever was asked.
    Always(usize),
}

impl GuestReader for HostileReader {
    fn info(&self) -> FileInfo {
        ok_info(FileKind::File, u64::MAX)
    }

    fn read(&self, _offset: u64, len: u32) -> Result<Vec<u8>> {
        let bytes = match self {
            HostileReader::Extra(extra) => len as usize + extra,
            HostileReader::Always(bytes) => *bytes,
        };
        Ok(vec![b'r'; bytes])
    }
}

pub struct HostileWriter;

impl GuestWriter for HostileWriter {
    fn write_chunk(&self, _offset: u64, _data: Vec<u8>) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn set_size(&self, _size: u64) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn finish(&self) -> Result<FileInfo> {
        Err(Error::Unsupported)
    }
    fn abort(&self) {}

    fn recovery_token(&self) -> Option<String> {
        None
    }
}

wasftp_sdk::export_plugin!(Hostile);
