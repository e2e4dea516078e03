//! What POSIX behaviour holds on a cloudmount mount and what WebDAV cannot carry: each claim of
//! SEMANTICS.md that pjdfstest does not already check is checked here, through a real mount of
//! Apache mod_dav (Basic auth).

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mount::*;
use common::pattern;

const MIB: usize = 1 << 20;

fn setup(label: &str) -> (Dav, Mounted) {
    fixed_umask();
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, label);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    (dav, m)
}

/// New files are asked for 0666 and directories 0777 less the umask: 022 here, whatever the
/// test runner's (each test is its own process).
fn fixed_umask() {
    // SAFETY: no preconditions.
    unsafe { libc::umask(0o022) };
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The errno of a libc call's -1 return.
fn check(r: libc::c_int, what: &str) -> Result<(), i32> {
    if r == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap();
        eprintln!("{what}: errno {e}");
        Err(e)
    }
}

/// The mode of `p` (type and permission bits), through stat(2).
fn mode_of(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// New files and directories have the mode they are created with (less the umask: 0644 and
/// 0755 here), and chmod changes it (set-ID and sticky bits are dropped); both are kept on this
/// machine only: nothing is uploaded, the server's file stays as it was. Every entry belongs to
/// the mounting user; chown to it succeeds, to anyone else is EPERM.
#[test]
fn modes_are_kept_locally_and_owners_are_fixed() {
    let (dav, m) = setup("perm");
    fs::write(m.path("f"), b"x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    for (name, mode) in [("f", 0o100644), ("d", 0o040755)] {
        let md = fs::metadata(m.path(name)).unwrap();
        assert_eq!(md.mode(), mode, "mode of {name}");
        assert_eq!((md.uid(), md.gid()), (uid, gid), "owner of {name}");
    }
    let root = fs::metadata(&m.dir).unwrap();
    assert_eq!(root.mode(), 0o040755);
    // The mode given at creation (open, mkdir, mknod), less the umask.
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o4777)
            .open(m.path("private"))
            .unwrap();
        fs::DirBuilder::new()
            .mode(0o751)
            .create(m.path("private-dir"))
            .unwrap();
        let p = cstr(&m.path("node"));
        // SAFETY: valid path.
        check(
            unsafe { libc::mknod(p.as_ptr(), libc::S_IFREG | 0o640, 0) },
            "mknod",
        )
        .unwrap();
    }
    assert_eq!(mode_of(&m.path("private")), 0o100755);
    assert_eq!(mode_of(&m.path("private-dir")), 0o040751);
    assert_eq!(mode_of(&m.path("node")), 0o100640);

    m.settle();
    let before = dav.stat("f").expect("f on the server");
    for (name, set, shown) in [
        ("f", 0o600, 0o100600),
        ("f", 0o755, 0o100755),
        ("f", 0o000, 0o100000),
        ("f", 0o4755, 0o100755),
        ("f", 0o2640, 0o100640),
        ("d", 0o700, 0o040700),
        ("d", 0o1777, 0o040777),
        ("d", 0o755, 0o040755),
    ] {
        chmod(&m.path(name), set).unwrap_or_else(|e| panic!("chmod {set:o} {name}: {e}"));
        assert_eq!(mode_of(&m.path(name)), shown, "chmod {set:o} {name}");
    }
    // Through an open file too (fchmod).
    File::open(m.path("f"))
        .unwrap()
        .set_permissions(fs::Permissions::from_mode(0o604))
        .unwrap();
    assert_eq!(mode_of(&m.path("f")), 0o100604);
    // A chmod alone sends nothing: no upload queued, the server's file is the same version.
    assert_eq!(m.status().queue.files, 0, "a chmod queues no upload");
    let after = dav.stat("f").expect("f on the server");
    assert_eq!((after.etag, after.size), (before.etag, before.size));
    assert_eq!(dav.get("f"), b"x");
    // The mode stays after the listing is revalidated.
    revalidate(&m);
    assert_eq!(mode_of(&m.path("f")), 0o100604);

    let p = cstr(&m.path("f"));
    // SAFETY: valid path.
    check(
        unsafe { libc::chown(p.as_ptr(), uid, gid) },
        "chown to self",
    )
    .unwrap();
    assert_eq!(
        check(unsafe { libc::chown(p.as_ptr(), 65534, u32::MAX) }, "chown"),
        Err(libc::EPERM)
    );
    assert_eq!(
        check(unsafe { libc::chown(p.as_ptr(), u32::MAX, 65534) }, "chgrp"),
        Err(libc::EPERM)
    );
}

/// The execute bit set with chmod lets a script run; without it exec(2) is refused (EACCES,
/// even for root: the kernel checks the mode, `default_permissions`).
#[test]
fn the_execute_bit_lets_a_script_run() {
    let (_dav, m) = setup("exec");
    let script = m.path("hello.sh");
    fs::write(&script, b"#!/bin/sh\necho hello from the mount\n").unwrap();
    let run_it = || std::process::Command::new(&script).output();
    assert_eq!(
        run_it()
            .expect_err("a 0644 file does not run")
            .raw_os_error(),
        Some(libc::EACCES)
    );
    chmod(&script, 0o755).unwrap();
    let out = run_it().expect("an executable script runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello from the mount\n");
    // Once uploaded, it still runs (the mode is the path's, not the version's).
    m.settle();
    revalidate(&m);
    let out = run_it().expect("the script still runs after its upload");
    assert_eq!(out.stdout, b"hello from the mount\n");
}

