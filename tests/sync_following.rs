//! Followed and shared folders synced from the profile's other areas, against Apache: a
//! profile with a drive and a `Following` area configured `read_only = true` (a second test
//! folder of the same server). Its folders sync download-only: nothing is ever sent; a local
//! edit is kept here as a conflict copy and the server's version comes back, a local delete
//! brings the file back, a local new file stays here, a server change comes down.

mod common;

use std::path::Path;

use cloudmount::remote::Remote;
use cloudmount::sync::report::FollowedFolder;
use cloudmount::sync::Mode;
use cloudmount::transfer::conflict::is_conflict_copy;
use common::mount::{Dav, Server};
use common::sync::{local, names, text, write, SyncHome, PROFILE};

/// A home whose profile has the areas `Drive` (the main one, `drive`) and `name` at `url`
/// (`read_only` as given).
fn home_with_areas(
    server: &Server,
    drive: &Dav,
    name: &str,
    url: &str,
    read_only: bool,
) -> SyncHome {
    let home = SyncHome::new(server, &drive.url);
    let pw = home.path().join(".config/cloudmount/password");
    let config = format!(
        "[profiles.{PROFILE}]\nuser = \"{}\"\npassword_file = \"{}\"\nsync_poll_interval = \"1s\"\n\n\
         [[profiles.{PROFILE}.areas]]\nname = \"Drive\"\nurl = \"{}\"\n\n\
         [[profiles.{PROFILE}.areas]]\nname = \"{name}\"\nurl = \"{url}\"\nread_only = {read_only}\n",
        server.user,
        pw.display(),
        drive.url,
    );
    write(
        &home.path().join(".config/cloudmount/config.toml"),
        config.as_bytes(),
    );
    home
}

