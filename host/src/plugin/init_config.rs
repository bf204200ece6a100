//! What a plugin's `init` receives: the operator's key/values for it plus the
//! host's reserved `wasftp.*` keys (documented at `init` in `wit/storage.wit`).

use super::PluginSettings;

/// Keys starting with this belong to the host; operators cannot set them.
pub const RESERVED_PREFIX: &str = "wasftp.";
/// The cap on the instance's linear memory, in bytes (decimal).
pub const MEMORY_LIMIT_KEY: &str = "wasftp.memory-limit-bytes";

/// The operator's configuration, checked. An operator key in the reserved
/// namespace is refused: it would let a config lie to the plugin about what
/// the host enforces.
pub fn build(settings: &PluginSettings) -> anyhow::Result<Vec<(String, String)>> {
    if let Some((key, _)) = settings.config.iter().find(|(key, _)| key.starts_with(RESERVED_PREFIX)) {
        anyhow::bail!("config key `{key}` is reserved for the host (keys starting with `{RESERVED_PREFIX}`)");
    }
    Ok(settings.config.clone())
}

/// What one instance's `init` gets: the configuration with the host's keys
/// added (its memory cap is its tenant's).
pub fn with_memory_limit(config: &[(String, String)], memory_limit: usize) -> Vec<(String, String)> {
    let mut config = config.to_vec();
    config.push((MEMORY_LIMIT_KEY.into(), memory_limit.to_string()));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_is_added_to_the_operator_keys() {
        let settings = PluginSettings {
            memory_limit: 64 << 20,
            config: vec![("max-bytes".into(), "10M".into())],
            ..PluginSettings::default()
        };
        let config = with_memory_limit(&build(&settings).unwrap(), settings.memory_limit);
        assert_eq!(
            config,
            vec![("max-bytes".into(), "10M".into()), (MEMORY_LIMIT_KEY.into(), (64u64 << 20).to_string())]
        );
    }

    #[test]
    fn operators_cannot_set_reserved_keys() {
        let settings = PluginSettings {
            config: vec![(MEMORY_LIMIT_KEY.into(), "1".into())],
            ..PluginSettings::default()
        };
        let error = build(&settings).unwrap_err().to_string();
        assert!(error.contains(MEMORY_LIMIT_KEY) && error.contains("reserved"), "{error}");
    }
}