/// Modes set with chmod are kept in the cache's meta.db: they come back after a remount on the
/// same cache (the area's root too), move with a rename of the file or of a directory above it,
/// and go with a delete (a new file of that name has the default mode).
#[test]
fn modes_survive_a_remount_and_follow_renames() {
    fixed_umask();
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "perm-remount");
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_dir(cache.path()));
    fs::create_dir_all(m.path("d/inner")).unwrap();
    for f in ["a", "d/inner/x", "gone", "same"] {
        fs::write(m.path(f), f.as_bytes()).unwrap();
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(m.path("created-private"))
            .unwrap();
        f.write_all(b"secret").unwrap();
    }
    for (f, mode) in [
        ("a", 0o600),
        ("d/inner", 0o700),
        ("d/inner/x", 0o751),
        ("gone", 0o400),
    ] {
        chmod(&m.path(f), mode).unwrap();
    }
    chmod(&m.dir, 0o750).unwrap();
    fs::rename(m.path("a"), m.path("b")).unwrap();
    fs::rename(m.path("d"), m.path("e")).unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    fs::write(m.path("gone"), b"new").unwrap();
    let want = [
        ("b", 0o100600),
        ("e", 0o040755),
        ("e/inner", 0o040700),
        ("e/inner/x", 0o100751),
        ("gone", 0o100644),
        ("same", 0o100644),
        ("created-private", 0o100600),
    ];
    let check_all = |m: &Mounted, when: &str| {
        // The root's own mode is shown once it is listed.
        let _ = fs::read_dir(&m.dir).unwrap().count();
        assert_eq!(mode_of(&m.dir), 0o040750, "the root, {when}");
        for (f, mode) in want {
            assert_eq!(mode_of(&m.path(f)), mode, "{f}, {when}");
        }
    };
    check_all(&m, "mounted");
    m.settle();
    let m = remount(&dav, m, cache.path());
    check_all(&m, "after a remount");
    revalidate(&m);
    check_all(&m, "after a revalidation");
    // The server has the files as written (it knows no modes).
    assert_eq!(dav.get("b"), b"a");
    assert_eq!(dav.get("e/inner/x"), b"d/inner/x");
    // Back to the default mode: nothing left to keep, also after a remount.
    chmod(&m.path("b"), 0o644).unwrap();
    chmod(&m.dir, 0o755).unwrap();
    let m = remount(&dav, m, cache.path());
    let _ = fs::read_dir(&m.dir).unwrap().count();
    assert_eq!(mode_of(&m.path("b")), 0o100644);
    assert_eq!(mode_of(&m.dir), 0o040755);
    assert_eq!(mode_of(&m.path("e/inner")), 0o040700);
}

/// A source tree with files and directories of several modes and mtimes, for rsync and cp.
fn tree_of_modes(root: &Path) -> Vec<(&'static str, u32)> {
    let entries: [(&str, u32); 9] = [
        ("bin", 0o040755),
        ("bin/run.sh", 0o100755),
        ("bin/tool", 0o100700),
        ("private", 0o040700),
        ("private/key", 0o100600),
        ("private/notes.txt", 0o100640),
        ("shared", 0o040751),
        ("shared/readme", 0o100444),
        ("plain.txt", 0o100644),
    ];
    for (i, (rel, mode)) in entries.iter().enumerate() {
        let p = root.join(rel);
        if mode & 0o040000 != 0 {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, format!("{rel} {}\n", "x".repeat(i * 100))).unwrap();
        }
    }
    // Files first (a directory made read-only first could not take them), then directories.
    for (i, (rel, mode)) in entries.iter().enumerate().rev() {
        let p = root.join(rel);
        let when = UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i as u64 * 86_400);
        File::open(&p).unwrap().set_modified(when).unwrap();
        chmod(&p, mode & 0o7777).unwrap();
    }
    entries.to_vec()
}

fn assert_modes(root: &Path, entries: &[(&str, u32)], what: &str) {
    for (rel, mode) in entries {
        assert_eq!(
            mode_of(&root.join(rel)),
            *mode,
            "{what}: mode of {rel} ({:o} expected)",
            mode
        );
    }
}