fn following(home: &SyncHome) -> Vec<FollowedFolder> {
    let out = home.ok(&["sync", "list", "--following", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sync list --following ({e}): {out}"))
}

/// `sync now DIR --wait`, whatever its exit status (a run that switches a folder's mode, or
/// one a refused upload left files in, exits 1). The output.
fn sync_now_keeping(home: &SyncHome, dir: &Path) -> String {
    let out = home.run(&["sync", "now", dir.to_str().unwrap(), "--wait"]);
    text(&out)
}

#[test]
fn a_read_only_followed_folder_syncs_download_only_on_apache() {
    let server = Server::apache_basic();
    let drive = Dav::fresh(&server, "fol-drive");
    let bob = Dav::fresh(&server, "fol-following");
    bob.mkdir("Bob");
    bob.mkdir("Bob/Photos");
    bob.mkdir("Bob/Photos/sub");
    bob.mkdir("Carol");
    bob.put("Bob/Photos/a.txt", b"from Bob");
    bob.put("Bob/Photos/sub/b.txt", b"b, from Bob");
    let server_before = bob.tree_at("Bob/Photos");
    let mut home = home_with_areas(&server, &drive, "Following", &bob.url, true);
    home.start();

    // The followed area's folders, none synced yet.
    let listed = following(&home);
    let shown: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|f| (f.area.as_str(), f.remote.as_str(), f.read_only))
        .collect();
    assert_eq!(
        shown,
        [("Following", "Bob", true), ("Following", "Carol", true)]
    );
    assert!(listed.iter().all(|f| f.synced.is_empty()));
    let txt = home.ok(&["sync", "list", "--following"]);
    assert!(
        txt.contains("Following/Bob") && txt.contains("read-only"),
        "{txt}"
    );

    // An unknown area is refused with the profile's areas named.
    let dir = home.dir("BobPhotos");
    let d = dir.to_str().unwrap();
    let err = home.fails(&["sync", "add", d, "--area", "Nope", "--remote", "Bob/Photos"]);
    assert!(
        err.contains("no area \"Nope\"") && err.contains("Following"),
        "{err}"
    );

    // Added from the read-only area: download-only, whatever mode was asked.
    let out = home.ok(&[
        "sync",
        "add",
        d,
        "--area",
        "Following",
        "--remote",
        "Bob/Photos",
        "--mode",
        "bidirectional",
    ]);
    assert!(
        out.contains("download-only") && out.contains("area Following"),
        "{out}"
    );
    home.sync_now(&dir);
    let f = home.folder(&dir);
    assert_eq!(f.mode, Mode::DownloadOnly);
    assert_eq!(f.area, "Following");
    assert_eq!(names(&local(&dir)), ["a.txt", "sub", "sub/b.txt"]);
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"from Bob");
    // Bob is marked: Bob/Photos is synced here.
    let listed = following(&home);
    let bob_synced: Vec<(&str, &Path)> = listed
        .iter()
        .filter(|f| f.remote == "Bob")
        .flat_map(|f| {
            f.synced
                .iter()
                .map(|s| (s.remote.as_str(), s.local.as_path()))
        })
        .collect();
    assert_eq!(bob_synced, [("Bob/Photos", dir.as_path())]);
    assert!(listed
        .iter()
        .any(|f| f.remote == "Carol" && f.synced.is_empty()));
    let txt = home.ok(&["sync", "list", "--following"]);
    assert!(txt.contains("Bob/Photos synced here at"), "{txt}");
    // The mode cannot be changed to one that sends.
    let err = home.fails(&["sync", "set", d, "--mode", "bidirectional"]);
    assert!(err.contains("read-only area"), "{err}");

    // A local edit: kept here as a conflict copy, the server's version back under the name,
    // the server unchanged.
    write(&dir.join("a.txt"), b"my edit, never to be uploaded");
    let out = sync_now_keeping(&home, &dir);
    // Once the copy is made, the folder is in sync: keeping it here is what download-only
    // does, not a failure (`sync now --wait` exits 0), and it is listed as kept here only.
    let again = home.sync_now(&dir);
    assert!(again.contains("kept here only"), "{again}");
    assert_eq!(
        std::fs::read(dir.join("a.txt")).unwrap(),
        b"from Bob",
        "{out}"
    );
    let copies: Vec<String> = local(&dir)
        .keys()
        .filter(|k| is_conflict_copy(k))
        .cloned()
        .collect();
    assert_eq!(copies.len(), 1, "one conflict copy here: {:?}", local(&dir));
    assert_eq!(
        std::fs::read(dir.join(&copies[0])).unwrap(),
        b"my edit, never to be uploaded"
    );
    assert_eq!(
        bob.tree_at("Bob/Photos"),
        server_before,
        "the server is unchanged"
    );
    assert!(home.folder(&dir).conflicts >= 1);
    // The copy is reported as kept here only.
    let f = home.folder(&dir);
    assert!(
        f.problems
            .iter()
            .any(|p| p.path == copies[0] && p.reason.contains("kept here only")),
        "{:?}",
        f.problems
    );

    // A local delete: the file comes back.
    std::fs::remove_file(dir.join("sub/b.txt")).unwrap();
    let out = sync_now_keeping(&home, &dir);
    assert_eq!(
        std::fs::read(dir.join("sub/b.txt")).unwrap(),
        b"b, from Bob",
        "{out}"
    );
    assert!(
        home.trash().is_empty(),
        "nothing trashed: {:?}",
        home.trash()
    );

    // A local new file stays here, never uploaded.
    write(&dir.join("mine.txt"), b"only here");
    sync_now_keeping(&home, &dir);
    assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"only here");
    assert!(bob.stat("Bob/Photos/mine.txt").is_none());
    // Reported: exactly what exists only here.
    let mut reported: Vec<String> = home
        .folder(&dir)
        .problems
        .iter()
        .map(|p| p.path.clone())
        .collect();
    reported.sort();
    let mut only_here = vec![copies[0].clone(), "mine.txt".to_string()];
    only_here.sort();
    assert_eq!(reported, only_here);
    assert_eq!(
        bob.tree_at("Bob/Photos"),
        server_before,
        "the server is unchanged"
    );

    // A change on the server comes down; a server delete is trashed here.
    bob.put("Bob/Photos/a.txt", b"Bob's second version");
    bob.put("Bob/Photos/c.txt", b"new from Bob");
    bob.delete("Bob/Photos/sub/b.txt");
    sync_now_keeping(&home, &dir);
    assert_eq!(
        std::fs::read(dir.join("a.txt")).unwrap(),
        b"Bob's second version"
    );
    assert_eq!(std::fs::read(dir.join("c.txt")).unwrap(), b"new from Bob");
    assert!(!dir.join("sub/b.txt").exists());
    assert_eq!(home.trash(), ["b.txt"]);
    // What only this computer has is still here.
    assert!(dir.join("mine.txt").exists() && dir.join(&copies[0]).exists());
    let server_names: Vec<String> = bob.tree_at("Bob/Photos").keys().cloned().collect();
    assert_eq!(server_names, ["a.txt", "c.txt", "sub"]);

    // A followed folder is not registered in the account's list of this profile.
    let inactive = home.ok(&["sync", "list", "--inactive", "--json"]);
    assert!(!inactive.contains("Bob/Photos"), "{inactive}");
    home.stop();
}

