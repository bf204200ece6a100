//! Where a plugin's granted `wasi:http` requests go. Each plugin version has
//! one pool of connections, so requests reuse them: on a TLS endpoint a
//! handshake per request would cost more than most S3 requests do. A
//! connection is made only to an address checked against the grant, so a
//! name whose DNS answer changes after the check (rebinding) gains nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use super::guest_output::HostWarnings;

use super::RuntimeStats;
use super::grants::{self, HttpLimits, Origin, Unreachable};

/// Idle connections are closed after this; S3 servers close theirs after
/// about 20 s, and a pool that outlives them meets closed connections.
const IDLE: Duration = Duration::from_secs(15);
/// Idle connections kept per origin.
const MAX_IDLE: usize = 32;
/// The longest a connection may take to be made.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The requests of one plugin version: the origins it may reach, and its
/// connection pool.
pub struct Outbound {
    plugin: Arc<str>,
    allow: Vec<Origin>,
    limits: HttpLimits,
    /// Requests in flight, the plugin's and each tenant's.
    in_flight: Arc<tokio::sync::Semaphore>,
    by_tenant: std::sync::Mutex<std::collections::HashMap<Arc<str>, std::sync::Weak<tokio::sync::Semaphore>>>,
    /// The host's own work (orphan aborts, `maintain`, the load's probe):
    /// places of its own, outside the plugin's and every tenant's, so
    /// tenants at their caps cannot make the cleanup of a lost upload fail.
    host_work: Arc<tokio::sync::Semaphore>,
    stats: Arc<RuntimeStats>,
    client: Client<Connector, WasiBody>,
}

/// A request's places under its plugin's and its tenant's caps, held until
/// its response is read to its end or dropped.
struct InFlight {
    _plugin: Option<tokio::sync::OwnedSemaphorePermit>,
    _tenant: tokio::sync::OwnedSemaphorePermit,
}

/// Requests in flight of the host's own work at once, per plugin.
pub const HOST_WORK_REQUESTS: usize = 16;

/// Whose places a store's requests take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A tenant's sessions: its cap and the plugin's.
    Tenant,
    /// The host's own work: only [`HOST_WORK_REQUESTS`] of its own.
    HostWork,
}

