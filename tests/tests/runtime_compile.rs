//! Compiling a plugin is bounded: in a child process, under a memory limit
//! and a timeout, so a component that is costly to compile fails its own
//! load and nothing else; a compiled component is kept by content hash.

mod runtime_support;
mod server_support;
mod wasm_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_support::*;
use wasm_support::costly_component;
use wasftp::plugin::{CompileLimits, EngineOptions, PluginSettings, Runtime, RuntimeStats};

/// A runtime whose compiled-component cache is `compiled/` under `dir`
/// (made by the runtime, mode 0700: a temp dir itself is not private).
fn runtime_with_cache(dir: &std::path::Path) -> Arc<Runtime> {
    Runtime::new(&EngineOptions { cache_dir: Some(dir.join("compiled")), ..engine_options() })
        .expect("creating the plugin runtime")
}

fn memory_bytes() -> &'static [u8] {
    wasftp::plugin::bundled::get("memory").expect("the memory plugin is bundled")
}



/// The memory plugin still loads and serves on `rt`.
async fn memory_plugin_serves(rt: &Runtime) {
    let plugin = bounded(rt.load("memory", memory_bytes(), PluginSettings::default())).await.expect("loading the memory plugin");
    let session = memory_session(&plugin, "alice", "t1").await;
    put(&session, "/after", b"still here").await;
    assert_eq!(get(&session, "/after").await, b"still here");
}

#[tokio::test]
async fn a_plugin_is_compiled_once_in_the_child_and_then_taken_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let first = runtime_with_cache(cache.path());
    let started = Instant::now();
    memory_plugin_serves(&first).await;
    let compiled_in = started.elapsed();
    assert_eq!(RuntimeStats::get(&first.stats().components_compiled), 1);
    assert_eq!(RuntimeStats::get(&first.stats().components_from_cache), 0);
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("compiled")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one artefact: {entries:?}");
    assert_eq!(entries[0].extension().unwrap(), "cwasm");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(cache.path().join("compiled")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only the server's user reads and writes compiled code");
    }

    let second = runtime_with_cache(cache.path());
    let started = Instant::now();
    memory_plugin_serves(&second).await;
    let cached_in = started.elapsed();
    assert_eq!(RuntimeStats::get(&second.stats().components_compiled), 0, "the artefact was taken from the cache");
    assert_eq!(RuntimeStats::get(&second.stats().components_from_cache), 1);
    println!("memory plugin: loaded and served in {compiled_in:?} compiled in the child, {cached_in:?} from the cache");

    // Another file (the same component with a custom section) is another entry.
    let mut other = memory_bytes().to_vec();
    // A custom section changes the file's hash, not its meaning.
    other.extend_from_slice(&[0, 4, 1, b'x', 1, 2]);
    bounded(second.load("memory-again", &other, PluginSettings::default())).await.expect("loading the changed file");
    assert_eq!(RuntimeStats::get(&second.stats().components_compiled), 1, "a different file is compiled");
}

#[tokio::test]
async fn a_damaged_cache_entry_is_compiled_again() {
    let cache = tempfile::tempdir().unwrap();
    memory_plugin_serves(&runtime_with_cache(cache.path())).await;
    let entry = std::fs::read_dir(cache.path().join("compiled")).unwrap().next().unwrap().unwrap().path();
    for damage in [&b"not an artefact at all"[..], &[]] {
        std::fs::write(&entry, damage).unwrap();
        let rt = runtime_with_cache(cache.path());
        memory_plugin_serves(&rt).await;
        assert_eq!(RuntimeStats::get(&rt.stats().components_compiled), 1, "compiled again after {} bytes", damage.len());
        assert!(std::fs::metadata(&entry).unwrap().len() > 1000, "the entry is whole again");
    }
}

/// The error of loading `wasm` as `name` under `limits`, and how long it took.
async fn refused(rt: &Runtime, name: &str, wasm: &[u8], limits: CompileLimits) -> (String, Duration) {
    let started = Instant::now();
    let err = bounded(rt.load(name, wasm, PluginSettings { compile: limits, ..PluginSettings::default() }))
        .await
        .err()
        .unwrap_or_else(|| panic!("loading {name} under {limits:?} was expected to fail"));
    (format!("{err:#}"), started.elapsed())
}

#[tokio::test]
async fn compiling_past_the_memory_bound_fails_that_load_only() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(cache.path());
    let bomb = costly_component(1, 200_000);
    let limits = CompileLimits { timeout: Duration::from_secs(120), memory_bytes: 128 << 20 };
    let (message, took) = refused(&rt, "bomb", &bomb, limits).await;
    println!("{} byte component, 128 MiB bound: refused in {took:?}: {message}", bomb.len());
    assert!(message.contains("compiling plugin bomb"), "{message}");
    assert!(message.contains("more than the 128 MiB allowed (compile_memory_mib)"), "{message}");
    memory_plugin_serves(&rt).await;

    // With room it compiles: the bound, not the file, refused it.
    let roomy = CompileLimits { timeout: Duration::from_secs(120), memory_bytes: 16 << 30 };
    let (message, _) = refused(&rt, "bomb", &bomb, roomy).await;
    let no_contract = format!("does not export the {} contract", wasftp::plugin::contract_package());
    assert!(message.contains(&no_contract), "{message}");
}

