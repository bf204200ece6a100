//! The bundled S3 plugin against a real S3 server (garage on loopback, see
//! `s3_support`), driven by real SSH clients, and checked with a host-side
//! S3 client: exact keys, exact bytes, directory markers, no multipart
//! upload left behind.

mod client_support;
mod s3_support;
mod server_support;
mod wire_support;

use std::time::Duration;

use russh_sftp::protocol::{FileAttributes, OpenFlags};
use s3_support::{S3Bucket, eventually, pattern};
use server_support::*;

const MIB: usize = 1 << 20;

/// A server whose user alice is served by the S3 plugin, her keys under
/// `tenants/alice/` (a session attribute) below the test's prefix.
async fn s3_server(bucket: &S3Bucket) -> TestServer {
    s3_server_with(bucket, &[]).await
}

/// The same, with more plugin config keys.
async fn s3_server_with(bucket: &S3Bucket, config: &[(&str, &str)]) -> TestServer {
    start_with([UserSpec::new("alice")], |c| {
        let mut plugin = bucket.plugin_config();
        for (key, value) in config {
            plugin.config.insert(key.to_string(), value.to_string());
        }
        c.plugins.insert("s3".into(), plugin);
        c.users[0].plugin = "s3".into();
        c.users[0].attributes.insert("prefix".into(), "tenants/alice/".into());
    })
    .await
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

/// A download pins the version it opened: an object replaced meanwhile
/// fails the download instead of mixing two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_replaced_during_a_download_fails_it() {
    let bucket = S3Bucket::start().await;
    let server = s3_server_with(&bucket, &[("read-chunk", "1M")]).await;
    let sftp = server.sftp("alice").await;
    let first = pattern(4 * MIB, 1);
    sftp.put("/f", &first).await;
    let handle = bounded("open", sftp.sftp.open("/f", OpenFlags::READ, FileAttributes::empty())).await.unwrap().handle;
    let head = bounded("read", sftp.sftp.read(handle.as_str(), 0, 64 << 10)).await.unwrap();
    assert_eq!(head.data, first[..64 << 10]);
    let second = pattern(4 * MIB, 2);
    let key = format!("{}tenants/alice/f", bucket.prefix);
    bucket.client().put_object().bucket(&bucket.bucket).key(key).body(second.clone().into()).send().await.unwrap();
    let late = bounded("read", sftp.sftp.read(handle.as_str(), 3 * MIB as u64, 64 << 10)).await;
    assert_eq!(status_code(late), russh_sftp::protocol::StatusCode::Failure, "a read of the replaced object");
    // A new download reads the new version.
    assert_eq!(sftp.get("/f").await, second);
    server.shutdown().await;
}

/// A client that goes away mid-upload leaves no multipart upload and no object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_off_leaves_nothing_behind() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    // 17 MiB: two 8 MiB chunks reach the plugin, which starts a multipart upload.
    let _handle = sftp.write_without_close("/cut.bin", &pattern(17 * MIB, 9)).await.unwrap();
    assert!(eventually(|| async { bucket.multipart_uploads().await == 1 }).await, "the multipart upload started");
    sftp.disconnect().await;
    assert!(eventually(|| async { bucket.multipart_uploads().await == 0 }).await, "the multipart upload was aborted");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// When S3 refuses to finish the upload (its multipart upload was aborted
/// elsewhere, so the last part is refused), CLOSE says so and there is no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_completion_fails_the_close_and_leaves_no_file() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    let handle = sftp.write_without_close("/lost.bin", &pattern(17 * MIB, 9)).await.unwrap();
    assert!(eventually(|| async { bucket.multipart_uploads().await == 1 }).await);
    // Someone else aborts the upload under our feet.
    let client = bucket.client();
    let uploads = client.list_multipart_uploads().bucket(&bucket.bucket).prefix(&bucket.prefix).send().await.unwrap();
    for upload in uploads.uploads() {
        client
            .abort_multipart_upload()
            .bucket(&bucket.bucket)
            .key(upload.key().unwrap())
            .upload_id(upload.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let closed = bounded("close", sftp.sftp.close(handle)).await;
    assert!(closed.is_err(), "CLOSE of an upload S3 refused to complete: {closed:?}");
    assert!(bounded("stat", sftp.sftp.stat("/lost.bin")).await.is_err(), "no file after a failed completion");
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    server.shutdown().await;
}

/// More objects than one ListObjectsV2 page: the listing follows the
/// continuation token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_pages_through_more_than_a_thousand_objects() {
    let bucket = S3Bucket::start().await;
    let client = bucket.client();
    let keys: Vec<String> = (0..1100).map(|i| format!("{}tenants/alice/many/f{i:04}", bucket.prefix)).collect();
    for batch in keys.chunks(50) {
        let puts = batch.iter().map(|key| client.put_object().bucket(&bucket.bucket).key(key).body(b"x".to_vec().into()).send());
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
    }
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    let mut names = sftp.list("/many").await.unwrap();
    names.sort();
    let expected: Vec<String> = (0..1100).map(|i| format!("f{i:04}")).collect();
    assert_eq!(names, expected);
    server.shutdown().await;
}

