//! The behaviours, one function each, in the words of the contract. Each
//! works in its own names under the check's directory.

use futures::future::BoxFuture;

use super::Verdict;
use crate::plugin::{Capabilities, FileInfo, FileKind, SetAttrs, Session, StorageError, WriteOptions};

/// What the behaviours work with.
pub struct Check<'a> {
    pub session: &'a Session,
    pub caps: Capabilities,
    /// The check's directory, or why the plugin has none (it refuses writes).
    pub base: Result<String, String>,
    /// Every path the check made, in order: what cleanup removes, and nothing else.
    pub created: std::sync::Mutex<Vec<String>>,
}

pub struct Case {
    pub behaviour: &'static str,
    /// Whether it needs files of its own (a read-only plugin skips it).
    pub writes: bool,
    pub run: for<'a> fn(&'a Check<'a>) -> BoxFuture<'a, Verdict>,
}

/// Why a behaviour did not pass (the read-only behaviours' too).
pub(super) enum Wrong {
    Failed(String),
    Skipped(String),
}

pub(super) type Outcome = Result<(), Wrong>;

pub(super) fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Ok(()) => Verdict::Passed,
        Err(Wrong::Failed(why)) => Verdict::Failed(why),
        Err(Wrong::Skipped(why)) => Verdict::Skipped(why),
    }
}

pub(super) fn fail<T>(why: impl Into<String>) -> Result<T, Wrong> {
    Err(Wrong::Failed(why.into()))
}

macro_rules! case {
    (reads $behaviour:literal, $f:ident) => {
        Case { behaviour: $behaviour, writes: false, run: |check| Box::pin(async move { verdict($f(check).await) }) }
    };
    ($behaviour:literal, $f:ident) => {
        Case { behaviour: $behaviour, writes: true, run: |check| Box::pin(async move { verdict($f(check).await) }) }
    };
}

pub static ALL: &[Case] = &[
    case!(reads "a missing path is not-found (file-info, open-read, list-dir)", missing_paths),
    case!("a written file reads back whole (finish gives its info)", written_file_reads_back),
    case!("reads at an offset, and past the end (empty)", reads_at_offsets),
    case!("a reader's info is the version it reads", reader_info),
    case!("a listing shows each file with its attributes", listing_attributes),
    case!("a listing pages through all entries, none twice", listing_pages),
    case!("an upload is invisible until finish", upload_invisible_until_finish),
    case!("abort leaves nothing behind", abort_leaves_nothing),
    case!("an exclusive create of an existing file is already-exists", exclusive_create),
    case!("an exclusive create is checked again at finish", exclusive_at_finish),
    case!("a truncating write replaces the content", truncating_write),
    case!("a write that keeps the content goes on from its end", keeping_write),
    case!("a reader keeps its version across an overwrite (or says conflict)", pinned_reader),
    case!("a pinned version that changed is conflict", pinned_version),
    case!("rename moves, and overwrites only when asked", rename),
    case!("directories: make, list, not-empty, remove", directories),
    case!("the wrong kind of path is refused", wrong_kinds),
    case!("random-write: chunks at any offset", random_write),
    case!("append: chunks go to the end", append),
    case!("copy: copy-file copies whole files", copy),
    case!("set-info: times and permissions are kept", set_info),
    case!("symlinks: made, read and described", symlinks),
    case!("hard-links: two names, one content", hard_links),
];

