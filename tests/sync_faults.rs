//! Sync folders under faults, against real servers: the server restarted mid-sync, connections
//! reset during transfers, an inotify queue overflow, the daemon killed with SIGKILL during a
//! large sync, a 2 GiB file, an edit racing a download of the same file, a file that keeps
//! changing while it uploads. Each test checks what a user relies on: nothing partial under a
//! real name on either side, no false conflicts, nothing lost, and convergence once the fault
//! is gone.
//!
//! Faults come from a private Apache that a test stops and starts (`common::apache`), from a TCP
//! fault proxy between the daemon and the server (`common::proxy`: resets, stalls), and from
//! SIGKILL. What the server stored is read on its own disk where a test needs to see it while
//! the server is down or busy (Apache's data dirs).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloudmount::remote::{ByteRange, Remote};
use cloudmount::sync::report::FolderState;
use common::apache::PrivateApache;
use common::mount::{assert_trees_match, Dav, Node, Server, Tree};
use common::proxy::{target_of, FaultProxy, ProxyMode};
use common::sync::{local, write, SyncHome};

/// Prefix of the sync's temporary uploads on the server (the vfs's upload temporaries).
const UPLOAD_TEMP: &str = ".cloudmount-upload-";
/// Prefix of the sync's temporary downloads in a local folder.
const LOCAL_TEMP: &str = cloudmount::sync::exclude::TMP_PREFIX;
/// What every conflict copy's name holds.
const CONFLICT: &str = " (conflicted copy ";

// ---------------------------------------------------------------------------------------------
// Helpers

fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// The server's tree of `folder` (through WebDAV) without the sync's temporary uploads, and
/// the names of those.
fn server_tree(dav: &Dav, folder: &str) -> (Tree, Vec<String>) {
    let mut t = dav.tree_at(folder);
    let temps: Vec<String> = t
        .keys()
        .filter(|k| base_name(k).starts_with(UPLOAD_TEMP))
        .cloned()
        .collect();
    for k in &temps {
        t.remove(k);
    }
    (t, temps)
}

fn conflict_copies(t: &Tree) -> Vec<&str> {
    t.keys()
        .filter(|k| k.contains(CONFLICT))
        .map(String::as_str)
        .collect()
}

/// Asserts the local folder and the server folder hold the same tree, with no conflict copy
/// and no file lost or added compared with `expected`.
fn assert_converged(what: &str, dav: &Dav, folder: &str, dir: &Path, expected: &Tree) {
    let here = local(dir);
    let (there, _) = server_tree(dav, folder);
    assert_trees_match(what, ("the local folder", &here), ("the server", &there));
    assert!(
        conflict_copies(&here).is_empty(),
        "{what}: false conflicts: {:?}",
        conflict_copies(&here)
    );
    assert_trees_match(
        what,
        ("the local folder", &here),
        ("what was written", expected),
    );
}

