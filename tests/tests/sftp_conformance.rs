//! The SFTP-level half of the conformance suite (`tests/clients/
//! sftp_conformance.py`, through paramiko) against every plugin behind the
//! real server: the memory plugin, the slow test plugin with and without
//! random writes, the S3 plugin over a real S3 server (garage), the
//! local-folder plugin on a folder per tenant, and the
//! example plugins in JavaScript (js-quota), Python (python-tree) and C
//! (c-tree), the last two checked read-only. What a client sees must not depend on the plugin.

mod client_support;
mod example_support;
mod runtime_support;
mod s3_support;
mod server_support;

use std::time::Duration;

use server_support::{TestServer, UserSpec, start_with};

const LIMIT: Duration = Duration::from_secs(240);

/// Serves user `alice` from `plugin`.
async fn serve(plugin: wasftp::config::PluginConfig) -> TestServer {
    start_with([UserSpec::new("alice")], |config| {
        config.plugins.insert("checked".into(), plugin);
        config.users[0].plugin = "checked".into();
    })
    .await
}

async fn suite(server: &TestServer, env: &[(&str, &str)]) {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-u").arg(client_support::scripts_dir().join("sftp_conformance.py"));
    cmd.env("WASFTP_PORT", server.port().to_string())
        .env("WASFTP_USER", "alice")
        .env("WASFTP_PASSWORD", &server.user("alice").password)
        .envs(env.iter().copied());
    let out = server_support::run(cmd, LIMIT).await;
    println!("{out}");
    out.assert_success("the SFTP conformance suite");
    assert!(out.stdout.contains(" passed, 0 failed"), "{out}");
}

fn plugin(source: String, config: &[(&str, &str)]) -> wasftp::config::PluginConfig {
    let mut plugin = wasftp::config::PluginConfig { source, ..Default::default() };
    plugin.config.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    plugin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_plugin() {
    let server = serve(plugin("bundled:memory".into(), &[])).await;
    suite(&server, &[]).await;
    server.shutdown().await;
}

/// Without random writes (with and without append) the host gives clients the same
/// behaviour (in-order parts, the spool of a read-write handle).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slow_plugin_with_and_without_random_writes() {
    for config in [
        &[][..],
        &[("random-write", "off"), ("write-chunk", "4096")][..],
        &[("random-write", "off"), ("append", "off"), ("write-chunk", "4096")][..],
    ] {
        let server = serve(plugin(env!("WASFTP_SLOW_PLUGIN").into(), config)).await;
        suite(&server, &[]).await;
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_s3_plugin_over_a_real_s3_server() {
    let bucket = s3_support::S3Bucket::start().await;
    let server = serve(bucket.plugin_config()).await;
    suite(&server, &[]).await;
    server.shutdown().await;
    assert!(bucket.keys().await.is_empty(), "the suite left {:?} in the bucket", bucket.keys().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_localfs_plugin_on_a_folder() {
    let root = tempfile::tempdir().unwrap();
    let mut localfs = plugin("bundled:localfs".into(), &[]);
    localfs.preopen = Some(wasftp::config::PreopenConfig {
        dir: root.path().into(),
        mode: wasftp::config::PreopenMode::Rw,
        per_tenant: true,
    });
    let server = serve(localfs).await;
    suite(&server, &[]).await;
    server.shutdown().await;
    let left: Vec<_> = std::fs::read_dir(root.path().join("alice")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the suite left {left:?} in alice's folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_javascript_example() {
    let path = example_support::example_plugin("js-quota").await;
    let rt = runtime_support::runtime();
    // Compiled here first, so the server's start finds it in the cache.
    example_support::load(&rt, "js-quota", &path, Default::default()).await;
    let server = serve(plugin(path.display().to_string(), &[])).await;
    suite(&server, &[]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_example_read_only() {
    let path = example_support::example_plugin("python-tree").await;
    let config = [("1.0:/docs/guide.txt", "the guide, in a few more words than one"), ("1.0:/README.txt", "hello")];
    let settings = wasftp::plugin::PluginSettings {
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let rt = runtime_support::runtime();
    example_support::load(&rt, "python-tree", &path, settings).await;
    let server = serve(plugin(path.display().to_string(), &config)).await;
    let size = config[0].1.len().to_string();
    suite(&server, &[("MODE", "read-only"), ("FILE", "/1.0/docs/guide.txt"), ("FILE_SIZE", &size), ("DIR", "/1.0/docs")]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_c_example_read_only() {
    let path = example_support::example_plugin("c-tree").await;
    let server = serve(plugin(path.display().to_string(), &[])).await;
    let size = "Replace this tree with your own storage.\n".len().to_string();
    suite(&server, &[("MODE", "read-only"), ("FILE", "/docs/readme.txt"), ("FILE_SIZE", &size), ("DIR", "/docs")]).await;
    server.shutdown().await;
}