/// `rsync -a` into the mount works (its chmod of each file succeeds), and a second run, once
/// the files are uploaded, finds nothing to transfer (sizes, mtimes and modes all match), also
/// after a remount on the same cache.
#[test]
fn rsync_a_into_the_mount_and_again_sends_nothing() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "rsync");
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_dir(cache.path()));
    let src = tempfile::tempdir().unwrap();
    let entries = tree_of_modes(src.path());
    let rsync = |m: &Mounted, extra: &[&str]| {
        let mut cmd = std::process::Command::new("rsync");
        cmd.arg("-a")
            .args(extra)
            .arg(format!("{}/", src.path().display()))
            .arg(format!("{}/", m.path("dst").display()));
        let out = run(cmd, "rsync");
        assert!(
            out.status.success(),
            "rsync {extra:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = rsync(&m, &["-i"]);
    for (rel, _) in &entries {
        assert!(
            first
                .lines()
                .any(|l| l.ends_with(&format!(" {rel}")) || l.ends_with(&format!(" {rel}/"))),
            "the first run sends {rel}: {first}"
        );
    }
    assert_modes(&m.path("dst"), &entries, "after rsync -a");
    m.settle();
    revalidate(&m);
    let again = rsync(&m, &["-i"]);
    assert_eq!(again, "", "a second rsync -a finds nothing to transfer");
    assert_modes(&m.path("dst"), &entries, "after the second rsync");
    let m = remount(&dav, m, cache.path());
    let again = rsync(&m, &["-i"]);
    assert_eq!(
        again, "",
        "after a remount, rsync -a finds nothing to transfer"
    );
    assert_eq!(
        dav.get("dst/private/key"),
        fs::read(src.path().join("private/key")).unwrap()
    );
}

/// `cp -a` into the mount exits 0 and the copies have the source's modes (and mtimes).
#[test]
fn cp_a_keeps_modes() {
    let (dav, m) = setup("cp-a");
    let src = tempfile::tempdir().unwrap();
    let entries = tree_of_modes(src.path());
    let mut cmd = std::process::Command::new("cp");
    cmd.arg("-a").arg(src.path()).arg(m.path("copy"));
    let out = run(cmd, "cp -a");
    assert!(
        out.status.success(),
        "cp -a failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_modes(&m.path("copy"), &entries, "after cp -a");
    for (rel, _) in &entries {
        let (a, b) = (src.path().join(rel), m.path(&format!("copy/{rel}")));
        assert_eq!(
            fs::metadata(&a).unwrap().modified().unwrap(),
            fs::metadata(&b).unwrap().modified().unwrap(),
            "mtime of {rel}"
        );
    }
    m.settle();
    assert_eq!(
        dav.get("copy/bin/run.sh"),
        fs::read(src.path().join("bin/run.sh")).unwrap()
    );
}

/// No symlinks, hard links, FIFOs, sockets or device nodes: EPERM, nothing reaches the server.
#[test]
fn special_files_are_refused() {
    let (dav, m) = setup("special");
    fs::write(m.path("f"), b"x").unwrap();
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("f", m.path("link")), "symlink"),
        libc::EPERM
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("f"), m.path("hard")), "link"),
        libc::EPERM
    );
    for (what, mode) in [
        ("mkfifo", libc::S_IFIFO | 0o644),
        ("mknod chr", libc::S_IFCHR | 0o644),
        ("mknod blk", libc::S_IFBLK | 0o644),
        ("mknod sock", libc::S_IFSOCK | 0o644),
    ] {
        let p = cstr(&m.path("node"));
        // SAFETY: valid path.
        assert_eq!(
            check(unsafe { libc::mknod(p.as_ptr(), mode, 0) }, what),
            Err(libc::EPERM),
            "{what}"
        );
    }
    // mknod of a regular file is a create.
    let p = cstr(&m.path("regular"));
    // SAFETY: valid path.
    check(
        unsafe { libc::mknod(p.as_ptr(), libc::S_IFREG | 0o644, 0) },
        "mknod reg",
    )
    .unwrap();
    m.settle();
    assert_eq!(dav.names(""), vec!["f".to_string(), "regular".to_string()]);
    m.settle();
    assert_eq!(dav.get("regular"), b"");
}

/// rename(2) is a WebDAV MOVE: RENAME_NOREPLACE works, RENAME_EXCHANGE is EINVAL.
#[test]
fn rename_flags() {
    let (dav, m) = setup("renflags");
    fs::write(m.path("a"), b"a").unwrap();
    fs::write(m.path("b"), b"b").unwrap();
    let (a, b) = (cstr(&m.path("a")), cstr(&m.path("b")));
    let renameat2 = |flags: libc::c_uint| -> Result<(), i32> {
        // SAFETY: valid paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            )
        };
        check(r, "renameat2")
    };
    assert_eq!(renameat2(libc::RENAME_EXCHANGE), Err(libc::EINVAL));
    assert_eq!(renameat2(libc::RENAME_NOREPLACE), Err(libc::EEXIST));
    m.settle();
    assert_eq!(dav.get("a"), b"a");
    m.settle();
    assert_eq!(dav.get("b"), b"b");
    renameat2(0).unwrap();
    m.settle();
    assert!(dav.stat("a").is_none());
    m.settle();
    assert_eq!(dav.get("b"), b"a");
}

