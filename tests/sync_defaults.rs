//! A profile's default sync folders on real servers: the first start of the profile's daemon on
//! a computer makes the active default sync here (merging a local folder that has files) and
//! registers the inactive ones in the account; a default removed later stays removed at the
//! next start; `sync activate` puts an inactive default at its XDG folder.

mod common;

use std::path::Path;

use cloudmount::sync::folder::{Mode, Schedule};
use cloudmount::sync::report::FolderState;
use common::mount::{Dav, Server};
use common::sync::{write, SyncHome};

const DEFAULTS: &str = r#"
[[profiles.t.default_folders]]
name = "Blue"
remote = "Documents/Blue"
local = "~/Documents/Blue"
active = true

[[profiles.t.default_folders]]
name = "Pictures"
remote = "Documents/Pictures"
local = "xdg:PICTURES"
mode = "upload-only"
schedule = "weekly"
active = false
"#;

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

fn default_folders_on_first_start(server: Server) {
    let dav = Dav::fresh(&server, "defaults");
    let mut h = SyncHome::with_profile_extra(&server, &dav.url, DEFAULTS);
    // The user's pictures are somewhere else than ~/Pictures.
    write(
        &h.path().join(".config/user-dirs.dirs"),
        b"# written by xdg-user-dirs-update\nXDG_PICTURES_DIR=\"$HOME/Bilder\"\n",
    );
    // The blue folder exists on both sides already, with different files: merged.
    let blue = h.dir("Documents/Blue");
    write(&blue.join("mine.txt"), b"local");
    dav.mkdir("Documents");
    dav.mkdir("Documents/Blue");
    dav.put("Documents/Blue/theirs.txt", b"server");

    h.start();
    let f = h.folder(&blue);
    assert_eq!(f.remote, "Documents/Blue");
    assert_eq!(
        (f.mode, f.schedule),
        (Mode::Bidirectional, Schedule::Immediate)
    );
    h.wait_state(&blue, FolderState::UpToDate);
    assert_eq!(
        read(&blue.join("theirs.txt")).as_deref(),
        Some(&b"server"[..])
    );
    assert_eq!(dav.get("Documents/Blue/mine.txt"), b"local");
    // A file put on the server later comes down.
    dav.put("Documents/Blue/later.txt", b"later");
    h.wait_until(30, "later.txt to come down", || {
        read(&blue.join("later.txt")).as_deref() == Some(&b"later"[..])
    });

    // The inactive default is in the account, inactive here, upload-only and weekly.
    let acc = h.account();
    let pics: Vec<_> = acc
        .folders
        .iter()
        .filter(|f| f.remote == "Documents/Pictures")
        .collect();
    assert_eq!(pics.len(), 1, "{acc:?}");
    assert_eq!(pics[0].name, "Pictures");
    assert!(!pics[0].active_here && pics[0].active.is_empty(), "{acc:?}");
    assert_eq!(
        (pics[0].mode, pics[0].schedule),
        (Mode::UploadOnly, Schedule::Weekly)
    );
    let list = h.ok(&["sync", "list"]);
    assert!(list.contains("Pictures"), "{list}");
    assert!(list.contains("Inactive on this computer"), "{list}");
    assert!(
        !h.path().join("Bilder").exists(),
        "an inactive default creates nothing locally"
    );

    // Removed by the user, the default stays removed at the next start.
    h.ok(&["sync", "remove", blue.to_str().unwrap()]);
    h.stop();
    h.start();
    assert!(
        h.list().iter().all(|f| f.remote != "Documents/Blue"),
        "{:?}\n{}",
        h.list(),
        h.log()
    );
    let acc = h.account();
    assert_eq!(
        acc.folders
            .iter()
            .filter(|f| f.remote == "Documents/Pictures")
            .count(),
        1,
        "registered once: {acc:?}"
    );

    // Activated without a local folder: the user's XDG pictures folder, as registered.
    let out = h.ok(&["sync", "activate", "Pictures"]);
    let bilder = h.dir("Bilder");
    assert!(out.contains(bilder.to_str().unwrap()), "{out}");
    let f = h.folder(&bilder);
    assert_eq!((f.mode, f.schedule), (Mode::UploadOnly, Schedule::Weekly));
    assert!(bilder.is_dir());
}

#[test]
fn default_folders_on_first_start_on_apache() {
    default_folders_on_first_start(Server::apache_basic());
}

#[test]
fn default_folders_on_first_start_on_the_embedded_server() {
    let s = common::embedded_server(None);
    default_folders_on_first_start(Server::embedded(&s));
}
