//! The behaviours of a plugin that refuses writes (a published tree, a
//! read-only mirror): checked on what it already serves, found by walking
//! its tree from `/`, since the check cannot make files of its own.

use futures::future::BoxFuture;

use super::Verdict;
use super::cases::{Outcome, Wrong, fail, verdict};
use crate::plugin::{Capabilities, DirEntry, FileKind, Session, StorageError, WriteOptions};

/// How far the walk goes: a published tree can be large, the check need
/// only find one of each thing.
const DIRECTORIES_VISITED: usize = 64;
const PAGES_PER_DIRECTORY: usize = 20;
const PAGE: u32 = 100;
/// A file read whole is at most this large.
const FILE_READ_WHOLE: u64 = 4 << 20;
/// Directories waiting to be walked, at most.
const QUEUED: usize = 1024;
/// The directory paged through by ones holds at most this many entries.
const PAGED_AT_MOST: usize = 200;

/// What the walk found to check.
#[derive(Debug, Default)]
pub struct Found {
    /// A non-empty file small enough to read whole.
    pub file: Option<String>,
    /// A directory and its entries (at least one).
    pub listed: Option<(String, Vec<DirEntry>)>,
    /// A directory of two to `PAGED_AT_MOST` entries, listed to its end, for paging.
    pub paged: Option<(String, usize)>,
    /// A symbolic link, when the plugin declares `symlinks`.
    pub link: Option<String>,
    /// What the walk ran into, if it stopped early.
    pub trouble: Option<String>,
    /// How many directories it listed.
    pub walked: usize,
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

/// Walks breadth first from `/` until it has one of each thing, or has seen
/// enough directories.
pub async fn discover(session: &Session) -> Found {
    let mut found = Found::default();
    let mut queue = std::collections::VecDeque::from([String::from("/")]);
    let mut visited = 0;
    let mut walked = 0;
    while let Some(dir) = queue.pop_front() {
        if visited == DIRECTORIES_VISITED {
            break;
        }
        visited += 1;
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        let mut ended = false;
        for _ in 0..PAGES_PER_DIRECTORY {
            match session.list_dir(&dir, cursor.as_deref(), PAGE).await {
                Ok(page) => {
                    entries.extend(page.entries);
                    cursor = page.next_cursor;
                }
                // One directory it may not list spoils nothing else; `/` does.
                Err(e) if dir == "/" => {
                    found.trouble = Some(format!("list-dir /: {e}"));
                    return found;
                }
                Err(_) => break,
            }
            if cursor.is_none() {
                ended = true;
                break;
            }
        }
        walked += 1;
        for entry in &entries {
            let path = join(&dir, &entry.name);
            match entry.info.kind {
                FileKind::File if found.file.is_none() && entry.info.size > 0 && entry.info.size <= FILE_READ_WHOLE => found.file = Some(path),
                FileKind::Directory if queue.len() < QUEUED => queue.push_back(path),
                FileKind::Symlink if found.link.is_none() => found.link = Some(path),
                _ => {}
            }
        }
        if ended && (2..=PAGED_AT_MOST).contains(&entries.len()) && found.paged.is_none() {
            found.paged = Some((dir.clone(), entries.len()));
        }
        if !entries.is_empty() && found.listed.is_none() {
            found.listed = Some((dir.clone(), entries));
        }
        if found.file.is_some() && found.paged.is_some() && found.link.is_some() {
            break;
        }
    }
    found.walked = walked;
    found
}

/// What the behaviours work with.
pub struct Check<'a> {
    pub session: &'a Session,
    pub caps: Capabilities,
    pub found: Found,
}

pub struct Case {
    pub behaviour: &'static str,
    pub run: for<'a> fn(&'a Check<'a>) -> BoxFuture<'a, Verdict>,
}

macro_rules! case {
    ($behaviour:literal, $f:ident) => {
        Case { behaviour: $behaviour, run: |check| Box::pin(async move { verdict($f(check).await) }) }
    };
}

pub static ALL: &[Case] = &[
    case!("read-only: every write is refused, and changes nothing", writes_refused),
    case!("read-only: a file reads whole, at offsets, and past the end (empty)", file_reads),
    case!("read-only: a listing's attributes are the files' own", listing_attributes),
    case!("read-only: a listing pages through all entries, none twice", listing_pages),
    case!("read-only: the wrong kind of path is refused", wrong_kinds),
    case!("read-only: the file's version reads, another is conflict", pinned_version),
    case!("read-only: symlinks are read and described", symlinks),
];

