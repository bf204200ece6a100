//! Open file and directory handles of one SFTP session, and the order in
//! which requests on one handle run and are answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What an SFTP handle names: an open file (its requests go to the file
/// layer) or a directory being listed.
pub enum HandleKind {
    File(crate::vfs::Handle),
    Dir(tokio::sync::Mutex<crate::vfs::Listing>),
}

impl HandleKind {
    pub fn file(&self) -> Option<&crate::vfs::Handle> {
        match self {
            HandleKind::File(file) => Some(file),
            HandleKind::Dir(_) => None,
        }
    }
}

pub struct HandleEntry {
    pub kind: HandleKind,
    /// Path in the plugin namespace.
    pub path: String,
    /// Requests on this handle read off the wire and not yet finished; CLOSE
    /// waits for them so it sees every WRITE sent before it.
    inflight: watch::Sender<usize>,
    /// Requests that change or depend on the handle's state (WRITE, FSETSTAT,
    /// copy-data into it, READDIR, anything on a read-write handle) run one at a time in
    /// arrival order, as `sftp-server` runs them.
    run_order: Arc<Sequence>,
    /// READs on a read-only handle run at once but are answered in arrival
    /// order: OpenSSH's client before 9.4 truncates a download at the first
    /// reply that comes out of order.
    reply_order: Arc<Sequence>,
}

/// Numbers requests in arrival order (taken in the reader loop) and lets
/// each wait until every earlier one is done.
#[derive(Default)]
pub struct Sequence {
    next: AtomicU64,
    turn: watch::Sender<u64>,
    /// Places dropped before their turn (their task ended early): the turn
    /// passes over them when it gets there, never moving back.
    done_early: Mutex<BTreeSet<u64>>,
}

impl Sequence {
    pub fn place(self: &Arc<Self>) -> Place {
        Place { sequence: self.clone(), number: self.next.fetch_add(1, Ordering::SeqCst) }
    }

    fn done(&self, number: u64) {
        let mut early = self.done_early.lock().expect("sequence lock");
        let turn = *self.turn.borrow();
        if number != turn {
            early.insert(number);
            return;
        }
        let mut next = number + 1;
        while early.remove(&next) {
            next += 1;
        }
        self.turn.send_replace(next);
    }
}

/// One request's place in a [`Sequence`]; the next one's turn comes when it
/// is dropped (also when the request's task ends early).
pub struct Place {
    sequence: Arc<Sequence>,
    number: u64,
}

impl Place {
    pub async fn wait_turn(&self) {
        let mut turn = self.sequence.turn.subscribe();
        let _ = turn.wait_for(|t| *t == self.number).await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.sequence.done(self.number);
    }
}

/// How a request on a handle is sequenced with the others on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequencing {
    /// Runs and is answered whenever it is ready (FSTAT of a read handle).
    Free,
    /// Runs after every earlier ordered request on the handle is done.
    Run,
    /// Runs at once; its reply waits for earlier replies of its kind.
    Reply,
}

/// Counts one request on a handle until dropped, and holds its place in the
/// handle's order.
pub struct InflightTicket {
    entry: Arc<HandleEntry>,
    run: Option<Place>,
    reply: Option<Place>,
}

impl InflightTicket {
    /// The handle this request was counted on when it was read off the wire:
    /// it stays usable after a later CLOSE removed the name from the table.
    pub fn entry(&self) -> &Arc<HandleEntry> {
        &self.entry
    }

    /// Before running: waits until every earlier ordered request is done.
    pub async fn wait_run_turn(&self) {
        if let Some(place) = &self.run {
            place.wait_turn().await;
        }
    }

    /// Before answering: waits until every earlier READ has been answered.
    pub async fn wait_reply_turn(&self) {
        if let Some(place) = &self.reply {
            place.wait_turn().await;
        }
    }
}

impl Drop for InflightTicket {
    fn drop(&mut self) {
        // Places first: a CLOSE woken by the count must find the order settled.
        self.run.take();
        self.reply.take();
        self.entry.inflight.send_modify(|n| *n -= 1);
    }
}

impl HandleEntry {
    /// Taken in the reader loop, in arrival order.
    pub fn ticket(self: &Arc<Self>, sequencing: Sequencing) -> InflightTicket {
        self.inflight.send_modify(|n| *n += 1);
        let (run, reply) = match sequencing {
            Sequencing::Free => (None, None),
            Sequencing::Run => (Some(self.run_order.place()), None),
            Sequencing::Reply => (None, Some(self.reply_order.place())),
        };
        InflightTicket { entry: self.clone(), run, reply }
    }

    /// Waits until no other request on this handle is in flight.
    pub async fn quiesce(&self) {
        let mut rx = self.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[derive(Default)]
pub struct HandleTable {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next: u64,
    open: HashMap<String, Arc<HandleEntry>>,
}

impl HandleTable {
    /// Adds a handle, or gives it back when `max` are already open.
    pub fn insert(&self, kind: HandleKind, path: String, max: usize) -> Result<String, HandleKind> {
        let mut inner = self.inner.lock().expect("handle table lock");
        if inner.open.len() >= max {
            return Err(kind);
        }
        inner.next += 1;
        let name = format!("{:x}", inner.next);
        let entry = Arc::new(HandleEntry {
            kind,
            path,
            inflight: watch::channel(0).0,
            run_order: Default::default(),
            reply_order: Default::default(),
        });
        inner.open.insert(name.clone(), entry);
        Ok(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.get(name).cloned()
    }

    pub fn remove(&self, name: &str) -> Option<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.remove(name)
    }

    /// Takes every handle (session end or shutdown).
    pub fn drain(&self) -> Vec<Arc<HandleEntry>> {
        self.inner.lock().expect("handle table lock").open.drain().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_place_dropped_early_does_not_hold_the_turn_back() {
        let sequence = Arc::new(Sequence::default());
        let first = sequence.place();
        let second = sequence.place();
        let third = sequence.place();
        drop(second); // its task ended before its turn
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), third.wait_turn())
            .await
            .expect("the third place gets its turn");
        drop(third);
        let fourth = sequence.place();
        tokio::time::timeout(std::time::Duration::from_secs(1), fourth.wait_turn())
            .await
            .expect("and the turn moves on");
    }
}
