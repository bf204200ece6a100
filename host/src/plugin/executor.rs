//! Guest code runs on threads of its own, never on the async runtime's
//! workers. A guest that computes keeps only its own thread busy, and the
//! kernel (preemptive) rather than cooperative yields shares the CPU: on the
//! workers, two spinning guests held both cores for a whole epoch tick per
//! poll, and every hop of other tenants' requests queued behind them.
//!
//! A call that keeps computing lowers its thread to the lowest priority
//! (`demote_current_thread`), so the SSH/SFTP front end and the short calls
//! of other tenants preempt it at once. An unprivileged process cannot raise
//! a priority back, so a demoted thread retires after its call.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// An idle thread exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Stack of a guest thread. Guest code and host imports run on wasmtime's
/// own fiber stacks; this one only polls.
const THREAD_STACK: usize = 512 << 10;

type Job = Box<dyn FnOnce() + Send>;

/// A bounded set of threads that run guest calls to completion.
pub struct GuestThreads {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Wake-ups sent and not yet taken: idle threads beyond these are free.
    wakeups: usize,
}

thread_local! {
    /// Set on guest threads; `Some(true)` once the thread was demoted.
    static GUEST_THREAD: Cell<Option<bool>> = const { Cell::new(None) };
}

impl GuestThreads {
    pub fn new(max_threads: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// Runs `call` on a guest thread and waits for its output. The call
    /// always runs to the end, even when the caller stops waiting: it owns
    /// the instance it uses, which is then never left half-way through a call.
    /// `None` if the call panicked, or no guest thread could be started.
    pub async fn run<F>(&self, call: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = tokio::runtime::Handle::current();
        let (done, output) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            // The runtime's I/O and timer drivers serve the host imports;
            // the guest itself is polled here.
            let _ = done.send(runtime.block_on(call));
        }));
        output.await.ok()
    }

    /// Threads alive now (busy or idle).
    pub fn threads(&self) -> usize {
        self.inner.state.lock().expect("guest threads lock").threads
    }

    fn submit(&self, job: Job) {
        let mut state = self.inner.state.lock().expect("guest threads lock");
        state.jobs.push_back(job);
        if state.idle > state.wakeups {
            state.wakeups += 1;
            self.inner.work.notify_one();
        } else if state.threads < self.inner.max_threads {
            state.threads += 1;
            drop(state);
            self.spawn_thread();
        }
        // Else every thread is busy: the job waits its turn in the queue.
    }

    fn spawn_thread(&self) {
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("wasftp-guest".into())
            .stack_size(THREAD_STACK)
            .spawn(move || inner.work_loop());
        if let Err(e) = spawned {
            tracing::error!("cannot start a guest thread: {e}");
            let mut state = self.inner.state.lock().expect("guest threads lock");
            state.threads -= 1;
            // With no thread left, queued calls would never run: fail them
            // (dropping a job drops its reply channel).
            if state.threads == 0 {
                state.jobs.clear();
            }
        }
    }
}

impl Inner {
    fn work_loop(self: Arc<Self>) {
        GUEST_THREAD.with(|flag| flag.set(Some(false)));
        let mut state = self.state.lock().expect("guest threads lock");
        loop {
            let Some(job) = state.jobs.pop_front() else {
                state.idle += 1;
                let (next, timeout) = self.work.wait_timeout(state, IDLE_EXIT).expect("guest threads lock");
                state = next;
                state.idle -= 1;
                state.wakeups = state.wakeups.saturating_sub(1);
                if timeout.timed_out() && state.jobs.is_empty() {
                    state.threads -= 1;
                    return;
                }
                continue;
            };
            drop(state);
            // A panicking call drops its reply channel: its caller sees `None`.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            state = self.state.lock().expect("guest threads lock");
            if GUEST_THREAD.with(|flag| flag.get()) == Some(true) {
                state.threads -= 1;
                // A queued job may have counted on this thread.
                if !state.jobs.is_empty() && state.idle <= state.wakeups {
                    state.threads += 1;
                    drop(state);
                    GuestThreads { inner: self.clone() }.spawn_thread();
                }
                return;
            }
        }
    }
}

/// Lowers the current guest thread to the lowest priority for the rest of
/// its life; called when a guest keeps computing. True when it did so now;
/// false off guest threads or when the thread is already demoted.
pub fn demote_current_thread() -> bool {
    let first = GUEST_THREAD.with(|flag| {
        if flag.get() == Some(false) {
            flag.set(Some(true));
            true
        } else {
            false
        }
    });
    if first {
        lower_priority();
    }
    first
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::debug!("cannot lower a guest thread's priority: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_past_the_thread_cap_wait_their_turn() {
        let threads = Arc::new(GuestThreads::new(2));
        let running = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        for i in 0..6u64 {
            let (threads, running, most) = (threads.clone(), running.clone(), most.clone());
            calls.push(tokio::spawn(async move {
                threads
                    .run(async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        i * 2
                    })
                    .await
            }));
        }
        let mut outputs = Vec::new();
        for call in calls {
            outputs.push(call.await.unwrap().unwrap());
        }
        assert_eq!(outputs, vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(most.load(Ordering::SeqCst), 2, "never more calls at once than threads");
        assert!(threads.threads() <= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demoted_thread_retires_and_a_panic_is_reported() {
        let threads = GuestThreads::new(4);
        let ran = threads.run(async { (demote_current_thread(), demote_current_thread()) }).await;
        assert_eq!(ran, Some((true, false)), "demoted once");
        assert!(!demote_current_thread(), "not a guest thread");
        // The demoted thread has left; the next call gets a fresh one.
        for _ in 0..100 {
            if threads.threads() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(threads.threads(), 0);
        let panicked = threads.run(async { panic!("guest host bug") }).await;
        assert_eq!(panicked, None::<()>);
        assert_eq!(threads.run(async { 7 }).await, Some(7));
    }
}