/// Plain rename refuses an existing target, posix-rename replaces it, and a
/// directory moves with everything under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renames_refuse_or_replace_and_directories_move_whole() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    sftp.put("/a", b"aaa").await;
    sftp.put("/b", b"bbb").await;
    assert!(bounded("rename", sftp.sftp.rename("/a", "/b")).await.is_err(), "plain rename onto a file");
    assert_eq!(sftp.get("/b").await, b"bbb");
    assert_eq!(sftp.extended_status("posix-rename@openssh.com", &["/a", "/b"]).await, russh_sftp::protocol::StatusCode::Ok);
    assert_eq!(sftp.get("/b").await, b"aaa");

    bounded("mkdir", sftp.sftp.mkdir("/d", FileAttributes::empty())).await.unwrap();
    bounded("mkdir", sftp.sftp.mkdir("/d/sub", FileAttributes::empty())).await.unwrap();
    sftp.put("/d/one", b"1").await;
    sftp.put("/d/sub/two", b"22").await;
    bounded("rename", sftp.sftp.rename("/d", "/e")).await.unwrap();
    assert_eq!(
        bucket.keys().await,
        ["tenants/alice/b", "tenants/alice/e/", "tenants/alice/e/one", "tenants/alice/e/sub/", "tenants/alice/e/sub/two"]
    );
    assert_eq!(sftp.get("/e/sub/two").await, b"22");
    server.shutdown().await;
}

/// Multipart uploads a killed host left behind are aborted by the
/// plugin's maintenance when a server loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_multipart_uploads_are_aborted_at_load() {
    let bucket = S3Bucket::start().await;
    let client = bucket.client();
    let key = format!("{}tenants/alice/stale.bin", bucket.prefix);
    client.create_multipart_upload().bucket(&bucket.bucket).key(key).send().await.unwrap();
    assert_eq!(bucket.multipart_uploads().await, 1);
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = bucket.plugin_config();
        plugin.config.insert("orphan-age-secs".into(), "0".into());
        // Again every few seconds, should the run at load meet a hiccup.
        plugin.maintain_every_secs = 1;
        c.plugins.insert("s3".into(), plugin);
        c.users[0].plugin = "s3".into();
    })
    .await;
    assert!(eventually(|| async { bucket.multipart_uploads().await == 0 }).await, "the stale upload is still there");
    server.shutdown().await;
}

/// Two servers over one bucket: what one writes, the other serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_over_one_bucket_share_the_files() {
    let bucket = S3Bucket::start().await;
    let (one, two) = (s3_server(&bucket).await, s3_server(&bucket).await);
    let (a, b) = (one.sftp("alice").await, two.sftp("alice").await);
    let content = pattern(10 * MIB, 5);
    a.put("/shared.bin", &content).await;
    assert_eq!(b.list("/").await.unwrap(), ["shared.bin"]);
    assert_eq!(b.get("/shared.bin").await, content);
    // A rename through one is seen through the other at once: no cached listing.
    bounded("rename", a.sftp.rename("/shared.bin", "/moved.bin")).await.unwrap();
    assert_eq!(b.list("/").await.unwrap(), ["moved.bin"]);
    assert!(bounded("stat", b.sftp.stat("/shared.bin")).await.is_err());
    bounded("remove", b.sftp.remove("/moved.bin")).await.unwrap();
    assert!(bounded("stat", a.sftp.stat("/moved.bin")).await.is_err());
    assert_eq!(a.list("/").await.unwrap(), Vec::<String>::new());
    one.shutdown().await;
    two.shutdown().await;
}

