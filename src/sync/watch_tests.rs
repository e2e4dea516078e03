use std::fs::File;
use std::time::Instant;

use tokio::time::timeout;

use super::*;
use crate::sync::exclude::DEFAULT_EXCLUDES;

const QUIET: Duration = Duration::from_millis(300);
const MAX_WAIT: Duration = Duration::from_secs(5);

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("folder");
        fs::create_dir(&root).unwrap();
        Setup { _dir: dir, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn watch(&self, extra: &[&str]) -> Watcher {
        let mut pats = DEFAULT_EXCLUDES.to_vec();
        pats.extend_from_slice(extra);
        Watcher::start(&self.root, Arc::new(Excludes::from_patterns(&pats))).unwrap()
    }
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

async fn batch(w: &mut Watcher) -> Batch {
    timeout(Duration::from_secs(15), w.next_batch(QUIET, MAX_WAIT))
        .await
        .expect("a batch in time")
        .expect("the watcher runs")
}

/// No batch within a second.
async fn no_batch(w: &mut Watcher) {
    if let Ok(b) = timeout(Duration::from_secs(1), w.next_batch(QUIET, MAX_WAIT)).await {
        panic!("unexpected batch {b:?}");
    }
}

#[tokio::test]
async fn create_modify_delete_and_rename_files() {
    let s = Setup::new();
    fs::write(s.p("old.txt"), b"1").unwrap();
    let mut w = s.watch(&[]);
    assert!(!w.limited());

    fs::write(s.p("new.txt"), b"hello").unwrap();
    let b = batch(&mut w).await;
    assert_eq!(b.paths, set(&["new.txt"]));
    assert!(!b.rescan);

    fs::write(s.p("old.txt"), b"2").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["old.txt"]));

    fs::remove_file(s.p("old.txt")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["old.txt"]));

    fs::rename(s.p("new.txt"), s.p("renamed.txt")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["new.txt", "renamed.txt"]));

    // A touch (attributes).
    File::options()
        .write(true)
        .open(s.p("renamed.txt"))
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["renamed.txt"]));
    no_batch(&mut w).await;
}

#[tokio::test]
async fn a_new_directory_is_watched_at_once() {
    let s = Setup::new();
    fs::create_dir_all(s.p("a/b")).unwrap();
    let mut w = s.watch(&[]);

    // Existing subdirectories are watched from the start.
    fs::write(s.p("a/b/deep.txt"), b"x").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["a/b/deep.txt"]));

    // A new tree made faster than the watcher can add its watches: what was there before the
    // watch is reported by the walk.
    fs::create_dir_all(s.p("n/m/o")).unwrap();
    fs::write(s.p("n/m/o/f.txt"), b"x").unwrap();
    let b = batch(&mut w).await;
    for p in ["n", "n/m", "n/m/o", "n/m/o/f.txt"] {
        assert!(b.paths.contains(p), "{p} missing from {b:?}");
    }
    // And the new directories are watched.
    fs::write(s.p("n/m/o/g.txt"), b"x").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["n/m/o/g.txt"]));
}

#[tokio::test]
async fn a_directory_moved_in_or_renamed_is_followed_under_its_new_name() {
    let s = Setup::new();
    let outside = s._dir.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/x.txt"), b"x").unwrap();
    fs::create_dir(s.p("d1")).unwrap();
    let mut w = s.watch(&[]);

    fs::rename(&outside, s.p("in")).unwrap();
    let b = batch(&mut w).await;
    assert_eq!(b.paths, set(&["in", "in/sub", "in/sub/x.txt"]));
    fs::write(s.p("in/sub/y.txt"), b"y").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["in/sub/y.txt"]));

    fs::rename(s.p("d1"), s.p("d2")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["d1", "d2"]));
    fs::write(s.p("d2/new.txt"), b"x").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["d2/new.txt"]));

    // Moved out: no longer reported.
    fs::rename(s.p("in"), s._dir.path().join("gone")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["in"]));
    fs::write(s._dir.path().join("gone/sub/z.txt"), b"z").unwrap();
    no_batch(&mut w).await;
}

#[tokio::test]
async fn an_editor_save_is_one_batch() {
    let s = Setup::new();
    fs::write(s.p("doc.txt"), b"v1").unwrap();
    let mut w = s.watch(&[]);

    // GNOME's atomic save: an excluded temporary renamed over the file.
    fs::write(s.p(".goutputstream-AB12CD"), b"v2").unwrap();
    fs::rename(s.p(".goutputstream-AB12CD"), s.p("doc.txt")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["doc.txt"]));
    no_batch(&mut w).await;

    // A visible temporary, written in steps a little apart (still within the quiet time).
    fs::write(s.p("doc.txt.new"), b"v3").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::rename(s.p("doc.txt.new"), s.p("doc.txt")).unwrap();
    let b = batch(&mut w).await;
    assert_eq!(b.paths, set(&["doc.txt", "doc.txt.new"]));
    no_batch(&mut w).await;
}

