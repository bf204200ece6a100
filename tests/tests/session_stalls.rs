//! One session must not stall itself: what a client pipelines never keeps
//! the request that would unblock it from running.

mod server_support;
mod wire_support;

use std::time::{Duration, Instant};

use server_support::*;
use wire_support::*;

const FX_OK: u32 = 0;

/// Before: the RENAME (waiting for the upload's commit) and the path
/// requests queued behind it took all 64 request slots, the CLOSE that
/// commits never started, and the RENAME failed after the commit wait
/// (120 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_requests_queued_behind_a_rename_leave_room_for_the_close() {
    rename_pipelined_before_its_close(100, b"").await;
}

/// Pipelines a RENAME of a file being uploaded ("content" written), `stats`
/// path requests, `last_write` (if not empty) and the upload's CLOSE: every
/// request succeeds, within 10 s, and the renamed file has what was written.
async fn rename_pipelined_before_its_close(stats: usize, last_write: &[u8]) {
    let server = start(&["alice"]).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/upload", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"content")).await.status(), FX_OK);

    let started = Instant::now();
    let rename = wire
        .send(FXP_EXTENDED, Body::new().string("posix-rename@openssh.com").string("/upload").string("/done"))
        .await;
    let mut stat_ids = Vec::new();
    for _ in 0..stats {
        stat_ids.push(wire.send(FXP_STAT, Body::new().string("/")).await);
    }
    let mut others = vec![rename];
    if !last_write.is_empty() {
        others.push(wire.send(FXP_WRITE, Body::new().string(&h).u64(7).string(last_write)).await);
    }
    others.push(wire.send(FXP_CLOSE, Body::new().string(&h)).await);
    for _ in 0..stat_ids.len() + others.len() {
        let reply = wire.recv().await;
        if others.contains(&reply.id) {
            assert_eq!(reply.status(), FX_OK, "{}", reply.message());
        } else {
            assert!(stat_ids.contains(&reply.id));
            assert_eq!(reply.kind, FXP_ATTRS);
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the pipeline took {took:?}");
    let client = server.sftp("alice").await;
    assert_eq!(client.get("/done").await, [&b"content"[..], last_write].concat());
    server.shutdown().await;
}

/// Before: the connection was cut as idle 2 s into a 4 s commit of a quiet
/// client, and the client saw a failure for an upload that landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_spent_serving_a_request_is_not_idle_time() {
    let server = start_with([UserSpec::new("alice")], |config| {
        config.limits.idle_timeout_secs = 2;
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("delay-ms.begin-write".into(), "3000".into());
        plugin.config.insert("delay-ms.finish".into(), "3000".into());
        config.plugins.insert("slow".into(), plugin);
        config.users[0].plugin = "slow".into();
    })
    .await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    // OPEN and CLOSE each take 3 s with no traffic on the connection.
    let h = wire.open_file("/slow", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"landed")).await.status(), FX_OK);
    let closed = wire.call(FXP_CLOSE, Body::new().string(&h)).await;
    assert_eq!(closed.status(), FX_OK, "{}", closed.message());
    let stat = wire.call(FXP_STAT, Body::new().string("/slow")).await;
    assert_eq!(stat.size(), 6);
    // A connection with nothing going on is still closed as idle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(wait_until(Duration::from_secs(3), || server.active_sessions() == 0).await, "the idle connection was closed");
    server.shutdown().await;
}

/// Before: the READ|WRITE OPEN copied the whole file (16 slow reads) while
/// holding the session's turn for path requests, and the STAT pipelined
/// behind it waited for the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_write_open_copies_outside_the_sessions_path_turn() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("delay-ms.read".into(), "200".into());
        plugin.config.insert("read-chunk".into(), "256K".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
    })
    .await;
    let content = pattern(4 << 20, 3);
    let client = server.sftp("alice").await;
    client.put("/big", &content).await;

    let mut wire = Wire::open(&server, "alice", 3).await;
    let started = Instant::now();
    let open = wire.send(FXP_OPEN, Body::new().string("/big").u32(FXF_READ | FXF_WRITE).no_attrs()).await;
    let stat = wire.send(FXP_STAT, Body::new().string("/")).await;
    let mut handle = Vec::new();
    for _ in 0..2 {
        let reply = wire.recv().await;
        if reply.id == open {
            assert_eq!(reply.kind, FXP_HANDLE, "{}", reply.message());
            handle = reply.handle();
        } else {
            assert_eq!(reply.id, stat);
            assert_eq!(reply.kind, FXP_ATTRS);
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "OPEN and the STAT behind it took {took:?}");
    // The copy happens before the first READ, whose answer is the old content.
    let read = wire.call(FXP_READ, Body::new().string(&handle).u64(1 << 20).u32(4096)).await;
    assert_eq!(read.data(), &content[1 << 20..(1 << 20) + 4096]);
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&handle).u64(0).string(b"NEW")).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), FX_OK);
    let mut expected = content.clone();
    expected[..3].copy_from_slice(b"NEW");
    assert!(client.get("/big").await == expected, "the file is the old content with the write");
    server.shutdown().await;
}

