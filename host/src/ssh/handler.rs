//! One SSH connection: authentication, and the `sftp` subsystem on a session
//! channel. Everything else (shell, exec, pty, env, X11, agent, forwarding)
//! is refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use super::Shared;
use super::channel_stream::ChannelReader;
use super::limits::Ticket;
use super::sessions::ConnectionRecord;
use crate::auth::Principal;
use crate::plugin::SessionContext;
use crate::sftp::{ConnectionBudgets, InService, SftpSession};
use crate::vfs::{FileBudgets, Files};

pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// The peer's address as failed logins are counted (IPv4-mapped IPv6 as IPv4).
    ip: IpAddr,
    session_id: u64,
    /// This connection's place in the gate; becomes a session slot at login.
    ticket: Arc<Ticket>,
    principal: Option<Principal>,
    /// Session channels opened and not yet serving SFTP.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// SFTP sessions started here, until they are gone: one outlives its
    /// channel while its last requests finish, and keeps its plugin session
    /// (instances) till then, so it still counts against the channel cap.
    sftp_sessions: Vec<Weak<SftpSession>>,
    /// Channel opens refused so far (only the first is logged).
    channels_refused: u64,
    /// How many SFTP sessions run on this connection.
    sftp_running: Arc<tokio::sync::watch::Sender<usize>>,
    /// File data this connection's SFTP sessions may hold, shared by its
    /// channels, within its tenant's share; made at login.
    file_budgets: Option<FileBudgets>,
    /// Requests queued and replies unsent, shared by its channels.
    sftp_budgets: ConnectionBudgets,
    /// Requests being served, for the connection's idle timer.
    in_service: InService,
    /// What the operator sees of it.
    record: Arc<ConnectionRecord>,
    /// Turns true when its SFTP sessions must stop (see `serve_connection`).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        session_id: u64,
        ticket: Arc<Ticket>,
        sftp_running: Arc<tokio::sync::watch::Sender<usize>>,
        in_service: InService,
        record: Arc<ConnectionRecord>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared,
            peer,
            ip: peer.ip().to_canonical(),
            session_id,
            ticket,
            principal: None,
            channels: HashMap::new(),
            sftp_sessions: Vec::new(),
            channels_refused: 0,
            sftp_running,
            file_budgets: None,
            sftp_budgets: ConnectionBudgets::default(),
            in_service,
            record,
            stop,
        }
    }

    fn accepted(&mut self, principal: Principal, method: &str) -> Auth {
        tracing::info!(user = %principal.user, peer = %self.peer, session = self.session_id, method, "login");
        self.record.logged_in(&principal.user, &principal.tenant, &principal.plugin);
        self.file_budgets = Some(self.shared.budgets.for_connection(&principal.tenant));
        self.principal = Some(principal);
        Auth::Accept
    }

    fn rejected(&self, user: &str, method: &str) -> Auth {
        tracing::warn!(user, peer = %self.peer, session = self.session_id, method, "failed login");
        metrics::counter!("wasftp_failed_logins_total", "method" => method.to_string()).increment(1);
        self.shared.failed_logins.record_failure(self.ip);
        reject()
    }

    /// An address past its failure threshold gets no more tries, not even
    /// on a connection opened before the ban; no password is verified.
    fn banned(&self) -> bool {
        let banned = self.shared.failed_logins.is_banned(self.ip);
        if banned {
            tracing::debug!(peer = %self.peer, session = self.session_id, "login attempt from a banned address");
        }
        banned
    }

    async fn start_sftp(&mut self, channel_id: ChannelId) -> Result<(), String> {
        let principal = self.principal.clone().ok_or("not authenticated")?;
        let budgets = self.file_budgets.clone().ok_or("not authenticated")?;
        let channel = self.channels.remove(&channel_id).ok_or("unknown channel")?;
        let context = SessionContext {
            user: principal.user.clone(),
            tenant: principal.tenant.clone(),
            attributes: principal.attributes.clone(),
        };
        // The version current now, kept by this session to its end (or
        // until its tenant's state moves to the next one). One replaced
        // while the session opened is not a failure: the next is tried.
        let mut tries = 0;
        let (on_version, storage) = loop {
            let version = self.shared.versions.current(&principal.plugin).ok_or("plugin missing")?;
            let on_version = version.enter(&principal.tenant);
            match version.plugin().open_session(context.clone()).await {
                Ok(storage) => break (on_version, storage),
                Err(e) => {
                    tries += 1;
                    let replaced = self.shared.versions.current(&principal.plugin).is_some_and(|now| !Arc::ptr_eq(&now, &version));
                    if !replaced || tries >= 3 {
                        return Err(format!("opening storage: {e}"));
                    }
                }
            }
        };
        ensure_home(&storage, &principal.home).await.map_err(|e| format!("preparing home {}: {e}", principal.home))?;
        let nodes = self.shared.nodes.for_view(&principal.plugin, &principal.tenant, &principal.attributes);
        let files = Files::new(storage, nodes, budgets, self.shared.files.clone(), self.session_id);
        let sftp = SftpSession::new(
            principal,
            self.session_id,
            files,
            self.shared.sftp.clone(),
            self.sftp_budgets.clone(),
            self.in_service.clone(),
            self.record.traffic(),
        );
        self.sftp_sessions.push(Arc::downgrade(&sftp));
        self.record.add_channel(&on_version);
        let shutdown = self.stop.clone();
        let running = self.sftp_running.clone();
        running.send_modify(|n| *n += 1);
        let (read_half, write_half) = channel.split();
        let stream = tokio::io::join(ChannelReader::new(read_half), write_half.make_writer());
        tokio::spawn(async move {
            sftp.run(stream, shutdown.clone()).await;
            // As sshd once sftp-server has exited: the exit status (OpenSSH's
            // scp fails without it), after the EOF the stream sent, then CLOSE.
            if !*shutdown.borrow() {
                let _ = write_half.exit_status(0).await;
            }
            let _ = write_half.close().await;
            running.send_modify(|n| *n -= 1);
            drop(on_version);
        });
        Ok(())
    }
}

