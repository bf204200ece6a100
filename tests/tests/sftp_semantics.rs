//! What a request means, request by request, as OpenSSH's `sftp-server`
//! answers it: checked at the byte level, with pipelining a client library
//! would hide.

mod server_support;
mod wire_support;

use server_support::*;
use wire_support::*;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_FAILURE: u32 = 4;
const FX_OP_UNSUPPORTED: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_answers_the_lower_version() {
    let server = start(&["alice"]).await;
    assert_eq!(Wire::open(&server, "alice", 2).await.version, 2, "a version 2 client gets version 2");
    assert_eq!(Wire::open(&server, "alice", 6).await.version, 3, "a version 6 client gets version 3");
    server.shutdown().await;
}

/// Requests pipelined behind a CLOSE find no handle: they are neither
/// applied nor answered with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_after_close_get_invalid_handle() {
    let server = start(&["alice"]).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let write = |offset: u64, data: &[u8]| Body::new().string(&handle).u64(offset).string(data);
    let first = wire.send(FXP_WRITE, write(0, b"first")).await;
    let close = wire.send(FXP_CLOSE, Body::new().string(&handle)).await;
    let late_write = wire.send(FXP_WRITE, write(5, b"late")).await;
    let late_read = wire.send(FXP_READ, Body::new().string(&handle).u64(0).u32(10)).await;
    let late_fstat = wire.send(FXP_FSTAT, Body::new().string(&handle)).await;
    let mut replies = std::collections::HashMap::new();
    for _ in 0..5 {
        let reply = wire.recv().await;
        replies.insert(reply.id, reply);
    }
    assert_eq!(replies[&first].status(), FX_OK);
    assert_eq!(replies[&close].status(), FX_OK);
    for id in [late_write, late_read, late_fstat] {
        assert_eq!(replies[&id].status(), FX_FAILURE, "request {id} after CLOSE: {:?}", replies[&id]);
        assert!(replies[&id].message().contains("invalid handle"), "{}", replies[&id].message());
    }
    let client = server.sftp("alice").await;
    assert_eq!(client.get("/f").await, b"first", "the WRITE after CLOSE was not applied");
    server.shutdown().await;
}

/// Replies to READs on one handle leave in the order the READs came, as
/// OpenSSH's client before 9.4 needs; many are in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_replies_keep_request_order() {
    let server = start(&["alice"]).await;
    let content = pattern(4 << 20, 7);
    server.sftp("alice").await.put("/big", &content).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.open_file("/big", FXF_READ).await;
    for round in 0..4 {
        let chunk = 32 * 1024;
        let mut ids = Vec::new();
        for i in 0..64u64 {
            let offset = (round * 64 + i) * chunk % (4 << 20);
            ids.push((wire.send(FXP_READ, Body::new().string(&handle).u64(offset).u32(chunk as u32)).await, offset));
        }
        for (id, offset) in ids {
            let reply = wire.recv().await;
            assert_eq!(reply.id, id, "replies come back in request order");
            let at = offset as usize;
            assert_eq!(reply.data(), &content[at..at + chunk as usize]);
        }
    }
    server.shutdown().await;
}

/// Pipelined READDIRs on one handle are answered in order, each with the
/// next entries: together they list the directory once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_readdirs_are_answered_in_order() {
    let server = start(&["alice"]).await;
    let client = server.sftp("alice").await;
    client.sftp.mkdir("/d", russh_sftp::protocol::FileAttributes::empty()).await.unwrap();
    for i in 0..300 {
        client.put(&format!("/d/f{i:03}"), b"x").await;
    }
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.call(FXP_OPENDIR, Body::new().string("/d")).await.handle();
    let ids: Vec<u32> = {
        let mut ids = Vec::new();
        for _ in 0..12 {
            ids.push(wire.send(FXP_READDIR, Body::new().string(&handle)).await);
        }
        ids
    };
    let mut names = Vec::new();
    let mut ended = false;
    for id in ids {
        let reply = wire.recv().await;
        assert_eq!(reply.id, id, "READDIR replies in request order");
        if reply.kind == FXP_STATUS {
            assert_eq!(reply.status(), FX_EOF);
            ended = true;
        } else {
            assert!(!ended, "entries after EOF");
            names.extend(reply.names());
        }
    }
    let expected: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every entry once");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_that_are_not_utf8_are_refused() {
    let server = start(&["alice"]).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    for name in [&b"/caf\xe9"[..], &b"/caf\xc3"[..]] {
        let reply = wire.call(FXP_OPEN, Body::new().string(name).u32(FXF_WRITE | FXF_CREAT).no_attrs()).await;
        assert_eq!(reply.status(), FX_FAILURE, "{reply:?}");
        assert!(reply.message().contains("UTF-8"), "{}", reply.message());
        let reply = wire.call(FXP_MKDIR, Body::new().string(name).no_attrs()).await;
        assert_eq!(reply.status(), FX_FAILURE);
    }
    // Nothing was created under a mangled name.
    let names = server.sftp("alice").await.list("/").await.unwrap();
    assert!(names.is_empty(), "{names:?}");
    server.shutdown().await;
}

