//! The `wasftp` command as a user runs it: help, hash-password, dev mode
//! (host key generated once and reused, clean exit on SIGTERM and SIGINT),
//! config errors, JSON logs.
//!
//! Every child is killed when its guard drops (a failed assertion included)
//! and every wait is bounded.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wasftp");

/// Startup loads (compiles) the bundled memory plugin; generous for debug builds.
const START_LIMIT: Duration = Duration::from_secs(60);
/// A one-shot command (help, hash-password, a refused config).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How soon the server must exit after SIGTERM/SIGINT with no sessions open.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// A running `wasftp` process whose stdout and stderr are collected line by
/// line in the background. Killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => into.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    })
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning wasftp");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Both streams so far, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// The first line of `stream` matching `pred`, waiting at most `limit`;
    /// panics (with the transcript) on timeout or if the process exits first.
    fn wait_line(&mut self, stderr: bool, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let lines = if stderr { self.stderr() } else { self.stdout() };
            if let Some(line) = lines.iter().find(|l| pred(l)) {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the readers a moment to drain what the process wrote last.
                std::thread::sleep(Duration::from_millis(200));
                let lines = if stderr { self.stderr() } else { self.stdout() };
                if let Some(line) = lines.iter().find(|l| pred(l)) {
                    return line.clone();
                }
                panic!(
                    "wasftp exited ({status}) before the expected line\n{}",
                    self.transcript()
                );
            }
            assert!(
                Instant::now() < deadline,
                "expected line not seen within {limit:?}\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipes close with the process; let the readers finish (bounded).
                let until = Instant::now() + Duration::from_secs(5);
                while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the whole process to completion (bounded); panics if it overruns.
    fn finish(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let status = self.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "wasftp still running after {limit:?}\n{}",
                self.transcript()
            )
        });
        (status, self.stdout().join("\n"), self.stderr().join("\n"))
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Sends `signal` and asserts a clean (status 0) exit within [`EXIT_LIMIT`].
    fn assert_clean_exit_on(mut self, signal: i32, name: &str) {
        let sent = Instant::now();
        self.signal(signal);
        let status = self.wait_exit(EXIT_LIMIT).unwrap_or_else(|| {
            panic!(
                "wasftp did not exit within {EXIT_LIMIT:?} of {name}\n{}",
                self.transcript()
            )
        });
        assert!(
            status.success(),
            "wasftp exited with {status} on {name}\n{}",
            self.transcript()
        );
        assert!(
            sent.elapsed() < EXIT_LIMIT,
            "exit on {name} took {:?}",
            sent.elapsed()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `wasftp <args>` with a clean environment for logging and state: `HOME` is
/// `home`, `XDG_STATE_HOME` is `state` (or unset), `RUST_LOG=info`.
fn wasftp(args: &[&str], home: &Path, state: Option<&Path>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("XDG_CACHE_HOME");
    match state {
        Some(state) => cmd.env("XDG_STATE_HOME", state),
        None => cmd.env_remove("XDG_STATE_HOME"),
    };
    cmd
}

/// Runs a command that should end by itself.
fn run(args: &[&str], home: &Path) -> (ExitStatus, String, String) {
    Proc::spawn(wasftp(args, home, Some(&home.join("state")))).finish(COMMAND_LIMIT)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wasftp-cli-")
        .tempdir()
        .expect("tempdir")
}

/// A dev-mode server that has printed its banner.
struct DevServer {
    proc: Proc,
    fingerprint: String,
    addr: SocketAddr,
}

fn start_dev(home: &Path, state: Option<&Path>, password: &str) -> DevServer {
    let cmd = wasftp(
        &["serve", "--listen", "127.0.0.1:0", "--password", password],
        home,
        state,
    );
    let mut proc = Proc::spawn(cmd);
    let listening = proc.wait_line(false, START_LIMIT, |l| {
        l.starts_with("wasftp listening on ")
    });
    let addr: SocketAddr = listening["wasftp listening on ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {listening:?}: {e}"));
    // The banner is printed before the "listening" line, all on stdout.
    let stdout = proc.stdout().join("\n");
    assert!(
        stdout.contains("DEV MODE"),
        "no DEV MODE warning\n{}",
        proc.transcript()
    );
    assert!(
        stdout.contains("user: demo"),
        "user demo not announced\n{}",
        proc.transcript()
    );
    assert!(
        stdout.contains(&format!("password: {password}")),
        "password not shown\n{}",
        proc.transcript()
    );
    assert!(
        stdout.contains(&format!("sftp -P {} demo@127.0.0.1", addr.port())),
        "connect hint missing\n{}",
        proc.transcript()
    );
    let fp_lines: Vec<_> = proc
        .stdout()
        .into_iter()
        .filter(|l| l.starts_with("host key fingerprint: "))
        .collect();
    assert_eq!(
        fp_lines.len(),
        1,
        "expected one generated host key\n{}",
        proc.transcript()
    );
    // The bundled plugin was compiled by the child and kept by content hash.
    let compiled = home.join(".cache/wasftp/compiled");
    let kept = std::fs::read_dir(&compiled)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "cwasm")).count())
        .unwrap_or(0);
    assert_eq!(kept, 1, "one compiled component in {}\n{}", compiled.display(), proc.transcript());
    assert!(!proc.transcript().contains("cache not used"), "a first start warns of nothing\n{}", proc.transcript());
    let fingerprint = fp_lines[0]["host key fingerprint: ".len()..]
        .trim()
        .to_string();
    assert!(
        fingerprint.starts_with("SHA256:") && fingerprint.len() > 20,
        "odd fingerprint {fingerprint:?}"
    );
    DevServer {
        proc,
        fingerprint,
        addr,
    }
}

