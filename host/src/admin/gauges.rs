//! Gauges read at scrape time from what the server holds (plugin versions,
//! instances, guest memory, budgets), rather than kept up to date on every
//! change.

use crate::ssh::Shared;

pub fn record(shared: &Shared) {
    for slot in shared.versions.all() {
        let plugin = slot.name().to_string();
        let current = slot.current();
        let draining = slot.draining();
        metrics::gauge!("wasftp_plugin_version", "plugin" => plugin.clone()).set(current.number() as f64);
        metrics::gauge!("wasftp_plugin_sessions", "plugin" => plugin.clone(), "version" => "current")
            .set(current.sessions() as f64);
        metrics::gauge!("wasftp_plugin_sessions", "plugin" => plugin.clone(), "version" => "draining")
            .set(draining.iter().map(|v| v.sessions()).sum::<usize>() as f64);
        metrics::gauge!("wasftp_plugin_versions_draining", "plugin" => plugin.clone()).set(draining.len() as f64);
        let versions = std::iter::once(&current).chain(draining.iter());
        let (mut tenants, mut idle, mut breakers) = (0, 0, 0);
        for version in versions {
            tenants += version.plugin().tenants();
            idle += version.plugin().idle_instances();
            breakers += version.plugin().open_breakers();
        }
        metrics::gauge!("wasftp_plugin_breakers_open", "plugin" => plugin.clone()).set(breakers as f64);
        metrics::gauge!("wasftp_plugin_tenants", "plugin" => plugin.clone()).set(tenants as f64);
        metrics::gauge!("wasftp_plugin_idle_instances", "plugin" => plugin).set(idle as f64);
    }
    let runtime = shared.versions.runtime();
    metrics::gauge!("wasftp_guest_memory_bytes").set(runtime.guest_memory().used() as f64);
    metrics::gauge!("wasftp_guest_memory_max_bytes").set(runtime.guest_memory().max() as f64);
    metrics::gauge!("wasftp_guest_threads").set(runtime.guest_threads() as f64);
    let budgets = &shared.budgets;
    let held = [
        ("upload_buffer", budgets.upload.shares().held(), budgets.upload.shares().limit_total()),
        ("read_ahead", budgets.read_ahead.shares().held(), budgets.read_ahead.shares().limit_total()),
        ("open_files", budgets.open_files.held(), budgets.open_files.limit_total()),
    ];
    for (budget, used, limit) in held {
        metrics::gauge!("wasftp_budget_used", "budget" => budget).set(used as f64);
        metrics::gauge!("wasftp_budget_limit", "budget" => budget).set(limit as f64);
    }
    metrics::gauge!("wasftp_budget_used", "budget" => "spool_bytes").set(budgets.spool.used() as f64);
    metrics::gauge!("wasftp_sessions_authenticated").set(shared.gate.authenticated() as f64);
    metrics::gauge!("wasftp_connections_unauthenticated").set(shared.gate.unauthenticated() as f64);
}
