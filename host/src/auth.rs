//! Users and how they prove who they are: argon2 password hashes and
//! authorized_keys lines. What a successful login yields is a `Principal`:
//! the session context the plugin will see.

mod password_checks;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::Argon2;
use russh::keys::PublicKey;

use crate::config::{Config, UserConfig};
use password_checks::{PasswordChecks, StoredHash};

/// An authenticated user and where their session goes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub tenant: String,
    pub plugin: String,
    pub home: String,
    pub attributes: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
}

struct UserEntry {
    principal: Principal,
    password_hash: Option<Arc<StoredHash>>,
    keys: Vec<PublicKey>,
}

/// The user database built from the config.
pub struct Users {
    users: HashMap<String, UserEntry>,
    /// Verified against for unknown users, so timing does not tell who exists.
    decoy_hash: Arc<StoredHash>,
    password_checks: PasswordChecks,
}

impl Users {
    pub fn from_config(config: &Config) -> anyhow::Result<Arc<Self>> {
        let mut users = HashMap::new();
        for user in &config.users {
            users.insert(user.name.clone(), UserEntry::from_config(user)?);
        }
        let decoy_hash = Arc::new(StoredHash::parse(&hash_password("decoy-password-never-matches")?)?);
        let password_checks = PasswordChecks::new(config.limits.password_check_threads)?;
        Ok(Arc::new(Self { users, decoy_hash, password_checks }))
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Threads verifying passwords (each keeps one argon2 buffer).
    pub fn password_check_threads(&self) -> usize {
        self.password_checks.threads()
    }

    /// Checks a password in constant time (argon2 verification); runs the
    /// same work for unknown users. Waits for a free verification thread.
    pub async fn check_password(&self, user: &str, password: &str) -> Option<Principal> {
        let entry = self.users.get(user);
        let hash = entry.and_then(|e| e.password_hash.clone()).unwrap_or_else(|| self.decoy_hash.clone());
        let ok = self.password_checks.verify(hash, password).await;
        match entry {
            Some(entry) if ok && entry.password_hash.is_some() => Some(entry.principal.clone()),
            _ => None,
        }
    }

    /// Whether `key` is one of the user's authorized keys.
    pub fn check_key(&self, user: &str, key: &PublicKey) -> Option<Principal> {
        let entry = self.users.get(user)?;
        entry.keys.iter().any(|k| k.key_data() == key.key_data()).then(|| entry.principal.clone())
    }
}

impl UserEntry {
    fn from_config(user: &UserConfig) -> anyhow::Result<Self> {
        let password_hash = match &user.password_hash {
            Some(hash) => Some(Arc::new(StoredHash::parse(hash).map_err(|e| {
                anyhow::anyhow!("user {}: password_hash is not a usable argon2 PHC string: {e}", user.name)
            })?)),
            None => None,
        };
        let mut keys = Vec::new();
        for line in &user.authorized_keys {
            keys.extend(parse_authorized_key(line).with_context(|| format!("user {}: authorized_keys", user.name))?);
        }
        if let Some(path) = &user.authorized_keys_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("user {}: reading {}", user.name, path.display()))?;
            for line in text.lines() {
                keys.extend(parse_authorized_key(line).with_context(|| format!("user {}: {}", user.name, path.display()))?);
            }
        }
        anyhow::ensure!(
            user.password_hash.is_some() || !keys.is_empty(),
            "user {} has neither a password_hash nor an authorized key",
            user.name
        );
        Ok(Self {
            principal: Principal {
                user: user.name.clone(),
                tenant: user.tenant().to_string(),
                plugin: user.plugin.clone(),
                home: user.home.clone(),
                attributes: user.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                uid: user.uid,
                gid: user.gid,
            },
            password_hash,
            keys,
        })
    }
}

/// One authorized_keys line: `[options] type base64 [comment]`. Blank lines
/// and comments give nothing; options are not supported and are an error.
fn parse_authorized_key(line: &str) -> anyhow::Result<Option<PublicKey>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key = PublicKey::from_openssh(line).map_err(|e| anyhow::anyhow!("not a public key line ({e}): {line:.40}"))?;
    Ok(Some(key))
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(StoredHash::parse(&hash).is_ok());
    }

    #[test]
    fn authorized_key_lines() {
        assert!(parse_authorized_key("# comment").unwrap().is_none());
        assert!(parse_authorized_key("").unwrap().is_none());
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMn2w7Y4Q7gNq4zj0s7b8m2Fq0bV9Y7m3kq2cV5lq1Xk test";
        assert!(parse_authorized_key(key).unwrap().is_some());
        assert!(parse_authorized_key("ssh-ed25519 notbase64").is_err());
    }
}