/// A writable shared area syncs both ways, and the same server path in two areas is two
/// folders.
#[test]
fn a_writable_shared_area_syncs_both_ways_on_apache() {
    let server = Server::apache_basic();
    let drive = Dav::fresh(&server, "fol-drive2");
    let shared = Dav::fresh(&server, "fol-shared");
    shared.mkdir("Team");
    shared.put("Team/plan.txt", b"v1");
    let mut home = home_with_areas(&server, &drive, "Shared", &shared.url, false);
    home.start();
    let team = home.dir("Team");
    let mine = home.dir("MyTeam");
    home.add(&team, &["--area", "Shared"]);
    home.add(&mine, &["--remote", "Team"]);
    home.sync_now(&team);
    home.sync_now(&mine);
    assert_eq!(home.folder(&team).mode, Mode::Bidirectional);
    assert_eq!(std::fs::read(team.join("plan.txt")).unwrap(), b"v1");
    write(&team.join("plan.txt"), b"v2 from here");
    write(&mine.join("drive.txt"), b"on the drive");
    home.sync_now(&team);
    home.sync_now(&mine);
    assert_eq!(shared.get("Team/plan.txt"), b"v2 from here");
    assert_eq!(drive.get("Team/drive.txt"), b"on the drive");
    assert!(shared.stat("Team/drive.txt").is_none());
    assert!(drive.stat("Team/plan.txt").is_none());
    let listed = following(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].synced.len(), 1, "{listed:?}");
    assert_eq!(listed[0].synced[0].local, team);
    home.stop();
}

