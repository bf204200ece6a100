//! Uploads to a plugin that takes content only in order (`random-write =
//! false`: object storage, whose multipart parts are sequential and at least
//! 5 MiB).
//!
//! The plugin gets whole `write-chunk` parts from the start of the file;
//! only the last one, at CLOSE, may be shorter. A WRITE ahead of the bytes
//! gathered so far waits in a small reorder window (clients pipeline, and
//! their WRITEs are handled in parallel). Past the window, for a size
//! change, for WRITEs that overlap, or when the upload budget (the
//! connection's, its tenant's or the server's) stays short for
//! `BUDGET_WAIT`, the upload goes to a spool file on disk. Spooled bytes
//! that are in order go on to the plugin as WRITEs come and budget allows,
//! and once the spool has handed everything over the upload streams from
//! memory again (so a busy moment does not send the rest of a large upload
//! to disk, nor past the spool bound); the rest is replayed at CLOSE. A
//! WRITE before what the plugin already has cannot be honoured and fails
//! clearly.

use std::collections::BTreeMap;

use super::budget::{BudgetPermit, ByteBudget};
use super::spool::{Spool, TenantSpool};
use crate::plugin::StorageError;

/// Out-of-order bytes one upload may hold in memory before spooling.
const REORDER_WINDOW: usize = 8 << 20;

/// How long a WRITE waits for upload budget to be given back (by parts of
/// this or other uploads reaching their plugins) before it spools.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// WRITEs one upload may hold ahead in memory: each costs a map entry and
/// an allocation the budget does not see (one-byte WRITEs apart).
const MAX_AHEAD: usize = 1024;

/// Separate ranges a spool tracks for handing its bytes over; past them it
/// is replayed at CLOSE instead.
const MAX_RANGES: usize = 1024;

pub struct InOrder {
    /// Bytes the plugin has: where its next part starts.
    sent: u64,
    /// Bytes from `sent` on, in order.
    gathered: Vec<u8>,
    /// WRITEs beyond `gathered`, by offset; they never overlap each other
    /// or `gathered`.
    ahead: BTreeMap<u64, Vec<u8>>,
    ahead_bytes: usize,
    /// The budget for what `gathered` and `ahead` hold.
    held: Option<BudgetPermit>,
    /// The budget of parts handed out, kept by the caller until the plugin
    /// has them (`take_handed_out`).
    handed_out: Option<BudgetPermit>,
    budget: ByteBudget,
    /// Once spooling: every byte from `sent` on is there.
    spool: Option<Spool>,
    /// The ranges written into the spool, for handing its in-order bytes
    /// over before CLOSE; `None` after a size change while spooling (its
    /// zeros are not tracked: the spool is then replayed at CLOSE).
    spooled: Option<Ranges>,
    /// The last wait for a part's budget ran out: until a take succeeds,
    /// hand-overs do not wait while the spool has room (a spooled upload
    /// must not crawl at one WRITE per `BUDGET_WAIT` while the budget is
    /// short).
    waited_in_vain: bool,
    spool_share: TenantSpool,
    spool_max: u64,
    chunk: usize,
}

/// A part ready for the plugin: its offset and bytes.
pub type Part = (u64, Vec<u8>);

impl InOrder {
    /// `start`: the bytes the plugin's writer starts with (the current
    /// content when the file is not truncated), written only after them.
    pub fn new(start: u64, chunk: usize, budget: ByteBudget, spool_share: TenantSpool, spool_max: u64) -> Self {
        Self {
            sent: start,
            gathered: Vec::new(),
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
            held: None,
            handed_out: None,
            budget,
            spool: None,
            spooled: None,
            waited_in_vain: false,
            spool_share,
            spool_max,
            chunk: chunk.max(1),
        }
    }

    fn gathered_end(&self) -> u64 {
        self.sent + self.gathered.len() as u64
    }

