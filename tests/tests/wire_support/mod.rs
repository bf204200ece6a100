//! SFTP at the byte level, for tests that need what a client library hides:
//! pipelined requests, the order replies come back in, names that are not
//! UTF-8, exact INIT versions.
#![allow(dead_code)]

use russh::ChannelStream;
use russh::client::Msg;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::server_support::{Client, TestServer, bounded, sftp_channel};

pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_LSTAT: u8 = 7;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_SETSTAT: u8 = 9;
pub const FXP_FSETSTAT: u8 = 10;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_MKDIR: u8 = 14;
pub const FXP_RMDIR: u8 = 15;
pub const FXP_REALPATH: u8 = 16;
pub const FXP_RENAME: u8 = 18;
pub const FXP_STAT: u8 = 17;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;

pub const FXF_READ: u32 = 1;
pub const FXF_WRITE: u32 = 2;
pub const FXF_APPEND: u32 = 4;
pub const FXF_CREAT: u32 = 8;
pub const FXF_TRUNC: u32 = 0x10;
pub const FXF_EXCL: u32 = 0x20;

/// A request body under construction: the type and id come first.
pub struct Body(Vec<u8>);

impl Body {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    pub fn string(mut self, s: impl AsRef<[u8]>) -> Self {
        let s = s.as_ref();
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Empty attributes (flags 0).
    pub fn no_attrs(self) -> Self {
        self.u32(0)
    }
}

/// One reply: its type, id and the rest of its body.
#[derive(Debug)]
pub struct Reply {
    pub kind: u8,
    pub id: u32,
    pub body: Vec<u8>,
}

impl Reply {
    /// The status code of a STATUS reply.
    pub fn status(&self) -> u32 {
        assert_eq!(self.kind, FXP_STATUS, "expected a STATUS, got {self:?}");
        u32::from_be_bytes(self.body[..4].try_into().unwrap())
    }
    /// The message of a STATUS reply.
    pub fn message(&self) -> String {
        let len = u32::from_be_bytes(self.body[4..8].try_into().unwrap()) as usize;
        String::from_utf8_lossy(&self.body[8..8 + len]).into_owned()
    }
    /// The handle of a HANDLE reply.
    pub fn handle(&self) -> Vec<u8> {
        assert_eq!(self.kind, FXP_HANDLE, "expected a HANDLE, got {self:?}");
        let len = u32::from_be_bytes(self.body[..4].try_into().unwrap()) as usize;
        self.body[4..4 + len].to_vec()
    }
    /// The bytes of a DATA reply.
    pub fn data(&self) -> Vec<u8> {
        assert_eq!(self.kind, FXP_DATA, "expected DATA, got {self:?}");
        let len = u32::from_be_bytes(self.body[..4].try_into().unwrap()) as usize;
        self.body[4..4 + len].to_vec()
    }
    /// The file names of a NAME reply.
    pub fn names(&self) -> Vec<String> {
        self.long_names().into_iter().map(|(name, _)| name).collect()
    }
    /// The file names of a NAME reply with their long names (`ls -l` lines).
    pub fn long_names(&self) -> Vec<(String, String)> {
        assert_eq!(self.kind, FXP_NAME, "expected NAME, got {self:?}");
        let count = u32::from_be_bytes(self.body[..4].try_into().unwrap());
        let mut rest = &self.body[4..];
        let take_string = |rest: &mut &[u8]| {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let s = String::from_utf8_lossy(&rest[4..4 + len]).into_owned();
            *rest = &rest[4 + len..];
            s
        };
        let mut names = Vec::new();
        for _ in 0..count {
            let name = take_string(&mut rest);
            names.push((name, take_string(&mut rest)));
            skip_attrs(&mut rest);
        }
        names
    }
    /// The size in an ATTRS reply.
    pub fn size(&self) -> u64 {
        assert_eq!(self.kind, FXP_ATTRS, "expected ATTRS, got {self:?}");
        let flags = u32::from_be_bytes(self.body[..4].try_into().unwrap());
        assert!(flags & 1 != 0, "ATTRS without a size");
        u64::from_be_bytes(self.body[4..12].try_into().unwrap())
    }
}

fn skip_attrs(rest: &mut &[u8]) {
    let flags = u32::from_be_bytes(rest[..4].try_into().unwrap());
    let mut n = 4;
    if flags & 1 != 0 {
        n += 8;
    }
    if flags & 2 != 0 {
        n += 8;
    }
    if flags & 4 != 0 {
        n += 4;
    }
    if flags & 8 != 0 {
        n += 8;
    }
    assert!(flags & 0x8000_0000 == 0, "extended attributes not expected");
    *rest = &rest[n..];
}

/// A raw SFTP session over a real SSH channel.
pub struct Wire {
    stream: ChannelStream<Msg>,
    /// The connection lives as long as the channel's stream.
    _ssh: russh::client::Handle<Client>,
    next_id: u32,
    /// The version the server answered INIT with.
    pub version: u32,
    /// The extensions it announced, by name.
    pub extensions: Vec<String>,
}

impl Wire {
    /// Logs `user` in with their key and sends INIT with `version`.
    pub async fn open(server: &TestServer, user: &str, version: u32) -> Self {
        let ssh = server.login(user).await;
        let channel = sftp_channel(&ssh).await;
        let mut wire = Self { stream: channel.into_stream(), _ssh: ssh, next_id: 1, version: 0, extensions: Vec::new() };
        let mut init = vec![0, 0, 0, 5, 1];
        init.extend_from_slice(&version.to_be_bytes());
        wire.write_raw(&init).await;
        let reply = wire.read_raw().await;
        assert_eq!(reply[0], 2, "VERSION expected: {reply:?}");
        wire.version = u32::from_be_bytes(reply[1..5].try_into().unwrap());
        let mut rest = &reply[5..];
        while rest.len() >= 4 {
            let mut field = || {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                let value = String::from_utf8_lossy(&rest[4..4 + len]).into_owned();
                rest = &rest[4 + len..];
                value
            };
            let name = field();
            let _version = field();
            wire.extensions.push(name);
        }
        wire
    }

