//! A small fault-injecting HTTP proxy in front of the test S3 server: a test
//! tool, not the thing under test. Each request is read whole, matched
//! against the faults set, and either answered with an error, left hanging,
//! or forwarded on a connection of its own (`Connection: close`). It counts
//! the request body bytes it forwards, by kind of request.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What kind of S3 request, from its method and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    PutObject,
    UploadPart,
    UploadPartCopy,
    CreateMultipart,
    CompleteMultipart,
    AbortMultipart,
    Get,
    Head,
    List,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer this HTTP status (with an S3 error body) instead of forwarding.
    Status(u16),
    /// Never answer.
    Hang,
    /// Close the connection without an answer (the server is down).
    Drop,
}

struct Rule {
    kind: Option<Kind>,
    fault: Fault,
    /// How many more requests it applies to.
    times: usize,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    body_bytes: HashMap<Kind, u64>,
    seen: HashMap<Kind, u64>,
    /// The head (request line and headers, lower case) of every request.
    heads: Vec<(Kind, String)>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub endpoint: String,
    shared: Arc<Mutex<Shared>>,
}

impl FaultProxy {
    /// A proxy on a loopback port forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), state.clone()));
            }
        });
        FaultProxy { endpoint, shared }
    }

    /// The next `times` requests of `kind` (any kind: `None`) get `fault`.
    pub fn inject(&self, kind: Option<Kind>, fault: Fault, times: usize) {
        self.shared.lock().unwrap().rules.push(Rule { kind, fault, times });
    }

    pub fn clear(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// Request body bytes forwarded for requests of `kind`.
    pub fn body_bytes(&self, kind: Kind) -> u64 {
        self.shared.lock().unwrap().body_bytes.get(&kind).copied().unwrap_or(0)
    }

    /// Requests of `kind` seen (forwarded or not).
    pub fn seen(&self, kind: Kind) -> u64 {
        self.shared.lock().unwrap().seen.get(&kind).copied().unwrap_or(0)
    }

    /// The heads (request line and headers, lower case) of the requests of
    /// `kind` seen so far.
    pub fn heads(&self, kind: Kind) -> Vec<String> {
        self.shared.lock().unwrap().heads.iter().filter(|(k, _)| *k == kind).map(|(_, head)| head.clone()).collect()
    }
}

fn kind_of(method: &str, target: &str, headers: &str) -> Kind {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let has = |name: &str| query.split('&').any(|p| p == name || p.starts_with(&format!("{name}=")));
    match method {
        "PUT" if has("partNumber") && headers.contains("x-amz-copy-source:") => Kind::UploadPartCopy,
        "PUT" if has("partNumber") => Kind::UploadPart,
        "PUT" => Kind::PutObject,
        "POST" if has("uploads") => Kind::CreateMultipart,
        "POST" if has("uploadId") => Kind::CompleteMultipart,
        "DELETE" if has("uploadId") => Kind::AbortMultipart,
        "GET" if has("list-type") || has("uploads") || target.trim_end_matches('/').matches('/').count() <= 1 => Kind::List,
        "GET" => Kind::Get,
        "HEAD" => Kind::Head,
        _ => Kind::Other,
    }
}

/// One request per connection: answered with a fault, or forwarded and
/// the connection closed after the answer.
async fn serve(mut client: TcpStream, upstream: String, shared: Arc<Mutex<Shared>>) {
    let Some((head, body)) = read_request(&mut client).await else { return };
    let head_text = String::from_utf8_lossy(&head).to_string();
    let mut first = head_text.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let lower = head_text.to_ascii_lowercase();
    let kind = kind_of(method, target, &lower);
    let fault = {
        let mut shared = shared.lock().unwrap();
        *shared.seen.entry(kind).or_default() += 1;
        shared.heads.push((kind, lower));
        let rule = shared.rules.iter_mut().find(|r| r.times > 0 && r.kind.is_none_or(|k| k == kind));
        rule.map(|r| {
            r.times -= 1;
            r.fault
        })
    };
    match fault {
        Some(Fault::Status(code)) => {
            let body = format!("<?xml version=\"1.0\"?><Error><Code>Injected{code}</Code><Message>injected by the test</Message></Error>");
            let reply = format!(
                "HTTP/1.1 {code} Injected\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(reply.as_bytes()).await;
            return;
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            return;
        }
        Some(Fault::Drop) => return,
        None => {}
    }
    *shared.lock().unwrap().body_bytes.entry(kind).or_default() += body.len() as u64;
    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
    let head = with_connection_close(&head_text);
    if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&body).await.is_err() {
        return;
    }
    let mut reply = Vec::new();
    if server.read_to_end(&mut reply).await.is_err() {
        return;
    }
    let _ = client.write_all(&reply).await;
}

/// The request head with `Connection: close` instead of whatever it said.
fn with_connection_close(head: &str) -> String {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    out
}

/// One request: its head (through the blank line) and its body (by
/// content-length, or chunked through the last chunk).
async fn read_request(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = client.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = buf[..head_end].to_vec();
    let mut body = buf[head_end..].to_vec();
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = text.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(length) = length {
        while body.len() < length {
            let n = client.read(&mut byte).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&byte[..n]);
        }
    } else if text.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = client.read(&mut byte).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&byte[..n]);
        }
    }
    Some((head, body))
}
