//! Exact SFTP status codes for error cases, path confinement, commit failures
//! reported on CLOSE, and the packet-size limit, through a Rust SFTP client.

mod server_support;

use std::time::Duration;

use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use server_support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn create_excl() -> OpenFlags {
    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE
}

fn create_trunc() -> OpenFlags {
    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_statuses() {
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;
    c.put("/existing.txt", b"hello").await;

    // OPEN with CREAT|EXCL on an existing file.
    let r = bounded(
        "open excl",
        c.open("/existing.txt", create_excl(), FileAttributes::empty()),
    )
    .await;
    assert_eq!(
        status_code(r),
        StatusCode::Failure,
        "CREAT|EXCL on an existing file"
    );
    assert_eq!(
        c.get("/existing.txt").await,
        b"hello",
        "the failed exclusive open left the file alone"
    );

    // A trailing slash asks for a directory (stat(2): ENOTDIR, which
    // OpenSSH's server answers as no such file).
    assert_eq!(status_code(bounded("stat", c.stat("/existing.txt/")).await), StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("lstat", c.lstat("/existing.txt/.")).await), StatusCode::NoSuchFile);
    assert!(bounded("stat", c.stat("/existing.txt")).await.is_ok());
    // Every other request too: `rm file/`, opening, truncating or renaming
    // `file/` are ENOTDIR; creating `new/` is EISDIR; the file is untouched.
    let read = OpenFlags::READ;
    assert_eq!(status_code(bounded("open", c.open("/existing.txt/", read, FileAttributes::empty())).await), StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("remove", c.remove("/existing.txt/")).await), StatusCode::NoSuchFile);
    let truncate = FileAttributes { size: Some(0), ..FileAttributes::empty() };
    assert_eq!(status_code(bounded("setstat", c.setstat("/existing.txt/", truncate)).await), StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("rename", c.rename("/existing.txt/", "/moved.txt")).await), StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("rename", c.rename("/existing.txt", "/moved/")).await), StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("opendir", c.opendir("/existing.txt")).await), StatusCode::NoSuchFile);
    let created = c.open("/new.txt/", create_trunc(), FileAttributes::empty());
    assert_eq!(status_code(bounded("create", created).await), StatusCode::Failure);
    assert_eq!(status_code(bounded("stat", c.stat("/new.txt")).await), StatusCode::NoSuchFile, "nothing created");
    assert_eq!(c.get("/existing.txt").await, b"hello", "the file is untouched");
    let below_nothing = c.open("/missing/new.txt/", create_trunc(), FileAttributes::empty());
    assert_eq!(status_code(bounded("create", below_nothing).await), StatusCode::NoSuchFile, "ENOENT, as open(2)");
    let below_a_file = c.open("/existing.txt/new.txt/", create_trunc(), FileAttributes::empty());
    assert_eq!(status_code(bounded("create", below_a_file).await), StatusCode::NoSuchFile, "ENOTDIR, as open(2)");

    // MKDIR on an existing path (directory and file).
    bounded("mkdir", c.mkdir("/d", FileAttributes::empty()))
        .await
        .expect("mkdir /d");
    assert_eq!(
        status_code(bounded("mkdir", c.mkdir("/d", FileAttributes::empty())).await),
        StatusCode::Failure
    );
    assert_eq!(
        status_code(bounded("mkdir", c.mkdir("/existing.txt", FileAttributes::empty())).await),
        StatusCode::Failure
    );

    // REMOVE of `dir/`: unlink(2) of a directory, EISDIR; it stays.
    assert_eq!(status_code(bounded("remove", c.remove("/d/")).await), StatusCode::Failure);
    assert!(bounded("stat", c.stat("/d")).await.is_ok());

    // RMDIR of a non-empty directory; of a missing one.
    c.put("/d/inside.txt", b"x").await;
    assert_eq!(
        status_code(bounded("rmdir", c.rmdir("/d")).await),
        StatusCode::Failure,
        "RMDIR of a non-empty dir"
    );
    assert_eq!(
        status_code(bounded("rmdir", c.rmdir("/nope")).await),
        StatusCode::NoSuchFile
    );
    assert!(
        c.list("/d")
            .await
            .unwrap()
            .contains(&"inside.txt".to_string()),
        "the directory is intact"
    );

    // STAT / OPEN of a missing file.
    assert_eq!(
        status_code(bounded("stat", c.stat("/missing")).await),
        StatusCode::NoSuchFile
    );
    let r = bounded(
        "open",
        c.open("/missing", OpenFlags::READ, FileAttributes::empty()),
    )
    .await;
    assert_eq!(status_code(r), StatusCode::NoSuchFile);

    // READ past EOF (and exactly at EOF).
    let h = bounded(
        "open",
        c.open("/existing.txt", OpenFlags::READ, FileAttributes::empty()),
    )
    .await
    .unwrap()
    .handle;
    assert_eq!(
        status_code(bounded("read", c.read(h.as_str(), 5, 100)).await),
        StatusCode::Eof,
        "READ at EOF"
    );
    assert_eq!(
        status_code(bounded("read", c.read(h.as_str(), 1 << 20, 100)).await),
        StatusCode::Eof,
        "READ past EOF"
    );
    let data = bounded("read", c.read(h.as_str(), 2, 100))
        .await
        .expect("a read inside the file");
    assert_eq!(data.data, b"llo", "a READ across EOF is short");
    bounded("close", c.close(h.as_str())).await.expect("close");

    // Unknown handles.
    assert_eq!(
        status_code(bounded("read", c.read("bogus-handle", 0, 10)).await),
        StatusCode::Failure
    );
    assert_eq!(
        status_code(bounded("close", c.close("bogus-handle")).await),
        StatusCode::Failure
    );
    // A handle that was already closed is unknown too.
    assert_eq!(
        status_code(bounded("close", c.close(h.as_str())).await),
        StatusCode::Failure,
        "double CLOSE"
    );

    // READLINK: the memory plugin has no symlinks.
    assert_eq!(
        status_code(bounded("readlink", c.readlink("/existing.txt")).await),
        StatusCode::OpUnsupported
    );

    // An unknown extension.
    assert_eq!(
        c.extended_status("nonsense@example.com", &[]).await,
        StatusCode::OpUnsupported
    );

    c.disconnect().await;
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_and_posix_rename() {
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;
    c.put("/a.txt", b"content of a").await;
    c.put("/b.txt", b"content of b").await;

    // Plain RENAME (v3) never overwrites.
    assert_eq!(
        status_code(bounded("rename", c.rename("/a.txt", "/b.txt")).await),
        StatusCode::Failure
    );
    assert_eq!(c.get("/a.txt").await, b"content of a");
    assert_eq!(c.get("/b.txt").await, b"content of b");
    // Missing source.
    assert_eq!(
        status_code(bounded("rename", c.rename("/nope", "/c.txt")).await),
        StatusCode::NoSuchFile
    );

    // posix-rename@openssh.com replaces the target.
    assert_eq!(
        c.extended_status("posix-rename@openssh.com", &["/a.txt", "/b.txt"])
            .await,
        StatusCode::Ok
    );
    assert_eq!(
        c.get("/b.txt").await,
        b"content of a",
        "posix-rename replaced the target"
    );
    assert_eq!(
        status_code(bounded("stat", c.stat("/a.txt")).await),
        StatusCode::NoSuchFile,
        "the source is gone"
    );

    // A plain rename to a free name works.
    bounded("rename", c.rename("/b.txt", "/c.txt"))
        .await
        .expect("rename to a free name");
    assert_eq!(c.list("/").await.unwrap(), vec!["c.txt".to_string()]);

    c.disconnect().await;
    server.shutdown().await;
}

