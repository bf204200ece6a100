//! The resource caps of one store. A `memory.grow` past the memory cap is
//! refused (the guest sees -1) rather than trapping: a guest that allocates
//! fallibly answers `no-space` and keeps its state, which for a tenant-scoped
//! plugin is every file of the tenant. Refusals are counted, and remembered
//! so that a trap following one can be explained as running out of memory.
//! Every store's memory is also charged to one server-wide budget
//! ([`GuestMemory`]), so the instances of all tenants together cannot take
//! more of the machine than the operator gave them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::RuntimeStats;

/// What one plugin's calls may make the host hold: bytes copied out of the
/// guest, and entries in a store's host-side tables. Past one, the call
/// traps before the host allocates anything (its instance is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBounds {
    /// Bytes wasmtime may copy out of the guest at once: a call's result,
    /// or the arguments of one host call the guest makes (wasmtime's own
    /// default is 128 MiB). A `read` may return what it asked for on top.
    pub output_bytes: usize,
    /// Entries in a store's WASI resource table (streams, pollables, HTTP
    /// requests and fields, `get-stderr` handles).
    pub host_resources: usize,
    /// Component-model handles alive at once in a store (the plugin's own
    /// sessions, readers and writers among them).
    pub component_handles: usize,
}

impl Default for HostBounds {
    fn default() -> Self {
        // 2 MiB: a full listing page (1024 entries of 255-byte names and
        // 256-byte versions, about 0.7 MiB as the host holds it) and the
        // 1 MiB chunks wasi:http bodies are written in, with room.
        Self { output_bytes: 2 << 20, host_resources: 65_536, component_handles: 16_384 }
    }
}

impl HostBounds {
    /// What a call reading `asked` bytes may return.
    pub fn for_read(&self, asked: u32) -> usize {
        self.output_bytes.max(asked as usize + READ_ENVELOPE)
    }
}

/// Room for a read's error or envelope beyond its bytes.
const READ_ENVELOPE: usize = 64 << 10;

/// The words of wasmtime's error when a lift ran past `output_bytes`.
pub fn is_output_bound(error: &wasmtime::Error) -> bool {
    format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted")
}

/// The linear memory of every live instance of the server, together.
#[derive(Debug)]
pub struct GuestMemory {
    used: AtomicU64,
    max: u64,
    /// When a growth was last refused for want of it (ms since `epoch`):
    /// pools then keep no idle instances, whose memory others need.
    refused_at_ms: AtomicU64,
    epoch: std::time::Instant,
}

/// How long after a refusal the budget counts as short.
const PRESSURE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl GuestMemory {
    pub fn new(max: u64) -> Self {
        Self { used: AtomicU64::new(0), max, refused_at_ms: AtomicU64::new(0), epoch: std::time::Instant::now() }
    }

    /// Whether a growth was refused for want of the budget lately.
    pub fn is_short(&self) -> bool {
        let at = self.refused_at_ms.load(Ordering::Relaxed);
        at > 0 && (self.epoch.elapsed().as_millis() as u64).saturating_sub(at) < PRESSURE_FOR.as_millis() as u64
    }

    fn note_shortage(&self) {
        self.refused_at_ms.store((self.epoch.elapsed().as_millis() as u64).max(1), Ordering::Relaxed);
    }

    /// Bytes of linear memory live instances hold now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    fn take(&self, bytes: u64) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|n| *n <= self.max)).is_ok()
    }

    fn give(&self, bytes: u64) {
        // Never below zero: a mismatch would otherwise refuse every growth.
        let given = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
        debug_assert!(given.is_ok_and(|used| used >= bytes), "gave back more guest memory than was taken");
    }
}

pub struct StoreCaps {
    limits: StoreLimits,
    memory_limit: usize,
    stats: Arc<RuntimeStats>,
    /// A growth was refused since the last `take_refused`, and whether by
    /// the server's budget rather than the store's own cap.
    refused: bool,
    refused_by_server: bool,
    server: Arc<GuestMemory>,
    /// What this store holds of `server`, and what its last growth took
    /// (given back if the growth then failed).
    charged: u64,
    last_growth: u64,
}

