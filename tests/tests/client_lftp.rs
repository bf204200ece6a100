//! lftp (sftp over the OpenSSH client) against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::shell;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_a_tree_up_and_back() {
    let server = start(&["alice"]).await;
    shell(&server, "alice", "lftp_suite.sh", Duration::from_secs(300)).await.assert_success("lftp mirror");
    server.shutdown().await;
}
