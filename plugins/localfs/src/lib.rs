//! wasftp bundled plugin: a folder on the host's disk, served through
//! `wasi:filesystem`. The host preopens one directory as `/` per instance
//! (the tenant's folder); the sandbox keeps every path inside it.
//! Stateless: everything is on disk, so any instance serves any call.
//! The semantics (pinned reads, uploads renamed into place, what WASI
//! cannot do) are in `README.md`.
//!
//! Pure logic, unit-tested natively: `config`, `paths`, `resolve`,
//! `attrs`, `base`, `dir_index`, `durability`, `errors`, `limits`. The rest calls
//! `wasi:filesystem`, which only a component can.

pub mod attrs;
pub mod base;
pub mod config;
pub mod dir_index;
pub mod durability;
pub mod errors;
pub mod limits;
pub mod paths;
pub mod resolve;

mod folder;
mod links;
mod listing;
mod maintain;
mod names;
mod plugin;
mod reader;
mod setattr;
mod upload;
mod writes;

#[cfg(test)]
mod test_alloc;

pub use plugin::LocalFsPlugin;

wasftp_sdk::export_plugin!(LocalFsPlugin);