/// A followed folder of an area the configuration does not mark read-only, whose server
/// refuses every change (Apache's `/dav-readonly/`, the same files as `/dav/` with writes
/// answered 403): the first refused upload (an edit, and a new file refused too) makes the
/// folder download-only, and the edit is kept here as a conflict copy while the server's
/// version comes back.
#[test]
fn a_folder_the_server_refuses_writes_to_becomes_download_only_on_apache() {
    let server = Server::apache_basic();
    let drive = Dav::fresh(&server, "fol-drive3");
    let ann = Dav::fresh(&server, "fol-refused");
    ann.mkdir("Ann");
    ann.put("Ann/n.txt", b"from Ann");
    let ro_url = ann.url.replace("/dav/", "/dav-readonly/");
    assert_ne!(ro_url, ann.url);
    // The premise: the server reads but refuses writes there.
    let ro = common::webdav(&ro_url, &server.user, &server.password);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = cloudmount::remote::RemotePath::new("Ann").unwrap();
    let listed = rt
        .block_on(ro.list(&root))
        .expect("the read-only location lists");
    assert_eq!(listed.children.len(), 1);
    let refused = rt.block_on(ro.mkdir(&root.join("x").unwrap()));
    assert!(
        matches!(
            refused,
            Err(cloudmount::remote::RemoteError::Forbidden { .. })
        ),
        "{refused:?}"
    );

    let mut home = home_with_areas(&server, &drive, "Shared", &ro_url, false);
    home.start();
    let dir = home.dir("Ann");
    home.add(&dir, &["--area", "Shared", "--remote", "Ann"]);
    home.sync_now(&dir);
    assert_eq!(home.folder(&dir).mode, Mode::Bidirectional);
    assert_eq!(std::fs::read(dir.join("n.txt")).unwrap(), b"from Ann");

    write(&dir.join("n.txt"), b"my edit, refused by the server");
    // A new file in the same run is refused too (through a temporary name and directly):
    // download-only, not new-files-only.
    write(&dir.join("new.txt"), b"new, refused too");
    sync_now_keeping(&home, &dir);
    home.wait_until(30, "download-only, the edit kept as a copy", || {
        let copies = local(&dir).keys().filter(|k| is_conflict_copy(k)).count();
        home.folder(&dir).mode == Mode::DownloadOnly
            && std::fs::read(dir.join("n.txt")).is_ok_and(|b| b == b"from Ann")
            && copies == 1
    });
    let copy = local(&dir)
        .keys()
        .find(|k| is_conflict_copy(k))
        .cloned()
        .unwrap();
    assert_eq!(
        std::fs::read(dir.join(copy)).unwrap(),
        b"my edit, refused by the server"
    );
    assert_eq!(ann.get("Ann/n.txt"), b"from Ann");
    assert_eq!(names(&ann.tree_at("Ann")), ["n.txt"]);
    assert_eq!(
        std::fs::read(dir.join("new.txt")).unwrap(),
        b"new, refused too",
        "kept here"
    );
    let reason = home.folder(&dir).mode_reason;
    assert!(reason.contains("refused"), "{reason:?}");
    // It stays download-only across a restart.
    home.stop();
    home.start();
    assert_eq!(home.folder(&dir).mode, Mode::DownloadOnly);
    home.stop();
}

/// The drop-box URL of a test folder (Apache's `/dav-dropbox/`: new files and folders are
/// taken, a PUT over a file, DELETE and MOVE are answered 403); checks that premise.
fn drop_box_url(server: &Server, dav: &Dav, top: &str) -> String {
    use cloudmount::remote::{PutBody, PutCondition, RemoteError, RemotePath};
    let url = dav.url.replace("/dav/", "/dav-dropbox/");
    assert_ne!(url, dav.url);
    let drop = common::webdav(&url, &server.user, &server.password);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let probe = RemotePath::new(&format!("{top}/probe.txt")).unwrap();
    let body = || PutBody::from(b"probe".to_vec());
    rt.block_on(drop.put(&probe, body(), PutCondition::IfNoneMatch))
        .expect("the drop box takes a new file");
    let again = rt.block_on(drop.put(&probe, body(), PutCondition::None));
    assert!(
        matches!(again, Err(RemoteError::Forbidden { .. })),
        "a PUT over a file is refused: {again:?}"
    );
    let moved = rt.block_on(drop.rename(
        &probe,
        &RemotePath::new(&format!("{top}/m")).unwrap(),
        false,
    ));
    assert!(
        matches!(moved, Err(RemoteError::Forbidden { .. })),
        "a MOVE is refused: {moved:?}"
    );
    let deleted = rt.block_on(drop.delete(&probe));
    assert!(
        matches!(deleted, Err(RemoteError::Forbidden { .. })),
        "a DELETE is refused: {deleted:?}"
    );
    dav.delete(&format!("{top}/probe.txt"));
    url
}

/// The server's tree below `top`, without hidden names (a refused temporary upload may stay
/// there, hidden, when the server refuses its DELETE too).
fn visible(dav: &Dav, top: &str) -> common::mount::Tree {
    let mut t = dav.tree_at(top);
    t.retain(|k, _| !k.split('/').any(|s| s.starts_with('.')));
    t
}

