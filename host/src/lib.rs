//! wasftp: an SFTP server whose storage backends are sandboxed WebAssembly
//! components. `main.rs` is a thin CLI over this library, so an application
//! can start and stop the server itself:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = wasftp::config::Config::from_file("wasftp.toml".as_ref())?;
//! let server = wasftp::ServerBuilder::new(config).start().await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod config;
pub mod conformance;
pub mod live;
pub mod plugin;
pub mod plugin_new;
pub mod plugin_tool;
pub mod server;
pub mod sftp;
pub mod ssh;
pub mod telemetry;
pub mod vfs;

pub use server::{RunningServer, ServerBuilder};
