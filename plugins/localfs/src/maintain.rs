//! `maintain`: removes temporary upload files nobody has written to for
//! `stale-upload-secs`, the leftovers of a host that stopped mid-upload.
//! The walk is depth first with one open listing per level, so what it
//! holds grows with the tree's depth, never with its width (but for the
//! root's names, taken in turn: see `RESUME_AT`), and it looks at
//! `maintain-max-entries` entries at most. Links are never followed.

use std::cell::RefCell;

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{Descriptor, DescriptorType, DirectoryEntryStream, ErrorCode};

use crate::config::Config;
use crate::errors::fs_error;
use crate::folder::{Follow, Folder};
use crate::paths::{child, is_upload_name, relative};

/// Levels walked at most; deeper directories are left alone (a path has
/// at most 4096 bytes, so a real tree rarely comes near).
const MAX_DEPTH: usize = 256;

/// One directory being walked.
struct Level {
    /// Its name in its parent (the first of a walk: its path).
    name: String,
    entries: DirectoryEntryStream,
    /// Kept open while its entries are read.
    _dir: Descriptor,
}

impl Level {
    fn open(folder: &Folder, path: &str, name: String) -> Result<Level> {
        // Not following: what is listed as a directory is walked only if
        // it is still one, not a link swapped in since.
        let dir = folder.open_dir(path, Follow::No)?;
        let entries = dir.read_directory().map_err(fs_error)?;
        Ok(Level { name, entries, _dir: dir })
    }
}

/// What one walk did, for the log.
#[derive(Default)]
struct Sweep {
    visited: u64,
    removed: u64,
    /// Entries that could not be read (names that are not UTF-8).
    unreadable: u64,
    too_deep: u64,
    cut_short: bool,
}

