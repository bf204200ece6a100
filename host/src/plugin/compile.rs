//! Compiling a plugin, bounded: wasmtime treats a component that is slow
//! or costly to compile as outside its threat model, so the compiler runs
//! in a child process (the `wasftp` binary itself) under a memory limit, a
//! CPU limit and a wall-clock timeout. A crash, a runaway or a kill there
//! fails one plugin's load, never the server. The compiled artefact is kept
//! by content hash (the file's SHA-256 and the engine's settings), so a
//! component is compiled once, not at every start.

use std::ffi::OsString;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
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
        let program = std::env::current_exe().context("finding this executable, to compile plugins in a child process")?;
        Ok(Self::Child { program, args: vec![subcommand.into()] })
    }
}

/// What compiling one plugin may cost.
#[derive(Debug, Clone, Copy)]
pub struct CompileLimits {
    /// Wall-clock time, from the child's start to its artefact.
    pub timeout: Duration,
    /// The child's data segment (RLIMIT_DATA: heap and private mappings).
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

/// The cache directory by default: `$XDG_CACHE_HOME/wasftp/compiled`, else
/// `~/.cache/wasftp/compiled`, else under the temp dir.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("wasftp").join("compiled")
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
    let cached = cache_dir.map(|dir| dir.join(format!("{}.cwasm", cache_key(engine, wasm))));
    if let Some(path) = &cached
        && path.exists()
    {
        match load_artefact(engine, path.clone()).await {
            Ok(component) => {
                // Recently used: kept longest by the eviction below.
                let _ = std::fs::File::options().append(true).open(path).and_then(|f| f.set_modified(SystemTime::now()));
                return Ok((component, Compiled::FromCache));
            }
            Err(e) => {
                tracing::warn!(plugin = name, path = %path.display(), "compiled-component cache entry unusable, compiling again: {e:#}");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let artefact = match compiler {
        Compiler::InProcess => {
            let (engine, bytes) = (engine.clone(), wasm.to_vec());
            tokio::task::spawn_blocking(move || engine.precompile_component(&bytes)).await?.map_err(anyhow::Error::from)
        }
        Compiler::Child { program, args } => compile_in_child(program, args, wasm, limits).await,
    }
    .with_context(|| format!("compiling plugin {name}"))?;
    let component = from_bytes(engine, &artefact).with_context(|| format!("loading the compiled plugin {name}"))?;
    if let Some(path) = &cached
        && let Err(e) = store(path, &artefact)
    {
        tracing::warn!(plugin = name, path = %path.display(), "could not keep the compiled component: {e:#}");
    }
    Ok((component, Compiled::Compiled))
}

/// The file's SHA-256 and the engine's code-generation settings (wasmtime
/// version, features, tunables): a change of either is a different key.
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut settings = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut digest = sha2::Sha256::new();
    digest.update(wasm);
    digest.update(settings.finish().to_le_bytes());
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

async fn load_artefact(engine: &Engine, path: PathBuf) -> anyhow::Result<Component> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        // SAFETY: wasmtime requires that the file was made by
        // `precompile_component` of a compatible engine and not altered. It is
        // in our cache directory (mode 0700, written only by `store` below,
        // with an artefact this binary's compiler made for these settings);
        // wasmtime checks its header and the engine's settings and refuses a
        // file that does not match. This is what wasmtime's own cache does.
        unsafe { Component::deserialize_file(&engine, &path) }.map_err(anyhow::Error::from)
    })
    .await?
}

fn from_bytes(engine: &Engine, artefact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: the bytes were just made by `precompile_component`, in this
    // process or by our own child given the same engine settings, and have
    // not left our hands; wasmtime checks the settings again.
    unsafe { Component::deserialize(engine, artefact) }.map_err(anyhow::Error::from)
}

/// Keeps an artefact: written to a temp file beside it and renamed, so a
/// reader never sees half a file; then the cache is trimmed.
fn store(path: &Path, artefact: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the cache path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, artefact)?;
    file.persist(path)?;
    trim_cache(dir, CACHE_MAX_BYTES);
    Ok(())
}

/// Removes the least recently used artefacts until the cache holds at most
/// `max_bytes`.
fn trim_cache(dir: &Path, max_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
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

/// Runs the compiler child: the component on its stdin, the artefact on its
/// stdout, killed at the timeout.
async fn compile_in_child(program: &Path, args: &[OsString], wasm: &[u8], limits: CompileLimits) -> anyhow::Result<Vec<u8>> {
    let cpu_secs = limits.timeout.as_secs() + 1;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(limits.memory_bytes.to_string())
        .arg(cpu_secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the compiler process {}", program.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        let feed = async {
            // A child that dies early closes its end: its status says why.
            let _ = stdin.write_all(wasm).await;
            drop(stdin);
        };
        let mut artefact = Vec::new();
        let mut messages = Vec::new();
        let (_, out, _) = tokio::join!(feed, stdout.read_to_end(&mut artefact), async {
            let _ = (&mut stderr).take(STDERR_KEPT as u64).read_to_end(&mut messages).await;
            // Past what is kept, the rest is drained so the child never blocks on it.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        });
        out.context("reading the compiled component")?;
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
    if status.success() {
        return Ok(artefact);
    }
    let messages = String::from_utf8_lossy(&messages);
    let messages = messages.trim();
    if messages.contains("memory allocation of") {
        bail!(
            "compiling needed more than the {} MiB allowed (compile_memory_mib); the compiler was stopped",
            limits.memory_bytes >> 20
        );
    }
    #[cfg(target_os = "linux")]
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(SIGXCPU) {
        bail!("compiling used more than {cpu_secs} s of CPU (compile_timeout_secs); the compiler was stopped");
    }
    if messages.is_empty() {
        bail!("the compiler process failed ({status})");
    }
    bail!("{messages}")
}

/// The signal of a process past its soft CPU limit.
#[cfg(target_os = "linux")]
const SIGXCPU: i32 = 24;

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
    use std::io::{Read as _, Write as _};
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
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(Resource::Data, Rlimit { current: Some(memory_bytes), maximum: Some(memory_bytes) })
        .context("limiting the compiler's memory")?;
    // SIGXCPU at the soft limit; the hard limit a second later kills.
    setrlimit(Resource::Cpu, Rlimit { current: Some(cpu_secs), maximum: Some(cpu_secs + 1) })
        .context("limiting the compiler's CPU time")?;
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
        trim_cache(dir.path(), 250);
        assert!(!dir.path().join("old.cwasm").exists());
        assert!(dir.path().join("mid.cwasm").exists());
        assert!(dir.path().join("new.cwasm").exists());
        assert!(dir.path().join("other.txt").exists(), "only artefacts are the cache's to remove");
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
}
