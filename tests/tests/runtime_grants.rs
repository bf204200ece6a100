//! Capability grants: a plugin reaches exactly the HTTP origins and the
//! directory its config grants, and is refused at load when it imports
//! `wasi:http` without a grant. The grants test plugin
//! (`tests/plugins/grants`) makes the requests; a small HTTP listener here
//! counts what reaches it.

mod runtime_support;
mod server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use runtime_support::{bounded, ctx, runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wasftp::config::{PluginConfig, PreopenConfig, PreopenMode};
use wasftp::plugin::{
    Grants, Origin, Plugin, PluginSettings, PoolLimits, Preopen, Runtime, RuntimeStats, Session, StorageError, WriteOptions,
};

fn grants_plugin_path() -> &'static str {
    env!("WASFTP_GRANTS_PLUGIN")
}

/// A loopback HTTP server answering 204 to anything; counts the
/// connections and requests that reach it and keeps the last request line.
struct Listener {
    port: u16,
    /// Connections accepted.
    hits: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    last_line: Arc<std::sync::Mutex<String>>,
}

/// A listener that closes every connection after one response.
async fn listener() -> Listener {
    listener_keeping_connections(false, usize::MAX).await
}

/// With `keep_alive`, connections are kept open, and each answers
/// `answers` requests: the next is read and the connection closed without
/// an answer, as a server closing an idle connection may do.
async fn listener_keeping_connections(keep_alive: bool, answers: usize) -> Listener {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let last_line = Arc::new(std::sync::Mutex::new(String::new()));
    let (counted, requested, line) = (hits.clone(), requests.clone(), last_line.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (line, requested) = (line.clone(), requested.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                for answered in 0.. {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    requested.fetch_add(1, Ordering::SeqCst);
                    if answered == answers {
                        return;
                    }
                    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let text = String::from_utf8_lossy(&head[..end]).to_string();
                    head.drain(..end);
                    *line.lock().unwrap() = text.lines().next().unwrap_or_default().to_string();
                    let close = if keep_alive { "" } else { "connection: close\r\n" };
                    let response = format!("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n{close}\r\n");
                    if stream.write_all(response.as_bytes()).await.is_err() || !keep_alive {
                        return;
                    }
                }
            });
        }
    });
    Listener { port, hits, requests, last_line }
}

/// A server that answers `GET /bytes/N` with N bytes, and a PUT with 200
/// once its (chunked) body ended; the most body bytes of any one PUT it read.
struct BodyServer {
    port: u16,
    put_bytes: Arc<AtomicU64>,
}

