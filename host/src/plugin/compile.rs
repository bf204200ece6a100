//! Compiling a plugin, bounded: wasmtime treats a component that is slow
//! or costly to compile as outside its threat model, so the compiler runs
//! in a child process (the `wasftp` binary itself) under a memory limit, a
//! CPU limit and a wall-clock timeout. A crash, a runaway or a kill there
//! is that plugin's load error, never a crash of the server. The compiled
//! artefact is kept by content hash (the file's SHA-256 and the engine's
//! settings), so a component is compiled once, not at every start.

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::Hash as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a plugin is compiled.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In the server's own process, with no bound: for embedding the
    /// library and for tests of other things.
    InProcess,
    /// In a child process: `program args… ` runs [`child_main`].
    Child { program: PathBuf, args: Vec<OsString> },
}

impl Compiler {
    /// This executable, as the `wasftp` binary runs it (`wasftp compile-plugin`).
    pub fn this_executable(subcommand: &str) -> anyhow::Result<Self> {
        // /proc/self/exe still runs the binary after it was replaced on disk
        // (an upgrade in place), where its path names the new one or nothing.
        let program = if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().context("finding this executable, to compile plugins in a child process")?
        };
        Ok(Self::Child { program, args: vec![subcommand.into()] })
    }
}

/// What compiling one plugin may cost.
#[derive(Debug, Clone, Copy)]
pub struct CompileLimits {
    /// Wall-clock time, from the child's start to its artefact.
    pub timeout: Duration,
    /// The child's data segment (RLIMIT_DATA: heap and private mappings);
    /// also the most of its output the server reads.
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(120), memory_bytes: 2 << 30 }
    }
}

/// Most bytes the compiled-component cache keeps; the least recently used
/// artefacts go first.
const CACHE_MAX_BYTES: u64 = 2 << 30;
/// Most of the child's stderr kept for the error message.
const STDERR_KEPT: usize = 4096;
/// An entry ends with the SHA-256 of what precedes it: a torn or altered
/// file is compiled again, never loaded.
const DIGEST_LEN: usize = 32;
/// Temp files of a write that never finished (a crash) are removed after this.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The cache directory by default: `$XDG_CACHE_HOME/wasftp/compiled`, else
/// `~/.cache/wasftp/compiled`; `None` (no cache) without either, rather
/// than a directory others could write to first.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("wasftp").join("compiled"))
}

/// How a component came to be compiled (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    FromCache,
    Compiled,
}

/// Compiles `wasm` for `engine`, or takes it from `cache_dir`.
pub async fn compile(
    engine: &Engine,
    compiler: &Compiler,
    cache_dir: Option<&Path>,
    name: &str,
    wasm: &[u8],
    limits: CompileLimits,
) -> anyhow::Result<(Component, Compiled)> {
    let wasm: Arc<[u8]> = wasm.into();
    let key = {
        let (engine, wasm) = (engine.clone(), wasm.clone());
        tokio::task::spawn_blocking(move || cache_key(&engine, &wasm)).await?
    };
    // One compile of a component at a time in this process: the others
    // wait for its artefact instead of compiling it too.
    let compiling = compiling_lock(&key);
    let _compiling = compiling.lock().await;
    let cached = cache_dir.map(|dir| dir.join(format!("{key}.cwasm")));
    if let Some(path) = &cached {
        let (engine, path, plugin) = (engine.clone(), path.clone(), name.to_string());
        if let Some(component) = tokio::task::spawn_blocking(move || load_cached(&engine, &path, &plugin)).await? {
            return Ok((component, Compiled::FromCache));
        }
    }
    let artefact = match compiler {
        Compiler::InProcess => {
            let (engine, wasm) = (engine.clone(), wasm.clone());
            tokio::task::spawn_blocking(move || engine.precompile_component(&wasm)).await?.map_err(anyhow::Error::from)
        }
        Compiler::Child { program, args } => compile_in_child(program, args, &wasm, limits).await,
    }
    .with_context(|| format!("compiling plugin {name}"))?;
    let (engine, plugin) = (engine.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let component = from_bytes(&engine, &artefact).with_context(|| format!("loading the compiled plugin {plugin}"))?;
        if let Some(path) = &cached
            && let Err(e) = store(path, &artefact)
        {
            tracing::warn!(plugin, path = %path.display(), "could not keep the compiled component: {e:#}");
        }
        Ok((component, Compiled::Compiled))
    })
    .await?
}