/// Names: any byte but `/` and NUL, as long as the name is UTF-8 and at most 255 bytes.
#[test]
fn name_rules() {
    let (dav, m) = setup("names");
    let ok = "ü".repeat(127) + "x"; // 255 bytes
    fs::write(m.path(&ok), b"ok").unwrap();
    m.settle();
    assert_eq!(dav.get(&ok), b"ok");
    let long = "x".repeat(256);
    assert_eq!(
        errno_of(fs::write(m.path(&long), b"x"), "create a 256-byte name"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(fs::create_dir(m.path(&long)), "mkdir a 256-byte name"),
        libc::ENAMETOOLONG
    );
    let bad = m.dir.join(os(b"latin1-\xe9.txt"));
    assert_eq!(
        errno_of(fs::write(&bad, b"x"), "create a non-UTF-8 name"),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(fs::create_dir(&bad), "mkdir a non-UTF-8 name"),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(fs::metadata(&bad), "stat a non-UTF-8 name"),
        libc::ENOENT
    );
    assert_eq!(statvfs(&m.dir).f_namemax, 255);
    m.settle();
    assert_eq!(dav.names(""), vec![ok]);
}

/// The only extended attribute is the read-only `user.cloudmount.state`.
#[test]
fn xattrs() {
    let (_dav, m) = setup("xattrs");
    fs::write(m.path("f"), b"x").unwrap();
    let p = cstr(&m.path("f"));
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, 1024) };
    assert!(n > 0, "listxattr: {}", std::io::Error::last_os_error());
    assert_eq!(&buf[..n as usize], b"user.cloudmount.state\0");
    let name = CString::new("user.cloudmount.state").unwrap();
    let other = CString::new("user.mine").unwrap();
    for n in [&name, &other] {
        // SAFETY: valid path, name and value.
        let r = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                b"v".as_ptr() as *const libc::c_void,
                1,
                0,
            )
        };
        assert_eq!(check(r, "setxattr"), Err(libc::ENOTSUP), "setxattr {n:?}");
        // SAFETY: valid path and name.
        let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
        assert_eq!(
            check(r, "removexattr"),
            Err(libc::ENOTSUP),
            "removexattr {n:?}"
        );
    }
    assert_eq!(getxattr(&m.path("f"), "user.mine"), Err(libc::ENODATA));
    assert_eq!(
        getxattr(&m.dir, "user.cloudmount.state").as_deref(),
        Ok(&b"online"[..]),
        "a directory's state"
    );
}

/// A changed file is uploaded whole at close and at fsync; while it is open and not yet
/// synced its state is `dirty`.
#[test]
fn writes_are_durable_at_fsync_and_close_and_reach_the_server_after() {
    let (dav, m) = setup("fsync");
    let mut f = File::create(m.path("f")).unwrap();
    f.write_all(b"first").unwrap();
    assert_eq!(
        getxattr(&m.path("f"), "user.cloudmount.state").as_deref(),
        Ok(&b"dirty"[..])
    );
    f.sync_all().unwrap();
    f.write_all(b", second").unwrap();
    f.sync_data().unwrap();
    // Durable locally and queued; a file open for writing is uploaded once closed.
    assert_eq!(m.status().queue.files, 1);
    f.write_all(b", third").unwrap();
    drop(f);
    m.settle();
    assert_eq!(dav.get("f"), b"first, second, third", "after close");
    // Right after close() a file is `dirty` (queued) or `uploading`, then `cached` once
    // uploaded; never `online` (a read would fetch it again).
    for i in 0..10 {
        let name = format!("g{i}");
        fs::write(m.path(&name), format!("file {i}")).unwrap();
        let state =
            String::from_utf8(getxattr(&m.path(&name), "user.cloudmount.state").unwrap()).unwrap();
        assert!(
            ["dirty", "uploading", "cached"].contains(&state.as_str()),
            "state of {name} right after it was written and closed: {state}"
        );
    }
    m.settle();
    for i in 0..10 {
        let name = format!("g{i}");
        assert_eq!(
            String::from_utf8(getxattr(&m.path(&name), "user.cloudmount.state").unwrap()).unwrap(),
            "cached",
            "state of {name} once uploaded"
        );
        m.settle();
        assert_eq!(dav.get(&name), format!("file {i}").as_bytes());
    }
}

