//! The bundled local-folder plugin (`plugins/localfs`) behind the real
//! server, a folder per tenant: every common client, the folders checked
//! on the host side (exact files, exact bytes, no upload's temporary file
//! left), escape attempts that must reach nothing outside a tenant's
//! folder, and files other programs write appearing at once.

mod client_support;
mod server_support;
mod wire_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use server_support::*;
use wasftp::config::{PluginConfig, PreopenConfig, PreopenMode};
use wire_support::{Body, FXF_APPEND, FXF_CREAT, FXF_READ, FXF_TRUNC, FXF_WRITE, FXP_CLOSE, FXP_EXTENDED, FXP_OPENDIR, FXP_REMOVE, FXP_WRITE, Wire};

const MIB: usize = 1 << 20;
/// What an upload in progress is called in its directory.
const TEMP_PREFIX: &str = ".wasftp-upload-";

/// A root folder served by localfs, each tenant in `root/<tenant>`.
struct Folders {
    root: tempfile::TempDir,
}

impl Folders {
    fn new() -> Self {
        Self { root: tempfile::Builder::new().prefix("wasftp-localfs-").tempdir().expect("tempdir") }
    }

    fn of(&self, tenant: &str) -> PathBuf {
        self.root.path().join(tenant)
    }

    /// Makes a tenant's folder before the server does (to put files there first).
    fn make(&self, tenant: &str) -> PathBuf {
        std::fs::create_dir_all(self.of(tenant)).unwrap();
        self.of(tenant)
    }

    fn plugin(&self, mode: PreopenMode, config: &[(&str, &str)]) -> PluginConfig {
        let mut plugin = PluginConfig {
            source: "bundled:localfs".into(),
            preopen: Some(PreopenConfig { dir: self.root.path().into(), mode, per_tenant: true }),
            ..Default::default()
        };
        plugin.config.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        plugin
    }
}

async fn serve(folders: &Folders, users: &[&str]) -> TestServer {
    serve_with(folders, users, PreopenMode::Rw, &[]).await
}

async fn serve_with(folders: &Folders, users: &[&str], mode: PreopenMode, config: &[(&str, &str)]) -> TestServer {
    let plugin = folders.plugin(mode, config);
    start_with(users.iter().map(|u| UserSpec::new(u)), |c| {
        c.plugins.insert("files".into(), plugin);
        for user in &mut c.users {
            user.plugin = "files".into();
        }
    })
    .await
}

/// Uploads in progress (or left behind) anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                found.push(path);
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    found
}

/// Everything under `dir`, as path → what it is (content, directory, or
/// a link and its target), to tell that nothing there changed.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let kind = entry.file_type().unwrap();
            let what = if kind.is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                todo.push(path);
                "directory".to_string()
            } else {
                format!("{:?}", std::fs::read(&path).unwrap())
            };
            seen.insert(name, what);
        }
    }
    seen
}

fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, SftpError>) {
    let code = status_code(result);
    assert!(matches!(code, StatusCode::NoSuchFile | StatusCode::PermissionDenied), "{what}: {code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_sftp_puts_lists_gets_renames_and_removes_in_the_folder() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let alice = folders.of("alice");
    let cwd = tempfile::tempdir().unwrap();
    let small = pattern(1000, 1);
    let big = pattern(20 * MIB, 2);
    std::fs::write(cwd.path().join("small.txt"), &small).unwrap();
    std::fs::write(cwd.path().join("big.bin"), &big).unwrap();
    let batch = "put small.txt\nput big.bin\nmkdir docs\nmkdir docs/empty\nrename small.txt docs/note.txt\n\
                 ls -l\nls -l docs\nget big.bin big.back\nget docs/note.txt note.back\n";
    let out = server.sftp_batch("alice", batch, cwd.path(), Duration::from_secs(120)).await;
    out.assert_success("put, mkdir, rename, ls and get in a folder");
    assert!(out.stdout.contains("note.txt") && out.stdout.contains("empty"), "{out}");
    assert_eq!(std::fs::read(cwd.path().join("big.back")).unwrap(), big);
    assert_eq!(std::fs::read(cwd.path().join("note.back")).unwrap(), small);
    // What landed in her folder, seen on the host side.
    assert_eq!(std::fs::read(alice.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(alice.join("docs/note.txt")).unwrap(), small);
    assert!(alice.join("docs/empty").is_dir() && !alice.join("small.txt").exists());
    assert_eq!(temp_files(folders.root.path()), Vec::<PathBuf>::new());

    let out = server.sftp_batch("alice", "rmdir docs\n", cwd.path(), Duration::from_secs(60)).await;
    assert!(!out.success(), "rmdir of a directory with children: {out}");
    server
        .sftp_batch("alice", "rm docs/note.txt\nrmdir docs/empty\nrm big.bin\nrmdir docs\n", cwd.path(), Duration::from_secs(60))
        .await
        .assert_success("rm and rmdir");
    assert_eq!(snapshot(&alice), BTreeMap::new());
    server.shutdown().await;
}

/// The rest of the client matrix: scp, sshfs (a git repository made and
/// cloned in the mount), paramiko, asyncssh, lftp and rclone run the same
/// suites as over the memory plugin, and leave no upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scp_copies_files_and_trees() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    client_support::shell(&server, "alice", "scp_suite.sh", Duration::from_secs(240)).await.assert_success("scp");
    assert_eq!(temp_files(folders.root.path()), Vec::<PathBuf>::new());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sshfs_everyday_work_and_git_clone() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let work = tempfile::Builder::new().prefix("wasftp-sshfs-").tempdir().expect("tempdir");
    let out = client_support::shell_in(&server, "alice", "sshfs_suite.sh", work.path(), Duration::from_secs(300)).await;
    let _ = std::process::Command::new("umount").arg("-l").arg(work.path().join("mnt")).status();
    out.assert_success("sshfs");
    assert_eq!(temp_files(folders.root.path()), Vec::<PathBuf>::new());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paramiko_suite() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let cases = ["put_pipelined", "big_round_trip", "prefetch", "read_modify_write", "truncate_then_write", "stat_after_open", "namespace"];
    client_support::python(&server, "alice", "paramiko_suite.py", &cases, Duration::from_secs(300))
        .await
        .assert_success("paramiko");
    assert_eq!(temp_files(folders.root.path()), Vec::<PathBuf>::new());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asyncssh_suite() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    client_support::python(&server, "alice", "asyncssh_suite.py", &["put_get_deep", "makedirs_rmtree", "copy"], Duration::from_secs(300))
        .await
        .assert_success("asyncssh");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lftp_mirrors_a_tree() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    client_support::shell(&server, "alice", "lftp_suite.sh", Duration::from_secs(300)).await.assert_success("lftp");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rclone_copies_a_tree() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    client_support::shell(&server, "alice", "rclone_suite.sh", Duration::from_secs(300)).await.assert_success("rclone");
    assert!(folders.of("alice").join("tree/c/big.bin").is_file());
    server.shutdown().await;
}

/// Every way out of a tenant's folder fails with permission-denied or
/// not-found, and nothing outside it is read or written: `..`, absolute
/// paths, symlinks made on the host side to `/etc`, to a file outside and
/// into another tenant's folder, symlinks and hard links made through
/// SFTP, and names that only look like `..` or `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escape_attempts_reach_nothing_outside_the_tenants_folder() {
    let folders = Folders::new();
    let outside = tempfile::Builder::new().prefix("wasftp-outside-").tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"outside secret").unwrap();
    let (alice, bob) = (folders.make("alice"), folders.make("bob"));
    std::fs::write(bob.join("note.txt"), b"bob's").unwrap();
    let secret = outside.path().join("secret.txt");
    std::os::unix::fs::symlink("/etc", alice.join("system")).unwrap();
    std::os::unix::fs::symlink(&secret, alice.join("secret-link")).unwrap();
    std::os::unix::fs::symlink("../bob", alice.join("bob-link")).unwrap();
    std::os::unix::fs::symlink("../..", alice.join("up")).unwrap();
    let outside_before = snapshot(outside.path());
    let bob_before = snapshot(&bob);

    let server = serve(&folders, &["alice", "bob"]).await;
    let sftp = server.sftp("alice").await;
    let outside_path = format!("/../../../../..{}", secret.display());
    let reads = [
        "/../bob/note.txt",
        "/../../bob/note.txt",
        outside_path.as_str(),
        "/system/passwd",
        "/system/hostname",
        "/secret-link",
        "/bob-link/note.txt",
        "/up/bob/note.txt",
        // Look-alikes of `..` and `/`: names like any other, which do not exist.
        "/\u{ff0e}\u{ff0e}/bob/note.txt",
        "/\u{2024}\u{2024}/bob/note.txt",
        "/..\u{2215}bob\u{2215}note.txt",
        "/\u{fe52}\u{fe52}\u{ff0f}bob\u{ff0f}note.txt",
        "/.\u{200b}./bob/note.txt",
    ];
    for path in reads {
        refused(&format!("open {path}"), bounded("open", sftp.sftp.open(path, OpenFlags::READ, FileAttributes::empty())).await);
        refused(&format!("stat {path}"), bounded("stat", sftp.sftp.stat(path)).await);
    }
    for dir in ["/system", "/bob-link", "/up", "/up/bob"] {
        refused(&format!("opendir {dir}"), bounded("opendir", sftp.sftp.opendir(dir)).await);
    }
    // Links made on the host side to the outside are not shown as somewhere inside.
    for link in ["/system", "/secret-link", "/bob-link", "/up"] {
        refused(&format!("readlink {link}"), bounded("readlink", sftp.sftp.readlink(link)).await);
    }
    let writes = ["/system/wasftp-escape", "/bob-link/escape.txt", "/up/escape.txt", "/secret-link"];
    for path in writes {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        refused(&format!("write {path}"), bounded("open", sftp.sftp.open(path, flags, FileAttributes::empty())).await);
    }
    for dir in ["/system/wasftp-dir", "/bob-link/dir", "/up/dir"] {
        refused(&format!("mkdir {dir}"), bounded("mkdir", sftp.sftp.mkdir(dir, FileAttributes::empty())).await);
    }
    // A hard link to a file outside: its source is clamped into her folder.
    assert_ne!(sftp.extended_status("hardlink@openssh.com", &[&outside_path, "/stolen"]).await, StatusCode::Ok);
    assert!(!alice.join("stolen").exists());
    // Links made through SFTP point inside her folder, stored relative.
    let cwd = tempfile::tempdir().unwrap();
    let batch = "ln -s /../../../etc/passwd abs-link\nln -s ../../../../etc/passwd rel-link\nln -s ../bob/note.txt bob-note\n";
    server.sftp_batch("alice", batch, cwd.path(), Duration::from_secs(60)).await.assert_success("ln -s");
    for (link, stored) in [("abs-link", "etc/passwd"), ("rel-link", "etc/passwd"), ("bob-note", "bob/note.txt")] {
        assert_eq!(std::fs::read_link(alice.join(link)).unwrap(), Path::new(stored), "{link}");
        refused(&format!("open /{link}"), bounded("open", sftp.sftp.open(format!("/{link}"), OpenFlags::READ, FileAttributes::empty())).await);
    }
    // A name that looks like a way up is a name in her folder.
    sftp.put("/\u{ff0e}\u{ff0e}\u{ff0f}look-alike", b"mine").await;
    assert_eq!(std::fs::read(alice.join("\u{ff0e}\u{ff0e}\u{ff0f}look-alike")).unwrap(), b"mine");

    // Bob sees his folder only, alice's none of it.
    let bob_sftp = server.sftp("bob").await;
    assert_eq!(bob_sftp.list("/").await.unwrap(), ["note.txt"]);
    for path in ["/../alice/secret-link", "/../alice/abs-link", "/\u{ff0e}\u{ff0e}\u{ff0f}look-alike"] {
        refused(&format!("bob's stat {path}"), bounded("stat", bob_sftp.sftp.stat(path)).await);
    }
    assert_eq!(snapshot(outside.path()), outside_before, "nothing outside was written");
    assert_eq!(snapshot(&bob), bob_before, "bob's folder is as it was");
    let mut tenants: Vec<_> = std::fs::read_dir(folders.root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    tenants.sort();
    assert_eq!(tenants, ["alice", "bob"], "nothing was made beside the tenants' folders");
    server.shutdown().await;
}

