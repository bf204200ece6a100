//! A handle opened for READ and WRITE (paramiko "r+", sshfs, editors,
//! `dd conv=notrunc`): the file's content is copied into a spool file
//! before the handle's first READ, WRITE or size change (not at OPEN,
//! where the copy would hold up the session's later path requests), reads
//! and writes act on the spool, and CLOSE commits the whole spool through
//! one writer, so the content changes atomically and every plugin
//! (random-write or not) gets the same behaviour.

use super::node::{NodeHold, unix_now};
use super::spool::{Spool, TenantSpool};
use crate::plugin::{FileInfo, FileKind, Reader, StorageError, WriteOptions, Writer};

pub struct ReadWriteFile {
    /// Opened with `truncate`, so the committed content is exactly the spool.
    /// `None` after a sync committed the spool, until the next change (see
    /// [`ReadWriteFile::resume`]).
    writer: Option<Writer>,
    /// The content, with its size (bounded).
    spool: Spool,
    /// The content to start from (pinned to the version opened), until it
    /// is copied into the spool.
    base: Option<Base>,
    /// Why copying the base failed: the handle then fails every request,
    /// and CLOSE commits nothing (a part copy must never be committed).
    broken: Option<String>,
    /// Whether CLOSE has anything to commit.
    changed: bool,
    append: bool,
    permissions: u32,
    chunk: usize,
    placeholder: NodeHold,
}

pub(super) struct ReadWriteParts<'a> {
    pub writer: Writer,
    /// The current content to start from; `None` for an empty file.
    pub base: Option<Reader>,
    /// Its size, as the plugin told it.
    pub base_size: u64,
    /// Whether the file is new: CLOSE then creates it even if nothing was written.
    pub created: bool,
    /// The tenant's part of the spool area the copy is charged to.
    pub spool: &'a TenantSpool,
    pub max_size: u64,
    pub append: bool,
    pub permissions: u32,
    pub read_chunk: u32,
    pub write_chunk: usize,
    pub placeholder: NodeHold,
}

struct Base {
    reader: Reader,
    /// Its size as the plugin said at OPEN (what FSTAT shows until the copy).
    size: u64,
    chunk: u32,
}

impl ReadWriteFile {
    pub(super) async fn open(parts: ReadWriteParts<'_>) -> Result<Self, StorageError> {
        let spool = Spool::create(parts.spool, 0, parts.max_size).await?;
        let base = parts.base.map(|reader| Base { reader, size: parts.base_size, chunk: parts.read_chunk });
        Ok(Self {
            writer: Some(parts.writer),
            spool,
            base,
            broken: None,
            changed: parts.created,
            append: parts.append,
            permissions: parts.permissions,
            chunk: parts.write_chunk,
            placeholder: parts.placeholder,
        })
    }

    /// Copies the base into the spool, once, before the first request that
    /// needs the content.
    async fn copied(&mut self) -> Result<(), StorageError> {
        self.copied_up_to(u64::MAX).await
    }

