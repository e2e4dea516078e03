//! Sync folders against real servers, driven as a user drives them: `cloudmount start`, `sync
//! add`, `sync now --wait`, edits on either side (the server's by another WebDAV client).

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use cloudmount::sync::report::FolderState;
use common::mount::{Dav, Node, Server};
use common::sync::{local, names, write, SyncHome};

fn assert_same(what: &str, dav: &Dav, folder: &str, dir: &Path) {
    let server = dav.tree_at(folder);
    let mut here = local(dir);
    if !dav.server.lists_dot_names() {
        // nginx leaves dot names out of its listings (they are checked one by one instead).
        here.retain(|k, _| !k.split('/').any(|s| s.starts_with('.')));
    }
    common::mount::assert_trees_match(what, ("the local folder", &here), ("the server", &server));
}

/// A home with its daemon running, on a fresh test folder of `server`.
fn setup(server: &Server, label: &str) -> (Dav, SyncHome) {
    let dav = Dav::fresh(server, label);
    let mut home = SyncHome::new(server, &dav.url);
    home.start();
    (dav, home)
}

fn bidirectional_round_trip(server: Server) {
    let (dav, home) = setup(&server, "sync-bi");
    let dir = home.dir("Docs");
    write(&dir.join("a.txt"), b"alpha");
    write(&dir.join("sub/b.bin"), &common::pattern(300_000, 3));
    write(&dir.join("sub/deeper/c.txt"), b"");
    write(&dir.join(".dotfile"), b"hidden by some servers' listings");
    common::sync::mkdir(&dir.join("empty"));
    home.add(&dir, &[]);
    home.sync_now(&dir);
    assert_same("after the first sync", &dav, "Docs", &dir);
    assert!(dav.tree_at("Docs").contains_key("empty"));

    // Edits on the server reach the local folder; edits here reach the server.
    dav.put("Docs/a.txt", b"alpha, edited on the server");
    dav.put("Docs/sub/new.txt", b"new on the server");
    write(&dir.join("sub/deeper/c.txt"), b"now with content");
    home.sync_now(&dir);
    assert_eq!(
        std::fs::read(dir.join("a.txt")).unwrap(),
        b"alpha, edited on the server"
    );
    assert_eq!(
        std::fs::read(dir.join("sub/new.txt")).unwrap(),
        b"new on the server"
    );
    assert_eq!(dav.get("Docs/sub/deeper/c.txt"), b"now with content");
    assert_same("after edits on both sides", &dav, "Docs", &dir);

    // Deletes both ways: the local one goes to the trash.
    dav.delete("Docs/sub/new.txt");
    std::fs::remove_file(dir.join("a.txt")).unwrap();
    home.sync_now(&dir);
    assert!(!dir.join("sub/new.txt").exists());
    assert!(dav.stat("Docs/a.txt").is_none());
    assert_eq!(
        home.trash(),
        ["new.txt"],
        "the server's delete went to the trash"
    );
    assert_same("after deletes on both sides", &dav, "Docs", &dir);

    // A second sync with nothing changed does nothing.
    let out = home.sync_now(&dir);
    assert!(out.contains("nothing to do"), "{out}");
    // The dot file is on the server and still here, on every server (nginx does not list it).
    assert_eq!(
        dav.get("Docs/.dotfile"),
        b"hidden by some servers' listings"
    );
    assert!(
        dir.join(".dotfile").exists(),
        "a dot file the listing hides was taken for deleted"
    );
    assert!(home.trash().iter().all(|n| n != ".dotfile"));
}

#[test]
fn bidirectional_round_trip_on_apache() {
    bidirectional_round_trip(Server::apache_basic());
}

#[test]
fn bidirectional_round_trip_on_apache_digest() {
    bidirectional_round_trip(Server::apache_digest());
}

#[test]
fn bidirectional_round_trip_on_rclone() {
    bidirectional_round_trip(Server::rclone());
}

#[test]
fn bidirectional_round_trip_on_nginx() {
    bidirectional_round_trip(Server::nginx());
}

#[test]
fn bidirectional_round_trip_on_the_embedded_server() {
    let s = common::embedded_server(None);
    bidirectional_round_trip(Server::embedded(&s));
}

