//! Files as clients expect them, for every plugin, independent of the SFTP
//! wire format: uploads coalesced into plugin-sized chunks within a byte
//! budget, files being uploaded visible from OPEN, read-write handles over a
//! spool. The SFTP layer speaks to storage through [`Files`].

mod budget;
mod in_order;
mod listing;
mod pending;
mod read_ahead;
mod read_write;
mod reader;
mod shares;
mod spool;
mod upload;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{BudgetPermit, ByteBudget, FileBudgets, ServerBudget, ServerBudgets};
pub use listing::ListingUploads;
pub use pending::{PendingGuard, PendingUploads, TenantTables, unix_now};
use in_order::InOrder;
use pending::Unlink;
pub use read_ahead::ReadAhead;
pub use read_write::ReadWriteFile;
pub use reader::FileReader;
pub use shares::TenantShares;
pub use spool::{SpoolArea, TenantSpool};
pub use upload::Upload;

use crate::plugin::{Capabilities, DirPage, FileInfo, Session, SetAttrs, StorageError, WriteOptions};

/// Settings of the file layer, the same for every connection.
#[derive(Clone)]
pub struct FileSettings {
    /// Largest file one spool may hold.
    pub max_spool_bytes: u64,
}

/// One storage session seen through the file layer.
pub struct Files {
    storage: Session,
    pending: Arc<PendingUploads>,
    budgets: FileBudgets,
    settings: FileSettings,
    /// Which session this is, for the uploads it holds.
    session: u64,
}

/// How long a request on a path waits for this session's own upload of it
/// to be closed (see [`PendingUploads::settle`]).
const SETTLE: Duration = Duration::from_secs(2);

/// How long a REMOVE waits for an upload of its file that is committing
/// (its plugin calls have their own deadlines).
const COMMIT_WAIT: Duration = Duration::from_secs(120);

impl Files {
    pub fn new(
        storage: Session,
        pending: Arc<PendingUploads>,
        budgets: FileBudgets,
        settings: FileSettings,
        session: u64,
    ) -> Self {
        Self { storage, pending, budgets, settings, session }
    }

    /// A WRITE or truncate for the upload of `path` was just read off the
    /// wire (see [`PendingUploads::announce_size`]).
    pub fn announce_size(&self, path: &str, size: u64, exact: bool) {
        self.pending.announce_size(path, size, exact);
    }

    /// A CLOSE of this session's upload of `path` was just read off the
    /// wire: requests behind it wait for its commit (see `settle`).
    pub fn closing(&self, path: &str, upload_id: u64) {
        self.pending.closing(path, upload_id, self.session);
    }

    /// Lets a CLOSE of this session's upload of `path` land first: one on
    /// its way for `SETTLE`, one read off the wire for its commit.
    async fn settle(&self, path: &str) {
        self.pending.settle(path, self.session, SETTLE, COMMIT_WAIT).await;
    }

    /// The plugin session, for calls the file layer adds nothing to.
    pub fn plugin(&self) -> &Session {
        &self.storage
    }

    pub fn capabilities(&self) -> &Capabilities {
        self.storage.capabilities()
    }

    /// A file's info; a file being uploaded is shown with its size so far.
    pub async fn stat(&self, path: &str) -> Result<FileInfo, StorageError> {
        match self.plugin_or_upload(path, || self.storage.file_info(path)).await {
            Answer::Plugin(result) => result,
            Answer::Uploading(info) => Ok(info),
        }
    }

    /// A path's own info: a symbolic link is described, not followed.
    pub async fn link_stat(&self, path: &str) -> Result<FileInfo, StorageError> {
        match self.plugin_or_upload(path, || self.storage.link_info(path)).await {
            Answer::Plugin(result) => result,
            Answer::Uploading(info) => Ok(info),
        }
    }

    /// A plugin call on `path`, answered by the upload in progress there
    /// when the plugin does not know the path yet. The commit of an upload
    /// may land between the plugin's "not found" and the look at the table
    /// (the placeholder ends once the plugin has the file): then the plugin
    /// is asked again, so the file is never missing from both.
    async fn plugin_or_upload<T, F>(&self, path: &str, call: impl Fn() -> F) -> Answer<T>
    where
        F: std::future::Future<Output = Result<T, StorageError>>,
    {
        let was_uploading = self.pending.contains(path);
        let result = call().await;
        if !matches!(result, Err(StorageError::NotFound)) {
            return Answer::Plugin(result);
        }
        match self.pending.info(path) {
            Some(info) => Answer::Uploading(info),
            None if was_uploading => Answer::Plugin(call().await),
            None => Answer::Plugin(result),
        }
    }

