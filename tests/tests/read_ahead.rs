//! Read-ahead: a file read from start to end is read from the plugin a
//! `read-chunk` at a time, whatever size the client's READs are; READs
//! elsewhere go straight to the plugin. Counted by the slow test plugin.

mod server_support;

use std::time::Duration;

use server_support::*;

const MIB: usize = 1 << 20;

/// A server whose user `alice` is served by the slow plugin, reading 8 MiB
/// chunks.
async fn slow_server(config: &[(&str, &str)]) -> TestServer {
    start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("read-chunk".into(), "8M".into());
        for (key, value) in config {
            plugin.config.insert(key.to_string(), value.to_string());
        }
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
    })
    .await
}

/// How many calls of kind `op` the plugin has answered so far.
async fn calls(client: &SftpClient, op: &str) -> u64 {
    match bounded("stat counter", client.sftp.stat(format!("/.calls/{op}"))).await {
        Ok(attrs) => attrs.attrs.size.expect("a counter has a size"),
        Err(_) => 0,
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2654435761).to_le_bytes()[3]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sequential_download_reads_whole_chunks() {
    let server = slow_server(&[]).await;
    let client = server.sftp("alice").await;
    let content = pattern(64 * MIB);
    client.put("/big", &content).await;

    // 1,024 READs of 64 KiB, one after the other.
    let before = calls(&client, "read").await;
    assert_eq!(client.get("/big").await, content);
    let reads = calls(&client, "read").await - before;
    assert!((8..=9).contains(&reads), "64 MiB in 8 MiB chunks: 8 reads and the one that finds the end, not {reads}");

    // OpenSSH's client: 64 READs in flight.
    let local = tempfile::tempdir().unwrap();
    let before = calls(&client, "read").await;
    server.sftp_batch("alice", "get big\n", local.path(), Duration::from_secs(120)).await.assert_success("get");
    assert_eq!(std::fs::read(local.path().join("big")).unwrap(), content);
    let reads = calls(&client, "read").await - before;
    assert!((8..=9).contains(&reads), "pipelined READs: {reads} plugin reads");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_here_and_there_go_straight_to_the_plugin() {
    let server = slow_server(&[]).await;
    let client = server.sftp("alice").await;
    let content = pattern(64 * MIB);
    client.put("/f", &content).await;
    let handle = bounded("open", client.sftp.open("/f", russh_sftp::protocol::OpenFlags::READ, Default::default()))
        .await
        .unwrap()
        .handle;
    let before = calls(&client, "read").await;
    // Further apart than READs in flight ever are (16 MiB).
    for offset in [60 * MIB, 3 * MIB, 40 * MIB + 5, 20 * MIB] {
        let data = bounded("read", client.sftp.read(handle.as_str(), offset as u64, 1000)).await.unwrap().data;
        assert_eq!(data, content[offset..offset + 1000]);
    }
    let reads = calls(&client, "read").await - before;
    assert_eq!(reads, 4, "each read far from the last one is one plugin read of what was asked");

    // Reading on from the last place starts read-ahead again, and a READ
    // across the end of a chunk still gets all it asked for.
    let before = calls(&client, "read").await;
    let mut at = 20 * MIB + 1000;
    for _ in 0..250 {
        let data = bounded("read", client.sftp.read(handle.as_str(), at as u64, 32 * 1024)).await.unwrap().data;
        assert_eq!(data, content[at..at + 32 * 1024]);
        at += data.len();
    }
    let reads = calls(&client, "read").await - before;
    assert!(reads <= 3, "7.8 MiB read on from 20 MiB: chunks 2 and 3 and the one ahead, not {reads} reads");
    bounded("close", client.sftp.close(handle)).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_budget_reads_go_straight_to_the_plugin() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("read-chunk".into(), "8M".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
        c.sftp.read_ahead_mib = 0;
    })
    .await;
    let client = server.sftp("alice").await;
    let content = pattern(MIB);
    client.put("/f", &content).await;
    let before = calls(&client, "read").await;
    assert_eq!(client.get("/f").await, content);
    let reads = calls(&client, "read").await - before;
    assert_eq!(reads, 17, "16 READs of 64 KiB and the one at the end, each its own plugin read");
    server.shutdown().await;
}

/// OpenSSH keeps 64 READs of up to 255 KiB in flight (16 MiB): with 1 MiB
/// chunks, READs many chunks ahead of the slowest are still sequential.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deep_pipeline_over_small_chunks_is_still_sequential() {
    let server = slow_server(&[("read-chunk", "1M")]).await;
    let client = server.sftp("alice").await;
    let content = pattern(48 * MIB);
    client.put("/big", &content).await;
    let local = tempfile::tempdir().unwrap();
    let before = calls(&client, "read").await;
    server.sftp_batch("alice", "get big\n", local.path(), Duration::from_secs(120)).await.assert_success("get");
    assert_eq!(std::fs::read(local.path().join("big")).unwrap(), content);
    let reads = calls(&client, "read").await - before;
    assert!((48..=49).contains(&reads), "48 chunks of 1 MiB and the end, not {reads} reads");
    server.shutdown().await;
}

