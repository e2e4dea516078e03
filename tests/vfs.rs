//! The filesystem logic without a kernel: the `Vfs` on the in-memory fake (and the fault
//! injector), checking what reaches the "server" and what the application sees.

use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::faulty::{FaultKind, FaultyRemote, Op};
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::Remote;
use cloudmount::vfs::{
    AreaSpec, FileKind, Ino, OpenIo, OpenMode, RenameFlags, SetAttr, Vfs, VfsOptions, VfsSetup,
    ROOT_INO,
};

#[path = "common/vfs.rs"]
mod vfs_util;
use vfs_util::{names_in, read_all, settle, R, W};

struct Fixture {
    vfs: Arc<Vfs>,
    _dir: tempfile::TempDir,
}

fn opts(ttl: Duration) -> VfsOptions {
    VfsOptions {
        dir_ttl: ttl,
        uid: 1000,
        gid: 1000,
        read_only: false,
        areas_as_folders: false,
        passthrough: true,
        upload: cloudmount::vfs::UploadOptions::immediate(),
    }
}

fn mount_on(remote: Arc<dyn Remote>, ttl: Duration, dir: tempfile::TempDir) -> Fixture {
    let vfs = Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "Cloud Drive".into(),
            url: "mem://Cloud-Drive/".into(),
            remote,
            read_only: false,
        }],
        opts: opts(ttl),
        cache_dir: dir.path().join("cache"),
        cache_size: 64 << 20,
    })
    .unwrap();
    Fixture { vfs, _dir: dir }
}

fn mount(remote: Arc<dyn Remote>) -> Fixture {
    mount_on(
        remote,
        Duration::from_secs(60),
        tempfile::tempdir().unwrap(),
    )
}

async fn write_file(vfs: &Vfs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let (attr, o) = vfs.create(parent, name, W).await.unwrap();
    vfs.write(attr.ino, o.fh, 0, data).await.unwrap();
    vfs.flush(attr.ino, o.fh).await.unwrap();
    vfs.release(attr.ino, o.fh).await.unwrap();
    settle(vfs).await;
    attr.ino
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn listing_and_reading_what_the_server_has() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("docs/a.txt", b"hello".to_vec());
    mem.insert_file("big.bin", pattern(3 << 20));
    let f = mount(mem.clone());
    let docs = f.vfs.lookup(ROOT_INO, "docs").await.unwrap();
    assert_eq!(docs.kind, FileKind::Dir);
    let a = f.vfs.lookup(docs.ino, "a.txt").await.unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(read_all(&f.vfs, a.ino).await, b"hello");
    let big = f.vfs.lookup(ROOT_INO, "big.bin").await.unwrap();
    assert_eq!(read_all(&f.vfs, big.ino).await, pattern(3 << 20));
    // A second read is served from the cache: no more GETs.
    let gets = mem.counters().read_range;
    assert_eq!(read_all(&f.vfs, big.ino).await, pattern(3 << 20));
    assert_eq!(mem.counters().read_range, gets);
    // readdir shows . .. and the children, sorted.
    let names = names_in(&f.vfs, ROOT_INO).await;
    assert_eq!(names, [".", "..", "big.bin", "docs"]);
    assert!(f.vfs.lookup(ROOT_INO, "nope").await.is_err());
}

#[tokio::test]
async fn a_random_read_fetches_only_the_blocks_it_needs() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("big.bin", pattern(16 << 20));
    let f = mount(mem.clone());
    let big = f.vfs.lookup(ROOT_INO, "big.bin").await.unwrap();
    let o = f.vfs.open(big.ino, R).await.unwrap();
    let got = f.vfs.read(big.ino, o.fh, 9_000_000, 4096).await.unwrap();
    assert_eq!(&got[..], &pattern(16 << 20)[9_000_000..9_004_096]);
    assert!(
        mem.counters().bytes_read <= 2 << 20,
        "read {} bytes",
        mem.counters().bytes_read
    );
    assert_eq!(
        f.vfs
            .getxattr(big.ino, "user.cloudmount.state")
            .await
            .unwrap(),
        b"partial"
    );
    // The bytes were answered from the download and stored in the cache after it: the same
    // read again, and one inside the same block, cost no GET.
    let gets = mem.counters().read_range;
    let again = f.vfs.read(big.ino, o.fh, 9_000_000, 4096).await.unwrap();
    assert_eq!(again, got);
    let block = cloudmount::vfs::BLOCK_SIZE;
    let inside = 9_000_000 / block * block;
    let near = f.vfs.read(big.ino, o.fh, inside, 512).await.unwrap();
    assert_eq!(
        &near[..],
        &pattern(16 << 20)[inside as usize..inside as usize + 512]
    );
    assert_eq!(mem.counters().read_range, gets);
    f.vfs.release(big.ino, o.fh).await.unwrap();
}

#[tokio::test]
async fn created_files_reach_the_server_on_close() {
    let mem = Arc::new(MemRemote::new());
    let f = mount(mem.clone());
    let ino = write_file(&f.vfs, ROOT_INO, "new file #1.txt", b"contents").await;
    assert_eq!(mem.file_bytes("new file #1.txt").unwrap(), b"contents");
    assert_eq!(f.vfs.getattr(ino).await.unwrap().size, 8);
    // Listed at once, and readable back.
    assert_eq!(read_all(&f.vfs, ino).await, b"contents");
    assert_eq!(
        f.vfs.getxattr(ino, "user.cloudmount.state").await.unwrap(),
        b"cached"
    );
}

