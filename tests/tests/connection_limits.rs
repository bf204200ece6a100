//! Connection-level limits, with real connections from loopback aliases
//! (127.0.0.x: a client socket bound to one reaches the server on 127.0.0.1
//! with that source address, no setup needed on Linux):
//! silent connections cannot lock an honest client out, the login grace time
//! closes connections that never log in, only logins count against
//! `max_sessions` (the one past it is told why), one user or one tenant gets
//! only its share of them, a connection only so many channels, and password
//! guessing from one address gets it refused for a while without touching
//! other addresses.

mod server_support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use russh::client;
use russh_sftp::client::RawSftpSession;
use server_support::*;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// 127.0.0.`n`.
fn alias(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A TCP connection to `server` whose source address is `from`.
async fn tcp_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap_or_else(|e| panic!("binding {from}: {e}"));
    bounded("tcp connect", socket.connect(server)).await.unwrap_or_else(|e| panic!("connecting from {from}: {e}"))
}

/// An SSH connection from `from` (key exchange done, not logged in), or
/// the error the handshake ended with.
async fn ssh_from(server: &TestServer, from: Ipv4Addr) -> Result<client::Handle<Client>, russh::Error> {
    let tcp = tcp_from(from, server.addr).await;
    let config = Arc::new(client::Config { inactivity_timeout: Some(Duration::from_secs(60)), ..Default::default() });
    bounded("ssh handshake", client::connect_stream(config, tcp, Client)).await
}

/// Whether `user` logs in with `password` over a new connection from `from`;
/// `None` when the connection itself was refused.
async fn password_login_from(server: &TestServer, from: Ipv4Addr, user: &str, password: &str) -> Option<bool> {
    let mut ssh = ssh_from(server, from).await.ok()?;
    let result = bounded("password auth", ssh.authenticate_password(user, password)).await;
    let _ = ssh.disconnect(russh::Disconnect::ByApplication, "", "").await;
    Some(result.ok()?.success())
}

/// The first line the server sends on a raw connection (its SSH version, or
/// why it refuses), and whether it then closed the connection.
async fn first_line(tcp: &mut TcpStream) -> String {
    let mut reader = tokio::io::BufReader::new(tcp);
    let mut line = String::new();
    bounded("first line", reader.read_line(&mut line)).await.expect("reading the first line");
    line.trim_end().to_string()
}

