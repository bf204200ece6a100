//! Guest code runs on threads of its own, never on the async runtime's
//! workers. A guest that computes keeps only its own thread busy, and the
//! kernel (preemptive) rather than cooperative yields shares the CPU: on the
//! workers, two spinning guests held both cores for a whole epoch tick per
//! poll, and every hop of other tenants' requests queued behind them.
//!
//! A guest call is a future (wasmtime's async calls run the guest on a
//! fiber). A thread polls it while the guest computes; when the guest waits
//! in a host call (a sleep, an HTTP request), the poll returns and the
//! thread goes on to other work: a waiting call holds no thread, only its
//! instance. When the host call is done, its waker queues the call again.
//!
//! Calls are charged to a share (one tenant of one plugin). Each share has
//! its own queue, shares are served in turn, and a share has at most `cap`
//! calls on threads at once: a tenant whose calls all compute takes at most
//! its cap of threads and waits behind its own calls, never behind another
//! tenant's.
//!
//! A call that keeps computing (past a few milliseconds of CPU in one poll,
//! `poll_cpu_time`) lowers its thread to the lowest priority
//! (`demote_current_thread`), so the SSH/SFTP front end and the short calls
//! of other tenants preempt it at once. An unprivileged process cannot raise
//! a priority back, so a demoted thread retires after that poll.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// An idle thread exits after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Stack of a guest thread. Guest code and host imports run on wasmtime's
/// own fiber stacks; this one only polls.
const THREAD_STACK: usize = 512 << 10;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Who a call is charged to, and how many of its calls may be on threads at once.
#[derive(Debug, Clone)]
pub struct Share {
    pub key: Arc<str>,
    pub cap: usize,
}

/// A bounded set of threads polling guest calls, fair across shares.
pub struct GuestThreads {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
    /// Starts threads asked for by a demoted thread (see `spawn_thread`).
    spawner: Option<std::sync::mpsc::Sender<()>>,
}

#[derive(Default)]
struct State {
    shares: HashMap<Arc<str>, ShareQueue>,
    /// Shares with a call ready to be polled and room under their cap, in turn.
    turns: VecDeque<Arc<str>>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Wake-ups sent and not yet taken: idle threads beyond these are free.
    wakeups: usize,
}

#[derive(Default)]
struct ShareQueue {
    ready: VecDeque<Arc<Task>>,
    /// Calls of this share being polled now.
    on_threads: usize,
    cap: usize,
    /// Whether the share is in `turns`.
    waiting_turn: bool,
}

impl ShareQueue {
    fn wants_turn(&self) -> bool {
        !self.waiting_turn && !self.ready.is_empty() && self.on_threads < self.cap
    }
}

/// Where a task is; guarded by `Task::status`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    /// In its share's queue; `started` once it has been polled.
    Ready { started: bool },
    /// On a thread; `woken` if its waker fired meanwhile.
    Polling { woken: bool },
    /// Waiting for its waker.
    Parked,
    /// Finished, panicked, or withdrawn before it started.
    Done,
}

struct Task {
    share: Share,
    runtime: tokio::runtime::Handle,
    status: Mutex<Status>,
    future: Mutex<Option<BoxFuture>>,
    scheduler: Weak<Inner>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut status = self.status.lock().expect("task status lock");
        match *status {
            Status::Parked => {
                *status = Status::Ready { started: true };
                drop(status);
                if let Some(scheduler) = self.scheduler.upgrade() {
                    scheduler.enqueue(self.clone());
                }
            }
            Status::Polling { .. } => *status = Status::Polling { woken: true },
            Status::Ready { .. } | Status::Done => {}
        }
    }
}

/// A call handed to the threads; its output comes through `output`.
/// Dropping it before a thread has started the call withdraws the call: it
/// never runs. Once started, it runs to its end (its own deadline bounds it).
pub struct GuestCall<T> {
    task: Arc<Task>,
    output: tokio::sync::oneshot::Receiver<T>,
}

impl<T> GuestCall<T> {
    /// The call's output; `None` if it panicked or no thread could run it.
    pub async fn output(&mut self) -> Option<T> {
        (&mut self.output).await.ok()
    }

    /// Withdraws the call if no thread has started it yet: true then, and
    /// the call never runs.
    pub fn withdraw(&self) -> bool {
        let mut status = self.task.status.lock().expect("task status lock");
        if *status != (Status::Ready { started: false }) {
            return false;
        }
        *status = Status::Done;
        drop(status);
        // Dropping a future that was never polled runs no guest code; it
        // releases what the call held (its instance) right away.
        drop(self.task.future.lock().expect("task future lock").take());
        true
    }
}

impl<T> Drop for GuestCall<T> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

