//! The S3 plugin when S3 misbehaves: a fault-injecting proxy
//! (`s3_support::fault_proxy`) between the plugin and garage answers with
//! errors, hangs, or drops requests, and counts the requests and bytes
//! that pass.

mod s3_support;
mod server_support;

use std::time::{Duration, Instant};

use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use s3_support::{S3Bucket, eventually, pattern};
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
    let handle = sftp.write_without_close("/big.bin", &pattern(17 * MIB, 1)).await.unwrap();
    let closed = bounded("close", sftp.sftp.close(handle)).await;
    assert!(closed.is_err(), "CLOSE after a refused completion: {closed:?}");
    assert!(proxy.seen(Kind::CompleteMultipart) >= 1);
    assert!(bounded("stat", sftp.sftp.stat("/big.bin")).await.is_err(), "no file");
    assert!(eventually(|| async { bucket.multipart_uploads().await == 0 }).await, "the multipart upload was aborted");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// A GET that never answers: the read fails within the configured timeout,
/// and the session goes on. (OPEN's GET of the first bytes went through:
/// the read past them hangs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_response_times_out_and_the_session_goes_on() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let config = [("read-timeout-secs", "2"), ("max-attempts", "1")];
    let server = server_via(&bucket, &proxy, &config, 0).await;
    let sftp = server.sftp("alice").await;
    let content = pattern(MIB, 2);
    sftp.put("/f", &content).await;
    let handle = bounded("open", sftp.sftp.open("/f", OpenFlags::READ, FileAttributes::empty())).await.unwrap().handle;
    proxy.inject(Some(Kind::Get), Fault::Hang, 1);
    let started = Instant::now();
    let read = bounded("read", sftp.sftp.read(handle.as_str(), 512 << 10, 32 << 10)).await;
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
    let handle = sftp.write_without_close("/big.bin", &data[..17 * MIB]).await.unwrap();
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

/// OPEN of a file is one GET of its first 64 KiB, which also pins the
/// version: a small file is downloaded with that one request and no HEAD.
/// Sizes around that first read, and an empty file, come back exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_file_is_downloaded_with_one_request() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    let requests = || (proxy.seen(Kind::Get), proxy.seen(Kind::Head));
    const FIRST: usize = 64 * 1024;
    // (size, GETs, HEADs) a download takes. S3 answers a range of an empty
    // object 416, and the plugin asks with a HEAD then; a server that sends
    // the empty object needs none.
    for (size, gets, heads) in [(4096, 1, 0), (FIRST, 1, 0), (FIRST + 1, 2, 0), (3 * MIB, 2, 0), (0, 1, 1)] {
        let content = pattern(size, size as u64);
        let path = format!("/f{size}");
        sftp.put(&path, &content).await;
        let before = requests();
        let got = sftp.get(&path).await;
        let after = requests();
        assert!(got == content, "{size} bytes came back as {} bytes", got.len());
        let (got_gets, got_heads) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(got_gets, gets, "GETs for a download of {size} bytes");
        assert!(got_heads <= heads, "{got_heads} HEADs for a download of {size} bytes");
    }
    server.shutdown().await;
}

/// The plugin keeps the part-sized chunks the host sends and sends each
/// part once: a file of exactly one part is one PutObject; one of two parts
/// and a byte is three parts, every byte sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_go_out_once_and_one_part_is_one_put() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[("part-size", "5242880")], 0).await;
    let sftp = server.sftp("alice").await;
    let one_part = pattern(5 * MIB, 1);
    sftp.put("/one.bin", &one_part).await;
    assert_eq!((proxy.seen(Kind::PutObject), proxy.seen(Kind::CreateMultipart)), (1, 0), "one part, one PutObject");
    assert_eq!(bucket.get("one.bin").await, one_part);

    let three_parts = pattern(10 * MIB + 1, 2);
    sftp.put("/three.bin", &three_parts).await;
    assert_eq!((proxy.seen(Kind::CreateMultipart), proxy.seen(Kind::UploadPart)), (1, 3));
    let sent = proxy.body_bytes(Kind::UploadPart);
    // Chunked framing adds a few bytes per request at most.
    assert!((10 * MIB as u64 + 1..10 * MIB as u64 + 4096).contains(&sent), "sent {sent} bytes for 10 MiB + 1");
    assert_eq!(bucket.get("three.bin").await, three_parts);
    assert_eq!(bucket.multipart_uploads().await, 0);
    server.shutdown().await;
}

