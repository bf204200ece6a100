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
        let at_start: HashSet<String> = self.pending.children(dir).into_iter().map(|(name, _)| name).collect();
        ListingUploads { unlisted: at_start.clone(), at_start }
    }

    /// The files a listing of `dir` must add after the plugin's entries.
    pub async fn uploads_unlisted(&self, dir: &str, seen: &ListingUploads) -> Vec<(String, FileInfo)> {
        let mut extra = Vec::new();
        let now: Vec<String> = self.pending.children(dir).into_iter().map(|(name, _)| name).collect();
        for name in seen.unlisted.iter().chain(now.iter().filter(|n| !seen.at_start.contains(*n))) {
            let path = child(dir, name);
            let found = match self.on_path(&path, || self.storage.file_info(&path)).await {
                // An upload that began after the listing: shown if the plugin
                // does not know the path (an overwrite was listed already).
                Answer::Uploading(info) => Some(info),
                // Being uploaded at the start and not listed: whatever it is now.
                Answer::Plugin(Ok(info)) if seen.unlisted.contains(name) => Some(info),
                Answer::Plugin(Ok(_) | Err(StorageError::NotFound)) => None,
                Answer::Plugin(Err(e)) => {
                    tracing::debug!(path, error = %e, "upload left out of a listing");
                    None
                }
            };
            if let Some(info) = found {
                extra.push((name.clone(), info));
            }
        }
        extra
    }
}