#[tokio::test]
async fn excluded_paths_make_no_batch() {
    let s = Setup::new();
    fs::create_dir_all(s.p("node_modules/pkg")).unwrap();
    let mut w = s.watch(&["node_modules/"]);

    fs::write(s.p(".cloudmount-tmp-0001"), b"downloading").unwrap();
    fs::write(s.p(".doc.txt.swp"), b"vim").unwrap();
    fs::write(s.p("film.part"), b"x").unwrap();
    fs::remove_file(s.p(".doc.txt.swp")).unwrap();
    fs::write(s.p("node_modules/pkg/index.js"), b"x").unwrap();
    fs::create_dir(s.p(".Trash-1000")).unwrap();
    fs::write(s.p(".Trash-1000/x"), b"x").unwrap();
    no_batch(&mut w).await;

    // Our own download completing is a change of the real name (the engine knows it did it).
    fs::rename(s.p(".cloudmount-tmp-0001"), s.p("real.txt")).unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["real.txt"]));
}

#[tokio::test]
async fn max_wait_bounds_a_batch_of_continuous_changes() {
    let s = Setup::new();
    let mut w = s.watch(&[]);
    let writer = {
        let f = s.p("busy.log");
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                fs::write(&f, b"x").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let start = Instant::now();
    let b = timeout(
        Duration::from_secs(10),
        w.next_batch(QUIET, Duration::from_millis(1000)),
    )
    .await
    .unwrap()
    .unwrap();
    let took = start.elapsed();
    writer.join().unwrap();
    assert_eq!(b.paths, set(&["busy.log"]));
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test]
async fn a_queue_overflow_asks_for_a_rescan() {
    let s = Setup::new();
    let mut w = s.watch(&[]);
    // Nobody reads: the channel fills, then the kernel queue (16384 events by default).
    for i in 0..20_000 {
        File::create(s.p(&format!("f{i}"))).unwrap();
    }
    // Made while the queue is full: its event is lost.
    fs::create_dir(s.p("late")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no rescan asked for");
        let b = batch(&mut w).await;
        if b.rescan {
            break;
        }
    }
    // Drain, then the directory made during the loss is watched all the same.
    while timeout(Duration::from_secs(2), w.next_batch(QUIET, MAX_WAIT))
        .await
        .is_ok()
    {}
    fs::write(s.p("late/x"), b"x").unwrap();
    assert_eq!(batch(&mut w).await.paths, set(&["late/x"]));
}

#[tokio::test]
async fn running_out_of_watches_asks_for_rescans() {
    let s = Setup::new();
    for d in ["a", "b", "c"] {
        fs::create_dir(s.p(d)).unwrap();
    }
    let ex = Arc::new(Excludes::from_patterns(DEFAULT_EXCLUDES));
    // The root and one directory get a watch.
    let mut w = Watcher::start_with_budget(&s.root, ex, 2).unwrap();
    assert!(w.limited());
    let b = batch(&mut w).await;
    assert!(b.rescan);
    assert!(b.paths.is_empty());

    // A new directory gets no watch: a rescan again, with its path.
    fs::create_dir(s.p("new")).unwrap();
    let b = batch(&mut w).await;
    assert!(b.rescan);
    assert_eq!(b.paths, set(&["new"]));
}

#[tokio::test]
async fn the_root_deleted_asks_for_a_rescan() {
    let s = Setup::new();
    let mut w = s.watch(&[]);
    fs::remove_dir(&s.root).unwrap();
    assert!(batch(&mut w).await.rescan);
}

#[test]
fn start_fails_on_a_missing_root_and_drop_closes_the_descriptor() {
    let s = Setup::new();
    let ex = Arc::new(Excludes::from_patterns(&[]));
    let err = Watcher::start(&s.p("missing"), ex.clone()).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    fs::write(s.p("file"), b"x").unwrap();
    assert!(Watcher::start(&s.p("file"), ex.clone()).is_err());

    let w = Watcher::start(&s.root, ex).unwrap();
    let fd = w.inotify_fd;
    // SAFETY: F_GETFD only asks about the descriptor.
    assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    let start = Instant::now();
    drop(w);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "drop is prompt"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
}

#[tokio::test]
async fn a_batch_interrupted_by_another_wake_up_loses_nothing() {
    // The folder's task waits for a batch *or* its poll timer; when the timer wins while a
    // batch is being collected, the events already taken must not be lost.
    let s = Setup::new();
    let mut w = s.watch(&[]);
    fs::write(s.p("saved.txt"), b"x").unwrap();
    let quiet = Duration::from_millis(500);
    let cut = tokio::time::timeout(
        Duration::from_millis(150),
        w.next_batch(quiet, Duration::from_secs(5)),
    )
    .await;
    assert!(
        cut.is_err(),
        "the batch ended before its quiet time: {cut:?}"
    );
    assert!(w.has_pending(), "what was collected is kept");
    let b = tokio::time::timeout(
        Duration::from_secs(5),
        w.next_batch(quiet, Duration::from_secs(5)),
    )
    .await
    .expect("the kept batch comes")
    .expect("the watcher runs");
    assert_eq!(b.paths, set(&["saved.txt"]));
    assert!(!w.has_pending());
    fs::write(s.p("other.txt"), b"y").unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(150),
        w.next_batch(quiet, Duration::from_secs(5)),
    )
    .await;
    assert!(cut.is_err());
    w.discard_pending();
    assert!(!w.has_pending());
}
