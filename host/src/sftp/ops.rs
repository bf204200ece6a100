//! One handler per SFTP request. Each returns the reply packet; errors become
//! a STATUS with a mapped code and a short message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};

use super::attrs::{long_name, to_attrs, to_set_attrs};
use super::framing::{MAX_PACKET, MAX_READ, MAX_WRITE, WireReader};
use super::handles::{DirState, HandleEntry, HandleKind, InflightTicket, WriteState};
use super::status::{message_of, status_of};
use super::{SftpSession, paths};
use crate::config::SetstatPolicy;
use crate::plugin::{FileInfo, StorageError, WriteOptions, validate};

/// Entries per READDIR reply: with names up to 1 KiB and their long names,
/// a reply stays well under the packet maximum.
const READDIR_BATCH: u32 = 64;
/// Most entries one directory handle lists: a plugin cannot keep a client
/// listing forever.
const MAX_LISTING: u64 = 10_000_000;

type Reply = Result<Packet, Packet>;

pub fn status(id: u32, code: StatusCode, message: &str) -> Packet {
    Packet::Status(Status { id, status_code: code, error_message: message.into(), language_tag: "en".into() })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "ok")
}

fn fail(id: u32, error: &StorageError) -> Packet {
    status(id, status_of(error), &message_of(error))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SftpSession {
    /// `ticket` is the one taken for this request when it was read off the
    /// wire, if it names an open handle.
    pub(super) async fn handle(&self, packet: Packet, ticket: Option<&InflightTicket>) -> Packet {
        let span = tracing::Span::current();
        let id = packet.get_request_id();
        let (op, result) = match packet {
            Packet::Init(init) => ("init", Ok(self.init(init.version))),
            Packet::Open(p) => ("open", self.open(p.id, &p.filename, p.pflags, &p.attrs).await),
            Packet::Close(p) => ("close", self.close(p.id, &p.handle).await),
            Packet::Read(p) => ("read", self.read(p.id, ticket, p.offset, p.len).await),
            Packet::Write(p) => ("write", self.write(p.id, ticket, p.offset, &p.data).await),
            Packet::Lstat(p) => ("lstat", self.stat(p.id, &p.path).await),
            Packet::Stat(p) => ("stat", self.stat(p.id, &p.path).await),
            Packet::Fstat(p) => ("fstat", self.fstat(p.id, ticket).await),
            Packet::SetStat(p) => ("setstat", self.setstat(p.id, &p.path, &p.attrs).await),
            Packet::FSetStat(p) => ("fsetstat", self.fsetstat(p.id, ticket, &p.attrs).await),
            Packet::OpenDir(p) => ("opendir", self.opendir(p.id, &p.path).await),
            Packet::ReadDir(p) => ("readdir", self.readdir(p.id, ticket).await),
            Packet::Remove(p) => ("remove", self.remove(p.id, &p.filename).await),
            Packet::MkDir(p) => ("mkdir", self.mkdir(p.id, &p.path, &p.attrs).await),
            Packet::RmDir(p) => ("rmdir", self.rmdir(p.id, &p.path).await),
            Packet::RealPath(p) => ("realpath", self.realpath(p.id, &p.path)),
            Packet::Rename(p) => ("rename", self.rename(p.id, &p.oldpath, &p.newpath, false).await),
            Packet::ReadLink(p) => ("readlink", self.readlink(p.id, &p.path).await),
            // russh-sftp names the fields in draft order; OpenSSH (and every
            // client following it) sends the target first, then the link.
            Packet::Symlink(p) => ("symlink", self.symlink(p.id, &p.targetpath, &p.linkpath).await),
            Packet::Extended(p) => ("extended", self.extended(p.id, &p.request, &p.data, ticket).await),
            _ => ("unexpected", Err(status(id, StatusCode::BadMessage, "not a request"))),
        };
        span.record("op", op);
        let reply = result.unwrap_or_else(|error| error);
        let outcome = match &reply {
            Packet::Status(s) => s.status_code.to_string(),
            _ => "Ok".into(),
        };
        span.record("result", outcome.as_str());
        reply
    }

    fn init(&self, client_version: u32) -> Packet {
        let mut extensions = HashMap::new();
        for (name, version) in [
            ("posix-rename@openssh.com", "1"),
            ("statvfs@openssh.com", "2"),
            ("fsync@openssh.com", "1"),
            ("limits@openssh.com", "1"),
        ] {
            extensions.insert(name.to_string(), version.to_string());
        }
        if self.storage.capabilities().hard_links {
            extensions.insert("hardlink@openssh.com".into(), "1".into());
        }
        tracing::debug!(client_version, "sftp init");
        Packet::Version(Version { version: 3, extensions })
    }

    /// Client path → plugin path, recording it on the request span.
    fn resolve(&self, id: u32, client_path: &str) -> Result<String, Packet> {
        let client = paths::normalize(client_path).ok_or_else(|| status(id, StatusCode::BadMessage, "bad path"))?;
        let plugin = paths::to_plugin(&self.principal.home, &client);
        validate::path(&plugin).map_err(|_| status(id, StatusCode::BadMessage, "path too long"))?;
        tracing::Span::current().record("path", plugin.as_str());
        Ok(plugin)
    }

    /// Waits `backend_delay` (benchmarks of a slow backend).
    async fn delay(&self) {
        if !self.settings.backend_delay.is_zero() {
            tokio::time::sleep(self.settings.backend_delay).await;
        }
    }

    async fn open(&self, id: u32, path: &str, flags: OpenFlags, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, path)?;
        self.delay().await;
        let kind = if flags.contains(OpenFlags::WRITE) || flags.contains(OpenFlags::APPEND) {
            let caps = self.storage.capabilities();
            let options = WriteOptions {
                create: flags.contains(OpenFlags::CREATE),
                truncate: flags.contains(OpenFlags::TRUNCATE),
                exclusive: flags.contains(OpenFlags::EXCLUDE),
                append: flags.contains(OpenFlags::APPEND),
                permissions: attrs.permissions.map(|p| p & 0o7777),
            };
            // The size before this write, so FSTAT and appends know where the file ends.
            let start_size = if options.truncate {
                0
            } else {
                self.storage.file_info(&path).await.map(|i| i.size).unwrap_or(0)
            };
            let writer = self.storage.begin_write(&path, options).await.map_err(|e| fail(id, &e))?;
            let state = WriteState::new(
                writer,
                caps.write_chunk as usize,
                options.append,
                start_size,
                options.permissions.unwrap_or(0o644),
                self.settings.backend_delay,
            );
            HandleKind::Write(tokio::sync::Mutex::new(state))
        } else {
            HandleKind::Read(self.storage.open_read(&path).await.map_err(|e| fail(id, &e))?)
        };
        self.new_handle(id, kind, path).await
    }

    async fn new_handle(&self, id: u32, kind: HandleKind, path: String) -> Reply {
        match self.handles.insert(kind, path, self.settings.max_handles) {
            Ok(handle) => Ok(Packet::Handle(Handle { id, handle })),
            Err(kind) => {
                // An upload that never gets a handle must leave nothing behind.
                if let HandleKind::Write(state) = kind {
                    let _ = state.into_inner().writer.abort().await;
                }
                Err(status(id, StatusCode::Failure, "too many open handles"))
            }
        }
    }

    fn unknown_handle(id: u32) -> Packet {
        status(id, StatusCode::Failure, "unknown handle")
    }

    /// The handle a request works on. A request read before a CLOSE of its
    /// handle holds the entry in its ticket, so it still runs (and CLOSE
    /// waits for it) even when the CLOSE has already taken the name away.
    /// The handle a request was matched to when it was read off the wire
    /// (`ticket_for`); no ticket means the handle was not open then.
    fn entry(id: u32, ticket: Option<&InflightTicket>) -> Result<Arc<HandleEntry>, Packet> {
        ticket.map(|t| t.entry().clone()).ok_or_else(|| Self::unknown_handle(id))
    }

    async fn close(&self, id: u32, handle: &str) -> Reply {
        let entry = self.handles.remove(handle).ok_or_else(|| Self::unknown_handle(id))?;
        tracing::Span::current().record("path", entry.path.as_str());
        entry.quiesce().await;
        match &entry.kind {
            HandleKind::Read(_) | HandleKind::Dir(_) => Ok(ok(id)),
            HandleKind::Write(state) => {
                let mut state = state.lock().await;
                // The real result of the commit: a failed upload fails here.
                state.commit().await.map_err(|e| fail(id, &e))?;
                if let Some(attrs) = state.deferred_attrs.take() {
                    self.apply_set_info(id, &entry.path, attrs).await?;
                }
                Ok(ok(id))
            }
        }
    }

    async fn read(&self, id: u32, ticket: Option<&InflightTicket>, offset: u64, len: u32) -> Reply {
        let entry = Self::entry(id, ticket)?;
        let HandleKind::Read(reader) = &entry.kind else {
            return Err(status(id, StatusCode::OpUnsupported, "handle not open for reading"));
        };
        if len == 0 {
            return Ok(Packet::Data(Data { id, data: Vec::new() }));
        }
        self.delay().await;
        let data = reader.read(offset, len.min(MAX_READ)).await.map_err(|e| fail(id, &e))?;
        if data.is_empty() {
            return Err(status(id, StatusCode::Eof, "end of file"));
        }
        tracing::Span::current().record("bytes", data.len());
        Ok(Packet::Data(Data { id, data }))
    }

    async fn write(&self, id: u32, ticket: Option<&InflightTicket>, offset: u64, data: &[u8]) -> Reply {
        let entry = Self::entry(id, ticket)?;
        let HandleKind::Write(state) = &entry.kind else {
            return Err(status(id, StatusCode::PermissionDenied, "handle not open for writing"));
        };
        if data.len() > MAX_WRITE as usize {
            return Err(status(id, StatusCode::BadMessage, "write larger than max-write-length"));
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(status(id, StatusCode::Failure, "offset out of range"));
        }
        tracing::Span::current().record("bytes", data.len());
        let mut state = state.lock().await;
        state.write(offset, data).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn stat(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        self.delay().await;
        let info = self.storage.file_info(&path).await.map_err(|e| fail(id, &e))?;
        Ok(self.attrs_reply(id, &info))
    }

    fn attrs_reply(&self, id: u32, info: &FileInfo) -> Packet {
        Packet::Attrs(Attrs { id, attrs: to_attrs(info, self.principal.uid, self.principal.gid) })
    }

    async fn fstat(&self, id: u32, ticket: Option<&InflightTicket>) -> Reply {
        let entry = Self::entry(id, ticket)?;
        if let HandleKind::Write(state) = &entry.kind {
            return Ok(self.attrs_reply(id, &state.lock().await.provisional_info()));
        }
        self.delay().await;
        let info = self.storage.file_info(&entry.path).await.map_err(|e| fail(id, &e))?;
        Ok(self.attrs_reply(id, &info))
    }

    async fn setstat(&self, id: u32, path: &str, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, path)?;
        let Some(set) = to_set_attrs(attrs) else { return Ok(ok(id)) };
        self.apply_set_info(id, &path, set).await
    }

    async fn fsetstat(&self, id: u32, ticket: Option<&InflightTicket>, attrs: &FileAttributes) -> Reply {
        let entry = Self::entry(id, ticket)?;
        let Some(set) = to_set_attrs(attrs) else { return Ok(ok(id)) };
        if let HandleKind::Write(state) = &entry.kind {
            // The content is not visible yet: apply once CLOSE commits it.
            state.lock().await.deferred_attrs = Some(set);
            return Ok(ok(id));
        }
        self.apply_set_info(id, &entry.path, set).await
    }

    async fn apply_set_info(&self, id: u32, path: &str, set: crate::plugin::SetAttrs) -> Reply {
        self.delay().await;
        match self.storage.set_info(path, set).await {
            Ok(()) => Ok(ok(id)),
            Err(StorageError::Unsupported) if self.settings.setstat_unsupported == SetstatPolicy::Ignore => Ok(ok(id)),
            Err(e) => Err(fail(id, &e)),
        }
    }

    async fn opendir(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        self.delay().await;
        let info = self.storage.file_info(&path).await.map_err(|e| fail(id, &e))?;
        if info.kind != crate::plugin::FileKind::Directory {
            return Err(status(id, StatusCode::Failure, "not a directory"));
        }
        let state = DirState { cursor: None, done: false, sent: 0 };
        self.new_handle(id, HandleKind::Dir(tokio::sync::Mutex::new(state)), path).await
    }

    async fn readdir(&self, id: u32, ticket: Option<&InflightTicket>) -> Reply {
        let entry = Self::entry(id, ticket)?;
        let HandleKind::Dir(state) = &entry.kind else {
            return Err(status(id, StatusCode::Failure, "not a directory handle"));
        };
        let mut state = state.lock().await;
        if state.done {
            return Err(status(id, StatusCode::Eof, "end of directory"));
        }
        self.delay().await;
        let page = self
            .storage
            .list_dir(&entry.path, state.cursor.as_deref(), READDIR_BATCH)
            .await
            .map_err(|e| fail(id, &e))?;
        state.sent += page.entries.len() as u64;
        state.done = page.next_cursor.is_none();
        if !state.done && state.sent >= MAX_LISTING {
            tracing::warn!(path = %entry.path, "listing cut after {MAX_LISTING} entries");
            state.done = true;
        }
        state.cursor = page.next_cursor;
        if page.entries.is_empty() {
            return Err(status(id, StatusCode::Eof, "end of directory"));
        }
        let now = now();
        let files = page
            .entries
            .into_iter()
            .map(|e| File {
                longname: long_name(&e.name, &e.info, &self.principal.user, now),
                attrs: to_attrs(&e.info, self.principal.uid, self.principal.gid),
                filename: e.name,
            })
            .collect();
        Ok(Packet::Name(Name { id, files }))
    }

    async fn remove(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        self.delay().await;
        self.storage.remove_file(&path).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn mkdir(&self, id: u32, path: &str, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, path)?;
        self.delay().await;
        let permissions = attrs.permissions.map(|p| p & 0o7777);
        self.storage.make_dir(&path, permissions).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn rmdir(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        if path == self.principal.home {
            return Err(status(id, StatusCode::PermissionDenied, "cannot remove the root"));
        }
        self.delay().await;
        self.storage.remove_dir(&path).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    fn realpath(&self, id: u32, path: &str) -> Reply {
        let client = paths::normalize(path).ok_or_else(|| status(id, StatusCode::BadMessage, "bad path"))?;
        let file = File { filename: client.clone(), longname: client, attrs: FileAttributes::empty() };
        Ok(Packet::Name(Name { id, files: vec![file] }))
    }

    async fn rename(&self, id: u32, from: &str, to: &str, overwrite: bool) -> Reply {
        let from = self.resolve(id, from)?;
        let to = self.resolve(id, to)?;
        if from == self.principal.home || to == self.principal.home {
            return Err(status(id, StatusCode::PermissionDenied, "cannot rename the root"));
        }
        self.delay().await;
        self.storage.rename(&from, &to, overwrite).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn readlink(&self, id: u32, path: &str) -> Reply {
        if !self.storage.capabilities().symlinks {
            return Err(status(id, StatusCode::OpUnsupported, "symbolic links are not supported"));
        }
        let path = self.resolve(id, path)?;
        self.delay().await;
        let target = self.storage.read_link(&path).await.map_err(|e| fail(id, &e))?;
        // Targets are stored in the plugin namespace: show them as the client sees them.
        let target = paths::to_client(&self.principal.home, &target).unwrap_or(target);
        let file = File { filename: target.clone(), longname: target, attrs: FileAttributes::empty() };
        Ok(Packet::Name(Name { id, files: vec![file] }))
    }

    /// The target is client input like any path: it is resolved (a relative
    /// one against the link's directory), clamped to the user's root and
    /// handed to the plugin as a plugin path, as the contract promises.
    async fn symlink(&self, id: u32, link: &str, target: &str) -> Reply {
        if !self.storage.capabilities().symlinks {
            return Err(status(id, StatusCode::OpUnsupported, "symbolic links are not supported"));
        }
        let bad = || status(id, StatusCode::BadMessage, "bad path");
        let link_client = paths::normalize(link).ok_or_else(bad)?;
        let target_client = if target.starts_with('/') {
            paths::normalize(target)
        } else {
            paths::normalize(&format!("{link_client}/../{target}"))
        }
        .ok_or_else(bad)?;
        let target = paths::to_plugin(&self.principal.home, &target_client);
        validate::path(&target).map_err(|_| status(id, StatusCode::BadMessage, "path too long"))?;
        let link = self.resolve(id, link)?;
        self.delay().await;
        self.storage.make_link(&target, &link).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn extended(&self, id: u32, request: &str, data: &[u8], ticket: Option<&InflightTicket>) -> Reply {
        let mut args = WireReader::new(data);
        let bad = || status(id, StatusCode::BadMessage, "malformed extended request");
        match request {
            "posix-rename@openssh.com" => {
                let from = args.utf8().ok_or_else(bad)?;
                let to = args.utf8().ok_or_else(bad)?;
                self.rename(id, from, to, true).await
            }
            "statvfs@openssh.com" => {
                let path = self.resolve(id, args.utf8().ok_or_else(bad)?)?;
                self.delay().await;
                let space = self.storage.space(&path).await.map_err(|e| fail(id, &e))?;
                let block = u64::from(space.block_size.max(1));
                let fields = [
                    block,
                    block,
                    space.total_bytes / block,
                    space.free_bytes / block,
                    space.available_bytes / block,
                    space.total_files,
                    space.free_files,
                    space.free_files,
                    0,
                    0,
                    validate::MAX_NAME_LEN as u64,
                ];
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: u64s(&fields) }))
            }
            "fsync@openssh.com" => {
                args.utf8().ok_or_else(bad)?; // the handle was matched in `ticket_for`
                let entry = Self::entry(id, ticket)?;
                if let HandleKind::Write(state) = &entry.kind {
                    // Everything sent so far reaches the plugin; it becomes
                    // visible at CLOSE, as the contract says.
                    state.lock().await.flush().await.map_err(|e| fail(id, &e))?;
                }
                Ok(ok(id))
            }
            "limits@openssh.com" => {
                let fields = [
                    u64::from(MAX_PACKET),
                    u64::from(MAX_READ),
                    u64::from(MAX_WRITE),
                    self.settings.max_handles as u64,
                ];
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: u64s(&fields) }))
            }
            "hardlink@openssh.com" if self.storage.capabilities().hard_links => {
                let from = self.resolve(id, args.utf8().ok_or_else(bad)?)?;
                let to = self.resolve(id, args.utf8().ok_or_else(bad)?)?;
                self.delay().await;
                self.storage.hard_link(&from, &to).await.map_err(|e| fail(id, &e))?;
                Ok(ok(id))
            }
            _ => Err(status(id, StatusCode::OpUnsupported, "extension not supported")),
        }
    }
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}
