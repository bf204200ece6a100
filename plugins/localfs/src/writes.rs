//! Writes: where one lands (the checks OpenSSH's open makes, a final link
//! followed as open(2) follows it), the pending upload a writer holds,
//! and the server-side copy, which is an upload from another file.

use std::rc::Rc;

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::DescriptorType;

use crate::base::Base;
use crate::config::Config;
use crate::folder::Folder;
use crate::limits::{base_fits, content_fits};
use crate::links;
use crate::paths::client_path;
use crate::upload::{Place, TempFile};

/// Where a write lands.
struct Landing {
    /// The file written: the path asked for, or where its links lead.
    path: String,
    /// A regular file is there now.
    exists: bool,
}

/// The file a write to `path` writes, checked as open(2) checks: the
/// parent must be a directory; an existing name fails `must_be_new`
/// (whatever it is, a link too); a directory is is-a-directory; a FIFO,
/// socket or device is refused; a missing file needs `create`.
///
/// One look at the name answers for the parent too, without a stat of its
/// own: a parent that is no directory makes it not-a-directory, and below
/// a missing parent the name is missing, so a write without `create` is
/// not-found and the temporary file's creation beside it fails not-found.
fn landing(folder: &Folder, path: &str, must_be_new: bool, create: bool) -> Result<Landing> {
    if path == "/" {
        return Err(if must_be_new { Error::AlreadyExists } else { Error::IsADirectory });
    }
    let mut found = folder.lookup(path)?;
    if found.is_some() && must_be_new {
        return Err(Error::AlreadyExists);
    }
    let mut path = path.to_string();
    if found.is_some_and(|stat| stat.type_ == DescriptorType::SymbolicLink) {
        // Where it leads must be a name a client could write too.
        path = client_path(&links::follow_final(folder, &path)?)?;
        if path == "/" {
            return Err(Error::IsADirectory);
        }
        found = folder.lookup(&path)?;
    }
    let exists = match found.map(|stat| stat.type_) {
        None if !create => return Err(Error::NotFound),
        None => false,
        Some(DescriptorType::RegularFile) => true,
        Some(DescriptorType::Directory) => return Err(Error::IsADirectory),
        Some(_) => return Err(Error::PermissionDenied),
    };
    Ok(Landing { path, exists })
}

/// An upload in progress: the temporary file and where it goes.
pub struct PendingWrite {
    temp: TempFile,
    target: String,
    place: Place,
    /// What a replacing write that keeps the content started from, checked
    /// at commit; none for a truncating write (the last commit wins) and an
    /// exclusive one (its link fails when the name was taken).
    base: Option<Base>,
    append: bool,
    /// The pending content's length, where an append writes.
    end: u64,
    /// `max-file-size`: the pending content never grows past it.
    max_file_size: Option<u64>,
    durable: bool,
}

impl PendingWrite {
    pub fn begin(folder: &Rc<Folder>, path: &str, options: &WriteOptions, config: &Config) -> Result<PendingWrite> {
        let landing = landing(folder, path, options.exclusive, options.create)?;
        let keeps_content = !options.truncate;
        // The landing found a regular file there: opened without a second look.
        let current = if landing.exists && keeps_content { Some(folder.open_found_regular(&landing.path)?) } else { None };
        if let Some((_, info)) = &current {
            // Refused before the copy, which would cost the whole file.
            base_fits(config.max_file_size, info.size)?;
        }
        let temp = TempFile::create(folder, path::parent(&landing.path).unwrap_or("/"))?;
        let end = match &current {
            Some((file, _)) => temp.copy_from(file)?,
            None => 0,
        };
        let place = if options.exclusive { Place::Exclusive } else { Place::Replace };
        let base = (keeps_content && place == Place::Replace).then(|| Base::of(current.as_ref().map(|(_, info)| info)));
        Ok(PendingWrite {
            temp,
            target: landing.path,
            place,
            base,
            append: options.append,
            end,
            max_file_size: config.max_file_size,
            durable: config.durable,
        })
    }

    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let offset = if self.append { self.end } else { offset };
        let end = offset.checked_add(data.len() as u64).ok_or(Error::NoSpace)?;
        content_fits(self.max_file_size, end)?;
        self.temp.write_all(offset, data)?;
        self.end = self.end.max(end);
        Ok(())
    }

    pub fn set_size(&mut self, size: u64) -> Result<()> {
        content_fits(self.max_file_size, size)?;
        self.temp.set_size(size)?;
        self.end = size;
        Ok(())
    }

    pub fn recovery_token(&self) -> Option<String> {
        self.temp.recovery_token()
    }

    /// Commits: the content appears at its path, whole, in one step; a
    /// write that keeps the content only while the name still holds its
    /// base (`conflict` otherwise, and the temporary file is removed).
    pub fn finish(self) -> Result<FileInfo> {
        self.temp.place(&self.target, self.place, self.base.as_ref(), self.durable)
    }
}

/// Copies the file `src` to `dst` (replacing a file there only when
/// `overwrite`), through a temporary file as an upload.
pub fn copy_file(folder: &Rc<Folder>, src: &str, dst: &str, overwrite: bool, config: &Config) -> Result<()> {
    let (source, info) = folder.open_regular(src)?;
    base_fits(config.max_file_size, info.size)?;
    let landing = landing(folder, dst, !overwrite, true)?;
    let temp = TempFile::create(folder, path::parent(&landing.path).unwrap_or("/"))?;
    temp.copy_from(&source)?;
    let place = if overwrite { Place::Replace } else { Place::Exclusive };
    temp.place(&landing.path, place, None, config.durable).map(drop)
}