    async fn write_raw(&mut self, bytes: &[u8]) {
        bounded("sending a packet", self.stream.write_all(bytes)).await.expect("sending a packet");
        bounded("flush", self.stream.flush()).await.expect("flush");
    }

    async fn read_raw(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        bounded("reading a reply", self.stream.read_exact(&mut len)).await.expect("reading a reply length");
        let mut packet = vec![0; u32::from_be_bytes(len) as usize];
        bounded("reading a reply", self.stream.read_exact(&mut packet)).await.expect("reading a reply");
        packet
    }

    /// Sends a request without waiting for its reply; returns its id.
    pub async fn send(&mut self, kind: u8, body: Body) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut packet = Vec::with_capacity(body.0.len() + 9);
        packet.extend_from_slice(&((body.0.len() + 5) as u32).to_be_bytes());
        packet.push(kind);
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&body.0);
        self.write_raw(&packet).await;
        id
    }

    /// The next reply, whatever its id.
    pub async fn recv(&mut self) -> Reply {
        let packet = self.read_raw().await;
        Reply { kind: packet[0], id: u32::from_be_bytes(packet[1..5].try_into().unwrap()), body: packet[5..].to_vec() }
    }

    /// Sends a request and waits for its reply (nothing else may be in flight).
    pub async fn call(&mut self, kind: u8, body: Body) -> Reply {
        let id = self.send(kind, body).await;
        let reply = self.recv().await;
        assert_eq!(reply.id, id, "reply to the request just sent");
        reply
    }

    pub async fn open_file(&mut self, path: &str, flags: u32) -> Vec<u8> {
        self.call(FXP_OPEN, Body::new().string(path).u32(flags).no_attrs()).await.handle()
    }
}
