//! The plugin's `init` configuration.

use wasftp_sdk::config::{is_reserved, parse_bytes, parse_flag, parse_number};

/// S3 needs parts of at least 5 MiB, except the last.
pub const MIN_PART: u64 = 5 << 20;
/// The most S3 copies in one request (CopyObject, UploadPartCopy).
pub const MAX_COPY: u64 = 5 << 30;
/// S3 allows 5 GiB, but a part is held in the instance's memory (with a
/// chunk arriving and a copy being sent: about three times its size).
pub const MAX_PART: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub path_style: bool,
    /// Sign request payloads (SHA-256 of every part); off: `UNSIGNED-PAYLOAD`,
    /// integrity left to TLS (use an https endpoint beyond loopback).
    pub sign_payload: bool,
    /// OPEN for writing checks what OpenSSH's server checks (the name is
    /// not a directory, the parent is one). Off (the default): no S3 call
    /// at OPEN, and a missing parent comes into being with the file, as in
    /// S3 itself.
    pub open_checks: bool,
    /// Prepended to every key (after normalising: empty or ending in `/`).
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub read_chunk: u32,
    pub part_size: u32,
    /// Larger objects are copied (rename, copy-data) in parts of this size.
    pub max_single_copy: u64,
    /// Multipart uploads under the prefix older than this are aborted by `maintain`.
    pub orphan_age_secs: u64,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    /// Attempts per request (throttling and 5xx are retried).
    pub max_attempts: u32,
}

impl Config {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut config = Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            sign_payload: false,
            open_checks: false,
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            read_chunk: 8 << 20,
            part_size: 8 << 20,
            max_single_copy: MAX_COPY,
            orphan_age_secs: 24 * 3600,
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
            max_attempts: 3,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "endpoint" => config.endpoint = value.trim_end_matches('/').to_string(),
                "region" => config.region = value.clone(),
                "bucket" => config.bucket = value.clone(),
                "path-style" => config.path_style = parse_flag(key, value)?,
                "sign-payload" => config.sign_payload = parse_flag(key, value)?,
                "open-checks" => config.open_checks = parse_flag(key, value)?,
                "prefix" => config.prefix = key_prefix(value).map_err(|e| format!("`prefix`: {e}"))?,
                "access-key-id" => config.access_key_id = value.clone(),
                "secret-access-key" => config.secret_access_key = value.clone(),
                "read-chunk" => config.read_chunk = size(key, value, 64 << 10, MAX_PART)? as u32,
                "part-size" => config.part_size = size(key, value, MIN_PART, MAX_PART)? as u32,
                "max-single-copy" => config.max_single_copy = size(key, value, MIN_PART, MAX_COPY)?,
                "orphan-age-secs" => config.orphan_age_secs = parse_number(key, value)?,
                "connect-timeout-secs" => config.connect_timeout_secs = parse_number(key, value)?,
                "read-timeout-secs" => config.read_timeout_secs = parse_number(key, value)?,
                "max-attempts" => config.max_attempts = parse_number(key, value)?.clamp(1, 10) as u32,
                k if is_reserved(k) => {}
                // Never echo a value: it may be a secret put under the wrong key.
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        for (name, value) in [("endpoint", &config.endpoint), ("bucket", &config.bucket)] {
            if value.is_empty() {
                return Err(format!("`{name}` is required"));
            }
        }
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err("`endpoint` must start with http:// or https://".into());
        }
        if config.access_key_id.is_empty() || config.secret_access_key.is_empty() {
            return Err("`access-key-id` and `secret-access-key` are required".into());
        }
        if let Some(limit) = wasftp_sdk::config::memory_limit(pairs)?
            && u64::from(config.part_size) * 4 > limit
        {
            return Err(format!(
                "`part-size` {} needs about four times as much memory; the instance may use {limit} bytes",
                config.part_size
            ));
        }
        Ok(config)
    }
}

/// A key prefix as given (`tenants/42`, `tenants/42/`): empty, or ending
/// in one `/`, never starting with one, no empty, `.` or `..` segments.
pub fn key_prefix(value: &str) -> Result<String, String> {
    let trimmed = value.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err("empty, `.` or `..` segments are not allowed".into());
    }
    if trimmed.contains('\0') {
        return Err("NUL is not allowed".into());
    }
    Ok(format!("{trimmed}/"))
}



fn size(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    let bytes = parse_bytes(value).ok_or_else(|| format!("`{key}`: not a size"))?;
    if !(min..=max).contains(&bytes) {
        return Err(format!("`{key}`: must be between {min} and {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const REQUIRED: [(&str, &str); 4] = [
        ("endpoint", "http://127.0.0.1:3900/"),
        ("bucket", "b"),
        ("access-key-id", "GK1"),
        ("secret-access-key", "s3cr3t"),
    ];

    #[test]
    fn defaults_and_required_keys() {
        let config = Config::parse(&pairs(&REQUIRED)).unwrap();
        assert_eq!(config.endpoint, "http://127.0.0.1:3900");
        assert_eq!(config.part_size, 8 << 20);
        assert!(config.path_style);
        let missing = Config::parse(&pairs(&REQUIRED[..3])).unwrap_err();
        assert!(missing.contains("secret-access-key") && !missing.contains("GK1"), "{missing}");
    }

    #[test]
    fn sizes_are_bounded_and_unknown_values_never_echoed() {
        let mut items = REQUIRED.to_vec();
        items.push(("part-size", "1M"));
        assert!(Config::parse(&pairs(&items)).unwrap_err().contains("part-size"));
        let mut items = REQUIRED.to_vec();
        items.push(("secret", "hunter2"));
        let refused = Config::parse(&pairs(&items)).unwrap_err();
        assert!(refused.contains("`secret`") && !refused.contains("hunter2"), "{refused}");
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(key_prefix("").unwrap(), "");
        assert_eq!(key_prefix("/").unwrap(), "");
        assert_eq!(key_prefix("tenants/42").unwrap(), "tenants/42/");
        assert_eq!(key_prefix("/tenants/42/").unwrap(), "tenants/42/");
        assert!(key_prefix("a//b").is_err());
        assert!(key_prefix("a/../b").is_err());
    }
}
