//! Sync folders registered in the account, against real servers: two or three "computers"
//! (homes with their own XDG directories, hence their own computer ids and daemons) on one
//! account (the same test folder of one server), driven with the `cloudmount` commands; and
//! two profiles of one account in one home (one computer, two participants).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cloudmount::sync::registry::{Registry, REGISTRY_PATH};
use common::mount::{Dav, Server};
use common::proxy::{target_of, FaultProxy, ProxyMode};
use common::sync::{local, text, write, SyncHome};

/// A computer of the account at `url`, its daemon running.
fn computer(server: &Server, url: &str) -> SyncHome {
    let mut h = SyncHome::new(server, url);
    h.start();
    h
}

/// Computers a and b of the account, the folder `Docs` (x.txt) added on a, activated on b,
/// both synced: (a, b, a's Docs, b's Docs).
fn docs_on_two_computers(server: &Server, dav: &Dav) -> (SyncHome, SyncHome, PathBuf, PathBuf) {
    let a = computer(server, &dav.url);
    let b = computer(server, &dav.url);
    let da = a.dir("Docs");
    write(&da.join("x.txt"), b"x");
    a.add(&da, &[]);
    a.sync_now(&da);
    b.ok(&["sync", "activate", "Docs"]);
    let db = b.dir("Docs");
    b.sync_now(&db);
    (a, b, da, db)
}

/// The registry as the server holds it.
fn registry(dav: &Dav) -> Registry {
    let bytes = dav.get(REGISTRY_PATH);
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{REGISTRY_PATH}: {e}: {}", String::from_utf8_lossy(&bytes)))
}

fn computer_id(h: &SyncHome) -> String {
    std::fs::read_to_string(h.path().join(".local/share/cloudmount/computer-id"))
        .expect("the computer id")
        .trim()
        .to_string()
}

fn inactive_names(h: &SyncHome) -> Vec<String> {
    let mut v: Vec<String> = h.account().folders.into_iter().map(|f| f.name).collect();
    v.sort();
    v
}

