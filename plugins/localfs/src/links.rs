//! Symbolic links: made relative to their directory (WASI refuses absolute
//! targets, and on the host one would name the host's own root), read
//! back as contract paths, and followed where a write lands on one.

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::DescriptorType;

use crate::errors::fs_error;
use crate::folder::Folder;
use crate::paths::{self, relative};
use crate::resolve::{MAX_LINK_HOPS, Node, resolve, too_many_links};

/// What resolving needs to know of one path.
fn node(folder: &Folder, path: &str) -> Result<Node> {
    match folder.lookup(path)? {
        Some(stat) if stat.type_ == DescriptorType::SymbolicLink => Ok(Node::Link(text(folder, path)?)),
        Some(_) => Ok(Node::Present),
        None => Ok(Node::Missing),
    }
}

/// The text a link stores.
fn text(folder: &Folder, link: &str) -> Result<String> {
    folder.root().readlink_at(relative(link)).map_err(fs_error)
}

/// Where the directory `dir` really is, every link in it followed.
fn real_dir(folder: &Folder, dir: &str) -> Result<String> {
    resolve(dir, |p| node(folder, p))
}

/// The contract path `link` points at. A target absolute on disk (made on
/// the host, `ln -s /etc x`) or climbing out of the folder is
/// permission-denied: the sandbox would refuse to follow it anyway.
pub fn read_link(folder: &Folder, link: &str) -> Result<String> {
    let text = text(folder, link)?;
    let dir = real_dir(folder, path::parent(link).unwrap_or("/"))?;
    paths::link_target(&dir, &text)
}

/// Makes `link` point at the contract path `target`.
pub fn make_link(folder: &Folder, target: &str, link: &str) -> Result<()> {
    let dir = real_dir(folder, path::parent(link).ok_or(Error::AlreadyExists)?)?;
    folder.root().symlink_at(&paths::link_text(&dir, target), relative(link)).map_err(fs_error)
}

/// `path`, or where it leads when it is a link (to a link...): what a
/// write to `path` writes, as open(2) follows a final link.
pub fn follow_final(folder: &Folder, path: &str) -> Result<String> {
    let mut at = path.to_string();
    for _ in 0..MAX_LINK_HOPS {
        match folder.lookup(&at)? {
            Some(stat) if stat.type_ == DescriptorType::SymbolicLink => at = read_link(folder, &at)?,
            _ => return Ok(at),
        }
    }
    Err(too_many_links())
}
