//! Files being written, one node per path, shared by every session of a
//! tenant.
//!
//! sshfs, rsync, git and most GUI clients stat a file right after creating
//! it, but a plugin shows a file only once its writer finishes. So from OPEN
//! to CLOSE a path being written has a node in its tenant's table: the file
//! as every session sees it meanwhile (its size so far, permissions and
//! times), the handles writing it (a hold each, with how far its CLOSE has
//! got) and the times and permissions set by path for after the commit.
//! Only the node is shared: the content stays invisible until a CLOSE
//! commits it.
//!
//! Requests on a path wait on its node (see [`NodeTable::settle`]): for a
//! CLOSE on its way, and for a commit under way, until it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::plugin::{FileInfo, FileKind, SetAttrs};

/// The nodes of one view of a plugin's namespace, by plugin path.
#[derive(Default)]
pub struct NodeTable {
    nodes: Mutex<HashMap<String, Arc<FileNode>>>,
    /// Numbers holds, so a CLOSE marks its own handle's hold only.
    next_hold: AtomicU64,
}

/// One path being written. Waiters subscribe to its state, which notifies
/// them when a hold comes, goes or moves on, or the path is unlinked (not
/// when a size or time changes).
pub struct FileNode {
    path: String,
    state: watch::Sender<NodeState>,
}

struct NodeState {
    /// What STAT and listings show while the path is written.
    info: FileInfo,
    /// One per open handle writing the path; the node goes with the last.
    holds: Vec<Hold>,
    /// Times and permissions set by path meanwhile (`sed -i` does chmod on
    /// its new file before closing it): applied after the commit.
    deferred: Option<SetAttrs>,
    /// The name was taken away (REMOVE while open, as unlink(2)): the
    /// handles still open commit nothing.
    unlinked: bool,
    /// A sync committed a handle's content: the plugin may hold the file
    /// though the node is still there.
    synced: bool,
}

struct Hold {
    id: u64,
    /// The SFTP session whose handle this is.
    session: u64,
    stage: Stage,
    /// Its CLOSE was read off the wire (kept apart from `stage`, which a
    /// sync moves to `Committing` and back, see [`NodeHold::end_sync`]).
    close_read: bool,
}

/// How far a hold's handle is towards its commit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    /// Its CLOSE was read off the wire.
    Closing,
    /// Its content is on its way into the plugin: the name can no longer
    /// be taken from it.
    Committing,
}

impl NodeState {
    fn has(&self, session: u64, stage: impl Fn(Stage) -> bool) -> bool {
        self.holds.iter().any(|hold| hold.session == session && stage(hold.stage))
    }
}

/// What [`NodeTable::unlink`] did.
pub enum Unlink {
    /// The name is gone; the handles still open commit nothing. `synced`:
    /// a sync committed content of it, which the plugin may hold.
    Removed { synced: bool },
    /// No handle is writing the path.
    Absent,
    /// Handles writing the path are committing: once they land, the file
    /// is the plugin's to remove (see [`Commits::wait`]). The name is gone
    /// for every other handle, as with `Removed`.
    Committing(Commits),
}

/// The commits under way on a path when it was unlinked.
pub struct Commits {
    node: Arc<FileNode>,
    holds: Vec<u64>,
}

impl Commits {
    /// Waits until those commits have ended (a sync's commit ends with its
    /// handle still open). Commits that begin later do not count (they
    /// cannot: the name is gone), so another session cannot keep a REMOVE
    /// waiting by relaying commits of the path; each commit's plugin calls
    /// are bounded by their own deadlines.
    pub async fn wait(&self) {
        let committing = |hold: &Hold| self.holds.contains(&hold.id) && hold.stage == Stage::Committing;
        self.node.wait_while(|state| state.holds.iter().any(committing)).await;
    }
}