/// The SSH identification line the server sends first.
fn ssh_banner(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect("connecting to the server");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"SSH-2.0-cli_test\r\n").unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\n") && buf.len() < 256 {
        match tcp.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            Ok(_) => break,
            Err(e) => panic!("reading the SSH banner: {e}"),
        }
    }
    String::from_utf8_lossy(&buf).trim().to_string()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn help_lists_the_subcommands_and_serve_options() {
    let dir = tempdir();
    let (status, stdout, stderr) = run(&["--help"], dir.path());
    assert!(status.success(), "--help: {status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("serve"), "{stdout}");
    assert!(stdout.contains("hash-password"), "{stdout}");
    assert!(!stdout.contains("compile-plugin"), "the compiler child is internal: {stdout}");

    let (status, stdout, stderr) = run(&["serve", "--help"], dir.path());
    assert!(
        status.success(),
        "serve --help: {status}\n{stdout}\n{stderr}"
    );
    for option in ["--config", "--listen", "--password", "--log-format"] {
        assert!(
            stdout.contains(option),
            "serve --help lacks {option}:\n{stdout}"
        );
    }

    let (status, _, stderr) = run(&["no-such-command"], dir.path());
    assert!(!status.success(), "an unknown subcommand must fail");
    assert!(stderr.contains("no-such-command"), "{stderr}");
}

#[test]
fn the_compiler_child_refuses_what_is_not_a_component() {
    let dir = tempdir();
    // Its stdin is empty here: no component.
    let (status, stdout, stderr) = run(&["compile-plugin", "1073741824", "10"], dir.path());
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "no artefact: {stdout}");
    assert!(!stderr.trim().is_empty(), "it says why");
    let (status, _, stderr) = run(&["compile-plugin", "lots"], dir.path());
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("usage"), "{stderr}");
}

fn assert_hash_of(output: &str, password: &str) {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    let lines: Vec<_> = output.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line: {output:?}");
    let hash = lines[0];
    assert!(
        hash.starts_with("$argon2id$"),
        "not an argon2id PHC string: {hash}"
    );
    let parsed = PasswordHash::new(hash).expect("a parseable PHC string");
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .unwrap_or_else(|e| panic!("{hash} does not verify {password:?}: {e}"));
    assert!(
        argon2::Argon2::default()
            .verify_password(b"not-it", &parsed)
            .is_err(),
        "{hash} verifies a wrong password"
    );
}

#[test]
fn hash_password_from_argument() {
    let dir = tempdir();
    let (status, stdout, stderr) = run(&["hash-password", "secret"], dir.path());
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert_hash_of(&stdout, "secret");
    // Salted: a second hash of the same password differs.
    let (_, again, _) = run(&["hash-password", "secret"], dir.path());
    assert_ne!(
        stdout.trim(),
        again.trim(),
        "two hashes of one password are identical (no salt?)"
    );
}

/// Runs `hash-password` with `input` on stdin.
fn hash_from_stdin(input: &[u8], home: &Path) -> (ExitStatus, String, String) {
    let mut cmd = wasftp(&["hash-password"], home, None);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning wasftp");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).expect("writing the password");
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Wrapped so the child is killed if it overruns.
    let mut proc = Proc {
        child,
        stdout: Default::default(),
        stderr: Default::default(),
        readers: Vec::new(),
    };
    let status = proc
        .wait_exit(COMMAND_LIMIT)
        .expect("hash-password still running");
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).unwrap();
    stderr.read_to_string(&mut err).unwrap();
    (status, out, err)
}

