//! A tenant's files as bytes, for the hand-over to the plugin's next version
//! (the contract's `handover`): the tree in pre-order (a directory before
//! what it holds), each file's content after its entry, versions kept, so
//! a reader of the new version can pin what it pinned before.
//!
//! Records, integers little-endian, strings as a u32 length and UTF-8:
//! - `1` directory: path, permissions u32, mtime u64, atime u64
//! - `2` file: path, permissions u32, mtime u64, atime u64, version u64, size u64
//! - `3` content: u32 length, bytes (the next bytes of the last file)
//!
//! The first piece starts with [`MAGIC`]. A record never spans two pieces,
//! so each piece is read on its own; the importer charges everything to
//! the new instance's budget (a state that does not fit is `no-space`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use wasftp_sdk::{Error, Result, invalid};

use crate::blob::Blob;
use crate::{Fs, Kind, Node, check_name_len, entry_charge, lookup, note_version, split};

/// The format's name and version: another format is refused, not misread.
pub const MAGIC: &[u8; 8] = b"wfmem\x00\x00\x01";
const DIR: u8 = 1;
const FILE: u8 = 2;
const CONTENT: u8 = 3;
/// The longest file record: a path of the host's longest plus the fields.
const MAX_HEADER: usize = 1 + 4 + 4096 + 4 + 8 * 4;
/// The least a piece may be asked to hold.
pub const MIN_PIECE: usize = MAX_HEADER + 5 + 1;