/// A folder of a drop box (CloudMe's WebShare+: new files are taken, changes refused) synced
/// `--mode new-files-only`: a new local file and folder reach the server; a local edit of a
/// file the server has ends as a conflict copy on both sides while the server's version stays
/// and comes back under the name; a local delete and a local rename are undone (the renamed
/// file's new name goes up as a new file); a server change comes down. Nothing is lost, and
/// no upload leaves a temporary copy (new files are PUT directly).
#[test]
fn a_drop_box_folder_syncs_new_files_only_on_apache() {
    let server = Server::apache_basic();
    let drive = Dav::fresh(&server, "fol-drive4");
    let boxed = Dav::fresh(&server, "fol-dropbox");
    boxed.mkdir("Box");
    boxed.mkdir("Box/sub");
    boxed.put("Box/a.txt", b"from the owner");
    boxed.put("Box/sub/b.txt", b"b, from the owner");
    let url = drop_box_url(&server, &boxed, "Box");
    let mut home = home_with_areas(&server, &drive, "Shared", &url, false);
    home.start();
    // Not in the drive (the main area): it takes changes.
    let mine = home.dir("Mine");
    let err = home.fails(&[
        "sync",
        "add",
        mine.to_str().unwrap(),
        "--mode",
        "new-files-only",
    ]);
    assert!(err.contains("followed or shared area"), "{err}");
    let dir = home.dir("Box");
    home.add(
        &dir,
        &[
            "--area",
            "Shared",
            "--remote",
            "Box",
            "--mode",
            "new-files-only",
        ],
    );
    home.sync_now(&dir);
    let f = home.folder(&dir);
    assert_eq!(f.mode, Mode::NewFilesOnly);
    assert_eq!(f.mode_reason, "", "chosen by the user: no reason shown");
    assert_eq!(names(&local(&dir)), ["a.txt", "sub", "sub/b.txt"]);
    let txt = home.ok(&["sync", "list"]);
    assert!(txt.contains("new-files-only"), "{txt}");

    // A new file and a new folder with a file go up.
    write(&dir.join("mine.txt"), b"mine, new");
    std::fs::create_dir(dir.join("new")).unwrap();
    write(&dir.join("new/n.txt"), b"in a new folder");
    home.sync_now(&dir);
    assert_eq!(boxed.get("Box/mine.txt"), b"mine, new");
    assert_eq!(boxed.get("Box/new/n.txt"), b"in a new folder");

    // A local edit of the server's file: kept as a conflict copy, which goes up as a new
    // file; the server's version stays and comes back under the name.
    write(&dir.join("a.txt"), b"my edit");
    home.sync_now(&dir);
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"from the owner");
    assert_eq!(boxed.get("Box/a.txt"), b"from the owner");
    let copies: Vec<String> = local(&dir)
        .keys()
        .filter(|k| is_conflict_copy(k))
        .cloned()
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", local(&dir));
    assert_eq!(std::fs::read(dir.join(&copies[0])).unwrap(), b"my edit");
    assert_eq!(boxed.get(&format!("Box/{}", copies[0])), b"my edit");
    assert!(home.folder(&dir).conflicts >= 1);

    // A local delete is undone; nothing goes to the trash.
    std::fs::remove_file(dir.join("sub/b.txt")).unwrap();
    home.sync_now(&dir);
    assert_eq!(
        std::fs::read(dir.join("sub/b.txt")).unwrap(),
        b"b, from the owner"
    );
    assert_eq!(boxed.get("Box/sub/b.txt"), b"b, from the owner");
    // A local rename: the old name comes back, the new one goes up as a new file.
    std::fs::rename(dir.join("mine.txt"), dir.join("renamed.txt")).unwrap();
    home.sync_now(&dir);
    assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"mine, new");
    assert_eq!(boxed.get("Box/mine.txt"), b"mine, new");
    assert_eq!(boxed.get("Box/renamed.txt"), b"mine, new");
    assert!(home.trash().is_empty(), "{:?}", home.trash());

    // A server change comes down.
    boxed.put("Box/a.txt", b"the owner's second version");
    home.sync_now(&dir);
    assert_eq!(
        std::fs::read(dir.join("a.txt")).unwrap(),
        b"the owner's second version"
    );

    // Nothing lost, both sides the same, nothing hidden left on the server, nothing refused.
    let server_tree = boxed.tree_at("Box");
    assert_eq!(visible(&boxed, "Box"), server_tree, "no temporary copies");
    assert_eq!(local(&dir), server_tree);
    let mut want = vec![
        "a.txt".to_string(),
        copies[0].clone(),
        "mine.txt".into(),
        "new".into(),
        "new/n.txt".into(),
        "renamed.txt".into(),
        "sub".into(),
        "sub/b.txt".into(),
    ];
    want.sort();
    assert_eq!(names(&server_tree), want);
    let f = home.folder(&dir);
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    assert_eq!(f.mode, Mode::NewFilesOnly);
    // It stays new-files-only across a restart.
    home.stop();
    home.start();
    assert_eq!(home.folder(&dir).mode, Mode::NewFilesOnly);
    home.stop();
}

