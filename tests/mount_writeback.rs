//! The durable upload queue on real mounts of real servers: a daemon killed right after
//! close(), a server stopped and started again, real network faults between the mount and the
//! server (a TCP proxy that cuts, stalls and refuses connections), another client's change
//! landing during the write-back delay, and a server out of space (507). The same behaviours on
//! the in-memory server and the fault injector: `writeback.rs`.
//!
//! Every test ends by checking through WebDAV that the server holds exactly the bytes written:
//! every file byte for byte, nothing missing, nothing extra — in particular no
//! `.cloudmount-upload-*` temporary left behind.
//!
//! File operations on a mount block in the kernel until the daemon answers: the tests are plain
//! `#[test]` functions (see `common::mount`).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use cloudmount::vfs::status::Connection;
use common::apache::PrivateApache;
use common::mount::*;
use common::proxy::{target_of, FaultProxy, ProxyMode};
use common::{pattern, sha256};

const MIB: usize = 1 << 20;

/// The prefix of the upload queue's temporary names on the server (src/vfs/upload.rs).
const TEMP_PREFIX: &str = ".cloudmount-upload-";

/// What a test expects below its server folder.
#[derive(Default)]
struct Want {
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
}

impl Want {
    fn file(&mut self, rel: &str, data: Vec<u8>) {
        self.files.insert(rel.to_string(), data);
    }

    fn dir(&mut self, rel: &str) {
        self.dirs.push(rel.to_string());
    }

    fn tree(&self) -> Tree {
        let mut t: Tree = self
            .files
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Node::File {
                        size: v.len() as u64,
                        sha256: sha256(v),
                    },
                )
            })
            .collect();
        for d in &self.dirs {
            t.insert(d.clone(), Node::Dir);
        }
        t
    }
}

fn describe(n: &Node) -> String {
    match n {
        Node::Dir => "a directory".into(),
        Node::File { size, sha256 } => format!("{size} B (sha256 {})", &sha256[..12]),
    }
}

/// The server holds exactly `want` below the test's folder: no temporary upload left, every
/// file byte-exact (an empty file only where one was written empty), nothing else.
fn assert_server_holds(dav: &Dav, want: &Want) {
    let got = dav.tree();
    let temps: Vec<&String> = got
        .keys()
        .filter(|k| k.rsplit('/').next().unwrap_or(k).starts_with(TEMP_PREFIX))
        .collect();
    assert!(
        temps.is_empty(),
        "{}: temporary uploads left on the server: {temps:?}",
        dav.server.name
    );
    let want = want.tree();
    let mut problems = Vec::new();
    for (k, w) in &want {
        match got.get(k) {
            None => problems.push(format!("  missing: {k:?} (written: {})", describe(w))),
            Some(g) if g != w => problems.push(format!(
                "  differs: {k:?}: the server has {}, written: {}",
                describe(g),
                describe(w)
            )),
            _ => {}
        }
    }
    for (k, g) in &got {
        if !want.contains_key(k) {
            problems.push(format!("  unexpected: {k:?} ({})", describe(g)));
        }
    }
    assert!(
        problems.is_empty(),
        "{}: the server does not hold exactly what was written:\n{}",
        dav.server.name,
        problems.join("\n")
    );
}

/// Every file of `want` reads back through the mount byte for byte.
fn assert_mount_reads(m: &Mounted, want: &Want) {
    for (rel, data) in &want.files {
        let got = read(&m.path(rel));
        assert!(
            got == *data,
            "{rel:?} read through the mount: {} B (sha256 {}), written: {} B (sha256 {})",
            got.len(),
            &sha256(&got)[..12],
            data.len(),
            &sha256(data)[..12]
        );
    }
}

/// Names people give files: unicode, spaces, `%`, `#` and friends.
const ODD: &[&str] = &[
    "plain",
    "with space",
    "100% done",
    "%20 literal",
    "#hash tag",
    "caf\u{e9}",
    "emoji \u{1f600}",
    "\u{4e2d}\u{6587}",
    "a&b=c+d",
    "it's",
    "question?mark",
    "[x]{y}",
    ".hidden",
    "semi;colon,comma",
];

