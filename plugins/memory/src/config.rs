//! The plugin's configuration and the quota that follows from it.

use wasftp_sdk::config as reserved;
use wasftp_sdk::config::parse_bytes;

/// Memory the instance keeps for itself beyond file content and the tree:
/// its code, data and stack (a few MiB), one call's buffers (a write chunk
/// in, a read or a listing page out: about a MiB), and allocator
/// fragmentation, which grows with the heap. What is left is the quota.
pub fn headroom(memory_limit: u64) -> u64 {
    const MIN_HEADROOM: u64 = 16 << 20;
    (memory_limit / 8).max(MIN_HEADROOM)
}

/// Parsed `init` configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    /// `max-bytes`: the operator's quota on file content and the tree.
    pub max_bytes: Option<u64>,
    /// The instance's memory cap, from the host's reserved key.
    pub memory_limit: Option<u64>,
    /// `set-info = "off"`: behave like a store that keeps no times or
    /// permissions of its own (set-info answers unsupported).
    pub no_set_info: bool,
    /// `max-file-size`: the largest file, declared to the host (which then
    /// refuses larger ones itself) and enforced here too.
    pub max_file_size: Option<u64>,
}

/// The quota in force and how it was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `None`: no limit (neither `max-bytes` nor a memory cap).
    pub bytes: Option<u64>,
    /// `max-bytes` was larger than the memory cap allows and was lowered.
    pub clamped: bool,
}

impl Config {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut cfg = Config {
            memory_limit: reserved::memory_limit(pairs)?,
            ..Config::default()
        };
        for (key, value) in pairs {
            match key.as_str() {
                "max-bytes" => {
                    cfg.max_bytes = Some(parse_bytes(value).ok_or_else(|| {
                        format!("config key `max-bytes`: invalid byte size {value:?}")
                    })?)
                }
                "max-file-size" => {
                    cfg.max_file_size = Some(parse_bytes(value).ok_or_else(|| {
                        format!("config key `max-file-size`: invalid byte size {value:?}")
                    })?)
                }
                "set-info" => {
                    cfg.no_set_info = match value.as_str() {
                        "on" => false,
                        "off" => true,
                        _ => return Err(format!("config key `set-info`: \"on\" or \"off\", not {value:?}")),
                    }
                }
                key if reserved::is_reserved(key) => {}
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        Ok(cfg)
    }

    /// `max-bytes`, but never more than the memory cap leaves after the
    /// headroom; without `max-bytes`, all of that.
    pub fn quota(&self) -> Quota {
        let ceiling = self
            .memory_limit
            .map(|limit| limit.saturating_sub(headroom(limit)));
        match (self.max_bytes, ceiling) {
            (Some(max), Some(ceiling)) if max > ceiling => Quota {
                bytes: Some(ceiling),
                clamped: true,
            },
            (Some(max), _) => Quota {
                bytes: Some(max),
                clamped: false,
            },
            (None, ceiling) => Quota {
                bytes: ceiling,
                clamped: false,
            },
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(&pairs)
    }

    #[test]
    fn config_parsing() {
        let p = |k: &str, v: &str| parse(&[(k, v)]);
        assert_eq!(p("max-bytes", "1024").unwrap().max_bytes, Some(1024));
        assert_eq!(p("max-bytes", "64K").unwrap().max_bytes, Some(64 << 10));
        assert_eq!(p("max-bytes", "2GiB").unwrap().max_bytes, Some(2 << 30));
        assert_eq!(p("max-bytes", "10mb").unwrap().max_bytes, Some(10 << 20));
        assert!(p("max-bytes", "lots").unwrap_err().contains("max-bytes"));
        assert!(p("max-bytes", "").is_err());
        assert!(p("colour", "blue").unwrap_err().contains("colour"));
        assert!(p("set-info", "off").unwrap().no_set_info);
        assert!(!p("set-info", "on").unwrap().no_set_info);
        assert!(p("set-info", "maybe").is_err());
        assert_eq!(parse(&[]).unwrap(), Config::default());
    }

    #[test]
    fn reserved_keys_are_read_or_ignored() {
        let cfg = parse(&[
            (reserved::MEMORY_LIMIT_BYTES, "268435456"),
            ("wasftp.some-future-key", "x"),
        ])
        .unwrap();
        assert_eq!(cfg.memory_limit, Some(256 << 20));
        assert!(
            parse(&[(reserved::MEMORY_LIMIT_BYTES, "big")])
                .unwrap_err()
                .contains(reserved::MEMORY_LIMIT_BYTES)
        );
    }

    #[test]
    fn the_default_quota_leaves_headroom_below_the_memory_cap() {
        let with_limit = |mib: u64| Config {
            memory_limit: Some(mib << 20),
            ..Config::default()
        };
        // An eighth of the cap, at least 16 MiB.
        assert_eq!(with_limit(2048).quota().bytes, Some(1792 << 20));
        assert_eq!(with_limit(256).quota().bytes, Some(224 << 20));
        assert_eq!(with_limit(64).quota().bytes, Some(48 << 20));
        assert_eq!(with_limit(8).quota().bytes, Some(0));
        assert_eq!(Config::default().quota().bytes, None, "no cap, no quota");
    }

    #[test]
    fn max_bytes_above_the_cap_is_clamped_and_below_it_is_kept() {
        let cfg = |max: u64| Config {
            max_bytes: Some(max),
            memory_limit: Some(64 << 20),
            ..Config::default()
        };
        let clamped = cfg(1 << 30).quota();
        assert_eq!((clamped.bytes, clamped.clamped), (Some(48 << 20), true));
        let kept = cfg(10 << 20).quota();
        assert_eq!((kept.bytes, kept.clamped), (Some(10 << 20), false));
        let no_cap = Config {
            max_bytes: Some(5),
            ..Config::default()
        };
        assert_eq!(no_cap.quota().bytes, Some(5));
    }
}
