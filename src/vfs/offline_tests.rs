//! Namespace operations with the server unreachable (`offline_ops.rs`), on the in-memory server
//! behind the fault injector: done locally, kept across a restart, replayed in order when the
//! server is back, and never losing what the server changed meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::remote::faulty::{FaultKind, FaultyRemote, Op};
use crate::remote::mem::MemRemote;

fn open(remote: Arc<dyn Remote>, cache: &Path) -> Arc<Vfs> {
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
            upload: UploadOptions::immediate(),
        },
        cache_dir: cache.to_path_buf(),
        cache_size: 64 << 20,
    })
    .unwrap()
}

const W: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};

async fn write_new(vfs: &Vfs, dir: Ino, name: &str, data: &[u8]) {
    let (a, o) = vfs.create(dir, name, W).await.unwrap();
    vfs.write(a.ino, o.fh, 0, data).await.unwrap();
    vfs.flush(a.ino, o.fh).await.unwrap();
    vfs.release(a.ino, o.fh).await.unwrap();
}

async fn names(vfs: &Vfs, dir: Ino) -> Vec<String> {
    let fh = vfs.opendir(dir).await.unwrap();
    let mut v: Vec<String> = vfs
        .readdir(dir, fh, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    vfs.releasedir(fh);
    v.sort();
    v
}

async fn settle(vfs: &Vfs) {
    tokio::time::timeout(Duration::from_secs(20), vfs.wait_idle())
        .await
        .unwrap_or_else(|_| panic!("not replayed: {:?}", vfs.status()));
}

fn tree(mem: &MemRemote) -> Vec<String> {
    let mut p = mem.paths();
    p.sort();
    p
}

type Faulty = Arc<FaultyRemote<Arc<MemRemote>>>;

/// a, c and e/ on the server, listed by the mount.
async fn start(mem: &Arc<MemRemote>, cache: &Path) -> (Faulty, Arc<Vfs>) {
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open(faulty.clone(), cache);
    assert_eq!(names(&vfs, ROOT_INO).await, ["a", "c", "e"]);
    (faulty, vfs)
}

fn server(mem: &MemRemote) {
    mem.insert_file("a", b"file a".to_vec());
    mem.insert_file("c", b"file c".to_vec());
    mem.insert_dir("e");
}

/// [`start`] on a new cache, then the server unreachable: (the cache, the server, its fault
/// injector, the mount).
async fn offline_start() -> (tempfile::TempDir, Arc<MemRemote>, Faulty, Arc<Vfs>) {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    server(&mem);
    let (faulty, vfs) = start(&mem, cache.path()).await;
    faulty.fail_next(Op::Any, u64::MAX, FaultKind::Transient);
    (cache, mem, faulty, vfs)
}

/// The offline sequence of the issue: mkdir d; write d/f; mv a b; rm c; rmdir e.
async fn offline_changes(vfs: &Vfs) {
    let d = vfs.mkdir(ROOT_INO, "d").await.unwrap().ino;
    write_new(vfs, d, "f", b"written offline").await;
    vfs.rename(ROOT_INO, "a", ROOT_INO, "b", RenameFlags::default())
        .await
        .unwrap();
    vfs.unlink(ROOT_INO, "c").await.unwrap();
    vfs.rmdir(ROOT_INO, "e").await.unwrap();
}

#[tokio::test]
async fn offline_namespace_changes_show_at_once_and_are_replayed_in_order() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    offline_changes(&vfs).await;
    assert_eq!(names(&vfs, ROOT_INO).await, ["b", "d"]);
    let d = vfs.lookup(ROOT_INO, "d").await.unwrap().ino;
    assert_eq!(names(&vfs, d).await, ["f"]);
    let st = vfs.status();
    assert_eq!(st.queue.namespace_ops, 4, "{st:?}");
    assert_eq!(st.queue.files, 1, "{st:?}");
    assert_eq!(tree(&mem), ["a", "c", "e/"], "nothing reached the server");

    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["b", "d/", "d/f"]);
    assert_eq!(mem.file_bytes("d/f").unwrap(), b"written offline");
    assert_eq!(mem.file_bytes("b").unwrap(), b"file a");
    let st = vfs.status();
    assert_eq!(st.queue.namespace_ops, 0);
    assert!(st.notices.is_empty(), "{st:?}");
    assert_eq!(names(&vfs, ROOT_INO).await, ["b", "d"]);
}