#[test]
fn a_change_on_both_sides_keeps_both_versions() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-conflict");
    let dir = home.dir("C");
    write(&dir.join("report.txt"), b"v1");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    dav.put("C/report.txt", b"v2 from the other computer");
    write(&dir.join("report.txt"), b"v2 from here, longer");
    home.sync_now(&dir);
    let t = local(&dir);
    let copies: Vec<&str> = names(&t)
        .into_iter()
        .filter(|n| n.starts_with("report (conflicted copy "))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", names(&t));
    assert_eq!(
        std::fs::read(dir.join("report.txt")).unwrap(),
        b"v2 from the other computer",
        "the server's version keeps the name"
    );
    assert_eq!(
        std::fs::read(dir.join(copies[0])).unwrap(),
        b"v2 from here, longer"
    );
    assert_same("both versions on both sides", &dav, "C", &dir);
    let c = home.ok(&["sync", "conflicts"]);
    assert!(c.contains(copies[0]), "{c}");
    // A change made identically on both sides is no conflict.
    dav.put("C/report.txt", b"same");
    write(&dir.join("report.txt"), b"same");
    home.sync_now(&dir);
    assert_eq!(local(&dir).len(), 2);
}

#[test]
fn a_first_sync_of_two_full_folders_overwrites_nothing() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-merge");
    dav.mkdir("M");
    dav.put("M/same.txt", b"equal");
    dav.put("M/differs.txt", b"server");
    dav.put("M/server-only.txt", b"s");
    let dir = home.dir("M");
    write(&dir.join("same.txt"), b"equal");
    write(&dir.join("differs.txt"), b"local!");
    write(&dir.join("local-only.txt"), b"l");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    let t = local(&dir);
    assert_eq!(t.len(), 5, "{:?}", names(&t));
    assert_eq!(std::fs::read(dir.join("differs.txt")).unwrap(), b"server");
    assert!(names(&t)
        .iter()
        .any(|n| n.starts_with("differs (conflicted copy ")));
    assert_same("merged", &dav, "M", &dir);
}

#[test]
fn upload_only_never_changes_the_local_folder() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-up");
    let dir = home.dir("Music");
    write(&dir.join("song.mp3"), b"ours");
    write(&dir.join("other.mp3"), b"other");
    home.add(&dir, &["--mode", "upload-only"]);
    home.sync_now(&dir);
    assert_same("backed up", &dav, "Music", &dir);
    let before = local(&dir);

    dav.put("Music/song.mp3", b"changed on the server");
    dav.delete("Music/other.mp3");
    dav.put("Music/server-only.mp3", b"left there");
    home.sync_now(&dir);
    assert_eq!(local(&dir), before, "the local folder changed");
    assert_eq!(dav.get("Music/song.mp3"), b"ours", "put back from local");
    assert_eq!(dav.get("Music/other.mp3"), b"other", "put back from local");
    assert_eq!(dav.get("Music/server-only.mp3"), b"left there");
    let server = dav.tree_at("Music");
    let kept: Vec<&str> = names(&server)
        .into_iter()
        .filter(|n| n.starts_with("song (conflicted copy "))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the server's version is kept: {:?}",
        names(&server)
    );
    assert_eq!(
        dav.get(&format!("Music/{}", kept[0])),
        b"changed on the server"
    );

    // A local delete deletes the server copy (the server mirrors the folder)...
    std::fs::remove_file(dir.join("other.mp3")).unwrap();
    home.sync_now(&dir);
    assert!(dav.stat("Music/other.mp3").is_none());
    // ...unless the folder keeps deleted files.
    home.ok(&[
        "sync",
        "set",
        dir.to_str().unwrap(),
        "--keep-deleted",
        "true",
    ]);
    std::fs::remove_file(dir.join("song.mp3")).unwrap();
    home.sync_now(&dir);
    assert_eq!(dav.get("Music/song.mp3"), b"ours");
}

