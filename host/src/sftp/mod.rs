//! Our SFTP v3 request loop. One task reads and decodes requests; requests
//! naming paths run one at a time in arrival order, up to `max_inflight`
//! requests on handles at once beside them, and each reply is written as
//! soon as it is ready (SFTP matches replies by id). Requests on one handle keep
//! their order where it matters (see `handles::Sequencing`): CLOSE takes the
//! handle away in arrival order and waits for the handle's earlier requests.

mod attrs;
mod budgets;
mod framing;
#[cfg(test)]
mod fuzz_tests;
mod handles;
mod in_service;
mod names;
mod ops;
mod paths;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;

use crate::auth::Principal;
use crate::vfs::Files;

pub use budgets::ConnectionBudgets;
pub use framing::{MAX_PACKET, MAX_READ, MAX_WRITE};
pub use in_service::InService;

/// SFTP payload one connection moved, for the operator's session list.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes of WRITE requests.
    pub bytes_in: std::sync::atomic::AtomicU64,
    /// Bytes of DATA replies.
    pub bytes_out: std::sync::atomic::AtomicU64,
}

/// Per-session settings of the SFTP layer.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    pub max_handles: usize,
    pub max_inflight: usize,
    /// How long in-flight requests may take once shutdown starts.
    pub shutdown_grace: Duration,
}

/// Everything one SFTP session works with.
pub struct SftpSession {
    pub(crate) principal: Principal,
    pub(crate) session_id: u64,
    pub(crate) files: Arc<Files>,
    pub(crate) settings: SftpSettings,
    pub(crate) handles: handles::HandleTable,
    /// Queue and reply budgets of the connection this session runs on.
    budgets: ConnectionBudgets,
    /// The connection's requests being served (its idle timer asks).
    in_service: InService,
    /// What the connection moved.
    pub(crate) traffic: Arc<Traffic>,
}

impl SftpSession {
    pub fn new(
        principal: Principal,
        session_id: u64,
        files: Files,
        settings: SftpSettings,
        budgets: ConnectionBudgets,
        in_service: InService,
        traffic: Arc<Traffic>,
    ) -> Arc<Self> {
        Arc::new(Self {
            principal,
            session_id,
            files: Arc::new(files),
            settings,
            handles: Default::default(),
            budgets,
            in_service,
            traffic,
        })
    }

    /// Serves SFTP on `stream` until the client leaves or `shutdown` turns true.
    ///
    /// Three stages, so that reading requests does not wait for replies to
    /// leave (see `budgets` for why that would deadlock under russh):
    /// 1. This loop reads and decodes requests, takes their places in the
    ///    orders they belong to, and queues them within the connection's
    ///    queue budget.
    /// 2. `dispatch` starts them in arrival order on their lanes (paths,
    ///    CLOSE, handles), each once its reply fits in the reply budget; a
    ///    request on a handle runs once it has its turn and one of
    ///    `max_inflight` slots is free.
    /// 3. `write_replies` sends replies and gives their budget back.
    pub async fn run<S>(self: Arc<Self>, stream: S, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(stream);
        let (replies, reply_rx) = mpsc::unbounded_channel::<Outgoing>();
        let mut writer_task = tokio::spawn(write_replies(writer, reply_rx));
        let (queue, queue_rx) = mpsc::unbounded_channel::<Request>();
        let dispatcher = tokio::spawn(self.clone().dispatch(queue_rx, replies.clone()));
        // A request refused before it is queued is answered at once; its
        // budget goes with the answer, so a client that floods bad requests
        // without reading replies still meets the bound.
        let answer = |packet: Packet, held: budgets::Queued| {
            let _ = replies.send(Outgoing { bytes: encode(packet), _held: Held::Queue(held.answered()) });
        };

        loop {
            let incoming = tokio::select! {
                incoming = framing::read_packet(&mut reader) => incoming,
                _ = stopped(&mut shutdown) => break,
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
                        let reply = ops::status(id, StatusCode::BadMessage, "packet too long");
                        let _ = replies.send(Outgoing { bytes: encode(reply), _held: Held::Nothing });
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(session = self.session_id, "sftp stream ended: {e}");
                    break;
                }
            };
            let queued = tokio::select! {
                queued = self.budgets.queue(raw.len() + QUEUE_OVERHEAD) => queued,
                _ = stopped(&mut shutdown) => break,
            };
            let queued = match queued {
                Ok(queued) => queued,
                Err(budgets::QueueRefusal::Full) => {
                    tracing::warn!(
                        user = %self.principal.user,
                        session = self.session_id,
                        "client keeps sending requests without reading replies; closing the session"
                    );
                    break;
                }
                Err(budgets::QueueRefusal::Closed) => break,
            };
            // Names that are not UTF-8 would be mangled by decoding; refuse them.
            if let Some(id) = names::non_utf8_name(&raw) {
                answer(ops::status(id, StatusCode::Failure, "file names must be valid UTF-8"), queued);
                continue;
            }
            let mut body = raw.clone();
            let packet = match Packet::try_from(&mut body) {
                Ok(packet) => packet,
                Err(e) => {
                    // Framing is intact, so answer and go on.
                    let id = framing::raw_request_id(&raw).unwrap_or(0);
                    tracing::debug!(session = self.session_id, id, "undecodable packet: {e}");
                    answer(ops::status(id, StatusCode::BadMessage, "malformed packet"), queued);
                    continue;
                }
            };
            let target = self.target_of(&packet);
            if queue.send(Request { packet, target, queued }).is_err() {
                break;
            }
        }

