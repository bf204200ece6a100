//! sshfs (FUSE) over the real server: everyday shell work in a mounted folder.

mod client_support;
mod server_support;

use std::time::Duration;

use client_support::shell_in;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everyday_work_in_a_mounted_folder() {
    let server = start(&["alice"]).await;
    let work = tempfile::Builder::new().prefix("wasftp-sshfs-").tempdir().expect("tempdir");
    let out = shell_in(&server, "alice", "sshfs_suite.sh", work.path(), Duration::from_secs(300)).await;
    // The script unmounts on its way out; if it was killed, do it here.
    let _ = std::process::Command::new("umount").arg("-l").arg(work.path().join("mnt")).status();
    out.assert_success("sshfs");
    server.shutdown().await;
}
