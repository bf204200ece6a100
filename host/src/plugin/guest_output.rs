//! What a guest may say: the `log` import and its stderr, both into
//! `tracing`, both bounded so a plugin cannot flood the host's logs: a line
//! is at most `MAX_LINE` bytes (the `log` import's message at most what
//! `error::bounded` keeps), and one tenant's instances of a plugin share a
//! rate of lines and bytes per second ([`LogBudget`]). Past it lines are
//! dropped and counted, and the next line that passes says how many.
//! The host's own warnings about a tenant's plugin (an instance dropped,
//! a request refused, names left out) have a budget of their own per
//! tenant ([`HOST_WARNING_LIMITS`]): a plugin that fails on purpose cannot
//! flood the log through them, nor hide them with its own lines.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use std::future::Future;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::LogLevel;
use super::error::bounded;

/// Longest line of guest stderr kept; the rest of the line is dropped.
const MAX_LINE: usize = 1024;

/// How much one tenant's instances of a plugin may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub lines_per_sec: u32,
    pub bytes_per_sec: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self { lines_per_sec: 100, bytes_per_sec: 64 << 10 }
    }
}

/// A token bucket of lines and bytes, refilled at the limits' rate and
/// holding up to two seconds' worth (a burst at start-up passes).
pub struct LogBudget {
    limits: LogLimits,
    bucket: Mutex<Bucket>,
    stats: Arc<super::RuntimeStats>,
    of: BudgetOf,
}

/// Whose lines a budget admits (they are counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOf {
    /// The guest's `log` calls and stderr.
    Guest,
    /// The host's warnings about the guest.
    HostWarnings,
}

struct Bucket {
    lines: f64,
    bytes: f64,
    refilled: Instant,
    /// Lines dropped since the last one that passed.
    dropped: u64,
}

const BURST_SECS: f64 = 2.0;

/// What the host may log about one tenant's plugin: warnings past it are
/// counted in their own metrics, not written.
pub const HOST_WARNING_LIMITS: LogLimits = LogLimits { lines_per_sec: 5, bytes_per_sec: 16 << 10 };

impl LogBudget {
    pub fn new(limits: LogLimits, of: BudgetOf, stats: Arc<super::RuntimeStats>) -> Self {
        let bucket = Bucket {
            lines: f64::from(limits.lines_per_sec) * BURST_SECS,
            bytes: f64::from(limits.bytes_per_sec) * BURST_SECS,
            refilled: Instant::now(),
            dropped: 0,
        };
        Self { limits, bucket: Mutex::new(bucket), stats, of }
    }

    /// Tops the bucket up for the time since it last was.
    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.refilled = now;
        let (lines, bytes) = (f64::from(self.limits.lines_per_sec), f64::from(self.limits.bytes_per_sec));
        bucket.lines = (bucket.lines + elapsed * lines).min(lines * BURST_SECS);
        bucket.bytes = (bucket.bytes + elapsed * bytes).min(bytes * BURST_SECS);
    }

    /// Whether the bucket is as full as a new one (forgetting it then
    /// gives its tenant nothing), with no drops left to report.
    pub fn is_full(&self) -> bool {
        let mut bucket = self.bucket.lock().expect("log budget lock");
        self.refill(&mut bucket);
        let (lines, bytes) = (f64::from(self.limits.lines_per_sec), f64::from(self.limits.bytes_per_sec));
        bucket.dropped == 0 && bucket.lines >= lines * BURST_SECS && bucket.bytes >= bytes * BURST_SECS
    }

    /// Whether a line of `len` bytes may be written now: `Some(n)` with the
    /// lines dropped before it, `None` (counted) if it is dropped too.
    fn admit(&self, len: usize) -> Option<u64> {
        let mut bucket = self.bucket.lock().expect("log budget lock");
        self.refill(&mut bucket);
        if bucket.lines < 1.0 || bucket.bytes < len as f64 {
            bucket.dropped += 1;
            let dropped = match self.of {
                BudgetOf::Guest => &self.stats.log_lines_dropped,
                BudgetOf::HostWarnings => &self.stats.host_warnings_dropped,
            };
            dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        bucket.lines -= 1.0;
        bucket.bytes -= len as f64;
        let written = match self.of {
            BudgetOf::Guest => &self.stats.log_lines,
            BudgetOf::HostWarnings => &self.stats.host_warnings,
        };
        written.fetch_add(1, Ordering::Relaxed);
        Some(std::mem::take(&mut bucket.dropped))
    }
}

