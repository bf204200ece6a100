//! Builds the test plugins (adversarial, slow, grants) exactly like the bundled ones (they are
//! never bundled into the release binary) and tells the tests where they are.

use std::path::{Path, PathBuf};

fn main() {
    let tests = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = tests.parent().unwrap().to_path_buf();
    let watch: [&Path; 2] = [&root.join("sdk/src"), &root.join("wit")];
    // The variant first: the plain build then leaves its own output in place.
    let trapping = wasftp_sdk_build::build_plugin_with_features(&tests.join("plugins/hostile"), &watch, &["trap-in-init"]);
    println!("cargo:rustc-env=WASFTP_HOSTILE_TRAP_IN_INIT_PLUGIN={}", trapping.display());
    let hostile = wasftp_sdk_build::build_plugin(&tests.join("plugins/hostile"), &watch);
    println!("cargo:rustc-env=WASFTP_HOSTILE_PLUGIN={}", hostile.display());
    // The slow plugin wraps the memory plugin's filesystem.
    let watch: [&Path; 3] = [&root.join("sdk/src"), &root.join("wit"), &root.join("plugins/memory/fs")];
    let slow = wasftp_sdk_build::build_plugin(&tests.join("plugins/slow"), &watch);
    println!("cargo:rustc-env=WASFTP_SLOW_PLUGIN={}", slow.display());
    let watch: [&Path; 2] = [&root.join("sdk/src"), &root.join("wit")];
    let grants = wasftp_sdk_build::build_plugin(&tests.join("plugins/grants"), &watch);
    println!("cargo:rustc-env=WASFTP_GRANTS_PLUGIN={}", grants.display());
}
