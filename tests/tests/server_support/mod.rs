//! Helpers shared by the SFTP server integration tests: a real server on an
//! ephemeral port backed by the bundled memory plugin, the OpenSSH `sftp` and
//! `ssh` clients run as child processes, and a Rust client (russh +
//! russh-sftp) for checking exact status codes.
//!
//! Every wait is bounded: a hung server fails a test instead of hanging it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;
use wasftp::RunningServer;
use wasftp::config::{Config, UserConfig};

/// Upper bound on one protocol step of a test.
pub const STEP: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// Polls `cond` every 20 ms until it holds; false if `limit` passes first.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As the `wasftp` binary runs it: plugins compiled in the bounded child
/// (this crate's `compile-plugin` binary), kept in the shared cache.
pub fn engine_options() -> wasftp::plugin::EngineOptions {
    let compiler =
        wasftp::plugin::Compiler::Child { program: env!("CARGO_BIN_EXE_compile-plugin").into(), args: Vec::new() };
    wasftp::plugin::EngineOptions { compiler, ..Default::default() }
}

/// A user to create on the test server.
#[derive(Clone, Debug)]
pub struct UserSpec {
    pub name: String,
    pub home: String,
    pub tenant: Option<String>,
}

impl UserSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            home: "/".into(),
            tenant: None,
        }
    }
    pub fn home(mut self, home: &str) -> Self {
        self.home = home.into();
        self
    }
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
}

impl From<&str> for UserSpec {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// Credentials of a test user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub password: String,
    /// Private key file (OpenSSH format, no passphrase).
    pub key: PathBuf,
    /// Its authorized_keys line.
    pub public_key: String,
}

/// Generates an ed25519 key pair with `ssh-keygen` at `path` (and `path.pub`).
pub fn keygen(path: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", "wasftp-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("reading the public key")
        .trim()
        .to_string()
}

/// A running server and everything needed to talk to it.
pub struct TestServer {
    server: Option<RunningServer>,
    pub addr: SocketAddr,
    /// State dir, client keys, batch files.
    pub dir: TempDir,
    pub users: Vec<TestUser>,
}

/// Starts a server with `users` (home `/`, tenant = name), default limits
/// except a short shutdown grace.
pub async fn start(users: &[&str]) -> TestServer {
    start_with(users.iter().map(|u| UserSpec::new(u)), |_| {}).await
}

/// Serves every user of `config` from the slow test plugin
/// (`tests/plugins/slow`) with `knobs` as its config, e.g.
/// `("delay-ms.finish", "3000")`: the memory filesystem behind a slow backend.
pub fn use_slow_plugin(config: &mut Config, knobs: &[(&str, &str)]) {
    let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
    for (key, value) in knobs {
        plugin.config.insert(key.to_string(), value.to_string());
    }
    config.plugins.insert("slow".into(), plugin);
    for user in &mut config.users {
        user.plugin = "slow".into();
    }
}

/// Starts a server with `users`; `tweak` may adjust the config last.
pub async fn start_with(
    users: impl IntoIterator<Item = UserSpec>,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    // `RUST_LOG=debug cargo test ... -- --nocapture` shows the server's log.
    if std::env::var_os("RUST_LOG").is_some() {
        wasftp::telemetry::init(wasftp::telemetry::LogFormat::Text);
    }
    let dir = tempfile::Builder::new()
        .prefix("wasftp-it-")
        .tempdir()
        .expect("tempdir");
    let mut config = Config::from_toml("").expect("empty config");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.state_dir = Some(dir.path().join("state"));
    config.limits.shutdown_grace_secs = 2;
    let mut test_users = Vec::new();
    for spec in users {
        let key = dir.path().join(format!("id_{}", spec.name));
        let public_key = keygen(&key);
        let password = format!("pw-{}-secret", spec.name);
        config.users.push(UserConfig {
            name: spec.name.clone(),
            password_hash: Some(
                wasftp::auth::hash_password(&password).expect("hashing a password"),
            ),
            authorized_keys: vec![public_key.clone()],
            authorized_keys_file: None,
            home: spec.home.clone(),
            plugin: "memory".into(),
            tenant: spec.tenant.clone(),
            attributes: Default::default(),
            uid: 1000,
            gid: 1000,
        });
        test_users.push(TestUser {
            name: spec.name,
            password,
            key,
            public_key,
        });
    }
    tweak(&mut config);
    let server = bounded(
        "starting the server",
        wasftp::ServerBuilder::new(config).engine_options(engine_options()).start(),
    )
    .await
    .expect("starting the server");
    TestServer {
        addr: server.local_addr(),
        server: Some(server),
        dir,
        users: test_users,
    }
}