/// Before: truncating a READ|WRITE handle to 1000 bytes first copied the
/// whole 4 MiB file (16 reads) into the spool, only to cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_read_write_handle_copies_only_what_it_keeps() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("read-chunk".into(), "256K".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
    })
    .await;
    let content = pattern(4 << 20, 5);
    let client = server.sftp("alice").await;
    client.put("/big", &content).await;
    let before = reads(&client).await;

    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/big", FXF_READ | FXF_WRITE).await;
    assert_eq!(wire.call(FXP_FSETSTAT, Body::new().string(&h).u32(0x1).u64(1000)).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_WRITE, Body::new().string(&h).u64(0).string(b"NEW")).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    let copied = reads(&client).await - before;
    assert!(copied <= 1, "{copied} reads to keep 1000 bytes");
    let mut expected = content[..1000].to_vec();
    expected[..3].copy_from_slice(b"NEW");
    assert!(client.get("/big").await == expected, "the first 1000 bytes, with the write");

    // Cut to nothing: nothing is read at all.
    let before = reads(&client).await;
    let h = wire.open_file("/big", FXF_READ | FXF_WRITE).await;
    assert_eq!(wire.call(FXP_FSETSTAT, Body::new().string(&h).u32(0x1).u64(0)).await.status(), FX_OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);
    assert_eq!(reads(&client).await - before, 0);
    assert_eq!(client.get("/big").await.len(), 0);
    server.shutdown().await;
}

/// The slow plugin's count of `read` calls.
async fn reads(client: &SftpClient) -> u64 {
    match bounded("stat counter", client.sftp.stat("/.calls/read")).await {
        Ok(attrs) => attrs.attrs.size.expect("a counter has a size"),
        Err(_) => 0,
    }
}

/// A download pipelined far deeper than the request slots: every READ gets
/// its answer, in order. (With slots taken as tasks start, in no particular
/// order, later READs held every slot waiting for an earlier READ's reply
/// turn, and the earlier READ had none.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_pipelined_past_the_request_slots_completes_in_order() {
    let server = start(&["alice"]).await;
    let content = pattern(12 << 20, 5);
    let client = server.sftp("alice").await;
    client.put("/deep", &content).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/deep", FXF_READ).await;
    let mut ids = Vec::new();
    for i in 0..384u64 {
        ids.push(wire.send(FXP_READ, Body::new().string(&h).u64(i * 32768).u32(32768)).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let reply = wire.recv().await;
        assert_eq!(reply.id, *id, "READ replies leave in order");
        assert_eq!(reply.data(), &content[i * 32768..(i + 1) * 32768]);
    }
    server.shutdown().await;
}

/// Before: past the 256 requests that may wait for their turn (4 per slot),
/// the path requests queued behind a RENAME waiting for a commit kept the
/// WRITE and the CLOSE behind them from starting, and the RENAME failed after
/// the commit wait (120 s). Path requests now wait on a lane of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_requests_past_the_waiting_bound_leave_room_for_the_close() {
    rename_pipelined_before_its_close(600, b"!").await;
}

/// Before: with one request slot, a RENAME waiting for the commit of a file
/// held the slot the WRITE before the CLOSE needed, and failed after the
/// commit wait (120 s). A path request takes no slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_waiting_for_a_commit_holds_no_request_slot() {
    let server = start_with([UserSpec::new("alice")], |config| config.limits.max_inflight = 1).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/upload", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;

    let started = Instant::now();
    let rename = wire
        .send(FXP_EXTENDED, Body::new().string("posix-rename@openssh.com").string("/upload").string("/done"))
        .await;
    let write = wire.send(FXP_WRITE, Body::new().string(&h).u64(0).string(b"content")).await;
    let close = wire.send(FXP_CLOSE, Body::new().string(&h)).await;
    for _ in 0..3 {
        let reply = wire.recv().await;
        assert!([rename, write, close].contains(&reply.id));
        assert_eq!(reply.status(), FX_OK, "{}", reply.message());
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the pipeline took {took:?}");
    assert_eq!(server.sftp("alice").await.get("/done").await, b"content");
    server.shutdown().await;
}