impl Check<'_> {
    fn made(&self, path: &str) {
        self.created.lock().expect("created paths lock").push(path.to_string());
    }

    async fn mkdir(&self, path: &str) -> Outcome {
        self.session.make_dir(path, None).await.or_else(|e| fail(format!("make-dir {path}: {e}")))?;
        self.made(path);
        Ok(())
    }

    fn dir(&self) -> Result<&str, Wrong> {
        self.base.as_deref().map_err(|why| Wrong::Skipped(format!("the plugin refuses writes ({why})")))
    }

    fn path(&self, name: &str) -> Result<String, Wrong> {
        Ok(format!("{}/{name}", self.dir()?))
    }

    fn require(&self, declared: bool, capability: &str) -> Outcome {
        if declared { Ok(()) } else { Err(Wrong::Skipped(format!("`{capability}` is not declared"))) }
    }

    fn options(&self) -> WriteOptions {
        WriteOptions { create: true, truncate: true, exclusive: false, append: false, permissions: None }
    }

    /// Writes `data` as a client's upload would: sequential chunks of the
    /// plugin's size, then finish.
    async fn put_with(&self, path: &str, data: &[u8], options: WriteOptions) -> Result<FileInfo, Wrong> {
        self.made(path);
        let writer = self.session.begin_write(path, options).await.or_else(|e| fail(format!("begin-write {path}: {e}")))?;
        let chunk = (self.caps.write_chunk.max(1) as usize).min(1 << 20);
        for (i, piece) in data.chunks(chunk).enumerate() {
            let offset = (i * chunk) as u64;
            if let Err(e) = writer.write_chunk(offset, piece.to_vec()).await {
                let _ = writer.abort().await;
                return fail(format!("write-chunk at {offset} of {path}: {e}"));
            }
        }
        writer.finish().await.or_else(|e| fail(format!("finish of {path}: {e}")))
    }

    /// " world" after the 5 bytes of `path`, at offset 5, in one writer.
    async fn add_at_end(&self, path: &str, options: WriteOptions, what: &str) -> Outcome {
        let writer = self.session.begin_write(path, options).await.or_else(|e| fail(format!("begin-write {path} for {what}: {e}")))?;
        if let Err(e) = writer.write_chunk(5, b" world".to_vec()).await {
            let _ = writer.abort().await;
            return fail(format!("write-chunk of {what} at 5, the end of the file's 5 bytes: {e}"));
        }
        writer.finish().await.map(drop).or_else(|e| fail(format!("finish of {what}: {e}")))
    }

    async fn put(&self, path: &str, data: &[u8]) -> Result<FileInfo, Wrong> {
        self.put_with(path, data, self.options()).await
    }

    /// The whole content, read as a client reads it.
    async fn get(&self, path: &str) -> Result<Vec<u8>, Wrong> {
        let reader = self.session.open_read(path, None).await.or_else(|e| fail(format!("open-read {path}: {e}")))?;
        read_all(&reader, path).await
    }

    async fn info(&self, path: &str) -> Result<FileInfo, Wrong> {
        self.session.file_info(path).await.or_else(|e| fail(format!("file-info {path}: {e}")))
    }

    /// Every entry of `dir`, following cursors; more than `at_most` fails.
    async fn list(&self, dir: &str, limit: u32, at_most: usize) -> Result<Vec<crate::plugin::DirEntry>, Wrong> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let page = self.session.list_dir(dir, cursor.as_deref(), limit).await.or_else(|e| fail(format!("list-dir {dir}: {e}")))?;
            if page.entries.len() > limit as usize {
                return fail(format!("list-dir {dir} gave {} entries for a limit of {limit}", page.entries.len()));
            }
            entries.extend(page.entries);
            if entries.len() > at_most {
                return fail(format!("list-dir {dir} gave more than {at_most} entries; the check made far fewer there"));
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(entries);
            }
        }
        fail(format!("list-dir {dir} did not end within 10 000 pages"))
    }
}

/// Up to `len` bytes at `offset`, over as many reads as the plugin needs
/// (a read may return less than asked before the end).
async fn read_exact(reader: &crate::plugin::Reader, offset: u64, len: u32) -> Result<Vec<u8>, Wrong> {
    let mut data = Vec::new();
    while data.len() < len as usize {
        let at = offset + data.len() as u64;
        let piece = reader.read(at, len - data.len() as u32).await.or_else(|e| fail(format!("read at {at}: {e}")))?;
        if piece.is_empty() {
            break;
        }
        data.extend_from_slice(&piece);
    }
    data.truncate(len as usize);
    Ok(data)
}

async fn read_all(reader: &crate::plugin::Reader, path: &str) -> Result<Vec<u8>, Wrong> {
    read_all_raw(reader).await.or_else(|(at, e)| fail(format!("read of {path} at {at}: {e}")))
}

