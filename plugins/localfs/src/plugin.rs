//! The contract's calls, each checked (a client's path, normalised and
//! clear of uploads in progress) and handed to the module that does it.

use std::cell::RefCell;
use std::rc::Rc;

use wasftp_sdk::prelude::*;

use crate::config::Config;
use crate::folder::{Follow, Folder};
use crate::paths::client_path;
use crate::reader::LocalReader;
use crate::writes::PendingWrite;
use crate::{links, listing, maintain, names, setattr, upload, writes};

/// Preferred read and write sizes.
const CHUNK: u32 = 256 << 10;

/// What `init` set up, for every call of the instance.
struct State {
    folder: Rc<Folder>,
    config: Config,
}

thread_local! {
    static STATE: RefCell<Option<Rc<State>>> = const { RefCell::new(None) };
}

fn state() -> Result<Rc<State>> {
    STATE.with(|state| state.borrow().clone()).ok_or_else(|| io_error("the plugin was not initialised"))
}

pub struct LocalFsPlugin;

impl Guest for LocalFsPlugin {
    type Session = LocalSession;
    type Reader = LocalReader;
    type Writer = LocalWriter;

    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        let config = Config::parse(&config)?;
        let folder = Folder::from_preopens()?;
        listing::set_cache_budget(config.listing_cache_bytes());
        let state = State { folder: Rc::new(folder), config };
        STATE.with(|slot| *slot.borrow_mut() = Some(Rc::new(state)));
        Ok(())
    }

    fn describe() -> Capabilities {
        let config = STATE.with(|state| state.borrow().as_ref().map(|s| s.config.clone())).unwrap_or_default();
        Capabilities {
            name: "localfs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Everything is on disk: any instance serves any call.
            scope: InstanceScope::Stateless,
            random_write: true,
            append: true,
            atomic_rename: true,
            set_info: true,
            symlinks: true,
            hard_links: true,
            read_chunk: CHUNK,
            write_chunk: CHUNK,
            durable_sync: config.durable,
            max_file_size: config.max_file_size,
            copy: true,
            abort_orphans: true,
        }
    }

    fn maintain() -> Result<()> {
        let state = state()?;
        maintain::sweep(&state.folder, &state.config)
    }

    fn abort_orphan(token: String) -> Result<()> {
        upload::remove_orphan(&state()?.folder, &token)
    }

    fn open_session(_context: SessionContext) -> Result<Session> {
        Ok(Session::new(LocalSession { state: state()? }))
    }
}

pub struct LocalSession {
    state: Rc<State>,
}

impl LocalSession {
    fn folder(&self) -> &Rc<Folder> {
        &self.state.folder
    }
}

impl GuestSession for LocalSession {
    fn list_dir(&self, path: String, cursor: Option<String>, limit: u32) -> Result<DirPage> {
        listing::list_dir(self.folder(), &client_path(&path)?, cursor, limit)
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        self.folder().info(&client_path(&path)?, Follow::Yes)
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.folder().info(&client_path(&path)?, Follow::No)
    }

    fn open_read(&self, path: String, version: Option<String>) -> Result<Reader> {
        let (file, info) = self.folder().open_regular(&client_path(&path)?)?;
        if version.is_some() && version != info.version {
            return Err(conflict());
        }
        Ok(Reader::new(LocalReader::new(file, info)))
    }

    fn begin_write(&self, path: String, options: WriteOptions) -> Result<Writer> {
        let pending = PendingWrite::begin(self.folder(), &client_path(&path)?, &options, &self.state.config)?;
        Ok(Writer::new(LocalWriter { pending: RefCell::new(Some(pending)) }))
    }

    fn make_dir(&self, path: String, _permissions: Option<u32>) -> Result<()> {
        names::make_dir(self.folder(), &client_path(&path)?)
    }

    fn remove_dir(&self, path: String) -> Result<()> {
        names::remove_dir(self.folder(), &client_path(&path)?)
    }

    fn remove_file(&self, path: String) -> Result<()> {
        names::remove_file(self.folder(), &client_path(&path)?)
    }

    fn rename(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        names::rename(self.folder(), &client_path(&src)?, &client_path(&dst)?, overwrite)
    }

    fn copy_file(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        writes::copy_file(self.folder(), &client_path(&src)?, &client_path(&dst)?, overwrite, &self.state.config)
    }

    fn set_info(&self, path: String, attrs: SetAttrs) -> Result<()> {
        setattr::set_info(self.folder(), &client_path(&path)?, &attrs, self.state.config.max_file_size)
    }

    fn read_link(&self, path: String) -> Result<String> {
        let target = links::read_link(self.folder(), &client_path(&path)?)?;
        // Where the link leads must be reachable too.
        client_path(&target)
    }

    fn make_link(&self, target: String, path: String) -> Result<()> {
        links::make_link(self.folder(), &client_path(&target)?, &client_path(&path)?)
    }

    fn hard_link(&self, src: String, dst: String) -> Result<()> {
        names::hard_link(self.folder(), &client_path(&src)?, &client_path(&dst)?)
    }

    /// WASI has no statvfs.
    fn space(&self, _path: String) -> Result<SpaceInfo> {
        Err(Error::Unsupported)
    }
}

/// `None` once finished or aborted; dropped unfinished, the temporary
/// file goes with it.
pub struct LocalWriter {
    pending: RefCell<Option<PendingWrite>>,
}

fn closed() -> Error {
    invalid("writer already finished or aborted")
}

impl GuestWriter for LocalWriter {
    fn write_chunk(&self, offset: u64, data: Vec<u8>) -> Result<()> {
        self.pending.borrow_mut().as_mut().ok_or_else(closed)?.write_chunk(offset, &data)
    }

    fn set_size(&self, size: u64) -> Result<()> {
        self.pending.borrow_mut().as_mut().ok_or_else(closed)?.set_size(size)
    }

    fn finish(&self) -> Result<FileInfo> {
        self.pending.borrow_mut().take().ok_or_else(closed)?.finish()
    }

    fn abort(&self) {
        self.pending.borrow_mut().take();
    }

    fn recovery_token(&self) -> Option<String> {
        self.pending.borrow().as_ref().and_then(PendingWrite::recovery_token)
    }
}
