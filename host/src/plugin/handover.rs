//! A swap of a tenant-scoped plugin that keeps every tenant's state (the
//! contract's optional `handover`).
//!
//! Before the new version serves anyone, the sessions of each tenant of the
//! old one are told to wait for their tenant's state there. Then, tenant by
//! tenant: the old instance's gate is closed (no new upload; once the open
//! ones have ended, no new call: see `tenant_gate`), the state is read from
//! the old instance piece by piece and written into a fresh instance of the
//! new version, and the tenant's sessions, old and new, go on there. Readers
//! already open stay on the old instance, which nothing changes any more.
//! If any of it fails, the new instance is dropped and the tenant stays on
//! the old version (its new sessions run there too) until the next swap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ComponentExportIndex};

use super::bindings::WitError;
use super::error::StorageError;
use super::instance::{Instance, Live};
use super::pool::TenantPool;
use super::{Plugin, contract_package};

/// The most one piece of state may be.
const PIECE_BYTES: u32 = 1 << 20;
/// Tenants moving at once.
const TENANTS_AT_ONCE: usize = 4;

type ExportResult = (Result<(Vec<u8>, Option<String>), WitError>,);
type ImportResult = (Result<(), WitError>,);

/// Where a component's `handover` functions are.
#[derive(Clone)]
pub(crate) struct HandoverExports {
    export: ComponentExportIndex,
    import: ComponentExportIndex,
}

impl HandoverExports {
    pub fn find(component: &Component) -> Option<Self> {
        let contract = contract_package();
        let (package, version) = contract.split_once('@').unwrap_or((contract, ""));
        let interface = component.get_export_index(None, &format!("{package}/handover@{version}"))?;
        Some(Self {
            export: component.get_export_index(Some(&interface), "export-state")?,
            import: component.get_export_index(Some(&interface), "import-state")?,
        })
    }
}

async fn export_state(live: &mut Live, at: &HandoverExports, cursor: Option<String>, max: u32) -> wasmtime::Result<Result<(Vec<u8>, Option<String>), WitError>> {
    live.expect_read(max);
    let (store, instance) = live.instance_parts();
    let export = instance.get_typed_func::<(Option<String>, u32), ExportResult>(&mut *store, &at.export)?;
    Ok(export.call_async(store, (cursor, max)).await?.0)
}

async fn import_state(live: &mut Live, at: &HandoverExports, piece: Vec<u8>, last: bool) -> wasmtime::Result<Result<(), WitError>> {
    let (store, instance) = live.instance_parts();
    let import = instance.get_typed_func::<(Vec<u8>, bool), ImportResult>(&mut *store, &at.import)?;
    Ok(import.call_async(store, (piece, last)).await?.0)
}

/// Whether a plugin hands over its state: asked on its load probe, as the
/// contract says, with an export of no bytes.
pub(crate) async fn supported(probe: &Arc<Instance>, at: Option<&HandoverExports>) -> bool {
    let Some(at) = at.cloned() else { return false };
    let asked = probe
        .call(None, "export-state", move |live: &mut Live| Box::pin(async move { export_state(live, &at, None, 0).await }))
        .await;
    match asked {
        Ok((Ok(_), _)) => true,
        Ok((Err(WitError::Unsupported), _)) => false,
        Ok((Err(e), _)) => {
            tracing::warn!(plugin = probe.plugin_name(), "export-state of no bytes failed, so its state is not handed over: {}", StorageError::from(e));
            false
        }
        Err(e) => {
            tracing::warn!(plugin = probe.plugin_name(), "export-state of no bytes failed, so its state is not handed over: {e}");
            false
        }
    }
}

/// What became of each tenant.
#[derive(Debug, Default, Clone)]
pub struct HandoverReport {
    /// Tenants now on the new version with their state, and the bytes moved.
    pub moved: Vec<(String, u64)>,
    /// Tenants left on the old version, and why.
    pub stayed: Vec<(String, String)>,
    pub took: Duration,
}

/// A hand-over prepared: the new version's sessions of these tenants wait.
pub struct Handover {
    new: Arc<Plugin>,
    tenants: Vec<Arc<TenantPool>>,
    wait: Duration,
}

impl Plugin {
    /// Whether this version can give its tenants' state to `next`, and
    /// `next` take it.
    pub fn hands_over_to(&self, next: &Plugin) -> bool {
        use super::bindings::InstanceScope::Tenant;
        self.caps.scope == Tenant && next.caps.scope == Tenant && self.handover && next.handover
    }

    /// Prepares moving every tenant of this version to `next`, before
    /// `next` serves anyone: until a tenant has moved, its sessions opening
    /// on `next` run where its state is (here; they follow it when it
    /// moves), and no tenant is new here any more. `wait` is how long a
    /// tenant's open uploads may take to end.
    pub fn prepare_handover(&self, next: &Arc<Plugin>, wait: Duration) -> Handover {
        self.pools.replaced();
        let tenants = self.pools.stateful_tenants();
        for pool in &tenants {
            next.pools.arrived(pool.tenant(), pool.clone());
        }
        Handover { new: next.clone(), tenants, wait }
    }
}

