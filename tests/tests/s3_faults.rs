//! The S3 plugin when S3 misbehaves: a fault-injecting proxy
//! (`s3_support::fault_proxy`) between the plugin and garage answers with
//! errors, hangs, or drops requests, and counts the bytes that pass.

mod s3_support;
mod server_support;

use std::time::{Duration, Instant};

use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use s3_support::{S3Bucket, eventually, pattern, write_without_close};
use s3_support::fault_proxy::{Fault, FaultProxy, Kind};
use server_support::*;

const MIB: usize = 1 << 20;

/// A server whose user alice reaches the bucket through `proxy`.
async fn server_via(bucket: &S3Bucket, proxy: &FaultProxy, config: &[(&str, &str)], maintain_every_secs: u64) -> TestServer {
    start_with([UserSpec::new("alice")], |c| {
        let mut plugin = bucket.plugin_config_via(&proxy.endpoint);
        for (key, value) in config {
            plugin.config.insert(key.to_string(), value.to_string());
        }
        if maintain_every_secs > 0 {
            plugin.maintain_every_secs = maintain_every_secs;
        }
        c.plugins.insert("s3".into(), plugin);
        c.users[0].plugin = "s3".into();
    })
    .await
}

/// Throttling (503) is retried by the SDK: two of them, then the upload goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_503s_then_the_upload_succeeds() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    proxy.inject(Some(Kind::PutObject), Fault::Status(503), 2);
    sftp.put("/f", b"retried").await;
    assert_eq!(proxy.seen(Kind::PutObject), 3, "two refused, the third went through");
    assert_eq!(bucket.get("f").await, b"retried");
    server.shutdown().await;
}

/// A 500 on CompleteMultipartUpload (every attempt): CLOSE fails, nothing
/// is visible, and the multipart upload is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_500_on_completion_fails_the_close_and_leaves_nothing() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    proxy.inject(Some(Kind::CompleteMultipart), Fault::Status(500), 10);
    let handle = write_without_close(&sftp, "/big.bin", &pattern(17 * MIB, 1)).await.unwrap();
    let closed = bounded("close", sftp.sftp.close(handle)).await;
    assert!(closed.is_err(), "CLOSE after a refused completion: {closed:?}");
    assert!(proxy.seen(Kind::CompleteMultipart) >= 1);
    assert!(bounded("stat", sftp.sftp.stat("/big.bin")).await.is_err(), "no file");
    assert!(eventually(|| async { bucket.multipart_uploads().await == 0 }).await, "the multipart upload was aborted");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// A GET that never answers: the read fails within the configured timeout,
/// and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_response_times_out_and_the_session_goes_on() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let config = [("read-timeout-secs", "2"), ("max-attempts", "1")];
    let server = server_via(&bucket, &proxy, &config, 0).await;
    let sftp = server.sftp("alice").await;
    let content = pattern(MIB, 2);
    sftp.put("/f", &content).await;
    proxy.inject(Some(Kind::Get), Fault::Hang, 1);
    let handle = bounded("open", sftp.sftp.open("/f", OpenFlags::READ, FileAttributes::empty())).await.unwrap().handle;
    let started = Instant::now();
    let read = bounded("read", sftp.sftp.read(handle.as_str(), 0, 32 << 10)).await;
    let took = started.elapsed();
    assert_eq!(status_code(read), StatusCode::Failure);
    assert!(took < Duration::from_secs(10), "the hung GET was given up after {took:?}");
    // The same session goes on.
    assert_eq!(sftp.get("/f").await, content);
    server.shutdown().await;
}

/// S3 goes away in the middle of an upload: the client gets the error, and
/// once S3 is back no multipart upload is left (the plugin's maintenance
/// aborts what the failed upload could not).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_down_mid_upload_leaves_no_orphan_once_back() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    // Old enough that maintenance leaves the live upload alone until S3 fails.
    let config = [("orphan-age-secs", "3"), ("max-attempts", "1")];
    let server = server_via(&bucket, &proxy, &config, 1).await;
    let sftp = server.sftp("alice").await;
    // The first part goes out, then S3 is gone.
    let data = pattern(40 * MIB, 3);
    let handle = write_without_close(&sftp, "/big.bin", &data[..17 * MIB]).await.unwrap();
    assert!(eventually(|| async { proxy.seen(Kind::UploadPart) >= 1 }).await, "a part went out before S3 went away");
    proxy.inject(None, Fault::Drop, usize::MAX);
    let mut failed = false;
    for (i, piece) in data[17 * MIB..].chunks(64 << 10).enumerate() {
        let offset = (17 * MIB + i * (64 << 10)) as u64;
        if bounded("write", sftp.sftp.write(handle.as_str(), offset, piece.to_vec())).await.is_err() {
            failed = true;
            break;
        }
    }
    let closed = bounded("close", sftp.sftp.close(handle)).await;
    assert!(failed || closed.is_err(), "the client was told the upload failed");
    proxy.clear();
    assert!(eventually(|| async { bucket.multipart_uploads().await == 0 }).await, "an orphan multipart upload was left");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// A resumed upload sends only the missing bytes: the existing 12 MiB are
/// copied inside S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reput_sends_only_the_missing_tail() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    let whole = pattern(20 * MIB, 4);
    sftp.put("/big.bin", &whole[..12 * MIB]).await;
    let sent = || proxy.body_bytes(Kind::UploadPart) + proxy.body_bytes(Kind::PutObject);
    let before = sent();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("big.bin"), &whole).unwrap();
    server.sftp_batch("alice", "reput big.bin\n", cwd.path(), Duration::from_secs(120)).await.assert_success("reput");
    let tail = sent() - before;
    assert!(proxy.seen(Kind::UploadPartCopy) >= 1, "the existing content was copied inside S3");
    // Chunked framing adds a few bytes per request at most.
    assert!((8 * MIB as u64..8 * MIB as u64 + 4096).contains(&tail), "sent {tail} bytes for an 8 MiB tail");
    assert_eq!(bucket.get("big.bin").await, whole);
    server.shutdown().await;
}

/// The plugin reaches only the origin its grant names: with the endpoint
/// outside `http_allow`, every request is refused before it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_to_another_host_is_refused() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = bucket.plugin_config_via(&proxy.endpoint);
        // Granted: garage itself; asked: the proxy, another origin.
        plugin.http_allow = vec![bucket.endpoint.clone()];
        c.plugins.insert("s3".into(), plugin);
        c.users[0].plugin = "s3".into();
    })
    .await;
    let sftp = server.sftp("alice").await;
    let listed = sftp.list("/").await;
    assert!(listed.is_err(), "a listing through an ungranted origin: {listed:?}");
    let seen: u64 = [Kind::List, Kind::Get, Kind::Head, Kind::Other].iter().map(|k| proxy.seen(*k)).sum();
    assert_eq!(seen, 0, "nothing reached the other host");
    // The server and the session are still there.
    assert!(sftp.list("/").await.is_err());
    server.shutdown().await;
}