/// One bound for a name, on the way in and out: 255 bytes, like NAME_MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_names_are_refused_and_the_directory_still_lists() {
    let server = start(&["alice"]).await;
    let client = server.sftp("alice").await;
    let longest = "n".repeat(255);
    client.put(&format!("/{longest}"), b"ok").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    for path in [format!("/{}", "n".repeat(256)), format!("/{}/x", "d".repeat(2000))] {
        let reply = wire.call(FXP_OPEN, Body::new().string(&path).u32(FXF_WRITE | FXF_CREAT).no_attrs()).await;
        assert_eq!(reply.status(), FX_FAILURE, "{reply:?}");
        assert!(reply.message().contains("255"), "{}", reply.message());
        let reply = wire.call(FXP_MKDIR, Body::new().string(&path).no_attrs()).await;
        assert_eq!(reply.status(), FX_FAILURE);
    }
    assert_eq!(client.list("/").await.unwrap(), vec![longest.clone()]);
    server.shutdown().await;
}

/// From OPEN on, a file being uploaded is visible to every session of the
/// tenant (its size so far), while an existing file being overwritten keeps
/// showing its old content until CLOSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_being_uploaded_is_visible_from_open() {
    let server = start(&["alice"]).await;
    let other = server.sftp("alice").await;
    other.put("/old", b"old content").await;
    let mut wire = Wire::open(&server, "alice", 3).await;

    let new = wire.open_file("/new", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let reply = wire.call(FXP_STAT, Body::new().string("/new")).await;
    assert_eq!(reply.size(), 0, "stat right after OPEN in the same session");
    let info = bounded("stat", other.sftp.stat("/new")).await.expect("stat from another session");
    assert_eq!(info.attrs.size, Some(0));
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&new).u64(0).string(b"hello")).await.status(), FX_OK);
    let info = bounded("stat", other.sftp.stat("/new")).await.expect("stat from another session");
    assert_eq!(info.attrs.size, Some(5), "the size so far");
    assert!(other.list("/").await.unwrap().contains(&"new".to_string()), "listed while being uploaded");
    assert_eq!(other.get("/new").await, b"", "read while being uploaded: nothing committed yet");

    let old = wire.open_file("/old", FXF_WRITE | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&old).u64(0).string(b"new")).await.status(), FX_OK);
    assert_eq!(other.get("/old").await, b"old content", "old content until CLOSE");

    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&new)).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&old)).await.status(), FX_OK);
    assert_eq!(other.get("/new").await, b"hello");
    assert_eq!(other.get("/old").await, b"new");
    let names = other.list("/").await.unwrap();
    assert_eq!(names.iter().filter(|n| *n == "new").count(), 1, "listed once after commit: {names:?}");
    server.shutdown().await;
}

/// A READ|WRITE handle reads the current content overlaid with its own
/// writes, and commits at CLOSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_write_handles_read_their_own_writes() {
    let server = start(&["alice"]).await;
    let other = server.sftp("alice").await;
    other.put("/f", b"0123456789").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/f", FXF_READ | FXF_WRITE).await;
    let read = |h: &Vec<u8>, offset: u64, len: u32| Body::new().string(h).u64(offset).u32(len);
    assert_eq!(wire.call(FXP_READ, read(&h, 0, 100)).await.data(), b"0123456789");
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(3).string(b"abc")).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(12).string(b"Z")).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_READ, read(&h, 0, 100)).await.data(), b"012abc6789\0\0Z");
    assert_eq!(wire.call(FXP_FSTAT, Body::new().string(&h)).await.size(), 13);
    assert_eq!(other.get("/f").await, b"0123456789", "nothing visible before CLOSE");
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    assert_eq!(other.get("/f").await, b"012abc6789\0\0Z");

    // Opened for reading and writing, closed untouched: the file is as it was.
    let h = wire.open_file("/f", FXF_READ | FXF_WRITE).await;
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    assert_eq!(other.get("/f").await, b"012abc6789\0\0Z");

    // A new file opened READ|WRITE|CREAT exists after CLOSE even if empty.
    let h = wire.open_file("/empty", FXF_READ | FXF_WRITE | FXF_CREAT).await;
    assert_eq!(wire.call(FXP_READ, read(&h, 0, 10)).await.status(), FX_EOF);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    assert_eq!(other.get("/empty").await, b"");
    server.shutdown().await;
}

/// One connection's upload buffers stay within its budget: with a budget
/// smaller than what eight parallel uploads would buffer, every upload still
/// completes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_beyond_the_connection_budget_still_complete() {
    let server = start_with([UserSpec::new("alice")], |c| c.sftp.upload_buffer_mib = 1).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let files: Vec<Vec<u8>> = (0..8).map(|i| pattern(3 << 20, i)).collect();
    let mut handles = Vec::new();
    for i in 0..files.len() {
        handles.push(wire.open_file(&format!("/u{i}"), FXF_WRITE | FXF_CREAT | FXF_TRUNC).await);
    }
    let chunk = 200 * 1024;
    for offset in (0..3 << 20).step_by(chunk) {
        let mut ids = Vec::new();
        for (h, data) in handles.iter().zip(&files) {
            let end = (offset + chunk).min(data.len());
            ids.push(wire.send(FXP_WRITE, Body::new().string(h).u64(offset as u64).string(&data[offset..end])).await);
        }
        for _ in ids {
            assert_eq!(wire.recv().await.status(), FX_OK);
        }
    }
    for h in &handles {
        assert_eq!(wire.call(FXP_CLOSE, Body::new().string(h)).await.status(), FX_OK);
    }
    let client = server.sftp("alice").await;
    for (i, data) in files.iter().enumerate() {
        assert_eq!(md5_hex(&client.get(&format!("/u{i}")).await), md5_hex(data), "file {i}");
    }
    server.shutdown().await;
}