/// Says how many lines were dropped, once a line passes again.
fn report_dropped(plugin: &str, dropped: u64) {
    if dropped > 0 {
        tracing::warn!(plugin, "{dropped} lines of this tenant's plugin log dropped: over its rate");
    }
}

/// The host's warnings about one tenant's plugin, within a budget of
/// [`HOST_WARNING_LIMITS`] that tenant's instances share.
#[derive(Clone)]
pub struct HostWarnings {
    pub plugin: Arc<str>,
    pub tenant: Arc<str>,
    pub budget: Arc<LogBudget>,
}

impl HostWarnings {
    pub fn warn(&self, message: std::fmt::Arguments<'_>) {
        // Cut and made printable like any plugin text: it may quote the
        // plugin's or a client's words (a path, an error).
        let message = bounded(message.to_string());
        let Some(dropped) = self.budget.admit(message.len()) else { return };
        let (plugin, tenant) = (&*self.plugin, &*self.tenant);
        if dropped > 0 {
            tracing::warn!(plugin, tenant, "{dropped} warnings about this tenant's plugin not logged: over their rate");
        }
        tracing::warn!(plugin, tenant, "{message}");
    }
}

pub fn log(plugin: &str, budget: &LogBudget, level: LogLevel, message: String) {
    let message = bounded(message);
    let Some(dropped) = budget.admit(message.len()) else { return };
    report_dropped(plugin, dropped);
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
    pub budget: Arc<LogBudget>,
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.lines())
    }

    /// Written at once, on the guest's thread: the default adapter hands
    /// every write to a task on the async runtime and parks the guest until
    /// it is done (200 000 lines of stderr took over 20 s that way, each a
    /// trip through the runtime every tenant shares).
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.lines())
    }
}

impl GuestStderr {
    fn lines(&self) -> LineWriter {
        LineWriter { plugin: self.plugin.clone(), budget: self.budget.clone(), line: Vec::new(), overflowed: false }
    }
}

struct LineWriter {
    plugin: Arc<str>,
    budget: Arc<LogBudget>,
    line: Vec<u8>,
    overflowed: bool,
}

impl LineWriter {
    fn take(&mut self, buf: &[u8]) {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            } else {
                self.overflowed = true;
            }
        }
    }

    fn emit(&mut self) {
        if let Some(dropped) = self.budget.admit(self.line.len()) {
            report_dropped(&self.plugin, dropped);
            let text = String::from_utf8_lossy(&self.line);
            let cut = if self.overflowed { " […]" } else { "" };
            tracing::warn!(plugin = &*self.plugin, "guest stderr: {}{cut}", text.trim_end());
        }
        self.line.clear();
        self.overflowed = false;
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl Pollable for LineWriter {
    /// Always ready: nothing is buffered beyond one line.
    // The shape `#[async_trait]` gives the trait's method.
    fn ready<'life, 'future>(&'life mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'future>>
    where
        'life: 'future,
        Self: 'future,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.take(buf);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_rate_lines_are_dropped_and_counted_and_the_next_one_says_so() {
        let stats = Arc::new(super::super::RuntimeStats::default());
        let budget = LogBudget::new(LogLimits { lines_per_sec: 10, bytes_per_sec: 1000 }, BudgetOf::Guest, stats.clone());
        let passed = (0..1000).filter(|_| budget.admit(10).is_some()).count();
        assert_eq!(passed, 20, "two seconds' worth pass at once");
        assert_eq!(stats.log_lines_dropped.load(Ordering::Relaxed), 980);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(budget.admit(10), Some(980), "the next line that passes reports the drops");
        assert_eq!(budget.admit(10), Some(0));
        // Bytes bound too: one line larger than what is left is dropped.
        let bytes = LogBudget::new(LogLimits { lines_per_sec: 1000, bytes_per_sec: 100 }, BudgetOf::Guest, stats);
        assert!(bytes.admit(150).is_some());
        assert!(bytes.admit(100).is_none(), "200 bytes of burst, 150 spent");
    }
}
