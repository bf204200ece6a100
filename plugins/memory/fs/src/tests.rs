use super::*;

fn opts() -> WriteOptions {
    WriteOptions {
        create: true,
        truncate: true,
        exclusive: false,
        append: false,
        permissions: None,
    }
}

fn put(fs: &mut Fs, p: &str, data: &[u8]) -> FileInfo {
    let mut w = fs.begin_write(p, opts()).unwrap();
    fs.write_chunk(&mut w, 0, data).unwrap();
    fs.commit(w).unwrap()
}

fn get(fs: &mut Fs, p: &str) -> Vec<u8> {
    let d = fs.open_read(p, None).unwrap().0;
    read_at(&d, 0, u32::MAX).unwrap()
}

/// With no reader or writer pinning content, the budget holds exactly what
/// the tree holds.
fn check_used(fs: &Fs) {
    assert_eq!(fs.used_bytes(), fs.recount(), "the byte count drifted");
}

fn names(page: &DirPage) -> Vec<&str> {
    page.entries.iter().map(|e| e.name.as_str()).collect()
}

fn attrs() -> SetAttrs {
    SetAttrs {
        size: None,
        permissions: None,
        accessed: None,
        modified: None,
    }
}

#[test]
fn root_exists() {
    let mut fs = Fs::new();
    let info = fs.file_info("/").unwrap();
    assert_eq!(info.kind, FileKind::Directory);
    assert_eq!(info.permissions, 0o755);
    assert_eq!(fs.list_dir("/", None, 0).unwrap().entries.len(), 0);
    assert_eq!(fs.make_dir("/", None), Err(Error::AlreadyExists));
    assert!(matches!(fs.remove_dir("/"), Err(Error::PermissionDenied)));
    assert_eq!(fs.remove_file("/"), Err(Error::IsADirectory));
    assert_eq!(fs.open_read("/", None).unwrap_err(), Error::IsADirectory);
    assert_eq!(
        fs.begin_write("/", opts()).unwrap_err(),
        Error::IsADirectory
    );
    assert!(matches!(
        fs.file_info("/a/../b"),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn make_dir_errors() {
    let mut fs = Fs::new();
    fs.make_dir("/d", None).unwrap();
    assert_eq!(fs.file_info("/d").unwrap().permissions, 0o755);
    fs.make_dir("/d/e", Some(0o700)).unwrap();
    assert_eq!(fs.file_info("/d/e").unwrap().permissions, 0o700);
    assert_eq!(fs.make_dir("/d", None), Err(Error::AlreadyExists));
    put(&mut fs, "/f", b"x");
    assert_eq!(fs.make_dir("/f", None), Err(Error::AlreadyExists));
    assert_eq!(fs.make_dir("/missing/x", None), Err(Error::NotFound));
    assert_eq!(fs.make_dir("/f/x", None), Err(Error::NotADirectory));
    assert_eq!(fs.file_info("/f/x"), Err(Error::NotADirectory));
}

#[test]
fn remove_dir_and_file() {
    let mut fs = Fs::new();
    fs.make_dir("/d", None).unwrap();
    put(&mut fs, "/d/f", b"hello");
    assert_eq!(fs.remove_dir("/d"), Err(Error::NotEmpty));
    assert_eq!(fs.remove_dir("/d/f"), Err(Error::NotADirectory));
    assert_eq!(fs.remove_file("/d"), Err(Error::IsADirectory));
    assert_eq!(fs.remove_file("/d/nope"), Err(Error::NotFound));
    assert_eq!(fs.remove_dir("/nope"), Err(Error::NotFound));
    fs.remove_file("/d/f").unwrap();
    check_used(&fs);
    fs.remove_dir("/d").unwrap();
    assert_eq!(fs.file_info("/d"), Err(Error::NotFound));
    assert_eq!(fs.used_bytes(), 0, "an empty tree holds nothing");
}

#[test]
fn write_and_read() {
    let mut fs = Fs::new();
    let info = put(&mut fs, "/a", b"hello world");
    assert_eq!(info.kind, FileKind::File);
    assert_eq!(info.size, 11);
    assert_eq!(info.permissions, 0o644);
    assert!(info.modified > 0);
    let d = fs.open_read("/a", None).unwrap().0;
    assert_eq!(read_at(&d, 0, 5).unwrap(), b"hello");
    assert_eq!(read_at(&d, 6, 100).unwrap(), b"world");
    assert!(read_at(&d, 11, 10).unwrap().is_empty());
    assert!(read_at(&d, u64::MAX, 10).unwrap().is_empty());
    assert_eq!(fs.file_info("/a").unwrap().size, 11);
}

#[test]
fn writer_invisible_until_commit_and_abort() {
    let mut fs = Fs::new();
    let mut w = fs.begin_write("/a", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"data").unwrap();
    assert_eq!(fs.file_info("/a"), Err(Error::NotFound));
    drop(w); // abort
    assert_eq!(fs.file_info("/a"), Err(Error::NotFound));
    check_used(&fs);

    put(&mut fs, "/a", b"old");
    let mut w = fs.begin_write("/a", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"new content").unwrap();
    assert_eq!(get(&mut fs, "/a"), b"old");
    fs.commit(w).unwrap();
    assert_eq!(get(&mut fs, "/a"), b"new content");
    check_used(&fs);
}

#[test]
fn write_options() {
    let mut fs = Fs::new();
    let no_create = WriteOptions {
        create: false,
        ..opts()
    };
    assert_eq!(
        fs.begin_write("/a", no_create).unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        fs.begin_write("/nodir/a", opts()).unwrap_err(),
        Error::NotFound
    );
    put(&mut fs, "/f", b"0123456789");
    assert_eq!(
        fs.begin_write("/f/a", opts()).unwrap_err(),
        Error::NotADirectory
    );
    fs.make_dir("/d", None).unwrap();
    assert_eq!(
        fs.begin_write("/d", opts()).unwrap_err(),
        Error::IsADirectory
    );

    // exclusive
    let excl = WriteOptions {
        exclusive: true,
        ..opts()
    };
    assert_eq!(
        fs.begin_write("/f", excl).unwrap_err(),
        Error::AlreadyExists
    );
    let w = fs.begin_write("/x", excl).unwrap();
    put(&mut fs, "/x", b"raced");
    assert_eq!(fs.commit(w).unwrap_err(), Error::AlreadyExists);
    assert_eq!(get(&mut fs, "/x"), b"raced");

    // no truncate: starts from the current content
    let keep = WriteOptions {
        truncate: false,
        ..opts()
    };
    let mut w = fs.begin_write("/f", keep).unwrap();
    fs.write_chunk(&mut w, 2, b"ab").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(get(&mut fs, "/f"), b"01ab456789");

    // truncate
    let mut w = fs.begin_write("/f", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"z").unwrap();
    assert_eq!(fs.commit(w).unwrap().size, 1);

    // permissions for a new file; existing keeps its bits
    let p = WriteOptions {
        permissions: Some(0o100600),
        ..opts()
    };
    let w = fs.begin_write("/p", p).unwrap();
    assert_eq!(fs.commit(w).unwrap().permissions, 0o600);
    let p = WriteOptions {
        permissions: Some(0o777),
        ..opts()
    };
    let w = fs.begin_write("/p", p).unwrap();
    assert_eq!(fs.commit(w).unwrap().permissions, 0o600);
    check_used(&fs);
}

#[test]
fn holes_and_random_offsets() {
    let mut fs = Fs::new();
    let mut w = fs.begin_write("/h", opts()).unwrap();
    fs.write_chunk(&mut w, 5, b"xy").unwrap();
    fs.write_chunk(&mut w, 1, b"a").unwrap();
    fs.write_chunk(&mut w, 100, b"").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(get(&mut fs, "/h"), b"\0a\0\0\0xy");
    let mut w = fs.begin_write("/h", opts()).unwrap();
    assert_eq!(fs.write_chunk(&mut w, u64::MAX, b"ab"), Err(Error::NoSpace));
    check_used(&fs);
}

#[test]
fn append_mode() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"abc");
    let app = WriteOptions {
        append: true,
        truncate: false,
        ..opts()
    };
    let mut w = fs.begin_write("/a", app).unwrap();
    fs.write_chunk(&mut w, 0, b"de").unwrap();
    fs.write_chunk(&mut w, 0, b"f").unwrap();
    // a concurrent commit is kept: append goes to the end at finish time
    put(&mut fs, "/a", b"XYZ!");
    let info = fs.commit(w).unwrap();
    assert_eq!(info.size, 7);
    assert_eq!(get(&mut fs, "/a"), b"XYZ!def");
    check_used(&fs);

    // append + truncate
    let app_trunc = WriteOptions {
        append: true,
        truncate: true,
        ..opts()
    };
    let mut w = fs.begin_write("/a", app_trunc).unwrap();
    fs.write_chunk(&mut w, 50, b"1").unwrap();
    fs.write_chunk(&mut w, 0, b"2").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(get(&mut fs, "/a"), b"12");

    // append creating a new file
    let mut w = fs.begin_write("/new", app).unwrap();
    fs.write_chunk(&mut w, 9, b"q").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(get(&mut fs, "/new"), b"q");
    check_used(&fs);
}

#[test]
fn commit_rechecks_parent() {
    let mut fs = Fs::new();
    fs.make_dir("/d", None).unwrap();
    let w = fs.begin_write("/d/f", opts()).unwrap();
    fs.remove_dir("/d").unwrap();
    assert_eq!(fs.commit(w).unwrap_err(), Error::NotFound);
    let w = fs.begin_write("/g", opts()).unwrap();
    fs.make_dir("/g", None).unwrap();
    assert_eq!(fs.commit(w).unwrap_err(), Error::IsADirectory);
    fs.make_dir("/e", None).unwrap();
    let w = fs.begin_write("/e/f", opts()).unwrap();
    fs.remove_dir("/e").unwrap();
    put(&mut fs, "/e", b"file now");
    assert_eq!(fs.commit(w).unwrap_err(), Error::NotADirectory);
    // existing file removed while writing without create
    put(&mut fs, "/h", b"1");
    let w = fs
        .begin_write(
            "/h",
            WriteOptions {
                create: false,
                ..opts()
            },
        )
        .unwrap();
    fs.remove_file("/h").unwrap();
    assert_eq!(fs.commit(w).unwrap_err(), Error::NotFound);
    check_used(&fs);
}

#[test]
fn reader_snapshot() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"version1");
    let snap = fs.open_read("/a", None).unwrap().0;
    put(&mut fs, "/a", b"v2");
    assert_eq!(read_at(&snap, 0, 100).unwrap(), b"version1");
    let snap2 = fs.open_read("/a", None).unwrap().0;
    fs.set_info(
        "/a",
        &SetAttrs {
            size: Some(10),
            ..attrs()
        },
    )
    .unwrap();
    assert_eq!(read_at(&snap2, 0, 100).unwrap(), b"v2");
    fs.rename("/a", "/b", false).unwrap();
    fs.remove_file("/b").unwrap();
    assert_eq!(read_at(&snap, 0, 100).unwrap(), b"version1");
    assert_eq!(read_at(&snap2, 0, 100).unwrap(), b"v2");
    // appending while a reader holds the snapshot copies on write
    put(&mut fs, "/c", b"abc");
    let snap3 = fs.open_read("/c", None).unwrap().0;
    let app = WriteOptions {
        append: true,
        truncate: false,
        ..opts()
    };
    let mut w = fs.begin_write("/c", app).unwrap();
    fs.write_chunk(&mut w, 0, b"d").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(read_at(&snap3, 0, 100).unwrap(), b"abc");
    assert_eq!(get(&mut fs, "/c"), b"abcd");
    // Pinned versions are held, and charged, until their readers go.
    let pinned = snap.charged() + snap2.charged() + snap3.charged();
    assert_eq!(fs.used_bytes(), fs.recount() + pinned);
    drop((snap, snap2, snap3));
    check_used(&fs);
}