/// CLOSE reports the commit, never a failure to set times that the client
/// would take for a lost upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_succeeds_when_only_deferred_times_fail() {
    let server = start_with([UserSpec::new("alice")], |c| {
        c.sftp.setstat_unsupported = wasftp::config::SetstatPolicy::Strict;
        let memory = c.plugins.get_mut("memory").expect("the memory plugin");
        memory.config.insert("set-info".into(), "off".into());
    })
    .await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"kept")).await.status(), FX_OK);
    // FSETSTAT with an mtime (flags: ACMODTIME) on storage that keeps no
    // times, under the strict policy: refused now, while the client can
    // still tell, not at CLOSE.
    let times = Body::new().string(&h).u32(0x8).u32(1_000_000).u32(1_000_000);
    assert_eq!(wire.call(FXP_FSETSTAT, times).await.status(), FX_OP_UNSUPPORTED);
    let close = wire.call(FXP_CLOSE, Body::new().string(&h)).await;
    assert_eq!(close.status(), FX_OK, "the content was committed: {}", close.message());
    assert_eq!(server.sftp("alice").await.get("/f").await, b"kept");
    server.shutdown().await;
}

/// Under `setstat_unsupported = "ignore"` (the default) a plugin that keeps
/// no times or modes has their change answered OK, as clients expect; a size
/// change is never passed off as done: a truncate it cannot make is refused,
/// and the file stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncate_the_plugin_cannot_make_is_refused_not_ignored() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let memory = c.plugins.get_mut("memory").expect("the memory plugin");
        memory.config.insert("set-info".into(), "off".into());
    })
    .await;
    server.sftp("alice").await.put("/f", b"twelve bytes").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let times = Body::new().string("/f").u32(0x8).u32(1_000_000).u32(1_000_000);
    assert_eq!(wire.call(FXP_SETSTAT, times).await.status(), FX_OK, "times: ignored, as configured");
    let truncate = Body::new().string("/f").u32(0x1).u64(3);
    assert_eq!(wire.call(FXP_SETSTAT, truncate).await.status(), FX_OP_UNSUPPORTED, "a size change is not ignored");
    // By handle too: a file opened for reading.
    let h = wire.open_file("/f", FXF_READ).await;
    let truncate = Body::new().string(&h).u32(0x1).u64(3);
    assert_eq!(wire.call(FXP_FSETSTAT, truncate).await.status(), FX_OP_UNSUPPORTED, "FSETSTAT: a size change is not ignored");
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    // The size it has, sent with times (as some clients do), changes nothing: OK.
    let same = Body::new().string("/f").u32(0x1 | 0x8).u64(12).u32(1_000_000).u32(1_000_000);
    assert_eq!(wire.call(FXP_SETSTAT, same).await.status(), FX_OK, "its own size with times");
    assert_eq!(server.sftp("alice").await.get("/f").await, b"twelve bytes");
    server.shutdown().await;
}

/// An extension is announced only when the plugin can keep its promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extensions_follow_the_plugin_capabilities() {
    // memory: atomic rename and copy, not durable, no hard links.
    let server = start(&["alice"]).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    for name in ["posix-rename@openssh.com", "copy-data", "statvfs@openssh.com", "limits@openssh.com"] {
        assert!(wire.extensions.iter().any(|e| e == name), "{name} announced: {:?}", wire.extensions);
    }
    for name in ["fsync@openssh.com", "hardlink@openssh.com"] {
        assert!(!wire.extensions.iter().any(|e| e == name), "{name} not announced: {:?}", wire.extensions);
    }
    // Nor served: a sync of memory content would promise what a restart loses.
    let handle = wire.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let fsync = Body::new().string("fsync@openssh.com").string(&handle);
    assert_eq!(wire.call(FXP_EXTENDED, fsync).await.status(), FX_OP_UNSUPPORTED);
    server.shutdown().await;

    // A plugin without copy or durable sync: neither is announced nor
    // served. posix-rename is (it replaces the target, atomically or not).
    let server = start_with([UserSpec::new("eve")], |c| {
        c.plugins.insert(
            "hostile".into(),
            wasftp::config::PluginConfig { source: env!("WASFTP_HOSTILE_PLUGIN").into(), ..Default::default() },
        );
        c.users[0].plugin = "hostile".into();
    })
    .await;
    let mut wire = Wire::open(&server, "eve", 3).await;
    for name in ["copy-data", "fsync@openssh.com"] {
        assert!(!wire.extensions.iter().any(|e| e == name), "{name} not announced: {:?}", wire.extensions);
    }
    assert!(wire.extensions.iter().any(|e| e == "posix-rename@openssh.com"), "{:?}", wire.extensions);
    let copy = Body::new().string("copy-data").string("h").u64(0).u64(0).string("h").u64(0);
    assert_eq!(wire.call(FXP_EXTENDED, copy).await.status(), FX_OP_UNSUPPORTED);
    server.shutdown().await;
}