#[test]
fn a_folder_whose_disk_is_not_mounted_stops_and_deletes_nothing() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-unmounted");
    let dir = home.dir("External");
    for i in 0..5 {
        write(&dir.join(format!("f{i}.txt")), b"data");
    }
    home.add(&dir, &[]);
    home.sync_now(&dir);
    // The disk goes away: an empty mount point is left.
    std::fs::rename(&dir, home.dir("External.away")).unwrap();
    common::sync::mkdir(&dir);
    let out = home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert!(out.contains("marker"), "{out}");
    assert_eq!(
        dav.tree_at("External").len(),
        5,
        "nothing deleted on the server"
    );
    assert_eq!(home.folder(&dir).state, FolderState::Stopped);
    // The folder itself gone: the same.
    std::fs::remove_dir(&dir).unwrap();
    let out = home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert!(out.contains("missing"), "{out}");
    // The disk is back: syncing goes on, nothing was lost.
    std::fs::rename(home.dir("External.away"), &dir).unwrap();
    home.sync_now(&dir);
    assert_same("back", &dav, "External", &dir);
}

#[test]
fn deleting_most_of_a_folder_waits_for_a_confirmation() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-massdel");
    let dir = home.dir("Many");
    for i in 0..10 {
        write(&dir.join(format!("f{i}.txt")), b"data");
    }
    home.add(&dir, &[]);
    home.sync_now(&dir);
    for i in 0..6 {
        std::fs::remove_file(dir.join(format!("f{i}.txt"))).unwrap();
    }
    let out = home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert!(out.contains("would delete 6 of the 10 files"), "{out}");
    assert!(out.contains("--confirm"), "{out}");
    assert_eq!(dav.tree_at("Many").len(), 10);
    home.ok(&["sync", "now", dir.to_str().unwrap(), "--confirm", "--wait"]);
    assert_eq!(dav.tree_at("Many").len(), 4);
}

#[test]
fn a_local_save_reaches_the_server_by_itself() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-immediate");
    let dir = home.dir("Live");
    common::sync::mkdir(&dir);
    home.add(&dir, &[]);
    home.wait_state(&dir, FolderState::UpToDate);
    // An editor's save: a temporary file renamed over the name.
    write(&dir.join(".note.txt.swp"), b"editor swap");
    write(&dir.join("note.tmp~"), b"draft");
    std::fs::rename(dir.join("note.tmp~"), dir.join("note.txt")).unwrap();
    home.wait_until(30, "note.txt on the server", || {
        dav.stat("Live/note.txt").is_some()
    });
    assert_eq!(dav.get("Live/note.txt"), b"draft");
    // And a change on the server comes back by itself (polled every second here).
    dav.put("Live/from-server.txt", b"hello");
    home.wait_until(30, "from-server.txt here", || {
        dir.join("from-server.txt").exists()
    });
    assert!(
        dav.stat("Live/.note.txt.swp").is_none(),
        "editor swap files are not synced"
    );
}

#[test]
fn excluded_files_and_the_ignore_file_are_honoured() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-ignore");
    let dir = home.dir("Ig");
    write(
        &dir.join(".cloudmountignore"),
        b"# build output\nbuild/\n*.log\n!keep.log\n",
    );
    write(&dir.join("build/out.o"), b"o");
    write(&dir.join("x.log"), b"l");
    write(&dir.join("keep.log"), b"k");
    write(&dir.join("download.part"), b"p");
    write(&dir.join("doc~"), b"backup");
    write(&dir.join("real.txt"), b"r");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    let server = dav.tree_at("Ig");
    assert_eq!(
        names(&server),
        [".cloudmountignore", "keep.log", "real.txt"]
    );
}

#[test]
fn odd_names_sync_both_ways() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-names");
    let dir = home.dir("Odd");
    let odd = [
        "space name.txt",
        "percent %41.txt",
        "hash #1.txt",
        "amp & co.txt",
        "unicode ünïcødé 日本.txt",
        "quote 'single\".txt",
        "plus+equals=.txt",
    ];
    for n in odd {
        write(&dir.join(n), n.as_bytes());
    }
    home.add(&dir, &[]);
    home.sync_now(&dir);
    assert_same("odd names up", &dav, "Odd", &dir);
    dav.put("Odd/brackets [1] (2) {3}.txt", b"b");
    home.sync_now(&dir);
    assert_eq!(
        std::fs::read(dir.join("brackets [1] (2) {3}.txt")).unwrap(),
        b"b"
    );
}