/// Files below `dir` on a local disk (a sync folder, or a server's data dir), relative paths,
/// sorted. A directory that vanishes meanwhile is skipped.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let child = rel.join(e.file_name());
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(child),
                Ok(_) => out.push(child.to_string_lossy().into_owned()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Whether a file in a server's data dir is not one of the folder's files: our upload
/// temporaries, and mod_dav_fs's own (`.davfs.tmp…`, `.DAV/`).
fn server_internal(rel: &str) -> bool {
    let name = base_name(rel);
    name.starts_with(UPLOAD_TEMP)
        || name.starts_with(".davfs")
        || rel.split('/').any(|s| s == ".DAV")
}

/// Reads the server folder on the server's disk (`on_disk`) and asserts that every file under
/// a real name has the whole content of the local file of that name (the local files do not
/// change in these tests): a transfer cut midway never shows under the real name. Returns the
/// real names found.
fn assert_whole_on_server(on_disk: &Path, local_dir: &Path) -> Vec<String> {
    let mut real = Vec::new();
    for rel in files_below(on_disk) {
        if server_internal(&rel) {
            continue;
        }
        let theirs = std::fs::read(on_disk.join(&rel))
            .unwrap_or_else(|e| panic!("read the server's {rel}: {e}"));
        let ours = std::fs::read(local_dir.join(&rel))
            .unwrap_or_else(|e| panic!("{rel} is on the server but not here: {e}"));
        assert!(
            theirs == ours,
            "{rel} on the server is not the local file: {} of {} bytes (a partial file under the real name?)",
            theirs.len(),
            ours.len()
        );
        real.push(rel);
    }
    real
}

/// Names of our temporary uploads left in a server folder (read on the server's disk).
fn upload_temps_on_disk(on_disk: &Path) -> Vec<String> {
    files_below(on_disk)
        .into_iter()
        .filter(|r| base_name(r).starts_with(UPLOAD_TEMP))
        .collect()
}

/// Our temporary downloads in a local folder.
fn local_temps(dir: &Path) -> Vec<String> {
    files_below(dir)
        .into_iter()
        .filter(|r| base_name(r).starts_with(LOCAL_TEMP))
        .collect()
}

/// The data dir of the shared Apache (Basic) test server, for the folder `rel` of `dav`.
fn apache_disk(dav: &Dav, rel: &str) -> PathBuf {
    PathBuf::from(common::env("CLOUDMOUNT_TEST_APACHE_BASIC_DIR"))
        .join(dav.root.as_str())
        .join(rel)
}

/// sha256 of a file, read in 1 MiB pieces (never the whole file in memory).
fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// The directories below `root` (and itself) that the process `pid` has no inotify watch on,
/// from its `/proc/PID/fdinfo` (`inotify wd:… ino:<hex> sdev:…` lines).
fn unwatched_dirs(pid: u32, root: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut watched = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            if let Some(ino) = l.split_whitespace().find_map(|w| w.strip_prefix("ino:")) {
                watched.insert(u64::from_str_radix(ino, 16).expect("hex inode"));
            }
        }
    }
    let mut dirs = vec![root.to_path_buf()];
    let mut out = Vec::new();
    while let Some(d) = dirs.pop() {
        if !watched.contains(&std::fs::metadata(&d).unwrap().ino()) {
            out.push(d.clone());
        }
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    out
}

