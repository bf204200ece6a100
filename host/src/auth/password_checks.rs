//! Argon2 password verification on a few dedicated threads.
//!
//! One verification with the default parameters needs 19 MiB. Run on the
//! blocking pool, each login got a fresh allocation on whichever thread it
//! landed, and the allocator kept the freed blocks per thread: 30 logins
//! left 210 MiB behind, 64 concurrent ones 1.25 GiB. Here a fixed number of
//! threads each keeps one block buffer and reuses it, so the memory is
//! bounded by `threads x m` whatever the number of logins; the others wait
//! in the queue, which is bounded by the connections allowed to wait for
//! a login (each has at most one verification pending) and by the login
//! grace time that closes them.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// Largest `m` (KiB) accepted in a configured hash: every check thread may
/// keep a buffer this large.
const MAX_MEMORY_KIB: u32 = 1 << 20;

/// Most verification threads when the count is taken from the machine.
const DEFAULT_MAX_THREADS: usize = 4;

/// An argon2 PHC hash, decoded once.
pub struct StoredHash {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    expected: Output,
}

impl StoredHash {
    pub fn parse(phc: &str) -> anyhow::Result<Self> {
        let hash = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("not a PHC string: {e}"))?;
        let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| anyhow::anyhow!("not an argon2 hash: {e}"))?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).map_err(|e| anyhow::anyhow!("argon2 version: {e}"))?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        anyhow::ensure!(
            params.m_cost() <= MAX_MEMORY_KIB,
            "argon2 memory cost m={} KiB is over the {MAX_MEMORY_KIB} KiB this server allows",
            params.m_cost()
        );
        let salt = hash.salt.ok_or_else(|| anyhow::anyhow!("the hash has no salt"))?;
        let mut salt_buf = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|e| anyhow::anyhow!("salt: {e}"))?.to_vec();
        let expected = hash.hash.ok_or_else(|| anyhow::anyhow!("the hash has no output"))?;
        Ok(Self { algorithm, version, params, salt, expected })
    }

    /// Whether `password` matches, computed in `blocks` (grown as needed).
    fn matches(&self, password: &[u8], blocks: &mut Vec<Block>) -> bool {
        let needed = self.params.block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        let mut out = [0u8; Output::MAX_LENGTH];
        let Some(out) = out.get_mut(..self.expected.len()) else {
            return false;
        };
        let argon2 = Argon2::new(self.algorithm, self.version, self.params.clone());
        if argon2.hash_password_into_with_memory(password, &self.salt, out, &mut blocks[..needed]).is_err() {
            return false;
        }
        // Output's equality is constant-time.
        Output::new(out).is_ok_and(|computed| computed == self.expected)
    }
}

struct Job {
    hash: Arc<StoredHash>,
    password: Vec<u8>,
    reply: oneshot::Sender<bool>,
}

/// The verification threads and their queue. Dropping it ends the threads
/// once the queue is empty.
pub struct PasswordChecks {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

impl PasswordChecks {
    /// `threads` = 0: the number of cores, at most 4.
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(DEFAULT_MAX_THREADS),
            n => n,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("wasftp-password-{i}"))
                .spawn(move || check_loop(&queue))
                .map_err(|e| anyhow::anyhow!("starting a password check thread: {e}"))?;
        }
        Ok(Self { jobs, threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether `password` matches `hash`; waits for a free thread.
    pub async fn verify(&self, hash: Arc<StoredHash>, password: &str) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job { hash, password: password.as_bytes().to_vec(), reply };
        if self.jobs.send(job).is_err() {
            tracing::error!("password check threads are gone; refusing the login");
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

fn check_loop(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        // Only the receive holds the lock; the work runs unlocked.
        let job = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok(job) = job else { return };
        // The connection gave up (closed, or out of grace time): skip the work.
        if job.reply.is_closed() {
            continue;
        }
        let ok = job.hash.matches(&job.password, &mut blocks);
        let _ = job.reply.send(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_like_the_argon2_crate() {
        let checks = PasswordChecks::new(2).unwrap();
        let hash = Arc::new(StoredHash::parse(&crate::auth::hash_password("s3cret").unwrap()).unwrap());
        assert!(checks.verify(hash.clone(), "s3cret").await);
        assert!(!checks.verify(hash.clone(), "s3creT").await);
        assert!(!checks.verify(hash, "").await);
        // Another algorithm variant and parameters, hashed by the crate itself.
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = Params::new(4096, 3, 2, Some(24)).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let hash = Arc::new(StoredHash::parse(&phc).unwrap());
        assert!(checks.verify(hash.clone(), "pw").await);
        assert!(!checks.verify(hash, "pW").await);
    }

    #[test]
    fn rejects_what_is_not_argon2() {
        assert!(StoredHash::parse("plain").is_err());
        assert!(StoredHash::parse("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err());
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(StoredHash::parse(huge).is_err());
    }
}