impl NodeTable {
    /// A new handle writing `path` holds its node (made if need be) until
    /// the hold is released or dropped. `exclusive` (O_EXCL): refused while
    /// another handle writes the path, which the plugin cannot know of yet
    /// (lock files).
    pub fn hold(
        self: &Arc<Self>,
        path: &str,
        permissions: u32,
        size: u64,
        exclusive: bool,
        session: u64,
    ) -> Option<NodeHold> {
        let mut nodes = self.nodes.lock().expect("node table lock");
        if exclusive && nodes.contains_key(path) {
            return None;
        }
        let node = match nodes.get(path) {
            Some(node) if !node.state.borrow().unlinked => node.clone(),
            // None, or one unlinked while its commits land: a node of its own.
            _ => {
                let node = Arc::new(FileNode::new(path, permissions));
                nodes.insert(path.to_string(), node.clone());
                node
            }
        };
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        node.state.send_modify(|state| {
            state.holds.push(Hold { id, session, stage: Stage::Open, close_read: false });
            state.info.size = size;
        });
        Some(NodeHold { table: self.clone(), node, id, released: false, deferred: None })
    }

    fn node(&self, path: &str) -> Option<Arc<FileNode>> {
        self.nodes.lock().expect("node table lock").get(path).cloned()
    }

    /// Whether `path` is being written.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.lock().expect("node table lock").contains_key(path)
    }

    /// What a path being written looks like, if it is being written.
    pub fn info(&self, path: &str) -> Option<FileInfo> {
        self.node(path).map(|node| node.state.borrow().info.clone())
    }

    /// Waits until `session`'s handles writing `path`, if any, are closed
    /// and committed.
    ///
    /// FUSE sends a file's RELEASE (our CLOSE) in the background: sshfs may
    /// pass on the next RENAME, REMOVE or OPEN of that file before it. On
    /// `sftp-server` the file is already there; here its content is only
    /// committed at CLOSE, so such a request waits for the CLOSE that is on
    /// its way (a session's own handles only: another session's upload in
    /// progress is not waited for). That CLOSE may never come (the client
    /// keeps the handle open, or the request came first on purpose), and
    /// there is nothing yet to wait on: the wait is bounded by `on_its_way`.
    ///
    /// A CLOSE read off the wire is waited for until its commit ends, however
    /// long a busy backend takes: it has started (CLOSE has a lane of its
    /// own, see `sftp::SftpSession::dispatch`), and its plugin calls and the
    /// WRITEs before it are each bounded by their own deadlines.
    pub async fn settle(&self, path: &str, session: u64, on_its_way: Duration) {
        let Some(node) = self.node(path) else { return };
        let open = |state: &NodeState| !state.unlinked && state.has(session, |stage| stage == Stage::Open);
        let _ = tokio::time::timeout(on_its_way, node.wait_while(open)).await;
        node.wait_while(|state| !state.unlinked && state.has(session, |stage| stage != Stage::Open)).await;
    }

    /// REMOVE of a file being written, as unlink(2) of an open file: the
    /// name goes at once and the handles still open keep writing to nothing
    /// (their CLOSE commits nothing), unless one is already committing.
    pub fn unlink(&self, path: &str) -> Unlink {
        let mut nodes = self.nodes.lock().expect("node table lock");
        let Some(node) = nodes.get(path).cloned() else { return Unlink::Absent };
        // Decided and marked in one step: a `begin_commit` either comes
        // first (and is waited for) or finds the name gone.
        let mut committing = Vec::new();
        let mut synced = false;
        node.state.send_modify(|state| {
            committing = state.holds.iter().filter(|hold| hold.stage == Stage::Committing).map(|hold| hold.id).collect();
            state.unlinked = true;
            synced = state.synced;
        });
        if committing.is_empty() {
            nodes.remove(path);
            return Unlink::Removed { synced };
        }
        // The file is landing: it stays visible until it has (a new handle
        // of the path gets a node of its own, see `hold`).
        Unlink::Committing(Commits { node, holds: committing })
    }

    /// Keeps times and permissions set on a path being written for its
    /// commit; false when no handle is writing `path`.
    pub fn defer_attrs(&self, path: &str, set: SetAttrs) -> bool {
        // The table stays locked while the attributes are merged: the last
        // hold's `release` (which takes them) locks it first.
        let nodes = self.nodes.lock().expect("node table lock");
        let Some(node) = nodes.get(path) else { return false };
        let mut deferred = false;
        node.state.send_if_modified(|state| {
            if state.unlinked || state.holds.is_empty() {
                return false;
            }
            deferred = true;
            if let Some(permissions) = set.permissions {
                state.info.permissions = permissions;
            }
            if let Some(modified) = set.modified {
                state.info.modified = modified;
            }
            merge_attrs(&mut state.deferred, set);
            false
        });
        deferred
    }

    /// The paths being written directly inside `dir`, by name.
    pub fn children(&self, dir: &str) -> Vec<(String, FileInfo)> {
        let prefix = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        let nodes = self.nodes.lock().expect("node table lock");
        nodes
            .iter()
            .filter_map(|(path, node)| {
                let name = path.strip_prefix(&prefix)?;
                (!name.is_empty() && !name.contains('/')).then(|| (name.to_string(), node.state.borrow().info.clone()))
            })
            .collect()
    }
}

