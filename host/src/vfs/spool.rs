//! A temporary file on the server's disk holding content the plugin cannot
//! take yet: unlinked at creation, so nothing is left behind whatever
//! happens to the server, and bounded in size, per file and for the whole
//! server (`SpoolArea`).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plugin::StorageError;

/// Where spool files go, and the bytes all of them may hold together.
pub struct SpoolArea {
    dir: PathBuf,
    total: u64,
    used: AtomicU64,
}

impl SpoolArea {
    pub fn new(dir: PathBuf, total: u64) -> Arc<Self> {
        Arc::new(Self { dir, total, used: AtomicU64::new(0) })
    }

    /// Bytes the server's spool files hold now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `bytes` more, if the area has room.
    fn take(&self, bytes: u64) -> Result<(), StorageError> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| used.checked_add(bytes).filter(|&n| n <= self.total))
            .map(drop)
            .map_err(|_| {
                tracing::warn!(total = self.total, "the server's spool space is full");
                StorageError::Io("the server's spool space is full; try again later".into())
            })
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

pub struct Spool {
    area: Arc<SpoolArea>,
    /// Bytes of the area this file holds (its physical size).
    charged: u64,
    file: Arc<File>,
    /// The file offset the spool starts at (what comes before is elsewhere:
    /// an in-order upload's bytes the plugin already has).
    base: u64,
    /// Most bytes the spool may hold.
    max: u64,
    /// The file's size: the end of the furthest write, or the last size set.
    len: u64,
}

impl Spool {
    /// A spool for a file's bytes from offset `base` on.
    pub async fn create(area: &Arc<SpoolArea>, base: u64, max: u64) -> Result<Self, StorageError> {
        let dir = area.dir.clone();
        let file = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::tempfile_in(dir)
        })
        .await?;
        Ok(Self { area: area.clone(), charged: 0, file: Arc::new(file), base, max, len: base })
    }

    /// Charges the area for a physical size of `size` (or gives back).
    fn charge(&mut self, size: u64) -> Result<(), StorageError> {
        if size > self.charged {
            self.area.take(size - self.charged)?;
        } else {
            self.area.give_back(self.charged - size);
        }
        self.charged = size;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Writes at `offset`; past the size bound, nothing is written.
    pub async fn write_at(&mut self, offset: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let at = offset.checked_sub(self.base).expect("no write before the spool's start");
        let end = offset.checked_add(data.len() as u64).filter(|end| end - self.base <= self.max);
        let Some(end) = end else { return Err(too_large(self.max)) };
        if end - self.base > self.charged {
            self.charge(end - self.base)?;
        }
        let file = self.file.clone();
        blocking(move || file.write_all_at(&data, at)).await?;
        self.len = self.len.max(end);
        Ok(())
    }

    /// Cuts the content, or extends it with zeros.
    pub async fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        let physical = len.checked_sub(self.base).expect("no size before the spool's start");
        if physical > self.max {
            return Err(too_large(self.max));
        }
        if physical > self.charged {
            self.charge(physical)?;
        }
        let file = self.file.clone();
        blocking(move || file.set_len(physical)).await?;
        if physical < self.charged {
            self.charge(physical)?;
        }
        self.len = len;
        Ok(())
    }

    /// Up to `len` bytes at `offset` (fewer at the end); never-written
    /// ranges read as zeros.
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let len = (self.len - offset).min(u64::from(len)) as usize;
        let at = offset.checked_sub(self.base).expect("no read before the spool's start");
        let file = self.file.clone();
        blocking(move || {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, at)?;
            Ok(buf)
        })
        .await
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.area.give_back(self.charged);
    }
}

pub fn too_large(max: u64) -> StorageError {
    StorageError::Io(format!("the server spools at most {max} bytes of this file"))
}

fn spool_error(e: std::io::Error) -> StorageError {
    tracing::warn!("spool file: {e}");
    StorageError::Io("the server's spool file failed".into())
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| spool_error(std::io::Error::other(e)))?.map_err(spool_error)
}
