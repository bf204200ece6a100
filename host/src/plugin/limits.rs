//! The resource caps of one store. A `memory.grow` past the memory cap is
//! refused (the guest sees -1) rather than trapping: a guest that allocates
//! fallibly answers `no-space` and keeps its state, which for a tenant-scoped
//! plugin is every file of the tenant. Refusals are counted, and remembered
//! so that a trap following one can be explained as running out of memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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

pub struct StoreCaps {
    limits: StoreLimits,
    memory_limit: usize,
    stats: Arc<RuntimeStats>,
    /// A growth was refused since the last `take_refused`.
    refused: bool,
}

impl StoreCaps {
    pub fn new(memory_limit: usize, stats: Arc<RuntimeStats>) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .instances(32)
            .tables(16)
            .memories(1)
            .table_elements(100_000)
            .trap_on_grow_failure(false)
            .build();
        Self { limits, memory_limit, stats, refused: false }
    }

    /// Whether a memory growth was refused since the last time this was asked
    /// (the host asks once per call).
    pub fn take_refused(&mut self) -> bool {
        std::mem::take(&mut self.refused)
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    fn note_refusal(&mut self) {
        self.refused = true;
        self.stats.memory_grow_refused.fetch_add(1, Ordering::Relaxed);
    }
}

impl ResourceLimiter for StoreCaps {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.note_refusal();
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed by the cap but not possible (e.g. the pool's slot size):
        // the guest sees -1 all the same.
        self.note_refusal();
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
        let mut caps = StoreCaps::new(1 << 20, stats.clone());
        assert!(caps.memory_growing(0, 1 << 20, None).unwrap(), "up to the cap is allowed");
        assert!(!caps.take_refused());
        let refused = caps.memory_growing(1 << 20, (1 << 20) + 65536, None);
        assert!(!refused.expect("a refusal, not a trap"));
        assert!(caps.take_refused(), "the refusal is remembered for the call");
        assert!(!caps.take_refused(), "and forgotten once asked");
        assert_eq!(RuntimeStats::get(&stats.memory_grow_refused), 1);
    }
}
