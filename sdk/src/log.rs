//! Logging into the host's tracing through the imported `log` interface.

use crate::bindings::wasftp::storage::log::log;

/// Logs `msg` at `level`.
pub fn at(level: Level, msg: &str) {
    log(level, msg);
}
/// Logs at trace level.
pub fn trace(msg: &str) {
    log(Level::Trace, msg);
}
/// Logs at debug level.
pub fn debug(msg: &str) {
    log(Level::Debug, msg);
}
/// Logs at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg);
}
/// Logs at warn level.
pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}
/// Logs at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg);
}

pub use crate::bindings::wasftp::storage::log::Level;
