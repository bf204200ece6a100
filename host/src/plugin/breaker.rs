//! A circuit breaker per tenant of a plugin: a tenant whose instances keep
//! failing (traps, interrupted calls, outputs past their bound) has its
//! calls answered at once with a clear error for a cool-down, instead of a
//! fresh instance built (and `init` run) for each call only to fail again.
//! One tenant's breaker never refuses another tenant's calls.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When a tenant's breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerLimits {
    /// Failures within `window` that open it; 0 turns the breaker off.
    pub failures: u32,
    pub window: Duration,
    /// How long it refuses calls once open.
    pub cooldown: Duration,
}

impl Default for BreakerLimits {
    fn default() -> Self {
        Self { failures: 10, window: Duration::from_secs(60), cooldown: Duration::from_secs(10) }
    }
}

pub struct Breaker {
    limits: BreakerLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the failures within the window happened, oldest first.
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(limits: BreakerLimits) -> Self {
        Self { limits, state: Mutex::default() }
    }

    /// Counts a failure; true when this one opened the breaker.
    pub fn failed(&self) -> bool {
        if self.limits.failures == 0 {
            return false;
        }
        let now = Instant::now();
        let mut state = self.state.lock().expect("breaker lock");
        if state.open_until.is_some_and(|until| until > now) {
            return false;
        }
        state.failures.push_back(now);
        while state.failures.front().is_some_and(|at| now.duration_since(*at) > self.limits.window) {
            state.failures.pop_front();
        }
        if state.failures.len() < self.limits.failures as usize {
            return false;
        }
        state.failures.clear();
        state.open_until = Some(now + self.limits.cooldown);
        true
    }

    /// While open: how long it still refuses calls.
    pub fn refusing(&self) -> Option<Duration> {
        let state = self.state.lock().expect("breaker lock");
        let left = state.open_until?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether it remembers nothing (no recent failure, not open): it can
    /// be forgotten.
    pub fn is_clear(&self) -> bool {
        let now = Instant::now();
        let state = self.state.lock().expect("breaker lock");
        state.open_until.is_none_or(|until| until <= now)
            && state.failures.back().is_none_or(|at| now.duration_since(*at) > self.limits.window)
    }

    pub fn limits(&self) -> BreakerLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_within_the_window_and_closes_after_the_cooldown() {
        let ms = Duration::from_millis;
        let breaker = Breaker::new(BreakerLimits { failures: 3, window: ms(300), cooldown: ms(200) });
        assert!(!breaker.failed() && !breaker.failed());
        // Spread out: the first two leave the window.
        std::thread::sleep(ms(350));
        assert!(!breaker.failed());
        assert_eq!(breaker.refusing(), None);
        assert!(!breaker.failed());
        assert!(breaker.failed(), "the third within the window opens it");
        assert!(breaker.refusing().is_some_and(|left| left > ms(100)));
        assert!(!breaker.failed(), "failures while open do not open it again");
        assert!(!breaker.is_clear());
        std::thread::sleep(ms(250));
        assert_eq!(breaker.refusing(), None, "closed after the cool-down");
        assert!(breaker.is_clear());
        let off = Breaker::new(BreakerLimits { failures: 0, ..BreakerLimits::default() });
        assert!((0..100).all(|_| !off.failed()) && off.refusing().is_none());
    }
}
