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
            budget,
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// A call (or instantiation) starts.
    pub fn start(&self) {
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
        clock.start();
        std::thread::sleep(Duration::from_millis(20));
        clock.hook(CallHook::CallingHost);
        std::thread::sleep(Duration::from_millis(60));
        let computed = clock.guest_time();
        assert!(computed >= Duration::from_millis(20) && computed < Duration::from_millis(50), "{computed:?}");
        assert!(!clock.past_budget(), "waiting in the host does not use the budget");
        clock.hook(CallHook::ReturningFromHost);
        std::thread::sleep(Duration::from_millis(40));
        assert!(clock.past_budget(), "computing again does");
        clock.stop();
        assert!(!clock.past_budget());
    }
}