#[test]
fn a_local_rename_is_a_move_on_the_server() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-rename");
    let dir = home.dir("R");
    write(&dir.join("old.bin"), &common::pattern(100_000, 9));
    write(&dir.join("d/inner.txt"), b"inner");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    std::fs::rename(dir.join("old.bin"), dir.join("new.bin")).unwrap();
    std::fs::rename(dir.join("d"), dir.join("e")).unwrap();
    home.sync_now(&dir);
    assert_same("renamed", &dav, "R", &dir);
    let log = home.log();
    assert!(
        !log.contains("pass=1"),
        "a rename needed a second pass (uploaded as new?):\n{log}"
    );
}

#[test]
fn files_that_cannot_be_synced_are_listed_and_the_rest_goes_on() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-problems");
    let dir = home.dir("P");
    write(&dir.join("fine.txt"), b"fine");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    common::sync::own(&dir.join("link"));
    home.add(&dir, &[]);
    let out = home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert!(out.contains("1 file not synced"), "{out}");
    assert_eq!(dav.get("P/fine.txt"), b"fine");
    assert!(dav.stat("P/link").is_none());
    let f = home.folder(&dir);
    assert!(
        f.problems
            .iter()
            .any(|p| p.path == "link" && p.reason.contains("symbolic link")),
        "{:?}",
        f.problems
    );
    let text = home.ok(&["sync", "list"]);
    assert!(text.contains("link: symbolic link"), "{text}");
}

#[test]
fn remove_pause_and_resume_delete_nothing() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-remove");
    let dir = home.dir("Keep");
    write(&dir.join("k.txt"), b"k");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    let d = dir.to_str().unwrap();
    home.ok(&["sync", "pause", d]);
    write(&dir.join("while-paused.txt"), b"p");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        dav.stat("Keep/while-paused.txt").is_none(),
        "a paused folder synced"
    );
    assert_eq!(home.folder(&dir).state, FolderState::Paused);
    home.ok(&["sync", "resume", d]);
    home.wait_until(30, "the paused change on the server", || {
        dav.stat("Keep/while-paused.txt").is_some()
    });
    home.ok(&["sync", "remove", d]);
    assert!(home.list().is_empty());
    assert_eq!(local(&dir).len(), 2);
    assert_eq!(dav.tree_at("Keep").len(), 2);
}

#[test]
fn a_scheduled_folder_syncs_once_then_waits_for_its_time() {
    let (dav, home) = setup(&Server::apache_basic(), "sync-sched");
    let dir = home.dir("Weekly");
    write(&dir.join("w.txt"), b"w");
    home.ok(&["settings", "set", "schedule.time", "04:30"]);
    home.add(&dir, &["--mode", "upload-only", "--schedule", "weekly"]);
    let f = home.wait_state(&dir, FolderState::Waiting);
    assert!(f.next_run.is_some(), "{f:?}");
    assert_eq!(dav.get("Weekly/w.txt"), b"w", "the first sync runs at once");
    let text = home.ok(&["sync", "list"]);
    assert!(
        text.contains("waiting until") && text.contains("04:30"),
        "{text}"
    );
    write(&dir.join("later.txt"), b"later");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        dav.stat("Weekly/later.txt").is_none(),
        "a weekly folder synced early"
    );
    home.sync_now(&dir);
    assert!(dav.stat("Weekly/later.txt").is_some());
    let s = home.ok(&["settings"]);
    assert!(s.contains("schedule.time = 04:30"), "{s}");
}

#[test]
fn a_sync_killed_midway_finishes_at_the_next_start_without_false_conflicts() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-kill");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("Big");
    for i in 0..200 {
        write(
            &dir.join(format!("d{}/f{i}.bin", i % 10)),
            &common::pattern(20_000 + i, i as u8),
        );
    }
    home.add(&dir, &[]);
    // Kill it while the first sync runs.
    home.wait_until(60, "some files on the server", || {
        dav.stat("Big/d0").is_some()
    });
    home.kill9();
    home.start();
    home.sync_now(&dir);
    assert_same("after the restart", &dav, "Big", &dir);
    assert!(
        !local(&dir).keys().any(|k| k.contains("conflicted copy")),
        "false conflicts"
    );
    assert!(home.folder(&dir).problems.is_empty());
}

