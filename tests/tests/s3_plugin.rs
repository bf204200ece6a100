//! The bundled S3 plugin against a real S3 server (garage on loopback, see
//! `s3_support`), driven by real SSH clients, and checked with a host-side
//! S3 client: exact keys, exact bytes, directory markers, no multipart
//! upload left behind.

mod s3_support;
mod server_support;

use std::time::Duration;

use s3_support::S3Bucket;
use server_support::*;

const MIB: usize = 1 << 20;

/// A server whose user alice is served by the S3 plugin, her keys under
/// `tenants/alice/` (a session attribute) below the test's prefix.
async fn s3_server(bucket: &S3Bucket) -> TestServer {
    start_with([UserSpec::new("alice")], |c| {
        c.plugins.insert("s3".into(), bucket.plugin_config());
        c.users[0].plugin = "s3".into();
        c.users[0].attributes.insert("prefix".into(), "tenants/alice/".into());
    })
    .await
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_puts_lists_gets_renames_and_removes_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let cwd = tempfile::tempdir().unwrap();
    let small = pattern(1000, 1);
    // 20 MiB in 8 MiB parts: a multipart upload of three parts.
    let big = pattern(20 * MIB, 2);
    std::fs::write(cwd.path().join("small.txt"), &small).unwrap();
    std::fs::write(cwd.path().join("big.bin"), &big).unwrap();

    let batch = "put small.txt\nput big.bin\nmkdir docs\nmkdir docs/empty\nrename small.txt docs/note.txt\n\
                 ls -l\nls -l docs\nget big.bin big.back\nget docs/note.txt note.back\n";
    let out = server.sftp_batch("alice", batch, cwd.path(), Duration::from_secs(120)).await;
    out.assert_success("put, mkdir, rename, ls and get over S3");
    assert!(out.stdout.contains("note.txt") && out.stdout.contains("empty"), "{out}");
    assert_eq!(std::fs::read(cwd.path().join("big.back")).unwrap(), big);
    assert_eq!(std::fs::read(cwd.path().join("note.back")).unwrap(), small);

    // What landed in the bucket, seen by another S3 client.
    assert_eq!(
        bucket.keys().await,
        ["tenants/alice/big.bin", "tenants/alice/docs/", "tenants/alice/docs/empty/", "tenants/alice/docs/note.txt"]
    );
    assert_eq!(bucket.get("tenants/alice/big.bin").await, big);
    assert_eq!(bucket.get("tenants/alice/docs/note.txt").await, small);
    assert_eq!(bucket.get("tenants/alice/docs/empty/").await, b"", "a marker is empty");
    assert_eq!(bucket.multipart_uploads().await, 0, "no multipart upload left behind");

    // Removing: rmdir of a directory with children is refused.
    let out = server.sftp_batch("alice", "rmdir docs\n", cwd.path(), Duration::from_secs(60)).await;
    assert!(!out.success(), "rmdir of a directory with children: {out}");
    server
        .sftp_batch("alice", "rm docs/note.txt\nrmdir docs/empty\nrm big.bin\nrmdir docs\n", cwd.path(), Duration::from_secs(60))
        .await
        .assert_success("rm and rmdir");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// Objects written by any S3 tool are files, and a prefix holding objects
/// is a directory without a marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_from_other_tools_are_files_and_prefixes_are_directories() {
    let bucket = S3Bucket::start().await;
    let client = bucket.client();
    for (key, body) in [("tenants/alice/a/b/c.txt", "deep"), ("tenants/alice/top.txt", "top")] {
        client
            .put_object()
            .bucket(&bucket.bucket)
            .key(format!("{}{key}", bucket.prefix))
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    let names = |listed: Result<Vec<String>, _>| {
        let mut names: Vec<String> = listed.expect("listing").into_iter().filter(|n| n != "." && n != "..").collect();
        names.sort();
        names
    };
    assert_eq!(names(sftp.list("/").await), ["a", "top.txt"]);
    assert_eq!(names(sftp.list("/a").await), ["b"]);
    assert_eq!(sftp.get("/a/b/c.txt").await, b"deep");
    let attrs = bounded("stat", sftp.sftp.stat("/a/b")).await.unwrap().attrs;
    assert!(attrs.is_dir(), "a prefix with objects is a directory");
    let missing = bounded("stat", sftp.sftp.stat("/nothing")).await;
    assert!(missing.is_err(), "{missing:?}");
    server.shutdown().await;
}