impl Check<'_> {
    fn file(&self) -> Result<&str, Wrong> {
        self.found.file.as_deref().ok_or_else(|| self.nothing("a non-empty file of at most 4 MiB", true))
    }

    fn listed(&self) -> Result<(&str, &[DirEntry]), Wrong> {
        self.found.listed.as_ref().map(|(dir, entries)| (dir.as_str(), entries.as_slice())).ok_or_else(|| self.nothing("directory with entries", true))
    }

    /// What the walk did not find: a failure when the check cannot do
    /// without it (a pass would claim what was never checked), else a skip.
    fn nothing(&self, what: &str, needed: bool) -> Wrong {
        match &self.found.trouble {
            Some(trouble) => Wrong::Failed(format!("walking the tree from / to find {what} failed: {trouble}")),
            None => {
                let why = format!(
                    "the check found no {what} in the {} directories it walked from /: a read-only plugin is checked on what it serves, so give it some (e.g. with --config)",
                    self.found.walked
                );
                if needed { Wrong::Failed(why) } else { Wrong::Skipped(why) }
            }
        }
    }

    async fn whole(&self, path: &str) -> Result<Vec<u8>, Wrong> {
        let reader = self.session.open_read(path, None).await.or_else(|e| fail(format!("open-read {path}: {e}")))?;
        read_from(&reader, 0, usize::MAX).await
    }
}

/// Up to `len` bytes from `offset`, over as many reads as the plugin needs.
async fn read_from(reader: &crate::plugin::Reader, offset: u64, len: usize) -> Result<Vec<u8>, Wrong> {
    let mut data = Vec::new();
    while data.len() < len {
        let at = offset + data.len() as u64;
        let want = (len - data.len()).min(1 << 20) as u32;
        let piece = reader.read(at, want).await.or_else(|e| fail(format!("read at {at}: {e}")))?;
        if piece.is_empty() {
            break;
        }
        data.extend_from_slice(&piece);
        if data.len() as u64 > FILE_READ_WHOLE {
            return fail(format!("reading gave more than {FILE_READ_WHOLE} bytes of a file whose listing said less"));
        }
    }
    Ok(data)
}

fn refused(what: &str, result: Result<(), StorageError>) -> Outcome {
    match result {
        Err(StorageError::PermissionDenied | StorageError::Unsupported) => Ok(()),
        Err(e) => fail(format!("{what}: expected permission-denied from a plugin that refuses writes, got {e}")),
        Ok(()) => fail(format!("{what} succeeded, though make-dir was refused")),
    }
}

/// Where an upload to a new name was refused.
#[derive(PartialEq)]
enum RefusedAt {
    Begin,
    Chunk,
    Finish,
}

/// An upload to `new`, a name nothing has: refused at some step, or made
/// (then removed again, and a failure).
async fn new_upload_refused(s: &Session, new: &str) -> Result<RefusedAt, Wrong> {
    let options = WriteOptions { create: true, truncate: true, exclusive: true, append: false, permissions: None };
    let writer = match s.begin_write(new, options).await {
        Ok(writer) => writer,
        Err(e) => return refused(&format!("begin-write of a new file {new}"), Err(e)).map(|()| RefusedAt::Begin),
    };
    if let Err(e) = writer.write_chunk(0, b"wasftp-check".to_vec()).await {
        let _ = writer.abort().await;
        return refused(&format!("write-chunk to a new file {new}"), Err(e)).map(|()| RefusedAt::Chunk);
    }
    match writer.finish().await {
        Err(e) => refused(&format!("finish of a new file {new}"), Err(e)).map(|()| RefusedAt::Finish),
        Ok(_) => {
            let _ = s.remove_file(new).await;
            fail(format!("an upload of a new file {new} was committed, though make-dir was refused"))
        }
    }
}

/// Removes `new` when a probe that makes it was taken.
async fn undo_if_taken(s: &Session, new: &str, result: &Result<(), StorageError>) {
    if result.is_ok() {
        let _ = s.remove_file(new).await;
    }
}

