//! Requests being served on one connection. The connection's idle timer
//! asks it, so a quiet client waiting for a long CLOSE (a multipart
//! completion, a copy-rename of a large object) is not cut as idle while
//! its commit goes on: time spent serving a request is not idle time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct InService(Arc<State>);

struct State {
    requests: AtomicUsize,
    /// When the last request being served ended.
    last_ended: Mutex<Instant>,
}

impl Default for InService {
    fn default() -> Self {
        Self(Arc::new(State { requests: AtomicUsize::new(0), last_ended: Mutex::new(Instant::now()) }))
    }
}

impl InService {
    /// Counts a request as being served until the guard is dropped.
    pub fn serving(&self) -> Serving {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        Serving(self.0.clone())
    }

    /// `None` while a request is being served; else how long ago the last one ended.
    pub fn quiet_for(&self) -> Option<Duration> {
        if self.0.requests.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.0.last_ended.lock().expect("in-service lock").elapsed())
    }
}

pub struct Serving(Arc<State>);

impl Drop for Serving {
    fn drop(&mut self) {
        // The end is stamped before the count drops, so a reader that sees
        // no request also sees when the last one ended.
        *self.0.last_ended.lock().expect("in-service lock") = Instant::now();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_being_served_is_not_quiet() {
        let in_service = InService::default();
        let serving = in_service.serving();
        assert_eq!(in_service.quiet_for(), None);
        std::thread::sleep(Duration::from_millis(30));
        drop(serving);
        assert!(in_service.quiet_for().unwrap() < Duration::from_millis(20), "quiet from the end of the request");
    }
}