/// An mtime set with utimensat/touch is shown (and survives revalidation of the listing), but
/// is not sent to the server: WebDAV servers do not let clients set getlastmodified.
#[test]
fn touch_mtime_is_kept_locally() {
    let (dav, m) = setup("mtime");
    fs::write(m.path("f"), b"x").unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(978_307_200); // 2001-01-01
    File::options()
        .write(true)
        .open(m.path("f"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().modified().unwrap(), when);
    // After the listing was revalidated (--dir-cache-time 1s).
    std::thread::sleep(Duration::from_millis(1500));
    let _ = fs::read_dir(&m.dir).unwrap().count();
    assert_eq!(
        fs::metadata(m.path("f")).unwrap().modified().unwrap(),
        when,
        "the local mtime survives revalidation"
    );
    m.settle();
    let server = dav.stat("f").unwrap().mtime.expect("server mtime");
    assert!(
        server > SystemTime::now() - Duration::from_secs(3600),
        "the server's mtime is its own ({server:?}), not the one set locally"
    );
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

/// utimensat(2) of `p` (following no symlink: there are none here).
fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> Result<(), i32> {
    let times = [atime, mtime];
    // SAFETY: a NUL-terminated path and an array of two timespecs, as utimensat wants.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(p).as_ptr(), times.as_ptr(), 0) };
    check(r, "utimensat")
}

/// (mtime, atime) of `p` as (seconds, nanoseconds), through stat(2).
fn times_of(p: &Path) -> ((i64, i64), (i64, i64)) {
    let md = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    ((md.mtime(), md.mtime_nsec()), (md.atime(), md.atime_nsec()))
}

/// Waits past --dir-cache-time (1 s) and lists the mount's root: the listing is revalidated.
fn revalidate(m: &Mounted) {
    std::thread::sleep(Duration::from_millis(1500));
    let _ = fs::read_dir(&m.dir).unwrap().count();
}

/// Unmounts and mounts the same folder again on the same cache directory.
fn remount(dav: &Dav, m: Mounted, cache: &Path) -> Mounted {
    m.unmount();
    Mounted::new(
        &dav.url,
        &MountOpts::for_server(&dav.server).cache_dir(cache),
    )
}

/// The mtime of each file as read back: now, after the listing was revalidated, after a
/// remount on the same cache, and after a revalidation there.
fn mtime_through_remount(
    dav: &Dav,
    m: Mounted,
    cache: &Path,
    names: &[&str],
) -> (Mounted, Vec<[(i64, i64); 4]>) {
    let mut seen: Vec<[(i64, i64); 4]> =
        names.iter().map(|n| [times_of(&m.path(n)).0; 4]).collect();
    revalidate(&m);
    for (n, s) in names.iter().zip(&mut seen) {
        s[1] = times_of(&m.path(n)).0;
    }
    let m = remount(dav, m, cache);
    for (n, s) in names.iter().zip(&mut seen) {
        s[2] = times_of(&m.path(n)).0;
    }
    revalidate(&m);
    for (n, s) in names.iter().zip(&mut seen) {
        s[3] = times_of(&m.path(n)).0;
    }
    (m, seen)
}

/// The server's last-modified time of `rel`, as (seconds, nanoseconds).
fn server_mtime(dav: &Dav, rel: &str) -> (i64, i64) {
    let t = dav
        .stat(rel)
        .unwrap_or_else(|| panic!("{rel} is not on the server"))
        .mtime
        .unwrap_or_else(|| panic!("the server gives no mtime for {rel}"));
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// Checks what [`mtime_through_remount`] saw: the mtime set, in all four: while mounted, after
/// a revalidation, after a remount on the same cache (kept in meta.db, exactly, also past 2262)
/// and after a revalidation there. The server keeps its own time (whole seconds).
fn assert_mtimes(dav: &Dav, names: &[&str], set: &[(i64, i64)], seen: &[[(i64, i64); 4]]) {
    let want: Vec<[(i64, i64); 4]> = names
        .iter()
        .zip(set)
        .map(|(n, s)| {
            let server = server_mtime(dav, n);
            assert_eq!(server.1, 0, "{n}: the server's mtimes are whole seconds");
            [*s; 4]
        })
        .collect();
    assert_eq!(
        seen, want,
        "mtimes of {names:?}: as set, after revalidation, after a remount, after revalidation"
    );
}

/// An mtime set with nanoseconds (files and directories) reads back exactly through stat, also
/// after the listing is revalidated. The atime reads as the mtime (noatime; an atime set is not
/// kept): what pjdfstest `utimensat::subsecond` stops at, before it checks the mtime.
#[test]
fn subsecond_mtimes_are_kept() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "subsec");
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_dir(cache.path()));
    fs::write(m.path("f"), b"x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    m.settle();
    let file_mtime = (200_000_000, 123_456_789);
    let dir_mtime = (1_700_000_000, 999_999_999);
    utimens(
        &m.path("f"),
        ts(100_000_000, 100_000_000),
        ts(file_mtime.0, file_mtime.1),
    )
    .unwrap();
    utimens(
        &m.path("d"),
        ts(100_000_000, 1),
        ts(dir_mtime.0, dir_mtime.1),
    )
    .unwrap();
    let ((f_m, f_a), (d_m, d_a)) = (times_of(&m.path("f")), times_of(&m.path("d")));
    assert_eq!(f_m, file_mtime, "file mtime");
    assert_eq!(f_a, f_m, "the atime reads as the mtime");
    assert_eq!(d_m, dir_mtime, "directory mtime");
    assert_eq!(d_a, d_m, "the atime reads as the mtime");
    let (_m, seen) = mtime_through_remount(&dav, m, cache.path(), &["f", "d"]);
    assert_mtimes(&dav, &["f", "d"], &[file_mtime, dir_mtime], &seen);
}

/// Times past 2038 (2^31 s, beyond a signed 32-bit time_t), past 2106 (2^32 s, beyond an
/// unsigned one) and past 2262 (2^34 s, beyond signed 64-bit nanoseconds) are shown exactly,
/// also after the listing is revalidated: nothing is clamped on a mount. What pjdfstest
/// `utimensat::y2038` stops at, before it checks the mtime, is its atime.
#[test]
fn mtimes_past_2038_2106_and_2262_are_kept() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "y2038");
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_dir(cache.path()));
    let cases: [(&str, (i64, i64)); 4] = [
        ("y2038", (1 << 31, 0)),
        ("y2106", (1 << 32, 5)),
        ("y2262", (9_223_372_036, 854_775_807)),
        ("y2514", (1 << 34, 999_999_999)),
    ];
    for (name, _) in &cases {
        fs::write(m.path(name), name.as_bytes()).unwrap();
    }
    m.settle();
    for (name, set) in &cases {
        utimens(&m.path(name), ts(set.0, set.1), ts(set.0, set.1))
            .unwrap_or_else(|e| panic!("utimensat {name}: errno {e}"));
    }
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let set: Vec<(i64, i64)> = cases.iter().map(|c| c.1).collect();
    let (_m, seen) = mtime_through_remount(&dav, m, cache.path(), &names);
    assert_mtimes(&dav, &names, &set, &seen);
}

