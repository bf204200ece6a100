//! A client that asks the memory plugin for more than its memory cap allows
//! (SETSTAT to a huge size, a WRITE far out, many large files, a sparse file
//! that outgrows the quota) gets SSH_FX_FAILURE "no space", and its tenant
//! keeps every file and every other session: the plugin instance is neither
//! trapped nor re-created.

mod server_support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use server_support::*;
use wasftp::plugin::RuntimeStats;

/// The memory cap of the tenant's instance, and the quota it leaves by
/// default (an eighth of the cap, at least 16 MiB, stays with the plugin).
const CAP_MIB: usize = 48;
const QUOTA: u64 = 32 << 20;

fn create_trunc() -> OpenFlags {
    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
}

/// alice and bob share tenant `acme`, whose instance is capped at `CAP_MIB`.
async fn capped_server() -> TestServer {
    start_with(
        [UserSpec::new("alice").tenant("acme"), UserSpec::new("bob").tenant("acme")],
        |config| {
            config.plugins.get_mut("memory").expect("the memory plugin").memory_limit_mib = CAP_MIB;
        },
    )
    .await
}

/// Two sessions of one tenant and a file, all there before the trouble.
struct Tenant {
    alice: SftpClient,
    bob: SftpClient,
    kept: Vec<u8>,
    /// (poisoned, instances created) once the tenant was ready.
    counters: (u64, u64),
}

fn counters(server: &TestServer) -> (u64, u64) {
    let stats = server.server().runtime().stats();
    (RuntimeStats::get(&stats.poisoned), RuntimeStats::get(&stats.instances_created))
}

async fn tenant(server: &TestServer) -> Tenant {
    let alice = server.sftp("alice").await;
    let bob = server.sftp("bob").await;
    let kept = pattern(300_000, 42);
    alice.put("/kept.bin", &kept).await;
    alice.put("/small.txt", b"tiny").await;
    Tenant { alice, bob, kept, counters: counters(server) }
}

impl Tenant {
    /// Same instance (not poisoned, not re-created), every file as it was,
    /// both sessions still served.
    async fn assert_untouched(self, server: &TestServer) {
        assert_eq!(counters(server), self.counters, "the tenant's instance survived: (poisoned, instances created)");
        assert!(self.alice.get("/kept.bin").await == self.kept, "alice still reads the file");
        assert!(self.bob.get("/kept.bin").await == self.kept, "the tenant's other session still works");
        assert_eq!(self.bob.get("/small.txt").await, b"tiny");
        self.bob.put("/after.txt", b"still writable").await;
        self.alice.disconnect().await;
        self.bob.disconnect().await;
    }
}

/// Asserts a FAILURE status whose message says there is no space.
#[track_caller]
fn assert_no_space<T: std::fmt::Debug>(result: &Result<T, SftpError>, what: &str) {
    match result {
        Err(SftpError::Status(s)) => {
            assert_eq!(s.status_code, StatusCode::Failure, "{what}: {s:?}");
            assert!(s.error_message.contains("no space"), "{what}: message {:?}", s.error_message);
        }
        other => panic!("{what}: expected FAILURE \"no space\", got {other:?}"),
    }
}

