//! Files being uploaded, visible from OPEN to every session of the tenant.
//!
//! sshfs, rsync, git and most GUI clients stat a file right after creating
//! it. A plugin only shows a file once its writer finishes, so the host keeps
//! one table per tenant of the uploads in progress and answers for them while
//! the plugin does not know the path yet. Only the placeholder is shared: the
//! content stays invisible until CLOSE commits it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use crate::plugin::{FileInfo, FileKind, SetAttrs};

/// The uploads in progress of one tenant of one plugin, by plugin path.
#[derive(Default)]
pub struct PendingUploads {
    files: Mutex<HashMap<String, Placeholder>>,
    /// Bumped whenever an upload ends or its CLOSE comes, for those waiting
    /// on one.
    ended: watch::Sender<u64>,
    /// Numbers placeholders, so an upload can tell its own from a new one
    /// at the same path after its file was removed.
    next_id: std::sync::atomic::AtomicU64,
}

struct Placeholder {
    id: u64,
    info: FileInfo,
    /// Open handles writing this path, by the session holding each; the
    /// entry goes with the last.
    holders: Vec<u64>,
    /// Times and permissions set by path while the upload runs (sed -i does
    /// chmod on its new file before closing it): applied after the commit.
    deferred: Option<SetAttrs>,
    /// Holders past the point of no return: their content is on its way
    /// into the plugin, so the name can no longer be taken from them.
    committing: usize,
    /// Sessions whose CLOSE of a handle here was read off the wire, one
    /// entry a handle, until its upload ends.
    closing: Vec<u64>,
}

/// What [`PendingUploads::unlink`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlink {
    /// The name is gone; the uploads still open commit nothing.
    Removed,
    /// No upload of the path is in progress.
    Absent,
    /// An upload of the path is committing: once it lands, the file is the
    /// plugin's to remove (see [`PendingUploads::wait_commits`]).
    Committing,
}

impl PendingUploads {
    /// Registers an upload of `path`; the placeholder lives as long as the
    /// guard. `exclusive` (O_EXCL): refused while another upload of the path
    /// is in progress, which the plugin cannot know of yet (lock files).
    pub fn register(
        self: &Arc<Self>,
        path: &str,
        permissions: u32,
        size: u64,
        exclusive: bool,
        session: u64,
    ) -> Option<PendingGuard> {
        let now = unix_now();
        let mut files = self.files.lock().expect("pending table lock");
        if exclusive && files.contains_key(path) {
            return None;
        }
        let next_id = &self.next_id;
        let entry = files.entry(path.to_string()).or_insert_with(|| Placeholder {
            id: next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            info: FileInfo { kind: FileKind::File, size, permissions, modified: now, accessed: now, version: None },
            holders: Vec::new(),
            deferred: None,
            committing: 0,
            closing: Vec::new(),
        });
        entry.holders.push(session);
        entry.info.size = size;
        let id = entry.id;
        Some(PendingGuard {
            table: self.clone(),
            path: path.to_string(),
            id,
            session,
            released: false,
            committing: false,
            deferred: None,
        })
    }

    /// Waits (at most `limit`) until `session` holds no upload of `path`.
    ///
    /// FUSE sends a file's RELEASE (our CLOSE) in the background: sshfs may
    /// pass on the next RENAME, REMOVE or OPEN of that file before it. On
    /// `sftp-server` the file is already there; here its content is only
    /// committed at CLOSE, so such a request waits for the CLOSE that is on
    /// its way (a session's own uploads only: another session's upload in
    /// progress is not waited for).
    ///
    /// A CLOSE already read off the wire is waited for up to `commit_limit`:
    /// its commit is under way, and a busy backend may take longer than a
    /// CLOSE takes to come.
    pub async fn settle(&self, path: &str, session: u64, limit: std::time::Duration, commit_limit: std::time::Duration) {
        let count = |of: &[u64]| of.iter().filter(|s| **s == session).count();
        let on_its_way = |p: &Placeholder| count(&p.holders) > count(&p.closing);
        self.wait_while(path, limit, on_its_way).await;
        let committing = |p: &Placeholder| count(&p.closing) > 0;
        self.wait_while(path, commit_limit, committing).await;
    }