/// The lock of one cache key, shared by every runtime in the process.
fn compiling_lock(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static COMPILING: LazyLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = LazyLock::new(Default::default);
    let mut locks = COMPILING.lock().expect("compile locks");
    locks.retain(|_, lock| lock.strong_count() > 0);
    if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(key.to_string(), Arc::downgrade(&lock));
    lock
}

/// Feeds what is hashed into a SHA-256: a key that stays the same across
/// Rust releases (std's `DefaultHasher` may change).
struct DigestHasher(sha2::Sha256);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        unreachable!("only written to; the digest is taken whole")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The file's SHA-256 and the engine's code-generation settings (wasmtime
/// version, features, tunables): a change of either is a different key.
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut digest = DigestHasher(sha2::Sha256::new());
    digest.0.update(wasm);
    engine.precompile_compatibility_hash().hash(&mut digest);
    hex(&digest.0.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached component, if there is a whole one that only this user could
/// have written.
fn load_cached(engine: &Engine, path: &Path, plugin: &str) -> Option<Component> {
    let dir = path.parent()?;
    if !dir.exists() {
        // A first start: nothing cached yet, and `store` makes it.
        return None;
    }
    if let Err(why) = private_dir(dir) {
        tracing::warn!(plugin, dir = %dir.display(), "compiled-component cache not used: {why}");
        return None;
    }
    let bytes = match read_entry(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(why) => {
            tracing::warn!(plugin, path = %path.display(), "compiled-component cache entry unusable, compiling again: {why:#}");
            let _ = std::fs::remove_file(path);
            return None;
        }
    };
    match from_bytes(engine, &bytes) {
        Ok(component) => {
            // Recently used: kept longest by `trim_cache`.
            let _ = std::fs::File::options().append(true).open(path).and_then(|f| f.set_modified(SystemTime::now()));
            Some(component)
        }
        Err(e) => {
            tracing::warn!(plugin, path = %path.display(), "compiled-component cache entry unusable, compiling again: {e:#}");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// An entry's artefact, checked against its trailing digest; `None` when
/// there is no entry.
fn read_entry(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(meta.is_file(), "not a plain file");
    owned_by_us(&meta)?;
    // Read into our own memory, not mapped: a file cut short under us
    // cannot fault the server.
    let mut bytes = std::fs::read(path)?;
    anyhow::ensure!(bytes.len() > DIGEST_LEN, "too short");
    let digest = bytes.split_off(bytes.len() - DIGEST_LEN);
    anyhow::ensure!(sha2::Sha256::digest(&bytes).as_slice() == digest.as_slice(), "its digest does not match");
    Ok(Some(bytes))
}

fn from_bytes(engine: &Engine, artefact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: wasmtime requires bytes made by `precompile_component` of a
    // compatible engine, unaltered. They were made just now, in this
    // process or by our own child given the same settings
    // (`engine::codegen_config`), or read back from a cache entry that
    // matches the digest written with it, in a directory only this user
    // can write (`private_dir`, `owned_by_us`). wasmtime checks the header
    // and the engine's settings again and refuses a mismatch.
    unsafe { Component::deserialize(engine, artefact) }.map_err(anyhow::Error::from)
}

/// Keeps an artefact: written with its digest to a temp file beside it,
/// synced and renamed, so a reader never sees half a file; then the cache
/// is trimmed.
fn store(path: &Path, artefact: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the cache path has a directory")?;
    make_private_dir(dir)?;
    private_dir(dir).map_err(anyhow::Error::msg)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(artefact)?;
    file.write_all(&sha2::Sha256::digest(artefact))?;
    file.as_file().sync_all()?;
    file.persist(path)?;
    trim_cache(dir, CACHE_MAX_BYTES);
    Ok(())
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The cache directory is ours alone: a real directory (not a link), owned
/// by this user, that nobody else may write to or read.
fn private_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    owned_by_us(&meta).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("mode {:o}: others may use it (it must be 0700)", meta.permissions().mode() & 0o777));
        }
    }
    Ok(())
}

fn owned_by_us(meta: &std::fs::Metadata) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt as _;
        let me = rustix::process::geteuid().as_raw();
        anyhow::ensure!(meta.uid() == me, "owned by uid {}, not by this user ({me})", meta.uid());
    }
    let _ = meta;
    Ok(())
}

