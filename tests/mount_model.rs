//! Reference-model test on a real mount: random sequences of file operations (the ones of
//! `tests/model.rs`, see `tests/common/ops.rs`) applied through a cloudmount mount of Apache
//! mod_dav (Basic auth) and to a plain local directory. After every step both must agree on
//! the result (the bytes read, or the same errno); at the end of a sequence the trees must be
//! equal through the mount, and — once the upload queue is empty — on the server.
//!
//! This goes through everything the vfs model does not: the kernel (its lookups, page cache
//! and attribute caching), the FUSE adapter, the block cache on disk and a real server. Beside
//! the operations of the vfs model, a sequence may hold two descriptors open across steps
//! (read, pwrite, `O_APPEND` write, ftruncate, fsync through them; delete their file; close
//! them), and another client may edit the server between steps (PUT, MKCOL, DELETE, MOVE through
//! WebDAV): once the listings are refreshed (`--dir-cache-time`) the mount must show the edit,
//! and a change of ours not uploaded yet that the edit raced must not be lost (a conflict copy
//! against a PUT, uploaded again after a DELETE). After every step the trees' names, kinds and
//! sizes are compared (a name listed twice fails). One
//! mount serves every case, each in a fresh folder, so the caches carry state from case to
//! case as they do for a user. A sequence may also crash the daemon (`kill -9`) and mount again
//! on the same cache directory: every operation that returned must survive. And it may pin,
//! unpin or free a path (`cloudmount pin --wait`, `unpin`, `free`): the contents shown do not
//! change, and the states below the path must follow (see `pin_step`). And it may run a few
//! folder and name changes and whole-file writes with the server unreachable (an offline
//! phase: a proxy refusing every connection); they must succeed as on the local directory and
//! reach the server when it is back. It runs over
//! Apache, over rclone serve webdav, and over Apache with uploads a second after each close
//! (files stay local copies through most of a sequence, and the server-side edits race them;
//! elsewhere the upload queue is drained before each edit); `CLOUDMOUNT_TEST_MODEL_CASES`
//! (default 40, 20 and 25) sets the number of sequences. Shrunk failures are kept below as
//! named regression tests.

mod common;

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::mount::*;
use common::ops::*;
use common::proxy::{target_of, FaultProxy, ProxyMode};
use proptest::test_runner::{Config, TestError, TestRunner};

/// A server folder and the mount of it the sequences run on.
struct Model {
    dav: Dav,
    /// Between the mount and the server: refuses every connection in an offline phase.
    proxy: FaultProxy,
    opts: MountOpts,
    /// Crashes wait for an idle upload queue. For rclone serve webdav (1.60): while files are
    /// PUT and MOVEd in a folder, its PROPFIND of that folder often omits entries that exist
    /// (30 of 70 listings in `benches/rclone-listing-race.py`); after a crash in flight the
    /// restarted daemon lists while it uploads, and would show such a listing, correctly
    /// for a client that trusts its server. Apache does not do this.
    calm_crashes: bool,
    /// Keeps the cache directory across crashes.
    _cache: tempfile::TempDir,
    mount: RefCell<Mounted>,
    /// Server-side edits are made without draining the upload queue first, so they race the
    /// changes not uploaded yet (with a write-back delay, most of them).
    racing_edits: bool,
}

impl Model {
    /// `delay`: the mount's `--write-back-delay` (none: the tests' default, 0).
    fn new(server: Server, delay: Option<&str>) -> Model {
        let dav = Dav::fresh(&server, "model");
        let cache = tempfile::tempdir().unwrap();
        let mut opts = MountOpts::for_server(&server).cache_dir(cache.path());
        if let Some(d) = delay {
            opts = opts.write_back_delay(d);
        }
        let proxy = FaultProxy::start_blocking(target_of(&server.url));
        let mount = RefCell::new(Mounted::new(&proxy.url_for(&dav.url), &opts));
        Model {
            proxy,
            racing_edits: delay.is_some(),
            calm_crashes: server.name.contains("rclone"),
            dav,
            opts,
            _cache: cache,
            mount,
        }
    }

