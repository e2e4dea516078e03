use std::time::Duration;

use fuser::{MountOption, SessionACL};

use super::session::fuser_config;
use super::*;

#[test]
fn mount_options_name_the_filesystem_and_follow_flags() {
    let c = fuser_config(&MountOptions::default());
    assert!(c
        .mount_options
        .contains(&MountOption::FSName("cloudmount".into())));
    assert!(c
        .mount_options
        .contains(&MountOption::CUSTOM("subtype=cloudmount".into())));
    assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
    assert!(c.mount_options.contains(&MountOption::NoAtime));
    assert!(!c.mount_options.contains(&MountOption::RO));
    assert_eq!(c.acl, SessionACL::Owner);

    let c = fuser_config(&MountOptions {
        allow_other: true,
        read_only: true,
        source: "cloudmount:work".into(),
    });
    assert!(c.mount_options.contains(&MountOption::RO));
    assert!(c
        .mount_options
        .contains(&MountOption::FSName("cloudmount:work".into())));
    assert_eq!(c.acl, SessionACL::All);
}

/// A download held up by a slow server must not stall other requests: `ls` and `stat`
/// answer while a read of another file waits (requests are spawned, not run in the FUSE
/// thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_download_does_not_stall_listing() {
    use crate::remote::faulty::{FaultyRemote, Op};
    use crate::remote::mem::MemRemote;
    use crate::vfs::{AreaSpec, VfsOptions, VfsSetup};
    use std::time::Instant;

    const DELAY: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let mem = MemRemote::new();
    mem.insert_file("big.bin", vec![7u8; 256 << 10]);
    mem.insert_file("small.txt", &b"hi"[..]);
    let remote = Arc::new(FaultyRemote::new(mem));
    remote.delay(Op::ReadRange, DELAY);
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let vfs = Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: String::new(),
            url: "mem://root/".into(),
            remote: remote.clone(),
            read_only: false,
        }],
        opts: VfsOptions {
            dir_ttl: Duration::from_secs(1),
            uid,
            gid,
            read_only: false,
            areas_as_folders: false,
            passthrough: true,
            upload: crate::vfs::UploadOptions::immediate(),
        },
        cache_dir: dir.path().join("cache"),
        cache_size: 64 << 20,
    })
    .unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mp2 = mp.clone();
    let mut handle =
        tokio::task::spawn_blocking(move || mount(vfs, &mp2, &MountOptions::default()))
            .await
            .unwrap()
            .expect("mount");

    let big = mp.join("big.bin");
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let n = std::fs::read(big).map(|d| d.len());
        (n, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        remote.calls(Op::ReadRange) >= 1,
        "the slow read has started"
    );

    let mp3 = mp.clone();
    let t = Instant::now();
    let (names, small) = tokio::task::spawn_blocking(move || {
        let mut names: Vec<String> = std::fs::read_dir(&mp3)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        (
            names,
            std::fs::metadata(mp3.join("small.txt")).unwrap().len(),
        )
    })
    .await
    .unwrap();
    let listing_took = t.elapsed();
    let (read, read_took) = reader.join().unwrap();

    let unmounted = handle.unmount(false, Duration::from_secs(10)).await;
    assert_eq!(names, ["big.bin", "small.txt"]);
    assert_eq!(small, 2);
    assert_eq!(read.expect("read big.bin"), 256 << 10);
    assert!(
        read_took >= DELAY - Duration::from_millis(500),
        "{read_took:?}"
    );
    assert!(
        // Far below the delay, with room for a loaded machine: it must not wait for the read.
        listing_took < DELAY / 2,
        "ls and stat took {listing_took:?} while a read was held up for {DELAY:?}"
    );
    unmounted.expect("unmount");
}

#[tokio::test]
async fn inflight_counts_and_idles() {
    let inflight = Inflight::new();
    inflight.idle().await; // nothing in flight: returns at once
    let g1 = inflight.enter();
    let g2 = inflight.enter();
    let waiter = {
        let inflight = inflight.clone();
        tokio::spawn(async move { inflight.idle().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    drop(g1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished());
    drop(g2);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("idle after the last guard")
        .unwrap();
}