/// O_EXCL sees uploads in progress (lock files: git's index.lock), and a
/// directory holding one is not empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_in_progress_count_for_exclusive_create_rmdir_and_rename() {
    let server = start(&["alice"]).await;
    server.sftp("alice").await.sftp.mkdir("/d", russh_sftp::protocol::FileAttributes::empty()).await.unwrap();
    let mut a = Wire::open(&server, "alice", 3).await;
    let mut b = Wire::open(&server, "alice", 3).await;
    let excl = FXF_WRITE | FXF_CREAT | FXF_EXCL;
    let lock = a.open_file("/d/index.lock", excl).await;
    let second = b.call(FXP_OPEN, Body::new().string("/d/index.lock").u32(excl).no_attrs()).await;
    assert_eq!(second.status(), FX_FAILURE, "a second exclusive create fails while the first is open");
    let rmdir = b.call(FXP_RMDIR, Body::new().string("/d")).await;
    assert_eq!(rmdir.status(), FX_FAILURE, "the directory is not empty");
    let rename = b.call(FXP_RENAME, Body::new().string("/d/index.lock").string("/d/index")).await;
    assert_eq!(rename.status(), FX_FAILURE);
    assert!(rename.message().contains("being uploaded"), "{}", rename.message());

    assert_eq!(a.call(FXP_WRITE, Body::new().string(&lock).u64(0).string(b"A")).await.status(), FX_OK);
    assert_eq!(a.call(FXP_CLOSE, Body::new().string(&lock)).await.status(), FX_OK);
    assert_eq!(a.call(FXP_RENAME, Body::new().string("/d/index.lock").string("/d/index")).await.status(), FX_OK);
    // Released: the next writer takes the lock.
    let again = b.open_file("/d/index.lock", excl).await;
    assert_eq!(b.call(FXP_WRITE, Body::new().string(&again).u64(0).string(b"B")).await.status(), FX_OK);
    // REMOVE while it is open, as unlink(2): the name goes, the CLOSE keeps nothing.
    assert_eq!(a.call(FXP_REMOVE, Body::new().string("/d/index.lock")).await.status(), FX_OK);
    assert_eq!(b.call(FXP_CLOSE, Body::new().string(&again)).await.status(), FX_OK);
    let client = server.sftp("alice").await;
    assert_eq!(client.list("/d").await.unwrap(), vec!["index".to_string()]);
    assert_eq!(client.get("/d/index").await, b"A");
    server.shutdown().await;
}

/// An empty WRITE past the end changes nothing (as pwrite of 0 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_write_changes_nothing() {
    let server = start(&["alice"]).await;
    server.sftp("alice").await.put("/f", b"abc").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    for flags in [FXF_READ | FXF_WRITE, FXF_WRITE] {
        let h = wire.open_file("/f", flags).await;
        assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(1000).string(b"")).await.status(), FX_OK);
        assert_eq!(wire.call(FXP_FSTAT, Body::new().string(&h)).await.size(), 3);
        assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    }
    assert_eq!(server.sftp("alice").await.get("/f").await, b"abc");
    server.shutdown().await;
}

/// Many files being uploaded in one directory are listed in replies of a
/// bounded size: 300 names of 250 bytes do not fit in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_uploads_in_progress_list_in_bounded_replies() {
    let server = start(&["alice"]).await;
    let mut writers = vec![Wire::open(&server, "alice", 3).await, Wire::open(&server, "alice", 3).await];
    let mut expected = Vec::new();
    for i in 0..300 {
        let name = format!("{i:03}{}", "x".repeat(247));
        let w = &mut writers[i % 2];
        w.open_file(&format!("/{name}"), FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
        expected.push(name);
    }
    let mut names = server.sftp("alice").await.list("/").await.expect("listing while 300 uploads are open");
    names.sort();
    assert_eq!(names, expected);
    server.shutdown().await;
}