/// A client that goes away in the middle of an upload leaves the old
/// content under the name (or no file at all), and no temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_mid_upload_leaves_the_old_content_and_no_temp_file() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let alice = folders.of("alice");
    let sftp = server.sftp("alice").await;
    let old = pattern(MIB, 3);
    sftp.put("/kept.bin", &old).await;
    let _replacing = sftp.write_without_close("/kept.bin", &pattern(3 * MIB, 4)).await.unwrap();
    let _new = sftp.write_without_close("/new.bin", &pattern(3 * MIB, 5)).await.unwrap();
    assert!(wait_until(Duration::from_secs(30), || temp_files(&alice).len() == 2).await, "{:?}", temp_files(&alice));
    assert_eq!(std::fs::read(alice.join("kept.bin")).unwrap(), old, "the old content is there while the upload runs");
    assert!(!alice.join("new.bin").exists(), "a new file appears only at its CLOSE");
    sftp.disconnect().await;
    assert!(wait_until(Duration::from_secs(30), || temp_files(&alice).is_empty()).await, "{:?}", temp_files(&alice));
    assert_eq!(std::fs::read(alice.join("kept.bin")).unwrap(), old);
    assert!(!alice.join("new.bin").exists());
    server.shutdown().await;
}

/// What a crashed host left (an upload's temporary file nobody writes to
/// any more) is removed when the plugin loads; an upload still being
/// written (a fresh one, maybe another host's) is kept, and never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leftovers_of_a_crashed_host_are_removed_at_load_and_fresh_uploads_kept() {
    let folders = Folders::new();
    let alice = folders.make("alice");
    std::fs::create_dir(alice.join("docs")).unwrap();
    let stale = alice.join("docs").join(format!("{TEMP_PREFIX}0123456789abcdef0123456789abcdef"));
    let fresh = alice.join(format!("{TEMP_PREFIX}fedcba9876543210fedcba9876543210"));
    std::fs::write(&stale, b"half an upload").unwrap();
    std::fs::write(&fresh, b"an upload going on").unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(two_hours_ago).unwrap();
    let server = serve(&folders, &["alice"]).await;
    assert!(!stale.exists(), "the stale upload is removed at load");
    assert!(fresh.exists(), "a fresh one is kept");
    let sftp = server.sftp("alice").await;
    assert_eq!(sftp.list("/").await.unwrap(), ["docs"], "uploads in progress are never listed");
    let name = format!("/{TEMP_PREFIX}fedcba9876543210fedcba9876543210");
    refused("opening an upload in progress", bounded("open", sftp.sftp.open(name.as_str(), OpenFlags::READ, FileAttributes::empty())).await);
    refused("removing an upload in progress", bounded("remove", sftp.sftp.remove(name.as_str())).await);
    assert!(fresh.exists());
    server.shutdown().await;
}