        // Let queued and in-flight requests finish (bounded), then abort what was never closed.
        drop(queue);
        if tokio::time::timeout(self.settings.shutdown_grace, dispatcher).await.is_err() {
            tracing::warn!(session = self.session_id, "requests still running at the end of the session");
        }
        self.abort_open_writers().await;
        drop(replies);
        // A client that reads nothing more must not keep this task forever.
        if tokio::time::timeout(self.settings.shutdown_grace, &mut writer_task).await.is_err() {
            writer_task.abort();
        }
    }

    /// Stage 2: starts queued requests in arrival order, each on its lane;
    /// returns once the queue is closed and every request has finished.
    ///
    /// - Requests naming paths run one at a time in arrival order, as on
    ///   `sftp-server` (MKDIR then OPEN inside it, pipelined), on one task of
    ///   their own: those waiting for their turn are queued requests (their
    ///   queue budget bounds them), not tasks, and take their reply budget
    ///   when their turn comes; the one running takes none of the
    ///   `max_inflight` slots. A RENAME waiting for a commit (see
    ///   `vfs::NodeTable::settle`) so never keeps the requests the commit
    ///   needs from starting.
    /// - CLOSE starts at once (at most one per open handle): the commit it
    ///   makes is what a path request may be waiting for.
    /// - Requests on handles wait for their turn on the handle, then for one
    ///   of `max_inflight` slots. Those waiting hold no slot; how many may
    ///   wait is bounded, and each waits only for requests on its handle,
    ///   which never wait for a path request.
    async fn dispatch(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Request>, replies: mpsc::UnboundedSender<Outgoing>) {
        let slots = Arc::new(Semaphore::new(self.settings.max_inflight));
        // Requests on handles started and not yet running, taken in arrival
        // order: the earliest unfinished request always has one, so this
        // bounds the tasks a pipelining client makes without blocking the
        // one whose turn it is.
        let waiting = Arc::new(Semaphore::new(self.settings.max_inflight * WAITING_PER_SLOT));
        // Each request's task holds a sender: all gone, all finished.
        let (running, mut all_done) = mpsc::channel::<()>(1);
        let (path_lane, path_requests) = mpsc::unbounded_channel::<Started>();
        tokio::spawn(self.clone().run_path_requests(path_requests, replies.clone(), running.clone()));
        while let Some(request) = queue.recv().await {
            let lane = request.lane();
            let started = Started::new(&self, request);
            if lane == Lane::Paths {
                let _ = path_lane.send(started);
                continue;
            }
            // Taken in arrival order: a READ answered after an earlier one
            // never holds budget that the earlier one waits for.
            let Some(budget) = self.budgets.reply(reply_charge(&started.request.packet)).await else { break };
            let (this, replies, running) = (self.clone(), replies.clone(), running.clone());
            if lane == Lane::Close {
                tokio::spawn(async move {
                    let _running = running;
                    this.serve(started, budget, None, &replies).await;
                });
                continue;
            }
            let Ok(waiting_place) = waiting.clone().acquire_owned().await else { break };
            let slots = slots.clone();
            tokio::spawn(async move {
                let _running = running;
                if let Some(ticket) = started.request.target.ticket() {
                    ticket.wait_run_turn().await;
                }
                let Ok(slot) = slots.acquire_owned().await else { return };
                drop(waiting_place);
                this.serve(started, budget, Some(slot), &replies).await;
            });
        }
        drop(path_lane);
        drop(running);
        let _ = all_done.recv().await;
    }

    /// The lane of requests naming paths: each in turn, in arrival order.
    async fn run_path_requests(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<Started>,
        replies: mpsc::UnboundedSender<Outgoing>,
        _running: mpsc::Sender<()>,
    ) {
        while let Some(started) = requests.recv().await {
            // No reply turn to wait for: any order of taking budget is safe.
            let Some(budget) = self.budgets.reply(reply_charge(&started.request.packet)).await else { return };
            self.serve(started, budget, None, &replies).await;
        }
    }

    /// Runs a request whose turn has come (holding `slot`, if its lane takes
    /// one) and queues its reply once earlier replies on its handle are out.
    async fn serve(
        &self,
        started: Started,
        budget: OwnedSemaphorePermit,
        slot: Option<OwnedSemaphorePermit>,
        replies: &mpsc::UnboundedSender<Outgoing>,
    ) {
        let Started { request: Request { packet, target, queued }, span, at } = started;
        async move {
            drop(queued);
            let serving = self.in_service.serving();
            let reply = self.handle(packet, &target).await;
            drop(serving);
            tracing::Span::current().record("micros", at.elapsed().as_micros() as u64);
            tracing::debug!("done");
            // The slot goes before the wait for the reply's turn: READs of a
            // download take slots in no particular order, and one holding a
            // slot while it waits for an earlier one that has none would
            // stall the download.
            drop(slot);
            // A request without a turn (a CLOSE) lets go of its handle before
            // it is answered: a client told its CLOSE is done may at once use
            // what the handle held (spool space, budget), on another
            // connection too.
            let target = target.ticket().is_some().then_some(target);
            if let Some(ticket) = target.as_ref().and_then(Target::ticket) {
                ticket.wait_reply_turn().await;
            }
            let _ = replies.send(Outgoing { bytes: encode(reply), _held: Held::Reply(budget) });
            drop(target);
        }
        .instrument(span)
        .await
    }

    /// The handle a request works on, matched when it is read off the wire:
    /// requests on an open handle are counted (CLOSE waits for them) and
    /// sequenced; a CLOSE takes the handle out of the table here, so a
    /// request sent after it finds no handle.
    fn target_of(&self, packet: &Packet) -> Target {
        use handles::Sequencing;
        let (name, is_read, is_fstat) = match packet {
            Packet::Close(p) => {
                let Some(entry) = self.handles.remove(&p.handle) else { return Target::None };
                if let Some(file) = entry.kind.file() {
                    file.closing();
                }
                return Target::Closing(entry);
            }
            Packet::Read(p) => (p.handle.as_str(), true, false),
            Packet::Write(p) => (p.handle.as_str(), false, false),
            Packet::Fstat(p) => (p.handle.as_str(), false, true),
            Packet::FSetStat(p) => (p.handle.as_str(), false, false),
            Packet::ReadDir(p) => (p.handle.as_str(), false, false),
            Packet::Extended(p) if p.request == "copy-data" => return self.copy_target(&p.data),
            // In order with the WRITEs before it, which it commits.
            Packet::Extended(p) if p.request == FSYNC => match framing::WireReader::new(&p.data).utf8() {
                Some(handle) => (handle, false, false),
                None => return Target::None,
            },
            _ => return Target::None,
        };
        let Some(entry) = self.handles.get(name) else { return Target::None };
        let file = entry.kind.file();
        if let Some(file) = file {
            announce_size(file, packet);
        }
        let read_only = file.is_some_and(|file| !file.writes());
        let sequencing = match (read_only, is_read, is_fstat) {
            // Downloads: reads run in parallel, answered in arrival order.
            (true, true, _) => Sequencing::Reply,
            (true, _, true) => Sequencing::Free,
            _ => Sequencing::Run,
        };
        Target::Open(entry.ticket(sequencing))
    }

    /// `copy-data` is ordered among the WRITEs of the handle it writes to,
    /// and holds the handle it reads from (counted, so a CLOSE of it
    /// pipelined behind the copy waits for it).
    fn copy_target(&self, data: &[u8]) -> Target {
        use handles::Sequencing;
        let mut args = framing::WireReader::new(data);
        let handles = (|| {
            let source = args.utf8()?;
            args.u64()?;
            args.u64()?;
            Some((source, args.utf8()?))
        })();
        let Some((source, destination)) = handles else { return Target::None };
        let (Some(source), Some(destination)) = (self.handles.get(source), self.handles.get(destination)) else {
            return Target::None;
        };
        Target::Copy { destination: destination.ticket(Sequencing::Run), source: source.ticket(Sequencing::Free) }
    }

    async fn abort_open_writers(&self) {
        for entry in self.handles.drain() {
            let Some(file) = entry.kind.file() else { continue };
            if let Some(result) = file.abort().await {
                if let Err(e) = result {
                    tracing::debug!("abort of unfinished upload {}: {e}", entry.path);
                }
                tracing::info!(user = %self.principal.user, path = %entry.path, "unfinished upload aborted");
            }
        }
    }
}