/// What a child process did.
#[derive(Debug)]
pub struct CmdOutput {
    /// `None` when it was killed for running past its time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    /// Panics with the whole output unless the command succeeded.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Sends `signal` to every process of process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// Runs `cmd` in its own process group with stdin closed; the whole group is
/// killed if it is still running after `limit`.
pub async fn run(mut cmd: tokio::process::Command, limit: Duration) -> CmdOutput {
    let started = std::time::Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn().expect("spawning a client process");
    let pgid = child.id().expect("child pid");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_task = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s).await;
        s
    });
    let err_task = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s).await;
        s
    });
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Some(status.expect("waiting for a client process")),
        Err(_) => {
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            None
        }
    };
    // Whatever is left of the group (an ssh child of sftp) goes too.
    signal_group(pgid, libc::SIGKILL);
    let read = |t: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::from("<output not collected>"),
        }
    };
    let stdout = read(out_task).await;
    let stderr = read(err_task).await;
    CmdOutput {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

impl TestServer {
    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn active_sessions(&self) -> usize {
        self.server().active_sessions()
    }

    pub fn user(&self, name: &str) -> &TestUser {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no test user {name}"))
    }

    /// Waits (bounded) until no session is open, so a test starts clean.
    pub async fn wait_idle(&self, limit: Duration) {
        let server = self.server();
        assert!(
            wait_until(limit, || server.active_sessions() == 0).await,
            "sessions still open after {limit:?}: {}",
            server.active_sessions()
        );
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            bounded("server shutdown", server.shutdown()).await;
        }
    }

    /// Options every OpenSSH client invocation gets: no config file, no known
    /// hosts, only the user's key, no prompts.
    pub fn openssh_options(&self, user: &str) -> Vec<String> {
        let key = &self.user(user).key;
        [
            "-F",
            "/dev/null",
            "-i",
            key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn destination(&self, user: &str) -> String {
        format!("{user}@127.0.0.1")
    }

    /// An `sftp -b <batch>` command for `user`, run in `cwd`. Not started.
    pub fn sftp_command(&self, user: &str, batch: &str, cwd: &Path) -> tokio::process::Command {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let batch_file = self.dir.path().join(format!("batch-{n}.txt"));
        std::fs::write(&batch_file, batch).expect("writing a batch file");
        let mut cmd = tokio::process::Command::new("sftp");
        cmd.arg("-b")
            .arg(&batch_file)
            .arg("-P")
            .arg(self.port().to_string());
        cmd.args(self.openssh_options(user));
        cmd.arg(self.destination(user)).current_dir(cwd);
        cmd
    }

    /// Like [`Self::sftp_command`], with `extra` options (`-o Ciphers=...`)
    /// before the destination.
    pub fn sftp_command_with(
        &self,
        user: &str,
        extra: &[&str],
        batch: &str,
        cwd: &Path,
    ) -> tokio::process::Command {
        let batch_file = tempfile::Builder::new()
            .prefix("batch-")
            .tempfile_in(self.dir.path())
            .expect("a batch file")
            .into_temp_path()
            .keep()
            .expect("keeping the batch file");
        std::fs::write(&batch_file, batch).expect("writing a batch file");
        let mut cmd = tokio::process::Command::new("sftp");
        cmd.arg("-b")
            .arg(&batch_file)
            .arg("-P")
            .arg(self.port().to_string());
        cmd.args(self.openssh_options(user));
        cmd.args(extra);
        cmd.arg(self.destination(user)).current_dir(cwd);
        cmd
    }

    /// Runs OpenSSH `sftp` in batch mode; `batch` is one command a line.
    pub async fn sftp_batch(
        &self,
        user: &str,
        batch: &str,
        cwd: &Path,
        limit: Duration,
    ) -> CmdOutput {
        run(self.sftp_command(user, batch, cwd), limit).await
    }

    /// An `ssh -p <port> <options> <extra...> user@127.0.0.1 <remote...>` command.
    pub fn ssh_command(
        &self,
        user: &str,
        extra: &[&str],
        remote: &[&str],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-p").arg(self.port().to_string());
        cmd.args(self.openssh_options(user));
        cmd.args(extra);
        cmd.arg(self.destination(user));
        cmd.args(remote);
        cmd
    }

    /// A connected, not yet authenticated russh client.
    pub async fn connect(&self) -> Handle<Client> {
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        });
        bounded("ssh connect", client::connect(config, self.addr, Client))
            .await
            .expect("ssh connect")
    }

    /// Whether the server accepts `password` for `user`.
    pub async fn password_accepted(&self, user: &str, password: &str) -> bool {
        let mut ssh = self.connect().await;
        let result = bounded("password auth", ssh.authenticate_password(user, password))
            .await
            .expect("password auth");
        result.success()
    }

    /// Whether the server accepts the private key at `key` for `user`.
    pub async fn key_accepted(&self, user: &str, key: &Path) -> bool {
        let mut ssh = self.connect().await;
        let key = russh::keys::load_secret_key(key, None).expect("loading a private key");
        let result = bounded(
            "key auth",
            ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None)),
        )
        .await
        .expect("key auth");
        result.success()
    }

    /// Logs `user` in with their key.
    pub async fn login(&self, user: &str) -> Handle<Client> {
        let mut ssh = self.connect().await;
        let key = russh::keys::load_secret_key(&self.user(user).key, None)
            .expect("loading a private key");
        let result = bounded(
            "key auth",
            ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None)),
        )
        .await
        .expect("key auth");
        assert!(result.success(), "key login of {user} refused: {result:?}");
        ssh
    }

    /// Logs `user` in with their password.
    pub async fn login_password(&self, user: &str) -> Handle<Client> {
        let mut ssh = self.connect().await;
        let password = self.user(user).password.clone();
        let result = bounded("password auth", ssh.authenticate_password(user, password))
            .await
            .expect("password auth");
        assert!(
            result.success(),
            "password login of {user} refused: {result:?}"
        );
        ssh
    }

    /// An initialised SFTP session for `user` (key login).
    pub async fn sftp(&self, user: &str) -> SftpClient {
        let ssh = self.login(user).await;
        SftpClient::over(ssh).await
    }

    /// An initialised SFTP session for `user` (password login).
    pub async fn sftp_password(&self, user: &str) -> SftpClient {
        let ssh = self.login_password(user).await;
        SftpClient::over(ssh).await
    }
}