/// utimensat with UTIME_OMIT for the mtime succeeds and leaves the mtime exactly as it was (the
/// atime given is not kept: it reads as the mtime); UTIME_OMIT for the atime sets the mtime
/// alone. What pjdfstest `utimensat::utime_omit` stops at, before it checks the mtime, is its
/// atime.
#[test]
fn utime_omit_leaves_the_mtime_alone() {
    let (_dav, m) = setup("omit");
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    m.settle();
    utimens(&f, ts(0, libc::UTIME_OMIT), ts(1_800_000_000, 42)).unwrap();
    assert_eq!(times_of(&f), ((1_800_000_000, 42), (1_800_000_000, 42)));
    utimens(&f, ts(1_900_000_000, 0), ts(0, libc::UTIME_OMIT)).unwrap();
    assert_eq!(
        times_of(&f).0,
        (1_800_000_000, 42),
        "the mtime after an atime-only utimensat"
    );
    revalidate(&m);
    assert_eq!(
        times_of(&f),
        ((1_800_000_000, 42), (1_800_000_000, 42)),
        "after revalidation: the mtime kept, the atime reads as the mtime"
    );
    // Both omitted: nothing changes.
    utimens(&f, ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)).unwrap();
    assert_eq!(times_of(&f).0, (1_800_000_000, 42));
}

/// After a directory is renamed into another one, its `..` is the new parent: stat of `d/..`
/// is the new parent (not the old one), at once and after the listings are revalidated; a
/// relative path through `..` reaches the new parent's files. What pjdfstest
/// `rename::updates_link_parent` checks after the link counts it stops at.
#[test]
fn dotdot_of_a_renamed_directory_is_its_new_parent() {
    let (dav, m) = setup("dotdot");
    for d in ["a", "b", "a/d"] {
        fs::create_dir(m.path(d)).unwrap();
    }
    fs::write(m.path("b/only in b"), b"b").unwrap();
    fs::rename(m.path("a/d"), m.path("b/d")).unwrap();
    let ino = |rel: &str| fs::metadata(m.path(rel)).unwrap().ino();
    let check_dotdot = |when: &str| {
        assert_eq!(ino("b/d/.."), ino("b"), "{when}: stat of b/d/.. is b");
        assert_ne!(ino("b/d/.."), ino("a"), "{when}: stat of b/d/.. is not a");
        assert_eq!(
            fs::read(m.path("b/d/../only in b")).unwrap(),
            b"b",
            "{when}: a path through b/d/.. reaches b's files"
        );
        let names: Vec<String> = fs::read_dir(m.path("b/d/.."))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.contains(&"d".to_string()) && names.contains(&"only in b".to_string()),
            "{when}: listing b/d/.. gives {names:?}"
        );
    };
    check_dotdot("after the rename");
    // A directory renamed to the top, and one moved down again.
    fs::rename(m.path("b/d"), m.path("d")).unwrap();
    assert_eq!(ino("d/.."), ino(""), "stat of d/.. after a move to the top");
    fs::rename(m.path("d"), m.path("b/d")).unwrap();
    m.settle();
    revalidate(&m);
    let _ = fs::read_dir(m.path("b")).unwrap().count();
    check_dotdot("after revalidation");
    assert_eq!(dav.names("b"), ["d", "only in b"]);
    assert!(dav.names("a").is_empty());
}

/// An open file reads the version it opened: if the server's copy changes, a block not cached
/// yet is EIO (never the new version's bytes); a new open after the listing TTL reads the new
/// version.
#[test]
fn an_open_file_never_mixes_versions() {
    let (dav, m) = setup("versions");
    let old = pattern(3 * MIB, 1);
    let new = pattern(3 * MIB + 100, 2);
    dav.put("f", &old);
    let f = File::open(m.path("f")).unwrap();
    let mut buf = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, old[..4096]);
    dav.put("f", &new);
    std::thread::sleep(Duration::from_millis(1500));
    // The third block was never read: the old version's bytes or EIO, never the new ones.
    match f.read_exact_at(&mut buf, (2 * MIB + 10) as u64) {
        Ok(()) => assert_eq!(
            buf,
            old[2 * MIB + 10..2 * MIB + 10 + 4096],
            "an open file read bytes of another version"
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    drop(f);
    eventually(
        Duration::from_secs(20),
        "a new open reads the new version",
        || (fs::read(m.path("f")).ok()? == new).then_some(()),
    );
}

/// fallocate is not supported (EOPNOTSUPP); the file is unchanged.
#[test]
fn fallocate_is_not_supported() {
    let (dav, m) = setup("fallocate");
    fs::write(m.path("f"), b"abc").unwrap();
    let f = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(check(r, "fallocate"), Err(libc::EOPNOTSUPP));
    drop(f);
    m.settle();
    assert_eq!(dav.get("f"), b"abc");
}

/// An unlinked file that is still open stays usable through its descriptor, and closing it
/// does not bring it back on the server.
#[test]
fn an_unlinked_open_file_stays_usable() {
    let (dav, m) = setup("unlinked");
    dav.put("f", b"on the server");
    use std::io::{Read, Seek, SeekFrom};
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    fs::remove_file(m.path("f")).unwrap();
    m.settle();
    assert!(dav.stat("f").is_none(), "unlink reached the server");
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b", and more").unwrap();
    let mut back = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "on the server, and more");
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync of an unlinked file: {e}"));
    drop(f);
    m.settle();
    assert!(
        dav.stat("f").is_none(),
        "closing an unlinked file re-created it"
    );
    m.settle();
    assert_eq!(dav.names(""), Vec::<String>::new());
    assert_eq!(fs::read_dir(&m.dir).unwrap().count(), 0);
}