/// With `open-checks = true`, OPEN checks what OpenSSH's server checks:
/// not a directory, a parent that exists and is a directory, and O_EXCL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_refused_at_open_where_openssh_refuses_them() {
    use russh_sftp::protocol::StatusCode;
    let bucket = S3Bucket::start().await;
    let server = s3_server_with(&bucket, &[("open-checks", "true")]).await;
    let sftp = server.sftp("alice").await;
    bounded("mkdir", sftp.sftp.mkdir("/dir", FileAttributes::empty())).await.unwrap();
    sftp.put("/file", b"f").await;
    let write = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let open = |path: &'static str, flags: OpenFlags| sftp.sftp.open(path, flags, FileAttributes::empty());
    assert_ne!(status_code(bounded("open", open("/dir", write)).await), StatusCode::Ok, "a directory's name");
    assert_eq!(status_code(bounded("open", open("/missing/x", write)).await), StatusCode::NoSuchFile);
    assert_ne!(status_code(bounded("open", open("/file/x", write)).await), StatusCode::Ok, "a file as parent");
    let exclusive = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    assert_eq!(status_code(bounded("open", open("/file", exclusive)).await), StatusCode::Failure, "O_EXCL on a file");
    // Nothing of it reached the bucket; the directory is still one.
    assert_eq!(bucket.keys().await, ["tenants/alice/dir/", "tenants/alice/file"]);
    let attrs = bounded("stat", sftp.sftp.stat("/dir")).await.unwrap().attrs;
    assert!(attrs.is_dir());
    server.shutdown().await;
}

/// rclone's sftp backend over the S3 plugin: a tree up and down, checked
/// by content both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rclone_copies_a_tree_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    client_support::shell(&server, "alice", "rclone_suite.sh", Duration::from_secs(300)).await.assert_success("rclone over S3");
    assert!(bucket.keys().await.contains(&"tenants/alice/tree/c/big.bin".to_string()));
    assert_eq!(bucket.multipart_uploads().await, 0);
    server.shutdown().await;
}

/// lftp mirrors 500 files in nested directories up and back over S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lftp_mirrors_a_tree_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    client_support::shell(&server, "alice", "lftp_suite.sh", Duration::from_secs(300)).await.assert_success("lftp over S3");
    let files = bucket.keys().await.into_iter().filter(|k| !k.ends_with('/')).count();
    assert_eq!(files, 500);
    server.shutdown().await;
}

/// OpenSSH's reput resumes an upload: the object's content is kept (copied
/// inside S3 for a large one, read in for a small one) and only the tail
/// is sent. Reget resumes a download.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reput_and_reget_resume_transfers() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let sftp = server.sftp("alice").await;
    let cwd = tempfile::tempdir().unwrap();
    let big = pattern(20 * MIB, 7);
    let small = pattern(3 * MIB, 8);
    std::fs::write(cwd.path().join("big.bin"), &big).unwrap();
    std::fs::write(cwd.path().join("small.bin"), &small).unwrap();
    // Uploads cut off after 12 MiB (a multipart object) and after 1 MiB.
    sftp.put("/big.bin", &big[..12 * MIB]).await;
    sftp.put("/small.bin", &small[..MIB]).await;
    server
        .sftp_batch("alice", "reput big.bin\nreput small.bin\n", cwd.path(), Duration::from_secs(120))
        .await
        .assert_success("reput");
    assert_eq!(bucket.get("tenants/alice/big.bin").await, big);
    assert_eq!(bucket.get("tenants/alice/small.bin").await, small);
    assert_eq!(bucket.multipart_uploads().await, 0);

    // A download cut off after 5 MiB, resumed.
    std::fs::write(cwd.path().join("big.bin"), &big[..5 * MIB]).unwrap();
    server.sftp_batch("alice", "reget big.bin\n", cwd.path(), Duration::from_secs(120)).await.assert_success("reget");
    assert_eq!(std::fs::read(cwd.path().join("big.bin")).unwrap(), big);
    server.shutdown().await;
}

