//! asyncssh, the asyncio SSH library, against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::python;
use server_support::*;

const LIMIT: Duration = Duration::from_secs(240);

async fn cases(cases: &[&str]) {
    let server = start(&["alice"]).await;
    python(&server, "alice", "asyncssh_suite.py", cases, LIMIT).await.assert_success(&format!("asyncssh {cases:?}"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_pipelined_put_and_get() {
    cases(&["put_get_deep"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn makedirs_and_rmtree() {
    cases(&["makedirs_rmtree"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_copy() {
    cases(&["copy"]).await;
}