#[tokio::test]
async fn offline_namespace_changes_survive_a_restart_and_show_in_listings() {
    let (cache, mem) = {
        let (cache, mem, _faulty, vfs) = offline_start().await;
        offline_changes(&vfs).await;
        vfs.shutdown().await;
        (cache, mem)
    };
    // Started again, still offline: the listing is the local result.
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    faulty.fail_next(Op::Any, u64::MAX, FaultKind::Transient);
    let vfs = open(faulty.clone(), cache.path());
    assert_eq!(vfs.status().queue.namespace_ops, 4);
    assert_eq!(names(&vfs, ROOT_INO).await, ["b", "d"]);
    let d = vfs.lookup(ROOT_INO, "d").await.unwrap().ino;
    assert_eq!(names(&vfs, d).await, ["f"]);
    assert_eq!(tree(&mem), ["a", "c", "e/"]);
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["b", "d/", "d/f"]);
    // The server's listing (asked again after the replay) agrees.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(names(&vfs, ROOT_INO).await, ["b", "d"]);
}

#[tokio::test]
async fn a_file_changed_on_the_server_is_not_deleted_by_an_offline_rm() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    vfs.unlink(ROOT_INO, "c").await.unwrap();
    vfs.unlink(ROOT_INO, "a").await.unwrap();
    assert_eq!(names(&vfs, ROOT_INO).await, ["e"]);
    // Someone else edits c meanwhile.
    mem.insert_file("c", b"changed elsewhere".to_vec());
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(mem.file_bytes("c").unwrap(), b"changed elsewhere");
    assert!(!mem.exists("a"), "an unchanged file is deleted");
    let st = vfs.status();
    assert_eq!(st.notices.len(), 1, "{st:?}");
    assert_eq!(st.notices[0].path, "c");
    assert!(
        st.notices[0].what.contains("changed on the server"),
        "{st:?}"
    );
    assert_eq!(
        names(&vfs, ROOT_INO).await,
        ["c", "e"],
        "the kept file shows again"
    );
}

#[tokio::test]
async fn a_name_taken_on_the_server_keeps_both_and_a_folder_with_new_content_stays() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    let d = vfs.mkdir(ROOT_INO, "d").await.unwrap().ino;
    write_new(&vfs, d, "f", b"ours").await;
    vfs.rename(ROOT_INO, "a", ROOT_INO, "x", RenameFlags::default())
        .await
        .unwrap();
    vfs.rmdir(ROOT_INO, "e").await.unwrap();
    // Meanwhile on the server: a file named d, a file named x, and a file in e.
    mem.insert_file("d", b"theirs".to_vec());
    mem.insert_file("x", b"their x".to_vec());
    mem.insert_file("e/new", b"new".to_vec());
    faulty.clear();
    settle(&vfs).await;
    let all = tree(&mem);
    assert_eq!(mem.file_bytes("d").unwrap(), b"theirs");
    assert_eq!(mem.file_bytes("x").unwrap(), b"their x");
    assert!(mem.exists("e/new"), "{all:?}");
    let ours_d: Vec<&String> = all
        .iter()
        .filter(|p| p.starts_with("d (conflicted copy") && p.ends_with("/f"))
        .collect();
    assert_eq!(ours_d.len(), 1, "{all:?}");
    assert_eq!(mem.file_bytes(ours_d[0]).unwrap(), b"ours");
    let ours_x: Vec<&String> = all
        .iter()
        .filter(|p| p.starts_with("x (conflicted copy"))
        .collect();
    assert_eq!(ours_x.len(), 1, "{all:?}");
    assert_eq!(mem.file_bytes(ours_x[0]).unwrap(), b"file a");
    assert!(!mem.exists("a"));
    let st = vfs.status();
    assert_eq!(st.conflicts.len(), 2, "{st:?}");
    assert!(
        st.notices.iter().any(|n| n.path == "e"),
        "the folder kept is said: {st:?}"
    );
}

#[tokio::test]
async fn deleting_a_file_never_uploaded_cancels_its_upload_and_records_nothing() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    write_new(&vfs, ROOT_INO, "tmp", b"scratch").await;
    vfs.rename(ROOT_INO, "tmp", ROOT_INO, "tmp2", RenameFlags::default())
        .await
        .unwrap();
    vfs.unlink(ROOT_INO, "tmp2").await.unwrap();
    let st = vfs.status();
    assert_eq!(st.queue.files, 0, "{st:?}");
    assert_eq!(st.queue.namespace_ops, 0, "{st:?}");
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["a", "c", "e/"]);
}

#[tokio::test]
async fn a_request_failing_unreachable_online_is_queued_not_an_error() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    server(&mem);
    let (faulty, vfs) = start(&mem, cache.path()).await;
    // Only the MKCOL fails: the mount still thinks it is online.
    faulty.fail_next(Op::Mkdir, 1, FaultKind::Transient);
    vfs.mkdir(ROOT_INO, "late").await.unwrap();
    settle(&vfs).await;
    assert!(mem.exists("late"));
}