/// The rest of the client matrix over S3: scp, sshfs, paramiko and asyncssh
/// run the same suites as over the memory plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scp_copies_files_and_trees_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    client_support::shell(&server, "alice", "scp_suite.sh", Duration::from_secs(240)).await.assert_success("scp over S3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sshfs_everyday_work_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let work = tempfile::Builder::new().prefix("wasftp-sshfs-").tempdir().expect("tempdir");
    let out = client_support::shell_in(&server, "alice", "sshfs_suite.sh", work.path(), Duration::from_secs(300)).await;
    let _ = std::process::Command::new("umount").arg("-l").arg(work.path().join("mnt")).status();
    out.assert_success("sshfs over S3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paramiko_suite_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let cases = ["put_pipelined", "big_round_trip", "prefetch", "read_modify_write", "truncate_then_write", "stat_after_open", "namespace"];
    client_support::python(&server, "alice", "paramiko_suite.py", &cases, Duration::from_secs(300))
        .await
        .assert_success("paramiko over S3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asyncssh_suite_through_s3() {
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    client_support::python(&server, "alice", "asyncssh_suite.py", &["put_get_deep", "makedirs_rmtree", "copy"], Duration::from_secs(300))
        .await
        .assert_success("asyncssh over S3");
    server.shutdown().await;
}

/// Two users with their own `prefix` attributes never see, read, or write
/// each other's keys, whatever path they use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_with_their_own_prefixes_are_kept_apart() {
    let bucket = S3Bucket::start().await;
    let server = start_with([UserSpec::new("alice"), UserSpec::new("bob")], |c| {
        c.plugins.insert("s3".into(), bucket.plugin_config());
        for (user, prefix) in c.users.iter_mut().zip(["tenants/alice/", "tenants/bob/"]) {
            user.plugin = "s3".into();
            user.attributes.insert("prefix".into(), prefix.into());
        }
    })
    .await;
    let (alice, bob) = (server.sftp("alice").await, server.sftp("bob").await);
    alice.put("/secret.txt", b"alice's").await;
    bob.put("/note.txt", b"bob's").await;
    assert_eq!(alice.list("/").await.unwrap(), ["secret.txt"]);
    assert_eq!(bob.list("/").await.unwrap(), ["note.txt"]);
    for path in ["/secret.txt", "/../alice/secret.txt", "/../../tenants/alice/secret.txt"] {
        assert!(bounded("stat", bob.sftp.stat(path)).await.is_err(), "bob reached {path}");
    }
    assert_eq!(bucket.keys().await, ["tenants/alice/secret.txt", "tenants/bob/note.txt"]);
    server.shutdown().await;
}

/// fsync@openssh.com over S3 (offered: an object is durable once its upload
/// completes): the parts written so far complete as the object, and the
/// upload goes on from it; CLOSE completes the rest. No multipart upload is
/// left open between or after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_completes_the_object_so_far_and_the_upload_goes_on() {
    use wire_support::{Body, FXF_CREAT, FXF_TRUNC, FXF_WRITE, FXP_CLOSE, FXP_EXTENDED, FXP_WRITE, Wire};
    let bucket = S3Bucket::start().await;
    let server = s3_server(&bucket).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    assert!(wire.extensions.iter().any(|e| e == "fsync@openssh.com"), "offered: {:?}", wire.extensions);
    // Past one 8 MiB part, then a sync, then more.
    let data = pattern(10 * MIB, 7);
    let (first, rest) = data.split_at(9 * MIB);
    let handle = wire.open_file("/log.bin", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let mut offset = 0;
    for (bytes, sync) in [(first, true), (rest, false)] {
        for chunk in bytes.chunks(255 * 1024) {
            let write = Body::new().string(&handle).u64(offset as u64).string(chunk);
            assert_eq!(wire.call(FXP_WRITE, write).await.status(), 0);
            offset += chunk.len();
        }
        if sync {
            let fsync = Body::new().string("fsync@openssh.com").string(&handle);
            assert_eq!(wire.call(FXP_EXTENDED, fsync).await.status(), 0);
            assert_eq!(bucket.get("tenants/alice/log.bin").await, first, "synced: the object so far");
            assert_eq!(bucket.multipart_uploads().await, 0);
        }
    }
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), 0);
    assert_eq!(bucket.get("tenants/alice/log.bin").await, data);
    assert_eq!(bucket.multipart_uploads().await, 0, "no multipart upload left behind");

    // OpenSSH's `put -f` sends it before CLOSE.
    let cwd = tempfile::tempdir().unwrap();
    let big = pattern(12 * MIB, 8);
    std::fs::write(cwd.path().join("big.bin"), &big).unwrap();
    server.sftp_batch("alice", "put -f big.bin\n", cwd.path(), Duration::from_secs(120)).await.assert_success("put -f");
    assert_eq!(bucket.get("tenants/alice/big.bin").await, big);
    assert_eq!(bucket.multipart_uploads().await, 0);
    server.shutdown().await;
}