/// The russh client handler: accepts any host key (the tests talk to their
/// own server on 127.0.0.1).
pub struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Opens a session channel and starts the `sftp` subsystem on it.
pub async fn sftp_channel(ssh: &Handle<Client>) -> russh::Channel<client::Msg> {
    let channel = bounded("channel open", ssh.channel_open_session())
        .await
        .expect("opening a session channel");
    bounded("subsystem request", channel.request_subsystem(true, "sftp"))
        .await
        .expect("requesting the sftp subsystem");
    channel
}

/// A russh-sftp raw session and the SSH connection under it.
pub struct SftpClient {
    pub sftp: RawSftpSession,
    pub ssh: Handle<Client>,
}

impl std::ops::Deref for SftpClient {
    type Target = RawSftpSession;
    fn deref(&self) -> &RawSftpSession {
        &self.sftp
    }
}

impl SftpClient {
    pub async fn over(ssh: Handle<Client>) -> Self {
        let channel = sftp_channel(&ssh).await;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(STEP.as_secs());
        let version = bounded("sftp init", sftp.init()).await.expect("sftp init");
        assert_eq!(version.version, 3, "server speaks SFTP v3");
        Self { sftp, ssh }
    }

    /// Ends the SFTP session and the SSH connection.
    pub async fn disconnect(self) {
        let _ = self.sftp.close_session();
        let _ = bounded(
            "disconnect",
            self.ssh
                .disconnect(russh::Disconnect::ByApplication, "bye", "en"),
        )
        .await;
    }

    /// Creates or replaces `path` with `data`: pipelined WRITEs of `chunk` bytes.
    pub async fn put(&self, path: &str, data: &[u8]) {
        self.put_chunked(path, data, 64 * 1024, 16).await
    }

    pub async fn put_chunked(&self, path: &str, data: &[u8], chunk: usize, in_flight: usize) {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        let handle = bounded(
            "open for write",
            self.sftp.open(path, flags, FileAttributes::empty()),
        )
        .await
        .unwrap_or_else(|e| panic!("open {path} for writing: {e}"))
        .handle;
        // 30 s plus a second per MiB: generous even for unoptimised builds.
        let limit = STEP + Duration::from_secs((data.len() >> 20) as u64);
        let all_writes = async {
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut pieces = data.chunks(chunk).enumerate();
            loop {
                while pending.len() < in_flight {
                    let Some((i, piece)) = pieces.next() else {
                        break;
                    };
                    pending.push(write_at(
                        &self.sftp,
                        handle.clone(),
                        i,
                        (i * chunk) as u64,
                        piece.to_vec(),
                    ));
                }
                match pending.next().await {
                    Some((i, result)) => {
                        result.unwrap_or_else(|e| panic!("write {path} chunk {i}: {e}"));
                    }
                    None => break,
                }
            }
        };
        tokio::time::timeout(limit, all_writes)
            .await
            .unwrap_or_else(|_| {
                panic!("writing {path} ({} bytes) took over {limit:?}", data.len())
            });
        bounded("close after write", self.sftp.close(handle))
            .await
            .unwrap_or_else(|e| panic!("close {path}: {e}"));
    }