impl Outbound {
    pub fn new(plugin: Arc<str>, allow: Vec<Origin>, limits: HttpLimits, stats: Arc<RuntimeStats>) -> Arc<Self> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() })
            .with_no_client_auth();
        let connector = Connector { tls: Arc::new(tls), lookups: Arc::new(tokio::sync::Semaphore::new(grants::LOOKUPS_PER_PLUGIN)) };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(MAX_IDLE)
            .build(connector);
        Arc::new(Self {
            plugin,
            allow,
            in_flight: Arc::new(tokio::sync::Semaphore::new(limits.requests)),
            limits,
            host_work: Arc::new(tokio::sync::Semaphore::new(HOST_WORK_REQUESTS)),
            by_tenant: Default::default(),
            stats,
            client,
        })
    }

    /// The cap `tenant`'s requests share, kept while one of its stores lives.
    fn tenant_cap(&self, tenant: &str) -> Arc<tokio::sync::Semaphore> {
        let mut caps = self.by_tenant.lock().expect("tenant request caps lock");
        if let Some(cap) = caps.get(tenant).and_then(std::sync::Weak::upgrade) {
            return cap;
        }
        caps.retain(|_, cap| cap.strong_count() > 0);
        let own = self.limits.requests_by_tenant.get(tenant).copied();
        let cap = Arc::new(tokio::sync::Semaphore::new(own.unwrap_or(self.limits.requests_per_tenant)));
        caps.insert(tenant.into(), Arc::downgrade(&cap));
        cap
    }

    /// Places for one more request, or the error the guest gets.
    fn admit(&self, tenant: &Arc<tokio::sync::Semaphore>) -> Result<InFlight, Error> {
        let (Ok(tenant), Ok(plugin)) = (tenant.clone().try_acquire_owned(), self.in_flight.clone().try_acquire_owned())
        else {
            // Counted, and logged at debug only: a refusal costs the guest
            // a microsecond, so a warning each would flood the log.
            self.stats.http_refused_busy.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                plugin = &*self.plugin,
                "outgoing request refused: {} in flight for the tenant or {} for the plugin already",
                self.limits.requests_per_tenant,
                self.limits.requests
            );
            return Err(Error::ConnectionLimitReached);
        };
        Ok(InFlight { _plugin: Some(plugin), _tenant: tenant })
    }

    fn deny(&self, why: &str, warnings: &HostWarnings) -> Error {
        self.stats.http_denied.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("wasftp_plugin_http_denied_total", "plugin" => self.plugin.to_string()).increment(1);
        warnings.warn(format_args!("outgoing request refused: {why}"));
        Error::HttpRequestDenied
    }

    /// Sends `request` if its origin is granted; any other is answered
    /// `HttpRequestDenied` (an error the guest sees, not a trap). A request
    /// safe to repeat (see [`repeatable`]) that meets a pooled connection
    /// closed under it (the server dropped it while idle) is sent once
    /// more, on a new one.
    async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        warnings: &HostWarnings,
    ) -> Result<http::Response<WasiBody>, Error> {
        if let Err(why) = grants::check_origin(&self.allow, request.uri()) {
            return Err(self.deny(&why, warnings));
        }
        let max_body = self.limits.body_bytes;
        let declared = request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body) {
            return Err(Error::HttpRequestBodySize(declared));
        }
        let request = request.map(|body| CountedBody::new(body, max_body, Error::HttpRequestBodySize(Some(max_body))).boxed_unsync());
        // The guest may ask for less time, never for more.
        let option = |pick: fn(&RequestOptions) -> Option<Duration>, cap: Duration| {
            options.as_ref().and_then(pick).map_or(cap, |asked| asked.min(cap))
        };
        let timeouts = Timeouts {
            connect: option(|o| o.connect_timeout, CONNECT_LIMIT),
            first_byte: option(|o| o.first_byte_timeout, self.limits.timeout),
            between_bytes: option(|o| o.between_bytes_timeout, self.limits.timeout),
        };
        let again = repeatable(&request).then(|| bodiless_copy(&request));
        let method = method_label(request.method());
        let sent = match self.send_once(request, &timeouts, warnings).await {
            Ok(response) => Ok(response),
            Err((error, stale)) => match again {
                Some(request) if stale => self.send_once(request, &timeouts, warnings).await.map_err(|(error, _)| error),
                _ => Err(error),
            },
        };
        let status = match &sent {
            Ok(response) => response.status().as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        metrics::counter!("wasftp_plugin_http_requests_total", "plugin" => self.plugin.to_string(), "method" => method, "status" => status)
            .increment(1);
        sent
    }

    /// One try; an error says whether it met a pooled connection that was
    /// closed under it.
    async fn send_once(
        &self,
        request: http::Request<WasiBody>,
        timeouts: &Timeouts,
        warnings: &HostWarnings,
    ) -> Result<http::Response<WasiBody>, (Error, bool)> {
        let attempt = Arc::new(ConnectAttempt::new(timeouts.connect));
        let request = CONNECT_ATTEMPT.scope(attempt.clone(), self.client.request(request));
        let mut request = std::pin::pin!(request);
        let started = tokio::time::Instant::now();
        let response = loop {
            let deadline = attempt.head_deadline(started, timeouts.first_byte);
            tokio::select! {
                response = &mut request => break response,
                () = tokio::time::sleep_until(deadline) => {
                    if attempt.head_deadline(started, timeouts.first_byte) <= tokio::time::Instant::now() {
                        return Err((Error::ConnectionReadTimeout, false));
                    }
                }
                () = attempt.connected.notified() => {}
            }
        };
        let pooled = !attempt.started.load(Ordering::Relaxed);
        let response = response.map_err(|e| {
            let error = self.request_error(&e, warnings);
            // The server had closed the connection: sent again, the
            // request goes out on a new one.
            let stale = pooled && matches!(error, Error::ConnectionTerminated);
            (error, stale)
        })?;
        let max_body = self.limits.body_bytes;
        Ok(response.map(|body| {
            let timed = TimedBody::new(body, timeouts.between_bytes);
            CountedBody::new(timed.boxed_unsync(), max_body, Error::HttpResponseBodySize(Some(max_body))).boxed_unsync()
        }))
    }

        /// The guest's error for a failed request.
    fn request_error(&self, e: &hyper_util::client::legacy::Error, warnings: &HostWarnings) -> Error {
        // A request body past its bound, as hyper reports it (under its own error).
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(error) = source {
            if let Some(Error::HttpRequestBodySize(size)) = error.downcast_ref::<Error>() {
                return Error::HttpRequestBodySize(*size);
            }
            source = error.source();
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(error) = source {
            if let Some(unreachable) = error.downcast_ref::<NoAddress>() {
                return match &unreachable.0 {
                    Unreachable::Reserved(why) => self.deny(why, warnings),
                    Unreachable::Lookup(why) => {
                        warnings.warn(format_args!("outgoing request: {why}"));
                        Error::DnsError { rcode: None, info_code: None }
                    }
                };
            }
            if let Some(io) = error.downcast_ref::<io::Error>() {
                use io::ErrorKind::*;
                return match io.kind() {
                    TimedOut => Error::ConnectionTimeout,
                    ConnectionRefused => Error::ConnectionRefused,
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Error::ConnectionTerminated,
                    _ => Error::Connect(io::Error::new(io.kind(), io.to_string())),
                };
            }
            if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
                return if hyper.is_timeout() {
                    Error::HttpResponseTimeout
                } else if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                    Error::ConnectionTerminated
                } else {
                    Error::HttpProtocolError
                };
            }
            source = error.source();
        }
        Error::Connect(io::Error::other(e.to_string()))
    }
}