thread_local! {
    /// Set on guest threads; `Some(true)` once the thread was demoted.
    static GUEST_THREAD: Cell<Option<bool>> = const { Cell::new(None) };
    /// The thread's CPU time when its current poll began.
    static POLL_STARTED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// CPU time the current thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// CPU time the current poll on this guest thread has used: what a call
/// computed, not how long it waited for a CPU (a short call starved by
/// spinners must not be taken for one).
pub fn poll_cpu_time() -> Duration {
    thread_cpu_time().saturating_sub(POLL_STARTED.with(Cell::get))
}

impl GuestThreads {
    pub fn new(max_threads: usize) -> Self {
        let (spawn_requests, requested) = std::sync::mpsc::channel::<()>();
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            work: Condvar::new(),
            max_threads: max_threads.max(1),
            spawner: Some(spawn_requests),
        });
        let weak = Arc::downgrade(&inner);
        let spawner = std::thread::Builder::new().name("wasftp-spawner".into()).stack_size(THREAD_STACK).spawn(move || {
            // Ends when the threads are dropped (the sender goes with them).
            while requested.recv().is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                inner.start_thread();
            }
        });
        let mut threads = Self { inner };
        if let Err(e) = spawner {
            tracing::warn!("cannot start the guest-thread spawner ({e}); demoted threads start threads themselves");
            if let Some(inner) = Arc::get_mut(&mut threads.inner) {
                inner.spawner = None;
            }
        }
        threads
    }

    /// Hands `call` to the threads, charged to `share`. The runtime's I/O
    /// and timer drivers serve the host imports; the guest is polled on a
    /// guest thread.
    pub fn spawn<F>(&self, share: &Share, call: F) -> GuestCall<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (done, output) = tokio::sync::oneshot::channel();
        let future: BoxFuture = Box::pin(async move {
            let _ = done.send(call.await);
        });
        let task = Arc::new(Task {
            // No share may take more than half the threads: the other
            // half stays for everyone else, however the caps are set.
            share: Share { key: share.key.clone(), cap: share.cap.clamp(1, (self.inner.max_threads / 2).max(1)) },
            runtime: tokio::runtime::Handle::current(),
            status: Mutex::new(Status::Ready { started: false }),
            future: Mutex::new(Some(future)),
            scheduler: Arc::downgrade(&self.inner),
        });
        self.inner.enqueue(task.clone());
        GuestCall { task, output }
    }

    /// Runs `call` and waits for its output (see `spawn`).
    #[cfg(test)]
    pub async fn run<F>(&self, share: &Share, call: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(share, call).output().await
    }

    /// Threads alive now (busy or idle).
    pub fn threads(&self) -> usize {
        self.inner.state.lock().expect("guest threads lock").threads
    }
}

impl Inner {
    fn enqueue(self: &Arc<Self>, task: Arc<Task>) {
        let mut state = self.state.lock().expect("guest threads lock");
        if Self::push_ready(&mut state, task) {
            self.find_thread(state);
        }
        // Else its share is at its cap: one of its own calls on a thread takes it next.
    }

    /// Queues a ready task; true when its share now waits for a turn.
    fn push_ready(state: &mut State, task: Arc<Task>) -> bool {
        let key = task.share.key.clone();
        let queue = state.shares.entry(key.clone()).or_default();
        queue.cap = task.share.cap;
        queue.ready.push_back(task);
        if !queue.wants_turn() {
            return false;
        }
        queue.waiting_turn = true;
        state.turns.push_back(key);
        true
    }

    /// A share waits for its turn: wakes an idle thread, or starts one
    /// under the cap; else every thread is busy and the share waits.
    fn find_thread(self: &Arc<Self>, mut state: std::sync::MutexGuard<'_, State>) {
        if state.idle > state.wakeups {
            state.wakeups += 1;
            self.work.notify_one();
        } else if state.threads < self.max_threads {
            state.threads += 1;
            drop(state);
            self.spawn_thread();
        }
    }

    /// The next task to poll: the first share in turn takes one step. True
    /// with it when the share is back in turn (more ready, room under its
    /// cap): that turn needs a thread of its own.
    fn next_task(state: &mut State) -> Option<(Arc<Task>, bool)> {
        while let Some(key) = state.turns.pop_front() {
            let Some(queue) = state.shares.get_mut(&key) else { continue };
            queue.waiting_turn = false;
            if queue.on_threads >= queue.cap {
                continue;
            }
            let Some(task) = queue.ready.pop_front() else { continue };
            queue.on_threads += 1;
            let again = queue.wants_turn();
            if again {
                queue.waiting_turn = true;
                state.turns.push_back(key);
            }
            return Some((task, again));
        }
        None
    }

