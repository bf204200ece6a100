//! Files as clients expect them, for every plugin, independent of the SFTP
//! wire format: uploads coalesced into plugin-sized chunks within a byte
//! budget, files being written visible from OPEN (one node per path, see
//! `node.rs`), read-write handles over a spool. The SFTP layer speaks to
//! storage only through [`Files`] and the [`Handle`]s it opens.

mod budget;
mod copy;
mod handle;
mod in_order;
mod listing;
mod node;
mod open;
mod open_files;
mod read_ahead;
mod read_write;
mod reader;
mod shares;
mod spool;
mod upload;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{BudgetPermit, ByteBudget, FileBudgets, ServerBudget, ServerBudgets};
pub use handle::{Access, Handle};
pub use listing::Listing;
pub use node::{NodeTable, NodeTables, unix_now};
pub use shares::TenantShares;
pub use spool::{SpoolArea, TenantSpool};

use node::Unlink;
use read_ahead::ReadAhead;
use read_write::ReadWriteFile;
use reader::FileReader;
use upload::Upload;

use crate::config::SetstatPolicy;
use crate::plugin::{Capabilities, FileInfo, Session, SetAttrs, SpaceInfo, StorageError};

/// Settings of the file layer, the same for every connection.
#[derive(Clone)]
pub struct FileSettings {
    /// Largest file one spool may hold.
    pub max_spool_bytes: u64,
    /// What setting times or permissions answers when the plugin keeps none.
    pub setstat_unsupported: SetstatPolicy,
    /// Most entries the plugin may give one listing (it has a cursor still).
    pub max_listing_entries: u64,
}

/// One storage session seen through the file layer.
pub struct Files {
    storage: Session,
    nodes: Arc<NodeTable>,
    budgets: FileBudgets,
    settings: FileSettings,
    /// Which SFTP session this is, for the handles it holds.
    session: u64,
}

/// How long a request on a path waits for a CLOSE of this session's handle
/// of it that is on its way (see [`NodeTable::settle`]).
const SETTLE: Duration = Duration::from_secs(2);

impl Files {
    pub fn new(storage: Session, nodes: Arc<NodeTable>, budgets: FileBudgets, settings: FileSettings, session: u64) -> Self {
        Self { storage, nodes, budgets, settings, session }
    }

    /// Lets this session's CLOSE of `path` land first: one on its way for
    /// `SETTLE`, one read off the wire until its commit ends.
    async fn settle(&self, path: &str) {
        self.nodes.settle(path, self.session, SETTLE).await;
    }

    pub fn capabilities(&self) -> &Capabilities {
        self.storage.capabilities()
    }

    /// A file's info; a file being written is shown with its size so far.
    pub async fn stat(&self, path: &str) -> Result<FileInfo, StorageError> {
        match self.plugin_or_node(path, || self.storage.file_info(path)).await {
            Answer::Plugin(result) => result,
            Answer::Writing(info) => Ok(info),
        }
    }

    /// A path's own info: a symbolic link is described, not followed (a
    /// plugin without links is asked as STAT asks it).
    pub async fn link_stat(&self, path: &str) -> Result<FileInfo, StorageError> {
        if !self.capabilities().symlinks {
            return self.stat(path).await;
        }
        match self.plugin_or_node(path, || self.storage.link_info(path)).await {
            Answer::Plugin(result) => result,
            Answer::Writing(info) => Ok(info),
        }
    }

    /// A plugin call on `path`, answered by the node of the file being
    /// written there when the plugin does not know the path yet. A commit
    /// may land between the plugin's "not found" and the look at the table
    /// (the node goes once the plugin has the file): then the plugin is
    /// asked again, so the file is never missing from both.
    async fn plugin_or_node<T, F>(&self, path: &str, call: impl Fn() -> F) -> Answer<T>
    where
        F: std::future::Future<Output = Result<T, StorageError>>,
    {
        let was_written = self.nodes.contains(path);
        let result = call().await;
        if !matches!(result, Err(StorageError::NotFound)) {
            return Answer::Plugin(result);
        }
        match self.nodes.info(path) {
            Some(info) => Answer::Writing(info),
            None if was_written => Answer::Plugin(call().await),
            None => Answer::Plugin(result),
        }
    }

    /// REMOVE, as unlink(2): a file still being written loses its name at
    /// once and its handles commit nothing.
    pub async fn remove_file(&self, path: &str) -> Result<(), StorageError> {
        self.settle(path).await;
        // Removed from the plugin once: a later turn's not-found is that removal.
        let mut removed = false;
        // Each turn either ends, or follows a handle of the path that ended
        // or finished committing meanwhile; a few turns are plenty.
        for _ in 0..4 {
            match self.plugin_or_node(path, || self.storage.remove_file(path)).await {
                Answer::Plugin(Ok(())) => {
                    // An overwrite in progress of the removed file commits
                    // nothing. One already committing (a CLOSE, or a sync
                    // whose handle stays open) would put the file back after
                    // this removal: it is waited for and removed again, so
                    // the REMOVE stands.
                    match self.nodes.unlink(path) {
                        Unlink::Committing(commits) => {
                            removed = true;
                            commits.wait().await;
                        }
                        Unlink::Removed { .. } | Unlink::Absent => return Ok(()),
                    }
                }
                Answer::Plugin(Err(StorageError::NotFound)) if removed => return Ok(()),
                Answer::Plugin(other) => return other,
                Answer::Writing(_) => match self.nodes.unlink(path) {
                    Unlink::Removed { synced: false } => return Ok(()),
                    // A sync of it landed since the plugin said not found.
                    Unlink::Removed { synced: true } => {
                        return match self.storage.remove_file(path).await {
                            Ok(()) | Err(StorageError::NotFound) => Ok(()),
                            Err(e) => Err(e),
                        };
                    }
                    // Committed or given up since: the plugin knows.
                    Unlink::Absent => {}
                    Unlink::Committing(commits) => commits.wait().await,
                },
            }
        }
        Err(StorageError::Io("the file kept being replaced while it was removed".into()))
    }

