//! The connection gate: how many connections may wait to log in, overall and
//! per address (sshd's MaxStartups and PerSourceMaxStartups), how long they
//! may take (LoginGraceTime), and how many logged-in sessions there may be:
//! on the server, per tenant and per user, so that one user or one tenant
//! cannot take every session slot.
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
use crate::config::Limits;

/// While logins keep being refused for the same share, at most one log line
/// this often (the metric counts every refusal).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

pub struct ConnectionGate {
    max_unauthenticated: usize,
    max_unauthenticated_per_ip: usize,
    max_sessions: usize,
    max_sessions_per_user: usize,
    max_sessions_per_tenant: usize,
    state: Mutex<GateState>,
    /// Refused logins last logged, per share.
    refusals: Mutex<HashMap<Share, Burst>>,
}

#[derive(Default)]
struct GateState {
    /// Connections not yet authenticated, by ticket id.
    waiting: HashMap<u64, Waiting>,
    /// How many of `waiting` each address holds (no zero entries).
    waiting_per_ip: HashMap<IpAddr, usize>,
    authenticated: usize,
    /// Logged-in connections per user and per tenant (no zero entries).
    per_user: HashMap<String, usize>,
    per_tenant: HashMap<String, usize>,
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

/// Whose session slots a login counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Share {
    Server,
    Tenant(String),
    User(String),
}

/// A login past one of the session caps: the first full share, server,
/// then tenant, then user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsFull {
    pub share: Share,
    pub max: usize,
}

impl SessionsFull {
    /// The `reason` label of `wasftp_connections_refused_total`: the config field.
    pub fn reason(&self) -> &'static str {
        match self.share {
            Share::Server => "max_sessions",
            Share::Tenant(_) => "max_sessions_per_tenant",
            Share::User(_) => "max_sessions_per_user",
        }
    }

    /// The SSH disconnect description the client shows. The tenant's name
    /// is not in it: users need not know how the server groups them.
    pub fn message(&self) -> String {
        match self.share {
            Share::Server => "too many connections".into(),
            Share::Tenant(_) => format!("too many connections for this tenant (at most {})", self.max),
            Share::User(_) => format!("too many connections for this user (at most {})", self.max),
        }
    }
}

impl std::fmt::Display for SessionsFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.share {
            Share::Server => write!(f, "{} sessions already open (max_sessions)", self.max),
            Share::Tenant(tenant) => {
                write!(f, "tenant {tenant} has {} sessions open (max_sessions_per_tenant)", self.max)
            }
            Share::User(user) => write!(f, "user {user} has {} sessions open (max_sessions_per_user)", self.max),
        }
    }
}

/// Refusals of one share since it was last logged.
struct Burst {
    logged: Instant,
    unlogged: u64,
}

impl ConnectionGate {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max_unauthenticated: limits.max_unauthenticated.max(1),
            max_unauthenticated_per_ip: limits.max_unauthenticated_per_ip.max(1),
            max_sessions: limits.max_sessions,
            max_sessions_per_user: limits.max_sessions_per_user,
            max_sessions_per_tenant: limits.max_sessions_per_tenant,
            state: Mutex::new(GateState::default()),
            refusals: Mutex::default(),
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

