//! The guest's own time in the current call: wall time minus the time it
//! spends in host calls (where it waits, on the network say, rather than
//! computes). The store updates it on every host call (wasmtime's call
//! hook); the epoch callback on the guest's thread and the waiting caller
//! both read it. The caller's reading is what makes a deadline hold when
//! the guest's thread, lowered in priority for spinning, gets no CPU to
//! notice its own interrupt: the client is answered on time, and the
//! instance is dropped as soon as the thread runs again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::CallHook;

/// Not in a host call.
const OUTSIDE: u64 = u64::MAX;

pub struct GuestClock {
    /// Every time below is in nanoseconds since this instant.
    origin: Instant,
    started: AtomicU64,
    in_host: AtomicU64,
    entered_host: AtomicU64,
    running: AtomicBool,
    /// When the current call's wall-clock limit ends (`OUTSIDE`: none).
    wall_deadline: AtomicU64,
    /// The most a call may compute.
    budget: Duration,
}

impl GuestClock {
    pub fn new(budget: Duration) -> Self {
        Self {
            origin: Instant::now(),
            started: AtomicU64::new(0),
            in_host: AtomicU64::new(0),
            entered_host: AtomicU64::new(OUTSIDE),
            running: AtomicBool::new(false),
            wall_deadline: AtomicU64::new(OUTSIDE),
            budget,
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// A call (or instantiation) starts, to be over by `wall_deadline`.
    pub fn start(&self, wall_deadline: Instant) {
        let at = wall_deadline.checked_duration_since(self.origin).map_or(0, |d| d.as_nanos() as u64);
        self.wall_deadline.store(at, Ordering::SeqCst);
        self.in_host.store(0, Ordering::SeqCst);
        self.entered_host.store(OUTSIDE, Ordering::SeqCst);
        self.started.store(self.now(), Ordering::SeqCst);
        self.running.store(true, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// What the guest computed in this call so far; zero when no call runs.
    pub fn guest_time(&self) -> Duration {
        if !self.running.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let entered = self.entered_host.load(Ordering::SeqCst);
        let until = if entered == OUTSIDE { self.now() } else { entered };
        let spent = until.saturating_sub(self.started.load(Ordering::SeqCst));
        Duration::from_nanos(spent.saturating_sub(self.in_host.load(Ordering::SeqCst)))
    }

    pub fn past_budget(&self) -> bool {
        self.guest_time() >= self.budget
    }

    /// Whether the running call is past its wall-clock limit. The epoch
    /// callback checks it too, so guest code that runs while the clock
    /// counts host time (the guest's allocator, called to lower a host
    /// call's results) is stopped by the wall clock.
    pub fn past_wall_deadline(&self) -> bool {
        self.running.load(Ordering::SeqCst) && self.now() >= self.wall_deadline.load(Ordering::SeqCst)
    }

    /// The store's call hook.
    pub fn hook(&self, hook: CallHook) {
        match hook {
            CallHook::CallingHost => self.entered_host.store(self.now(), Ordering::SeqCst),
            CallHook::ReturningFromHost => {
                let entered = self.entered_host.swap(OUTSIDE, Ordering::SeqCst);
                if entered != OUTSIDE {
                    self.in_host.fetch_add(self.now().saturating_sub(entered), Ordering::SeqCst);
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_in_host_calls_is_not_computing() {
        let clock = GuestClock::new(Duration::from_millis(50));
        assert_eq!(clock.guest_time(), Duration::ZERO, "no call, no time");
        clock.start(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
        clock.hook(CallHook::CallingHost);
        std::thread::sleep(Duration::from_millis(60));
        let computed = clock.guest_time();
        assert!(computed >= Duration::from_millis(20) && computed < Duration::from_millis(50), "{computed:?}");
        assert!(!clock.past_budget(), "waiting in the host does not use the budget");
        clock.hook(CallHook::ReturningFromHost);
        std::thread::sleep(Duration::from_millis(40));
        assert!(clock.past_budget(), "computing again does");
        assert!(!clock.past_wall_deadline());
        clock.stop();
        assert!(!clock.past_budget());
    }

    #[test]
    fn the_wall_clock_counts_host_time_too() {
        let clock = GuestClock::new(Duration::from_secs(5));
        clock.start(Instant::now() + Duration::from_millis(30));
        clock.hook(CallHook::CallingHost);
        assert!(!clock.past_wall_deadline());
        std::thread::sleep(Duration::from_millis(40));
        assert!(clock.past_wall_deadline(), "past the wall clock while in a host call");
        assert!(!clock.past_budget());
        clock.stop();
        assert!(!clock.past_wall_deadline(), "no call, no deadline");
    }
}
