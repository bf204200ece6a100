//! Shared resources have a share per tenant: one tenant using up its share
//! of the server's spool space (here with files open for reading and
//! writing, which are copied into the spool at their first READ) is refused with a message
//! naming its share, and another tenant's uploads through the spool still
//! succeed. Closing gives the share back.

mod server_support;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use server_support::*;

const MIB: usize = 1 << 20;
const SHARE_MIB: u64 = 6;

/// alice is tenant `a`, bob tenant `b`; 16 MiB of spool for the server, 6 for each tenant.
async fn shared_spool_server() -> TestServer {
    start_with([UserSpec::new("alice").tenant("a"), UserSpec::new("bob").tenant("b")], |c| {
        c.sftp.spool_total_mib = 16;
        c.sftp.spool_tenant_mib = Some(SHARE_MIB);
        c.sftp.spool_max_mib = 8;
    })
    .await
}

fn read_write() -> OpenFlags {
    OpenFlags::READ | OpenFlags::WRITE
}

/// Opens `path` for reading and writing (its content goes to the spool).
async fn open_read_write(c: &SftpClient, path: &str, flags: OpenFlags) -> Result<String, SftpError> {
    bounded("open read-write", c.open(path, flags, FileAttributes::empty())).await.map(|h| h.handle)
}

/// Writes `data` through a READ|WRITE handle of a new file, in 64 KiB WRITEs,
/// and closes it; the first failure.
async fn upload_read_write(c: &SftpClient, path: &str, data: &[u8]) -> Result<(), SftpError> {
    let handle = open_read_write(c, path, read_write() | OpenFlags::CREATE | OpenFlags::TRUNCATE).await?;
    for (i, piece) in data.chunks(64 * 1024).enumerate() {
        if let Err(e) = bounded("write", c.write(handle.as_str(), (i * 64 * 1024) as u64, piece.to_vec())).await {
            let _ = bounded("close", c.close(handle)).await;
            return Err(e);
        }
    }
    bounded("close", c.close(handle)).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_filling_its_spool_share_leaves_other_tenants_uploads_alone() {
    let server = shared_spool_server().await;
    let alice = server.sftp("alice").await;
    let bob = server.sftp("bob").await;
    let big = pattern(4 * MIB, 1);
    alice.put("/big.bin", &big).await;

    // alice opens her 4 MiB file for reading and writing, and reads it
    // (which copies it into the spool), until her share is used up: one copy
    // fits in 6 MiB, a second does not.
    let mut held = Vec::new();
    let refused = loop {
        let handle = open_read_write(&alice, "/big.bin", read_write()).await.expect("the open copies nothing yet");
        match bounded("read", alice.read(handle.as_str(), 0, 1)).await {
            Ok(_) => held.push(handle),
            Err(e) => {
                bounded("close", alice.close(handle)).await.expect("close");
                break e;
            }
        }
        assert!(held.len() <= 4, "{} copies of 4 MiB open within a 16 MiB spool", held.len());
    };
    assert_eq!(held.len(), 1, "one copy fits alice's share");
    match &refused {
        SftpError::Status(s) => {
            assert_eq!(s.status_code, StatusCode::Failure, "{s:?}");
            let expected = format!("this tenant's spool share ({SHARE_MIB} MiB) is full");
            assert!(s.error_message.contains(&expected), "message {:?}", s.error_message);
        }
        other => panic!("expected a FAILURE naming the share, got {other:?}"),
    }
    let refused_new = upload_read_write(&alice, "/more.bin", &pattern(4 * MIB, 2)).await;
    assert!(refused_new.is_err(), "a new read-write upload of alice does not fit either");

    // bob's uploads through the spool are untouched by alice's full share,
    // while alice still holds it.
    let bobs = pattern(5 * MIB, 3);
    upload_read_write(&bob, "/bob.bin", &bobs).await.expect("bob's read-write upload");
    assert!(bob.get("/bob.bin").await == bobs, "bob's upload is intact");
    let edit = open_read_write(&bob, "/bob.bin", read_write()).await.expect("bob opens his file for editing");
    bounded("write", bob.write(edit.as_str(), 0, b"edited".to_vec())).await.expect("bob edits");
    bounded("close", bob.close(edit)).await.expect("bob's edit commits");
    assert_eq!(bob.read_at("/bob.bin", 0, 6).await, b"edited");

    // Closing gives alice's share back: her read-write uploads fit again.
    for handle in held {
        bounded("close", alice.close(handle)).await.expect("close");
    }
    let again = pattern(5 * MIB, 4);
    upload_read_write(&alice, "/more.bin", &again).await.expect("alice's share was given back");
    assert!(alice.get("/more.bin").await == again);
    alice.disconnect().await;
    bob.disconnect().await;
    server.shutdown().await;
}