/// Files another program writes into the folder are listed at once, with
/// their real sizes and times; changes and removals too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_written_on_the_host_side_appear_at_once() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let sftp = server.sftp("alice").await;
    assert_eq!(sftp.list("/").await.unwrap(), Vec::<String>::new());
    let alice = folders.of("alice");
    let report = pattern(12_345, 6);
    std::fs::write(alice.join("report.csv"), &report).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options().write(true).open(alice.join("report.csv")).unwrap().set_modified(when).unwrap();

    let handle = bounded("opendir", sftp.sftp.opendir("/")).await.unwrap().handle;
    let listed = bounded("readdir", sftp.sftp.readdir(handle.as_str())).await.unwrap();
    let entry = listed.files.iter().find(|f| f.filename == "report.csv").expect("listed at once");
    assert_eq!((entry.attrs.size, entry.attrs.mtime), (Some(12_345), Some(1_600_000_000)));
    let _ = sftp.sftp.close(handle).await;
    let attrs = bounded("stat", sftp.sftp.stat("/report.csv")).await.unwrap().attrs;
    assert_eq!((attrs.size, attrs.mtime), (Some(12_345), Some(1_600_000_000)));

    use std::io::Write as _;
    std::fs::File::options().append(true).open(alice.join("report.csv")).unwrap().write_all(&[7; 55]).unwrap();
    assert_eq!(bounded("stat", sftp.sftp.stat("/report.csv")).await.unwrap().attrs.size, Some(12_400));
    let mut grown = report.clone();
    grown.extend_from_slice(&[7; 55]);
    assert_eq!(sftp.get("/report.csv").await, grown);
    std::fs::create_dir(alice.join("sub")).unwrap();
    std::fs::write(alice.join("sub/a.txt"), b"a").unwrap();
    assert_eq!(sftp.list("/sub").await.unwrap(), ["a.txt"]);
    let mut names = sftp.list("/").await.unwrap();
    names.sort();
    assert_eq!(names, ["report.csv", "sub"]);
    std::fs::remove_file(alice.join("report.csv")).unwrap();
    assert_eq!(status_code(bounded("stat", sftp.sftp.stat("/report.csv")).await), StatusCode::NoSuchFile);
    assert_eq!(sftp.list("/").await.unwrap(), ["sub"]);
    server.shutdown().await;
}