/// The whole content, or where reading failed and why.
async fn read_all_raw(reader: &crate::plugin::Reader) -> Result<Vec<u8>, (usize, StorageError)> {
    let mut data = Vec::new();
    loop {
        let piece = reader.read(data.len() as u64, 64 << 10).await.map_err(|e| (data.len(), e))?;
        if piece.is_empty() {
            return Ok(data);
        }
        data.extend_from_slice(&piece);
        if data.len() > 64 << 20 {
            return Err((data.len(), StorageError::Io("reads on past 64 MiB".into())));
        }
    }
}


/// `result` is the error `want` names.
fn expect_error<T: std::fmt::Debug>(result: Result<T, StorageError>, want: fn(&StorageError) -> bool, what: &str, expected: &str) -> Outcome {
    match result {
        Err(e) if want(&e) => Ok(()),
        Err(e) => fail(format!("{what}: expected {expected}, got {e}")),
        Ok(v) => fail(format!("{what}: expected {expected}, got success ({v:?})")),
    }
}

fn same(what: &str, got: &[u8], want: &[u8]) -> Outcome {
    if got == want {
        Ok(())
    } else {
        fail(format!("{what}: read {} bytes that differ from the {} written", got.len(), want.len()))
    }
}

const HELLO: &[u8] = b"hello, conformance";

async fn missing_paths(c: &Check<'_>) -> Outcome {
    let missing = match &c.base {
        Ok(dir) => format!("{dir}/missing"),
        Err(_) => format!("/wasftp-check-missing-{:016x}", rand::random::<u64>()),
    };
    let not_found = |e: &StorageError| matches!(e, StorageError::NotFound);
    expect_error(c.session.file_info(&missing).await, not_found, &format!("file-info {missing}"), "not-found")?;
    expect_error(c.session.open_read(&missing, None).await.map(drop), not_found, &format!("open-read {missing}"), "not-found")?;
    expect_error(c.session.list_dir(&missing, None, 10).await.map(drop), not_found, &format!("list-dir {missing}"), "not-found")
}

async fn written_file_reads_back(c: &Check<'_>) -> Outcome {
    let path = c.path("hello.txt")?;
    // More than one chunk when the plugin's chunks are small.
    let data: Vec<u8> = HELLO.iter().copied().cycle().take(3 * c.caps.write_chunk.clamp(1, 1 << 16) as usize + 7).collect();
    let finished = c.put(&path, &data).await?;
    if finished.size != data.len() as u64 || finished.kind != FileKind::File {
        return fail(format!("finish gave {:?} of {} bytes; {} were written", finished.kind, finished.size, data.len()));
    }
    let info = c.info(&path).await?;
    if info.size != data.len() as u64 || info.kind != FileKind::File {
        return fail(format!("file-info gave {:?} of {} bytes; {} were written", info.kind, info.size, data.len()));
    }
    same(&format!("reading {path}"), &c.get(&path).await?, &data)
}

async fn reads_at_offsets(c: &Check<'_>) -> Outcome {
    let path = c.path("offsets.txt")?;
    c.put(&path, HELLO).await?;
    let reader = c.session.open_read(&path, None).await.or_else(|e| fail(format!("open-read {path}: {e}")))?;
    let mid = read_exact(&reader, 7, 5).await?;
    if mid != HELLO[7..12] {
        return fail(format!("read(7, 5) gave {:?}, not {:?}", String::from_utf8_lossy(&mid), String::from_utf8_lossy(&HELLO[7..12])));
    }
    let tail = read_exact(&reader, HELLO.len() as u64 - 2, 100).await?;
    if tail != HELLO[HELLO.len() - 2..] {
        return fail(format!("a read across the end gave {} bytes, not the last 2", tail.len()));
    }
    for offset in [HELLO.len() as u64, 1 << 40] {
        let past = reader.read(offset, 10).await.or_else(|e| fail(format!("read at {offset}, past the end: {e} (the end of a file is an empty read)")))?;
        if !past.is_empty() {
            return fail(format!("a read at {offset}, past the end, gave {} bytes", past.len()));
        }
    }
    Ok(())
}

