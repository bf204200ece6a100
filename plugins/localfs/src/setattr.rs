//! `set-info` (SETSTAT, a final link followed), as OpenSSH's server does
//! it: each attribute in turn (the size, then the mode, then the times),
//! going on after one fails, and the first failure answered; so a size
//! that cannot be set still leaves the times set (`sftp put -p` keeps its
//! times). A size cuts or extends the file in place; a mode can only be
//! the one reported (WASI has no chmod), which is taken as chmod to the
//! same mode, a no-op; another is `unsupported`.

use wasftp_sdk::prelude::*;
use wasi::clocks::wall_clock::Datetime;
use wasi::filesystem::types::{DescriptorFlags, DescriptorStat, DescriptorType, NewTimestamp, OpenFlags, PathFlags};

use crate::attrs;
use crate::errors::fs_error;
use crate::folder::{self, Follow, Folder};
use crate::limits::content_fits;
use crate::paths::relative;

/// `max_file_size`: a size past it is no-space (the host refuses it first).
pub fn set_info(folder: &Folder, path: &str, attrs: &SetAttrs, max_file_size: Option<u64>) -> Result<()> {
    // What the file is matters for a size (only a regular file's, never
    // opening a FIFO) and a mode (the one reported for its kind).
    let stat = if attrs.size.is_some() || attrs.permissions.is_some() { Some(folder.stat(path, Follow::Yes)?) } else { None };
    let size = attrs.size.zip(stat.as_ref()).map(|(size, stat)| {
        folder::regular(stat.type_)?;
        content_fits(max_file_size, size)?;
        set_size(folder, path, size)
    });
    let mode = attrs.permissions.zip(stat.as_ref()).map(|(mode, stat)| check_mode(folder, stat, mode));
    let times = (attrs.accessed.is_some() || attrs.modified.is_some()).then(|| {
        folder
            .root()
            .set_times_at(PathFlags::SYMLINK_FOLLOW, relative(path), timestamp(attrs.accessed), timestamp(attrs.modified))
            .map_err(fs_error)
    });
    answer(size, mode, times)
}

/// The answer to a SETSTAT whose attributes came out so (none for one not
/// asked): the first failure, in the order applied. A mode WASI cannot set
/// is answered only when nothing else failed, though it comes before the
/// times: the host may answer `unsupported` as OK (`setstat_unsupported`),
/// which would hide that the times failed.
fn answer(size: Option<Result<()>>, mode: Option<Result<()>>, times: Option<Result<()>>) -> Result<()> {
    let failed = |outcome: Option<Result<()>>| outcome.filter(Result::is_err);
    failed(size).or(failed(times)).or(mode).unwrap_or(Ok(()))
}

/// chmod to the mode reported is no change; WASI cannot make another.
fn check_mode(folder: &Folder, stat: &DescriptorStat, mode: u32) -> Result<()> {
    if mode & 0o7777 == attrs::permissions(folder::kind(stat.type_), folder.read_only()) { Ok(()) } else { Err(Error::Unsupported) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_answered_after_every_attribute_was_tried() {
        let (ok, denied, full) = (Some(Ok(())), Some(Err(Error::PermissionDenied)), Some(Err(Error::NoSpace)));
        assert_eq!(answer(None, None, None), Ok(()));
        assert_eq!(answer(ok.clone(), ok.clone(), ok.clone()), Ok(()));
        // A size that failed is the answer, the times being set anyway.
        assert_eq!(answer(full.clone(), None, ok.clone()), Err(Error::NoSpace));
        assert_eq!(answer(full.clone(), None, denied.clone()), Err(Error::NoSpace), "the first of two");
        assert_eq!(answer(ok.clone(), None, denied.clone()), Err(Error::PermissionDenied));
    }

    #[test]
    fn a_mode_wasi_cannot_set_never_hides_a_real_failure() {
        let (ok, denied, unsupported) = (Some(Ok(())), Some(Err(Error::PermissionDenied)), Some(Err(Error::Unsupported)));
        assert_eq!(answer(ok.clone(), unsupported.clone(), ok.clone()), Err(Error::Unsupported));
        assert_eq!(answer(None, unsupported.clone(), denied.clone()), Err(Error::PermissionDenied));
        assert_eq!(answer(Some(Err(Error::NoSpace)), unsupported, denied), Err(Error::NoSpace));
    }
}