/// The hosts whose computers have `name` active, by computer id.
fn active_on(reg: &Registry, name: &str) -> Vec<String> {
    let e = reg
        .folders
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is not registered: {reg:?}"));
    let mut v: Vec<String> = e.active.iter().map(|a| a.computer.clone()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Who has `name` active: (computer id, profile), sorted.
fn participants(reg: &Registry, name: &str) -> Vec<(String, Option<String>)> {
    let e = reg
        .folders
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is not registered: {reg:?}"));
    let mut v: Vec<_> = e
        .active
        .iter()
        .map(|a| (a.computer.clone(), a.profile.clone()))
        .collect();
    v.sort();
    v
}

/// How two homes of one user on this host show each other: `user@host #id…`, each with a
/// prefix of its own id, never the same.
fn homes_are_told_apart(a: &SyncHome, b: &SyncHome) {
    let user = common::env("CLOUDMOUNT_TEST_UNIX_USER");
    let host = cloudmount::transfer::conflict::device_name();
    let (ra, rb) = (a.account(), b.account());
    let me = format!("{user}@{host} #{}", &computer_id(a)[..4]);
    let them = format!("{user}@{host} #{}", &computer_id(b)[..4]);
    assert!(ra.shown.starts_with(&me), "{} vs {me}", ra.shown);
    assert!(rb.shown.starts_with(&them), "{} vs {them}", rb.shown);
    assert_ne!(ra.shown, rb.shown);
    // Each shows the other as the other shows itself.
    for (r, other) in [(&ra, &rb), (&rb, &ra)] {
        for f in &r.folders {
            assert_eq!(f.added_by, other.shown, "{r:?}");
            assert_eq!(f.active.len(), 1, "{r:?}");
            assert_eq!(f.active[0].shown, other.shown, "{r:?}");
        }
    }
    let list = a.ok(&["sync", "list"]);
    assert!(
        list.contains(&format!("Inactive on this computer ({};", ra.shown)),
        "{list}"
    );
    assert!(
        list.contains(&format!("inactive (added on {}, ", rb.shown)),
        "{list}"
    );
    assert!(
        list.contains(&format!("active on: {} at ", rb.shown)),
        "{list}"
    );
}

fn registration_race(server: Server) {
    let dav = Dav::fresh(&server, "reg-race");
    let a = computer(&server, &dav.url);
    let b = computer(&server, &dav.url);
    // Three folders each, all added at the same moment from two computers: six processes.
    let mut children = Vec::new();
    for (h, tag) in [(&a, "a"), (&b, "b")] {
        for i in 0..3 {
            let dir = h.dir(&format!("{tag}{i}"));
            write(&dir.join("f.txt"), tag.as_bytes());
            let mut cmd = h.command();
            cmd.args(["sync", "add", dir.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            children.push(cmd.spawn().expect("spawn sync add"));
        }
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "sync add: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("registered in the account (the other"),
            "{said}"
        );
    }
    let reg = registry(&dav);
    let names = sorted(reg.folders.iter().map(|e| e.name.clone()).collect());
    assert_eq!(
        names,
        ["a0", "a1", "a2", "b0", "b1", "b2"],
        "every folder survives"
    );
    for i in 0..3 {
        assert_eq!(active_on(&reg, &format!("a{i}")), [computer_id(&a)]);
        assert_eq!(active_on(&reg, &format!("b{i}")), [computer_id(&b)]);
    }
    // Each computer shows the other's folders as inactive, with where they were added.
    assert_eq!(inactive_names(&a), ["b0", "b1", "b2"]);
    assert_eq!(inactive_names(&b), ["a0", "a1", "a2"]);
    let list = a.ok(&["sync", "list"]);
    assert!(list.contains("Inactive on this computer"), "{list}");
    assert!(list.contains("inactive (added on "), "{list}");
    assert_ne!(
        computer_id(&a),
        computer_id(&b),
        "two homes are two computers"
    );
    homes_are_told_apart(&a, &b);
}

#[test]
fn two_computers_adding_at_once_both_survive_on_apache() {
    registration_race(Server::apache_basic());
}

#[test]
fn two_computers_adding_at_once_both_survive_on_the_embedded_server() {
    let s = common::embedded_server(None);
    registration_race(Server::embedded(&s));
}

#[test]
fn activating_into_an_empty_and_into_a_non_empty_folder() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "reg-activate");
    let laptop = computer(&server, &dav.url);
    let projects = laptop.dir("Projects");
    write(&projects.join("a.txt"), b"alpha");
    write(&projects.join("sub/b.txt"), b"beta");
    laptop.add(&projects, &[]);
    laptop.sync_now(&projects);

    // The desktop: inactive until activated; then into ~/Projects, created.
    let desktop = computer(&server, &dav.url);
    assert_eq!(inactive_names(&desktop), ["Projects"]);
    assert!(desktop.list().is_empty());
    let out = desktop.ok(&["sync", "activate", "Projects"]);
    assert!(out.contains("activated Projects"), "{out}");
    let here = desktop.dir("Projects");
    assert_eq!(
        desktop.folder(&here).remote,
        laptop.folder(&projects).remote
    );
    desktop.sync_now(&here);
    assert_eq!(local(&here), local(&projects));
    assert!(inactive_names(&desktop).is_empty());
    assert_eq!(
        active_on(&registry(&dav), "Projects"),
        sorted(vec![computer_id(&laptop), computer_id(&desktop)])
    );
    // Activating it twice is refused.
    let err = desktop.fails(&["sync", "activate", "Projects"]);
    assert!(err.contains("already synced on this computer"), "{err}");

    // A third computer has its own copy already, with a file changed and one of its own.
    let third = computer(&server, &dav.url);
    let mine = third.dir("work/P");
    write(&mine.join("a.txt"), b"alpha, changed on the third computer");
    write(&mine.join("sub/b.txt"), b"beta");
    write(&mine.join("only-here.txt"), b"mine");
    let out = third.ok(&["sync", "activate", "Projects", mine.to_str().unwrap()]);
    assert!(out.contains("files already there are kept"), "{out}");
    third.sync_now(&mine);
    let t = local(&mine);
    assert_eq!(std::fs::read(mine.join("a.txt")).unwrap(), b"alpha");
    let copies: Vec<&String> = t
        .keys()
        .filter(|k| k.starts_with("a (conflicted copy "))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", t.keys());
    assert_eq!(
        std::fs::read(mine.join(copies[0])).unwrap(),
        b"alpha, changed on the third computer"
    );
    assert_eq!(std::fs::read(mine.join("only-here.txt")).unwrap(), b"mine");
    assert_eq!(dav.get("Projects/only-here.txt"), b"mine");
    assert_eq!(dav.get("Projects/a.txt"), b"alpha");
    assert!(dav.stat(&format!("Projects/{}", copies[0])).is_some());
}

#[test]
fn remove_on_one_computer_leaves_the_others_syncing() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "reg-remove");
    let (a, b, da, db) = docs_on_two_computers(&server, &dav);

    let out = b.ok(&["sync", "remove", db.to_str().unwrap()]);
    assert!(
        out.contains("the other computers where it is active keep syncing it"),
        "{out}"
    );
    assert_eq!(active_on(&registry(&dav), "Docs"), [computer_id(&a)]);
    assert_eq!(inactive_names(&b), ["Docs"]);
    assert!(inactive_names(&a).is_empty());
    // The files stay on b; a goes on syncing.
    assert_eq!(std::fs::read(db.join("x.txt")).unwrap(), b"x");
    write(&da.join("y.txt"), b"y");
    a.sync_now(&da);
    assert_eq!(dav.get("Docs/y.txt"), b"y");
    assert!(!db.join("y.txt").exists(), "b no longer syncs it");
}