/// A file opened for reading and deleted through the mount before it was read: the delete
/// returns at once (the server's copy is moved to a hidden name, not downloaded first), the
/// program still reads all of it, the name is gone from the server, and the hidden copy goes
/// when the last reader closes.
#[test]
fn a_file_deleted_while_open_for_reading_is_read_whole() {
    let (dav, m) = setup("unlinked-unread");
    let big = pattern(3 * MIB + 123, 4);
    dav.put("big", &big);
    dav.put("small", b"a few bytes");
    dav.put("doc", &big[..2 * MIB]);
    use std::os::unix::fs::FileExt;
    let (fb, fs_) = (
        File::open(m.path("big")).unwrap(),
        File::open(m.path("small")).unwrap(),
    );
    // A little of the big one is read first (in the cache), the small one not at all.
    let mut head = vec![0u8; 1000];
    fb.read_exact_at(&mut head, 0).unwrap();
    fs::remove_file(m.path("big")).unwrap();
    fs::remove_file(m.path("small")).unwrap();
    assert!(dav.stat("big").is_none() && dav.stat("small").is_none());
    let hidden = || -> Vec<String> {
        dav.names("")
            .into_iter()
            .filter(|n| n.starts_with(".cloudmount-upload-"))
            .collect()
    };
    // Kept for the readers under hidden names (nothing was downloaded before the delete).
    assert_eq!(hidden().len(), 2, "{:?}", dav.names(""));
    let mut got = vec![0u8; big.len()];
    fb.read_exact_at(&mut got, 0).unwrap();
    assert!(got == big, "the deleted file read back differently");
    let mut small = String::new();
    (&fs_).read_to_string(&mut small).unwrap();
    assert_eq!(small, "a few bytes");
    drop((fb, fs_));
    eventually(
        Duration::from_secs(10),
        "the hidden copies go with their readers",
        || hidden().is_empty().then_some(()),
    );
    // The same for a file replaced by a rename (an editor saving): its reader keeps the old.
    let old = File::open(m.path("doc")).unwrap();
    fs::write(m.path("doc.new"), b"the new version").unwrap();
    fs::rename(m.path("doc.new"), m.path("doc")).unwrap();
    let mut got = vec![0u8; 2 * MIB];
    old.read_exact_at(&mut got, 0).unwrap();
    assert!(
        got == big[..2 * MIB],
        "the replaced file read back differently"
    );
    assert_eq!(fs::read(m.path("doc")).unwrap(), b"the new version");
    assert_eq!(dav.get("doc"), b"the new version");
    drop(old);
    eventually(
        Duration::from_secs(10),
        "the replaced copy goes with its reader",
        || hidden().is_empty().then_some(()),
    );
}

/// The daemon killed while a deleted file is still read: its hidden copy on the server is
/// removed by the next mount of the cache, the first time it lists the folder.
#[test]
fn a_file_set_aside_for_its_readers_is_swept_after_a_crash() {
    use std::os::unix::fs::FileExt;
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "aside-crash");
    dav.put("big", &pattern(2 * MIB, 8));
    dav.put("other", b"stays");
    let cache = tempfile::tempdir().unwrap();
    let opts = MountOpts::for_server(&s).cache_dir(cache.path());
    let mut m = Mounted::new(&dav.url, &opts);
    let f = File::open(m.path("big")).unwrap();
    let mut head = vec![0u8; 10];
    f.read_exact_at(&mut head, 0).unwrap();
    fs::remove_file(m.path("big")).unwrap();
    let hidden = || -> usize {
        dav.names("")
            .iter()
            .filter(|n| n.starts_with(".cloudmount-upload-"))
            .count()
    };
    assert_eq!(hidden(), 1, "{:?}", dav.names(""));
    drop(f);
    m.kill9();
    let m = Mounted::new(&dav.url, &opts);
    eventually(Duration::from_secs(15), "the hidden copy is swept", || {
        let _ = fs::read_dir(m.path("")).map(|d| d.count());
        std::thread::sleep(Duration::from_millis(200));
        (hidden() == 0).then_some(())
    });
    assert_eq!(dav.names(""), vec!["other".to_string()]);
    m.unmount();
}

/// Files in the mount's staging directory (local copies of files written through it).
fn staging_files(m: &Mounted) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&m.cache_dir.join("staging"), &mut out);
    out
}

/// A file written through the mount and deleted before its upload while a program still reads
/// it: the reader keeps reading what was written, and the local copy goes when the reader
/// closes (not at the next start of the daemon).
#[test]
fn the_copy_of_a_deleted_file_goes_when_its_last_reader_closes() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "unlinked-reader");
    // Uploads wait an hour: the file is still a local copy when it is deleted.
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).write_back_delay("1h"));
    fs::write(m.path("f"), b"written here").unwrap();
    assert_eq!(staging_files(&m).len(), 1, "the written file is staged");
    let mut r = File::open(m.path("f")).unwrap();
    fs::remove_file(m.path("f")).unwrap();
    let mut back = String::new();
    r.read_to_string(&mut back).unwrap();
    assert_eq!(back, "written here");
    assert_eq!(staging_files(&m).len(), 1, "kept while it is read");
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !staging_files(&m).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deleted file's copy is still there after its reader closed: {:?}",
            staging_files(&m)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dav.stat("f").is_none(), "a deleted file was uploaded");
}

