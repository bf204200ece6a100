//! `wasftp plugin new`: the skeleton of each language builds with that
//! language's real tool chain (cargo, componentize-js, componentize-py),
//! as written, and keeps the contract (`plugin check`'s suite passes).

mod example_support;
mod runtime_support;
mod server_support;

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

    if language == Language::Rust {
        // The workspace's versions, so the build is the one tested here.
        std::fs::copy(example_support::repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copying Cargo.lock");
    }
    let out = work.path().join(format!("{name}.wasm"));
    // The Rust skeleton's target is kept between runs, so its dependencies build once.
    let target = example_support::kept_dir("new-rust-target");
    let took = example_support::run_build(&dir, &out, &[("CARGO_TARGET_DIR", &target)], &format!("the {language:?} skeleton")).await;
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
    for bad in ["", "Upper", "1st", "has space", "trailing-", "../escape", "a/b", "self", "test", "fn"] {
        let dir = work.path().join("made");
        let refused = wasftp::plugin_new::write(Language::Python, bad, &dir, None).expect_err(bad);
        assert!(refused.to_string().contains("is not a plugin name"), "{bad:?}: {refused}");
        assert!(!dir.exists(), "{bad:?}: something was written");
    }
    // A Rust skeleton's SDK must be one.
    let dir = work.path().join("made");
    let refused = wasftp::plugin_new::write(Language::Rust, "ok", &dir, Some(work.path())).expect_err("an --sdk that is no SDK");
    assert!(refused.to_string().contains("is not wasftp's sdk/"), "{refused}");
    assert!(!dir.exists(), "something was written");
}

/// A Python skeleton built against an altered copy of the contract: `edit`
/// changes its wit/storage.wit (and app.py when needed); what loading it says.
async fn load_altered_skeleton(name: &str, edit: impl FnOnce(&std::path::Path)) -> String {
    let work = tempfile::Builder::new().prefix("wasftp-new-").tempdir().expect("tempdir");
    let dir = work.path().join(name);
    wasftp::plugin_new::write(Language::Python, name, &dir, None).expect("writing the skeleton");
    edit(&dir);
    let out = work.path().join(format!("{name}.wasm"));
    example_support::run_build(&dir, &out, &[], &format!("the altered skeleton {name}")).await;
    let bytes = std::fs::read(&out).expect("reading the component");
    let rt = runtime_support::runtime();
    match tokio::time::timeout(std::time::Duration::from_secs(240), rt.load(name, &bytes, PluginSettings::default())).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(_)) => panic!("{name} was admitted"),
        Err(_) => panic!("loading {name} did not end"),
    }
}

fn edit_file(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("reading a skeleton file");
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).expect("writing a skeleton file");
}

/// `plugin check` refuses a plugin of another contract version, or with a
/// part of the contract missing, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_another_contract_version_or_missing_an_export_is_refused_naming_it() {
    let ours = wasftp::plugin::contract_package();
    let message = load_altered_skeleton("old-contract", |dir| {
        edit_file(&dir.join("wit/storage.wit"), &format!("package {ours};"), "package wasftp:storage@0.1.0;");
    })
    .await;
    println!("{message}");
    assert!(message.contains("built against the contract wasftp:storage@0.1.0") && message.contains(ours), "{message}");

    let message = load_altered_skeleton("no-describe", |dir| {
        edit_file(&dir.join("wit/storage.wit"), "    describe: func() -> capabilities;\n", "");
    })
    .await;
    println!("{message}");
    assert!(message.contains("not as the contract says") && message.contains("describe"), "{message}");
}