async fn body_server() -> BodyServer {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let put_bytes = Arc::new(AtomicU64::new(0));
    let most = put_bytes.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let most = most.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                let end = loop {
                    if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                if head.starts_with("PUT") {
                    let mut body = data.len() - end;
                    while !data.ends_with(b"0\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                body += n;
                                data.extend_from_slice(&buf[..n]);
                                data.drain(..data.len().saturating_sub(8));
                            }
                        }
                    }
                    most.fetch_max(body as u64, Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
                let length: usize = target.strip_prefix("/bytes/").and_then(|n| n.parse().ok()).unwrap_or(0);
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = vec![b'b'; 64 << 10];
                let mut sent = 0;
                while sent < length {
                    let n = (length - sent).min(piece.len());
                    if stream.write_all(&piece[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    BodyServer { port, put_bytes }
}

fn settings(http_allow: &[String], preopen: Option<Preopen>) -> PluginSettings {
    PluginSettings {
        grants: Grants {
            http_allow: http_allow.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            preopen,
            ..Grants::default()
        },
        ..PluginSettings::default()
    }
}

async fn load(rt: &Runtime, settings: PluginSettings) -> anyhow::Result<Arc<Plugin>> {
    let bytes = std::fs::read(grants_plugin_path()).expect("reading the grants plugin");
    bounded(rt.load("grants", &bytes, settings)).await
}

async fn session(plugin: &Plugin) -> Session {
    bounded(plugin.open_session(ctx("gina", "grants"))).await.expect("opening a session")
}

fn io_message(result: Result<impl std::fmt::Debug, StorageError>, what: &str) -> String {
    match result {
        Err(StorageError::Io(message)) => message,
        other => panic!("{what}: expected an io error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_is_reached() {
    let allowed = listener().await;
    let rt = runtime();
    let plugin = load(&rt, settings(&[format!("http://127.0.0.1:{}", allowed.port)], None)).await.unwrap();
    let s = session(&plugin).await;
    let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/bucket/key", allowed.port))).await.unwrap();
    assert_eq!(info.size, 204, "the plugin saw the listener's status");
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 1);
    assert_eq!(*allowed.last_line.lock().unwrap(), "GET /bucket/key HTTP/1.1");
    assert_eq!(RuntimeStats::get(&rt.stats().http_denied), 0);
}

/// Requests to one origin reuse a connection, from one session and the
/// next: the plugin's connections are pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reuse_the_plugins_connections() {
    let server = listener_keeping_connections(true, usize::MAX).await;
    let rt = runtime();
    let plugin = load(&rt, settings(&[format!("http://127.0.0.1:{}", server.port)], None)).await.unwrap();
    for _ in 0..2 {
        let s = session(&plugin).await;
        for i in 0..3 {
            let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/key{i}", server.port))).await.unwrap();
            assert_eq!(info.size, 204);
        }
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
    // A connection goes back to the pool from a task of its own: a request
    // quick on the heels of the last may find none yet.
    let connections = server.hits.load(Ordering::SeqCst);
    assert!((1..=2).contains(&connections), "six requests, one after another, over {connections} connections");
}

/// A request without a body that meets a pooled connection the server
/// closed is sent again on a new connection: the plugin sees its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_closed_under_it_goes_again() {
    let server = listener_keeping_connections(true, 1).await;
    let rt = runtime();
    let plugin = load(&rt, settings(&[format!("http://127.0.0.1:{}", server.port)], None)).await.unwrap();
    let s = session(&plugin).await;
    for i in 0..2 {
        let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/key{i}", server.port))).await.unwrap();
        assert_eq!(info.size, 204, "request {i}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "the second request went again, on a new connection");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

/// A POST is never sent twice, even without a body: one that meets a pooled
/// connection closed under it may have been acted on (S3's
/// CreateMultipartUpload and CompleteMultipartUpload are POSTs), so it fails,
/// and the plugin sees why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_on_a_connection_closed_under_it_is_not_sent_again() {
    let server = listener_keeping_connections(true, 1).await;
    let rt = runtime();
    let plugin = load(&rt, settings(&[format!("http://127.0.0.1:{}", server.port)], None)).await.unwrap();
    let s = session(&plugin).await;
    let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/bucket/key", server.port))).await.unwrap();
    assert_eq!(info.size, 204);
    // The connection goes back to the pool from a task of its own: the POST
    // must find it there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let posted = bounded(s.file_info(&format!("/http-post/127.0.0.1:{}/bucket/key?uploads", server.port))).await;
    let message = io_message(posted, "the POST on a closed connection");
    assert!(message.contains("ConnectionTerminated"), "{message}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2, "the POST was read once and not sent again");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "no new connection was made for it");
    // A failed request is an answer: the instance and the session go on.
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0);
    let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/bucket/key", server.port))).await.unwrap();
    assert_eq!(info.size, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_origin_is_refused_with_an_error_not_a_trap() {
    let allowed = listener().await;
    let other = listener().await;
    let rt = runtime();
    let plugin = load(&rt, settings(&[format!("http://127.0.0.1:{}", allowed.port)], None)).await.unwrap();
    let s = session(&plugin).await;
    let refused = [
        // Another port of this host (the SFTP port would be one).
        format!("127.0.0.1:{}", other.port),
        // The same port under another loopback address, and under a name.
        format!("127.0.0.2:{}", allowed.port),
        format!("localhost:{}", allowed.port),
        // The cloud metadata service.
        "169.254.169.254:80".to_string(),
    ];
    for target in &refused {
        let message = io_message(bounded(s.file_info(&format!("/http/{target}/latest"))).await, target);
        assert!(message.contains("HttpRequestDenied"), "{target}: {message}");
    }
    assert_eq!(other.hits.load(Ordering::SeqCst), 0, "nothing reached the unlisted port");
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 0, "nothing reached the listed port under another name");
    assert_eq!(RuntimeStats::get(&rt.stats().http_denied), refused.len() as u64);
    // A refusal is an answer: the instance and the session go on.
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0);
    let info = bounded(s.file_info(&format!("/http/127.0.0.1:{}/", allowed.port))).await.unwrap();
    assert_eq!(info.size, 204);
}

/// Requests in flight are capped per tenant (counted when sent, not when
/// awaited: a plugin that sends requests and never looks at them holds its
/// places), and one tenant at its cap leaves another's requests alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_per_tenant_and_a_full_tenant_leaves_others_alone() {
    let server = listener().await;
    let rt = runtime();
    let mut settings = settings(&[format!("http://127.0.0.1:{}", server.port)], None);
    settings.grants.http_limits.requests_per_tenant = 8;
    let plugin = load(&rt, settings).await.unwrap();
    let greedy = bounded(plugin.open_session(ctx("greedy", "greedy"))).await.unwrap();
    let other = bounded(plugin.open_session(ctx("other", "other"))).await.unwrap();
    let get = format!("/http/127.0.0.1:{}/x", server.port);

    // 1000 sent and kept: 8 go out, the rest are refused at once.
    let held = bounded(greedy.file_info(&format!("/http-hold/1000/127.0.0.1:{}/x", server.port))).await.unwrap();
    assert_eq!(held.size, 1000, "sending is not refused; the answer is");
    assert!(RuntimeStats::get(&rt.stats().http_refused_busy) >= 992, "{}", RuntimeStats::get(&rt.stats().http_refused_busy));
    let message = io_message(bounded(greedy.file_info(&get)).await, "a request past the tenant's cap");
    assert!(message.contains("ConnectionLimitReached"), "{message}");
    // Another tenant of the same plugin is untouched.
    assert_eq!(bounded(other.file_info(&get)).await.unwrap().size, 204);
    // The places come back when the requests go.
    assert_eq!(bounded(greedy.file_info("/http-release")).await.unwrap().size, 1000);
    assert_eq!(bounded(greedy.file_info(&get)).await.unwrap().size, 204);
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0, "refusals are answers, not traps");
}

/// A plugin asking to wait 600 s for a response waits the host's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_ask_for_a_longer_wait_than_the_hosts_limit() {
    // Accepts, reads the request and never answers.
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let rt = runtime();
    let mut settings = settings(&[format!("http://127.0.0.1:{port}")], None);
    settings.grants.http_limits.timeout = Duration::from_secs(1);
    let plugin = load(&rt, settings).await.unwrap();
    let s = session(&plugin).await;
    let started = std::time::Instant::now();
    let message = io_message(bounded(s.file_info(&format!("/http-patient/127.0.0.1:{port}/slow"))).await, "a patient GET");
    let waited = started.elapsed();
    assert!(message.contains("Timeout"), "{message}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_importing_http_without_a_grant_is_refused_at_load() {
    let rt = runtime();
    let error = format!("{:#}", load(&rt, settings(&[], None)).await.err().expect("the load must fail"));
    assert!(error.contains("imports wasi:http/"), "names the import: {error}");
    assert!(error.contains("http_allow = [") && error.contains("[plugins.grants]"), "names the config line: {error}");
}

/// An import the host does not link at all is refused at load, named,
/// with what a plugin may import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_importing_an_interface_the_host_does_not_provide_is_refused_by_name() {
    let rt = runtime();
    let component = wat::parse_str(r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "get" (func (param "key" string) (result string))))))"#).unwrap();
    let error = format!("{:#}", rt.load("odd", &component, PluginSettings::default()).await.err().expect("the load must fail"));
    assert!(error.contains("wasi:keyvalue/store@0.2.0-draft"), "names the import: {error}");
    assert!(error.contains("wasi:http when granted"), "says what may be imported: {error}");
}

