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
    let info = fs.commit(w).unwrap();
    check_used(fs);
    info
}

fn get(fs: &mut Fs, p: &str) -> Vec<u8> {
    let d = fs.open_read(p).unwrap();
    read_at(&d, 0, u32::MAX)
}

fn check_used(fs: &Fs) {
    assert_eq!(
        fs.used_bytes(),
        fs.recount(),
        "incremental byte count drifted"
    );
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
    assert_eq!(fs.open_read("/").unwrap_err(), Error::IsADirectory);
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
    assert_eq!(fs.used_bytes(), 0);
    fs.remove_dir("/d").unwrap();
    assert_eq!(fs.file_info("/d"), Err(Error::NotFound));
}

#[test]
fn write_and_read() {
    let mut fs = Fs::new();
    let info = put(&mut fs, "/a", b"hello world");
    assert_eq!(info.kind, FileKind::File);
    assert_eq!(info.size, 11);
    assert_eq!(info.permissions, 0o644);
    assert!(info.modified > 0);
    let d = fs.open_read("/a").unwrap();
    assert_eq!(read_at(&d, 0, 5), b"hello");
    assert_eq!(read_at(&d, 6, 100), b"world");
    assert!(read_at(&d, 11, 10).is_empty());
    assert!(read_at(&d, u64::MAX, 10).is_empty());
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
    let snap = fs.open_read("/a").unwrap();
    put(&mut fs, "/a", b"v2");
    assert_eq!(read_at(&snap, 0, 100), b"version1");
    let snap2 = fs.open_read("/a").unwrap();
    fs.set_info(
        "/a",
        &SetAttrs {
            size: Some(10),
            ..attrs()
        },
    )
    .unwrap();
    assert_eq!(read_at(&snap2, 0, 100), b"v2");
    fs.rename("/a", "/b", false).unwrap();
    fs.remove_file("/b").unwrap();
    assert_eq!(read_at(&snap, 0, 100), b"version1");
    assert_eq!(read_at(&snap2, 0, 100), b"v2");
    // appending while a reader holds the snapshot copies on write
    put(&mut fs, "/c", b"abc");
    let snap3 = fs.open_read("/c").unwrap();
    let app = WriteOptions {
        append: true,
        truncate: false,
        ..opts()
    };
    let mut w = fs.begin_write("/c", app).unwrap();
    fs.write_chunk(&mut w, 0, b"d").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(read_at(&snap3, 0, 100), b"abc");
    assert_eq!(get(&mut fs, "/c"), b"abcd");
    check_used(&fs);
}

#[test]
fn commit_moves_buffer() {
    let mut fs = Fs::new();
    let mut w = fs.begin_write("/big", opts()).unwrap();
    fs.write_chunk(&mut w, 0, &[7u8; 4096]).unwrap();
    let ptr = w.buf.as_ptr();
    fs.commit(w).unwrap();
    let d = fs.open_read("/big").unwrap();
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

#[test]
fn quota() {
    let mut fs = Fs::new();
    let cfg = Config::parse(&[("max-bytes".into(), "10".into())]).unwrap();
    fs.configure(cfg);
    put(&mut fs, "/a", b"12345");
    let mut w = fs.begin_write("/b", opts()).unwrap();
    assert_eq!(fs.write_chunk(&mut w, 0, b"123456"), Err(Error::NoSpace));
    fs.write_chunk(&mut w, 0, b"12345").unwrap();
    fs.commit(w).unwrap();
    assert_eq!(fs.used_bytes(), 10);
    // replacing a file only counts the difference
    put(&mut fs, "/a", b"54321");
    assert_eq!(fs.copy_file("/a", "/c", false), Err(Error::NoSpace));
    fs.copy_file("/a", "/b", true).unwrap();
    assert_eq!(
        fs.set_info(
            "/a",
            &SetAttrs {
                size: Some(6),
                ..attrs()
            }
        ),
        Err(Error::NoSpace)
    );
    // two writers racing: the second commit fails
    fs.set_info(
        "/a",
        &SetAttrs {
            size: Some(0),
            ..attrs()
        },
    )
    .unwrap();
    let mut w1 = fs.begin_write("/x", opts()).unwrap();
    let mut w2 = fs.begin_write("/y", opts()).unwrap();
    fs.write_chunk(&mut w1, 0, b"abcd").unwrap();
    fs.write_chunk(&mut w2, 0, b"abcd").unwrap();
    fs.commit(w1).unwrap();
    assert_eq!(fs.commit(w2).unwrap_err(), Error::NoSpace);
    let app = WriteOptions {
        append: true,
        truncate: false,
        ..opts()
    };
    let mut w = fs.begin_write("/x", app).unwrap();
    assert_eq!(fs.write_chunk(&mut w, 0, b"12"), Err(Error::NoSpace));
    let s = fs.space("/").unwrap();
    assert_eq!((s.total_bytes, s.free_bytes, s.available_bytes), (10, 1, 1));
    check_used(&fs);
}

#[test]
fn space_without_quota() {
    let mut fs = Fs::new();
    put(&mut fs, "/a", b"123");
    fs.make_dir("/d", None).unwrap();
    let s = fs.space("/d").unwrap();
    assert_eq!(s.total_bytes, 3 + s.free_bytes);
    assert!(s.free_bytes > 1 << 30);
    assert_eq!(s.total_files - s.free_files, 3);
    assert_eq!(fs.space("/nope").unwrap_err(), Error::NotFound);
}

#[test]
fn config_parsing() {
    let p = |k: &str, v: &str| Config::parse(&[(k.to_string(), v.to_string())]);
    assert_eq!(p("max-bytes", "1024").unwrap().max_bytes, Some(1024));
    assert_eq!(p("max-bytes", "64K").unwrap().max_bytes, Some(64 << 10));
    assert_eq!(p("max-bytes", "2GiB").unwrap().max_bytes, Some(2 << 30));
    assert_eq!(p("max-bytes", "10mb").unwrap().max_bytes, Some(10 << 20));
    assert!(p("max-bytes", "lots").unwrap_err().contains("max-bytes"));
    assert!(p("max-bytes", "").is_err());
    assert!(p("colour", "blue").unwrap_err().contains("colour"));
    assert_eq!(Config::parse(&[]).unwrap(), Config::default());
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
