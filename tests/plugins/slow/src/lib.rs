//! Test plugin: the memory plugin's filesystem behind a delay in every call
//! (a sleep on the host's clock, as a network round trip would be), with
//! every call counted. It stands in for object storage without a network.
//! Never bundled.
//!
//! Config (all optional): `delay-ms` (per call), `delay-ms.OP` (for the
//! calls of kind OP only, e.g. `delay-ms.rename`, before it acts), `read-chunk` and
//! `write-chunk` (sizes declared to the host), `random-write = "off"`
//! (write-chunk then refuses any offset but the next one, as object storage
//! does), `append = "off"` (declared to the host, and `begin-write` then
//! ignores `append`: every chunk lands at its offset, as on a backend that
//! cannot append), `scope = "stateless"` (declared to the host, for the pool
//! tests: each instance then has its own files, so use the paths below),
//! `break = "missing-is-io"` or `break = "pages-lose-entries"` (contract
//! breaches for the conformance suite to catch: a missing path answered
//! with an `io` error; a listing page that drops its last entry when more
//! pages follow), `durable-sync = "on"` (declared to the host, which then
//! offers fsync@openssh.com), `break = "keep-fails"` (a `begin-write` that
//! keeps the content fails with no-space, as a copy that runs out of room),
//! `break = "finish-fails"` (every `finish` fails with an io error).
//!
//! Paths every instance serves alike: `/.pattern/N` is a read-only file of
//! N bytes, byte i being `i % 251`; `stat /.sleep/MS` waits MS milliseconds
//! on the host's clock (a hung request); `stat /.spin/MS` computes for MS
//! milliseconds (no host call but the clock's); `stat /.panic` traps.
//!
//! The counts are read through the plugin itself: `/.calls` lists one entry
//! per kind of call, whose size is how many were made (`stat
//! /.calls/read`). Looking at `/.calls` is neither delayed nor counted.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use wasftp_memory_fs::{self as fs, Content, Fs, PendingWrite};
use wasftp_sdk::config::parse_bytes;
use wasftp_sdk::prelude::*;

const CALLS_DIR: &str = "/.calls";

thread_local! {
    static FS: RefCell<Fs> = RefCell::new(Fs::new());
    static SETTINGS: Cell<Settings> = const { Cell::new(Settings::DEFAULT) };
    static CALLS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
    static OP_DELAYS: RefCell<BTreeMap<String, Duration>> = const { RefCell::new(BTreeMap::new()) };
}

#[derive(Clone, Copy)]
struct Settings {
    delay: Duration,
    read_chunk: u32,
    write_chunk: u32,
    random_write: bool,
    append: bool,
    stateless: bool,
    missing_is_io: bool,
    pages_lose_entries: bool,
    /// `break = "make-dir-refused" | "make-dir-is-io"`: make-dir fails so
    /// (everything else still writes), as for a check of a plugin that
    /// only seems read-only.
    make_dir_refused: bool,
    make_dir_is_io: bool,
    /// `break = "only-existing-writable"`: make-dir refused, and new files
    /// of the check's names (`/wasftp-check-*`); existing files still written.
    only_existing_writable: bool,
    durable_sync: bool,
    keep_fails: bool,
    finish_fails: bool,
    /// `handover = "on"`: hands its state over as the memory plugin does;
    /// `break = "import-hangs" | "import-traps"`: a next version whose
    /// import never answers, or traps.
    handover: bool,
    import_hangs: bool,
    import_traps: bool,
}

impl Settings {
    const DEFAULT: Settings = Settings {
        delay: Duration::ZERO,
        read_chunk: 256 << 10,
        write_chunk: 256 << 10,
        random_write: true,
        append: true,
        stateless: false,
        missing_is_io: false,
        pages_lose_entries: false,
        make_dir_refused: false,
        make_dir_is_io: false,
        only_existing_writable: false,
        durable_sync: false,
        keep_fails: false,
        finish_fails: false,
        handover: false,
        import_hangs: false,
        import_traps: false,
    };

