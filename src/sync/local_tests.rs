use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use super::*;
use crate::sync::state::RemoteMeta;

fn none() -> Excludes {
    Excludes::from_patterns(&[])
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn base_of(local: LocalMeta) -> Base {
    Base {
        local,
        remote: RemoteMeta {
            kind: Kind::File,
            size: 0,
            etag: None,
            mtime: None,
        },
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[test]
fn lists_files_and_directories_by_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "top.txt", b"hello");
    write(root, "a/b/c.txt", b"0123456789");
    fs::create_dir(root.join("empty")).unwrap();

    let s = scan(root, &none(), &BTreeMap::new()).unwrap();
    let keys: Vec<&str> = s.entries.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["a", "a/b", "a/b/c.txt", "empty", "top.txt"]);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.excluded, 0);

    let c = &s.entries["a/b/c.txt"];
    let m = fs::symlink_metadata(root.join("a/b/c.txt")).unwrap();
    assert_eq!(c.kind, Kind::File);
    assert_eq!(c.size, 10);
    assert_eq!(c.inode, m.ino());
    assert_eq!(c.mtime_ns, m.mtime() * 1_000_000_000 + m.mtime_nsec());
    assert_eq!(c.hash, None, "no base: not hashed");
    let a = &s.entries["a"];
    assert_eq!((a.kind, a.size, a.hash), (Kind::Dir, 0, None));
}

#[test]
fn a_missing_root_is_not_found_and_a_file_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = scan(&dir.path().join("gone"), &none(), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    write(dir.path(), "f", b"x");
    let err = scan(&dir.path().join("f"), &none(), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotADirectory);
}

#[test]
fn symlinks_special_files_and_bad_names_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "real/inside.txt", b"x");
    std::os::unix::fs::symlink(root.join("real"), root.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("real/dangling")).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    fs::write(root.join(OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();

    let s = scan(root, &none(), &BTreeMap::new()).unwrap();
    drop(sock);
    let keys: Vec<&str> = s.entries.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["real", "real/inside.txt"],
        "symlinks are not followed"
    );
    let problems: BTreeMap<&str, &str> = s
        .problems
        .iter()
        .map(|(p, r)| (p.as_str(), r.as_str()))
        .collect();
    assert_eq!(problems["link-to-dir"], "symbolic link: not synced");
    assert_eq!(problems["real/dangling"], "symbolic link: not synced");
    assert!(problems["pipe"].contains("FIFO"));
    assert!(problems["sock"].contains("socket"));
    assert!(problems["bad\u{fffd}name"].contains("UTF-8"));
    assert_eq!(problems.len(), 5);
}

#[test]
fn excluded_names_are_counted_and_excluded_directories_not_entered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "keep.txt", b"x");
    write(root, ".cloudmount-tmp-123", b"partial");
    write(root, ".cloudmount-sync", b"marker");
    write(root, "dl/movie.part", b"x");
    write(root, "node_modules/a/b.js", b"x");
    std::os::unix::fs::symlink("x", root.join("node_modules/link")).unwrap();
    let mut pats = crate::sync::exclude::DEFAULT_EXCLUDES.to_vec();
    pats.push("node_modules/");
    let s = scan(root, &Excludes::from_patterns(&pats), &BTreeMap::new()).unwrap();
    let keys: Vec<&str> = s.entries.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["dl", "keep.txt"]);
    assert_eq!(s.excluded, 3);
    assert_eq!(s.stale_removed, 1);
    assert!(
        !root.join(".cloudmount-tmp-123").exists(),
        "a download cut short is removed by the next scan"
    );
    assert!(
        s.problems.is_empty(),
        "nothing under an excluded directory is looked at: {:?}",
        s.problems
    );
}