impl Drop for StoreCaps {
    fn drop(&mut self) {
        self.server.give(self.charged);
    }
}

impl StoreCaps {
    pub fn new(memory_limit: usize, server: Arc<GuestMemory>, stats: Arc<RuntimeStats>) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .instances(32)
            .tables(16)
            .memories(1)
            .table_elements(100_000)
            .trap_on_grow_failure(false)
            .build();
        Self { limits, memory_limit, stats, refused: false, refused_by_server: false, server, charged: 0, last_growth: 0 }
    }

    /// Whether a memory growth was refused since the last time this was asked
    /// (the host asks once per call).
    pub fn take_refused(&mut self) -> bool {
        std::mem::take(&mut self.refused)
    }

    /// Whether the refusal `take_refused` reported was the server's budget.
    pub fn take_refused_by_server(&mut self) -> bool {
        std::mem::take(&mut self.refused_by_server)
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    fn note_refusal(&mut self, by_server: bool) {
        self.refused = true;
        self.refused_by_server = by_server;
        self.stats.memory_grow_refused.fetch_add(1, Ordering::Relaxed);
    }
}

impl ResourceLimiter for StoreCaps {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Also called for a memory's first size, at instantiation.
        self.last_growth = 0;
        if !self.limits.memory_growing(current, desired, maximum)? {
            self.note_refusal(false);
            return Ok(false);
        }
        let growth = desired.saturating_sub(current) as u64;
        if !self.server.take(growth) {
            self.server.note_shortage();
            self.stats.memory_grow_refused_server.fetch_add(1, Ordering::Relaxed);
            self.note_refusal(true);
            return Ok(false);
        }
        self.charged += growth;
        self.last_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed by the cap but not possible (e.g. the pool's slot size):
        // the guest sees -1 all the same, and the budget gets it back.
        let growth = std::mem::take(&mut self.last_growth);
        self.charged = self.charged.saturating_sub(growth);
        self.server.give(growth);
        self.note_refusal(false);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_cap_is_refused_without_a_trap_and_counted() {
        let stats = Arc::new(RuntimeStats::default());
        let mut caps = StoreCaps::new(1 << 20, Arc::new(GuestMemory::new(u64::MAX)), stats.clone());
        assert!(caps.memory_growing(0, 1 << 20, None).unwrap(), "up to the cap is allowed");
        assert!(!caps.take_refused());
        let refused = caps.memory_growing(1 << 20, (1 << 20) + 65536, None);
        assert!(!refused.expect("a refusal, not a trap"));
        assert!(caps.take_refused(), "the refusal is remembered for the call");
        assert!(!caps.take_refused(), "and forgotten once asked");
        assert_eq!(RuntimeStats::get(&stats.memory_grow_refused), 1);
    }

    #[test]
    fn the_server_budget_is_shared_by_stores_and_given_back() {
        let stats = Arc::new(RuntimeStats::default());
        let server = Arc::new(GuestMemory::new(3 << 20));
        let mut a = StoreCaps::new(2 << 20, server.clone(), stats.clone());
        let mut b = StoreCaps::new(2 << 20, server.clone(), stats.clone());
        assert!(a.memory_growing(0, 2 << 20, None).unwrap());
        assert!(b.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!b.memory_growing(1 << 20, 2 << 20, None).unwrap(), "past the server's budget");
        assert!(b.take_refused());
        assert_eq!(RuntimeStats::get(&stats.memory_grow_refused_server), 1);
        assert_eq!(server.used(), 3 << 20);
        // A growth that was allowed and then failed gives its bytes back.
        drop(a);
        assert_eq!(server.used(), 1 << 20, "a dropped store gives back all it held");
        assert!(b.memory_growing(1 << 20, 2 << 20, None).unwrap());
        b.memory_grow_failed(wasmtime::Error::msg("no room in the slot")).unwrap();
        assert_eq!(server.used(), 1 << 20);
        drop(b);
        assert_eq!(server.used(), 0);
    }
}