    /// Whether to log this refusal: `Some(n)` for the first of a burst on
    /// its share, then once per `REFUSAL_LOG_EVERY`, with the `n` refusals
    /// left unlogged since the previous line. A client retrying in a loop
    /// must not flood the log.
    pub fn log_refusal(&self, full: &SessionsFull) -> Option<u64> {
        let mut refusals = self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Shares are the configured users and tenants and the server: bounded.
        match refusals.get_mut(&full.share) {
            Some(burst) if burst.logged.elapsed() < REFUSAL_LOG_EVERY => {
                burst.unlogged += 1;
                None
            }
            Some(burst) => {
                let unlogged = std::mem::take(&mut burst.unlogged);
                burst.logged = Instant::now();
                Some(unlogged)
            }
            None => {
                refusals.insert(full.share.clone(), Burst { logged: Instant::now(), unlogged: 0 });
                Some(0)
            }
        }
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

fn count_in(counts: &mut HashMap<String, usize>, key: &str) {
    *counts.entry(key.to_string()).or_insert(0) += 1;
}

fn count_out(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Waiting,
    /// Holds a session slot of the server, its tenant and its user.
    Authenticated { user: String, tenant: String },
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

    /// Moves the connection from the waiting room to a session slot of
    /// the server, of `tenant` and of `user`; refused when any is full.
    pub fn authenticate(&self, user: &str, tenant: &str) -> Result<(), SessionsFull> {
        let mut stage = self.stage();
        if matches!(*stage, Stage::Authenticated { .. }) {
            return Ok(());
        }
        let gate = &self.gate;
        let mut state = gate.state();
        state.remove_waiting(self.id);
        let taken = |counts: &HashMap<String, usize>, key: &str| counts.get(key).copied().unwrap_or(0);
        let full = if state.authenticated >= gate.max_sessions {
            Some(SessionsFull { share: Share::Server, max: gate.max_sessions })
        } else if taken(&state.per_tenant, tenant) >= gate.max_sessions_per_tenant {
            Some(SessionsFull { share: Share::Tenant(tenant.into()), max: gate.max_sessions_per_tenant })
        } else if taken(&state.per_user, user) >= gate.max_sessions_per_user {
            Some(SessionsFull { share: Share::User(user.into()), max: gate.max_sessions_per_user })
        } else {
            None
        };
        if let Some(full) = full {
            *stage = Stage::Out;
            return Err(full);
        }
        state.authenticated += 1;
        count_in(&mut state.per_tenant, tenant);
        count_in(&mut state.per_user, user);
        *stage = Stage::Authenticated { user: user.into(), tenant: tenant.into() };
        Ok(())
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(*self.stage(), Stage::Authenticated { .. })
    }
}

/// Whatever ends the connection (client, error, idle or grace timeout,
/// shutdown) drops its ticket, and with it every slot it held.
impl Drop for Ticket {
    fn drop(&mut self) {
        let stage = std::mem::replace(&mut *self.stage(), Stage::Out);
        let mut state = self.gate.state();
        match stage {
            Stage::Waiting => {
                // Absent when it was displaced; then nothing is held.
                state.remove_waiting(self.id);
            }
            Stage::Authenticated { user, tenant } => {
                state.authenticated -= 1;
                count_out(&mut state.per_tenant, &tenant);
                count_out(&mut state.per_user, &user);
            }
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

    fn gate(max_unauthenticated: usize, max_unauthenticated_per_ip: usize, max_sessions: usize) -> Arc<ConnectionGate> {
        let limits = Limits { max_unauthenticated, max_unauthenticated_per_ip, max_sessions, ..Limits::default() };
        ConnectionGate::new(&limits)
    }

    /// A gate of 10 sessions, 3 per tenant and 2 per user.
    fn shared_gate() -> Arc<ConnectionGate> {
        ConnectionGate::new(&Limits {
            max_sessions: 10,
            max_sessions_per_tenant: 3,
            max_sessions_per_user: 2,
            ..Limits::default()
        })
    }

    /// A logged-in connection of `user` in `tenant`, or why it was refused.
    fn login(gate: &Arc<ConnectionGate>, user: &str, tenant: &str) -> Result<Ticket, SessionsFull> {
        let ticket = gate.admit(ip(2), Liveness::new()).unwrap();
        ticket.authenticate(user, tenant).map(|()| ticket)
    }

    /// Why a login of `user` in `tenant` is refused; fails the test if it is not.
    fn refused(gate: &Arc<ConnectionGate>, user: &str, tenant: &str) -> SessionsFull {
        match login(gate, user, tenant) {
            Ok(_) => panic!("{user} of {tenant} logged in"),
            Err(full) => full,
        }
    }

    #[test]
    fn per_address_cap_refuses_and_frees() {
        let gate = gate(10, 2, 5);
        let a = gate.admit(ip(2), Liveness::new()).unwrap();
        let _b = gate.admit(ip(2), Liveness::new()).unwrap();
        assert_eq!(gate.admit(ip(2), Liveness::new()).err(), Some(Refusal::PerSourceLimit));
        assert!(gate.admit(ip(3), Liveness::new()).is_ok(), "another address is not affected");
        drop(a);
        assert!(gate.admit(ip(2), Liveness::new()).is_ok(), "a closed connection frees its place");
    }

    #[test]
    fn full_gate_displaces_the_oldest_of_the_busiest_address() {
        let gate = gate(3, 3, 5);
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
        let gate = gate(4, 4, 1);
        let a = gate.admit(ip(2), Liveness::new()).unwrap();
        let b = gate.admit(ip(2), Liveness::new()).unwrap();
        a.authenticate("alice", "alice").unwrap();
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (1, 1));
        assert_eq!(
            b.authenticate("bob", "bob").unwrap_err(),
            SessionsFull { share: Share::Server, max: 1 },
            "the second login is past max_sessions"
        );
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (0, 1));
        drop(b);
        drop(a);
        assert_eq!((gate.unauthenticated(), gate.authenticated()), (0, 0));
    }

    #[test]
    fn a_user_gets_only_its_share_and_its_tenant_still_logs_in() {
        let gate = shared_gate();
        let first = login(&gate, "alice", "acme").unwrap();
        let _second = login(&gate, "alice", "acme").unwrap();
        let refused = refused(&gate, "alice", "acme");
        assert_eq!(refused, SessionsFull { share: Share::User("alice".into()), max: 2 });
        assert_eq!(refused.reason(), "max_sessions_per_user");
        assert!(refused.message().starts_with("too many connections for this user"), "{}", refused.message());
        assert_eq!(gate.authenticated(), 2, "the refused login holds nothing");
        let _colleague = login(&gate, "bob", "acme").expect("another user of the tenant logs in");
        drop(first);
        let _again = login(&gate, "alice", "acme").expect("a closed connection gives its user's slot back");
    }

    #[test]
    fn a_tenant_gets_only_its_share_and_other_tenants_still_log_in() {
        let gate = shared_gate();
        let _a = login(&gate, "alice", "acme").unwrap();
        let _b = login(&gate, "bob", "acme").unwrap();
        let carol = login(&gate, "carol", "acme").unwrap();
        let refused = refused(&gate, "dave", "acme");
        assert_eq!(refused, SessionsFull { share: Share::Tenant("acme".into()), max: 3 });
        assert_eq!(refused.reason(), "max_sessions_per_tenant");
        assert!(!refused.message().contains("acme"), "the tenant's name is not told: {}", refused.message());
        let _other = login(&gate, "erin", "globex").expect("another tenant logs in");
        drop(carol);
        let _dave = login(&gate, "dave", "acme").expect("a closed connection gives its tenant's slot back");
        assert_eq!(gate.authenticated(), 4, "acme: alice, bob, dave; globex: erin");
    }

    #[test]
    fn the_server_cap_is_checked_first_and_every_slot_comes_back() {
        let gate = ConnectionGate::new(&Limits { max_sessions: 2, max_sessions_per_user: 2, ..Limits::default() });
        let a = login(&gate, "alice", "acme").unwrap();
        let b = login(&gate, "alice", "acme").unwrap();
        assert_eq!(refused(&gate, "alice", "acme").share, Share::Server, "both are full: the server is said");
        drop((a, b));
        let state = gate.state();
        assert_eq!(state.authenticated, 0);
        assert!(state.per_user.is_empty() && state.per_tenant.is_empty(), "no zero entries are left behind");
    }

    #[test]
    fn refusals_are_logged_once_per_burst_and_share() {
        let gate = shared_gate();
        let alice = SessionsFull { share: Share::User("alice".into()), max: 2 };
        let bob = SessionsFull { share: Share::User("bob".into()), max: 2 };
        assert_eq!(gate.log_refusal(&alice), Some(0), "the first of a burst is logged");
        assert_eq!(gate.log_refusal(&alice), None);
        assert_eq!(gate.log_refusal(&alice), None);
        assert_eq!(gate.log_refusal(&bob), Some(0), "another share has its own burst");
        // A minute later the next refusal is logged with the ones kept quiet.
        let mut refusals = gate.refusals.lock().unwrap();
        let burst = refusals.get_mut(&alice.share).unwrap();
        burst.logged = burst.logged.checked_sub(REFUSAL_LOG_EVERY).expect("a monotonic clock over a minute old");
        drop(refusals);
        assert_eq!(gate.log_refusal(&alice), Some(2));
        assert_eq!(gate.log_refusal(&alice), None);
    }
}
