//! The gate in front of a tenant-scoped instance, closed while the tenant's
//! state moves to the plugin's next version (see `handover`).
//!
//! Closing has two steps. First no new upload begins (calls go on, so a
//! client that still has to close an upload can): the mover waits until the
//! tenant has no upload open. Then no new session call starts, and the mover
//! waits for those running. Readers are never held: they read a version
//! that no longer changes. Once the state has moved, everything held goes
//! to the new version; if the move failed, the gate opens again and the
//! tenant stays where it was.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::pool::TenantPool;

#[derive(Default)]
pub(crate) struct TenantGate {
    state: Mutex<GateState>,
    changed: Notify,
}

#[derive(Default)]
struct GateState {
    uploads_held: bool,
    calls_held: bool,
    /// Open uploads (from their begin-write to their drop).
    uploads: usize,
    /// Session calls running.
    calls: usize,
    /// Where the tenant went.
    moved_to: Option<Arc<TenantPool>>,
}

/// What passes the gate: a session call, or an upload for its whole life.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passing {
    Call,
    Upload,
}

pub(crate) enum Entry {
    /// With the pass to hold (none where no gate is kept).
    Open(Option<Pass>),
    /// The tenant's state is on the next version now: go there.
    Moved(Arc<TenantPool>),
}

/// Counted at the gate while it lives.
pub(crate) struct Pass {
    gate: Arc<TenantGate>,
    passing: Passing,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        match self.passing {
            Passing::Call => state.calls -= 1,
            Passing::Upload => state.uploads -= 1,
        }
        drop(state);
        self.gate.changed.notify_waiters();
    }
}

/// Why a tenant's state could not be taken.
pub(crate) enum NotQuiet {
    /// An upload stayed open past the limit.
    Uploads(usize),
    /// A call ran past the limit.
    Calls(usize),
}

impl TenantGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().expect("tenant gate lock")
    }

    /// Waits while the gate holds what passes; `Moved` once the tenant moved.
    pub async fn enter(self: &Arc<Self>, passing: Passing) -> Entry {
        loop {
            // Made before the look, so a change between the two is not missed.
            let changed = self.changed.notified();
            {
                let mut state = self.lock();
                if let Some(to) = &state.moved_to {
                    return Entry::Moved(to.clone());
                }
                let held = match passing {
                    Passing::Call => state.calls_held,
                    Passing::Upload => state.uploads_held,
                };
                if !held {
                    match passing {
                        Passing::Call => state.calls += 1,
                        Passing::Upload => state.uploads += 1,
                    }
                    return Entry::Open(Some(Pass { gate: self.clone(), passing }));
                }
            }
            changed.await;
        }
    }

    /// Holds new uploads and waits for the open ones to end, then holds new
    /// calls and waits for the running ones, each within `limit`. On a
    /// timeout the gate opens again.
    pub async fn close(&self, limit: Duration) -> Result<(), NotQuiet> {
        let deadline = tokio::time::Instant::now() + limit;
        self.lock().uploads_held = true;
        if let Err(left) = self.wait_for(deadline, |state| state.uploads).await {
            self.open();
            return Err(NotQuiet::Uploads(left));
        }
        self.lock().calls_held = true;
        if let Err(left) = self.wait_for(deadline, |state| state.calls).await {
            self.open();
            return Err(NotQuiet::Calls(left));
        }
        Ok(())
    }

    async fn wait_for(&self, deadline: tokio::time::Instant, count: impl Fn(&GateState) -> usize) -> Result<(), usize> {
        loop {
            let changed = self.changed.notified();
            let left = count(&self.lock());
            if left == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let left = count(&self.lock());
                return if left == 0 { Ok(()) } else { Err(left) };
            }
        }
    }

    /// After a failed move: everything held goes on here.
    pub fn open(&self) {
        let mut state = self.lock();
        state.uploads_held = false;
        state.calls_held = false;
        drop(state);
        self.changed.notify_waiters();
    }

    /// After the move: everything held, and everything after, goes to `to`.
    pub fn moved(&self, to: Arc<TenantPool>) {
        self.lock().moved_to = Some(to);
        self.changed.notify_waiters();
    }

    pub fn moved_to(&self) -> Option<Arc<TenantPool>> {
        self.lock().moved_to.clone()
    }
}
