//! An open file, as the SFTP layer sees it: one interface over the three
//! kinds of handle (read-only, write-only upload, read-write).
//!
//! An enum whose methods are the interface, rather than a trait object: the
//! kinds are a closed set owned by this module, copy-data needs to know two
//! handles' kinds at once (see `copy.rs`), and async methods on a `dyn`
//! trait would box every call. Its variants stay private to the file layer.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::node::{HoldSignals, NodeHold};
use super::open_files::OpenFile;
use super::{Files, FileReader, ReadWriteFile, Upload};
use crate::config::SetstatPolicy;
use crate::plugin::{FileInfo, SetAttrs, StorageError, WriteOptions, Writer};

/// What a handle was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

pub struct Handle {
    pub(super) files: Arc<Files>,
    /// Path in the plugin namespace.
    pub(super) path: String,
    access: Access,
    pub(super) kind: Kind,
    /// Its place in the tenant's count of open files, until it is dropped.
    _open: OpenFile,
}

pub(super) enum Kind {
    Read(FileReader),
    /// The content is behind a lock (requests on it run one at a time
    /// anyway); the hold's signals are outside it, for the reader loop.
    Write { signals: HoldSignals, content: Mutex<Content> },
}

/// What a handle that writes holds until CLOSE commits it.
pub(super) enum Content {
    /// Write-only: WRITEs coalesced and streamed to the plugin's writer.
    Upload(Upload),
    /// Read-write: the file copied into a spool, committed whole.
    ReadWrite(ReadWriteFile),
}

impl Handle {
    pub(super) fn reading(files: Arc<Files>, path: &str, reader: FileReader, open: OpenFile) -> Self {
        Self { files, path: path.to_string(), access: Access::Read, kind: Kind::Read(reader), _open: open }
    }

    pub(super) fn writing(files: Arc<Files>, path: &str, access: Access, mut content: Content, open: OpenFile) -> Self {
        let signals = content.placeholder().signals();
        let kind = Kind::Write { signals, content: Mutex::new(content) };
        Self { files, path: path.to_string(), access, kind, _open: open }
    }

