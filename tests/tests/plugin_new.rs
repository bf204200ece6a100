//! `wasftp plugin new`: the skeleton of each language builds with that
//! language's real tool chain (cargo, componentize-js, componentize-py),
//! as written, and keeps the contract (`plugin check`'s suite passes).

mod example_support;
mod runtime_support;

use wasftp::conformance::{self, Verdict};
use wasftp::plugin::PluginSettings;
use wasftp::plugin_new::Language;

async fn skeleton_builds_and_passes(language: Language, name: &str) {
    let work = tempfile::Builder::new().prefix("wasftp-new-").tempdir().expect("tempdir");
    let dir = work.path().join(name);
    let written = wasftp::plugin_new::write(language, name, &dir, None).expect("writing the skeleton");
    assert!(written.iter().any(|f| f.ends_with("build")), "{written:?}");
    // A second skeleton over the first is refused: nothing is overwritten.
    let again = wasftp::plugin_new::write(language, name, &dir, None).expect_err("writing over a skeleton");
    assert!(again.to_string().contains("not empty"), "{again}");

    let out = work.path().join(format!("{name}.wasm"));
    // The Rust skeleton's target is kept between runs, so its dependencies build once.
    let target = example_support::kept_dir("new-rust-target");
    let took = example_support::run_build(&dir, &out, &[("CARGO_TARGET_DIR", &target)], &format!("the {language:?} skeleton"));
    println!("built the {language:?} skeleton in {took:?}");

    let rt = runtime_support::runtime();
    let plugin = example_support::load(&rt, name, &out, PluginSettings::default()).await;
    assert_eq!(plugin.capabilities().name, name, "describe names the plugin it was made as");
    let report = tokio::time::timeout(std::time::Duration::from_secs(300), conformance::run(&plugin)).await.expect("the check ended");
    println!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
    let passed: Vec<_> = report.outcomes.iter().filter(|o| o.verdict == Verdict::Passed).map(|o| o.behaviour).collect();
    // Checked read-only: its tree is read, its refusals of writes checked.
    for behaviour in [
        "read-only: every write is refused, and changes nothing",
        "read-only: a file reads whole, at offsets, and past the end (empty)",
        "read-only: a listing pages through all entries, none twice",
        "read-only: the file's version reads, another is conflict",
    ] {
        assert!(passed.contains(&behaviour), "{behaviour} did not pass:\n{}", report.table());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_skeleton_builds_and_passes_the_check() {
    skeleton_builds_and_passes(Language::Rust, "new-rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_skeleton_builds_and_passes_the_check() {
    skeleton_builds_and_passes(Language::Js, "new-js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_skeleton_builds_and_passes_the_check() {
    skeleton_builds_and_passes(Language::Python, "new-python").await;
}

#[test]
fn a_name_that_is_no_plugin_name_is_refused_and_nothing_is_written() {
    let work = tempfile::tempdir().expect("tempdir");
    for bad in ["", "Upper", "1st", "has space", "trailing-", "../escape", "a/b"] {
        let dir = work.path().join("made");
        let refused = wasftp::plugin_new::write(Language::Python, bad, &dir, None).expect_err(bad);
        assert!(refused.to_string().contains("is not a plugin name"), "{bad:?}: {refused}");
        assert!(!dir.exists(), "{bad:?}: something was written");
    }
}