#[tokio::test]
async fn overwrite_in_the_middle_across_a_block_edge() {
    let mem = Arc::new(MemRemote::new());
    let data = pattern((1 << 20) + 100);
    mem.insert_file("f", data.clone());
    let f = mount(mem.clone());
    let ino = f.vfs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let o = f.vfs.open(ino, W).await.unwrap();
    f.vfs
        .write(ino, o.fh, (1 << 20) - 3, b"XXXXXX")
        .await
        .unwrap();
    f.vfs.release(ino, o.fh).await.unwrap();
    settle(&f.vfs).await;
    let mut want = data;
    want[(1 << 20) - 3..(1 << 20) + 3].copy_from_slice(b"XXXXXX");
    assert_eq!(mem.file_bytes("f").unwrap(), want);
    assert_eq!(read_all(&f.vfs, ino).await, want);
}

#[tokio::test]
async fn append_and_truncate() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("log", b"line1\n".to_vec());
    let f = mount(mem.clone());
    let ino = f.vfs.lookup(ROOT_INO, "log").await.unwrap().ino;
    let o = f.vfs.open(ino, W).await.unwrap();
    f.vfs.write(ino, o.fh, 6, b"line2\n").await.unwrap();
    f.vfs.release(ino, o.fh).await.unwrap();
    settle(&f.vfs).await;
    assert_eq!(mem.file_bytes("log").unwrap(), b"line1\nline2\n");
    // truncate(2) without an open handle is committed at once.
    f.vfs
        .setattr(
            ino,
            None,
            SetAttr {
                size: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle(&f.vfs).await;
    assert_eq!(mem.file_bytes("log").unwrap(), b"lin");
    // O_TRUNC.
    let o = f
        .vfs
        .open(
            ino,
            OpenMode {
                write: true,
                truncate: true,
                append: false,
            },
        )
        .await
        .unwrap();
    f.vfs.release(ino, o.fh).await.unwrap();
    settle(&f.vfs).await;
    assert_eq!(mem.file_bytes("log").unwrap(), b"");
}

#[tokio::test]
async fn mkdir_rename_unlink_rmdir_reach_the_server() {
    let mem = Arc::new(MemRemote::new());
    let f = mount(mem.clone());
    let d = f.vfs.mkdir(ROOT_INO, "dir a").await.unwrap();
    write_file(&f.vfs, d.ino, "f1", b"1").await;
    f.vfs
        .rename(ROOT_INO, "dir a", ROOT_INO, "dir b", RenameFlags::default())
        .await
        .unwrap();
    assert_eq!(mem.file_bytes("dir b/f1").unwrap(), b"1");
    assert!(!mem.exists("dir a"));
    // Rename a file over another.
    write_file(&f.vfs, d.ino, "f2", b"22").await;
    f.vfs
        .rename(d.ino, "f2", d.ino, "f1", RenameFlags::default())
        .await
        .unwrap();
    assert_eq!(mem.file_bytes("dir b/f1").unwrap(), b"22");
    assert!(!mem.exists("dir b/f2"));
    // noreplace.
    write_file(&f.vfs, d.ino, "f3", b"3").await;
    let err = f
        .vfs
        .rename(
            d.ino,
            "f3",
            d.ino,
            "f1",
            RenameFlags {
                noreplace: true,
                exchange: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    // rmdir of a non-empty dir, then empty it.
    assert_eq!(
        f.vfs.rmdir(ROOT_INO, "dir b").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    f.vfs.unlink(d.ino, "f1").await.unwrap();
    f.vfs.unlink(d.ino, "f3").await.unwrap();
    f.vfs.rmdir(ROOT_INO, "dir b").await.unwrap();
    assert_eq!(mem.paths(), Vec::<String>::new());
    assert_eq!(
        f.vfs.lookup(ROOT_INO, "dir b").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn changes_on_the_server_show_after_the_ttl() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("a", b"old".to_vec());
    let f = mount_on(
        mem.clone(),
        Duration::from_millis(300),
        tempfile::tempdir().unwrap(),
    );
    let a = f.vfs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(read_all(&f.vfs, a.ino).await, b"old");
    mem.insert_file("a", b"newer".to_vec());
    mem.insert_file("b", b"b".to_vec());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(f.vfs.getattr(a.ino).await.unwrap().size, 5);
    assert_eq!(read_all(&f.vfs, a.ino).await, b"newer");
    assert!(f.vfs.lookup(ROOT_INO, "b").await.is_ok());
}

#[tokio::test]
async fn the_tree_is_browsable_offline_after_a_restart() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("docs/a.txt", b"hello".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_path_buf();
    // First run: browse and read, then stop.
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "x".into(),
            url: "mem://x/".into(),
            remote: faulty.clone(),
            read_only: false,
        }],
        opts: opts(Duration::from_millis(1)),
        cache_dir: cache_dir.join("c"),
        cache_size: 1 << 30,
    })
    .unwrap();
    let docs = vfs.lookup(ROOT_INO, "docs").await.unwrap();
    let a = vfs.lookup(docs.ino, "a.txt").await.unwrap();
    assert_eq!(read_all(&vfs, a.ino).await, b"hello");
    vfs.shutdown().await;
    drop(vfs);
    // Second run with the server down: the tree and the cached file are still there.
    faulty.fail_fraction(Op::Any, 1.0, 1, FaultKind::Transient);
    let vfs = Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "x".into(),
            url: "mem://x/".into(),
            remote: faulty.clone(),
            read_only: false,
        }],
        opts: opts(Duration::from_millis(1)),
        cache_dir: cache_dir.join("c"),
        cache_size: 1 << 30,
    })
    .unwrap();
    let docs = vfs.lookup(ROOT_INO, "docs").await.unwrap();
    let a = vfs.lookup(docs.ino, "a.txt").await.unwrap();
    assert_eq!(read_all(&vfs, a.ino).await, b"hello");
}