    /// Takes `data` at `offset`; returns the whole parts now ready.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<Vec<Part>, StorageError> {
        if offset < self.sent {
            return Err(before_sent(self.sent));
        }
        if self.spool.is_none() {
            if let Some(growth) = self.growth_in_memory(offset, data) {
                let permit = match self.budget.try_take(growth) {
                    Some(permit) => Some(permit),
                    None => self.budget.take_within(growth, BUDGET_WAIT).await,
                };
                if let Some(permit) = permit {
                    self.hold(offset, data, permit);
                    return Ok(self.ready_parts());
                }
            }
            self.start_spool().await?;
        }
        let spool = self.spool.as_mut().expect("spooling");
        spool.write_at(offset, data.to_vec()).await?;
        if let Some(spooled) = &mut self.spooled {
            spooled.add(offset, offset + data.len() as u64);
            if spooled.0.len() > MAX_RANGES {
                self.spooled = None;
            }
        }
        self.hand_over_spooled().await
    }

    /// The budget `data` at `offset` needs to be held in memory, in order;
    /// `None` if it cannot be (it overlaps WRITEs ahead, or is past the window).
    fn growth_in_memory(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let end = offset + data.len() as u64;
        let overlaps_ahead = self.ahead.range(..end).next_back().is_some_and(|(o, d)| o + d.len() as u64 > offset);
        if overlaps_ahead {
            return None;
        }
        let gathered_end = self.gathered_end();
        if offset > gathered_end {
            let fits = self.ahead_bytes + data.len() <= REORDER_WINDOW && self.ahead.len() < MAX_AHEAD;
            return fits.then_some(data.len());
        }
        Some(end.saturating_sub(gathered_end) as usize)
    }

    /// Keeps `data` in memory, paid for by `permit` (see `growth_in_memory`).
    fn hold(&mut self, offset: u64, data: &[u8], permit: BudgetPermit) {
        let end = offset + data.len() as u64;
        let gathered_end = self.gathered_end();
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        if offset <= gathered_end {
            let at = (offset - self.sent) as usize;
            let new_len = (end - self.sent) as usize;
            // Grown as the data comes (at most twice what the budget holds),
            // not a whole part at its first byte.
            self.gathered.reserve(new_len.saturating_sub(self.gathered.len()));
            let overlap = self.gathered.len().saturating_sub(at).min(data.len());
            self.gathered[at..at + overlap].copy_from_slice(&data[..overlap]);
            self.gathered.extend_from_slice(&data[overlap..]);
            // WRITEs that waited for this gap follow on now.
            while let Some(bytes) = self.ahead.remove(&self.gathered_end()) {
                self.ahead_bytes -= bytes.len();
                self.gathered.extend_from_slice(&bytes);
            }
        } else {
            self.ahead_bytes += data.len();
            self.ahead.insert(offset, data.to_vec());
        }
    }

    /// Spooled bytes in order from `sent` go to the plugin, a whole part at
    /// a time, while the budget has room for them. When what is left is in
    /// order and less than a part, it moves back into memory (budget
    /// allowing) and the spool is dropped: the upload streams again.
    async fn hand_over_spooled(&mut self) -> Result<Vec<Part>, StorageError> {
        let mut parts = Vec::new();
        while let (Some(spool), Some(spooled)) = (&self.spool, &self.spooled) {
            let in_order = spooled.contiguous_end(self.sent) - self.sent;
            let chunk = self.chunk as u64;
            if in_order < chunk {
                if spooled.any_from(self.sent + in_order) {
                    break;
                }
                if let Some(permit) = self.budget.try_take(in_order as usize) {
                    self.gathered = spool.read_at(self.sent, in_order as u32).await?;
                    self.held = Some(permit);
                    self.spool = None;
                    self.spooled = None;
                    tracing::debug!("upload streams from memory again: its spool is handed over");
                } else if spool.base() < self.sent {
                    // Still short of budget: the rest moves to a fresh spool, so
                    // what was handed over no longer takes disk or counts
                    // toward the spool bound (the old one gives back its
                    // share first).
                    let rest = spool.read_at(self.sent, in_order as u32).await?;
                    self.spool = None;
                    let mut fresh = Spool::create(&self.spool_share, self.sent, self.spool_max).await?;
                    let mut spooled = Ranges::default();
                    spooled.add(self.sent, self.sent + rest.len() as u64);
                    fresh.write_at(self.sent, rest).await?;
                    self.spool = Some(fresh);
                    self.spooled = Some(spooled);
                }
                break;
            }
            // Its bytes are in order: this upload waits for the budget of
            // a part (as one in memory would) rather than let its spool grow.
            // Past half its bound, the spool always waits: the client is
            // slowed down rather than failed when the spool is full.
            let filling = spool.len() - spool.base() >= self.spool_max / 2;
            let permit = match self.budget.try_take(self.chunk) {
                Some(permit) => Some(permit),
                None if self.waited_in_vain && !filling => None,
                None => self.budget.take_within(self.chunk, BUDGET_WAIT).await,
            };
            self.waited_in_vain = permit.is_none();
            let Some(permit) = permit else { break };
            let part = spool.read_at(self.sent, self.chunk as u32).await?;
            parts.push((self.sent, part));
            self.sent += chunk;
            match &mut self.handed_out {
                Some(handed_out) => handed_out.merge(permit),
                None => self.handed_out = Some(permit),
            }
        }
        Ok(parts)
    }

    /// The whole parts at the front of `gathered`, taken off it.
    fn ready_parts(&mut self) -> Vec<Part> {
        let mut parts = Vec::new();
        while self.gathered.len() >= self.chunk {
            let rest = self.gathered.split_off(self.chunk);
            let part = std::mem::replace(&mut self.gathered, rest);
            parts.push((self.sent, part));
            self.sent += self.chunk as u64;
            self.release(self.chunk);
        }
        parts
    }

    /// Moves the budget of `bytes` handed out in a part to `handed_out`.
    fn release(&mut self, bytes: usize) {
        let Some(part) = self.held.as_mut().and_then(|held| held.split(bytes.min(held.bytes()))) else { return };
        match &mut self.handed_out {
            Some(handed_out) => handed_out.merge(part),
            None => self.handed_out = Some(part),
        }
    }

    /// The budget of the parts handed out since the last call: it stays
    /// taken until the plugin has their bytes.
    pub fn take_handed_out(&mut self) -> Option<BudgetPermit> {
        self.handed_out.take()
    }

    /// Moves everything held in memory to a new spool file.
    async fn start_spool(&mut self) -> Result<(), StorageError> {
        let mut spool = Spool::create(&self.spool_share, self.sent, self.spool_max).await?;
        let mut spooled = Ranges::default();
        let gathered = std::mem::take(&mut self.gathered);
        spooled.add(self.sent, self.sent + gathered.len() as u64);
        spool.write_at(self.sent, gathered).await?;
        for (offset, data) in std::mem::take(&mut self.ahead) {
            spooled.add(offset, offset + data.len() as u64);
            spool.write_at(offset, data).await?;
        }
        self.ahead_bytes = 0;
        self.held = None;
        tracing::debug!("upload spooled to disk (out of order beyond the window, a size change, or no budget)");
        self.spool = Some(spool);
        self.spooled = Some(spooled);
        Ok(())
    }

    /// Bytes the plugin has.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The plugin's content was cut to `size`, below what it had: what is
    /// held here lay past it and is dropped; WRITEs go on from there.
    pub fn cut_to(&mut self, size: u64) {
        self.sent = size;
        self.gathered = Vec::new();
        self.ahead.clear();
        self.ahead_bytes = 0;
        self.held = None;
        self.spool = None;
        self.spooled = None;
    }

    /// A size change: cut or zero-extend the content, in order with the
    /// WRITEs. Content the plugin already has is cut by the plugin (see
    /// `Upload::set_size`).
    pub async fn set_size(&mut self, size: u64) -> Result<(), StorageError> {
        if size < self.sent {
            return Err(before_sent(self.sent));
        }
        if self.spool.is_none() && self.ahead.is_empty() && size == self.gathered_end() {
            return Ok(());
        }
        if self.spool.is_none() {
            self.start_spool().await?;
        }
        self.spooled = None;
        self.spool.as_mut().expect("just started").set_len(size).await
    }

    /// The next part at CLOSE, the last one possibly short; `None` once the
    /// plugin has everything. Gaps before WRITEs ahead are zeros, as in a
    /// sparse file.
    pub async fn final_part(&mut self) -> Result<Option<Part>, StorageError> {
        if !self.ahead.is_empty() {
            self.start_spool().await?;
        }
        let part = match &self.spool {
            Some(spool) => {
                let want = self.chunk.min(u32::MAX as usize) as u32;
                spool.read_at(self.sent, want).await?
            }
            None => std::mem::take(&mut self.gathered),
        };
        if part.is_empty() {
            return Ok(None);
        }
        let offset = self.sent;
        self.sent += part.len() as u64;
        self.release(part.len());
        Ok(Some((offset, part)))
    }
}