/// Sizes from empty to 3 MiB, around the page, cache block and small-file edges.
const SIZES: &[usize] = &[
    0,
    1,
    17,
    4095,
    4096,
    65536,
    128 * 1024 + 1,
    300_000,
    MIB + 1,
    3 * MIB,
];

// ---------------------------------------------------------------------------------------------
// A crash

/// close() returned, then the daemon was SIGKILLed before any upload started (a 5 s write-back
/// delay): the next mount on the same cache dir uploads every file, byte for byte, and serves
/// them meanwhile.
#[test]
fn a_crash_right_after_close_loses_nothing() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "crash");
    let old = pattern(300_000, 200);
    dav.put("existing.doc", &old);
    let cache = tempfile::tempdir().unwrap();
    let opts = MountOpts::for_server(&s).cache_dir(cache.path());
    let mut m = Mounted::new(&dav.url, &opts.clone().write_back_delay("5s"));

    let mut want = Want::default();
    let sub = "sub dir #1 %";
    fs::create_dir(m.path(sub)).unwrap();
    want.dir(sub);
    let mut top_level = Vec::new();
    let started = Instant::now();
    for i in 0..50 {
        let size = match SIZES[i % SIZES.len()] {
            0 => 0,
            n if n == 3 * MIB => n - i / SIZES.len(),
            n => n + i / SIZES.len(),
        };
        let ext = if i % 3 == 0 { "" } else { ".bin" };
        let name = format!("{i:02} {}{ext}", ODD[i % ODD.len()]);
        let rel = if i % 5 == 4 {
            format!("{sub}/{name}")
        } else {
            top_level.push(name.clone());
            name
        };
        let data = pattern(size, i as u8);
        fs::write(m.path(&rel), &data).unwrap_or_else(|e| panic!("write {rel:?}: {e}"));
        want.file(&rel, data);
    }
    let rewritten = pattern(123_457, 201);
    fs::write(m.path("existing.doc"), &rewritten).unwrap();
    want.file("existing.doc", rewritten);
    // The last close returned: crash now.
    m.kill9();
    let burst = started.elapsed();

    // Before the crash nothing (or, on a very slow machine, not most) had left the machine.
    let on_server = dav.names("");
    let early: Vec<&String> = top_level.iter().filter(|n| on_server.contains(n)).collect();
    if burst < Duration::from_millis(4500) {
        assert!(
            early.is_empty(),
            "uploaded although the write-back delay (5 s) had not passed: {early:?}"
        );
        assert_eq!(
            sha256(&dav.get("existing.doc")),
            sha256(&old),
            "the rewrite reached the server before the delay passed"
        );
    } else {
        assert!(
            early.len() < top_level.len() / 2,
            "most files were uploaded before the crash ({} of {}, burst took {burst:?}): the \
             test shows nothing",
            early.len(),
            top_level.len()
        );
    }

    // What close() promised is in the cache dir: one committed record per file, of its size.
    let (records, bytes): (i64, i64) = rusqlite::Connection::open(cache.path().join("meta.db"))
        .expect("open meta.db after the crash")
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dirty",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read the dirty table");
    let written: usize = want.files.values().map(Vec::len).sum();
    if early.is_empty() {
        assert_eq!(
            (records, bytes),
            (want.files.len() as i64, written as i64),
            "queued records (count, bytes) after the crash"
        );
    } else {
        assert!(records as usize + early.len() >= want.files.len());
    }

    // The next mount on the same cache dir finds every closed file; it serves them at once
    // (from the local copies, whether or not uploaded yet) and uploads them by itself.
    let m = Mounted::new(&dav.url, &opts);
    for (rel, data) in &want.files {
        match fs::read(m.path(rel)) {
            Ok(got) => assert!(
                got == *data,
                "{rel:?} right after the restart: {} B read, {} B written",
                got.len(),
                data.len()
            ),
            // See the report of branch `wbtest`: the first lookup in a directory merges a
            // listing (the saved one, or a PROPFIND) taken before some recovered file finished
            // uploading, while that upload's end takes the file off the list of recovered
            // files that a merge attaches; the file is then missing from the tree until the
            // listing is older than --dir-cache-time.
            Err(e) => panic!(
                "KNOWN BUG (a race, intermittent): {rel:?}, closed before the crash, is \
                 missing from the mount right after the restart: {e}\ndaemon log:\n{}",
                m.daemon_log()
            ),
        }
    }
    m.settle();
    assert_server_holds(&dav, &want);
    assert_mount_reads(&m, &want);
    // Every file had been closed: nothing was set aside as "written, never closed".
    let recovered: Vec<_> = fs::read_dir(cache.path().join("recovered"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        recovered.is_empty(),
        "set aside in recovered/: {recovered:?}"
    );
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// The server stopped and started again

/// Apache is stopped under a live mount: writes and overwrites still succeed, a cached file
/// still reads, `status` says offline with the files queued and why; Apache comes back on the
/// same port and the queue drains by itself.
#[test]
fn an_outage_keeps_the_mount_usable_and_the_queue_drains_when_the_server_is_back() {
    let mut apache = PrivateApache::start();
    let s = apache.server();
    let dav = Dav::fresh(&s, "outage");
    let mut want = Want::default();
    let cached = pattern(700_000, 3);
    dav.put("cached.bin", &cached);
    want.file("cached.bin", cached.clone());
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    assert_eq!(read(&m.path("cached.bin")), cached);
    for i in 0..4u8 {
        let data = pattern(100_000 * i as usize + 5, i);
        let rel = format!("before {i}.txt");
        fs::write(m.path(&rel), &data).unwrap();
        want.file(&rel, data);
    }
    m.settle();
    assert_server_holds(&dav, &want);
    assert_eq!(m.status().connection, Connection::Online);

    apache.stop();
    // Down: new files, an overwrite and an append all succeed (close included).
    let mut queued = Vec::new();
    for i in 0..5u8 {
        let data = pattern([0, 1, 5000, MIB + 3, 2 * MIB][i as usize], 50 + i);
        let rel = format!("during {i} \u{e9}#%.bin");
        fs::write(m.path(&rel), &data).unwrap_or_else(|e| panic!("write {rel:?} offline: {e}"));
        want.file(&rel, data);
        queued.push(rel);
    }
    let over = pattern(250_000, 77);
    fs::write(m.path("before 1.txt"), &over).expect("overwrite offline");
    want.file("before 1.txt", over);
    queued.push("before 1.txt".into());
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("before 2.txt"))
        .expect("open for append offline");
    f.write_all(b" and a tail written offline").unwrap();
    drop(f);
    want.files
        .get_mut("before 2.txt")
        .unwrap()
        .extend_from_slice(b" and a tail written offline");
    queued.push("before 2.txt".into());

    // Reads work, also once the listing (trusted 1 s) has to be checked with the server.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(read(&m.path("cached.bin")), cached, "cached file offline");
    assert_mount_reads(&m, &want);
    let mut listed: Vec<String> = fs::read_dir(&m.dir)
        .expect("readdir offline")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = want.files.keys().cloned().collect();
    expected.sort();
    assert_eq!(listed, expected, "listing offline");

    let st = m.status_until(
        Duration::from_secs(15),
        "status shows the outage and the failed uploads",
        |st| {
            st.connection == Connection::Offline
                && st.queue.waiting_for_server == queued.len() as u64
        },
    );
    assert_eq!(st.queue.files, queued.len() as u64, "{st:#?}");
    // The connection error once, not once per waiting file.
    assert!(st.last_error.is_some(), "{st:#?}");
    assert!(st.errors.is_empty(), "{st:#?}");
    assert_eq!(state_of(&m.path(&queued[0])).unwrap(), "error");

    // Back on the same port; nobody touches the mount: the queue drains by itself.
    apache.restart();
    m.settle();
    assert_server_holds(&dav, &want);
    let st = m.status();
    assert_eq!(st.connection, Connection::Online, "{st:#?}");
    assert!(st.errors.is_empty(), "{st:#?}");
    assert_eq!(state_of(&m.path(&queued[0])).unwrap(), "cached");
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// Network faults through a TCP proxy

/// Mounts `dav`'s folder through `proxy`.
fn mount_through(proxy: &FaultProxy, dav: &Dav) -> Mounted {
    Mounted::new(
        &proxy.url_for(&dav.url),
        &MountOpts::for_server(&dav.server),
    )
}

/// Uploads of 2–8 MiB files cut midway by connection resets (several times) are retried and
/// land whole; the server never keeps a partial file or a temporary.
#[test]
fn uploads_cut_midway_by_connection_resets_land_whole() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "cut");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    let m = mount_through(&proxy, &dav);
    let mut want = Want::default();
    for (i, size) in [2 * MIB + 1, 5 * MIB - 3, 8 * MIB, 3 * MIB + 7]
        .into_iter()
        .enumerate()
    {
        let resets = proxy.resets();
        // The next connection to send data is reset once it forwarded 1–2 MiB: the upload
        // of this file, midway.
        proxy.reset_after_bytes(MIB as u64 + i as u64 * 300_000);
        let data = pattern(size, 40 + i as u8);
        let rel = format!("big {i} #%.bin");
        fs::write(m.path(&rel), &data).unwrap();
        want.file(&rel, data);
        eventually(
            Duration::from_secs(20),
            &format!("the upload of {rel:?} was cut"),
            || (proxy.resets() > resets).then_some(()),
        );
    }
    m.settle();
    assert!(proxy.resets() >= 4);
    let failed = m
        .daemon_log()
        .matches("upload failed; the file stays queued")
        .count();
    assert!(failed >= 4, "{failed} failed uploads logged, 4 cuts made");
    assert_server_holds(&dav, &want);
    assert_mount_reads(&m, &want);
    m.unmount();
}

