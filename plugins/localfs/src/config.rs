//! The plugin's `init` configuration (`[plugins.NAME.config]`).

use wasftp_sdk::config::{is_reserved, memory_limit, parse_flag, parse_number};

/// Temporary upload files older than this are a crashed host's leftovers.
pub const DEFAULT_STALE_UPLOAD_SECS: u64 = 3600;
/// Below this, an upload whose client pauses briefly could be swept away.
pub const MIN_STALE_UPLOAD_SECS: u64 = 60;
/// How many entries one `maintain` call looks at, at most.
pub const DEFAULT_MAINTAIN_MAX_ENTRIES: u64 = 1_000_000;

/// Bounds of the listing cache (sorted names of recently listed directories).
const MIN_LISTING_CACHE: usize = 1 << 20;
const MAX_LISTING_CACHE: usize = 32 << 20;
const DEFAULT_LISTING_CACHE: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `durable`: each upload, and the directory it lands in, is synced
    /// before `finish` (and `copy-file`) returns.
    pub durable: bool,
    /// `stale-upload-secs`: `maintain` removes temporary upload files whose
    /// last write is older than this.
    pub stale_upload_secs: u64,
    /// `maintain-max-entries`: the most directory entries one `maintain` visits.
    pub maintain_max_entries: u64,
    /// `max-file-size`: the largest file written, in bytes (none: no limit).
    pub max_file_size: Option<u64>,
    /// The instance's memory cap, from the host's reserved key.
    pub memory_limit: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            durable: true,
            stale_upload_secs: DEFAULT_STALE_UPLOAD_SECS,
            maintain_max_entries: DEFAULT_MAINTAIN_MAX_ENTRIES,
            max_file_size: None,
            memory_limit: None,
        }
    }
}

impl Config {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut config = Config { memory_limit: memory_limit(pairs)?, ..Config::default() };
        for (key, value) in pairs {
            match key.as_str() {
                "durable" => config.durable = parse_flag(key, value)?,
                "stale-upload-secs" => {
                    config.stale_upload_secs = parse_number(key, value)?;
                    if config.stale_upload_secs < MIN_STALE_UPLOAD_SECS {
                        return Err(format!(
                            "`{key}`: at least {MIN_STALE_UPLOAD_SECS} (an upload idle that long is removed)"
                        ));
                    }
                }
                "maintain-max-entries" => {
                    config.maintain_max_entries = parse_number(key, value)?;
                    if config.maintain_max_entries == 0 {
                        return Err(format!("`{key}`: at least 1"));
                    }
                }
                "max-file-size" => {
                    let max = parse_number(key, value)?;
                    if max == 0 {
                        return Err(format!("`{key}`: at least 1 (leave it out for no limit)"));
                    }
                    config.max_file_size = Some(max);
                }
                k if is_reserved(k) => {}
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        Ok(config)
    }

    /// Bytes the listing cache may hold: a sixteenth of the instance's
    /// memory, within bounds, so a huge directory cannot crowd out the rest.
    pub fn listing_cache_bytes(&self) -> usize {
        match self.memory_limit {
            None => DEFAULT_LISTING_CACHE,
            Some(limit) => usize::try_from(limit / 16)
                .unwrap_or(MAX_LISTING_CACHE)
                .clamp(MIN_LISTING_CACHE, MAX_LISTING_CACHE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<_> = items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse(&pairs)
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.durable);
        assert_eq!(config.stale_upload_secs, 3600);
        assert_eq!(config.maintain_max_entries, 1_000_000);
        assert_eq!(config.max_file_size, None);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(&[
            ("durable", "false"),
            ("stale-upload-secs", "7200"),
            ("maintain-max-entries", "5000"),
            ("max-file-size", "1073741824"),
        ])
        .unwrap();
        assert!(!config.durable);
        assert_eq!(config.stale_upload_secs, 7200);
        assert_eq!(config.maintain_max_entries, 5000);
        assert_eq!(config.max_file_size, Some(1 << 30));
        assert!(parse(&[("durable", "on")]).unwrap().durable);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("durable", "maybe"),
            ("stale-upload-secs", "soon"),
            ("stale-upload-secs", "59"),
            ("maintain-max-entries", "-1"),
            ("maintain-max-entries", "0"),
            ("max-file-size", "1G"),
            ("max-file-size", "0"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_and_reserved_ones_accepted() {
        assert!(parse(&[("durabel", "true")]).unwrap_err().contains("durabel"));
        let config = parse(&[("wasftp.memory-limit-bytes", "268435456"), ("wasftp.future", "x")]).unwrap();
        assert_eq!(config.memory_limit, Some(256 << 20));
        assert!(parse(&[("wasftp.memory-limit-bytes", "lots")]).is_err());
    }

    #[test]
    fn the_listing_cache_follows_the_memory_cap_within_bounds() {
        let with = |limit: Option<u64>| Config { memory_limit: limit, ..Config::default() }.listing_cache_bytes();
        assert_eq!(with(None), 16 << 20);
        assert_eq!(with(Some(256 << 20)), 16 << 20);
        assert_eq!(with(Some(8 << 20)), 1 << 20);
        assert_eq!(with(Some(16 << 30)), 32 << 20);
    }
}
