//! What logins cost in memory, measured as the resident size of this test
//! process (the server runs in it): password verifications (argon2, 19 MiB
//! each) are bounded by the verification threads however many logins
//! arrive, and a logged-in SFTP session is cheap enough for the default
//! `max_sessions`. Tests in this file take turns: RSS is process-wide.

mod server_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::client;
use server_support::*;
use tokio::net::TcpSocket;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1 << 20;

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

/// Samples the RSS every 5 ms on a thread of its own until dropped; keeps the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self { peak, stop, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).max(rss())
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn ssh_from(server: &TestServer, from: Ipv4Addr) -> client::Handle<Client> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::new(from.into(), 0)).expect("binding a loopback alias");
    let tcp = bounded("tcp connect", socket.connect(server.addr)).await.expect("tcp connect");
    let config = Arc::new(client::Config { inactivity_timeout: Some(Duration::from_secs(120)), ..Default::default() });
    bounded("ssh handshake", client::connect_stream(config, tcp, Client)).await.expect("ssh handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_wrong_passwords_keep_memory_bounded() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const ATTEMPTS: u8 = 200;
    let server = Arc::new(
        start_with([UserSpec::new("alice")], |c| {
            // Room for all of them at once, and time to queue.
            c.limits.max_unauthenticated = 256;
            c.limits.login_grace_secs = 300;
        })
        .await,
    );
    let threads = server.server().password_check_threads() as u64;
    let before = rss();
    let peak = PeakRss::start();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..ATTEMPTS {
        let server = server.clone();
        // One address each (127.0.0.2 ..): no address reaches the failure threshold.
        let from = Ipv4Addr::new(127, 0, 0, 2 + i);
        tasks.push(tokio::spawn(async move {
            let mut ssh = ssh_from(&server, from).await;
            let result = ssh.authenticate_password("alice", format!("wrong {i}")).await;
            let _ = ssh.disconnect(russh::Disconnect::ByApplication, "", "").await;
            result.map(|r| r.success())
        }));
    }
    let results = tokio::time::timeout(Duration::from_secs(240), futures::future::join_all(tasks))
        .await
        .expect("200 password attempts answered within 240 s");
    let took = started.elapsed();
    for result in results {
        let accepted = result.expect("an attempt panicked").expect("an attempt failed at the SSH level");
        assert!(!accepted, "a wrong password was accepted");
    }
    server.wait_idle(Duration::from_secs(20)).await;
    let peak = peak.peak();
    let after = rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{ATTEMPTS} concurrent wrong passwords in {took:?} on {threads} verification threads: RSS {} MiB before, \
         peak {} MiB (+{} MiB), {} MiB after they closed",
        before / MIB,
        peak / MIB,
        growth / MIB,
        after / MIB
    );
    // argon2 buffers: 19 MiB per thread; 200 connections (server and client
    // side both live here) and allocator slack: under 100 MiB. Before the
    // bound, each attempt had its own 19 MiB at once: 3.8 GiB.
    let bound = threads * 20 * MIB + 100 * MIB;
    assert!(growth < bound, "RSS grew by {} MiB, over {} MiB", growth / MIB, bound / MIB);
    assert!(
        after.saturating_sub(before) < bound,
        "RSS stays {} MiB above where it started",
        after.saturating_sub(before) / MIB
    );
    Arc::into_inner(server).expect("no other owner").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logged_in_sessions_are_cheap_enough_for_the_default_max_sessions() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const SESSIONS: usize = 200;
    // Four users of one tenant: one user may hold only max_sessions_per_user
    // (64) of them, and one tenant means one plugin instance for all.
    const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    let server = start_with(USERS.map(|name| UserSpec::new(name).tenant("acme")), |_| {}).await;
    let default_max = wasftp::config::Config::from_toml("").unwrap().limits.max_sessions as u64;
    // The tenant's plugin instance exists before measuring: it is per
    // tenant, not per session.
    let first = server.sftp("alice").await;
    let before = rss();
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        sessions.push(server.sftp(USERS[i % USERS.len()]).await);
    }
    for (i, s) in sessions.iter().enumerate().step_by(50) {
        assert!(s.list("/").await.is_ok(), "session {i} works");
    }
    let after = rss();
    let per_session = after.saturating_sub(before) / SESSIONS as u64;
    eprintln!(
        "{SESSIONS} logged-in SFTP sessions (key logins; client and server side): +{} MiB, {} KiB each; \
         the default max_sessions of {default_max} would need {} MiB",
        after.saturating_sub(before) / MIB,
        per_session / 1024,
        per_session * default_max / MIB
    );
    assert!(
        per_session * default_max < 512 * MIB,
        "{} KiB per session: {default_max} sessions would need {} MiB",
        per_session / 1024,
        per_session * default_max / MIB
    );
    for s in sessions {
        s.disconnect().await;
    }
    first.disconnect().await;
    server.wait_idle(Duration::from_secs(20)).await;
    server.shutdown().await;
}
