//! Changes to names: directories made and removed, files removed,
//! renames and hard links.

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{DescriptorType, ErrorCode, PathFlags};

use crate::errors::fs_error;
use crate::folder::Folder;
use crate::paths::relative;

/// Permissions are not applied: WASI cannot set a mode.
pub fn make_dir(folder: &Folder, path: &str) -> Result<()> {
    if path == "/" {
        return Err(Error::AlreadyExists);
    }
    folder.root().create_directory_at(relative(path)).map_err(fs_error)
}

/// Only an empty directory: not-empty otherwise (an upload in progress in
/// it counts, though no listing shows it).
pub fn remove_dir(folder: &Folder, path: &str) -> Result<()> {
    if path == "/" {
        return Err(Error::PermissionDenied);
    }
    folder.root().remove_directory_at(relative(path)).map_err(fs_error)
}

/// A file or a link (never what it points at); a directory is is-a-directory.
pub fn remove_file(folder: &Folder, path: &str) -> Result<()> {
    match folder.lookup(path)?.map(|stat| stat.type_) {
        None => Err(Error::NotFound),
        Some(DescriptorType::Directory) => Err(Error::IsADirectory),
        Some(_) => folder.root().unlink_file_at(relative(path)).map_err(fs_error),
    }
}

/// With `overwrite`, POSIX rename (posix-rename@openssh.com): atomic, and
/// replaces a file at `dst`. Without, as OpenSSH's SSH_FXP_RENAME: a file
/// is linked to its new name (which fails atomically when taken) and then
/// unlinked; a directory, or a file where links are refused, is renamed
/// after checking that `dst` is free.
pub fn rename(folder: &Folder, src: &str, dst: &str, overwrite: bool) -> Result<()> {
    if src == "/" || dst == "/" {
        return Err(Error::PermissionDenied);
    }
    let source = folder.lookup(src)?.ok_or(Error::NotFound)?;
    folder.check_parent(path::parent(dst).unwrap_or("/"))?;
    let root = folder.root();
    let move_it = || root.rename_at(relative(src), root, relative(dst)).map_err(fs_error);
    if overwrite {
        return move_it();
    }
    let free_then_move = || match folder.lookup(dst)? {
        Some(_) => Err(Error::AlreadyExists),
        None => move_it(),
    };
    if source.type_ == DescriptorType::Directory {
        return free_then_move();
    }
    match root.link_at(PathFlags::empty(), relative(src), root, relative(dst)) {
        Ok(()) => match root.unlink_file_at(relative(src)) {
            Ok(()) => Ok(()),
            Err(code) => {
                // Not moved after all: take the new name away again.
                let _ = root.unlink_file_at(relative(dst));
                Err(fs_error(code))
            }
        },
        Err(ErrorCode::Exist) => Err(Error::AlreadyExists),
        Err(ErrorCode::Unsupported | ErrorCode::NotPermitted) => free_then_move(),
        Err(code) => Err(fs_error(code)),
    }
}

/// A second name for the file `src` (a link at `src` is linked itself).
/// Both are inside the folder: the sandbox sees to it.
pub fn hard_link(folder: &Folder, src: &str, dst: &str) -> Result<()> {
    if dst == "/" {
        return Err(Error::AlreadyExists);
    }
    let root = folder.root();
    root.link_at(PathFlags::empty(), relative(src), root, relative(dst)).map_err(fs_error)
}
