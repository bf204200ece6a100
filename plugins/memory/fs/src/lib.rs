//! The memory plugin's filesystem, independent of the component bindings so
//! it can be unit-tested natively and reused (the slow test plugin wraps it). File content is an `Rc<Blob>`: readers pin a
//! snapshot by cloning the `Rc`, a change copies the content only while
//! someone else still holds that version ([`unshare`]), and a committed
//! writer moves its buffer in without copying.
//!
//! Content and tree entries are charged to one [`Budget`] before they are
//! allocated, so running out of quota or memory is `no-space` and never an
//! allocation failure that would trap the instance (and lose the tenant).

pub mod blob;
pub mod budget;
pub mod state;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use wasftp_sdk::path;
use wasftp_sdk::{
    DirEntry, DirPage, Error, FileInfo, FileKind, Result, SetAttrs, SpaceInfo, WriteOptions,
    invalid,
};

use crate::blob::{Blob, unshare};
use crate::budget::{Budget, Charge};

pub const DEFAULT_FILE_PERMS: u32 = 0o644;
pub const DEFAULT_DIR_PERMS: u32 = 0o755;
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Free space reported when there is no quota.
const UNLIMITED_FREE: u64 = 1 << 40;
const FREE_FILES: u64 = 1 << 32;
const BLOCK_SIZE: u32 = 4096;
/// Longest entry name: NAME_MAX, the host's bound on names in requests and
/// in listings, so every name stored here can be listed.
pub const MAX_NAME_LEN: usize = 255;
/// What a tree entry costs besides its name (node, map slot, allocator
/// overhead), over-estimated so that many empty files or directories are
/// bounded by the quota too.
pub const ENTRY_COST: u64 = 128;

pub type Content = Rc<Blob>;

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
    /// The entry's own cost ([`entry_charge`]); content is charged by its blob.
    charge: Charge,
    /// Changes with every change of content: what `open-read` can pin.
    version: u64,
}