impl FileNode {
    fn new(path: &str, permissions: u32) -> Self {
        let now = unix_now();
        let info = FileInfo { kind: FileKind::File, size: 0, permissions, modified: now, accessed: now, version: None };
        let state = NodeState { info, holds: Vec::new(), deferred: None, unlinked: false, synced: false };
        Self { path: path.to_string(), state: watch::channel(state).0 }
    }

    /// Waits while `busy` holds of the node's state.
    async fn wait_while(&self, busy: impl Fn(&NodeState) -> bool) {
        // The node owns the sender: the wait ends only when `busy` does.
        let _ = self.state.subscribe().wait_for(|state| !busy(state)).await;
    }

    /// The size so far, as STAT from any session shows it: `exact` after a
    /// truncate, otherwise it only grows (later WRITEs may be announced).
    fn set_size(&self, size: u64, exact: bool) {
        self.state.send_if_modified(|state| {
            state.info.size = if exact { size } else { state.info.size.max(size) };
            state.info.modified = unix_now();
            false
        });
    }
}

/// One handle's hold on the node of the path it writes: keeps the node
/// (the placeholder every session sees) until the handle's content is
/// committed or given up (dropping it gives it up too), with the times and
/// permissions to apply once the content is committed.
pub struct NodeHold {
    table: Arc<NodeTable>,
    node: Arc<FileNode>,
    id: u64,
    released: bool,
    /// Set on the handle (FSETSTAT) or by path while it ran.
    deferred: Option<SetAttrs>,
}

/// What the SFTP reader loop tells a hold's node as it reads a request,
/// before the request runs (see [`NodeHold::signals`]).
#[derive(Clone)]
pub struct HoldSignals {
    node: Arc<FileNode>,
    id: u64,
}

impl HoldSignals {
    /// A WRITE or truncate was read off the wire: the size shows at once,
    /// so a STAT that arrives after it (and may run before it is applied)
    /// sees it, as on `sftp-server`. `exact` for a truncate.
    pub fn announce_size(&self, size: u64, exact: bool) {
        self.node.set_size(size, exact);
    }

    /// The handle's CLOSE was read off the wire: a request of its session
    /// on the path now waits for its commit (see [`NodeTable::settle`]).
    pub fn closing(&self) {
        self.node.state.send_if_modified(|state| {
            let Some(hold) = state.holds.iter_mut().find(|hold| hold.id == self.id) else { return false };
            hold.close_read = true;
            let open = hold.stage == Stage::Open;
            if open {
                hold.stage = Stage::Closing;
            }
            open
        });
    }
}