async fn reader_info(c: &Check<'_>) -> Outcome {
    let path = c.path("info.txt")?;
    c.put(&path, HELLO).await?;
    let reader = c.session.open_read(&path, None).await.or_else(|e| fail(format!("open-read {path}: {e}")))?;
    let info = reader.info().await.or_else(|e| fail(format!("reader info: {e}")))?;
    if info.size != HELLO.len() as u64 {
        return fail(format!("the reader's info says {} bytes; the file has {} (the host reads no more than this)", info.size, HELLO.len()));
    }
    Ok(())
}

async fn listing_attributes(c: &Check<'_>) -> Outcome {
    let dir = format!("{}/listed", c.dir()?);
    c.mkdir(&dir).await?;
    c.put(&format!("{dir}/a.txt"), HELLO).await?;
    c.mkdir(&format!("{dir}/sub")).await?;
    let entries = c.list(&dir, 100, 20).await?;
    let Some(file) = entries.iter().find(|e| e.name == "a.txt") else {
        return fail(format!("list-dir {dir} does not show a.txt: {:?}", entries.iter().map(|e| &e.name).collect::<Vec<_>>()));
    };
    if file.info.kind != FileKind::File || file.info.size != HELLO.len() as u64 {
        return fail(format!("list-dir shows a.txt as {:?} of {} bytes; it is a file of {}", file.info.kind, file.info.size, HELLO.len()));
    }
    match entries.iter().find(|e| e.name == "sub") {
        Some(sub) if sub.info.kind == FileKind::Directory => {}
        Some(sub) => return fail(format!("list-dir shows the directory sub as {:?}", sub.info.kind)),
        None => return fail(format!("list-dir {dir} does not show the directory sub")),
    }
    if entries.len() != 2 {
        return fail(format!("list-dir {dir} shows {} entries; it holds 2", entries.len()));
    }
    Ok(())
}

async fn listing_pages(c: &Check<'_>) -> Outcome {
    let dir = format!("{}/paged", c.dir()?);
    c.mkdir(&dir).await?;
    let names: Vec<String> = (0..11).map(|i| format!("f{i:02}")).collect();
    for name in &names {
        c.put(&format!("{dir}/{name}"), name.as_bytes()).await?;
    }
    let mut listed: Vec<String> = c.list(&dir, 3, 50).await?.into_iter().map(|e| e.name).collect();
    listed.sort();
    let mut unique = listed.clone();
    unique.dedup();
    if unique.len() != listed.len() {
        return fail(format!("pages of 3 gave some names twice: {listed:?}"));
    }
    if listed != names {
        return fail(format!("pages of 3 gave {listed:?}; the directory holds {names:?}"));
    }
    Ok(())
}

async fn upload_invisible_until_finish(c: &Check<'_>) -> Outcome {
    let path = c.path("pending.txt")?;
    c.made(&path);
    let writer = c.session.begin_write(&path, c.options()).await.or_else(|e| fail(format!("begin-write {path}: {e}")))?;
    writer.write_chunk(0, HELLO.to_vec()).await.or_else(|e| fail(format!("write-chunk: {e}")))?;
    let seen = c.session.file_info(&path).await;
    if !matches!(seen, Err(StorageError::NotFound)) {
        let _ = writer.abort().await;
        return fail(format!("before finish, file-info {path} gave {seen:?}; new content is invisible until finish"));
    }
    writer.finish().await.or_else(|e| fail(format!("finish: {e}")))?;
    same("after finish", &c.get(&path).await?, HELLO)
}

async fn abort_leaves_nothing(c: &Check<'_>) -> Outcome {
    let path = c.path("aborted.txt")?;
    c.made(&path);
    let writer = c.session.begin_write(&path, c.options()).await.or_else(|e| fail(format!("begin-write {path}: {e}")))?;
    writer.write_chunk(0, HELLO.to_vec()).await.or_else(|e| fail(format!("write-chunk: {e}")))?;
    writer.abort().await.or_else(|e| fail(format!("abort: {e}")))?;
    expect_error(c.session.file_info(&path).await, |e| matches!(e, StorageError::NotFound), "file-info after abort", "not-found")
}