#[tokio::test]
async fn compiling_past_the_timeout_fails_that_load_only() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(cache.path());
    // About 5 s of compiling on two cores.
    let bomb = costly_component(200, 20_000);
    let limits = CompileLimits { timeout: Duration::from_secs(1), memory_bytes: 16 << 30 };
    let (message, took) = refused(&rt, "slow", &bomb, limits).await;
    println!("{} byte component, 1 s bound: refused in {took:?}: {message}", bomb.len());
    assert!(message.contains("longer than the 1s allowed (compile_timeout_secs)"), "{message}");
    assert!(took < Duration::from_secs(3), "stopped at its timeout, not when done ({took:?})");
    // The child is gone, not left computing: its arguments (these limits) are this test's own.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_secs = (cores + 1).to_string(); // the 1 s timeout on every core, and a second
    let ours = |cmdline: &[u8]| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.iter().any(|a| a.ends_with(b"compile-plugin"))
            && args.contains(&&b"17179869184"[..])
            && args.contains(&cpu_secs.as_bytes())
    };
    // Seen while it runs: the test can tell a live child from none.
    let running = costly_component(200, 20_000);
    let watched = tokio::spawn({
        let rt = rt.clone();
        async move { refused(&rt, "watched", &running, limits).await }
    });
    let seen = server_support::wait_until(Duration::from_secs(5), || {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| ours(&c)))
    })
    .await;
    assert!(seen, "the compiler child was seen while it ran");
    watched.await.unwrap();
    let child_alive = || {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| ours(&c))
        })
    };
    assert!(server_support::wait_until(Duration::from_secs(2), || !child_alive()).await, "the compiler child was killed");
    memory_plugin_serves(&rt).await;
}

#[tokio::test]
async fn a_compiler_that_cannot_start_is_a_clear_error() {
    let missing = wasftp::plugin::Compiler::Child { program: "/nonexistent/wasftp".into(), args: Vec::new() };
    let rt = Runtime::new(&EngineOptions { compiler: missing, cache: false, ..EngineOptions::default() }).unwrap();
    let err = bounded(rt.load("memory", memory_bytes(), PluginSettings::default())).await.err().expect("no compiler");
    let message = format!("{err:#}");
    assert!(message.contains("starting the compiler process /nonexistent/wasftp"), "{message}");
}

/// The wasm proposals wasftp leaves off are refused at compile time, by
/// name: a plugin cannot reach a GC heap, exceptions, 64-bit or shared
/// memories, or the async ABI.
#[tokio::test]
async fn a_component_using_a_wasm_feature_left_off_is_refused_naming_it() {
    let cache = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(cache.path());
    // Each with the words wasmtime's parser uses for the proposal.
    let cases = [
        ("(component (core module (memory i64 1)))", "memory64 must be enabled"),
        ("(component (core module (type (struct (field i32)))))", "without the gc feature"),
        ("(component (core module (tag)))", "exceptions proposal not enabled"),
        ("(component (core module (memory 1 1 shared)))", "threads must be enabled"),
        ("(component (core module (type $t (func)) (func (param (ref $t)))))", "function references required"),
        ("(component (core func (canon waitable-set.new)))", "requires the component model async feature"),
    ];
    for (text, refusal) in cases {
        let wasm = wat::parse_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let err = bounded(rt.load("p", &wasm, PluginSettings::default())).await.err().expect("refused");
        let message = format!("{err:#}");
        println!("{refusal}: {message}");
        assert!(message.contains("compiling plugin p"), "{message}");
        assert!(message.contains(refusal), "the proposal is named: {message}");
    }
}

/// Compiled code is native code the server runs: an entry is used only
/// from a private directory of the server's user, and only if that user
/// wrote it. A good artefact planted where others could write, or owned
/// by another user, is compiled again instead.
#[tokio::test]
async fn the_cache_is_used_only_when_nobody_else_could_have_written_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("compiled");
    memory_plugin_serves(&runtime_with_cache(cache.path())).await;
    let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let rt = runtime_with_cache(cache.path());
    memory_plugin_serves(&rt).await;
    assert_eq!(RuntimeStats::get(&rt.stats().components_from_cache), 0, "a directory others may write to is not trusted");
    assert_eq!(RuntimeStats::get(&rt.stats().components_compiled), 1);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // An entry of another user's (the tests run as root, which may give it away).
    if running_as_root() {
        std::os::unix::fs::chown(&entry, Some(4242), Some(4242)).unwrap();
        let rt = runtime_with_cache(cache.path());
        memory_plugin_serves(&rt).await;
        assert_eq!(RuntimeStats::get(&rt.stats().components_from_cache), 0, "another user's entry is not trusted");
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(&entry).unwrap().uid(), 0, "it was replaced by the server's own");
    }
    let rt = runtime_with_cache(cache.path());
    memory_plugin_serves(&rt).await;
    assert_eq!(RuntimeStats::get(&rt.stats().components_from_cache), 1, "a private entry is used again");
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
