//! `list-dir`: pages of a directory in name order, each entry described as
//! `link-info` describes it (a link is listed as a link, as OpenSSH's
//! readdir does with lstat), but without a version. Left out: temporary
//! uploads, names that are not UTF-8 (WASI cannot give them) and names
//! longer than NAME_MAX (the host would drop them).

use std::cell::RefCell;
use std::rc::Rc;

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{Descriptor, ErrorCode};

use crate::dir_index::{DirKey, Gatherer, ListingCache, MAX_NAME_LEN, Window};
use crate::errors::fs_error;
use crate::folder::{Follow, Folder};
use crate::paths::is_reserved_name;

/// Entries in one page at most: the host takes no more.
const MAX_PAGE: u32 = 1024;
/// Unreadable entries in a row after which a directory read is given up
/// (wasmtime reports each bad name once, but another host might not).
const MAX_ENTRY_ERRORS: usize = 4096;

thread_local! {
    /// Windows of the directories listed last, for their next pages.
    static CACHE: RefCell<ListingCache> = const { RefCell::new(ListingCache::new()) };
}

/// How many bytes of names the cache, and one read of a directory, may hold.
pub fn set_cache_budget(bytes: usize) {
    CACHE.with(|cache| cache.borrow_mut().set_budget(bytes));
}

fn cache_budget() -> usize {
    CACHE.with(|cache| cache.borrow().budget())
}

pub fn list_dir(folder: &Folder, path: &str, cursor: Option<String>, limit: u32) -> Result<DirPage> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let dir = folder.open_dir(path, Follow::Yes)?;
    let key = DirKey { path: path.to_string(), state: state(&dir)? };
    let mut cursor = cursor;
    let mut entries = Vec::new();
    // Entries removed since the names were read are passed over, so a
    // page can take several rounds; each goes on after the last name seen.
    loop {
        let (names, more) = names_after(&dir, &key, cursor.as_deref(), limit - entries.len())?;
        for name in names {
            match folder.entry_info(&dir, &name) {
                Ok(info) => entries.push(DirEntry { name: name.clone(), info }),
                // Gone since, or not ours to look at: OpenSSH skips it too.
                Err(e) => log::debug(&format!("localfs: {path}/{name} left out of the listing: {e:?}")),
            }
            cursor = Some(name);
        }
        if entries.len() == limit || !more {
            return Ok(DirPage { entries, next_cursor: if more { cursor } else { None } });
        }
    }
}

/// What changes when the directory's entries do: its identity and mtime.
fn state(dir: &Descriptor) -> Result<String> {
    let hash = dir.metadata_hash().map_err(fs_error)?;
    let stat = dir.stat().map_err(fs_error)?;
    let mtime = stat.data_modification_timestamp.map_or((0, 0), |t| (t.seconds, t.nanoseconds));
    Ok(format!("{:x}{:x}-{}.{:09}-{}", hash.upper, hash.lower, mtime.0, mtime.1, stat.size))
}

/// Up to `count` names after `cursor`, and whether more follow. A first
/// page always reads the directory; later ones use the window of names
/// kept from an earlier read while the directory is unchanged since.
fn names_after(dir: &Descriptor, key: &DirKey, cursor: Option<&str>, count: usize) -> Result<(Vec<String>, bool)> {
    if cursor.is_some()
        && let Some(window) = CACHE.with(|cache| cache.borrow_mut().get(key, cursor))
    {
        return Ok(window.page(cursor, count));
    }
    CACHE.with(|cache| cache.borrow_mut().forget(&key.path));
    let window = Rc::new(read_window(dir, &key.path, cursor, count)?);
    let page = window.page(cursor, count);
    CACHE.with(|cache| cache.borrow_mut().insert(key.clone(), window));
    Ok(page)
}

/// The listable names of `dir` after `cursor`, as many as the budget
/// holds (at least `count`).
fn read_window(dir: &Descriptor, path: &str, cursor: Option<&str>, count: usize) -> Result<Window> {
    let stream = dir.read_directory().map_err(fs_error)?;
    let mut gatherer = Gatherer::new(cache_budget(), cursor, count);
    let (mut not_utf8, mut errors_in_a_row) = (0usize, 0usize);
    loop {
        match stream.read_directory_entry() {
            Ok(None) => break,
            Ok(Some(entry)) => {
                errors_in_a_row = 0;
                if listable(&entry.name) {
                    gatherer.offer(entry.name)?;
                }
            }
            Err(ErrorCode::IllegalByteSequence) => not_utf8 += 1,
            Err(code) => {
                errors_in_a_row += 1;
                if errors_in_a_row > MAX_ENTRY_ERRORS {
                    return Err(fs_error(code));
                }
                log::debug(&format!("localfs: an entry of {path} could not be read ({})", code.name()));
            }
        }
    }
    if not_utf8 > 0 {
        log::warn(&format!("localfs: {not_utf8} name(s) in {path} are not UTF-8 and are not listed"));
    }
    Ok(gatherer.finish())
}

fn listable(name: &str) -> bool {
    !is_reserved_name(name) && name.len() <= MAX_NAME_LEN && name != "." && name != ".."
}
