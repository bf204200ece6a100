//! The real `ssh` client, with a valid key, asking for everything that is
//! not SFTP: exec, shell, direct-tcpip (-W / -L) and remote forwarding (-R).
//! All must be refused, promptly.

mod server_support;

use std::time::Duration;

use server_support::*;

const LIMIT: Duration = Duration::from_secs(30);

async fn server() -> TestServer {
    let server = start(&["alice"]).await;
    // The key works: sftp logs in.
    let local = tempfile::tempdir().unwrap();
    server
        .sftp_batch("alice", "pwd\n", local.path(), LIMIT)
        .await
        .assert_success("sftp login with the key");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_is_refused() {
    let server = server().await;
    let out = run(server.ssh_command("alice", &["-T"], &["echo", "hi"]), LIMIT).await;
    eprintln!("{out}");
    assert!(!out.timed_out(), "exec must be refused promptly: {out}");
    assert!(!out.success(), "exec must fail: {out}");
    assert!(
        !out.stdout.contains("hi"),
        "the command must not run: {out}"
    );
    assert!(
        out.stderr.contains("exec request failed"),
        "the server refused the exec request: {out}"
    );
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_is_refused() {
    let server = server().await;
    let out = run(
        server.ssh_command("alice", &["-T", "-o", "RequestTTY=no"], &[]),
        LIMIT,
    )
    .await;
    eprintln!("{out}");
    assert!(!out.timed_out(), "shell must be refused promptly: {out}");
    assert!(!out.success(), "shell must fail: {out}");
    assert!(
        out.stderr.contains("shell request failed"),
        "the server refused the shell request: {out}"
    );
    // With a pty requested too (-tt forces one even without a terminal).
    let out = run(server.ssh_command("alice", &["-tt"], &[]), LIMIT).await;
    eprintln!("{out}");
    assert!(
        !out.timed_out(),
        "pty + shell must be refused promptly: {out}"
    );
    assert!(!out.success(), "pty + shell must fail: {out}");
    assert!(
        out.stderr.contains("request failed"),
        "the server refused the pty/shell requests: {out}"
    );
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_tcpip_is_refused() {
    let server = server().await;
    // Forward stdio to the server's own port: an accepted channel would print its SSH banner.
    let target = format!("127.0.0.1:{}", server.port());
    let out = run(server.ssh_command("alice", &["-W", &target], &[]), LIMIT).await;
    eprintln!("{out}");
    assert!(!out.timed_out(), "-W must be refused promptly: {out}");
    assert!(!out.success(), "-W must fail: {out}");
    assert!(
        !out.stdout.contains("SSH-2.0"),
        "nothing was forwarded: {out}"
    );
    // ssh reports the refused channel open this way (ssh.c ssh_stdio_confirm).
    assert!(
        out.stderr.contains("stdio forwarding failed"),
        "the server refused the channel: {out}"
    );
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_forwarding_is_refused() {
    let server = server().await;
    let out = run(
        server.ssh_command(
            "alice",
            &[
                "-N",
                "-R",
                "0:127.0.0.1:9",
                "-o",
                "ExitOnForwardFailure=yes",
            ],
            &[],
        ),
        LIMIT,
    )
    .await;
    eprintln!("{out}");
    assert!(
        !out.timed_out(),
        "-R must be refused, and ssh -N exit at once (it hung instead): {out}"
    );
    assert!(!out.success(), "-R must fail: {out}");
    assert!(
        out.elapsed < Duration::from_secs(15),
        "refused quickly: {out}"
    );
    assert!(
        out.stderr.contains("forwarding failed"),
        "the server refused the tcpip-forward request: {out}"
    );
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}
