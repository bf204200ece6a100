//! The SSH front end: russh configuration, the accept loop with its
//! connection gate, and per-connection watchdogs.

mod algorithms;
mod channel_stream;
mod failed_logins;
mod handler;
pub mod host_keys;
mod limits;
pub mod sessions;
mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::auth::Users;
use crate::config::Config;
use crate::live::PluginVersions;
use crate::sftp::SftpSettings;
use crate::vfs::{FileSettings, NodeTables, ServerBudget, ServerBudgets, SpoolArea, TenantShares};

/// What every connection shares.
pub struct Shared {
    /// Replaced whole when the configuration is reloaded.
    pub users: ArcSwap<Users>,
    /// Each plugin's current version (see `live`).
    pub versions: Arc<PluginVersions>,
    /// The connections open now.
    pub sessions: Arc<sessions::SessionTable>,
    pub sftp: SftpSettings,
    pub files: FileSettings,
    /// Upload buffers, read-ahead and spool space: per connection, per
    /// tenant and for the whole server.
    pub budgets: ServerBudgets,
    /// Files being written (a node per path), per tenant's view.
    pub nodes: NodeTables,
    pub ssh: Arc<russh::server::Config>,
    pub idle_timeout: Duration,
    /// A connection must authenticate within this.
    pub login_grace: Duration,
    /// Unauthenticated connections and session slots (server, tenant, user).
    pub gate: Arc<limits::ConnectionGate>,
    /// Session channels one connection may have open at once.
    pub max_channels: usize,
    pub failed_logins: failed_logins::FailedLogins,
    /// Turns true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Turns true when remaining connections must be cut (grace is over).
    pub force_close: watch::Receiver<bool>,
    pub active: AtomicUsize,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(
        config: &Config,
        users: Arc<Users>,
        versions: Arc<PluginVersions>,
        keys: Vec<russh::keys::PrivateKey>,
        shutdown: watch::Receiver<bool>,
        force_close: watch::Receiver<bool>,
    ) -> Self {
        let limits = &config.limits;
        let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
        let ssh = russh::server::Config {
            server_id: russh::SshId::Standard(format!("SSH-2.0-wasftp_{}", env!("CARGO_PKG_VERSION")).into()),
            methods: handler::allowed_methods(),
            // OpenSSH probes with "none" first: answer it at once.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            keys,
            max_auth_attempts: limits.max_auth_attempts,
            preferred: algorithms::preferred(),
            // Messages russh holds for a channel we have not read yet (each
            // up to a max packet); the SFTP reader drains it except when it
            // applies backpressure (see sftp/budgets.rs).
            channel_buffer_size: 256,
            window_size: 8 << 20,
            maximum_packet_size: 65535,
            // The watchdog closes idle connections: it knows when a quiet
            // client is waiting for a request being served.
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        };
        Self {
            users: ArcSwap::new(users),
            versions,
            sessions: Arc::default(),
            sftp: SftpSettings {
                max_handles: limits.max_handles,
                max_inflight: limits.max_inflight,
                shutdown_grace: Duration::from_secs(limits.shutdown_grace_secs),
            },
            files: FileSettings {
                max_spool_bytes: config.sftp.spool_max_mib << 20,
                setstat_unsupported: config.sftp.setstat_unsupported,
                max_listing_entries: config.sftp.max_listing_entries,
            },
            budgets: server_budgets(config),
            nodes: NodeTables::default(),
            ssh: Arc::new(ssh),
            idle_timeout,
            login_grace: Duration::from_secs(limits.login_grace_secs),
            gate: limits::ConnectionGate::new(limits),
            max_channels: limits.max_channels_per_session,
            failed_logins: failed_logins::FailedLogins::new(
                limits.max_auth_failures_per_ip,
                Duration::from_secs(limits.auth_ban_secs),
            ),
            shutdown,
            force_close,
            active: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
        }
    }
}

/// The budgets every connection draws on, from `[sftp]` (sizes in MiB).
fn server_budgets(config: &Config) -> ServerBudgets {
    const MIB: u64 = 1 << 20;
    let sftp = &config.sftp;
    ServerBudgets {
        upload: ServerBudget::new(
            sftp.upload_buffer_mib as u64 * MIB,
            sftp.upload_buffer_total_mib as u64 * MIB,
            sftp.upload_buffer_tenant_share_mib() as u64 * MIB,
        ),
        read_ahead: ServerBudget::new(
            sftp.read_ahead_mib as u64 * MIB,
            sftp.read_ahead_total_mib as u64 * MIB,
            sftp.read_ahead_tenant_share_mib() as u64 * MIB,
        ),
        spool: SpoolArea::new(
            config.state_dir().join("spool"),
            sftp.spool_total_mib * MIB,
            sftp.spool_tenant_share_mib() * MIB,
        ),
        open_files: TenantShares::new(config.limits.max_open_files as u64, config.limits.max_open_files_per_tenant as u64),
    }
}