/// Interfaces every tool chain imports but no grant fills (a filesystem
/// without `preopen`, sockets) are not refused; the plugin says at load
/// what it will find there, with the config line that would grant it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_imports_left_empty_by_the_grants_are_named_at_load() {
    let rt = runtime();
    let memory = runtime_support::memory_plugin(&rt).await;
    assert!(memory.ungranted_imports().is_empty(), "the memory plugin imports neither: {:?}", memory.ungranted_imports());

    let hostile = std::fs::read(env!("WASFTP_HOSTILE_PLUGIN")).unwrap();
    let plugin = bounded(rt.load("hostile", &hostile, PluginSettings::default())).await.unwrap();
    let ungranted = plugin.ungranted_imports();
    assert_eq!(ungranted.len(), 2, "{ungranted:?}");
    assert!(ungranted[0].interfaces.iter().all(|i| i.starts_with("wasi:filesystem/")), "{ungranted:?}");
    assert!(ungranted[0].finds.contains("preopen = { dir = "), "{}", ungranted[0].finds);
    assert!(ungranted[0].finds.contains("[plugins.hostile]"), "{}", ungranted[0].finds);
    assert!(ungranted[1].interfaces.iter().any(|i| i.starts_with("wasi:sockets/tcp@")), "{ungranted:?}");
    assert!(ungranted[1].finds.contains("every socket and name lookup is refused"), "{}", ungranted[1].finds);

    // With a directory granted, only the sockets are left.
    let dir = tempfile::tempdir().unwrap();
    let granted = PluginSettings {
        grants: wasftp::plugin::Grants { preopen: Some(Preopen { dir: dir.path().into(), writable: false, per_tenant: false }), ..Default::default() },
        ..PluginSettings::default()
    };
    let plugin = bounded(rt.load("hostile", &hostile, granted)).await.unwrap();
    assert_eq!(plugin.ungranted_imports().len(), 1);
    assert!(plugin.ungranted_imports()[0].interfaces[0].starts_with("wasi:sockets/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory_is_read_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello").unwrap();
    let rt = runtime();
    let preopen = Preopen { dir: dir.path().to_path_buf(), writable: false, per_tenant: false };
    let plugin = load(&rt, settings(&["http://127.0.0.1:9".into()], Some(preopen))).await.unwrap();
    let s = session(&plugin).await;
    assert_eq!(bounded(s.file_info("/fs/hello.txt")).await.unwrap().size, 5);
    let made = bounded(s.make_dir("/fs/new", None)).await;
    assert!(made.is_err(), "mkdir in a read-only grant must fail: {made:?}");
    assert!(!dir.path().join("new").exists());
    // Nothing outside the granted directory is visible.
    assert!(bounded(s.file_info("/fs/../etc/passwd")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_directory_is_written_and_none_is_seen_without_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello").unwrap();
    let rt = runtime();
    let preopen = Preopen { dir: dir.path().to_path_buf(), writable: true, per_tenant: false };
    let plugin = load(&rt, settings(&["http://127.0.0.1:9".into()], Some(preopen))).await.unwrap();
    let s = session(&plugin).await;
    bounded(s.make_dir("/fs/new", None)).await.expect("mkdir in a writable grant");
    assert!(dir.path().join("new").is_dir());

    let ungranted = load(&rt, settings(&["http://127.0.0.1:9".into()], None)).await.unwrap();
    let s = session(&ungranted).await;
    let seen = bounded(s.file_info("/fs/hello.txt")).await;
    assert!(seen.is_err(), "no directory without a grant: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_an_ungranted_http_plugin() {
    let error = server_with_grants_plugin(Vec::new()).await.err().expect("the server must refuse to start");
    let error = format!("{error:#}");
    assert!(error.contains("wasi:http/") && error.contains("http_allow"), "{error}");
    // With the grant it starts.
    let server = server_with_grants_plugin(vec!["http://127.0.0.1:9".into()]).await.expect("starting with the grant");
    server.shutdown().await;
}

async fn server_with_grants_plugin(http_allow: Vec<String>) -> anyhow::Result<wasftp::RunningServer> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = wasftp::config::Config::from_toml("listen = \"127.0.0.1:0\"")?;
    config.state_dir = Some(dir.path().join("state"));
    config.plugins.insert(
        "grants".into(),
        PluginConfig { source: grants_plugin_path().into(), http_allow, ..PluginConfig::default() },
    );
    config.users.push(wasftp::config::UserConfig {
        name: "gina".into(),
        password_hash: Some(wasftp::auth::hash_password("gina-secret")?),
        authorized_keys: Vec::new(),
        authorized_keys_file: None,
        home: "/".into(),
        plugin: "grants".into(),
        tenant: None,
        attributes: Default::default(),
        uid: 1000,
        gid: 1000,
    });
    bounded(wasftp::ServerBuilder::new(config).start()).await
}

/// Grants for a plugin that imports neither are harmless: the memory
/// plugin with an HTTP allow list and a directory serves as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_for_a_plugin_that_does_not_use_them_change_nothing() {
    let granted = tempfile::tempdir().unwrap();
    let granted_dir = granted.path().to_path_buf();
    let server = server_support::start_with([server_support::UserSpec::new("bob")], |config| {
        let memory = config.plugins.get_mut("memory").unwrap();
        memory.http_allow = vec!["http://127.0.0.1:9".into()];
        memory.preopen = Some(PreopenConfig { dir: granted_dir, mode: PreopenMode::Rw, per_tenant: false });
    })
    .await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("up.txt"), b"granted").unwrap();
    server
        .sftp_batch("bob", "put up.txt\nmkdir d\nls -l\nget up.txt down.txt\n", cwd.path(), Duration::from_secs(30))
        .await
        .assert_success("put, mkdir, ls and get with grants the plugin does not use");
    assert_eq!(std::fs::read(cwd.path().join("down.txt")).unwrap(), b"granted");
    assert_eq!(std::fs::read_dir(granted.path()).unwrap().count(), 0, "the memory plugin wrote nothing to the directory");
    server.shutdown().await;
}

