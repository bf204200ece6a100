//! Open file and directory handles of one SFTP session, and the write
//! coalescing that turns many small client WRITEs into plugin-sized chunks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::plugin::{FileInfo, FileKind, Reader, SetAttrs, StorageError, Writer};

pub enum HandleKind {
    Read(Reader),
    Write(tokio::sync::Mutex<WriteState>),
    Dir(tokio::sync::Mutex<DirState>),
}

pub struct HandleEntry {
    pub kind: HandleKind,
    /// Path in the plugin namespace.
    pub path: String,
    /// Requests on this handle dispatched and not yet finished; CLOSE waits
    /// for them so it sees every WRITE sent before it.
    inflight: watch::Sender<usize>,
    /// WRITEs are applied in arrival order (appends and overlapping writes
    /// depend on it): each gets a number when read off the wire and waits
    /// until `write_turn` reaches it.
    next_write: AtomicU64,
    write_turn: watch::Sender<u64>,
}

/// Counts one request on a handle until dropped; for a WRITE, also holds its
/// place in the handle's write order.
pub struct InflightTicket {
    entry: Arc<HandleEntry>,
    write_number: Option<u64>,
}

impl InflightTicket {
    /// The handle this request was counted on when it was read off the wire:
    /// it stays usable after a later CLOSE removed the name from the table.
    pub fn entry(&self) -> &Arc<HandleEntry> {
        &self.entry
    }

    /// For a WRITE: waits until every earlier WRITE on the handle is done.
    pub async fn wait_turn(&self) {
        if let Some(number) = self.write_number {
            let mut turn = self.entry.write_turn.subscribe();
            let _ = turn.wait_for(|t| *t == number).await;
        }
    }
}

impl Drop for InflightTicket {
    fn drop(&mut self) {
        if let Some(number) = self.write_number {
            self.entry.write_turn.send_modify(|t| *t = number + 1);
        }
        self.entry.inflight.send_modify(|n| *n -= 1);
    }
}

impl HandleEntry {
    /// Taken in the reader loop, in arrival order.
    pub fn ticket(self: &Arc<Self>, is_write: bool) -> InflightTicket {
        self.inflight.send_modify(|n| *n += 1);
        let write_number = is_write.then(|| self.next_write.fetch_add(1, Ordering::SeqCst));
        InflightTicket { entry: self.clone(), write_number }
    }

    /// Waits until no other request on this handle is in flight.
    pub async fn quiesce(&self) {
        let mut rx = self.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

pub struct DirState {
    pub cursor: Option<String>,
    pub done: bool,
    /// Entries sent so far on this handle.
    pub sent: u64,
}

#[derive(Default)]
pub struct HandleTable {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next: u64,
    open: HashMap<String, Arc<HandleEntry>>,
}

impl HandleTable {
    /// Adds a handle, or gives it back when `max` are already open.
    pub fn insert(&self, kind: HandleKind, path: String, max: usize) -> Result<String, HandleKind> {
        let mut inner = self.inner.lock().expect("handle table lock");
        if inner.open.len() >= max {
            return Err(kind);
        }
        inner.next += 1;
        let name = format!("{:x}", inner.next);
        let entry = Arc::new(HandleEntry {
            kind,
            path,
            inflight: watch::channel(0).0,
            next_write: AtomicU64::new(0),
            write_turn: watch::channel(0).0,
        });
        inner.open.insert(name.clone(), entry);
        Ok(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.get(name).cloned()
    }

    pub fn remove(&self, name: &str) -> Option<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.remove(name)
    }

    /// Takes every handle (session end or shutdown).
    pub fn drain(&self) -> Vec<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.drain().map(|(_, e)| e).collect()
    }
}

/// A writer and the bytes gathered for its next chunk.
pub struct WriteState {
    pub writer: Writer,
    buffer: Vec<u8>,
    buffer_offset: u64,
    /// Bytes per plugin `write-chunk`.
    chunk: usize,
    append: bool,
    /// Highest end offset written: the size FSTAT reports before commit.
    high_water: u64,
    permissions: u32,
    /// The first failure; every later WRITE and the CLOSE report it.
    failed: Option<StorageError>,
    /// FSETSTAT before CLOSE: applied once the content is committed.
    pub deferred_attrs: Option<SetAttrs>,
    /// Added before each backend call (benchmarking a slow backend).
    backend_delay: Duration,
}

impl WriteState {
    pub fn new(writer: Writer, chunk: usize, append: bool, start_size: u64, permissions: u32, backend_delay: Duration) -> Self {
        Self {
            writer,
            buffer: Vec::with_capacity(chunk.min(1 << 20)),
            buffer_offset: 0,
            chunk,
            append,
            high_water: start_size,
            permissions,
            failed: None,
            deferred_attrs: None,
            backend_delay,
        }
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        // A client offset near u64::MAX must not overflow the arithmetic below.
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return Err(StorageError::InvalidInput("write beyond the largest file offset".into()));
        };
        let contiguous = self.buffer_offset.checked_add(self.buffer.len() as u64) == Some(offset);
        if !self.append && !self.buffer.is_empty() && !contiguous {
            self.flush().await?;
        }
        if self.buffer.is_empty() {
            self.buffer_offset = offset;
        }
        self.buffer.extend_from_slice(data);
        // Appended data lands at the end of the file, whatever its offset.
        let end = if self.append { self.high_water.saturating_add(data.len() as u64) } else { end };
        self.high_water = self.high_water.max(end);
        if self.buffer.len() >= self.chunk {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the gathered bytes to the plugin.
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        delay(self.backend_delay).await;
        let result = self.writer.write_chunk(self.buffer_offset, &self.buffer).await;
        self.buffer_offset = self.buffer_offset.saturating_add(self.buffer.len() as u64);
        self.buffer.clear();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// Flushes and commits: the result is what CLOSE reports.
    pub async fn commit(&mut self) -> Result<FileInfo, StorageError> {
        if let Err(error) = self.flush().await {
            let _ = self.writer.abort().await;
            return Err(error);
        }
        delay(self.backend_delay).await;
        self.writer.finish().await
    }

    /// What FSTAT shows before the content is committed.
    pub fn provisional_info(&self) -> FileInfo {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        FileInfo { kind: FileKind::File, size: self.high_water, permissions: self.permissions, modified: now, accessed: now }
    }
}

async fn delay(by: Duration) {
    if !by.is_zero() {
        tokio::time::sleep(by).await;
    }
}
