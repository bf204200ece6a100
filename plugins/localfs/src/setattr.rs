//! `set-info` (SETSTAT, a final link followed), as OpenSSH's server does
//! it: the size, then the times, each applied, the failure of any
//! reported. A size cuts or extends the file in place; a mode can only be
//! the one reported (WASI has no chmod), which is taken as chmod to the
//! same mode, a no-op; another is `unsupported`, after the size and times
//! beside it are set (`sftp put -p` keeps its times).

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{DescriptorFlags, DescriptorType, NewTimestamp, OpenFlags, PathFlags};
use wasi::clocks::wall_clock::Datetime;

use crate::attrs;
use crate::errors::fs_error;
use crate::folder::{self, Follow, Folder};
use crate::limits::content_fits;
use crate::paths::relative;

/// `max_file_size`: a size past it is no-space (the host refuses it first).
pub fn set_info(folder: &Folder, path: &str, attrs: &SetAttrs, max_file_size: Option<u64>) -> Result<()> {
    let stat = folder.stat(path, Follow::Yes)?;
    if let Some(size) = attrs.size {
        folder::regular(stat.type_)?;
        content_fits(max_file_size, size)?;
        set_size(folder, path, size)?;
    }
    if attrs.accessed.is_some() || attrs.modified.is_some() {
        folder
            .root()
            .set_times_at(PathFlags::SYMLINK_FOLLOW, relative(path), timestamp(attrs.accessed), timestamp(attrs.modified))
            .map_err(fs_error)?;
    }
    match attrs.permissions {
        Some(mode) if mode & 0o7777 != attrs::permissions(folder::kind(stat.type_), folder.read_only()) => Err(Error::Unsupported),
        _ => Ok(()),
    }
}

/// In place, as truncate(2): a reader open now sees it too.
fn set_size(folder: &Folder, path: &str, size: u64) -> Result<()> {
    let file = folder
        .root()
        .open_at(PathFlags::SYMLINK_FOLLOW, relative(path), OpenFlags::empty(), DescriptorFlags::WRITE)
        .map_err(fs_error)?;
    // What was opened may not be what was looked at.
    if file.get_type().map_err(fs_error)? != DescriptorType::RegularFile {
        return Err(Error::PermissionDenied);
    }
    file.set_size(size).map_err(fs_error)
}

fn timestamp(seconds: Option<u64>) -> NewTimestamp {
    match seconds {
        Some(seconds) => NewTimestamp::Timestamp(Datetime { seconds, nanoseconds: 0 }),
        None => NewTimestamp::NoChange,
    }
}