#[test]
fn commit_moves_buffer() {
    let mut fs = Fs::new();
    let mut w = fs.begin_write("/big", opts()).unwrap();
    fs.write_chunk(&mut w, 0, &[7u8; 4096]).unwrap();
    let ptr = w.buf.as_ptr();
    fs.commit(w).unwrap();
    let d = fs.open_read("/big", None).unwrap().0;
    assert_eq!(d.as_ptr(), ptr, "commit must move, not copy, the buffer");
}

#[test]
fn listing_pages() {
    let mut fs = Fs::new();
    fs.make_dir("/d", None).unwrap();
    for i in 0..25 {
        put(&mut fs, &format!("/d/f{i:02}"), b"x");
    }
    fs.make_dir("/d/sub", None).unwrap();
    let p1 = fs.list_dir("/d", None, 10).unwrap();
    assert_eq!(p1.entries.len(), 10);
    assert_eq!(p1.entries[0].name, "f00");
    assert_eq!(p1.entries[0].info.size, 1);
    assert_eq!(p1.next_cursor.as_deref(), Some("f09"));
    let p2 = fs.list_dir("/d", p1.next_cursor.as_deref(), 10).unwrap();
    assert_eq!(names(&p2)[0], "f10");
    let p3 = fs.list_dir("/d", p2.next_cursor.as_deref(), 10).unwrap();
    assert_eq!(names(&p3), ["f20", "f21", "f22", "f23", "f24", "sub"]);
    assert_eq!(p3.entries[5].info.kind, FileKind::Directory);
    assert_eq!(p3.next_cursor, None);
    // exact fit: no further page
    let p = fs.list_dir("/d", Some("f19"), 6).unwrap();
    assert_eq!(p.entries.len(), 6);
    assert_eq!(p.next_cursor, None);
    // limit 0 = default; a cursor past the end
    assert_eq!(fs.list_dir("/d", None, 0).unwrap().entries.len(), 26);
    assert!(
        fs.list_dir("/d", Some("zzz"), 5)
            .unwrap()
            .entries
            .is_empty()
    );
    // cursor naming a removed entry still works
    let p = fs.list_dir("/d", Some("f055"), 1).unwrap();
    assert_eq!(names(&p), ["f06"]);
    assert_eq!(
        fs.list_dir("/d/f00", None, 1).unwrap_err(),
        Error::NotADirectory
    );
    assert_eq!(fs.list_dir("/nope", None, 1).unwrap_err(), Error::NotFound);
}

