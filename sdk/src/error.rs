//! Short constructors for [`Error`] variants that carry text.

use crate::Error;

/// `Result` with the contract's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::Io(msg)`.
pub fn io_error(msg: impl Into<String>) -> Error {
    Error::Io(msg.into())
}

/// `Error::InvalidInput(msg)`.
pub fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidInput(msg.into())
}

/// `Error::Conflict`.
pub fn conflict() -> Error {
    Error::Conflict
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound,
            K::PermissionDenied => Error::PermissionDenied,
            K::AlreadyExists => Error::AlreadyExists,
            K::DirectoryNotEmpty => Error::NotEmpty,
            K::NotADirectory => Error::NotADirectory,
            K::IsADirectory => Error::IsADirectory,
            K::InvalidInput | K::InvalidData => Error::InvalidInput(e.to_string()),
            K::Unsupported => Error::Unsupported,
            K::StorageFull | K::QuotaExceeded => Error::NoSpace,
            _ => Error::Io(e.to_string()),
        }
    }
}