static NEXT_VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A number no content of this instance had before.
fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A version taken over from another instance (the hand-over): later
/// versions come after it.
fn note_version(version: u64) {
    NEXT_VERSION.fetch_max(version.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
}

impl Node {
    fn new(kind: Kind, perms: u32, charge: Charge) -> Self {
        let t = now();
        Node {
            kind,
            perms: perms & 0o7777,
            mtime: t,
            atime: t,
            charge,
            version: next_version(),
        }
    }

    fn new_dir(perms: u32, charge: Charge) -> Self {
        Self::new(Kind::Dir(BTreeMap::new()), perms, charge)
    }

    fn new_file(data: Content, perms: u32, charge: Charge) -> Self {
        Self::new(Kind::File(data), perms, charge)
    }

    fn info(&self) -> FileInfo {
        let (kind, size, version) = match &self.kind {
            Kind::File(d) => (FileKind::File, d.len() as u64, Some(self.version.to_string())),
            Kind::Dir(_) => (FileKind::Directory, 0, None),
        };
        FileInfo {
            kind,
            size,
            permissions: self.perms,
            modified: self.mtime,
            accessed: self.atime,
            version,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// Charges of this node and everything below it, each content counted
    /// once however many files share it.
    #[cfg(test)]
    fn charged(&self, seen: &mut std::collections::HashSet<*const Blob>) -> u64 {
        let below = match &self.kind {
            Kind::File(d) if seen.insert(Rc::as_ptr(d)) => d.charged(),
            Kind::File(_) => 0,
            Kind::Dir(c) => c.values().map(|n| n.charged(seen)).sum(),
        };
        self.charge.bytes() + below
    }

    fn count(&self) -> u64 {
        match &self.kind {
            Kind::File(_) => 1,
            Kind::Dir(c) => 1 + c.values().map(Node::count).sum::<u64>(),
        }
    }
}

/// A write in progress: private until [`Fs::commit`].
#[derive(Debug)]
pub struct PendingWrite {
    path: String,
    opts: WriteOptions,
    /// Full new content, or (in append mode without truncate) the bytes to
    /// add to whatever the file holds at commit time. Without truncate it
    /// starts as the current version, copied when first changed.
    buf: Content,
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
    /// How many bytes the pending content holds now (what a write that
    /// keeps the content goes on from).
    pub fn pending_len(&self) -> u64 {
        self.buf.len() as u64
    }
}

#[derive(Debug)]
pub struct Fs {
    root: Node,
    /// Every entry and every content held, including uploads in progress and
    /// versions pinned by readers.
    budget: Budget,
    /// No file grows past this (config `max-file-size`).
    max_file_size: Option<u64>,
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

/// The cost of an entry named `name`, reserved before it is created.
fn entry_charge(budget: &Budget, name: &str) -> Result<Charge> {
    check_name_len(name)?;
    budget.charge(ENTRY_COST + name.len() as u64)
}

fn check_name_len(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("name longer than {MAX_NAME_LEN} bytes")));
    }
    Ok(())
}

impl Fs {
    pub fn new() -> Self {
        let budget = Budget::unlimited();
        Fs {
            root: Node::new_dir(DEFAULT_DIR_PERMS, budget.nothing()),
            budget,
            max_file_size: None,
        }
    }

    /// The byte quota over entries and content; `None` for no limit. A lower
    /// quota than what is held refuses growth and keeps every file.
    pub fn set_quota(&mut self, quota: Option<u64>) {
        self.budget.set_limit(quota.unwrap_or(u64::MAX));
    }

    /// Bytes charged: entries, content, uploads in progress, pinned versions.
    pub fn set_max_file_size(&mut self, max: Option<u64>) {
        self.max_file_size = max;
    }

    /// A size past `max-file-size` is `no-space`.
    fn check_file_size(&self, size: u64) -> Result<()> {
        match self.max_file_size {
            Some(max) if size > max => Err(Error::NoSpace),
            _ => Ok(()),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.budget.held()
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

    /// Pins the current content of a file, which must be `version` when
    /// one is given (`conflict` otherwise).
    pub fn open_read(&mut self, p: &str, version: Option<&str>) -> Result<(Content, FileInfo)> {
        let node = lookup_mut(&mut self.root, &norm(p)?)?;
        match &node.kind {
            Kind::File(_) if version.is_some_and(|v| v != node.version.to_string()) => Err(Error::Conflict),
            Kind::File(d) => {
                let d = d.clone();
                node.atime = now();
                Ok((d, node.info()))
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
        let charge = entry_charge(&self.budget, name)?;
        children.insert(
            name.to_string(),
            Node::new_dir(perms.unwrap_or(DEFAULT_DIR_PERMS), charge),
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
        if let Kind::Dir(_) = &children.get(name).ok_or(Error::NotFound)?.kind {
            return Err(Error::IsADirectory);
        }
        // Its charges go with it (content: once no reader pins it).
        children.remove(name);
        dir.mtime = now();
        Ok(())
    }

    /// Checks whether `dst` may be replaced by a node of kind `src_is_dir`.
    fn check_replace(&self, dst: &str, src_is_dir: bool, overwrite: bool) -> Result<()> {
        match lookup(&self.root, dst) {
            Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
            Ok(_) if !overwrite => Err(Error::AlreadyExists),
            Ok(node) => match (&node.kind, src_is_dir) {
                (Kind::File(_), false) => Ok(()),
                (Kind::File(_), true) => Err(Error::NotADirectory),
                (Kind::Dir(_), false) => Err(Error::IsADirectory),
                (Kind::Dir(c), true) if !c.is_empty() => Err(Error::NotEmpty),
                (Kind::Dir(_), true) => Ok(()),
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
        self.check_replace(&dst, src_is_dir, overwrite)?;
        check_name_len(dst_name)?;
        // The entry's cost follows its new name; the last step that can fail.
        lookup_mut(&mut self.root, &src)?
            .charge
            .resize(ENTRY_COST + dst_name.len() as u64)?;

        let (src_parent, src_name) = split(&src);
        let sdir = dir_mut(&mut self.root, src_parent)?;
        let node = children_mut(sdir).remove(src_name).ok_or(Error::NotFound)?;
        sdir.mtime = now();
        let ddir = dir_mut(&mut self.root, dst_parent).expect("checked above");
        children_mut(ddir).insert(dst_name.to_string(), node);
        ddir.mtime = now();
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
        self.check_replace(&dst, false, overwrite)?;
        let charge = entry_charge(&self.budget, dst_name)?;
        let ddir = dir_mut(&mut self.root, dst_parent).expect("checked above");
        // The copy shares the content (no new bytes until one of them changes:
        // every change unshares first, and is charged then).
        children_mut(ddir).insert(dst_name.to_string(), Node::new_file(data, perms, charge));
        ddir.mtime = now();
        Ok(())
    }

    /// A size change is charged and allocated before anything else changes;
    /// `no-space` leaves the file as it was.
    pub fn set_info(&mut self, p: &str, attrs: &SetAttrs) -> Result<()> {
        let p = norm(p)?;
        let node = lookup_mut(&mut self.root, &p)?;
        if let Some(size) = attrs.size {
            let Kind::File(d) = &mut node.kind else {
                return Err(Error::IsADirectory);
            };
            if size != d.len() as u64 {
                if self.max_file_size.is_some_and(|max| size > max) {
                    return Err(Error::NoSpace);
                }
                unshare(d, size)?.set_len(size)?;
                node.mtime = now();
                node.version = next_version();
            }
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
        let (limit, used) = (self.budget.limit(), self.budget.held());
        let (total, free) = if limit == u64::MAX {
            (used + UNLIMITED_FREE, UNLIMITED_FREE)
        } else {
            (limit.max(used), limit.saturating_sub(used))
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
            // Starts from this version; copied (and charged) when first changed.
            Some(Kind::File(d)) if !opts.truncate && !opts.append => d.clone(),
            Some(Kind::File(_)) => Rc::new(Blob::new(&self.budget)),
            None if !opts.create => return Err(Error::NotFound),
            None => {
                // The parent must exist now (and again at commit).
                let (parent, name) = split(&p);
                dir_mut_ref(&self.root, parent)?;
                check_name_len(name)?;
                Rc::new(Blob::new(&self.budget))
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

    /// Charged and allocated before anything is written: `no-space` leaves
    /// the pending content as it was.
    pub fn write_chunk(&self, w: &mut PendingWrite, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        // Appended bytes follow the ones gathered so far, whatever the offset.
        let offset = if w.opts.append {
            w.buf.len() as u64
        } else {
            offset
        };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::NoSpace)?;
        let len = end.max(w.buf.len() as u64);
        self.check_file_size(len)?;
        unshare(&mut w.buf, len)?.write_at(offset, data)
    }

    /// Cuts or zero-extends the pending content. An append writer holds only
    /// the bytes it adds, not the file, so it cannot be resized.
    pub fn set_pending_size(&self, w: &mut PendingWrite, size: u64) -> Result<()> {
        if w.opts.append {
            return Err(Error::Unsupported);
        }
        self.check_file_size(size)?;
        unshare(&mut w.buf, size)?.set_len(size)
    }

    /// Makes the pending content visible and returns the new file-info.
    pub fn commit(&mut self, w: PendingWrite) -> Result<FileInfo> {
        let max_file_size = self.max_file_size;
        let (parent, name) = split(&w.path);
        let dir = dir_mut(&mut self.root, parent)?;
        let children = children_mut(dir);
        let appending = w.appends_to_current();
        let t = now();
        let info = match children.get_mut(name) {
            Some(Node {
                kind: Kind::Dir(_), ..
            }) => return Err(Error::IsADirectory),
            Some(_) if w.opts.exclusive => return Err(Error::AlreadyExists),
            Some(node) => {
                let Kind::File(d) = &mut node.kind else {
                    unreachable!("matched above")
                };
                if appending {
                    let old = d.len() as u64;
                    let size = old + w.buf.len() as u64;
                    if max_file_size.is_some_and(|max| size > max) {
                        return Err(Error::NoSpace);
                    }
                    unshare(d, size)?.write_at(old, &w.buf)?;
                } else {
                    *d = w.buf;
                }
                keep_only_what_is_used(d);
                node.mtime = t;
                node.version = next_version();
                node.info()
            }
            None if !w.opts.create => return Err(Error::NotFound),
            None => {
                let charge = entry_charge(&self.budget, name)?;
                let mut data = w.buf;
                keep_only_what_is_used(&mut data);
                let node = Node::new_file(data, w.perms, charge);
                let info = node.info();
                children.insert(name.to_string(), node);
                dir.mtime = t;
                info
            }
        };
        Ok(info)
    }

    /// What the budget should hold when nothing outside the tree (a reader,
    /// a writer) pins content.
    #[cfg(test)]
    fn recount(&self) -> u64 {
        self.root.charged(&mut Default::default())
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

/// Committed content holds no spare capacity (upload growth is amortised).
fn keep_only_what_is_used(content: &mut Content) {
    if let Some(blob) = Rc::get_mut(content) {
        blob.shrink_to_fit();
    }
}

/// Reads from a pinned snapshot; empty at or after the end. The reply buffer
/// is allocated fallibly: a large read that does not fit is `no-space`.
pub fn read_at(data: &[u8], offset: u64, len: u32) -> Result<Vec<u8>> {
    let Ok(start) = usize::try_from(offset) else {
        return Ok(Vec::new());
    };
    if start >= data.len() {
        return Ok(Vec::new());
    }
    let end = start.saturating_add(len as usize).min(data.len());
    let mut out = Vec::new();
    out.try_reserve_exact(end - start)
        .map_err(|_| Error::NoSpace)?;
    out.extend_from_slice(&data[start..end]);
    Ok(out)
}

#[cfg(test)]
mod tests;
