//! What a read-only handle reads from.

use super::ReadAhead;
use crate::plugin::StorageError;

pub enum FileReader {
    /// The plugin's reader, pinned to the version it opened, read ahead of
    /// the client when it reads sequentially.
    Plugin(ReadAhead),
    /// A file being written and not committed yet: empty until a CLOSE
    /// commits it.
    Uncommitted,
}

impl FileReader {
    /// Up to `len` bytes at `offset`; empty at end of file.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        match self {
            Self::Plugin(reader) => reader.read(offset, len).await,
            Self::Uncommitted => Ok(Vec::new()),
        }
    }

    /// The size of the version being read (0 for an uncommitted file).
    pub async fn size(&self) -> Result<u64, StorageError> {
        match self {
            Self::Plugin(reader) => reader.info().await.map(|info| info.size),
            Self::Uncommitted => Ok(0),
        }
    }
}