    /// Kills the daemon and mounts again on the same cache directory. With `idle`, once the
    /// upload queue is empty.
    fn crash(&self, idle: bool) {
        let mut m = self.mount.borrow_mut();
        if idle || self.calm_crashes {
            m.settle();
        }
        // Counted before, so that a case that failed here does not fail every later one (and
        // the shrinking) with the files it left in the cache directory.
        let kept_before = kept_aside_files(&m);
        m.kill9();

        *m = Mounted::new(&self.proxy.url_for(&self.dav.url), &self.opts);
        // Every file was closed before the crash: nothing to keep aside as "never closed".
        let st = m.status();
        assert_eq!(
            kept_aside_files(&m),
            kept_before,
            "files kept aside after a crash, although every file was closed: {:?}",
            st.kept_aside
        );
    }
}

/// How many files the mount's cache directory holds kept aside from earlier starts.
fn kept_aside_files(m: &Mounted) -> u64 {
    m.status().kept_aside.map_or(0, |k| k.files)
}

/// How long the mounts trust a listing (`MountOpts::for_server`'s `--dir-cache-time`), and
/// the kernel its entries and attributes.
const DIR_CACHE_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Descriptors held across steps: (local, mount, path opened).
type HeldPair = Option<(File, File, Vec<u8>)>;

/// Runs `steps` in the fresh folder `dir` of the mount and in a fresh plain directory, checking
/// every step (its result, then the trees' names, kinds and sizes), the trees through the
/// mount at the end, and (after the uploads) the server's tree.
fn check(model: &Model, dir: &str, steps: &[Step], idle_crashes: bool) -> Tally {
    let mut tally = Tally::default();
    let plain = tempfile::tempdir().unwrap();
    let root = model.mount.borrow().path(dir);
    std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    let mut held: [HeldPair; SLOTS] = [None, None];
    for (i, step) in steps.iter().enumerate() {
        let fail = |what: &str| -> String {
            format!(
                "step {i}: {step:?}: {what}\nsteps: {steps:?}\ndaemon log:\n{}",
                tail(&model.mount.borrow().daemon_log())
            )
        };
        let (want, got) = match step {
            Step::Crash | Step::CrashNow => {
                // Closed first: a crash loses nothing that was closed.
                held = [None, None];
                model.crash(matches!(step, Step::Crash) && idle_crashes);
                tally.crashes += 1;
                (Ok(None), Ok(None))
            }
            Step::Op(op) => (
                apply_local(plain.path(), op),
                // After a crash the new mount may sit elsewhere.
                apply_local(&model.mount.borrow().path(dir), op),
            ),
            Step::Open { slot, path, how } => {
                let h = &mut held[*slot as usize];
                *h = None;
                let open = |root: &Path| open_held(&local(root, path), *how);
                let (l, m) = (open(plain.path()), open(&model.mount.borrow().path(dir)));
                let res = (opened(&l), opened(&m));
                if let (Ok(l), Ok(m)) = (l, m) {
                    *h = Some((l, m, path.clone()));
                }
                res
            }
            Step::HeldWrite { slot, .. }
            | Step::HeldAppend { slot, .. }
            | Step::HeldTruncate { slot, .. }
            | Step::HeldFsync { slot }
            | Step::HeldRead { slot } => match &held[*slot as usize] {
                Some((l, m, _)) => (apply_held(l, step), apply_held(m, step)),
                None => continue,
            },
            Step::DeleteHeld { slot } => match &held[*slot as usize] {
                Some((_, _, path)) => {
                    let rm = |root: &Path| std::fs::remove_file(local(root, path)).map(|_| None);
                    (
                        errno_result(&rm(plain.path())),
                        errno_result(&rm(&model.mount.borrow().path(dir))),
                    )
                }
                _ => continue,
            },
            Step::Close { slot } => {
                held[*slot as usize] = None;
                continue;
            }
            Step::Pin { path, how } => {
                if *how == PinHow::Free {
                    // A file held open for writing is uploaded at its close, and `free` waits
                    // for the uploads: the held descriptors are closed first.
                    held = [None, None];
                }
                match pin_step(model, dir, plain.path(), path, *how, &held) {
                    Ok(checked) => tally.pins += usize::from(checked),
                    Err(why) => panic!("{}", fail(&why)),
                }
                continue;
            }
            Step::Offline(ops) => {
                // Held descriptors closed first (a file deleted offline is not kept for them).
                held = [None, None];
                model.proxy.go_offline();
                let root = model.mount.borrow().path(dir);
                let got: Vec<_> = ops.iter().map(|op| apply_local(&root, op)).collect();
                let want: Vec<_> = ops.iter().map(|op| apply_local(plain.path(), op)).collect();
                model.proxy.set_mode(ProxyMode::Pass);
                let what = format!("offline, the mount gave {got:?}, a local directory {want:?}");
                assert!(got == want, "{}", fail(&what));
                tally.offline += 1;
                // Sent to the server, in order, once it answers.
                model.mount.borrow().settle();
                (Ok(None), Ok(None))
            }
            Step::Server(edit) => {
                held = [None, None];
                match server_edit(model, dir, plain.path(), edit) {
                    Ok(None) => continue,
                    Ok(Some(raced)) => {
                        tally.edits += 1;
                        tally.races += usize::from(raced);
                    }
                    Err(why) => panic!("{}", fail(&why)),
                }
                (Ok(None), Ok(None))
            }
        };
        assert!(
            got == want,
            "{}",
            fail(&format!(
                "the mount gave {}, a local directory {}",
                brief(&got),
                brief(&want)
            ))
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
        let (want, got) = (
            shape_of(plain.path(), "the local directory"),
            shape_of(&model.mount.borrow().path(dir), "the mount"),
        );
        assert!(
            got == want,
            "{}",
            fail(&format!(
                "names, kinds or sizes differ:\n  the mount:           {got:?}\n  a local directory: {want:?}"
            ))
        );
    }
    drop(held);
    let m = model.mount.borrow();
    let want = local_tree(plain.path());
    assert_trees_match(
        &format!("{dir} (steps: {steps:?})"),
        ("the mount", &local_tree(&m.path(dir))),
        ("a local directory", &want),
    );
    m.settle();
    let server_now = || model.dav.tree_at(dir);
    let mut server = server_now();
    if server != want && only_stray_uploads(&server, &want) {
        // A crash between an upload's PUT and its MOVE leaves its temporary file; the mount
        // deletes it when it next lists the folder (after `--dir-cache-time`, 1 s here).
        std::thread::sleep(DIR_CACHE_TIME + std::time::Duration::from_millis(100));
        local_tree(&m.path(dir));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server != want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            server = server_now();
        }
    }
    if server != want {
        eprintln!("daemon log:\n{}", tail(&m.daemon_log()));
    }
    assert_trees_match(
        &format!("{dir} once uploaded (steps: {steps:?})"),
        ("the server", &server),
        ("a local directory", &want),
    );
    tally
}

