//! The one error type the rest of the host sees from a plugin call.

use super::bindings::WitError;

/// Longest plugin-supplied text the host keeps; longer text is cut.
pub const MAX_ERROR_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("already exists")]
    AlreadyExists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("operation unsupported")]
    Unsupported,
    #[error("no space left")]
    NoSpace,
    /// A reader's pinned version, or the file a write that keeps the
    /// content started from, was replaced or changed meanwhile.
    #[error("the file was changed by someone else meanwhile")]
    Conflict,
    #[error("i/o error: {0}")]
    Io(String),
    /// The plugin trapped, ran out of time or memory, or broke the contract.
    /// Its instance has been dropped when it trapped or timed out.
    #[error("plugin failure: {0}")]
    PluginFailed(String),
}

impl From<WitError> for StorageError {
    fn from(e: WitError) -> Self {
        match e {
            WitError::NotFound => Self::NotFound,
            WitError::PermissionDenied => Self::PermissionDenied,
            WitError::AlreadyExists => Self::AlreadyExists,
            WitError::NotEmpty => Self::NotEmpty,
            WitError::NotADirectory => Self::NotADirectory,
            WitError::IsADirectory => Self::IsADirectory,
            WitError::InvalidInput(msg) => Self::InvalidInput(bounded(msg)),
            WitError::Unsupported => Self::Unsupported,
            WitError::NoSpace => Self::NoSpace,
            WitError::Conflict => Self::Conflict,
            WitError::Io(msg) => Self::Io(bounded(msg)),
        }
    }
}

/// Cuts plugin text to `MAX_ERROR_TEXT` bytes on a char boundary and drops
/// control characters, so a plugin cannot flood logs or clients.
pub fn bounded(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    if text.chars().any(char::is_control) {
        text = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_text_on_char_boundary() {
        let long = "é".repeat(1000);
        let cut = bounded(long);
        assert!(cut.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn bounded_strips_control_characters() {
        assert_eq!(bounded("a\nb\x1b[31m".into()), "a b [31m");
    }
}
