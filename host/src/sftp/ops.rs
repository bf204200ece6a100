//! One handler per SFTP request. Each returns the reply packet; errors become
//! a STATUS with a mapped code and a short message.

use std::collections::HashMap;
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};

use super::attrs::{escape_for_display, long_name, to_attrs, to_set_attrs};
use super::framing::{MAX_PACKET, MAX_READ, MAX_WRITE, WireReader};
use super::handles::{HandleEntry, HandleKind};
use super::status::{message_of, status_of};
use super::{SftpSession, Target, paths};
use crate::plugin::{FileInfo, StorageError, WriteOptions, validate};
use crate::vfs::Access;

/// Entries per READDIR reply: with names up to 255 bytes and their long
/// names, a reply stays well under the packet maximum.
const READDIR_BATCH: u32 = 64;

type Reply = Result<Packet, Packet>;

pub fn status(id: u32, code: StatusCode, message: &str) -> Packet {
    Packet::Status(Status { id, status_code: code, error_message: message.into(), language_tag: "en".into() })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "ok")
}

/// A path written with a trailing `/` names a directory: stat(2) of
/// `file/` fails with ENOTDIR, and OpenSSH's server says so.
fn names_a_directory(client_path: &str, info: FileInfo) -> Result<FileInfo, StorageError> {
    if paths::ends_as_directory(client_path) && info.kind != crate::plugin::FileKind::Directory {
        return Err(StorageError::NotADirectory);
    }
    Ok(info)
}

