//! Test plugin: reaches out through what the host may grant, when a path
//! asks it to, so the tests see what a grant allows and what it refuses.
//! It imports `wasi:http`, so it loads only with an `http_allow` grant.
//! Never bundled.
//!
//! - `stat /http/HOST:PORT/PATH`: GET `http://HOST:PORT/PATH`; the size is
//!   the response status. A refused or failed request is an `io` error
//!   carrying the `wasi:http` error code (`HttpRequestDenied`, ...).
//! - `stat /http-post/HOST:PORT/PATH`: the same with a POST without a body
//!   (as S3's CreateMultipartUpload).
//! - `stat /fs/PATH`: PATH in the preopened directory; the size is its length.
//! - `mkdir /fs/PATH`: creates PATH there.
//! - an upload to `/fs/PATH` is staged in `/.uploads/` of the directory (as
//!   object storage stages a multipart upload outside the instance) and
//!   moved to PATH at finish; the writer's recovery token names the staged
//!   file, so the host can abort it from a fresh instance (`abort-orphans`);
//!   the abort of an upload to a name containing `hang` waits 30 s first
//!   (a host call that never answers in time), and that of an upload to
//!   `/fs/NAME-http-HOST:PORT` sends a GET to `HOST:PORT` first and fails
//!   if it fails (object storage aborts a multipart upload by a request).
//! - `stat /http-hold/N/HOST:PORT/PATH`: sends N GETs and keeps them,
//!   never looking at their responses (until `stat /http-release`); the
//!   size is how many were sent.
//! - `stat /http-patient/HOST:PORT/PATH`: a GET asking to wait 600 s for
//!   the response's head.
//! - `stat /http-body/HOST:PORT/PATH`: a GET whose body is read to its
//!   end; the size is its length, or an `io` error with the error code.
//! - `stat /http-put/N/HOST:PORT/PATH`: a PUT of an N-byte body (written
//!   without a content-length); the size is the response status.
//! - `stat /panic`: traps, losing the instance and its writers;
//!   `stat /panic-after/MS` waits MS milliseconds (a host call) first.

use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};

use wasftp_sdk::prelude::*;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, FutureIncomingResponse, Method, OutgoingRequest, RequestOptions, Scheme};

thread_local! {
    /// Requests sent by `/http-hold` and never looked at.
    static HELD: RefCell<Vec<FutureIncomingResponse>> = const { RefCell::new(Vec::new()) };
}

pub struct GrantsPlugin;

impl Guest for GrantsPlugin {
    type Session = GrantsSession;
    type Reader = NoReader;
    type Writer = StagedWriter;

    fn init(_config: Vec<(String, String)>) -> std::result::Result<(), String> {
        Ok(())
    }

    fn describe() -> Capabilities {
        Capabilities {
            name: "grants".into(),
            version: "0.1.0".into(),
            scope: InstanceScope::Stateless,
            random_write: true,
            append: false,
            atomic_rename: false,
            set_info: false,
            symlinks: false,
            hard_links: false,
            read_chunk: 64 << 10,
            write_chunk: 64 << 10,
            durable_sync: false,
            max_file_size: None,
            copy: false,
            abort_orphans: true,
        }
    }

    fn maintain() -> Result<()> {
        Ok(())
    }

    fn abort_orphan(token: String) -> Result<()> {
        if !token.starts_with(STAGING) || token.contains("..") {
            return Err(invalid("not a staged upload"));
        }
        if token.ends_with("-hang") {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        if let Some(authority) = token.split("-http-").nth(1) {
            send(Method::Get, authority, "/abort").map_err(io_error)?;
        }
        match std::fs::remove_file(&token) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fs_error(e)),
            _ => Ok(()),
        }
    }

    fn open_session(_context: SessionContext) -> Result<Session> {
        Ok(Session::new(GrantsSession))
    }
}

/// One request without a body, answered with its status.
fn send(method: Method, authority: &str, path: &str) -> std::result::Result<u16, String> {
    send_with(method, authority, path, None)
}

/// A request without a body, sent; its response is not waited for.
fn start(method: Method, authority: &str, path: &str, options: Option<RequestOptions>) -> std::result::Result<FutureIncomingResponse, String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&method).map_err(|()| "method refused".to_string())?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme refused".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("authority {authority:?} refused"))?;
    request.set_path_with_query(Some(path)).map_err(|()| format!("path {path:?} refused"))?;
    outgoing_handler::handle(request, options).map_err(|e| format!("{e:?}"))
}

