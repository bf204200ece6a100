//! One directory listing, page by page, as a client reads it.
//!
//! The plugin is untrusted: its pages are bounded in number (a cursor that
//! never ends, or comes back to one it gave before, ends the listing with
//! a clear error), and a name it lists twice is shown once.
//!
//! The plugin lists a file only once its upload is committed, so a listing
//! ends with the uploads in progress the plugin did not show. An upload that
//! commits while the listing runs may have been neither listed by the plugin
//! (its page went by before the commit) nor still be in the table at the
//! end: the names being uploaded when the listing started are kept, and
//! those the plugin did not list are looked up again at the end.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use super::{Answer, Files, child};
use crate::plugin::{FileInfo, StorageError};

/// Pages in a row with no name not shown before (each answers one READDIR
/// with nothing) that cut a listing.
const MAX_EMPTY_PAGES: usize = 1024;

/// One listing of a directory.
pub struct Listing {
    dir: String,
    cursor: Option<String>,
    /// The plugin gave its last page (or the listing was cut).
    plugin_done: bool,
    /// Why the listing was cut; said once the entries before it are out.
    cut: Option<String>,
    /// Entries the plugin gave, duplicates included: every page holds at
    /// least one, so this bounds the pages too.
    given: u64,
    max_entries: u64,
    /// Hashes (keyed per listing) of the names shown and the cursors
    /// given: 8 bytes each, whatever the names' length.
    names: HashSet<u64>,
    cursors: HashSet<u64>,
    keys: RandomState,
    uploads: ListingUploads,
    /// Files being uploaded here that the plugin did not list, shown after
    /// its entries (`None` until the plugin's listing ends).
    unlisted: Option<Vec<(String, FileInfo)>>,
}

impl Files {
    /// Starts a listing of `dir` (known to be a directory).
    pub fn start_listing(&self, dir: &str) -> Listing {
        Listing {
            dir: dir.to_string(),
            cursor: None,
            plugin_done: false,
            cut: None,
            given: 0,
            max_entries: self.settings.max_listing_entries,
            names: HashSet::new(),
            cursors: HashSet::new(),
            keys: RandomState::new(),
            uploads: self.uploads_at_listing_start(dir),
            unlisted: None,
        }
    }

    /// The listing's next entries, about `batch` of them (a page of the
    /// plugin's); empty at its end. A listing cut short answers the
    /// entries before the cut, then the error.
    pub async fn next_entries(&self, listing: &mut Listing, batch: u32) -> Result<Vec<(String, FileInfo)>, StorageError> {
        let mut entries = Vec::new();
        let mut pages = 0;
        while !listing.plugin_done {
            if pages == MAX_EMPTY_PAGES {
                listing.cut(format!(
                    "the listing of {} was cut: the storage gave {MAX_EMPTY_PAGES} pages in a row without a name \
                     it had not given before",
                    listing.dir
                ));
                break;
            }
            pages += 1;
            let page = self.storage.list_dir(&listing.dir, listing.cursor.as_deref(), batch).await?;
            listing.given += page.entries.len().max(1) as u64;
            for entry in page.entries {
                listing.uploads.listed(&entry.name);
                if listing.names.insert(listing.keys.hash_one(&entry.name)) {
                    entries.push((entry.name, entry.info));
                }
            }
            match page.next_cursor {
                None => listing.plugin_done = true,
                Some(_) if listing.given >= listing.max_entries => {
                    listing.cut(format!(
                        "the listing of {} was cut after {} entries (max_listing_entries): the storage's \
                         listing did not end",
                        listing.dir, listing.given
                    ));
                }
                Some(next) if !listing.cursors.insert(listing.keys.hash_one(&next)) => {
                    listing.cut(format!(
                        "the listing of {} was cut: the storage gave a listing cursor it had given before (a cycle)",
                        listing.dir
                    ));
                }
                Some(next) => listing.cursor = Some(next),
            }
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
        if let Some(why) = &listing.cut {
            // Every READDIR after the cut says so: a client that asks again
            // must not see a clean end of a truncated listing.
            return Err(StorageError::Io(why.clone()));
        }
        // Files being uploaded here that the plugin does not show yet, a
        // batch at a time.
        if listing.unlisted.is_none() {
            listing.unlisted = Some(self.uploads_unlisted(&listing.dir, &listing.uploads).await);
        }
        let unlisted = listing.unlisted.as_mut().expect("just filled");
        while entries.is_empty() && !unlisted.is_empty() {
            let take = unlisted.len().min(batch as usize);
            for (name, info) in unlisted.drain(..take) {
                if listing.names.insert(listing.keys.hash_one(&name)) {
                    entries.push((name, info));
                }
            }
        }
        Ok(entries)
    }
}

impl Listing {
    fn cut(&mut self, why: String) {
        tracing::warn!(dir = %self.dir, "{why}");
        self.plugin_done = true;
        self.cursor = None;
        self.cut = Some(why);
    }
}

/// What one listing has seen of the uploads in its directory.
struct ListingUploads {
    /// Names being uploaded when the listing started.
    at_start: HashSet<String>,
    /// Of those, the ones the plugin has not listed yet.
    unlisted: HashSet<String>,
}

impl ListingUploads {
    /// The plugin listed `name`.
    fn listed(&mut self, name: &str) {
        self.unlisted.remove(name);
    }
}

impl Files {
    /// Starts watching the uploads in `dir` for a listing.
    fn uploads_at_listing_start(&self, dir: &str) -> ListingUploads {
        let at_start: HashSet<String> = self.nodes.children(dir).into_iter().map(|(name, _)| name).collect();
        ListingUploads { unlisted: at_start.clone(), at_start }
    }

    /// The files a listing of `dir` must add after the plugin's entries.
    async fn uploads_unlisted(&self, dir: &str, seen: &ListingUploads) -> Vec<(String, FileInfo)> {
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