/// Runs `sync now DIR --wait` with a limit of our own (the harness's is for small syncs).
/// Returns whether it succeeded, and its stdout and stderr.
fn sync_now_once(home: &SyncHome, dir: &Path, limit: Duration) -> (bool, String) {
    let mut cmd = home.command();
    cmd.args(["sync", "now", dir.to_str().unwrap(), "--wait"]);
    let out = common::mount::run_within(cmd, "sync now --wait", limit)
        .unwrap_or_else(|e| panic!("{e}\ndaemon log:\n{}", home.log()));
    let text = format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `sync now DIR --wait`, asserting it ends in sync within `limit`.
fn sync_now_settled(home: &SyncHome, dir: &Path, limit: Duration) {
    let (ok, text) = sync_now_once(home, dir, limit);
    assert!(ok, "sync now --wait: {text}\ndaemon log:\n{}", home.log());
}

/// Waits until `cond` holds, checking every 5 ms (to act while a transfer is still running),
/// at most `secs` seconds.
fn wait_closely(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Files under real names in a server folder, read on the server's disk.
fn real_files_on_disk(on_disk: &Path) -> usize {
    files_below(on_disk)
        .iter()
        .filter(|r| !server_internal(r))
        .count()
}

/// `sync now DIR --wait`, which must fail (a fault is on); returns its output.
fn sync_now_fails(home: &SyncHome, dir: &Path) -> String {
    home.fails(&["sync", "now", dir.to_str().unwrap(), "--wait"])
}

// ---------------------------------------------------------------------------------------------
// The server goes away mid-sync

#[test]
fn a_server_restarted_mid_sync_shows_offline_then_converges_without_partial_files() {
    let mut apache = PrivateApache::start();
    let server = apache.server();
    let dav = Dav::fresh(&server, "sync-restart");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("Big");
    const FILES: usize = 150;
    for i in 0..FILES {
        write(
            &dir.join(format!("d{}/f{i:03}.bin", i % 3)),
            &common::pattern(1 << 20, i as u8),
        );
    }
    let written = local(&dir);
    home.add(&dir, &[]);
    let on_disk = apache.data.join(dav.root.as_str()).join("Big");
    wait_closely(60, "a few files on the server", || {
        real_files_on_disk(&on_disk) >= 5
    });
    apache.stop();

    // While it is down: what it holds under real names is whole, and the folder says why it
    // does not sync.
    let placed = assert_whole_on_server(&on_disk, &dir);
    assert!(
        placed.len() < FILES,
        "the first sync ended before the server stopped: the test did not cut it"
    );
    // (It tries again every few seconds, so it is "syncing" now and then.)
    let mut reason = None;
    home.wait_until(60, "the folder to show the server offline", || {
        let f = home.folder(&dir);
        reason = f.reason.filter(|_| f.state == FolderState::Offline);
        reason.is_some()
    });
    let reason = reason.unwrap();
    let server_at = format!("127.0.0.1:{}", apache.port);
    assert!(
        reason.contains(&server_at),
        "the reason names the server: {reason}"
    );
    home.wait_until(60, "sync list to say offline, with the reason", || {
        let text = home.ok(&["sync", "list"]);
        text.contains("state:     offline: ") && text.contains(&server_at)
    });
    let out = sync_now_fails(&home, &dir);
    assert!(out.contains("offline"), "{out}");
    assert_eq!(local(&dir), written, "the local folder changed meanwhile");

    // Back: one sync finishes the job, without conflicts, losing nothing.
    apache.restart();
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    assert_eq!(home.folder(&dir).conflicts, 0);
    assert_converged("after the restart", &dav, "Big", &dir, &written);
    assert!(local_temps(&dir).is_empty(), "{:?}", local_temps(&dir));
    eprintln!(
        "upload temporaries left on the server: {:?}",
        upload_temps_on_disk(&on_disk)
    );
}

// ---------------------------------------------------------------------------------------------
// Connections reset during transfers

#[test]
fn connection_resets_during_uploads_leave_nothing_partial_and_converge_once_healed() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-reset-up");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("Up");
    for i in 0..12u8 {
        write(
            &dir.join(format!("f{i:02}.bin")),
            &common::pattern(2 << 20, 40 + i),
        );
    }
    let written = local(&dir);
    let on_disk = apache_disk(&dav, "Up");

    // For a while, every connection is cut once it has sent 300 KiB: every upload dies midway.
    proxy.reset_after_bytes_times(300 << 10, 100_000);
    home.add(&dir, &[]);
    for attempt in 0..3 {
        let out = sync_now_fails(&home, &dir);
        assert!(out.contains("offline"), "attempt {attempt}: {out}");
        assert_whole_on_server(&on_disk, &dir);
        assert_eq!(local(&dir), written, "the local folder changed");
    }
    assert!(proxy.resets() >= 3, "resets: {}", proxy.resets());

    // Healed: the pending cuts are dropped and the connections that carry one are closed.
    proxy.set_mode(ProxyMode::Pass);
    proxy.reset_all();
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    assert_eq!(home.folder(&dir).conflicts, 0);
    assert_converged("after the resets", &dav, "Up", &dir, &written);
    assert_whole_on_server(&on_disk, &dir);
    eprintln!(
        "upload temporaries left on the server: {:?}",
        upload_temps_on_disk(&on_disk)
    );
}

#[test]
fn connection_resets_during_downloads_leave_nothing_partial_and_converge_once_healed() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-reset-down");
    dav.mkdir("Down");
    for i in 0..12u8 {
        dav.put(
            &format!("Down/f{i:02}.bin"),
            &common::pattern(4 << 20, 80 + i),
        );
    }
    dav.put("Down/small.txt", b"small");
    let (on_server, _) = server_tree(&dav, "Down");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("Down");

    // For a while, every 512 KiB that come down reset every connection: no 4 MiB download can
    // finish.
    let faulty = AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut mark = proxy.bytes_down();
            while faulty.load(Ordering::SeqCst) {
                if proxy.bytes_down() >= mark + (512 << 10) {
                    proxy.reset_all();
                    mark = proxy.bytes_down();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        home.add(&dir, &[]);
        for attempt in 0..3 {
            let out = sync_now_fails(&home, &dir);
            assert!(out.contains("offline"), "attempt {attempt}: {out}");
            // Nothing partial under a real name (the next try may be under way: its
            // temporaries are skipped).
            for rel in files_below(&dir) {
                let name = base_name(&rel);
                if name.starts_with(LOCAL_TEMP) || name == ".cloudmount-sync" {
                    continue;
                }
                let data = std::fs::read(dir.join(&rel)).unwrap();
                assert_eq!(
                    on_server.get(&rel),
                    Some(&Node::File {
                        size: data.len() as u64,
                        sha256: common::sha256(&data)
                    }),
                    "{rel} here is not the server's file (a partial download?)"
                );
            }
        }
        faulty.store(false, Ordering::SeqCst);
    });
    assert!(proxy.resets() > 0);

    sync_now_settled(&home, &dir, Duration::from_secs(90));
    assert_eq!(home.folder(&dir).conflicts, 0);
    assert_converged("after the resets", &dav, "Down", &dir, &on_server);
    // The cut downloads' temporaries were removed.
    assert!(local_temps(&dir).is_empty(), "{:?}", local_temps(&dir));
}

