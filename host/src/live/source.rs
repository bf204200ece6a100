//! What a `[plugins.NAME]` table loads: the component's bytes and the
//! runtime's settings (start, `wasftp plugin check --server-config` and
//! every reload read them the same way).

use std::time::Duration;

use anyhow::Context as _;

use crate::config::{PluginConfig, PreopenMode};
use crate::plugin::{CallTimeouts, Grants, Origin, PluginSettings, PoolLimits, Preopen, bundled};

/// The file at `path`, read up to one byte past `max` (admission then
/// refuses it as too large, naming the bound): a huge file, or a device
/// that never ends, is not read whole first.
fn read_bounded(path: &str, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The component a `[plugins.NAME]` table names (`wasftp plugin check
/// --server-config` reads it the same way).
pub fn plugin_bytes(name: &str, plugin: &PluginConfig) -> anyhow::Result<Vec<u8>> {
    Ok(match plugin.source.strip_prefix("bundled:") {
        Some(bundled_name) => bundled::get(bundled_name)
            .with_context(|| {
                let known: Vec<_> = bundled::names().collect();
                format!("plugin {name}: no bundled plugin {bundled_name:?} (bundled: {known:?})")
            })?
            .to_vec(),
        None => read_bounded(&plugin.source, plugin.max_component_mib << 20).with_context(|| format!("plugin {name}: reading {}", plugin.source))?,
    })
}

/// What a `[plugins.NAME]` table sets for the runtime.
pub fn plugin_settings(name: &str, plugin: &PluginConfig) -> anyhow::Result<PluginSettings> {
    Ok(PluginSettings {
        memory_limit: plugin.memory_limit_mib << 20,
        call_deadline: Duration::from_millis(plugin.call_deadline_ms),
        timeouts: CallTimeouts {
            metadata: Duration::from_secs(plugin.timeouts.metadata_secs),
            data: Duration::from_secs(plugin.timeouts.data_secs),
            commit: Duration::from_secs(plugin.timeouts.commit_secs),
        },
        pools: PoolLimits {
            max_tenants: plugin.max_tenants,
            instances_per_session: plugin.instances_per_session,
            idle_evict: Duration::from_secs(plugin.idle_evict_secs),
            guest_threads_per_tenant: plugin.guest_threads_per_tenant,
            guest_threads_by_tenant: plugin
                .guest_threads_by_tenant
                .clone()
                .into_iter()
                .chain(plugin.tenants.iter().filter_map(|(t, own)| Some((t.clone(), own.guest_threads?))))
                .collect(),
        },
        tenants: plugin
            .tenants
            .iter()
            .map(|(tenant, own)| {
                let bounds = crate::plugin::TenantBounds {
                    memory_limit: own.memory_limit_mib.map(|mib| mib << 20),
                    call_deadline: own.call_deadline_ms.map(Duration::from_millis),
                    log_lines_per_sec: own.log_lines_per_sec,
                    log_bytes_per_sec: own.log_kib_per_sec.map(|kib| kib << 10),
                };
                (tenant.clone(), bounds)
            })
            .collect(),
        max_component_bytes: plugin.max_component_mib << 20,
        compile: crate::plugin::CompileLimits {
            timeout: Duration::from_secs(plugin.compile_timeout_secs),
            memory_bytes: plugin.compile_memory_mib << 20,
        },
        bounds: crate::plugin::HostBounds {
            output_bytes: plugin.max_output_kib << 10,
            host_resources: plugin.max_host_resources,
            component_handles: crate::plugin::HostBounds::default().component_handles,
        },
        breaker: crate::plugin::BreakerLimits {
            failures: plugin.breaker_failures,
            window: Duration::from_secs(plugin.breaker_window_secs),
            cooldown: Duration::from_secs(plugin.breaker_cooldown_secs),
        },
        log: crate::plugin::LogLimits { lines_per_sec: plugin.log_lines_per_sec, bytes_per_sec: plugin.log_kib_per_sec << 10 },
        maintain_every: (plugin.maintain_every_secs > 0).then(|| Duration::from_secs(plugin.maintain_every_secs)),
        config: plugin.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        grants: Grants {
            http_allow: plugin
                .http_allow
                .iter()
                .map(|origin| Origin::parse(origin).map_err(|e| anyhow::anyhow!("plugin {name}: http_allow: {e}")))
                .collect::<anyhow::Result<_>>()?,
            http_limits: crate::plugin::HttpLimits {
                requests_per_tenant: plugin.http_requests_per_tenant,
                requests: plugin.http_requests,
                timeout: Duration::from_secs(plugin.http_timeout_secs),
                body_bytes: plugin.http_body_mib << 20,
                requests_by_tenant: plugin
                    .tenants
                    .iter()
                    .filter_map(|(tenant, own)| Some((tenant.clone(), own.http_requests_per_tenant?)))
                    .collect(),
            },
            preopen: plugin
                .preopen
                .as_ref()
                .map(|p| Preopen { dir: p.dir.clone(), writable: p.mode == PreopenMode::Rw, per_tenant: p.per_tenant }),
        },
    })
}
