//! The conformance suite (`wasftp::conformance`, what `wasftp plugin check`
//! runs) against every plugin here: it passes on the memory plugin, the S3
//! plugin over a real S3 server (garage), the local-folder plugin and the
//! slow test plugin, and it
//! fails, naming the behaviour, on plugins that break the contract.

mod runtime_support;
mod s3_support;
mod server_support;

use runtime_support::*;
use wasftp::conformance::{self, Verdict};
use wasftp::plugin::{Grants, Origin, PluginSettings, Preopen};

fn slow_plugin() -> Vec<u8> {
    std::fs::read(env!("WASFTP_SLOW_PLUGIN")).expect("reading the slow plugin")
}

fn with_config(config: &[(&str, &str)]) -> PluginSettings {
    PluginSettings { config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..PluginSettings::default() }
}

/// The whole suite's run: up to a minute a behaviour, so more than `bounded`'s step.
async fn whole_run<F: std::future::Future>(run: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(300), run).await.expect("the suite did not end within 300 s")
}

/// The report, printed, and the behaviours it skipped.
fn assert_passes(report: &conformance::Report, at_least: usize) -> Vec<&'static str> {
    println!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
    let passed = report.outcomes.iter().filter(|o| o.verdict == Verdict::Passed).count();
    assert!(passed >= at_least, "only {passed} behaviours passed:\n{}", report.table());
    report.outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Skipped(_))).map(|o| o.behaviour).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_plugin_keeps_the_contract() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let skipped = assert_passes(&whole_run(conformance::run(&plugin)).await, 20);
    assert_eq!(skipped, ["symlinks: made, read and described", "hard-links: two names, one content"], "it declares neither");
    // The check cleans up after itself.
    let s = memory_session(&plugin, "wasftp-check", "wasftp-check").await;
    assert!(names(&s, "/").await.is_empty(), "{:?}", names(&s, "/").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_plugin_keeps_the_contract_with_and_without_random_writes() {
    let rt = runtime();
    for config in [&[][..], &[("random-write", "off"), ("append", "off"), ("write-chunk", "4096")][..]] {
        let plugin = bounded(rt.load("slow", &slow_plugin(), with_config(config))).await.unwrap();
        let skipped = assert_passes(&whole_run(conformance::run(&plugin)).await, 17);
        if !config.is_empty() {
            assert!(skipped.contains(&"random-write: chunks at any offset"), "{skipped:?}");
            assert!(skipped.contains(&"append: chunks go to the end"), "{skipped:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_plugin_keeps_the_contract_over_a_real_s3_server() {
    let bucket = s3_support::S3Bucket::start().await;
    let config = bucket.plugin_config();
    let settings = PluginSettings {
        config: config.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        grants: Grants { http_allow: config.http_allow.iter().map(|o| Origin::parse(o).unwrap()).collect(), ..Grants::default() },
        ..PluginSettings::default()
    };
    let rt = runtime();
    let bytes = wasftp::plugin::bundled::get("s3").expect("the S3 plugin is bundled");
    let plugin = bounded(rt.load("s3", bytes, settings)).await.unwrap();
    assert_passes(&whole_run(conformance::run(&plugin)).await, 15);
    assert!(bucket.keys().await.is_empty(), "the check left {:?} in the bucket", bucket.keys().await);
}

/// The local-folder plugin keeps the whole contract on a writable folder
/// (links included) and leaves it as it found it; on a read-only one it is
/// checked read-only and passes, the folder untouched, a link to /etc in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_localfs_plugin_keeps_the_contract_on_a_folder() {
    let rt = runtime();
    let bytes = wasftp::plugin::bundled::get("localfs").expect("the localfs plugin is bundled");
    let folder = tempfile::tempdir().unwrap();
    let grant = |writable| PluginSettings {
        grants: Grants { preopen: Some(Preopen { dir: folder.path().into(), writable, per_tenant: false }), ..Grants::default() },
        ..PluginSettings::default()
    };
    let plugin = bounded(rt.load("localfs", bytes, grant(true))).await.unwrap();
    let skipped = assert_passes(&whole_run(conformance::run(&plugin)).await, 22);
    assert_eq!(skipped, Vec::<&str>::new(), "it declares every capability");
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0, "the check left its files in the folder");

    std::fs::create_dir(folder.path().join("docs")).unwrap();
    std::fs::write(folder.path().join("docs/guide.txt"), b"the guide").unwrap();
    // A link out of the folder, made beside the plugin: refused, and that
    // keeps the contract (the check once took it for a broken link).
    std::os::unix::fs::symlink("/etc", folder.path().join("docs/system")).unwrap();
    let plugin = bounded(rt.load("localfs-ro", bytes, grant(false))).await.unwrap();
    let report = whole_run(conformance::run(&plugin)).await;
    assert_passes(&report, 3);
    assert!(report.table().contains("read-only"), "{}", report.table());
    assert_eq!(std::fs::read(folder.path().join("docs/guide.txt")).unwrap(), b"the guide");
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 1);
}

/// A plugin that breaks the contract fails the behaviour it breaks, with
/// words that say what it did and what was expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_breaks_the_contract_fails_naming_what_it_broke() {
    let rt = runtime();
    for (breach, behaviour, words) in [
        ("missing-is-io", "a missing path is not-found (file-info, open-read, list-dir)", "expected not-found, got i/o error"),
        ("pages-lose-entries", "a listing pages through all entries, none twice", "pages of 3 gave"),
    ] {
        let plugin = bounded(rt.load("broken", &slow_plugin(), with_config(&[("break", breach)]))).await.unwrap();
        let report = whole_run(conformance::run(&plugin)).await;
        println!("{}", report.table());
        assert!(!report.passed(), "{breach}: the breach was not caught");
        let failed: Vec<_> = report.failed().collect();
        assert!(
            failed.iter().any(|o| o.behaviour == behaviour && matches!(&o.verdict, Verdict::Failed(why) if why.contains(words))),
            "{breach}: expected `{behaviour}` to fail with {words:?}:\n{}",
            report.table()
        );
    }
}

/// A plugin that refuses make-dir but takes other writes (a bucket policy
/// that allows some prefixes, a folder of root's with writable files): the
/// check never harms what it serves. Refused as permission-denied, it is
/// checked read-only and fails, having aborted its overwrite and removed its
/// upload; failing another way, only what writes nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_only_seems_read_only_keeps_its_files_through_the_check() {
    let rt = runtime();
    for (breach, words) in [
        ("make-dir-refused", "an upload of a new file /wasftp-check-new-"),
        ("make-dir-is-io", "make-dir /wasftp-check-"),
        ("only-existing-writable", "begin-write over /precious.txt was taken"),
    ] {
        let plugin = bounded(rt.load("seems-read-only", &slow_plugin(), with_config(&[("break", breach)]))).await.unwrap();
        let owner = bounded(plugin.open_session(ctx("wasftp-check", "wasftp-check"))).await.unwrap();
        put(&owner, "/precious.txt", b"keep me").await;
        let report = whole_run(conformance::run(&plugin)).await;
        println!("{}", report.table());
        assert!(!report.passed(), "{breach}: passed");
        assert!(report.failed().any(|o| matches!(&o.verdict, Verdict::Failed(why) if why.contains(words))), "{breach}: {}", report.table());
        assert_eq!(get(&owner, "/precious.txt").await, b"keep me", "{breach}: the check changed a file it did not make");
        assert_eq!(names(&owner, "/").await, ["precious.txt"], "{breach}: the check left something behind");
    }
}