/// The network stops moving bytes for a few seconds while uploads are under way: nothing
/// fails for good, and everything lands when it moves again.
#[test]
fn uploads_stalled_for_seconds_finish_when_bytes_move_again() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "stall");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    // The files are written while bytes move (creating them asks the server for the
    // listing); the stall starts before their uploads do, 2 s after each close.
    let m = Mounted::new(
        &proxy.url_for(&dav.url),
        &MountOpts::for_server(&s).write_back_delay("2s"),
    );
    let mut want = Want::default();
    for (i, size) in [3 * MIB, 4 * MIB + 1, 6 * MIB - 1].into_iter().enumerate() {
        let data = pattern(size, 60 + i as u8);
        let rel = format!("stalled {i}.bin");
        fs::write(m.path(&rel), &data).unwrap();
        want.file(&rel, data);
    }
    proxy.set_mode(ProxyMode::Stall);
    m.status_until(Duration::from_secs(10), "uploads under way", |st| {
        st.queue.in_flight >= 1
    });
    let up = proxy.bytes_up();
    std::thread::sleep(Duration::from_secs(3));
    let st = m.status();
    assert_eq!(
        st.queue.files, 3,
        "an upload finished during the stall: {st:#?}"
    );
    assert_eq!(proxy.bytes_up(), up, "bytes moved during the stall");
    proxy.set_mode(ProxyMode::Pass);
    m.settle();
    assert_server_holds(&dav, &want);
    assert_mount_reads(&m, &want);
    m.unmount();
}