thread_local! {
    /// The top-level entry a walk cut short stopped in: the next walk starts
    /// there, so with a folder per tenant one tenant's huge tree cannot keep
    /// the sweep from ever reaching the tenants listed after it.
    static RESUME_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub fn sweep(folder: &Folder, config: &Config) -> Result<()> {
    let now = wasi::clocks::wall_clock::now().seconds;
    let cutoff = now.saturating_sub(config.stale_upload_secs);
    let mut sweep = Sweep::default();
    let top = top_level(folder, config, &mut sweep)?;
    let resume_at = RESUME_AT.with(|at| at.borrow_mut().take());
    for (name, kind) in in_turn(&top, resume_at.as_deref()) {
        let path = child("/", name);
        let walked = match kind {
            DescriptorType::Directory => walk(folder, &path, config, cutoff, &mut sweep),
            DescriptorType::RegularFile if is_upload_name(name) => {
                if remove_if_stale(folder, &path, cutoff) {
                    sweep.removed += 1;
                }
                true
            }
            _ => true,
        };
        if !walked {
            RESUME_AT.with(|at| *at.borrow_mut() = Some(name.clone()));
            break;
        }
    }
    report(&sweep, config);
    Ok(())
}

/// The root's entries, sorted by name (a stable order to take turns in).
fn top_level(folder: &Folder, config: &Config, sweep: &mut Sweep) -> Result<Vec<(String, DescriptorType)>> {
    let root = Level::open(folder, "/", String::new())?;
    let mut entries = Vec::new();
    loop {
        match root.entries.read_directory_entry() {
            Ok(None) => break,
            Ok(Some(entry)) => {
                sweep.visited += 1;
                if sweep.visited > config.maintain_max_entries {
                    sweep.cut_short = true;
                    break;
                }
                entries.try_reserve(1).map_err(|_| Error::NoSpace)?;
                entries.push((entry.name, entry.type_));
            }
            Err(_) => sweep.unreadable += 1,
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// `entries` (sorted by name) starting at the first named `resume_at` or
/// after it, then the ones before: every entry in turn, the one a cut-short
/// walk stopped in first.
fn in_turn<'a, T>(entries: &'a [(String, T)], resume_at: Option<&str>) -> impl Iterator<Item = &'a (String, T)> {
    let start = resume_at.map_or(0, |at| entries.partition_point(|(name, _)| name.as_str() < at));
    entries[start..].iter().chain(&entries[..start])
}

/// Walks the directory `path`; false when the entry budget ran out in it.
fn walk(folder: &Folder, path: &str, config: &Config, cutoff: u64, sweep: &mut Sweep) -> bool {
    // The first level is named by its whole path (see `path_of`).
    let mut stack = match Level::open(folder, path, path.to_string()) {
        Ok(level) => vec![level],
        Err(e) => {
            log::debug(&format!("localfs: maintain does not walk {path}: {e:?}"));
            return true;
        }
    };
    while let Some(level) = stack.last() {
        let entry = level.entries.read_directory_entry();
        if !matches!(entry, Ok(None)) {
            sweep.visited += 1;
            if sweep.visited > config.maintain_max_entries {
                sweep.cut_short = true;
                return false;
            }
        }
        match entry {
            Ok(None) => {
                stack.pop();
            }
            Ok(Some(entry)) => match entry.type_ {
                DescriptorType::Directory if stack.len() >= MAX_DEPTH => sweep.too_deep += 1,
                DescriptorType::Directory => {
                    let path = child(&path_of(&stack), &entry.name);
                    match Level::open(folder, &path, entry.name) {
                        Ok(level) => stack.push(level),
                        Err(e) => log::debug(&format!("localfs: maintain does not walk {path}: {e:?}")),
                    }
                }
                DescriptorType::RegularFile if is_upload_name(&entry.name) => {
                    let path = child(&path_of(&stack), &entry.name);
                    if remove_if_stale(folder, &path, cutoff) {
                        sweep.removed += 1;
                    }
                }
                _ => {}
            },
            Err(ErrorCode::IllegalByteSequence) => sweep.unreadable += 1,
            Err(code) => {
                sweep.unreadable += 1;
                log::debug(&format!("localfs: maintain: an entry of {} could not be read ({})", path_of(&stack), code.name()));
            }
        }
    }
    true
}

/// The contract path of the directory at the top of the stack (the first
/// level's name is its whole path).
fn path_of(stack: &[Level]) -> String {
    let names: Vec<&str> = stack.iter().map(|level| level.name.as_str()).collect();
    names.join("/")
}

/// Removes the temporary file `path` when its last write is before `cutoff`.
/// Whether it was removed; a failure is logged and the walk goes on.
fn remove_if_stale(folder: &Folder, path: &str, cutoff: u64) -> bool {
    let stat = match folder.lookup(path) {
        Ok(Some(stat)) if stat.type_ == DescriptorType::RegularFile => stat,
        // Gone (finished or aborted) since it was listed.
        Ok(_) => return false,
        Err(e) => {
            log::debug(&format!("localfs: maintain: {path}: {e:?}"));
            return false;
        }
    };
    let modified = stat.data_modification_timestamp.map_or(0, |t| t.seconds);
    if modified >= cutoff {
        return false;
    }
    match folder.root().unlink_file_at(relative(path)) {
        Ok(()) => true,
        Err(ErrorCode::NoEntry) => false,
        Err(code) => {
            log::warn(&format!("localfs: maintain could not remove the stale upload {path}: {}", code.name()));
            false
        }
    }
}

fn report(sweep: &Sweep, config: &Config) {
    if sweep.removed > 0 {
        log::info(&format!("localfs: maintain removed {} stale upload file(s)", sweep.removed));
    }
    if sweep.cut_short {
        log::warn(&format!(
            "localfs: maintain stopped after {} entries (`maintain-max-entries`); uploads left further on are not removed",
            config.maintain_max_entries
        ));
    }
    if sweep.too_deep > 0 {
        log::warn(&format!("localfs: maintain did not walk {} directories deeper than {MAX_DEPTH} levels", sweep.too_deep));
    }
    if sweep.unreadable > 0 {
        log::debug(&format!("localfs: maintain passed over {} unreadable entries (names that are not UTF-8)", sweep.unreadable));
    }
    log::debug(&format!("localfs: maintain looked at {} entries", sweep.visited));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[(String, ())], resume_at: Option<&str>) -> Vec<String> {
        in_turn(entries, resume_at).map(|(name, _)| name.clone()).collect()
    }

    #[test]
    fn a_walk_cut_short_is_taken_up_where_it_stopped_then_the_rest_in_turn() {
        let entries: Vec<(String, ())> = ["alice", "bob", "carol", "dave"].iter().map(|n| (n.to_string(), ())).collect();
        assert_eq!(names(&entries, None), ["alice", "bob", "carol", "dave"]);
        assert_eq!(names(&entries, Some("carol")), ["carol", "dave", "alice", "bob"], "carol's tree was cut short");
        // The tenant it stopped in is gone: the next one after it.
        assert_eq!(names(&entries, Some("bert")), ["bob", "carol", "dave", "alice"]);
        assert_eq!(names(&entries, Some("zed")), ["alice", "bob", "carol", "dave"]);
    }
}
