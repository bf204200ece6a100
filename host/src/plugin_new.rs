//! `wasftp plugin new`: a plugin skeleton in Rust, JavaScript or Python that
//! builds with its language's tool chain and passes `wasftp plugin check`
//! unchanged (a small read-only tree), for its author to grow from.
//! The templates are `host/templates/<language>/`, built into the binary.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
}

/// (path in the skeleton, content, executable).
type Template = &'static [(&'static str, &'static str, bool)];

const CONTRACT: &str = include_str!("../../wit/storage.wit");

const RUST: Template = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml"), false),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs"), false),
    ("build", include_str!("../templates/rust/build"), true),
    ("README.md", include_str!("../templates/rust/README.md"), false),
    (".gitignore", "target/\n*.wasm\n", false),
];

const JS: Template = &[
    ("package.json", include_str!("../templates/js/package.json"), false),
    // Pinned tool chain: the build installs exactly this (npm ci).
    ("package-lock.json", include_str!("../templates/js/package-lock.json"), false),
    ("build.mjs", include_str!("../templates/js/build.mjs"), false),
    ("src/plugin.js", include_str!("../templates/js/src/plugin.js"), false),
    ("build", include_str!("../templates/js/build"), true),
    ("README.md", include_str!("../templates/js/README.md"), false),
    ("wit/storage.wit", CONTRACT, false),
    (".gitignore", "node_modules/\n*.wasm\n", false),
];

const PYTHON: Template = &[
    ("app.py", include_str!("../templates/python/app.py"), false),
    ("build", include_str!("../templates/python/build"), true),
    ("README.md", include_str!("../templates/python/README.md"), false),
    ("wit/storage.wit", CONTRACT, false),
    (".gitignore", "__pycache__/\n*.wasm\n", false),
];

/// Where the Rust SDK of this source tree is, when the binary was built
/// from one (a Rust skeleton depends on it by path).
pub fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml").is_file().then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// Names cargo refuses for a package (Rust keywords and the standard crates).
const RESERVED: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct",
    "super", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen", "core", "std", "alloc", "test",
    "proc-macro",
];

/// A plugin name: what `describe` reports and the file names use.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
        && !name.ends_with('-')
        && !RESERVED.contains(&name)
}

/// The SDK directory as the skeleton's Cargo.toml names it: absolute (the
/// skeleton may be written anywhere), checked, and fit for a TOML string.
fn sdk_dependency(sdk: &Path) -> anyhow::Result<String> {
    let sdk = sdk.canonicalize().with_context(|| format!("--sdk {}", sdk.display()))?;
    anyhow::ensure!(sdk.join("Cargo.toml").is_file(), "{} is not wasftp's sdk/ (it has no Cargo.toml)", sdk.display());
    let text = sdk.to_str().with_context(|| format!("{} is not UTF-8", sdk.display()))?;
    anyhow::ensure!(!text.chars().any(|c| c == '"' || c == '\\' || c.is_control()), "{text}: a path with quotes, backslashes or control characters");
    Ok(text.to_string())
}

/// Writes the skeleton of `name` in `language` into `dir` (which must not
/// exist, or be empty); returns the files written.
pub fn write(language: Language, name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        valid_name(name),
        "{name:?} is not a plugin name: lower-case letters, digits and '-', starting with a letter, at most 64, not a Rust keyword"
    );
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        anyhow::ensure!(entries.next().is_none(), "{} exists and is not empty: nothing written", dir.display());
    }
    let sdk = match (language, sdk) {
        (Language::Rust, Some(sdk)) => sdk_dependency(sdk)?,
        (Language::Rust, None) => sdk_dependency(
            &default_sdk().context("no wasftp SDK beside this binary's sources: give its directory with --sdk (wasftp's sdk/)")?,
        )?,
        _ => String::new(),
    };
    let template = match language {
        Language::Rust => RUST,
        Language::Js => JS,
        Language::Python => PYTHON,
    };
    let crate_name = name.replace('-', "_");
    let mut written = Vec::new();
    for (path, content, executable) in template {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
        }
        let text = if *path == "wit/storage.wit" {
            content.to_string()
        } else {
            content.replace("{{name}}", name).replace("{{crate}}", &crate_name).replace("{{sdk}}", &sdk)
        };
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", target.display()))?;
        }
        written.push(target);
    }
    Ok(written)
}
