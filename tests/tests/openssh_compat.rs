//! OpenSSH clients beyond `sftp`'s defaults: `scp` (SFTP mode, the default
//! since OpenSSH 9.0) needs an exit-status when the session ends, and a
//! client restricted to any one of sshd's default ciphers or key exchanges
//! must connect.

mod server_support;

use std::time::Duration;

use server_support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// `scp -P <port> <options> <from> <to>`.
fn scp(server: &TestServer, user: &str, from: &str, to: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("scp");
    cmd.arg("-P").arg(server.port().to_string());
    cmd.args(server.openssh_options(user));
    cmd.arg(from).arg(to);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scp_up_and_down_exits_zero() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    let data = random_bytes(100 * 1024);
    let up = local.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();

    let remote = format!("{}:/copied.bin", server.destination("alice"));
    let out = run(scp(&server, "alice", up.to_str().unwrap(), &remote), LIMIT).await;
    out.assert_success("scp upload");
    let c = server.sftp("alice").await;
    assert!(c.get("/copied.bin").await == data, "the upload arrived whole");
    c.disconnect().await;

    let down = local.path().join("down.bin");
    let out = run(scp(&server, "alice", &remote, down.to_str().unwrap()), LIMIT).await;
    out.assert_success("scp download");
    assert_eq!(md5_file(&down), md5_hex(&data), "md5 of the download");

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

/// Whether this OpenSSH client knows `algorithm` of `kind` (`ssh -Q kind`).
async fn client_supports(kind: &str, algorithm: &str) -> bool {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-Q", kind]);
    let out = run(cmd, LIMIT).await;
    out.assert_success("ssh -Q");
    out.stdout.lines().any(|l| l.trim() == algorithm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sshd_default_cipher_and_key_exchange_connects() {
    let server = start(&["alice"]).await;
    let local = tempfile::tempdir().unwrap();
    // sshd's defaults (sshd_config(5), OpenSSH 9.x), minus sntrup761x25519,
    // which russh does not implement.
    let ciphers = [
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    ];
    let kexes = [
        "mlkem768x25519-sha256",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group14-sha256",
    ];
    let mut tried = Vec::new();
    for (option, list) in [("Ciphers", &ciphers[..]), ("KexAlgorithms", &kexes[..])] {
        let kind = if option == "Ciphers" { "cipher" } else { "kex" };
        for algorithm in list {
            if !client_supports(kind, algorithm).await {
                // An older client (mlkem768x25519 is OpenSSH 9.9+): nothing to check against.
                eprintln!("this ssh client does not know {algorithm}");
                continue;
            }
            let choice = format!("{option}={algorithm}");
            let cmd = server.sftp_command_with("alice", &["-o", &choice], "pwd\n", local.path());
            let out = run(cmd, LIMIT).await;
            assert!(out.success(), "sftp -o {option}={algorithm} failed: {out}");
            tried.push(*algorithm);
        }
    }
    eprintln!("connected with each of {tried:?}");
    assert!(tried.contains(&"aes128-gcm@openssh.com"), "aes128-gcm was tried");
    assert!(tried.len() >= ciphers.len() + kexes.len() - 1, "nearly every algorithm was tried: {tried:?}");

    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}
