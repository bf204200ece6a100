//! A write-only upload: many small client WRITEs coalesced into
//! plugin-sized chunks, held within the upload budget, committed at CLOSE.

use std::sync::Arc;

use super::budget::{BudgetPermit, ByteBudget};
use super::in_order::InOrder;
use super::node::{NodeHold, unix_now};
use crate::plugin::{FileInfo, FileKind, StorageError, WriteOptions, Writer};

pub struct Upload {
    /// `None` after a sync (fsync@openssh.com) committed the content, until
    /// the next change needs a writer again (see [`Upload::resume`]).
    writer: Option<Arc<Writer>>,
    /// Contiguous WRITEs gathered into the next chunk.
    gathered: Gathered,
    budget: ByteBudget,
    /// Bytes per plugin `write-chunk`.
    chunk: usize,
    /// Opened with APPEND: every WRITE lands at the end, whatever its offset.
    append: bool,
    /// Whether the plugin's writer does the appending itself.
    plugin_append: bool,
    /// Highest end offset written: the size FSTAT reports before commit.
    high_water: u64,
    permissions: u32,
    /// The first failure; every later WRITE and the CLOSE report it.
    failed: Option<StorageError>,
    /// Whether any content was written or resized (a copy may then replace it).
    touched: bool,
    /// The version the last sync committed, which a resumed writer must
    /// start from (none before a sync, or from a plugin without versions).
    synced_version: Option<String>,
    /// The plugin copied the whole file here (`copy-data`): CLOSE commits
    /// nothing more.
    copied: bool,
    /// Keeps the file visible (with its size so far) until CLOSE.
    placeholder: NodeHold,
    max_size: Option<u64>,
    /// For a plugin without random writes: the bytes go to it in order.
    in_order: Option<InOrder>,
    /// The in-order part being written now: the next part's WRITEs arrive
    /// and are gathered meanwhile (object storage: one part uploads while
    /// the next comes over SSH). Its failure is reported by the next WRITE
    /// or the CLOSE.
    in_flight: Option<tokio::task::JoinHandle<Result<(), StorageError>>>,
}

pub(super) struct UploadParts {
    pub writer: Writer,
    pub chunk: usize,
    pub append: bool,
    pub plugin_append: bool,
    pub start_size: u64,
    pub permissions: u32,
    pub placeholder: NodeHold,
    pub budget: ByteBudget,
    /// The plugin's largest file, if it has one.
    pub max_size: Option<u64>,
    pub in_order: Option<InOrder>,
}

impl Upload {
    pub(super) fn new(parts: UploadParts) -> Self {
        Self {
            writer: Some(Arc::new(parts.writer)),
            gathered: Gathered::default(),
            budget: parts.budget,
            chunk: parts.chunk,
            append: parts.append,
            plugin_append: parts.plugin_append,
            high_water: parts.start_size,
            permissions: parts.permissions,
            failed: None,
            touched: false,
            synced_version: None,
            copied: false,
            placeholder: parts.placeholder,
            max_size: parts.max_size,
            in_order: parts.in_order,
            in_flight: None,
        }
    }

    /// The writer the content goes to.
    fn writer(&self) -> Result<Arc<Writer>, StorageError> {
        // A change after a sync resumes a writer first (`Handle::resumed`).
        self.writer.clone().ok_or_else(|| StorageError::Io("the upload has no writer".into()))
    }

    /// After a sync, the options of the writer that carries on from the
    /// committed content; `None` when the upload still has its writer (or
    /// can take no more changes).
    pub fn resume_options(&self) -> Option<WriteOptions> {
        // Removed since the sync: what follows lands nowhere (`Upload::write`).
        let done = self.writer.is_some() || self.failed.is_some() || self.copied || self.placeholder.is_unlinked();
        // The file was committed a moment ago: if it has gone since (removed
        // by another session), later WRITEs fail rather than make it again.
        (!done).then_some(WriteOptions {
            create: false,
            truncate: false,
            exclusive: false,
            append: self.plugin_append,
            permissions: None,
        })
    }

    /// Carries on after a sync with `writer`, which starts from the
    /// committed content (and `in_order`, for a plugin without random writes).
    pub fn resume(&mut self, writer: Writer, in_order: Option<InOrder>) {
        self.writer = Some(Arc::new(writer));
        self.in_order = in_order;
    }