#[tokio::test]
async fn a_folder_made_offline_in_a_folder_deleted_on_the_server_is_made_again() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    mem.insert_dir("p");
    let faulty = Arc::new(FaultyRemote::new(mem.clone()));
    let vfs = open(faulty.clone(), cache.path());
    let p = vfs.lookup(ROOT_INO, "p").await.unwrap().ino;
    assert!(names(&vfs, p).await.is_empty());
    faulty.fail_next(Op::Any, u64::MAX, FaultKind::Transient);
    let q = vfs.mkdir(p, "q").await.unwrap().ino;
    write_new(&vfs, q, "f", b"kept").await;
    // Someone deletes p on the server meanwhile.
    mem.delete(&RemotePath::new("p").unwrap()).await.unwrap();
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["p/", "p/q/", "p/q/f"]);
    assert_eq!(mem.file_bytes("p/q/f").unwrap(), b"kept");
    let st = vfs.status();
    assert!(
        st.notices
            .iter()
            .any(|n| n.path == "p/q" && n.what.contains("made again")),
        "{st:?}"
    );
}

#[tokio::test]
async fn a_folder_made_then_renamed_offline_reaches_the_server_under_its_last_name() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    let d = vfs.mkdir(ROOT_INO, "d").await.unwrap().ino;
    write_new(&vfs, d, "f", b"inside").await;
    vfs.rename(ROOT_INO, "d", ROOT_INO, "n", RenameFlags::default())
        .await
        .unwrap();
    vfs.rename(ROOT_INO, "c", d, "c", RenameFlags::default())
        .await
        .unwrap();
    assert_eq!(names(&vfs, ROOT_INO).await, ["a", "e", "n"]);
    assert_eq!(names(&vfs, d).await, ["c", "f"]);
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["a", "e/", "n/", "n/c", "n/f"]);
    assert_eq!(mem.file_bytes("n/f").unwrap(), b"inside");
    assert_eq!(mem.file_bytes("n/c").unwrap(), b"file c");
    assert!(
        !vfs.tree().get(d).unwrap().pending_create,
        "on the server now"
    );
}

/// A new file whose upload landed on the server with its answer lost (the mount still takes it
/// for never uploaded), then deleted or renamed offline: the landed copy does not stay behind
/// under the old name.
#[tokio::test]
async fn an_upload_that_landed_with_its_answer_lost_is_undone_by_an_offline_rm_or_mv() {
    for rename in [false, true] {
        let (_cache, mem, faulty, vfs) = offline_start().await;
        write_new(&vfs, ROOT_INO, "n", b"new file").await;
        // Its upload reached the server, in place, and the answer never came back.
        let area = vfs.area_ids().next().unwrap();
        let path = RemotePath::new("n").unwrap();
        let rec = vfs.meta.dirty_for(area, &path).unwrap().expect("queued");
        vfs.meta.mark_moving(rec.id, None, 8).unwrap();
        mem.insert_file("n", b"new file".to_vec());
        if rename {
            vfs.rename(ROOT_INO, "n", ROOT_INO, "m", RenameFlags::default())
                .await
                .unwrap();
        } else {
            vfs.unlink(ROOT_INO, "n").await.unwrap();
        }
        faulty.clear();
        settle(&vfs).await;
        if rename {
            assert_eq!(tree(&mem), ["a", "c", "e/", "m"], "rename");
            assert_eq!(mem.file_bytes("m").unwrap(), b"new file");
        } else {
            assert_eq!(tree(&mem), ["a", "c", "e/"], "rm");
        }
        let st = vfs.status();
        assert!(st.notices.is_empty(), "{st:?}");
    }
}

/// The same lost answer, and then another file renamed offline over it: the landed copy is
/// not taken for a file someone else put there (no conflict copy); the rename replaces it.
#[tokio::test]
async fn a_rename_offline_over_a_file_whose_upload_landed_replaces_it() {
    let (_cache, mem, faulty, vfs) = offline_start().await;
    write_new(&vfs, ROOT_INO, "n", b"new file").await;
    let area = vfs.area_ids().next().unwrap();
    let rec = vfs
        .meta
        .dirty_for(area, &RemotePath::new("n").unwrap())
        .unwrap()
        .expect("queued");
    vfs.meta.mark_moving(rec.id, None, 8).unwrap();
    mem.insert_file("n", b"new file".to_vec());
    vfs.rename(ROOT_INO, "a", ROOT_INO, "n", RenameFlags::default())
        .await
        .unwrap();
    faulty.clear();
    settle(&vfs).await;
    assert_eq!(tree(&mem), ["c", "e/", "n"]);
    assert_eq!(mem.file_bytes("n").unwrap(), b"file a");
    let st = vfs.status();
    assert!(st.notices.is_empty() && st.conflicts.is_empty(), "{st:?}");
}