/// FUSE sends a file's RELEASE (our CLOSE) in the background, so sshfs may
/// pass on the next RENAME, REMOVE or OPEN of a file before its CLOSE. As on
/// `sftp-server`, where the file is on disk from OPEN, each finds the file
/// with its content.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_sent_just_before_close_finds_the_file() {
    let server = start(&["alice"]).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let new = FXF_WRITE | FXF_CREAT | FXF_TRUNC;

    // RENAME, then the CLOSE.
    let h = wire.open_file("/f", new).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"renamed")).await.status(), FX_OK);
    let rename = wire.send(FXP_RENAME, Body::new().string("/f").string("/g")).await;
    let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
    for _ in 0..2 {
        let reply = wire.recv().await;
        assert!(reply.id == rename || reply.id == close);
        assert_eq!(reply.status(), FX_OK, "{}", reply.message());
    }

    // OPEN for reading, then the CLOSE.
    let h = wire.open_file("/r", new).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"fresh")).await.status(), FX_OK);
    let open = wire.send(FXP_OPEN, Body::new().string("/r").u32(FXF_READ).no_attrs()).await;
    let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
    let mut reader = None;
    for _ in 0..2 {
        let reply = wire.recv().await;
        if reply.id == open {
            reader = Some(reply.handle());
        } else {
            assert_eq!((reply.id, reply.status()), (close, FX_OK));
        }
    }
    let reader = reader.expect("the OPEN was answered");
    assert_eq!(wire.call(FXP_READ, Body::new().string(&reader).u64(0).u32(100)).await.data(), b"fresh");

    // REMOVE, then the CLOSE: the file is gone.
    let h = wire.open_file("/x", new).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"x")).await.status(), FX_OK);
    let remove = wire.send(FXP_REMOVE, Body::new().string("/x")).await;
    let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
    for _ in 0..2 {
        let reply = wire.recv().await;
        assert!(reply.id == remove || reply.id == close);
        assert_eq!(reply.status(), FX_OK, "{}", reply.message());
    }

    let client = server.sftp("alice").await;
    assert_eq!(client.get("/g").await, b"renamed");
    assert_eq!(status_code(bounded("stat", client.stat("/f")).await), russh_sftp::protocol::StatusCode::NoSuchFile);
    assert_eq!(status_code(bounded("stat", client.stat("/x")).await), russh_sftp::protocol::StatusCode::NoSuchFile);
    server.shutdown().await;
}

/// A RENAME or an exclusive OPEN behind a CLOSE whose commit takes longer
/// than the wait for a CLOSE on its way (a busy backend) waits for that
/// commit: git writes `config.lock` (O_EXCL), closes it and renames it over
/// `config`, and through sshfs the CLOSE goes out in the background. Before,
/// the RENAME gave up after 2 s and failed (EPERM through sshfs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_behind_a_slow_commit_waits_for_it() {
    // The commit's write takes 3 s in the plugin: a RENAME let through to
    // the plugin meanwhile would run before the commit's `finish`.
    let server =
        start_with([UserSpec::new("alice")], |config| use_slow_plugin(config, &[("delay-ms.write-chunk", "3000")])).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let lock = FXF_READ | FXF_WRITE | FXF_CREAT | FXF_EXCL;
    let h = wire.open_file("/config.lock", lock).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"[core]\n")).await.status(), FX_OK);
    let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
    let rename = wire.send(
        FXP_EXTENDED,
        Body::new().string("posix-rename@openssh.com").string("/config.lock").string("/config"),
    )
    .await;
    for _ in 0..2 {
        let reply = wire.recv().await;
        assert!(reply.id == close || reply.id == rename);
        assert_eq!(reply.status(), FX_OK, "{}", reply.message());
    }
    // The lock's name is free again.
    let again = wire.call(FXP_OPEN, Body::new().string("/config.lock").u32(lock).no_attrs()).await;
    assert_eq!(again.kind, FXP_HANDLE, "{again:?}");
    let client = server.sftp("alice").await;
    assert_eq!(client.get("/config").await, b"[core]\n");
    server.shutdown().await;
}

/// A STAT racing the CLOSE that commits the file (sshfs: the kernel looks a
/// file up again while its RELEASE is still on the way) finds the file,
/// whichever of the commit and the lookup wins: it is never between the
/// placeholder and the plugin's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stat_racing_the_commit_always_finds_the_file() {
    let server = start(&["alice"]).await;
    // Several sessions of the tenant at once: the race needs the commit to
    // land while a STAT's task waits to run again.
    let mut sessions = Vec::new();
    for s in 0..4 {
        let mut wire = Wire::open(&server, "alice", 3).await;
        sessions.push(tokio::spawn(async move {
            let mut missing = Vec::new();
            for i in 0..800 {
                let path = format!("/race{s}-{i}");
                let h = wire.open_file(&path, FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
                assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"data")).await.status(), FX_OK);
                let mut ids = Vec::new();
                for kind in [FXP_STAT, FXP_LSTAT, FXP_STAT, FXP_LSTAT] {
                    ids.push(wire.send(kind, Body::new().string(&path)).await);
                }
                let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
                for kind in [FXP_STAT, FXP_LSTAT] {
                    ids.push(wire.send(kind, Body::new().string(&path)).await);
                }
                for _ in 0..ids.len() + 1 {
                    let reply = wire.recv().await;
                    if reply.id == close {
                        assert_eq!(reply.status(), FX_OK, "{}", reply.message());
                    } else if reply.kind != FXP_ATTRS {
                        missing.push((path.clone(), reply.message()));
                    }
                }
            }
            missing
        }));
    }
    for session in sessions {
        let missing = session.await.expect("session task");
        assert!(missing.is_empty(), "a STAT sent around CLOSE missed the file: {missing:?}");
    }
    server.shutdown().await;
}