/// The extension that syncs an open file (see `vfs::Handle::sync`).
const FSYNC: &str = "fsync@openssh.com";

/// Requests that may wait for their turn, per `max_inflight` slot.
const WAITING_PER_SLOT: usize = 4;

/// What a queued request costs beyond its bytes (decoded form, places).
const QUEUE_OVERHEAD: usize = 160;

/// A request read off the wire, waiting to start.
struct Request {
    packet: Packet,
    target: Target,
    queued: budgets::Queued,
}

/// Where a request waits for its turn (see `SftpSession::dispatch`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Requests naming paths, one at a time.
    Paths,
    /// CLOSE, at once.
    Close,
    /// Requests on handles (and the few naming neither), within the slots.
    Handles,
}

impl Request {
    fn lane(&self) -> Lane {
        if matches!(self.target, Target::Closing(_)) {
            Lane::Close
        } else if is_path_request(&self.packet) {
            Lane::Paths
        } else {
            Lane::Handles
        }
    }
}

/// A request the dispatcher has started: its span is open, and it waits for
/// its turn on its lane.
struct Started {
    request: Request,
    span: tracing::Span,
    at: Instant,
}

impl Started {
    fn new(session: &SftpSession, request: Request) -> Self {
        let span = tracing::info_span!(
            "sftp",
            user = %session.principal.user,
            session = session.session_id,
            op = tracing::field::Empty,
            path = tracing::field::Empty,
            bytes = tracing::field::Empty,
            result = tracing::field::Empty,
            micros = tracing::field::Empty,
        );
        Self { request, span, at: Instant::now() }
    }
}