fn staged_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(".uploads")).map(|entries| entries.count()).unwrap_or(0)
}

/// An upload whose instance traps before it is finished leaves its staged
/// content outside the instance (as a multipart upload would be): the host
/// aborts it on a fresh instance with the writer's recovery token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_lost_with_its_instance_is_aborted_on_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut settings = settings(&["http://127.0.0.1:9".into()], Some(Preopen { dir: dir.path().to_path_buf(), writable: true, per_tenant: false }));
    // One instance per session, so the trap below hits the writer's instance.
    settings.pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    let plugin = load(&rt, settings).await.unwrap();
    let s = session(&plugin).await;
    let options = WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None };

    // Finished normally: in place, nothing staged, no orphan abort.
    let w = bounded(s.begin_write("/fs/done.bin", options)).await.unwrap();
    bounded(w.write_chunk(0, vec![7u8; 1000])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 1);
    assert_eq!(bounded(w.finish()).await.unwrap().size, 1000);
    drop(w);
    assert_eq!(std::fs::read(dir.path().join("done.bin")).unwrap().len(), 1000);
    assert_eq!(staged_files(dir.path()), 0);

    let w = bounded(s.begin_write("/fs/lost.bin", options)).await.unwrap();
    bounded(w.write_chunk(0, vec![1u8; 1000])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 1, "the upload is staged outside the instance");
    let trapped = bounded(s.file_info("/panic")).await;
    assert!(matches!(trapped, Err(StorageError::PluginFailed(_))), "{trapped:?}");
    let finished = bounded(w.finish()).await;
    assert!(finished.is_err(), "the writer died with its instance: {finished:?}");
    drop(w);
    let aborted = server_support::wait_until(Duration::from_secs(10), || RuntimeStats::get(&rt.stats().orphans_aborted) == 1).await;
    assert!(aborted, "the upload of the lost instance was not aborted");
    assert_eq!(staged_files(dir.path()), 0, "its staged content is gone");
    assert!(!dir.path().join("lost.bin").exists());
    assert_eq!(RuntimeStats::get(&rt.stats().orphans_aborted), 1);
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 1);
    // The session goes on, on a fresh instance.
    assert_eq!(bounded(s.file_info("/fs/done.bin")).await.unwrap().size, 1000);

    // Dropped while its instance is busy with a call that then traps: the
    // drop, queued behind that call, finds the instance gone, and the upload
    // is aborted all the same.
    let w = bounded(s.begin_write("/fs/late.bin", options)).await.unwrap();
    bounded(w.write_chunk(0, vec![2u8; 1000])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 1);
    let (trapped, ()) = tokio::join!(bounded(s.file_info("/panic-after/300")), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(w);
    });
    assert!(matches!(trapped, Err(StorageError::PluginFailed(_))), "{trapped:?}");
    let aborted = server_support::wait_until(Duration::from_secs(10), || RuntimeStats::get(&rt.stats().orphans_aborted) == 2).await;
    assert!(aborted, "the upload dropped before its instance trapped was not aborted");
    assert_eq!(staged_files(dir.path()), 0);
    assert!(!dir.path().join("late.bin").exists());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(RuntimeStats::get(&rt.stats().orphans_aborted), 2, "aborted once");
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 2);
}