/// Every write the check can try without risk to what the plugin serves:
/// an upload to a new name, an overwrite that is never finished (aborted),
/// a copy and links to a new name. Removing, renaming or truncating a real
/// file is not tried: were it taken, the check would have destroyed it.
async fn writes_refused(c: &Check<'_>) -> Outcome {
    let s = c.session;
    let new = format!("/wasftp-check-new-{:016x}", rand::random::<u64>());
    let refused_at = new_upload_refused(s, &new).await?;
    let file = c.file()?;
    let before = c.whole(file).await?;
    // A write that would keep the content, opened and at once aborted: no
    // byte is sent, so even a plugin that writes in place changes nothing.
    let keeping = WriteOptions { create: false, truncate: false, exclusive: false, append: false, permissions: None };
    match s.begin_write(file, keeping).await {
        Err(e) => refused(&format!("begin-write over {file}"), Err(e))?,
        Ok(writer) => {
            let _ = writer.abort().await;
            if refused_at == RefusedAt::Begin {
                return fail(format!("begin-write over {file} was taken (then aborted by the check), though begin-write of a new file was refused"));
            }
        }
    }
    // Each of these makes `new` when taken: it is removed again before failing.
    if c.caps.copy {
        let result = s.copy_file(file, &new, false).await;
        undo_if_taken(s, &new, &result).await;
        refused(&format!("copy-file {file} to {new}"), result)?;
    }
    if c.caps.symlinks {
        let result = s.make_link(file, &new).await;
        undo_if_taken(s, &new, &result).await;
        refused(&format!("make-link {new}"), result)?;
    }
    if c.caps.hard_links {
        let result = s.hard_link(file, &new).await;
        undo_if_taken(s, &new, &result).await;
        refused(&format!("hard-link {new}"), result)?;
    }
    let after = c.whole(file).await?;
    if after != before {
        return fail(format!("{file} changed ({} bytes, now {}) though every write was refused", before.len(), after.len()));
    }
    match s.file_info(&new).await {
        Err(StorageError::NotFound) => Ok(()),
        other => {
            let removed = s.remove_file(&new).await;
            fail(format!("file-info {new} after refused writes: expected not-found, got {other:?} (removing it: {removed:?})"))
        }
    }
}

async fn file_reads(c: &Check<'_>) -> Outcome {
    let file = c.file()?;
    let info = c.session.file_info(file).await.or_else(|e| fail(format!("file-info {file}: {e}")))?;
    let reader = c.session.open_read(file, None).await.or_else(|e| fail(format!("open-read {file}: {e}")))?;
    let at_open = reader.info().await.or_else(|e| fail(format!("reader info: {e}")))?;
    let whole = read_from(&reader, 0, usize::MAX).await?;
    if whole.len() as u64 != info.size || at_open.size != info.size {
        return fail(format!(
            "{file}: file-info says {} bytes, the reader's info {}, and reading gave {}",
            info.size,
            at_open.size,
            whole.len()
        ));
    }
    let middle = whole.len() / 2;
    let part = read_from(&reader, middle as u64, 7).await?;
    let want = &whole[middle..(middle + 7).min(whole.len())];
    if part != want {
        return fail(format!("{file}: {} bytes read at offset {middle} differ from the same bytes of the whole file", part.len()));
    }
    for offset in [info.size, 1 << 40] {
        let past = reader.read(offset, 10).await.or_else(|e| fail(format!("read at {offset}, past the end: {e} (the end of a file is an empty read)")))?;
        if !past.is_empty() {
            return fail(format!("a read at {offset}, past the end of {file}, gave {} bytes", past.len()));
        }
    }
    Ok(())
}

async fn listing_attributes(c: &Check<'_>) -> Outcome {
    let (dir, entries) = c.listed()?;
    for entry in entries.iter().take(20) {
        let path = join(dir, &entry.name);
        // A listing describes a link itself, as LSTAT does.
        let own = if entry.info.kind == FileKind::Symlink && c.caps.symlinks {
            c.session.link_info(&path).await
        } else {
            c.session.file_info(&path).await
        };
        let own = own.or_else(|e| fail(format!("{path} is listed in {dir}, but describing it failed: {e}")))?;
        if own.kind != entry.info.kind || own.size != entry.info.size || own.modified != entry.info.modified {
            return fail(format!(
                "{path}: the listing says {:?} of {} bytes modified at {}, its own info {:?} of {} bytes modified at {}",
                entry.info.kind, entry.info.size, entry.info.modified, own.kind, own.size, own.modified
            ));
        }
    }
    Ok(())
}

