//! Helpers shared by the plugin-runtime integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use wasftp::plugin::{
    DirEntry, EngineOptions, Plugin, PluginSettings, Runtime, Session, SessionContext, StorageError,
    WriteOptions,
};

/// Upper bound on any single step of a test: a broken sandbox fails the test
/// instead of hanging it.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("a plugin call did not complete within {STEP:?}"),
    }
}

pub fn runtime() -> Arc<Runtime> {
    Runtime::new(&engine_options()).expect("creating the plugin runtime")
}

/// As the `wasftp` binary runs it: plugins compiled in the bounded child
/// (this crate's `compile-plugin` binary), kept in the shared cache.
pub fn engine_options() -> EngineOptions {
    EngineOptions { compiler: child_compiler(), ..EngineOptions::default() }
}

pub fn child_compiler() -> wasftp::plugin::Compiler {
    wasftp::plugin::Compiler::Child { program: env!("CARGO_BIN_EXE_compile-plugin").into(), args: Vec::new() }
}

pub fn ctx(user: &str, tenant: &str) -> SessionContext {
    SessionContext { user: user.into(), tenant: tenant.into(), attributes: vec![("test".into(), "1".into())] }
}

pub async fn memory_plugin(rt: &Runtime) -> Arc<Plugin> {
    let bytes = wasftp::plugin::bundled::get("memory").expect("the memory plugin is bundled");
    bounded(rt.load("memory", bytes, PluginSettings::default())).await.expect("loading the memory plugin")
}

/// The memory plugin with a memory cap of `limit_mib` MiB and `config` for its `init`.
pub async fn memory_plugin_capped(rt: &Runtime, limit_mib: usize, config: &[(&str, &str)]) -> anyhow::Result<Arc<Plugin>> {
    let bytes = wasftp::plugin::bundled::get("memory").expect("the memory plugin is bundled");
    let settings = PluginSettings {
        memory_limit: limit_mib << 20,
        config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..PluginSettings::default()
    };
    bounded(rt.load("memory", bytes, settings)).await
}

pub async fn memory_session(plugin: &Plugin, user: &str, tenant: &str) -> Session {
    bounded(plugin.open_session(ctx(user, tenant))).await.expect("opening a memory session")
}

pub fn opts(create: bool, truncate: bool, exclusive: bool, append: bool) -> WriteOptions {
    WriteOptions { create, truncate, exclusive, append, permissions: None }
}

/// Creates or replaces `path` with `data`.
pub async fn put(s: &Session, path: &str, data: &[u8]) {
    let w = bounded(s.begin_write(path, opts(true, true, false, false))).await.unwrap_or_else(|e| panic!("begin-write {path}: {e}"));
    // Several chunks, so multi-chunk writes are exercised too.
    let mut off = 0usize;
    for chunk in data.chunks(16 * 1024) {
        bounded(w.write_chunk(off as u64, chunk)).await.unwrap_or_else(|e| panic!("write-chunk {path}: {e}"));
        off += chunk.len();
    }
    let info = bounded(w.finish()).await.unwrap_or_else(|e| panic!("finish {path}: {e}"));
    assert_eq!(info.size, data.len() as u64, "finish reports the size of {path}");
}

/// Reads all of `path` through one reader, in small reads.
pub async fn get(s: &Session, path: &str) -> Vec<u8> {
    let r = bounded(s.open_read(path, None)).await.unwrap_or_else(|e| panic!("open-read {path}: {e}"));
    read_all(&r).await
}

pub async fn read_all(r: &wasftp::plugin::Reader) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let chunk = bounded(r.read(out.len() as u64, 7 * 1024)).await.expect("read");
        if chunk.is_empty() {
            return out;
        }
        assert!(chunk.len() <= 7 * 1024);
        out.extend_from_slice(&chunk);
        assert!(out.len() < 64 << 20, "reader never reached end of file");
    }
}

/// Every entry of a directory, following cursors.
pub async fn list_all(s: &Session, path: &str, limit: u32) -> Result<Vec<DirEntry>, StorageError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = bounded(s.list_dir(path, cursor.as_deref(), limit)).await?;
        all.extend(page.entries);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(all),
        }
    }
    panic!("listing {path} never ended");
}

pub async fn names(s: &Session, path: &str) -> Vec<String> {
    list_all(s, path, 1000).await.unwrap_or_else(|e| panic!("list-dir {path}: {e}")).into_iter().map(|e| e.name).collect()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