impl NodeHold {
    pub fn signals(&self) -> HoldSignals {
        HoldSignals { node: self.node.clone(), id: self.id }
    }

    /// The content is about to go into the plugin: from now on a REMOVE
    /// waits for the commit instead of taking the name. False when the file
    /// was removed while the handle was open: there is nothing to commit.
    pub fn begin_commit(&mut self) -> bool {
        if self.released {
            return false;
        }
        let id = self.id;
        let mut committing = false;
        self.node.state.send_if_modified(|state| {
            let Some(hold) = state.holds.iter_mut().find(|hold| hold.id == id).filter(|_| !state.unlinked) else {
                return false;
            };
            committing = true;
            let moved = hold.stage != Stage::Committing;
            hold.stage = Stage::Committing;
            moved
        });
        committing
    }

    /// A sync's commit (see [`NodeHold::begin_commit`]) has ended and the
    /// handle goes on writing: back to open (or closing, if its CLOSE was
    /// read meanwhile). A REMOVE that came during the commit took the name:
    /// the node goes once no other commit of it is landing (the file is the
    /// plugin's to remove), and the handle's later commit finds the name gone.
    pub fn end_sync(&mut self) {
        if self.released {
            return;
        }
        let mut nodes = self.table.nodes.lock().expect("node table lock");
        let mut landed = false;
        self.node.state.send_modify(|state| {
            if let Some(hold) = state.holds.iter_mut().find(|hold| hold.id == self.id) {
                hold.stage = if hold.close_read { Stage::Closing } else { Stage::Open };
            }
            state.synced = true;
            landed = state.unlinked && !state.holds.iter().any(|hold| hold.stage == Stage::Committing);
        });
        if landed && nodes.get(&self.node.path).is_some_and(|node| Arc::ptr_eq(node, &self.node)) {
            nodes.remove(&self.node.path);
        }
    }

    /// Whether the name was taken from the handle (REMOVE while open).
    pub fn is_unlinked(&self) -> bool {
        self.released || self.node.state.borrow().unlinked
    }

    /// The size so far (see [`HoldSignals::announce_size`]).
    pub fn set_size(&self, size: u64, exact: bool) {
        if !self.released {
            self.node.set_size(size, exact);
        }
    }

    /// Keeps times and permissions for after the commit: the content they
    /// describe is not visible yet.
    pub fn defer_attrs(&mut self, set: SetAttrs) {
        merge_attrs(&mut self.deferred, set);
    }

    /// Times and permissions to apply now that the content is committed.
    pub fn take_deferred_attrs(&mut self) -> Option<SetAttrs> {
        self.deferred.take()
    }

    /// Lets go of the node once the content is committed or given up,
    /// before the client hears of it: a request that follows sees the
    /// plugin's answer, not the node. What was set by path meanwhile joins
    /// the deferred attributes.
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let mut nodes = self.table.nodes.lock().expect("node table lock");
        let mut by_path = None;
        let mut last = false;
        self.node.state.send_modify(|state| {
            state.holds.retain(|hold| hold.id != self.id);
            last = state.holds.is_empty();
            if !state.unlinked {
                by_path = state.deferred.take();
            }
        });
        if last && nodes.get(&self.node.path).is_some_and(|node| Arc::ptr_eq(node, &self.node)) {
            nodes.remove(&self.node.path);
        }
        drop(nodes);
        if let Some(set) = by_path {
            merge_attrs(&mut self.deferred, set);
        }
    }
}

impl Drop for NodeHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// Adds times and permissions in `set` to `deferred` (later values win;
/// a size is never deferred).
fn merge_attrs(deferred: &mut Option<SetAttrs>, set: SetAttrs) {
    let mut merged = deferred.take().unwrap_or(SetAttrs { size: None, permissions: None, accessed: None, modified: None });
    merged.permissions = set.permissions.or(merged.permissions);
    merged.accessed = set.accessed.or(merged.accessed);
    merged.modified = set.modified.or(merged.modified);
    let empty = merged.permissions.is_none() && merged.accessed.is_none() && merged.modified.is_none();
    *deferred = (!empty).then_some(merged);
}