fn send_with(method: Method, authority: &str, path: &str, options: Option<RequestOptions>) -> std::result::Result<u16, String> {
    let pending = start(method, authority, path, options)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response after the wait")?
        .map_err(|()| "response taken twice".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status())
}

/// A GET whose body is read to its end: its length.
fn read_body(authority: &str, path: &str) -> std::result::Result<u64, String> {
    let pending = start(Method::Get, authority, path, None)?;
    pending.subscribe().block();
    let response = pending.get().ok_or("no response")?.map_err(|()| "taken twice".to_string())?.map_err(|e| format!("{e:?}"))?;
    let body = response.consume().map_err(|()| "body taken".to_string())?;
    let stream = body.stream().map_err(|()| "stream taken".to_string())?;
    let mut length = 0u64;
    loop {
        match stream.blocking_read(1 << 20) {
            Ok(bytes) => length += bytes.len() as u64,
            Err(wasi::io::streams::StreamError::Closed) => return Ok(length),
            Err(wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                // The error code where the host gives one; its text always.
                let code = wasi::http::types::http_error_code(&e);
                // The count first: the host cuts a plugin's error text at 256 bytes.
                return Err(format!("after {length} bytes: {code:?} ({})", e.to_debug_string()));
            }
        }
    }
}

/// A PUT of `bytes` bytes, written in pieces: the response's status.
fn put_body(authority: &str, path: &str, bytes: u64) -> std::result::Result<u16, String> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Put).map_err(|()| "method refused".to_string())?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme refused".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("authority {authority:?} refused"))?;
    request.set_path_with_query(Some(path)).map_err(|()| format!("path {path:?} refused"))?;
    let body = request.body().map_err(|()| "body taken".to_string())?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let stream = body.write().map_err(|()| "stream taken".to_string())?;
    let piece = vec![b'p'; 4096];
    let mut written = 0u64;
    while written < bytes {
        let n = (bytes - written).min(piece.len() as u64) as usize;
        if stream.blocking_write_and_flush(&piece[..n]).is_err() {
            // The host stopped taking it: the response says why.
            break;
        }
        written += n as u64;
    }
    drop(stream);
    let _ = wasi::http::types::OutgoingBody::finish(body, None);
    pending.subscribe().block();
    let response = pending.get().ok_or("no response")?.map_err(|()| "taken twice".to_string())?.map_err(|e| format!("{e:?}"))?;
    Ok(response.status())
}

fn file(size: u64) -> FileInfo {
    FileInfo { kind: FileKind::File, size, permissions: 0o644, modified: 0, accessed: 0, version: None }
}

fn fs_error(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound,
        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied,
        _ => io_error(format!("{e}")),
    }
}

pub struct GrantsSession;

impl GuestSession for GrantsSession {
    fn list_dir(&self, _path: String, _cursor: Option<String>, _limit: u32) -> Result<DirPage> {
        Ok(DirPage { entries: Vec::new(), next_cursor: None })
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        if let Some(ms) = path.strip_prefix("/panic-after/").and_then(|ms| ms.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            panic!("asked to trap after {ms} ms");
        }
        if path == "/panic" {
            panic!("asked to trap");
        }
        if path == "/" {
            return Ok(FileInfo { kind: FileKind::Directory, ..file(0) });
        }
        let request = match (path.strip_prefix("/http/"), path.strip_prefix("/http-post/")) {
            (Some(rest), _) => Some((Method::Get, rest)),
            (_, Some(rest)) => Some((Method::Post, rest)),
            _ => None,
        };
        if path == "/http-release" {
            return Ok(file(HELD.with(|held| held.borrow_mut().drain(..).count()) as u64));
        }
        if let Some(rest) = path.strip_prefix("/http-hold/") {
            let (count, rest) = rest.split_once('/').ok_or_else(|| invalid("/http-hold/N/HOST:PORT/PATH"))?;
            let count: u64 = count.parse().map_err(|_| invalid("a count"))?;
            let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
            for _ in 0..count {
                let pending = start(Method::Get, authority, &format!("/{tail}"), None).map_err(io_error)?;
                HELD.with(|held| held.borrow_mut().push(pending));
            }
            return Ok(file(count));
        }
        if let Some(rest) = path.strip_prefix("/http-body/") {
            let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
            return read_body(authority, &format!("/{tail}")).map(file).map_err(io_error);
        }
        if let Some(rest) = path.strip_prefix("/http-put/") {
            let (count, rest) = rest.split_once('/').ok_or_else(|| invalid("/http-put/N/HOST:PORT/PATH"))?;
            let bytes: u64 = count.parse().map_err(|_| invalid("a count"))?;
            let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
            return put_body(authority, &format!("/{tail}"), bytes).map(|status| file(status.into())).map_err(io_error);
        }
        if let Some(rest) = path.strip_prefix("/http-patient/") {
            let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let options = RequestOptions::new();
            options.set_first_byte_timeout(Some(600_000_000_000)).map_err(|()| invalid("timeout refused"))?;
            return send_with(Method::Get, authority, &format!("/{tail}"), Some(options))
                .map(|status| file(status.into()))
                .map_err(io_error);
        }
        if let Some((method, rest)) = request {
            let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
            return send(method, authority, &format!("/{tail}")).map(|status| file(status.into())).map_err(io_error);
        }
        if let Some(rest) = path.strip_prefix("/fs") {
            let meta = std::fs::metadata(if rest.is_empty() { "/" } else { rest }).map_err(fs_error)?;
            return Ok(file(meta.len()));
        }
        Err(Error::NotFound)
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.file_info(path)
    }

