//! Reloads a plugin when its file changes on disk. The folder is watched,
//! not the file: a build or `cp` that replaces the file by a rename would
//! leave a watch on the file itself looking at the old inode. Events are
//! debounced, so a file written in several steps is loaded once it is
//! quiet (a half-written one is refused by admission and the old version
//! goes on; the write finishing triggers the next reload).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use super::versions::{PluginVersions, ReloadFrom};

/// How long a plugin file must be quiet before it is loaded.
const QUIET: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches the file of every plugin loaded from a path with `watch` on.
/// `None` when there is none to watch.
pub fn watch_plugin_files(versions: Arc<PluginVersions>) -> anyhow::Result<Option<FileWatch>> {
    let mut files: HashMap<PathBuf, String> = HashMap::new();
    for slot in versions.all() {
        let config = slot.config();
        if !config.watch || config.source.starts_with("bundled:") {
            continue;
        }
        let path = std::path::absolute(&config.source)?;
        files.insert(path, slot.name().to_string());
    }
    if files.is_empty() {
        return Ok(None);
    }
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watched = files.clone();
    let mut debouncer = new_debouncer(QUIET, move |events: DebounceEventResult| match events {
        Ok(events) => {
            let mut names: Vec<&String> = events.iter().filter_map(|event| watched.get(&event.path)).collect();
            names.dedup();
            for name in names {
                let _ = changed.send(name.clone());
            }
        }
        Err(e) => tracing::warn!("watching plugin files: {e}"),
    })?;
    let mut folders: Vec<PathBuf> = files.keys().filter_map(|path| path.parent().map(PathBuf::from)).collect();
    folders.sort();
    folders.dedup();
    for folder in &folders {
        debouncer.watcher().watch(folder, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(files = files.len(), "watching plugin files for changes");
    tokio::spawn(async move {
        while let Some(name) = changes.recv().await {
            // A failure is logged and reported by the slot itself.
            let _ = versions.reload(&name, ReloadFrom::Configured, "file").await;
        }
    });
    Ok(Some(FileWatch { _debouncer: debouncer }))
}