/// A writer dropped behind a call that outlasts the drop's own time limit
/// (here 300 ms), then traps: the drop waits for the instance instead of
/// giving up, finds it gone, and the upload is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_dropped_behind_a_long_call_that_traps_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut settings = settings(&["http://127.0.0.1:9".into()], Some(Preopen { dir: dir.path().to_path_buf(), writable: true, per_tenant: false }));
    settings.pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    settings.timeouts.metadata = Duration::from_millis(300);
    let plugin = load(&rt, settings).await.unwrap();
    let s = session(&plugin).await;
    let options = WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None };
    let w = bounded(s.begin_write("/fs/slow.bin", options)).await.unwrap();
    bounded(w.write_chunk(0, vec![3u8; 1000])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 1);
    let (late, ()) = tokio::join!(bounded(s.file_info("/panic-after/1000")), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(w);
    });
    assert!(matches!(late, Err(StorageError::Io(_))), "the stat outlasted its 300 ms: {late:?}");
    let aborted = server_support::wait_until(Duration::from_secs(10), || RuntimeStats::get(&rt.stats().orphans_aborted) == 1).await;
    assert!(aborted, "the drop gave up waiting and the upload was left behind");
    assert_eq!(staged_files(dir.path()), 0);
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 1);
}

/// Before: one orphan-abort instance served every tenant of the plugin, and
/// tenant b's abort waited behind tenant a's hung one (its commit limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_orphan_abort_of_one_tenant_holds_up_no_other_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut settings = settings(&["http://127.0.0.1:9".into()], Some(Preopen { dir: dir.path().to_path_buf(), writable: true, per_tenant: false }));
    settings.pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    settings.timeouts.commit = Duration::from_secs(6);
    let plugin = load(&rt, settings).await.unwrap();
    let a = bounded(plugin.open_session(ctx("ann", "tenant-a"))).await.unwrap();
    let b = bounded(plugin.open_session(ctx("bo", "tenant-b"))).await.unwrap();
    let options = WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None };
    let wa = bounded(a.begin_write("/fs/hang.bin", options)).await.unwrap();
    bounded(wa.write_chunk(0, vec![1u8; 100])).await.unwrap();
    let wb = bounded(b.begin_write("/fs/b.bin", options)).await.unwrap();
    bounded(wb.write_chunk(0, vec![2u8; 100])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 2);

    // Tenant a's instance traps: its upload's abort hangs.
    assert!(bounded(a.file_info("/panic")).await.is_err());
    drop(wa);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Then tenant b's: its abort runs at once.
    assert!(bounded(b.file_info("/panic")).await.is_err());
    drop(wb);
    let aborted = server_support::wait_until(Duration::from_secs(3), || RuntimeStats::get(&rt.stats().orphans_aborted) == 1).await;
    assert!(aborted, "tenant b's orphan abort waited behind tenant a's");
    assert_eq!(staged_files(dir.path()), 1, "only tenant a's hung upload is left");
}