#[test]
fn list_limit_capped() {
    let mut fs = Fs::new();
    for i in 0..1500 {
        put(&mut fs, &format!("/{i:04}"), b"");
    }
    let p = fs.list_dir("/", None, u32::MAX).unwrap();
    assert_eq!(p.entries.len(), MAX_LIST_LIMIT);
    assert_eq!(p.next_cursor.as_deref(), Some("0999"));
}

#[test]
fn rename_files_and_dirs() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"aaa");
    put(&mut fs, "/b", b"bb");
    assert_eq!(fs.rename("/a", "/b", false), Err(Error::AlreadyExists));
    fs.rename("/a", "/b", true).unwrap();
    assert_eq!(get(&mut fs, "/b"), b"aaa");
    assert_eq!(fs.file_info("/a"), Err(Error::NotFound));
    check_used(&fs);
    assert_eq!(fs.rename("/missing", "/x", false), Err(Error::NotFound));
    assert_eq!(fs.rename("/b", "/nodir/x", false), Err(Error::NotFound));
    fs.rename("/b", "/b", false).unwrap();
    fs.rename("/b", "/b", true).unwrap();
    assert_eq!(get(&mut fs, "/b"), b"aaa");

    // directory subtree
    fs.make_dir("/d", None).unwrap();
    fs.make_dir("/d/e", None).unwrap();
    put(&mut fs, "/d/e/f", b"deep");
    fs.rename("/d", "/m", false).unwrap();
    assert_eq!(get(&mut fs, "/m/e/f"), b"deep");
    assert_eq!(fs.file_info("/d"), Err(Error::NotFound));

    // into its own subtree
    assert!(matches!(
        fs.rename("/m", "/m/e/x", false),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        fs.rename("/m", "/m/x", true),
        Err(Error::InvalidInput(_))
    ));
    // prefix but not subtree
    fs.rename("/m", "/mm", false).unwrap();
    fs.rename("/mm", "/m", false).unwrap();

    // kind mismatches
    fs.make_dir("/empty", None).unwrap();
    assert_eq!(fs.rename("/b", "/empty", true), Err(Error::IsADirectory));
    assert_eq!(fs.rename("/m", "/b", true), Err(Error::NotADirectory));
    fs.make_dir("/full", None).unwrap();
    put(&mut fs, "/full/x", b"1");
    assert_eq!(fs.rename("/m", "/full", true), Err(Error::NotEmpty));
    assert_eq!(fs.rename("/m", "/empty", false), Err(Error::AlreadyExists));
    fs.rename("/m", "/empty", true).unwrap();
    assert_eq!(get(&mut fs, "/empty/e/f"), b"deep");
    // a dir onto its own ancestor
    assert_eq!(fs.rename("/empty/e", "/empty", true), Err(Error::NotEmpty));
    // root
    assert!(fs.rename("/", "/x", false).is_err());
    assert!(fs.rename("/b", "/", true).is_err());
    assert_eq!(fs.rename("/b", "/", false), Err(Error::AlreadyExists));
    // through a file
    assert_eq!(fs.rename("/b", "/b/c", false), Err(Error::NotADirectory));
    check_used(&fs);
}

