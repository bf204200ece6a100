//! Compiles the bundled plugins (`plugins/*`) to wasm32-wasip2 components and
//! embeds them in the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Plugins under `plugins/` that ship inside the `wasftp` binary.
const BUNDLED: &[&str] = &["memory", "s3", "localfs"];

fn main() {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = host.parent().unwrap().to_path_buf();
    // The memory plugin's filesystem is a crate of its own.
    let watch: [&Path; 3] = [&root.join("sdk/src"), &root.join("wit"), &root.join("plugins/memory/fs")];
    let mut table = String::from("/// (name, component bytes) of every bundled plugin.\npub static BUNDLED: &[(&str, &[u8])] = &[\n");
    for name in BUNDLED {
        let wasm = wasftp_sdk_build::build_plugin(&root.join("plugins").join(name), &watch);
        writeln!(table, "    ({name:?}, include_bytes!({:?})),", wasm.display().to_string()).unwrap();
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundled_plugins.rs");
    std::fs::write(out, table).unwrap();
}