    /// REMOVE, as unlink(2): a file still being uploaded loses its name at
    /// once and its upload commits nothing.
    pub async fn remove_file(&self, path: &str) -> Result<(), StorageError> {
        self.settle(path).await;
        // Each turn either ends, or follows an upload of the path that ended
        // or finished committing meanwhile; a few turns are plenty.
        for _ in 0..4 {
            match self.plugin_or_upload(path, || self.storage.remove_file(path)).await {
                Answer::Plugin(Ok(())) => {
                    // An overwrite in progress of the removed file commits
                    // nothing (one already committing lands after the removal).
                    let _ = self.pending.unlink(path);
                    return Ok(());
                }
                Answer::Plugin(other) => return other,
                Answer::Uploading(_) => match self.pending.unlink(path) {
                    Unlink::Removed => return Ok(()),
                    // Committed or given up since: the plugin knows.
                    Unlink::Absent => {}
                    Unlink::Committing => self.pending.wait_commits(path, COMMIT_WAIT).await,
                },
            }
        }
        Err(StorageError::Io("the file kept being replaced while it was removed".into()))
    }

    /// RENAME of a new file still being uploaded is refused clearly rather
    /// than reported missing.
    pub async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), StorageError> {
        // FUSE (sshfs) removes a file that is still open by renaming it to a
        // hidden name, and removes that at the last close: for a file still
        // being uploaded, that is its removal (see `remove_file`).
        if is_fuse_hidden(to) {
            match self.pending.unlink(from) {
                Unlink::Removed => {
                    return match self.storage.remove_file(from).await {
                        Ok(()) | Err(StorageError::NotFound) => Ok(()),
                        Err(e) => Err(e),
                    };
                }
                // Once it lands, it is an ordinary rename.
                Unlink::Committing => self.pending.wait_commits(from, COMMIT_WAIT).await,
                Unlink::Absent => {}
            }
        }
        self.settle(from).await;
        self.settle(to).await;
        match self.plugin_or_upload(from, || self.storage.rename(from, to, overwrite)).await {
            Answer::Plugin(result) => result,
            Answer::Uploading(_) => Err(StorageError::Io("the file is still being uploaded (open for writing)".into())),
        }
    }

    /// RMDIR: a directory holding uploads in progress is not empty.
    pub async fn remove_dir(&self, path: &str) -> Result<(), StorageError> {
        for (name, _) in self.pending.children(path) {
            self.settle(&child(path, &name)).await;
        }
        if !self.pending.children(path).is_empty() {
            return Err(StorageError::NotEmpty);
        }
        self.storage.remove_dir(path).await
    }

    /// SETSTAT by path. On a file being uploaded, times and permissions wait
    /// for its commit; its size can only change through its handle.
    pub async fn set_info(&self, path: &str, set: SetAttrs) -> Result<(), StorageError> {
        if let (Some(size), Some(max)) = (set.size, self.capabilities().max_file_size) {
            if size > max {
                return Err(file_too_large(max));
            }
        }
        match self.plugin_or_upload(path, || self.storage.set_info(path, set)).await {
            Answer::Uploading(_) if set.size.is_none() && self.pending.defer_attrs(path, set) => Ok(()),
            // Committed since, or a size (only through the upload's handle).
            Answer::Uploading(_) => self.storage.set_info(path, set).await,
            Answer::Plugin(result) => result,
        }
    }

    pub async fn list_page(&self, dir: &str, cursor: Option<&str>, limit: u32) -> Result<DirPage, StorageError> {
        self.storage.list_dir(dir, cursor, limit).await
    }

    pub async fn open_read(&self, path: &str) -> Result<FileReader, StorageError> {
        self.settle(path).await;
        match self.plugin_or_upload(path, || self.storage.open_read(path, None)).await {
            Answer::Plugin(result) => result.map(|reader| {
                FileReader::Plugin(ReadAhead::new(reader, self.capabilities().read_chunk, self.budgets.read_ahead.clone()))
            }),
            Answer::Uploading(_) => Ok(FileReader::Pending),
        }
    }

    /// Starts a write-only upload; the file is visible from now on.
    pub async fn upload(&self, path: &str, options: WriteOptions) -> Result<Upload, StorageError> {
        self.settle(path).await;
        // The size before this write, so FSTAT and appends know where the file ends.
        let start_size = if options.truncate {
            0
        } else {
            match self.stat(path).await {
                Ok(info) => info.size,
                Err(StorageError::NotFound) => 0,
                Err(e) => return Err(e),
            }
        };
        let permissions = options.permissions.unwrap_or(0o644);
        let placeholder = self.placeholder(path, permissions, start_size, options)?;
        // A plugin that does not honour `append` gets a write that keeps the
        // content; the upload places each WRITE at the end itself.
        let plugin_options = WriteOptions { append: options.append && self.capabilities().append, ..options };
        let writer = self.storage.begin_write(path, plugin_options).await?;
        Ok(Upload::new(upload::UploadParts {
            writer,
            chunk: self.capabilities().write_chunk as usize,
            append: options.append,
            start_size,
            permissions,
            placeholder,
            budget: self.budgets.upload.clone(),
            max_size: self.capabilities().max_file_size,
            in_order: (!self.capabilities().random_write).then(|| {
                InOrder::new(
                    start_size,
                    self.capabilities().write_chunk as usize,
                    self.budgets.upload.clone(),
                    self.budgets.spool.clone(),
                    self.settings.max_spool_bytes,
                )
            }),
        }))
    }

    /// The placeholder of a new upload; an exclusive create fails while
    /// another upload of the path is in progress.
    fn placeholder(&self, path: &str, permissions: u32, size: u64, options: WriteOptions) -> Result<PendingGuard, StorageError> {
        let exclusive = options.create && options.exclusive;
        self.pending.register(path, permissions, size, exclusive, self.session).ok_or(StorageError::AlreadyExists)
    }

    /// Opens a file for reading and writing (see [`ReadWriteFile`]).
    pub async fn open_read_write(&self, path: &str, options: WriteOptions) -> Result<ReadWriteFile, StorageError> {
        self.settle(path).await;
        let max_spool = self.settings.max_spool_bytes;
        let existing = match self.storage.file_info(path).await {
            Ok(info) => Some(info),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(info) = &existing {
            if info.kind == crate::plugin::FileKind::Directory {
                return Err(StorageError::IsADirectory);
            }
            if !options.truncate && info.size > max_spool {
                return Err(spool::too_large(max_spool));
            }
        }
        let permissions = options.permissions.or(existing.as_ref().map(|i| i.permissions)).unwrap_or(0o644);
        let kept = existing.as_ref().filter(|_| !options.truncate).map_or(0, |info| info.size);
        let placeholder = self.placeholder(path, permissions, kept, options)?;
        // The base is opened first: the writer truncates (in its own pending
        // content), the spool carries what is kept.
        let base = match &existing {
            Some(info) if !options.truncate => Some(self.storage.open_read(path, info.version.as_deref()).await?),
            _ => None,
        };
        let writer = self.storage.begin_write(path, WriteOptions { truncate: true, append: false, ..options }).await?;
        let caps = self.capabilities();
        ReadWriteFile::open(read_write::ReadWriteParts {
            writer,
            base,
            base_size: existing.as_ref().map_or(0, |info| info.size),
            created: existing.is_none() || options.truncate,
            spool: &self.budgets.spool,
            max_size: self.capabilities().max_file_size.map_or(max_spool, |max| max.min(max_spool)),
            append: options.append,
            permissions,
            read_chunk: caps.read_chunk,
            write_chunk: caps.write_chunk as usize,
            placeholder,
        })
        .await
    }
}

/// What a plugin call on a path came to (see [`Files::plugin_or_upload`]).
enum Answer<T> {
    Plugin(Result<T, StorageError>),
    /// The plugin does not know the path: a file is being uploaded there.
    Uploading(FileInfo),
}

/// A WRITE or size change past the plugin's largest file, refused before
/// the plugin is asked.
fn file_too_large(max: u64) -> StorageError {
    StorageError::Io(format!("the file would be larger than {max} bytes, the most this storage holds"))
}

/// The name FUSE gives a removed file that is still open.
fn is_fuse_hidden(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with(".fuse_hidden"))
}

fn child(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}
