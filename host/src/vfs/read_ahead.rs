//! Read-ahead for a file read from start to end.
//!
//! Clients read in 32–255 KiB requests; a plugin says which size it reads
//! best (`read-chunk`: several MiB for object storage, where each read is a
//! ranged GET). A handle read sequentially is read from the plugin a chunk
//! at a time, one chunk ahead of the client, and the client's READs are cut
//! from those chunks. A READ elsewhere in the file goes straight to the
//! plugin; if the client goes on reading from there, read-ahead starts again.
//!
//! Clients keep many READs in flight (OpenSSH: 64 of up to 255 KiB), so "sequential"
//! means within a window around the furthest chunk read so far, of
//! [`WINDOW`] bytes (rounded up to whole chunks) on both sides. A handle
//! holds the chunks READs touched in that window and one more ahead, each
//! taken from the read-ahead budget (the connection's, within its tenant's
//! share of the server's) until every byte of it was served; without
//! budget, READs go straight to the plugin.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::budget::{BudgetPermit, ByteBudget};
use crate::plugin::{Reader, StorageError};

/// How far apart a client's READs in flight may be: 64 requests of up to
/// 255 KiB (OpenSSH, with the server's `limits@openssh.com`).
const WINDOW: u64 = 16 << 20;

pub struct ReadAhead {
    reader: Arc<Reader>,
    chunk: u64,
    /// The window, in chunks.
    window: u64,
    budget: ByteBudget,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Chunks by index (offset / chunk size), loaded or loading.
    slots: BTreeMap<u64, Slot>,
    /// The furthest chunk sequential READs have reached.
    front: Option<u64>,
    /// Where the file ends, once a chunk loaded short said so: READs from
    /// there on are answered with end of file without asking the plugin
    /// (clients read past the end with many READs in flight).
    end: Option<u64>,
}

/// Where a READ at some offset is served from.
enum Source {
    Chunk(Slot),
    /// Not a sequential read, or no budget: straight to the plugin.
    Plugin,
    EndOfFile,
}

type Slot = Arc<ChunkSlot>;

/// One chunk, loaded once by whichever READ (or prefetch) gets there first;
/// a failed load is not kept (the next READ asks the plugin again).
struct ChunkSlot {
    data: OnceCell<Arc<Vec<u8>>>,
    /// Bytes of the chunk served to READs so far: once all were, the chunk
    /// is done with and its budget goes back (another handle may need it).
    served: AtomicU64,
    /// The chunk's bytes in the read-ahead budget.
    _budget: BudgetPermit,
}

impl ChunkSlot {
    fn new(budget: BudgetPermit) -> Slot {
        Arc::new(ChunkSlot { data: OnceCell::new(), served: AtomicU64::new(0), _budget: budget })
    }
}

impl ReadAhead {
    pub fn new(reader: Reader, chunk: u32, budget: ByteBudget) -> Self {
        let chunk = u64::from(chunk.max(1));
        Self { reader: Arc::new(reader), chunk, window: WINDOW.div_ceil(chunk), budget, state: Mutex::default() }
    }

    /// The version being read, as the plugin says (a call into it).
    pub async fn info(&self) -> Result<crate::plugin::FileInfo, StorageError> {
        self.reader.info().await
    }