/// Accepts connections until shutdown. Each must get through the gate
/// (unauthenticated caps) and log in within the grace time; logged-in
/// sessions are bounded when they authenticate.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        if shared.failed_logins.is_banned(ip) {
            refuse(tcp, peer, "banned", "Too many failed logins from your address; try again later");
            continue;
        }
        let liveness = watchdog::Liveness::new();
        match shared.gate.admit(ip, liveness.clone()) {
            Ok(ticket) => {
                tokio::spawn(serve_connection(shared.clone(), tcp, peer, liveness, Arc::new(ticket)));
            }
            Err(refusal) => refuse(tcp, peer, "per_source_limit", refusal.message()),
        }
    }
    tracing::info!("stopped accepting connections");
}

/// Closes a connection before the SSH version exchange with one line saying
/// why, as sshd does ("Exceeded MaxStartups"); lines before the version are
/// allowed (RFC 4253 4.2). Never waits: a flood of refused connections must
/// cost nothing.
fn refuse(tcp: TcpStream, peer: SocketAddr, reason: &'static str, message: &str) {
    use std::io::{Read as _, Write as _};
    tracing::debug!(%peer, reason, "refused connection: {message}");
    metrics::counter!("wasftp_connections_refused_total", "reason" => reason).increment(1);
    // A plain non-blocking socket: the write is one syscall (tokio's
    // try_write would wait for a readiness event a fresh socket has not had).
    let Ok(mut tcp) = tcp.into_std() else { return };
    // Whatever the client sent already (its version line) is read first, so
    // closing sends FIN after the line rather than a reset that may discard it.
    let mut sink = [0u8; 512];
    let _ = tcp.read(&mut sink);
    let _ = tcp.write(format!("{message}\r\n").as_bytes());
}

async fn serve_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    liveness: Arc<watchdog::Liveness>,
    ticket: Arc<limits::Ticket>,
) {
    let _ = tcp.set_nodelay(true);
    let session_id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let record = shared.sessions.register(session_id, peer);
    let stream = watchdog::WatchedStream::new(tcp, liveness.clone());
    let watchdog = tokio::spawn(watchdog::watch(liveness.clone(), shared.idle_timeout, shared.force_close.clone()));
    let grace = tokio::spawn(limits::enforce_login_grace(ticket.clone(), liveness.clone(), shared.login_grace, session_id));
    shared.active.fetch_add(1, Ordering::SeqCst);
    metrics::gauge!("wasftp_sessions_active").increment(1.0);
    metrics::counter!("wasftp_connections_total").increment(1);
    // SFTP sessions running on this connection; at shutdown the connection
    // is closed as soon as they have finished.
    let (sftp_running, _) = watch::channel(0usize);
    let sftp_running = Arc::new(sftp_running);
    // Its SFTP sessions stop reading requests when this turns true: at
    // shutdown, or when the connection alone is closed.
    let (stop, stop_rx) = watch::channel(false);
    let handler = handler::Connection::new(
        shared.clone(),
        peer,
        session_id,
        ticket,
        sftp_running.clone(),
        liveness.in_service(),
        record.clone(),
        stop_rx,
    );
    match russh::server::run_stream(shared.ssh.clone(), stream, handler).await {
        Ok(mut session) => {
            let handle = session.handle();
            let mut shutdown = shared.shutdown.clone();
            let mut running = sftp_running.subscribe();
            // As at shutdown for one connection: requests being served
            // finish (open uploads are aborted), then it is disconnected.
            let drained = async {
                let why = tokio::select! {
                    _ = stopped(&mut shutdown) => "server shutting down".to_string(),
                    why = record.closed() => why,
                };
                let _ = stop.send(true);
                let _ = running.wait_for(|n| *n == 0).await;
                why
            };
            tokio::select! {
                ended = &mut session => {
                    if let Err(e) = ended {
                        tracing::debug!(session = session_id, "connection ended: {e}");
                    }
                }
                why = drained => {
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, why, String::new()).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
                }
            }
        }
        Err(e) => tracing::debug!(session = session_id, %peer, "handshake failed: {e}"),
    }
    shared.sessions.remove(session_id);
    liveness.kill();
    watchdog.abort();
    grace.abort();
    shared.active.fetch_sub(1, Ordering::SeqCst);
    metrics::gauge!("wasftp_sessions_active").decrement(1.0);
    tracing::debug!(session = session_id, "connection closed");
}

/// Resolves once `flag` turns true (or its sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
