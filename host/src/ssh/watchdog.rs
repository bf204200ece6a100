//! A transport watchdog. russh's own inactivity timer is not polled while its
//! session loop is stuck writing to a peer that stopped reading, so the TCP
//! stream itself is wrapped: it records progress in both directions, and a
//! watchdog kills the stream (every pending and later I/O fails) when neither
//! direction moved for the idle timeout and no request was being served
//! meanwhile, or on a forced shutdown. (russh's own inactivity timer is
//! off: it cannot know that a quiet client is waiting for a long CLOSE.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::sftp::InService;

pub struct Liveness {
    started: Instant,
    /// Milliseconds since `started` of the last byte read or written.
    last_read: AtomicU64,
    last_write: AtomicU64,
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// SFTP requests of this connection being served.
    in_service: InService,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_read: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            in_service: InService::default(),
        })
    }

    /// Where the connection's SFTP sessions count the requests they serve.
    pub fn in_service(&self) -> InService {
        self.in_service.clone()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Time since the last byte moved in either direction.
    pub fn idle_for(&self) -> Duration {
        let last = self.last_read.load(Ordering::Relaxed).max(self.last_write.load(Ordering::Relaxed));
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Time with no traffic and no request being served.
    fn unused_for(&self) -> Duration {
        match self.in_service.quiet_for() {
            None => Duration::ZERO,
            Some(quiet) => quiet.min(self.idle_for()),
        }
    }

    /// Fails every pending and future I/O on the stream.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

pub struct WatchedStream<S> {
    inner: S,
    liveness: Arc<Liveness>,
}

impl<S> WatchedStream<S> {
    /// Wraps `inner`; `liveness` records its traffic and can kill it.
    pub fn new(inner: S, liveness: Arc<Liveness>) -> Self {
        Self { inner, liveness }
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "session reaped by the watchdog")
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.liveness.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        self.liveness.read_waker.register(cx.waker());
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.liveness.now_ms();
            self.liveness.last_read.store(now, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.liveness.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        self.liveness.write_waker.register(cx.waker());
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            let now = self.liveness.now_ms();
            self.liveness.last_write.store(now, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.liveness.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        self.liveness.write_waker.register(cx.waker());
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Kills the stream once it has been idle for `idle`, or when `stop` fires.
pub async fn watch(liveness: Arc<Liveness>, idle: Duration, mut force: tokio::sync::watch::Receiver<bool>) {
    let period = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = super::stopped(&mut force) => {
                liveness.kill();
                return;
            }
        }
        if liveness.is_killed() {
            return;
        }
        if liveness.unused_for() >= idle {
            tracing::info!("no traffic and no request for {:?}; closing the connection", liveness.unused_for());
            liveness.kill();
            return;
        }
    }
}