    /// Up to `len` bytes at `offset`; empty at end of file.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        let mut at = offset;
        while out.len() < len as usize {
            let index = at / self.chunk;
            let slot = match self.source(at) {
                Source::Chunk(slot) => slot,
                Source::EndOfFile => break,
                Source::Plugin => {
                    // For the rest of it: a short reply before the end of the
                    // file makes OpenSSH's scp before 9.4 truncate a download.
                    let rest = read_full(&self.reader, at, u64::from(len) - out.len() as u64).await?;
                    out.extend_from_slice(&rest);
                    break;
                }
            };
            let chunk = slot.data.get_or_try_init(|| self.load(index)).await?.clone();
            let full = chunk.len() as u64 == self.chunk;
            self.loaded(index, chunk.len(), full);
            let start = (at - index * self.chunk) as usize;
            if start >= chunk.len() {
                break;
            }
            let take = (len as usize - out.len()).min(chunk.len() - start);
            out.extend_from_slice(&chunk[start..start + take]);
            at += take as u64;
            self.served(index, &slot, take, chunk.len());
            if !full && start + take == chunk.len() {
                break;
            }
        }
        Ok(out)
    }

    /// Where a READ at `at` is served from: the chunk's slot (made if the
    /// read is sequential and the budget allows), the plugin, or nowhere
    /// (past the known end).
    fn source(&self, at: u64) -> Source {
        let index = at / self.chunk;
        let mut state = self.state.lock().expect("read-ahead lock");
        if state.end.is_some_and(|end| at >= end) {
            return Source::EndOfFile;
        }
        let sequential = match state.front {
            None => index <= self.window,
            Some(front) => index <= front + self.window && index + self.window >= front,
        };
        if !sequential {
            // Elsewhere in the file: what was read ahead is done with.
            state.slots.clear();
            state.front = Some(index);
            return Source::Plugin;
        }
        let front = state.front.map_or(index, |front| front.max(index));
        state.front = Some(front);
        // Chunks behind the window are done with.
        let window = self.window;
        state.slots.retain(|i, _| *i + window >= front);
        if let Some(slot) = state.slots.get(&index).cloned() {
            return Source::Chunk(slot);
        }
        let Some(budget) = self.budget.try_take(self.chunk as usize) else { return Source::Plugin };
        let slot = ChunkSlot::new(budget);
        state.slots.insert(index, slot.clone());
        Source::Chunk(slot)
    }

    /// `bytes` more of chunk `index` went to the client: once all of it
    /// did, the chunk is dropped (a READ of it again is loaded again).
    fn served(&self, index: u64, slot: &Slot, bytes: usize, len: usize) {
        let served = slot.served.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        if served >= len as u64 {
            let mut state = self.state.lock().expect("read-ahead lock");
            if state.slots.get(&index).is_some_and(|held| Arc::ptr_eq(held, slot)) {
                state.slots.remove(&index);
            }
        }
    }

    /// Chunk `index` is loaded: a full one means the file may go on, so the
    /// next chunk starts loading while the client reads this one.
    fn loaded(&self, index: u64, len: usize, full: bool) {
        let next = index + 1;
        let slot = {
            let mut state = self.state.lock().expect("read-ahead lock");
            if !full {
                let end = index * self.chunk + len as u64;
                state.end = Some(state.end.map_or(end, |known| known.min(end)));
                return;
            }
            // One chunk beyond the furthest READ, so the next READs find it.
            if state.slots.contains_key(&next) || state.front.is_none_or(|front| next != front + 1) {
                return;
            }
            let Some(budget) = self.budget.try_take(self.chunk as usize) else { return };
            let slot = ChunkSlot::new(budget);
            state.slots.insert(next, slot.clone());
            slot
        };
        let load = self.load(next);
        tokio::spawn(async move {
            // A failure is not kept: the READ that needs the chunk tries again.
            let _ = slot.data.get_or_try_init(|| load).await;
        });
    }

    /// Chunk `index` from the plugin; nothing past a known end.
    fn load(&self, index: u64) -> impl Future<Output = Result<Arc<Vec<u8>>, StorageError>> + Send + 'static {
        let (reader, chunk) = (self.reader.clone(), self.chunk);
        let past_end = self.state.lock().expect("read-ahead lock").end.is_some_and(|end| index * chunk >= end);
        async move {
            if past_end {
                return Ok(Arc::default());
            }
            read_full(&reader, index * chunk, chunk).await.map(Arc::new)
        }
    }
}

/// `len` bytes at `start`, fewer only at the end of the file: a plugin may
/// answer a read with fewer bytes than asked before the end.
async fn read_full(reader: &Reader, start: u64, len: u64) -> Result<Vec<u8>, StorageError> {
    let mut data = Vec::new();
    while (data.len() as u64) < len {
        let want = (len - data.len() as u64).min(u64::from(u32::MAX)) as u32;
        let got = reader.read(start + data.len() as u64, want).await?;
        if got.is_empty() {
            break;
        }
        data.extend_from_slice(&got);
    }
    Ok(data)
}