async fn exclusive_create(c: &Check<'_>) -> Outcome {
    let path = c.path("exclusive.txt")?;
    c.put(&path, HELLO).await?;
    let options = WriteOptions { exclusive: true, ..c.options() };
    let already = |e: &StorageError| matches!(e, StorageError::AlreadyExists);
    match c.session.begin_write(&path, options).await {
        Err(e) if already(&e) => {}
        Err(e) => return fail(format!("an exclusive begin-write of an existing file: expected already-exists, got {e}")),
        // Checked again at finish, the contract says: it may be refused there.
        Ok(writer) => {
            let _ = writer.write_chunk(0, b"second".to_vec()).await;
            expect_error(writer.finish().await, already, "finish of an exclusive write over an existing file", "already-exists")?;
        }
    }
    same("the existing file", &c.get(&path).await?, HELLO)
}

async fn exclusive_at_finish(c: &Check<'_>) -> Outcome {
    let path = c.path("raced.txt")?;
    c.made(&path);
    let options = WriteOptions { exclusive: true, ..c.options() };
    let first = c.session.begin_write(&path, options).await.or_else(|e| fail(format!("an exclusive begin-write of a new name: {e}")))?;
    first.write_chunk(0, b"late".to_vec()).await.or_else(|e| fail(format!("write-chunk: {e}")))?;
    // Another upload makes the file meanwhile.
    c.put(&path, b"first").await?;
    expect_error(first.finish().await, |e| matches!(e, StorageError::AlreadyExists), "finish of an exclusive create whose file appeared meanwhile", "already-exists")?;
    same("the file that appeared meanwhile", &c.get(&path).await?, b"first")
}

async fn truncating_write(c: &Check<'_>) -> Outcome {
    let path = c.path("replaced.txt")?;
    c.put(&path, HELLO).await?;
    c.put(&path, b"short").await?;
    same("after a truncating write", &c.get(&path).await?, b"short")
}

async fn keeping_write(c: &Check<'_>) -> Outcome {
    let path = c.path("kept.txt")?;
    c.put(&path, b"hello").await?;
    // At the end, as a plugin without random-write gets it from the host.
    let options = WriteOptions { truncate: false, ..c.options() };
    c.add_at_end(&path, options, "a write that keeps the content").await?;
    same("a write that keeps the content, then adds to it", &c.get(&path).await?, b"hello world")
}

async fn pinned_reader(c: &Check<'_>) -> Outcome {
    let path = c.path("pinned.txt")?;
    c.put(&path, HELLO).await?;
    let reader = c.session.open_read(&path, None).await.or_else(|e| fail(format!("open-read {path}: {e}")))?;
    c.put(&path, b"the new content").await?;
    match read_all_raw(&reader).await {
        Ok(old) => same("a reader opened before the overwrite", &old, HELLO),
        // Object storage cannot read the old version: conflict is its answer.
        Err((_, StorageError::Conflict)) => Ok(()),
        Err((at, e)) => fail(format!("a reader opened before the overwrite, at {at}: expected the old bytes or conflict, got {e}")),
    }
}

async fn pinned_version(c: &Check<'_>) -> Outcome {
    let path = c.path("versioned.txt")?;
    c.put(&path, HELLO).await?;
    let Some(version) = c.info(&path).await?.version else {
        return Err(Wrong::Skipped("file-info gives no version".into()));
    };
    c.put(&path, b"another version").await?;
    if c.info(&path).await?.version.as_deref() == Some(version.as_str()) {
        return fail(format!("the version stayed {version:?} when the content changed"));
    }
    expect_error(
        c.session.open_read(&path, Some(&version)).await.map(drop),
        |e| matches!(e, StorageError::Conflict),
        "open-read with a version that changed",
        "conflict",
    )
}

