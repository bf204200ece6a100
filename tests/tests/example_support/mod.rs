//! The example plugins in other languages (`plugins/examples/*`), built from
//! source by their own `build` script with their real tool chains
//! (componentize-js, componentize-py), as their READMEs tell a user to.
//! A build is kept per content of the example's sources and the contract,
//! so the test binaries that use an example build it once between them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one example's build may take (npm ci and componentize from cold).
const BUILD_LIMIT: Duration = Duration::from_secs(600);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the repository").to_path_buf()
}

/// Where built examples are kept: beside this build's binaries.
fn built_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_compile-plugin")).parent().expect("a binary's directory").join("wasftp-examples")
}

/// Files the build reads: the example's own (not what its tool chain
/// installed or left behind) and the contract.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("reading an example's directory").map(|e| e.expect("a directory entry").path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if matches!(name, "node_modules" | "__pycache__" | "target") || name.ends_with(".wasm") {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn content_key(example: &Path) -> String {
    let root = repo_root();
    let mut files = Vec::new();
    sources(example, &mut files);
    files.push(root.join("wit/storage.wit"));
    let mut all = Vec::new();
    for file in files {
        all.extend_from_slice(file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(&std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display())));
        all.push(0);
    }
    format!("{:x}", md5::compute(&all))
}

/// The component built from `plugins/examples/<name>`: its path.
pub async fn example_plugin(name: &str) -> PathBuf {
    let example = repo_root().join("plugins/examples").join(name);
    let built = built_dir();
    std::fs::create_dir_all(&built).expect("making the examples' build directory");
    let out = built.join(format!("{name}-{}.wasm", content_key(&example)));
    // One build at a time per example, whichever test binary asks first.
    let lock = std::fs::File::create(built.join(format!("{name}.lock"))).expect("the build lock");
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await.expect("the lock's task").expect("taking the build lock");
    if out.exists() {
        return out;
    }
    let partial = out.with_extension("partial.wasm");
    let took = run_build(&example, &partial, &[], &format!("the example {name}")).await;
    std::fs::rename(&partial, &out).expect("keeping the built example");
    drop(lock);
    println!("built the example {name} in {took:?}");
    out
}

/// Runs `dir/build OUT` (every example and skeleton has one) with `env`
/// added, as the tests run any program (`server_support::run`: its own
/// process group, killed whole at the limit); panics with its output unless
/// it made `out`. Returns how long it took.
pub async fn run_build(dir: &Path, out: &Path, env: &[(&str, &Path)], what: &str) -> Duration {
    let mut command = tokio::process::Command::new(dir.join("build"));
    command.arg(out).current_dir(dir);
    // The outer cargo's settings are not the plugin build's.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = super::server_support::run(command, BUILD_LIMIT).await;
    match output.status {
        Some(status) if status.success() && out.exists() => output.elapsed,
        Some(status) => panic!("building {what} failed ({status}); .ci/run installs its tool chain\n{output}"),
        None => panic!("building {what} took longer than {BUILD_LIMIT:?}\n{output}"),
    }
}

/// A directory kept between runs for builds' own caches (the Rust skeleton's target).
pub fn kept_dir(name: &str) -> PathBuf {
    let dir = built_dir().join(name);
    std::fs::create_dir_all(&dir).expect("making a kept build directory");
    dir
}

/// Loads a component built here: compiling one from componentize-js or
/// componentize-py takes seconds, more on a busy machine.
pub async fn load(rt: &wasftp::plugin::Runtime, name: &str, path: &Path, settings: wasftp::plugin::PluginSettings) -> std::sync::Arc<wasftp::plugin::Plugin> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match tokio::time::timeout(LOAD_LIMIT, rt.load(name, &bytes, settings)).await {
        Ok(loaded) => loaded.unwrap_or_else(|e| panic!("loading {name}: {e:#}")),
        Err(_) => panic!("loading {name} took longer than {LOAD_LIMIT:?}"),
    }
}

const LOAD_LIMIT: Duration = Duration::from_secs(240);