/// Every connection is refused while 20 files are written: they queue, `status` says
/// offline; once connections are accepted again they all land.
#[test]
fn uploads_refused_for_a_while_land_once_connections_are_accepted() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "refuse");
    let proxy = FaultProxy::start_blocking(target_of(&s.url));
    let m = mount_through(&proxy, &dav);
    let mut want = Want::default();
    // The folder was looked at while the server answered (a folder never listed cannot
    // be written offline: nothing is known about it).
    assert_eq!(fs::read_dir(&m.dir).unwrap().count(), 0);
    proxy.go_offline();
    for i in 0..20usize {
        let data = pattern(i * 15_001, i as u8);
        let rel = format!("refused {i:02} {}.txt", ODD[i % ODD.len()]);
        fs::write(m.path(&rel), &data).unwrap_or_else(|e| panic!("write {rel:?}: {e}"));
        want.file(&rel, data);
    }
    let st = m.status_until(
        Duration::from_secs(15),
        "offline, every file failed once",
        |st| st.connection == Connection::Offline && st.queue.waiting_for_server == 20,
    );
    assert_eq!(st.queue.files, 20, "{st:#?}");
    assert!(
        dav.names("").is_empty(),
        "something got through the refusal"
    );
    proxy.set_mode(ProxyMode::Pass);
    m.settle();
    assert_server_holds(&dav, &want);
    assert_mount_reads(&m, &want);
    assert_eq!(m.status().connection, Connection::Online);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// A conflict