async fn rename(c: &Check<'_>) -> Outcome {
    let (a, b, other) = (c.path("rename-a")?, c.path("rename-b")?, c.path("rename-other")?);
    c.put(&a, b"a").await?;
    c.made(&b);
    c.session.rename(&a, &b, false).await.or_else(|e| fail(format!("rename {a} to a new name: {e}")))?;
    expect_error(c.session.file_info(&a).await, |e| matches!(e, StorageError::NotFound), "the old name after rename", "not-found")?;
    same("the new name", &c.get(&b).await?, b"a")?;
    c.put(&other, b"other").await?;
    expect_error(
        c.session.rename(&other, &b, false).await,
        |e| matches!(e, StorageError::AlreadyExists),
        "rename onto an existing file without overwrite",
        "already-exists",
    )?;
    same("the target left as it was", &c.get(&b).await?, b"a")?;
    c.session.rename(&other, &b, true).await.or_else(|e| fail(format!("rename with overwrite: {e}")))?;
    same("the target after rename with overwrite", &c.get(&b).await?, b"other")
}

async fn directories(c: &Check<'_>) -> Outcome {
    let dir = format!("{}/made", c.dir()?);
    c.mkdir(&dir).await?;
    let info = c.info(&dir).await?;
    if info.kind != FileKind::Directory {
        return fail(format!("file-info of a made directory gave {:?}", info.kind));
    }
    expect_error(c.session.make_dir(&dir, None).await, |e| matches!(e, StorageError::AlreadyExists), "make-dir of an existing directory", "already-exists")?;
    let inside = format!("{dir}/inside.txt");
    c.put(&inside, HELLO).await?;
    expect_error(c.session.remove_dir(&dir).await, |e| matches!(e, StorageError::NotEmpty), "remove-dir of a directory with a file", "not-empty")?;
    c.session.remove_file(&inside).await.or_else(|e| fail(format!("remove-file {inside}: {e}")))?;
    expect_error(c.session.file_info(&inside).await, |e| matches!(e, StorageError::NotFound), "a removed file", "not-found")?;
    c.session.remove_dir(&dir).await.or_else(|e| fail(format!("remove-dir of an empty directory: {e}")))?;
    expect_error(c.session.file_info(&dir).await, |e| matches!(e, StorageError::NotFound), "a removed directory", "not-found")
}

async fn wrong_kinds(c: &Check<'_>) -> Outcome {
    let (dir, file) = (format!("{}/kind-dir", c.dir()?), c.path("kind-file")?);
    c.mkdir(&dir).await?;
    c.put(&file, HELLO).await?;
    // As open(2) and read(2): refused at open-read, or at its first read.
    match c.session.open_read(&dir, None).await {
        Err(StorageError::IsADirectory) => {}
        Err(e) => return fail(format!("open-read of a directory: expected is-a-directory, got {e}")),
        Ok(reader) => expect_error(reader.read(0, 10).await, |e| matches!(e, StorageError::IsADirectory), "reading a directory", "is-a-directory")?,
    }
    expect_error(c.session.list_dir(&file, None, 10).await.map(drop), |e| matches!(e, StorageError::NotADirectory), "list-dir of a file", "not-a-directory")?;
    expect_error(c.session.remove_dir(&file).await, |e| matches!(e, StorageError::NotADirectory), "remove-dir of a file", "not-a-directory")?;
    // (A write below a file is not checked: object storage may take it,
    // having no directories to refuse it with.)
    expect_error(
        c.session.remove_file(&dir).await,
        |e| matches!(e, StorageError::IsADirectory | StorageError::PermissionDenied),
        "remove-file of a directory",
        "is-a-directory (or permission-denied)",
    )
}

async fn random_write(c: &Check<'_>) -> Outcome {
    c.require(c.caps.random_write, "random-write")?;
    let path = c.path("random.txt")?;
    c.made(&path);
    let writer = c.session.begin_write(&path, c.options()).await.or_else(|e| fail(format!("begin-write {path}: {e}")))?;
    writer.write_chunk(6, b"world".to_vec()).await.or_else(|e| fail(format!("write-chunk at 6 first: {e}")))?;
    writer.write_chunk(0, b"hello ".to_vec()).await.or_else(|e| fail(format!("write-chunk at 0 second: {e}")))?;
    writer.finish().await.or_else(|e| fail(format!("finish: {e}")))?;
    same("chunks written out of order", &c.get(&path).await?, b"hello world")
}