#[test]
fn forget_removes_the_folder_from_every_computer_and_deletes_nothing() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "reg-forget");
    let (a, b, da, db) = docs_on_two_computers(&server, &dav);
    let keep = a.dir("Keep");
    write(&keep.join("k.txt"), b"k");
    a.add(&keep, &[]);

    // Without a terminal, forget wants --yes.
    let err = a.fails(&["sync", "forget", "Docs"]);
    assert!(err.contains("--yes"), "{err}");
    assert!(registry(&dav).folders.iter().any(|e| e.name == "Docs"));

    let out = a.ok(&["sync", "forget", "Docs", "--yes"]);
    assert!(out.contains("no file was deleted"), "{out}");
    let reg = registry(&dav);
    assert!(reg.folders.iter().all(|e| e.name != "Docs"), "{reg:?}");
    assert!(reg.folders.iter().any(|e| e.name == "Keep"), "{reg:?}");
    assert!(a.list().iter().all(|f| f.local != da));
    // The other computer stops when it next reads the registry; nothing deleted anywhere.
    b.wait_until(30, "b to stop syncing the forgotten folder", || {
        b.list().iter().all(|f| f.local != db)
    });
    assert_eq!(std::fs::read(da.join("x.txt")).unwrap(), b"x");
    assert_eq!(std::fs::read(db.join("x.txt")).unwrap(), b"x");
    assert_eq!(dav.get("Docs/x.txt"), b"x");
    assert!(!inactive_names(&b).contains(&"Docs".to_string()));
    // b's daemon, restarted, does not register it again.
    let mut b = b;
    b.stop();
    b.start();
    std::thread::sleep(Duration::from_secs(3));
    assert!(registry(&dav).folders.iter().all(|e| e.name != "Docs"));
}

