//! The connection gate: how many connections may wait to log in, overall and
//! per address (sshd's MaxStartups and PerSourceMaxStartups), how long they
//! may take (LoginGraceTime), and how many logged-in sessions there may be.
//!
//! Unlike sshd, a full gate does not turn newcomers away: a new connection
//! displaces the oldest waiting connection of the address that holds the
//! most. Silent connections then cost an attacker a steady stream of new
//! ones instead of locking everyone else out for the grace time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::watchdog::Liveness;

pub struct ConnectionGate {
    max_unauthenticated: usize,
    max_unauthenticated_per_ip: usize,
    max_sessions: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Connections not yet authenticated, by ticket id.
    waiting: HashMap<u64, Waiting>,
    /// How many of `waiting` each address holds (no zero entries).
    waiting_per_ip: HashMap<IpAddr, usize>,
    authenticated: usize,
    next_id: u64,
}

struct Waiting {
    ip: IpAddr,
    since: Instant,
    /// Kills the connection's stream when it is displaced.
    liveness: Arc<Liveness>,
}

/// Why a connection was turned away before the SSH version exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerSourceLimit,
}

impl Refusal {
    /// The line sent before closing, as sshd does ("Exceeded PerSourceMaxStartups").
    pub fn message(self) -> &'static str {
        match self {
            Refusal::PerSourceLimit => "Too many unauthenticated connections from your address; try again later",
        }
    }
}

/// A login past `max_sessions`.
#[derive(Debug)]
pub struct SessionsFull(pub usize);

impl ConnectionGate {
    pub fn new(max_unauthenticated: usize, max_unauthenticated_per_ip: usize, max_sessions: usize) -> Arc<Self> {
        Arc::new(Self {
            max_unauthenticated: max_unauthenticated.max(1),
            max_unauthenticated_per_ip: max_unauthenticated_per_ip.max(1),
            max_sessions,
            state: Mutex::new(GateState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        // The state stays consistent across a panic (no step can panic
        // half-way), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a new connection from `ip` in, as unauthenticated; displaces
    /// another waiting connection when the gate is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, liveness: Arc<Liveness>) -> Result<Ticket, Refusal> {
        let mut state = self.state();
        if state.waiting_per_ip.get(&ip).copied().unwrap_or(0) >= self.max_unauthenticated_per_ip {
            return Err(Refusal::PerSourceLimit);
        }
        if state.waiting.len() >= self.max_unauthenticated
            && let Some(victim) = state.eviction_victim()
            && let Some(gone) = state.remove_waiting(victim)
        {
            tracing::debug!(peer = %gone.ip, "unauthenticated connections full: closing the oldest from {}", gone.ip);
            metrics::counter!("wasftp_connections_displaced_total").increment(1);
            gone.liveness.kill();
        }
        let id = state.next_id;
        state.next_id += 1;
        state.waiting.insert(id, Waiting { ip, since: Instant::now(), liveness });
        *state.waiting_per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket { gate: self.clone(), id, stage: Mutex::new(Stage::Waiting) })
    }

    pub fn unauthenticated(&self) -> usize {
        self.state().waiting.len()
    }

    pub fn authenticated(&self) -> usize {
        self.state().authenticated
    }
}

impl GateState {
    /// The oldest waiting connection of the address that holds the most.
    fn eviction_victim(&self) -> Option<u64> {
        self.waiting
            .iter()
            .max_by_key(|(_, w)| (self.waiting_per_ip.get(&w.ip).copied().unwrap_or(0), std::cmp::Reverse(w.since)))
            .map(|(id, _)| *id)
    }

    fn remove_waiting(&mut self, id: u64) -> Option<Waiting> {
        let gone = self.waiting.remove(&id)?;
        if let Some(n) = self.waiting_per_ip.get_mut(&gone.ip) {
            *n -= 1;
            if *n == 0 {
                self.waiting_per_ip.remove(&gone.ip);
            }
        }
        Some(gone)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Authenticated,
    /// Displaced, or refused at login: holds no slot.
    Out,
}

/// One connection's place in the gate; frees it when dropped.
pub struct Ticket {
    gate: Arc<ConnectionGate>,
    id: u64,
    stage: Mutex<Stage>,
}

impl Ticket {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the connection from the waiting room to a session slot.
    pub fn authenticate(&self) -> Result<(), SessionsFull> {
        let mut stage = self.stage();
        if *stage == Stage::Authenticated {
            return Ok(());
        }
        let mut state = self.gate.state();
        state.remove_waiting(self.id);
        if state.authenticated >= self.gate.max_sessions {
            *stage = Stage::Out;
            return Err(SessionsFull(self.gate.max_sessions));
        }
        state.authenticated += 1;
        *stage = Stage::Authenticated;
        Ok(())
    }

    pub fn is_authenticated(&self) -> bool {
        *self.stage() == Stage::Authenticated
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let stage = *self.stage();
        let mut state = self.gate.state();
        match stage {
            Stage::Waiting => {
                // Absent when it was displaced; then nothing is held.
                state.remove_waiting(self.id);
            }
            Stage::Authenticated => state.authenticated -= 1,
            Stage::Out => {}
        }
    }
}

/// Closes the connection unless it has authenticated within `grace`.
pub async fn enforce_login_grace(ticket: Arc<Ticket>, liveness: Arc<Liveness>, grace: Duration, session: u64) {
    tokio::time::sleep(grace).await;
    if !ticket.is_authenticated() && !liveness.is_killed() {
        tracing::info!(session, "no login within {grace:?}; closing the connection");
        metrics::counter!("wasftp_login_grace_expired_total").increment(1);
        liveness.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_address_cap_refuses_and_frees() {
        let gate = ConnectionGate::new(10, 2, 5);
        let a = gate.admit(ip(2), Liveness::new()).unwrap();
        let _b = gate.admit(ip(2), Liveness::new()).unwrap();
        assert_eq!(gate.admit(ip(2), Liveness::new()).err(), Some(Refusal::PerSourceLimit));
        assert!(gate.admit(ip(3), Liveness::new()).is_ok(), "another address is not affected");
        drop(a);
        assert!(gate.admit(ip(2), Liveness::new()).is_ok(), "a closed connection frees its place");
    }

    #[test]
    fn full_gate_displaces_the_oldest_of_the_busiest_address() {
        let gate = ConnectionGate::new(3, 3, 5);
        let first_of_busy = Liveness::new();
        let _a = gate.admit(ip(2), first_of_busy.clone()).unwrap();
        let _b = gate.admit(ip(2), Liveness::new()).unwrap();
        let lone = Liveness::new();
        let _c = gate.admit(ip(3), lone.clone()).unwrap();
        let _d = gate.admit(ip(1), Liveness::new()).unwrap();
        assert!(first_of_busy.is_killed(), "the oldest connection of 127.0.0.2 is closed");
        assert!(!lone.is_killed(), "the single connection of 127.0.0.3 stays");
        assert_eq!(gate.unauthenticated(), 3);
    }

    #[test]
    fn only_authenticated_connections_count_as_sessions() {
        let gate = ConnectionGate::new(4, 4, 1);
        let a = gate.admit(ip(2), Liveness::new()).unwrap();
        let b = gate.admit(ip(2), Liveness::new()).unwrap();
        a.authenticate().unwrap();
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (1, 1));
        assert!(b.authenticate().is_err(), "the second login is past max_sessions");
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (0, 1));
        drop(b);
        drop(a);
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (0, 0));
    }
}
