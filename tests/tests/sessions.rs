//! Many sessions at once, tenant isolation, and refused credentials.

mod server_support;

use std::sync::Arc;
use std::time::Duration;

use russh_sftp::protocol::StatusCode;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_sessions() {
    let server = Arc::new(start(&["alice", "bob"]).await);
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            // Half log in with a password, half with a key; two tenants.
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            let c = if i % 4 < 2 {
                server.sftp(user).await
            } else {
                server.sftp_password(user).await
            };
            bounded("mkdir", c.mkdir(format!("/s{i}"), Default::default()))
                .await
                .expect("mkdir");
            let mut files = Vec::new();
            for j in 0..3u64 {
                let data = pattern((50_000 + i * 7_919 + j * 104_729) as usize, i * 100 + j);
                let path = format!("/s{i}/f{j}.bin");
                c.put(&path, &data).await;
                files.push((path, data));
            }
            for (path, data) in &files {
                let back = c.get(path).await;
                assert!(
                    back == *data,
                    "session {i}: {path} read back differs ({} vs {} bytes)",
                    back.len(),
                    data.len()
                );
            }
            let mut names = c.list(&format!("/s{i}")).await.expect("list");
            names.sort();
            assert_eq!(names, ["f0.bin", "f1.bin", "f2.bin"], "session {i}");
            c.disconnect().await;
            i
        }));
    }
    let done = bounded("20 sessions", futures::future::join_all(tasks)).await;
    for result in done {
        result.expect("a session task panicked");
    }
    // Each tenant sees exactly its ten directories.
    let alice = server.sftp("alice").await;
    let mut names = alice.list("/").await.unwrap();
    names.sort();
    let mut expected: Vec<_> = (0..20)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("s{i}"))
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "alice's tenant holds the even sessions' directories"
    );
    alice.disconnect().await;
    server.wait_idle(Duration::from_secs(10)).await;
    Arc::into_inner(server)
        .expect("no other owner")
        .shutdown()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_are_isolated() {
    let server = start(&["alice", "bob"]).await;
    let alice = server.sftp("alice").await;
    let bob = server.sftp("bob").await;

    alice.put("/alice-secret.txt", b"for alice only").await;
    bounded("mkdir", alice.mkdir("/alice-dir", Default::default()))
        .await
        .unwrap();
    assert_eq!(alice.get("/alice-secret.txt").await, b"for alice only");

    assert_eq!(
        status_code(bounded("stat", bob.stat("/alice-secret.txt")).await),
        StatusCode::NoSuchFile
    );
    assert_eq!(
        status_code(bounded("stat", bob.stat("/alice-dir")).await),
        StatusCode::NoSuchFile
    );
    let open = bob.open(
        "/alice-secret.txt",
        russh_sftp::protocol::OpenFlags::READ,
        Default::default(),
    );
    assert_eq!(
        status_code(bounded("open", open).await),
        StatusCode::NoSuchFile
    );
    assert_eq!(
        bob.list("/").await.unwrap(),
        Vec::<String>::new(),
        "bob's root is empty"
    );

    // The same name in both tenants holds different content.
    bob.put("/alice-secret.txt", b"bob's own").await;
    assert_eq!(alice.get("/alice-secret.txt").await, b"for alice only");
    assert_eq!(bob.get("/alice-secret.txt").await, b"bob's own");
    bounded("remove", bob.remove("/alice-secret.txt"))
        .await
        .unwrap();
    assert_eq!(
        alice.get("/alice-secret.txt").await,
        b"for alice only",
        "bob's remove did not touch alice's file"
    );

    alice.disconnect().await;
    bob.disconnect().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_are_refused() {
    let server = start(&["alice", "bob"]).await;
    let alice_pw = server.user("alice").password.clone();
    let bob_key = server.user("bob").key.clone();
    let stranger = server.dir.path().join("id_stranger");
    keygen(&stranger);

    assert!(
        server.password_accepted("alice", &alice_pw).await,
        "the right password is accepted"
    );
    assert!(
        !server.password_accepted("alice", "wrong password").await,
        "a wrong password is refused"
    );
    assert!(
        !server.password_accepted("alice", "").await,
        "an empty password is refused"
    );
    assert!(
        !server.password_accepted("bob", &alice_pw).await,
        "another user's password is refused"
    );
    assert!(
        !server.password_accepted("mallory", &alice_pw).await,
        "an unknown user is refused"
    );

    assert!(
        server.key_accepted("bob", &bob_key).await,
        "the right key is accepted"
    );
    assert!(
        !server.key_accepted("bob", &stranger).await,
        "an unknown key is refused"
    );
    assert!(
        !server.key_accepted("alice", &bob_key).await,
        "another user's key is refused"
    );
    assert!(
        !server.key_accepted("mallory", &bob_key).await,
        "an unknown user's key login is refused"
    );

    // OpenSSH with a key that is not authorized fails too.
    let local = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("sftp");
    let batch = server.dir.path().join("ls-batch");
    std::fs::write(&batch, "ls\n").unwrap();
    cmd.arg("-b")
        .arg(&batch)
        .arg("-P")
        .arg(server.port().to_string());
    let mut opts = server.openssh_options("bob");
    let i = opts.iter().position(|o| o == "-i").unwrap();
    opts[i + 1] = stranger.to_str().unwrap().to_string();
    cmd.args(opts).arg(server.destination("bob"));
    cmd.current_dir(local.path());
    let out = run(cmd, Duration::from_secs(30)).await;
    assert!(
        !out.success() && !out.timed_out(),
        "sftp with an unauthorized key must fail: {out}"
    );
    assert!(
        out.stderr.contains("Permission denied"),
        "the refusal is an authentication failure: {out}"
    );

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}