/// Bytes the daemon has read with read-like system calls (its cache files, /dev/fuse).
fn daemon_rchar(m: &Mounted) -> u64 {
    let io = fs::read_to_string(format!("/proc/{}/io", m.daemon_pid())).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

/// Passthrough needs the daemon to have CAP_SYS_ADMIN: the README test command runs as root.
fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs the tests to run as root (passthrough)"
    );
}

/// On a read-only mount, a large file wholly cached is opened by passthrough: the kernel reads
/// the cache file itself, and the daemon reads nothing, even with the mount's page cache of
/// the file dropped. Shared mmap works on it, and on a file not yet cached.
#[test]
fn cached_large_files_are_read_by_the_kernel_from_the_cache_file() {
    require_root("this test");
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "passthrough");
    let data = pattern(4 * MIB + 123, 3);
    dav.put("big", &data);
    dav.put("cold", &data);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).arg("--read-only"));
    let mut got = vec![0u8; data.len()];
    File::open(m.path("big"))
        .unwrap()
        .read_exact_at(&mut got, 0)
        .unwrap();
    assert!(got == data, "first read");
    let before = daemon_rchar(&m);
    let f = File::open(m.path("big")).unwrap();
    // Drop the mount's own pages of the file: through the page cache the reads below would
    // have to come to the daemon.
    // SAFETY: a valid descriptor; fadvise only drops clean cached pages.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "fadvise");
    let mut got = vec![0u8; data.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data, "passthrough read");
    let daemon_read = daemon_rchar(&m) - before;
    assert!(
        daemon_read < MIB as u64,
        "a cached file should be read by the kernel from the cache file: the daemon read {daemon_read} bytes"
    );
    assert!(
        mapped(&m.path("big"), data.len()) == data,
        "passthrough mmap"
    );
    assert!(
        mapped(&m.path("cold"), data.len()) == data,
        "page-cache mmap"
    );
}

/// The first `len` bytes of `path` through a shared read-only mapping.
fn mapped(path: &Path, len: usize) -> Vec<u8> {
    use std::os::unix::io::AsRawFd;
    let f = File::open(path).unwrap();
    // SAFETY: a fresh mapping of a valid descriptor, read within `len` and unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let v = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        v
    }
}

/// On a writable mount every open uses the page cache: a reader sees writes made beside it at
/// once, and a shared writable mapping made while a reader has the (wholly cached) file open
/// reaches the server. (With passthrough there, that mapping would have written into the cache
/// file and been lost: see src/vfs/io_mode.rs.)
#[test]
fn a_shared_writable_mapping_beside_a_reader_reaches_the_server() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let (dav, m) = setup("mapwrite");
    let data = pattern(3 * MIB, 5);
    dav.put("f", &data);
    assert_eq!(fs::read(m.path("f")).unwrap(), data, "now wholly cached");
    let reader = File::open(m.path("f")).unwrap();
    let mut buf = [0u8; 4];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..4]);
    let w = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap_or_else(|e| panic!("open for writing beside a reader: {e}"));
    // SAFETY: a fresh shared mapping of a valid descriptor, written within its 4096 bytes and
    // unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            w.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(b"ABCD".as_ptr(), p as *mut u8, 4);
        assert_eq!(libc::msync(p, 4096, libc::MS_SYNC), 0);
        libc::munmap(p, 4096);
    }
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"ABCD", "the reader sees the mapped write");
    w.sync_all().unwrap();
    drop((w, reader));
    let mut want = data.clone();
    want[..4].copy_from_slice(b"ABCD");
    let got = fs::read(m.path("f")).unwrap();
    assert!(
        got == want,
        "a new open reads the mapped write: starts {:?}",
        &got[..4]
    );
    m.settle();
    let server = dav.get("f");
    assert!(
        server == want,
        "the mapped write reached the server: it starts {:?}",
        &server[..4]
    );
}

/// A program running from the mount is "text busy": opening it for writing, or with O_TRUNC
/// even read-only, is ETXTBSY, and the program runs on unharmed. (With FUSE_ATOMIC_O_TRUNC the
/// kernel would empty its copy of the file at a read-only O_TRUNC open before it says ETXTBSY:
/// the daemon refuses that open itself: before, the program crashed in a few runs of these.)
#[test]
fn a_running_program_is_text_busy() {
    let (_dav, m) = setup("etxtbsy");
    for i in 0..12 {
        let p = m.path(&format!("sleep{i}"));
        std::io::copy(
            &mut File::open("/usr/bin/sleep").unwrap(),
            &mut File::create(&p).unwrap(),
        )
        .unwrap();
        chmod(&p, 0o755).unwrap();
        if i % 2 == 1 {
            m.settle();
        }
        let mut child = std::process::Command::new(&p).arg("10").spawn().unwrap();
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            let c = cstr(&p);
            // SAFETY: a valid path; a descriptor opened here is closed here.
            let fd = unsafe { libc::open(c.as_ptr(), flags) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            assert_eq!(
                check(fd.min(0), "open"),
                Err(libc::ETXTBSY),
                "open {flags:#o} of the running sleep{i}"
            );
        }
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "sleep{i} runs on after the refused opens"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            fs::metadata("/usr/bin/sleep").unwrap().len()
        );
    }
}
