//! OPEN: which kind of handle serves a file, and what it starts from.

use std::sync::Arc;

use super::handle::Content;
use super::in_order::InOrder;
use super::node::NodeHold;
use super::open_files::OpenFile;
use super::{Access, Answer, FileReader, Files, Handle, ReadAhead, ReadWriteFile, Upload, read_write, spool, upload};
use crate::plugin::{FileKind, StorageError, WriteOptions};

impl Files {
    /// Opens `path` for `access`; `options` apply to a handle that writes.
    /// Once a handle that writes is open, the file is visible, with its size
    /// so far, to every session of the tenant.
    pub async fn open(self: &Arc<Self>, path: &str, access: Access, options: WriteOptions) -> Result<Handle, StorageError> {
        self.settle(path).await;
        // Taken before the plugin opens anything.
        let open = OpenFile::take(&self.budgets.open_files)?;
        Ok(match access {
            Access::Read => Handle::reading(self.clone(), path, self.open_read(path).await?, open),
            Access::Write => {
                let upload = self.upload(path, options).await?;
                Handle::writing(self.clone(), path, access, Content::Upload(upload), open)
            }
            Access::ReadWrite => {
                let file = self.open_read_write(path, options).await?;
                Handle::writing(self.clone(), path, access, Content::ReadWrite(file), open)
            }
        })
    }

    async fn open_read(&self, path: &str) -> Result<FileReader, StorageError> {
        match self.plugin_or_node(path, || self.storage.open_read(path, None)).await {
            Answer::Plugin(result) => result.map(|reader| {
                FileReader::Plugin(ReadAhead::new(reader, self.capabilities().read_chunk, self.budgets.read_ahead.clone()))
            }),
            Answer::Writing(_) => Ok(FileReader::Uncommitted),
        }
    }

    /// A write-only upload.
    async fn upload(&self, path: &str, options: WriteOptions) -> Result<Upload, StorageError> {
        // The size before this write, so FSTAT and appends know where the file
        // ends: the committed file's, which a write that keeps the content
        // starts from (not an upload in progress elsewhere, which it does not).
        let start_size = if options.truncate {
            0
        } else {
            self.settle(path).await;
            match self.storage.file_info(path).await {
                Ok(info) => info.size,
                Err(StorageError::NotFound) => 0,
                Err(e) => return Err(e),
            }
        };
        let permissions = options.permissions.unwrap_or(0o644);
        let placeholder = self.hold_node(path, permissions, start_size, options)?;
        // A plugin that does not honour `append` gets a write that keeps the
        // content; the upload places each WRITE at the end itself.
        let plugin_options = WriteOptions { append: options.append && self.capabilities().append, ..options };
        let writer = self.storage.begin_write(path, plugin_options).await?;
        Ok(Upload::new(upload::UploadParts {
            writer,
            chunk: self.capabilities().write_chunk as usize,
            append: options.append,
            plugin_append: plugin_options.append,
            start_size,
            permissions,
            placeholder,
            budget: self.budgets.upload.clone(),
            max_size: self.capabilities().max_file_size,
            in_order: self.in_order_from(start_size),
        }))
    }

    /// For a plugin without random writes, the order an upload's bytes go
    /// to it in, after the `start` bytes its writer starts with.
    pub(super) fn in_order_from(&self, start: u64) -> Option<InOrder> {
        (!self.capabilities().random_write).then(|| {
            InOrder::new(
                start,
                self.capabilities().write_chunk as usize,
                self.budgets.upload.clone(),
                self.budgets.spool.clone(),
                self.settings.max_spool_bytes,
            )
        })
    }

    /// The node of a file about to be written; an exclusive create fails
    /// while another handle writes the path.
    fn hold_node(&self, path: &str, permissions: u32, size: u64, options: WriteOptions) -> Result<NodeHold, StorageError> {
        let exclusive = options.create && options.exclusive;
        self.nodes.hold(path, permissions, size, exclusive, self.session).ok_or(StorageError::AlreadyExists)
    }

    /// A file for reading and writing (see [`ReadWriteFile`]).
    async fn open_read_write(&self, path: &str, options: WriteOptions) -> Result<ReadWriteFile, StorageError> {
        let max_spool = self.settings.max_spool_bytes;
        let existing = match self.storage.file_info(path).await {
            Ok(info) => Some(info),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(info) = &existing {
            if info.kind == FileKind::Directory {
                return Err(StorageError::IsADirectory);
            }
            if !options.truncate && info.size > max_spool {
                return Err(spool::too_large(max_spool));
            }
        }
        let permissions = options.permissions.or(existing.as_ref().map(|i| i.permissions)).unwrap_or(0o644);
        let kept = existing.as_ref().filter(|_| !options.truncate).map_or(0, |info| info.size);
        let placeholder = self.hold_node(path, permissions, kept, options)?;
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
            max_size: caps.max_file_size.map_or(max_spool, |max| max.min(max_spool)),
            append: options.append,
            permissions,
            read_chunk: caps.read_chunk,
            write_chunk: caps.write_chunk as usize,
            placeholder,
        })
        .await
    }
}
