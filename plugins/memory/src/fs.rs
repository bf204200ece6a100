//! The in-memory filesystem, independent of the component bindings so it can
//! be unit-tested natively. File content is an `Rc<Vec<u8>>`: readers pin a
//! snapshot by cloning the `Rc`, mutation goes through `Rc::make_mut`
//! (copy-on-write only while a reader still holds the old version), and a
//! committed writer moves its buffer in without copying.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasftp_sdk::path;
use wasftp_sdk::{
    DirEntry, DirPage, Error, FileInfo, FileKind, Result, SetAttrs, SpaceInfo, WriteOptions,
    invalid,
};

pub const DEFAULT_FILE_PERMS: u32 = 0o644;
pub const DEFAULT_DIR_PERMS: u32 = 0o755;
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Free space reported when there is no quota.
const UNLIMITED_FREE: u64 = 1 << 40;
const FREE_FILES: u64 = 1 << 32;
const BLOCK_SIZE: u32 = 4096;

pub type Content = Rc<Vec<u8>>;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug)]
enum Kind {
    File(Content),
    Dir(BTreeMap<String, Node>),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    perms: u32,
    mtime: u64,
    atime: u64,
}

impl Node {
    fn new_dir(perms: u32) -> Self {
        let t = now();
        Node {
            kind: Kind::Dir(BTreeMap::new()),
            perms: perms & 0o7777,
            mtime: t,
            atime: t,
        }
    }

    fn new_file(data: Content, perms: u32) -> Self {
        let t = now();
        Node {
            kind: Kind::File(data),
            perms: perms & 0o7777,
            mtime: t,
            atime: t,
        }
    }

    fn info(&self) -> FileInfo {
        let (kind, size) = match &self.kind {
            Kind::File(d) => (FileKind::File, d.len() as u64),
            Kind::Dir(_) => (FileKind::Directory, 0),
        };
        FileInfo {
            kind,
            size,
            permissions: self.perms,
            modified: self.mtime,
            accessed: self.atime,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// Bytes held by this node and everything below it.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        match &self.kind {
            Kind::File(d) => d.len() as u64,
            Kind::Dir(c) => c.values().map(Node::bytes).sum(),
        }
    }

    fn count(&self) -> u64 {
        match &self.kind {
            Kind::File(_) => 1,
            Kind::Dir(c) => 1 + c.values().map(Node::count).sum::<u64>(),
        }
    }
}

/// Parses the plugin configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    /// Total byte quota over all file content.
    pub max_bytes: Option<u64>,
}

impl Config {
    pub fn parse(pairs: &[(String, String)]) -> std::result::Result<Self, String> {
        let mut cfg = Config::default();
        for (key, value) in pairs {
            match key.as_str() {
                "max-bytes" => {
                    cfg.max_bytes = Some(parse_bytes(value).ok_or_else(|| {
                        format!("config key `max-bytes`: invalid byte size {value:?}")
                    })?)
                }
                other => return Err(format!("unknown config key `{other}`")),
            }
        }
        Ok(cfg)
    }
}

/// `1234`, `64K`, `10M`, `2G`, `1T` (binary multiples, optional `B`/`iB`).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let upper = s.to_ascii_uppercase();
    let t = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// A write in progress: private until [`Fs::commit`].
#[derive(Debug)]
pub struct PendingWrite {
    path: String,
    opts: WriteOptions,
    /// Full new content, or (in append mode without truncate) the bytes to
    /// add to whatever the file holds at commit time.
    buf: Vec<u8>,
    /// Permission bits if the file gets created.
    perms: u32,
}

impl PendingWrite {
    pub fn path(&self) -> &str {
        &self.path
    }
    fn appends_to_current(&self) -> bool {
        self.opts.append && !self.opts.truncate
    }
}

#[derive(Debug)]
pub struct Fs {
    root: Node,
    /// Sum of the sizes of all files.
    used: u64,
    config: Config,
}