    /// What the last sync committed (see `synced_version`).
    pub fn synced_version(&self) -> Option<&str> {
        self.synced_version.as_deref()
    }

    /// A failure outside the upload's own calls (resuming its writer): every
    /// later WRITE and the CLOSE report it, as for its own.
    pub fn fail(&mut self, error: StorageError) {
        self.failed.get_or_insert(error);
    }

    /// The size the committed content has, where a resumed writer starts.
    pub fn size(&self) -> u64 {
        self.high_water
    }

    /// Refuses a size past the plugin's largest file before it is asked.
    fn check_size(&self, size: u64) -> Result<(), StorageError> {
        match self.max_size {
            Some(max) if size > max => Err(super::file_too_large(max)),
            _ => Ok(()),
        }
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.copied {
            return Err(StorageError::Unsupported);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.touched = true;
        if self.writer.is_none() {
            // Synced, then removed (see `resume_options`): as writes to an
            // unlinked file, they are taken and land nowhere.
            self.high_water = self.high_water.max(offset.saturating_add(data.len() as u64));
            return Ok(());
        }
        // As O_APPEND (what `sftp-server` opens an APPEND with): the WRITE
        // lands at the current end, whatever its offset. Placed here, so a
        // plugin that does not honour `append` gets it right too.
        let offset = if self.append { self.high_water } else { offset };
        // A client offset near u64::MAX must not overflow the arithmetic below.
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return Err(StorageError::InvalidInput("write beyond the largest file offset".into()));
        };
        self.check_size(end)?;
        if !self.gathered.continues_at(offset) {
            self.flush().await?;
        }
        if end > self.high_water {
            self.high_water = end;
            self.placeholder.set_size(end, false);
        }
        // The part on its way to the plugin holds budget: wait for it, rather
        // than have this upload spool the rest of its bytes to disk.
        if self.in_order.is_some() && self.in_flight.is_some() && !self.budget.has(data.len()) {
            self.settle_in_flight().await?;
        }
        if let Some(order) = &mut self.in_order {
            let parts = order.write(offset, data).await;
            let budget = order.take_handed_out();
            return self.send_parts(parts, budget).await;
        }
        let Some(permit) = self.reserve(data.len()).await? else {
            // The budget is spent (the connection's, its tenant's or the
            // server's): this WRITE goes to the plugin as it is.
            let writer = self.writer()?;
            return self.record(writer.write_chunk(offset, data).await);
        };
        self.gathered.add(offset, data, permit);
        if self.gathered.len() >= self.chunk {
            self.flush().await?;
        }
        Ok(())
    }

    /// Takes `n` bytes of the upload budget to gather. When the
    /// budget is short, this upload's own gathered bytes go to the plugin
    /// first; `None` when even then there is no room, and the data must not
    /// be held.
    async fn reserve(&mut self, n: usize) -> Result<Option<BudgetPermit>, StorageError> {
        if let Some(permit) = self.budget.try_take(n) {
            return Ok(Some(permit));
        }
        self.flush().await?;
        Ok(self.budget.try_take(n))
    }

    /// Hands the parts an in-order upload has ready to the plugin; a
    /// failure fails the upload. `budget` is theirs: each part keeps its
    /// share until the plugin has it.
    async fn send_parts(
        &mut self,
        parts: Result<Vec<super::in_order::Part>, StorageError>,
        mut budget: Option<BudgetPermit>,
    ) -> Result<(), StorageError> {
        let parts = match parts {
            Ok(parts) => parts,
            Err(error) => return self.record(Err(error)),
        };
        for (offset, part) in parts {
            self.settle_in_flight().await?;
            let writer = self.writer()?;
            let part_budget = budget.as_mut().and_then(|b| b.split(part.len().min(b.bytes())));
            self.in_flight = Some(tokio::spawn(async move {
                let written = writer.write_chunk(offset, part).await;
                drop(part_budget);
                written
            }));
        }
        Ok(())
    }

    /// Waits for the part being written, and records how it went.
    async fn settle_in_flight(&mut self) -> Result<(), StorageError> {
        let Some(part) = self.in_flight.take() else { return Ok(()) };
        let sent = part.await.unwrap_or_else(|e| Err(StorageError::Io(format!("writing a part failed: {e}"))));
        self.record(sent)
    }

