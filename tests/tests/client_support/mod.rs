//! Running third-party SFTP clients (Python libraries, lftp, rclone, scp,
//! sshfs) against a test server. Each client is a real program; every run is
//! bounded in time and its whole output is shown when it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server_support::{CmdOutput, TestServer, run, start};

/// The folder of the client scripts (`tests/clients`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `tests/clients/<script>` with `python3`, naming the `cases` to run,
/// logged in as `user` with its password.
pub async fn python(server: &TestServer, user: &str, script: &str, cases: &[&str], limit: Duration) -> CmdOutput {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-u").arg(scripts_dir().join(script)).args(cases);
    cmd.env("WASFTP_PORT", server.port().to_string())
        .env("WASFTP_USER", user)
        .env("WASFTP_PASSWORD", &server.user(user).password)
        .env("WASFTP_KEY", &server.user(user).key);
    run(cmd, limit).await
}

/// Starts a server with user `alice`, runs the named cases of a Python
/// client suite against it, and fails the test unless they all pass.
pub async fn python_cases(script: &str, cases: &[&str], limit: Duration) {
    let server = start(&["alice"]).await;
    python(&server, "alice", script, cases, limit).await.assert_success(&format!("{script} {cases:?}"));
    server.shutdown().await;
}

/// Runs `tests/clients/<script>` with bash in a fresh working directory
/// (`WORK`), with the server's port, the user and their key file in the
/// environment (`WASFTP_PORT`, `WASFTP_USER`, `WASFTP_KEY`, and
/// `SSH_OPTS`: the OpenSSH options every test client uses).
pub async fn shell(server: &TestServer, user: &str, script: &str, limit: Duration) -> CmdOutput {
    let work = tempfile::Builder::new().prefix("wasftp-client-").tempdir().expect("tempdir");
    shell_in(server, user, script, work.path(), limit).await
}

/// [`shell`] in a working directory the caller owns (and cleans up).
pub async fn shell_in(server: &TestServer, user: &str, script: &str, work: &Path, limit: Duration) -> CmdOutput {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(scripts_dir().join(script));
    cmd.env("WASFTP_PORT", server.port().to_string())
        .env("WASFTP_USER", user)
        .env("WASFTP_KEY", &server.user(user).key)
        .env("SSH_OPTS", server.openssh_options(user).join(" "))
        .env("WORK", work)
        .current_dir(work);
    run(cmd, limit).await
}