/// Removes the least recently used artefacts until the cache holds at most
/// `max_bytes`, and temp files of writes that never finished.
fn trim_cache(dir: &Path, max_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let (path, Ok(meta)) = (entry.path(), entry.metadata()) else { continue };
        let Ok(modified) = meta.modified() else { continue };
        if path.extension().is_some_and(|x| x == "cwasm") {
            files.push((modified, meta.len(), path));
        } else if entry.file_name().to_string_lossy().starts_with(".tmp")
            && now.duration_since(modified).is_ok_and(|age| age > STALE_TEMP)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// The child's CPU limit: the timeout's worth on every core the compiler
/// may use (it compiles functions in parallel), and a second. It stops a
/// child whose server is gone; the wall-clock timeout comes first.
fn cpu_limit_secs(timeout: Duration) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    timeout.as_secs().max(1) * cores + 1
}

/// Runs the compiler child: the component on its stdin, the artefact on its
/// stdout (at most `memory_bytes` of it read), killed at the timeout.
async fn compile_in_child(program: &Path, args: &[OsString], wasm: &[u8], limits: CompileLimits) -> anyhow::Result<Vec<u8>> {
    let cpu_secs = cpu_limit_secs(limits.timeout);
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(limits.memory_bytes.to_string())
        .arg(cpu_secs.to_string())
        // It parses the untrusted file: it gets none of the server's
        // environment (secrets the config expands among it).
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the compiler process {}", program.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        let feed = async {
            // A child that dies early closes its end: its status says why.
            let _ = stdin.write_all(wasm).await;
            drop(stdin);
        };
        let mut artefact = Vec::new();
        let mut messages = Vec::new();
        let mut output = stdout.take(limits.memory_bytes + 1);
        let (_, out, _) = tokio::join!(feed, output.read_to_end(&mut artefact), async {
            let _ = (&mut stderr).take(STDERR_KEPT as u64).read_to_end(&mut messages).await;
            // Past what is kept, the rest is drained so the child never blocks on it.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        });
        out.context("reading the compiled component")?;
        if artefact.len() as u64 > limits.memory_bytes {
            // It would block on the rest of its output forever.
            let _ = child.start_kill();
        }
        let status = child.wait().await?;
        anyhow::Ok((status, artefact, messages))
    };
    let (status, artefact, messages) = match tokio::time::timeout(limits.timeout, run).await {
        Ok(done) => done?,
        Err(_) => bail!(
            "compiling took longer than the {:?} allowed (compile_timeout_secs); the compiler was stopped",
            limits.timeout
        ),
    };
    if artefact.len() as u64 > limits.memory_bytes {
        bail!("the compiler's output is larger than the {} MiB allowed (compile_memory_mib)", limits.memory_bytes >> 20);
    }
    if status.success() {
        return Ok(artefact);
    }
    #[cfg(target_os = "linux")]
    {
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        if signal == Some(rustix::process::Signal::XCPU.as_raw()) {
            bail!("compiling used more than {cpu_secs} s of CPU (compile_timeout_secs); the compiler was stopped");
        }
        if signal == Some(rustix::process::Signal::KILL.as_raw()) {
            bail!("the compiler was killed (past its {cpu_secs} s CPU limit, or by the system's out-of-memory killer)");
        }
    }
    // Its words may quote the file: escaped and cut like any plugin text.
    let messages = super::error::bounded(String::from_utf8_lossy(&messages).trim().to_string());
    if messages.starts_with("memory allocation of") || messages.contains("\nmemory allocation of") {
        bail!(
            "compiling needed more than the {} MiB allowed (compile_memory_mib); the compiler was stopped",
            limits.memory_bytes >> 20
        );
    }
    if messages.is_empty() {
        bail!("the compiler process failed ({status})");
    }
    bail!("{messages}")
}

