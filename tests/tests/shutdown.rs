//! Graceful shutdown (`RunningServer::shutdown`): the listener closes at once,
//! in-flight requests finish within `limits.shutdown_grace_secs`, unfinished
//! uploads never become visible, and every connection is closed in bounded
//! time. The test servers use a grace of 2 s (see `server_support::start_with`).

mod server_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use server_support::*;

/// `limits.shutdown_grace_secs` of the test servers.
const GRACE: Duration = Duration::from_secs(2);
/// The longest `shutdown()` may take.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(GRACE.as_secs() + 3);

/// Starts `server.shutdown()` in the background; the handle yields how long it took.
fn begin_shutdown(server: TestServer) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let started = Instant::now();
        server.shutdown().await;
        started.elapsed()
    })
}

/// Waits for the shutdown task, asserting it returns within [`SHUTDOWN_LIMIT`].
async fn finish_shutdown(task: tokio::task::JoinHandle<Duration>) -> Duration {
    // A little slack over the limit so an overrun reports its real duration.
    let took = tokio::time::timeout(SHUTDOWN_LIMIT + Duration::from_secs(5), task)
        .await
        .unwrap_or_else(|_| {
            panic!("shutdown did not return within {SHUTDOWN_LIMIT:?} (+5 s slack)")
        })
        .expect("the shutdown task panicked");
    assert!(
        took <= SHUTDOWN_LIMIT,
        "shutdown took {took:?}, over grace + 3 s = {SHUTDOWN_LIMIT:?}"
    );
    took
}

/// True once a TCP connect to `addr` is refused (polled for up to `limit`).
async fn refused_within(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the SSH connection under `c` is gone: the transport reports closed
/// (bounded wait), and neither SFTP requests nor new channels get through.
async fn assert_connection_ended(c: &SftpClient, who: &str) {
    assert!(
        wait_until(Duration::from_secs(3), || c.ssh.is_closed()).await,
        "{who}: the SSH connection is still open after shutdown"
    );
    match tokio::time::timeout(Duration::from_secs(5), c.stat("/")).await {
        Ok(Err(SftpError::Status(s))) => {
            panic!("{who}: the server still answers SFTP after shutdown: {s:?}")
        }
        Ok(Err(_)) => {}
        Ok(Ok(attrs)) => panic!("{who}: STAT succeeded after shutdown: {attrs:?}"),
        Err(_) => {
            panic!("{who}: a request after shutdown neither failed nor was answered within 5 s")
        }
    }
    let channel = tokio::time::timeout(Duration::from_secs(5), c.ssh.channel_open_session()).await;
    assert!(
        matches!(channel, Ok(Err(_))),
        "{who}: a new channel on the old connection did not fail promptly"
    );
}

/// An upload that was opened and written but never closed: its content stays
/// invisible to another session of the same tenant, shutdown closes the listener at
/// once, returns within grace + 3 s, ends both connections, and the upload can
/// no longer be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_upload_is_cut_and_never_committed() {
    let server = start(&["alice"]).await;
    let addr = server.addr;
    let uploader = server.sftp("alice").await;
    let observer = server.sftp("alice").await;

    // An existing file to be replaced by an upload that never finishes.
    let old = pattern(10_000, 1);
    observer.put("/report.bin", &old).await;

    // 512 KiB in 64 KiB WRITEs: more than the memory plugin's 256 KiB chunk, so
    // the plugin has received data, not just the host's buffer.
    let data = pattern(512 * 1024, 2);
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let mut handles = Vec::new();
    for path in ["/new.bin", "/report.bin"] {
        let handle = bounded(
            "open for write",
            uploader.open(path, flags, FileAttributes::empty()),
        )
        .await
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
        .handle;
        for (i, piece) in data.chunks(64 * 1024).enumerate() {
            bounded(
                "write",
                uploader.write(handle.as_str(), (i * 64 * 1024) as u64, piece.to_vec()),
            )
            .await
            .unwrap_or_else(|e| panic!("write {path} #{i}: {e}"));
        }
        handles.push(handle);
    }

    // Before CLOSE the new file shows as being uploaded (its size so far,
    // no content yet); the old one keeps its content.
    let attrs = bounded("stat", observer.stat("/new.bin")).await.expect("stat /new.bin");
    assert_eq!(attrs.attrs.size, Some(data.len() as u64), "an upload in progress shows its size so far");
    assert_eq!(observer.get("/new.bin").await, b"", "no content before CLOSE");
    let attrs = bounded("stat", observer.stat("/report.bin"))
        .await
        .expect("stat /report.bin");
    assert_eq!(
        attrs.attrs.size,
        Some(old.len() as u64),
        "an unfinished replacement changed the size"
    );
    assert_eq!(
        observer.get("/report.bin").await,
        old,
        "an unfinished replacement changed the content"
    );
    assert_eq!(server.active_sessions(), 2);

    let shutdown = begin_shutdown(server);
    assert!(
        refused_within(addr, Duration::from_secs(1)).await,
        "{addr} still accepts connections during shutdown"
    );
    let took = finish_shutdown(shutdown).await;
    eprintln!("shutdown with an open upload took {took:?}");

    // Too late to commit: CLOSE does not succeed.
    for handle in handles {
        match tokio::time::timeout(Duration::from_secs(5), uploader.close(handle)).await {
            Ok(Err(SftpError::Status(s))) if s.status_code == StatusCode::Ok => {
                panic!("CLOSE committed after shutdown")
            }
            Ok(Ok(s)) => panic!("CLOSE committed after shutdown: {s:?}"),
            Ok(Err(_)) => {}
            Err(_) => panic!("CLOSE after shutdown neither failed nor was answered within 5 s"),
        }
    }
    assert_connection_ended(&uploader, "uploader").await;
    assert_connection_ended(&observer, "observer").await;
    assert!(
        refused_within(addr, Duration::from_millis(100)).await,
        "{addr} accepts connections after shutdown"
    );
}

