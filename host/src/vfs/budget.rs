//! One byte budget per SSH connection for upload data held in the host
//! (write coalescing buffers). Without it, 10 channels × 256 handles × up to
//! 8 MiB chunks could pin gigabytes for one login. Past the budget a WRITE
//! is not held at all: it goes to the plugin as its own chunk.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
}

impl ByteBudget {
    pub fn new(total: usize) -> Self {
        Self { bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))) }
    }

    /// Takes `n` bytes at once if they are free.
    pub fn try_take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        self.bytes.clone().try_acquire_many_owned(u32::try_from(n).ok()?).ok()
    }
}