/// The compiler child: `MEMORY_BYTES CPU_SECS`, the component on stdin,
/// the artefact on stdout, an error on stderr. It limits itself before it
/// reads a byte, and builds the same engine settings as the server.
pub fn child_main(args: &[OsString]) -> ExitCode {
    match child_compile(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn child_compile(args: &[OsString]) -> anyhow::Result<()> {
    let [memory, cpu] = args else { bail!("usage: MEMORY_BYTES CPU_SECS < component.wasm > component.cwasm") };
    let number = |v: &OsString| v.to_str().and_then(|v| v.parse::<u64>().ok()).context("a number");
    limit_self(number(memory)?, number(cpu)?)?;
    let mut wasm = Vec::new();
    std::io::stdin().lock().read_to_end(&mut wasm)?;
    let engine = Engine::new(&super::engine::codegen_config()?)?;
    let artefact = engine.precompile_component(&wasm).map_err(anyhow::Error::from)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artefact)?;
    out.flush()?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn limit_self(memory_bytes: u64, cpu_secs: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, Signal, getrlimit, set_parent_process_death_signal, setrlimit};
    // Never more than the hard limits this process was started under
    // (systemd's LimitDATA=, ulimit): only those can be lowered to.
    let within = |resource: Resource, wanted: u64| getrlimit(resource).maximum.map_or(wanted, |hard| wanted.min(hard));
    let memory = within(Resource::Data, memory_bytes);
    setrlimit(Resource::Data, Rlimit { current: Some(memory), maximum: Some(memory) })
        .context("limiting the compiler's memory")?;
    // SIGXCPU at the soft limit; the hard limit a second later kills.
    let cpu = within(Resource::Cpu, cpu_secs);
    setrlimit(Resource::Cpu, Rlimit { current: Some(cpu.saturating_sub(1).max(1)), maximum: Some(cpu) })
        .context("limiting the compiler's CPU time")?;
    // No core file of a killed compiler (it could be as large as its memory).
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }).context("turning core files off")?;
    // Gone with the server, rather than computing on to its CPU limit.
    set_parent_process_death_signal(Some(Signal::KILL)).context("tying the compiler to the server")?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn limit_self(_memory_bytes: u64, _cpu_secs: u64) -> anyhow::Result<()> {
    // Only the parent's wall-clock timeout bounds it here.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, len: usize, age_secs: u64) {
        std::fs::write(path, vec![0u8; len]).unwrap();
        let f = std::fs::File::options().append(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs)).unwrap();
    }

    #[test]
    fn the_cache_is_trimmed_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("old.cwasm"), 100, 300);
        touch(&dir.path().join("mid.cwasm"), 100, 200);
        touch(&dir.path().join("new.cwasm"), 100, 100);
        touch(&dir.path().join("other.txt"), 1000, 400);
        touch(&dir.path().join(".tmpOld"), 10, 7200);
        touch(&dir.path().join(".tmpNew"), 10, 10);
        trim_cache(dir.path(), 250);
        assert!(!dir.path().join("old.cwasm").exists());
        assert!(dir.path().join("mid.cwasm").exists());
        assert!(dir.path().join("new.cwasm").exists());
        assert!(dir.path().join("other.txt").exists(), "only artefacts are the cache's to remove");
        assert!(!dir.path().join(".tmpOld").exists(), "a write left by a crash is removed");
        assert!(dir.path().join(".tmpNew").exists(), "a write under way is not");
    }

    #[test]
    fn the_key_is_the_content_and_the_engine_settings() {
        let engine = Engine::default();
        let a = cache_key(&engine, b"\0asm one");
        assert_eq!(a, cache_key(&engine, b"\0asm one"));
        assert_ne!(a, cache_key(&engine, b"\0asm two"));
        let mut other = wasmtime::Config::new();
        other.epoch_interruption(true);
        assert_ne!(a, cache_key(&Engine::new(&other).unwrap(), b"\0asm one"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn an_entry_is_read_only_whole_and_from_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("compiled");
        let path = cache.join("k.cwasm");
        store(&path, b"artefact bytes").unwrap();
        assert_eq!(read_entry(&path).unwrap().unwrap(), b"artefact bytes");
        private_dir(&cache).unwrap();

        // A torn or altered entry is refused.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(format!("{:#}", read_entry(&path).unwrap_err()).contains("digest"));
        std::fs::write(&path, b"short").unwrap();
        assert!(read_entry(&path).is_err());
        assert!(read_entry(&cache.join("missing.cwasm")).unwrap().is_none());

        // A directory others may write to is not used, nor a link.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&cache).unwrap_err().contains("0700"));
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        assert!(private_dir(&link).is_err());
    }
}
