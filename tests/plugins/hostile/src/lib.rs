//! Adversarial wasftp plugin for the host's sandbox tests. Never bundled.
//! The path argument picks the misbehaviour (see each method).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// An allocation of exactly this many bytes spins: reached from a host
/// call whose result the host lowers into the guest (`/spin-in-alloc`
/// asks `get-random-bytes` for this many bytes), so the loop runs inside
/// the host's copy of a result.
const SPINNING_ALLOCATION: usize = 777_777;

struct SpinsOnOneSize;

// Sound: every allocation but the one that spins forever is the system
// allocator's, with the layout it was asked for.
unsafe impl GlobalAlloc for SpinsOnOneSize {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == SPINNING_ALLOCATION {
            spin()
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size == SPINNING_ALLOCATION {
            spin()
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: SpinsOnOneSize = SpinsOnOneSize;

/// Set by `init` from the configuration (see `Hostile::init`).
static DESCRIBE_SPINS: AtomicBool = AtomicBool::new(false);
static DESCRIBE_EMPTY_VERSION: AtomicBool = AtomicBool::new(false);
static ABORT_ORPHANS: AtomicBool = AtomicBool::new(false);
static COPY: AtomicBool = AtomicBool::new(false);

/// WASI resources kept across calls (`/hoard-*`): they live as long as
/// the instance.
static HOARD: Mutex<Vec<Hoarded>> = Mutex::new(Vec::new());

#[allow(dead_code)] // held, never read: the point is the host's table entry
enum Hoarded {
    Pollable(wasi::io::poll::Pollable),
    Stderr(wasi::io::streams::OutputStream),
}

/// Recursion without end: the guest's stack runs out (a trap).
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)).wrapping_add(1)
}