/// A download reads the version it opened: the open descriptor keeps it,
/// whether an SFTP upload or a program on the host replaces the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_reads_the_version_it_opened_whatever_replaces_it() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let alice = folders.of("alice");
    let (first, second) = (server.sftp("alice").await, server.sftp("alice").await);
    let old = pattern(2 * MIB, 7);
    first.put("/data.bin", &old).await;
    for replace_on_host in [false, true] {
        let handle = bounded("open", first.sftp.open("/data.bin", OpenFlags::READ, FileAttributes::empty())).await.unwrap().handle;
        let head = bounded("read", first.sftp.read(handle.as_str(), 0, 32 << 10)).await.unwrap().data;
        let new = pattern(2 * MIB, if replace_on_host { 9 } else { 8 });
        if replace_on_host {
            std::fs::write(alice.join("replacement"), &new).unwrap();
            std::fs::rename(alice.join("replacement"), alice.join("data.bin")).unwrap();
        } else {
            second.put("/data.bin", &new).await;
        }
        let mut read = head;
        while read.len() < old.len() {
            let data = bounded("read", first.sftp.read(handle.as_str(), read.len() as u64, 32 << 10)).await.unwrap().data;
            read.extend_from_slice(&data);
        }
        assert!(read == old, "the download mixed versions (host side: {replace_on_host})");
        bounded("close", first.sftp.close(handle)).await.unwrap();
        assert_eq!(second.get("/data.bin").await, new);
        first.put("/data.bin", &old).await;
    }
    server.shutdown().await;
}

/// Symlinks and hard links inside the folder, through OpenSSH's client:
/// stored relative, LSTAT describes the link, `link/` what it points to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn symlinks_and_hard_links_inside_the_folder() {
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let alice = folders.of("alice");
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("note.txt"), b"a note").unwrap();
    let batch = "mkdir docs\nput note.txt docs/note.txt\nln -s docs latest\nln -s /docs/note.txt docs/self\n\
                 ln docs/note.txt hard.txt\nget latest/note.txt via-link.txt\nget hard.txt via-hard.txt\n";
    server.sftp_batch("alice", batch, cwd.path(), Duration::from_secs(60)).await.assert_success("ln -s, ln and get through links");
    let out = server.sftp_batch("alice", "ls -l latest/\n", cwd.path(), Duration::from_secs(60)).await;
    out.assert_success("ls -l latest/");
    let listed: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with("sftp>")).collect();
    assert!(listed.len() == 2 && listed[0].ends_with("note.txt") && listed[1].ends_with("self"), "ls -l latest/ lists the directory: {out}");
    assert_eq!(std::fs::read(cwd.path().join("via-link.txt")).unwrap(), b"a note");
    assert_eq!(std::fs::read(cwd.path().join("via-hard.txt")).unwrap(), b"a note");
    assert_eq!(std::fs::read_link(alice.join("latest")).unwrap(), Path::new("docs"));
    assert_eq!(std::fs::read_link(alice.join("docs/self")).unwrap(), Path::new("note.txt"));
    let inode = |p: &str| std::fs::metadata(alice.join(p)).unwrap().ino();
    assert_eq!(inode("hard.txt"), inode("docs/note.txt"), "one content, two names");

    let sftp = server.sftp("alice").await;
    assert!(bounded("lstat", sftp.sftp.lstat("/latest")).await.unwrap().attrs.is_symlink());
    assert!(bounded("lstat", sftp.sftp.lstat("/latest/")).await.unwrap().attrs.is_dir(), "link/ is what it points to");
    assert!(bounded("stat", sftp.sftp.stat("/latest")).await.unwrap().attrs.is_dir());
    assert_eq!(status_code(bounded("stat", sftp.sftp.stat("/hard.txt/")).await), StatusCode::NoSuchFile, "file/ is no directory");
    // `rm latest/`: unlink(2) does not follow the last name (ENOTDIR); the link stays.
    assert_eq!(status_code(bounded("remove", sftp.sftp.remove("/latest/")).await), StatusCode::NoSuchFile);
    assert!(std::fs::symlink_metadata(alice.join("latest")).unwrap().file_type().is_symlink());
    let sftp = &sftp;
    let target = |link: &'static str| async move { bounded("readlink", sftp.sftp.readlink(link)).await.unwrap().files[0].filename.clone() };
    assert_eq!(target("/latest").await, "/docs");
    assert_eq!(target("/docs/self").await, "/docs/note.txt");
    // A relative link made on the host side reads as the path it names.
    std::os::unix::fs::symlink("../docs/note.txt", alice.join("docs/up-and-back")).unwrap();
    assert_eq!(target("/docs/up-and-back").await, "/docs/note.txt");
    server.shutdown().await;
}