/// A file being uploaded when a listing starts is listed, even when its
/// commit lands after the plugin's page went by and before the listing
/// reaches the uploads in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_keeps_a_file_committed_while_it_runs() {
    let server = start(&["alice"]).await;
    let client = server.sftp("alice").await;
    client.sftp.mkdir("/d", russh_sftp::protocol::FileAttributes::empty()).await.unwrap();
    client.put("/d/old", b"x").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/d/new", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"data")).await.status(), FX_OK);

    let dir = wire.call(FXP_OPENDIR, Body::new().string("/d")).await.handle();
    let mut names = wire.call(FXP_READDIR, Body::new().string(&dir)).await.names();
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    loop {
        let reply = wire.call(FXP_READDIR, Body::new().string(&dir)).await;
        if reply.kind == FXP_STATUS {
            assert_eq!(reply.status(), FX_EOF, "{}", reply.message());
            break;
        }
        names.extend(reply.names());
    }
    names.retain(|n| n != "." && n != "..");
    names.sort();
    assert_eq!(names, ["new", "old"], "each file once");
    server.shutdown().await;
}

/// A REMOVE from another session while an upload of the file is committing
/// (its content on the way into the plugin) waits for the commit and then
/// removes the file: it never answers OK for a file that then appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remove_during_a_commit_removes_the_committed_file() {
    // The commit's flush and finish take 500 ms each in the plugin; the
    // REMOVE reaches it during the flush.
    let knobs = [("delay-ms.write-chunk", "500"), ("delay-ms.finish", "500")];
    let server = start_with([UserSpec::new("alice")], |config| use_slow_plugin(config, &knobs)).await;
    let mut writer = Wire::open(&server, "alice", 3).await;
    let mut remover = Wire::open(&server, "alice", 3).await;
    let h = writer.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(writer.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"data")).await.status(), FX_OK);

    let close = writer.send(FXP_CLOSE, Body::new().string(&h)).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let removed = remover.call(FXP_REMOVE, Body::new().string("/f")).await;
    assert_eq!(removed.status(), FX_OK, "{}", removed.message());
    let closed = writer.recv().await;
    assert_eq!((closed.id, closed.status()), (close, FX_OK), "{}", closed.message());

    let stat = remover.call(FXP_STAT, Body::new().string("/f")).await;
    assert_eq!(stat.kind, FXP_STATUS, "the removed file came back after its commit");
    server.shutdown().await;
}

/// A plugin that declares its largest file (`max-file-size`) never sees a
/// WRITE or size change past it: the host refuses it with a clear FAILURE,
/// and the upload stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_past_the_plugins_largest_file_are_refused_by_the_host() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let memory = c.plugins.get_mut("memory").expect("the memory plugin");
        memory.config.insert("max-file-size".into(), "1M".into());
    })
    .await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"kept")).await.status(), FX_OK);
    let past = wire.call(FXP_WRITE, Body::new().string(&h).u64(1 << 20).string(b"x")).await;
    assert_eq!(past.status(), FX_FAILURE);
    assert!(past.message().contains("the most this storage holds"), "refused by the host: {}", past.message());
    // FSETSTAT size (flags: SIZE) past the bound.
    let grow = wire.call(FXP_FSETSTAT, Body::new().string(&h).u32(0x1).u64(2 << 20)).await;
    assert_eq!(grow.status(), FX_FAILURE);
    assert!(grow.message().contains("the most this storage holds"), "{}", grow.message());
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    let setstat = wire.call(FXP_SETSTAT, Body::new().string("/f").u32(0x1).u64(2 << 20)).await;
    assert!(setstat.message().contains("the most this storage holds"), "{}", setstat.message());
    assert_eq!(server.sftp("alice").await.get("/f").await, b"kept");
    server.shutdown().await;
}

/// WRITEs on a handle opened with APPEND land at the end of the file,
/// whatever their offset, as on `sftp-server` (which opens with O_APPEND):
/// with a plugin that appends itself (memory), and with one that declares
/// it cannot (the slow plugin with `append = "off"` puts every chunk at its
/// offset), for which the host places them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_writes_land_at_the_end_whatever_their_offset() {
    let server = start_with([UserSpec::new("alice"), UserSpec::new("bob")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("append".into(), "off".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[1].plugin = "slow".into();
    })
    .await;
    for user in ["alice", "bob"] {
        server.sftp(user).await.put("/log", b"existing").await;
        let mut wire = Wire::open(&server, user, 3).await;
        let h = wire.open_file("/log", FXF_WRITE | FXF_APPEND).await;
        for piece in [&b"+one"[..], b"+two"] {
            let write = wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(piece)).await;
            assert_eq!(write.status(), FX_OK, "{user}: {}", write.message());
        }
        assert_eq!(wire.call(FXP_FSTAT, Body::new().string(&h)).await.size(), 16, "{user}: the size so far");
        assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
        assert_eq!(server.sftp(user).await.get("/log").await, b"existing+one+two", "{user}: appended at the end");
    }
    server.shutdown().await;
}

