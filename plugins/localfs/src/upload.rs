//! New content is written to a temporary file in the directory it is
//! for, then moved into place in one step: a rename (which replaces what
//! was there, atomically) or, when nothing may be replaced, a hard link
//! (which fails atomically when the name is taken). Until then no one
//! sees it, and a reader of the old file keeps reading the old file.

use std::rc::Rc;

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

use crate::base::Base;
use crate::durability::dir_sync_failure;
use crate::errors::{fs_error, stream_error};
use crate::folder::Folder;
use crate::paths::{self, UPLOAD_RANDOM_BYTES, relative};

/// Bytes moved per step when content is copied between files.
const COPY_STEP: u64 = 1 << 20;
/// Longest recovery token the host takes.
const MAX_TOKEN_LEN: usize = 1024;

/// A temporary file, removed when dropped unless it was moved into place.
pub struct TempFile {
    folder: Rc<Folder>,
    /// Its contract path: `DIR/.wasftp-upload-HEX`.
    path: String,
    file: Descriptor,
    /// Committed: there is nothing left to remove.
    placed: bool,
}

/// How a temporary file takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Replacing whatever file is there (rename).
    Replace,
    /// Only if the name is free (link, then the temporary name removed).
    Exclusive,
}

impl TempFile {
    /// A new, empty temporary file in the directory `dir`.
    pub fn create(folder: &Rc<Folder>, dir: &str) -> Result<TempFile> {
        // 128 random bits: a clash is retried, not expected.
        for _ in 0..3 {
            let path = paths::child(dir, &paths::upload_name(&random_bytes()));
            let opened = folder.root().open_at(
                PathFlags::empty(),
                relative(&path),
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            );
            match opened {
                Ok(file) => return Ok(TempFile { folder: folder.clone(), path, file, placed: false }),
                Err(ErrorCode::Exist) => continue,
                Err(code) => return Err(fs_error(code)),
            }
        }
        Err(io_error("no free name for a temporary file"))
    }

    /// What `abort-orphan` needs to remove it from another instance: its
    /// path, unless too long for a token (then `maintain` will).
    pub fn recovery_token(&self) -> Option<String> {
        (self.path.len() <= MAX_TOKEN_LEN).then(|| self.path.clone())
    }

    /// All of `data` at `offset`.
    pub fn write_all(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut written = 0usize;
        while written < data.len() {
            let at = offset.checked_add(written as u64).ok_or(Error::NoSpace)?;
            let n = self.file.write(&data[written..], at).map_err(fs_error)?;
            if n == 0 {
                return Err(io_error("a write made no progress"));
            }
            written += n as usize;
        }
        Ok(())
    }

    pub fn set_size(&self, size: u64) -> Result<()> {
        self.file.set_size(size).map_err(fs_error)
    }

    /// Copies all of `source` (from its start) in, host side (no bytes
    /// pass through the instance); the number of bytes copied.
    pub fn copy_from(&self, source: &Descriptor) -> Result<u64> {
        let input = source.read_via_stream(0).map_err(fs_error)?;
        let output = self.file.write_via_stream(0).map_err(fs_error)?;
        let mut copied = 0u64;
        loop {
            match output.blocking_splice(&input, COPY_STEP) {
                Ok(n) => copied += n,
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e)),
            }
        }
        output.blocking_flush().map_err(stream_error)?;
        Ok(copied)
    }

    /// Moves the content to `target` (synced first when `durable`, and its
    /// directory after), and describes the file it now is. With a `base`,
    /// only while `target` still holds it (`conflict` otherwise).
    pub fn place(mut self, target: &str, how: Place, base: Option<&Base>, durable: bool) -> Result<FileInfo> {
        if durable {
            self.file.sync().map_err(fs_error)?;
        }
        // Describe the open file: the same inode and mtime after the move,
        // and not whatever another writer puts at `target` a moment later.
        let info = self.folder.describe_open(&self.file)?;
        if let Some(base) = base {
            // Last before the move, the sync done. POSIX has no conditional
            // rename: a commit landing between this look and the rename is
            // not caught, but that window is two host calls wide, not the
            // whole upload's length.
            base.check(self.folder.info_if_any(target)?.as_ref())?;
        }
        let root = self.folder.root();
        // Whether the temporary name is still there (after a link it is).
        let left_behind = match how {
            Place::Replace => {
                root.rename_at(relative(&self.path), root, relative(target)).map_err(fs_error)?;
                false
            }
            Place::Exclusive => match root.link_at(PathFlags::empty(), relative(&self.path), root, relative(target)) {
                Ok(()) => true,
                // Some filesystems have no hard links: check, then rename
                // (another writer could slip in between).
                Err(ErrorCode::Unsupported | ErrorCode::NotPermitted) => {
                    if self.folder.lookup(target)?.is_some() {
                        return Err(Error::AlreadyExists);
                    }
                    root.rename_at(relative(&self.path), root, relative(target)).map_err(fs_error)?;
                    false
                }
                Err(code) => return Err(fs_error(code)),
            },
        };
        // Drop removes what is left behind.
        self.placed = !left_behind;
        if durable {
            let dir = path::parent(target).unwrap_or("/");
            if let Err(code) = self.folder.sync_dir(dir) {
                // In place already: only a real loss of durability is an error.
                if let Some(error) = dir_sync_failure(code) {
                    return Err(error);
                }
                log::warn(&format!(
                    "localfs: syncing the directory {dir} failed ({}); its new entry {target} may not survive a crash",
                    code.name()
                ));
            }
        }
        Ok(info)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        match self.folder.root().unlink_file_at(relative(&self.path)) {
            Ok(()) | Err(ErrorCode::NoEntry) => {}
            Err(code) => log::warn(&format!(
                "localfs: the temporary file {} could not be removed ({}); `maintain` will",
                self.path,
                code.name()
            )),
        }
    }
}

fn random_bytes() -> [u8; UPLOAD_RANDOM_BYTES] {
    let mut bytes = [0u8; UPLOAD_RANDOM_BYTES];
    for (byte, random) in bytes.iter_mut().zip(wasi::random::random::get_random_bytes(UPLOAD_RANDOM_BYTES as u64)) {
        *byte = random;
    }
    bytes
}

/// Removes the temporary file an orphan's recovery token names (an
/// upload whose instance was lost). Already gone is fine: it was aborted,
/// finished, or swept.
pub fn remove_orphan(folder: &Folder, token: &str) -> Result<()> {
    let path = paths::upload_from_token(token)?;
    match folder.root().unlink_file_at(relative(&path)) {
        Ok(()) | Err(ErrorCode::NoEntry) => Ok(()),
        Err(code) => Err(fs_error(code)),
    }
}