    /// As `copied`, for a request that keeps only the first `keep` bytes
    /// (a truncate): what lies past them is never read.
    async fn copied_up_to(&mut self, keep: u64) -> Result<(), StorageError> {
        if let Some(why) = &self.broken {
            return Err(StorageError::Io(why.clone()));
        }
        let Some(base) = self.base.take() else { return Ok(()) };
        // Marked broken until the copy is whole, so a copy cut short (its
        // request cancelled) is never taken for the content.
        self.broken = Some("copying the file for reading and writing did not finish".into());
        // The copy stops at the size the reader gives for the version it
        // reads: one that goes on past it (a lying plugin) cannot fill the
        // spool.
        let copied = match base.reader.info().await {
            Ok(info) => self.copy_in(&base, keep.min(info.size)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = copied {
            self.broken = Some(format!("copying the file for reading and writing failed: {e}"));
            return Err(e);
        }
        self.broken = None;
        Ok(())
    }

    async fn copy_in(&mut self, base: &Base, keep: u64) -> Result<(), StorageError> {
        loop {
            let size = self.spool.len();
            let want = (keep - size.min(keep)).min(u64::from(base.chunk)) as u32;
            if want == 0 {
                return Ok(());
            }
            let data = base.reader.read(size, want).await?;
            if data.is_empty() {
                return Ok(());
            }
            self.put(size, data).await?;
        }
    }

    async fn put(&mut self, offset: u64, data: Vec<u8>) -> Result<(), StorageError> {
        self.spool.write_at(offset, data).await?;
        self.placeholder.set_size(self.spool.len(), false);
        Ok(())
    }

    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        self.copied().await?;
        self.spool.read_at(offset, len).await
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.copied().await?;
        // Appended data lands at the end of the file, whatever its offset.
        let offset = if self.append { self.spool.len() } else { offset };
        self.put(offset, data.to_vec()).await?;
        self.changed = true;
        Ok(())
    }

    /// A size change acts on the content at once, in order with the WRITEs.
    pub async fn set_size(&mut self, size: u64) -> Result<(), StorageError> {
        self.copied_up_to(size).await?;
        self.spool.set_len(size).await?;
        self.placeholder.set_size(size, true);
        self.changed = true;
        Ok(())
    }

    /// Commits the spool when anything changed; otherwise leaves the file as it was.
    pub async fn commit(&mut self) -> Result<(), StorageError> {
        let result = self.commit_content().await;
        self.placeholder.release();
        result
    }

    /// fsync@openssh.com: commits the spool, durably, while the handle
    /// stays open (see `Upload::sync`); the next change commits again.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.broken {
            return Err(StorageError::Io(why.clone()));
        }
        if !self.changed || self.writer.is_none() || !self.placeholder.begin_commit() {
            return Ok(());
        }
        let synced = self.write_out().await;
        self.placeholder.end_sync();
        match &synced {
            Ok(()) => self.changed = false,
            // The changes did not reach the plugin and its writer is gone:
            // every later request and the CLOSE say so (never an OK over
            // changes that were lost).
            Err(e) => self.fail(e.clone()),
        }
        synced
    }

    /// After a sync, the options of the writer the next change needs.
    pub fn resume_options(&self) -> Option<WriteOptions> {
        // Removed since: the spool takes the changes, and CLOSE commits nothing.
        let removed = self.placeholder.is_unlinked();
        (self.writer.is_none() && self.broken.is_none() && !removed).then_some(WriteOptions {
            create: true,
            truncate: true,
            exclusive: false,
            append: false,
            permissions: None,
        })
    }

    pub fn resume(&mut self, writer: Writer) {
        self.writer = Some(writer);
    }

    /// A failure that leaves the changes uncommittable: the handle fails
    /// every later request, and CLOSE commits nothing and reports it.
    pub fn fail(&mut self, error: StorageError) {
        self.broken.get_or_insert_with(|| format!("syncing the file failed: {error}"));
    }

    async fn commit_content(&mut self) -> Result<(), StorageError> {
        // Removed while open (as unlink(2) of an open file), or untouched
        // (since a sync, maybe): the file stays as the plugin has it.
        if let (true, Some(why)) = (self.changed, &self.broken) {
            // Changes made and not committable: CLOSE must not say OK.
            let error = StorageError::Io(why.clone());
            let _ = self.abort_writer().await;
            return Err(error);
        }
        if !self.changed || self.broken.is_some() || self.writer.is_none() || !self.placeholder.begin_commit() {
            return self.abort_writer().await;
        }
        self.write_out().await
    }

    /// The whole spool through the writer, finished: committed, or (on any
    /// failure) given up.
    async fn write_out(&mut self) -> Result<(), StorageError> {
        let Some(writer) = self.writer.take() else { return Err(StorageError::Io("the file has no writer".into())) };
        if let Err(e) = self.copied().await {
            let _ = writer.abort().await;
            return Err(e);
        }
        let mut offset = 0;
        let size = self.spool.len();
        while offset < size {
            let len = (size - offset).min(self.chunk as u64) as u32;
            let data = match self.spool.read_at(offset, len).await {
                Ok(data) => data,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            let len = data.len() as u64;
            if let Err(e) = writer.write_chunk(offset, data).await {
                let _ = writer.abort().await;
                return Err(e);
            }
            offset += len;
        }
        writer.finish().await.map(drop)
    }

    async fn abort_writer(&mut self) -> Result<(), StorageError> {
        match self.writer.take() {
            Some(writer) => writer.abort().await,
            None => Ok(()),
        }
    }

    /// The handle's hold on its node, with the attributes waiting for its commit.
    pub fn placeholder(&mut self) -> &mut NodeHold {
        &mut self.placeholder
    }

    /// Gives up: the file stays as it was (or as the last sync left it).
    pub async fn abort(&mut self) -> Result<(), StorageError> {
        let result = self.abort_writer().await;
        self.placeholder.release();
        result
    }

    pub fn info(&self) -> FileInfo {
        let now = unix_now();
        FileInfo {
            kind: FileKind::File,
            size: self.base.as_ref().map_or(self.spool.len(), |base| base.size),
            permissions: self.permissions,
            modified: now,
            accessed: now,
            version: None,
        }
    }
}