#[tokio::test]
async fn a_file_changed_on_the_server_is_never_read_from_old_blocks() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("f", pattern(3 << 20));
    let f = mount_on(
        mem.clone(),
        Duration::from_millis(200),
        tempfile::tempdir().unwrap(),
    );
    let ino = f.vfs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let o = f.vfs.open(ino, R).await.unwrap();
    f.vfs.read(ino, o.fh, 0, 4096).await.unwrap();
    // Same size, other bytes.
    let other: Vec<u8> = pattern(3 << 20).iter().map(|b| b ^ 0xff).collect();
    mem.insert_file("f", other.clone());
    // The open handle's version is gone: reading blocks not yet cached fails, never mixes.
    let err = f.vfs.read(ino, o.fh, 2 << 20, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    f.vfs.release(ino, o.fh).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_all(&f.vfs, ino).await, other);
}

#[tokio::test]
async fn read_only_areas_refuse_writes() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("Following/shared.txt", b"s".to_vec());
    let d = tempfile::tempdir().unwrap();
    let vfs = Vfs::new(VfsSetup {
        areas: vec![
            AreaSpec {
                name: "Cloud Drive".into(),
                url: "mem://Cloud-Drive/".into(),
                remote: Arc::new(MemRemote::new()),
                read_only: false,
            },
            AreaSpec {
                name: "Following".into(),
                url: "mem://Following/".into(),
                remote: mem.clone(),
                read_only: true,
            },
        ],
        opts: opts(Duration::from_secs(60)),
        cache_dir: d.path().join("c"),
        cache_size: 1 << 30,
    })
    .unwrap();
    let names = names_in(&vfs, ROOT_INO).await;
    assert_eq!(names, [".", "..", "Cloud Drive", "Following"]);
    let fol = vfs.lookup(ROOT_INO, "Following").await.unwrap();
    let inner = vfs.lookup(fol.ino, "Following").await.unwrap();
    let s = vfs.lookup(inner.ino, "shared.txt").await.unwrap();
    assert_eq!(s.perm, 0o444);
    assert_eq!(
        vfs.create(fol.ino, "x", W).await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        vfs.mkdir(fol.ino, "x").await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(vfs.open(s.ino, W).await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(
        vfs.unlink(inner.ino, "shared.txt")
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    // The virtual root holds only the areas.
    assert_eq!(
        vfs.mkdir(ROOT_INO, "x").await.unwrap_err().errno(),
        libc::EPERM
    );
    // Renames across areas.
    let cd = vfs.lookup(ROOT_INO, "Cloud Drive").await.unwrap();
    write_file(&vfs, cd.ino, "mine", b"m").await;
    let err = vfs
        .rename(cd.ino, "mine", fol.ino, "mine", RenameFlags::default())
        .await
        .unwrap_err();
    assert!(err.errno() == libc::EXDEV || err.errno() == libc::EROFS);
    // chmod: kept in a writable area; in a read-only one only the mode shown is accepted
    // (EROFS for any other), and the root above the areas has none to change (EPERM).
    let chmod = |ino, mode| {
        vfs.setattr(
            ino,
            None,
            SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            },
        )
    };
    let mine = vfs.lookup(cd.ino, "mine").await.unwrap();
    assert_eq!(chmod(mine.ino, 0o4750).await.unwrap().perm, 0o750);
    assert_eq!(vfs.getattr(mine.ino).await.unwrap().perm, 0o750);
    assert_eq!(chmod(s.ino, 0o444).await.unwrap().perm, 0o444);
    assert_eq!(chmod(s.ino, 0o755).await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(vfs.getattr(s.ino).await.unwrap().perm, 0o444);
    assert_eq!(
        chmod(ROOT_INO, 0o700).await.unwrap_err().errno(),
        libc::EPERM
    );
}

#[tokio::test]
async fn a_full_server_keeps_the_data_and_says_so() {
    let mem = Arc::new(MemRemote::with_quota(100));
    let f = mount(mem.clone());
    let (attr, o) = f.vfs.create(ROOT_INO, "too big", W).await.unwrap();
    f.vfs.write(attr.ino, o.fh, 0, &[1u8; 1000]).await.unwrap();
    // close() succeeds: the data is durable locally; the upload fails later with 507.
    f.vfs.flush(attr.ino, o.fh).await.unwrap();
    f.vfs.release(attr.ino, o.fh).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.vfs.status().queue.paused.is_none() {
        assert!(std::time::Instant::now() < deadline, "upload never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = f.vfs.status();
    assert_eq!(st.queue.files, 1);
    assert!(st.queue.paused.unwrap().contains("507"));
    assert_eq!(st.errors[0].path, "too big");
    // Still readable on the mount, and marked.
    assert_eq!(read_all(&f.vfs, attr.ino).await, vec![1u8; 1000]);
    assert_eq!(
        f.vfs
            .getxattr(attr.ino, "user.cloudmount.state")
            .await
            .unwrap(),
        b"error"
    );
    // statfs says full, and a write that grows a file is refused.
    assert_eq!(f.vfs.statfs().await.unwrap().blocks_avail, 0);
    let (a2, o2) = f.vfs.create(ROOT_INO, "more", W).await.unwrap();
    let err = f.vfs.write(a2.ino, o2.fh, 0, b"x").await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    f.vfs.release(a2.ino, o2.fh).await.unwrap();
    // Space freed on the server: the queue resumes by itself.
    mem.set_quota(None);
    settle(&f.vfs).await;
    assert_eq!(mem.file_bytes("too big").unwrap(), vec![1u8; 1000]);
    assert!(f.vfs.status().queue.paused.is_none());
}

#[tokio::test]
async fn a_concurrent_change_on_the_server_is_kept_beside_ours() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("doc.txt", b"v1".to_vec());
    let f = mount(mem.clone());
    let ino = f.vfs.lookup(ROOT_INO, "doc.txt").await.unwrap().ino;
    let o = f.vfs.open(ino, W).await.unwrap();
    mem.insert_file("doc.txt", b"someone else's".to_vec());
    f.vfs.write(ino, o.fh, 0, b"mine").await.unwrap();
    f.vfs.flush(ino, o.fh).await.unwrap();
    f.vfs.release(ino, o.fh).await.unwrap();
    settle(&f.vfs).await;
    // The server's version keeps the name; ours is a conflict copy; both are on the mount.
    assert_eq!(mem.file_bytes("doc.txt").unwrap(), b"someone else's");
    let copies: Vec<String> = mem
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("doc (conflicted copy "))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", mem.paths());
    assert!(copies[0].ends_with(").txt"));
    assert_eq!(mem.file_bytes(&copies[0]).unwrap(), b"mine");
    assert_eq!(read_all(&f.vfs, ino).await, b"someone else's");
    let copy = f.vfs.lookup(ROOT_INO, &copies[0]).await.unwrap();
    assert_eq!(read_all(&f.vfs, copy.ino).await, b"mine");
    assert_eq!(
        f.vfs
            .getxattr(copy.ino, "user.cloudmount.state")
            .await
            .unwrap(),
        b"conflict"
    );
    let st = f.vfs.status();
    assert_eq!(st.conflicts.len(), 1);
    assert_eq!(st.conflicts[0].path, "doc.txt");
    assert_eq!(st.conflicts[0].copy, copies[0]);
}

#[tokio::test]
async fn a_slow_download_does_not_stall_other_requests() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("slow.bin", pattern(1 << 20));
    mem.insert_file("dir/x", b"x".to_vec());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    faulty.delay(Op::ReadRange, Duration::from_secs(8));
    let f = mount(faulty.clone());
    let slow = f.vfs.lookup(ROOT_INO, "slow.bin").await.unwrap();
    let vfs = f.vfs.clone();
    let reader = tokio::spawn(async move { read_all(&vfs, slow.ino).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While the GET hangs, listing works.
    let started = std::time::Instant::now();
    let dir = f.vfs.lookup(ROOT_INO, "dir").await.unwrap();
    f.vfs.lookup(dir.ino, "x").await.unwrap();
    assert!(!reader.is_finished(), "the slow read finished early");
    // Far below the 8 s the read is held up: the lookups did not wait for it.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(reader.await.unwrap(), pattern(1 << 20));
}

#[tokio::test]
async fn odd_names_round_trip_through_the_vfs() {
    let mem = Arc::new(MemRemote::new());
    let f = mount(mem.clone());
    for name in [
        "a b",
        "100%",
        "#x",
        "q?",
        "&",
        "\"q\"",
        "é",
        "😀",
        &"n".repeat(255),
    ] {
        write_file(&f.vfs, ROOT_INO, name, name.as_bytes()).await;
        assert_eq!(mem.file_bytes(name).unwrap(), name.as_bytes());
    }
    assert_eq!(
        f.vfs
            .create(ROOT_INO, &"n".repeat(256), W)
            .await
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
}

#[tokio::test]
async fn the_kernel_keeps_its_page_cache_only_for_an_unchanged_version() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("f", b"one".to_vec());
    let f = mount_on(
        mem.clone(),
        Duration::from_millis(200),
        tempfile::tempdir().unwrap(),
    );
    let ino = f.vfs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let o1 = f.vfs.open(ino, R).await.unwrap();
    assert!(!o1.keep_cache, "first open: the kernel has nothing of ours");
    f.vfs.release(ino, o1.fh).await.unwrap();
    let o2 = f.vfs.open(ino, R).await.unwrap();
    assert!(o2.keep_cache, "same version: keep the page cache");
    f.vfs.release(ino, o2.fh).await.unwrap();
    mem.insert_file("f", b"two!".to_vec());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o3 = f.vfs.open(ino, R).await.unwrap();
    assert!(!o3.keep_cache, "changed on the server: drop the page cache");
    f.vfs.release(ino, o3.fh).await.unwrap();
    // Our own upload: the kernel's pages are what we wrote.
    let o4 = f.vfs.open(ino, W).await.unwrap();
    f.vfs.write(ino, o4.fh, 0, b"mine").await.unwrap();
    f.vfs.release(ino, o4.fh).await.unwrap();
    let o5 = f.vfs.open(ino, R).await.unwrap();
    assert!(o5.keep_cache, "after our own upload");
    f.vfs.release(ino, o5.fh).await.unwrap();
}

#[tokio::test]
async fn a_new_version_on_the_server_invalidates_the_kernels_pages() {
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("f", b"one".to_vec());
    mem.insert_file("g", b"never opened".to_vec());
    let f = mount_on(
        mem.clone(),
        Duration::from_millis(200),
        tempfile::tempdir().unwrap(),
    );
    let mut inval = f.vfs.take_invalidations().expect("first taker");
    assert!(f.vfs.take_invalidations().is_none(), "taken once");
    let ino = f.vfs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let g = f.vfs.lookup(ROOT_INO, "g").await.unwrap().ino;
    assert_eq!(read_all(&f.vfs, ino).await, b"one");
    mem.insert_file("f", b"two!".to_vec());
    mem.insert_file("g", b"changed too".to_vec());
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.vfs.getattr(ino).await.unwrap();
    // Only the file whose pages the kernel may hold.
    assert_eq!(inval.try_recv().ok(), Some(ino));
    assert!(
        inval.try_recv().is_err(),
        "g was never opened: nothing to drop"
    );
    let _ = g;
}

/// An upload lands on the server after close(), so the folder's mtime there is later than the
/// change the user saw; that later time must not move the folder's mtime (or ctime) on the
/// mount. (pjdfstest `rename::unchanged_ctime_failed::dir` caught it, now and then.)
#[tokio::test]
async fn a_folder_keeps_its_time_when_our_own_upload_lands_later() {
    let mem = Arc::new(MemRemote::new());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let f = mount_on(
        faulty.clone(),
        Duration::from_millis(100),
        tempfile::tempdir().unwrap(),
    );
    let d = f.vfs.mkdir(ROOT_INO, "d").await.unwrap();
    // The upload lands in a later second than the create.
    faulty.delay(Op::Put, Duration::from_millis(1500));
    let (a, o) = f.vfs.create(d.ino, "new.txt", W).await.unwrap();
    f.vfs.write(a.ino, o.fh, 0, b"x").await.unwrap();
    f.vfs.release(a.ino, o.fh).await.unwrap();
    let before = f.vfs.getattr(d.ino).await.unwrap().mtime;
    settle(&f.vfs).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both the parent's listing and the folder's own listing are asked again.
    let fh = f.vfs.opendir(d.ino).await.unwrap();
    f.vfs.releasedir(fh);
    f.vfs.lookup(ROOT_INO, "d").await.unwrap();
    assert_eq!(f.vfs.getattr(d.ino).await.unwrap().mtime, before);
    // A change by someone else later still shows (past the 1 s allowed for clock skew).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    mem.put(
        &cloudmount::remote::RemotePath::new("d/theirs.txt").unwrap(),
        cloudmount::remote::PutBody::from(&b"t"[..]),
        cloudmount::remote::PutCondition::None,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fh = f.vfs.opendir(d.ino).await.unwrap();
    f.vfs.releasedir(fh);
    f.vfs.lookup(ROOT_INO, "d").await.unwrap();
    assert!(f.vfs.getattr(d.ino).await.unwrap().mtime > before);
}

/// Reading a directory lists the next few of its sibling directories ahead, in the
/// background (a walk such as `find` then finds them listed); never more than the bound.
#[tokio::test]
async fn reading_a_directory_lists_its_next_siblings_ahead() {
    let mem = Arc::new(MemRemote::new());
    for d in 0..20 {
        mem.insert_file(&format!("tree/d{d:02}/f"), b"x".to_vec());
    }
    let f = mount(mem.clone());
    let tree = f.vfs.lookup(ROOT_INO, "tree").await.unwrap();
    let fh = f.vfs.opendir(tree.ino).await.unwrap();
    f.vfs.releasedir(fh);
    let d00 = f.vfs.lookup(tree.ino, "d00").await.unwrap();
    let lists_before = mem.counters().list;
    let fh = f.vfs.opendir(d00.ino).await.unwrap();
    f.vfs.releasedir(fh);
    // d00 itself, then siblings ahead: at most 4 at once for the mount, the rest not started.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mem.counters().list < lists_before + 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ahead = mem.counters().list - lists_before - 1;
    assert!(
        (1..=4).contains(&ahead),
        "{ahead} sibling listings fetched ahead"
    );
    // The next directory of the walk was listed ahead, before this change on the server:
    // reading it (within the listing TTL) shows the listing taken then, asking nothing.
    mem.insert_file("tree/d01/g", b"y".to_vec());
    let d01 = f.vfs.lookup(tree.ino, "d01").await.unwrap();
    let names = names_in(&f.vfs, d01.ino).await;
    assert_eq!(names, [".", "..", "f"]);
    // A directory far down the walk was not listed ahead: it shows the server's listing now.
    mem.insert_file("tree/d19/g", b"y".to_vec());
    let d19 = f.vfs.lookup(tree.ino, "d19").await.unwrap();
    let fh = f.vfs.opendir(d19.ino).await.unwrap();
    let n = f.vfs.readdir(d19.ino, fh, 0).await.unwrap().len();
    f.vfs.releasedir(fh);
    assert_eq!(n, 4, "d19 lists . .. f g");
}

/// A small file's first read is one GET that also fills the cache (the cache object is made
/// beside the download, not at open): later reads, through the same handle or a new one, ask
/// the server nothing. A version that changed between open and read is never served.
#[tokio::test]
async fn a_small_file_is_fetched_once_and_cached_by_its_first_read() {
    let mem = Arc::new(MemRemote::new());
    let data = pattern(300_000);
    mem.insert_file("small.bin", data.clone());
    mem.insert_file("empty", Vec::new());
    mem.insert_file("other.bin", b"first".to_vec());
    let ttl = Duration::from_millis(200);
    let f = mount_on(mem.clone(), ttl, tempfile::tempdir().unwrap());
    let ino = f.vfs.lookup(ROOT_INO, "small.bin").await.unwrap().ino;
    let o = f.vfs.open(ino, R).await.unwrap();
    let gets = mem.counters().read_range;
    let got = f.vfs.read(ino, o.fh, 1000, 5000).await.unwrap();
    assert_eq!(&got[..], &data[1000..6000]);
    assert_eq!(mem.counters().read_range, gets + 1, "one GET");
    let tail = f.vfs.read(ino, o.fh, 299_000, 5000).await.unwrap();
    assert_eq!(&tail[..], &data[299_000..]);
    f.vfs.release(ino, o.fh).await.unwrap();
    settle(&f.vfs).await;
    assert_eq!(read_all(&f.vfs, ino).await, data);
    assert_eq!(
        mem.counters().read_range,
        gets + 1,
        "then served from the cache"
    );
    assert_eq!(
        f.vfs.getxattr(ino, "user.cloudmount.state").await.unwrap(),
        b"cached"
    );
    let empty = f.vfs.lookup(ROOT_INO, "empty").await.unwrap().ino;
    assert_eq!(read_all(&f.vfs, empty).await, b"");

    // Opened on one version, changed on the server before the first read: the conditional GET
    // fails (EIO), the old bytes are not mixed in, and the next open reads the new version.
    let other = f.vfs.lookup(ROOT_INO, "other.bin").await.unwrap().ino;
    let o = f.vfs.open(other, R).await.unwrap();
    mem.insert_file("other.bin", b"second".to_vec());
    let err = f.vfs.read(other, o.fh, 0, 4096).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    f.vfs.release(other, o.fh).await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    let other = f.vfs.lookup(ROOT_INO, "other.bin").await.unwrap().ino;
    assert_eq!(read_all(&f.vfs, other).await, b"second");
}

/// Small files opened one after the other in name order (a walk: `cp -r`, `cat dir/*`) make
/// the next few of the directory be fetched ahead, each once; a single open, or opens out of
/// order, fetch nothing ahead.
#[tokio::test]
async fn a_walk_over_small_files_fetches_the_next_ones_ahead() {
    let mem = Arc::new(MemRemote::new());
    for i in 0..20 {
        mem.insert_file(&format!("d/f{i:02}"), pattern(1000 + i));
    }
    mem.insert_file("d/zz-big", pattern(3 << 20));
    let f = mount(mem.clone());
    let d = f.vfs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let read = |name: &'static str| {
        let f = &f;
        async move {
            let ino = f.vfs.lookup(d, name).await.unwrap().ino;
            read_all(&f.vfs, ino).await
        }
    };
    // Waits until the server saw `want` GETs (at most `secs`), then a little more.
    let wait_gets = |want: u64, secs: f64| {
        let mem = mem.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs_f64(secs);
            while mem.counters().read_range < want && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            mem.counters().read_range
        }
    };
    let state = |name: &'static str| {
        let f = &f;
        async move {
            let ino = f.vfs.lookup(d, name).await.unwrap().ino;
            f.vfs.getxattr(ino, "user.cloudmount.state").await.unwrap()
        }
    };
    // Out of order: no walk, nothing ahead.
    assert_eq!(read("f10").await, pattern(1010));
    assert_eq!(read("f03").await, pattern(1003));
    assert_eq!(wait_gets(3, 0.3).await, 2);
    // f04 after f03 is a walk: f05..f08 come ahead, 4 at once for the mount.
    assert_eq!(read("f04").await, pattern(1004));
    assert_eq!(wait_gets(7, 10.0).await, 7, "f04 and four ahead");
    for name in ["f05", "f06", "f07", "f08"] {
        assert_eq!(state(name).await, b"cached", "{name}");
    }
    assert_eq!(state("f09").await, b"online");
    // The walk goes on: every file reads right, each is fetched once (ahead or not), and the
    // big file is not fetched ahead.
    for i in 5..20 {
        let name: &'static str = Box::leak(format!("f{i:02}").into_boxed_str());
        assert_eq!(read(name).await, pattern(1000 + i), "{name}");
    }
    assert_eq!(wait_gets(17, 10.0).await, 17, "f03..f19, each once");
    assert_eq!(state("zz-big").await, b"online");
}

