//! rclone's sftp backend against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::shell;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_up_and_down_and_check() {
    let server = start(&["alice"]).await;
    shell(&server, "alice", "rclone_suite.sh", Duration::from_secs(300)).await.assert_success("rclone");
    server.shutdown().await;
}