/// A read-only grant serves the folder and refuses every change, with
/// write bits cleared in what it reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_folder_is_served_and_never_written() {
    let folders = Folders::new();
    let alice = folders.make("alice");
    std::fs::create_dir(alice.join("docs")).unwrap();
    std::fs::write(alice.join("docs/guide.txt"), b"the guide").unwrap();
    let before = snapshot(&alice);
    let server = serve_with(&folders, &["alice"], PreopenMode::Ro, &[]).await;
    let sftp = server.sftp("alice").await;
    assert_eq!(sftp.get("/docs/guide.txt").await, b"the guide");
    assert_eq!(bounded("stat", sftp.sftp.stat("/docs/guide.txt")).await.unwrap().attrs.permissions.map(|p| p & 0o7777), Some(0o444));
    assert_eq!(bounded("stat", sftp.sftp.stat("/docs")).await.unwrap().attrs.permissions.map(|p| p & 0o7777), Some(0o555));
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    for path in ["/docs/guide.txt", "/new.txt"] {
        assert_eq!(status_code(bounded("open", sftp.sftp.open(path, flags, FileAttributes::empty())).await), StatusCode::PermissionDenied, "{path}");
    }
    assert_eq!(status_code(bounded("mkdir", sftp.sftp.mkdir("/d", FileAttributes::empty())).await), StatusCode::PermissionDenied);
    assert_eq!(status_code(bounded("remove", sftp.sftp.remove("/docs/guide.txt")).await), StatusCode::PermissionDenied);
    assert_eq!(status_code(bounded("rename", sftp.sftp.rename("/docs", "/moved")).await), StatusCode::PermissionDenied);
    assert_eq!(snapshot(&alice), before);
    server.shutdown().await;
}

/// What WASI cannot do, as the plugin's README says: no mode bits (chmod
/// only to the mode shown), no statvfs; FIFOs are never opened and names
/// that are not UTF-8 are left out of listings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_wasi_cannot_do_is_refused_or_reported_as_documented() {
    let folders = Folders::new();
    let alice = folders.make("alice");
    let status = std::process::Command::new("mkfifo").arg(alice.join("pipe")).status().unwrap();
    assert!(status.success());
    use std::os::unix::ffi::OsStrExt as _;
    std::fs::write(alice.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9.txt")), b"x").unwrap();
    let server = serve(&folders, &["alice"]).await;
    let sftp = server.sftp("alice").await;
    sftp.put("/f.txt", b"content").await;
    let perms = |attrs: FileAttributes| attrs.permissions.map(|p| p & 0o7777);
    assert_eq!(perms(bounded("stat", sftp.sftp.stat("/f.txt")).await.unwrap().attrs), Some(0o644));
    assert_eq!(perms(bounded("stat", sftp.sftp.stat("/")).await.unwrap().attrs), Some(0o755));
    let mode = |permissions| FileAttributes { permissions: Some(permissions), ..FileAttributes::empty() };
    assert!(bounded("setstat", sftp.sftp.setstat("/f.txt", mode(0o644))).await.is_ok(), "chmod to the mode shown");
    // Another mode cannot be kept; the times beside it are set all the same.
    let before = std::fs::metadata(alice.join("f.txt")).unwrap().mode();
    let times = FileAttributes { permissions: Some(0o600), atime: Some(1_500_000_000), mtime: Some(1_500_000_000), ..FileAttributes::empty() };
    let _ = bounded("setstat", sftp.sftp.setstat("/f.txt", times)).await;
    assert_eq!(std::fs::metadata(alice.join("f.txt")).unwrap().mode(), before, "the mode on disk is untouched");
    assert_eq!(std::fs::metadata(alice.join("f.txt")).unwrap().mtime(), 1_500_000_000, "the times are set");
    let statvfs = bounded("statvfs", sftp.sftp.statvfs("/")).await;
    assert_eq!(status_code(statvfs), StatusCode::OpUnsupported, "WASI reports no statvfs");
    // A FIFO is refused at once, never opened (that would wait for a writer).
    refused("open a FIFO", bounded("open", sftp.sftp.open("/pipe", OpenFlags::READ, FileAttributes::empty())).await);
    let mut names = sftp.list("/").await.unwrap();
    names.sort();
    assert_eq!(names, ["f.txt", "pipe"], "a name that is not UTF-8 is left out");
    assert_eq!(sftp.get("/f.txt").await, b"content", "the session goes on");
    server.shutdown().await;
}