async fn append(c: &Check<'_>) -> Outcome {
    c.require(c.caps.append, "append")?;
    let path = c.path("appended.txt")?;
    c.put(&path, b"hello").await?;
    // At the file's end, as the host sends an append (the plugin must not
    // mind where: every chunk of an append goes to the end).
    let options = WriteOptions { truncate: false, append: true, ..c.options() };
    c.add_at_end(&path, options, "an append").await?;
    same("after an append", &c.get(&path).await?, b"hello world")
}

async fn copy(c: &Check<'_>) -> Outcome {
    c.require(c.caps.copy, "copy")?;
    let (src, dst) = (c.path("copy-src")?, c.path("copy-dst")?);
    c.put(&src, HELLO).await?;
    c.made(&dst);
    c.session.copy_file(&src, &dst, false).await.or_else(|e| fail(format!("copy-file to a new name: {e}")))?;
    same("the copy", &c.get(&dst).await?, HELLO)?;
    same("the source after the copy", &c.get(&src).await?, HELLO)?;
    expect_error(
        c.session.copy_file(&src, &dst, false).await,
        |e| matches!(e, StorageError::AlreadyExists),
        "copy-file onto an existing file without overwrite",
        "already-exists",
    )
}

async fn set_info(c: &Check<'_>) -> Outcome {
    c.require(c.caps.set_info, "set-info")?;
    let path = c.path("attrs.txt")?;
    c.put(&path, HELLO).await?;
    let times = SetAttrs { size: None, permissions: None, accessed: Some(1_000_000_000), modified: Some(1_000_000_000) };
    c.session.set_info(&path, times).await.or_else(|e| fail(format!("set-info of times: {e}")))?;
    let info = c.info(&path).await?;
    if info.modified != 1_000_000_000 {
        return fail(format!("after set-info of mtime 1000000000, file-info gives mtime {}", info.modified));
    }
    // Permissions apart: a backend may keep times but not modes (WASI has
    // no way to set them); refusing them is honest, ignoring them is not.
    let mode = SetAttrs { size: None, permissions: Some(0o640), accessed: None, modified: None };
    match c.session.set_info(&path, mode).await {
        Ok(()) => {
            let kept = c.info(&path).await?.permissions & 0o7777;
            if kept != 0o640 {
                return fail(format!("set-info of mode 640 succeeded, but file-info gives mode {kept:o}"));
            }
            Ok(())
        }
        Err(StorageError::Unsupported | StorageError::PermissionDenied) => Ok(()),
        Err(e) => fail(format!("set-info of mode 640: {e}")),
    }
}

async fn symlinks(c: &Check<'_>) -> Outcome {
    c.require(c.caps.symlinks, "symlinks")?;
    let (target, link) = (c.path("link-target")?, c.path("a-link")?);
    c.put(&target, HELLO).await?;
    c.made(&link);
    c.session.make_link(&target, &link).await.or_else(|e| fail(format!("make-link: {e}")))?;
    let read = c.session.read_link(&link).await.or_else(|e| fail(format!("read-link: {e}")))?;
    if read != target {
        return fail(format!("read-link gave {read:?}; the link was made to {target:?}"));
    }
    let described = c.session.link_info(&link).await.or_else(|e| fail(format!("link-info: {e}")))?;
    if described.kind != FileKind::Symlink {
        return fail(format!("link-info of a link gave {:?}", described.kind));
    }
    let followed = c.info(&link).await?;
    if followed.kind != FileKind::File || followed.size != HELLO.len() as u64 {
        return fail(format!("file-info of a link gave {:?} of {} bytes; it follows to a file of {}", followed.kind, followed.size, HELLO.len()));
    }
    Ok(())
}

async fn hard_links(c: &Check<'_>) -> Outcome {
    c.require(c.caps.hard_links, "hard-links")?;
    let (first, second) = (c.path("hard-a")?, c.path("hard-b")?);
    c.put(&first, HELLO).await?;
    c.made(&second);
    c.session.hard_link(&first, &second).await.or_else(|e| fail(format!("hard-link: {e}")))?;
    same("the second name", &c.get(&second).await?, HELLO)
}