/// `doc.txt` is overwritten through the mount, and within the write-back delay changed on the
/// server by another machine: the other machine's version keeps the name, ours becomes the
/// one conflict copy; both show on the mount, and `status` lists the conflict.
#[test]
fn a_change_elsewhere_during_the_delay_keeps_both_versions() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "conflict");
    let base = b"version 0: the common base\n".to_vec();
    dav.put("doc.txt", &base);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).write_back_delay("3s"));
    assert_eq!(read(&m.path("doc.txt")), base);

    let ours = b"version 1: written through the mount\n".to_vec();
    fs::write(m.path("doc.txt"), &ours).unwrap();
    let closed = Instant::now();
    // Another machine's edit; another size, so Apache's ETag (mtime + size) changes even
    // within the same second.
    let theirs = b"version 1': written on another machine, and longer\n".to_vec();
    assert!(theirs.len() != ours.len() && theirs.len() != base.len());
    dav.put("doc.txt", &theirs);
    assert!(
        closed.elapsed() < Duration::from_millis(2500),
        "the other machine's edit took {:?}: not within the write-back delay (3 s)",
        closed.elapsed()
    );
    assert_eq!(m.status().queue.files, 1, "ours waits for the delay");

    m.settle();
    let names = dav.names("");
    let copies: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("doc (conflicted copy "))
        .collect();
    assert_eq!(copies.len(), 1, "one conflict copy expected: {names:?}");
    let copy = copies[0].clone();
    // doc (conflicted copy <host> YYYY-MM-DD HHMMSS).txt
    let inner = copy
        .strip_prefix("doc (conflicted copy ")
        .and_then(|r| r.strip_suffix(").txt"))
        .unwrap_or_else(|| panic!("conflict copy name {copy:?}"));
    let (host, stamp) = inner.split_at(inner.len().saturating_sub(18));
    assert!(!host.is_empty(), "no device name in {copy:?}");
    let stamp: Vec<char> = stamp.chars().collect();
    assert!(
        stamp.len() == 18
            && stamp[0] == ' '
            && stamp[5] == '-'
            && stamp[8] == '-'
            && stamp[11] == ' '
            && stamp
                .iter()
                .enumerate()
                .all(|(i, c)| [0, 5, 8, 11].contains(&i) || c.is_ascii_digit()),
        "timestamp of {copy:?} is not ` YYYY-MM-DD HHMMSS`"
    );
    let mut want = Want::default();
    want.file("doc.txt", theirs.clone());
    want.file(&copy, ours.clone());
    assert_server_holds(&dav, &want);

    // The mount shows both (once the listing is refreshed), with their contents.
    let mut expected = vec![copy.clone(), "doc.txt".to_string()];
    expected.sort();
    eventually(
        Duration::from_secs(10),
        "both versions listed on the mount",
        || {
            let mut l: Vec<String> = fs::read_dir(&m.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            l.sort();
            (l == expected).then_some(())
        },
    );
    eventually(
        Duration::from_secs(10),
        "doc.txt on the mount reads the other machine's version",
        || (read(&m.path("doc.txt")) == theirs).then_some(()),
    );
    assert_eq!(read(&m.path(&copy)), ours);
    assert_eq!(state_of(&m.path(&copy)).unwrap(), "conflict");
    let st = m.status();
    assert_eq!(st.conflicts.len(), 1, "{st:#?}");
    assert_eq!(st.conflicts[0].path, "doc.txt");
    assert_eq!(st.conflicts[0].copy, copy);
    assert_eq!(st.queue.files, 0);
    m.unmount();
}