/// fsync@openssh.com, offered because localfs content is durable once
/// committed: it commits what an open handle wrote so far (on disk under
/// its name at once, fsynced, seen by other sessions) and the handle goes
/// on writing; CLOSE commits the rest. OpenSSH's `put -f`, which sends it
/// before CLOSE, lands the file whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_commits_what_an_open_handle_wrote_and_writing_goes_on() {
    const OK: u32 = 0;
    const NO_SUCH_FILE: u32 = 2;
    let folders = Folders::new();
    let server = serve(&folders, &["alice"]).await;
    let alice = folders.of("alice");
    let mut wire = Wire::open(&server, "alice", 3).await;
    assert!(wire.extensions.iter().any(|e| e == "fsync@openssh.com"), "offered: {:?}", wire.extensions);
    let fsync = |handle: &[u8]| Body::new().string("fsync@openssh.com").string(handle);
    let write = |handle: &[u8], offset: u64, data: &[u8]| Body::new().string(handle).u64(offset).string(data);

    let handle = wire.open_file("/log.txt", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, write(&handle, 0, b"first ")).await.status(), OK);
    assert!(!alice.join("log.txt").exists(), "nothing under the name before the sync");
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"first ", "synced: on disk under its name");
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());
    let other = server.sftp("alice").await;
    assert_eq!(other.get("/log.txt").await, b"first ", "and seen by another session");

    assert_eq!(wire.call(FXP_WRITE, write(&handle, 6, b"second ")).await.status(), OK);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"first second ");
    assert_eq!(wire.call(FXP_WRITE, write(&handle, 13, b"third")).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"first second ", "unsynced bytes wait for CLOSE");
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"first second third");
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());

    // A sync with nothing new, then CLOSE: the file stays as synced.
    let handle = wire.open_file("/again.txt", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, write(&handle, 0, b"once")).await.status(), OK);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("again.txt")).unwrap(), b"once");

    // As sftp-server: a reading handle syncs (nothing to do); a directory
    // handle, or one not open, names no file.
    let reading = wire.open_file("/log.txt", FXF_READ).await;
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&reading)).await.status(), OK);
    let dir = wire.call(FXP_OPENDIR, Body::new().string("/")).await.handle();
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&dir)).await.status(), NO_SUCH_FILE);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(b"no-such-handle")).await.status(), NO_SUCH_FILE);

    // Synced, then removed by another session while still open (unlink(2)
    // of an open file): later WRITEs land nowhere and CLOSE brings nothing back.
    let handle = wire.open_file("/gone.txt", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    assert_eq!(wire.call(FXP_WRITE, write(&handle, 0, b"kept until removed")).await.status(), OK);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    other.sftp.remove("/gone.txt").await.expect("remove a synced file still open");
    assert_eq!(wire.call(FXP_WRITE, write(&handle, 18, b" and more")).await.status(), OK);
    assert_eq!(wire.call(FXP_EXTENDED, fsync(&handle)).await.status(), OK);
    assert_eq!(wire.call(FXP_CLOSE, Body::new().string(&handle)).await.status(), OK);
    assert!(!alice.join("gone.txt").exists(), "the removed file stays removed");
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());
    assert_eq!(wire.call(FXP_REMOVE, Body::new().string("/log.txt")).await.status(), OK);

    // OpenSSH's client sends fsync@openssh.com for `put -f` when offered.
    let cwd = tempfile::tempdir().unwrap();
    let data = pattern(3 * MIB, 9);
    std::fs::write(cwd.path().join("synced.bin"), &data).unwrap();
    let out = server.sftp_batch("alice", "put -f synced.bin\n", cwd.path(), Duration::from_secs(60)).await;
    out.assert_success("put -f");
    assert_eq!(std::fs::read(alice.join("synced.bin")).unwrap(), data);
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());
    server.shutdown().await;
}

