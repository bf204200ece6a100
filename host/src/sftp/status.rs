//! Contract errors to SFTP v3 status codes, with short, bounded messages.

use russh_sftp::protocol::StatusCode;

use crate::plugin::StorageError;

pub fn status_of(error: &StorageError) -> StatusCode {
    match error {
        // As OpenSSH's server maps errno: ENOTDIR is no such file.
        StorageError::NotFound | StorageError::NotADirectory => StatusCode::NoSuchFile,
        StorageError::PermissionDenied => StatusCode::PermissionDenied,
        StorageError::InvalidInput(_) => StatusCode::BadMessage,
        StorageError::Unsupported => StatusCode::OpUnsupported,
        StorageError::AlreadyExists
        | StorageError::NotEmpty
        | StorageError::IsADirectory
        | StorageError::NoSpace
        | StorageError::Conflict
        | StorageError::Io(_)
        | StorageError::PluginFailed(_) => StatusCode::Failure,
    }
}

/// The message sent to the client: plugin internals are not forwarded for
/// sandbox failures, only that the backend failed.
pub fn message_of(error: &StorageError) -> String {
    match error {
        StorageError::PluginFailed(_) => "storage backend failure".into(),
        other => other.to_string(),
    }
}