/// Resolves when the server has closed `tcp` (EOF or reset).
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_do_not_lock_out_an_honest_client() {
    // Defaults: 100 unauthenticated connections at most, 32 per address.
    let server = start(&["alice"]).await;
    // 300 silent connections from 60 addresses (5 each): three times the cap.
    let mut silent = Vec::new();
    for i in 0..300u32 {
        let from = alias(2 + (i % 60) as u8);
        silent.push(tcp_from(from, server.addr).await);
    }
    assert!(
        wait_until(Duration::from_secs(10), || server.server().unauthenticated_connections() == 100).await,
        "the server holds 100 of them: {} unauthenticated",
        server.server().unauthenticated_connections()
    );

    // An honest client logs in with its key and lists its root, at once.
    let started = Instant::now();
    let c = server.sftp("alice").await;
    let names = c.list("/").await.expect("listing /");
    let took = started.elapsed();
    eprintln!("honest login and listing with 300 silent connections open: {took:?}");
    assert!(names.is_empty(), "{names:?}");
    assert!(took < Duration::from_secs(1), "the honest client took {took:?}");
    c.disconnect().await;

    // OpenSSH does too.
    let local = tempfile::tempdir().unwrap();
    let out = server.sftp_batch("alice", "ls\n", local.path(), Duration::from_secs(30)).await;
    out.assert_success("OpenSSH sftp among silent connections");

    assert!(server.server().unauthenticated_connections() <= 100);
    drop(silent);
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_gets_only_its_share_and_is_told_why() {
    let server = start_with([UserSpec::new("alice")], |c| c.limits.max_unauthenticated_per_ip = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = tcp_from(alias(2), server.addr).await;
        let line = first_line(&mut tcp).await;
        assert!(line.starts_with("SSH-2.0-"), "within its share, the server speaks SSH: {line:?}");
        held.push(tcp);
    }
    let mut fifth = tcp_from(alias(2), server.addr).await;
    let line = first_line(&mut fifth).await;
    assert!(line.contains("Too many unauthenticated connections"), "the refusal says why: {line:?}");
    bounded("refused connection closed", closed_by_server(&mut fifth)).await;

    // Another address is not affected.
    let mut other = tcp_from(alias(3), server.addr).await;
    assert!(first_line(&mut other).await.starts_with("SSH-2.0-"));
    // OpenSSH from the full address shows the line and fails.
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || server.server().unauthenticated_connections() == 4).await);
    let filler = tcp_from(alias(2), server.addr).await;
    assert!(wait_until(Duration::from_secs(5), || server.server().unauthenticated_connections() == 5).await);
    let local = tempfile::tempdir().unwrap();
    let cmd = server.sftp_command_with("alice", &["-o", "BindAddress=127.0.0.2"], "ls\n", local.path());
    let out = run(cmd, Duration::from_secs(30)).await;
    eprintln!("OpenSSH from the full address: {}", out.stderr.trim());
    assert!(!out.success() && !out.timed_out(), "sftp from the full address fails: {out}");

    drop((held, other, fifth, filler));
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_grace_closes_silent_and_stalled_connections() {
    const GRACE: Duration = Duration::from_secs(2);
    let server = start_with([UserSpec::new("alice")], |c| c.limits.login_grace_secs = GRACE.as_secs()).await;
    let started = Instant::now();

    // One connection says nothing at all.
    let mut silent = tcp_from(alias(2), server.addr).await;
    assert!(first_line(&mut silent).await.starts_with("SSH-2.0-"));
    // One starts to authenticate (key exchange, a wrong password) and stops.
    let mut stalled = ssh_from(&server, alias(3)).await.expect("handshake");
    let refused = bounded("wrong password", stalled.authenticate_password("alice", "wrong")).await.unwrap();
    assert!(!refused.success());
    // One logs in and then idles: the grace time is not for it.
    let logged_in = server.sftp("alice").await;

    assert_eq!(server.active_sessions(), 3);
    tokio::time::sleep(GRACE / 2).await;
    assert_eq!(server.server().unauthenticated_connections(), 2, "still open before the grace time");

    bounded("silent connection closed", closed_by_server(&mut silent)).await;
    let silent_closed = started.elapsed();
    assert!(
        wait_until(Duration::from_secs(10), || stalled.is_closed()).await,
        "the stalled connection is still open {:?} after it started",
        started.elapsed()
    );
    let stalled_closed = started.elapsed();
    eprintln!("grace {GRACE:?}: silent closed after {silent_closed:?}, stalled after {stalled_closed:?}");
    for (what, at) in [("silent", silent_closed), ("stalled", stalled_closed)] {
        assert!(at >= GRACE - Duration::from_millis(200), "{what} closed before the grace time: {at:?}");
        assert!(at < GRACE + Duration::from_secs(5), "{what} closed late: {at:?}");
    }
    assert!(wait_until(Duration::from_secs(5), || server.active_sessions() == 1).await);

    // The logged-in session outlives the grace time and still works.
    tokio::time::sleep(GRACE.saturating_sub(started.elapsed()) + Duration::from_millis(500)).await;
    assert!(logged_in.list("/").await.is_ok(), "the logged-in session is not cut");
    logged_in.disconnect().await;
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_logins_count_against_max_sessions_and_the_next_is_told_why() {
    let server = start_with([UserSpec::new("alice")], |c| c.limits.max_sessions = 2).await;
    // Connections that have not logged in do not take session slots.
    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(ssh_from(&server, alias(2 + i)).await.expect("handshake"));
    }
    let first = server.sftp("alice").await;
    let second = server.sftp("alice").await;
    assert_eq!(server.server().authenticated_sessions(), 2);
    assert_eq!(server.server().unauthenticated_connections(), 5);

    // The third login is refused with SSH_MSG_DISCONNECT "too many connections".
    let local = tempfile::tempdir().unwrap();
    let out = server.sftp_batch("alice", "ls\n", local.path(), Duration::from_secs(30)).await;
    eprintln!("OpenSSH past max_sessions: {}", out.stderr.trim());
    assert!(!out.success() && !out.timed_out(), "a login past max_sessions fails: {out}");
    assert!(out.stderr.contains("too many connections"), "the client is told why: {out}");
    assert_eq!(server.server().authenticated_sessions(), 2, "the refused login took no slot");

    // A slot freed is a slot for the next login.
    first.disconnect().await;
    assert!(wait_until(Duration::from_secs(10), || server.server().authenticated_sessions() == 1).await);
    let out = server.sftp_batch("alice", "ls\n", local.path(), Duration::from_secs(30)).await;
    out.assert_success("a login once a session ended");

    second.disconnect().await;
    drop(waiting);
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_guessing_gets_the_address_refused_for_a_while() {
    const BAN: Duration = Duration::from_secs(5);
    let server = start_with([UserSpec::new("alice")], |c| {
        c.limits.max_auth_failures_per_ip = 3;
        c.limits.auth_ban_secs = BAN.as_secs();
    })
    .await;
    let password = server.user("alice").password.clone();
    let attacker = alias(2);
    let neighbour = alias(3);

    // A connection opened before the ban, to try again later.
    let mut early = ssh_from(&server, attacker).await.expect("handshake");
    // The neighbour fails once too: its own count, far from the threshold.
    assert_eq!(password_login_from(&server, neighbour, "alice", "wrong").await, Some(false));
    let mut banned_at = Instant::now();
    for attempt in 1..=3 {
        let started = Instant::now();
        let accepted = password_login_from(&server, attacker, "alice", &format!("guess {attempt}")).await;
        eprintln!("wrong password {attempt} answered in {:?}", started.elapsed());
        assert_eq!(accepted, Some(false), "attempt {attempt} is an ordinary failure");
        banned_at = Instant::now();
    }

    // The attacker's address is now refused at once, even with the right
    // password, and told why.
    let started = Instant::now();
    let mut tcp = tcp_from(attacker, server.addr).await;
    let line = first_line(&mut tcp).await;
    assert!(line.contains("Too many failed logins"), "the refusal says why: {line:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once: {:?}", started.elapsed());
    assert_eq!(password_login_from(&server, attacker, "alice", &password).await, None, "no new connection");
    let tried = bounded("password on an early connection", early.authenticate_password("alice", password.clone()))
        .await
        .map(|r| r.success())
        .unwrap_or(false);
    assert!(!tried, "a connection opened before the ban cannot log in either");

    // The neighbour is not affected.
    let started = Instant::now();
    assert_eq!(password_login_from(&server, neighbour, "alice", &password).await, Some(true));
    eprintln!("neighbour's login during the ban: {:?}", started.elapsed());

    // After the cool-down the address may log in again.
    tokio::time::sleep((banned_at + BAN + Duration::from_millis(300)).saturating_duration_since(Instant::now())).await;
    assert_eq!(
        password_login_from(&server, attacker, "alice", &password).await,
        Some(true),
        "the ban ends after auth_ban_secs"
    );

    drop(tcp);
    let _ = early.disconnect(russh::Disconnect::ByApplication, "", "").await;
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}

/// Counters the servers of this test binary increment, by name and labels
/// (`name{k=v,...}`). Tests running side by side share it, so each test
/// reads only counters no other test touches.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn installed() -> &'static Counters {
        static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();
        COUNTERS.get_or_init(|| {
            let counters: &'static Counters = Box::leak(Box::default());
            assert!(metrics::set_global_recorder(counters).is_ok(), "no other metrics recorder in this test binary");
            counters
        })
    }

    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap().get(key).map_or(0, |n| n.load(Ordering::SeqCst))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<_> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Logs `user` in, opens SFTP and lists `/`; fails the test past 1 s.
