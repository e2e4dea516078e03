//! The durable upload queue, through the vfs, on the in-memory server and the fault injector:
//! crash recovery, injected failures, outages, coalescing, and never damaging the server's copy.
//! (The same behaviours over real servers and real network faults: `mount_writeback.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::faulty::{FaultKind, FaultyRemote, Op};
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::{Remote, RemotePath};
use cloudmount::vfs::{
    AreaSpec, Ino, OpenMode, RenameFlags, UploadOptions, Vfs, VfsOptions, VfsSetup, ROOT_INO,
};

#[path = "common/vfs.rs"]
mod vfs_util;
use vfs_util::{names_in, read_all, settle, R, W};

fn open_vfs(remote: Arc<dyn Remote>, cache: &Path, delay: Duration) -> Arc<Vfs> {
    open_vfs_ttl(remote, cache, delay, Duration::from_secs(60))
}

fn open_vfs_ttl(
    remote: Arc<dyn Remote>,
    cache: &Path,
    delay: Duration,
    dir_ttl: Duration,
) -> Arc<Vfs> {
    Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "Cloud Drive".into(),
            url: "mem://Cloud-Drive/".into(),
            remote,
            read_only: false,
        }],
        opts: VfsOptions {
            dir_ttl,
            uid: 0,
            gid: 0,
            read_only: false,
            areas_as_folders: false,
            passthrough: true,
            upload: UploadOptions {
                delay,
                ..UploadOptions::immediate()
            },
        },
        cache_dir: cache.to_path_buf(),
        cache_size: 64 << 20,
    })
    .unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` as the whole content of `name` at the root (created, or truncated), and
/// closes it.
async fn write_file(vfs: &Vfs, name: &str, data: &[u8]) -> Ino {
    let (ino, fh) = match vfs.lookup(ROOT_INO, name).await {
        Ok(a) => {
            let truncate = OpenMode {
                write: true,
                truncate: true,
                append: false,
            };
            (a.ino, vfs.open(a.ino, truncate).await.unwrap().fh)
        }
        Err(_) => {
            let (a, o) = vfs.create(ROOT_INO, name, W).await.unwrap();
            (a.ino, o.fh)
        }
    };
    vfs.write(ino, fh, 0, data).await.unwrap();
    vfs.flush(ino, fh).await.unwrap();
    vfs.release(ino, fh).await.unwrap();
    ino
}

/// The files a test wrote: name → content.
fn files(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let size = match i % 5 {
                0 => 0,
                1 => 1,
                2 => 4096,
                3 => 300_000,
                _ => 1 << 20,
            };
            (format!("file {i} é%#?.bin"), pattern(size, i as u8))
        })
        .collect()
}

fn assert_server_has(mem: &MemRemote, want: &[(String, Vec<u8>)]) {
    for (name, data) in want {
        let got = mem
            .file_bytes(name)
            .unwrap_or_else(|| panic!("{name} is not on the server: {:?}", mem.paths()));
        assert!(
            got == *data,
            "{name}: {} bytes on the server, {} written",
            got.len(),
            data.len()
        );
    }
    let temps: Vec<String> = mem
        .paths()
        .into_iter()
        .filter(|p| p.contains(".cloudmount-upload-"))
        .collect();
    assert!(temps.is_empty(), "temporary uploads left: {temps:?}");
}

#[tokio::test]
async fn closed_files_survive_a_crash_and_are_uploaded_by_the_next_start() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("existing.txt", b"old version".to_vec());
    let want = files(10);
    {
        // The server refuses every upload: nothing leaves the machine before the "crash".
        let faulty = Arc::new(FaultyRemote::new(mem.clone()));
        faulty.fail_next(Op::Put, u64::MAX, FaultKind::Transient);
        let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
        for (name, data) in &want {
            write_file(&vfs, name, data).await;
        }
        write_file(&vfs, "existing.txt", b"new version").await;
        assert_eq!(vfs.status().queue.files, 11);
        // A crash: the vfs goes away without shutdown (no flush, no final upload).
        drop(vfs);
    }
    assert!(mem.file_bytes("file 1 é%#?.bin").is_none());
    assert_eq!(mem.file_bytes("existing.txt").unwrap(), b"old version");

    // The next start finds every file; they read back right even before they are uploaded.
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    faulty.delay(Op::Put, Duration::from_millis(300));
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    assert_eq!(vfs.status().queue.files, 11, "every record found at start");
    let ino = vfs.lookup(ROOT_INO, "file 4 é%#?.bin").await.unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, want[4].1);
    let ino = vfs.lookup(ROOT_INO, "existing.txt").await.unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, b"new version");
    settle(&vfs).await;
    assert_server_has(&mem, &want);
    assert_eq!(mem.file_bytes("existing.txt").unwrap(), b"new version");
    // Nothing is left behind in the staging folder.
    let left = std::fs::read_dir(cache.path().join("staging"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_file_still_open_at_a_crash_is_kept_not_lost() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    {
        let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
        let (a, o) = vfs.create(ROOT_INO, "open.txt", W).await.unwrap();
        vfs.write(a.ino, o.fh, 0, b"never closed").await.unwrap();
        drop(vfs);
    }
    let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
    // Never closed, so never committed: not uploaded, but moved aside, never deleted.
    let recovered: Vec<_> = std::fs::read_dir(cache.path().join("recovered"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(recovered, vec![b"never closed".to_vec()]);
    // And status says so, with where.
    let kept = vfs.status().kept_aside.expect("status shows the kept file");
    assert_eq!(kept.files, 1);
    assert!(kept.dir.ends_with("recovered"), "{}", kept.dir);
}

#[tokio::test]
async fn uploads_survive_injected_put_failures() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    // The 2nd and 5th PUT fail, a third of the rest fail at random, and three bodies break
    // midway.
    faulty.fail_nth(Op::Put, 2, FaultKind::Transient);
    faulty.fail_nth(Op::Put, 5, FaultKind::Status(503));
    faulty.fail_fraction(Op::Put, 0.33, 7, FaultKind::Timeout);
    faulty.cut_put_after_times(1000, 3);
    faulty.fail_fraction(Op::Rename, 0.2, 9, FaultKind::Transient);
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    let want = files(15);
    for (name, data) in &want {
        write_file(&vfs, name, data).await;
    }
    settle(&vfs).await;
    assert!(faulty.injected(Op::Put) >= 2, "faults were injected");
    assert_server_has(&mem, &want);
}

/// Found by the mount's reference model: a file truncated while its upload was reading it gave
/// a body shorter than announced. That is the file changing, not the server failing: no
/// error is reported (over HTTP it also took the queue offline), and the new content follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_it_is_uploaded_is_sent_again_without_an_error() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    // The upload's body is read only after this delay: time to truncate the file first.
    faulty.delay(Op::Put, Duration::from_millis(400));
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    let ino = write_file(&vfs, "log.txt", &pattern(100_000, 3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while faulty.calls(Op::Put) == 0 {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Truncated, and still open for writing, while the PUT reads it.
    let o = vfs.open(ino, W).await.unwrap();
    vfs.setattr(
        ino,
        Some(o.fh),
        cloudmount::vfs::SetAttr {
            size: Some(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        faulty.calls(Op::Put) >= 1 && mem.file_bytes("log.txt").is_none(),
        "the first upload cannot have succeeded"
    );
    let st = vfs.status();
    assert!(
        st.errors.is_empty() && st.last_error.is_none(),
        "a file changing under its upload is no error: {st:?}"
    );
    vfs.flush(ino, o.fh).await.unwrap();
    vfs.release(ino, o.fh).await.unwrap();
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("log.txt").unwrap(), pattern(10, 3));
    assert!(vfs.status().errors.is_empty());
    assert_eq!(
        mem.paths(),
        vec!["log.txt".to_string()],
        "no temporary copy is left"
    );
}

/// Temporary upload files no upload will move into place are deleted when their folder is
/// listed: this cache's whose record is gone (a crash between PUT and MOVE), and anyone's
/// older than a day. Another client's recent one, and our own in use, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_temporary_uploads_are_swept_when_their_folder_is_listed() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    // The first PUT is slow: its upload is in flight while the folder is listed.
    faulty.delay(Op::Put, Duration::from_millis(1500));
    // This cache's identity, as its own uploads' temporary names carry it (read before the
    // vfs opens the store, which it then holds alone).
    let tag = cloudmount::meta::MetaStore::open(&cache.path().join("meta.db"))
        .unwrap()
        .cache_id()
        .unwrap();
    let vfs = open_vfs_ttl(
        faulty.clone(),
        cache.path(),
        Duration::ZERO,
        Duration::from_millis(100),
    );
    // Record 1: its upload waits for the PUT while the folder is listed again.
    write_file(&vfs, "busy.txt", b"in flight").await;
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(25 * 3600);
    let ours_crashed = format!(".cloudmount-upload-{tag}-999.part");
    let ours_busy = format!(".cloudmount-upload-{tag}-1.part");
    let theirs_new = ".cloudmount-upload-00112233aabbccdd-5.part";
    let theirs_old = ".cloudmount-upload-00112233aabbccdd-6.part";
    let old_form = ".cloudmount-upload-7.part";
    for n in [&ours_crashed, &ours_busy, theirs_new, theirs_old, old_form] {
        mem.insert_file(n, &b"x"[..]);
    }
    mem.set_mtime(theirs_old, day_ago);
    mem.set_mtime(old_form, day_ago);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let names = names_in(&vfs, ROOT_INO).await;
    assert!(
        !names.iter().any(|n| n.starts_with(".cloudmount-upload-")),
        "temporary names are hidden: {names:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mem.exists(&ours_crashed) || mem.exists(theirs_old) || mem.exists(old_form) {
        assert!(
            std::time::Instant::now() < deadline,
            "strays not swept: {:?}",
            mem.paths()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mem.exists(theirs_new),
        "another client's recent upload stays"
    );
    assert!(
        mem.exists(&ours_busy),
        "our upload in flight keeps its file"
    );
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("busy.txt").unwrap(), b"in flight");
}

/// A crash after an upload's MOVE but before its record is updated, while a newer version
/// of the file was already saved: after the restart the newer version finds the older one on
/// the server, and must know it as its own (the write-ahead of uploads, schema v4) — not keep
/// both as a conflict, the older under the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_an_uploads_move_and_its_record_makes_no_false_conflict() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let v1 = pattern(2001, 1);
    let v2 = pattern(106, 2);
    let snapshot = tempfile::tempdir().unwrap();
    {
        let faulty = Arc::new(FaultyRemote::new(mem.clone()));
        // The PROPFIND after the MOVE hangs: the upload of v1 is stuck between its MOVE and
        // its record.
        faulty.delay(Op::Stat, Duration::from_secs(3));
        let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
        write_file(&vfs, "doc.txt", &v1).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while faulty.calls(Op::Rename) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "v1 was never moved into place"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(mem.file_bytes("doc.txt").unwrap(), v1);
        write_file(&vfs, "doc.txt", &v2).await;
        // The crash: the cache directory as it is on disk now.
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", cache.path().display()))
            .arg(snapshot.path())
            .status()
            .unwrap();
        assert!(out.success());
        drop(vfs);
    }
    let vfs = open_vfs(mem.clone(), snapshot.path(), Duration::ZERO);
    settle(&vfs).await;
    assert_eq!(
        mem.file_bytes("doc.txt").unwrap(),
        v2,
        "the newer version has the name"
    );
    assert_eq!(
        mem.paths(),
        vec!["doc.txt".to_string()],
        "no conflict copy, no temporary file"
    );
    assert!(vfs.status().conflicts.is_empty());
}

/// A staging file whose upload ended but which was not yet moved into the cache when the
/// daemon died is dropped at the next start (its content is on the server), not kept aside as
/// "never closed" — unless it changed after its upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_staging_file_left_by_a_crash_is_dropped_not_kept_aside() {
    use std::os::unix::fs::MetadataExt;
    for changed_after in [false, true] {
        let cache = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemRemote::new());
        {
            // Staged and committed; no upload gets through before the "crash".
            let faulty = Arc::new(FaultyRemote::new(mem.clone()));
            faulty.fail_next(Op::Put, u64::MAX, FaultKind::Transient);
            let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
            write_file(&vfs, "a.txt", b"content").await;
            drop(vfs);
        }
        // The state an upload that ended leaves (schema v5): the record gone, the staging
        // file recorded as uploaded with its size and mtime.
        let staging: Vec<_> = std::fs::read_dir(cache.path().join("staging"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(staging.len(), 1);
        let md = std::fs::metadata(&staging[0]).unwrap();
        let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec() + i64::from(changed_after);
        let rel = format!(
            "staging/{}",
            staging[0].file_name().unwrap().to_str().unwrap()
        );
        let db = rusqlite::Connection::open(cache.path().join("meta.db")).unwrap();
        db.execute("DELETE FROM dirty", []).unwrap();
        db.execute(
            "INSERT INTO uploaded_staging (staging, size, mtime_ns) VALUES (?1, ?2, ?3)",
            rusqlite::params![rel.as_bytes(), md.len() as i64, mtime],
        )
        .unwrap();
        drop(db);
        let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
        let st = vfs.status();
        let left = std::fs::read_dir(cache.path().join("staging"))
            .unwrap()
            .count();
        if changed_after {
            assert_eq!(
                st.kept_aside.map(|k| k.files),
                Some(1),
                "changed since: kept"
            );
        } else {
            assert!(st.kept_aside.is_none(), "kept aside: {:?}", st.kept_aside);
        }
        assert_eq!(left, 0, "the staging folder is empty either way");
    }
}

/// A file written again (not closed) while its last closed version is being moved into place
/// on the server: if the daemon dies then, the newer bytes are kept aside, not dropped as
/// "the server's version" (which the end of that upload used to record the staging file as).
#[tokio::test]
async fn writes_made_while_an_upload_is_moved_into_place_are_kept_after_a_crash() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    {
        let faulty = Arc::new(FaultyRemote::new(mem.clone()));
        faulty.delay(Op::Rename, Duration::from_millis(400));
        let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
        // Closed: committed, and its upload starts; the temporary copy's MOVE is slow.
        let ino = write_file(&vfs, "a.txt", b"version one").await;
        for _ in 0..100 {
            if faulty.calls(Op::Rename) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(faulty.calls(Op::Rename), 1, "{:?}", vfs.status());
        // Written again during that MOVE (the same size), never closed.
        let o = vfs.open(ino, W).await.unwrap();
        vfs.write(ino, o.fh, 0, b"VERSION TWO").await.unwrap();
        for _ in 0..200 {
            if mem.file_bytes("a.txt").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(mem.file_bytes("a.txt").unwrap(), b"version one");
        drop(vfs);
    }
    let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
    settle(&vfs).await;
    let kept = vfs.status().kept_aside;
    assert_eq!(kept.as_ref().map(|k| k.files), Some(1), "{kept:?}");
    let file = std::fs::read_dir(cache.path().join("recovered"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(file).unwrap(), b"VERSION TWO");
    assert_eq!(mem.file_bytes("a.txt").unwrap(), b"version one");
}

#[tokio::test]
async fn a_broken_upload_never_truncates_the_servers_copy() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    // Like rclone's server: a PUT cut midway leaves its target empty.
    mem.set_truncate_on_failed_put(true);
    let old = pattern(200_000, 1);
    mem.insert_file("doc.bin", old.clone());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    faulty.cut_put_after_times(50_000, 2);
    faulty.delay(Op::Put, Duration::from_millis(100));
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    let new = pattern(300_000, 2);
    let ino = write_file(&vfs, "doc.bin", &new).await;
    // While the uploads break, the server's copy stays whole.
    for _ in 0..20 {
        let got = mem.file_bytes("doc.bin").unwrap();
        assert!(
            got == old || got == new,
            "server copy damaged: {} bytes",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("doc.bin").unwrap(), new);
    assert_eq!(read_all(&vfs, ino).await, new);
    assert_server_has(&mem, &[]);
}

#[tokio::test]
async fn an_outage_keeps_writes_and_reads_working_and_the_queue_drains_after() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("cached.txt", b"read me offline".to_vec());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    let cached = vfs.lookup(ROOT_INO, "cached.txt").await.unwrap().ino;
    assert_eq!(read_all(&vfs, cached).await, b"read me offline");

    // The server goes away.
    faulty.fail_next(Op::Any, u64::MAX, FaultKind::Transient);
    let want = files(6);
    for (name, data) in &want {
        write_file(&vfs, name, data).await;
    }
    assert_eq!(read_all(&vfs, cached).await, b"read me offline");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = vfs.status();
        if st.connection == cloudmount::vfs::status::Connection::Offline
            && st.queue.files == 6
            && st.queue.in_flight == 0
        {
            // One connection error for the mount, not one per waiting file.
            assert!(st.last_error.is_some(), "{st:?}");
            assert!(st.errors.is_empty(), "{st:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never offline: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mem.file_bytes(&want[1].0).is_none());

    // It comes back: the queue drains by itself.
    faulty.clear();
    settle(&vfs).await;
    assert_server_has(&mem, &want);
    assert_eq!(
        vfs.status().connection,
        cloudmount::vfs::status::Connection::Online
    );
}

#[tokio::test]
async fn a_file_rewritten_before_its_upload_is_uploaded_once() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let vfs = open_vfs(mem.clone(), cache.path(), Duration::from_millis(700));
    for i in 0..5u8 {
        write_file(&vfs, "draft.txt", &[b'a' + i; 100]).await;
    }
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("draft.txt").unwrap(), vec![b'e'; 100]);
    assert_eq!(mem.counters().put, 1, "one upload for five closes");
}

#[tokio::test]
async fn editor_save_patterns_upload_only_the_result() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("notes.txt", b"v1".to_vec());
    let vfs = open_vfs(mem.clone(), cache.path(), Duration::from_millis(700));
    vfs.lookup(ROOT_INO, "notes.txt").await.unwrap();
    // A lock file created and deleted: never uploaded.
    write_file(&vfs, ".notes.txt.swp", b"lock").await;
    vfs.unlink(ROOT_INO, ".notes.txt.swp").await.unwrap();
    // Save: write a temporary file, rename it over the original.
    write_file(&vfs, "notes.txt.tmp", b"v2, saved").await;
    vfs.rename(
        ROOT_INO,
        "notes.txt.tmp",
        ROOT_INO,
        "notes.txt",
        RenameFlags::default(),
    )
    .await
    .unwrap();
    // A new file renamed before its upload.
    write_file(&vfs, "a.txt", b"moved").await;
    vfs.rename(ROOT_INO, "a.txt", ROOT_INO, "b.txt", RenameFlags::default())
        .await
        .unwrap();
    settle(&vfs).await;
    let mut names = mem.paths();
    names.sort();
    assert_eq!(names, vec!["b.txt", "notes.txt"]);
    assert_eq!(mem.file_bytes("notes.txt").unwrap(), b"v2, saved");
    assert_eq!(mem.file_bytes("b.txt").unwrap(), b"moved");
    assert_eq!(mem.counters().put, 2, "one upload per resulting file");
}

#[tokio::test]
async fn a_dirty_file_is_never_evicted_and_stays_writable() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    faulty.fail_next(Op::Put, u64::MAX, FaultKind::Transient);
    // Other files to fill the cache many times over.
    for i in 0..4 {
        mem.insert_file(&format!("other{i}"), pattern(30 << 20, i));
    }
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    let big = pattern(3 << 20, 5);
    let ino = write_file(&vfs, "big.bin", &big).await;
    for i in 0..4 {
        let o = vfs
            .lookup(ROOT_INO, &format!("other{i}"))
            .await
            .unwrap()
            .ino;
        assert_eq!(read_all(&vfs, o).await.len(), 30 << 20);
    }
    assert_eq!(read_all(&vfs, ino).await, big);
    assert_eq!(
        vfs.getxattr(ino, "user.cloudmount.state").await.unwrap(),
        b"error"
    );
    // Writable while queued: append, and the upload gets the new content.
    let o = vfs.open(ino, W).await.unwrap();
    vfs.write(ino, o.fh, big.len() as u64, b"tail")
        .await
        .unwrap();
    vfs.release(ino, o.fh).await.unwrap();
    faulty.clear();
    settle(&vfs).await;
    let mut want = big;
    want.extend_from_slice(b"tail");
    assert_eq!(mem.file_bytes("big.bin").unwrap(), want);
}

#[tokio::test]
async fn injected_412s_and_507s_never_lose_data_or_make_false_copies() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("old.txt", b"before".to_vec());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open_vfs(faulty.clone(), cache.path(), Duration::ZERO);
    vfs.lookup(ROOT_INO, "old.txt").await.unwrap();
    // A 412 on the temporary PUT, a 412 on the MOVE of a new file with nothing in its place,
    // and a 507 once: each is retried; none becomes a conflict copy.
    faulty.fail_nth(Op::Put, 1, FaultKind::Status(412));
    faulty.fail_nth(Op::Rename, 2, FaultKind::Status(412));
    faulty.fail_nth(Op::Put, 4, FaultKind::Status(507));
    write_file(&vfs, "old.txt", b"after").await;
    write_file(&vfs, "new.txt", b"brand new").await;
    write_file(&vfs, "third.txt", b"third").await;
    settle(&vfs).await;
    assert!(faulty.injected(Op::Put) + faulty.injected(Op::Rename) >= 3);
    let mut names = mem.paths();
    names.sort();
    assert_eq!(
        names,
        vec!["new.txt", "old.txt", "third.txt"],
        "no conflict copies"
    );
    assert_eq!(mem.file_bytes("old.txt").unwrap(), b"after");
    assert_eq!(mem.file_bytes("new.txt").unwrap(), b"brand new");
    assert_eq!(mem.file_bytes("third.txt").unwrap(), b"third");
    assert!(vfs.status().conflicts.is_empty());
    assert!(vfs.status().queue.paused.is_none());
}

/// A tmpfs of `size` mounted at `dir` for the test, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root to mount a small tmpfs (the README test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_local_disk_gives_enospc_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let _disk = SmallDisk::mount(&cache, "4m");
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("keep.txt", b"server copy".to_vec());
    let vfs = open_vfs(mem.clone(), &cache, Duration::ZERO);
    write_file(&vfs, "small.txt", b"small").await;
    settle(&vfs).await;

    // A big file fills the cache's disk: write() says ENOSPC.
    let (a, o) = vfs.create(ROOT_INO, "big.bin", W).await.unwrap();
    let chunk = vec![7u8; 64 << 10];
    let mut failed = None;
    for i in 0..128u64 {
        if let Err(e) = vfs.write(a.ino, o.fh, i * (64 << 10), &chunk).await {
            failed = Some(e);
            break;
        }
    }
    let err = failed.expect("the 4 MiB disk filled up");
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    // close() may fail as well (nothing more fits), but nothing else is touched.
    let _ = vfs.flush(a.ino, o.fh).await;
    let _ = vfs.release(a.ino, o.fh).await;
    assert_eq!(mem.file_bytes("keep.txt").unwrap(), b"server copy");
    assert_eq!(mem.file_bytes("small.txt").unwrap(), b"small");
    let ino = vfs.lookup(ROOT_INO, "small.txt").await.unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, b"small");

    // Deleting the big file gives the space back; writing and uploading work again.
    vfs.unlink(ROOT_INO, "big.bin").await.unwrap();
    settle(&vfs).await;
    write_file(&vfs, "after.txt", b"after").await;
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("after.txt").unwrap(), b"after");
    assert!(
        mem.file_bytes("big.bin").is_none(),
        "the deleted file is not on the server"
    );
}

#[tokio::test]
async fn offline_listings_answer_from_what_is_known_without_waiting_for_the_network() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("d/x.txt", b"x".to_vec());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open_vfs_ttl(
        faulty.clone(),
        cache.path(),
        Duration::ZERO,
        Duration::from_millis(200),
    );
    let d = vfs.lookup(ROOT_INO, "d").await.unwrap().ino;
    vfs.lookup(d, "x.txt").await.unwrap();
    // The network fails once (offline is noticed), then every request hangs: the cable is
    // out. (Any request that reached the server, a quota asked by `status` say, would make the
    // mount online again: the health is the last answer's.)
    faulty.fail_next(Op::List, 1, FaultKind::Transient);
    tokio::time::sleep(Duration::from_millis(300)).await;
    vfs.lookup(d, "x.txt").await.unwrap();
    faulty.delay(Op::Any, Duration::from_secs(12));
    assert_eq!(
        vfs.status().connection,
        cloudmount::vfs::status::Connection::Offline
    );
    // Past the retry pause: lookups, listings and writes answer from what is known, at once,
    // while the server is asked again in the background.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    let quick = async {
        vfs.lookup(d, "x.txt").await.unwrap();
        let fh = vfs.opendir(d).await.unwrap();
        vfs.releasedir(fh);
        let (a, o) = vfs.create(d, "new.txt", W).await.unwrap();
        vfs.write(a.ino, o.fh, 0, b"offline").await.unwrap();
        vfs.flush(a.ino, o.fh).await.unwrap();
        vfs.release(a.ino, o.fh).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), quick)
        .await
        .expect("the mount answered without waiting for the hanging server");
    // Later still, with a background listing hanging on the dead network: still at once.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    tokio::time::timeout(Duration::from_secs(5), vfs.lookup(d, "new.txt"))
        .await
        .expect("a hanging background listing does not hold up lookups")
        .unwrap();
    assert_eq!(vfs.status().queue.files, 1);
    // The network is back (the requests hanging now end within 12 s): the queue drains.
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("d/new.txt").unwrap(), b"offline");
}

/// The cache's disk is full (the cache budget is bigger than the disk): reading a file from
/// the server still gives its bytes, served from the download without being kept.
#[tokio::test]
async fn reads_work_when_the_cache_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let _disk = SmallDisk::mount(&cache, "4m");
    let mem = Arc::new(MemRemote::new());
    let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 251) as u8).collect();
    mem.insert_file("big.bin", data.clone());
    mem.insert_file("small.txt", b"small".to_vec());
    let vfs = open_vfs(mem.clone(), &cache, Duration::ZERO);
    // Fill what is left of the disk.
    let filler = cache.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let mut n = 0u64;
    while std::io::Write::write_all(&mut f, &[0u8; 64 << 10]).is_ok() {
        n += 1;
    }
    drop(f);
    assert!(n > 0, "the filler took some space");
    let ino = vfs.lookup(ROOT_INO, "big.bin").await.unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, data, "sequential read of 12 MiB");
    // Random reads, and a small file read whole.
    let o = vfs.open(ino, R).await.unwrap();
    for off in [5_000_000u64, 77, 11 << 20, 3 << 20] {
        let got = vfs.read(ino, o.fh, off, 200_000).await.unwrap();
        let end = (off as usize + 200_000).min(data.len());
        assert_eq!(&got[..], &data[off as usize..end], "pread at {off}");
    }
    vfs.release(ino, o.fh).await.unwrap();
    let small = vfs.lookup(ROOT_INO, "small.txt").await.unwrap().ino;
    assert_eq!(read_all(&vfs, small).await, b"small");
    // Space back: reads are cached again (a second read costs no GET).
    std::fs::remove_file(&filler).unwrap();
    let ino2 = vfs.lookup(ROOT_INO, "small.txt").await.unwrap().ino;
    read_all(&vfs, ino2).await;
    settle(&vfs).await;
    let gets = mem.counters().read_range;
    assert_eq!(read_all(&vfs, ino2).await, b"small");
    assert_eq!(mem.counters().read_range, gets);
}

/// A conflict copy deleted on the server (the user resolved the conflict elsewhere) leaves
/// `status` at the next listing, and stays gone after a restart.
#[tokio::test]
async fn a_conflict_resolved_on_the_server_leaves_status() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("doc.txt", b"v1".to_vec());
    let ttl = Duration::from_millis(200);
    let vfs = open_vfs_ttl(mem.clone(), cache.path(), Duration::ZERO, ttl);
    let ino = vfs.lookup(ROOT_INO, "doc.txt").await.unwrap().ino;
    let o = vfs.open(ino, W).await.unwrap();
    mem.insert_file("doc.txt", b"theirs".to_vec());
    vfs.write(ino, o.fh, 0, b"mine").await.unwrap();
    vfs.release(ino, o.fh).await.unwrap();
    settle(&vfs).await;
    let conflicts = vfs.status().conflicts;
    assert_eq!(conflicts.len(), 1);
    let copy = conflicts[0].copy.clone();
    // Listed (the copy is seen), then deleted on the server.
    vfs.lookup(ROOT_INO, &copy).await.unwrap();
    mem.delete(&RemotePath::new(&copy).unwrap()).await.unwrap();
    assert_eq!(vfs.status().conflicts.len(), 1, "not known yet");
    tokio::time::sleep(ttl * 2).await;
    assert!(vfs.lookup(ROOT_INO, &copy).await.is_err());
    assert!(vfs.status().conflicts.is_empty());
    settle(&vfs).await;
    drop(vfs);
    let vfs = open_vfs_ttl(mem.clone(), cache.path(), Duration::ZERO, ttl);
    assert!(vfs.status().conflicts.is_empty(), "forgotten for good");
}

/// Issue 14, bug two: nginx's PROPFIND lists no ETag (GET and HEAD do send one). A file read
/// here, changed on the server by another client, then appended to here keeps both versions
/// — the other client's under the name, ours as a conflict copy — as on servers that list
/// ETags; also on a server that gives no ETag at all (size and mtime tell the versions apart).
#[tokio::test]
async fn a_change_made_elsewhere_is_kept_when_the_server_lists_no_etags() {
    use cloudmount::remote::mem::ETagReport;
    for report in [ETagReport::NotInListings, ETagReport::Nowhere] {
        let cache = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemRemote::new());
        mem.set_etag_report(report);
        mem.insert_file("c.txt", b"line 1\n".to_vec());
        let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
        let ino = vfs.lookup(ROOT_INO, "c.txt").await.unwrap().ino;
        assert_eq!(read_all(&vfs, ino).await, b"line 1\n");
        let theirs = b"line 1\nfrom elsewhere\n".to_vec();
        mem.insert_file("c.txt", theirs.clone());
        let append = OpenMode {
            write: true,
            truncate: false,
            append: true,
        };
        let o = vfs.open(ino, append).await.unwrap();
        vfs.write(ino, o.fh, 7, b"from here\n").await.unwrap();
        vfs.release(ino, o.fh).await.unwrap();
        settle(&vfs).await;
        assert_eq!(
            mem.file_bytes("c.txt").unwrap(),
            theirs,
            "{report:?}: the other client's edit was overwritten"
        );
        let conflicts = vfs.status().conflicts;
        assert_eq!(conflicts.len(), 1, "{report:?}: {conflicts:?}");
        assert_eq!(conflicts[0].path, "c.txt");
        let copy = &conflicts[0].copy;
        assert!(copy.starts_with("c (conflicted copy "), "{copy}");
        assert_eq!(mem.file_bytes(copy).unwrap(), b"line 1\nfrom here\n");
        assert_eq!(mem.paths().len(), 2, "{:?}", mem.paths());
    }
}

/// The other side of the same check: with no ETag listed, an unchanged file is replaced
/// without a false conflict, and so is the next change made after that upload.
#[tokio::test]
async fn an_unchanged_file_is_replaced_without_a_conflict_when_the_server_lists_no_etags() {
    use cloudmount::remote::mem::ETagReport;
    for report in [ETagReport::NotInListings, ETagReport::Nowhere] {
        let cache = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemRemote::new());
        mem.set_etag_report(report);
        mem.insert_file("c.txt", b"line 1\n".to_vec());
        let vfs = open_vfs(mem.clone(), cache.path(), Duration::ZERO);
        let ino = vfs.lookup(ROOT_INO, "c.txt").await.unwrap().ino;
        assert_eq!(read_all(&vfs, ino).await, b"line 1\n");
        let mut want = b"line 1\n".to_vec();
        for line in [&b"line 2\n"[..], b"line 3\n"] {
            let o = vfs.open(ino, W).await.unwrap();
            vfs.write(ino, o.fh, want.len() as u64, line).await.unwrap();
            vfs.release(ino, o.fh).await.unwrap();
            want.extend_from_slice(line);
            settle(&vfs).await;
            assert_eq!(mem.file_bytes("c.txt").unwrap(), want, "{report:?}");
            assert!(
                vfs.status().conflicts.is_empty(),
                "{report:?}: a false conflict"
            );
        }
        assert_eq!(mem.paths(), vec!["c.txt".to_string()]);
    }
}
