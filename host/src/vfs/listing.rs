//! Files being uploaded, added to a directory listing.
//!
//! The plugin lists a file only once its upload is committed, so a listing
//! ends with the uploads in progress the plugin did not show. An upload that
//! commits while the listing runs may have been neither listed by the plugin
//! (its page went by before the commit) nor still be in the table at the
//! end: the names being uploaded when the listing started are kept, and
//! those the plugin did not list are looked up again at the end.

use std::collections::HashSet;

use super::{Answer, Files, child};
use crate::plugin::{FileInfo, StorageError};

/// What one listing has seen of the uploads in its directory.
pub struct ListingUploads {
    /// Names being uploaded when the listing started.
    at_start: HashSet<String>,
    /// Of those, the ones the plugin has not listed yet.
    unlisted: HashSet<String>,
}

impl ListingUploads {
    /// The plugin listed `name`.
    pub fn listed(&mut self, name: &str) {
        self.unlisted.remove(name);
    }
}

impl Files {
    /// Starts watching the uploads in `dir` for a listing.
    pub fn uploads_at_listing_start(&self, dir: &str) -> ListingUploads {
        let at_start: HashSet<String> = self.nodes.children(dir).into_iter().map(|(name, _)| name).collect();
        ListingUploads { unlisted: at_start.clone(), at_start }
    }

    /// The files a listing of `dir` must add after the plugin's entries.
    pub async fn uploads_unlisted(&self, dir: &str, seen: &ListingUploads) -> Vec<(String, FileInfo)> {
        let mut extra = Vec::new();
        // Being uploaded at the start and not listed: whatever each is now.
        for name in &seen.unlisted {
            if let Some(info) = self.lookup(&child(dir, name)).await {
                extra.push((name.clone(), info));
            }
        }
        // Begun since: shown while the plugin does not know the path (an
        // overwrite of a listed file is listed already).
        for (name, _) in self.nodes.children(dir) {
            if seen.at_start.contains(&name) {
                continue;
            }
            let path = child(dir, &name);
            if let Answer::Writing(info) = self.plugin_or_node(&path, || self.storage.file_info(&path)).await {
                extra.push((name, info));
            }
        }
        extra
    }

    async fn lookup(&self, path: &str) -> Option<FileInfo> {
        match self.plugin_or_node(path, || self.storage.file_info(path)).await {
            Answer::Writing(info) | Answer::Plugin(Ok(info)) => Some(info),
            Answer::Plugin(Err(StorageError::NotFound)) => None,
            Answer::Plugin(Err(e)) => {
                tracing::debug!(path, error = %e, "upload left out of a listing");
                None
            }
        }
    }
}