// ---------------------------------------------------------------------------------------------
// inotify overflow

#[test]
fn an_inotify_overflow_is_rescanned_and_every_file_reaches_the_server_by_itself() {
    const DIRS: usize = 20;
    const PER_DIR: usize = 1000;
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-overflow");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("Burst");
    // Directories watched from the start: the burst lands in them.
    for d in 0..DIRS {
        common::sync::mkdir(&dir.join(format!("d{d:02}")));
    }
    home.add(&dir, &[]);
    home.wait_state(&dir, FolderState::UpToDate);

    // The server stalls: within a second (the poll interval) the folder's task is stuck on its
    // look at the server, so nothing reads the watcher's events while the burst comes: two
    // events per file, far more than the kernel queues (16384 by default). Once the server
    // answers again it has not changed: only the watcher can tell the task about the burst.
    proxy.set_mode(ProxyMode::Stall);
    std::thread::sleep(Duration::from_millis(2500));
    let began = Instant::now();
    for d in 0..DIRS {
        let sub = dir.join(format!("d{d:02}"));
        for i in 0..PER_DIR {
            std::fs::write(sub.join(format!("f{i:04}.txt")), format!("{d}/{i}\n")).unwrap();
        }
    }
    // Directories made after the overflow: their creation is not reported.
    for n in 0..3 {
        write(&dir.join(format!("new{n}/inside.txt")), b"inside");
    }
    eprintln!("{} files created in {:?}", DIRS * PER_DIR, began.elapsed());
    proxy.set_mode(ProxyMode::Pass);

    // Everything reaches the server without `sync now`.
    let count_on_server = || -> usize {
        let mut n = 0;
        for d in 0..DIRS {
            if let Ok(l) = dav.block_on(dav.remote.list(&dav.p(&format!("Burst/d{d:02}")))) {
                n += l
                    .children
                    .iter()
                    .filter(|c| !c.is_dir() && !c.name().starts_with(UPLOAD_TEMP))
                    .count();
            }
        }
        n
    };
    let limit = Duration::from_secs(300);
    let mut last = 0;
    while last < DIRS * PER_DIR {
        assert!(
            began.elapsed() < limit,
            "only {last} of {} files on the server after {limit:?}\ndaemon log:\n{}",
            DIRS * PER_DIR,
            home.log()
        );
        std::thread::sleep(Duration::from_secs(1));
        last = count_on_server();
    }
    eprintln!(
        "all on the server {:?} after the burst began",
        began.elapsed()
    );
    // The watcher reads the overflow once the task takes its events again (after that run).
    let log_path = home.path().join("daemon.log");
    home.wait_until(
        60,
        "the watcher to report the overflow (else the test did not test it)",
        || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("the inotify queue overflowed")
        },
    );
    home.wait_until(30, "the new directories on the server", || {
        (0..3).all(|n| dav.stat(&format!("Burst/new{n}/inside.txt")).is_some())
    });
    for (d, i) in [(0, 0), (7, 523), (DIRS - 1, PER_DIR - 1)] {
        assert_eq!(
            dav.get(&format!("Burst/d{d:02}/f{i:04}.txt")),
            format!("{d}/{i}\n").as_bytes()
        );
    }
    // The directories made during the overflow (their creation was lost) are watched once the
    // rescan that follows it is over, and a new file there goes up by itself.
    std::thread::sleep(Duration::from_secs(2));
    home.wait_state(&dir, FolderState::UpToDate);
    let pid = home.daemon_pid().unwrap();
    home.wait_until(10, "every directory of the folder watched", || {
        unwatched_dirs(pid, &dir).is_empty()
    });
    write(&dir.join("new1/later.txt"), b"later");
    home.wait_until(30, "new1/later.txt on the server", || {
        dav.stat("Burst/new1/later.txt").is_some()
    });
    assert_eq!(dav.get("Burst/new1/later.txt"), b"later");
}