impl Fs {
    /// The piece of the state from `cursor` (none: the start), at most
    /// `max` bytes, and the cursor of the next (none: this was the last).
    /// The cursor names the entry to go on from (and how much of its
    /// content went already), so nothing is kept between pieces.
    pub fn export_piece(&self, cursor: Option<&str>, max: usize) -> Result<(Vec<u8>, Option<String>)> {
        if max < MIN_PIECE {
            return Err(invalid(format!("a piece of the state needs room for at least {MIN_PIECE} bytes")));
        }
        let (mut path, mut offset) = match cursor {
            None => ("/".to_string(), 0),
            Some(cursor) => parse_cursor(cursor)?,
        };
        let mut out = Vec::new();
        if cursor.is_none() {
            out.extend_from_slice(MAGIC);
        }
        loop {
            let node = lookup(&self.root, &path).map_err(|_| invalid("the state changed during its export"))?;
            if offset == 0 {
                if out.len() + MAX_HEADER > max {
                    return Ok((out, Some(format!("0:{path}"))));
                }
                write_header(&mut out, &path, node);
            }
            if let Kind::File(content) = &node.kind {
                while offset < content.len() {
                    let room = max.saturating_sub(out.len() + 5);
                    if room == 0 {
                        return Ok((out, Some(format!("{offset}:{path}"))));
                    }
                    let piece = &content[offset..content.len().min(offset + room)];
                    out.push(CONTENT);
                    out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
                    out.extend_from_slice(piece);
                    offset += piece.len();
                }
            }
            match next_in_pre_order(&self.root, &path) {
                Some(next) => (path, offset) = (next, 0),
                None => return Ok((out, None)),
            }
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") }
}

/// The entry after `path` in pre-order: its first child, else the next
/// sibling of it or of the nearest ancestor that has one.
fn next_in_pre_order(root: &Node, path: &str) -> Option<String> {
    if let Ok(Node { kind: Kind::Dir(children), .. }) = lookup(root, path)
        && let Some(first) = children.keys().next()
    {
        return Some(join(path, first));
    }
    let mut at = path;
    while at != "/" {
        let (parent, name) = split(at);
        if let Ok(Node { kind: Kind::Dir(siblings), .. }) = lookup(root, parent)
            && let Some(next) = siblings.range::<str, _>((Bound::Excluded(name), Bound::Unbounded)).next()
        {
            return Some(join(parent, next.0));
        }
        at = parent;
    }
    None
}

fn parse_cursor(cursor: &str) -> Result<(String, usize)> {
    let bad = || invalid("not a cursor of this export");
    let (offset, path) = cursor.split_once(':').ok_or_else(bad)?;
    Ok((path.to_string(), offset.parse().map_err(|_| bad())?))
}

fn write_header(out: &mut Vec<u8>, path: &str, node: &Node) {
    let file = match &node.kind {
        Kind::File(content) => Some(content.len() as u64),
        Kind::Dir(_) => None,
    };
    out.push(if file.is_some() { FILE } else { DIR });
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&node.perms.to_le_bytes());
    out.extend_from_slice(&node.mtime.to_le_bytes());
    out.extend_from_slice(&node.atime.to_le_bytes());
    if let Some(size) = file {
        out.extend_from_slice(&node.version.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
    }
}

/// Reads the pieces into an empty filesystem, in order.
#[derive(Default)]
pub struct Importer {
    started: bool,
    /// The file whose content is coming: its path, its content (allocated
    /// whole at its entry) and how much of it has come.
    file: Option<(String, Blob, u64)>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("the state ends inside a record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| invalid("a path in the state is not UTF-8"))
    }
}

impl Importer {
    /// Takes one piece; `fs` must be empty before the first.
    pub fn piece(&mut self, fs: &mut Fs, piece: &[u8]) -> Result<()> {
        let mut reader = Reader(piece);
        if !self.started {
            if reader.take(MAGIC.len())? != MAGIC {
                return Err(invalid("the state is not in this version's format"));
            }
            if !matches!(&fs.root.kind, Kind::Dir(children) if children.is_empty()) {
                return Err(invalid("a state is imported into an empty instance only"));
            }
            self.started = true;
        }
        while !reader.0.is_empty() {
            match reader.u8()? {
                DIR => {
                    self.end_file(fs)?;
                    let path = reader.string()?;
                    let (perms, mtime, atime) = (reader.u32()?, reader.u64()?, reader.u64()?);
                    let node = if path == "/" {
                        &mut fs.root
                    } else {
                        let charge = entry_charge(&fs.budget, split(&path).1)?;
                        insert(fs, &path, Node::new_dir(perms, charge))?
                    };
                    (node.perms, node.mtime, node.atime) = (perms & 0o7777, mtime, atime);
                }
                FILE => {
                    self.end_file(fs)?;
                    let path = reader.string()?;
                    let (perms, mtime, atime) = (reader.u32()?, reader.u64()?, reader.u64()?);
                    let (version, size) = (reader.u64()?, reader.u64()?);
                    let blob = Blob::copy_resized(&fs.budget, &[], size)?;
                    let charge = entry_charge(&fs.budget, split(&path).1)?;
                    let node = insert(fs, &path, Node::new_file(Rc::new(Blob::new(&fs.budget)), perms, charge))?;
                    (node.perms, node.mtime, node.atime, node.version) = (perms & 0o7777, mtime, atime, version);
                    note_version(version);
                    self.file = Some((path, blob, 0));
                }
                CONTENT => {
                    let len = reader.u32()? as usize;
                    let bytes = reader.take(len)?;
                    let (_, blob, filled) = self.file.as_mut().ok_or_else(|| invalid("content outside a file in the state"))?;
                    if *filled + len as u64 > blob.len() as u64 {
                        return Err(invalid("a file of the state is longer than its entry says"));
                    }
                    blob.write_at(*filled, bytes)?;
                    *filled += len as u64;
                }
                other => return Err(invalid(format!("unknown record {other} in the state"))),
            }
        }
        Ok(())
    }

    /// One piece of an import kept in `importer` between calls (made at the
    /// first); `last` finishes it.
    pub fn import_piece(importer: &mut Option<Importer>, fs: &mut Fs, piece: &[u8], last: bool) -> Result<()> {
        importer.get_or_insert_with(Default::default).piece(fs, piece)?;
        if last {
            importer.take().expect("made above").finish(fs)?;
        }
        Ok(())
    }

    /// After the last piece: the last file's content is in place.
    pub fn finish(mut self, fs: &mut Fs) -> Result<()> {
        if !self.started {
            return Err(invalid("no state was imported"));
        }
        self.end_file(fs)
    }

    fn end_file(&mut self, fs: &mut Fs) -> Result<()> {
        let Some((path, blob, filled)) = self.file.take() else { return Ok(()) };
        if filled != blob.len() as u64 {
            return Err(invalid(format!("a file of the state is {} bytes short", blob.len() as u64 - filled)));
        }
        let node = crate::lookup_mut(&mut fs.root, &path)?;
        node.kind = Kind::File(Rc::new(blob));
        Ok(())
    }
}

/// Puts `node` at `path`, whose parent the pre-order brought first.
fn insert<'a>(fs: &'a mut Fs, path: &str, node: Node) -> Result<&'a mut Node> {
    let (parent, name) = split(path);
    check_name_len(name)?;
    if name.is_empty() {
        return Err(invalid("an empty name in the state"));
    }
    let parent = crate::dir_mut(&mut fs.root, parent)?;
    let children: &mut BTreeMap<String, Node> = crate::children_mut(parent);
    if children.contains_key(name) {
        return Err(Error::AlreadyExists);
    }
    Ok(children.entry(name.to_string()).or_insert(node))
}
