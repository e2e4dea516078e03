use std::os::unix::fs::PermissionsExt;

use super::*;

struct Setup {
    _dir: tempfile::TempDir,
    /// Canonical temp dir.
    root: PathBuf,
    trash: Trash,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let trash = Trash::at(root.join("home/.local/share/Trash"));
    Setup {
        _dir: dir,
        root,
        trash,
    }
}

fn info_of(trash: &Path, name: &str) -> String {
    fs::read_to_string(trash.join("info").join(format!("{name}.trashinfo"))).unwrap()
}

fn check_date(line: &str) {
    let d = line.strip_prefix("DeletionDate=").unwrap();
    let b = d.as_bytes();
    assert_eq!(d.len(), 19, "{d}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{d}"),
            10 => assert_eq!(*c, b'T', "{d}"),
            13 | 16 => assert_eq!(*c, b':', "{d}"),
            _ => assert!(c.is_ascii_digit(), "{d}"),
        }
    }
    assert_eq!(&d[..4], &deletion_date().unwrap()[..4], "this year");
}

#[test]
fn a_file_goes_to_the_home_trash_with_its_info() {
    let s = setup();
    fs::create_dir(s.root.join("docs")).unwrap();
    let f = s.root.join("docs/notes.txt");
    fs::write(&f, b"keep me").unwrap();

    let at = s.trash.put(&f).unwrap();
    assert_eq!(at, s.trash.home().join("files/notes.txt"));
    assert!(!f.exists());
    assert_eq!(fs::read(&at).unwrap(), b"keep me");

    let info = info_of(s.trash.home(), "notes.txt");
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines.len(), 3, "{info}");
    assert_eq!(lines[0], "[Trash Info]");
    assert_eq!(lines[1], format!("Path={}", f.display()));
    check_date(lines[2]);
    let mode = fs::metadata(s.trash.home()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_directory_goes_whole() {
    let s = setup();
    let d = s.root.join("project");
    fs::create_dir_all(d.join("src")).unwrap();
    fs::write(d.join("src/main.rs"), b"fn main() {}").unwrap();
    let at = s.trash.put(&d).unwrap();
    assert_eq!(at, s.trash.home().join("files/project"));
    assert!(!d.exists());
    assert_eq!(fs::read(at.join("src/main.rs")).unwrap(), b"fn main() {}");
    assert!(info_of(s.trash.home(), "project").contains(&format!("Path={}\n", d.display())));
}

#[test]
fn a_relative_path_is_recorded_absolute() {
    let s = setup();
    fs::create_dir(s.root.join("w")).unwrap();
    fs::write(s.root.join("w/rel.txt"), b"x").unwrap();
    std::env::set_current_dir(s.root.join("w")).unwrap();
    let at = s.trash.put(Path::new("rel.txt")).unwrap();
    assert_eq!(at, s.trash.home().join("files/rel.txt"));
    let want = format!("Path={}\n", s.root.join("w/rel.txt").display());
    assert!(info_of(s.trash.home(), "rel.txt").contains(&want));
}

#[test]
fn names_that_collide_get_a_number_before_the_extension() {
    let s = setup();
    let mut got = Vec::new();
    for d in ["a", "b", "c"] {
        fs::create_dir(s.root.join(d)).unwrap();
        let f = s.root.join(d).join("report.pdf");
        fs::write(&f, d).unwrap();
        got.push(s.trash.put(&f).unwrap());
    }
    let files = s.trash.home().join("files");
    assert_eq!(
        got,
        [
            files.join("report.pdf"),
            files.join("report 2.pdf"),
            files.join("report 3.pdf")
        ]
    );
    assert_eq!(fs::read(&got[2]).unwrap(), b"c");
    let want = format!("Path={}\n", s.root.join("b/report.pdf").display());
    assert!(info_of(s.trash.home(), "report 2.pdf").contains(&want));

    // A stray file without its info file keeps its name.
    fs::write(files.join("x"), b"stray").unwrap();
    fs::write(s.root.join("x"), b"mine").unwrap();
    let at = s.trash.put(&s.root.join("x")).unwrap();
    assert_eq!(at, files.join("x 2"));
    assert_eq!(fs::read(files.join("x")).unwrap(), b"stray");
    assert!(!s.trash.home().join("info/x.trashinfo").exists());
}

#[test]
fn spaces_and_non_ascii_are_percent_encoded() {
    let s = setup();
    let name = "été 100% #1 (copy).txt";
    let f = s.root.join(name);
    fs::write(&f, b"x").unwrap();
    s.trash.put(&f).unwrap();
    let info = info_of(s.trash.home(), name);
    let want = format!(
        "Path={}/%C3%A9t%C3%A9%20100%25%20%231%20(copy).txt\n",
        s.root.display()
    );
    assert!(info.contains(&want), "{info}");

    // Not UTF-8 at all.
    let raw = OsStr::from_bytes(b"bad\xffname");
    fs::write(s.root.join(raw), b"x").unwrap();
    let at = s.trash.put(&s.root.join(raw)).unwrap();
    assert_eq!(at.file_name().unwrap(), raw);
    let info = fs::read_to_string(s.trash.home().join("info/bad\u{fffd}name.trashinfo"));
    assert!(info.is_err(), "the info file keeps the raw name");
    let mut info_name = raw.to_os_string();
    info_name.push(".trashinfo");
    let info = fs::read_to_string(s.trash.home().join("info").join(info_name)).unwrap();
    assert!(info.contains("/bad%FFname\n"), "{info}");
}

#[test]
fn a_failed_rename_leaves_no_info_file() {
    let s = setup();
    // A directory cannot be moved into itself.
    let d = s.root.join("home");
    fs::create_dir_all(&d).unwrap();
    let err = s.trash.put(&d).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert!(d.exists());
    let left: Vec<_> = fs::read_dir(s.trash.home().join("info")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // Nothing there: an error, no info file either.
    assert_eq!(
        s.trash.put(&s.root.join("none")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!s.trash.home().join("info/none.trashinfo").exists());
}

#[test]
fn numbered_names() {
    let n = |s: &str, k| numbered(OsStr::new(s), k).into_string().unwrap();
    assert_eq!(n("a.txt", 1), "a.txt");
    assert_eq!(n("a.txt", 2), "a 2.txt");
    assert_eq!(n("a.tar.gz", 3), "a.tar 3.gz");
    assert_eq!(n(".bashrc", 2), ".bashrc 2");
    assert_eq!(n("dir", 10), "dir 10");
}

#[test]
fn topdir_trash_prefers_a_sticky_shared_trash() {
    let uid = uid();
    // No .Trash: .Trash-$uid, created 0700.
    let s = setup();
    let t = topdir_trash(&s.root, uid).unwrap();
    assert_eq!(t, s.root.join(format!(".Trash-{uid}")));
    assert!(t.join("files").is_dir() && t.join("info").is_dir());
    assert_eq!(
        fs::metadata(&t).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // A sticky .Trash: .Trash/$uid.
    let s = setup();
    fs::create_dir(s.root.join(".Trash")).unwrap();
    fs::set_permissions(s.root.join(".Trash"), fs::Permissions::from_mode(0o1777)).unwrap();
    let t = topdir_trash(&s.root, uid).unwrap();
    assert_eq!(t, s.root.join(format!(".Trash/{uid}")));
    assert!(t.join("info").is_dir());

    // Not sticky: not used.
    let s = setup();
    fs::create_dir(s.root.join(".Trash")).unwrap();
    fs::set_permissions(s.root.join(".Trash"), fs::Permissions::from_mode(0o777)).unwrap();
    let t = topdir_trash(&s.root, uid).unwrap();
    assert_eq!(t, s.root.join(format!(".Trash-{uid}")));
    assert!(!s.root.join(format!(".Trash/{uid}")).exists());

    // A symlink to a sticky directory: not used.
    let s = setup();
    fs::create_dir(s.root.join("elsewhere")).unwrap();
    fs::set_permissions(s.root.join("elsewhere"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("elsewhere", s.root.join(".Trash")).unwrap();
    let t = topdir_trash(&s.root, uid).unwrap();
    assert_eq!(t, s.root.join(format!(".Trash-{uid}")));
}

#[test]
fn a_topdir_trash_records_the_path_relative_to_the_mount_point() {
    let s = setup();
    let top = s.root.join("mnt");
    fs::create_dir_all(top.join("sub")).unwrap();
    fs::write(top.join("sub/f 1.txt"), b"x").unwrap();
    let t = topdir_trash(&top, uid()).unwrap();
    let at = put_in(&t, &top.join("sub/f 1.txt"), OsStr::new("sub/f 1.txt")).unwrap();
    assert_eq!(at, t.join("files/f 1.txt"));
    let info = info_of(&t, "f 1.txt");
    assert!(info.contains("\nPath=sub/f%201.txt\n"), "{info}");
}

#[test]
fn the_mount_point_is_the_highest_ancestor_on_the_same_device() {
    let s = setup();
    let f = s.root.join("f");
    fs::write(&f, b"x").unwrap();
    let dev = fs::metadata(&f).unwrap().dev();
    let top = mount_point(&f, dev).unwrap();
    assert!(f.starts_with(&top));
    assert_eq!(fs::metadata(&top).unwrap().dev(), dev);
    if let Some(up) = top.parent() {
        assert_ne!(fs::metadata(up).unwrap().dev(), dev);
    }
}