/// A chunk every byte of which went to the client gives its budget back at
/// once: two downloads at once on one connection both read whole chunks,
/// with a budget of five chunks between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_downloads_at_once_share_the_budget() {
    let server = start_with([UserSpec::new("alice")], |c| {
        let mut plugin = wasftp::config::PluginConfig { source: env!("WASFTP_SLOW_PLUGIN").into(), ..Default::default() };
        plugin.config.insert("read-chunk".into(), "8M".into());
        c.plugins.insert("slow".into(), plugin);
        c.users[0].plugin = "slow".into();
        c.sftp.read_ahead_mib = 40;
    })
    .await;
    let client = server.sftp("alice").await;
    let content = pattern(32 * MIB);
    client.put("/a", &content).await;
    client.put("/b", &content).await;
    let before = calls(&client, "read").await;
    let (a, b) = tokio::join!(client.get("/a"), client.get("/b"));
    assert!(a == content && b == content);
    let reads = calls(&client, "read").await - before;
    assert!((8..=10).contains(&reads), "two files of four 8 MiB chunks: 8 reads and the ends, not {reads}");
    server.shutdown().await;
}

/// Once a short chunk showed where the file ends, READs past it (clients
/// keep many in flight when they reach the end) are answered with end of
/// file without asking the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_past_a_known_end_do_not_reach_the_plugin() {
    let server = slow_server(&[("read-chunk", "1M")]).await;
    let client = server.sftp("alice").await;
    let content = pattern(4 * MIB + 1000);
    client.put("/f", &content).await;
    let before = calls(&client, "read").await;
    assert_eq!(client.get("/f").await, content);
    let reads = calls(&client, "read").await - before;
    // The short chunk takes two: a plugin may answer short before the end.
    assert_eq!(reads, 6, "four full chunks, the short one and its end");
    let handle = bounded("open", client.sftp.open("/f", russh_sftp::protocol::OpenFlags::READ, Default::default())).await.unwrap().handle;
    bounded("read", client.sftp.read(handle.as_str(), 0, 64 << 10)).await.unwrap();
    bounded("read", client.sftp.read(handle.as_str(), 4 * MIB as u64, 64 << 10)).await.unwrap();
    let before = calls(&client, "read").await;
    let past = (0..16u64).map(|i| client.sftp.read(handle.as_str(), 5 * MIB as u64 + i * (64 << 10), 64 << 10));
    for read in futures::future::join_all(past).await {
        assert!(read.is_err(), "past the end: {read:?}");
    }
    assert_eq!(calls(&client, "read").await - before, 0, "no plugin read past the known end");
    server.shutdown().await;
}