/// A reader waiting for blocks another download is fetching gets them as soon as they are
/// stored, not when that whole download ends (here it stalls after its first MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_served_as_soon_as_its_blocks_are_in() {
    let mem = Arc::new(MemRemote::new());
    let data = pattern(4 << 20);
    mem.insert_file("big.bin", data.clone());
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let f = mount(faulty.clone());
    let ino = f.vfs.lookup(ROOT_INO, "big.bin").await.unwrap().ino;
    faulty.delay(Op::ReadRange, Duration::from_millis(600));
    faulty.stall_read_after(1 << 20, Duration::from_secs(4));
    // One reader asks for the whole file in one read: one download, starting late and
    // stalling after 1 MiB.
    let a = f.vfs.open(ino, R).await.unwrap();
    let b = f.vfs.open(ino, R).await.unwrap();
    let vfs = f.vfs.clone();
    let whole = tokio::spawn(async move { vfs.read(ino, a.fh, 0, 4 << 20).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another asks for bytes of the first MiB while nothing is in yet: it waits for that
    // download, and is answered once its first MiB is stored, long before the stall ends.
    let started = std::time::Instant::now();
    let got = f.vfs.read(ino, b.fh, 100_000, 4096).await.unwrap();
    assert_eq!(&got[..], &data[100_000..104_096]);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered in {:?}: it did not wait for the download",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} for stored blocks",
        started.elapsed()
    );
    assert!(!whole.is_finished(), "the whole download is still stalled");
    assert_eq!(&whole.await.unwrap().unwrap()[..], &data[..]);
    assert_eq!(faulty.calls(Op::ReadRange), 1, "one download");
    f.vfs.release(ino, a.fh).await.unwrap();
    f.vfs.release(ino, b.fh).await.unwrap();
}