    /// RENAME of a new file still being written is refused clearly rather
    /// than reported missing.
    pub async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), StorageError> {
        // FUSE (sshfs) removes a file that is still open by renaming it to a
        // hidden name, and removes that at the last close: for a file still
        // being written, that is its removal (see `remove_file`).
        if is_fuse_hidden(to) {
            match self.nodes.unlink(from) {
                Unlink::Removed { .. } => {
                    return match self.storage.remove_file(from).await {
                        Ok(()) | Err(StorageError::NotFound) => Ok(()),
                        Err(e) => Err(e),
                    };
                }
                // Once it lands, it is an ordinary rename.
                Unlink::Committing(commits) => commits.wait().await,
                Unlink::Absent => {}
            }
        }
        self.settle(from).await;
        self.settle(to).await;
        match self.plugin_or_node(from, || self.storage.rename(from, to, overwrite)).await {
            Answer::Plugin(result) => result,
            Answer::Writing(_) => Err(StorageError::Io("the file is still being uploaded (open for writing)".into())),
        }
    }

    /// RMDIR: a directory holding files being written is not empty.
    pub async fn remove_dir(&self, path: &str) -> Result<(), StorageError> {
        for (name, _) in self.nodes.children(path) {
            self.settle(&child(path, &name)).await;
        }
        if !self.nodes.children(path).is_empty() {
            return Err(StorageError::NotEmpty);
        }
        self.storage.remove_dir(path).await
    }

    /// SETSTAT by path. On a file being written, times and permissions wait
    /// for its commit; its size can only change through its handle. A plugin
    /// that keeps no times or permissions is answered as `setstat_unsupported`
    /// says; a size change it cannot make is refused whatever the policy
    /// (a truncate answered OK but not made would lie about the content).
    pub async fn set_info(&self, path: &str, set: SetAttrs) -> Result<(), StorageError> {
        let size = set.size;
        match self.set_info_now(path, set).await {
            Err(StorageError::Unsupported) if self.settings.setstat_unsupported == SetstatPolicy::Ignore => match size {
                None => Ok(()),
                // The size it already has (a client sending it beside times) is no change.
                Some(size) if self.stat(path).await.is_ok_and(|info| info.size == size) => Ok(()),
                Some(_) => Err(StorageError::Unsupported),
            },
            result => result,
        }
    }

    async fn set_info_now(&self, path: &str, set: SetAttrs) -> Result<(), StorageError> {
        if let (Some(size), Some(max)) = (set.size, self.capabilities().max_file_size) {
            if size > max {
                return Err(file_too_large(max));
            }
        }
        // A file being written (an overwrite, or one synced and written
        // on) is replaced by its commit: times and permissions set on it
        // meanwhile would be lost, so they wait for the commit too.
        if set.size.is_none() && self.nodes.defer_attrs(path, set) {
            return Ok(());
        }
        match self.plugin_or_node(path, || self.storage.set_info(path, set)).await {
            Answer::Writing(_) if set.size.is_none() && self.nodes.defer_attrs(path, set) => Ok(()),
            // Committed since, or a size (only through the file's handle).
            Answer::Writing(_) => self.storage.set_info(path, set).await,
            Answer::Plugin(result) => result,
        }
    }

    // What follows the file layer adds nothing to: the plugin answers.

    pub async fn make_dir(&self, path: &str, permissions: Option<u32>) -> Result<(), StorageError> {
        self.storage.make_dir(path, permissions).await
    }

    /// A symbolic link's target, in the plugin namespace.
    pub async fn read_link(&self, path: &str) -> Result<String, StorageError> {
        self.storage.read_link(path).await
    }

    /// A symbolic link at `path` to `target` (a plugin path).
    pub async fn make_link(&self, target: &str, path: &str) -> Result<(), StorageError> {
        self.storage.make_link(target, path).await
    }

    pub async fn hard_link(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.storage.hard_link(from, to).await
    }

    /// Space on the storage holding `path` (statvfs).
    pub async fn space(&self, path: &str) -> Result<SpaceInfo, StorageError> {
        self.storage.space(path).await
    }
}

/// What a plugin call on a path came to (see [`Files::plugin_or_node`]).
enum Answer<T> {
    Plugin(Result<T, StorageError>),
    /// The plugin does not know the path: a file is being written there.
    Writing(FileInfo),
}

/// A WRITE or size change past the plugin's largest file, refused before
/// the plugin is asked.
fn file_too_large(max: u64) -> StorageError {
    StorageError::Io(format!("the file would be larger than {max} bytes, the most this storage holds"))
}

/// The name FUSE gives a removed file that is still open.
fn is_fuse_hidden(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with(".fuse_hidden"))
}

fn child(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}
