//! The contract over S3 calls.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::upload_part_copy::UploadPartCopyError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_lite::future::zip;
use wasftp_sdk::prelude::*;

use crate::client::{self, block_on, is_not_found};
use crate::config::{self, Config};
use crate::keys::Keys;

/// What `init` set up; the same for every session of the instance.
struct State {
    s3: aws_sdk_s3::Client,
    config: Config,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> Result<&'static State> {
    STATE.get().ok_or_else(|| io_error("the plugin was not initialised"))
}

/// The most keys a directory rename copies; past it the rename is refused
/// before anything is touched.
const MAX_RENAME_KEYS: usize = 1000;
/// Longest key an upload may have: with a multipart upload id it must fit
/// the contract's 1024-byte recovery token.
const MAX_KEY_LEN: usize = 768;
/// S3 holds at most 10,000 parts per upload.
const MAX_PARTS: u64 = 10_000;
/// ListObjectsV2 pages hold at most this many keys.
const MAX_PAGE: u32 = 1000;
/// The session attribute that scopes a session's keys (`tenants/42/`).
const PREFIX_ATTRIBUTE: &str = "prefix";

pub struct S3Plugin;

impl Guest for S3Plugin {
    type Session = S3Session;
    type Reader = S3Reader;
    type Writer = S3Writer;

    fn init(pairs: Vec<(String, String)>) -> std::result::Result<(), String> {
        let config = Config::parse(&pairs)?;
        let s3 = client::client(&config);
        let _ = STATE.set(State { s3, config });
        Ok(())
    }

    fn describe() -> Capabilities {
        let (read_chunk, part) = STATE.get().map_or((8 << 20, 8 << 20), |s| (s.config.read_chunk, s.config.part_size));
        Capabilities {
            name: "s3".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            scope: InstanceScope::Stateless,
            random_write: false,
            // Appends keep the content (see `start_from`); the host sends
            // them in order from the end.
            append: true,
            atomic_rename: false,
            set_info: false,
            symlinks: false,
            hard_links: false,
            read_chunk,
            write_chunk: part,
            durable_sync: true,
            max_file_size: Some(u64::from(part) * MAX_PARTS),
            copy: true,
            abort_orphans: true,
        }
    }

