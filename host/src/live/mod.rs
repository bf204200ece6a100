//! What changes while the server runs: each plugin's current version and
//! how it is replaced (reload, rollback, the versions still draining), what
//! asks for a replacement (a plugin file changing on disk), and what a
//! `[plugins.NAME]` table loads.

mod source;
mod versions;
mod watch;

pub use source::{plugin_bytes, plugin_settings};
pub use versions::{
    OnVersion, PluginSlot, PluginSummary, PluginVersions, ReloadError, ReloadFrom, ReloadReport, Version, VersionSummary,
    content_hash,
};
pub use watch::{FileWatch, watch_plugin_files};