pub fn allowed_methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
}

fn reject() -> Auth {
    Auth::Reject { proceed_with_methods: Some(allowed_methods()), partial_success: false }
}

/// Creates the user's root in the plugin when it is not `/` (or finds it,
/// in a plugin that refuses writes).
async fn ensure_home(storage: &crate::plugin::Session, home: &str) -> Result<(), crate::plugin::StorageError> {
    let mut path = String::new();
    for part in home.split('/').filter(|p| !p.is_empty()) {
        path.push('/');
        path.push_str(part);
        match storage.make_dir(&path, None).await {
            Ok(()) | Err(crate::plugin::StorageError::AlreadyExists) => {}
            // A read-only plugin refuses make-dir even of what it has: its
            // directory is the home, as sshd takes an existing one. A plugin
            // failing (a trap, a deadline) is not a refusal.
            Err(e @ (crate::plugin::StorageError::PermissionDenied | crate::plugin::StorageError::Unsupported)) => {
                match storage.file_info(&path).await {
                    Ok(info) if info.kind == crate::plugin::FileKind::Directory => {}
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, "auth probe");
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.banned() {
            return Ok(reject());
        }
        match self.shared.users.load_full().check_password(user, password).await {
            Some(principal) => Ok(self.accepted(principal, "password")),
            None => Ok(self.rejected(user, "password")),
        }
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        if self.banned() {
            return Ok(reject());
        }
        // Only keys we would accept proceed to a signature check. Offers are
        // not failures: OpenSSH offers every key it has.
        match self.shared.users.load().check_key(user, offer.public_key) {
            Some(_) => Ok(Auth::Accept),
            None => Ok(reject()),
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if self.banned() {
            return Ok(reject());
        }
        match self.shared.users.load().check_key(user, key.public_key) {
            Some(principal) => Ok(self.accepted(principal, "publickey")),
            None => Ok(self.rejected(user, "publickey")),
        }
    }

    /// Only now does the connection take a session slot of the server, its
    /// tenant and its user; past one of them, the client is told which
    /// before the connection closes.
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        // `accepted` set it before the Accept that led here; without it the
        // connection stays unauthenticated and the login grace closes it.
        let Some(principal) = &self.principal else { return Ok(()) };
        if let Err(full) = self.ticket.authenticate(&principal.user, &principal.tenant) {
            metrics::counter!("wasftp_connections_refused_total", "reason" => full.reason()).increment(1);
            if let Some(unlogged) = self.shared.gate.log_refusal(&full) {
                tracing::warn!(
                    user = %principal.user,
                    peer = %self.peer,
                    session = self.session_id,
                    unlogged_since_last = unlogged,
                    "refused login: {full} (logged at most once a minute for the same user, tenant or server)"
                );
            }
            self.principal = None;
            self.file_budgets = None;
            session.disconnect(russh::Disconnect::TooManyConnections, &full.message(), "")?;
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Each SFTP channel opens a storage session (for stateless plugins
        // up to `instances_per_session` instances): bound them per
        // connection, as max_sessions only bounds connections, and the
        // instance allocator is sized for this many (server::instance_slots).
        self.sftp_sessions.retain(|sftp| sftp.strong_count() > 0);
        let max = self.shared.max_channels;
        if self.channels.len() + self.sftp_sessions.len() >= max {
            self.channels_refused += 1;
            metrics::counter!("wasftp_channels_refused_total", "reason" => "max_channels_per_session").increment(1);
            if self.channels_refused == 1 {
                tracing::warn!(
                    session = self.session_id,
                    "refused channel: {max} already open (max_channels_per_session; logged once per connection)"
                );
            }
            // Code 4 (resource shortage) with a description that says which
            // limit; russh's own ResourceShortage sends no more than its name.
            let reason = format!("too many channels on this connection (at most {max})");
            reply.reject(russh::ChannelOpenFailure::Other { code: 4, reason }).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(&mut self, channel: ChannelId, name: &str, session: &mut Session) -> Result<(), Self::Error> {
        if name != "sftp" {
            tracing::info!(session = self.session_id, subsystem = name, "refused subsystem");
            session.channel_failure(channel)?;
            return Ok(());
        }
        match self.start_sftp(channel).await {
            Ok(()) => session.channel_success(channel)?,
            Err(why) => {
                tracing::warn!(session = self.session_id, "sftp refused: {why}");
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        tracing::info!(session = self.session_id, "refused shell");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(&mut self, channel: ChannelId, _data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        tracing::info!(session = self.session_id, "refused exec");
        session.channel_failure(channel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool, Self::Error> {
        session.channel_failure(channel)?;
        Ok(false)
    }

    async fn tcpip_forward(&mut self, address: &str, port: &mut u32, _session: &mut Session) -> Result<bool, Self::Error> {
        tracing::info!(session = self.session_id, address, port = *port, "refused remote forwarding");
        Ok(false)
    }

    async fn streamlocal_forward(&mut self, _socket_path: &str, _session: &mut Session) -> Result<bool, Self::Error> {
        Ok(false)
    }

    // Direct TCP/IP, X11 and streamlocal channel opens are refused by the
    // default handlers, which drop the open handle (russh rejects it).

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