#[test]
fn copy_file() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"content");
    fs.set_info(
        "/a",
        &SetAttrs {
            permissions: Some(0o600),
            ..attrs()
        },
    )
    .unwrap();
    fs.copy_file("/a", "/b", false).unwrap();
    assert_eq!(get(&mut fs, "/b"), b"content");
    assert_eq!(fs.file_info("/b").unwrap().permissions, 0o600);
    check_used(&fs);
    assert_eq!(fs.copy_file("/a", "/b", false), Err(Error::AlreadyExists));
    put(&mut fs, "/c", b"other");
    fs.copy_file("/c", "/b", true).unwrap();
    assert_eq!(get(&mut fs, "/b"), b"other");
    // the copy is independent
    fs.set_info(
        "/b",
        &SetAttrs {
            size: Some(2),
            ..attrs()
        },
    )
    .unwrap();
    assert_eq!(get(&mut fs, "/c"), b"other");
    fs.make_dir("/d", None).unwrap();
    assert_eq!(fs.copy_file("/d", "/e", false), Err(Error::IsADirectory));
    assert_eq!(fs.copy_file("/a", "/d", true), Err(Error::IsADirectory));
    assert_eq!(fs.copy_file("/nope", "/e", false), Err(Error::NotFound));
    assert_eq!(fs.copy_file("/a", "/nodir/e", false), Err(Error::NotFound));
    fs.copy_file("/a", "/a", true).unwrap();
    check_used(&fs);
}

