//! The example plugins in other languages, built from source with their real
//! tool chains (`plugins/examples/*/build`): each keeps the contract (the
//! suite `wasftp plugin check` runs) and serves real clients, OpenSSH `sftp`
//! and paramiko. js-quota is an in-memory store with per-tenant quotas
//! (componentize-js); python-tree a read-only tree of releases seeded from
//! its config (componentize-py); c-tree a small read-only tree in C
//! (clang and wasi-libc from Debian, wit-bindgen and wasm-tools).

mod client_support;
mod example_support;
mod runtime_support;
mod server_support;

use std::time::Duration;

use wasftp::conformance::{self, Verdict};
use wasftp::plugin::{PluginSettings, StorageError};

use runtime_support::{bounded, ctx, runtime};
use server_support::{UserSpec, start_with};

const CLIENT_LIMIT: Duration = Duration::from_secs(180);

/// python-tree's releases: 1.1 is the newest, with a binary file.
fn release_config() -> Vec<(String, String)> {
    let tool: Vec<u8> = (0..=255).collect();
    [
        ("1.0:/README.txt", "hello".to_string()),
        ("1.1:/README.txt", "hello again".to_string()),
        ("1.1:/bin/tool.bin", format!("base64:{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &tool))),
        ("1.1:/docs/a.txt", "a".to_string()),
        ("1.1:/docs/b.txt", "b".to_string()),
        ("released-at:1.1", "1700000000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn settings(config: Vec<(String, String)>) -> PluginSettings {
    PluginSettings { config, ..PluginSettings::default() }
}

fn passed(report: &conformance::Report) -> Vec<&'static str> {
    report.outcomes.iter().filter(|o| o.verdict == Verdict::Passed).map(|o| o.behaviour).collect()
}

fn skipped(report: &conformance::Report) -> Vec<&'static str> {
    report.outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Skipped(_))).map(|o| o.behaviour).collect()
}

