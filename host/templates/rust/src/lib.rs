//! {{name}}: a wasftp storage plugin. As written by `wasftp plugin new`, it
//! serves a small read-only tree from memory and refuses every write; put
//! your own storage behind the same calls. `wit/storage.wit` in wasftp is
//! the contract; docs/plugins.md there is the guide.

use wasftp_sdk::prelude::*;

/// The files this skeleton serves: (path, content).
const FILES: &[(&str, &str)] = &[
    ("/hello.txt", "Hello from {{name}}.\n"),
    ("/docs/readme.txt", "Replace this tree with your own storage.\n"),
];

/// When the files were made (seconds since the epoch).
const MODIFIED: u64 = 1_700_000_000;

struct Plugin;

impl Guest for Plugin {
    type Session = TreeSession;
    type Reader = TreeReader;
    type Writer = NoWriter;

    fn init(config: Vec<(String, String)>) -> std::result::Result<(), String> {
        // Keys starting with `wasftp.` come from the host: accept them.
        if let Some((key, _)) = config.iter().find(|(key, _)| !config::is_reserved(key)) {
            return Err(format!("unknown config key {key:?}: this plugin takes none"));
        }
        log::info("{{name}} ready");
        Ok(())
    }

    fn describe() -> Capabilities {
        Capabilities {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Nothing is kept in the instance: the host may run several.
            scope: InstanceScope::Stateless,
            random_write: false,
            append: false,
            atomic_rename: false,
            set_info: false,
            symlinks: false,
            hard_links: false,
            read_chunk: 256 * 1024,
            write_chunk: 256 * 1024,
            durable_sync: false,
            max_file_size: None,
            copy: false,
            abort_orphans: false,
        }
    }

    fn maintain() -> Result<()> {
        Ok(())
    }

    fn abort_orphan(_token: String) -> Result<()> {
        Ok(())
    }

    fn open_session(_context: SessionContext) -> Result<Session> {
        Ok(Session::new(TreeSession))
    }
}

fn file_info(kind: FileKind, size: u64, version: Option<String>) -> FileInfo {
    let permissions = if kind == FileKind::Directory { 0o555 } else { 0o444 };
    FileInfo { kind, size, permissions, modified: MODIFIED, accessed: MODIFIED, version }
}

/// A version that changes whenever the content does.
fn version_of(content: &str) -> String {
    let hash = content.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{hash:016x}")
}

/// Whether `path` is a directory: `/`, or a parent of some file.
fn is_dir(path: &str) -> bool {
    path == "/" || FILES.iter().any(|(file, _)| file.strip_prefix(path).is_some_and(|rest| rest.starts_with('/')))
}

fn describe_path(path: &str) -> Result<FileInfo> {
    if let Some((_, content)) = FILES.iter().find(|(file, _)| *file == path) {
        return Ok(file_info(FileKind::File, content.len() as u64, Some(version_of(content))));
    }
    if is_dir(path) {
        return Ok(file_info(FileKind::Directory, 0, None));
    }
    Err(Error::NotFound)
}

struct TreeSession;

impl GuestSession for TreeSession {
    fn list_dir(&self, path: String, cursor: Option<String>, limit: u32) -> Result<DirPage> {
        if describe_path(&path)?.kind != FileKind::Directory {
            return Err(Error::NotADirectory);
        }
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        let mut names: Vec<&str> = FILES
            .iter()
            .filter_map(|(file, _)| file.strip_prefix(prefix.as_str()))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        names.sort();
        names.dedup();
        // The cursor is the last name of the previous page.
        let start = cursor.map_or(0, |last| names.partition_point(|name| *name <= last.as_str()));
        let page: Vec<&str> = names[start..].iter().take(limit.max(1) as usize).copied().collect();
        let next_cursor = (start + page.len() < names.len()).then(|| page.last().map(|n| n.to_string())).flatten();
        let entries = page
            .iter()
            .map(|name| Ok(DirEntry { name: name.to_string(), info: describe_path(&format!("{prefix}{name}"))? }))
            .collect::<Result<_>>()?;
        Ok(DirPage { entries, next_cursor })
    }

    fn file_info(&self, path: String) -> Result<FileInfo> {
        describe_path(&path)
    }

    fn link_info(&self, path: String) -> Result<FileInfo> {
        describe_path(&path)
    }

    fn open_read(&self, path: String, version: Option<String>) -> Result<Reader> {
        let info = describe_path(&path)?;
        if info.kind == FileKind::Directory {
            return Err(Error::IsADirectory);
        }
        if version.is_some() && version != info.version {
            return Err(Error::Conflict);
        }
        let content = FILES.iter().find(|(file, _)| *file == path).map(|(_, c)| *c).unwrap_or_default();
        Ok(Reader::new(TreeReader { content, info }))
    }

    fn begin_write(&self, _path: String, _options: WriteOptions) -> Result<Writer> {
        Err(Error::PermissionDenied)
    }
    fn make_dir(&self, _path: String, _permissions: Option<u32>) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn remove_dir(&self, _path: String) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn remove_file(&self, _path: String) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn rename(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn copy_file(&self, _src: String, _dst: String, _overwrite: bool) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn set_info(&self, _path: String, _attrs: SetAttrs) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn read_link(&self, _path: String) -> Result<String> {
        Err(Error::Unsupported)
    }
    fn make_link(&self, _target: String, _path: String) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn hard_link(&self, _src: String, _dst: String) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn space(&self, _path: String) -> Result<SpaceInfo> {
        Err(Error::Unsupported)
    }
}

struct TreeReader {
    content: &'static str,
    info: FileInfo,
}

impl GuestReader for TreeReader {
    fn info(&self) -> FileInfo {
        self.info.clone()
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let bytes = self.content.as_bytes();
        let start = (offset.min(bytes.len() as u64)) as usize;
        let end = start.saturating_add(len as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}

/// Never made: every write is refused before a writer exists.
struct NoWriter;

impl GuestWriter for NoWriter {
    fn write_chunk(&self, _offset: u64, _data: Vec<u8>) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn set_size(&self, _size: u64) -> Result<()> {
        Err(Error::PermissionDenied)
    }
    fn finish(&self) -> Result<FileInfo> {
        Err(Error::PermissionDenied)
    }
    fn abort(&self) {}
    fn recovery_token(&self) -> Option<String> {
        None
    }
}

export_plugin!(Plugin);
