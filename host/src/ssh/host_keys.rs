//! Host keys: the configured ones, or an ed25519 key generated once into the
//! state directory and reused after that. An existing key file that cannot be
//! read stops the server; it is never regenerated silently.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};

pub const GENERATED_KEY_FILE: &str = "ssh_host_ed25519_key";

pub fn load(configured: &[PathBuf], state_dir: &Path) -> anyhow::Result<Vec<PrivateKey>> {
    if !configured.is_empty() {
        return configured.iter().map(|path| read_key(path)).collect();
    }
    let path = state_dir.join(GENERATED_KEY_FILE);
    if path.exists() {
        return Ok(vec![read_key(&path)?]);
    }
    Ok(vec![generate(&path)?])
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading host key {}", path.display()))?;
    PrivateKey::from_openssh(text.as_bytes())
        .with_context(|| format!("host key {} is not an unencrypted OpenSSH private key", path.display()))
}

fn generate(path: &Path) -> anyhow::Result<PrivateKey> {
    let dir = path.parent().expect("key path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key.to_openssh(LineEnding::LF).context("encoding the host key")?;
    write_private(path, text.as_bytes()).with_context(|| format!("writing host key {}", path.display()))?;
    tracing::info!("generated a new ed25519 host key at {}", path.display());
    Ok(key)
}

/// Creates the file with mode 0600 and fails if it already exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("wasftp-hostkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load(&[], &dir).unwrap();
        let second = load(&[], &dir).unwrap();
        assert_eq!(fingerprint(&first[0]), fingerprint(&second[0]));
        std::fs::write(dir.join(GENERATED_KEY_FILE), "garbage").unwrap();
        assert!(load(&[], &dir).is_err(), "a broken key must not be replaced");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