#[test]
fn set_info() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"abcdef");
    fs.set_info(
        "/a",
        &SetAttrs {
            size: Some(3),
            ..attrs()
        },
    )
    .unwrap();
    assert_eq!(get(&mut fs, "/a"), b"abc");
    fs.set_info(
        "/a",
        &SetAttrs {
            size: Some(5),
            ..attrs()
        },
    )
    .unwrap();
    assert_eq!(get(&mut fs, "/a"), b"abc\0\0");
    check_used(&fs);
    fs.set_info(
        "/a",
        &SetAttrs {
            size: None,
            permissions: Some(0o100640),
            accessed: Some(11),
            modified: Some(22),
        },
    )
    .unwrap();
    let i = fs.file_info("/a").unwrap();
    assert_eq!((i.permissions, i.accessed, i.modified), (0o640, 11, 22));
    fs.make_dir("/d", None).unwrap();
    fs.set_info(
        "/d",
        &SetAttrs {
            permissions: Some(0o700),
            modified: Some(5),
            ..attrs()
        },
    )
    .unwrap();
    let i = fs.file_info("/d").unwrap();
    assert_eq!((i.permissions, i.modified), (0o700, 5));
    // size on a dir fails and changes nothing
    let r = fs.set_info(
        "/d",
        &SetAttrs {
            size: Some(1),
            permissions: Some(0o777),
            ..attrs()
        },
    );
    assert_eq!(r, Err(Error::IsADirectory));
    assert_eq!(fs.file_info("/d").unwrap().permissions, 0o700);
    assert_eq!(fs.set_info("/nope", &attrs()), Err(Error::NotFound));
}

/// A file entry of `name` plus `content` bytes of content.
fn file_cost(name: &str, content: u64) -> u64 {
    ENTRY_COST + name.len() as u64 + content
}

#[test]
fn quota_counts_entries_and_content() {
    let mut fs = Fs::new();
    fs.set_quota(Some(2 * file_cost("a", 5)));
    put(&mut fs, "/a", b"12345");
    assert_eq!(fs.used_bytes(), file_cost("a", 5));
    let mut w = fs.begin_write("/b", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"123456").unwrap();
    assert_eq!(
        fs.commit(w).unwrap_err(),
        Error::NoSpace,
        "no room left for the entry"
    );
    assert_eq!(
        fs.used_bytes(),
        file_cost("a", 5),
        "the failed upload gave its bytes back"
    );
    put(&mut fs, "/b", b"12345");
    assert_eq!(fs.used_bytes(), 2 * file_cost("a", 5));
    let s = fs.space("/").unwrap();
    assert_eq!(
        (s.total_bytes, s.free_bytes, s.available_bytes),
        (fs.used_bytes(), 0, 0)
    );
    // Full: no new entry, not even an empty one.
    assert_eq!(fs.make_dir("/d", None), Err(Error::NoSpace));
    let w = fs.begin_write("/c", opts()).unwrap();
    assert_eq!(fs.commit(w).unwrap_err(), Error::NoSpace);
    assert_eq!(fs.copy_file("/a", "/c", false), Err(Error::NoSpace));
    // Replacing a file that shares nothing needs room for both versions
    // while the upload is in progress.
    let mut w = fs.begin_write("/a", opts()).unwrap();
    assert_eq!(fs.write_chunk(&mut w, 0, b"5"), Err(Error::NoSpace));
    drop(w);
    // Freeing space makes room again.
    fs.remove_file("/b").unwrap();
    fs.copy_file("/a", "/b", false).unwrap();
    check_used(&fs);
    assert_eq!(get(&mut fs, "/b"), b"12345");
    assert_eq!(get(&mut fs, "/a"), b"12345");
}

#[test]
fn a_copy_shares_its_content_until_one_side_changes() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", &[1u8; 1000]);
    fs.copy_file("/a", "/b", false).unwrap();
    assert_eq!(
        fs.used_bytes(),
        2 * file_cost("a", 0) + 1000,
        "one content, two entries"
    );
    fs.set_quota(Some(fs.used_bytes() + 500));
    // Changing one side would need a private copy of 1000 bytes.
    let grow = SetAttrs {
        size: Some(1001),
        ..attrs()
    };
    assert_eq!(fs.set_info("/b", &grow), Err(Error::NoSpace));
    // Truncating one side copies only what is kept.
    let cut = SetAttrs {
        size: Some(400),
        ..attrs()
    };
    fs.set_info("/b", &cut).unwrap();
    assert_eq!(get(&mut fs, "/a"), [1u8; 1000]);
    assert_eq!(get(&mut fs, "/b"), [1u8; 400]);
    check_used(&fs);
}

