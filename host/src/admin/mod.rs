//! The admin HTTP API: health, Prometheus metrics, plugin versions (reload,
//! rollback, upload) and sessions (list, close). Off unless `[admin] listen`
//! is set; loopback only unless opted out; every route but the health
//! checks wants the bearer token. `client` is the `wasftp admin` CLI over it.

pub mod client;
mod gauges;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use sha2::Digest as _;
use tokio::net::TcpListener;

use crate::live::{ReloadError, ReloadFrom};
use crate::ssh::Shared;

/// The environment variable the token is taken from when the config has none.
pub const TOKEN_ENV: &str = "WASFTP_ADMIN_TOKEN";
/// A shorter token is refused at start: it could be guessed.
const MIN_TOKEN_LEN: usize = 16;

/// The token a server with an admin listener requires: the config's, else
/// the environment's.
pub fn token(configured: Option<&str>) -> anyhow::Result<String> {
    let token = match configured {
        Some(token) => token.to_string(),
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!("the admin API needs a token: set admin.token in the config or {TOKEN_ENV} in the environment")
        })?,
    };
    anyhow::ensure!(
        token.chars().count() >= MIN_TOKEN_LEN && !token.chars().any(char::is_whitespace),
        "the admin token must be at least {MIN_TOKEN_LEN} characters, without spaces"
    );
    Ok(token)
}

struct Admin {
    shared: Arc<Shared>,
    /// SHA-256 of the token: compared digest to digest, so the comparison
    /// tells nothing about how much of a guess was right.
    token_digest: [u8; 32],
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    refusals: RefusalLog,
}

/// Wrong tokens are counted; one line at most every ten seconds says how many.
#[derive(Default)]
struct RefusalLog {
    unlogged: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, path: &str) {
        metrics::counter!("wasftp_admin_unauthorized_total").increment(1);
        let mut last = self.last.lock().expect("refusal log lock");
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(%peer, path, unlogged_since_last = unlogged, "admin request refused: missing or wrong token");
    }
}

/// Serves the admin API on `listener` until the server shuts down.
pub fn spawn(listener: TcpListener, shared: Arc<Shared>, token: &str) -> tokio::task::JoinHandle<()> {
    let prometheus = crate::telemetry::prometheus();
    if prometheus.is_none() {
        tracing::warn!("another metrics recorder is installed in this process: /metrics is not served");
    }
    let max_upload = shared.versions.all().iter().map(|slot| slot.config().max_component_mib << 20).max().unwrap_or(0) + 1;
    let admin = Arc::new(Admin {
        shared: shared.clone(),
        token_digest: sha2::Sha256::digest(token.as_bytes()).into(),
        prometheus,
        refusals: RefusalLog::default(),
    });
    let guarded = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", axum::routing::put(upload).layer(DefaultBodyLimit::max(max_upload)))
        .route("/plugins/{name}/reload", post(reload))
        .route("/plugins/{name}/rollback", post(rollback))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}", delete(close_session))
        .route_layer(axum::middleware::from_fn_with_state(admin.clone(), authorized));
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(guarded)
        .with_state(admin.clone());
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        if let Some(handle) = &admin.prometheus {
            let handle = handle.clone();
            let mut stopping = admin.shared.shutdown.clone();
            // Histograms hold samples until the next upkeep.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                        () = crate::ssh::stopped(&mut stopping) => return,
                    }
                }
            });
        }
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { crate::ssh::stopped(&mut shutdown).await })
            .await;
        if let Err(e) = served {
            tracing::warn!("admin API stopped: {e}");
        }
    })
}

async fn authorized(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| <[u8; 32]>::from(sha2::Sha256::digest(token.trim().as_bytes())));
    if offered != Some(admin.token_digest) {
        admin.refusals.refused(peer, request.uri().path());
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or wrong bearer token\n")
            .into_response();
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": message.to_string() }))).into_response()
}

/// Ready while serving: host keys loaded and every plugin admitted (the
/// server does not start otherwise); not once shutting down.
async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    if *admin.shared.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let Some(prometheus) = &admin.prometheus else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed in this process");
    };
    gauges::record(&admin.shared);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus.render()).into_response()
}

async fn plugins(State(admin): State<Arc<Admin>>) -> Response {
    Json(admin.shared.versions.all().iter().map(|slot| slot.summary()).collect::<Vec<_>>()).into_response()
}

fn reload_answer(result: Result<crate::live::ReloadReport, ReloadError>) -> Response {
    match result {
        Ok(report) => Json(report).into_response(),
        Err(e @ ReloadError::NoSuchPlugin(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ ReloadError::NoPrevious(_)) => error(StatusCode::CONFLICT, e),
        Err(e @ ReloadError::Refused(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn reload(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    reload_answer(admin.shared.versions.reload(&name, ReloadFrom::Configured, "admin").await)
}

async fn rollback(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    reload_answer(admin.shared.versions.reload(&name, ReloadFrom::Previous, "rollback").await)
}

/// A component sent in the body, admitted like any other.
async fn upload(State(admin): State<Arc<Admin>>, Path(name): Path<String>, body: Bytes) -> Response {
    reload_answer(admin.shared.versions.reload(&name, ReloadFrom::Upload(body.to_vec()), "upload").await)
}

async fn sessions(State(admin): State<Arc<Admin>>) -> Response {
    Json(admin.shared.sessions.list()).into_response()
}

async fn close_session(State(admin): State<Arc<Admin>>, Path(id): Path<u64>) -> Response {
    if admin.shared.sessions.close(id, "closed by the administrator") {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no session {id}"))
    }
}