    /// Keeps the first failure: every later WRITE and the CLOSE report it.
    fn record(&mut self, result: Result<(), StorageError>) -> Result<(), StorageError> {
        if let Err(error) = &result {
            self.failed.get_or_insert_with(|| error.clone());
        }
        result
    }

    /// Sends the gathered bytes to the plugin.
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some((offset, bytes, permit)) = self.gathered.take() else { return Ok(()) };
        // The bytes move to the plugin call, and their budget is given back
        // once it has them: an upload between chunks holds nothing (a
        // thousand idle uploads must not pin a chunk each outside the budget).
        let result = match self.writer() {
            Ok(writer) => writer.write_chunk(offset, bytes).await,
            Err(error) => Err(error),
        };
        drop(permit);
        self.record(result)
    }

    /// Changes the pending content's size (shrinks it, or extends it with
    /// zeros) in order with the WRITEs before and after it.
    pub async fn set_size(&mut self, size: u64) -> Result<(), StorageError> {
        if self.copied {
            return Err(StorageError::Unsupported);
        }
        self.check_size(size)?;
        self.flush().await?;
        self.settle_in_flight().await?;
        self.touched = true;
        if self.writer.is_none() {
            self.high_water = size;
            return Ok(());
        }
        match &mut self.in_order {
            // An in-order upload holds what the plugin does not have yet.
            Some(order) if size >= order.sent() => {
                let resized = order.set_size(size).await;
                self.record(resized)?;
            }
            // Below what the plugin has (for an in-order upload, the content
            // kept when the file was not truncated): only the plugin can cut that.
            _ => {
                if let Err(error) = self.writer()?.set_size(size).await {
                    // The content is no longer what the client sent: the upload must not commit.
                    if error != StorageError::Unsupported {
                        self.failed = Some(error.clone());
                    }
                    return Err(error);
                }
                if let Some(order) = &mut self.in_order {
                    order.cut_to(size);
                }
            }
        }
        self.high_water = size;
        self.placeholder.set_size(size, true);
        Ok(())
    }

    /// Nothing written yet onto empty content: a whole-file copy can stand in.
    pub fn is_untouched(&self) -> bool {
        !self.touched && !self.copied && self.high_water == 0 && self.failed.is_none()
    }

    /// The plugin copied the file into place: this writer has nothing to add.
    pub fn replaced_by_copy(&mut self) {
        self.copied = true;
    }

    /// Flushes and commits: the result is what CLOSE reports.
    pub async fn commit(&mut self) -> Result<(), StorageError> {
        let result = self.commit_content().await;
        self.let_go();
        result
    }

    /// Committed or given up: what the upload holds (its node, budget and
    /// spool) is free before CLOSE is answered, whoever still holds the
    /// upload itself. A client told its CLOSE is done may use that space at
    /// once, on another connection too.
    fn let_go(&mut self) {
        self.placeholder.release();
        self.gathered = Gathered::default();
        self.in_order = None;
        self.failed.get_or_insert_with(|| StorageError::Io("the upload is closed".into()));
    }

    async fn commit_content(&mut self) -> Result<(), StorageError> {
        // Synced, and nothing changed since: the content is committed.
        if self.writer.is_none() {
            return match &self.failed {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            };
        }
        // Removed while open (as unlink(2) of an open file), or copied into
        // place by the plugin: this writer has nothing to keep.
        if self.copied || !self.placeholder.begin_commit() {
            let _ = self.settle_in_flight().await;
            return self.abort_writer().await;
        }
        if let Err(error) = self.flush_all().await {
            // The part still being written goes first: abort comes last.
            let _ = self.settle_in_flight().await;
            let _ = self.abort_writer().await;
            return Err(error);
        }
        self.finish_writer().await.map(drop)
    }

    /// fsync@openssh.com: commits what was written so far, durably (the
    /// plugin declares `durable-sync`), while the handle stays open; the
    /// next change carries on with a new writer from the committed content
    /// (see `Handle::resumed`). On `sftp-server` the bytes are in the file
    /// already and fsync(2) makes them durable; here they become visible
    /// and durable together. A file removed while open has nothing to sync.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.writer.is_none() || self.copied || !self.placeholder.begin_commit() {
            return Ok(());
        }
        let synced = match self.flush_all().await {
            Ok(()) => self.finish_writer().await.map(|info| self.synced_version = info.version),
            Err(error) => {
                let _ = self.settle_in_flight().await;
                let _ = self.abort_writer().await;
                Err(error)
            }
        };
        self.placeholder.end_sync();
        self.in_order = None;
        self.record(synced)
    }

    /// Finishes the writer: the content is committed (or, on failure, given
    /// up); what the plugin says it now is.
    async fn finish_writer(&mut self) -> Result<FileInfo, StorageError> {
        let writer = self.writer.take().ok_or_else(|| StorageError::Io("the upload has no writer".into()))?;
        writer.finish().await
    }

    async fn abort_writer(&mut self) -> Result<(), StorageError> {
        match self.writer.take() {
            Some(writer) => writer.abort().await,
            None => Ok(()),
        }
    }

    /// Everything still held goes to the plugin (for an in-order upload, the
    /// rest of its parts, the last one possibly short).
    async fn flush_all(&mut self) -> Result<(), StorageError> {
        self.flush().await?;
        loop {
            let Some(order) = &mut self.in_order else { break };
            let part = match order.final_part().await {
                Ok(Some(part)) => part,
                Ok(None) => break,
                Err(error) => return self.record(Err(error)),
            };
            let budget = order.take_handed_out();
            self.send_parts(Ok(vec![part]), budget).await?;
        }
        self.settle_in_flight().await
    }

    /// The upload's hold on its node, with the attributes waiting for its commit.
    pub fn placeholder(&mut self) -> &mut NodeHold {
        &mut self.placeholder
    }

    /// Gives up the upload: nothing of it becomes visible.
    pub async fn abort(&mut self) -> Result<(), StorageError> {
        self.gathered = Gathered::default();
        let _ = self.settle_in_flight().await;
        let result = self.abort_writer().await;
        self.let_go();
        result
    }

    /// What FSTAT shows before the content is committed.
    pub fn provisional_info(&self) -> FileInfo {
        let now = unix_now();
        FileInfo {
            kind: FileKind::File,
            size: self.high_water,
            permissions: self.permissions,
            modified: now,
            accessed: now,
            version: None,
        }
    }
}