#[test]
fn set_info_past_the_quota_is_no_space_and_changes_nothing() {
    let mut fs = Fs::new();
    fs.set_quota(Some(1 << 20));
    put(&mut fs, "/small", b"tiny");
    put(&mut fs, "/other", b"kept");
    let before = fs.used_bytes();
    for size in [2_147_000_000, 1 << 40, u64::MAX] {
        let huge = SetAttrs {
            size: Some(size),
            permissions: Some(0o600),
            ..attrs()
        };
        assert_eq!(
            fs.set_info("/small", &huge),
            Err(Error::NoSpace),
            "size {size}"
        );
    }
    assert_eq!(fs.used_bytes(), before);
    let info = fs.file_info("/small").unwrap();
    assert_eq!(
        (info.size, info.permissions),
        (4, 0o644),
        "nothing of the request was applied"
    );
    assert_eq!(get(&mut fs, "/small"), b"tiny");
    assert_eq!(get(&mut fs, "/other"), b"kept");
    check_used(&fs);
}

#[test]
fn a_write_at_a_huge_offset_is_refused_before_allocating() {
    let mut fs = Fs::new();
    fs.set_quota(Some(1 << 20));
    let mut w = fs.begin_write("/f", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"start").unwrap();
    let pending = fs.used_bytes();
    for offset in [2_147_000_000, 1 << 40, u64::MAX - 1] {
        assert_eq!(
            fs.write_chunk(&mut w, offset, b"xyz"),
            Err(Error::NoSpace),
            "offset {offset}"
        );
        assert_eq!(fs.used_bytes(), pending, "nothing was reserved");
    }
    fs.write_chunk(&mut w, 5, b"-end").unwrap();
    assert_eq!(fs.commit(w).unwrap().size, 9);
    assert_eq!(get(&mut fs, "/f"), b"start-end");
    check_used(&fs);
}

#[test]
fn uploads_in_progress_count_against_the_quota() {
    let mut fs = Fs::new();
    let quota = 3 * file_cost("x", 4);
    fs.set_quota(Some(quota));
    let mut w1 = fs.begin_write("/x", opts()).unwrap();
    let mut w2 = fs.begin_write("/y", opts()).unwrap();
    fs.write_chunk(&mut w1, 0, &[1u8; 200]).unwrap();
    let left = quota - fs.used_bytes();
    assert_eq!(
        fs.write_chunk(&mut w2, 0, &vec![2u8; left as usize + 1]),
        Err(Error::NoSpace),
        "the other upload's bytes are held too"
    );
    drop(w1); // abort gives its bytes back
    fs.write_chunk(&mut w2, 0, &vec![2u8; left as usize + 1])
        .unwrap();
    fs.commit(w2).unwrap();
    check_used(&fs);
}

#[test]
fn versions_pinned_by_readers_count_until_the_reader_goes() {
    let mut fs = Fs::new();
    put(&mut fs, "/f", &[7u8; 1000]);
    fs.set_quota(Some(fs.used_bytes() + 1500));
    let reader = fs.open_read("/f", None).unwrap().0;
    put(&mut fs, "/f", &[8u8; 1000]);
    // The old version is still in memory: only 500 bytes are left.
    let mut w = fs.begin_write("/g", opts()).unwrap();
    assert_eq!(fs.write_chunk(&mut w, 0, &[9u8; 600]), Err(Error::NoSpace));
    assert_eq!(read_at(&reader, 0, 3).unwrap(), [7u8; 3]);
    drop(reader);
    fs.write_chunk(&mut w, 0, &[9u8; 600]).unwrap();
    fs.commit(w).unwrap();
    check_used(&fs);
}

#[test]
fn many_files_fill_the_quota_and_the_tree_stays_whole() {
    let mut fs = Fs::new();
    fs.set_quota(Some(1 << 20));
    let file = vec![3u8; 100 * 1024];
    let mut stored = Vec::new();
    let full = loop {
        let name = format!("/f{}", stored.len());
        let mut w = fs.begin_write(&name, opts()).unwrap();
        let written = fs.write_chunk(&mut w, 0, &file);
        match written.and_then(|()| fs.commit(w)) {
            Ok(_) => stored.push(name),
            Err(e) => break e,
        }
        assert!(stored.len() < 100, "the quota never filled");
    };
    assert_eq!(full, Error::NoSpace);
    assert_eq!(stored.len(), 10);
    for name in &stored {
        assert_eq!(get(&mut fs, name), file, "{name} survived");
    }
    // Empty entries cost too, so they cannot fill memory uncounted.
    let mut empties = 0;
    while fs.make_dir(&format!("/d{empties}"), None).is_ok() {
        empties += 1;
        assert!(empties < 10_000, "empty directories are not counted");
    }
    assert!(fs.used_bytes() <= 1 << 20);
    check_used(&fs);
}

