//! `wasftp plugin info` and `wasftp plugin check`: a plugin file through the
//! same admission as at start (and as a reload will), then what it is, or
//! how it fares against the conformance suite, in words for its author.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::conformance;
use crate::plugin::{Compiler, EngineOptions, Grants, Origin, Plugin, PluginSettings, Preopen, Runtime};

/// A plugin file and what to load it with.
#[derive(Debug, Clone)]
pub struct PluginFile {
    /// A file, or `bundled:NAME`.
    pub path: PathBuf,
    /// `key=value` pairs for its `init`.
    pub config: Vec<(String, String)>,
    /// Origins it may send HTTP requests to (`http_allow`).
    pub http_allow: Vec<String>,
    /// A directory it sees as `/`, and whether it may write there.
    pub preopen: Option<(PathBuf, bool)>,
    /// Who the check's session is for.
    pub user: String,
    pub tenant: String,
    /// A server configuration: `path` is then the name of one of its
    /// `[plugins.NAME]` tables, loaded with everything that table sets
    /// (source, config, grants, limits), as the server would.
    pub server_config: Option<PathBuf>,
}

/// Splits `key=value`.
pub fn config_pair(text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text.split_once('=').with_context(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

/// The plugin `name` of the server configuration at `path`, as the server loads it.
async fn load_configured(
    path: &std::path::Path,
    name: &str,
    compiler: Compiler,
) -> anyhow::Result<(std::sync::Arc<Runtime>, std::sync::Arc<Plugin>)> {
    let config = crate::config::Config::from_file(path)?;
    let Some(plugin) = config.plugins.get(name) else {
        let known: Vec<&str> = config.plugins.keys().map(String::as_str).collect();
        anyhow::bail!("{} has no [plugins.{name}] (it has: {})", path.display(), known.join(", "));
    };
    let bytes = crate::live::plugin_bytes(name, plugin)?;
    let settings = crate::live::plugin_settings(name, plugin)?;
    let runtime = Runtime::new(&EngineOptions { compiler, ..EngineOptions::default() })?;
    let plugin = runtime.load(name, &bytes, settings).await?;
    Ok((runtime, plugin))
}

/// Loads the file as the server would, compiling it with `compiler`.
async fn load(file: &PluginFile, compiler: Compiler) -> anyhow::Result<(std::sync::Arc<Runtime>, std::sync::Arc<Plugin>)> {
    if let Some(config) = &file.server_config {
        let name = file.path.to_str().context("a plugin name is UTF-8")?;
        return load_configured(config, name, compiler).await;
    }
    let max = crate::plugin::PluginSettings::default().max_component_bytes;
    let mut bytes = Vec::new();
    match file.path.to_str().and_then(|p| p.strip_prefix("bundled:")) {
        Some(name) => bytes.extend_from_slice(crate::plugin::bundled::get(name).with_context(|| format!("no bundled plugin {name:?}"))?),
        None => {
            let opened = std::fs::File::open(&file.path).with_context(|| format!("opening {}", file.path.display()))?;
            // One byte past the bound at most: admission then names the bound.
            std::io::Read::read_to_end(&mut std::io::Read::take(opened, max as u64 + 1), &mut bytes)
                .with_context(|| format!("reading {}", file.path.display()))?;
        }
    }
    let grants = Grants {
        http_allow: file.http_allow.iter().map(|o| Origin::parse(o).map_err(|e| anyhow::anyhow!("--http-allow: {e}"))).collect::<anyhow::Result<_>>()?,
        preopen: file.preopen.as_ref().map(|(dir, writable)| Preopen { dir: dir.clone(), writable: *writable, per_tenant: false }),
        ..Grants::default()
    };
    let settings = PluginSettings { config: file.config.clone(), grants, ..PluginSettings::default() };
    let runtime = Runtime::new(&EngineOptions { compiler, ..EngineOptions::default() })?;
    let name = match file.path.to_str().and_then(|p| p.strip_prefix("bundled:")) {
        Some(bundled) => bundled.to_string(),
        None => file.path.file_stem().map_or("plugin".into(), |s| s.to_string_lossy().into_owned()),
    };
    let plugin = runtime.load(&name, &bytes, settings).await?;
    Ok((runtime, plugin))
}

/// What the plugin is: its file, interfaces, contract, capabilities, grants.
pub async fn info(file: &PluginFile, compiler: Compiler) -> anyhow::Result<String> {
    let (_runtime, plugin) = load(file, compiler).await?;
    let component = plugin.component();
    let caps = plugin.capabilities();
    let mut out = String::new();
    let _ = writeln!(out, "file:      {} ({} bytes)", file.path.display(), component.bytes);
    let _ = writeln!(
        out,
        "compiled:  in {:.2?}{}",
        component.compiled.took,
        if component.compiled.from_cache { " (from the cache)" } else { "" }
    );
    let _ = writeln!(out, "started:   in {:.2?} (an instance: instantiation, init, describe)", component.first_instance);
    let contract = component.exports.iter().find(|e| e.starts_with("wasftp:storage/backend"));
    let _ = writeln!(out, "contract:  {}", contract.map_or("none", String::as_str));
    let handover = if plugin.hands_over_state() { "hands its tenants' state to its next version" } else { "none" };
    let _ = writeln!(out, "handover:  {handover}");
    let scope = match caps.scope {
        crate::plugin::InstanceScope::Tenant => "tenant: its state is in the instance",
        crate::plugin::InstanceScope::Stateless => "stateless",
    };
    let _ = writeln!(out, "backend:   {} {} ({scope})", caps.name, caps.version);
    let flags = [
        ("random-write", caps.random_write),
        ("append", caps.append),
        ("atomic-rename", caps.atomic_rename),
        ("copy", caps.copy),
        ("set-info", caps.set_info),
        ("symlinks", caps.symlinks),
        ("hard-links", caps.hard_links),
        ("durable-sync", caps.durable_sync),
        ("abort-orphans", caps.abort_orphans),
    ];
    let declared: Vec<&str> = flags.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
    let _ = writeln!(out, "declares:  {}", if declared.is_empty() { "nothing beyond the core".into() } else { declared.join(", ") });
    let _ = writeln!(
        out,
        "chunks:    read {} bytes, write {} bytes; largest file: {}",
        caps.read_chunk,
        caps.write_chunk,
        caps.max_file_size.map_or("no limit".into(), |max| format!("{max} bytes"))
    );
    let _ = writeln!(out, "imports:");
    for import in &component.imports {
        let _ = writeln!(out, "  {import}");
    }
    let _ = writeln!(out, "exports:");
    for export in &component.exports {
        let _ = writeln!(out, "  {export}");
    }
    for ungranted in plugin.ungranted_imports() {
        let _ = writeln!(out, "not granted: {} ({} interfaces): it finds {}", family(&ungranted.interfaces), ungranted.interfaces.len(), ungranted.finds);
    }
    Ok(out)
}

/// `wasi:sockets/tcp@0.2.9`, `wasi:sockets/udp@0.2.9` → `wasi:sockets`.
fn family(interfaces: &[String]) -> String {
    interfaces.first().and_then(|i| i.split('/').next()).unwrap_or_default().to_string()
}

/// Admission, then the conformance suite: the report, and whether it passed.
pub async fn check(file: &PluginFile, compiler: Compiler) -> anyhow::Result<(String, bool)> {
    let (_runtime, plugin) = load(file, compiler).await.context("admission (the checks the server makes at start) failed")?;
    let context = crate::plugin::SessionContext { user: file.user.clone(), tenant: file.tenant.clone(), attributes: Vec::new() };
    let report = conformance::run_as(&plugin, context).await;
    Ok((report.table(), report.passed()))
}