fn size(bytes: u64) -> FileAttributes {
    FileAttributes { size: Some(bytes), ..FileAttributes::empty() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setstat_to_a_huge_size_is_no_space_and_the_tenant_keeps_everything() {
    let server = capped_server().await;
    let t = tenant(&server).await;

    // The size from the report, by path (SETSTAT) and by handle (FSETSTAT).
    assert_no_space(&bounded("setstat", t.alice.setstat("/small.txt", size(2_147_000_000))).await, "SETSTAT size");
    assert_no_space(&bounded("setstat", t.alice.setstat("/small.txt", size(QUOTA + 1))).await, "SETSTAT past the quota");
    let h = bounded("open", t.alice.open("/small.txt", OpenFlags::READ, FileAttributes::empty()))
        .await
        .expect("open for reading")
        .handle;
    assert_no_space(&bounded("fsetstat", t.alice.fsetstat(h.as_str(), size(2_147_000_000))).await, "FSETSTAT size");
    bounded("close", t.alice.close(h)).await.expect("close");
    let attrs = bounded("stat", t.bob.stat("/small.txt")).await.expect("stat").attrs;
    assert_eq!(attrs.size, Some(4), "the refused SETSTAT changed nothing");
    t.assert_untouched(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_a_huge_offset_is_no_space_and_the_tenant_keeps_everything() {
    let server = capped_server().await;
    let t = tenant(&server).await;
    let h = bounded("open", t.alice.open("/far.bin", create_trunc(), FileAttributes::empty()))
        .await
        .expect("open for writing")
        .handle;
    // Writes may be gathered before they reach the plugin: the failure shows
    // on a WRITE or, at the latest, on CLOSE, and it is no-space.
    let far = bounded("write far", t.alice.write(h.as_str(), 2_147_000_000, vec![1; 16])).await;
    let near = bounded("write near", t.alice.write(h.as_str(), 0, vec![2; 16])).await;
    let closed = bounded("close", t.alice.close(h)).await;
    for (what, result) in [("far WRITE", &far), ("near WRITE", &near)] {
        if result.is_err() {
            assert_no_space(result, what);
        }
    }
    assert_no_space(&closed, "CLOSE of the refused upload");
    assert_eq!(
        status_code(bounded("stat", t.bob.stat("/far.bin")).await),
        StatusCode::NoSuchFile,
        "the refused upload left nothing"
    );
    t.assert_untouched(&server).await;
    server.shutdown().await;
}

/// Uploads `data` to `path` in 64 KiB WRITEs; the first failure (WRITE or CLOSE).
async fn try_upload(c: &SftpClient, path: &str, data: &[u8]) -> Result<(), SftpError> {
    let h = bounded("open", c.open(path, create_trunc(), FileAttributes::empty())).await?.handle;
    for (i, piece) in data.chunks(64 * 1024).enumerate() {
        if let Err(e) = bounded("write", c.write(h.as_str(), (i * 64 * 1024) as u64, piece.to_vec())).await {
            let _ = bounded("close", c.close(h)).await;
            return Err(e);
        }
    }
    bounded("close", c.close(h)).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_large_files_fill_the_quota_then_no_space() {
    let server = capped_server().await;
    let t = tenant(&server).await;
    let file = |i: u64| pattern(4 << 20, 1000 + i);
    let mut stored = 0u64;
    let full = loop {
        match try_upload(&t.alice, &format!("/big-{stored}.bin"), &file(stored)).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "{stored} files of 4 MiB fit a {CAP_MIB} MiB cap");
    };
    assert_no_space(&Err::<(), _>(full), "the upload past the quota");
    assert!(stored >= QUOTA / (4 << 20) - 2, "most of the quota is usable: {stored} files of 4 MiB");
    for i in 0..stored {
        assert!(t.bob.get(&format!("/big-{i}.bin")).await == file(i), "big-{i} is intact");
    }
    // Removing a file makes room again.
    bounded("remove", t.bob.remove("/big-0.bin")).await.expect("remove");
    try_upload(&t.alice, "/big-again.bin", &file(99)).await.expect("an upload after a removal");
    t.assert_untouched(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filling_a_sparse_file_then_outgrowing_the_quota_is_no_space() {
    let server = capped_server().await;
    let t = tenant(&server).await;
    const SIZE: u64 = 20 << 20;
    const PIECE: usize = 64 * 1024;

    // The last bytes first, then the hole filled piece by piece.
    let h = bounded("open", t.alice.open("/sparse.bin", create_trunc(), FileAttributes::empty()))
        .await
        .expect("open")
        .handle;
    bounded("write tail", t.alice.write(h.as_str(), SIZE - 4, b"tail".to_vec())).await.expect("write the tail");
    let mut expected = Vec::with_capacity(SIZE as usize);
    for off in (0..SIZE - 4).step_by(PIECE) {
        let piece = pattern(PIECE.min((SIZE - 4 - off) as usize), off);
        bounded("write", t.alice.write(h.as_str(), off, piece.clone())).await.expect("fill the hole");
        expected.extend_from_slice(&piece);
    }
    expected.extend_from_slice(b"tail");
    bounded("close", t.alice.close(h)).await.expect("the filled sparse file commits");
    assert!(t.bob.get("/sparse.bin").await == expected, "the filled sparse file reads back");

    // Another one of the same size does not fit.
    let r = try_upload_sparse(&t.alice, "/sparse-2.bin", SIZE).await;
    assert_no_space(&r, "a second sparse file past the quota");
    t.assert_untouched(&server).await;
    server.shutdown().await;
}

/// Writes only the last 4 bytes of a `size`-byte file; the first failure.
async fn try_upload_sparse(c: &SftpClient, path: &str, size: u64) -> Result<(), SftpError> {
    let h = bounded("open", c.open(path, create_trunc(), FileAttributes::empty())).await?.handle;
    let written = bounded("write", c.write(h.as_str(), size - 4, b"tail".to_vec())).await;
    let closed = bounded("close", c.close(h)).await;
    written.and(closed).map(|_| ())
}