/// Issue 14, bug two: `c.txt` read through the mount, changed on the server by another client,
/// then appended to through the mount. Both versions are kept: the other client's under the
/// name, ours (the base and the appended line) as the one conflict copy, and `status` lists
/// the conflict. On nginx, whose listings carry no ETag (GET and HEAD do), the server used to
/// end with the mount's version and no conflict; on Apache both were always kept.
fn an_edit_elsewhere_then_an_append_here_keeps_both(s: &Server) {
    let dav = Dav::fresh(s, "append-conflict");
    let base = b"line 1\n".to_vec();
    dav.put("c.txt", &base);
    let listed = dav.block_on(dav.remote.list(&dav.root)).unwrap();
    let lists_etags = listed.children.iter().any(|e| e.etag.is_some());
    assert_eq!(
        lists_etags,
        s.name != "nginx",
        "{}: whether the listing has ETags is what this test is about",
        s.name
    );
    // The listing is trusted for an hour: the append is based on the version read.
    let m = Mounted::new(&dav.url, &MountOpts::for_server(s).dir_cache_time("1h"));
    assert_eq!(read(&m.path("c.txt")), base);

    let theirs = b"line 1\nline 2, written by another client\n".to_vec();
    dav.put("c.txt", &theirs);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("c.txt"))
        .unwrap();
    f.write_all(b"line 2, appended through the mount\n")
        .unwrap();
    drop(f);
    m.settle();

    let names = dav.names("");
    let copies: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("c (conflicted copy ") && n.ends_with(").txt"))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "{}: one conflict copy expected (the other client's edit lost?): {names:?}, c.txt = {:?}",
        s.name,
        String::from_utf8_lossy(&dav.get("c.txt"))
    );
    let copy = copies[0].clone();
    let mut want = Want::default();
    want.file("c.txt", theirs);
    want.file(
        &copy,
        b"line 1\nline 2, appended through the mount\n".to_vec(),
    );
    assert_server_holds(&dav, &want);
    if s.name == "nginx" {
        // nginx lists no dot names: look for temporary uploads in its data dir instead.
        let dir =
            std::path::Path::new(&common::env("CLOUDMOUNT_TEST_NGINX_DIR")).join(dav.root.as_str());
        let mut on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut listed = vec![copy.clone(), "c.txt".to_string()];
        listed.sort();
        assert_eq!(on_disk, listed, "nginx data dir");
    }
    let st = m.status();
    assert_eq!(st.conflicts.len(), 1, "{}: {st:#?}", s.name);
    assert_eq!(st.conflicts[0].path, "c.txt");
    assert_eq!(st.conflicts[0].copy, copy);
    assert_eq!(st.queue.files, 0);
    m.unmount();
}

#[test]
fn an_edit_elsewhere_then_an_append_here_keeps_both_on_nginx() {
    an_edit_elsewhere_then_an_append_here_keeps_both(&Server::nginx());
}

#[test]
fn an_edit_elsewhere_then_an_append_here_keeps_both_on_apache() {
    an_edit_elsewhere_then_an_append_here_keeps_both(&Server::apache_basic());
}