async fn logs_in_at_once(server: &TestServer, user: &str) -> SftpClient {
    let started = Instant::now();
    let c = server.sftp(user).await;
    c.list("/").await.unwrap_or_else(|e| panic!("{user} lists /: {e}"));
    let took = started.elapsed();
    eprintln!("{user}: login and listing in {took:?}");
    assert!(took < Duration::from_secs(1), "{user} took {took:?} to log in and list");
    c
}

/// OpenSSH `sftp` as `user`: refused after login, with `reason` shown.
async fn refused_with(server: &TestServer, user: &str, reason: &str) {
    let local = tempfile::tempdir().unwrap();
    let out = server.sftp_batch(user, "ls\n", local.path(), Duration::from_secs(30)).await;
    eprintln!("{user} refused: {}", out.stderr.trim());
    assert!(!out.success() && !out.timed_out(), "the login of {user} fails: {out}");
    assert!(out.stderr.contains(reason), "{user} is told {reason:?}: {out}");
}

async fn wait_authenticated(server: &TestServer, n: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || server.server().authenticated_sessions() == n).await,
        "expected {n} logged-in connections, have {}",
        server.server().authenticated_sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_gets_only_its_share_of_sessions() {
    let counters = Counters::installed();
    let refused_key = "wasftp_connections_refused_total{reason=max_sessions_per_user}";
    let users = [UserSpec::new("alice").tenant("acme"), UserSpec::new("bob").tenant("acme"), UserSpec::new("carol")];
    let server = start_with(users, |c| c.limits.max_sessions_per_user = 2).await;
    let first = server.sftp("alice").await;
    let _second = server.sftp("alice").await;

    let before = counters.get(refused_key);
    refused_with(&server, "alice", "too many connections for this user (at most 2)").await;
    assert_eq!(counters.get(refused_key), before + 1, "the refusal is counted under its own reason");
    assert_eq!(server.server().authenticated_sessions(), 2, "the refused login took no slot");

    // Another user of the same tenant, and a user of another tenant, are not held up.
    let bob = logs_in_at_once(&server, "bob").await;
    let carol = logs_in_at_once(&server, "carol").await;

    // A session that ends gives its slot back to its user.
    first.disconnect().await;
    wait_authenticated(&server, 3).await;
    let again = logs_in_at_once(&server, "alice").await;
    refused_with(&server, "alice", "too many connections for this user").await;

    // So does a client killed without a word: its TCP connection just closes.
    again.disconnect().await;
    wait_authenticated(&server, 3).await;
    let mut cmd = server.ssh_command("alice", &["-s"], &["sftp"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    let mut killed = cmd.spawn().expect("starting ssh");
    wait_authenticated(&server, 4).await;
    refused_with(&server, "alice", "too many connections for this user").await;
    killed.kill().await.expect("killing ssh");
    wait_authenticated(&server, 3).await;
    let _last = logs_in_at_once(&server, "alice").await;

    drop((bob, carol));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenant_gets_only_its_share_of_sessions() {
    let counters = Counters::installed();
    let refused_key = "wasftp_connections_refused_total{reason=max_sessions_per_tenant}";
    let users = [
        UserSpec::new("alice").tenant("acme"),
        UserSpec::new("bob").tenant("acme"),
        UserSpec::new("dave").tenant("acme"),
        UserSpec::new("carol").tenant("globex"),
    ];
    let server = start_with(users, |c| c.limits.max_sessions_per_tenant = 3).await;
    let _a1 = server.sftp("alice").await;
    let _a2 = server.sftp("alice").await;
    let bob = server.sftp("bob").await;

    let before = counters.get(refused_key);
    // Dave has no session at all: it is his tenant that is full.
    refused_with(&server, "dave", "too many connections for this tenant (at most 3)").await;
    refused_with(&server, "alice", "too many connections for this tenant").await;
    assert_eq!(counters.get(refused_key), before + 2, "both refusals are counted under their own reason");
    assert_eq!(server.server().authenticated_sessions(), 3);

    let carol = logs_in_at_once(&server, "carol").await;
    let carol_too = logs_in_at_once(&server, "carol").await;

    bob.disconnect().await;
    wait_authenticated(&server, 4).await;
    let _dave = logs_in_at_once(&server, "dave").await;
    refused_with(&server, "bob", "too many connections for this tenant").await;

    drop((carol, carol_too));
    server.shutdown().await;
}

/// Opens a session channel; the open failure when the server refuses it.
async fn open_channel(ssh: &client::Handle<Client>) -> Result<russh::Channel<client::Msg>, russh::Error> {
    bounded("channel open", ssh.channel_open_session()).await
}

/// An SFTP session on a new channel of `ssh`.
async fn sftp_on(ssh: &client::Handle<Client>) -> RawSftpSession {
    let sftp = RawSftpSession::new(sftp_channel(ssh).await.into_stream());
    sftp.set_timeout(STEP.as_secs());
    bounded("sftp init", sftp.init()).await.expect("sftp init");
    sftp
}

fn refused_for_resources<T>(opened: &Result<T, russh::Error>) -> bool {
    matches!(opened, Err(russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ResourceShortage)))
}

/// An SFTP session on a new channel, once the server has a place for it
/// again (a closed session gives its place back when it is gone).
async fn sftp_once_there_is_room(ssh: &client::Handle<Client>) -> RawSftpSession {
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        let opened = open_channel(ssh).await;
        if refused_for_resources(&opened) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        break opened.expect("a channel once another has closed");
    };
    bounded("subsystem request", channel.request_subsystem(true, "sftp")).await.expect("sftp subsystem");
    let sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(STEP.as_secs());
    bounded("sftp init", sftp.init()).await.expect("sftp init");
    sftp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_gets_only_so_many_channels_and_they_come_back() {
    let counters = Counters::installed();
    let refused_key = "wasftp_channels_refused_total{reason=max_channels_per_session}";
    let server = start_with([UserSpec::new("alice")], |c| c.limits.max_channels_per_session = 3).await;
    let ssh = server.login("alice").await;
    let first = sftp_on(&ssh).await;
    let second = sftp_on(&ssh).await;
    // A channel without a subsystem yet counts too.
    let bare = open_channel(&ssh).await.expect("the third channel");

    let before = counters.get(refused_key);
    assert!(refused_for_resources(&open_channel(&ssh).await), "the fourth channel is refused");
    assert!(refused_for_resources(&open_channel(&ssh).await), "and the fifth");
    assert_eq!(counters.get(refused_key), before + 2);
    // The connection and its sessions go on; another connection has its own channels.
    bounded("stat on an open session", first.stat("/")).await.expect("stat");
    let other = server.sftp("alice").await;
    other.disconnect().await;

    bounded("closing the bare channel", bare.close()).await.expect("close");
    let mut open = vec![first, second, sftp_once_there_is_room(&ssh).await];
    assert!(refused_for_resources(&open_channel(&ssh).await), "at the cap again");
    // A closed session is a place for the next, over and over: none stays
    // counted once it is gone.
    for _ in 0..8 {
        let closing = open.remove(0);
        closing.close_session().expect("closing a session");
        drop(closing);
        open.push(sftp_once_there_is_room(&ssh).await);
    }
    assert!(refused_for_resources(&open_channel(&ssh).await), "still at the cap");
    for sftp in &open {
        bounded("stat", sftp.stat("/")).await.expect("every session still works");
    }
    let _ = ssh.disconnect(russh::Disconnect::ByApplication, "", "").await;
    server.wait_idle(Duration::from_secs(10)).await;
    server.shutdown().await;
}