/// A bidirectional folder of a shared area whose server turns out to be a drop box: the run
/// that sends a new file (taken) and an edit (refused with 403) makes the folder
/// new-files-only, says why in `sync list`, and runs again: the edit ends as a conflict copy
/// on both sides, the server's version is unchanged and back under the name.
#[test]
fn a_folder_the_server_takes_only_new_files_in_becomes_new_files_only_on_apache() {
    let server = Server::apache_basic();
    let drive = Dav::fresh(&server, "fol-drive5");
    let boxed = Dav::fresh(&server, "fol-dropbox2");
    boxed.mkdir("Inbox");
    boxed.put("Inbox/n.txt", b"from the owner");
    let url = drop_box_url(&server, &boxed, "Inbox");
    let mut home = home_with_areas(&server, &drive, "Shared", &url, false);
    home.start();
    let dir = home.dir("Inbox");
    home.add(&dir, &["--area", "Shared", "--remote", "Inbox"]);
    home.sync_now(&dir);
    assert_eq!(home.folder(&dir).mode, Mode::Bidirectional);
    assert_eq!(std::fs::read(dir.join("n.txt")).unwrap(), b"from the owner");

    write(&dir.join("new.txt"), b"a new file");
    write(&dir.join("n.txt"), b"my edit, refused as a change");
    sync_now_keeping(&home, &dir);
    home.wait_until(
        30,
        "new-files-only, the edit kept as a copy on both sides",
        || {
            let copies: Vec<String> = local(&dir)
                .keys()
                .filter(|k| is_conflict_copy(k))
                .cloned()
                .collect();
            home.folder(&dir).mode == Mode::NewFilesOnly
                && std::fs::read(dir.join("n.txt")).is_ok_and(|b| b == b"from the owner")
                && copies.len() == 1
                && boxed.stat(&format!("Inbox/{}", copies[0])).is_some()
        },
    );
    let copy = local(&dir)
        .keys()
        .find(|k| is_conflict_copy(k))
        .cloned()
        .unwrap();
    assert_eq!(
        std::fs::read(dir.join(&copy)).unwrap(),
        b"my edit, refused as a change"
    );
    assert_eq!(
        boxed.get(&format!("Inbox/{copy}")),
        b"my edit, refused as a change"
    );
    assert!(
        home.log().contains("only new files are sent"),
        "the log says so"
    );
    assert_eq!(boxed.get("Inbox/n.txt"), b"from the owner");
    assert_eq!(boxed.get("Inbox/new.txt"), b"a new file");
    // Nothing lost: the visible server tree is the local one.
    home.sync_now(&dir);
    assert_eq!(local(&dir), visible(&boxed, "Inbox"));
    let f = home.folder(&dir);
    assert!(
        f.mode_reason.contains("refused a change") && f.mode_reason.contains("new files"),
        "{:?}",
        f.mode_reason
    );
    let txt = home.ok(&["sync", "list"]);
    assert!(
        txt.contains("new-files-only") && txt.contains("refused a change"),
        "{txt}"
    );
    // Kept across a restart; setting a mode by hand clears the reason.
    home.stop();
    home.start();
    assert_eq!(home.folder(&dir).mode, Mode::NewFilesOnly);
    home.ok(&["sync", "set", dir.to_str().unwrap(), "--mode", "new-files"]);
    assert_eq!(home.folder(&dir).mode_reason, "");
    home.stop();
}