#[test]
fn hash_password_from_stdin() {
    let dir = tempdir();
    // The trailing newline of `echo secret |` is not part of the password.
    let (status, stdout, stderr) = hash_from_stdin(b"secret\n", dir.path());
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert_hash_of(&stdout, "secret");

    let (status, stdout, stderr) = hash_from_stdin(b"pa ss\r\n", dir.path());
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert_hash_of(&stdout, "pa ss");

    let (status, stdout, stderr) = hash_from_stdin(b"\n", dir.path());
    assert!(
        !status.success(),
        "an empty password must be refused: {stdout}"
    );
    assert!(stderr.contains("empty"), "{stderr}");
    assert!(
        stdout.is_empty(),
        "nothing on stdout when refused: {stdout}"
    );
}

#[test]
fn dev_mode_reuses_its_host_key_and_exits_on_sigterm() {
    let dir = tempdir();
    let home = dir.path().join("home");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&home).unwrap();
    let key: PathBuf = state.join("wasftp").join("ssh_host_ed25519_key");

    let first = start_dev(&home, Some(&state), "pw");
    assert!(
        key.is_file(),
        "no generated host key at {}\n{}",
        key.display(),
        first.proc.transcript()
    );
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600, "the host key must be private");
    assert!(
        !home.join(".local").exists(),
        "XDG_STATE_HOME wins over HOME"
    );
    let banner = ssh_banner(first.addr);
    assert!(
        banner.starts_with("SSH-2.0-wasftp"),
        "unexpected banner {banner:?}"
    );
    let key_bytes = std::fs::read(&key).unwrap();
    let (addr, fingerprint) = (first.addr, first.fingerprint.clone());
    first.proc.assert_clean_exit_on(libc::SIGTERM, "SIGTERM");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "{addr} still accepts after the server exited"
    );

    let second = start_dev(&home, Some(&state), "pw");
    assert_eq!(
        second.fingerprint, fingerprint,
        "the host key was regenerated instead of reused"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_bytes,
        "the host key file changed"
    );
    second.proc.assert_clean_exit_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn dev_mode_without_xdg_state_home_uses_home_and_exits_on_sigint() {
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = start_dev(&home, None, "another-pw");
    let key = home.join(".local/state/wasftp/ssh_host_ed25519_key");
    assert!(
        key.is_file(),
        "no generated host key at {}\n{}",
        key.display(),
        server.proc.transcript()
    );
    server.proc.assert_clean_exit_on(libc::SIGINT, "SIGINT");
}

#[test]
fn dev_mode_random_password_is_printed() {
    let dir = tempdir();
    let cmd = wasftp(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        Some(&dir.path().join("state")),
    );
    let mut proc = Proc::spawn(cmd);
    let line = proc.wait_line(false, START_LIMIT, |l| l.contains("user: demo"));
    let password = line
        .split("password:")
        .nth(1)
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        password.len() >= 16,
        "weak or missing generated password in {line:?}"
    );
    proc.assert_clean_exit_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn unknown_config_field_is_named_with_its_line() {
    let dir = tempdir();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n\n[limits]\nmax_sesions = 3\n",
    )
    .unwrap();
    let (status, stdout, stderr) =
        run(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(
        !status.success(),
        "a bad config must be refused\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("max_sesions"),
        "the unknown field is not named:\n{stderr}"
    );
    assert!(
        stderr.contains("line 4"),
        "the line is not named:\n{stderr}"
    );
    assert!(
        stderr.contains("bad.toml"),
        "the file is not named:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening"),
        "it must not start:\n{stdout}"
    );
}

#[test]
fn password_with_config_is_refused() {
    let dir = tempdir();
    let config = dir.path().join("wasftp.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let (status, stdout, stderr) = run(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--password",
            "pw",
        ],
        dir.path(),
    );
    assert!(
        !status.success(),
        "--password with --config must be refused\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("--password"), "{stderr}");
    assert!(stderr.contains("dev mode"), "{stderr}");
    assert!(
        stderr.contains("password_hash"),
        "the message should point at password_hash:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening"),
        "it must not start:\n{stdout}"
    );
}

