//! Folder and name changes on a real mount with the server unreachable (a TCP proxy refusing
//! every connection): `mkdir`, `rmdir`, `rm` and `mv` succeed at once, show in listings (also
//! after the daemon is killed and started again while still offline), are counted by
//! `status`, and reach the server, in order, once it answers again. A file changed on the
//! server after it was deleted offline is kept. The same on the in-memory server:
//! `src/vfs/offline_tests.rs`.

mod common;

use std::fs;
use std::time::Duration;

use cloudmount::vfs::status::Connection;
use common::mount::*;
use common::pattern;
use common::proxy::{target_of, FaultProxy, ProxyMode};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn file(data: &[u8]) -> Node {
    Node::File {
        size: data.len() as u64,
        sha256: common::sha256(data),
    }
}

/// mkdir d; write d/f; mv a b; rm c; rmdir e — all with the server unreachable, the daemon
/// killed and started again in between; then the server answers: it holds exactly the result.
#[test]
fn offline_mkdir_write_mv_rm_rmdir_reach_the_server_in_order_after_a_restart() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "offline-ns");
    let a = pattern(70_000, 1);
    let c = pattern(1234, 2);
    let keep = pattern(10, 3);
    dav.put("a.txt", &a);
    dav.put("c.txt", &c);
    dav.put("keep.txt", &keep);
    dav.mkdir("e");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    let cache = tempfile::tempdir().unwrap();
    let opts = MountOpts::for_server(&s).cache_dir(cache.path());
    let url = proxy.url_for(&dav.url);
    let mut m = Mounted::new(&url, &opts);
    assert_eq!(names(&m.dir), ["a.txt", "c.txt", "e", "keep.txt"]);
    assert!(names(&m.path("e")).is_empty());
    // Read once, so it is cached: a file never read cannot be read offline (EIO).
    assert_eq!(read(&m.path("a.txt")), a);

    proxy.go_offline();
    let f = pattern(300_000, 4);
    fs::create_dir(m.path("d")).expect("mkdir offline");
    fs::write(m.path("d/f.bin"), &f).expect("write into a folder made offline");
    fs::rename(m.path("a.txt"), m.path("b.txt")).expect("mv offline");
    fs::remove_file(m.path("c.txt")).expect("rm offline");
    fs::remove_dir(m.path("e")).expect("rmdir offline");
    let local = ["b.txt", "d", "keep.txt"];
    assert_eq!(names(&m.dir), local);
    assert_eq!(names(&m.path("d")), ["f.bin"]);
    assert_eq!(
        read(&m.path("b.txt")),
        a,
        "a cached file moved offline reads"
    );
    let st = m.status_until(
        Duration::from_secs(20),
        "offline, the changes counted",
        |st| st.connection == Connection::Offline && st.queue.namespace_ops == 4,
    );
    assert_eq!(st.queue.files, 1, "{st:#?}");
    assert!(
        m.status_text().contains("4 folder or name changes"),
        "{}",
        m.status_text()
    );
    assert_eq!(dav.names(""), ["a.txt", "c.txt", "e", "keep.txt"]);

    // A crash, and a start while the server is still unreachable.
    m.kill9();
    let m = Mounted::new(&url, &opts);
    assert_eq!(names(&m.dir), local, "after a restart, offline");
    assert_eq!(names(&m.path("d")), ["f.bin"]);
    assert_eq!(read(&m.path("d/f.bin")), f);
    assert_eq!(m.status().queue.namespace_ops, 4);

    proxy.set_mode(ProxyMode::Pass);
    m.settle();
    let mut want = Tree::new();
    want.insert("b.txt".into(), file(&a));
    want.insert("keep.txt".into(), file(&keep));
    want.insert("d".into(), Node::Dir);
    want.insert("d/f.bin".into(), file(&f));
    assert_trees_equal("the server after the replay", &dav.tree(), &want);
    let st = m.status();
    assert!(st.notices.is_empty(), "{st:#?}");
    assert_eq!(names(&m.dir), local);
    m.unmount();
}

/// A file deleted offline but changed on the server meanwhile is not deleted: the server's
/// version is kept, shows again on the mount, and `status` says why.
#[test]
fn a_file_changed_on_the_server_after_an_offline_rm_is_kept() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "offline-rm");
    dav.put("c.txt", b"first version");
    dav.put("gone.txt", b"unchanged");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    let m = Mounted::new(
        &proxy.url_for(&dav.url),
        &MountOpts::for_server(&s).dir_cache_time("1s"),
    );
    assert_eq!(names(&m.dir), ["c.txt", "gone.txt"]);
    proxy.go_offline();
    fs::remove_file(m.path("c.txt")).expect("rm offline");
    fs::remove_file(m.path("gone.txt")).expect("rm offline");
    assert!(names(&m.dir).is_empty());
    // Another machine changes c.txt (straight to the server, not through the proxy).
    std::thread::sleep(Duration::from_millis(1100));
    dav.put("c.txt", b"changed elsewhere, longer");
    proxy.set_mode(ProxyMode::Pass);
    m.settle();
    assert_eq!(dav.get("c.txt"), b"changed elsewhere, longer");
    assert!(
        dav.stat("gone.txt").is_none(),
        "the unchanged file is deleted"
    );
    let st = m.status();
    assert_eq!(st.notices.len(), 1, "{st:#?}");
    assert_eq!(st.notices[0].path, "c.txt");
    assert!(m.status_text().contains("the server's version is kept"));
    eventually(Duration::from_secs(10), "c.txt shows again", || {
        (names(&m.dir) == ["c.txt"]).then_some(())
    });
    assert_eq!(read(&m.path("c.txt")), b"changed elsewhere, longer");
    m.unmount();
}

/// `unmount` right after the server is back waits for the changes made offline, as it waits
/// for uploads: the server has them when it returns.
#[test]
fn unmount_waits_for_the_changes_made_offline() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "offline-unmount");
    dav.put("old.txt", b"to delete");
    dav.put("name.txt", b"to rename");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    let m = Mounted::new(&proxy.url_for(&dav.url), &MountOpts::for_server(&s));
    assert_eq!(names(&m.dir), ["name.txt", "old.txt"]);
    proxy.go_offline();
    fs::create_dir(m.path("made")).expect("mkdir offline");
    fs::remove_file(m.path("old.txt")).expect("rm offline");
    fs::rename(m.path("name.txt"), m.path("made/renamed.txt")).expect("mv offline");
    assert_eq!(m.status().queue.namespace_ops, 3);
    proxy.set_mode(ProxyMode::Pass);
    m.unmount();
    let mut want = Tree::new();
    want.insert("made".into(), Node::Dir);
    want.insert("made/renamed.txt".into(), file(b"to rename"));
    assert_trees_equal("the server after unmount", &dav.tree(), &want);
}
