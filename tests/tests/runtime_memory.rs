//! The bundled memory plugin driven through the plugin runtime: every contract
//! operation and its error cases, tenant isolation and session sharing.

mod runtime_support;

use std::collections::BTreeSet;

use runtime_support::*;
use wasftp::plugin::{FileKind, InstanceScope, Session, SetAttrs, StorageError, WriteOptions};

macro_rules! assert_err {
    ($call:expr, $pat:pat) => {{
        match bounded($call).await {
            Err($pat) => {}
            Err(other) => panic!("{}: expected {}, got error {other:?}", stringify!($call), stringify!($pat)),
            Ok(_) => panic!("{}: expected {}, got Ok", stringify!($call), stringify!($pat)),
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_describe_a_tenant_scoped_full_backend() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let caps = plugin.capabilities();
    assert!(matches!(caps.scope, InstanceScope::Tenant), "memory state lives in the tenant's instance");
    assert!(caps.random_write && caps.append && caps.copy && caps.set_info, "memory supports everything: {caps:?}");
    assert!(caps.read_chunk >= 4096 && caps.write_chunk >= 4096);
    assert!(!caps.durable_sync, "memory content is lost when the server stops");
    assert!(!caps.name.is_empty());
    // The load probe plus nothing else so far.
    let before = wasftp::plugin::RuntimeStats::get(&rt.stats().instances_created);
    let _s = memory_session(&plugin, "alice", "t1").await;
    let after = wasftp::plugin::RuntimeStats::get(&rt.stats().instances_created);
    assert_eq!(after, before + 1, "the first session of a tenant starts one instance");
    let _s2 = memory_session(&plugin, "bob", "t1").await;
    assert_eq!(wasftp::plugin::RuntimeStats::get(&rt.stats().instances_created), after, "same tenant, same instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_dir_and_its_errors() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    bounded(s.make_dir("/d", Some(0o750))).await.unwrap();
    let info = bounded(s.file_info("/d")).await.unwrap();
    assert!(matches!(info.kind, FileKind::Directory));
    assert_eq!(info.permissions, 0o750);
    let root = bounded(s.file_info("/")).await.unwrap();
    assert!(matches!(root.kind, FileKind::Directory), "the root exists and is a directory");

    assert_err!(s.make_dir("/d", None), StorageError::AlreadyExists);
    assert_err!(s.make_dir("/missing/child", None), StorageError::NotFound);
    put(&s, "/f", b"x").await;
    assert_err!(s.make_dir("/f", None), StorageError::AlreadyExists);
    // A file is not a directory to create things in.
    assert!(matches!(
        bounded(s.make_dir("/f/sub", None)).await,
        Err(StorageError::NotADirectory | StorageError::NotFound)
    ));
    bounded(s.make_dir("/d/e", None)).await.unwrap();
    assert_eq!(names(&s, "/d").await, vec!["e".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_dir_and_remove_file_errors() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    bounded(s.make_dir("/d", None)).await.unwrap();
    put(&s, "/d/f", b"hello").await;
    assert_err!(s.remove_dir("/d"), StorageError::NotEmpty);
    assert_err!(s.remove_dir("/d/f"), StorageError::NotADirectory);
    assert_err!(s.remove_dir("/nope"), StorageError::NotFound);
    assert_err!(s.remove_file("/d"), StorageError::IsADirectory);
    assert_err!(s.remove_file("/nope"), StorageError::NotFound);
    // Nothing was removed by the failed calls.
    assert_eq!(get(&s, "/d/f").await, b"hello");

    bounded(s.remove_file("/d/f")).await.unwrap();
    assert_err!(s.file_info("/d/f"), StorageError::NotFound);
    bounded(s.remove_dir("/d")).await.unwrap();
    assert_err!(s.file_info("/d"), StorageError::NotFound);
    assert!(names(&s, "/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_files_with_and_without_overwrite() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    put(&s, "/a", b"content of a").await;
    put(&s, "/b", b"content of b").await;
    let attrs = SetAttrs { size: None, permissions: Some(0o604), accessed: Some(1_000_000), modified: Some(2_000_000) };
    bounded(s.set_info("/a", attrs)).await.unwrap();

    assert_err!(s.rename("/a", "/b", false), StorageError::AlreadyExists);
    assert_eq!(get(&s, "/a").await, b"content of a", "a failed rename changes nothing");
    assert_eq!(get(&s, "/b").await, b"content of b");

    bounded(s.rename("/a", "/b", true)).await.unwrap();
    assert_err!(s.file_info("/a"), StorageError::NotFound);
    assert_eq!(get(&s, "/b").await, b"content of a");
    let info = bounded(s.file_info("/b")).await.unwrap();
    assert_eq!((info.size, info.permissions, info.modified), (12, 0o604, 2_000_000), "rename keeps size, mode and mtime");

    // To a fresh name, no overwrite needed.
    bounded(s.rename("/b", "/c", false)).await.unwrap();
    assert_eq!(names(&s, "/").await, vec!["c".to_string()]);
    assert_err!(s.rename("/nope", "/x", false), StorageError::NotFound);
    assert_err!(s.rename("/c", "/missing-dir/c", false), StorageError::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_moves_a_whole_directory_subtree() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    bounded(s.make_dir("/a", None)).await.unwrap();
    bounded(s.make_dir("/a/b", None)).await.unwrap();
    bounded(s.make_dir("/a/b/c", None)).await.unwrap();
    put(&s, "/a/top.txt", b"top").await;
    put(&s, "/a/b/mid.txt", b"mid").await;
    put(&s, "/a/b/c/deep.txt", &pattern(100_000, 1)).await;

    bounded(s.rename("/a", "/z", false)).await.unwrap();
    assert_err!(s.file_info("/a"), StorageError::NotFound);
    assert_err!(s.file_info("/a/b/c/deep.txt"), StorageError::NotFound);
    assert_eq!(get(&s, "/z/top.txt").await, b"top");
    assert_eq!(get(&s, "/z/b/mid.txt").await, b"mid");
    assert_eq!(get(&s, "/z/b/c/deep.txt").await, pattern(100_000, 1));
    assert_eq!(names(&s, "/z").await, vec!["b".to_string(), "top.txt".to_string()]);

    // Into a subdirectory of another tree.
    bounded(s.make_dir("/other", None)).await.unwrap();
    bounded(s.rename("/z/b", "/other/moved", false)).await.unwrap();
    assert_eq!(get(&s, "/other/moved/c/deep.txt").await, pattern(100_000, 1));
    assert_eq!(names(&s, "/z").await, vec!["top.txt".to_string()]);

    // Onto an existing name without overwrite.
    bounded(s.make_dir("/taken", None)).await.unwrap();
    assert_err!(s.rename("/z", "/taken", false), StorageError::AlreadyExists);
    assert_eq!(get(&s, "/z/top.txt").await, b"top");

    // A directory can never move into its own subtree.
    let r = bounded(s.rename("/other", "/other/moved/c/loop", false)).await;
    assert!(
        matches!(&r, Err(e) if !matches!(e, StorageError::PluginFailed(_))),
        "moving a directory into itself must be refused: {r:?}"
    );
    assert_eq!(get(&s, "/other/moved/c/deep.txt").await, pattern(100_000, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_kept_and_set_info_changes_it() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    let before = now_secs();
    let w = bounded(s.begin_write("/f", WriteOptions { permissions: Some(0o600), ..opts(true, true, false, false) })).await.unwrap();
    bounded(w.write_chunk(0, b"0123456789")).await.unwrap();
    let fin = bounded(w.finish()).await.unwrap();
    let after = now_secs();
    let info = bounded(s.file_info("/f")).await.unwrap();
    assert!(matches!(info.kind, FileKind::File));
    assert_eq!((info.size, info.permissions), (10, 0o600));
    assert_eq!((fin.size, fin.permissions, fin.modified), (info.size, info.permissions, info.modified));
    assert!(
        info.modified + 1 >= before && info.modified <= after + 1,
        "mtime {} is the wall clock ({before}..={after})",
        info.modified
    );

    // Truncate.
    bounded(s.set_info("/f", SetAttrs { size: Some(4), permissions: None, accessed: None, modified: None })).await.unwrap();
    assert_eq!(get(&s, "/f").await, b"0123");
    // Extend: zero-filled.
    bounded(s.set_info("/f", SetAttrs { size: Some(8), permissions: None, accessed: None, modified: None })).await.unwrap();
    assert_eq!(get(&s, "/f").await, b"0123\0\0\0\0");
    assert_eq!(bounded(s.file_info("/f")).await.unwrap().size, 8);
    // Permissions.
    bounded(s.set_info("/f", SetAttrs { size: None, permissions: Some(0o4755), accessed: None, modified: None })).await.unwrap();
    assert_eq!(bounded(s.file_info("/f")).await.unwrap().permissions, 0o4755);
    // Times, exactly as given; other fields untouched.
    bounded(s.set_info("/f", SetAttrs { size: None, permissions: None, accessed: Some(1_111_111), modified: Some(2_222_222) }))
        .await
        .unwrap();
    let info = bounded(s.file_info("/f")).await.unwrap();
    assert_eq!((info.accessed, info.modified, info.size, info.permissions), (1_111_111, 2_222_222, 8, 0o4755));
    // Only modified; accessed stays.
    bounded(s.set_info("/f", SetAttrs { size: None, permissions: None, accessed: None, modified: Some(3_333_333) })).await.unwrap();
    let info = bounded(s.file_info("/f")).await.unwrap();
    assert_eq!((info.accessed, info.modified), (1_111_111, 3_333_333));

    assert_err!(s.set_info("/nope", SetAttrs { size: Some(1), permissions: None, accessed: None, modified: None }), StorageError::NotFound);
    // Without symlinks, LSTAT's info is STAT's.
    let (link, file) = (bounded(s.link_info("/f")).await.unwrap(), bounded(s.file_info("/f")).await.unwrap());
    assert_eq!((link.size, link.permissions, link.modified), (file.size, file.permissions, file.modified));
    assert_err!(s.link_info("/nope"), StorageError::NotFound);
    // Directory permissions and times.
    bounded(s.make_dir("/d", None)).await.unwrap();
    bounded(s.set_info("/d", SetAttrs { size: None, permissions: Some(0o700), accessed: None, modified: Some(42) })).await.unwrap();
    let d = bounded(s.file_info("/d")).await.unwrap();
    assert_eq!((d.permissions, d.modified), (0o700, 42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_holes_random_offsets_and_append() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    // A hole at the start is zero-filled.
    let w = bounded(s.begin_write("/holes", opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(10_000, b"abc")).await.unwrap();
    assert_eq!(bounded(w.finish()).await.unwrap().size, 10_003);
    let mut expect = vec![0u8; 10_000];
    expect.extend_from_slice(b"abc");
    assert_eq!(get(&s, "/holes").await, expect);

    // Random, overlapping, out-of-order chunks against a model.
    let mut model: Vec<u8> = Vec::new();
    let w = bounded(s.begin_write("/random", opts(true, true, false, false))).await.unwrap();
    for (i, (off, len)) in [(70_000usize, 5_000usize), (0, 1_000), (500, 3_000), (69_000, 2_000), (200_000, 1), (30_000, 40_000)]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u64 + 10);
        bounded(w.write_chunk(off as u64, &data[..])).await.unwrap();
        if model.len() < off + len {
            model.resize(off + len, 0);
        }
        model[off..off + len].copy_from_slice(&data);
    }
    assert_eq!(bounded(w.finish()).await.unwrap().size, model.len() as u64);
    assert_eq!(get(&s, "/random").await, model);

    // Without truncate, untouched bytes keep the old content.
    put(&s, "/greet", b"hello world").await;
    let w = bounded(s.begin_write("/greet", opts(false, false, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"J")).await.unwrap();
    bounded(w.finish()).await.unwrap();
    assert_eq!(get(&s, "/greet").await, b"Jello world");

    // Append: every chunk goes to the end, whatever its offset.
    let w = bounded(s.begin_write("/greet", opts(false, false, false, true))).await.unwrap();
    bounded(w.write_chunk(0, b", and")).await.unwrap();
    bounded(w.write_chunk(3, b" more")).await.unwrap();
    assert_eq!(bounded(w.finish()).await.unwrap().size, 21);
    assert_eq!(get(&s, "/greet").await, b"Jello world, and more");

    // Truncate drops the old content.
    let w = bounded(s.begin_write("/greet", opts(false, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"new")).await.unwrap();
    bounded(w.finish()).await.unwrap();
    assert_eq!(get(&s, "/greet").await, b"new");

    // Empty file.
    let w = bounded(s.begin_write("/empty", opts(true, true, false, false))).await.unwrap();
    assert_eq!(bounded(w.finish()).await.unwrap().size, 0);
    assert!(get(&s, "/empty").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_is_invisible_until_finish_and_abort_leaves_nothing() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;
    let other = memory_session(&plugin, "bob", "t").await;

    // New file: not there until finish, for this session and another one.
    let w = bounded(s.begin_write("/new", opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"pending")).await.unwrap();
    assert_err!(s.file_info("/new"), StorageError::NotFound);
    assert_err!(other.file_info("/new"), StorageError::NotFound);
    assert_err!(s.open_read("/new", None), StorageError::NotFound);
    assert!(!names(&s, "/").await.contains(&"new".to_string()));
    bounded(w.finish()).await.unwrap();
    assert_eq!(get(&other, "/new").await, b"pending");

    // Existing file: the old content until finish.
    let w = bounded(s.begin_write("/new", opts(false, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"replacement content")).await.unwrap();
    assert_eq!(get(&other, "/new").await, b"pending");
    assert_eq!(bounded(other.file_info("/new")).await.unwrap().size, 7);
    bounded(w.finish()).await.unwrap();
    assert_eq!(get(&other, "/new").await, b"replacement content");

    // Abort of a new file leaves nothing.
    let w = bounded(s.begin_write("/aborted", opts(true, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, pattern(50_000, 3))).await.unwrap();
    bounded(w.abort()).await.unwrap();
    assert_err!(s.file_info("/aborted"), StorageError::NotFound);
    assert!(!names(&s, "/").await.contains(&"aborted".to_string()));
    // Abort of an overwrite leaves the old content.
    let w = bounded(s.begin_write("/new", opts(false, true, false, false))).await.unwrap();
    bounded(w.write_chunk(0, b"xx")).await.unwrap();
    bounded(w.abort()).await.unwrap();
    assert_eq!(get(&s, "/new").await, b"replacement content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_write_option_errors() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;
    put(&s, "/exists", b"old").await;

    // Exclusive on an existing file: refused at begin-write or, at the latest, at finish.
    match bounded(s.begin_write("/exists", opts(true, true, true, false))).await {
        Err(StorageError::AlreadyExists) => {}
        Err(e) => panic!("exclusive create on an existing file: {e:?}"),
        Ok(w) => {
            bounded(w.write_chunk(0, b"new")).await.unwrap();
            assert_err!(w.finish(), StorageError::AlreadyExists);
        }
    }
    assert_eq!(get(&s, "/exists").await, b"old");

    // Exclusive is checked again at finish: two exclusive writers race, one wins.
    let w1 = bounded(s.begin_write("/race", opts(true, true, true, false))).await.unwrap();
    let w2 = bounded(s.begin_write("/race", opts(true, true, true, false))).await.unwrap();
    bounded(w1.write_chunk(0, b"first")).await.unwrap();
    bounded(w2.write_chunk(0, b"second")).await.unwrap();
    bounded(w1.finish()).await.unwrap();
    assert_err!(w2.finish(), StorageError::AlreadyExists);
    assert_eq!(get(&s, "/race").await, b"first");

    assert_err!(s.begin_write("/missing", opts(false, true, false, false)), StorageError::NotFound);
    assert_err!(s.file_info("/missing"), StorageError::NotFound);
    assert_err!(s.begin_write("/no-dir/f", opts(true, true, false, false)), StorageError::NotFound);
    bounded(s.make_dir("/d", None)).await.unwrap();
    assert_err!(s.begin_write("/d", opts(true, true, false, false)), StorageError::IsADirectory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_keeps_its_snapshot_while_another_session_overwrites() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let a = memory_session(&plugin, "alice", "shared").await;
    let b = memory_session(&plugin, "bob", "shared").await;

    let v1 = pattern(200_000, 7);
    let v2 = pattern(150_000, 8);
    put(&a, "/f", &v1).await;
    let reader = bounded(a.open_read("/f", None)).await.unwrap();
    let first = bounded(reader.read(0, 1000)).await.unwrap();
    assert_eq!(first, v1[..1000]);

    put(&b, "/f", &v2).await;
    assert_eq!(get(&b, "/f").await, v2, "new readers see the new version");
    assert_eq!(read_all(&reader).await, v1, "the open reader keeps the version it pinned");

    // Also through an in-place partial overwrite and a removal.
    let w = bounded(b.begin_write("/f", opts(false, false, false, false))).await.unwrap();
    let reader2 = bounded(a.open_read("/f", None)).await.unwrap();
    bounded(w.write_chunk(0, &[0xFF; 100])).await.unwrap();
    bounded(w.finish()).await.unwrap();
    assert_eq!(read_all(&reader2).await, v2);
    let reader3 = bounded(a.open_read("/f", None)).await.unwrap();
    bounded(b.remove_file("/f")).await.unwrap();
    match bounded(reader3.read(0, 100)).await {
        Ok(data) => assert_eq!(data[..], [0xFF; 100][..], "a removed file's reader still reads its version"),
        Err(e) => assert_eq!(e, StorageError::Conflict, "or it says the version is gone"),
    }
}

/// Contract 0.2: a file's info carries its version, a reader says which
/// version it reads, and opening a version that changed is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_can_be_pinned_across_sessions() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let a = memory_session(&plugin, "alice", "shared").await;
    let b = memory_session(&plugin, "bob", "shared").await;
    put(&a, "/f", b"first").await;
    let info = bounded(a.file_info("/f")).await.unwrap();
    let version = info.version.clone().expect("the memory plugin versions its files");
    let reader = bounded(b.open_read("/f", Some(&version))).await.expect("the same version from another session");
    let pinned = bounded(reader.info()).await.unwrap();
    assert_eq!((pinned.size, pinned.version.as_deref()), (5, Some(version.as_str())));
    put(&a, "/f", b"second").await;
    assert_err!(b.open_read("/f", Some(&version)), StorageError::Conflict);
    assert_eq!(read_all(&reader).await, b"first", "the open reader keeps its version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dir_pages_with_cursor_and_limit() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;

    bounded(s.make_dir("/many", None)).await.unwrap();
    let mut expected = Vec::new();
    for i in (0..25).rev() {
        let name = format!("file-{i:02}");
        put(&s, &format!("/many/{name}"), &vec![b'x'; i]).await;
        expected.push(name);
    }
    expected.sort();

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bounded(s.list_dir("/many", cursor.as_deref(), 10)).await.unwrap();
        assert!(page.entries.len() <= 10);
        pages.push(page.entries.iter().map(|e| (e.name.clone(), e.info.size)).collect::<Vec<_>>());
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages.len() < 10, "paging never ends");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
    let listed: Vec<String> = pages.iter().flatten().map(|(n, _)| n.clone()).collect();
    assert_eq!(listed, expected, "every name exactly once, in sorted order");
    for (name, size) in pages.iter().flatten() {
        let i: u64 = name["file-".len()..].parse().unwrap();
        assert_eq!(*size, i, "entries carry their file-info");
    }
    let unique: BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), 25);

    // A limit larger than the directory: one page, no cursor.
    let page = bounded(s.list_dir("/many", None, 100)).await.unwrap();
    assert_eq!(page.entries.len(), 25);
    assert!(page.next_cursor.is_none());
    // Exactly the size: no empty trailing page with a cursor.
    let all = list_all(&s, "/many", 25).await.unwrap();
    assert_eq!(all.len(), 25);
    // Empty directory.
    bounded(s.make_dir("/empty", None)).await.unwrap();
    let page = bounded(s.list_dir("/empty", None, 10)).await.unwrap();
    assert!(page.entries.is_empty() && page.next_cursor.is_none());
    // Kinds in listings.
    bounded(s.make_dir("/many/sub", None)).await.unwrap();
    let all = list_all(&s, "/many", 7).await.unwrap();
    let sub = all.iter().find(|e| e.name == "sub").expect("sub is listed");
    assert!(matches!(sub.info.kind, FileKind::Directory));
    assert!(all.iter().filter(|e| e.name != "sub").all(|e| matches!(e.info.kind, FileKind::File)));

    assert_err!(s.list_dir("/nope", None, 10), StorageError::NotFound);
    assert_err!(s.list_dir("/many/file-01", None, 10), StorageError::NotADirectory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_past_eof_are_empty_and_read_errors() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;
    let data = pattern(100_000, 5);
    put(&s, "/f", &data).await;

    let r = bounded(s.open_read("/f", None)).await.unwrap();
    assert_eq!(bounded(r.read(0, 100)).await.unwrap(), data[..100]);
    assert_eq!(bounded(r.read(99_990, 100)).await.unwrap(), data[99_990..], "a read across EOF is short");
    assert!(bounded(r.read(100_000, 100)).await.unwrap().is_empty(), "a read at EOF is empty");
    assert!(bounded(r.read(1 << 40, 100)).await.unwrap().is_empty(), "a read far past EOF is empty");
    assert!(bounded(r.read(u64::MAX - 10, 100)).await.unwrap().is_empty());
    // Random-access reads, any order.
    assert_eq!(bounded(r.read(50_000, 65_536)).await.unwrap(), data[50_000..]);
    assert_eq!(bounded(r.read(1, 1)).await.unwrap(), data[1..2]);
    assert!(bounded(r.read(5, 0)).await.unwrap().is_empty());

    assert_err!(s.open_read("/nope", None), StorageError::NotFound);
    bounded(s.make_dir("/d", None)).await.unwrap();
    assert_err!(s.open_read("/d", None), StorageError::IsADirectory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_file_space_and_links() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let s = memory_session(&plugin, "alice", "t").await;
    let caps = plugin.capabilities().clone();

    put(&s, "/src", b"source").await;
    put(&s, "/dst", b"taken").await;
    assert_err!(s.copy_file("/src", "/dst", false), StorageError::AlreadyExists);
    assert_eq!(get(&s, "/dst").await, b"taken");
    bounded(s.copy_file("/src", "/dst", true)).await.unwrap();
    assert_eq!(get(&s, "/dst").await, b"source");
    bounded(s.copy_file("/src", "/copy", false)).await.unwrap();
    put(&s, "/src", b"changed").await;
    assert_eq!(get(&s, "/copy").await, b"source", "a copy is independent of its source");
    assert_err!(s.copy_file("/nope", "/x", false), StorageError::NotFound);

    let space = bounded(s.space("/")).await.unwrap();
    assert!(space.block_size > 0);
    assert!(space.total_bytes >= space.free_bytes && space.free_bytes >= space.available_bytes);
    assert!(space.total_bytes > 0);

    if caps.symlinks {
        bounded(s.make_link("/src", "/link")).await.unwrap();
        assert_eq!(bounded(s.read_link("/link")).await.unwrap(), "/src");
        let r = bounded(s.read_link("/src")).await;
        assert!(matches!(&r, Err(e) if !matches!(e, StorageError::PluginFailed(_))), "read-link of a file: {r:?}");
    } else {
        assert_err!(s.make_link("/src", "/link"), StorageError::Unsupported);
    }
    if caps.hard_links {
        bounded(s.hard_link("/src", "/hard")).await.unwrap();
        assert_eq!(get(&s, "/hard").await, b"changed");
    } else {
        assert_err!(s.hard_link("/src", "/hard"), StorageError::Unsupported);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_in_parallel_see_only_their_own_files() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;

    let mut tasks = Vec::new();
    for tenant in ["acme", "globex"] {
        let plugin = plugin.clone();
        tasks.push(tokio::spawn(async move {
            let s = memory_session(&plugin, &format!("user-{tenant}"), tenant).await;
            bounded(s.make_dir("/data", None)).await.unwrap();
            for i in 0..30 {
                put(&s, &format!("/data/{tenant}-{i:02}"), format!("{tenant} {i}").as_bytes()).await;
                // Interleave listings with the other tenant's writes.
                let listed = list_all(&s, "/data", 8).await.unwrap();
                assert_eq!(listed.len(), i + 1, "{tenant} sees exactly its own files");
                assert!(listed.iter().all(|e| e.name.starts_with(tenant)), "{tenant} sees a foreign file");
            }
            s
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(bounded(t).await.expect("tenant task"));
    }
    let (acme, globex) = (&sessions[0], &sessions[1]);
    assert_eq!(get(acme, "/data/acme-07").await, b"acme 7");
    assert_err!(acme.file_info("/data/globex-07"), StorageError::NotFound);
    assert_err!(globex.file_info("/data/acme-07"), StorageError::NotFound);
    assert_eq!(names(globex, "/data").await.len(), 30);

    // A removal in one tenant does not touch the other.
    bounded(acme.remove_file("/data/acme-00")).await.unwrap();
    assert_eq!(names(acme, "/data").await.len(), 29);
    assert_eq!(names(globex, "/data").await.len(), 30);
    // A third tenant starts empty.
    let third = memory_session(&plugin, "u", "initech").await;
    assert!(names(&third, "/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_the_same_tenant_share_files() {
    let rt = runtime();
    let plugin = memory_plugin(&rt).await;
    let a = memory_session(&plugin, "alice", "team").await;
    let b = memory_session(&plugin, "bob", "team").await;

    put(&a, "/from-alice", b"hi bob").await;
    assert_eq!(get(&b, "/from-alice").await, b"hi bob");
    bounded(b.rename("/from-alice", "/seen-by-bob", false)).await.unwrap();
    assert_err!(a.file_info("/from-alice"), StorageError::NotFound);
    assert_eq!(get(&a, "/seen-by-bob").await, b"hi bob");

    // Concurrent writers of the same tenant on different files.
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..20 {
                put(&a, &format!("/a{i}"), &pattern(10_000, i)).await;
            }
        },
        async {
            for i in 0..20 {
                put(&b, &format!("/b{i}"), &pattern(10_000, 100 + i)).await;
            }
        }
    );
    let _ = (ra, rb);
    let listed = names(&a, "/").await;
    assert_eq!(listed.len(), 41);
    assert_eq!(get(&a, "/b19").await, pattern(10_000, 119));
    assert_eq!(get(&b, "/a3").await, pattern(10_000, 3));

    // A session dropped does not take the tenant's data with it.
    drop(a);
    let c = memory_session(&plugin, "carol", "team").await;
    assert_eq!(get(&c, "/seen-by-bob").await, b"hi bob");
}

// Running out of memory: the client gets no-space, the tenant keeps everything.

/// The memory cap of the exhaustion tests, and the quota it leaves by default
/// (an eighth of the cap, at least 16 MiB, is kept for the plugin itself).
const CAP_MIB: usize = 48;
const QUOTA: u64 = 32 << 20;

/// A tenant with a file and a second session, both made before the trouble.
struct Tenant {
    writer: Session,
    other: Session,
    kept: Vec<u8>,
    /// (poisoned, instances created) when the tenant was ready.
    counters: (u64, u64),
}

fn counters(rt: &wasftp::plugin::Runtime) -> (u64, u64) {
    let stats = rt.stats();
    (wasftp::plugin::RuntimeStats::get(&stats.poisoned), wasftp::plugin::RuntimeStats::get(&stats.instances_created))
}

async fn capped_tenant(rt: &wasftp::plugin::Runtime) -> Tenant {
    let plugin = memory_plugin_capped(rt, CAP_MIB, &[]).await.expect("loading the capped memory plugin");
    let writer = memory_session(&plugin, "alice", "acme").await;
    let other = memory_session(&plugin, "bob", "acme").await;
    let kept = pattern(300_000, 42);
    put(&writer, "/kept", &kept).await;
    put(&writer, "/small", b"tiny").await;
    Tenant { writer, other, kept, counters: counters(rt) }
}

impl Tenant {
    /// Same instance (not poisoned, not re-created), every file as it was,
    /// both sessions still served.
    async fn assert_untouched(&self, rt: &wasftp::plugin::Runtime) {
        assert_eq!(counters(rt), self.counters, "the tenant's instance survived: (poisoned, instances created)");
        assert_eq!(get(&self.writer, "/kept").await, self.kept);
        assert_eq!(get(&self.other, "/kept").await, self.kept, "the tenant's other session still works");
        assert_eq!(get(&self.other, "/small").await, b"tiny");
        put(&self.other, "/after", b"still writable").await;
        bounded(self.writer.remove_file("/after")).await.unwrap();
    }
}

/// Creates `path` with `data` in 256 KiB chunks; the first error, after
/// which the upload is aborted.
async fn try_put(s: &Session, path: &str, data: &[u8]) -> Result<(), StorageError> {
    let w = bounded(s.begin_write(path, opts(true, true, false, false))).await?;
    let mut written = Ok(());
    for (i, chunk) in data.chunks(256 * 1024).enumerate() {
        written = bounded(w.write_chunk((i * 256 * 1024) as u64, chunk)).await;
        if written.is_err() {
            break;
        }
    }
    match written {
        Ok(()) => bounded(w.finish()).await.map(|_| ()),
        Err(e) => {
            bounded(w.abort()).await?;
            Err(e)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_quota_follows_the_memory_cap() {
    let rt = runtime();
    let total = async |config: &[(&str, &str)]| {
        let plugin = memory_plugin_capped(&rt, CAP_MIB, config).await.expect("loading");
        let s = memory_session(&plugin, "alice", "acme").await;
        bounded(s.space("/")).await.unwrap().total_bytes
    };
    assert_eq!(total(&[]).await, QUOTA, "no max-bytes: the cap minus the headroom");
    assert_eq!(total(&[("max-bytes", "1G")]).await, QUOTA, "a max-bytes above the cap is clamped");
    assert_eq!(total(&[("max-bytes", "1M")]).await, 1 << 20, "a smaller max-bytes is kept");

    // Operators cannot pass the host's reserved keys.
    let refused = memory_plugin_capped(&rt, CAP_MIB, &[("wasftp.memory-limit-bytes", "1")]).await;
    let error = format!("{:#}", refused.err().expect("a reserved key is refused"));
    assert!(error.contains("reserved"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_info_to_a_huge_size_is_no_space_and_the_tenant_keeps_everything() {
    let rt = runtime();
    let t = capped_tenant(&rt).await;
    for size in [2_147_000_000, QUOTA + 1, u64::MAX] {
        let huge = SetAttrs { size: Some(size), permissions: Some(0o600), accessed: None, modified: None };
        assert_err!(t.writer.set_info("/small", huge), StorageError::NoSpace);
    }
    let info = bounded(t.writer.file_info("/small")).await.unwrap();
    assert_eq!((info.size, info.permissions), (4, 0o644), "the refused request changed nothing");
    t.assert_untouched(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_a_huge_offset_is_no_space_and_the_tenant_keeps_everything() {
    let rt = runtime();
    let t = capped_tenant(&rt).await;
    let w = bounded(t.writer.begin_write("/far", opts(true, true, false, false))).await.unwrap();
    for offset in [2_147_000_000, QUOTA, u64::MAX - 10] {
        assert_err!(w.write_chunk(offset, b"far away"), StorageError::NoSpace);
    }
    // The same upload goes on within the quota.
    bounded(w.write_chunk(0, b"near")).await.unwrap();
    assert_eq!(bounded(w.finish()).await.unwrap().size, 4);
    assert_eq!(get(&t.other, "/far").await, b"near");
    t.assert_untouched(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_files_fill_the_quota_then_no_space() {
    let rt = runtime();
    let t = capped_tenant(&rt).await;
    let file = |i: u64| pattern(4 << 20, 1000 + i);
    let mut stored = 0u64;
    let full = loop {
        match try_put(&t.writer, &format!("/big-{stored}"), &file(stored)).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "{stored} files of 4 MiB fit a {CAP_MIB} MiB cap");
    };
    assert_eq!(full, StorageError::NoSpace);
    assert_eq!(stored, QUOTA / (4 << 20) - 1, "the quota, less what the tenant held, is usable");
    let space = bounded(t.other.space("/")).await.unwrap();
    assert!(space.free_bytes < 4 << 20, "space says it is full: {space:?}");
    assert!(!names(&t.other, "/").await.contains(&format!("big-{stored}")), "the refused upload left nothing");
    for i in 0..stored {
        assert!(get(&t.other, &format!("/big-{i}")).await == file(i), "big-{i} is intact");
    }
    // Freeing a file makes room again.
    bounded(t.other.remove_file("/big-0")).await.unwrap();
    try_put(&t.writer, "/big-again", &file(99)).await.expect("room after a removal");
    t.assert_untouched(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_a_sparse_file_then_outgrowing_the_quota_is_no_space() {
    let rt = runtime();
    let t = capped_tenant(&rt).await;
    const SIZE: u64 = 20 << 20;
    const PIECE: usize = 1 << 20;
    let w = bounded(t.writer.begin_write("/sparse", opts(true, true, false, false))).await.unwrap();
    // The last bytes first: the rest is a hole, then filled piece by piece.
    bounded(w.write_chunk(SIZE - 4, b"tail")).await.unwrap();
    for off in (0..SIZE - 4).step_by(PIECE) {
        let len = (PIECE as u64).min(SIZE - 4 - off) as usize;
        bounded(w.write_chunk(off, pattern(len, off))).await.unwrap();
    }
    assert_eq!(bounded(w.finish()).await.unwrap().size, SIZE);
    let r = bounded(t.other.open_read("/sparse", None)).await.unwrap();
    assert_eq!(bounded(r.read(3 * PIECE as u64, 100)).await.unwrap(), pattern(100, 3 * PIECE as u64));
    assert_eq!(bounded(r.read(SIZE - 4, 100)).await.unwrap(), b"tail");
    drop(r);

    // A second sparse file that does not fit, whichever way it is built.
    let w = bounded(t.writer.begin_write("/sparse-2", opts(true, true, false, false))).await.unwrap();
    assert_err!(w.write_chunk(SIZE - 4, b"tail"), StorageError::NoSpace);
    bounded(w.abort()).await.unwrap();
    // A copy shares the content; growing it would need a private copy.
    bounded(t.writer.copy_file("/sparse", "/copy", false)).await.unwrap();
    let grow = SetAttrs { size: Some(SIZE + 1), permissions: None, accessed: None, modified: None };
    assert_err!(t.writer.set_info("/copy", grow), StorageError::NoSpace);
    assert_eq!(bounded(t.other.file_info("/copy")).await.unwrap().size, SIZE);
    t.assert_untouched(&rt).await;
}
