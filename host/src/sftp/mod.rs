//! Our SFTP v3 request loop. One task reads and decodes requests; up to
//! `max_inflight` are handled at once and each reply is written as soon as
//! it is ready (SFTP matches replies by id). Requests on one handle keep
//! their order where it matters: CLOSE waits for the handle's earlier requests.

mod attrs;
mod framing;
mod handles;
mod ops;
mod paths;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::auth::Principal;
use crate::config::SetstatPolicy;
use crate::plugin::Session;

pub use framing::{MAX_PACKET, MAX_READ, MAX_WRITE};

/// Per-session settings of the SFTP layer.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    pub max_handles: usize,
    pub max_inflight: usize,
    pub setstat_unsupported: SetstatPolicy,
    /// Added before every backend call (benchmarking a slow backend).
    pub backend_delay: Duration,
    /// How long in-flight requests may take once shutdown starts.
    pub shutdown_grace: Duration,
}

/// Everything one SFTP session works with.
pub struct SftpSession {
    pub(crate) principal: Principal,
    pub(crate) session_id: u64,
    pub(crate) storage: Session,
    pub(crate) settings: SftpSettings,
    pub(crate) handles: handles::HandleTable,
}

impl SftpSession {
    pub fn new(principal: Principal, session_id: u64, storage: Session, settings: SftpSettings) -> Arc<Self> {
        Arc::new(Self { principal, session_id, storage, settings, handles: Default::default() })
    }

    /// Serves SFTP on `stream` until the client leaves or `shutdown` turns true.
    pub async fn run<S>(self: Arc<Self>, stream: S, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(stream);
        let (replies, reply_rx) = mpsc::channel::<Bytes>(self.settings.max_inflight * 2);
        let writer_task = tokio::spawn(write_replies(writer, reply_rx));
        let inflight = Arc::new(Semaphore::new(self.settings.max_inflight));

        loop {
            let incoming = tokio::select! {
                incoming = framing::read_packet(&mut reader) => incoming,
                _ = crate::ssh::stopped(&mut shutdown) => break,
            };
            let raw = match incoming {
                Ok(framing::Incoming::Packet(raw)) => raw,
                Ok(framing::Incoming::Closed) => break,
                Ok(framing::Incoming::Oversized { length, id }) => {
                    tracing::warn!(
                        user = %self.principal.user,
                        session = self.session_id,
                        length,
                        "packet over the {MAX_PACKET}-byte maximum; closing the session"
                    );
                    if let Some(id) = id {
                        let _ = replies.send(encode(ops::status(id, StatusCode::BadMessage, "packet too long"))).await;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(session = self.session_id, "sftp stream ended: {e}");
                    break;
                }
            };
            let Ok(permit) = inflight.clone().acquire_owned().await else { break };
            let mut body = raw.clone();
            let packet = match Packet::try_from(&mut body) {
                Ok(packet) => packet,
                Err(e) => {
                    // Framing is intact, so answer and go on.
                    let id = framing::raw_request_id(&raw).unwrap_or(0);
                    tracing::debug!(session = self.session_id, id, "undecodable packet: {e}");
                    let _ = replies.send(encode(ops::status(id, StatusCode::BadMessage, "malformed packet"))).await;
                    continue;
                }
            };
            let ticket = self.ticket_for(&packet);
            let this = self.clone();
            let replies = replies.clone();
            let span = tracing::info_span!(
                "sftp",
                user = %self.principal.user,
                session = self.session_id,
                op = tracing::field::Empty,
                path = tracing::field::Empty,
                bytes = tracing::field::Empty,
                result = tracing::field::Empty,
                micros = tracing::field::Empty,
            );
            tokio::spawn(
                async move {
                    let started = Instant::now();
                    if let Some(ticket) = &ticket {
                        ticket.wait_turn().await;
                    }
                    let reply = this.handle(packet, ticket.as_ref()).await;
                    let span = tracing::Span::current();
                    span.record("micros", started.elapsed().as_micros() as u64);
                    tracing::debug!("done");
                    drop(ticket);
                    let _ = replies.send(encode(reply)).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }

        // Let in-flight requests finish (bounded), then abort what was never closed.
        let all = self.settings.max_inflight as u32;
        let _ = tokio::time::timeout(self.settings.shutdown_grace, inflight.acquire_many(all)).await;
        self.abort_open_writers().await;
        drop(replies);
        let _ = writer_task.await;
    }

    /// Requests on an open handle are counted so CLOSE can wait for them.
    fn ticket_for(&self, packet: &Packet) -> Option<handles::InflightTicket> {
        let handle = match packet {
            Packet::Read(p) => &p.handle,
            Packet::Write(p) => return self.handles.get(&p.handle).map(|entry| entry.ticket(true)),
            Packet::Fstat(p) => &p.handle,
            Packet::FSetStat(p) => &p.handle,
            Packet::ReadDir(p) => &p.handle,
            // fsync covers the WRITEs sent before it: it takes its place in their order.
            Packet::Extended(p) if p.request == "fsync@openssh.com" => {
                let handle = framing::WireReader::new(&p.data).utf8()?;
                return self.handles.get(handle).map(|entry| entry.ticket(true));
            }
            _ => return None,
        };
        self.handles.get(handle).map(|entry| entry.ticket(false))
    }

    async fn abort_open_writers(&self) {
        for entry in self.handles.drain() {
            if let handles::HandleKind::Write(state) = &entry.kind {
                let state = state.lock().await;
                if let Err(e) = state.writer.abort().await {
                    tracing::debug!("abort of unfinished upload {}: {e}", entry.path);
                }
                tracing::info!(user = %self.principal.user, path = %entry.path, "unfinished upload aborted");
            }
        }
    }
}

fn encode(packet: Packet) -> Bytes {
    Bytes::try_from(packet).unwrap_or_else(|e| {
        tracing::error!("encoding a reply failed: {e}");
        Bytes::new()
    })
}

/// Writes replies in completion order; flushes when the queue runs dry.
async fn write_replies<W: AsyncWrite + Unpin>(mut writer: W, mut replies: mpsc::Receiver<Bytes>) {
    while let Some(reply) = replies.recv().await {
        if writer.write_all(&reply).await.is_err() {
            return;
        }
        while let Ok(more) = replies.try_recv() {
            if writer.write_all(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