/// Pins, unpins or frees `path` of the sequence's folder `dir` through the command line, and
/// checks the states the mount then shows below it: after `pin --wait` every file is here
/// (`pinned`, or a local change: `dirty`, `uploading`, `error`; a conflict copy says
/// `conflict`), after `unpin` none is pinned
/// (an exception inside a pinned folder is not kept either), after `free` (once the uploads
/// are done) none is cached (files open in a held descriptor may stay). A path the local directory does not have must
/// fail. Ok(true) when states were checked.
fn pin_step(
    model: &Model,
    dir: &str,
    plain: &Path,
    path: &[u8],
    how: PinHow,
    held: &[HeldPair; SLOTS],
) -> Result<bool, String> {
    let m = model.mount.borrow();
    let target = local(&m.path(dir), path);
    let exists = local(plain, path).exists();
    let verb = match how {
        PinHow::Pin => "pin",
        PinHow::Unpin => "unpin",
        PinHow::Free => "free",
    };
    if how == PinHow::Free {
        // What is still being uploaded cannot be freed, and lands in the cache when its upload
        // ends: free what is on the server.
        m.settle();
    }
    let mut args = vec![std::ffi::OsString::from(verb), target.clone().into()];
    if how == PinHow::Pin {
        args.push("--wait".into());
    }
    let mut out = m.cli(&args);
    // A file closed just before may still be open in the daemon (FUSE sends the release after
    // close(2) returns): `free` leaves it and says so. Asked again once it is released.
    for _ in 0..10 {
        let left = String::from_utf8_lossy(&out.stdout).contains("left cached");
        if !(how == PinHow::Free && out.status.success() && left) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = m.cli(&args);
    }
    let said = || {
        format!(
            "cloudmount {verb} {}: {}\n{}",
            target.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !exists {
        return if out.status.success() {
            Err(format!(
                "{} succeeded on a path that does not exist",
                said()
            ))
        } else {
            Ok(false)
        };
    }
    if !out.status.success() {
        return Err(format!("{} failed", said()));
    }
    let open: Vec<std::path::PathBuf> = held
        .iter()
        .flatten()
        .map(|(_, _, p)| local(&m.path(dir), p))
        .collect();
    for file in files_below(&target) {
        let st = state_of(&file)?;
        let ok = match how {
            // A conflict copy says so whatever else holds.
            PinHow::Pin => matches!(
                st.as_str(),
                "pinned" | "dirty" | "uploading" | "error" | "conflict"
            ),
            PinHow::Unpin => !matches!(st.as_str(), "pinned" | "pinning"),
            PinHow::Free => {
                open.contains(&file)
                    || matches!(
                        st.as_str(),
                        "online" | "dirty" | "uploading" | "error" | "conflict"
                    )
            }
        };
        if !ok {
            return Err(format!(
                "after {verb} {}: {} is {st}",
                target.display(),
                file.display()
            ));
        }
    }
    Ok(true)
}

/// The regular files at or below `p`.
fn files_below(p: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().flat_map(|e| files_below(&e.path())).collect())
            .unwrap_or_default(),
        Ok(md) if md.is_file() => vec![p.to_path_buf()],
        _ => Vec::new(),
    }
}

