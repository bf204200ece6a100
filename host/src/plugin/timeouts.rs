//! How long a call may take, by what it does. Two clocks bound a call:
//! the guest's own computing time (the epoch deadline, `call_deadline`),
//! and the wall clock, which also counts time the guest spends waiting in a
//! host call (a network request). Object storage needs generous wall
//! clocks: completing a multipart upload or copying a large object takes
//! minutes, while a stat should answer in seconds.

use std::time::Duration;

/// What a call does, for its wall-clock limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Lookups, listings, opening handles, small changes.
    Metadata,
    /// Reading or writing content.
    Data,
    /// Making content appear: `finish`, `rename`, `copy-file`, housekeeping.
    Commit,
}

impl CallKind {
    /// The kind of a contract function, by its name.
    pub fn of(op: &str) -> Self {
        match op {
            "read" | "write-chunk" | "set-size" => Self::Data,
            "finish" | "rename" | "copy-file" | "abort" | "abort-orphan" | "maintain" | "begin-write-keep"
            | "export-state" | "import-state" => Self::Commit,
            _ => Self::Metadata,
        }
    }
}

/// Wall-clock limits per kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    pub metadata: Duration,
    pub data: Duration,
    pub commit: Duration,
}

impl Default for CallTimeouts {
    fn default() -> Self {
        Self {
            metadata: Duration::from_secs(30),
            data: Duration::from_secs(120),
            commit: Duration::from_secs(600),
        }
    }
}

impl CallTimeouts {
    pub fn limit(&self, kind: CallKind) -> Duration {
        match kind {
            CallKind::Metadata => self.metadata,
            CallKind::Data => self.data,
            CallKind::Commit => self.commit,
        }
    }
}

/// Whether a contract function may change stored data: a call of it cut
/// at its wall-clock limit may have taken effect (a request already sent
/// to object storage), and the client is told the outcome is unknown.
pub fn may_change_data(op: &str) -> bool {
    !matches!(
        op,
        "describe" | "open-session" | "file-info" | "link-info" | "list-dir" | "open-read" | "read" | "reader-info"
            | "read-link" | "space" | "recovery-token" | "drop" | "export-state"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_get_the_long_clock_and_lookups_the_short_one() {
        let timeouts = CallTimeouts::default();
        assert_eq!(CallKind::of("finish"), CallKind::Commit);
        assert_eq!(CallKind::of("copy-file"), CallKind::Commit);
        assert_eq!(CallKind::of("begin-write-keep"), CallKind::Commit, "it may copy the content it keeps");
        assert_eq!(CallKind::of("read"), CallKind::Data);
        assert_eq!(CallKind::of("file-info"), CallKind::Metadata);
        assert!(timeouts.limit(CallKind::Commit) > timeouts.limit(CallKind::Data));
        assert!(timeouts.limit(CallKind::Data) > timeouts.limit(CallKind::Metadata));
        assert!(may_change_data("rename") && may_change_data("write-chunk") && may_change_data("finish"));
        assert!(!may_change_data("file-info") && !may_change_data("read"));
    }
}