    /// A task of `key` left its thread.
    fn left_thread(state: &mut State, key: &Arc<str>) {
        let Some(queue) = state.shares.get_mut(key) else { return };
        queue.on_threads -= 1;
        if queue.wants_turn() {
            queue.waiting_turn = true;
            state.turns.push_back(key.clone());
        } else if queue.on_threads == 0 && queue.ready.is_empty() {
            state.shares.remove(key);
        }
    }

    /// Starts a thread (already counted in `threads`). A thread inherits
    /// the priority of the thread that starts it, and a demoted one cannot
    /// raise it back: one asked for by a demoted thread is started by the
    /// spawner, which keeps the priority the threads were made with. (A
    /// thread started by a demoted one served every tenant at the lowest
    /// priority: a login waited 750 ms behind four spinners for its instance.)
    fn spawn_thread(self: &Arc<Self>) {
        if GUEST_THREAD.with(|flag| flag.get()) == Some(true)
            && let Some(spawner) = &self.spawner
            && spawner.send(()).is_ok()
        {
            return;
        }
        self.start_thread();
    }

    fn start_thread(self: &Arc<Self>) {
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wasftp-guest".into())
            .stack_size(THREAD_STACK)
            .spawn(move || inner.work_loop());
        if let Err(e) = spawned {
            tracing::error!("cannot start a guest thread: {e}");
            let mut state = self.state.lock().expect("guest threads lock");
            state.threads -= 1;
            // With no thread left, queued calls would never run: fail them
            // (dropping a task's future drops its reply channel).
            if state.threads == 0 {
                let tasks: Vec<_> = state.shares.drain().flat_map(|(_, queue)| queue.ready).collect();
                state.turns.clear();
                drop(state);
                for task in tasks {
                    *task.status.lock().expect("task status lock") = Status::Done;
                    drop(task.future.lock().expect("task future lock").take());
                }
            }
        }
    }

    fn work_loop(self: Arc<Self>) {
        GUEST_THREAD.with(|flag| flag.set(Some(false)));
        let mut state = self.state.lock().expect("guest threads lock");
        loop {
            let Some((task, turn_again)) = Self::next_task(&mut state) else {
                state.idle += 1;
                let (next, timeout) = self.work.wait_timeout(state, IDLE_EXIT).expect("guest threads lock");
                state = next;
                state.idle -= 1;
                state.wakeups = state.wakeups.saturating_sub(1);
                if timeout.timed_out() && state.turns.is_empty() {
                    state.threads -= 1;
                    return;
                }
                continue;
            };
            if turn_again {
                // Its share queued more calls than it had turns: without a
                // thread found for the new turn, the next share's thread
                // would take it, and that share wait behind this one (a
                // login waited 750 ms behind four spinners so).
                self.find_thread(state);
            } else {
                drop(state);
            }
            let again = poll_task(&task);
            state = self.state.lock().expect("guest threads lock");
            Self::left_thread(&mut state, &task.share.key);
            if again {
                // Woken while it was polled: queued here, so this thread
                // (free now) takes it in turn rather than waking another.
                Self::push_ready(&mut state, task);
            }
            if GUEST_THREAD.with(|flag| flag.get()) == Some(true) {
                state.threads -= 1;
                // A share in turn (this call's own, back under its cap)
                // counted on this thread: hand it to another.
                if !state.turns.is_empty() {
                    self.find_thread(state);
                }
                return;
            }
        }
    }
}