async fn check(plugin: &wasftp::plugin::Plugin) -> conformance::Report {
    let report = tokio::time::timeout(Duration::from_secs(300), conformance::run(plugin)).await.expect("the check ended within 300 s");
    println!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_quota_store_keeps_the_contract() {
    let path = example_support::example_plugin("js-quota").await;
    let rt = runtime();
    let plugin = example_support::load(&rt, "js-quota", &path, PluginSettings::default()).await;
    let report = check(&plugin).await;
    // It declares everything but links.
    assert_eq!(skipped(&report), ["symlinks: made, read and described", "hard-links: two names, one content"], "{}", report.table());
    assert!(passed(&report).len() >= 21, "{}", report.table());
}

/// A tenant's quota is its own: past it, a write is no-space (not a trap that
/// would lose the tenant's files), and another tenant still writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_quota_gets_no_space_and_keeps_its_files_and_others_write_on() {
    let path = example_support::example_plugin("js-quota").await;
    let rt = runtime();
    let config = vec![("quota-bytes.small".to_string(), "100000".to_string())];
    let plugin = example_support::load(&rt, "js-quota", &path, settings(config)).await;
    let small = bounded(plugin.open_session(ctx("s", "small"))).await.expect("a session of the small tenant");
    let kept = runtime_support::pattern(60_000, 1);
    runtime_support::put(&small, "/kept.bin", &kept).await;

    let writer = bounded(small.begin_write("/big.bin", runtime_support::opts(true, true, false, false))).await.expect("begin-write");
    let mut refused = None;
    for i in 0..10u64 {
        if let Err(e) = bounded(writer.write_chunk(i * 10_000, vec![7; 10_000])).await {
            refused = Some(e);
            break;
        }
    }
    // A pending upload counts: it is refused before it could be finished.
    assert!(matches!(refused, Some(StorageError::NoSpace)), "{refused:?}");
    let _ = bounded(writer.abort()).await;
    assert_eq!(runtime_support::get(&small, "/kept.bin").await, kept, "the tenant's files are kept");
    assert!(matches!(bounded(small.file_info("/big.bin")).await, Err(StorageError::NotFound)));
    let space = bounded(small.space("/")).await.expect("space");
    assert_eq!(space.total_bytes, 100_000, "{space:?}");

    let other = bounded(plugin.open_session(ctx("o", "other"))).await.expect("a session of another tenant");
    let big = runtime_support::pattern(300_000, 2);
    runtime_support::put(&other, "/big.bin", &big).await;
    assert_eq!(runtime_support::get(&other, "/big.bin").await, big);
    assert!(matches!(bounded(other.file_info("/kept.bin")).await, Err(StorageError::NotFound)), "tenants see only their own files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_release_tree_keeps_the_contract_read_only() {
    let path = example_support::example_plugin("python-tree").await;
    let rt = runtime();
    let plugin = example_support::load(&rt, "python-tree", &path, settings(release_config())).await;
    let report = check(&plugin).await;
    let passed = passed(&report);
    for behaviour in &conformance::read_only_behaviours() {
        assert!(passed.contains(behaviour), "{behaviour} did not pass:\n{}", report.table());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_release_tree_refuses_a_config_it_cannot_serve_naming_the_key() {
    let path = example_support::example_plugin("python-tree").await;
    let rt = runtime();
    for (key, value) in [("1.0:/../etc/passwd", "x"), ("1.0:/a", "base64:***"), ("colour", "blue")] {
        let bytes = std::fs::read(&path).expect("reading the example");
        let config = vec![("1.0:/ok.txt".to_string(), "fine".to_string()), (key.to_string(), value.to_string())];
        let refused = match tokio::time::timeout(Duration::from_secs(240), rt.load("python-tree", &bytes, settings(config))).await {
            Ok(Err(e)) => format!("{e:#}"),
            Ok(Ok(_)) => panic!("{key} = {value:?} was taken"),
            Err(_) => panic!("loading did not end"),
        };
        assert!(refused.contains(key), "{key}: {refused}");
    }
}

/// Each example behind the real server, driven by OpenSSH `sftp` and paramiko.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_examples_serve_openssh_and_paramiko() {
    let quota_path = example_support::example_plugin("js-quota").await;
    let tree_path = example_support::example_plugin("python-tree").await;
    // Compiled once here, so the server's start finds them in the cache.
    let rt = runtime();
    example_support::load(&rt, "js-quota", &quota_path, PluginSettings::default()).await;
    example_support::load(&rt, "python-tree", &tree_path, settings(release_config())).await;
    const QUOTA: &str = "8388608";

    // carol's home is one release: found, though the plugin refuses make-dir.
    // dave's is not in the tree: his session is refused.
    let users = [UserSpec::new("alice"), UserSpec::new("bob"), UserSpec::new("carol").home("/1.0"), UserSpec::new("dave").home("/9.9")];
    let server = start_with(users, |config| {
        let mut quota = wasftp::config::PluginConfig { source: quota_path.display().to_string(), ..Default::default() };
        quota.config.insert("quota-bytes".into(), QUOTA.into());
        config.plugins.insert("quota".into(), quota);
        let mut tree = wasftp::config::PluginConfig { source: tree_path.display().to_string(), ..Default::default() };
        tree.config.extend(release_config());
        config.plugins.insert("tree".into(), tree);
        config.users[0].plugin = "quota".into();
        config.users[1].plugin = "tree".into();
        config.users[2].plugin = "tree".into();
        config.users[3].plugin = "tree".into();
    })
    .await;
    let work = tempfile::tempdir().expect("tempdir");
    let upload = runtime_support::pattern(2 << 20, 5);
    std::fs::write(work.path().join("up.bin"), &upload).expect("writing the upload");

    let out = server.sftp_batch("alice", "put up.bin\nls -l\nget up.bin back.bin\nrm up.bin\nls\n", work.path(), CLIENT_LIMIT).await;
    out.assert_success("OpenSSH sftp on js-quota");
    assert_eq!(std::fs::read(work.path().join("back.bin")).expect("the download"), upload);
    assert!(out.stdout.contains(&(2u64 << 20).to_string()), "ls -l shows the size: {out}");

    let out = server.sftp_batch("bob", "ls /\nget /latest/README.txt latest.txt\nget /1.0/README.txt old.txt\n", work.path(), CLIENT_LIMIT).await;
    out.assert_success("OpenSSH sftp on python-tree");
    assert_eq!(std::fs::read(work.path().join("latest.txt")).expect("the download"), b"hello again");
    assert_eq!(std::fs::read(work.path().join("old.txt")).expect("the download"), b"hello");
    let refused = server.sftp_batch("bob", "put up.bin /1.1/up.bin\n", work.path(), CLIENT_LIMIT).await;
    assert!(!refused.success() && refused.stderr.contains("Permission denied"), "a put to the read-only tree: {refused}");

    let out = server.sftp_batch("carol", "ls\nget README.txt carol.txt\n", work.path(), CLIENT_LIMIT).await;
    out.assert_success("OpenSSH sftp in a home inside the read-only tree");
    assert_eq!(std::fs::read(work.path().join("carol.txt")).expect("the download"), b"hello");
    let refused = server.sftp_batch("dave", "ls\n", work.path(), CLIENT_LIMIT).await;
    assert!(!refused.success(), "a home the read-only tree does not have: {refused}");

    let script = "examples_paramiko.py";
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-u").arg(client_support::scripts_dir().join(script)).arg("quota_store");
    cmd.env("WASFTP_PORT", server.port().to_string())
        .env("WASFTP_USER", "alice")
        .env("WASFTP_PASSWORD", &server.user("alice").password)
        .env("QUOTA_BYTES", QUOTA);
    server_support::run(cmd, CLIENT_LIMIT).await.assert_success("paramiko on js-quota");
    client_support::python(&server, "bob", script, &["release_tree"], CLIENT_LIMIT).await.assert_success("paramiko on python-tree");
    server.shutdown().await;
}

/// python-tree's own unit tests (plain CPython: its tree, and its glue over
/// the bindings componentize-py generates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_tree_unit_tests_pass() {
    let dir = example_support::repo_root().join("plugins/examples/python-tree");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-m", "unittest", "discover", "-s", "tests"]).current_dir(&dir).env("PYTHONDONTWRITEBYTECODE", "1");
    let out = server_support::run(cmd, CLIENT_LIMIT).await;
    out.assert_success("python-tree's unit tests");
    // All ran: none skipped for want of componentize-py (its bindings).
    assert!(out.stderr.contains("OK") && !out.stderr.contains("skipped"), "{out}");
}

/// js-quota's own unit tests (its store under plain Node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_quota_unit_tests_pass() {
    let dir = example_support::repo_root().join("plugins/examples/js-quota");
    let mut cmd = tokio::process::Command::new("npm");
    cmd.args(["test", "--silent"]).current_dir(&dir);
    let out = server_support::run(cmd, CLIENT_LIMIT).await;
    out.assert_success("js-quota's unit tests");
    assert!(out.stdout.contains("# fail 0") && !out.stdout.contains("# pass 0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_tree_keeps_the_contract_read_only() {
    let path = example_support::example_plugin("c-tree").await;
    let rt = runtime();
    let plugin = example_support::load(&rt, "c-tree", &path, PluginSettings::default()).await;
    // No WASI at all: the contract's own interfaces only.
    let mut imports = plugin.component().imports.clone();
    imports.sort();
    assert_eq!(imports, ["wasftp:storage/log@0.2.0", "wasftp:storage/types@0.2.0"]);
    let report = check(&plugin).await;
    let passed = passed(&report);
    for behaviour in conformance::read_only_behaviours().iter().filter(|b| !b.contains("symlinks")) {
        assert!(passed.contains(behaviour), "{behaviour} did not pass:\n{}", report.table());
    }
    // init refuses what it does not know, naming it.
    let bytes = std::fs::read(&path).expect("reading the example");
    let refused = rt.load("c-tree", &bytes, settings(vec![("colour".into(), "blue".into())])).await.err().expect("an unknown key");
    assert!(format!("{refused:#}").contains("unknown config key \"colour\""), "{refused:#}");
}