// ---------------------------------------------------------------------------------------------
// SIGKILL during a large sync

#[test]
fn a_kill_during_a_sync_of_big_files_leaves_nothing_partial_and_resumes_without_conflicts() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-kill-big");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("Big");
    const FILES: usize = 20;
    for i in 0..FILES {
        write(
            &dir.join(format!("f{i:02}.bin")),
            &common::pattern(5 << 20, 120 + i as u8),
        );
    }
    let written = local(&dir);
    let on_disk = apache_disk(&dav, "Big");
    home.add(&dir, &[]);
    wait_closely(60, "a few files on the server", || {
        real_files_on_disk(&on_disk) >= 3
    });
    home.kill9();

    let placed = assert_whole_on_server(&on_disk, &dir);
    assert!(
        placed.len() < FILES,
        "the sync ended before the kill: the test did not cut it"
    );
    let temps_after_kill = upload_temps_on_disk(&on_disk);

    home.start();
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    let f = home.folder(&dir);
    assert_eq!(f.conflicts, 0);
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    assert_converged("after the restart", &dav, "Big", &dir, &written);
    assert!(local_temps(&dir).is_empty(), "{:?}", local_temps(&dir));
    assert_whole_on_server(&on_disk, &dir);
    eprintln!(
        "upload temporaries on the server: after the kill {temps_after_kill:?}, after the next sync {:?}",
        upload_temps_on_disk(&on_disk)
    );
}

// ---------------------------------------------------------------------------------------------
// A 2 GiB file

/// Writes a `len`-byte file in 1 MiB pieces: a pseudo-random block whose first 8 bytes are
/// replaced by the piece's number, so a piece in the wrong place changes the hash.
fn write_big(path: &Path, len: u64) {
    use std::io::Write;
    common::sync::mkdir(path.parent().unwrap());
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    common::sync::own(path);
    let mut block = common::pattern(1 << 20, 0x5a);
    let pieces = len.div_ceil(1 << 20);
    for i in 0..pieces {
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = ((len - i * (1 << 20)) as usize).min(block.len());
        f.write_all(&block[..n]).unwrap();
    }
    f.flush().unwrap();
}