#[test]
fn sync_commands_say_how_to_start_the_daemon() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-nodaemon");
    let home = SyncHome::new(&server, &dav.url);
    let out = home.fails(&["sync", "list"]);
    assert!(out.contains("cloudmount start t"), "{out}");
}

#[test]
fn start_in_the_background_and_stop() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-bg");
    let home = SyncHome::new(&server, &dav.url);
    home.ok(&["start"]);
    let out = home.fails(&["start"]);
    assert!(out.contains("already running"), "{out}");
    let dir = home.dir("Bg");
    write(&dir.join("x.txt"), b"x");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    assert_eq!(dav.get("Bg/x.txt"), b"x");
    home.ok(&["stop"]);
    let out = home.fails(&["sync", "list"]);
    assert!(out.contains("not running"), "{out}");
}

#[test]
fn a_full_server_pauses_uploads_with_the_reason() {
    let s = common::embedded_server(Some("1M"));
    let server = Server::embedded(&s);
    let (dav, home) = setup(&server, "sync-507");
    let dir = home.dir("Q");
    write(&dir.join("small.txt"), b"small");
    write(&dir.join("big.bin"), &common::pattern(3 << 20, 1));
    home.add(&dir, &[]);
    let out = home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert!(out.contains("space") || out.contains("507"), "{out}");
    assert!(
        dav.stat("Q/big.bin").is_none(),
        "no partial file under the real name"
    );
    let f = home.folder(&dir);
    assert!(
        f.problems.iter().any(|p| p.path == "big.bin"),
        "{:?}",
        f.problems
    );
    // Downloads go on meanwhile.
    dav.put("Q/down.txt", b"d");
    let _ = home.run(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    assert_eq!(std::fs::read(dir.join("down.txt")).unwrap(), b"d");
    assert!(matches!(
        local(&dir).get("big.bin"),
        Some(Node::File { .. })
    ));
}

#[test]
fn a_full_account_pauses_every_folder_and_resumes_by_itself_once_space_is_freed() {
    let s = common::embedded_server(Some("1M"));
    let server = Server::embedded(&s);
    let (dav, home) = setup(&server, "sync-507-all");
    // Another client's file takes most of the account.
    dav.put("filler.bin", &common::pattern(700 << 10, 9));
    let a = home.dir("A");
    write(&a.join("first.txt"), b"fits");
    home.add(&a, &[]);
    home.sync_now(&a);
    assert_eq!(dav.get("A/first.txt"), b"fits");

    // Folder B's file does not fit: the server refuses it, and the account's uploads pause.
    let b = home.dir("B");
    write(&b.join("big.bin"), &common::pattern(600 << 10, 2));
    home.add(&b, &[]);
    let out = home.fails(&["sync", "now", b.to_str().unwrap(), "--wait"]);
    assert!(out.contains("out of space"), "{out}");
    // Folder A's new file would fit, but it waits with the rest of the account (the server
    // said it is full; one probe per interval finds out when that changes).
    write(&a.join("second.txt"), b"small");
    home.wait_until(20, "folder A says its uploads wait for space", || {
        let f = home.folder(&a);
        f.state == FolderState::NoSpace && f.problems.iter().any(|p| p.path == "second.txt")
    });
    let f = home.folder(&b);
    assert_eq!(f.state, FolderState::NoSpace, "{f:?}");
    let reason = f.reason.unwrap_or_default();
    assert!(
        reason.contains("out of space") && reason.contains("sent by themselves"),
        "{reason}"
    );
    let text = home.ok(&["sync", "list"]);
    assert!(text.contains("uploads paused"), "{text}");
    assert!(
        dav.stat("B/big.bin").is_none(),
        "nothing partial under the real name"
    );
    assert!(dav.stat("A/second.txt").is_none());
    // Downloads go on meanwhile.
    dav.put("A/from-server.txt", b"down");
    home.wait_until(20, "a download during the pause", || {
        std::fs::read(a.join("from-server.txt")).ok().as_deref() == Some(b"down".as_slice())
    });

    // Space is freed on the server by someone else: everything that waited is sent, with no
    // command from the user.
    dav.delete("filler.bin");
    home.wait_until(30, "both folders' uploads land by themselves", || {
        dav.stat("B/big.bin").is_some() && dav.stat("A/second.txt").is_some()
    });
    assert_eq!(dav.get("B/big.bin"), common::pattern(600 << 10, 2));
    assert_eq!(dav.get("A/second.txt"), b"small");
    home.wait_until(20, "both folders up to date again", || {
        [&a, &b].iter().all(|d| {
            let f = home.folder(d);
            f.state == FolderState::UpToDate && f.problems.is_empty()
        })
    });
    // Nothing was lost or changed locally.
    assert_eq!(
        std::fs::read(b.join("big.bin")).unwrap(),
        common::pattern(600 << 10, 2)
    );
    assert_eq!(std::fs::read(a.join("first.txt")).unwrap(), b"fits");
}

#[test]
fn a_profile_with_a_mountpoint_is_mounted_by_its_daemon_beside_its_sync_folders() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-mount");
    dav.put("on-the-server.txt", b"seen through the mount");
    let mnt = tempfile::tempdir().unwrap();
    common::sync::own(mnt.path());
    let mp = mnt.path().join("Cloud");
    common::sync::mkdir(&mp);
    let home = SyncHome::with_profile_extra(
        &server,
        &dav.url,
        &format!("mountpoint = \"{}\"\nsync_root = \"Synced\"", mp.display()),
    );
    home.ok(&["start"]);
    let cleanup = scopeguard(|| {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&mp)
            .status();
    });
    assert_eq!(
        common::sync::read_as_user(&mp.join("on-the-server.txt")),
        b"seen through the mount"
    );
    assert!(
        std::fs::read(mp.join("on-the-server.txt")).is_err(),
        "the user's mount is closed to other users (root included) without allow_other"
    );
    let dir = home.dir("Notes");
    write(&dir.join("n.txt"), b"note");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    assert_eq!(
        dav.get("Synced/Notes/n.txt"),
        b"note",
        "the default server folder is under sync_root"
    );
    // A sync folder inside the mount, or holding it, is refused.
    let out = home.fails(&["sync", "add", mp.join("sub").to_str().unwrap()]);
    assert!(out.contains("inside the cloudmount mount"), "{out}");
    assert!(
        dav.stat("sub").is_none(),
        "the refused folder was created in the mount"
    );
    let out = home.fails(&["sync", "add", mnt.path().to_str().unwrap()]);
    assert!(out.contains("holds the cloudmount mount"), "{out}");
    home.ok(&["stop"]);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(mp.to_str().unwrap());
    assert!(!mounted, "stop unmounts the profile's mount");
    drop(cleanup);
}