/// Byte ranges, merged where they touch.
#[derive(Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    fn add(&mut self, mut start: u64, mut end: u64) {
        if start == end {
            return;
        }
        let touching: Vec<(u64, u64)> =
            self.0.range(..=end).rev().take_while(|(_, e)| **e >= start).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Where the bytes from `from` on stop being contiguous (`from` if
    /// the byte at `from` is not there).
    fn contiguous_end(&self, from: u64) -> u64 {
        match self.0.range(..=from).next_back() {
            Some((_, end)) if *end > from => *end,
            _ => from,
        }
    }

    /// Whether any byte at `from` or after is there.
    fn any_from(&self, from: u64) -> bool {
        self.contiguous_end(from) > from || self.0.range(from..).next().is_some()
    }
}

fn before_sent(sent: u64) -> StorageError {
    StorageError::Io(format!(
        "this storage takes a file's bytes in order, and the first {sent} have been stored: they cannot be written again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::budget::ServerBudget;
    use crate::vfs::spool::SpoolArea;

    fn in_order(start: u64, chunk: usize, dir: &tempfile::TempDir) -> InOrder {
        in_order_within(start, chunk, ByteBudget::alone(64 << 20), dir)
    }

    fn in_order_within(start: u64, chunk: usize, budget: ByteBudget, dir: &tempfile::TempDir) -> InOrder {
        let spool = SpoolArea::new(dir.path().to_path_buf(), 1 << 30, 1 << 30).for_tenant("tenant");
        InOrder::new(start, chunk, budget, spool, 1 << 30)
    }

    /// Sends every part, as the upload does, and returns what the plugin got.
    async fn finish(order: &mut InOrder, mut got: Vec<Part>) -> Vec<Part> {
        while let Some(part) = order.final_part().await.unwrap() {
            got.push(part);
        }
        got
    }

    fn content(parts: &[Part], start: u64) -> Vec<u8> {
        let mut next = start;
        let mut out = Vec::new();
        for (offset, data) in parts {
            assert_eq!(*offset, next, "parts arrive in order, without gaps");
            next += data.len() as u64;
            out.extend_from_slice(data);
        }
        out
    }

    #[tokio::test]
    async fn whole_parts_in_order_and_a_short_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 100, &dir);
        let data: Vec<u8> = (0..=255).cycle().take(1050).collect();
        let mut got = Vec::new();
        // Out of order within the window: 0..30 last.
        for (from, to) in [(30, 500), (500, 1050), (0, 30)] {
            got.extend(order.write(from as u64, &data[from..to]).await.unwrap());
        }
        assert!(got.iter().all(|(_, d)| d.len() == 100), "only whole parts before CLOSE");
        let got = finish(&mut order, got).await;
        assert_eq!(got.last().unwrap().1.len(), 50);
        assert_eq!(content(&got, 0), data);
    }

    #[tokio::test]
    async fn past_the_window_the_upload_is_spooled_and_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 1 << 20, &dir);
        let piece = 1 << 20;
        let data: Vec<u8> = (0..(12 * piece)).map(|i| (i / 4096) as u8).collect();
        let mut got = Vec::new();
        // Backwards: nothing is in order until the first piece comes last.
        for i in (1..12).rev() {
            got.extend(order.write((i * piece) as u64, &data[i * piece..(i + 1) * piece]).await.unwrap());
        }
        assert!(order.spool.is_some(), "11 MiB ahead is past the window");
        assert!(got.is_empty());
        got.extend(order.write(0, &data[..piece]).await.unwrap());
        assert_eq!(got.len(), 12, "the gap is written: the spool hands everything over");
        assert!(order.spool.is_none());
        assert_eq!(content(&finish(&mut order, got).await, 0), data);
    }

    #[tokio::test]
    async fn overlapping_writes_keep_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 1000, &dir);
        order.write(10, b"aaaa").await.unwrap();
        order.write(12, b"bbbb").await.unwrap();
        order.write(0, b"0123456789").await.unwrap();
        let got = finish(&mut order, Vec::new()).await;
        assert_eq!(content(&got, 0), b"0123456789aabbbb");
    }

    #[tokio::test]
    async fn bytes_the_plugin_has_cannot_be_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 4, &dir);
        assert_eq!(order.write(0, b"abcdef").await.unwrap().len(), 1);
        let again = order.write(2, b"x").await.unwrap_err();
        assert!(again.to_string().contains("in order"), "{again}");
        assert!(order.set_size(3).await.is_err(), "nor cut");
    }

    #[tokio::test]
    async fn size_changes_and_gaps_are_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 1000, &dir);
        order.set_size(0).await.unwrap();
        assert!(order.spool.is_none(), "a truncate to where the upload is changes nothing");
        order.write(0, b"ab").await.unwrap();
        order.write(5, b"cd").await.unwrap();
        let got = finish(&mut order, Vec::new()).await;
        assert_eq!(content(&got, 0), b"ab\0\0\0cd");

        let mut order = in_order(0, 1000, &dir);
        order.write(0, b"abcdef").await.unwrap();
        order.set_size(3).await.unwrap();
        order.set_size(5).await.unwrap();
        assert_eq!(content(&finish(&mut order, Vec::new()).await, 0), b"abc\0\0");
    }

    #[tokio::test]
    async fn a_spool_holds_what_comes_after_the_bytes_sent() {
        // Far past the spool bound (1 GiB here): only what is spooled counts.
        let dir = tempfile::tempdir().unwrap();
        let start = 3 << 30;
        let mut order = in_order(start, 1000, &dir);
        order.write(start, b"ab").await.unwrap();
        order.set_size(start + 5).await.unwrap();
        assert!(order.spool.is_some());
        assert_eq!(content(&finish(&mut order, Vec::new()).await, start), b"ab\0\0\0");
    }

    #[tokio::test]
    async fn a_resumed_upload_starts_after_the_existing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(1000, 10, &dir);
        assert!(order.write(500, b"x").await.is_err(), "the existing bytes stay");
        let got = order.write(1000, b"0123456789abc").await.unwrap();
        assert_eq!(got, vec![(1000, b"0123456789".to_vec())]);
        assert_eq!(finish(&mut order, Vec::new()).await, vec![(1010, b"abc".to_vec())]);
    }

    #[tokio::test]
    async fn rewrites_inside_and_across_the_gathered_end_land_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut order = in_order(0, 100, &dir);
        order.write(0, b"abcdef").await.unwrap();
        order.write(2, b"XY").await.unwrap();
        order.write(4, b"1234").await.unwrap();
        assert!(order.spool.is_none(), "held in memory");
        assert_eq!(content(&finish(&mut order, Vec::new()).await, 0), b"abXY1234");
    }

    #[tokio::test]
    async fn a_part_keeps_its_budget_until_the_plugin_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(100);
        let mut order = in_order_within(0, 60, budget.clone(), &dir);
        let parts = order.write(0, &[7; 70]).await.unwrap();
        assert_eq!(parts.len(), 1);
        assert!(budget.try_take(31).is_none(), "the part handed out still holds its 60 bytes, the rest 10");
        let handed_out = order.take_handed_out().expect("the part's budget");
        assert_eq!(handed_out.bytes(), 60);
        drop(handed_out);
        assert!(budget.try_take(90).is_some(), "given back once the plugin has the part");
    }

    /// Short of upload budget because another tenant holds the server's
    /// total, an upload spools (slower, not an error); past its tenant's
    /// spool share it fails, naming the share; and once it is dropped,
    /// the budgets and the spool hold nothing of it.
    #[tokio::test]
    async fn short_of_budget_it_spools_and_past_the_spool_share_it_fails_giving_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        const MIB: usize = 1 << 20;
        let uploads = ServerBudget::new(64 * MIB as u64, 4 * MIB as u64, 3 * MIB as u64);
        let spool = SpoolArea::new(dir.path().to_path_buf(), 64 << 20, 2 << 20);
        let other_tenant = uploads.for_connection("b").try_take(3 * MIB).expect("b's share");
        let budget = uploads.for_connection("a");
        let mut order = InOrder::new(0, 4 * MIB, budget.clone(), spool.for_tenant("a"), 1 << 30);
        assert!(order.write(0, &vec![1; MIB]).await.unwrap().is_empty(), "held in memory: 1 MiB is left");
        assert_eq!(uploads.shares().held_by("a"), MIB as u64);
        assert!(order.write(MIB as u64, &vec![2; MIB]).await.unwrap().is_empty(), "the server is short: spooled");
        assert!(order.spool.is_some());
        assert_eq!((budget.held(), spool.used_by("a")), (0, 2 * MIB as u64), "memory given back, disk taken");
        let refused = order.write(2 * MIB as u64, &[3; 4096]).await.unwrap_err();
        assert!(refused.to_string().contains("this tenant's spool share (2 MiB) is full"), "{refused}");
        drop(order);
        assert_eq!((spool.used(), spool.tenants()), (0, 0));
        assert_eq!((budget.held(), uploads.shares().held_by("a")), (0, 0));
        drop(other_tenant);
        assert_eq!((uploads.shares().held(), uploads.shares().tenants()), (0, 0));
    }

    #[tokio::test]
    async fn a_write_short_of_budget_waits_for_it_rather_than_spooling() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(100);
        let mut order = in_order_within(0, 50, budget.clone(), &dir);
        let part_on_its_way = budget.try_take(90).unwrap();
        let lands = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(part_on_its_way);
        });
        assert!(order.write(0, &[1; 40]).await.unwrap().is_empty());
        assert!(order.spool.is_none(), "the budget came back within the wait: held in memory");
        lands.await.unwrap();
    }

    /// The fifth S3 upload of a connection found the budget short once and
    /// spooled the rest of its bytes, failing past `spool_max` although
    /// nothing was wrong. Now the spool hands its bytes over as the budget
    /// comes back, and the upload streams from memory again.
    #[tokio::test]
    async fn a_spooled_upload_hands_its_bytes_over_and_streams_again() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 1000;
        let budget = ByteBudget::alone(4 * chunk as u64);
        let spool = SpoolArea::new(dir.path().to_path_buf(), 1 << 30, 1 << 30).for_tenant("tenant");
        // A spool may hold three parts; the upload is twelve.
        let mut order = InOrder::new(0, chunk, budget.clone(), spool, 3 * chunk as u64);
        let data: Vec<u8> = (0..12 * chunk).map(|i| (i % 251) as u8).collect();
        let others = budget.try_take(4 * chunk).unwrap();
        let mut got = order.write(0, &data[..300]).await.unwrap();
        assert!(order.spool.is_some(), "short of budget past the wait: spooled");
        got.extend(order.write(300, &data[300..1500]).await.unwrap());
        assert!(got.is_empty(), "nothing goes on while the budget is taken");
        drop(others);
        let mut at = 1500;
        while at < data.len() {
            let to = (at + 700).min(data.len());
            let parts = order.write(at as u64, &data[at..to]).await.unwrap();
            // As the plugin has each part, its budget comes back.
            drop(order.take_handed_out());
            got.extend(parts);
            at = to;
        }
        assert!(order.spool.is_none(), "handed over: streaming from memory again");
        assert!(got.len() >= 11, "the parts went on before CLOSE, not replayed then: {}", got.len());
        assert_eq!(content(&finish(&mut order, got).await, 0), data);
    }

    #[tokio::test]
    async fn bytes_ahead_in_the_spool_wait_there_until_the_gap_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(1000);
        let mut order = in_order_within(0, 100, budget.clone(), &dir);
        let others = budget.try_take(1000).unwrap();
        order.write(200, &[2; 100]).await.unwrap();
        drop(others);
        assert!(order.write(100, &[1; 100]).await.unwrap().is_empty(), "0..100 is missing: nothing is in order");
        assert!(order.spool.is_some());
        let parts = order.write(0, &[0; 100]).await.unwrap();
        assert_eq!(parts.iter().map(|(o, d)| (*o, d.len())).collect::<Vec<_>>(), vec![(0, 100), (100, 100), (200, 100)]);
        assert!(order.spool.is_none());
        let mut expected = vec![0; 100];
        expected.extend([1; 100]);
        expected.extend([2; 100]);
        assert_eq!(content(&parts, 0), expected);
    }

    #[tokio::test]
    async fn a_spool_short_of_budget_holds_at_most_what_is_not_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        const PART: usize = 64 << 10;
        let budget = ByteBudget::alone(5 * PART as u64 / 2);
        let area = SpoolArea::new(dir.path().to_path_buf(), 1 << 30, 1 << 30);
        // A spool may hold three parts; the upload is ten.
        let mut order = InOrder::new(0, PART, budget.clone(), area.for_tenant("tenant"), 3 * PART as u64);
        let others = budget.try_take(5 * PART / 2).unwrap();
        let data: Vec<u8> = (0..10 * PART).map(|i| (i % 253) as u8).collect();
        let mut got = order.write(0, &data[..3 * PART / 2]).await.unwrap();
        assert!(order.spool.is_some());
        // Room for one part at a time, never for the rest as well.
        drop(others);
        let _others = budget.try_take(3 * PART / 2).unwrap();
        for at in (3 * PART / 2..10 * PART).step_by(PART / 2) {
            got.extend(order.write(at as u64, &data[at..at + PART / 2]).await.unwrap());
            drop(order.take_handed_out());
            assert!(area.used() <= 2 * PART as u64 + 4096, "the spool holds what is not handed over: {}", area.used());
        }
        assert_eq!(content(&finish(&mut order, got).await, 0), data);
    }

    #[test]
    fn ranges_merge_where_they_touch() {
        let mut ranges = Ranges::default();
        ranges.add(10, 20);
        ranges.add(30, 40);
        assert_eq!((ranges.contiguous_end(10), ranges.contiguous_end(15), ranges.contiguous_end(20)), (20, 20, 20));
        assert!(ranges.any_from(20) && ranges.any_from(35) && !ranges.any_from(40));
        ranges.add(20, 30);
        assert_eq!(ranges.contiguous_end(12), 40);
        ranges.add(5, 45);
        assert_eq!((ranges.0.len(), ranges.contiguous_end(5)), (1, 45));
        ranges.add(50, 50);
        assert!(!ranges.any_from(45), "an empty write adds nothing");
    }

    /// A spooled upload keeps one `Ranges` entry per WRITE that does not
    /// touch another: nothing bounds their number (not the upload budget,
    /// not the spool bound, which counts 4 KiB blocks). A 1 GiB spool of
    /// one-byte WRITEs two bytes apart is 512 Mi entries, gigabytes of heap.
    #[tokio::test]
    async fn the_spooled_ranges_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // No upload budget at all: the first WRITE spools.
        let mut order = in_order_within(0, 1 << 20, ByteBudget::alone(0), &dir);
        for i in 1..20_000u64 {
            order.write(2 * i, b"x").await.unwrap();
        }
        let ranges = order.spooled.as_ref().map_or(0, |r| r.0.len());
        assert!(ranges <= 1024, "{ranges} ranges kept for one upload");
    }

    /// Before: held in memory, WRITEs ahead were charged their data bytes
    /// only: one byte of budget bought a map entry and an allocation (tens
    /// of bytes), up to 8 Mi of them per upload.
    #[tokio::test]
    async fn writes_ahead_in_memory_are_bounded_in_number() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(1 << 20);
        let mut order = in_order_within(0, 1 << 20, budget.clone(), &dir);
        for i in 1..20_000u64 {
            order.write(2 * i, b"x").await.unwrap();
        }
        assert!(order.ahead.len() <= MAX_AHEAD, "{} entries ahead", order.ahead.len());
        assert!(order.spool.is_some(), "past them the upload spools");
    }

    /// Moving the rest to a fresh spool writes it there while the old spool
    /// still holds its charge: near the tenant's spool share, a WRITE that
    /// fit fails ("spool share is full") at the moment the spool shrinks.
    #[tokio::test]
    async fn moving_to_a_fresh_spool_does_not_count_both() {
        const K: usize = 1024;
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(64 * K as u64 + 100);
        let area = SpoolArea::new(dir.path().to_path_buf(), 1 << 30, 88 * K as u64);
        let mut order = InOrder::new(0, 64 * K, budget.clone(), area.for_tenant("t"), 1 << 30);
        let others = budget.try_take(64 * K + 100).unwrap();
        order.write(0, &[1; 48 * K]).await.unwrap();
        assert!(order.spool.is_some());
        drop(others);
        // 80 KiB spooled, within the 88 KiB share; one part goes on, 16 KiB are left.
        let written = order.write(48 * K as u64, &[2; 32 * K]).await;
        assert!(written.is_ok(), "{written:?} (spool used {})", area.used());
    }

    /// One byte of a new part reserves the whole part (8 MiB for S3) while
    /// the budget is charged one byte: 256 idle uploads of a session pin
    /// 2 GiB outside the upload budget.
    #[tokio::test]
    async fn a_part_being_gathered_holds_no_more_than_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(64 << 20);
        let mut order = in_order_within(0, 8 << 20, budget.clone(), &dir);
        order.write(0, b"x").await.unwrap();
        assert!(
            order.gathered.capacity() as u64 <= 2 * budget.held().max(4096),
            "{} bytes reserved, {} charged",
            order.gathered.capacity(),
            budget.held()
        );
    }

    /// With the budget held elsewhere, every WRITE of a spooled upload past
    /// its first part waits BUDGET_WAIT in vain: 20 WRITEs a second.
    #[tokio::test]
    async fn a_spooled_upload_short_of_budget_is_not_throttled_per_write() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ByteBudget::alone(1 << 20);
        let mut order = in_order_within(0, 64 << 10, budget.clone(), &dir);
        let _others = budget.try_take(1 << 20).unwrap();
        let data = vec![1u8; 32 << 10];
        let started = std::time::Instant::now();
        for i in 0..40u64 {
            order.write(i * (32 << 10), &data).await.unwrap();
        }
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "40 WRITEs of 32 KiB took {took:?}");
    }
}