/// Request and response bodies stop at `http_body_mib`: a response larger
/// than it fails once the bound is passed, a request body larger than it
/// is cut off with the request failing; within it both pass whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stop_at_their_bound() {
    let server = body_server().await;
    let rt = runtime();
    let mut settings = settings(&[format!("http://127.0.0.1:{}", server.port)], None);
    settings.grants.http_limits.body_bytes = 1 << 20;
    let plugin = load(&rt, settings).await.unwrap();
    let s = session(&plugin).await;
    let at = format!("127.0.0.1:{}", server.port);

    assert_eq!(bounded(s.file_info(&format!("/http-body/{at}/bytes/1000000"))).await.unwrap().size, 1_000_000);
    assert_eq!(bounded(s.file_info(&format!("/http-put/1000000/{at}/up"))).await.unwrap().size, 200);
    assert!(server_support::wait_until(Duration::from_secs(5), || server.put_bytes.load(Ordering::SeqCst) > 0).await);
    let arrived = server.put_bytes.load(Ordering::SeqCst);
    assert!((1_000_000..1_010_000).contains(&arrived), "the whole body arrived, with its chunk framing: {arrived}");

    let message = io_message(bounded(s.file_info(&format!("/http-body/{at}/bytes/3145728"))).await, "a 3 MiB response");
    // wasmtime-wasi-http 48 gives a body's error as text only (no error code).
    assert!(message.contains("HTTP response body size exceeds limit: 1048576 bytes"), "{message}");
    let read: u64 = message
        .split_whitespace()
        .skip_while(|word| *word != "after")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of bytes read in {message:?}"));
    assert!(read <= 1 << 20, "no more than the bound reached the plugin: {read}");
    server.put_bytes.store(0, Ordering::SeqCst);
    let message = io_message(bounded(s.file_info(&format!("/http-put/3145728/{at}/up"))).await, "a 3 MiB request body");
    assert!(message.contains("HttpRequestBodySize"), "{message}");
    // The server's side ends when the host cuts the connection.
    assert!(server_support::wait_until(Duration::from_secs(5), || server.put_bytes.load(Ordering::SeqCst) > 0).await);
    let arrived = server.put_bytes.load(Ordering::SeqCst);
    assert!(arrived <= (1 << 20) + (64 << 10), "at most the bound left the host: {arrived} bytes");
    assert_eq!(RuntimeStats::get(&rt.stats().poisoned), 0, "a body past its bound is an error the plugin sees");
    assert_eq!(bounded(s.file_info(&format!("/http-body/{at}/bytes/10"))).await.unwrap().size, 10);
}