    fn open_read(&self, _path: String, _version: Option<String>) -> Result<Reader> {
        Err(Error::Unsupported)
    }

    fn begin_write(&self, path: String, _options: WriteOptions) -> Result<Writer> {
        let target = path.strip_prefix("/fs").filter(|rest| rest.len() > 1).ok_or(Error::PermissionDenied)?;
        Ok(Writer::new(StagedWriter { target: target.to_string(), staged: RefCell::new(None) }))
    }

    fn make_dir(&self, path: String, _permissions: Option<u32>) -> Result<()> {
        let rest = path.strip_prefix("/fs/").ok_or(Error::PermissionDenied)?;
        std::fs::create_dir(format!("/{rest}")).map_err(fs_error)
    }

    fn remove_dir(&self, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn remove_file(&self, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn rename(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn copy_file(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn set_info(&self, _path: String, _attrs: SetAttrs) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn read_link(&self, _path: String) -> Result<String> {
        Err(Error::Unsupported)
    }

    fn make_link(&self, _target: String, _path: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn hard_link(&self, _src: String, _dst: String) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn space(&self, _path: String) -> Result<SpaceInfo> {
        Err(Error::Unsupported)
    }
}

pub struct NoReader;

impl GuestReader for NoReader {
    fn info(&self) -> FileInfo {
        file(0)
    }

    fn read(&self, _offset: u64, _len: u32) -> Result<Vec<u8>> {
        Err(Error::Unsupported)
    }
}

const STAGING: &str = "/.uploads/";

/// Content goes to a file under `/.uploads/`, made at the first chunk.
pub struct StagedWriter {
    target: String,
    staged: RefCell<Option<(String, std::fs::File)>>,
}

impl StagedWriter {
    fn discard(&self) {
        if let Some((name, file)) = self.staged.borrow_mut().take() {
            drop(file);
            let _ = std::fs::remove_file(name);
        }
    }
}

impl GuestWriter for StagedWriter {
    fn write_chunk(&self, offset: u64, data: Vec<u8>) -> Result<()> {
        let mut staged = self.staged.borrow_mut();
        if staged.is_none() {
            std::fs::create_dir_all(STAGING).map_err(fs_error)?;
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let hang = if self.target.contains("hang") { "-hang" } else { "" };
            let http = self.target.split("-http-").nth(1).map(|at| format!("-http-{at}")).unwrap_or_default();
            let name = format!("{STAGING}{nanos}{hang}{http}");
            let file = std::fs::File::create(&name).map_err(fs_error)?;
            *staged = Some((name, file));
        }
        let (_, file) = staged.as_mut().expect("staged above");
        file.seek(SeekFrom::Start(offset)).map_err(fs_error)?;
        file.write_all(&data).map_err(fs_error)
    }

    fn set_size(&self, _size: u64) -> Result<()> {
        Err(Error::Unsupported)
    }

    fn finish(&self) -> Result<FileInfo> {
        let (name, staged) = self.staged.borrow_mut().take().ok_or_else(|| invalid("nothing written"))?;
        let size = staged.metadata().map_err(fs_error)?.len();
        drop(staged);
        std::fs::rename(&name, &self.target).map_err(fs_error)?;
        Ok(file(size))
    }

    fn abort(&self) {
        self.discard();
    }

    fn recovery_token(&self) -> Option<String> {
        self.staged.borrow().as_ref().map(|(name, _)| name.clone())
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

wasftp_sdk::export_plugin!(GrantsPlugin);
