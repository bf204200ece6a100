//! `copy-data`: bytes from one open handle to another without a round trip
//! through the client.

use super::handle::{Content, Kind};
use super::{FileReader, Files, Handle};
use crate::plugin::StorageError;

/// Bytes read from the source at a time when the copy is streamed here: the
/// largest READ and WRITE a client may send (`sftp::MAX_READ`), so the
/// handles see what a client copying the bytes itself would send.
const COPY_CHUNK: u32 = 255 * 1024;

impl Files {
    /// Copies `length` bytes (0: to the end) at `read_offset` of `source` to
    /// `write_offset` of `destination`. A whole file onto a fresh upload is
    /// copied by the plugin itself (`copy-file`): `None`; anything else is
    /// read and written here, a chunk at a time: the bytes copied.
    pub async fn copy_data(
        &self,
        source: &Handle,
        read_offset: u64,
        length: u64,
        destination: &Handle,
        write_offset: u64,
    ) -> Result<Option<u64>, StorageError> {
        if read_offset == 0 && length == 0 && write_offset == 0 && self.copy_whole_file(source, destination).await? {
            return Ok(None);
        }
        // To the source's end as it was opened, whatever its reader does
        // past it: a copy never loops on a reader that does not end.
        let size = source.size_to_copy().await?;
        let end = if length == 0 { size } else { read_offset.saturating_add(length).min(size) };
        let mut offset = read_offset;
        let mut copied = 0u64;
        while offset < end {
            let want = (end - offset).min(u64::from(COPY_CHUNK)) as u32;
            let data = source.read(offset, want).await?;
            if data.is_empty() {
                break;
            }
            let at = write_offset.checked_add(copied).ok_or_else(|| StorageError::Io("offset out of range".into()))?;
            destination.write(at, &data).await?;
            offset += data.len() as u64;
            copied += data.len() as u64;
        }
        Ok(Some(copied))
    }

    /// The plugin's `copy-file` of the source's file onto the destination's,
    /// when the source reads a committed file and the destination is an
    /// upload nothing was written to yet; false when they are not.
    async fn copy_whole_file(&self, source: &Handle, destination: &Handle) -> Result<bool, StorageError> {
        let (Kind::Read(FileReader::Plugin(_)), Kind::Write { content, .. }) = (&source.kind, &destination.kind) else {
            return Ok(false);
        };
        let mut content = content.lock().await;
        let Content::Upload(upload) = &mut *content else { return Ok(false) };
        if !upload.is_untouched() {
            return Ok(false);
        }
        self.storage.copy_file(&source.path, &destination.path, true).await?;
        upload.replaced_by_copy();
        Ok(true)
    }
}
