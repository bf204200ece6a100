//! asyncssh, the asyncio SSH library, against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::python_cases;

const LIMIT: Duration = Duration::from_secs(240);

async fn cases(cases: &[&str]) {
    python_cases("asyncssh_suite.py", cases, LIMIT).await;
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