/// A trailing `/` asks for a directory whatever the request, as the kernel
/// resolves a path: open(2), unlink(2), truncate(2) or rename(2) of `file/`
/// fail with ENOTDIR (no such file, from OpenSSH's server), and creating
/// `new/` with EISDIR. Only such paths cost the extra STAT.
async fn directory_if_named_so(files: &crate::vfs::Files, client_path: &str, path: &str, creates: bool) -> Result<(), StorageError> {
    if !paths::ends_as_directory(client_path) {
        return Ok(());
    }
    match files.stat(path).await {
        Ok(info) => names_a_directory(client_path, info).map(drop),
        // A new name below an existing directory: EISDIR; below none: ENOENT.
        Err(StorageError::NotFound) if creates => match files.stat(paths::parent(path)).await {
            Ok(parent) if parent.kind == crate::plugin::FileKind::Directory => Err(StorageError::IsADirectory),
            Ok(_) => Err(StorageError::NotADirectory),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    }
}

fn fail(id: u32, error: &StorageError) -> Packet {
    status(id, status_of(error), &message_of(error))
}


impl SftpSession {
    /// `target` is the handle matched for this request when it was read off
    /// the wire.
    pub(super) async fn handle(&self, packet: Packet, target: &Target) -> Packet {
        let span = tracing::Span::current();
        let id = packet.get_request_id();
        let started = std::time::Instant::now();
        let written = match &packet {
            Packet::Write(p) => p.data.len() as u64,
            _ => 0,
        };
        let (op, result) = match packet {
            Packet::Init(init) => ("init", Ok(self.init(init.version))),
            Packet::Open(p) => ("open", self.open(p.id, &p.filename, p.pflags, &p.attrs).await),
            Packet::Close(p) => ("close", self.close(p.id, target).await),
            Packet::Read(p) => ("read", self.read(p.id, target, p.offset, p.len).await),
            Packet::Write(p) => ("write", self.write(p.id, target, p.offset, &p.data).await),
            Packet::Lstat(p) => ("lstat", self.lstat(p.id, &p.path).await),
            Packet::Stat(p) => ("stat", self.stat(p.id, &p.path).await),
            Packet::Fstat(p) => ("fstat", self.fstat(p.id, target).await),
            Packet::SetStat(p) => ("setstat", self.setstat(p.id, &p.path, &p.attrs).await),
            Packet::FSetStat(p) => ("fsetstat", self.fsetstat(p.id, target, &p.attrs).await),
            Packet::OpenDir(p) => ("opendir", self.opendir(p.id, &p.path).await),
            Packet::ReadDir(p) => ("readdir", self.readdir(p.id, target).await),
            Packet::Remove(p) => ("remove", self.remove(p.id, &p.filename).await),
            Packet::MkDir(p) => ("mkdir", self.mkdir(p.id, &p.path, &p.attrs).await),
            Packet::RmDir(p) => ("rmdir", self.rmdir(p.id, &p.path).await),
            Packet::RealPath(p) => ("realpath", self.realpath(p.id, &p.path)),
            Packet::Rename(p) => ("rename", self.rename(p.id, &p.oldpath, &p.newpath, false).await),
            Packet::ReadLink(p) => ("readlink", self.readlink(p.id, &p.path).await),
            // russh-sftp names the fields in draft order; OpenSSH (and every
            // client following it) sends the target first, then the link.
            Packet::Symlink(p) => ("symlink", self.symlink(p.id, &p.targetpath, &p.linkpath).await),
            Packet::Extended(p) => ("extended", self.extended(p.id, &p.request, &p.data, target).await),
            _ => ("unexpected", Err(status(id, StatusCode::BadMessage, "not a request"))),
        };
        span.record("op", op);
        let reply = result.unwrap_or_else(|error| error);
        let outcome = match &reply {
            Packet::Status(s) => s.status_code.to_string(),
            _ => "Ok".into(),
        };
        span.record("result", outcome.as_str());
        self.count(op, &outcome, started.elapsed(), written, &reply);
        reply
    }

    /// The request in the operator's metrics and the connection's traffic.
    /// Labels stay few: the plugin (configured), the operation and status
    /// (fixed sets); never a path or a user.
    fn count(&self, op: &'static str, outcome: &str, took: std::time::Duration, written: u64, reply: &Packet) {
        use std::sync::atomic::Ordering::Relaxed;
        let plugin = self.principal.plugin.clone();
        let read = match reply {
            Packet::Data(data) => data.data.len() as u64,
            _ => 0,
        };
        metrics::counter!("wasftp_sftp_requests_total", "plugin" => plugin.clone(), "op" => op, "status" => outcome.to_string())
            .increment(1);
        metrics::histogram!("wasftp_sftp_request_seconds", "plugin" => plugin.clone(), "op" => op).record(took.as_secs_f64());
        if written > 0 {
            self.traffic.bytes_in.fetch_add(written, Relaxed);
            metrics::counter!("wasftp_sftp_bytes_total", "plugin" => plugin.clone(), "direction" => "in").increment(written);
        }
        if read > 0 {
            self.traffic.bytes_out.fetch_add(read, Relaxed);
            metrics::counter!("wasftp_sftp_bytes_total", "plugin" => plugin, "direction" => "out").increment(read);
        }
    }

    /// Extensions are advertised only when the plugin can keep their promise.
    fn init(&self, client_version: u32) -> Packet {
        let caps = self.files.capabilities();
        let mut extensions = HashMap::new();
        let offered = [
            // Replaces the target: in one step when the plugin's rename is
            // atomic, else as the plugin can (object storage: copy, then
            // delete), as other SFTP servers over object storage do.
            ("posix-rename@openssh.com", "1", true),
            ("statvfs@openssh.com", "2", true),
            ("limits@openssh.com", "1", true),
            ("hardlink@openssh.com", "1", caps.hard_links),
            ("copy-data", "1", caps.copy),
            // A synced file is committed, which only a plugin whose
            // committed content is durable can promise to keep.
            ("fsync@openssh.com", "1", caps.durable_sync),
        ];
        for (name, version, _) in offered.iter().filter(|(_, _, on)| *on) {
            extensions.insert(name.to_string(), version.to_string());
        }
        tracing::debug!(client_version, "sftp init");
        Packet::Version(Version { version: client_version.min(3), extensions })
    }

    /// Client path → plugin path, recording it on the request span.
    fn resolve(&self, id: u32, client_path: &str) -> Result<String, Packet> {
        let client = paths::normalize(client_path).ok_or_else(|| status(id, StatusCode::BadMessage, "bad path"))?;
        if paths::longest_segment(&client) > validate::MAX_NAME_LEN {
            let message = format!("file name longer than {} bytes", validate::MAX_NAME_LEN);
            return Err(status(id, StatusCode::Failure, &message));
        }
        let plugin = paths::to_plugin(&self.principal.home, &client);
        validate::path(&plugin).map_err(|_| status(id, StatusCode::BadMessage, "path too long"))?;
        tracing::Span::current().record("path", plugin.as_str());
        Ok(plugin)
    }

    /// OPEN as `sftp-server` reads the flags: READ and WRITE together give a
    /// read-write handle, WRITE or APPEND alone an upload, anything else a
    /// read-only handle.
    async fn open(&self, id: u32, client_path: &str, flags: OpenFlags, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, client_path)?;
        let writes = flags.contains(OpenFlags::WRITE) || flags.contains(OpenFlags::APPEND);
        let options = WriteOptions {
            create: flags.contains(OpenFlags::CREATE),
            truncate: flags.contains(OpenFlags::TRUNCATE),
            exclusive: flags.contains(OpenFlags::EXCLUDE),
            append: flags.contains(OpenFlags::APPEND),
            permissions: attrs.permissions.map(|p| p & 0o7777),
        };
        let access = match (writes, flags.contains(OpenFlags::READ)) {
            (true, true) => Access::ReadWrite,
            (true, false) => Access::Write,
            (false, _) => Access::Read,
        };
        directory_if_named_so(&self.files, client_path, &path, options.create).await.map_err(|e| fail(id, &e))?;
        let file = self.files.open(&path, access, options).await.map_err(|e| fail(id, &e))?;
        self.new_handle(id, HandleKind::File(file), path).await
    }

    async fn new_handle(&self, id: u32, kind: HandleKind, path: String) -> Reply {
        match self.handles.insert(kind, path, self.settings.max_handles) {
            Ok(handle) => Ok(Packet::Handle(Handle { id, handle })),
            Err(kind) => {
                // An upload that never gets a handle must leave nothing behind.
                if let Some(file) = kind.file() {
                    let _ = file.abort().await;
                }
                Err(status(id, StatusCode::Failure, "too many open handles"))
            }
        }
    }

    fn invalid_handle(id: u32) -> Packet {
        status(id, StatusCode::Failure, "invalid handle")
    }

    /// The handle a request was matched to when it was read off the wire
    /// (`target_of`); it stays usable after a later CLOSE took the name away.
    fn entry(id: u32, target: &Target) -> Result<Arc<HandleEntry>, Packet> {
        match target {
            Target::Open(ticket) | Target::Copy { destination: ticket, .. } => Ok(ticket.entry().clone()),
            Target::None | Target::Closing(_) => Err(Self::invalid_handle(id)),
        }
    }

    /// The open file a request on a handle works on; `refusal` for a
    /// directory handle.
    fn file<'a>(id: u32, entry: &'a HandleEntry, refusal: &str) -> Result<&'a crate::vfs::Handle, Packet> {
        entry.kind.file().ok_or_else(|| status(id, StatusCode::PermissionDenied, refusal))
    }

    async fn close(&self, id: u32, target: &Target) -> Reply {
        let Target::Closing(entry) = target else { return Err(Self::invalid_handle(id)) };
        tracing::Span::current().record("path", entry.path.as_str());
        entry.quiesce().await;
        if let Some(file) = entry.kind.file() {
            // The real result of the commit: a failed upload fails here.
            file.close().await.map_err(|e| fail(id, &e))?;
        }
        Ok(ok(id))
    }

    async fn read(&self, id: u32, target: &Target, offset: u64, len: u32) -> Reply {
        let entry = Self::entry(id, target)?;
        let file = Self::file(id, &entry, NOT_FOR_READING)?;
        if len == 0 {
            return Ok(Packet::Data(Data { id, data: Vec::new() }));
        }
        if !file.reads() {
            return Err(status(id, StatusCode::PermissionDenied, NOT_FOR_READING));
        }
        let data = file.read(offset, len.min(MAX_READ)).await.map_err(|e| fail(id, &e))?;
        if data.is_empty() {
            return Err(status(id, StatusCode::Eof, "end of file"));
        }
        tracing::Span::current().record("bytes", data.len());
        Ok(Packet::Data(Data { id, data }))
    }

    async fn write(&self, id: u32, target: &Target, offset: u64, data: &[u8]) -> Reply {
        let entry = Self::entry(id, target)?;
        if data.len() > MAX_WRITE as usize {
            return Err(status(id, StatusCode::BadMessage, "write larger than max-write-length"));
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(status(id, StatusCode::Failure, "offset out of range"));
        }
        let file = Self::file(id, &entry, NOT_FOR_WRITING)?;
        if !file.writes() {
            return Err(status(id, StatusCode::PermissionDenied, NOT_FOR_WRITING));
        }
        if data.is_empty() {
            // As pwrite(2) of nothing: the file does not change, not even its size.
            return Ok(ok(id));
        }
        tracing::Span::current().record("bytes", data.len());
        file.write(offset, data).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn stat(&self, id: u32, client_path: &str) -> Reply {
        let path = self.resolve(id, client_path)?;
        let info = self.files.stat(&path).await.map_err(|e| fail(id, &e))?;
        let info = names_a_directory(client_path, info).map_err(|e| fail(id, &e))?;
        Ok(self.attrs_reply(id, &info))
    }

    /// LSTAT describes a symbolic link itself, not what it points to;
    /// `link/` names what it points to, as lstat(2) resolves it.
    async fn lstat(&self, id: u32, client_path: &str) -> Reply {
        let path = self.resolve(id, client_path)?;
        let info = if paths::ends_as_directory(client_path) {
            self.files.stat(&path).await
        } else {
            self.files.link_stat(&path).await
        };
        let info = info.and_then(|info| names_a_directory(client_path, info)).map_err(|e| fail(id, &e))?;
        Ok(self.attrs_reply(id, &info))
    }

    fn attrs_reply(&self, id: u32, info: &FileInfo) -> Packet {
        Packet::Attrs(Attrs { id, attrs: to_attrs(info, self.principal.uid, self.principal.gid) })
    }

    async fn fstat(&self, id: u32, target: &Target) -> Reply {
        let entry = Self::entry(id, target)?;
        let info = match entry.kind.file() {
            Some(file) => file.info().await,
            None => self.files.stat(&entry.path).await,
        };
        Ok(self.attrs_reply(id, &info.map_err(|e| fail(id, &e))?))
    }

    async fn setstat(&self, id: u32, client_path: &str, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, client_path)?;
        directory_if_named_so(&self.files, client_path, &path, false).await.map_err(|e| fail(id, &e))?;
        let Some(set) = to_set_attrs(attrs) else { return Ok(ok(id)) };
        self.files.set_info(&path, set).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn fsetstat(&self, id: u32, target: &Target, attrs: &FileAttributes) -> Reply {
        let entry = Self::entry(id, target)?;
        let Some(set) = to_set_attrs(attrs) else { return Ok(ok(id)) };
        match entry.kind.file() {
            Some(file) => file.set_attrs(set).await,
            None => self.files.set_info(&entry.path, set).await,
        }
        .map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn opendir(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        let info = self.files.stat(&path).await.map_err(|e| fail(id, &e))?;
        if info.kind != crate::plugin::FileKind::Directory {
            // opendir(3) of a file: ENOTDIR, no such file from OpenSSH's server.
            return Err(fail(id, &StorageError::NotADirectory));
        }
        let listing = self.files.start_listing(&path);
        self.new_handle(id, HandleKind::Dir(tokio::sync::Mutex::new(listing)), path).await
    }

    async fn readdir(&self, id: u32, target: &Target) -> Reply {
        let entry = Self::entry(id, target)?;
        let HandleKind::Dir(listing) = &entry.kind else {
            return Err(status(id, StatusCode::Failure, "not a directory handle"));
        };
        let mut listing = listing.lock().await;
        let entries = self.files.next_entries(&mut listing, READDIR_BATCH).await.map_err(|e| fail(id, &e))?;
        if entries.is_empty() {
            return Err(status(id, StatusCode::Eof, "end of directory"));
        }
        let now = crate::vfs::unix_now();
        let files = entries
            .into_iter()
            .map(|(name, info)| File {
                longname: long_name(&name, &info, &self.principal.user, now),
                attrs: to_attrs(&info, self.principal.uid, self.principal.gid),
                filename: name,
            })
            .collect();
        Ok(Packet::Name(Name { id, files }))
    }

    async fn remove(&self, id: u32, client_path: &str) -> Reply {
        let path = self.resolve(id, client_path)?;
        if paths::ends_as_directory(client_path) {
            // unlink(2) of `name/` never removes anything, and looks at the
            // name itself (a link is not followed): a directory is EISDIR,
            // anything else ENOTDIR, nothing there ENOENT.
            let own = self.files.link_stat(&path).await.map_err(|e| fail(id, &e))?;
            let dir = own.kind == crate::plugin::FileKind::Directory;
            let refusal = if dir { StorageError::IsADirectory } else { StorageError::NotADirectory };
            return Err(fail(id, &refusal));
        }
        self.files.remove_file(&path).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn mkdir(&self, id: u32, path: &str, attrs: &FileAttributes) -> Reply {
        let path = self.resolve(id, path)?;
        let permissions = attrs.permissions.map(|p| p & 0o7777);
        self.files.make_dir(&path, permissions).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn rmdir(&self, id: u32, path: &str) -> Reply {
        let path = self.resolve(id, path)?;
        if path == self.principal.home {
            return Err(status(id, StatusCode::PermissionDenied, "cannot remove the root"));
        }
        self.files.remove_dir(&path).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    fn realpath(&self, id: u32, path: &str) -> Reply {
        let client = paths::normalize(path).ok_or_else(|| status(id, StatusCode::BadMessage, "bad path"))?;
        let file = File { longname: escape_for_display(&client).into_owned(), filename: client, attrs: FileAttributes::empty() };
        Ok(Packet::Name(Name { id, files: vec![file] }))
    }

    async fn rename(&self, id: u32, client_from: &str, client_to: &str, overwrite: bool) -> Reply {
        let from = self.resolve(id, client_from)?;
        let to = self.resolve(id, client_to)?;
        if from == self.principal.home || to == self.principal.home {
            return Err(status(id, StatusCode::PermissionDenied, "cannot rename the root"));
        }
        // `mv file dir/` of a missing `dir` is ENOTDIR too: what moves must be a directory.
        let named = if paths::ends_as_directory(client_to) { client_to } else { client_from };
        directory_if_named_so(&self.files, named, &from, false).await.map_err(|e| fail(id, &e))?;
        self.files.rename(&from, &to, overwrite).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn readlink(&self, id: u32, path: &str) -> Reply {
        if !self.files.capabilities().symlinks {
            return Err(status(id, StatusCode::OpUnsupported, "symbolic links are not supported"));
        }
        let path = self.resolve(id, path)?;
        let target = self.files.read_link(&path).await.map_err(|e| fail(id, &e))?;
        // Targets are stored in the plugin namespace: show them as the client
        // sees them, and never show where the user's root is.
        let outside = || status(id, StatusCode::PermissionDenied, "link points outside your root");
        let target = paths::normalize_absolute(&target).ok_or_else(outside)?;
        let target = paths::to_client(&self.principal.home, &target).ok_or_else(outside)?;
        let file = File { longname: escape_for_display(&target).into_owned(), filename: target, attrs: FileAttributes::empty() };
        Ok(Packet::Name(Name { id, files: vec![file] }))
    }

    /// The target is client input like any path: it is resolved (a relative
    /// one against the link's directory), clamped to the user's root and
    /// handed to the plugin as a plugin path, as the contract promises.
    async fn symlink(&self, id: u32, link: &str, target: &str) -> Reply {
        if !self.files.capabilities().symlinks {
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
        self.files.make_link(&target, &link).await.map_err(|e| fail(id, &e))?;
        Ok(ok(id))
    }

    async fn extended(&self, id: u32, request: &str, data: &[u8], target: &Target) -> Reply {
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
                let space = self.files.space(&path).await.map_err(|e| fail(id, &e))?;
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
            "copy-data" if self.files.capabilities().copy => {
                args.utf8().ok_or_else(bad)?; // both handles were matched in `target_of`
                let read_offset = args.u64().ok_or_else(bad)?;
                let length = args.u64().ok_or_else(bad)?;
                args.utf8().ok_or_else(bad)?;
                let write_offset = args.u64().ok_or_else(bad)?;
                let Target::Copy { destination, source } = target else { return Err(Self::invalid_handle(id)) };
                let (source, destination) = (source.entry().clone(), destination.entry().clone());
                self.copy_data(id, &source, read_offset, length, &destination, write_offset).await
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
            "fsync@openssh.com" if self.files.capabilities().durable_sync => {
                args.utf8().ok_or_else(bad)?; // the handle was matched in `target_of`
                // As `sftp-server`: a handle not open names no file.
                let entry = Self::entry(id, target).map_err(|_| status(id, StatusCode::NoSuchFile, "no such handle"))?;
                tracing::Span::current().record("path", entry.path.as_str());
                // As `sftp-server`: fsync of a directory handle names no file.
                let file = entry.kind.file().ok_or_else(|| status(id, StatusCode::NoSuchFile, "not a file handle"))?;
                file.sync().await.map_err(|e| fail(id, &e))?;
                Ok(ok(id))
            }
            "hardlink@openssh.com" if self.files.capabilities().hard_links => {
                let from = self.resolve(id, args.utf8().ok_or_else(bad)?)?;
                let to = self.resolve(id, args.utf8().ok_or_else(bad)?)?;
                self.files.hard_link(&from, &to).await.map_err(|e| fail(id, &e))?;
                Ok(ok(id))
            }
            _ => Err(status(id, StatusCode::OpUnsupported, "extension not supported")),
        }
    }
}

impl SftpSession {
    /// `copy-data`: bytes from one open handle to another without a round
    /// trip through the client (how, the file layer decides).
    async fn copy_data(
        &self,
        id: u32,
        source: &Arc<HandleEntry>,
        read_offset: u64,
        length: u64,
        destination: &Arc<HandleEntry>,
        write_offset: u64,
    ) -> Reply {
        if Arc::ptr_eq(source, destination) {
            return Err(status(id, StatusCode::Failure, "copy-data within one handle is not supported"));
        }
        let from = source.kind.file().filter(|file| file.reads());
        let from = from.ok_or_else(|| status(id, StatusCode::PermissionDenied, "copy-data source not open for reading"))?;
        let to = destination.kind.file().filter(|file| file.writes());
        let to = to.ok_or_else(|| status(id, StatusCode::PermissionDenied, "copy-data destination not open for writing"))?;
        let copied = self.files.copy_data(from, read_offset, length, to, write_offset).await.map_err(|e| fail(id, &e))?;
        if let Some(bytes) = copied {
            tracing::Span::current().record("bytes", bytes);
        }
        Ok(ok(id))
    }
}

/// Why a READ or WRITE on a handle not opened for it is refused.
const NOT_FOR_READING: &str = "handle not open for reading";
const NOT_FOR_WRITING: &str = "handle not open for writing";

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}