/// A file larger than `max-single-copy` (S3's one-request limit is 5 GiB,
/// set to 5 MiB here) is renamed through a multipart copy: UploadPartCopy
/// parts inside S3, none of its bytes through the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_past_the_single_copy_limit_is_renamed_in_parts() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[("max-single-copy", "5M")], 0).await;
    let sftp = server.sftp("alice").await;
    let content = pattern(12 * MIB, 5);
    sftp.put("/big.bin", &content).await;
    bounded("mkdir", sftp.sftp.mkdir("/dir", FileAttributes::empty())).await.expect("mkdir");
    let moved_in = || proxy.body_bytes(Kind::UploadPart) + proxy.body_bytes(Kind::PutObject);
    let before = moved_in();
    bounded("rename", sftp.sftp.rename("/big.bin", "/dir/big.bin")).await.expect("rename of a file");
    assert_eq!(proxy.seen(Kind::UploadPartCopy), 3, "12 MiB in parts of 5 MiB");
    bounded("rename", sftp.sftp.rename("/dir", "/moved")).await.expect("rename of a directory");
    assert_eq!(proxy.seen(Kind::UploadPartCopy), 6, "and again when its directory moves");
    // CopyObject is a PUT too; its empty body is a few bytes of framing.
    let through = moved_in() - before;
    assert!(through < 1024, "{through} bytes went through the plugin");
    assert_eq!(bucket.get("moved/big.bin").await, content);
    let keys = bucket.keys().await;
    assert!(!keys.iter().any(|k| k.contains("big.bin") && k != "moved/big.bin"), "{keys:?}");
    assert_eq!(bucket.multipart_uploads().await, 0);
    server.shutdown().await;
}

/// By default (`open-checks = false`) OPEN for writing makes no S3 call,
/// and a file may go under a directory that does not exist: the directory
/// comes into being with it, as in S3. (With `open-checks = true` OPEN
/// refuses it, as OpenSSH's server does:
/// `s3_plugin::uploads_are_refused_at_open_where_openssh_refuses_them`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_open_checks_an_upload_is_one_put() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    let requests = || [Kind::List, Kind::Head, Kind::Get, Kind::PutObject, Kind::Other].map(|k| proxy.seen(k));
    let before = requests();
    sftp.put("/new/dir/f", b"content").await;
    let after = requests();
    let made: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(made, [0, 0, 0, 1, 0], "LIST, HEAD, GET, PUT, other: the upload is one PutObject");
    assert_eq!(bucket.get("new/dir/f").await, b"content");
    let listed = sftp.list("/new").await.expect("the directory exists with its file");
    assert!(listed.iter().any(|name| name == "dir"), "{listed:?}");
    server.shutdown().await;
}

/// An exclusive create (O_EXCL) asks S3 not to replace a file that appears
/// after its check, even through another host: its PutObject carries
/// `If-None-Match: *`, which S3 answers 412 when the key exists. (garage
/// 2.5.0 ignores the header: measured here, the file was replaced. AWS,
/// MinIO, R2 and Ceph honour it.) A plain upload does not carry it, and the
/// conditional one is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exclusive_create_asks_s3_not_to_replace_a_file() {
    let bucket = S3Bucket::start().await;
    let proxy = FaultProxy::start(&bucket.endpoint).await;
    let server = server_via(&bucket, &proxy, &[], 0).await;
    let sftp = server.sftp("alice").await;
    sftp.put("/plain", b"plain").await;
    let exclusive = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let handle = bounded("open", sftp.sftp.open("/new", exclusive, FileAttributes::empty())).await.expect("open").handle;
    bounded("write", sftp.sftp.write(handle.as_str(), 0, b"new".to_vec())).await.expect("write");
    bounded("close", sftp.sftp.close(handle)).await.expect("close");
    let puts = proxy.heads(Kind::PutObject);
    let conditional = |key: &str| {
        let of_key: Vec<&String> = puts.iter().filter(|h| h.contains(&format!("/{key}?"))).collect();
        assert!(!of_key.is_empty(), "no PutObject of {key}: {puts:?}");
        of_key.iter().all(|h| h.contains("\r\nif-none-match: *\r\n"))
    };
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(conditional("new"), "the exclusive create is conditional: {puts:?}");
    assert!(!conditional("plain"), "a plain upload is not: {puts:?}");
    assert_eq!(bucket.get("new").await, b"new");

    // Sent once: a retry after a reply lost on the way would be refused by
    // the object the first try created. A 503 fails the CLOSE instead.
    proxy.inject(Some(Kind::PutObject), Fault::Status(503), 1);
    let before = proxy.seen(Kind::PutObject);
    let handle = bounded("open", sftp.sftp.open("/once", exclusive, FileAttributes::empty())).await.expect("open").handle;
    bounded("write", sftp.sftp.write(handle.as_str(), 0, b"once".to_vec())).await.expect("write");
    assert!(bounded("close", sftp.sftp.close(handle)).await.is_err(), "the refused conditional PutObject fails the CLOSE");
    assert_eq!(proxy.seen(Kind::PutObject) - before, 1, "not retried");
    server.shutdown().await;
}
