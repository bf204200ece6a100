//! A real S3 server for the tests: garage on loopback, started in a
//! temporary directory and stopped when dropped. Set `WASFTP_S3_ENDPOINT`,
//! `WASFTP_S3_BUCKET`, `WASFTP_S3_REGION`, `WASFTP_S3_ACCESS_KEY_ID` and
//! `WASFTP_S3_SECRET_ACCESS_KEY` to run the same tests against another S3
//! (AWS, MinIO): each test works under a prefix of its own.
//!
//! `S3Bucket::client` is a host-side `aws-sdk-s3` client, for checking what
//! landed in the bucket without going through the server.

#![allow(dead_code)]

pub mod fault_proxy;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tempfile::TempDir;

const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RPC_SECRET: &str = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6";

/// A bucket to test in, and what it takes to reach it.
pub struct S3Bucket {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// A prefix no other test uses (`wasftp-test-<random>/`).
    pub prefix: String,
    _garage: Option<Garage>,
    /// Held while the test runs: see `ONE_AT_A_TIME`.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// The S3 tests of a binary run one at a time: each starts a garage, a
/// server and real clients, and a dozen of them at once on two cores made
/// timings, not the code, decide the outcome.
static ONE_AT_A_TIME: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> = std::sync::LazyLock::new(Default::default);

struct Garage {
    child: Child,
    _dir: TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Bucket {
    /// The configured S3, or a fresh garage.
    pub async fn start() -> S3Bucket {
        let turn = ONE_AT_A_TIME.clone().lock_owned().await;
        let prefix = format!("wasftp-test-{:016x}/", rand::random::<u64>());
        if let Ok(endpoint) = std::env::var("WASFTP_S3_ENDPOINT") {
            let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("WASFTP_S3_ENDPOINT is set, {name} is not"));
            return S3Bucket {
                endpoint,
                region: std::env::var("WASFTP_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
                bucket: var("WASFTP_S3_BUCKET"),
                access_key_id: var("WASFTP_S3_ACCESS_KEY_ID"),
                secret_access_key: var("WASFTP_S3_SECRET_ACCESS_KEY"),
                prefix,
                _garage: None,
                _turn: turn,
            };
        }
        let bucket = tokio::task::spawn_blocking(move || start_garage(prefix, turn)).await.expect("starting garage");
        // Ready once the bucket answers (the port is bound before the layout is applied).
        let client = bucket.client();
        let started = std::time::Instant::now();
        while client.head_bucket().bucket(&bucket.bucket).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "garage's bucket did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bucket
    }

    /// A host-side client of the bucket's S3.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(&self.access_key_id, &self.secret_access_key, None, None, "test"))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            // As the plugin does: not every S3 server checks the newer checksums.
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Every key under `prefix` (the test's own prefix first), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let client = self.client();
        let mut keys = Vec::new();
        let mut pages = client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            for object in page.expect("listing the bucket").contents() {
                keys.push(object.key().unwrap().strip_prefix(&self.prefix).unwrap().to_string());
            }
        }
        keys.sort();
        keys
    }

    /// The bytes of the object at `key` under the test's prefix.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        let object = self.client().get_object().bucket(&self.bucket).key(format!("{}{key}", self.prefix)).send().await;
        let object = object.unwrap_or_else(|e| panic!("getting {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
        object.body.collect().await.expect("reading the object").into_bytes().to_vec()
    }

    /// Multipart uploads in progress under the test's prefix.
    pub async fn multipart_uploads(&self) -> usize {
        let listed = self.client().list_multipart_uploads().bucket(&self.bucket).prefix(&self.prefix).send().await;
        listed.expect("listing multipart uploads").uploads().len()
    }

    /// The `[plugins.s3]` settings for this bucket, keys under `prefix`.
    pub fn plugin_config(&self) -> wasftp::config::PluginConfig {
        self.plugin_config_via(&self.endpoint)
    }

    /// The same, reaching S3 through `endpoint` (a fault proxy).
    pub fn plugin_config_via(&self, endpoint: &str) -> wasftp::config::PluginConfig {
        let mut plugin = wasftp::config::PluginConfig { source: "bundled:s3".into(), ..Default::default() };
        plugin.http_allow = vec![endpoint.to_string()];
        for (key, value) in [
            ("endpoint", endpoint),
            ("region", self.region.as_str()),
            ("bucket", self.bucket.as_str()),
            ("prefix", self.prefix.as_str()),
            ("access-key-id", self.access_key_id.as_str()),
            ("secret-access-key", self.secret_access_key.as_str()),
        ] {
            plugin.config.insert(key.into(), value.into());
        }
        plugin
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn garage(config: &Path, args: &[&str]) -> String {
    let out = Command::new("garage")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("running garage (bash .ci/run installs it)");
    assert!(out.status.success(), "garage {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_garage(prefix: String, turn: tokio::sync::OwnedMutexGuard<()>) -> S3Bucket {
    let dir = tempfile::Builder::new().prefix("wasftp-garage-").tempdir().unwrap();
    let (s3_port, rpc_port) = (free_port(), free_port());
    let config = dir.path().join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{RPC_SECRET}\"\n\n\
             [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n",
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new("garage")
        .arg("-c")
        .arg(&config)
        .arg("server")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting garage (bash .ci/run installs it)");
    let mut garage_process = Garage { child, _dir: dir };
    // The node answers once its RPC is up.
    let started = Instant::now();
    let node = loop {
        if let Ok(Some(status)) = garage_process.child.try_wait() {
            let log = std::fs::read_to_string(garage_process._dir.path().join("server.log")).unwrap_or_default();
            panic!("garage exited at start ({status}):\n{log}");
        }
        let out = Command::new("garage").arg("-c").arg(&config).args(["node", "id", "-q"]).output().unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().split('@').next().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "garage did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // `node id` answers from the key on disk; `status` needs the RPC up.
    while !Command::new("garage").arg("-c").arg(&config).arg("status").output().unwrap().status.success() {
        assert!(started.elapsed() < Duration::from_secs(30), "garage's RPC did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    garage(&config, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
    garage(&config, &["layout", "apply", "--version", "1"]);
    garage(&config, &["key", "import", "--yes", "-n", "ci", KEY_ID, SECRET]);
    garage(&config, &["bucket", "create", "wasftp"]);
    garage(&config, &["bucket", "allow", "--read", "--write", "--owner", "wasftp", "--key", "ci"]);
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    S3Bucket {
        endpoint,
        region: "us-east-1".into(),
        bucket: "wasftp".into(),
        access_key_id: KEY_ID.into(),
        secret_access_key: SECRET.into(),
        prefix,
        _garage: Some(garage_process),
        _turn: turn,
    }
}

/// Bytes that differ from offset to offset (and with `seed`).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8).collect()
}

/// Waits up to 20 s for `check` to hold (it asks the bucket, or a counter).
pub async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