/// With listings trusted for less than a second, nothing is listed ahead (it would be stale
/// before the walk got there).
#[tokio::test]
async fn no_listing_ahead_with_a_very_short_listing_ttl() {
    let mem = Arc::new(MemRemote::new());
    for d in 0..5 {
        mem.insert_file(&format!("tree/d{d}/f"), b"x".to_vec());
    }
    let f = mount_on(
        mem.clone(),
        Duration::from_millis(500),
        tempfile::tempdir().unwrap(),
    );
    let tree = f.vfs.lookup(ROOT_INO, "tree").await.unwrap().ino;
    let d0 = f.vfs.lookup(tree, "d0").await.unwrap().ino;
    let before = mem.counters().list;
    let fh = f.vfs.opendir(d0).await.unwrap();
    f.vfs.releasedir(fh);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mem.counters().list, before + 1, "d0 only");
}

/// The backing file of a passthrough open (panics for other kinds).
fn backing_of(o: &cloudmount::vfs::Opened) -> (Arc<std::fs::File>, bool) {
    match &o.io {
        OpenIo::Passthrough { backing, direct } => (backing.clone(), *direct),
        other => panic!("expected a passthrough open, got {other:?}"),
    }
}

/// A vfs over `remote` whose single area is read-only (or not), with passthrough asked for in
/// the options and said available by the (absent) FUSE adapter when `available`.
fn passthrough_vfs(
    remote: Arc<dyn Remote>,
    read_only: bool,
    ttl: Duration,
    options: bool,
    available: bool,
) -> (Arc<Vfs>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = opts(ttl);
    opts.passthrough = options;
    let vfs = Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "Cloud Drive".into(),
            url: "mem://Cloud-Drive/".into(),
            remote,
            read_only,
        }],
        opts,
        cache_dir: dir.path().join("cache"),
        cache_size: 64 << 20,
    })
    .unwrap();
    vfs.set_passthrough(available);
    (vfs, dir)
}