/// An idle session does not hold shutdown up, and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_session_is_closed() {
    let server = start(&["bob"]).await;
    let addr = server.addr;
    let idle = server.sftp("bob").await;
    bounded("mkdir", idle.mkdir("/d", FileAttributes::empty()))
        .await
        .expect("mkdir");
    assert_eq!(server.active_sessions(), 1);

    let shutdown = begin_shutdown(server);
    assert!(
        refused_within(addr, Duration::from_secs(1)).await,
        "{addr} still accepts connections during shutdown"
    );
    let took = finish_shutdown(shutdown).await;
    eprintln!("shutdown with an idle session took {took:?}");
    assert_connection_ended(&idle, "idle session").await;
}

/// With nothing in flight there is nothing to wait for: the connection should
/// be closed as soon as its SFTP session has stopped, not at the forced cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_session_does_not_wait_for_the_grace_period() {
    let server = start(&["frank"]).await;
    let idle = server.sftp("frank").await;
    let took = finish_shutdown(begin_shutdown(server)).await;
    assert_connection_ended(&idle, "idle session").await;
    assert!(
        took < Duration::from_secs(1),
        "shutdown with only an idle session took {took:?} (grace {GRACE:?})"
    );
}

/// No sessions at all: shutdown is immediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_without_sessions_is_immediate() {
    let server = start(&["carol"]).await;
    let addr = server.addr;
    let took = finish_shutdown(begin_shutdown(server)).await;
    assert!(
        took < Duration::from_secs(1),
        "shutdown of an idle server took {took:?}"
    );
    assert!(
        refused_within(addr, Duration::from_millis(100)).await,
        "{addr} accepts connections after shutdown"
    );
}

/// A request in flight when shutdown starts is still answered if it finishes
/// within the grace period (a STAT taking 1 s in the plugin, grace 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_request_finishes_within_grace() {
    let server = start_with([UserSpec::new("dave")], |config| {
        use_slow_plugin(config, &[("delay-ms.file-info", "1000")])
    })
    .await;
    let c = std::sync::Arc::new(server.sftp("dave").await);
    let stat = {
        let c = c.clone();
        tokio::spawn(async move { c.stat("/").await })
    };
    // Let the STAT reach the server and start its (delayed) backend call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let shutdown = begin_shutdown(server);
    let reply = bounded("in-flight stat", stat).await.expect("stat task");
    let answered_after = started.elapsed();
    let attrs =
        reply.unwrap_or_else(|e| panic!("the in-flight STAT failed after {answered_after:?}: {e}"));
    assert!(attrs.attrs.is_dir(), "STAT / is a directory: {attrs:?}");
    assert!(
        answered_after < GRACE,
        "the in-flight STAT took {answered_after:?} into shutdown"
    );
    finish_shutdown(shutdown).await;
    assert_connection_ended(&c, "session").await;
}

/// A request slower than the grace period does not stretch shutdown past
/// grace + 3 s; the client gets no success for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_slower_than_grace_is_cut() {
    let server = start_with([UserSpec::new("erin")], |config| {
        use_slow_plugin(config, &[("delay-ms.file-info", "8000")])
    })
    .await;
    let c = std::sync::Arc::new(server.sftp("erin").await);
    let stat = {
        let c = c.clone();
        tokio::spawn(async move { c.stat("/").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = finish_shutdown(begin_shutdown(server)).await;
    eprintln!("shutdown with an 8 s request in flight took {took:?}");
    let reply = bounded("slow stat", stat).await.expect("stat task");
    assert!(
        reply.is_err(),
        "a request cut by shutdown reported success: {reply:?}"
    );
    assert_connection_ended(&c, "session").await;
}
