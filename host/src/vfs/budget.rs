//! Byte budgets per SSH connection for file data held in the host: upload
//! data (write coalescing buffers) and read-ahead chunks. Without them, 10
//! channels × 256 handles × up to 8 MiB chunks could pin gigabytes for one
//! login. Past the upload budget a WRITE is not held at all: it goes to the
//! plugin as its own chunk; past the read-ahead budget a READ goes straight
//! to the plugin.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
}

/// The budgets of one connection, shared by its SFTP sessions.
#[derive(Clone)]
pub struct FileBudgets {
    pub upload: ByteBudget,
    pub read_ahead: ByteBudget,
}

impl ByteBudget {
    pub fn new(total: usize) -> Self {
        Self { bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))) }
    }

    /// Whether `n` bytes are free now.
    pub fn has(&self, n: usize) -> bool {
        self.bytes.available_permits() >= n
    }

    /// Takes `n` bytes at once if they are free.
    pub fn try_take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        self.bytes.clone().try_acquire_many_owned(u32::try_from(n).ok()?).ok()
    }
}