/// The `wasi:http` state of one store.
pub struct HttpState {
    pub ctx: WasiHttpCtx,
    pub hooks: HttpHooks,
}

impl HttpState {
    /// The state of a store of `tenant`'s.
    pub fn new(outbound: Arc<Outbound>, tenant: &str, requester: Requester, warnings: HostWarnings) -> Self {
        let tenant_cap = match requester {
            Requester::Tenant => outbound.tenant_cap(tenant),
            Requester::HostWork => outbound.host_work.clone(),
        };
        Self { ctx: WasiHttpCtx::new(), hooks: HttpHooks { outbound, tenant_cap, requester, warnings } }
    }
}

pub struct HttpHooks {
    outbound: Arc<Outbound>,
    tenant_cap: Arc<tokio::sync::Semaphore>,
    requester: Requester,
    warnings: HostWarnings,
}

type Response = http::Response<WasiBody>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(Response, IoFuture), Error>> + Send> {
        drop(fut);
        let outbound = self.outbound.clone();
        // Counted when sent, not when awaited: a guest that starts
        // requests and never looks at them holds its places all the same.
        // A tenant's request is refused at once past its caps; the host's
        // own work waits for one of its places (within its call's limit).
        let admitted = match self.requester {
            Requester::Tenant => Ok(outbound.admit(&self.tenant_cap)),
            Requester::HostWork => Err(self.tenant_cap.clone()),
        };
        let warnings = self.warnings.clone();
        Box::new(async move {
            let in_flight = match admitted {
                Ok(admitted) => admitted?,
                Err(places) => InFlight {
                    _plugin: None,
                    _tenant: places.acquire_owned().await.map_err(|_| Error::ConnectionLimitReached)?,
                },
            };
            let response = outbound.send(request, options, &warnings).await?;
            let response = response.map(|body| HeldBody { body, _in_flight: in_flight }.boxed_unsync());
            // The pool drives the connection; nothing is left to wait for.
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// The connection a request makes when the pool has none for it: the
/// guest's connect timeout, and when it was made.
struct ConnectAttempt {
    timeout: Duration,
    /// Set when the connector starts (a pooled connection needs none).
    started: AtomicBool,
    made_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    connected: tokio::sync::Notify,
}

impl ConnectAttempt {
    fn new(timeout: Duration) -> Self {
        Self { timeout, started: AtomicBool::new(false), made_at: std::sync::Mutex::new(None), connected: tokio::sync::Notify::new() }
    }

    fn made(&self) {
        *self.made_at.lock().expect("connect attempt lock") = Some(tokio::time::Instant::now());
        self.connected.notify_one();
    }

    /// When the response's head must have come: `first_byte` after the
    /// request went out on a connection, which may first take as long as
    /// the connect timeout to be made.
    fn head_deadline(&self, started: tokio::time::Instant, first_byte: Duration) -> tokio::time::Instant {
        let made_at = *self.made_at.lock().expect("connect attempt lock");
        match made_at {
            Some(at) => at + first_byte,
            None if self.started.load(Ordering::Relaxed) => started + self.timeout + first_byte,
            None => started + first_byte,
        }
    }
}

tokio::task_local! {
    /// Set around a request, so the connector (called from within it) knows.
    static CONNECT_ATTEMPT: Arc<ConnectAttempt>;
}

/// An origin whose addresses cannot be used (`grants::resolve`).
#[derive(Debug)]
struct NoAddress(Unreachable);

impl std::fmt::Display for NoAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Unreachable::Reserved(why) | Unreachable::Lookup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for NoAddress {}

/// The guest's timeouts for one request.
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

/// Whether `request` may go again after meeting a connection closed under
/// it. The server may have read it and acted on it before closing, so only
/// a request that changes nothing more when repeated: no body to replay,
/// and a method that is safe or idempotent (RFC 9110). Never a POST, even
/// without a body (S3's CreateMultipartUpload would start a second upload),
/// nor a PUT with If-None-Match (an exclusive create, which the object its
/// first try made would refuse).
fn repeatable(request: &http::Request<WasiBody>) -> bool {
    use http::Method;
    let method = request.method();
    let idempotent = [Method::GET, Method::HEAD, Method::OPTIONS, Method::DELETE, Method::PUT].contains(method);
    let conditional_create = method == Method::PUT && request.headers().contains_key(http::header::IF_NONE_MATCH);
    idempotent && !conditional_create && request.body().is_end_stream()
}

/// `request` again, for a request without a body.
fn bodiless_copy(request: &http::Request<WasiBody>) -> http::Request<WasiBody> {
    let mut copy = http::Request::new(http_body_util::Empty::new().map_err(Error::from).boxed_unsync());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Makes the pool's connections: to the checked addresses of an origin,
/// over TLS for https.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    /// Name lookups of this plugin's new connections running at once.
    lookups: Arc<tokio::sync::Semaphore>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, lookups) = (self.tls.clone(), self.lookups.clone());
        let attempt = CONNECT_ATTEMPT
            .try_with(|attempt| {
                attempt.started.store(true, Ordering::Relaxed);
                attempt.clone()
            })
            .ok();
        let limit = attempt.as_ref().map_or(CONNECT_LIMIT, |a| a.timeout.min(CONNECT_LIMIT));
        Box::pin(async move {
            let origin = Origin::of(&uri).ok_or_else(|| io::Error::other(format!("{uri} is not an http(s) origin")))?;
            let stream = tokio::time::timeout(limit, connect(&origin, tls, &lookups))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {origin}")))??;
            if let Some(attempt) = attempt {
                attempt.made();
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// A new connection to `origin`'s checked addresses, over TLS for https.
async fn connect(origin: &Origin, tls: Arc<rustls::ClientConfig>, lookups: &Arc<tokio::sync::Semaphore>) -> Result<Stream, BoxError> {
    let addresses = grants::resolve(origin, lookups).await.map_err(NoAddress)?;
    let tcp = connect_any(&addresses).await?;
    tcp.set_nodelay(true)?;
    quick_ack(&tcp);
    if !origin.https() {
        return Ok(Stream::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(origin.host().to_string())?;
    let tls = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// The first of `addresses` that takes the connection.
async fn connect_any(addresses: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One pooled connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Acknowledges what arrives next at once. On a reused connection Linux
/// delays its ACKs (up to 40 ms) expecting to send them with the next
/// request; a server that writes a response's head and body apart (garage
/// does, under Nagle) waits for that ACK before the body, so every small
/// response would take 40 ms. Set after every write of a request, as the
/// flag does not last; the response's head, which the body waits behind,
/// comes after one. Reads need none: without it there, small downloads
/// from garage kept their pace (about 300 files/s), a syscall a read less.
fn quick_ack(tcp: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_quickack(tcp, true);
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match this {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        };
        if written.is_ready() {
            quick_ack(this.tcp());
        }
        written
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match this {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        };
        if written.is_ready() {
            quick_ack(this.tcp());
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A response body holding its request's places (`InFlight`) until it is
/// read to its end or dropped.
struct HeldBody {
    body: WasiBody,
    _in_flight: InFlight,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A body that fails with `too_large` once more than `max` bytes passed.
struct CountedBody {
    body: WasiBody,
    left: u64,
    too_large: Option<Error>,
}

impl CountedBody {
    fn new(body: WasiBody, max: u64, too_large: Error) -> Self {
        Self { body, left: max, too_large: Some(too_large) }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.too_large.is_none() {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            match this.left.checked_sub(data.len() as u64) {
                Some(left) => this.left = left,
                // Once: the body ends with the error.
                None => return Poll::Ready(this.too_large.take().map(Err)),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.too_large.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that fails when the next bytes take longer than the
/// guest's between-bytes timeout.
struct TimedBody {
    body: Incoming,
    between_bytes: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(body: Incoming, between_bytes: Duration) -> Self {
        Self { body, between_bytes, deadline: Box::pin(tokio::time::sleep(between_bytes)) }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.between_bytes;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() { Error::HttpResponseTimeout } else { Error::from(e) }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request's method as a metric label: the standard ones by name, any
/// other a plugin makes up as `other` (labels stay few).
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    let known = [Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS];
    let names = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
    known.iter().position(|m| m == method).map_or("other", |i| names[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, body: &'static [u8]) -> http::Request<WasiBody> {
        // An empty `Full` is at its end from the start, as a body never written.
        let body = http_body_util::Full::new(Bytes::from_static(body)).map_err(|never| match never {}).boxed_unsync();
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        request
    }

    #[test]
    fn only_requests_safe_to_repeat_go_again() {
        use http::Method;
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::DELETE, Method::PUT] {
            assert!(repeatable(&request(method.clone(), b"")), "{method} without a body");
        }
        assert!(!repeatable(&request(Method::POST, b"")), "a POST, even without a body");
        assert!(!repeatable(&request(Method::PATCH, b"")));
        assert!(!repeatable(&request(Method::PUT, b"part")), "a body cannot be sent again");
        let mut exclusive = request(Method::PUT, b"");
        exclusive.headers_mut().insert(http::header::IF_NONE_MATCH, http::HeaderValue::from_static("*"));
        assert!(!repeatable(&exclusive), "an exclusive create");
    }
}