#[test]
fn a_full_account_pauses_the_mounts_uploads_with_the_sync_folders() {
    let s = common::embedded_server(Some("1M"));
    let server = Server::embedded(&s);
    let dav = Dav::fresh(&server, "sync-507-mount");
    dav.put("filler.bin", &common::pattern(700 << 10, 9));
    let mnt = tempfile::tempdir().unwrap();
    common::sync::own(mnt.path());
    let mp = mnt.path().join("Cloud");
    common::sync::mkdir(&mp);
    let mut home = SyncHome::with_profile_extra(
        &server,
        &dav.url,
        &format!("mountpoint = \"{}\"\nsync_root = \"Synced\"", mp.display()),
    );
    home.start();
    let _cleanup = scopeguard(|| {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&mp)
            .status();
    });
    // A sync folder finds the server full.
    let b = home.dir("B");
    write(&b.join("big.bin"), &common::pattern(600 << 10, 2));
    home.add(&b, &[]);
    let out = home.fails(&["sync", "now", b.to_str().unwrap(), "--wait"]);
    assert!(out.contains("out of space"), "{out}");
    // The pause is the mount's too: a write that grows a file gets ENOSPC (refused now
    // rather than lost later), and the mount's status says why.
    let u = common::sync::user();
    let src = mnt.path().join("m-source.txt");
    write(&src, b"small");
    let save = || {
        std::process::Command::new("cp")
            .arg(&src)
            .arg(mp.join("m.txt"))
            .uid(u.uid)
            .gid(u.gid)
            .output()
            .unwrap()
    };
    let out = save();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let mps = mp.to_str().unwrap();
    let out = home.ok(&["status", mps, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let q = match v.get("status") {
        Some(s) => &s["queue"],
        None => &v["queue"],
    };
    assert!(
        q["paused"]
            .as_str()
            .is_some_and(|r| r.contains("out of space")),
        "{out}"
    );
    assert!(dav.stat("m.txt").is_none());
    // Space is freed: the folder's file lands by itself, and the mount takes writes again.
    dav.delete("filler.bin");
    home.wait_until(30, "the folder's upload lands by itself", || {
        dav.stat("Synced/B/big.bin").is_some()
    });
    home.wait_until(10, "the mount takes the write again", || {
        save().status.success()
    });
    home.wait_until(30, "the mount's upload lands", || {
        dav.stat("m.txt").is_some_and(|e| e.size == 5)
    });
    assert_eq!(dav.get("m.txt"), b"small");
    home.ok(&["stop"]);
}

/// Runs `f` when dropped (cleans up after a failed assertion too).
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct G<F: FnMut()>(F);
    impl<F: FnMut()> Drop for G<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    G(f)
}

