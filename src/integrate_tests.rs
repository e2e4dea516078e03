use super::*;

fn places(root: &Path) -> Places {
    Places {
        data_home: root.join("data"),
        config_home: root.join("config"),
        home: root.join("home"),
    }
}

fn opts(mountpoints: &[&str]) -> Options {
    Options {
        binary: PathBuf::from("/opt/cloud mount/bin/cloudmount"),
        mountpoints: mountpoints.iter().map(PathBuf::from).collect(),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn installs_the_extensions_with_their_paths_filled_in() {
    let t = tempfile::tempdir().unwrap();
    let pl = places(t.path());
    let changes = install(&pl, &opts(&[])).unwrap();
    let d = t.path().join("data");
    let core = d.join("cloudmount/file-manager/cloudmount_fm.py");
    for f in [
        &core,
        &d.join("nautilus-python/extensions/cloudmount-nautilus.py"),
        &d.join("nemo-python/extensions/cloudmount-nemo.py"),
        &d.join("caja-python/extensions/cloudmount-caja.py"),
        &d.join("kio/servicemenus/cloudmount.desktop"),
        &d.join("kio/servicemenus/cloudmount-sync-folder.desktop"),
    ] {
        assert!(changes.contains(&Change::Wrote(f.clone())), "{changes:?}");
        let text = read(f);
        assert!(text.lines().next().unwrap().contains(MARKER), "{text}");
        for placeholder in ["@CLOUDMOUNT_BIN@", "@CORE_DIR@", "@CORE_EXEC@"] {
            assert!(
                !text.contains(placeholder),
                "{placeholder} left in {}",
                f.display()
            );
        }
    }
    assert!(read(&core).contains("CLOUDMOUNT_BIN = \"/opt/cloud mount/bin/cloudmount\""));
    let nautilus = read(&d.join("nautilus-python/extensions/cloudmount-nautilus.py"));
    let core_dir = d.join("cloudmount/file-manager");
    assert!(
        nautilus.contains(&format!("sys.path.insert(0, \"{}\")", core_dir.display())),
        "{nautilus}"
    );
    let menu = d.join("kio/servicemenus/cloudmount.desktop");
    assert_eq!(
        std::fs::metadata(&menu).unwrap().permissions().mode() & 0o777,
        0o755,
        "KIO runs only executable service menus"
    );
    assert!(read(&menu).contains(&format!("\"{}\" pin %F", core.display())));
}

#[test]
fn bookmarks_each_mountpoint_once_and_removes_only_its_own() {
    let t = tempfile::tempdir().unwrap();
    let pl = places(t.path());
    let gtk = t.path().join("config/gtk-3.0/bookmarks");
    std::fs::create_dir_all(gtk.parent().unwrap()).unwrap();
    std::fs::write(
        &gtk,
        "file:///home/u/Music Music\nfile:///srv/Shared%20Cloud\n",
    )
    .unwrap();
    let o = opts(&["/home/u/My Cloud", "/srv/Shared Cloud"]);
    install(&pl, &o).unwrap();
    let changes = install(&pl, &o).unwrap();
    assert_eq!(
        read(&gtk),
        "file:///home/u/Music Music\nfile:///srv/Shared%20Cloud\nfile:///home/u/My%20Cloud My Cloud\n"
    );
    assert!(changes.contains(&Change::AlreadyBookmarked {
        mountpoint: "/srv/Shared Cloud".into(),
        file: gtk.clone()
    }));
    let xbel = t.path().join("data/user-places.xbel");
    let places_text = read(&xbel);
    assert_eq!(
        places_text
            .matches("href=\"file:///home/u/My%20Cloud\"")
            .count(),
        1
    );
    // Dolphin adds its own places only to an empty file: a new one starts with them.
    assert!(places_text.contains("href=\"trash:/\""), "{places_text}");
    assert!(places_text.contains(&format!("href=\"file://{}/home\"", t.path().display())));

    // Something of the user's at one of our names stays.
    let user_file = t
        .path()
        .join("data/nemo-python/extensions/cloudmount-nemo.py");
    std::fs::write(&user_file, "# mine\n").unwrap();
    let changes = remove(&pl).unwrap();
    assert!(changes.contains(&Change::LeftAlone(user_file.clone())));
    assert_eq!(read(&user_file), "# mine\n");
    assert_eq!(
        read(&gtk),
        "file:///home/u/Music Music\nfile:///srv/Shared%20Cloud\n"
    );
    let after = read(&xbel);
    assert!(!after.contains("My%20Cloud"), "{after}");
    assert!(!after.contains("Shared%20Cloud"), "{after}");
    assert!(after.contains("href=\"trash:/\"") && after.ends_with("</xbel>\n"));
    let d = t.path().join("data");
    assert!(!d.join("nautilus-python").exists());
    assert!(!d.join("kio").exists());
    assert!(!d.join("cloudmount").exists());
    // A second removal finds nothing more to do.
    let again = remove(&pl).unwrap();
    assert_eq!(again, vec![Change::LeftAlone(user_file)]);
}

#[test]
fn adds_to_an_existing_places_file() {
    let t = tempfile::tempdir().unwrap();
    let pl = places(t.path());
    let xbel = t.path().join("data/user-places.xbel");
    std::fs::create_dir_all(xbel.parent().unwrap()).unwrap();
    let before = "<?xml version=\"1.0\"?>\n<xbel>\n <bookmark href=\"file:///home/u\">\n  <title>Home</title>\n </bookmark>\n</xbel>\n";
    std::fs::write(&xbel, before).unwrap();
    install(&pl, &opts(&["/home/u/Cloud&Co"])).unwrap();
    let text = read(&xbel);
    assert!(text.starts_with(
        "<?xml version=\"1.0\"?>\n<xbel>\n <bookmark href=\"file:///home/u\">\n  <title>Home</title>\n </bookmark>\n <bookmark href=\"file:///home/u/Cloud&amp;Co\">"
    ), "{text}");
    assert!(text.contains("<title>Cloud&amp;Co</title>"));
    remove(&pl).unwrap();
    assert_eq!(read(&xbel), before);
}

#[test]
fn quoting() {
    assert_eq!(py_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(exec_arg("/a b/$x%y"), "\"/a b/\\\\$x%%y\"");
    assert_eq!(file_uri(Path::new("/a b/é")), "file:///a%20b/%C3%A9");
    assert_eq!(path_of_uri("file:///a%20b/%C3%A9"), PathBuf::from("/a b/é"));
    assert_eq!(label(Path::new("/x/My\nCloud")), "My Cloud");
}

#[test]
fn writes_through_a_symlinked_bookmarks_file() {
    let t = tempfile::tempdir().unwrap();
    let pl = places(t.path());
    let real = t.path().join("dotfiles-bookmarks");
    std::fs::write(&real, "file:///home/u/Music Music\n").unwrap();
    let gtk = t.path().join("config/gtk-3.0/bookmarks");
    std::fs::create_dir_all(gtk.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &gtk).unwrap();
    install(&pl, &opts(&["/home/u/Cloud"])).unwrap();
    assert!(gtk.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        read(&real),
        "file:///home/u/Music Music\nfile:///home/u/Cloud Cloud\n"
    );
    remove(&pl).unwrap();
    assert_eq!(read(&real), "file:///home/u/Music Music\n");
}