// ---------------------------------------------------------------------------------------------
// A full server

/// The embedded server with a 3 MiB quota, 2.5 MiB of it used: a 1 MiB file closes fine but
/// its upload gets 507; uploads pause (status says why, `df` shows nothing available, a
/// growing write gets ENOSPC), the file reads back intact; another client frees space and the
/// queue resumes by itself. (The probe of a paused mount runs every 30 s by default; the hidden
/// `--space-retry 1s` makes it every second here.)
#[test]
fn a_full_server_pauses_uploads_until_space_is_freed() {
    let srv = common::embedded_server(Some("3M"));
    let s = Server::embedded(&srv);
    let dav = Dav::fresh(&s, "full");
    dav.put("filler.bin", &pattern(2560 * 1024, 1));
    let m = Mounted::new(
        &dav.url,
        &MountOpts::for_server(&s).arg("--space-retry").arg("1s"),
    );
    let big = pattern(MIB, 2);
    fs::write(m.path("big.bin"), &big).expect("close succeeds: the data is on local disk");

    let st = m.status_until(Duration::from_secs(15), "uploads paused", |st| {
        st.queue.paused.is_some()
    });
    let reason = st.queue.paused.clone().unwrap();
    assert!(reason.contains("507"), "paused because: {reason}");
    assert_eq!(st.queue.files, 1, "{st:#?}");
    assert!(st.errors.iter().any(|e| e.path == "big.bin"), "{st:#?}");
    let vfs = statvfs(&m.dir);
    assert_eq!(vfs.f_bavail, 0, "df shows space available while paused");
    assert_eq!(vfs.f_bfree, 0);

    // What could not be uploaded is refused now rather than lost later.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("big.bin"))
        .unwrap();
    let e = errno_of(f.write_all(b"more"), "a growing write while paused");
    assert_eq!(e, libc::ENOSPC);
    drop(f);
    assert_eq!(read(&m.path("big.bin")), big, "intact on the mount");

    // Still full: the probes (every second) get 507 too, and the file stays queued.
    let st = m.status_until(Duration::from_secs(10), "probed again", |st| {
        st.errors
            .iter()
            .any(|e| e.path == "big.bin" && e.attempts >= 3)
    });
    assert!(st.queue.paused.is_some(), "{st:#?}");
    assert!(dav.stat("big.bin").is_none(), "on the server although full");

    // Another client frees space; nobody touches the mount.
    dav.delete("filler.bin");
    m.settle();
    let st = m.status();
    assert!(st.queue.paused.is_none(), "{st:#?}");
    assert!(st.errors.is_empty(), "{st:#?}");
    let mut want = Want::default();
    want.file("big.bin", big.clone());
    assert_server_holds(&dav, &want);
    assert_eq!(read(&m.path("big.bin")), big);
    // Growing writes work again.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("big.bin"))
        .unwrap();
    f.write_all(b"more").expect("a growing write once resumed");
    drop(f);
    m.settle();
    let mut grown = big;
    grown.extend_from_slice(b"more");
    want.file("big.bin", grown);
    assert_server_holds(&dav, &want);
    m.unmount();
}

