//! `maintain`: removes temporary upload files nobody has written to for
//! `stale-upload-secs`, the leftovers of a host that stopped mid-upload.
//! The walk is depth first with one open listing per level, so what it
//! holds grows with the tree's depth, never with its width, and it looks
//! at `maintain-max-entries` entries at most. Links are never followed.

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
    /// Its name in its parent (empty for the root).
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

pub fn sweep(folder: &Folder, config: &Config) -> Result<()> {
    let now = wasi::clocks::wall_clock::now().seconds;
    let cutoff = now.saturating_sub(config.stale_upload_secs);
    let mut sweep = Sweep::default();
    let mut stack = vec![Level::open(folder, "/", String::new())?];
    while let Some(level) = stack.last() {
        let entry = level.entries.read_directory_entry();
        if !matches!(entry, Ok(None)) {
            sweep.visited += 1;
            if sweep.visited > config.maintain_max_entries {
                sweep.cut_short = true;
                break;
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
    report(&sweep, config);
    Ok(())
}

/// The contract path of the directory at the top of the stack.
fn path_of(stack: &[Level]) -> String {
    let names: Vec<&str> = stack.iter().skip(1).map(|level| level.name.as_str()).collect();
    format!("/{}", names.join("/"))
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