#[test]
fn json_log_format_writes_json_lines_to_stderr() {
    let dir = tempdir();
    let cmd = wasftp(
        &[
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--password",
            "pw",
        ],
        dir.path(),
        Some(&dir.path().join("state")),
    );
    let mut proc = Proc::spawn(cmd);
    let line = proc.wait_line(true, START_LIMIT, |l| l.contains("wasftp listening"));
    let value: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}\n{}", proc.transcript()));
    assert_eq!(value["fields"]["message"], "wasftp listening", "{value}");
    assert_eq!(value["level"], "INFO", "{value}");
    let addr = value["fields"]["local_addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no local_addr in {value}"));
    assert!(addr.starts_with("127.0.0.1:"), "{value}");
    // The "listening" line on stdout is the human banner; the log names the same address.
    let banner = proc.wait_line(false, START_LIMIT, |l| {
        l.starts_with("wasftp listening on ")
    });
    assert!(banner.ends_with(addr), "{banner} vs {addr}");
    proc.signal(libc::SIGTERM);
    let status = proc
        .wait_exit(EXIT_LIMIT)
        .unwrap_or_else(|| panic!("no exit on SIGTERM\n{}", proc.transcript()));
    assert!(status.success(), "{status}\n{}", proc.transcript());
    let stderr = proc.stderr();
    assert!(
        stderr.iter().any(|l| l.contains("wasftp stopped")),
        "no stop log\n{}",
        proc.transcript()
    );
    for line in stderr.iter().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON: {line:?}: {e}"));
    }
}