#[test]
fn adds_and_removes_made_offline_reach_the_registry_later() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "reg-offline");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut a = computer(&server, &proxy.url_for(&dav.url));
    let gone = a.dir("Gone");
    a.add(&gone, &[]);
    assert!(registry(&dav).folders.iter().any(|e| e.name == "Gone"));

    proxy.go_offline();
    let dir = a.dir("Offline");
    write(&dir.join("o.txt"), b"o");
    let out = a.ok(&["sync", "add", dir.to_str().unwrap()]);
    assert!(out.contains("as soon as the server answers"), "{out}");
    let out = a.ok(&["sync", "remove", gone.to_str().unwrap()]);
    assert!(out.contains("as soon as the server answers"), "{out}");
    let list = a.ok(&["sync", "list"]);
    assert!(list.contains("wait for the server"), "{list}");
    // Kept across a restart of the daemon.
    a.stop();
    a.start();
    let reg = registry(&dav);
    assert!(reg.folders.iter().all(|e| e.name != "Offline"));
    assert_eq!(active_on(&reg, "Gone"), [computer_id(&a)]);

    proxy.set_mode(ProxyMode::Pass);
    a.wait_until(60, "the registry updated once the server answered", || {
        let reg = registry(&dav);
        reg.folders.iter().any(|e| e.name == "Offline") && active_on(&reg, "Gone").is_empty()
    });
    assert_eq!(a.account().pending, 0);
}

#[test]
fn two_profiles_of_one_account_in_one_home_are_two_participants() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "reg-profiles");
    let mut work = SyncHome::new(&server, &dav.url);
    let mut other = work.add_profile(&server, &dav.url, "home");
    work.start();
    other.start();
    let id = computer_id(&work);
    let t = (id.clone(), Some(work.profile().to_string()));
    let h = (id, Some("home".to_string()));

    let p = work.dir("Projects");
    write(&p.join("x.txt"), b"x");
    work.add(&p, &[]);
    work.sync_now(&p);
    assert_eq!(
        participants(&registry(&dav), "Projects"),
        std::slice::from_ref(&t)
    );

    // The other profile lists it inactive, active on the first profile of this computer.
    assert_eq!(inactive_names(&other), ["Projects"]);
    let seen = other.account();
    assert!(seen.shown.ends_with(" (profile home)"), "{seen:?}");
    let on = &seen.folders[0].active[0];
    assert!(
        on.shown
            .ends_with(&format!(" (profile {})", work.profile())),
        "{seen:?}"
    );
    assert!(
        other.ok(&["sync", "list"]).contains(&format!(
            "active on: {} at {}",
            on.shown,
            p.display()
        )),
        "{seen:?}"
    );
    // Its loop (a read every 4 s) does not take that activation for its own.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        participants(&registry(&dav), "Projects"),
        std::slice::from_ref(&t)
    );

    // Activated in the other profile too (into its own folder of the same home).
    let q = other.dir("Projects-home");
    let out = other.ok(&["sync", "activate", "Projects", q.to_str().unwrap()]);
    assert!(out.contains("activated Projects"), "{out}");
    other.sync_now(&q);
    assert_eq!(local(&q), local(&p));
    assert_eq!(participants(&registry(&dav), "Projects"), [h, t.clone()]);
    assert!(inactive_names(&work).is_empty() && inactive_names(&other).is_empty());

    // Removed there: the first profile keeps syncing it, now and after the other's loop ran.
    let out = other.ok(&["sync", "remove", q.to_str().unwrap()]);
    assert!(out.contains("keep syncing it"), "{out}");
    assert_eq!(
        participants(&registry(&dav), "Projects"),
        std::slice::from_ref(&t)
    );
    write(&p.join("y.txt"), b"y");
    work.sync_now(&p);
    assert_eq!(dav.get("Projects/y.txt"), b"y");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(participants(&registry(&dav), "Projects"), [t]);
    assert_eq!(work.folder(&p).remote, "Projects");
    assert!(other.list().is_empty());
    assert_eq!(inactive_names(&other), ["Projects"]);
    assert!(
        !q.join("y.txt").exists(),
        "the other profile no longer syncs it"
    );
}
