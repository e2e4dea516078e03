//! Reference-model test on a real mount: random sequences of file operations (the ones of
//! `tests/model.rs`, see `tests/common/ops.rs`) applied through a cloudmount mount of Apache
//! mod_dav (Basic auth) and to a plain local directory. After every step both must agree on
//! the result (the bytes read, or the same errno); at the end of a sequence the trees must be
//! equal through the mount, and — once the upload queue is empty — on the server.
//!
//! This goes through everything the vfs model does not: the kernel (its lookups, page cache
//! and attribute caching), the FUSE adapter, the block cache on disk and a real server. One
//! mount serves every case, each in a fresh folder, so the caches carry state from case to
//! case as they do for a user. It runs over Apache and over rclone serve webdav;
//! `CLOUDMOUNT_TEST_MODEL_CASES` (default 40 and 20) sets the number of sequences. Shrunk failures are kept below as named regression tests.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::mount::*;
use common::ops::*;
use proptest::test_runner::{Config, TestError, TestRunner};

/// Runs `ops` in the fresh folder `dir` of the mount and in a fresh plain directory, checking
/// every step, the trees through the mount, and (after the uploads) the server's tree.
fn check(dav: &Dav, m: &Mounted, dir: &str, ops: &[Op]) -> Tally {
    let mut tally = Tally::default();
    let plain = tempfile::tempdir().unwrap();
    let root = m.path(dir);
    std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    for (i, op) in ops.iter().enumerate() {
        let want = apply_local(plain.path(), op);
        let got = apply_local(&root, op);
        assert_eq!(
            got,
            want,
            "step {i}: {op:?}: the mount (left) and a local directory (right) disagree\n\
             ops: {ops:?}\ndaemon log:\n{}",
            tail(&m.daemon_log())
        );
        tally.steps += 1;
        match want {
            Ok(Some(d)) => {
                tally.ok += 1;
                tally.bytes_read += d.len();
            }
            Ok(None) => tally.ok += 1,
            Err(_) => {}
        }
    }
    let want = local_tree(plain.path());
    assert_trees_match(
        &format!("{dir} (ops: {ops:?})"),
        ("the mount", &local_tree(&root)),
        ("a local directory", &want),
    );
    m.settle();
    let server = dav.tree_at(dir);
    if server != want {
        eprintln!("daemon log:\n{}", tail(&m.daemon_log()));
    }
    assert_trees_match(
        &format!("{dir} once uploaded (ops: {ops:?})"),
        ("the server", &server),
        ("a local directory", &want),
    );
    tally
}

/// What the sequences did: steps, how many succeeded (the rest failed alike on both sides with
/// the same errno), bytes read back.
#[derive(Default, Debug)]
struct Tally {
    steps: usize,
    ok: usize,
    bytes_read: usize,
}

/// The last lines of a daemon log, enough to see what went wrong.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn setup() -> (Dav, Mounted) {
    setup_on(Server::apache_basic())
}

fn setup_on(s: Server) -> (Dav, Mounted) {
    let dav = Dav::fresh(&s, "model");
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    (dav, m)
}

/// A fresh folder name for each run of [`check`] (shrinking reruns too).
fn next_dir(n: &AtomicUsize) -> String {
    format!("case{}", n.fetch_add(1, Ordering::SeqCst))
}

#[test]
fn the_mount_behaves_like_a_local_directory() {
    run_model(Server::apache_basic(), 40);
}

/// The same over the second server implementation (rclone serve webdav).
#[test]
fn the_mount_behaves_like_a_local_directory_over_rclone() {
    run_model(Server::rclone(), 20);
}

fn run_model(server: Server, default_cases: u32) {
    let (dav, m) = setup_on(server);
    let cases = std::env::var("CLOUDMOUNT_TEST_MODEL_CASES")
        .ok()
        .map(|v| v.parse().expect("CLOUDMOUNT_TEST_MODEL_CASES is a number"))
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 400,
        max_shrink_time: 180_000,
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicUsize::new(0);
    let total = std::sync::Mutex::new(Tally::default());
    let strategy = proptest::collection::vec(op_strategy(), 1..40);
    let result = runner.run(&strategy, |ops| {
        let ops: Vec<Op> = seed_ops().into_iter().chain(ops).collect();
        let t = check(&dav, &m, &next_dir(&n), &ops);
        let mut all = total.lock().unwrap();
        all.steps += t.steps;
        all.ok += t.ok;
        all.bytes_read += t.bytes_read;
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            panic!("minimal failing sequence (keep it below as a regression): {ops:?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
    let total = total.into_inner().unwrap();
    eprintln!("{cases} sequences: {total:?}");
    // The sequences must do real work, not mostly fail alike on both sides (a random path
    // often names nothing: then both sides must fail with the same errno, a check too).
    assert!(
        total.ok * 3 > total.steps && total.bytes_read > 10_000,
        "too few operations succeeded: {total:?}"
    );
    // Every case left its folder; all of them are on the server and through a fresh mount of
    // it with an empty cache (nothing the first mount holds only locally).
    let all = dav.tree();
    drop(m);
    let fresh = Mounted::new(&dav.url, &MountOpts::for_server(&dav.server));
    assert_trees_equal(
        "every case through a fresh mount vs the server",
        &local_tree(&fresh.path("")),
        &all,
    );
    assert!(
        all.len() >= cases as usize,
        "{} entries for {cases} cases",
        all.len()
    );
}

// ---- Hand-written sequences, and shrunk failures kept as regressions ---------------------

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// Overwrites and partial writes of one file, read back through the page cache each time.
#[test]
fn rewrites_are_read_back_through_the_page_cache() {
    let (dav, m) = setup();
    let ops = [
        Op::Write {
            path: vec![0],
            data: data(3000),
        },
        Op::Read { path: vec![0] },
        Op::Patch {
            path: vec![0],
            offset: 2990,
            data: data(100),
        },
        Op::Read { path: vec![0] },
        Op::Truncate {
            path: vec![0],
            len: 5,
        },
        Op::Read { path: vec![0] },
        Op::Write {
            path: vec![0],
            data: data(7),
        },
        Op::Read { path: vec![0] },
    ];
    check(&dav, &m, "rewrites", &ops);
}