/// One poll of `task` on this thread; true when it was woken meanwhile and
/// is ready again (the caller queues it).
fn poll_task(task: &Arc<Task>) -> bool {
    {
        let mut status = task.status.lock().expect("task status lock");
        match *status {
            Status::Ready { .. } => *status = Status::Polling { woken: false },
            // Withdrawn before it started.
            Status::Done => return false,
            Status::Polling { .. } | Status::Parked => unreachable!("a task is queued only when ready"),
        }
    }
    let mut slot = task.future.lock().expect("task future lock");
    let Some(future) = slot.as_mut() else {
        *task.status.lock().expect("task status lock") = Status::Done;
        return false;
    };
    let waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&waker);
    let _runtime = task.runtime.enter();
    POLL_STARTED.with(|started| started.set(thread_cpu_time()));
    // A panicking call drops its reply channel: its caller sees `None`.
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
    let finished = !matches!(polled, Ok(Poll::Pending));
    if finished {
        // Dropped here, on the guest thread, with the runtime entered.
        *slot = None;
    }
    drop(slot);
    let mut status = task.status.lock().expect("task status lock");
    if finished {
        *status = Status::Done;
        false
    } else if *status == (Status::Polling { woken: true }) {
        *status = Status::Ready { started: true };
        true
    } else {
        *status = Status::Parked;
        false
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
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    fn share(key: &str, cap: usize) -> Share {
        Share { key: key.into(), cap }
    }

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
                    .run(&share(&format!("t{i}"), 8), async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Computing: the thread stays busy.
                        std::thread::sleep(Duration::from_millis(30));
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
    async fn a_waiting_call_holds_no_thread() {
        let threads = Arc::new(GuestThreads::new(1));
        let mut waiting = Vec::new();
        for _ in 0..50 {
            let threads = threads.clone();
            waiting.push(tokio::spawn(async move {
                threads.run(&share("waits", 100), tokio::time::sleep(Duration::from_millis(800))).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        assert_eq!(threads.run(&share("other", 1), async { 7 }).await, Some(7));
        assert!(started.elapsed() < Duration::from_millis(300), "{:?} behind 50 waiting calls", started.elapsed());
        assert_eq!(threads.threads(), 1, "one thread served them all");
        for call in waiting {
            assert_eq!(call.await.unwrap(), Some(()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shares_take_turns_and_keep_to_their_cap() {
        let threads = Arc::new(GuestThreads::new(4));
        let busy = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut hog = Vec::new();
        for _ in 0..20 {
            let (threads, busy, most) = (threads.clone(), busy.clone(), most.clone());
            hog.push(tokio::spawn(async move {
                threads
                    .run(&share("hog", 2), async move {
                        most.fetch_max(busy.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        busy.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The hog's 18 queued calls are its own affair: another share's
        // call takes a free thread at once.
        let started = Instant::now();
        assert_eq!(threads.run(&share("quiet", 2), async { 1 }).await, Some(1));
        assert!(started.elapsed() < Duration::from_millis(40), "{:?}", started.elapsed());
        for call in hog {
            call.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "the hog never had more than its cap on threads");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_withdrawn_before_it_started_never_runs() {
        let threads = Arc::new(GuestThreads::new(1));
        let hold = threads.spawn(&share("a", 1), async { std::thread::sleep(Duration::from_millis(200)) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let queued = threads.spawn(&share("b", 1), async move { flag.store(true, Ordering::SeqCst) });
        assert!(queued.withdraw(), "not started: the only thread is busy");
        drop(queued);
        let mut hold = hold;
        hold.output().await.unwrap();
        assert_eq!(threads.run(&share("b", 1), async { 3 }).await, Some(3));
        assert!(!ran.load(Ordering::SeqCst), "the withdrawn call never ran");
        // Started calls cannot be withdrawn.
        let mut started = threads.spawn(&share("c", 1), tokio::time::sleep(Duration::from_millis(100)));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!started.withdraw());
        assert_eq!(started.output().await, Some(()));
    }

    #[cfg(target_os = "linux")]
    fn current_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
    }

    /// Before: the thread a demoted thread started (to hand on its share's
    /// next call as it retired) inherited its lowest priority, and served
    /// every tenant from there.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_started_for_a_demoted_thread_keep_the_normal_priority() {
        let normal = current_nice();
        let threads = Arc::new(GuestThreads::new(8));
        let inner = threads.clone();
        let nice = threads
            .run(&share("spinner", 1), async move {
                assert!(demote_current_thread());
                // Queued while this thread is busy and about to retire: a
                // new thread takes it.
                inner.spawn(&share("other", 1), async { current_nice() }).output().await
            })
            .await;
        assert_eq!(nice, Some(Some(normal)), "the new thread runs at the normal priority");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_share_queueing_several_calls_at_once_does_not_take_the_next_shares_thread() {
        let threads = Arc::new(GuestThreads::new(8));
        let computing = |ms| async move { std::thread::sleep(Duration::from_millis(ms)) };
        // Two calls of one share queued at once: one turn, then a second
        // once the first call is on a thread.
        let started = Instant::now();
        let first = threads.spawn(&share("busy", 2), computing(600));
        let second = threads.spawn(&share("busy", 2), computing(600));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let quick = threads.run(&share("quick", 2), async { Instant::now() }).await.unwrap();
        let waited = quick.duration_since(started);
        assert!(waited < Duration::from_millis(400), "the other share waited {waited:?} behind the busy one");
        let (mut first, mut second) = (first, second);
        first.output().await.unwrap();
        second.output().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(1100), "the busy share's two calls ran side by side");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demoted_thread_retires_and_a_panic_is_reported() {
        let threads = GuestThreads::new(4);
        let one = share("x", 4);
        let ran = threads.run(&one, async { (demote_current_thread(), demote_current_thread()) }).await;
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
        let panicked = threads.run(&one, async { panic!("guest host bug") }).await;
        assert_eq!(panicked, None::<()>);
        assert_eq!(threads.run(&one, async { 7 }).await, Some(7));
    }
}