/// Before: a name with an ESC sequence or a right-to-left override went
/// into the long name as it was, and `ls -l` in OpenSSH's sftp printed it
/// to the user's terminal. The exact name stays in the filename field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_characters_in_names_are_escaped_in_long_names() {
    let server = start(&["alice"]).await;
    let client = server.sftp("alice").await;
    client.sftp.mkdir("/d", russh_sftp::protocol::FileAttributes::empty()).await.unwrap();
    let (red, rtl) = ("a\u{1b}[31mred", "cod\u{202e}txt.exe");
    client.put(&format!("/d/{red}"), b"x").await;
    client.put(&format!("/d/{rtl}"), b"x").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let dir = wire.call(FXP_OPENDIR, Body::new().string("/d")).await.handle();
    let mut found = Vec::new();
    loop {
        let reply = wire.call(FXP_READDIR, Body::new().string(&dir)).await;
        if reply.kind == FXP_STATUS {
            break;
        }
        found.extend(reply.long_names());
    }
    let long_of = |name: &str| found.iter().find(|(n, _)| n == name).map(|(_, l)| l.clone()).unwrap_or_else(|| panic!("{name:?} listed: {found:?}"));
    let (red_line, rtl_line) = (long_of(red), long_of(rtl));
    assert!(red_line.ends_with(" a\\033[31mred"), "{red_line:?}");
    assert!(rtl_line.ends_with(" cod\\342\\200\\256txt.exe"), "{rtl_line:?}");
    assert!(!found.iter().any(|(_, long)| long.chars().any(|c| c.is_control() || c == '\u{202e}')));
    let real = wire.call(FXP_REALPATH, Body::new().string(format!("/d/{red}"))).await.long_names();
    assert_eq!(real, [(format!("/d/{red}"), "/d/a\\033[31mred".to_string())]);
    server.shutdown().await;
}

/// Every name of a listing, read to its end; and the status that ended it.
async fn list_to_the_end(wire: &mut Wire, dir: &str) -> (Vec<String>, u32, String) {
    let handle = wire.call(FXP_OPENDIR, Body::new().string(dir)).await.handle();
    let mut names = Vec::new();
    for _ in 0..10_000 {
        let reply = wire.call(FXP_READDIR, Body::new().string(&handle)).await;
        if reply.kind == FXP_STATUS {
            return (names, reply.status(), reply.message());
        }
        names.extend(reply.names());
    }
    panic!("the listing of {dir} did not end after 10 000 READDIRs ({} names)", names.len());
}

/// A plugin's listing is bounded: a cursor cycle or a cursor that never
/// ends ends the listing with a clear status, and a name the plugin gives
/// twice is shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_a_plugin_would_not_end_are_cut_and_names_given_twice_shown_once() {
    let server = start_with([UserSpec::new("eve")], |c| {
        c.plugins.insert(
            "hostile".into(),
            wasftp::config::PluginConfig { source: env!("WASFTP_HOSTILE_PLUGIN").into(), ..Default::default() },
        );
        c.users[0].plugin = "hostile".into();
        c.sftp.max_listing_entries = 300;
    })
    .await;
    let mut wire = Wire::open(&server, "eve", 3).await;

    let (names, status, message) = list_to_the_end(&mut wire, "/dups").await;
    assert_eq!(names, ["a", "b", "c"], "each name once");
    assert_eq!(status, FX_EOF, "{message}");

    let (names, status, message) = list_to_the_end(&mut wire, "/cycle").await;
    assert_eq!(names, ["c-start", "c-A", "c-B"], "the pages before the cursor came back");
    assert_eq!(status, FX_FAILURE);
    assert!(message.contains("cycle"), "{message}");

    let (names, status, message) = list_to_the_end(&mut wire, "/endless").await;
    assert_eq!(names.len(), 300, "cut at max_listing_entries");
    assert_eq!(status, FX_FAILURE);
    assert!(message.contains("cut after 300 entries (max_listing_entries)"), "{message}");

    let (names, status, message) = list_to_the_end(&mut wire, "/same-name-forever").await;
    assert_eq!(names, ["same"]);
    assert_eq!(status, FX_FAILURE, "{message}");
    assert!(message.contains("max_listing_entries"), "{message}");

    // The session goes on.
    assert_eq!(wire.call(FXP_STAT, Body::new().string("/ok")).await.kind, FXP_ATTRS);
    server.shutdown().await;
}

/// An append to a file another session is still uploading for the first
/// time builds on the committed file (none), not on that upload's bytes so
/// far: with the host placing the appends (a plugin without `append`), they
/// once landed after as many zeros as the other upload had written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_beside_another_sessions_first_upload_starts_from_the_committed_file() {
    let server = start_with([UserSpec::new("alice")], |config| use_slow_plugin(config, &[("append", "off")])).await;
    let mut first = Wire::open(&server, "alice", 3).await;
    let h = first.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(first.call(FXP_WRITE, Body::new().string(&h).u64(0).string(&[7u8; 1000])).await.status(), FX_OK);
    let mut second = Wire::open(&server, "alice", 3).await;
    let a = second.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_APPEND).await;
    assert_eq!(second.call(FXP_WRITE, Body::new().string(&a).u64(0).string(b"xyz")).await.status(), FX_OK);
    assert_eq!(second.call(FXP_CLOSE, Body::new().string(&a)).await.status(), FX_OK);
    assert_eq!(server.sftp("alice").await.get("/f").await, b"xyz", "the append, and nothing of the upload in progress");
    assert_eq!(first.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    assert_eq!(server.sftp("alice").await.get("/f").await, vec![7u8; 1000], "the upload's commit, last");
    server.shutdown().await;
}

