//! `wasi:filesystem` error codes as the contract's errors.

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{ErrorCode, filesystem_error_code};
use wasi::io::streams::StreamError;

/// The contract's error for a filesystem error code. The sandbox answers
/// a path escaping the folder (`..`, an absolute link, a link climbing
/// out) with not-permitted: permission-denied, as for a file the server
/// may not touch.
pub fn fs_error(code: ErrorCode) -> Error {
    match code {
        ErrorCode::NoEntry => Error::NotFound,
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => Error::PermissionDenied,
        ErrorCode::Exist => Error::AlreadyExists,
        ErrorCode::NotEmpty => Error::NotEmpty,
        ErrorCode::NotDirectory => Error::NotADirectory,
        ErrorCode::IsDirectory => Error::IsADirectory,
        ErrorCode::InsufficientSpace | ErrorCode::Quota | ErrorCode::InsufficientMemory | ErrorCode::FileTooLarge => {
            Error::NoSpace
        }
        ErrorCode::Unsupported => Error::Unsupported,
        ErrorCode::Invalid => invalid("invalid argument"),
        ErrorCode::NameTooLong => invalid("file name too long"),
        ErrorCode::IllegalByteSequence => invalid("a name that is not UTF-8"),
        // A link loop is no lack of permission: the path cannot be resolved
        // (an I/O failure for the host, said as the plugin's own walk says it).
        ErrorCode::Loop => crate::resolve::too_many_links(),
        other => io_error(other.name()),
    }
}

/// The contract's error for a failed stream (a copy between files).
pub fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => io_error("the stream closed early"),
        StreamError::LastOperationFailed(e) => match filesystem_error_code(&e) {
            Some(code) => fs_error(code),
            None => io_error(e.to_debug_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_contract() {
        assert_eq!(fs_error(ErrorCode::NoEntry), Error::NotFound);
        for denied in [ErrorCode::Access, ErrorCode::NotPermitted, ErrorCode::ReadOnly] {
            assert_eq!(fs_error(denied), Error::PermissionDenied);
        }
        assert_eq!(fs_error(ErrorCode::Exist), Error::AlreadyExists);
        assert_eq!(fs_error(ErrorCode::NotEmpty), Error::NotEmpty);
        assert_eq!(fs_error(ErrorCode::NotDirectory), Error::NotADirectory);
        assert_eq!(fs_error(ErrorCode::IsDirectory), Error::IsADirectory);
        for full in [ErrorCode::InsufficientSpace, ErrorCode::Quota, ErrorCode::InsufficientMemory, ErrorCode::FileTooLarge] {
            assert_eq!(fs_error(full), Error::NoSpace);
        }
        assert_eq!(fs_error(ErrorCode::Unsupported), Error::Unsupported);
        for bad in [ErrorCode::Invalid, ErrorCode::NameTooLong, ErrorCode::IllegalByteSequence] {
            assert!(matches!(fs_error(bad), Error::InvalidInput(_)));
        }
        assert!(matches!(fs_error(ErrorCode::Loop), Error::Io(_)));
        assert_eq!(fs_error(ErrorCode::Io), Error::Io("io".into()));
        assert_eq!(fs_error(ErrorCode::CrossDevice), Error::Io("cross-device".into()));
    }

    #[test]
    fn a_listing_of_a_file_and_a_link_loop_are_answered_as_openssh_would() {
        // wasmtime opens the path and answers NotDirectory for a file: the
        // host sends not-a-directory as no such file, as OpenSSH sends ENOTDIR.
        assert_eq!(fs_error(ErrorCode::NotDirectory), Error::NotADirectory);
        // ELOOP from the sandbox and the plugin's own link walk alike: a
        // failure with a reason, neither permission-denied nor a trap.
        assert_eq!(fs_error(ErrorCode::Loop), Error::Io("too many levels of symbolic links".into()));
        assert_eq!(fs_error(ErrorCode::Loop), crate::resolve::too_many_links());
    }
}