impl Default for Fs {
    fn default() -> Self {
        Self::new()
    }
}

fn norm(p: &str) -> Result<String> {
    path::normalize(p)
}

/// Splits a normalised non-root path into (parent, name).
fn split(p: &str) -> (&str, &str) {
    (
        path::parent(p).unwrap_or("/"),
        path::file_name(p).unwrap_or(""),
    )
}

fn lookup<'a>(root: &'a Node, p: &str) -> Result<&'a Node> {
    let mut node = root;
    for seg in path::segments(p) {
        match &node.kind {
            Kind::Dir(children) => node = children.get(seg).ok_or(Error::NotFound)?,
            Kind::File(_) => return Err(Error::NotADirectory),
        }
    }
    Ok(node)
}

fn lookup_mut<'a>(root: &'a mut Node, p: &str) -> Result<&'a mut Node> {
    let mut node = root;
    for seg in path::segments(p) {
        match &mut node.kind {
            Kind::Dir(children) => node = children.get_mut(seg).ok_or(Error::NotFound)?,
            Kind::File(_) => return Err(Error::NotADirectory),
        }
    }
    Ok(node)
}

/// The children map and the node of the directory at `p`.
fn dir_mut<'a>(root: &'a mut Node, p: &str) -> Result<&'a mut Node> {
    let node = lookup_mut(root, p)?;
    if node.is_dir() {
        Ok(node)
    } else {
        Err(Error::NotADirectory)
    }
}

fn children_mut(node: &mut Node) -> &mut BTreeMap<String, Node> {
    match &mut node.kind {
        Kind::Dir(c) => c,
        Kind::File(_) => unreachable!("checked to be a directory"),
    }
}

fn try_resize(buf: &mut Vec<u8>, len: usize) -> Result<()> {
    if len > buf.len() {
        buf.try_reserve(len - buf.len())
            .map_err(|_| Error::NoSpace)?;
    }
    buf.resize(len, 0);
    Ok(())
}

impl Fs {
    pub fn new() -> Self {
        Fs {
            root: Node::new_dir(DEFAULT_DIR_PERMS),
            used: 0,
            config: Config::default(),
        }
    }

