//! paramiko, the most used Python SFTP client, against the real server.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::python_cases;

const LIMIT: Duration = Duration::from_secs(240);

async fn cases(cases: &[&str]) {
    python_cases("paramiko_suite.py", cases, LIMIT).await;
}

/// `SFTPClient.put` pipelines its WRITEs; it stalled in about one try of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_put_never_stalls() {
    cases(&["put_pipelined"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_round_trip_and_prefetch() {
    cases(&["big_round_trip", "prefetch"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_write_handles() {
    cases(&["read_modify_write", "truncate_then_write", "stat_after_open"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_operations() {
    cases(&["namespace"]).await;
}