    /// Path in the plugin namespace.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn reads(&self) -> bool {
        self.access != Access::Write
    }

    pub fn writes(&self) -> bool {
        self.access != Access::Read
    }

    fn signals(&self) -> Option<&HoldSignals> {
        match &self.kind {
            Kind::Write { signals, .. } => Some(signals),
            Kind::Read(_) => None,
        }
    }

    /// A WRITE of `len` bytes at `offset` was read off the wire: STAT shows
    /// the size at once (see [`HoldSignals::announce_size`]).
    pub fn announce_write(&self, offset: u64, len: usize) {
        if let (Some(signals), Some(end)) = (self.signals(), offset.checked_add(len as u64)) {
            signals.announce_size(end, false);
        }
    }

    /// A truncate to `size` was read off the wire.
    pub fn announce_size(&self, size: u64) {
        if let Some(signals) = self.signals() {
            signals.announce_size(size, true);
        }
    }

    /// The handle's CLOSE was read off the wire: requests of this session on
    /// the path wait for its commit.
    pub fn closing(&self) {
        if let Some(signals) = self.signals() {
            signals.closing();
        }
    }

    /// Up to `len` bytes at `offset`; empty at end of file. A read-write
    /// handle reads its own writes.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        match &self.kind {
            Kind::Read(reader) => reader.read(offset, len).await,
            Kind::Write { content, .. } => match &mut *content.lock().await {
                Content::ReadWrite(file) => file.read(offset, len).await,
                Content::Upload(_) => Err(StorageError::PermissionDenied),
            },
        }
    }

    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        match &self.kind {
            Kind::Read(_) => Err(StorageError::PermissionDenied),
            Kind::Write { content, .. } => {
                let mut content = content.lock().await;
                // An empty WRITE changes nothing: after a sync it must not
                // cost a writer that copies the whole file.
                if !data.is_empty() {
                    self.resumed(&mut content).await?;
                }
                content.write(offset, data).await
            }
        }
    }

    /// fsync@openssh.com (offered when the plugin's content is durable once
    /// committed): what the handle wrote so far is committed now, and the
    /// handle goes on writing. A handle that only reads has nothing to sync.
    pub async fn sync(&self) -> Result<(), StorageError> {
        match &self.kind {
            Kind::Read(_) => Ok(()),
            Kind::Write { content, .. } => content.lock().await.sync().await,
        }
    }

    /// After a sync committed the content, the next change needs a writer
    /// again: one that starts from what was committed.
    async fn resumed(&self, content: &mut Content) -> Result<(), StorageError> {
        let Some(options) = content.resume_options() else { return Ok(()) };
        let writer = match self.begin_resumed(content, options).await {
            Ok(writer) => writer,
            Err(error) => {
                // The bytes of this change are lost: the WRITEs after it
                // (pipelined) must not commit a file with a hole, nor CLOSE
                // answer OK.
                content.fail(error.clone());
                return Err(error);
            }
        };
        match content {
            Content::Upload(upload) => {
                let in_order = self.files.in_order_from(upload.size());
                upload.resume(writer, in_order);
            }
            Content::ReadWrite(file) => file.resume(writer),
        }
        Ok(())
    }

    /// FSTAT: a handle that writes shows its content so far.
    pub async fn info(&self) -> Result<FileInfo, StorageError> {
        match &self.kind {
            Kind::Read(_) => self.files.stat(&self.path).await,
            Kind::Write { content, .. } => Ok(content.lock().await.info()),
        }
    }

    /// Where a copy from this handle ends: the size of the version a
    /// reader opened, or a read-write handle's content so far.
    pub(super) async fn size_to_copy(&self) -> Result<u64, StorageError> {
        match &self.kind {
            Kind::Read(reader) => reader.size().await,
            Kind::Write { content, .. } => Ok(content.lock().await.info().size),
        }
    }

    /// A writer that starts from what the last sync committed, while that
    /// is still what the name holds: a file another session renamed over it
    /// since is theirs, and carrying on would write into it (on a POSIX
    /// server the handle would write to the file it opened, now nameless).
    async fn begin_resumed(&self, content: &Content, options: WriteOptions) -> Result<Writer, StorageError> {
        if let Some(synced) = content.synced_version() {
            let now = self.files.storage.file_info(&self.path).await?;
            if now.version.as_deref() != Some(synced) {
                return Err(StorageError::Conflict);
            }
        }
        self.files.storage.begin_write(&self.path, options).await
    }

    /// FSETSTAT. On a handle that writes, a size change acts on the content
    /// at once, in order with the WRITEs (as on an OpenSSH server); times
    /// and permissions wait for the commit, as the content is not visible yet.
    pub async fn set_attrs(&self, mut set: SetAttrs) -> Result<(), StorageError> {
        let Kind::Write { content, .. } = &self.kind else { return self.files.set_info(&self.path, set).await };
        let size = set.size.take();
        let defers = set.permissions.is_some() || set.accessed.is_some() || set.modified.is_some();
        let strict = self.files.settings.setstat_unsupported == SetstatPolicy::Strict;
        if defers && strict && !self.files.capabilities().set_info {
            // Said now, not after the commit when the client can no longer tell.
            return Err(StorageError::Unsupported);
        }
        let mut content = content.lock().await;
        if let Some(size) = size {
            self.resumed(&mut content).await?;
            content.set_size(size).await?;
        }
        content.placeholder().defer_attrs(set);
        Ok(())
    }

    /// CLOSE: commits what the handle wrote; the result is the commit's.
    pub async fn close(&self) -> Result<(), StorageError> {
        let Kind::Write { content, .. } = &self.kind else { return Ok(()) };
        let deferred = {
            let mut content = content.lock().await;
            content.commit().await?;
            content.placeholder().take_deferred_attrs()
        };
        // The content is committed: that is what CLOSE reports. Times or
        // permissions that cannot be applied are logged, not turned into a
        // failure the client would take for a lost upload.
        if let Some(attrs) = deferred {
            if let Err(e) = self.files.storage.set_info(&self.path, attrs).await {
                tracing::warn!(path = %self.path, "attributes set before CLOSE not applied: {e}");
            }
        }
        Ok(())
    }

    /// Gives up what the handle wrote (nothing of it becomes visible);
    /// `None` for a handle that writes nothing.
    pub async fn abort(&self) -> Option<Result<(), StorageError>> {
        let Kind::Write { content, .. } = &self.kind else { return None };
        Some(content.lock().await.abort().await)
    }
}

impl Content {
    async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        match self {
            Self::Upload(upload) => upload.write(offset, data).await,
            Self::ReadWrite(file) => file.write(offset, data).await,
        }
    }

    async fn set_size(&mut self, size: u64) -> Result<(), StorageError> {
        match self {
            Self::Upload(upload) => upload.set_size(size).await,
            Self::ReadWrite(file) => file.set_size(size).await,
        }
    }

    async fn commit(&mut self) -> Result<(), StorageError> {
        match self {
            Self::Upload(upload) => upload.commit().await,
            Self::ReadWrite(file) => file.commit().await,
        }
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        match self {
            Self::Upload(upload) => upload.sync().await,
            Self::ReadWrite(file) => file.sync().await,
        }
    }

    fn resume_options(&self) -> Option<WriteOptions> {
        match self {
            Self::Upload(upload) => upload.resume_options(),
            Self::ReadWrite(file) => file.resume_options(),
        }
    }

    /// What a resumed writer must start from (a read-write handle commits
    /// its whole content, whatever is there).
    fn synced_version(&self) -> Option<&str> {
        match self {
            Self::Upload(upload) => upload.synced_version(),
            Self::ReadWrite(_) => None,
        }
    }

    fn fail(&mut self, error: StorageError) {
        match self {
            Self::Upload(upload) => upload.fail(error),
            Self::ReadWrite(file) => file.fail(error),
        }
    }

    async fn abort(&mut self) -> Result<(), StorageError> {
        match self {
            Self::Upload(upload) => upload.abort().await,
            Self::ReadWrite(file) => file.abort().await,
        }
    }

    fn info(&self) -> FileInfo {
        match self {
            Self::Upload(upload) => upload.provisional_info(),
            Self::ReadWrite(file) => file.info(),
        }
    }

    fn placeholder(&mut self) -> &mut NodeHold {
        match self {
            Self::Upload(upload) => upload.placeholder(),
            Self::ReadWrite(file) => file.placeholder(),
        }
    }
}