    pub fn configure(&mut self, config: Config) {
        self.config = config;
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Fails with no-space when replacing `old` bytes by `new` bytes would
    /// exceed the quota.
    fn check_quota(&self, old: u64, new: u64) -> Result<()> {
        if let Some(max) = self.config.max_bytes
            && new > old
            && self.used.saturating_sub(old).saturating_add(new) > max
        {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    pub fn file_info(&self, p: &str) -> Result<FileInfo> {
        Ok(lookup(&self.root, &norm(p)?)?.info())
    }

    pub fn list_dir(&self, p: &str, cursor: Option<&str>, limit: u32) -> Result<DirPage> {
        let node = lookup(&self.root, &norm(p)?)?;
        let Kind::Dir(children) = &node.kind else {
            return Err(Error::NotADirectory);
        };
        let limit = match limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let lower = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut iter = children.range::<str, _>((lower, Bound::Unbounded));
        let entries: Vec<DirEntry> = iter
            .by_ref()
            .take(limit)
            .map(|(name, n)| DirEntry {
                name: name.clone(),
                info: n.info(),
            })
            .collect();
        let next_cursor = match (iter.next(), entries.last()) {
            (Some(_), Some(last)) => Some(last.name.clone()),
            _ => None,
        };
        Ok(DirPage {
            entries,
            next_cursor,
        })
    }

    /// Pins the current content of a file.
    pub fn open_read(&mut self, p: &str) -> Result<Content> {
        let node = lookup_mut(&mut self.root, &norm(p)?)?;
        match &node.kind {
            Kind::File(d) => {
                let d = d.clone();
                node.atime = now();
                Ok(d)
            }
            Kind::Dir(_) => Err(Error::IsADirectory),
        }
    }

    pub fn make_dir(&mut self, p: &str, perms: Option<u32>) -> Result<()> {
        let p = norm(p)?;
        if p == "/" {
            return Err(Error::AlreadyExists);
        }
        let (parent, name) = split(&p);
        let dir = dir_mut(&mut self.root, parent)?;
        let children = children_mut(dir);
        if children.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        children.insert(
            name.to_string(),
            Node::new_dir(perms.unwrap_or(DEFAULT_DIR_PERMS)),
        );
        dir.mtime = now();
        Ok(())
    }

    pub fn remove_dir(&mut self, p: &str) -> Result<()> {
        let p = norm(p)?;
        if p == "/" {
            return Err(Error::PermissionDenied);
        }
        let (parent, name) = split(&p);
        let dir = dir_mut(&mut self.root, parent)?;
        let children = children_mut(dir);
        match &children.get(name).ok_or(Error::NotFound)?.kind {
            Kind::File(_) => return Err(Error::NotADirectory),
            Kind::Dir(c) if !c.is_empty() => return Err(Error::NotEmpty),
            Kind::Dir(_) => {}
        }
        children.remove(name);
        dir.mtime = now();
        Ok(())
    }

    pub fn remove_file(&mut self, p: &str) -> Result<()> {
        let p = norm(p)?;
        if p == "/" {
            return Err(Error::IsADirectory);
        }
        let (parent, name) = split(&p);
        let dir = dir_mut(&mut self.root, parent)?;
        let children = children_mut(dir);
        let size = match &children.get(name).ok_or(Error::NotFound)?.kind {
            Kind::Dir(_) => return Err(Error::IsADirectory),
            Kind::File(d) => d.len() as u64,
        };
        children.remove(name);
        dir.mtime = now();
        self.used -= size;
        Ok(())
    }

    /// Checks whether `dst` may be replaced by a node of kind `src_is_dir`;
    /// returns the bytes it holds (to release) if it exists.
    fn check_replace(&self, dst: &str, src_is_dir: bool, overwrite: bool) -> Result<Option<u64>> {
        match lookup(&self.root, dst) {
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
            Ok(_) if !overwrite => Err(Error::AlreadyExists),
            Ok(node) => match (&node.kind, src_is_dir) {
                (Kind::File(d), false) => Ok(Some(d.len() as u64)),
                (Kind::File(_), true) => Err(Error::NotADirectory),
                (Kind::Dir(_), false) => Err(Error::IsADirectory),
                (Kind::Dir(c), true) if !c.is_empty() => Err(Error::NotEmpty),
                (Kind::Dir(_), true) => Ok(Some(0)),
            },
        }
    }

    pub fn rename(&mut self, src: &str, dst: &str, overwrite: bool) -> Result<()> {
        let (src, dst) = (norm(src)?, norm(dst)?);
        let src_is_dir = lookup(&self.root, &src)?.is_dir();
        if src == dst {
            return Ok(());
        }
        if src == "/" {
            return Err(invalid("cannot rename the root directory"));
        }
        if dst == "/" {
            return Err(if overwrite {
                Error::PermissionDenied
            } else {
                Error::AlreadyExists
            });
        }
        if src_is_dir && dst.starts_with(&src) && dst.as_bytes().get(src.len()) == Some(&b'/') {
            return Err(invalid("cannot move a directory into itself"));
        }
        let (dst_parent, dst_name) = split(&dst);
        dir_mut(&mut self.root, dst_parent)?;
        let released = self.check_replace(&dst, src_is_dir, overwrite)?;

        let (src_parent, src_name) = split(&src);
        let sdir = dir_mut(&mut self.root, src_parent)?;
        let node = children_mut(sdir).remove(src_name).ok_or(Error::NotFound)?;
        sdir.mtime = now();
        let ddir = dir_mut(&mut self.root, dst_parent).expect("checked above");
        children_mut(ddir).insert(dst_name.to_string(), node);
        ddir.mtime = now();
        self.used -= released.unwrap_or(0);
        Ok(())
    }

    pub fn copy_file(&mut self, src: &str, dst: &str, overwrite: bool) -> Result<()> {
        let (src, dst) = (norm(src)?, norm(dst)?);
        let node = lookup(&self.root, &src)?;
        let Kind::File(data) = &node.kind else {
            return Err(Error::IsADirectory);
        };
        let (data, perms) = (data.clone(), node.perms);
        if src == dst {
            return Ok(());
        }
        if dst == "/" {
            return Err(if overwrite {
                Error::IsADirectory
            } else {
                Error::AlreadyExists
            });
        }
        let (dst_parent, dst_name) = split(&dst);
        dir_mut(&mut self.root, dst_parent)?;
        let released = self.check_replace(&dst, false, overwrite)?.unwrap_or(0);
        let size = data.len() as u64;
        self.check_quota(released, size)?;
        let ddir = dir_mut(&mut self.root, dst_parent).expect("checked above");
        // Sharing the Rc is safe: every mutation is copy-on-write.
        children_mut(ddir).insert(dst_name.to_string(), Node::new_file(data, perms));
        ddir.mtime = now();
        self.used = self.used - released + size;
        Ok(())
    }

    pub fn set_info(&mut self, p: &str, attrs: &SetAttrs) -> Result<()> {
        let p = norm(p)?;
        let node = lookup(&self.root, &p)?;
        let mut growth = None;
        if let Some(size) = attrs.size {
            let Kind::File(d) = &node.kind else {
                return Err(Error::IsADirectory);
            };
            let size_usize = usize::try_from(size).map_err(|_| Error::NoSpace)?;
            self.check_quota(d.len() as u64, size)?;
            growth = Some((d.len() as u64, size, size_usize));
        }
        let node = lookup_mut(&mut self.root, &p)?;
        if let (Some((old, new, new_usize)), Kind::File(d)) = (growth, &mut node.kind)
            && old != new
        {
            try_resize(Rc::make_mut(d), new_usize)?;
            node.mtime = now();
            self.used = self.used - old + new;
        }
        if let Some(perms) = attrs.permissions {
            node.perms = perms & 0o7777;
        }
        if let Some(t) = attrs.accessed {
            node.atime = t;
        }
        if let Some(t) = attrs.modified {
            node.mtime = t;
        }
        Ok(())
    }

    pub fn space(&self, p: &str) -> Result<SpaceInfo> {
        lookup(&self.root, &norm(p)?)?;
        let (total, free) = match self.config.max_bytes {
            Some(max) => (max.max(self.used), max.saturating_sub(self.used)),
            None => (self.used + UNLIMITED_FREE, UNLIMITED_FREE),
        };
        let files = self.root.count();
        Ok(SpaceInfo {
            total_bytes: total,
            free_bytes: free,
            available_bytes: free,
            total_files: files + FREE_FILES,
            free_files: FREE_FILES,
            block_size: BLOCK_SIZE,
        })
    }

    pub fn begin_write(&self, p: &str, opts: WriteOptions) -> Result<PendingWrite> {
        let p = norm(p)?;
        if p == "/" {
            return Err(Error::IsADirectory);
        }
        let existing = match lookup(&self.root, &p) {
            Ok(node) => Some(node),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        let buf = match existing.map(|n| &n.kind) {
            Some(Kind::Dir(_)) => return Err(Error::IsADirectory),
            Some(Kind::File(_)) if opts.exclusive => return Err(Error::AlreadyExists),
            Some(Kind::File(d)) if !opts.truncate && !opts.append => {
                let mut buf = Vec::new();
                buf.try_reserve_exact(d.len()).map_err(|_| Error::NoSpace)?;
                buf.extend_from_slice(d);
                buf
            }
            Some(Kind::File(_)) => Vec::new(),
            None if !opts.create => return Err(Error::NotFound),
            None => {
                // The parent must exist now (and again at commit).
                dir_mut_ref(&self.root, split(&p).0)?;
                Vec::new()
            }
        };
        let perms = opts.permissions.unwrap_or(DEFAULT_FILE_PERMS) & 0o7777;
        Ok(PendingWrite {
            path: p,
            opts,
            buf,
            perms,
        })
    }

    /// Size of the file at the target path now (0 when missing).
    fn current_size(&self, p: &str) -> u64 {
        match lookup(&self.root, p) {
            Ok(Node {
                kind: Kind::File(d),
                ..
            }) => d.len() as u64,
            _ => 0,
        }
    }

    pub fn write_chunk(&self, w: &mut PendingWrite, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if w.opts.append {
            let current = self.current_size(&w.path);
            let base = if w.appends_to_current() { current } else { 0 };
            let new_len = (w.buf.len() + data.len()) as u64;
            self.check_quota(current, base + new_len)?;
            w.buf.try_reserve(data.len()).map_err(|_| Error::NoSpace)?;
            w.buf.extend_from_slice(data);
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::NoSpace)?;
        let end_usize = usize::try_from(end).map_err(|_| Error::NoSpace)?;
        let start = offset as usize; // end fits, so offset does
        if end_usize > w.buf.len() {
            self.check_quota(self.current_size(&w.path), end)?;
            try_resize(&mut w.buf, end_usize)?;
        }
        w.buf[start..end_usize].copy_from_slice(data);
        Ok(())
    }

    /// Makes the pending content visible and returns the new file-info.
    pub fn commit(&mut self, w: PendingWrite) -> Result<FileInfo> {
        let (parent, name) = split(&w.path);
        let (exists, old) = match dir_mut(&mut self.root, parent)?.kind {
            Kind::Dir(ref c) => match c.get(name) {
                Some(Node {
                    kind: Kind::Dir(_), ..
                }) => return Err(Error::IsADirectory),
                Some(Node {
                    kind: Kind::File(d),
                    ..
                }) => (true, d.len() as u64),
                None => (false, 0),
            },
            Kind::File(_) => unreachable!(),
        };
        if exists && w.opts.exclusive {
            return Err(Error::AlreadyExists);
        }
        if !exists && !w.opts.create {
            return Err(Error::NotFound);
        }
        let appending = w.appends_to_current() && exists;
        let new_size = if appending {
            old + w.buf.len() as u64
        } else {
            w.buf.len() as u64
        };
        self.check_quota(old, new_size)?;

        let dir = dir_mut(&mut self.root, parent)?;
        let children = children_mut(dir);
        let t = now();
        let info = match children.get_mut(name) {
            Some(node) => {
                let Kind::File(d) = &mut node.kind else {
                    unreachable!()
                };
                if appending {
                    let content = Rc::make_mut(d);
                    content
                        .try_reserve(w.buf.len())
                        .map_err(|_| Error::NoSpace)?;
                    content.extend_from_slice(&w.buf);
                } else {
                    *d = Rc::new(w.buf);
                }
                node.mtime = t;
                node.info()
            }
            None => {
                let node = Node::new_file(Rc::new(w.buf), w.perms);
                let info = node.info();
                children.insert(name.to_string(), node);
                dir.mtime = t;
                info
            }
        };
        self.used = self.used - old + new_size;
        Ok(info)
    }

    #[cfg(test)]
    fn recount(&self) -> u64 {
        self.root.bytes()
    }
}

fn dir_mut_ref<'a>(root: &'a Node, p: &str) -> Result<&'a Node> {
    let node = lookup(root, p)?;
    if node.is_dir() {
        Ok(node)
    } else {
        Err(Error::NotADirectory)
    }
}

/// Reads from a pinned snapshot; empty at or after the end.
pub fn read_at(data: &[u8], offset: u64, len: u32) -> Vec<u8> {
    let Ok(start) = usize::try_from(offset) else {
        return Vec::new();
    };
    if start >= data.len() {
        return Vec::new();
    }
    let end = start.saturating_add(len as usize).min(data.len());
    data[start..end].to_vec()
}

#[cfg(test)]
mod tests;
