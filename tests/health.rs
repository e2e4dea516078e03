//! The server's health as `status` shows it: every request that cannot reach the server makes
//! the mount offline at once, whatever asked (a mkdir here, kept to send later; not only an
//! upload), with one connection error for the mount rather than one per waiting file; the
//! first request that reaches it again makes it online and retries the waiting uploads at
//! once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudmount::remote::faulty::{FaultKind, FaultyRemote, Op};
use cloudmount::remote::mem::MemRemote;
use cloudmount::vfs::status::Connection;
use cloudmount::vfs::{AreaSpec, UploadOptions, Vfs, VfsOptions, VfsSetup, ROOT_INO};

#[path = "common/vfs.rs"]
#[allow(dead_code)]
mod vfs_util;
use vfs_util::{settle, W};

fn open_vfs(remote: Arc<dyn cloudmount::remote::Remote>, cache: &std::path::Path) -> Arc<Vfs> {
    Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "Cloud Drive".into(),
            url: "mem://Cloud-Drive/".into(),
            remote,
            read_only: false,
        }],
        opts: VfsOptions {
            dir_ttl: Duration::from_secs(60),
            uid: 0,
            gid: 0,
            read_only: false,
            areas_as_folders: false,
            passthrough: false,
            upload: UploadOptions {
                // Long back-off: only the server's return may make the retry come early.
                retry_min: Duration::from_secs(60),
                retry_max: Duration::from_secs(60),
                ..UploadOptions::immediate()
            },
        },
        cache_dir: cache.to_path_buf(),
        cache_size: 64 << 20,
    })
    .unwrap()
}

#[tokio::test]
async fn any_failed_request_makes_the_mount_offline_at_once_and_its_return_retries_uploads() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("docs/a.txt", b"a".to_vec());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open_vfs(faulty.clone(), cache.path());
    let docs = vfs.lookup(ROOT_INO, "docs").await.unwrap().ino;
    vfs.lookup(docs, "a.txt").await.unwrap();
    assert_eq!(vfs.status().connection, Connection::Online);

    // The server goes away: the first request that finds it gone, a mkdir, says so at once
    // (the folder is made here, and on the server once it is back).
    faulty.fail_next(Op::Any, u64::MAX, FaultKind::Transient);
    vfs.mkdir(docs, "new folder")
        .await
        .expect("a mkdir offline is kept to send later");
    let st = vfs.status();
    assert_eq!(st.connection, Connection::Offline, "{st:?}");
    let reason = st.last_error.clone().expect("the reason is shown");

    // Files written meanwhile wait; the reason is shown once, not per file.
    for i in 0..4 {
        let (a, o) = vfs.create(docs, &format!("f{i}.txt"), W).await.unwrap();
        vfs.write(a.ino, o.fh, 0, b"queued").await.unwrap();
        vfs.release(a.ino, o.fh).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = vfs.status();
        // Every upload tried once and failed (nothing running, nothing on the server).
        if st.queue.files == 4 && st.queue.in_flight == 0 && nothing_on_server(&mem) {
            assert!(
                st.errors.is_empty(),
                "one connection error, not one per file: {st:?}"
            );
            assert_eq!(st.connection, Connection::Offline);
            assert!(st.last_error.is_some());
            break;
        }
        assert!(Instant::now() < deadline, "uploads never tried: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!reason.is_empty());

    // Back: the first request that reaches it (a listing here) makes the mount online, and the
    // waiting uploads go at once instead of after their 60 s back-off.
    tokio::time::sleep(cloudmount::health::MIN_OUTAGE).await;
    faulty.clear();
    let _ = vfs.statfs().await;
    assert_eq!(vfs.status().connection, Connection::Online);
    tokio::time::timeout(Duration::from_secs(20), settle(&vfs))
        .await
        .expect("the queue drains well before the back-off ends");
    for i in 0..4 {
        assert_eq!(
            mem.file_bytes(&format!("docs/f{i}.txt")).unwrap(),
            b"queued"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mem.paths().iter().any(|p| p == "docs/new folder/") {
        assert!(
            Instant::now() < deadline,
            "the folder made offline never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing was written to the server while it was away.
fn nothing_on_server(mem: &MemRemote) -> bool {
    (0..4).all(|i| mem.file_bytes(&format!("docs/f{i}.txt")).is_none())
}