#[test]
fn a_2_gib_file_goes_up_and_comes_down_intact_on_another_computer() {
    const LEN: u64 = 2 << 30;
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-2g");
    let mut a = SyncHome::new(&server, &dav.url);
    a.start();
    let dir_a = a.dir("Huge");
    let began = Instant::now();
    write_big(&dir_a.join("big.bin"), LEN);
    let want = sha256_file(&dir_a.join("big.bin"));
    eprintln!("written and hashed in {:?}", began.elapsed());

    a.add(&dir_a, &[]);
    sync_now_settled(&a, &dir_a, Duration::from_secs(240));
    eprintln!("uploaded after {:?}", began.elapsed());
    let on_disk = apache_disk(&dav, "Huge/big.bin");
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), LEN);
    let rss_a = peak_rss_kib(a.daemon_pid().unwrap());
    assert!(
        rss_a < 128 << 10,
        "the uploading daemon peaked at {rss_a} KiB: the file went through memory"
    );
    eprintln!("peak memory of the uploading daemon: {rss_a} KiB");
    // This computer is done (and its disk bandwidth goes to the other one).
    a.stop();

    // Another computer gets it.
    let mut b = SyncHome::new(&server, &dav.url);
    b.start();
    let dir_b = b.dir("Huge");
    b.add(&dir_b, &[]);
    sync_now_settled(&b, &dir_b, Duration::from_secs(240));
    eprintln!("downloaded after {:?}", began.elapsed());
    let rss_b = peak_rss_kib(b.daemon_pid().unwrap());
    eprintln!("peak memory of the downloading daemon: {rss_b} KiB");
    assert!(
        rss_b < 128 << 10,
        "the downloading daemon peaked at {rss_b} KiB: the file went through memory"
    );
    assert_eq!(std::fs::metadata(dir_b.join("big.bin")).unwrap().len(), LEN);
    assert_eq!(sha256_file(&dir_b.join("big.bin")), want, "downloaded");
    assert_eq!(sha256_file(&on_disk), want, "on the server");
    assert!(local_temps(&dir_b).is_empty(), "{:?}", local_temps(&dir_b));
    assert!(upload_temps_on_disk(&apache_disk(&dav, "Huge")).is_empty());
    let names: Vec<String> = local(&dir_b).into_keys().collect();
    assert_eq!(names, ["big.bin"]);
    eprintln!("checked after {:?}", began.elapsed());
    // 2 GiB less on the shared server's disk (on its disk: the client's pooled connection may
    // be one the server closed meanwhile).
    std::fs::remove_dir_all(apache_disk(&dav, "Huge")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Races between an edit and a transfer of the same file

/// Waits until `counter()` passed `mark`, checking every millisecond, at most `secs` seconds.
fn wait_for_bytes(counter: impl Fn() -> u64, mark: u64, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while counter() < mark {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// On the embedded server (its listings give the same tag right after a change and later, so
/// no other transfer joins the one this test holds).
#[test]
fn a_local_edit_during_a_download_of_the_same_file_keeps_both_versions() {
    let embedded = common::embedded_server(None);
    let server = Server::embedded(&embedded);
    let dav = Dav::fresh(&server, "sync-race-down");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("R");
    let v1 = common::pattern(4 << 20, 1);
    write(&dir.join("doc.bin"), &v1);
    home.add(&dir, &[]);
    home.sync_now(&dir);

    // The other computer saves v2; its download is held midway while we save v3 here.
    let v2 = common::pattern((24 << 20) + 2, 2);
    let v3 = common::pattern((4 << 20) + 3, 3);
    let mark = proxy.bytes_down() + (2 << 20);
    dav.put("R/doc.bin", &v2);
    home.ok(&["sync", "now", dir.to_str().unwrap()]);
    wait_for_bytes(|| proxy.bytes_down(), mark, 30, "the download to start");
    proxy.set_mode(ProxyMode::Stall);
    assert_eq!(
        local_temps(&dir).len(),
        1,
        "the download is not in progress: {:?}",
        files_below(&dir)
    );
    write(&dir.join("doc.bin"), &v3);
    proxy.set_mode(ProxyMode::Pass);

    home.sync_now(&dir);
    let here = local(&dir);
    let copies = conflict_copies(&here);
    assert_eq!(copies.len(), 1, "{:?}", here.keys());
    assert_eq!(
        std::fs::read(dir.join("doc.bin")).unwrap(),
        v2,
        "the server's version keeps the name"
    );
    assert_eq!(
        std::fs::read(dir.join(copies[0])).unwrap(),
        v3,
        "ours is kept"
    );
    let (there, _) = server_tree(&dav, "R");
    assert_trees_match(
        "both versions",
        ("the local folder", &here),
        ("the server", &there),
    );
    assert!(local_temps(&dir).is_empty(), "{:?}", local_temps(&dir));
}

// ---------------------------------------------------------------------------------------------
// A file that changes faster than it uploads

/// The content of a server file, or `None` while there is none: a MOVE over an existing file
/// deletes it first (RFC 4918 §9.9.3), so a reader may find the name missing for a moment.
fn get_if_there(dav: &Dav, rel: &str) -> Option<Vec<u8>> {
    dav.block_on(async {
        match dav
            .remote
            .read_range(&dav.p(rel), ByteRange::whole(), None)
            .await
        {
            Ok(r) => Some(
                r.bytes()
                    .await
                    .unwrap_or_else(|e| panic!("GET body {rel}: {e}"))
                    .to_vec(),
            ),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("GET {rel}: {e}"),
        }
    })
}

/// On the embedded server, as the test above.
#[test]
fn a_file_appended_while_it_syncs_is_never_torn_on_the_server() {
    let embedded = common::embedded_server(None);
    let server = Server::embedded(&embedded);
    let dav = Dav::fresh(&server, "sync-append");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("Log");
    common::sync::mkdir(&dir);
    home.add(&dir, &[]);
    home.wait_state(&dir, FolderState::UpToDate);

    let line = |i: usize| format!("{i:08} {}\n", "x".repeat(90));
    // What the server holds must be lines 0..n, whole, for some n.
    let check = |data: &[u8], when: &str| -> usize {
        let text = std::str::from_utf8(data).unwrap_or_else(|e| panic!("{when}: not text: {e}"));
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{when}: the server's copy ends inside a line ({} bytes)",
            text.len()
        );
        let n = text.lines().count();
        for (i, l) in text.lines().enumerate() {
            assert_eq!(
                format!("{l}\n"),
                line(i),
                "{when}: line {i} of the server's copy is not the line written there"
            );
        }
        n
    };
    let path = dir.join("app.log");
    let writing = AtomicBool::new(true);
    let mut seen = Vec::new();
    let lines = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let began = Instant::now();
            let mut i = 0;
            while began.elapsed() < Duration::from_secs(8) {
                // One write(2) per line.
                f.write_all(line(i).as_bytes()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            writing.store(false, Ordering::SeqCst);
            i
        });
        let mut last_now = Instant::now();
        while writing.load(Ordering::SeqCst) {
            if last_now.elapsed() > Duration::from_millis(700) {
                home.ok(&["sync", "now", dir.to_str().unwrap()]);
                last_now = Instant::now();
            }
            if let Some(data) = get_if_there(&dav, "Log/app.log") {
                seen.push(check(&data, "while writing"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.join().unwrap()
    });
    eprintln!(
        "{lines} lines written; versions seen on the server meanwhile (lines): {:?}",
        {
            let mut v = seen.clone();
            v.dedup();
            v
        }
    );
    home.sync_now(&dir);
    let data = dav.get("Log/app.log");
    assert_eq!(check(&data, "after the writer stopped"), lines);
    assert_eq!(data, std::fs::read(&path).unwrap());
    let t = local(&dir);
    assert!(conflict_copies(&t).is_empty(), "{:?}", t.keys());
}

// ---------------------------------------------------------------------------------------------
// Regressions: bugs these tests found (each failed before its fix)

/// Apache lists a file changed within the last second with a weak tag (`W/"x"`) and with the
/// strong one (`"x"`) later: the same version. It was taken for a change, and everything just
/// uploaded was downloaded again.
#[test]
fn regression_a_sync_after_an_upload_to_apache_downloads_nothing() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-weak");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("W");
    for i in 0..3u8 {
        write(&dir.join(format!("f{i}.bin")), &common::pattern(1 << 20, i));
    }
    home.add(&dir, &[]);
    home.sync_now(&dir);
    let gets_before = proxy.count("GET", &dav.url_path("W"));
    std::thread::sleep(Duration::from_millis(1500));
    let out = home.sync_now(&dir);
    assert_eq!(
        proxy.count("GET", &dav.url_path("W")),
        gets_before,
        "the second sync downloaded again"
    );
    assert!(out.contains("nothing to do"), "{out}");
}

/// The same weak tag made a local edit a little more than a second after an upload a false
/// conflict.
#[test]
fn regression_an_edit_after_an_upload_to_apache_is_no_conflict() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-falseconflict");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("E");
    write(&dir.join("a.txt"), b"version 1");
    home.add(&dir, &["--schedule", "daily"]);
    home.sync_now(&dir);
    std::thread::sleep(Duration::from_millis(1500));
    write(&dir.join("a.txt"), b"version 2, longer");
    home.sync_now(&dir);
    let here = local(&dir);
    assert!(
        conflict_copies(&here).is_empty(),
        "false conflict: {:?}",
        here.keys()
    );
    assert_eq!(dav.get("E/a.txt"), b"version 2, longer");
}

/// A file saved while the server was down stayed local once it was back (until another local
/// change or the hourly rescan): the poll found the server unchanged and started no run.
#[test]
fn regression_a_save_while_offline_goes_up_by_itself_when_the_server_is_back() {
    let mut apache = PrivateApache::start();
    let server = apache.server();
    let dav = Dav::fresh(&server, "sync-offline-save");
    let mut home = SyncHome::new(&server, &dav.url);
    home.start();
    let dir = home.dir("O");
    write(&dir.join("a.txt"), b"a");
    home.add(&dir, &[]);
    home.sync_now(&dir);
    apache.stop();
    write(&dir.join("b.txt"), b"saved while the server was down");
    home.wait_until(30, "offline", || {
        home.folder(&dir).state == FolderState::Offline
    });
    apache.restart();
    home.wait_until(40, "b.txt on the server by itself", || {
        dav.stat("O/b.txt").is_some()
    });
    assert_eq!(dav.get("O/b.txt"), b"saved while the server was down");
}

/// A kill during downloads left `.cloudmount-tmp-*` files for ever.
#[test]
fn regression_a_kill_during_downloads_leaves_no_temporary_files() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-killdown");
    dav.mkdir("K");
    for i in 0..6u8 {
        dav.put(&format!("K/f{i}.bin"), &common::pattern(8 << 20, i));
    }
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("K");
    let mark = proxy.bytes_down() + (10 << 20);
    home.add(&dir, &[]);
    wait_for_bytes(|| proxy.bytes_down(), mark, 30, "downloads under way");
    proxy.set_mode(ProxyMode::Stall);
    assert!(!local_temps(&dir).is_empty(), "no download was in progress");
    home.kill9();
    proxy.set_mode(ProxyMode::Pass);
    home.start();
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    let (there, _) = server_tree(&dav, "K");
    assert_trees_match("after", ("here", &local(&dir)), ("there", &there));
    let left = local_temps(&dir);
    assert!(left.is_empty(), "{left:?}");
}

/// A server edit made while a large upload of the same file went up was overwritten by the
/// upload's MOVE (the version was checked only before the upload).
#[test]
fn regression_a_server_edit_during_an_upload_of_the_same_file_keeps_both_versions() {
    let server = Server::apache_basic();
    let dav = Dav::fresh(&server, "sync-race-up");
    let proxy = FaultProxy::start_blocking(target_of(&server.url));
    let mut home = SyncHome::new(&server, &proxy.url_for(&dav.url));
    home.start();
    let dir = home.dir("R");
    write(&dir.join("doc.bin"), &common::pattern(4 << 20, 1));
    home.add(&dir, &[]);
    home.sync_now(&dir);
    let v2 = common::pattern((8 << 20) + 2, 2);
    let v3 = common::pattern((4 << 20) + 3, 3);
    let mark = proxy.bytes_up() + (2 << 20);
    write(&dir.join("doc.bin"), &v2);
    home.ok(&["sync", "now", dir.to_str().unwrap()]);
    wait_for_bytes(|| proxy.bytes_up(), mark, 30, "the upload to start");
    proxy.set_mode(ProxyMode::Stall);
    dav.put("R/doc.bin", &v3);
    proxy.set_mode(ProxyMode::Pass);
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    sync_now_settled(&home, &dir, Duration::from_secs(90));
    let here = local(&dir);
    let (there, _) = server_tree(&dav, "R");
    let has = |t: &Tree, v: &[u8]| {
        t.values()
            .any(|n| matches!(n, Node::File { sha256, .. } if *sha256 == common::sha256(v)))
    };
    assert!(has(&here, &v2) && has(&there, &v2), "ours (v2) lost");
    assert!(
        has(&here, &v3) && has(&there, &v3),
        "the server's edit (v3) lost"
    );
}