/// A reply, and the budget it holds until it is sent.
struct Outgoing {
    bytes: Bytes,
    _held: Held,
}

/// Budget a reply keeps until it is written (held only to be dropped then).
enum Held {
    Nothing,
    Reply(#[allow(dead_code)] OwnedSemaphorePermit),
    Queue(#[allow(dead_code)] budgets::Queued),
}

/// Resolves once `flag` turns true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// The most a request's reply can take.
fn reply_charge(packet: &Packet) -> u32 {
    match packet {
        Packet::Read(p) => p.len.min(MAX_READ) + 64,
        // READDIR_BATCH entries of a 255-byte name, a long name and attributes.
        Packet::ReadDir(_) => 64 * 1024,
        _ => 1024,
    }
}

/// What a request's handle resolved to when it was read off the wire.
pub(crate) enum Target {
    /// No handle, or not a handle request.
    None,
    /// An open handle, with the request's place in its order.
    Open(handles::InflightTicket),
    /// A CLOSE: the handle it took out of the table.
    Closing(Arc<handles::HandleEntry>),
    /// A `copy-data`: the handle written to (ordered) and the one read from.
    Copy { destination: handles::InflightTicket, source: handles::InflightTicket },
}

impl Target {
    /// The ticket that orders the request on its handle.
    fn ticket(&self) -> Option<&handles::InflightTicket> {
        match self {
            Target::Open(ticket) | Target::Copy { destination: ticket, .. } => Some(ticket),
            Target::None | Target::Closing(_) => None,
        }
    }
}

/// A WRITE or truncate on a file being written changes the size a STAT
/// shows as soon as it is read off the wire, as it would on `sftp-server`,
/// which runs one request at a time.
fn announce_size(file: &crate::vfs::Handle, packet: &Packet) {
    match packet {
        Packet::Write(p) if !p.data.is_empty() => file.announce_write(p.offset, p.data.len()),
        Packet::FSetStat(p) => {
            if let Some(size) = p.attrs.size {
                file.announce_size(size);
            }
        }
        _ => {}
    }
}

/// Requests that work on names rather than on an open handle's data.
fn is_path_request(packet: &Packet) -> bool {
    match packet {
        // CLOSE is ordered by its handle (it waits for the requests before it
        // on that handle); a path request that needs the file committed
        // waits for it in the file layer (see `vfs::NodeTable::settle`).
        Packet::Close(_) | Packet::Read(_) | Packet::Write(_) | Packet::Fstat(_) | Packet::FSetStat(_) | Packet::ReadDir(_) => {
            false
        }
        Packet::Extended(p) => !matches!(p.request.as_str(), "copy-data" | FSYNC | "limits@openssh.com"),
        _ => true,
    }
}

fn encode(packet: Packet) -> Bytes {
    Bytes::try_from(packet).unwrap_or_else(|e| {
        tracing::error!("encoding a reply failed: {e}");
        Bytes::new()
    })
}

/// Writes replies in completion order; flushes when the queue runs dry.
/// Each reply's budget is given back once it is written.
async fn write_replies<W: AsyncWrite + Unpin>(mut writer: W, mut replies: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(reply) = replies.recv().await {
        if writer.write_all(&reply.bytes).await.is_err() {
            return;
        }
        // Its budget goes back now that it is written.
        drop(reply);
        while let Ok(more) = replies.try_recv() {
            if writer.write_all(&more.bytes).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