/// Two appends to one file at once: each copies the file and renames its
/// copy over the name at CLOSE, so the second would silently drop the
/// first. It fails at CLOSE instead (conflict), and the first one's bytes
/// stay. A `max-file-size` is refused before the plugin copies anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_lose_one_silently_and_max_file_size_holds() {
    const OK: u32 = 0;
    const FAILURE: u32 = 4;
    let folders = Folders::new();
    let alice = folders.make("alice");
    std::fs::write(alice.join("log.txt"), b"start\n").unwrap();
    std::fs::write(alice.join("big.bin"), vec![7u8; 2048]).unwrap();
    let server = serve_with(&folders, &["alice"], PreopenMode::Rw, &[("max-file-size", "1024")]).await;
    let mut first = Wire::open(&server, "alice", 3).await;
    let mut second = Wire::open(&server, "alice", 3).await;
    let write = |handle: &[u8], data: &[u8]| Body::new().string(handle).u64(0).string(data);
    let one = first.open_file("/log.txt", FXF_WRITE | FXF_APPEND).await;
    let two = second.open_file("/log.txt", FXF_WRITE | FXF_APPEND).await;
    assert_eq!(first.call(FXP_WRITE, write(&one, b"one\n")).await.status(), OK);
    assert_eq!(second.call(FXP_WRITE, write(&two, b"two\n")).await.status(), OK);
    assert_eq!(first.call(FXP_CLOSE, Body::new().string(&one)).await.status(), OK);
    let late = second.call(FXP_CLOSE, Body::new().string(&two)).await;
    assert_eq!(late.status(), FAILURE, "the append that would drop the other: {}", late.message());
    assert!(late.message().contains("changed"), "{}", late.message());
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"start\none\n", "the first append kept");
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());

    // One after the other, both land.
    let three = second.open_file("/log.txt", FXF_WRITE | FXF_APPEND).await;
    assert_eq!(second.call(FXP_WRITE, write(&three, b"two\n")).await.status(), OK);
    assert_eq!(second.call(FXP_CLOSE, Body::new().string(&three)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("log.txt")).unwrap(), b"start\none\ntwo\n");

    // max-file-size: a WRITE past it, and a keep-content open of a larger
    // file (made on the host side), fail; nothing is written.
    let small = first.open_file("/small.bin", FXF_WRITE | FXF_CREAT | FXF_TRUNC).await;
    let past = Body::new().string(&small).u64(1000).string([1u8; 100]);
    assert_eq!(first.call(FXP_WRITE, past).await.status(), FAILURE);
    // As a WRITE refused with EFBIG on sftp-server: the file keeps what was written.
    assert_eq!(first.call(FXP_CLOSE, Body::new().string(&small)).await.status(), OK);
    assert_eq!(std::fs::read(alice.join("small.bin")).unwrap(), b"");
    let open = first.call(wire_support::FXP_OPEN, Body::new().string("/big.bin").u32(FXF_WRITE | FXF_APPEND).no_attrs()).await;
    assert_eq!(open.status(), FAILURE, "a keep-content open of a file past the limit");
    assert_eq!(std::fs::read(alice.join("big.bin")).unwrap(), vec![7u8; 2048]);
    assert_eq!(temp_files(&alice), Vec::<PathBuf>::new());
    server.shutdown().await;
}

/// Every open file holds a descriptor of the server's process, which all
/// tenants share: one tenant opening files until none are left would make
/// every other tenant's OPEN fail. A tenant past its bound is refused,
/// saying so, across all its sessions, while another tenant opens and
/// reads on; a closed file gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_holding_its_open_files_leaves_the_others_theirs() {
    const PER_TENANT: usize = 6;
    let folders = Folders::new();
    std::fs::write(folders.make("alice").join("a.txt"), b"alice's").unwrap();
    std::fs::write(folders.make("bob").join("b.txt"), b"bob's").unwrap();
    let plugin = folders.plugin(PreopenMode::Rw, &[]);
    let server = start_with([UserSpec::new("alice"), UserSpec::new("bob")], |c| {
        c.plugins.insert("files".into(), plugin);
        for user in &mut c.users {
            user.plugin = "files".into();
        }
        c.limits.max_open_files_per_tenant = PER_TENANT;
    })
    .await;
    let (first, second) = (server.sftp("alice").await, server.sftp("alice").await);
    let mut held = Vec::new();
    for i in 0..PER_TENANT {
        let session = if i % 2 == 0 { &first } else { &second };
        let handle = session.open("/a.txt", OpenFlags::READ, FileAttributes::empty()).await.expect("within her bound").handle;
        held.push((i % 2, handle));
    }
    let refused = second.open("/a.txt", OpenFlags::READ, FileAttributes::empty()).await;
    let Err(SftpError::Status(status)) = &refused else { panic!("past her bound: {refused:?}") };
    assert_eq!(status.status_code, StatusCode::Failure);
    assert!(status.error_message.contains("too many open files for this tenant"), "{}", status.error_message);
    let upload = first.open("/new.txt", OpenFlags::WRITE | OpenFlags::CREATE, FileAttributes::empty()).await;
    assert!(upload.is_err(), "an upload holds a file too");

    let bob = server.sftp("bob").await;
    assert_eq!(bob.get("/b.txt").await, b"bob's", "another tenant opens and reads on");
    bob.put("/up.txt", b"written").await;
    assert_eq!(std::fs::read(folders.of("bob").join("up.txt")).unwrap(), b"written");

    let (session, handle) = held.pop().unwrap();
    let session = if session == 0 { &first } else { &second };
    session.close(handle).await.expect("close");
    assert_eq!(first.read_at("/a.txt", 0, 100).await, b"alice's", "a closed file gives its place back");
    server.shutdown().await;
}
