//! wasftp bundled plugin: an S3 bucket as a filesystem. `aws-sdk-s3` runs
//! inside the component and reaches S3 through the host's `wasi:http`
//! (granted per plugin: `http_allow`). Stateless: everything lives in the
//! bucket, so the host may run a session on several instances. The
//! semantics (versions, multipart, markers, renames) are in `README.md`.

pub mod config;
pub mod keys;

#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod plugin;

#[cfg(target_arch = "wasm32")]
wasftp_sdk::export_plugin!(S3Plugin);
#[cfg(target_arch = "wasm32")]
pub use plugin::S3Plugin;