#[test]
fn a_first_sync_sends_each_new_file_in_two_requests() {
    // PUT to a temporary name and MOVE into place; the version comes from one listing per
    // folder afterwards, never from a request per file.
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-requests");
    let proxy = common::proxy::FaultProxy::start_blocking(common::proxy::target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("Req");
    for i in 0..30 {
        write(
            &dir.join(format!("d{}/f{i}.txt", i % 3)),
            format!("file {i}").as_bytes(),
        );
    }
    home.add(&dir, &["--schedule", "daily"]);
    home.wait_state(&dir, FolderState::Waiting);
    let under = dav.url_path("Req");
    assert_eq!(proxy.count("PUT", &under), 30);
    assert_eq!(proxy.count("MOVE", &under), 30);
    let propfinds = proxy.count("PROPFIND", &under);
    assert!(
        propfinds <= 12,
        "{propfinds} PROPFINDs for 30 files in 3 folders: {:?}",
        proxy
            .requests_under(&under)
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect::<Vec<_>>()
    );
    assert_eq!(proxy.count("HEAD", &under), 0);
    assert_same("sent", &dav, "Req", &dir);
}

#[test]
fn a_deep_edit_in_place_on_apache_comes_down_by_the_poll_alone() {
    // Apache's directory ETags change when a member is added or removed, never when a file is
    // rewritten in place: a poll that trusted the folder's ETag would miss such an edit. The
    // polls learn that from the changes they see, and walk the folder (unchanged listings
    // unparsed) instead.
    let (dav, home) = setup(&Server::apache_basic(), "sync-deep-poll");
    let dir = home.dir("Deep");
    for d in ["a", "a/b", "a/b/c", "x", "y"] {
        for f in 0..3 {
            write(
                &dir.join(format!("{d}/f{f}.txt")),
                format!("{d} {f}").as_bytes(),
            );
        }
    }
    home.add(&dir, &[]);
    home.wait_state(&dir, FolderState::UpToDate);
    home.wait_until(30, "everything on the server", || {
        dav.stat("Deep/a/b/c/f1.txt").is_some() && dav.stat("Deep/y/f2.txt").is_some()
    });
    // A few polls of the synced folder (one a second here).
    std::thread::sleep(std::time::Duration::from_secs(3));
    for round in 0..3 {
        let folder_tag = dav.stat("Deep").and_then(|e| e.etag);
        let content = format!("edited on the server, round {round}").repeat(round + 2);
        dav.put("Deep/a/b/c/f1.txt", content.as_bytes());
        assert_eq!(
            dav.stat("Deep").and_then(|e| e.etag),
            folder_tag,
            "the premise: Apache leaves the folder's ETag alone"
        );
        let t0 = std::time::Instant::now();
        home.wait_until(15, "the deep edit here", || {
            std::fs::read(dir.join("a/b/c/f1.txt")).is_ok_and(|b| b == content.as_bytes())
        });
        eprintln!("round {round}: the edit came down after {:?}", t0.elapsed());
        // Polls with nothing changed between the rounds.
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    assert_same("after the edits", &dav, "Deep", &dir);
}