#[test]
fn base_hash_is_carried_recomputed_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in ["same", "touched", "grown", "replaced", "was-dir", "new"] {
        write(root, f, b"content!");
    }
    let first = scan(root, &none(), &BTreeMap::new()).unwrap().entries;
    let fake = [7u8; 32];
    let mut base = BTreeMap::new();
    for f in ["same", "touched", "grown", "replaced"] {
        let mut l = first[f].clone();
        l.hash = Some(fake);
        base.insert(f.to_string(), base_of(l));
    }
    let mut d = first["was-dir"].clone();
    d.kind = Kind::Dir;
    base.insert("was-dir".to_string(), base_of(d));

    // A touch: same size, another mtime.
    set_mtime(
        &root.join("touched"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    write(root, "grown", b"content!!");
    // Same size and mtime, another inode (replaced by a rename).
    let old = fs::symlink_metadata(root.join("replaced")).unwrap();
    write(root, "replaced.new", b"CONTENT!");
    set_mtime(&root.join("replaced.new"), old.modified().unwrap());
    fs::rename(root.join("replaced.new"), root.join("replaced")).unwrap();

    let s = scan(root, &none(), &base).unwrap().entries;
    assert_eq!(s["same"].hash, Some(fake), "unchanged: the base's hash");
    assert_eq!(s["touched"].hash, Some(sha(b"content!")), "touched: hashed");
    assert_eq!(s["grown"].hash, None);
    assert_eq!(
        s["replaced"].hash,
        Some(sha(b"CONTENT!")),
        "replaced (a new inode): hashed"
    );
    assert!(s["replaced"].changed_since(&base["replaced"].local));
    assert_ne!(s["replaced"].inode, first["replaced"].inode);
    assert_eq!(s["was-dir"].hash, None);
    assert_eq!(s["new"].hash, None);

    // With the true hash in the base, the touch is not a change.
    let mut b = first["touched"].clone();
    b.hash = Some(sha(b"content!"));
    assert!(!s["touched"].changed_since(&b));
    b.hash = Some(fake);
    assert!(s["touched"].changed_since(&b));
}

#[test]
fn an_unreadable_directory_is_a_problem_and_the_rest_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "ok/a.txt", b"x");
    write(root, "locked/secret.txt", b"x");
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("ok"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    // As root, scan as another user (the filesystem uid of this thread only), so the mode
    // bits apply.
    // SAFETY: geteuid and setfsuid have no memory preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        unsafe { libc::setfsuid(65534) };
    }
    let s = scan(root, &none(), &BTreeMap::new());
    if as_root {
        unsafe { libc::setfsuid(0) };
    }
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    let s = s.unwrap();

    let keys: Vec<&str> = s.entries.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, ["locked", "ok", "ok/a.txt"]);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert_eq!(s.problems[0].0, "locked");
    assert!(s.problems[0].1.contains("cannot list"), "{:?}", s.problems);
}

#[test]
fn hash_file_streams_the_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "abc", b"abc");
    let h = hash_file(&dir.path().join("abc")).unwrap();
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Several buffers' worth, not a multiple of the buffer.
    let big: Vec<u8> = (0..700_001u32).map(|i| (i * 31 % 251) as u8).collect();
    write(dir.path(), "big", &big);
    assert_eq!(hash_file(&dir.path().join("big")).unwrap(), sha(&big));
    assert_eq!(
        hash_file(&dir.path().join("none")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn stat_one_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "d/f.txt", b"four");
    std::os::unix::fs::symlink("f.txt", root.join("d/l")).unwrap();
    let f = stat(root, "d/f.txt").unwrap().unwrap();
    assert_eq!((f.kind, f.size, f.hash), (Kind::File, 4, None));
    assert_eq!(f.inode, fs::metadata(root.join("d/f.txt")).unwrap().ino());
    assert_eq!(stat(root, "d").unwrap().unwrap().kind, Kind::Dir);
    assert_eq!(stat(root, "").unwrap().unwrap().kind, Kind::Dir);
    assert_eq!(stat(root, "nope").unwrap(), None);
    assert_eq!(stat(root, "d/f.txt/under").unwrap(), None);
    let e = stat(root, "d/l").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("symbolic link"));
}