#[tokio::test]
async fn large_files_use_the_page_cache_until_cached_then_passthrough() {
    use std::os::unix::fs::FileExt;
    let mem = Arc::new(MemRemote::new());
    let data = pattern(3 << 20);
    mem.insert_file("big.bin", data.clone());
    mem.insert_file("small", pattern(1000));
    let (vfs, _dir) = passthrough_vfs(mem.clone(), true, Duration::from_millis(200), true, true);
    let big = vfs.lookup(ROOT_INO, "big.bin").await.unwrap().ino;
    let small = vfs.lookup(ROOT_INO, "small").await.unwrap().ino;
    // Small files stay in the page cache.
    let o = vfs.open(small, R).await.unwrap();
    assert!(matches!(o.io, OpenIo::Cached), "{:?}", o.io);
    vfs.release(small, o.fh).await.unwrap();
    // Not (wholly) cached: the page cache, also after a partial read.
    let o = vfs.open(big, R).await.unwrap();
    assert!(matches!(o.io, OpenIo::Cached), "{:?}", o.io);
    vfs.read(big, o.fh, 0, 1 << 20).await.unwrap();
    vfs.release(big, o.fh).await.unwrap();
    let o = vfs.open(big, R).await.unwrap();
    assert!(matches!(o.io, OpenIo::Cached), "{:?}", o.io);
    // Wholly cached now, but a page-cache open is still there: not passthrough (the kernel
    // would refuse it).
    assert_eq!(read_all(&vfs, big).await, data);
    let beside = vfs.open(big, R).await.unwrap();
    assert!(matches!(beside.io, OpenIo::Cached), "{:?}", beside.io);
    for fh in [o.fh, beside.fh] {
        vfs.release(big, fh).await.unwrap();
    }
    // Wholly cached: the kernel reads the cache file itself, and it holds the file.
    vfs.wait_for_stores().await;
    let r1 = vfs.open(big, R).await.unwrap();
    let (file, direct) = backing_of(&r1);
    assert!(!direct);
    let mut got = vec![0u8; data.len()];
    file.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, data, "the backing file holds the file");
    // A second reader shares the backing file (the kernel allows one per inode).
    let r2 = vfs.open(big, R).await.unwrap();
    let (file2, direct2) = backing_of(&r2);
    assert!(Arc::ptr_eq(&file, &file2) && !direct2);
    vfs.release(big, r2.fh).await.unwrap();
    // A new version on the server while r1 is open: a reader opened now must still be
    // passthrough with r1's file, but its reads come to the vfs and get the new version.
    let new = pattern(3 << 20).into_iter().rev().collect::<Vec<u8>>();
    mem.insert_file("big.bin", new.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    vfs.lookup(ROOT_INO, "big.bin").await.unwrap();
    let r3 = vfs.open(big, R).await.unwrap();
    let (file3, direct3) = backing_of(&r3);
    assert!(Arc::ptr_eq(&file, &file3) && direct3);
    assert_eq!(&vfs.read(big, r3.fh, 0, 64).await.unwrap()[..], &new[..64]);
    for fh in [r1.fh, r3.fh] {
        vfs.release(big, fh).await.unwrap();
    }
    // All closed: the next opens start afresh, on the new version.
    assert_eq!(read_all(&vfs, big).await, new);
    vfs.wait_for_stores().await;
    let o = vfs.open(big, R).await.unwrap();
    let (file4, direct4) = backing_of(&o);
    assert!(!Arc::ptr_eq(&file, &file4) && !direct4);
    file4.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, new);
    vfs.release(big, o.fh).await.unwrap();
}