/// KNOWN BUG (fails): a file that fits on the server once but not twice cannot be changed.
///
/// The embedded server with a 2 MiB quota holds `doc.bin`, 1.25 MiB. It is rewritten through
/// the mount with new bytes of the same size — the change needs no extra space. The upload
/// goes to `.cloudmount-upload-<id>.part` first and is MOVEd over `doc.bin` afterwards, so the
/// server must hold both copies at once (2.5 MiB): it answers 507 to every attempt and the
/// change never reaches the server. Worse, the 507 pauses the whole mount: every growing write
/// (even a new 5-byte file) gets ENOSPC for as long as this one file is queued, and every probe
/// retries this same record. The same happens on any real account that is more than half full
/// when a large file is edited. See the report of branch `wbtest`.
#[test]
fn a_file_that_fits_once_but_not_twice_can_still_be_changed() {
    let srv = common::embedded_server(Some("2M"));
    let s = Server::embedded(&srv);
    let dav = Dav::fresh(&s, "twice");
    dav.put("doc.bin", &pattern(1280 * 1024, 5));
    let m = Mounted::new(
        &dav.url,
        &MountOpts::for_server(&s).arg("--space-retry").arg("1s"),
    );
    let new = pattern(1280 * 1024, 6);
    fs::write(m.path("doc.bin"), &new).unwrap();
    let mut want = Want::default();
    want.file("doc.bin", new);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = m.status();
        if st.queue.files == 0 {
            break;
        }
        if Instant::now() > deadline {
            let small = errno_of(fs::write(m.path("small.txt"), b"small"), "a small new file");
            panic!(
                "KNOWN BUG: a same-size rewrite of a 1.25 MiB file on a 2 MiB quota never \
                 reaches the server (its temporary copy needs room for both versions: 507 every \
                 time), and meanwhile writing a 5-byte new file fails with errno {small} \
                 (ENOSPC = {}). status: {st:#?}",
                libc::ENOSPC
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_server_holds(&dav, &want);
    fs::write(m.path("small.txt"), b"small").expect("a small new file");
    want.file("small.txt", b"small".to_vec());
    m.settle();
    assert_server_holds(&dav, &want);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// The WebDAV client's timeout on a slow upload

/// A WebDAV "server" on a slow link: it reads request bodies at about 2 MiB/s, in small steps
/// (never silent for more than ~10 ms), then answers `201 Created`.
fn slow_sink() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read};
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Small receive buffers (inherited by accepted sockets), so the body really moves at the
    // reading pace instead of vanishing into the kernel's buffers.
    let size: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUF");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut first = String::new();
                    if r.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut buf = vec![0u8; 20 * 1024];
                    while len > 0 {
                        let n = r.read(&mut buf[..len.min(20 * 1024)]).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        len -= n;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let reply = if first.starts_with("PUT ") {
                        "HTTP/1.1 201 Created\r\nETag: \"1\"\r\nContent-Length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                    };
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upload that keeps moving is not cut by the client's read timeout, however long it takes
/// in total.
///
/// `WebDavConfig::read_timeout` (60 s in the daemon) used to be given to reqwest's
/// `ClientBuilder::read_timeout`, which in reqwest 0.12 arms one timer when a request is sent
/// and does not reset it while the request body is being written (reqwest issue #2784): any
/// upload taking longer than 60 s — 100 MB over a 10 Mbit/s uplink — failed with "operation
/// timed out" on every attempt. The client now enforces the timeout itself and cuts an upload
/// only when it stops making progress. Here: a 2 s read timeout and a server that takes its
/// 16 MiB body at about 2 MiB/s, never pausing for more than a few milliseconds.
#[test]
fn an_upload_slower_than_the_read_timeout_is_not_cut() {
    use cloudmount::remote::webdav::{WebDavConfig, WebDavRemote};
    use cloudmount::remote::{PutBody, PutCondition, Remote, RemotePath};
    let addr = slow_sink();
    let mut cfg = WebDavConfig::new(format!("http://{addr}/"));
    cfg.read_timeout = Duration::from_secs(2);
    cfg.retries = 0;
    let remote = WebDavRemote::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    let len = 16 * MIB;
    fs::write(&file, pattern(len, 9)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let res = rt.block_on(remote.put(
        &RemotePath::new("big.bin").unwrap(),
        PutBody::File {
            path: file,
            len: len as u64,
        },
        PutCondition::None,
    ));
    let took = started.elapsed();
    assert!(
        res.is_ok(),
        "an upload still moving after {took:?} was cut by the 2 s read timeout: {:?}",
        res.err()
    );
    assert!(
        took > Duration::from_secs(4),
        "the upload took only {took:?}: the test did not make it slower than the read timeout"
    );
}