#[test]
fn filling_a_sparse_file_stops_at_the_quota() {
    let mut fs = Fs::new();
    fs.set_quota(Some(1 << 20));
    put(&mut fs, "/other", b"kept");
    let mut w = fs.begin_write("/sparse", opts()).unwrap();
    // A chunk far out makes a 900 KiB file of holes, in one allocation.
    fs.write_chunk(&mut w, 900 * 1024 - 4, b"tail").unwrap();
    // Filling the holes needs no more memory ...
    for off in (0..900 * 1024 - 4).step_by(64 * 1024) {
        let len = (64 * 1024).min(900 * 1024 - 4 - off);
        fs.write_chunk(&mut w, off as u64, &vec![5u8; len]).unwrap();
    }
    // ... growing past the quota does.
    assert_eq!(fs.write_chunk(&mut w, 2 << 20, b"x"), Err(Error::NoSpace));
    assert_eq!(fs.commit(w).unwrap().size, 900 * 1024);
    assert_eq!(get(&mut fs, "/other"), b"kept");
    check_used(&fs);
}

#[test]
fn spare_capacity_is_charged_and_given_back_at_commit() {
    let mut fs = Fs::new();
    let mut w = fs.begin_write("/f", opts()).unwrap();
    for i in 0..100u64 {
        fs.write_chunk(&mut w, i * 1000, &[1u8; 1000]).unwrap();
    }
    assert!(w.buf.charged() >= 100_000, "the capacity is charged");
    assert!(fs.used_bytes() >= w.buf.charged());
    fs.commit(w).unwrap();
    assert_eq!(
        fs.used_bytes(),
        file_cost("f", 100_000),
        "no spare capacity after commit"
    );
    // Truncation gives memory back.
    let cut = SetAttrs {
        size: Some(10),
        ..attrs()
    };
    fs.set_info("/f", &cut).unwrap();
    assert_eq!(fs.used_bytes(), file_cost("f", 10));
    check_used(&fs);
}

#[test]
fn names_longer_than_the_host_accepts_are_refused() {
    let mut fs = Fs::new();
    let long = format!("/{}", "n".repeat(MAX_NAME_LEN + 1));
    assert!(matches!(
        fs.make_dir(&long, None),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        fs.begin_write(&long, opts()),
        Err(Error::InvalidInput(_))
    ));
    put(&mut fs, "/a", b"x");
    assert!(matches!(
        fs.rename("/a", &long, false),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        fs.copy_file("/a", &long, false),
        Err(Error::InvalidInput(_))
    ));
    let longest = format!("/{}", "n".repeat(MAX_NAME_LEN));
    fs.rename("/a", &longest, false).unwrap();
    check_used(&fs);
}

#[test]
fn space_without_quota() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"123");
    fs.make_dir("/d", None).unwrap();
    let s = fs.space("/d").unwrap();
    assert_eq!(s.total_bytes, fs.used_bytes() + s.free_bytes);
    assert!(s.free_bytes > 1 << 30);
    assert_eq!(s.total_files - s.free_files, 3);
    assert_eq!(fs.space("/nope").unwrap_err(), Error::NotFound);
}

#[test]
fn dir_mtime_updates() {
    let mut fs = Fs::new();
    fs.make_dir("/d", None).unwrap();
    fs.set_info(
        "/d",
        &SetAttrs {
            modified: Some(1),
            ..attrs()
        },
    )
    .unwrap();
    put(&mut fs, "/d/f", b"");
    assert!(fs.file_info("/d").unwrap().modified > 1);
}

#[test]
fn a_reader_pins_a_version_and_a_changed_file_is_a_conflict() {
    let mut fs = Fs::new();
    put(&mut fs, "/f", b"one");
    let (_, first) = fs.open_read("/f", None).unwrap();
    let version = first.version.clone().expect("files carry a version");
    assert_eq!(fs.file_info("/f").unwrap().version, first.version, "stat and open agree");
    assert!(fs.open_read("/f", Some(&version)).is_ok());
    fs.rename("/f", "/g", false).unwrap();
    assert!(fs.open_read("/g", Some(&version)).is_ok(), "a rename keeps the content and its version");
    put(&mut fs, "/g", b"two");
    assert_eq!(fs.open_read("/g", Some(&version)).unwrap_err(), Error::Conflict);
    let changed = fs.file_info("/g").unwrap().version.unwrap();
    fs.set_info("/g", &SetAttrs { size: Some(1), permissions: None, accessed: None, modified: None }).unwrap();
    assert_ne!(fs.file_info("/g").unwrap().version.unwrap(), changed, "a truncate is a new version");
    assert_eq!(fs.file_info("/").unwrap().version, None, "directories have none");
}