/// Contiguous WRITEs held for one plugin chunk, with the budget they take.
#[derive(Default)]
struct Gathered {
    offset: u64,
    bytes: Vec<u8>,
    permit: Option<BudgetPermit>,
}

impl Gathered {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether a WRITE at `offset` extends what is held (or nothing is).
    fn continues_at(&self, offset: u64) -> bool {
        self.bytes.is_empty() || self.offset.checked_add(self.bytes.len() as u64) == Some(offset)
    }

    /// Appends `data`, which `permit` pays for; it must continue what is held.
    fn add(&mut self, offset: u64, data: &[u8], permit: BudgetPermit) {
        debug_assert!(self.continues_at(offset));
        if self.bytes.is_empty() {
            self.offset = offset;
        }
        self.bytes.extend_from_slice(data);
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
    }

    /// Everything held, with its budget: nothing stays allocated here.
    fn take(&mut self) -> Option<(u64, Vec<u8>, Option<BudgetPermit>)> {
        if self.bytes.is_empty() {
            return None;
        }
        let offset = self.offset;
        self.offset = offset.saturating_add(self.bytes.len() as u64);
        Some((offset, std::mem::take(&mut self.bytes), self.permit.take()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_bytes_leave_nothing_allocated_once_taken() {
        let budget = ByteBudget::alone(1 << 20);
        let mut gathered = Gathered::default();
        for i in 0..4u64 {
            let data = vec![i as u8; 64 << 10];
            assert!(gathered.continues_at(i * (64 << 10)));
            gathered.add(i * (64 << 10), &data, budget.try_take(data.len()).unwrap());
        }
        assert!(!gathered.continues_at(1), "a WRITE elsewhere does not continue the chunk");
        let (offset, bytes, permit) = gathered.take().expect("256 KiB held");
        assert_eq!((offset, bytes.len(), budget.held()), (0, 256 << 10, 256 << 10));
        drop((bytes, permit));
        assert_eq!(budget.held(), 0);
        assert_eq!(gathered.bytes.capacity(), 0, "an idle upload pins no chunk outside the budget");
        assert!(gathered.take().is_none());
        assert!(gathered.continues_at(12345), "empty: anything starts a new chunk");
    }
}
