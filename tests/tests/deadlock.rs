//! Flow control under load: a 256 MiB OpenSSH download with 64 reads of
//! 255 KiB in flight must not deadlock, and a client that stops reading in
//! the middle of a download must not keep its session alive past the idle
//! timeout.

mod server_support;

use std::time::{Duration, Instant};

use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_download_256_mib() {
    let server = start(&["alice"]).await;
    let data = random_bytes(256 << 20);
    let expected = md5_hex(&data);

    let started = Instant::now();
    let c = server.sftp("alice").await;
    c.put_chunked("/big.bin", &data, 255 * 1024, 32).await;
    c.disconnect().await;
    eprintln!(
        "uploaded 256 MiB with the Rust client in {:?}",
        started.elapsed()
    );
    drop(data);

    let local = tempfile::tempdir().unwrap();
    let out = server
        .sftp_batch(
            "alice",
            "get big.bin\n",
            local.path(),
            Duration::from_secs(240),
        )
        .await;
    out.assert_success("256 MiB download");
    eprintln!("downloaded 256 MiB with OpenSSH sftp in {:?}", out.elapsed);
    let path = local.path().join("big.bin");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        256 << 20,
        "full size"
    );
    assert_eq!(md5_file(&path), expected, "md5 of the download");

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_reader_is_reaped() {
    const IDLE: u64 = 3;
    let server = start_with([UserSpec::new("alice")], |config| {
        config.limits.idle_timeout_secs = IDLE
    })
    .await;
    let size: usize = 192 << 20;
    let c = server.sftp("alice").await;
    let data = random_bytes(size);
    c.put_chunked("/big.bin", &data, 255 * 1024, 32).await;
    c.disconnect().await;
    server.wait_idle(Duration::from_secs(10)).await;

    // Start a download; its sftp and ssh processes share one process group.
    let local = tempfile::tempdir().unwrap();
    let target = local.path().join("big.bin");
    let mut cmd = server.sftp_command("alice", "get big.bin\n", local.path());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn().expect("spawning sftp");
    let pgid = child.id().expect("sftp pid");
    // Make sure the group is killed whatever happens below.
    struct KillGroup(u32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            signal_group(self.0, libc::SIGKILL);
        }
    }
    let _guard = KillGroup(pgid);

    // Once bytes arrive, freeze the client: it stops reading the socket.
    let started = wait_until(Duration::from_secs(30), || {
        std::fs::metadata(&target)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    })
    .await;
    assert!(started, "the download never started");
    signal_group(pgid, libc::SIGSTOP);
    let stopped_at = Instant::now();
    assert!(
        child.try_wait().unwrap().is_none(),
        "sftp finished before it could be stopped; use a larger file"
    );
    let got = std::fs::metadata(&target).unwrap().len();
    assert!(
        got < size as u64,
        "the download was already complete when the client froze"
    );
    assert_eq!(
        server.active_sessions(),
        1,
        "the frozen download's session is open"
    );

    // The server reaps it within the idle timeout (plus slack).
    let limit = Duration::from_secs(IDLE + 5);
    let reaped = wait_until(limit, || server.active_sessions() == 0).await;
    assert!(
        reaped,
        "a session whose client stopped reading is still open {:?} after it froze",
        stopped_at.elapsed()
    );
    eprintln!(
        "stalled session reaped {:?} after the client froze ({got} of {size} bytes arrived)",
        stopped_at.elapsed()
    );

    signal_group(pgid, libc::SIGKILL);
    let _ = bounded("reaping sftp", child.wait()).await;

    // The server still serves.
    let c = server.sftp("alice").await;
    let head = c.read_at("/big.bin", 1000, 4096).await;
    assert!(head == data[1000..5096], "a new session reads the file");
    c.disconnect().await;
    server.shutdown().await;
}
