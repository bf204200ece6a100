//! wasftp bundled plugin: an in-memory filesystem, one instance per tenant.
//! The semantics live in [`fs`]; this file adapts them to the bindings.

pub mod config;

use wasftp_memory_fs as fs;

use std::cell::RefCell;

use wasftp_sdk::prelude::*;

use config::Config;
use fs::{Content, Fs, PendingWrite};

thread_local! {
    static FS: RefCell<Fs> = RefCell::new(Fs::new());
    /// Whether set-info is served (config `set-info`).
    static SET_INFO: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    /// The largest file (config `max-file-size`).
    static MAX_FILE_SIZE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn with_fs<T>(f: impl FnOnce(&mut Fs) -> T) -> T {
    FS.with(|fs| f(&mut fs.borrow_mut()))
}

const CHUNK: u32 = 256 * 1024;

pub struct MemoryPlugin;

impl Guest for MemoryPlugin {
    type Session = MemSession;
    type Reader = MemReader;
    type Writer = MemWriter;

    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        let config = Config::parse(&config)?;
        let quota = config.quota();
        if quota.clamped {
            log::warn(&format!(
                "memory: max-bytes {:?} is more than a memory limit of {:?} bytes leaves for files; using {:?}",
                config.max_bytes, config.memory_limit, quota.bytes
            ));
        }
        if quota.bytes == Some(0) {
            log::warn("memory: the memory limit leaves no room for files; every write will fail");
        }
        with_fs(|fs| fs.set_quota(quota.bytes));
        SET_INFO.set(!config.no_set_info);
        MAX_FILE_SIZE.set(config.max_file_size);
        with_fs(|fs| fs.set_max_file_size(config.max_file_size));
        Ok(())
    }

    fn describe() -> Capabilities {
        Capabilities {
            name: "memory".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            scope: InstanceScope::Tenant,
            random_write: true,
            append: true,
            atomic_rename: true,
            copy: true,
            abort_orphans: false,
            set_info: SET_INFO.get(),
            max_file_size: MAX_FILE_SIZE.get(),
            symlinks: false,
            hard_links: false,
            read_chunk: CHUNK,
            write_chunk: CHUNK,
            // Everything is lost when the server stops.
            durable_sync: false,
        }
    }

    /// Nothing outlives the instance: nothing to tidy.
    fn maintain() -> Result<()> {
        Ok(())
    }

    fn abort_orphan(_token: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn open_session(context: SessionContext) -> Result<Session> {
        log::debug(&format!(
            "memory: session for {}@{}",
            context.user, context.tenant
        ));
        Ok(Session::new(MemSession { _context: context }))
    }
}

pub struct MemSession {
    _context: SessionContext,
}

impl GuestSession for MemSession {
    fn list_dir(&self, path: String, cursor: Option<String>, limit: u32) -> Result<DirPage> {
        with_fs(|fs| fs.list_dir(&path, cursor.as_deref(), limit))
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        with_fs(|fs| fs.file_info(&path))
    }

    /// No symlinks here, so nothing to not follow.
    fn link_info(&self, path: String) -> Result<FileInfo> {
        with_fs(|fs| fs.file_info(&path))
    }

    fn open_read(&self, path: String, version: Option<String>) -> Result<Reader> {
        let (data, info) = with_fs(|fs| fs.open_read(&path, version.as_deref()))?;
        Ok(Reader::new(MemReader { data, info }))
    }

    fn begin_write(&self, path: String, options: WriteOptions) -> Result<Writer> {
        let pending = with_fs(|fs| fs.begin_write(&path, options))?;
        Ok(Writer::new(MemWriter {
            pending: RefCell::new(Some(pending)),
        }))
    }

    fn make_dir(&self, path: String, permissions: Option<u32>) -> Result<()> {
        with_fs(|fs| fs.make_dir(&path, permissions))
    }

    fn remove_dir(&self, path: String) -> Result<()> {
        with_fs(|fs| fs.remove_dir(&path))
    }

    fn remove_file(&self, path: String) -> Result<()> {
        with_fs(|fs| fs.remove_file(&path))
    }

    fn rename(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        with_fs(|fs| fs.rename(&src, &dst, overwrite))
    }

    fn copy_file(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        with_fs(|fs| fs.copy_file(&src, &dst, overwrite))
    }

    fn set_info(&self, path: String, attrs: SetAttrs) -> Result<()> {
        if !SET_INFO.get() {
            return Err(Error::Unsupported);
        }
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
        with_fs(|fs| fs.space(&path))
    }
}

/// A snapshot of the content at open time.
pub struct MemReader {
    data: Content,
    info: FileInfo,
}

impl GuestReader for MemReader {
    fn info(&self) -> FileInfo {
        self.info.clone()
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        fs::read_at(&self.data, offset, len)
    }
}

/// `None` once finished or aborted.
pub struct MemWriter {
    pending: RefCell<Option<PendingWrite>>,
}

fn closed() -> Error {
    invalid("writer already finished or aborted")
}

impl GuestWriter for MemWriter {
    fn write_chunk(&self, offset: u64, data: Vec<u8>) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        let w = pending.as_mut().ok_or_else(closed)?;
        with_fs(|fs| fs.write_chunk(w, offset, &data))
    }

    fn set_size(&self, size: u64) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        let w = pending.as_mut().ok_or_else(closed)?;
        with_fs(|fs| fs.set_pending_size(w, size))
    }

    fn finish(&self) -> Result<FileInfo> {
        let w = self.pending.borrow_mut().take().ok_or_else(closed)?;
        with_fs(|fs| fs.commit(w))
    }

    fn abort(&self) {
        self.pending.borrow_mut().take();
    }

    fn recovery_token(&self) -> Option<String> {
        None
    }
}

thread_local! {
    /// An import in progress.
    static IMPORT: RefCell<Option<fs::state::Importer>> = const { RefCell::new(None) };
}

/// A swap keeps every file: the tree moves to the next version's instance.
impl Handover for MemoryPlugin {
    fn export_state(cursor: Option<String>, max_bytes: u32) -> Result<(Vec<u8>, Option<String>)> {
        // The host's question at load: yes, this plugin hands over.
        if max_bytes == 0 {
            return Ok((Vec::new(), None));
        }
        with_fs(|fs| fs.export_piece(cursor.as_deref(), max_bytes as usize))
    }

    fn import_state(piece: Vec<u8>, last: bool) -> Result<()> {
        IMPORT.with(|import| with_fs(|fs| fs::state::Importer::import_piece(&mut import.borrow_mut(), fs, &piece, last)))
    }
}

wasftp_sdk::export_plugin!(MemoryPlugin, handover);