async fn listing_pages(c: &Check<'_>) -> Outcome {
    let Some((dir, count)) = c.found.paged.as_ref().map(|(dir, count)| (dir.as_str(), *count)) else {
        return Err(c.nothing(&format!("directory of 2 to {PAGED_AT_MOST} entries"), false));
    };
    let pages = |limit: u32| async move {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        // A page of one more than the directory holds would be past its end.
        for _ in 0..=count {
            let page = c.session.list_dir(dir, cursor.as_deref(), limit).await.or_else(|e| fail(format!("list-dir {dir} by pages of {limit}: {e}")))?;
            if page.entries.len() > limit as usize {
                return fail(format!("list-dir {dir} gave {} entries for a limit of {limit}", page.entries.len()));
            }
            names.extend(page.entries.into_iter().map(|e| e.name));
            cursor = page.next_cursor;
            if cursor.is_none() {
                names.sort();
                return Ok(names);
            }
        }
        fail(format!("pages of {limit} of {dir}, which holds {count} entries, did not end within {} pages", count + 1))
    };
    let by_one = pages(1).await?;
    let at_once = pages(1000).await?;
    let shown = |names: &[String]| names.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
    let mut unique = by_one.clone();
    unique.dedup();
    if unique.len() != by_one.len() {
        return fail(format!("pages of 1 of {dir} gave some names twice: {}", shown(&by_one)));
    }
    if by_one != at_once {
        return fail(format!(
            "pages of 1 of {dir} gave {} names ({}…); pages of 1000 gave {} ({}…)",
            by_one.len(),
            shown(&by_one),
            at_once.len(),
            shown(&at_once)
        ));
    }
    Ok(())
}

async fn wrong_kinds(c: &Check<'_>) -> Outcome {
    let file = c.file()?;
    let (dir, _) = c.listed()?;
    match c.session.open_read(dir, None).await {
        Err(StorageError::IsADirectory) => {}
        Err(e) => return fail(format!("open-read of the directory {dir}: expected is-a-directory, got {e}")),
        Ok(reader) => match reader.read(0, 10).await {
            Err(StorageError::IsADirectory) => {}
            other => return fail(format!("reading the directory {dir}: expected is-a-directory, got {other:?}")),
        },
    }
    match c.session.list_dir(file, None, 10).await {
        Err(StorageError::NotADirectory) => Ok(()),
        other => fail(format!("list-dir of the file {file}: expected not-a-directory, got {:?}", other.map(|p| p.entries.len()))),
    }
}

async fn pinned_version(c: &Check<'_>) -> Outcome {
    let file = c.file()?;
    let info = c.session.file_info(file).await.or_else(|e| fail(format!("file-info {file}: {e}")))?;
    let Some(version) = info.version else {
        return Err(Wrong::Skipped("file-info gives no version".into()));
    };
    let reader = c.session.open_read(file, Some(&version)).await.or_else(|e| fail(format!("open-read {file} at its own version {version:?}: {e}")))?;
    let pinned = read_from(&reader, 0, usize::MAX).await?;
    if pinned != c.whole(file).await? {
        return fail(format!("{file} read at version {version:?} differs from the file read without one"));
    }
    let other = format!("{version}-not-this");
    match c.session.open_read(file, Some(&other)).await {
        Err(StorageError::Conflict) => Ok(()),
        Err(e) => fail(format!("open-read {file} at a version it does not have: expected conflict, got {e}")),
        Ok(_) => fail(format!("open-read {file} at a version it does not have ({other:?}) succeeded; expected conflict")),
    }
}

async fn symlinks(c: &Check<'_>) -> Outcome {
    if !c.caps.symlinks {
        return Err(Wrong::Skipped("`symlinks` is not declared".into()));
    }
    let Some(link) = c.found.link.as_deref() else {
        return Err(c.nothing("symbolic link", false));
    };
    // A link pointing out of the plugin's reach (made beside it, a folder's
    // link to /etc) may be refused: read and followed alike.
    let out_of_reach = match c.session.read_link(link).await {
        Ok(target) if target.is_empty() => return fail(format!("read-link {link} gave an empty target")),
        Ok(_) => false,
        Err(StorageError::PermissionDenied) => true,
        Err(e) => return fail(format!("read-link {link}: {e}")),
    };
    let own = c.session.link_info(link).await.or_else(|e| fail(format!("link-info {link}: {e}")))?;
    if own.kind != FileKind::Symlink {
        return fail(format!("link-info of the link {link} gave {:?}", own.kind));
    }
    match c.session.file_info(link).await {
        Ok(followed) if followed.kind == FileKind::Symlink => fail(format!("file-info of {link} describes the link itself; it follows it")),
        Ok(_) if out_of_reach => fail(format!("read-link {link} was refused, yet file-info follows it")),
        // A dangling link is not-found when followed.
        Ok(_) | Err(StorageError::NotFound) => Ok(()),
        Err(StorageError::PermissionDenied) if out_of_reach => Ok(()),
        Err(e) => fail(format!("file-info of the link {link}: {e}")),
    }
}