/// fsync@openssh.com commits what a handle wrote and the handle writes on
/// (the slow test plugin declaring durable sync). A sync or a change after
/// it that fails makes every later WRITE, sync and CLOSE of the handle fail:
/// nothing after it may be committed with a hole, nor answered OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_around_a_sync_fails_the_rest_of_the_handle() {
    // Resuming after the sync fails (no room to copy the content kept).
    let server = start_with([UserSpec::new("alice")], |c| {
        use_slow_plugin(c, &[("durable-sync", "on"), ("break", "keep-fails")])
    })
    .await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    assert!(wire.extensions.iter().any(|e| e == "fsync@openssh.com"), "{:?}", wire.extensions);
    let handle = wire.open_file("/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let write = |offset: u64, data: &[u8]| Body::new().string(&handle).u64(offset).string(data);
    assert_eq!(wire.call(FXP_WRITE, write(0, b"abc")).await.status(), FX_OK);
    let fsync = Body::new().string("fsync@openssh.com").string(&handle);
    assert_eq!(wire.call(FXP_EXTENDED, fsync).await.status(), FX_OK);
    // Pipelined, as a client sends them: the first resumes and fails; the
    // second must not resume on its own and leave a hole at 3..6.
    let first = wire.send(FXP_WRITE, write(3, b"def")).await;
    let second = wire.send(FXP_WRITE, write(6, b"ghi")).await;
    for _ in 0..2 {
        let reply = wire.recv().await;
        assert!([first, second].contains(&reply.id));
        assert_eq!(reply.status(), FX_FAILURE, "WRITE {} after the failed resume", reply.id);
    }
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), FX_FAILURE);
    assert_eq!(server.sftp("alice").await.get("/f").await, b"abc", "what the sync committed, nothing after");
    server.shutdown().await;

    // A read-write handle whose sync fails: a second sync and its CLOSE
    // fail too (the changes never reached the plugin).
    let server = start_with([UserSpec::new("alice")], |c| {
        use_slow_plugin(c, &[("durable-sync", "on"), ("break", "finish-fails")])
    })
    .await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.open_file("/rw", FXF_READ | FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let write = Body::new().string(&handle).u64(0).string(b"changes");
    assert_eq!(wire.call(FXP_WRITE, write).await.status(), FX_OK);
    for attempt in ["the sync", "a second sync"] {
        let fsync = Body::new().string("fsync@openssh.com").string(&handle);
        assert_eq!(wire.call(FXP_EXTENDED, fsync).await.status(), FX_FAILURE, "{attempt}");
    }
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), FX_FAILURE);
    server.shutdown().await;
}

/// Other sessions acting on a file while its handle syncs and writes on: a
/// REMOVE that comes during the sync's commit stands (the file does not
/// come back when the commit lands), and a file renamed over the synced one
/// is not written into by the handle (its next WRITE and CLOSE fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synced_file_removed_or_replaced_by_another_session() {
    let server = start_with([UserSpec::new("alice")], |c| {
        use_slow_plugin(c, &[("durable-sync", "on"), ("delay-ms.finish", "1500")])
    })
    .await;
    let other = server.sftp("alice").await;
    other.put("/g", b"old content").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.open_file("/g", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&handle).u64(0).string(b"new")).await.status(), FX_OK);
    let sync = wire.send(FXP_EXTENDED, Body::new().string("fsync@openssh.com").string(&handle)).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    bounded("remove during the sync", other.sftp.remove("/g")).await.expect("REMOVE");
    let reply = wire.recv().await;
    assert_eq!((reply.id, reply.status()), (sync, FX_OK));
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&handle).u64(3).string(b" more")).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), FX_OK);
    assert!(other.sftp.stat("/g").await.is_err(), "the file came back after its REMOVE");
    server.shutdown().await;

    let server = start_with([UserSpec::new("alice")], |c| use_slow_plugin(c, &[("durable-sync", "on")])).await;
    let other = server.sftp("alice").await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let handle = wire.open_file("/h", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&handle).u64(0).string(b"mine")).await.status(), FX_OK);
    let fsync = Body::new().string("fsync@openssh.com").string(&handle);
    assert_eq!(wire.call(FXP_EXTENDED, fsync).await.status(), FX_OK);
    other.put("/theirs", b"theirs").await;
    assert_eq!(other.extended_status("posix-rename@openssh.com", &["/theirs", "/h"]).await, russh_sftp::protocol::StatusCode::Ok);
    let more = wire.call(FXP_WRITE, Body::new().string(&handle).u64(4).string(b" and more")).await;
    assert_eq!(more.status(), FX_FAILURE, "a WRITE into the file renamed over it: {}", more.message());
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), FX_FAILURE);
    assert_eq!(other.get("/h").await, b"theirs", "their file is untouched");
    server.shutdown().await;
}
