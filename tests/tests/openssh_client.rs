//! The OpenSSH `sftp` client in batch mode against the real server: every
//! everyday command, resumed transfers, and a 256 MiB round trip.

mod server_support;

use std::time::Duration;

use server_support::*;

const BATCH_LIMIT: Duration = Duration::from_secs(60);

/// The `ls -l` line naming `name`, if any (batch mode echoes each command
/// as `sftp> ...`; those lines are skipped).
fn line_for<'a>(listing: &'a str, name: &str) -> Option<&'a str> {
    listing
        .lines()
        .filter(|l| !l.starts_with("sftp>"))
        .find(|l| l.split_whitespace().last() == Some(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everyday_commands() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    let content = pattern(123_457, 1);
    std::fs::write(local.path().join("hello.bin"), &content).unwrap();

    // put, ls -l (name and size), mkdir, rename into it, get back.
    let out = server
        .sftp_batch(
            "alice",
            "put hello.bin\nls -l\nmkdir dir\nrename hello.bin dir/moved.bin\nls -l\nls -l dir\nget dir/moved.bin back.bin\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await;
    out.assert_success("put/ls/mkdir/rename/get");
    let first = line_for(&out.stdout, "hello.bin")
        .unwrap_or_else(|| panic!("ls -l does not list hello.bin:\n{out}"));
    assert!(
        first.starts_with('-'),
        "hello.bin is a regular file: {first}"
    );
    assert!(
        first.split_whitespace().any(|w| w == "123457"),
        "ls -l shows the size: {first}"
    );
    let moved = line_for(&out.stdout, "moved.bin")
        .unwrap_or_else(|| panic!("ls -l dir does not list moved.bin:\n{out}"));
    assert!(
        moved.split_whitespace().any(|w| w == "123457"),
        "size survives the rename: {moved}"
    );
    assert!(
        line_for(&out.stdout, "dir").is_some_and(|l| l.starts_with('d')),
        "dir is listed as a directory:\n{out}"
    );
    assert_eq!(
        std::fs::read(local.path().join("back.bin")).unwrap(),
        content,
        "get returns what put stored"
    );

    // chmod, then ls -l shows the new mode; df answers (statvfs@openssh.com).
    let out = server
        .sftp_batch(
            "alice",
            "chmod 600 dir/moved.bin\nls -l dir\ndf\ndf -h\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await;
    out.assert_success("chmod/df");
    let moved =
        line_for(&out.stdout, "moved.bin").unwrap_or_else(|| panic!("moved.bin missing:\n{out}"));
    assert!(
        moved.starts_with("-rw-------"),
        "chmod 600 shows in ls -l: {moved}"
    );
    assert!(
        out.stdout.contains("Size") && out.stdout.contains("Avail"),
        "df prints its table:\n{out}"
    );
    let numbers = out
        .stdout
        .lines()
        .skip_while(|l| !l.contains("Size"))
        .nth(1)
        .unwrap_or_else(|| panic!("df prints a line of numbers:\n{out}"));
    assert!(
        numbers
            .split_whitespace()
            .next()
            .is_some_and(|w| w.parse::<u64>().is_ok()),
        "df numbers: {numbers}"
    );

    // rmdir of a non-empty directory fails; the batch stops there.
    let out = server
        .sftp_batch("alice", "rmdir dir\n", local.path(), BATCH_LIMIT)
        .await;
    assert!(
        !out.success() && !out.timed_out(),
        "rmdir of a non-empty directory must fail: {out}"
    );

    // rm, rmdir, and they are gone.
    let out = server
        .sftp_batch(
            "alice",
            "rm dir/moved.bin\nrmdir dir\nls -l\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await;
    out.assert_success("rm/rmdir");
    assert!(
        line_for(&out.stdout, "dir").is_none(),
        "dir is gone:\n{out}"
    );
    let out = server
        .sftp_batch("alice", "ls dir\n", local.path(), BATCH_LIMIT)
        .await;
    assert!(
        !out.success() && !out.timed_out(),
        "ls of a removed directory fails: {out}"
    );
    let out = server
        .sftp_batch("alice", "get hello.bin\n", local.path(), BATCH_LIMIT)
        .await;
    assert!(
        !out.success() && !out.timed_out(),
        "the renamed file is not at its old name: {out}"
    );

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

/// A file large enough that OpenSSH pipelines many 255 KiB WRITEs/READs.
fn resume_data() -> (Vec<u8>, usize) {
    (pattern(3 * 1024 * 1024 + 4321, 2), 1_234_567)
}

/// Panics unless `got == want`, naming the first differing byte and where
/// the bytes found there come from in `want` (reordering vs corruption).
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        let probe = &got[at..(at + 64).min(got.len())];
        let from = want.windows(probe.len()).position(|w| w == probe);
        panic!(
            "{what}: content differs from byte {at}; the bytes there are those at {from:?} of the expected content"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reput_resumes_an_upload() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    let (full, part) = resume_data();

    // The remote has the first part; reput sends only the rest.
    std::fs::write(local.path().join("part.bin"), &full[..part]).unwrap();
    std::fs::write(local.path().join("full.bin"), &full).unwrap();
    let out = server
        .sftp_batch(
            "alice",
            "put part.bin up.bin\nreput full.bin up.bin\nls -l up.bin\nget up.bin up-back.bin\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await;
    out.assert_success("reput");
    assert!(
        out.stdout
            .split_whitespace()
            .any(|w| w == full.len().to_string()),
        "remote size after reput:\n{out}"
    );
    assert_same(
        "reput",
        &std::fs::read(local.path().join("up-back.bin")).unwrap(),
        &full,
    );

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reget_resumes_a_download() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    let (full, part) = resume_data();
    std::fs::write(local.path().join("full.bin"), &full).unwrap();
    server
        .sftp_batch(
            "alice",
            "put full.bin remote.bin\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await
        .assert_success("put");

    // The local file has the first part; reget fetches the rest.
    std::fs::write(local.path().join("down.bin"), &full[..part]).unwrap();
    server
        .sftp_batch(
            "alice",
            "reget remote.bin down.bin\n",
            local.path(),
            BATCH_LIMIT,
        )
        .await
        .assert_success("reget");
    assert_same(
        "reget",
        &std::fs::read(local.path().join("down.bin")).unwrap(),
        &full,
    );

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_256_mib() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    let data = random_bytes(256 << 20);
    let expected = md5_hex(&data);
    std::fs::write(local.path().join("big.bin"), &data).unwrap();
    drop(data);

    let out = server
        .sftp_batch(
            "alice",
            "put big.bin\nls -l big.bin\nget big.bin big-back.bin\n",
            local.path(),
            Duration::from_secs(300),
        )
        .await;
    out.assert_success("256 MiB put/get");
    eprintln!("256 MiB put + get took {:?}", out.elapsed);
    assert!(
        out.stdout.contains(&(256u64 << 20).to_string()),
        "ls -l shows 268435456 bytes:\n{out}"
    );
    let back = local.path().join("big-back.bin");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 256 << 20);
    assert_eq!(md5_file(&back), expected, "md5 of the downloaded file");

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}