#[test]
fn a_core_module_given_as_a_plugin_is_refused_in_our_words() {
    let dir = tempdir();
    let module = dir.path().join("module.wasm");
    // The smallest core module: the header alone.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let config = dir.path().join("wasftp.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[plugins.mine]\nsource = \"{}\"\n\n[[users]]\nname = \"a\"\nplugin = \"mine\"\n\
             authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEyQWS7pnFSX7ZMCkbe1ybvHKdEkPh3ob71g5CvXWrvC a\"]\n",
            module.display()
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = run(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(!status.success(), "a core module must be refused\n{stdout}\n{stderr}");
    assert!(stderr.contains("plugin mine: this is a core WebAssembly module, not a component"), "{stderr}");
    assert!(!stderr.contains("component parser"), "not in wasmtime's words:\n{stderr}");
    assert!(!stdout.contains("listening"), "it must not start:\n{stdout}");
}

#[test]
fn a_plugin_source_that_never_ends_is_refused_at_its_bound() {
    let dir = tempdir();
    let config = dir.path().join("wasftp.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n\n[plugins.mine]\nsource = \"/dev/zero\"\nmax_component_mib = 1\n\n[[users]]\nname = \"a\"\nplugin = \"mine\"\n\
         authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEyQWS7pnFSX7ZMCkbe1ybvHKdEkPh3ob71g5CvXWrvC a\"]\n",
    )
    .unwrap();
    let (status, stdout, stderr) = run(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(!status.success(), "refused\n{stdout}\n{stderr}");
    assert!(stderr.contains("plugin mine: the file is larger than the 1048576 bytes allowed (max_component_mib)"), "{stderr}");
}

#[test]
fn plugin_check_runs_the_conformance_suite_and_plugin_info_describes() {
    let dir = tempdir();
    let (status, stdout, stderr) = run(&["plugin", "check", "bundled:memory"], dir.path());
    assert!(status.success(), "check of the memory plugin: {status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("pass  a listing pages through all entries, none twice"), "{stdout}");
    assert!(stdout.contains("pass  what the check made is removed"), "{stdout}");
    assert!(stdout.contains("skip  symlinks: made, read and described"), "{stdout}");
    assert!(stdout.contains("memory: 22 passed, 0 failed, 2 skipped"), "{stdout}");

    // Another user and tenant for the check's session.
    let (status, stdout, _) = run(&["plugin", "check", "bundled:memory", "--user", "ann", "--tenant", "acme"], dir.path());
    assert!(status.success() && stdout.contains("22 passed"), "{stdout}");

    // As a server configuration has it: its config reaches init (a memory
    // plugin with its quota set too small for the check's files fails).
    let config = dir.path().join("wasftp.toml");
    std::fs::write(&config, "[plugins.roomy]\nsource = \"bundled:memory\"\n[plugins.cramped]\nsource = \"bundled:memory\"\nconfig = { max-bytes = \"20000\" }\n").unwrap();
    let config = config.to_str().unwrap();
    let (status, stdout, stderr) = run(&["plugin", "check", "--server-config", config, "roomy"], dir.path());
    assert!(status.success() && stdout.contains("roomy: 22 passed"), "{stdout}\n{stderr}");
    let (status, stdout, _) = run(&["plugin", "check", "--server-config", config, "cramped"], dir.path());
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no space"), "{stdout}");
    let (status, _, stderr) = run(&["plugin", "check", "--server-config", config, "absent"], dir.path());
    assert!(!status.success() && stderr.contains("has no [plugins.absent] (it has: cramped, memory, roomy)"), "{stderr}");
    let (status, _, stderr) = run(&["plugin", "check", "--server-config", config, "roomy", "--config", "a=b"], dir.path());
    assert!(!status.success() && stderr.contains("cannot be used with"), "{stderr}");

    let (status, stdout, stderr) = run(&["plugin", "info", "bundled:memory"], dir.path());
    assert!(status.success(), "info: {status}\n{stdout}\n{stderr}");
    for line in ["contract:  wasftp:storage/backend@0.2.0", "backend:   memory", "declares:  random-write, append", "imports:", "  wasftp:storage/log@0.2.0"] {
        assert!(stdout.contains(line), "info lacks {line:?}:\n{stdout}");
    }

    // Admission comes first, and speaks for itself.
    let module = dir.path().join("core.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let (status, _, stderr) = run(&["plugin", "check", module.to_str().unwrap()], dir.path());
    assert_eq!(status.code(), Some(2), "not admitted: {stderr}");
    assert!(stderr.contains("admission") && stderr.contains("core WebAssembly module, not a component"), "{stderr}");
    let (status, _, stderr) = run(&["plugin", "info", "/nonexistent/p.wasm"], dir.path());
    assert!(!status.success());
    assert!(stderr.contains("opening /nonexistent/p.wasm"), "{stderr}");
}

/// The README's `cargo run --release -- serve`: among the workspace's
/// default members exactly one binary, wasftp, so `cargo run` picks it (the
/// tests' compile-plugin binary once made it refuse to choose).
#[test]
fn cargo_run_finds_the_one_binary() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        // From the workspace's root, as the README runs it (inside a member,
        // the default is that member).
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root"))
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let defaults: Vec<&str> = meta["workspace_default_members"].as_array().expect("default members").iter().filter_map(|m| m.as_str()).collect();
    let binaries: Vec<&str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| defaults.contains(&p["id"].as_str().unwrap_or_default()))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(binaries, ["wasftp"], "cargo run would have to choose among {binaries:?}");
}

/// `host/examples/localfs.toml` as the README runs it: users alice and bob
/// (demo passwords `alice`, `bob`) each get their own folder under
/// `LOCALFS_ROOT`, made at the first login, and see nothing of the other's.
#[test]
fn the_localfs_example_serves_alice_and_bob_their_own_folders() {
    let dir = tempdir();
    let root = dir.path().join("sftp");
    std::fs::create_dir(&root).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/localfs.toml");
    let mut cmd = wasftp(&["serve", "--config", example.to_str().unwrap(), "--listen", "127.0.0.1:0"], dir.path(), Some(&dir.path().join("state")));
    cmd.env("LOCALFS_ROOT", &root);
    let mut proc = Proc::spawn(cmd);
    let listening = proc.wait_line(false, START_LIMIT, |l| l.starts_with("wasftp listening on "));
    let addr: SocketAddr = listening["wasftp listening on ".len()..].trim().parse().expect("the address");
    // Each user puts a file of their own, then lists their root.
    let script = r#"
import os, paramiko
for user in ("alice", "bob"):
    t = paramiko.Transport(("127.0.0.1", int(os.environ["PORT"])))
    t.connect(username=user, password=user)
    s = paramiko.SFTPClient.from_transport(t)
    with s.open(user + ".txt", "w") as f:
        f.write(user + "'s file")
    print(user, sorted(s.listdir("/")))
    t.close()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PORT", addr.port().to_string())
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), proc.transcript());
    assert!(stdout.contains("alice ['alice.txt']") && stdout.contains("bob ['bob.txt']"), "{stdout}");
    assert_eq!(std::fs::read(root.join("alice/alice.txt")).unwrap(), b"alice's file");
    assert_eq!(std::fs::read(root.join("bob/bob.txt")).unwrap(), b"bob's file");
    proc.assert_clean_exit_on(libc::SIGTERM, "SIGTERM");
}