/// The host's own work has HTTP places of its own: with every place of the
/// plugin held by one tenant's requests, another tenant's lost upload is
/// still aborted by a request of the host's orphan abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_abort_has_http_places_of_its_own() {
    let server = listener().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let at = format!("127.0.0.1:{}", server.port);
    let mut settings = settings(&[format!("http://{at}")], Some(Preopen { dir: dir.path().to_path_buf(), writable: true, per_tenant: false }));
    settings.pools = PoolLimits { instances_per_session: 1, ..PoolLimits::default() };
    settings.grants.http_limits.requests = 8;
    settings.grants.http_limits.requests_per_tenant = 8;
    let plugin = load(&rt, settings).await.unwrap();
    let greedy = bounded(plugin.open_session(ctx("greedy", "greedy"))).await.unwrap();
    let victim = bounded(plugin.open_session(ctx("victim", "victim"))).await.unwrap();

    assert_eq!(bounded(greedy.file_info(&format!("/http-hold/8/{at}/x"))).await.unwrap().size, 8);
    let message = io_message(bounded(victim.file_info(&format!("/http/{at}/x"))).await, "a request past the plugin's cap");
    assert!(message.contains("ConnectionLimitReached"), "every place of the plugin is held: {message}");

    let options = WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None };
    let w = bounded(victim.begin_write(&format!("/fs/lost-http-{at}"), options)).await.unwrap();
    bounded(w.write_chunk(0, vec![1u8; 1000])).await.unwrap();
    assert_eq!(staged_files(dir.path()), 1);
    assert!(bounded(victim.file_info("/panic")).await.is_err());
    drop(w);
    let aborted = server_support::wait_until(Duration::from_secs(10), || RuntimeStats::get(&rt.stats().orphans_aborted) == 1).await;
    assert!(aborted, "the orphan abort's request got a place");
    assert_eq!(staged_files(dir.path()), 0);
    assert_eq!(server.last_line.lock().unwrap().as_str(), "GET /abort HTTP/1.1");
}

/// A tenant with a request cap of its own gets that one, not the plugin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_may_have_a_request_cap_of_its_own() {
    let server = listener().await;
    let rt = runtime();
    let at = format!("127.0.0.1:{}", server.port);
    let mut settings = settings(&[format!("http://{at}")], None);
    settings.grants.http_limits.requests_per_tenant = 8;
    settings.grants.http_limits.requests_by_tenant = [("few".to_string(), 2)].into();
    let plugin = load(&rt, settings).await.unwrap();
    let few = bounded(plugin.open_session(ctx("few", "few"))).await.unwrap();
    let others = bounded(plugin.open_session(ctx("others", "others"))).await.unwrap();
    assert_eq!(bounded(few.file_info(&format!("/http-hold/10/{at}/x"))).await.unwrap().size, 10);
    assert_eq!(RuntimeStats::get(&rt.stats().http_refused_busy), 8, "two of its own went out");
    assert_eq!(bounded(others.file_info(&format!("/http-hold/10/{at}/x"))).await.unwrap().size, 10);
    assert_eq!(RuntimeStats::get(&rt.stats().http_refused_busy), 8 + 2, "the plugin's eight for the others");
}
