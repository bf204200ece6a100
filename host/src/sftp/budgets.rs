//! What one SSH connection's SFTP sessions may hold in memory: requests read
//! and not yet started, and replies started and not yet sent. Shared by the
//! connection's channels, so opening more channels buys no more memory.
//!
//! russh adjusts the SSH window as soon as data arrives, not as it is
//! consumed, so the only flow control towards the client is to stop reading
//! (TCP); and while a channel's input is not read, russh's connection loop
//! stops, replies included. Reading may therefore wait only when the work
//! queued can finish without a reply leaving: past the soft queue bound the
//! reader waits unless a dispatcher is waiting for reply budget (the client
//! is not reading its replies); then it keeps reading up to the hard bound,
//! and a client past that is cut off rather than left to deadlock.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Queued request bytes past which the reader waits (TCP backpressure).
const QUEUE_SOFT: usize = 16 << 20;
/// Queued request bytes past which the session is closed.
const QUEUE_HARD: usize = 64 << 20;
/// Bytes of replies started and not yet sent.
const REPLY_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub struct ConnectionBudgets {
    queue_soft: Arc<Semaphore>,
    queue_hard: Arc<Semaphore>,
    replies: Arc<Semaphore>,
    /// Dispatchers waiting for reply budget right now.
    stalled: Arc<watch::Sender<usize>>,
}

impl Default for ConnectionBudgets {
    fn default() -> Self {
        Self::with_limits(QUEUE_SOFT, QUEUE_HARD, REPLY_BYTES)
    }
}

/// A queued request's share of the budget, given back when it starts (or,
/// for a request answered at once, when that answer is sent).
pub struct Queued {
    _hard: OwnedSemaphorePermit,
    _soft: Option<OwnedSemaphorePermit>,
}

/// Why a request could not be queued.
pub enum QueueRefusal {
    /// The hard bound is reached: the client pipelines without reading replies.
    Full,
    /// The server is shutting down (the wait was cancelled).
    Closed,
}

impl Queued {
    /// For a request answered at once: the answer may wait for the client to
    /// read, so it must not hold what the reader waits on; the hard bound
    /// still counts it.
    pub fn answered(self) -> Queued {
        Queued { _hard: self._hard, _soft: None }
    }
}

impl ConnectionBudgets {
    fn with_limits(queue_soft: usize, queue_hard: usize, replies: usize) -> Self {
        Self {
            queue_soft: Arc::new(Semaphore::new(queue_soft)),
            queue_hard: Arc::new(Semaphore::new(queue_hard)),
            replies: Arc::new(Semaphore::new(replies)),
            stalled: Arc::new(watch::channel(0).0),
        }
    }

    /// Room for a request of `bytes` in the queue; waits past the soft bound
    /// only while no dispatcher waits for replies to leave.
    pub async fn queue(&self, bytes: usize) -> Result<Queued, QueueRefusal> {
        let n = u32::try_from(bytes).map_err(|_| QueueRefusal::Full)?;
        let hard = self.queue_hard.clone().try_acquire_many_owned(n).map_err(|_| QueueRefusal::Full)?;
        let mut stalled = self.stalled.subscribe();
        let soft = tokio::select! {
            soft = self.queue_soft.clone().acquire_many_owned(n) => Some(soft.map_err(|_| QueueRefusal::Closed)?),
            // Replies are not leaving: waiting here could stop them for good.
            _ = stalled.wait_for(|waiting| *waiting > 0) => None,
        };
        Ok(Queued { _hard: hard, _soft: soft })
    }

    /// Reply budget for a reply of up to `bytes`, taken in arrival order.
    pub async fn reply(&self, bytes: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.replies.clone().try_acquire_many_owned(bytes) {
            return Some(permit);
        }
        let _waiting = Stalled::new(&self.stalled);
        self.replies.clone().acquire_many_owned(bytes).await.ok()
    }
}

/// Counts one dispatcher waiting for reply budget, until dropped.
struct Stalled<'a>(&'a watch::Sender<usize>);

impl<'a> Stalled<'a> {
    fn new(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for Stalled<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn past_the_soft_bound_the_reader_waits_while_replies_flow() {
        let budgets = ConnectionBudgets::with_limits(100, 1000, 100);
        let _first = budgets.queue(100).await.ok().expect("within the soft bound");
        assert!(tokio::time::timeout(SHORT, budgets.queue(10)).await.is_err(), "waits: backpressure");
        drop(_first);
        assert!(tokio::time::timeout(SHORT, budgets.queue(10)).await.is_ok(), "room again");
    }

    #[tokio::test]
    async fn a_reader_never_waits_while_a_dispatcher_waits_for_replies() {
        let budgets = ConnectionBudgets::with_limits(100, 1000, 100);
        let _queued = budgets.queue(100).await.ok().expect("within the soft bound");
        let _reply = budgets.reply(100).await.expect("reply budget");
        let reader = budgets.clone();
        let blocked = tokio::spawn(async move { reader.queue(10).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "past the soft bound the reader waits");
        // A dispatcher now waits for reply budget (the client reads nothing):
        // the waiting reader is let go, and later ones do not wait...
        let dispatcher = budgets.clone();
        let waiting = tokio::spawn(async move { dispatcher.reply(50).await.is_some() });
        assert!(tokio::time::timeout(SHORT, blocked).await.expect("released").unwrap());
        let mut held = Vec::new();
        for _ in 0..9 {
            held.push(tokio::time::timeout(SHORT, budgets.queue(100)).await.expect("no wait").ok().expect("queued"));
        }
        // ...up to the hard bound, past which a request is refused, never left waiting.
        let refused = tokio::time::timeout(SHORT, budgets.queue(100)).await.expect("no wait");
        assert!(matches!(refused, Err(QueueRefusal::Full)));
        waiting.abort();
    }

    #[tokio::test]
    async fn an_answer_holds_no_soft_budget() {
        let budgets = ConnectionBudgets::with_limits(100, 1000, 100);
        let answered = budgets.queue(100).await.ok().expect("queued").answered();
        assert!(tokio::time::timeout(SHORT, budgets.queue(100)).await.is_ok(), "the soft budget was given back");
        drop(answered);
    }
}