#[test]
fn max_file_size_bounds_writes_truncates_and_appends() {
    let mut fs = Fs::new();
    fs.set_max_file_size(Some(10));
    let mut w = fs.begin_write("/f", opts()).unwrap();
    fs.write_chunk(&mut w, 0, b"0123456789").unwrap();
    assert_eq!(fs.write_chunk(&mut w, 10, b"x").unwrap_err(), Error::NoSpace);
    assert_eq!(fs.set_pending_size(&mut w, 11).unwrap_err(), Error::NoSpace);
    fs.commit(w).unwrap();
    let big = SetAttrs { size: Some(11), permissions: None, accessed: None, modified: None };
    assert_eq!(fs.set_info("/f", &big).unwrap_err(), Error::NoSpace);
    let mut append = fs.begin_write("/f", WriteOptions { truncate: false, append: true, ..opts() }).unwrap();
    fs.write_chunk(&mut append, 0, b"x").unwrap();
    assert_eq!(fs.commit(append).unwrap_err(), Error::NoSpace, "the appended file would pass the bound");
    assert_eq!(get(&mut fs, "/f"), b"0123456789");
}

/// Every piece of `fs`'s state, exported `max` bytes at a time.
fn export_all(fs: &Fs, max: usize) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut cursor = None;
    loop {
        let (piece, next) = fs.export_piece(cursor.as_deref(), max).unwrap();
        assert!(piece.len() <= max, "a piece of {} bytes over {max}", piece.len());
        pieces.push(piece);
        match next {
            Some(next) => cursor = Some(next),
            None => return pieces,
        }
    }
}

fn import_all(pieces: &[Vec<u8>], quota: Option<u64>) -> Result<Fs> {
    let mut fs = Fs::new();
    fs.set_quota(quota);
    let mut importer = state::Importer::default();
    for piece in pieces {
        importer.piece(&mut fs, piece)?;
    }
    importer.finish(&mut fs)?;
    Ok(fs)
}

#[test]
fn the_state_moves_whole_in_small_pieces() {
    let mut fs = Fs::new();
    fs.make_dir("/a", Some(0o700)).unwrap();
    fs.make_dir("/a/b", None).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let big_info = put(&mut fs, "/a/b/big", &big);
    put(&mut fs, "/a/empty", b"");
    put(&mut fs, "/top", b"top");
    let mut attrs = attrs();
    attrs.modified = Some(1_000_000);
    attrs.permissions = Some(0o600);
    fs.set_info("/top", &attrs).unwrap();
    let before: Vec<_> = ["/a", "/a/b", "/a/b/big", "/a/empty", "/top"].iter().map(|p| fs.file_info(p).unwrap()).collect();

    for max in [state::MIN_PIECE, 10_000, 1 << 20] {
        let pieces = export_all(&fs, max);
        let mut moved = import_all(&pieces, None).unwrap();
        let after: Vec<_> = ["/a", "/a/b", "/a/b/big", "/a/empty", "/top"].iter().map(|p| moved.file_info(p).unwrap()).collect();
        assert_eq!(before, after, "entries, times, permissions and versions survive (pieces of {max})");
        assert_eq!(get(&mut moved, "/a/b/big"), big);
        assert_eq!(get(&mut moved, "/top"), b"top");
        check_used(&moved);
        // A reader of the old version can pin the same version here.
        moved.open_read("/a/b/big", big_info.version.as_deref()).expect("the version is the same");
        // New content gets a version no state had.
        let new = put(&mut moved, "/new", b"n");
        assert!(new.version.unwrap().parse::<u64>().unwrap() > big_info.version.as_deref().unwrap().parse().unwrap());
    }
}

#[test]
fn a_state_that_does_not_fit_or_is_not_one_is_refused() {
    let mut fs = Fs::new();
    put(&mut fs, "/f", &vec![7u8; 50_000]);
    let pieces = export_all(&fs, 16_384);
    assert_eq!(import_all(&pieces, Some(10_000)).err(), Some(Error::NoSpace), "over the new quota");
    let cut = &pieces[..pieces.len() - 1];
    assert!(import_all(cut, None).is_err(), "a state missing its last piece");
    assert!(import_all(&[b"not a state".to_vec()], None).is_err());
    // Only into an empty instance.
    let mut busy = Fs::new();
    put(&mut busy, "/x", b"x");
    let mut importer = state::Importer::default();
    assert!(importer.piece(&mut busy, &pieces[0]).is_err());
}
