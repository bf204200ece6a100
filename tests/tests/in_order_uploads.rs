//! Uploads to a plugin without random writes (object storage): the plugin
//! gets whole `write-chunk` parts in order, whatever order the client's
//! WRITEs come in; past a small reorder window the upload is spooled to disk
//! within a bound. The slow test plugin with `random-write = "off"` refuses
//! any part that is not the next one, so a misordered part fails the test.

mod server_support;
mod wire_support;

use std::time::Duration;

use server_support::*;
use wire_support::*;

const MIB: usize = 1 << 20;
/// One client WRITE, as OpenSSH sends them.
const WRITE: usize = 64 * 1024;
const FX_OK: u32 = 0;
const FX_FAILURE: u32 = 4;

async fn sequential_server(spool_max_mib: u64) -> TestServer {
    sequential_server_with(spool_max_mib, 8192).await
}

async fn sequential_server_with(spool_max_mib: u64, spool_total_mib: u64) -> TestServer {
    start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("random-write".into(), "off".into());
        plugin.config.insert("write-chunk".into(), "1M".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
        c.sftp.spool_max_mib = spool_max_mib;
        c.sftp.spool_total_mib = spool_total_mib;
        // One tenant here: the server's whole spool is its share.
        c.sftp.spool_tenant_mib = Some(spool_total_mib);
    })
    .await
}

