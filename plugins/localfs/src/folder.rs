//! The folder the host grants: its preopened descriptor, and the calls on
//! it that every operation shares. Every path given here is a normalised
//! contract path; it reaches the descriptor relative (`/a/b` as `a/b`), so
//! the sandbox refuses whatever would leave the folder.

use wasftp_sdk::prelude::*;
use wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, ErrorCode, MetadataHashValue, OpenFlags, PathFlags,
};

use crate::attrs;
use crate::errors::fs_error;
use crate::paths::relative;

/// Whether a call follows a final symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Yes,
    No,
}

impl Follow {
    fn flags(self) -> PathFlags {
        match self {
            Follow::Yes => PathFlags::SYMLINK_FOLLOW,
            Follow::No => PathFlags::empty(),
        }
    }
}

pub struct Folder {
    root: Descriptor,
    /// The host granted it read-only: reported in the modes, and every
    /// change is refused by the sandbox.
    read_only: bool,
}

impl Folder {
    /// The directory the host preopened as `/`.
    pub fn from_preopens() -> std::result::Result<Folder, String> {
        let root = wasi::filesystem::preopens::get_directories()
            .into_iter()
            .find_map(|(dir, name)| (name == "/").then_some(dir))
            .ok_or_else(|| {
                "localfs serves a folder the host grants: `preopen = { dir = \"/srv/sftp\", mode = \"rw\" }` \
                 under [plugins.NAME]"
                    .to_string()
            })?;
        let flags = root.get_flags().map_err(|e| format!("the granted folder: {}", e.message()))?;
        Ok(Folder { root, read_only: !flags.contains(DescriptorFlags::MUTATE_DIRECTORY) })
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The preopened descriptor, for the calls that name two paths in it.
    pub fn root(&self) -> &Descriptor {
        &self.root
    }

    pub fn stat(&self, path: &str, follow: Follow) -> Result<DescriptorStat> {
        self.root.stat_at(follow.flags(), relative(path)).map_err(fs_error)
    }

    /// What is at `path` itself (a link is not followed), if anything.
    pub fn lookup(&self, path: &str) -> Result<Option<DescriptorStat>> {
        match self.stat(path, Follow::No) {
            Ok(stat) => Ok(Some(stat)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The contract's description of `path`.
    pub fn info(&self, path: &str, follow: Follow) -> Result<FileInfo> {
        let stat = self.stat(path, follow)?;
        let identity = match stat.type_ {
            DescriptorType::RegularFile => Some(self.root.metadata_hash_at(follow.flags(), relative(path)).map_err(fs_error)?),
            _ => None,
        };
        Ok(self.describe(&stat, identity))
    }

    /// The description of what `path` itself is now (a link not
    /// followed), if anything.
    pub fn info_if_any(&self, path: &str) -> Result<Option<FileInfo>> {
        match self.info(path, Follow::No) {
            Ok(info) => Ok(Some(info)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A listing's description of `name` in the open directory `dir`, a
    /// link not followed: without a version, which would cost a second
    /// host call per entry (the host takes versions from `file-info`).
    pub fn entry_info(&self, dir: &Descriptor, name: &str) -> Result<FileInfo> {
        let stat = dir.stat_at(Follow::No.flags(), name).map_err(fs_error)?;
        Ok(self.describe(&stat, None))
    }

    /// The description of an open file or directory.
    pub fn describe_open(&self, file: &Descriptor) -> Result<FileInfo> {
        self.describe_stat_of_open(file, file.stat().map_err(fs_error)?)
    }

    /// The description of the open `file` whose `stat` was just taken.
    fn describe_stat_of_open(&self, file: &Descriptor, stat: DescriptorStat) -> Result<FileInfo> {
        let identity = match stat.type_ {
            DescriptorType::RegularFile => Some(file.metadata_hash().map_err(fs_error)?),
            _ => None,
        };
        Ok(self.describe(&stat, identity))
    }

    /// `identity` (a file's metadata hash) makes its version.
    fn describe(&self, stat: &DescriptorStat, identity: Option<MetadataHashValue>) -> FileInfo {
        let kind = kind(stat.type_);
        let modified = stat.data_modification_timestamp.map_or((0, 0), |t| (t.seconds, t.nanoseconds));
        let accessed = stat.data_access_timestamp.map_or(0, |t| t.seconds);
        FileInfo {
            kind,
            size: stat.size,
            permissions: attrs::permissions(kind, self.read_only),
            modified: modified.0,
            accessed,
            version: identity.map(|hash| attrs::version((hash.upper, hash.lower), modified, stat.size)),
        }
    }

    /// A regular file opened for reading (a final link followed), with its
    /// description. Anything else is refused before it is opened: opening
    /// a FIFO would wait for a writer, and a device is not ours to read.
    pub fn open_regular(&self, path: &str) -> Result<(Descriptor, FileInfo)> {
        regular(self.stat(path, Follow::Yes)?.type_)?;
        self.open_found_regular(path)
    }

    /// [`Folder::open_regular`] for a `path` the caller has just looked at
    /// and found a regular file (no second look before opening it).
    pub fn open_found_regular(&self, path: &str) -> Result<(Descriptor, FileInfo)> {
        let file = self
            .root
            .open_at(PathFlags::SYMLINK_FOLLOW, relative(path), OpenFlags::empty(), DescriptorFlags::READ)
            .map_err(fs_error)?;
        // What was opened may not be what was looked at; the stat that
        // tells (not a get-type of its own) describes it too.
        let stat = file.stat().map_err(fs_error)?;
        regular(stat.type_)?;
        let info = self.describe_stat_of_open(&file, stat)?;
        Ok((file, info))
    }

    /// The directory at `path` (a final link followed), opened for reading.
    pub fn open_dir(&self, path: &str, follow: Follow) -> Result<Descriptor> {
        self.root
            .open_at(follow.flags(), relative(path), OpenFlags::DIRECTORY, DescriptorFlags::READ)
            .map_err(fs_error)
    }

    /// That `dir` is an existing directory, as the parent of something to
    /// be made in it must be.
    pub fn check_parent(&self, dir: &str) -> Result<()> {
        match self.stat(dir, Follow::Yes)?.type_ {
            DescriptorType::Directory => Ok(()),
            _ => Err(Error::NotADirectory),
        }
    }

    /// Makes the entries of `dir` durable (after a rename or link into it).
    pub fn sync_dir(&self, dir: &str) -> std::result::Result<(), ErrorCode> {
        match dir {
            "/" => self.root.sync(),
            _ => self
                .root
                .open_at(PathFlags::SYMLINK_FOLLOW, relative(dir), OpenFlags::DIRECTORY, DescriptorFlags::READ)
                .and_then(|d| d.sync()),
        }
    }
}

pub fn kind(type_: DescriptorType) -> FileKind {
    match type_ {
        DescriptorType::RegularFile => FileKind::File,
        DescriptorType::Directory => FileKind::Directory,
        DescriptorType::SymbolicLink => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// Ok for a regular file; a directory is is-a-directory, and a FIFO,
/// socket or device permission-denied (never opened).
pub fn regular(type_: DescriptorType) -> Result<()> {
    match type_ {
        DescriptorType::RegularFile => Ok(()),
        DescriptorType::Directory => Err(Error::IsADirectory),
        _ => Err(Error::PermissionDenied),
    }
}