impl Handover {
    /// Moves the tenants, a few at a time (one tenant's wait holds no
    /// other, and the pieces in flight and instances doubled stay few).
    pub async fn run(self) -> HandoverReport {
        use futures::StreamExt as _;
        let started = Instant::now();
        let mut moves = Vec::new();
        for pool in self.tenants.iter().cloned() {
            let (new, wait) = (self.new.clone(), self.wait);
            moves.push(Box::pin(async move {
                let moved = move_tenant(pool.clone(), &new, wait).await;
                (pool, moved)
            }));
        }
        let results: Vec<_> = futures::stream::iter(moves).buffer_unordered(TENANTS_AT_ONCE).collect().await;
        let mut report = HandoverReport::default();
        for (pool, result) in results {
            let tenant = pool.tenant().to_string();
            match result {
                Ok(bytes) => report.moved.push((tenant, bytes)),
                Err(why) => {
                    tracing::warn!(plugin = self.new.name(), tenant = %tenant, "the tenant stays on the version before: {why}");
                    report.stayed.push((tenant, why));
                }
            }
        }
        report.took = started.elapsed();
        report
    }
}

/// Moves one tenant; the bytes of state moved, or why it stays.
async fn move_tenant(old: Arc<TenantPool>, new: &Arc<Plugin>, wait: Duration) -> Result<u64, String> {
    let tenant = old.tenant().to_string();
    let (Some(gate), Some(from)) = (old.gate().cloned(), old.stateful().cloned()) else {
        return Err("its instance is not tenant-scoped".into());
    };
    if let Err(not_quiet) = gate.close(wait).await {
        return Err(match not_quiet {
            super::tenant_gate::NotQuiet::Uploads(n) => format!("{n} of its uploads stayed open for {wait:?}"),
            super::tenant_gate::NotQuiet::Calls(n) => format!("{n} of its calls ran for {wait:?}"),
        });
    }
    let next = new.pools.new_pool(&tenant);
    let to = next.stateful().cloned().expect("a tenant-scoped pool has its instance");
    // Not running (never started, or lost to a trap): it holds no state,
    // and starting it (an init that fails, an open breaker) must not keep
    // the tenant on this version.
    let moved = if from.has_live() { transfer(&from, &to, new).await } else { Ok(0) };
    match moved {
        Ok(bytes) => {
            new.pools.arrived(&tenant, next.clone());
            gate.moved(next);
            // Its memory goes once the readers still on it have closed.
            from.retire();
            Ok(bytes)
        }
        Err(why) => {
            gate.open();
            Err(why)
        }
    }
}

/// Reads the state out of `from` and into `to`, piece by piece: each
/// piece is one call on each instance, so neither is held in a call while
/// the other works (a slow or failing importer never holds the old
/// instance: its state stays whole whatever the new version does), and
/// each call's limits are those of one piece. The whole is bounded by the
/// old instance's memory: a state cannot be larger than what held it.
async fn transfer(from: &Arc<Instance>, to: &Arc<Instance>, new: &Plugin) -> Result<u64, String> {
    let at_old = from.handover_exports().ok_or("the old version has no export-state")?;
    let at_new = new.shared.handover.clone().ok_or("the new version has no import-state")?;
    // A state in another form than in memory may be larger than what held
    // it (a path per entry), never by this much; the deadline bounds the rest.
    let most_bytes = (from.memory_limit() as u64).saturating_mul(16);
    let deadline = tokio::time::Instant::now() + from.commit_limit();
    let (mut cursor, mut bytes) = (None::<String>, 0u64);
    // Every piece from, and into, the instance generation of the first:
    // one restarted meanwhile (a trap) would start from nothing.
    let (mut from_generation, mut to_generation) = (None, None);
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the state did not move within {:?} (the plugin's commit timeout)", from.commit_limit()));
        }
        let at = at_old.clone();
        let asked = cursor.clone();
        let exported = from
            .call(from_generation, "export-state", move |live: &mut Live| {
                Box::pin(async move { export_state(live, &at, asked, PIECE_BYTES).await })
            })
            .await;
        let (piece, next) = match exported {
            Ok((Ok(done), generation)) => {
                from_generation = Some(generation);
                done
            }
            Ok((Err(e), _)) => return Err(format!("export-state: {}", StorageError::from(e))),
            Err(e) => return Err(format!("export-state: {e}")),
        };
        if piece.len() > PIECE_BYTES as usize {
            return Err(format!("export-state: a piece of {} bytes, more than the {PIECE_BYTES} asked for", piece.len()));
        }
        bytes += piece.len() as u64;
        if bytes > most_bytes {
            return Err(format!("export-state: more state ({bytes} bytes) than its instance could hold"));
        }
        let last = next.is_none();
        // Every piece but the last moves on: no endless empty pieces.
        if !last && (piece.is_empty() || next == cursor) {
            return Err("export-state: a piece that does not move on (empty, or the same cursor again)".into());
        }
        let at = at_new.clone();
        let imported = to
            .call(to_generation, "import-state", move |live: &mut Live| {
                Box::pin(async move { import_state(live, &at, piece, last).await })
            })
            .await;
        match imported {
            Ok((Ok(()), generation)) => to_generation = Some(generation),
            Ok((Err(e), _)) => return Err(format!("import-state: {}", StorageError::from(e))),
            Err(e) => return Err(format!("import-state: {e}")),
        }
        if last {
            return Ok(bytes);
        }
        cursor = next;
    }
}