async fn calls(client: &SftpClient, op: &str) -> u64 {
    match bounded("stat counter", client.sftp.stat(format!("/.calls/{op}"))).await {
        Ok(attrs) => attrs.attrs.size.expect("a counter has a size"),
        Err(_) => 0,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 1000) as u8).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_put_goes_to_the_plugin_in_whole_parts() {
    let server = sequential_server(64).await;
    let client = server.sftp("alice").await;
    let local = tempfile::tempdir().unwrap();
    let content = pattern(12 * MIB + 5, 1);
    std::fs::write(local.path().join("f"), &content).unwrap();
    let before = calls(&client, "write-chunk").await;
    server.sftp_batch("alice", "put f\n", local.path(), Duration::from_secs(120)).await.assert_success("put");
    assert_eq!(calls(&client, "write-chunk").await - before, 13, "12 whole parts of 1 MiB and the 5-byte tail");
    assert_eq!(client.get("/f").await, content);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_in_any_order_arrive_in_order() {
    let server = sequential_server(64).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    // Backwards, 16 pieces of 1 MiB: past the reorder window, so spooled.
    let content = pattern(16 * MIB, 2);
    let h = wire.open_file("/back", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    for i in (0..16).rev() {
        for at in (i * MIB..(i + 1) * MIB).step_by(WRITE) {
            let body = Body::new().string(&h).u64(at as u64).string(&content[at..at + WRITE]);
            assert_eq!(wire.call(FXP_WRITE, body).await.status(), FX_OK);
        }
    }
    let close = wire.call(FXP_CLOSE, Body::new().string(&h)).await;
    assert_eq!(close.status(), FX_OK, "{}", close.message());
    // A few pieces swapped: within the window, held in memory.
    let swapped = pattern(3 * MIB, 3);
    let h = wire.open_file("/swapped", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    for i in [1usize, 0, 2] {
        for at in (i * MIB..(i + 1) * MIB).step_by(WRITE) {
            let body = Body::new().string(&h).u64(at as u64).string(&swapped[at..at + WRITE]);
            assert_eq!(wire.call(FXP_WRITE, body).await.status(), FX_OK);
        }
    }
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&h)).await.status(), FX_OK);

    let client = server.sftp("alice").await;
    assert_eq!(client.get("/back").await, content);
    assert_eq!(client.get("/swapped").await, swapped);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_spool_bound_the_upload_fails_and_leaves_nothing() {
    let server = sequential_server(2).await;
    let mut wire = Wire::open(&server, "alice", 3).await;
    let h = wire.open_file("/big", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let piece = vec![7u8; WRITE];
    let mut refused = None;
    // Backwards from 12 MiB: nothing can go to the plugin, and the window
    // and then the spool fill up.
    for at in (WRITE..12 * MIB).step_by(WRITE).rev() {
        let reply = wire.call(FXP_WRITE, Body::new().string(&h).u64(at as u64).string(&piece)).await;
        if reply.status() != FX_OK {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a WRITE past the spool bound is refused");
    assert_eq!(refused.status(), FX_FAILURE);
    assert!(refused.message().contains("spools at most"), "{}", refused.message());
    let close = wire.call(FXP_CLOSE, Body::new().string(&h)).await;
    assert_eq!(close.status(), FX_FAILURE, "the upload failed: CLOSE says so");
    let stat = wire.call(FXP_STAT, Body::new().string("/big")).await;
    assert_eq!(stat.kind, FXP_STATUS, "nothing was committed");
    server.shutdown().await;
}

/// Writes `content` to `handle` backwards in 64 KiB WRITEs, all but the
/// first (so it is spooled, and stays there: nothing is in order until the
/// first WRITE comes, see `write_first`); the first refusal, if any.
async fn write_backwards(wire: &mut Wire, handle: &[u8], content: &[u8]) -> Option<Reply> {
    for at in (WRITE..content.len()).step_by(WRITE).rev() {
        let body = Body::new().string(handle).u64(at as u64).string(&content[at..at + WRITE]);
        let reply = wire.call(FXP_WRITE, body).await;
        if reply.status() != FX_OK {
            return Some(reply);
        }
    }
    None
}

/// The first 64 KiB WRITE, which puts everything spooled after it in order.
async fn write_first(wire: &mut Wire, handle: &[u8], content: &[u8]) {
    let reply = wire.call(FXP_WRITE, Body::new().string(handle).u64(0).string(&content[..WRITE])).await;
    assert_eq!(reply.status(), FX_OK, "the first WRITE: {}", reply.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_spool_space_is_shared_by_the_server_and_given_back() {
    // 24 MiB for the whole server: one 16 MiB spooled upload fits, two do not.
    let server = sequential_server_with(64, 24).await;
    let mut first = Wire::open(&server, "alice", 3).await;
    let mut second = Wire::open(&server, "alice", 3).await;
    let content = pattern(16 * MIB, 4);
    let a = first.open_file("/a", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert!(write_backwards(&mut first, &a, &content).await.is_none(), "the first upload fits");
    let b = second.open_file("/b", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let refused = write_backwards(&mut second, &b, &content).await.expect("the second does not fit");
    assert_eq!(refused.status(), FX_FAILURE);
    assert!(refused.message().contains("spool space is full"), "{}", refused.message());
    assert_eq!(second.call(FXP_CLOSE, Body::new().string(&b)).await.status(), FX_FAILURE);
    write_first(&mut first, &a, &content).await;
    assert_eq!(first.call(FXP_CLOSE, Body::new().string(&a)).await.status(), FX_OK);
    // Both spools are gone: the space is free again.
    let c = second.open_file("/c", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert!(write_backwards(&mut second, &c, &content).await.is_none(), "the space was given back");
    write_first(&mut second, &c, &content).await;
    assert_eq!(second.call(FXP_CLOSE, Body::new().string(&c)).await.status(), FX_OK);
    let client = server.sftp("alice").await;
    assert_eq!(client.get("/a").await, content);
    assert_eq!(client.get("/c").await, content);
    server.shutdown().await;
}

/// A part on its way to the plugin keeps its share of the connection's
/// upload budget until the plugin has it. With a budget of a part and a
/// half, the next part waits for the one in flight rather than spool the
/// rest of the upload (here the spool is too small to take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_short_of_two_parts_waits_for_the_part_in_flight() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("random-write".into(), "off".into());
        plugin.config.insert("write-chunk".into(), "2M".into());
        plugin.config.insert("delay-ms".into(), "50".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
        c.sftp.upload_buffer_mib = 3;
        c.sftp.spool_max_mib = 1;
    })
    .await;
    let client = server.sftp("alice").await;
    let content = pattern(12 * MIB + 5, 3);
    client.put("/f", &content).await;
    assert_eq!(client.get("/f").await, content);
    server.shutdown().await;
}

/// Five uploads at once on one connection whose upload budget holds three
/// parts: one found the budget short and spooled the rest of its bytes,
/// failing past `spool_max` (4 MiB here) although nothing was wrong. Now a
/// WRITE waits briefly for budget, and a spooled upload hands its bytes
/// over as the budget comes back and streams again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_of_one_connection_share_its_budget_without_failing() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("random-write".into(), "off".into());
        plugin.config.insert("write-chunk".into(), "1M".into());
        // Parts take a while to reach the plugin, as over a network.
        plugin.config.insert("delay-ms.write-chunk".into(), "20".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
        c.sftp.upload_buffer_mib = 3;
        c.sftp.spool_max_mib = 4;
    })
    .await;
    let client = server.sftp("alice").await;
    let contents: Vec<Vec<u8>> = (0..5).map(|i| pattern(12 * MIB + 3 * i, i as u8 + 1)).collect();
    futures::future::join_all(contents.iter().enumerate().map(|(i, content)| {
        let path = format!("/f{i}");
        let client = &client;
        async move { client.put(&path, content).await }
    }))
    .await;
    for (i, content) in contents.iter().enumerate() {
        assert_eq!(client.get(&format!("/f{i}")).await, *content, "/f{i}");
    }
    server.shutdown().await;
}
