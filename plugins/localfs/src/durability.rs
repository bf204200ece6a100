//! What a failed directory sync means once an upload is in place. The
//! rename (or link) is done: readers see the new content already, so the
//! client must not be told its upload failed (it would retry, or give up
//! on a file that is there). Only an I/O error (EIO) or no space (ENOSPC)
//! says the new entry may really not reach the disk, and that is answered,
//! saying so; any other failure (a filesystem that cannot sync a directory, the directory
//! renamed away since) costs no more than a warning.

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::ErrorCode;

/// The error to answer when syncing the directory of a placed upload
/// failed with `code`; none when the upload is done all the same (the
/// caller logs why it may not survive a crash).
pub fn dir_sync_failure(code: ErrorCode) -> Option<Error> {
    match code {
        // EIO, or ENOSPC (the journal had no room): the entry may be lost.
        ErrorCode::Io | ErrorCode::InsufficientSpace => {
            Some(io_error("the new content is in place but may not be durable: syncing its directory failed"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_io_or_space_errors_fail_an_upload_already_in_place() {
        for code in [ErrorCode::Io, ErrorCode::InsufficientSpace] {
            let failed = dir_sync_failure(code);
            assert!(matches!(&failed, Some(Error::Io(why)) if why.contains("in place") && why.contains("durable")), "{failed:?}");
        }
        for passed in [
            ErrorCode::Unsupported,
            ErrorCode::Invalid,
            ErrorCode::NotPermitted,
            ErrorCode::Access,
            ErrorCode::BadDescriptor,
            ErrorCode::NoEntry,
            ErrorCode::NotDirectory,
        ] {
            assert_eq!(dir_sync_failure(passed), None, "{passed:?}");
        }
    }
}