    /// Aborts multipart uploads under the plugin's prefix older than
    /// `orphan-age-secs`: left by a host that died mid-upload.
    fn maintain() -> Result<()> {
        let state = state()?;
        let cutoff = now().saturating_sub(state.config.orphan_age_secs);
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut aborted = 0;
        // Bounded: a bucket with more stale uploads is tidied over several runs.
        for _ in 0..20 {
            let page = block_on(
                state
                    .s3
                    .list_multipart_uploads()
                    .bucket(&state.config.bucket)
                    .prefix(&state.config.prefix)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(id_marker.take())
                    .send(),
            )
            .map_err(|e| client::error("list multipart uploads", e))?;
            for upload in page.uploads() {
                let started = upload.initiated().map_or(u64::MAX, |t| t.secs().max(0) as u64);
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                    && started <= cutoff
                {
                    // One failure does not stop the others.
                    match abort_upload(state, key, id) {
                        Ok(()) => aborted += 1,
                        Err(e) => log::warn(&format!("s3: aborting a stale upload of {key}: {e:?}")),
                    }
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        if aborted > 0 {
            log::info(&format!("s3: aborted {aborted} stale multipart uploads"));
        }
        Ok(())
    }

    fn abort_orphan(token: String) -> Result<()> {
        let (id, key) = token.split_once('\n').ok_or_else(|| invalid("not a recovery token of this plugin"))?;
        abort_upload(state()?, key, id)
    }

    fn open_session(context: SessionContext) -> Result<Session> {
        let state = state()?;
        let session_prefix = match context.attributes.iter().find(|(k, _)| k == PREFIX_ATTRIBUTE) {
            Some((_, value)) => config::key_prefix(value).map_err(|e| invalid(format!("session prefix: {e}")))?,
            None => String::new(),
        };
        Ok(Session::new(S3Session { keys: Keys::new(&state.config.prefix, &session_prefix) }))
    }
}

fn abort_upload(state: &State, key: &str, id: &str) -> Result<()> {
    match block_on(state.s3.abort_multipart_upload().bucket(&state.config.bucket).key(key).upload_id(id).send()) {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(client::error("abort multipart upload", e)),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn dir_info() -> FileInfo {
    FileInfo { kind: FileKind::Directory, size: 0, permissions: 0o755, modified: 0, accessed: 0, version: None }
}

fn file_info(size: i64, modified: Option<&aws_sdk_s3::primitives::DateTime>, etag: Option<&str>) -> FileInfo {
    let modified = modified.map_or(0, |t| t.secs().max(0) as u64);
    FileInfo {
        kind: FileKind::File,
        size: size.max(0) as u64,
        permissions: 0o644,
        modified,
        accessed: modified,
        // The contract takes at most 256 printable ASCII bytes.
        version: etag.filter(|e| e.len() <= 256 && e.bytes().all(|b| (0x20..0x7f).contains(&b))).map(str::to_string),
    }
}

pub struct S3Session {
    keys: Keys,
}

/// The object at `key`, pinned to `version` if given.
fn head(key: &str, version: Option<&str>) -> Result<FileInfo> {
    let state = state()?;
    let head = block_on(
        state.s3.head_object().bucket(&state.config.bucket).key(key).set_if_match(version.map(str::to_string)).send(),
    )
    .map_err(|e| client::error("head", e))?;
    Ok(file_info(head.content_length().unwrap_or(0), head.last_modified(), head.e_tag()))
}

impl S3Session {
    /// Whether anything (a marker or a key) lives under the directory `path`.
    fn is_dir(&self, path: &str) -> Result<bool> {
        block_on(self.has_children(path))
    }

    async fn has_children(&self, path: &str) -> Result<bool> {
        if path == "/" {
            return Ok(true);
        }
        let state = state()?;
        let page = state.s3.list_objects_v2().bucket(&state.config.bucket).prefix(self.keys.dir(path)).max_keys(1).send().await;
        let page = page.map_err(|e| client::error("list", e))?;
        Ok(!page.contents().is_empty() || !page.common_prefixes().is_empty())
    }

    /// A file's info, a directory's, or not-found.
    fn info(&self, path: &str) -> Result<FileInfo> {
        let Some(key) = self.keys.file(path) else { return Ok(dir_info()) };
        match head(&key, None) {
            Err(Error::NotFound) => {}
            other => return other,
        }
        if self.is_dir(path)? { Ok(dir_info()) } else { Err(Error::NotFound) }
    }

    /// Every key under the directory `path` with its size and ETag, at most
    /// `max` of them.
    fn keys_under(&self, path: &str, max: usize) -> Result<Vec<(String, u64, Option<String>)>> {
        let state = state()?;
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = block_on(
                state
                    .s3
                    .list_objects_v2()
                    .bucket(&state.config.bucket)
                    .prefix(self.keys.dir(path))
                    .set_continuation_token(token.take())
                    .send(),
            )
            .map_err(|e| client::error("list", e))?;
            for object in page.contents() {
                if keys.len() == max {
                    return Err(invalid(format!("more than {max} objects under {path}: too many to rename")));
                }
                let size = object.size().unwrap_or(0).max(0) as u64;
                keys.push((object.key().unwrap_or_default().to_string(), size, object.e_tag().map(str::to_string)));
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    /// Copies the object `from` (`size` bytes, of version `etag` if known)
    /// to the key `to`: one CopyObject, or past `max-single-copy` (S3 copies
    /// at most 5 GiB at once) a multipart upload of UploadPartCopy parts.
    /// Every request is pinned to the version, so the copy is of one version.
    fn copy_object(&self, from: &str, to: &str, size: u64, etag: Option<&str>) -> Result<()> {
        let state = state()?;
        let source = format!("{}/{}", state.config.bucket, encode_key(from));
        let etag = etag.map(str::to_string);
        if size <= state.config.max_single_copy {
            let copy = state.s3.copy_object().bucket(&state.config.bucket).key(to).copy_source(source);
            block_on(copy.set_copy_source_if_match(etag).send()).map_err(|e| client::error("copy", e))?;
            return Ok(());
        }
        let created = block_on(state.s3.create_multipart_upload().bucket(&state.config.bucket).key(to).send())
            .map_err(|e| client::error("create multipart upload", e))?;
        let id = created.upload_id().ok_or_else(|| io_error("create multipart upload: no upload id"))?.to_string();
        // Parts of the same size but the last; at most 10,000 of them.
        let part_len = state.config.max_single_copy.max(size.div_ceil(MAX_PARTS)).min(config::MAX_COPY);
        let copied = (|| {
            let mut parts = Vec::new();
            // In u64: a part is past a wasm32 usize.
            let mut start = 0;
            while start < size {
                let end = (start + part_len).min(size) - 1;
                let number = parts.len() as i32 + 1;
                let part = copy_part(state, to, &id, number, &source, (start, end), etag.clone())
                    .map_err(|e| client::error("upload part copy", e))?;
                parts.push(part);
                start = end + 1;
            }
            let parts = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
            block_on(
                state.s3.complete_multipart_upload().bucket(&state.config.bucket).key(to).upload_id(&id).multipart_upload(parts).send(),
            )
            .map_err(|e| client::error("complete multipart upload", e))
        })();
        if let Err(error) = copied {
            if let Err(e) = abort_upload(state, to, &id) {
                log::warn(&format!("s3: aborting the copy to {to}: {e:?}"));
            }
            return Err(error);
        }
        Ok(())
    }

    fn delete_object(&self, key: &str) -> Result<()> {
        let state = state()?;
        block_on(state.s3.delete_object().bucket(&state.config.bucket).key(key).send()).map_err(|e| client::error("delete", e))?;
        Ok(())
    }

    /// What is at `path`: a file, a directory, or nothing.
    fn kind(&self, path: &str) -> Result<Option<FileKind>> {
        match self.info(path) {
            Ok(info) => Ok(Some(info.kind)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies a file or a directory tree; the source is left as it is.
    fn copy(&self, src: &str, dst: &str, overwrite: bool) -> Result<Vec<String>> {
        let (Some(src_key), Some(dst_key)) = (self.keys.file(src), self.keys.file(dst)) else {
            return Err(Error::PermissionDenied);
        };
        let source = self.info(src)?;
        let target = self.kind(dst)?;
        if let Some(parent) = wasftp_sdk::path::parent(dst)
            && !self.is_dir(parent)?
        {
            return Err(Error::NotFound);
        }
        match (source.kind, target) {
            (_, Some(_)) if !overwrite => return Err(Error::AlreadyExists),
            (FileKind::File, Some(FileKind::Directory)) => return Err(Error::IsADirectory),
            (FileKind::Directory, Some(_)) => return Err(Error::AlreadyExists),
            _ => {}
        }
        if source.kind == FileKind::File {
            self.copy_object(&src_key, &dst_key, source.size, source.version.as_deref())?;
            return Ok(vec![src_key]);
        }
        if dst.starts_with(&format!("{src}/")) {
            return Err(invalid("cannot move a directory into itself"));
        }
        // Listed in full first: past the bound, nothing is touched.
        let (from, to) = (self.keys.dir(src), self.keys.dir(dst));
        let keys = self.keys_under(src, MAX_RENAME_KEYS)?;
        for (key, size, etag) in &keys {
            self.copy_object(key, &format!("{to}{}", &key[from.len()..]), *size, etag.as_deref())?;
        }
        if keys.is_empty() {
            // A directory known only by its name in a path cannot be empty;
            // this is a marker-less race: leave a marker at the target.
            self.put_marker(&to)?;
        }
        Ok(keys.into_iter().map(|(key, ..)| key).collect())
    }

    fn put_marker(&self, dir_key: &str) -> Result<()> {
        let state = state()?;
        block_on(state.s3.put_object().bucket(&state.config.bucket).key(dir_key).body(ByteStream::from_static(b"")).send())
            .map_err(|e| client::error("make directory", e))?;
        Ok(())
    }
}

/// A key as CopyObject's `x-amz-copy-source` wants it: URL-encoded, `/` kept.
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

impl GuestSession for S3Session {
    fn list_dir(&self, path: String, cursor: Option<String>, limit: u32) -> Result<DirPage> {
        let state = state()?;
        let dir = self.keys.dir(&path);
        let mut token = cursor;
        let mut first = token.is_none();
        loop {
            let page = block_on(
                state
                    .s3
                    .list_objects_v2()
                    .bucket(&state.config.bucket)
                    .prefix(&dir)
                    .delimiter("/")
                    .max_keys(limit.clamp(1, MAX_PAGE) as i32)
                    .set_continuation_token(token.take())
                    .send(),
            )
            .map_err(|e| client::error("list", e))?;
            let mut entries = Vec::new();
            for object in page.contents() {
                if let Some(name) = object.key().and_then(|key| self.keys.entry_name(&dir, key)) {
                    let info = file_info(object.size().unwrap_or(0), object.last_modified(), object.e_tag());
                    entries.push(DirEntry { name: name.to_string(), info });
                }
            }
            for prefix in page.common_prefixes() {
                if let Some(name) = prefix.prefix().and_then(|key| self.keys.entry_name(&dir, key))
                    // A file and a directory of the same name: the file is what STAT sees.
                    && !entries.iter().any(|e| e.name == name)
                {
                    entries.push(DirEntry { name: name.to_string(), info: dir_info() });
                }
            }
            let next = page.next_continuation_token().filter(|_| page.is_truncated().unwrap_or(false)).map(str::to_string);
            let nothing_here = first && entries.is_empty() && next.is_none() && page.contents().is_empty();
            first = false;
            if nothing_here && path != "/" {
                // No marker and no keys: not a directory.
                return match self.keys.file(&path).map(|key| head(&key, None)) {
                    Some(Ok(_)) => Err(Error::NotADirectory),
                    _ => Err(Error::NotFound),
                };
            }
            // A page holding only the directory's marker: go on to the next.
            if entries.is_empty() && next.is_some() {
                token = next;
                continue;
            }
            return Ok(DirPage { entries, next_cursor: next });
        }
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        self.info(&path)
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        self.info(&path)
    }

    /// One GET of the first bytes, which also gives the size and the ETag
    /// to pin: a small file is read whole at open, with no HEAD before it.
    fn open_read(&self, path: String, version: Option<String>) -> Result<Reader> {
        let Some(key) = self.keys.file(&path) else { return Err(Error::IsADirectory) };
        let (info, first) = match get_first(&key, version) {
            Err(Error::NotFound) if self.is_dir(&path)? => return Err(Error::IsADirectory),
            other => other?,
        };
        // Without an ETag nothing pins the version; S3 always sends one.
        let etag = info.version.clone();
        Ok(Reader::new(S3Reader { key, etag, info, first: RefCell::new(first) }))
    }

    /// The checks OpenSSH's server makes at open (not a directory, a
    /// parent that is a directory), so a client learns at OPEN rather than
    /// after sending the whole file: two LISTs at once, one round trip.
    /// Made only with `open-checks = true`: by default OPEN makes no S3
    /// call, the fastest for many small files.
    fn begin_write(&self, path: String, options: WriteOptions) -> Result<Writer> {
        let Some(key) = self.keys.file(&path) else { return Err(Error::IsADirectory) };
        // The key and a multipart upload id must fit in a recovery token.
        if key.len() > MAX_KEY_LEN {
            return Err(invalid(format!("object keys are limited to {MAX_KEY_LEN} bytes here")));
        }
        if state()?.config.open_checks {
            let parent = wasftp_sdk::path::parent(&path).unwrap_or("/");
            let (is_dir, parent_is_dir) = block_on(zip(self.has_children(&path), self.has_children(parent)));
            if is_dir? {
                return Err(Error::IsADirectory);
            }
            if !parent_is_dir? {
                return match self.kind(parent)? {
                    Some(_) => Err(Error::NotADirectory),
                    None => Err(Error::NotFound),
                };
            }
        }
        let mut existing = None;
        if options.exclusive || !options.create || !options.truncate {
            match head(&key, None) {
                Ok(_) if options.exclusive => return Err(Error::AlreadyExists),
                Ok(info) if !options.truncate && info.size > 0 => existing = Some(info),
                Ok(_) => {}
                Err(Error::NotFound) if !options.create => return Err(Error::NotFound),
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let part = u64::from(state()?.config.part_size);
        let writer = S3Writer { key, exclusive: options.exclusive, append: options.append, part, upload: RefCell::new(Upload::default()) };
        if let Some(info) = existing {
            writer.start_from(&info)?;
        }
        Ok(Writer::new(writer))
    }

    fn make_dir(&self, path: String, _permissions: Option<u32>) -> Result<()> {
        if path == "/" || self.kind(&path)?.is_some() {
            return Err(Error::AlreadyExists);
        }
        if let Some(parent) = wasftp_sdk::path::parent(&path)
            && !self.is_dir(parent)?
        {
            return Err(Error::NotFound);
        }
        self.put_marker(&self.keys.dir(&path))
    }

    fn remove_dir(&self, path: String) -> Result<()> {
        if path == "/" {
            return Err(Error::PermissionDenied);
        }
        let state = state()?;
        let dir = self.keys.dir(&path);
        let page = block_on(state.s3.list_objects_v2().bucket(&state.config.bucket).prefix(&dir).max_keys(2).send())
            .map_err(|e| client::error("list", e))?;
        let keys: Vec<&str> = page.contents().iter().filter_map(|o| o.key()).collect();
        if keys.iter().any(|key| *key != dir) || !page.common_prefixes().is_empty() {
            return Err(Error::NotEmpty);
        }
        if keys.is_empty() {
            return match self.kind(&path)? {
                Some(_) => Err(Error::NotADirectory),
                None => Err(Error::NotFound),
            };
        }
        self.delete_object(&dir)
    }

    fn remove_file(&self, path: String) -> Result<()> {
        let Some(key) = self.keys.file(&path) else { return Err(Error::IsADirectory) };
        match head(&key, None) {
            Ok(_) => self.delete_object(&key),
            Err(Error::NotFound) if self.is_dir(&path)? => Err(Error::IsADirectory),
            Err(e) => Err(e),
        }
    }

    /// A copy, then the source's deletion: not atomic (S3 has no rename).
    fn rename(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        if src == dst {
            return Ok(());
        }
        for key in self.copy(&src, &dst, overwrite)? {
            self.delete_object(&key)?;
        }
        Ok(())
    }

    fn copy_file(&self, src: String, dst: String, overwrite: bool) -> Result<()> {
        if self.kind(&src)? == Some(FileKind::Directory) {
            return Err(Error::IsADirectory);
        }
        self.copy(&src, &dst, overwrite).map(drop)
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

    /// A bucket has no size: a large constant (1 PiB, all free).
    fn space(&self, _path: String) -> Result<SpaceInfo> {
        const PIB: u64 = 1 << 50;
        Ok(SpaceInfo {
            total_bytes: PIB,
            free_bytes: PIB,
            available_bytes: PIB,
            total_files: u64::MAX >> 1,
            free_files: u64::MAX >> 1,
            block_size: 4096,
        })
    }
}

pub struct S3Reader {
    key: String,
    etag: Option<String>,
    info: FileInfo,
    /// The object's first bytes, fetched at open; let go once read past.
    first: RefCell<Vec<u8>>,
}

impl GuestReader for S3Reader {
    fn info(&self) -> FileInfo {
        self.info.clone()
    }

    /// The bytes fetched at open, then ranged GETs of the pinned version
    /// (If-Match): an object replaced meanwhile is a conflict, never a mix
    /// of two versions.
    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        if offset >= self.info.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + u64::from(len)).min(self.info.size);
        let mut first = self.first.borrow_mut();
        let held = first.len() as u64;
        if offset >= held {
            return get_range(&self.key, offset, end - 1, self.etag.clone());
        }
        let mut out = first[offset as usize..end.min(held) as usize].to_vec();
        if end >= held {
            // Read to its end: the client has moved on.
            *first = Vec::new();
        }
        if end > held {
            out.extend(get_range(&self.key, held, end - 1, self.etag.clone())?);
        }
        Ok(out)
    }
}

/// How much `open-read` fetches with the GET that pins the object: a file
/// this small is read whole at open.
const FIRST_BYTES: u64 = 64 * 1024;

/// The object at `key` (of `version` if given) and its first bytes, in one
/// ranged GET.
fn get_first(key: &str, version: Option<String>) -> Result<(FileInfo, Vec<u8>)> {
    let got = match ranged_get(state()?, key, (0, FIRST_BYTES - 1), version.clone()) {
        Ok(got) => got,
        // An empty object has no byte 0 to range over.
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => {
            return Ok((head(key, version.as_deref())?, Vec::new()));
        }
        Err(e) => return Err(client::error("get", e)),
    };
    let sent = got.content_length().map(|n| n.max(0) as u64);
    // `bytes 0-4095/4096`; a server that ignored the range sends it all,
    // with its length (or without: then a HEAD says).
    let total = match got.content_range() {
        Some(range) => range.rsplit_once('/').and_then(|(_, total)| total.parse::<u64>().ok()),
        None => sent,
    };
    let (Some(total), Some(sent)) = (total, sent) else { return Ok((head(key, version.as_deref())?, Vec::new())) };
    let info = file_info(total as i64, got.last_modified(), got.e_tag());
    if sent > FIRST_BYTES {
        // Not what was asked for: read nothing now, the reads fetch it.
        return Ok((info, Vec::new()));
    }
    let mut first = read_body(got.body)?;
    first.truncate(total.min(FIRST_BYTES) as usize);
    Ok((info, first))
}

/// Bytes `first..=last` of the object at `key`, of version `etag` if given.
fn get_range(key: &str, first: u64, last: u64, etag: Option<String>) -> Result<Vec<u8>> {
    let got = ranged_get(state()?, key, (first, last), etag).map_err(|e| client::error("get", e))?;
    // A server that ignored the range sends other bytes, or all of them.
    let want = last - first + 1;
    let from = got.content_range().and_then(|r| r.strip_prefix("bytes ")).and_then(|r| r.split_once('-')).map(|(from, _)| from);
    if (first > 0 && from != Some(first.to_string().as_str())) || got.content_length().is_some_and(|n| n.max(0) as u64 > want) {
        return Err(io_error(format!("get: asked for bytes {first}-{last}, the server answered {:?}", got.content_range())));
    }
    let mut data = read_body(got.body)?;
    data.truncate(want as usize);
    Ok(data)
}

/// Bytes `first..=last` of the object at `key`, if it is of version `etag`.
fn ranged_get(
    state: &State,
    key: &str,
    (first, last): (u64, u64),
    etag: Option<String>,
) -> std::result::Result<GetObjectOutput, aws_sdk_s3::error::SdkError<GetObjectError, HttpResponse>> {
    let request = state.s3.get_object().bucket(&state.config.bucket).key(key);
    block_on(request.range(format!("bytes={first}-{last}")).set_if_match(etag).send())
}

/// All of a GET's body.
fn read_body(body: ByteStream) -> Result<Vec<u8>> {
    let data = block_on(body.collect()).map_err(|e| io_error(client::scrub(&format!("get: reading the body: {e}"))))?;
    Ok(data.into_bytes().to_vec())
}

#[derive(Default)]
struct Upload {
    /// Bytes received and not yet sent as a part (at most one part's worth).
    pending: Vec<u8>,
    /// Bytes received in all (the next offset expected).
    received: u64,
    /// Once the content outgrew one part.
    multipart: Option<Multipart>,
    /// Finished or aborted: nothing left to clean up.
    closed: bool,
    /// A part failed to go out: its bytes are lost, so the upload can only
    /// be aborted.
    failed: bool,
    /// The object whose content the upload started from (not truncated).
    source: Option<FileInfo>,
    /// Bytes of the multipart upload copied from `source` (UploadPartCopy).
    copied: u64,
}

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
}

/// A request's config sent once, without the SDK's retries.
fn once() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new().retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
}

/// Bytes `start..=end` of `source` (`bucket/key`, URL-encoded), pinned to
/// `etag`, copied inside S3 as part `number` of the upload `id` of `key`.
fn copy_part(
    state: &State,
    key: &str,
    id: &str,
    number: i32,
    source: &str,
    (start, end): (u64, u64),
    etag: Option<String>,
) -> std::result::Result<CompletedPart, aws_sdk_s3::error::SdkError<UploadPartCopyError, HttpResponse>> {
    let copied = block_on(
        state
            .s3
            .upload_part_copy()
            .bucket(&state.config.bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .copy_source(source)
            .copy_source_range(format!("bytes={start}-{end}"))
            .set_copy_source_if_match(etag)
            .send(),
    )?;
    let part_etag = copied.copy_part_result().and_then(|r| r.e_tag()).map(str::to_string);
    Ok(CompletedPart::builder().part_number(number).set_e_tag(part_etag).build())
}

/// An upload's own failure: a vanished multipart upload (404) is not the
/// file missing, which is what not-found would tell the client.
fn upload_error<E, R>(op: &str, e: aws_sdk_s3::error::SdkError<E, R>) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + client::HasStatus,
{
    match client::error(op, e) {
        Error::NotFound => io_error(format!("{op}: the multipart upload is gone (aborted elsewhere?)")),
        other => other,
    }
}

pub struct S3Writer {
    key: String,
    exclusive: bool,
    /// Every chunk goes to the end, whatever its offset (`write-options.append`).
    append: bool,
    part: u64,
    upload: RefCell<Upload>,
}

impl S3Writer {
    /// Sends `data` as the next part, starting the multipart upload first.
    fn send_part(&self, upload: &mut Upload, data: Vec<u8>) -> Result<()> {
        let state = state()?;
        if upload.multipart.is_none() {
            self.create_upload(upload)?;
        }
        let multipart = upload.multipart.as_mut().expect("just started");
        let number = multipart.parts.len() as i32 + 1;
        let request = state
            .s3
            .upload_part()
            .bucket(&state.config.bucket)
            .key(&self.key)
            .upload_id(&multipart.id)
            .part_number(number)
            .body(ByteStream::from(data));
        // Hashing the payload for the signature is what a part costs most
        // in the guest (SHA-256 without the CPU's instructions).
        let sent = if state.config.sign_payload {
            block_on(request.send())
        } else {
            block_on(request.customize().disable_payload_signing().send())
        }
        .map_err(|e| upload_error("upload part", e))?;
        multipart.parts.push(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag().map(str::to_string)).build());
        Ok(())
    }

    /// Starts from the object's current content (a resumed upload: reput,
    /// a write without truncate). A small object is read in; a larger one
    /// becomes the first parts of a multipart upload by UploadPartCopy, so
    /// resuming a big upload sends only the missing bytes. Both are pinned
    /// to the version seen (If-Match).
    fn start_from(&self, existing: &FileInfo) -> Result<()> {
        let mut upload = self.upload.borrow_mut();
        self.keep(&mut upload, existing, existing.size)
    }

    /// Makes the upload start with the first `size` bytes of `existing`.
    fn keep(&self, upload: &mut Upload, existing: &FileInfo, size: u64) -> Result<()> {
        let state = state()?;
        upload.source = Some(existing.clone());
        if size == 0 {
            return Ok(());
        }
        if size < config::MIN_PART {
            upload.pending = get_range(&self.key, 0, size - 1, existing.version.clone())?;
            upload.received = upload.pending.len() as u64;
            return Ok(());
        }
        // Copy parts of at most 5 GiB, as even as can be (each at least 5 MiB:
        // more parts follow them).
        let count = size.div_ceil(config::MAX_COPY);
        let part_len = size.div_ceil(count);
        let source = format!("{}/{}", state.config.bucket, encode_key(&self.key));
        self.create_upload(upload)?;
        for i in 0..count {
            let (start, end) = (i * part_len, ((i + 1) * part_len).min(size) - 1);
            let multipart = upload.multipart.as_mut().expect("just created");
            let number = multipart.parts.len() as i32 + 1;
            match copy_part(state, &self.key, &multipart.id, number, &source, (start, end), existing.version.clone()) {
                Ok(part) => multipart.parts.push(part),
                Err(e) => {
                    let error = upload_error("upload part copy", e);
                    self.abort_now(upload);
                    return Err(error);
                }
            }
        }
        upload.received = size;
        upload.copied = size;
        Ok(())
    }

    fn create_upload(&self, upload: &mut Upload) -> Result<()> {
        let state = state()?;
        let created = block_on(state.s3.create_multipart_upload().bucket(&state.config.bucket).key(&self.key).send())
            .map_err(|e| client::error("create multipart upload", e))?;
        let id = created.upload_id().ok_or_else(|| io_error("create multipart upload: no upload id"))?;
        upload.multipart = Some(Multipart { id: id.to_string(), parts: Vec::new() });
        Ok(())
    }

    /// `If-None-Match: *` for an exclusive create: S3 refuses (412) to put
    /// over an object that appeared after the HEAD, even through another
    /// host. A server without conditional writes ignores it; the HEAD is
    /// then all there is.
    fn if_none_match(&self) -> Option<String> {
        self.exclusive.then(|| "*".to_string())
    }

    /// A refused condition of an exclusive create is the file existing. (The
    /// conditional request is sent `once`: a retry after a reply lost on
    /// the way would be refused by the object it had just created.)
    fn created_elsewhere(&self, error: Error) -> Error {
        match error {
            Error::Conflict if self.exclusive => Error::AlreadyExists,
            other => other,
        }
    }

    fn abort_now(&self, upload: &mut Upload) {
        upload.closed = true;
        upload.pending = Vec::new();
        if let (Some(multipart), Ok(state)) = (upload.multipart.take(), state())
            && let Err(e) = abort_upload(state, &self.key, &multipart.id)
        {
            log::warn(&format!("s3: aborting the upload to {}: {e:?}", self.key));
        }
    }
}

impl GuestWriter for S3Writer {
    /// Chunks come in order (the plugin declares no random writes), or
    /// go to the end with `append`; a part
    /// goes out once more than a part's worth has come, so content of one
    /// part or less is a single PutObject at finish.
    fn write_chunk(&self, offset: u64, data: Vec<u8>) -> Result<()> {
        let mut upload = self.upload.borrow_mut();
        if upload.closed || upload.failed {
            return Err(invalid("the upload is closed, or a part of it failed"));
        }
        if offset != upload.received && !self.append {
            return Err(invalid(format!("expected the chunk at offset {}, got {offset}", upload.received)));
        }
        if upload.received + data.len() as u64 > self.part * MAX_PARTS {
            return Err(Error::NoSpace);
        }
        upload.received += data.len() as u64;
        // A full part goes out only once more comes (a file of exactly one
        // part is one PutObject). A chunk that is a whole part (the host
        // sends chunks of up to 8 MiB) is kept as it came; smaller ones are
        // gathered into one buffer of a part, reserved once.
        let part = self.part as usize;
        let mut at = 0;
        while at < data.len() {
            if upload.pending.len() >= part {
                let full = std::mem::take(&mut upload.pending);
                if let Err(e) = self.send_part(&mut upload, full) {
                    upload.failed = true;
                    return Err(e);
                }
            }
            if at == 0 && upload.pending.is_empty() && data.len() <= part {
                upload.pending = data;
                break;
            }
            let n = (part - upload.pending.len()).min(data.len() - at);
            // Out of memory is no-space for this upload, never a trap; the
            // bytes are lost, so the upload is failed.
            let room = part - upload.pending.len();
            if upload.pending.try_reserve_exact(room).is_err() {
                upload.failed = true;
                return Err(Error::NoSpace);
            }
            upload.pending.extend_from_slice(&data[at..at + n]);
            at += n;
        }
        Ok(())
    }

    /// Cuts what is not sent yet, or what was copied from the object the
    /// upload started from (the copy starts again, shorter); anything else
    /// is unsupported.
    fn set_size(&self, size: u64) -> Result<()> {
        let mut upload = self.upload.borrow_mut();
        let sent = upload.received - upload.pending.len() as u64;
        if size == upload.received {
            return Ok(());
        }
        if size < sent
            && sent == upload.copied
            && let Some(source) = upload.source.clone()
        {
            self.abort_now(&mut upload);
            *upload = Upload::default();
            return self.keep(&mut upload, &source, size);
        }
        if size < sent || size > upload.received {
            return Err(Error::Unsupported);
        }
        let keep = (size - sent) as usize;
        upload.pending.truncate(keep);
        upload.received = size;
        Ok(())
    }

    fn finish(&self) -> Result<FileInfo> {
        let mut upload = self.upload.borrow_mut();
        if upload.closed || upload.failed {
            return Err(invalid("the upload is closed, or a part of it failed"));
        }
        let state = state()?;
        if self.exclusive {
            match head(&self.key, None) {
                Ok(_) => {
                    self.abort_now(&mut upload);
                    return Err(Error::AlreadyExists);
                }
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let size = upload.received;
        let etag = if upload.multipart.is_none() {
            let body = std::mem::take(&mut upload.pending);
            let request = state.s3.put_object().bucket(&state.config.bucket).key(&self.key).body(ByteStream::from(body));
            let mut request = request.set_if_none_match(self.if_none_match()).customize();
            if self.exclusive {
                request = request.config_override(once());
            }
            if !state.config.sign_payload {
                request = request.disable_payload_signing();
            }
            let put = block_on(request.send()).map_err(|e| self.created_elsewhere(client::error("put", e)))?;
            put.e_tag().map(str::to_string)
        } else {
            if !upload.pending.is_empty() {
                let last = std::mem::take(&mut upload.pending);
                if let Err(e) = self.send_part(&mut upload, last) {
                    upload.failed = true;
                    return Err(e);
                }
            }
            let multipart = upload.multipart.as_ref().expect("multipart");
            let parts = CompletedMultipartUpload::builder().set_parts(Some(multipart.parts.clone())).build();
            let done = block_on(
                state
                    .s3
                    .complete_multipart_upload()
                    .bucket(&state.config.bucket)
                    .key(&self.key)
                    .upload_id(&multipart.id)
                    .multipart_upload(parts)
                    .set_if_none_match(self.if_none_match())
                    .customize()
                    .config_override(if self.exclusive { once() } else { aws_sdk_s3::config::Builder::new() })
                    .send(),
            )
            .map_err(|e| self.created_elsewhere(upload_error("complete multipart upload", e)))?;
            upload.multipart = None;
            done.e_tag().map(str::to_string)
        };
        upload.closed = true;
        let modified = aws_sdk_s3::primitives::DateTime::from_secs(now() as i64);
        Ok(file_info(size as i64, Some(&modified), etag.as_deref()))
    }

    fn abort(&self) {
        let mut upload = self.upload.borrow_mut();
        self.abort_now(&mut upload);
    }

    /// The upload id and the key: what `abort-orphan` needs.
    fn recovery_token(&self) -> Option<String> {
        let upload = self.upload.borrow();
        let token = format!("{}\n{}", upload.multipart.as_ref()?.id, self.key);
        (token.len() <= 1024).then_some(token)
    }
}

/// A writer dropped unfinished (the client went away) leaves no multipart
/// upload behind.
impl Drop for S3Writer {
    fn drop(&mut self) {
        let mut upload = self.upload.borrow_mut();
        if !upload.closed {
            self.abort_now(&mut upload);
        }
    }
}