    /// Marks a CLOSE of `session`'s upload `id` (its placeholder, see
    /// [`PendingGuard::id`]) of `path` as read off the wire.
    pub fn closing(&self, path: &str, id: u64, session: u64) {
        let mut files = self.files.lock().expect("pending table lock");
        let Some(p) = files.get_mut(path).filter(|p| p.id == id && p.holders.contains(&session)) else { return };
        p.closing.push(session);
        drop(files);
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits (at most `limit`) while the placeholder of `path`, if any,
    /// satisfies `busy`; woken whenever an upload ends.
    async fn wait_while(&self, path: &str, limit: std::time::Duration, busy: impl Fn(&Placeholder) -> bool) {
        let mut ended = self.ended.subscribe();
        let still = || self.files.lock().expect("pending table lock").get(path).is_some_and(&busy);
        let _ = tokio::time::timeout(limit, async {
            while still() {
                if ended.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Whether `path` is being uploaded.
    pub fn contains(&self, path: &str) -> bool {
        self.files.lock().expect("pending table lock").contains_key(path)
    }

    /// What a path being uploaded looks like, if it is being uploaded.
    pub fn info(&self, path: &str) -> Option<FileInfo> {
        self.files.lock().expect("pending table lock").get(path).map(|p| p.info.clone())
    }

    /// REMOVE of a file being uploaded, as unlink(2) of an open file: the
    /// name goes at once and the uploads still open keep writing to nothing
    /// (their CLOSE commits nothing), unless one is already committing.
    pub fn unlink(&self, path: &str) -> Unlink {
        let mut files = self.files.lock().expect("pending table lock");
        match files.get(path) {
            None => return Unlink::Absent,
            Some(p) if p.committing > 0 => return Unlink::Committing,
            Some(_) => files.remove(path),
        };
        drop(files);
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
        Unlink::Removed
    }

    /// Waits (at most `limit`) until no upload of `path` is committing.
    pub async fn wait_commits(&self, path: &str, limit: std::time::Duration) {
        self.wait_while(path, limit, |p| p.committing > 0).await;
    }

    /// A WRITE or truncate was read off the wire for an upload of `path`:
    /// the size shows at once, so a STAT that arrives after it (and may run
    /// before it is applied) sees it, as on `sftp-server`. `exact` for a
    /// truncate; a WRITE only grows the size.
    pub fn announce_size(&self, path: &str, size: u64, exact: bool) {
        let mut files = self.files.lock().expect("pending table lock");
        if let Some(p) = files.get_mut(path) {
            p.info.size = if exact { size } else { p.info.size.max(size) };
            p.info.modified = unix_now();
        }
    }

    /// Keeps times and permissions set on a path being uploaded for its
    /// commit; false when no upload of `path` is in progress.
    pub fn defer_attrs(&self, path: &str, set: SetAttrs) -> bool {
        let mut files = self.files.lock().expect("pending table lock");
        let Some(p) = files.get_mut(path) else { return false };
        if let Some(permissions) = set.permissions {
            p.info.permissions = permissions;
        }
        if let Some(modified) = set.modified {
            p.info.modified = modified;
        }
        merge_attrs(&mut p.deferred, set);
        true
    }

    /// The uploads in progress directly inside `dir`, by name.
    pub fn children(&self, dir: &str) -> Vec<(String, FileInfo)> {
        let prefix = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        let files = self.files.lock().expect("pending table lock");
        files
            .iter()
            .filter_map(|(path, p)| {
                let name = path.strip_prefix(&prefix)?;
                (!name.is_empty() && !name.contains('/')).then(|| (name.to_string(), p.info.clone()))
            })
            .collect()
    }
}

/// One open upload's part in the table: keeps its placeholder until the
/// upload ends (dropping it ends it too), and the times and permissions to
/// apply once the content is committed.
pub struct PendingGuard {
    table: Arc<PendingUploads>,
    path: String,
    /// The placeholder this upload registered.
    id: u64,
    session: u64,
    released: bool,
    /// Counted in its placeholder's `committing`.
    committing: bool,
    /// Set on the upload's handle (FSETSTAT) or by path while it ran.
    deferred: Option<SetAttrs>,
}

impl PendingGuard {
    /// The placeholder this upload registered: a later upload of the same
    /// path after a removal has another.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The upload is about to hand its content to the plugin: from now on
    /// a REMOVE waits for the commit instead of taking the name. False when
    /// the file was removed while the upload ran: there is nothing to commit.
    pub fn begin_commit(&mut self) -> bool {
        if self.released {
            return false;
        }
        let mut files = self.table.files.lock().expect("pending table lock");
        let Some(p) = files.get_mut(&self.path).filter(|p| p.id == self.id) else { return false };
        if !self.committing {
            p.committing += 1;
            self.committing = true;
        }
        true
    }

    /// The size so far, as STAT from any session shows it: `exact` after a
    /// truncate, otherwise it only grows (later WRITEs may be announced).
    pub fn set_size(&self, size: u64, exact: bool) {
        if self.released {
            return;
        }
        let mut files = self.table.files.lock().expect("pending table lock");
        if let Some(p) = files.get_mut(&self.path).filter(|p| p.id == self.id) {
            p.info.size = if exact { size } else { p.info.size.max(size) };
            p.info.modified = unix_now();
        }
    }
}

impl PendingGuard {
    /// Keeps times and permissions for after the commit: the content they
    /// describe is not visible yet.
    pub fn defer_attrs(&mut self, set: SetAttrs) {
        merge_attrs(&mut self.deferred, set);
    }

    /// Times and permissions to apply now that the content is committed.
    pub fn take_deferred_attrs(&mut self) -> Option<SetAttrs> {
        self.deferred.take()
    }

    /// Ends the placeholder once the upload is committed or given up, before
    /// the client hears of it: a request that follows sees the plugin's
    /// answer, not the placeholder. What was set by path meanwhile joins the
    /// deferred attributes.
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let mut files = self.table.files.lock().expect("pending table lock");
        let Some(p) = files.get_mut(&self.path).filter(|p| p.id == self.id) else { return };
        if let Some(by_path) = p.deferred.take() {
            merge_attrs(&mut self.deferred, by_path);
        }
        if let Some(at) = p.holders.iter().position(|s| *s == self.session) {
            p.holders.swap_remove(at);
        }
        if let Some(at) = p.closing.iter().position(|s| *s == self.session) {
            p.closing.swap_remove(at);
        }
        if self.committing {
            p.committing -= 1;
        }
        if p.holders.is_empty() {
            files.remove(&self.path);
        }
        drop(files);
        self.table.ended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Adds times and permissions in `set` to `deferred` (later values win;
/// a size is never deferred).
pub fn merge_attrs(deferred: &mut Option<SetAttrs>, set: SetAttrs) {
    let mut merged = deferred.take().unwrap_or(SetAttrs { size: None, permissions: None, accessed: None, modified: None });
    merged.permissions = set.permissions.or(merged.permissions);
    merged.accessed = set.accessed.or(merged.accessed);
    merged.modified = set.modified.or(merged.modified);
    let empty = merged.permissions.is_none() && merged.accessed.is_none() && merged.modified.is_none();
    *deferred = (!empty).then_some(merged);
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// One pending-upload table per view of a plugin's namespace, shared by the
/// sessions that see the same files and dropped with the last of them. A view
/// is a tenant of a plugin with the session attributes it passes (a plugin
/// may map the same path to different objects per attribute, e.g. a prefix).
#[derive(Default)]
pub struct TenantTables {
    tables: Mutex<HashMap<(String, String, Vec<(String, String)>), Weak<PendingUploads>>>,
}

impl TenantTables {
    pub fn for_view(&self, plugin: &str, tenant: &str, attributes: &[(String, String)]) -> Arc<PendingUploads> {
        let mut tables = self.tables.lock().expect("tenant tables lock");
        tables.retain(|_, table| table.strong_count() > 0);
        let key = (plugin.to_string(), tenant.to_string(), attributes.to_vec());
        if let Some(table) = tables.get(&key).and_then(Weak::upgrade) {
            return table;
        }
        let table = Arc::new(PendingUploads::default());
        tables.insert(key, Arc::downgrade(&table));
        table
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lives_while_any_upload_is_open() {
        let table = Arc::new(PendingUploads::default());
        let first = table.register("/d/a", 0o644, 0, false, 1).unwrap();
        assert!(table.register("/d/a", 0o644, 0, true, 1).is_none(), "O_EXCL sees the upload in progress");
        let second = table.register("/d/a", 0o644, 0, false, 1).unwrap();
        first.set_size(7, false);
        assert_eq!(table.info("/d/a").unwrap().size, 7);
        drop(first);
        assert!(table.info("/d/a").is_some());
        drop(second);
        assert!(table.info("/d/a").is_none());
    }

    #[test]
    fn an_unlinked_upload_knows_it_and_a_new_one_is_not_confused() {
        let table = Arc::new(PendingUploads::default());
        let mut old = table.register("/f", 0o644, 0, false, 1).unwrap();
        assert_eq!(table.unlink("/f"), Unlink::Removed);
        assert!(table.info("/f").is_none(), "the name goes at once");
        assert_eq!(table.unlink("/f"), Unlink::Absent);
        let mut new = table.register("/f", 0o644, 3, false, 1).unwrap();
        assert!(!old.begin_commit(), "the old upload has nothing to commit");
        old.set_size(99, true);
        assert_eq!(table.info("/f").unwrap().size, 3, "the old upload does not touch the new placeholder");
        old.release();
        assert!(table.info("/f").is_some(), "nor end it");
        assert!(new.begin_commit());
        new.release();
        assert!(table.info("/f").is_none());
    }

    #[tokio::test]
    async fn a_committing_upload_keeps_its_name_until_it_lands() {
        let table = Arc::new(PendingUploads::default());
        let mut upload = table.register("/f", 0o644, 0, false, 1).unwrap();
        assert!(upload.begin_commit());
        assert_eq!(table.unlink("/f"), Unlink::Committing, "the content is on its way");
        assert!(table.info("/f").is_some());
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move { table.wait_commits("/f", std::time::Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the commit runs");
        upload.release();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(table.unlink("/f"), Unlink::Absent);
    }

    #[test]
    fn children_are_direct_only() {
        let table = Arc::new(PendingUploads::default());
        let _a = table.register("/d/a", 0o644, 0, false, 1);
        let _b = table.register("/d/e/b", 0o644, 0, false, 1);
        let _c = table.register("/c", 0o644, 0, false, 1);
        let names: Vec<_> = table.children("/d").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a"]);
        let mut root: Vec<_> = table.children("/").into_iter().map(|(n, _)| n).collect();
        root.sort();
        assert_eq!(root, ["c"]);
    }

    #[test]
    fn tenants_get_their_own_table() {
        let tables = TenantTables::default();
        let alice = tables.for_view("memory", "alice", &[]);
        let _guard = alice.register("/x", 0o644, 0, false, 1);
        assert!(tables.for_view("memory", "alice", &[]).info("/x").is_some());
        assert!(tables.for_view("memory", "bob", &[]).info("/x").is_none());
        let prefixed = [("prefix".to_string(), "p/".to_string())];
        assert!(tables.for_view("memory", "alice", &prefixed).info("/x").is_none());
    }

    /// A CLOSE marks only its own upload: the close of an upload whose file
    /// was removed does not make a later upload of the path look closing
    /// (a RENAME would wait for a commit that never comes); and with two
    /// uploads of a path open, the one not closing is still waited for.
    #[tokio::test]
    async fn a_close_marks_its_own_upload_only() {
        use std::time::{Duration, Instant};
        let table = Arc::new(PendingUploads::default());
        let removed = table.register("/p", 0o644, 0, false, 1).unwrap();
        assert_eq!(table.unlink("/p"), Unlink::Removed);
        let _reopened = table.register("/p", 0o644, 0, false, 1).unwrap();
        table.closing("/p", removed.id(), 1);
        let started = Instant::now();
        table.settle("/p", 1, Duration::from_millis(50), Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for a commit that is not coming", started.elapsed());

        let table = Arc::new(PendingUploads::default());
        let closing = table.register("/q", 0o644, 0, false, 1).unwrap();
        let _open = table.register("/q", 0o644, 0, false, 1).unwrap();
        table.closing("/q", closing.id(), 1);
        let committed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(closing);
        });
        let started = Instant::now();
        table.settle("/q", 1, Duration::from_millis(300), Duration::from_secs(30)).await;
        committed.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300), "the upload still open was waited for too");
    }
}
