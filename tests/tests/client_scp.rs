//! OpenSSH `scp` (SFTP mode) against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::shell;
use server_support::*;

/// scp exits 0 after every transfer (the channel ends with exit-status 0),
/// and a 64 MiB download arrives whole (READ replies in request order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_and_trees_both_ways() {
    let server = start(&["alice"]).await;
    shell(&server, "alice", "scp_suite.sh", Duration::from_secs(240)).await.assert_success("scp");
    server.shutdown().await;
}