/// The wasm `unreachable` instruction (the crate is also built for the
/// host by `cargo test --workspace`, where there is none: abort instead).
fn unreachable_instruction() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// The number after the last `/` of `path`.
fn count_in(path: &str) -> usize {
    path.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A string that is not UTF-8, as a guest in a language without Rust's
/// guarantee can send one.
fn not_utf8() -> String {
    // SAFETY: not sound in Rust's terms (a `String` must be UTF-8), and on
    // purpose: the bytes are only lowered (pointer and length) to the host,
    // never read as text here; this is the output the host must survive.
    unsafe { String::from_utf8_unchecked(vec![b'b', b'a', b'd', 0xff, 0xfe, b'!']) }
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

    /// `("init", "spin")` spins forever, `("init", "panic")` panics;
    /// `("describe", "spin")` makes `describe` spin, `("describe",
    /// "empty-version")` answer an empty version; `("abort-orphans",
    /// "on")` declares that lost uploads are aborted with a token; `("copy",
    /// "on")` declares `copy` (so the host serves copy-data).
    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        #[cfg(feature = "trap-in-init")]
        panic!("hostile plugin built with trap-in-init");
        #[allow(unreachable_code)]
        for (k, v) in &config {
            match (k.as_str(), v.as_str()) {
                ("init", "spin") => spin(),
                ("init", "panic") => panic!("hostile plugin: panic in init"),
                ("describe", "spin") => DESCRIBE_SPINS.store(true, Ordering::Relaxed),
                ("describe", "empty-version") => DESCRIBE_EMPTY_VERSION.store(true, Ordering::Relaxed),
                ("abort-orphans", "on") => ABORT_ORPHANS.store(true, Ordering::Relaxed),
                ("copy", "on") => COPY.store(true, Ordering::Relaxed),
                _ => {}
            }
        }
        Ok(())
    }

    fn describe() -> Capabilities {
        if DESCRIBE_SPINS.load(Ordering::Relaxed) {
            spin()
        }
        let version = if DESCRIBE_EMPTY_VERSION.load(Ordering::Relaxed) { String::new() } else { env!("CARGO_PKG_VERSION").into() };
        Capabilities {
            name: "hostile".into(),
            version,
            scope: InstanceScope::Stateless,
            random_write: false,
            append: false,
            atomic_rename: false,
            copy: COPY.load(Ordering::Relaxed),
            abort_orphans: ABORT_ORPHANS.load(Ordering::Relaxed),
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

    /// A token naming `orphan-spin` or `orphan-panic` does that; any
    /// other is aborted.
    fn abort_orphan(token: String) -> Result<()> {
        if token.contains("orphan-spin") {
            spin()
        }
        if token.contains("orphan-panic") {
            panic!("hostile plugin: panic in abort-orphan");
        }
        Ok(())
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
        if path == "/spin" {
            spin()
        }
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
            "/dot" => vec![entry(".".into())],
            "/dotdot" => vec![entry("..".into())],
            "/empty-name" => vec![entry(String::new())],
            "/bad-utf8" => vec![entry("fine".into()), entry(not_utf8())],
            "/escapes" => vec![entry("\x1b[31mred\x1b[0m".into()), entry("cr\rlf\n".into()), entry("\u{202e}txt.exe".into())],
            "/big-permissions" => vec![DirEntry { name: "p".into(), info: FileInfo { permissions: 0o177777, ..ok_info(FileKind::File, 1) } }],
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
            "/bad-utf8-error" => return Err(Error::Io(not_utf8())),
            "/big-permissions" => return Ok(FileInfo { permissions: 0o177777, ..ok_info(FileKind::File, 1) }),
            "/empty-version" => return Ok(FileInfo { version: Some(String::new()), ..ok_info(FileKind::File, 1) }),
            "/recurse" => return Ok(ok_info(FileKind::File, recurse(0))),
            "/unreachable" => unreachable_instruction(),
            "/exit" => std::process::exit(3),
            "/spin-in-alloc" => {
                let bytes = wasi::random::random::get_random_bytes(SPINNING_ALLOCATION as u64);
                return Ok(ok_info(FileKind::File, bytes.len() as u64));
            }
            // Waits in a host call far longer than any limit.
            "/sleep" => {
                wasi::clocks::monotonic_clock::subscribe_duration(3600 * 1_000_000_000).block();
                return Ok(ok_info(FileKind::File, 0));
            }
            _ if path.starts_with("/hoard-pollables/") => {
                let mut hoard = HOARD.lock().unwrap();
                for _ in 0..count_in(&path) {
                    hoard.push(Hoarded::Pollable(wasi::clocks::monotonic_clock::subscribe_duration(1)));
                }
                return Ok(ok_info(FileKind::File, hoard.len() as u64));
            }
            _ if path.starts_with("/hoard-stderr/") => {
                let mut hoard = HOARD.lock().unwrap();
                for _ in 0..count_in(&path) {
                    hoard.push(Hoarded::Stderr(wasi::cli::stderr::get_stderr()));
                }
                return Ok(ok_info(FileKind::File, hoard.len() as u64));
            }
            // Probes of what the sandbox should not let it reach: each
            // answers the size of what it got, or says what stopped it.
            "/probe-passwd" => {
                return std::fs::read("/etc/passwd").map(|b| ok_info(FileKind::File, b.len() as u64)).map_err(|e| Error::Io(e.to_string()));
            }
            "/probe-root-dir" => {
                return std::fs::read_dir("/").map(|d| ok_info(FileKind::Directory, d.count() as u64)).map_err(|e| Error::Io(e.to_string()));
            }
            "/probe-env" => {
                let found = std::env::vars().count() + std::env::args().count();
                return Ok(ok_info(FileKind::File, found as u64));
            }
            "/probe-socket" => {
                return std::net::TcpStream::connect("127.0.0.1:22").map(|_| ok_info(FileKind::File, 1)).map_err(|e| Error::Io(e.to_string()));
            }
            "/probe-udp" => {
                return std::net::UdpSocket::bind("127.0.0.1:0").map(|_| ok_info(FileKind::File, 1)).map_err(|e| Error::Io(e.to_string()));
            }
            "/cycle" | "/endless" | "/same-name-forever" | "/dups" => return Ok(ok_info(FileKind::Directory, 0)),
            // Empty, it says; its reader never ends (see `open_read`).
            "/liar" | "/w/liar" => return Ok(ok_info(FileKind::File, 0)),
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
    /// `/giant-read`: 120 MiB whatever was asked; `/spin-read`: its reads
    /// spin; `/spin-drop`, `/panic-drop`: its destructor spins or panics;
    /// `/liar`, `/w/liar`: a 0-byte file whose reads never reach its end.
    fn open_read(&self, path: String, _version: Option<String>) -> Result<Reader> {
        match path.as_str() {
            "/liar" | "/w/liar" => Ok(Reader::new(HostileReader::Endless)),
            "/huge-read" => Ok(Reader::new(HostileReader::Extra(MIB))),
            "/giant-read" => Ok(Reader::new(HostileReader::Always(120 * MIB))),
            "/spin-read" => Ok(Reader::new(HostileReader::Spins)),
            "/spin-drop" => Ok(Reader::new(HostileReader::Dropping(Misdeed::Spin))),
            "/panic-drop" => Ok(Reader::new(HostileReader::Dropping(Misdeed::Panic))),
            _ => Err(Error::NotFound),
        }
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.file_info(path)
    }

    /// `/w/<step>-<misdeed>[-orphan-<misdeed>]`: a writer whose `<step>`
    /// (write, finish, abort or drop) does `<misdeed>` (spin or panic), and
    /// whose `abort-orphan` may misbehave too; `/w/long-token`
    /// gives a 2 KiB recovery token. Every other step works.
    fn begin_write(&self, path: String, _options: WriteOptions) -> Result<Writer> {
        let Some(plan) = path.strip_prefix("/w/") else { return Err(Error::Unsupported) };
        Ok(Writer::new(HostileWriter { plan: plan.into() }))
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
    /// Its reads never end.
    Spins,
    /// An empty file whose destructor misbehaves.
    Dropping(Misdeed),
    /// Says it is empty; every read returns all it was asked for.
    Endless,
}

#[derive(Clone, Copy)]
pub enum Misdeed {
    Spin,
    Panic,
}

impl Misdeed {
    fn commit(self, what: &str) -> ! {
        match self {
            Misdeed::Spin => spin(),
            Misdeed::Panic => panic!("hostile plugin: panic in {what}"),
        }
    }
}

impl Drop for HostileReader {
    fn drop(&mut self) {
        if let HostileReader::Dropping(misdeed) = self {
            misdeed.commit("a reader's destructor");
        }
    }
}

impl GuestReader for HostileReader {
    fn info(&self) -> FileInfo {
        match self {
            HostileReader::Endless => ok_info(FileKind::File, 0),
            _ => ok_info(FileKind::File, u64::MAX),
        }
    }

    fn read(&self, _offset: u64, len: u32) -> Result<Vec<u8>> {
        let bytes = match self {
            HostileReader::Extra(extra) => len as usize + extra,
            HostileReader::Always(bytes) => *bytes,
            HostileReader::Spins => spin(),
            HostileReader::Dropping(_) => 0,
            HostileReader::Endless => len as usize,
        };
        Ok(vec![b'r'; bytes])
    }
}

pub struct HostileWriter {
    /// `<step>-<misdeed>`, see `begin_write`.
    plan: String,
}

impl HostileWriter {
    /// Misbehaves if the plan says so for `step`.
    fn at(&self, step: &str) {
        let misdeed = match self.plan.strip_prefix(step).and_then(|rest| rest.strip_prefix('-')) {
            Some(rest) if rest.starts_with("spin") => Misdeed::Spin,
            Some(rest) if rest.starts_with("panic") => Misdeed::Panic,
            _ => return,
        };
        misdeed.commit(step)
    }
}

impl GuestWriter for HostileWriter {
    fn write_chunk(&self, _offset: u64, _data: Vec<u8>) -> Result<()> {
        self.at("write");
        Ok(())
    }
    fn set_size(&self, _size: u64) -> Result<()> {
        Err(Error::Unsupported)
    }
    fn finish(&self) -> Result<FileInfo> {
        self.at("finish");
        Ok(ok_info(FileKind::File, 0))
    }
    fn abort(&self) {
        self.at("abort");
    }

    /// The plan itself (so `abort-orphan` knows what to do), or 2 KiB.
    fn recovery_token(&self) -> Option<String> {
        if self.plan == "long-token" {
            return Some("t".repeat(2048));
        }
        ABORT_ORPHANS.load(Ordering::Relaxed).then(|| format!("token-{}", self.plan))
    }
}

impl Drop for HostileWriter {
    fn drop(&mut self) {
        self.at("drop");
    }
}

wasftp_sdk::export_plugin!(Hostile);
