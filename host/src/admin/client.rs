//! `wasftp admin`: the admin API from a shell. Answers are printed as
//! tables; a refusal is the error the server gave.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::live::{PluginSummary, ReloadReport};

pub use http::Method;
use crate::ssh::sessions::SessionInfo;

/// Where the CLI finds the API when not told.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9180";

pub struct AdminClient {
    base: String,
    token: String,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// What a CLI command asks for.
pub enum AdminCommand {
    Plugins,
    Reload(String),
    Rollback(String),
    Upload(String, std::path::PathBuf),
    Sessions,
    Close(u64),
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            base.starts_with("http://"),
            "the admin API speaks plain HTTP: give its address as http://HOST:PORT (a TLS proxy in front of it is reached the same way by its own clients)"
        );
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    async fn call(&self, method: http::Method, path: &str, body: Vec<u8>) -> anyhow::Result<(http::StatusCode, Vec<u8>)> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::from(body)))?;
        let response = self.http.request(request).await.map_err(|e| anyhow::anyhow!("reaching {}: {e}", self.base))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }

    /// The answer's JSON, or the server's refusal as an error.
    async fn json<T: serde::de::DeserializeOwned>(&self, method: http::Method, path: &str, body: Vec<u8>) -> anyhow::Result<T> {
        let (status, body) = self.call(method, path, body).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            anyhow::bail!("{status}: {why}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    pub async fn plugins(&self) -> anyhow::Result<Vec<PluginSummary>> {
        self.json(http::Method::GET, "/plugins", Vec::new()).await
    }

    pub async fn sessions(&self) -> anyhow::Result<Vec<SessionInfo>> {
        self.json(http::Method::GET, "/sessions", Vec::new()).await
    }

    /// A plugin name as one path segment (names are config table keys).
    fn plugin_path(name: &str, rest: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{name:?} is not a plugin name (letters, digits, '-', '_', '.')"
        );
        Ok(format!("/plugins/{name}{rest}"))
    }

    pub async fn reload(&self, name: &str) -> anyhow::Result<ReloadReport> {
        self.json(http::Method::POST, &Self::plugin_path(name, "/reload")?, Vec::new()).await
    }

    pub async fn rollback(&self, name: &str) -> anyhow::Result<ReloadReport> {
        self.json(http::Method::POST, &Self::plugin_path(name, "/rollback")?, Vec::new()).await
    }

    pub async fn upload(&self, name: &str, component: Vec<u8>) -> anyhow::Result<ReloadReport> {
        self.json(http::Method::PUT, &Self::plugin_path(name, "")?, component).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = self.call(http::Method::GET, "/metrics", Vec::new()).await?;
        anyhow::ensure!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body).trim());
        Ok(String::from_utf8(body)?)
    }

    /// Only the status of a request (for `/healthz`, refusals).
    pub async fn status(&self, method: http::Method, path: &str) -> anyhow::Result<http::StatusCode> {
        Ok(self.call(method, path, Vec::new()).await?.0)
    }

    /// Runs one command and returns what to print.
    pub async fn run(&self, command: AdminCommand) -> anyhow::Result<String> {
        Ok(match command {
            AdminCommand::Plugins => plugins_table(&self.plugins().await?),
            AdminCommand::Sessions => sessions_table(&self.sessions().await?),
            AdminCommand::Reload(name) => report(&self.reload(&name).await?),
            AdminCommand::Rollback(name) => report(&self.rollback(&name).await?),
            AdminCommand::Upload(name, file) => {
                let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
                report(&self.upload(&name, bytes).await?)
            }
            AdminCommand::Close(id) => {
                let (status, body) = self.call(http::Method::DELETE, &format!("/sessions/{id}"), Vec::new()).await?;
                anyhow::ensure!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body).trim());
                format!("session {id} is closing\n")
            }
        })
    }
}

fn report(report: &ReloadReport) -> String {
    format!("{}: {} ({} ms)\n", report.result, report.message, report.took_ms)
}

fn plugins_table(plugins: &[PluginSummary]) -> String {
    let mut out = format!("{:<12} {:>4} {:<20} {:<12} {:>8} {:>8} {:>9}  {}\n", "PLUGIN", "NO.", "VERSION", "HASH", "SESSIONS", "TENANTS", "DRAINING", "LAST RELOAD");
    for plugin in plugins {
        let current = &plugin.current;
        let draining: usize = plugin.draining.iter().map(|v| v.sessions).sum();
        let last = plugin.last_reload.as_ref().map_or("-".to_string(), |r| format!("{} ({})", r.result, r.trigger));
        out.push_str(&format!(
            "{:<12} {:>4} {:<20} {:<12} {:>8} {:>8} {:>9}  {}\n",
            plugin.name,
            current.number,
            format!("{} {}", current.backend, current.version),
            &current.hash[..current.hash.len().min(12)],
            current.sessions,
            current.tenants,
            draining,
            last
        ));
    }
    out
}

fn sessions_table(sessions: &[SessionInfo]) -> String {
    let mut out = format!("{:>6} {:<16} {:<16} {:<22} {:>12} {:>12}  {}\n", "ID", "USER", "TENANT", "PEER", "BYTES IN", "BYTES OUT", "PLUGIN VERSIONS");
    for s in sessions {
        let versions: Vec<String> = s.plugin_versions.iter().map(|n| format!("{}#{n}", s.plugin)).collect();
        out.push_str(&format!(
            "{:>6} {:<16} {:<16} {:<22} {:>12} {:>12}  {}\n",
            s.id,
            s.user,
            s.tenant,
            s.peer,
            s.bytes_in,
            s.bytes_out,
            versions.join(" ")
        ));
    }
    out
}
