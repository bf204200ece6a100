//! The `init` configuration: reserved keys the host adds to the operator's.

/// Keys starting with this are the host's; accept (or ignore) unknown ones.
pub const RESERVED_PREFIX: &str = "wasftp.";

/// The cap on the instance's linear memory, in bytes (decimal).
pub const MEMORY_LIMIT_BYTES: &str = "wasftp.memory-limit-bytes";

/// Whether `key` is one the host reserves (never an operator's setting).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The instance's memory cap, if the host gave one; an error names the key.
pub fn memory_limit(config: &[(String, String)]) -> Result<Option<u64>, String> {
    match config.iter().find(|(key, _)| key == MEMORY_LIMIT_BYTES) {
        None => Ok(None),
        Some((_, value)) => value
            .parse()
            .map(Some)
            .map_err(|_| format!("config key `{MEMORY_LIMIT_BYTES}`: not a byte count: {value:?}")),
    }
}

/// A yes/no setting: `true`/`on`/`yes` or `false`/`off`/`no`; an error
/// names the key (not the value, which could be a misplaced secret).
pub fn parse_flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" => Ok(false),
        _ => Err(format!("`{key}`: expected true or false")),
    }
}

/// A whole number setting; an error names the key.
pub fn parse_number(key: &str, value: &str) -> Result<u64, String> {
    value.trim().parse().map_err(|_| format!("`{key}`: not a number"))
}

/// `1234`, `64K`, `10M`, `2G`, `1T` (binary multiples, optional `B`/`iB`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let upper = s.to_ascii_uppercase();
    let t = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn memory_limit_is_read_from_its_reserved_key() {
        assert_eq!(memory_limit(&pairs(&[])), Ok(None));
        assert_eq!(
            memory_limit(&pairs(&[
                ("max-bytes", "1"),
                (MEMORY_LIMIT_BYTES, "268435456")
            ])),
            Ok(Some(256 << 20))
        );
        assert!(
            memory_limit(&pairs(&[(MEMORY_LIMIT_BYTES, "lots")]))
                .unwrap_err()
                .contains(MEMORY_LIMIT_BYTES)
        );
    }

    #[test]
    fn reserved_keys_are_recognised_by_prefix() {
        assert!(is_reserved(MEMORY_LIMIT_BYTES));
        assert!(is_reserved("wasftp.future-key"));
        assert!(!is_reserved("max-bytes"));
    }
}