#[tokio::test]
async fn writable_areas_and_mounts_without_passthrough_use_the_page_cache() {
    let mem = Arc::new(MemRemote::new());
    let data = pattern(3 << 20);
    mem.insert_file("big.bin", data.clone());
    // (read-only area, asked in the options, available): a writable area (a writer beside a
    // passthrough reader would map the cache file); passthrough not available (an
    // unprivileged daemon, an old kernel); switched off by the options.
    for (read_only, options, available) in [
        (false, true, true),
        (true, true, false),
        (true, false, true),
    ] {
        let ttl = Duration::from_secs(60);
        let (vfs, _dir) = passthrough_vfs(mem.clone(), read_only, ttl, options, available);
        let big = vfs.lookup(ROOT_INO, "big.bin").await.unwrap().ino;
        for _ in 0..2 {
            let o = vfs.open(big, R).await.unwrap();
            assert!(
                matches!(o.io, OpenIo::Cached),
                "{read_only} {options} {available}: {:?}",
                o.io
            );
            vfs.release(big, o.fh).await.unwrap();
            assert_eq!(read_all(&vfs, big).await, data);
        }
    }
}

#[tokio::test]
async fn a_refused_passthrough_open_falls_back_to_the_page_cache_for_good() {
    let mem = Arc::new(MemRemote::new());
    let data = pattern(3 << 20);
    mem.insert_file("big.bin", data.clone());
    let (vfs, _dir) = passthrough_vfs(mem.clone(), true, Duration::from_secs(60), true, true);
    let big = vfs.lookup(ROOT_INO, "big.bin").await.unwrap().ino;
    assert_eq!(read_all(&vfs, big).await, data);
    // The last bytes read are stored in the background; a passthrough open needs them all.
    vfs.wait_for_stores().await;
    let o1 = vfs.open(big, R).await.unwrap();
    backing_of(&o1);
    // What the FUSE adapter does when the kernel refuses the backing file.
    vfs.passthrough_refused(big, o1.fh);
    assert_eq!(&vfs.read(big, o1.fh, 0, 8).await.unwrap()[..], &data[..8]);
    let o2 = vfs.open(big, R).await.unwrap();
    assert!(matches!(o2.io, OpenIo::Cached), "{:?}", o2.io);
    for fh in [o1.fh, o2.fh] {
        vfs.release(big, fh).await.unwrap();
    }
    let o3 = vfs.open(big, R).await.unwrap();
    assert!(
        matches!(o3.io, OpenIo::Cached),
        "not offered again: {:?}",
        o3.io
    );
    vfs.release(big, o3.fh).await.unwrap();
}