/// A home written with a trailing `//` is the same root as `/data`: the
/// user lists it and uploads into it, the file lands at `/data/f.txt`, and
/// while it is being uploaded the tenant's other users see it there (no
/// empty path segment reaches the plugin or names the upload).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_with_a_trailing_slash_is_the_plain_directory() {
    let server = start_with(
        [
            UserSpec::new("admin").tenant("shared"),
            UserSpec::new("dana").tenant("shared").home("/data//"),
        ],
        |_| {},
    )
    .await;
    let dana = server.sftp("dana").await;
    let admin = server.sftp("admin").await;
    assert_eq!(dana.list("/").await.expect("ls of the home"), Vec::<String>::new());
    let h = bounded("open", dana.open("/f.txt", create_trunc(), FileAttributes::empty()))
        .await
        .expect("open for upload")
        .handle;
    bounded("write", dana.write(h.as_str(), 0, b"in data".to_vec()))
        .await
        .expect("write");
    let uploading = bounded("stat", admin.stat("/data/f.txt"))
        .await
        .expect("the upload in progress is seen at /data/f.txt");
    assert_eq!(uploading.attrs.size, Some(7));
    bounded("close", dana.close(h.as_str())).await.expect("close");
    assert_eq!(dana.list("/").await.expect("ls after the upload"), vec!["f.txt".to_string()]);
    assert_eq!(admin.list("/").await.unwrap(), vec!["data".to_string()]);
    assert_eq!(admin.get("/data/f.txt").await, b"in data");
    dana.disconnect().await;
    admin.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realpath_and_confinement() {
    // admin and alice share a tenant; alice's root is /alice in it.
    let server = start_with(
        [
            UserSpec::new("admin").tenant("shared"),
            UserSpec::new("alice").tenant("shared").home("/alice"),
        ],
        |_| {},
    )
    .await;
    let admin = server.sftp("admin").await;
    let alice = server.sftp("alice").await;

    for c in [&admin, &alice] {
        for (path, expected) in [
            (".", "/"),
            ("", "/"),
            ("..", "/"),
            ("../../..", "/"),
            ("/../x/../..", "/"),
            ("a/./b/../c", "/a/c"),
        ] {
            let name = bounded("realpath", c.realpath(path))
                .await
                .unwrap_or_else(|e| panic!("REALPATH({path:?}): {e}"));
            assert_eq!(
                name.files.len(),
                1,
                "REALPATH({path:?}) returns exactly one name"
            );
            assert_eq!(name.files[0].filename, expected, "REALPATH({path:?})");
        }
    }

    admin.put("/top-secret.txt", b"admin only").await;
    // alice cannot reach the tenant's root by any `..` path.
    for path in [
        "/top-secret.txt",
        "../top-secret.txt",
        "../../top-secret.txt",
        "/alice/../../top-secret.txt",
    ] {
        assert_eq!(
            status_code(bounded("stat", alice.stat(path)).await),
            StatusCode::NoSuchFile,
            "alice STAT {path}"
        );
    }
    // Whatever alice writes lands under /alice.
    alice.put("../../escape.txt", b"from alice").await;
    assert_eq!(
        admin.get("/alice/escape.txt").await,
        b"from alice",
        "alice's `..` write stayed in her root"
    );
    assert_eq!(
        status_code(bounded("stat", admin.stat("/escape.txt")).await),
        StatusCode::NoSuchFile
    );
    assert_eq!(
        alice.list("..").await.unwrap(),
        vec!["escape.txt".to_string()],
        "alice's `..` lists her own root"
    );
    // Her root cannot be removed.
    assert_ne!(
        status_code(bounded("rmdir", alice.rmdir("/")).await),
        StatusCode::Ok
    );

    admin.disconnect().await;
    alice.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_failure_is_reported_on_close() {
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;

    // 1. Exclusive create loses the race: the memory plugin re-checks at finish.
    let first = bounded(
        "open excl",
        c.open("/race.txt", create_excl(), FileAttributes::empty()),
    )
    .await
    .unwrap()
    .handle;
    bounded(
        "write",
        c.write(first.as_str(), 0, b"first writer".to_vec()),
    )
    .await
    .expect("write to the first handle");
    let second = bounded(
        "open",
        c.open("/race.txt", create_trunc(), FileAttributes::empty()),
    )
    .await
    .unwrap()
    .handle;
    bounded(
        "write",
        c.write(second.as_str(), 0, b"second writer".to_vec()),
    )
    .await
    .expect("write to the second handle");
    bounded("close", c.close(second.as_str()))
        .await
        .expect("the second writer commits");
    let code = status_code(bounded("close", c.close(first.as_str())).await);
    assert_eq!(
        code,
        StatusCode::Failure,
        "the exclusive writer's CLOSE reports the failed commit"
    );
    assert_eq!(
        c.get("/race.txt").await,
        b"second writer",
        "the failed commit changed nothing"
    );

    // 2. The parent directory goes away before CLOSE.
    bounded("mkdir", c.mkdir("/tmpdir", FileAttributes::empty()))
        .await
        .expect("mkdir");
    let h = bounded(
        "open",
        c.open("/tmpdir/f.txt", create_trunc(), FileAttributes::empty()),
    )
    .await
    .unwrap()
    .handle;
    bounded("write", c.write(h.as_str(), 0, vec![7u8; 100_000]))
        .await
        .expect("write");
    // The upload in progress makes the directory non-empty, as on a real
    // file system; it can still be renamed away.
    assert_eq!(status_code(bounded("rmdir", c.rmdir("/tmpdir")).await), StatusCode::Failure);
    bounded("rename", c.rename("/tmpdir", "/moved"))
        .await
        .expect("rename of the parent");
    let code = status_code(bounded("close", c.close(h.as_str())).await);
    assert_ne!(
        code,
        StatusCode::Ok,
        "CLOSE of a write whose parent vanished fails"
    );
    eprintln!("CLOSE after the parent was removed: {code:?}");
    assert_eq!(
        status_code(bounded("stat", c.stat("/tmpdir/f.txt")).await),
        StatusCode::NoSuchFile
    );
    assert_eq!(
        status_code(bounded("stat", c.stat("/tmpdir")).await),
        StatusCode::NoSuchFile
    );
    assert!(c.list("/moved").await.expect("list").is_empty(), "nothing was committed");

    // The session is still usable.
    c.put("/after.txt", b"fine").await;
    assert_eq!(c.get("/after.txt").await, b"fine");

    c.disconnect().await;
    server.shutdown().await;
}

/// Reads one SFTP packet (type byte + body) from a raw stream.
async fn read_raw_packet<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let len = bounded("packet length", r.read_u32())
        .await
        .expect("reading a packet length");
    assert!(len > 0 && len < 1 << 20, "sane reply length {len}");
    let mut body = vec![0u8; len as usize];
    bounded("packet body", r.read_exact(&mut body))
        .await
        .expect("reading a packet body");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_packet_is_answered_then_the_channel_closes() {
    let server = start(&["alice"]).await;
    let ssh = server.login("alice").await;
    let channel = sftp_channel(&ssh).await;
    let mut stream = channel.into_stream();

    // INIT → VERSION 3.
    bounded("send init", stream.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]))
        .await
        .unwrap();
    bounded("flush", stream.flush()).await.unwrap();
    let version = read_raw_packet(&mut stream).await;
    assert_eq!(version[0], 2, "VERSION packet");
    assert_eq!(&version[1..5], &[0, 0, 0, 3], "version 3");

    // A READ packet claiming 300 KiB (the limit is 256 KiB), id 4242.
    let id: u32 = 4242;
    let mut packet = Vec::new();
    packet.extend_from_slice(&(300u32 * 1024).to_be_bytes());
    packet.push(5); // SSH_FXP_READ
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0u8; 1024]);
    bounded("send oversized", stream.write_all(&packet))
        .await
        .unwrap();
    bounded("flush", stream.flush()).await.unwrap();

    let reply = read_raw_packet(&mut stream).await;
    assert_eq!(
        reply[0], 101,
        "a STATUS answers the oversized packet: {reply:?}"
    );
    assert_eq!(
        u32::from_be_bytes(reply[1..5].try_into().unwrap()),
        id,
        "with the request's id"
    );
    assert_eq!(
        u32::from_be_bytes(reply[5..9].try_into().unwrap()),
        StatusCode::BadMessage as u32,
        "BadMessage"
    );

    // Then the channel ends: EOF, nothing more.
    let mut rest = Vec::new();
    let n = bounded("waiting for EOF", stream.read_to_end(&mut rest))
        .await
        .expect("reading to EOF");
    assert_eq!(n, 0, "nothing after the STATUS: {rest:?}");
    drop(stream);
    let _ = ssh
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;

    // The server still serves new sessions.
    let c = server.sftp("alice").await;
    c.put("/ok.txt", b"still serving").await;
    assert_eq!(c.get("/ok.txt").await, b"still serving");
    c.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_append_writes_keep_their_order() {
    // With APPEND the offset is ignored, so the server must apply WRITEs on
    // the handle in the order they arrived (OpenSSH `reput` relies on it).
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;
    let head = pattern(1000, 3);
    c.put("/log.bin", &head).await;
    let flags = OpenFlags::WRITE | OpenFlags::APPEND;
    let h = bounded(
        "open append",
        c.open("/log.bin", flags, FileAttributes::empty()),
    )
    .await
    .unwrap()
    .handle;
    let chunk = 200 * 1024;
    let tail = pattern(64 * chunk, 4);
    // All 64 WRITEs are sent before any reply is awaited.
    let writes = tail
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| c.write(h.as_str(), (head.len() + i * chunk) as u64, piece.to_vec()));
    let results = bounded("64 pipelined appends", futures::future::join_all(writes)).await;
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("append {i}: {e}"));
    }
    bounded("close", c.close(h.as_str()))
        .await
        .expect("close of the append handle");
    let got = c.get("/log.bin").await;
    assert_eq!(got.len(), head.len() + tail.len(), "every append landed");
    assert!(
        got[..head.len()] == head[..],
        "the existing content is kept"
    );
    if let Some(at) = got[head.len()..]
        .iter()
        .zip(&tail)
        .position(|(a, b)| a != b)
    {
        panic!(
            "appended data out of order: first difference in chunk {} of 64",
            at / chunk
        );
    }
    c.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_pipelined_behind_writes_commits_all_of_them() {
    // A client may send CLOSE without waiting for its WRITE replies: the
    // WRITEs read before the CLOSE must all land, and CLOSE must report it.
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = bounded("open", c.open("/piped.bin", flags, FileAttributes::empty()))
        .await
        .unwrap()
        .handle;
    let chunk = 64 * 1024;
    let data = pattern(32 * chunk, 9);
    let writes = data
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| c.write(h.as_str(), (i * chunk) as u64, piece.to_vec()));
    let (results, closed) = bounded(
        "32 writes and a close, all sent before any reply",
        futures::future::join(futures::future::join_all(writes), c.close(h.as_str())),
    )
    .await;
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    closed.expect("close after pipelined writes");
    assert!(c.get("/piped.bin").await == data, "every pipelined write was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_at_the_largest_offset_is_refused_not_a_crash() {
    let server = start(&["alice"]).await;
    let c = server.sftp("alice").await;
    let flags = OpenFlags::WRITE | OpenFlags::CREATE;
    let h = bounded("open", c.open("/edge.bin", flags, FileAttributes::empty()))
        .await
        .unwrap()
        .handle;
    let result = bounded("write near u64::MAX", c.write(h.as_str(), u64::MAX - 3, vec![1; 16])).await;
    assert_eq!(status_code(result), StatusCode::Failure);
    // The session is still served.
    let small = bounded("write at 0", c.write(h.as_str(), 0, vec![7; 4])).await;
    small.expect("a normal write still works");
}