/// One node table per view of a plugin's namespace, shared by the sessions
/// that see the same files and dropped with the last of them. A view is a
/// tenant of a plugin with the session attributes it passes (a plugin may
/// map the same path to different objects per attribute, e.g. a prefix).
#[derive(Default)]
pub struct NodeTables {
    tables: Mutex<HashMap<(String, String, Vec<(String, String)>), Weak<NodeTable>>>,
}

impl NodeTables {
    pub fn for_view(&self, plugin: &str, tenant: &str, attributes: &[(String, String)]) -> Arc<NodeTable> {
        let mut tables = self.tables.lock().expect("node tables lock");
        tables.retain(|_, table| table.strong_count() > 0);
        let key = (plugin.to_string(), tenant.to_string(), attributes.to_vec());
        if let Some(table) = tables.get(&key).and_then(Weak::upgrade) {
            return table;
        }
        let table = Arc::new(NodeTable::default());
        tables.insert(key, Arc::downgrade(&table));
        table
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_node_lives_while_any_handle_holds_it() {
        let table = Arc::new(NodeTable::default());
        let first = table.hold("/d/a", 0o644, 0, false, 1).unwrap();
        assert!(table.hold("/d/a", 0o644, 0, true, 1).is_none(), "O_EXCL sees the file being written");
        let second = table.hold("/d/a", 0o644, 0, false, 1).unwrap();
        first.set_size(7, false);
        assert_eq!(table.info("/d/a").unwrap().size, 7);
        drop(first);
        assert!(table.info("/d/a").is_some());
        drop(second);
        assert!(table.info("/d/a").is_none());
    }

    #[test]
    fn an_unlinked_hold_knows_it_and_a_new_node_is_not_confused() {
        let table = Arc::new(NodeTable::default());
        let mut old = table.hold("/f", 0o644, 0, false, 1).unwrap();
        assert!(matches!(table.unlink("/f"), Unlink::Removed { .. }));
        assert!(table.info("/f").is_none(), "the name goes at once");
        assert!(matches!(table.unlink("/f"), Unlink::Absent));
        let mut new = table.hold("/f", 0o644, 3, false, 1).unwrap();
        assert!(!old.begin_commit(), "the old handle has nothing to commit");
        old.set_size(99, true);
        assert_eq!(table.info("/f").unwrap().size, 3, "the old handle does not touch the new node");
        old.release();
        assert!(table.info("/f").is_some(), "nor end it");
        assert!(new.begin_commit());
        new.release();
        assert!(table.info("/f").is_none());
    }

    #[tokio::test]
    async fn a_committing_handle_keeps_its_name_until_it_lands() {
        let table = Arc::new(NodeTable::default());
        let mut hold = table.hold("/f", 0o644, 0, false, 1).unwrap();
        assert!(hold.begin_commit());
        let Unlink::Committing(commits) = table.unlink("/f") else { panic!("the content is on its way") };
        assert!(table.info("/f").is_some());
        let waiter = tokio::spawn(async move { commits.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the commit runs");
        hold.release();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert!(matches!(table.unlink("/f"), Unlink::Absent));
    }

    /// A sync commits with the handle still open: a REMOVE that found it
    /// committing goes ahead once the sync's commit ends, not at CLOSE, and
    /// the handle's later commit finds the name gone.
    #[tokio::test]
    async fn a_remove_waits_for_a_sync_not_for_the_close_after_it() {
        let table = Arc::new(NodeTable::default());
        let mut hold = table.hold("/f", 0o644, 0, false, 1).unwrap();
        hold.signals().closing();
        assert!(hold.begin_commit());
        let Unlink::Committing(commits) = table.unlink("/f") else { panic!("the sync is committing") };
        let waiter = tokio::spawn(async move { commits.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the sync commits");
        hold.end_sync();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken by the end of the sync").unwrap();
        assert!(table.info("/f").is_none(), "the name is gone once the sync landed");
        assert!(hold.is_unlinked());
        assert!(!hold.begin_commit(), "the CLOSE after it commits nothing");

        // Not removed: back to closing (its CLOSE was read during the sync),
        // so its session's requests on the path wait for that CLOSE.
        let table = Arc::new(NodeTable::default());
        let mut hold = table.hold("/g", 0o644, 0, false, 1).unwrap();
        assert!(hold.begin_commit());
        hold.signals().closing();
        hold.end_sync();
        let settled = tokio::time::timeout(Duration::from_millis(300), table.settle("/g", 1, Duration::from_millis(10)));
        assert!(settled.await.is_err(), "a CLOSE read during the sync is still waited for");
        assert!(table.info("/g").is_some());
    }

    #[test]
    fn children_are_direct_only() {
        let table = Arc::new(NodeTable::default());
        let _a = table.hold("/d/a", 0o644, 0, false, 1);
        let _b = table.hold("/d/e/b", 0o644, 0, false, 1);
        let _c = table.hold("/c", 0o644, 0, false, 1);
        let names: Vec<_> = table.children("/d").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a"]);
        let mut root: Vec<_> = table.children("/").into_iter().map(|(n, _)| n).collect();
        root.sort();
        assert_eq!(root, ["c"]);
    }

    #[test]
    fn tenants_get_their_own_table() {
        let tables = NodeTables::default();
        let alice = tables.for_view("memory", "alice", &[]);
        let _hold = alice.hold("/x", 0o644, 0, false, 1);
        assert!(tables.for_view("memory", "alice", &[]).info("/x").is_some());
        assert!(tables.for_view("memory", "bob", &[]).info("/x").is_none());
        let prefixed = [("prefix".to_string(), "p/".to_string())];
        assert!(tables.for_view("memory", "alice", &prefixed).info("/x").is_none());
    }

    /// A CLOSE marks only its own handle: the close of a handle whose file
    /// was removed does not make a later handle of the path look closing
    /// (a RENAME would wait for a commit that never comes); and with two
    /// handles of a path open, the one not closing is still waited for.
    #[tokio::test]
    async fn a_close_marks_its_own_handle_only() {
        let table = Arc::new(NodeTable::default());
        let removed = table.hold("/p", 0o644, 0, false, 1).unwrap();
        assert!(matches!(table.unlink("/p"), Unlink::Removed { .. }));
        let _reopened = table.hold("/p", 0o644, 0, false, 1).unwrap();
        removed.signals().closing();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), table.settle("/p", 1, Duration::from_millis(50)))
            .await
            .expect("no wait for a commit that is not coming");
        assert!(started.elapsed() < Duration::from_secs(5));

        let table = Arc::new(NodeTable::default());
        let closing = table.hold("/q", 0o644, 0, false, 1).unwrap();
        let _open = table.hold("/q", 0o644, 0, false, 1).unwrap();
        closing.signals().closing();
        let committed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(closing);
        });
        let started = Instant::now();
        table.settle("/q", 1, Duration::from_millis(300)).await;
        committed.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300), "the handle still open was waited for too");
    }

    /// A CLOSE read off the wire is waited for until its commit ends, past
    /// the wait for a CLOSE on its way; another session's is not.
    #[tokio::test]
    async fn a_closing_handle_is_waited_for_until_its_commit_ends() {
        let table = Arc::new(NodeTable::default());
        let mut hold = table.hold("/c", 0o644, 0, false, 1).unwrap();
        hold.signals().closing();
        let other = table.hold("/c", 0o644, 0, false, 2).unwrap();
        other.signals().closing();
        let commit = tokio::spawn(async move {
            assert!(hold.begin_commit());
            tokio::time::sleep(Duration::from_millis(400)).await;
            hold.release();
        });
        let started = Instant::now();
        table.settle("/c", 1, Duration::from_millis(10)).await;
        assert!(started.elapsed() >= Duration::from_millis(400), "returned before the commit ended");
        commit.await.unwrap();
        assert!(table.info("/c").is_some(), "the other session's handle still holds the node");
    }

    /// A REMOVE that finds a commit under way waits for it with no timer.
    /// Another session of the tenant that keeps one commit of the path
    /// under way at every moment (a relay of handles) keeps it waiting for
    /// ever: the wait should end once the commits under way when it began
    /// have ended.
    #[tokio::test]
    async fn a_relay_of_commits_does_not_keep_a_remove_waiting() {
        let table = Arc::new(NodeTable::default());
        let mut running = table.hold("/f", 0o644, 0, false, 2).unwrap();
        assert!(running.begin_commit());
        let Unlink::Committing(commits) = table.unlink("/f") else { panic!("a commit is under way") };
        let waiter = tokio::spawn(async move { commits.wait().await });
        for _ in 0..20 {
            let mut next = table.hold("/f", 0o644, 0, false, 2).unwrap();
            assert!(next.begin_commit());
            running.release();
            tokio::time::sleep(Duration::from_millis(5)).await;
            running = next;
        }
        assert!(waiter.is_finished(), "the REMOVE still waits, 20 commits after the one it found");
    }

    /// `unlink` checks `committing()` and sets `unlinked` in two steps;
    /// `begin_commit` may run between them: then REMOVE answers Removed
    /// and the content still commits.
    #[test]
    fn unlink_and_begin_commit_never_both_win() {
        let mut both = 0;
        for _ in 0..20_000 {
            let table = Arc::new(NodeTable::default());
            let mut hold = table.hold("/f", 0o644, 0, false, 1).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (t2, b2) = (table.clone(), barrier.clone());
            let remover = std::thread::spawn(move || {
                b2.wait();
                matches!(t2.unlink("/f"), Unlink::Removed { .. })
            });
            barrier.wait();
            let committing = hold.begin_commit();
            let removed = remover.join().unwrap();
            if removed && committing {
                both += 1;
            }
        }
        assert_eq!(both, 0, "REMOVE answered Removed and the commit went ahead anyway");
    }

    /// `defer_attrs` looks the node up, lets go of the table, then merges;
    /// the last hold's `release` may take the deferred attributes in
    /// between: SETSTAT is answered OK and its times are never applied.
    #[test]
    fn attrs_deferred_by_path_are_never_lost() {
        const ROUNDS: usize = 300_000;
        let tables: Vec<Arc<NodeTable>> = (0..ROUNDS).map(|_| Arc::new(NodeTable::default())).collect();
        let mut holds: Vec<NodeHold> = tables.iter().map(|t| t.hold("/f", 0o644, 0, false, 1).unwrap()).collect();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (t2, b2) = (tables.clone(), barrier.clone());
        let setter = std::thread::spawn(move || {
            let mut said = Vec::with_capacity(ROUNDS);
            for table in &t2 {
                b2.wait();
                let set = SetAttrs { size: None, permissions: None, accessed: None, modified: Some(7) };
                said.push(table.defer_attrs("/f", set));
            }
            said
        });
        for hold in holds.iter_mut() {
            barrier.wait();
            hold.release();
        }
        let said = setter.join().unwrap();
        let mut lost = 0;
        for (hold, deferred) in holds.iter_mut().zip(said) {
            if deferred && hold.take_deferred_attrs().is_none() {
                lost += 1;
            }
        }
        assert_eq!(lost, 0, "SETSTAT said deferred, and the commit never got the attributes");
    }
}