/// Another client edits the server below the sequence's folder `dir`; once the upload queue
/// has drained and the listings are refreshed, the mount must show the edit, and a change of
/// ours the edit raced must be kept (see `adopt_server_edit`). Ok(None): an edit no client
/// could make here (left out on both sides); Ok(Some(raced)): made, and whether it raced a
/// change not uploaded yet.
fn server_edit(
    model: &Model,
    dir: &str,
    plain: &Path,
    edit: &ServerEdit,
) -> Result<Option<bool>, String> {
    let rel = format!("{dir}/{}", edit.rel());
    let dav = &model.dav;
    // A folder is deleted, and anything moved, only once what was written is uploaded (what
    // the mount does with a change inside a folder deleted, or in a file moved, by someone
    // else is not decided here).
    let deletes_folder =
        matches!(edit, ServerEdit::Delete { .. }) && local(plain, edit.path()).is_dir();
    if !model.racing_edits || deletes_folder || matches!(edit, ServerEdit::Move { .. }) {
        model.mount.borrow().settle();
    }
    // Below a file, Apache answers a PROPFIND with 400: such an edit is left out before.
    if !local(plain, edit.path())
        .parent()
        .is_some_and(|d| d.is_dir())
    {
        return Ok(None);
    }
    let on_server = dav.stat(&rel).map(|e| (!e.is_dir()).then(|| dav.get(&rel)));
    let Some(plan) = plan_server_edit(plain, edit, on_server) else {
        return Ok(None);
    };
    match edit {
        ServerEdit::Put { data, .. } => dav.put(&rel, data),
        ServerEdit::Mkdir { .. } => dav.mkdir(&rel),
        ServerEdit::Delete { .. } => dav.delete(&rel),
        ServerEdit::Move { to, .. } => {
            let to = dav.p(&format!("{dir}/{}", names(to).join("/")));
            dav.block_on(dav.remote.rename(&dav.p(&rel), &to, false))
                .unwrap_or_else(|e| panic!("MOVE {rel}: {e}"))
        }
    }
    let m = model.mount.borrow();
    m.settle();
    std::thread::sleep(DIR_CACHE_TIME + std::time::Duration::from_millis(100));
    // The conflict copies of the name in its folder, through the mount.
    let path = edit.path();
    let name = names(path)[path.len() - 1];
    let folder = local(&m.path(dir), path).parent().unwrap().to_path_buf();
    let mut copies = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&folder) {
        for e in rd.flatten() {
            let n = e.file_name().into_string().unwrap();
            if is_conflict_copy_of(&n, name) && !local(plain, path).with_file_name(&n).exists() {
                copies.push((n, std::fs::read(e.path()).map_err(|e| e.to_string())?));
            }
        }
    }
    adopt_server_edit(plain, edit, &plan, &copies)?;
    Ok(Some(plan.pending.is_some()))
}

