//! What a guest may say: the `log` import and its stderr, both into
//! `tracing`, both bounded so a plugin cannot flood the host's logs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::bindings::LogLevel;
use super::error::bounded;

/// Longest line of guest stderr kept; the rest of the line is dropped.
const MAX_LINE: usize = 1024;

pub fn log(plugin: &str, level: LogLevel, message: String) {
    let message = bounded(message);
    match level {
        LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin, "{message}"),
        LogLevel::Info => tracing::info!(plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin, "{message}"),
        LogLevel::Error => tracing::error!(plugin, "{message}"),
    }
}

/// Guest stderr, forwarded line by line to `tracing` at warn level.
#[derive(Clone)]
pub struct GuestStderr {
    pub plugin: Arc<str>,
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { plugin: self.plugin.clone(), line: Vec::new(), overflowed: false })
    }
}

struct LineWriter {
    plugin: Arc<str>,
    line: Vec<u8>,
    overflowed: bool,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let cut = if self.overflowed { " […]" } else { "" };
        tracing::warn!(plugin = &*self.plugin, "guest stderr: {}{cut}", text.trim_end());
        self.line.clear();
        self.overflowed = false;
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            } else {
                self.overflowed = true;
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}