    fn parse(config: &[(String, String)]) -> std::result::Result<Self, String> {
        let mut settings = Settings::DEFAULT;
        let bytes = |key: &str, value: &str| -> std::result::Result<u32, String> {
            parse_bytes(value).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| format!("`{key}`: invalid size {value:?}"))
        };
        for (key, value) in config {
            if let Some(op) = key.strip_prefix("delay-ms.") {
                let ms = value.parse().map_err(|_| format!("`{key}`: not a number: {value:?}"))?;
                OP_DELAYS.with(|delays| delays.borrow_mut().insert(op.to_string(), Duration::from_millis(ms)));
                continue;
            }
            match key.as_str() {
                "delay-ms" => {
                    let ms = value.parse().map_err(|_| format!("`delay-ms`: not a number: {value:?}"))?;
                    settings.delay = Duration::from_millis(ms);
                }
                "read-chunk" => settings.read_chunk = bytes(key, value)?,
                "write-chunk" => settings.write_chunk = bytes(key, value)?,
                "random-write" => settings.random_write = value != "off",
                "append" => settings.append = value != "off",
                "scope" => settings.stateless = value == "stateless",
                "durable-sync" => settings.durable_sync = value == "on",
                "handover" => settings.handover = value == "on",
                "break" if value == "import-hangs" => settings.import_hangs = true,
                "break" if value == "import-traps" => settings.import_traps = true,
                "break" if value == "keep-fails" => settings.keep_fails = true,
                "break" if value == "finish-fails" => settings.finish_fails = true,
                "break" if value == "missing-is-io" => settings.missing_is_io = true,
                "break" if value == "pages-lose-entries" => settings.pages_lose_entries = true,
                "break" if value == "make-dir-refused" => settings.make_dir_refused = true,
                "break" if value == "make-dir-is-io" => settings.make_dir_is_io = true,
                "break" if value == "only-existing-writable" => {
                    settings.make_dir_refused = true;
                    settings.only_existing_writable = true;
                }
                key if wasftp_sdk::config::is_reserved(key) => {}
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        Ok(settings)
    }
}

/// Counts a call of kind `op`, then waits as a remote backend would.
fn call(op: &'static str) {
    CALLS.with(|calls| *calls.borrow_mut().entry(op).or_default() += 1);
    let delay = OP_DELAYS.with(|delays| delays.borrow().get(op).copied()).unwrap_or(SETTINGS.get().delay);
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

fn with_fs<T>(f: impl FnOnce(&mut Fs) -> T) -> T {
    FS.with(|fs| f(&mut fs.borrow_mut()))
}

fn counter_info(count: u64) -> FileInfo {
    FileInfo { kind: FileKind::File, size: count, permissions: 0o444, modified: 0, accessed: 0, version: None }
}

/// `/.calls` and its entries, if `path` is one of them.
fn calls_info(path: &str) -> Option<Result<FileInfo>> {
    if path == CALLS_DIR {
        return Some(Ok(FileInfo { kind: FileKind::Directory, ..counter_info(0) }));
    }
    let op = path.strip_prefix(CALLS_DIR)?.strip_prefix('/')?;
    Some(CALLS.with(|calls| calls.borrow().get(op).copied().map(counter_info).ok_or(Error::NotFound)))
}

pub struct SlowPlugin;

impl Guest for SlowPlugin {
    type Session = SlowSession;
    type Reader = SlowReader;
    type Writer = SlowWriter;

    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        SETTINGS.set(Settings::parse(&config)?);
        Ok(())
    }

    fn describe() -> Capabilities {
        let settings = SETTINGS.get();
        Capabilities {
            name: "slow".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            scope: if settings.stateless { InstanceScope::Stateless } else { InstanceScope::Tenant },
            random_write: settings.random_write,
            append: settings.append,
            atomic_rename: true,
            copy: true,
            abort_orphans: false,
            set_info: true,
            symlinks: false,
            hard_links: false,
            read_chunk: settings.read_chunk,
            write_chunk: settings.write_chunk,
            durable_sync: settings.durable_sync,
            max_file_size: None,
        }
    }

    fn maintain() -> Result<()> {
        call("maintain");
        Ok(())
    }

    fn abort_orphan(_token: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn open_session(_context: SessionContext) -> Result<Session> {
        call("open-session");
        Ok(Session::new(SlowSession))
    }
}

pub struct SlowSession;

impl GuestSession for SlowSession {
    fn list_dir(&self, path: String, cursor: Option<String>, limit: u32) -> Result<DirPage> {
        if path == CALLS_DIR {
            let entries = CALLS.with(|calls| {
                calls.borrow().iter().map(|(op, n)| DirEntry { name: op.to_string(), info: counter_info(*n) }).collect()
            });
            return Ok(DirPage { entries, next_cursor: None });
        }
        call("list-dir");
        let mut page = with_fs(|fs| fs.list_dir(&path, cursor.as_deref(), limit))?;
        if SETTINGS.get().pages_lose_entries && page.next_cursor.is_some() && page.entries.len() > 1 {
            page.entries.pop();
        }
        Ok(page)
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        if let Some(info) = calls_info(&path) {
            return info;
        }
        call("file-info");
        if let Some(ms) = path.strip_prefix("/.sleep/") {
            let ms = ms.parse().map_err(|_| Error::NotFound)?;
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(counter_info(ms));
        }
        if let Some(ms) = path.strip_prefix("/.spin/") {
            let ms: u64 = ms.parse().map_err(|_| Error::NotFound)?;
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            let mut spins = 0u64;
            while std::time::Instant::now() < until {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
            return Ok(counter_info(ms));
        }
        if path == "/.panic" {
            panic!("asked to trap");
        }
        if let Some(size) = pattern_size(&path) {
            return Ok(counter_info(size));
        }
        match with_fs(|fs| fs.file_info(&path)) {
            Err(Error::NotFound) if SETTINGS.get().missing_is_io => Err(Error::Io("no such entry".into())),
            other => other,
        }
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.file_info(path)
    }

    fn open_read(&self, path: String, version: Option<String>) -> Result<Reader> {
        call("open-read");
        if let Some(size) = pattern_size(&path) {
            return Ok(Reader::new(SlowReader { data: Source::Pattern(size), info: counter_info(size) }));
        }
        let (data, info) = with_fs(|fs| fs.open_read(&path, version.as_deref()))?;
        Ok(Reader::new(SlowReader { data: Source::Stored(data), info }))
    }

    fn begin_write(&self, path: String, options: WriteOptions) -> Result<Writer> {
        call("begin-write");
        if SETTINGS.get().only_existing_writable && path.starts_with("/wasftp-check") && with_fs(|fs| fs.file_info(&path)).is_err() {
            return Err(Error::PermissionDenied);
        }
        if SETTINGS.get().keep_fails && !options.truncate {
            return Err(Error::NoSpace);
        }
        let options = WriteOptions { append: options.append && SETTINGS.get().append, ..options };
        let pending = with_fs(|fs| fs.begin_write(&path, options))?;
        // Sequential writes go on from the end of what the write keeps.
        let next = Cell::new(pending.pending_len());
        // An append takes every chunk at the end, whatever its offset.
        let appending = options.append;
        Ok(Writer::new(SlowWriter { pending: RefCell::new(Some(pending)), next, appending }))
    }

    fn make_dir(&self, path: String, permissions: Option<u32>) -> Result<()> {
        call("make-dir");
        let settings = SETTINGS.get();
        if settings.make_dir_refused {
            return Err(Error::PermissionDenied);
        }
        if settings.make_dir_is_io {
            return Err(Error::Io("the disk is unwell".into()));
        }
        with_fs(|fs| fs.make_dir(&path, permissions))
    }

    fn remove_dir(&self, path: String) -> Result<()> {
        call("remove-dir");
        with_fs(|fs| fs.remove_dir(&path))
    }

    fn remove_file(&self, path: String) -> Result<()> {
        call("remove-file");
        with_fs(|fs| fs.remove_file(&path))
    }

    fn rename(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        call("rename");
        with_fs(|fs| fs.rename(&src, &dst, overwrite))
    }

    fn copy_file(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        call("copy-file");
        with_fs(|fs| fs.copy_file(&src, &dst, overwrite))
    }

    fn set_info(&self, path: String, attrs: SetAttrs) -> Result<()> {
        call("set-info");
        with_fs(|fs| fs.set_info(&path, &attrs))
    }

    fn read_link(&self, _path: String) -> Result<String> {
        Err(Error::Unsupported)
    }

    fn make_link(&self, _target: String, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn hard_link(&self, _src: String, _dst: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn space(&self, path: String) -> Result<SpaceInfo> {
        call("space");
        with_fs(|fs| fs.space(&path))
    }
}

/// The size of a `/.pattern/N` file.
fn pattern_size(path: &str) -> Option<u64> {
    path.strip_prefix("/.pattern/")?.parse().ok()
}

enum Source {
    Stored(Content),
    /// `/.pattern/N`: byte i is `i % 251`.
    Pattern(u64),
}

pub struct SlowReader {
    data: Source,
    info: FileInfo,
}

impl GuestReader for SlowReader {
    fn info(&self) -> FileInfo {
        self.info.clone()
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        call("read");
        match &self.data {
            Source::Stored(data) => fs::read_at(data, offset, len),
            Source::Pattern(size) => {
                let end = (*size).min(offset.saturating_add(len.into()));
                Ok((offset..end).map(|i| (i % 251) as u8).collect())
            }
        }
    }
}

pub struct SlowWriter {
    pending: RefCell<Option<PendingWrite>>,
    /// Where the next chunk must start without random writes.
    next: Cell<u64>,
    appending: bool,
}

fn closed() -> Error {
    invalid("writer already finished or aborted")
}

impl GuestWriter for SlowWriter {
    fn write_chunk(&self, offset: u64, data: Vec<u8>) -> Result<()> {
        call("write-chunk");
        if !SETTINGS.get().random_write && !self.appending && offset != self.next.get() {
            return Err(invalid(&format!("sequential writes only: chunk at {offset}, expected {}", self.next.get())));
        }
        let mut pending = self.pending.borrow_mut();
        let w = pending.as_mut().ok_or_else(closed)?;
        with_fs(|fs| fs.write_chunk(w, offset, &data))?;
        self.next.set(offset + data.len() as u64);
        Ok(())
    }

    fn set_size(&self, size: u64) -> Result<()> {
        call("set-size");
        if !SETTINGS.get().random_write {
            return Err(Error::Unsupported);
        }
        let mut pending = self.pending.borrow_mut();
        let w = pending.as_mut().ok_or_else(closed)?;
        with_fs(|fs| fs.set_pending_size(w, size))
    }

    fn finish(&self) -> Result<FileInfo> {
        call("finish");
        let w = self.pending.borrow_mut().take().ok_or_else(closed)?;
        if SETTINGS.get().finish_fails {
            return Err(Error::Io("the disk is unwell".into()));
        }
        with_fs(|fs| fs.commit(w))
    }

    fn abort(&self) {
        call("abort");
        self.pending.borrow_mut().take();
    }

    fn recovery_token(&self) -> Option<String> {
        None
    }
}

thread_local! {
    static IMPORT: RefCell<Option<wasftp_memory_fs::state::Importer>> = const { RefCell::new(None) };
}

impl Handover for SlowPlugin {
    fn export_state(cursor: Option<String>, max_bytes: u32) -> Result<(Vec<u8>, Option<String>)> {
        if !SETTINGS.get().handover {
            return Err(Error::Unsupported);
        }
        if max_bytes == 0 {
            return Ok((Vec::new(), None));
        }
        with_fs(|fs| fs.export_piece(cursor.as_deref(), max_bytes as usize))
    }

    fn import_state(piece: Vec<u8>, last: bool) -> Result<()> {
        let settings = SETTINGS.get();
        if settings.import_hangs {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if settings.import_traps {
            panic!("slow plugin: break = import-traps");
        }
        IMPORT.with(|import| with_fs(|fs| wasftp_memory_fs::state::Importer::import_piece(&mut import.borrow_mut(), fs, &piece, last)))
    }
}

wasftp_sdk::export_plugin!(SlowPlugin, handover);