/// Whether `server` differs from `want` only by temporary upload files it has in addition.
fn only_stray_uploads(server: &Tree, want: &Tree) -> bool {
    let temp = |k: &str| {
        k.rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".cloudmount-upload-"))
    };
    want.iter().all(|(k, v)| server.get(k) == Some(v))
        && server.keys().all(|k| want.contains_key(k) || temp(k))
}

/// What the sequences did: steps, how many succeeded (the rest failed alike on both sides with
/// the same errno), bytes read back, crashes survived, server-side edits followed.
#[derive(Default, Debug)]
struct Tally {
    steps: usize,
    ok: usize,
    bytes_read: usize,
    crashes: usize,
    /// Server-side edits made, and how many of them raced a change not uploaded yet.
    edits: usize,
    races: usize,
    /// Pin, unpin and free steps whose states were checked.
    pins: usize,
    /// Offline phases run.
    offline: usize,
}

/// An I/O result as the model compares it: the bytes read, or the errno.
fn errno_result<T: Clone>(r: &std::io::Result<T>) -> Result<T, i32> {
    match r {
        Ok(v) => Ok(v.clone()),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

/// An open's result as the model compares it.
fn opened(r: &std::io::Result<File>) -> Result<Option<Vec<u8>>, i32> {
    match r {
        Ok(_) => Ok(None),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

/// An operation's result, short: the bytes read as their length and hash.
fn brief(r: &Result<Option<Vec<u8>>, i32>) -> String {
    match r {
        Ok(None) => "Ok".into(),
        Ok(Some(d)) => format!("{} bytes (sha256 {})", d.len(), &common::sha256(d)[..12]),
        Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
    }
}

/// The last lines of a daemon log, enough to see what went wrong.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
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

/// The same over nginx (dav + dav-ext), whose listings carry no ETag: the mount tells versions
/// apart by size and last-modified time there.
#[test]
fn the_mount_behaves_like_a_local_directory_over_nginx() {
    run_model(Server::nginx(), 20);
}

/// The same with uploads a second after each close: files written stay local copies (staged,
/// queued) through most of a sequence, so the operations after them (reads through held
/// descriptors, deletes, renames, crashes) meet them before their upload.
#[test]
fn the_mount_behaves_like_a_local_directory_with_delayed_uploads() {
    run_model_delayed(Server::apache_basic(), 25, Some("1s"));
}

fn run_model(server: Server, default_cases: u32) {
    run_model_delayed(server, default_cases, None)
}

fn run_model_delayed(server: Server, default_cases: u32, delay: Option<&str>) {
    let model = Model::new(server, delay);
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
    let mix = Mix {
        crashes: true,
        server_edits: true,
        pins: true,
        offline: true,
    };
    // Two steps more than the vfs model's: the pin steps take their share of the sequence.
    let strategy = proptest::collection::vec(step_strategy(mix), 1..42);
    let result = runner.run(&strategy, |steps| {
        let steps: Vec<Step> = seed_ops().into_iter().map(Step::Op).chain(steps).collect();
        let t = check(&model, &next_dir(&n), &steps, true);
        let mut all = total.lock().unwrap();
        all.steps += t.steps;
        all.ok += t.ok;
        all.bytes_read += t.bytes_read;
        all.crashes += t.crashes;
        all.edits += t.edits;
        all.races += t.races;
        all.pins += t.pins;
        all.offline += t.offline;
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => {
            panic!("minimal failing sequence (keep it below as a regression): {steps:?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
    let total = total.into_inner().unwrap();
    eprintln!("{cases} sequences: {total:?}");
    // The sequences must do real work, not mostly fail alike on both sides (a random path
    // often names nothing: then both sides must fail with the same errno, a check too). The
    // bytes read vary much from run to run since offline phases and pins joined the steps
    // (3,000 in 20 sequences seen once): at least 100 a sequence.
    assert!(
        total.ok * 3 > total.steps && total.bytes_read > 100 * cases as usize,
        "too few operations succeeded: {total:?}"
    );
    // And other clients' edits must have been followed, not all left out.
    assert!(
        cases < 10 || total.edits > 0,
        "no server-side edit was made: {total:?}"
    );
    // And pins were set on something that exists, and checked.
    assert!(
        cases < 10 || total.pins > 0,
        "no pin, unpin or free was checked: {total:?}"
    );
    // And offline phases ran.
    assert!(cases < 10 || total.offline > 0, "no offline: {total:?}");
    // Every case left its folder; all of them are on the server and through a fresh mount of
    // it with an empty cache (nothing the first mount holds only locally).
    let all = model.dav.tree();
    let Model { dav, mount, .. } = model;
    drop(mount);
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
    let model = Model::new(Server::apache_basic(), None);
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
    let steps: Vec<Step> = ops.into_iter().map(Step::Op).collect();
    check(&model, "rewrites", &steps, true);
}

/// Found beside the model (`mount_semantics::the_copy_of_a_deleted_file_goes_when_its_last_reader_closes`),
/// kept in its terms: a new file written through the mount, opened for reading and deleted
/// before its upload read back empty (the delete let go of its local copy, and the file never
/// had a version on the server to read instead).
#[test]
fn a_new_file_deleted_before_its_upload_reads_back_through_a_held_descriptor() {
    let model = Model::new(Server::apache_basic(), Some("1s"));
    let mut steps: Vec<Step> = seed_ops().into_iter().map(Step::Op).collect();
    steps.extend([
        Step::Op(Op::Write {
            path: vec![1],
            data: data(300),
        }),
        Step::Open {
            slot: 0,
            path: vec![1],
            how: OpenAs::Read,
        },
        Step::DeleteHeld { slot: 0 },
        Step::HeldRead { slot: 0 },
        Step::Close { slot: 0 },
    ]);
    check(&model, "deleted-held", &steps, true);
}

/// Found by the model (a crash right after a held descriptor of a deleted file was closed,
/// before the daemon saw the close), made deterministic: a file deleted before its upload is
/// kept locally for a program still reading it; if the daemon dies meanwhile, the next start
/// must drop that copy, not keep it aside as a file never closed.
#[test]
fn a_deleted_file_still_read_is_not_kept_aside_after_a_crash() {
    let model = Model::new(Server::apache_basic(), Some("1h"));
    let reader = {
        let m = model.mount.borrow();
        std::fs::write(m.path("f"), b"written here").unwrap();
        let reader = File::open(m.path("f")).unwrap();
        std::fs::remove_file(m.path("f")).unwrap();
        reader
    };
    // The daemon dies while the reader still holds the deleted file (asserts nothing is
    // kept aside after the restart).
    model.crash(false);
    drop(reader);
    assert!(model.dav.tree().is_empty(), "{:?}", model.dav.tree());
}

/// Found by the model (a crash right after two descriptors of an empty file were closed,
/// before the daemon saw the closes), made deterministic: a file opened for writing but not
/// written is noted as droppable (its copy is the server's version, as the copy's size and
/// mtime say). Truncating it again through another open must not change that copy: an
/// `ftruncate` to the same length still moves its mtime, and the next start kept the
/// unchanged copy aside as a file never closed.
#[test]
fn an_empty_file_truncated_again_while_open_is_not_kept_aside_after_a_crash() {
    let model = Model::new(Server::apache_basic(), None);
    let held = {
        let m = model.mount.borrow();
        std::fs::write(m.path("e"), b"").unwrap();
        m.settle();
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("e"))
            .unwrap();
        // The next mtime tick of the file system's clock.
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(File::create(m.path("e")).unwrap());
        held
    };
    // The daemon dies while `held` is open (asserts nothing is kept aside after the restart).
    model.crash(false);
    drop(held);
    assert_eq!(model.dav.tree().len(), 1, "{:?}", model.dav.tree());
}

/// Shrunk from the model: a crash right after an upload ended could leave its record removed
/// but the file missing from the folder's stored listing, which the next start trusted (for
/// `--dir-cache-time`): the file was invisible, though on the server.
#[test]
fn a_file_uploaded_just_before_a_crash_is_listed_after_it() {
    use Op::*;
    let model = Model::new(Server::apache_basic(), None);
    let w = |p: Vec<u8>, n: usize| {
        Step::Op(Write {
            path: p,
            data: data(n),
        })
    };
    for i in 0..5 {
        // Every path is written once: no upload in flight can meet a newer version of its
        // file after the restart (that case is the false conflict of `Step`).
        let mut steps: Vec<Step> = seed_ops().into_iter().map(Step::Op).collect();
        steps.extend([
            Step::Crash,
            Step::Op(Mkdir { path: vec![2, 0] }),
            w(vec![3], 2284),
            w(vec![1], 2400),
            Step::Op(Unlink { path: vec![2, 0] }),
            w(vec![2, 0], 56),
            Step::Crash,
            Step::Op(Read { path: vec![3] }),
        ]);
        // A crash right after the writes, uploads in flight.
        check(&model, &format!("crash{i}"), &steps, false);
    }
}

/// Shrunk from the model: a file saved twice, and a crash while the first version was being
/// uploaded. If its MOVE happened before the crash, the second version used to find "someone
/// else's" file after the restart and became a conflict copy, the older version keeping the
/// name. The write-ahead of uploads (schema v4) knows that copy is our own.
#[test]
fn a_file_saved_twice_then_a_crash_mid_upload_makes_no_conflict_copy() {
    use Op::*;
    let model = Model::new(Server::apache_basic(), None);
    let w = |n: usize, k: u8| {
        Step::Op(Write {
            path: vec![3, 3],
            data: (0..n).map(|i| (i as u8) ^ k).collect(),
        })
    };
    for i in 0..8 {
        let steps = vec![
            Step::Op(Mkdir { path: vec![3] }),
            w(2001, 119),
            w(106, 0),
            Step::Crash,
            Step::Op(Read { path: vec![3, 3] }),
        ];
        check(&model, &format!("twice{i}"), &steps, false);
    }
}

/// Found by the model: a file open for reading showed the content written through the mount
/// by another descriptor while that content was staged, and the older version again once it
/// was uploaded (the handle still held the older cached version). It must keep showing the
/// new content, as on a local disk.
#[test]
fn a_reader_keeps_seeing_a_rewrite_after_it_is_uploaded() {
    let model = Model::new(Server::apache_basic(), None);
    let m = model.mount.borrow();
    let path = m.path("doc.txt");
    std::fs::write(&path, vec![1u8; 62]).unwrap();
    m.settle();
    let reader = File::open(&path).unwrap();
    assert_eq!(read_whole(&reader).unwrap().unwrap(), vec![1u8; 62]);
    std::fs::write(&path, vec![2u8; 600]).unwrap();
    assert_eq!(
        read_whole(&reader).unwrap().unwrap(),
        vec![2u8; 600],
        "while staged"
    );
    m.settle();
    // The upload ended and the staging is gone. The kernel's pages go too (as a listing
    // refresh that finds the new version makes them go): the reads reach the daemon.
    std::thread::sleep(std::time::Duration::from_millis(200));
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; fadvise only drops clean cached pages.
    let r = unsafe { libc::posix_fadvise(reader.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_eq!(
        read_whole(&reader).unwrap().unwrap(),
        vec![2u8; 600],
        "once uploaded"
    );
    assert_eq!(model.dav.get("doc.txt"), vec![2u8; 600]);
}

/// Open for writing, deleted, written and closed, then a crash before the daemon dropped the
/// staging file: nothing is kept aside (the file was deleted; its content is not to be kept).
#[test]
fn a_file_deleted_while_open_is_not_kept_aside_after_a_crash() {
    let model = Model::new(Server::apache_basic(), None);
    for i in 0..5 {
        let path = model.mount.borrow().path(&format!("gone{i}.txt"));
        std::fs::write(&path, b"first").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all_at(b"written after the unlink", 0).unwrap();
        drop(f);
        model.crash(false);
        assert!(!model.mount.borrow().path(&format!("gone{i}.txt")).exists());
    }
}

/// Shrunk from the model: a file open for reading, rewritten through another descriptor, then
/// deleted. Its reader must still read the content written last (here the file's upload may
/// or may not have ended before the unlink), never ENOENT or the older version.
#[test]
fn a_reader_of_a_rewritten_then_deleted_file_reads_the_rewrite() {
    use Op::*;
    let model = Model::new(Server::apache_basic(), None);
    for i in 0..8 {
        let mut steps: Vec<Step> = seed_ops().into_iter().map(Step::Op).collect();
        steps.extend([
            Step::Open {
                slot: 0,
                path: vec![0],
                how: OpenAs::Read,
            },
            Step::Op(Write {
                path: vec![0],
                data: data(333),
            }),
            Step::Op(Unlink { path: vec![0] }),
            Step::HeldRead { slot: 0 },
        ]);
        check(&model, &format!("unlinked{i}"), &steps, true);
    }
}

/// Shrunk from the model (a fault of the model, kept so it stays fixed): server-side edits
/// below a file are left out on both sides (Apache answers their PROPFIND with 400, where a
/// client could not make them anyway); the sequences start from the seed tree, where `a` is a
/// file.
#[test]
fn server_edits_below_a_file_are_left_out() {
    let model = Model::new(Server::apache_basic(), Some("1s"));
    let seeded = |steps: Vec<Step>| -> Vec<Step> {
        seed_ops().into_iter().map(Step::Op).chain(steps).collect()
    };
    check(
        &model,
        "below-a-file-1",
        &seeded(vec![
            Step::Crash,
            Step::Server(ServerEdit::Delete { path: vec![0, 0] }),
        ]),
        true,
    );
    check(
        &model,
        "below-a-file-2",
        &seeded(vec![
            Step::Server(ServerEdit::Put {
                path: vec![3],
                data: data(1032),
            }),
            Step::Server(ServerEdit::Put {
                path: vec![3, 0],
                data: data(1868),
            }),
        ]),
        true,
    );
}

/// A file changed here and, before its upload (a second after the close), replaced by
/// another client: the other client's version keeps the name, ours is the one conflict copy
/// (checked by the model's oracle), and both end on the server.
#[test]
fn a_server_edit_racing_a_change_not_uploaded_keeps_both_versions() {
    let model = Model::new(Server::apache_basic(), Some("1s"));
    let steps = vec![
        Step::Op(Op::Write {
            path: vec![0],
            data: data(100),
        }),
        Step::Server(ServerEdit::Put {
            path: vec![0],
            data: data(50),
        }),
        Step::Op(Op::Read { path: vec![0] }),
    ];
    let t = check(&model, "race", &steps, true);
    assert_eq!((t.edits, t.races), (1, 1), "{t:?}");
    let names = model.dav.names("race");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(is_conflict_copy_of(&names[1], "a"), "{names:?}");
}

/// Found by the model (its pin steps): `free` of a folder right after a large file was written
/// there found the file still uploading (nothing to free), and its upload then put it in the
/// cache: it said `cached` after the free. `free` now frees what is uploaded and idle (local
/// copies included); the model waits for the uploads before a free.
#[test]
fn regression_free_right_after_a_large_write() {
    use Op::*;
    let model = Model::new(Server::rclone(), None);
    for i in 0..3 {
        let steps = vec![
            Step::Op(Write {
                path: vec![0],
                data: vec![0u8; 1000],
            }),
            Step::Op(WriteBig {
                path: vec![1],
                len: 2_959_702,
                seed: 78,
            }),
            Step::Pin {
                path: vec![],
                how: PinHow::Free,
            },
            Step::Op(Read { path: vec![1] }),
            Step::Pin {
                path: vec![],
                how: PinHow::Pin,
            },
            Step::Pin {
                path: vec![1],
                how: PinHow::Unpin,
            },
        ];
        check(&model, &format!("free{i}"), &steps, false);
    }
}

/// Shrunk from a failure: a file written, then deleted as the server went away, came back
/// after a crash. Its upload had reached the server with its answer cut off, so the mount
/// still took it for never uploaded and deleted it here only. A file whose upload may have
/// landed is now deleted on the server too, when the file there has that upload's size.
#[test]
fn regression_a_file_deleted_offline_while_its_upload_landed_stays_deleted() {
    use Op::*;
    let model = Model::new(Server::apache_basic(), None);
    for i in 0..5 {
        let steps = vec![
            Step::Op(Write {
                path: vec![3],
                data: vec![7u8; 1090],
            }),
            Step::Offline(vec![Unlink { path: vec![3] }]),
            Step::CrashNow,
            Step::Op(Read { path: vec![3] }),
        ];
        check(&model, &format!("landed{i}"), &steps, false);
    }
}
