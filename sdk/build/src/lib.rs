//! Build-script helper: compile a Rust wasftp plugin crate to a
//! `wasm32-wasip2` component, so the host can embed it and the tests can load
//! their adversarial plugins the same way.
//!
//! The nested cargo gets its own target directory: sharing the outer one would
//! wait forever on cargo's build lock, which the outer build holds.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
/// Cargo profile used for plugins (defined in the workspace `Cargo.toml`).
const PLUGIN_PROFILE: &str = "plugin";

/// Compiles the plugin crate in `crate_dir` and returns the path of its
/// component. `watch` lists extra paths (the SDK, the WIT) whose change must
/// rebuild it.
pub fn build_plugin(crate_dir: &Path, watch: &[&Path]) -> PathBuf {
    build(crate_dir, watch, &[])
}

/// The same with cargo `features` on, copied to a name of its own
/// (`<crate>+<features>.wasm`) so the plain build of the crate can follow
/// in the same target directory: build the variants first.
pub fn build_plugin_with_features(crate_dir: &Path, watch: &[&Path], features: &[&str]) -> PathBuf {
    let built = build(crate_dir, watch, features);
    let stem = built.file_stem().and_then(|s| s.to_str()).expect("a component file name").to_string();
    let copy = built.with_file_name(format!("{stem}+{}.wasm", features.join("+")));
    std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), copy.display()));
    copy
}

fn build(crate_dir: &Path, watch: &[&Path], features: &[&str]) -> PathBuf {
    ensure_wasm_target();
    let manifest = crate_dir.join("Cargo.toml");
    let package = package_name(&manifest);
    for path in [crate_dir.join("src"), manifest.clone()]
        .iter()
        .map(PathBuf::as_path)
        .chain(watch.iter().copied())
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let target_dir = plugin_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    forget_sdk_if_changed(&cargo, &manifest, &target_dir, watch);
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--target", WASM_TARGET, "--profile", PLUGIN_PROFILE, "--target-dir"])
        .arg(&target_dir);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not start cargo to build plugin {package}: {e}"));
    if !status.success() {
        panic!("building plugin {package} for {WASM_TARGET} failed (see the cargo output above)");
    }
    let wasm = target_dir
        .join(WASM_TARGET)
        .join(PLUGIN_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(wasm.exists(), "plugin {package} built but {} is missing", wasm.display());
    wasm
}

/// The nested build records the WIT file by absolute path (the bindings
/// macro reads it), so a second checkout sharing the target directory (a
/// clone, a worktree) would reuse an SDK built from the other checkout's
/// contract. One stamp per target directory holds a hash of what the SDK is
/// built from (the watched `wit` and `sdk/src` trees): when it differs, the
/// SDK is rebuilt.
fn forget_sdk_if_changed(cargo: &str, manifest: &Path, target_dir: &Path, watch: &[&Path]) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in watch.iter().filter(|p| p.ends_with("wit") || p.ends_with("sdk/src")) {
        hash_tree(path, path, &mut hasher);
    }
    let stamp = format!("{:016x}\n", hasher.finish());
    let stamp_file = target_dir.join("sdk-inputs.stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return;
    }
    let cleaned = Command::new(cargo)
        .args(["clean", "-p", "wasftp-sdk", "--manifest-path"])
        .arg(manifest)
        .args(["--target", WASM_TARGET, "--profile", PLUGIN_PROFILE, "--target-dir"])
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .is_ok_and(|s| s.success());
    if cleaned {
        let _ = std::fs::create_dir_all(target_dir);
        let _ = std::fs::write(&stamp_file, stamp);
    }

    /// Paths relative to `root`, so two checkouts with the same content agree.
    fn hash_tree(root: &Path, path: &Path, hasher: &mut impl Hasher) {
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for entry in entries {
                hash_tree(root, &entry, hasher);
            }
        } else if let Ok(bytes) = std::fs::read(path) {
            path.strip_prefix(root).unwrap_or(path).hash(hasher);
            bytes.hash(hasher);
        }
    }
}

/// Adds the wasm target when rustup can, or stops with one line saying how.
fn ensure_wasm_target() {
    if target_installed() {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added || !target_installed() {
        panic!("the {WASM_TARGET} target is missing: run `rustup target add {WASM_TARGET}`");
    }
}

fn target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Path::new(&dir).join("libstd").exists()
                || std::fs::read_dir(&dir)
                    .map(|entries| {
                        entries.flatten().any(|e| {
                            e.file_name().to_string_lossy().starts_with("libstd-")
                        })
                    })
                    .unwrap_or(false)
        }
        _ => false,
    }
}

/// `<outer target dir>/wasm-plugins`, shared by the dev and release builds of
/// the host so a plugin is compiled once.
fn plugin_target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("wasm-plugins");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out
    let target = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory");
    target.join("wasm-plugins")
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    text.lines()
        .map(str::trim)
        .find_map(|line| {
            let rest = line.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no package name in {}", manifest.display()))
}