    async fn open_read(&self, path: &str) -> String {
        bounded("open for read", self.sftp.open(path, OpenFlags::READ, FileAttributes::empty()))
            .await
            .unwrap_or_else(|e| panic!("open {path} for reading: {e}"))
            .handle
    }

    /// Reads all of `path` (sequential READs until EOF).
    pub async fn get(&self, path: &str) -> Vec<u8> {
        let handle = self.open_read(path).await;
        let mut out = Vec::new();
        loop {
            match bounded(
                "read",
                self.sftp.read(handle.as_str(), out.len() as u64, 64 * 1024),
            )
            .await
            {
                Ok(data) => {
                    assert!(
                        !data.data.is_empty(),
                        "READ of {path} returned no data instead of EOF"
                    );
                    out.extend_from_slice(&data.data);
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => panic!("read {path} at {}: {e}", out.len()),
            }
            assert!(out.len() <= 1 << 30, "{path}: reading never reached EOF");
        }
        bounded("close after read", self.sftp.close(handle))
            .await
            .unwrap_or_else(|e| panic!("close {path}: {e}"));
        out
    }

    /// One READ of `len` bytes at `offset` of `path`.
    pub async fn read_at(&self, path: &str, offset: u64, len: u32) -> Vec<u8> {
        let handle = self.open_read(path).await;
        let data = bounded("read", self.sftp.read(handle.as_str(), offset, len))
            .await
            .unwrap_or_else(|e| panic!("read {path} at {offset}: {e}"));
        bounded("close after read", self.sftp.close(handle))
            .await
            .unwrap_or_else(|e| panic!("close {path}: {e}"));
        data.data
    }

    /// Every name in directory `path` (READDIR until EOF), without `.` and `..`.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, SftpError> {
        let handle = bounded("opendir", self.sftp.opendir(path)).await?.handle;
        let mut names = Vec::new();
        loop {
            match bounded("readdir", self.sftp.readdir(handle.as_str())).await {
                Ok(name) => names.extend(name.files.into_iter().map(|f| f.filename)),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => return Err(e),
            }
            assert!(names.len() < 1_000_000, "READDIR of {path} never ended");
        }
        bounded("closedir", self.sftp.close(handle)).await?;
        names.retain(|n| n != "." && n != "..");
        Ok(names)
    }

    /// Opens `path` for writing (create, truncate) and sends `data` in 64 KiB
    /// WRITEs, one after the other; returns the handle, not closed.
    pub async fn write_without_close(&self, path: &str, data: &[u8]) -> Result<String, SftpError> {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        let handle = bounded("open", self.sftp.open(path, flags, FileAttributes::empty())).await?.handle;
        for (i, piece) in data.chunks(64 << 10).enumerate() {
            bounded("write", self.sftp.write(handle.as_str(), (i * (64 << 10)) as u64, piece.to_vec())).await?;
        }
        Ok(handle)
    }

    /// An extended request with string arguments; the STATUS code it got.
    pub async fn extended_status(&self, request: &str, args: &[&str]) -> StatusCode {
        match bounded("extended", self.sftp.extended(request, ssh_strings(args))).await {
            Ok(Packet::Status(s)) => s.status_code,
            Ok(other) => panic!("{request}: expected a STATUS, got {other:?}"),
            Err(SftpError::Status(s)) => s.status_code,
            Err(e) => panic!("{request}: {e}"),
        }
    }
}

async fn write_at(
    sftp: &RawSftpSession,
    handle: String,
    i: usize,
    offset: u64,
    data: Vec<u8>,
) -> (usize, Result<russh_sftp::protocol::Status, SftpError>) {
    (i, sftp.write(handle, offset, data).await)
}

/// SSH wire strings (u32 length + bytes), concatenated.
pub fn ssh_strings(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(&(a.len() as u32).to_be_bytes());
        out.extend_from_slice(a.as_bytes());
    }
    out
}

/// The status code of a failed SFTP call; panics on success or a non-status error.
#[track_caller]
pub fn status_code<T: std::fmt::Debug>(result: Result<T, SftpError>) -> StatusCode {
    match result {
        Err(SftpError::Status(s)) => s.status_code,
        Err(e) => panic!("expected a STATUS error, got client error {e}"),
        Ok(v) => panic!("expected a STATUS error, got success: {v:?}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", md5::compute(data))
}

/// MD5 of a file, read in pieces.
pub fn md5_file(path: &Path) -> String {
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("reading a local file");
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    format!("{:x}", ctx.finalize())
}

/// `bytes` (a component) with one more custom section: another build of
/// the same code, with another hash (a rebuild, for the reload tests).
pub fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"wasftp-test-build";
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name);
    contents.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// Replaces `path` as a build would: a new file renamed over it.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).expect("writing the new build");
    std::fs::rename(&next, path).expect("renaming it into place");
}
