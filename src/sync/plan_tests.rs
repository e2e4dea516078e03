//! Hand-written plans: ordering, the directory rules (anchors rows 16/17), local renames
//! (row 18) and the mass-delete guard (§9.2). The model-based property test is in
//! `plan_model_tests.rs`.

use super::*;
use crate::sync::decide::Expect;

fn lf(v: u64, inode: u64) -> LocalMeta {
    LocalMeta {
        kind: Kind::File,
        size: v,
        mtime_ns: v as i64,
        inode,
        hash: None,
    }
}

fn rf(v: u64) -> RemoteMeta {
    RemoteMeta {
        kind: Kind::File,
        size: v,
        etag: Some(format!("e{v}")),
        mtime: None,
    }
}

fn ld(inode: u64) -> LocalMeta {
    LocalMeta {
        kind: Kind::Dir,
        size: 0,
        mtime_ns: 0,
        inode,
        hash: None,
    }
}

fn rd() -> RemoteMeta {
    RemoteMeta {
        kind: Kind::Dir,
        size: 0,
        etag: None,
        mtime: None,
    }
}

/// A folder whose `paths` are synced: names ending in `/` are directories, the others files
/// with version = inode = their position + 1.
fn synced(paths: &[&str]) -> Inputs {
    let mut i = Inputs::default();
    for (n, p) in paths.iter().enumerate() {
        let v = n as u64 + 1;
        let (path, l, r) = match p.strip_suffix('/') {
            Some(dir) => (dir, ld(v), rd()),
            None => (*p, lf(v, v), rf(v)),
        };
        i.base.insert(
            path.into(),
            Base {
                local: l.clone(),
                remote: r.clone(),
            },
        );
        i.local.insert(path.into(), l);
        i.remote.insert(path.into(), r);
    }
    i
}

fn rules(mode: Mode, keep_deleted: bool) -> Rules {
    Rules {
        mode,
        keep_deleted,
        delete_limit_percent: 100,
        deletes_confirmed: false,
    }
}

const BI: Mode = Mode::Bidirectional;
const UP: Mode = Mode::UploadOnly;

fn step(path: &str, action: Action) -> Step {
    Step::Do {
        path: path.into(),
        action,
    }
}

fn mv(from: &str, to: &str) -> Step {
    Step::MoveRemote {
        from: from.into(),
        to: to.into(),
    }
}

fn upload_absent() -> Action {
    Action::Upload {
        expect: Expect::Absent,
    }
}

fn upload_over(v: u64) -> Action {
    Action::Upload {
        expect: Expect::Version(format!("e{v}")),
    }
}

fn download() -> Action {
    Action::Download { trash_local: false }
}

fn steps(i: &Inputs, r: Rules) -> Vec<Step> {
    let p = plan(i, r);
    assert_eq!(p.stop, None);
    p.steps
}

fn remove_below<V>(m: &mut BTreeMap<String, V>, dir: &str) {
    m.retain(|k, _| !at_or_below(k, dir));
}

#[test]
fn a_synced_folder_needs_nothing() {
    let i = synced(&["a", "d/", "d/x"]);
    assert_eq!(steps(&i, rules(BI, false)), vec![]);
    assert_eq!(steps(&i, rules(UP, false)), vec![]);
    assert_eq!(steps(&Inputs::default(), rules(BI, false)), vec![]);
}

#[test]
fn creations_go_parents_first_and_deletes_children_first() {
    let mut i = synced(&["old/", "old/f", "old/g"]);
    // New local tree, new server tree, and a server delete of a whole directory.
    i.local.insert("n".into(), ld(50));
    i.local.insert("n/a".into(), lf(51, 51));
    i.local.insert("n/b".into(), ld(52));
    i.local.insert("n/b/c".into(), lf(53, 53));
    i.local.insert("n b".into(), lf(54, 54));
    i.remote.insert("s".into(), rd());
    i.remote.insert("s/z".into(), rf(60));
    remove_below(&mut i.remote, "old");
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("n", Action::MkdirRemote),
            step("n b", upload_absent()),
            step("n/a", upload_absent()),
            step("n/b", Action::MkdirRemote),
            step("n/b/c", upload_absent()),
            step("s", Action::MkdirLocal),
            step("s/z", download()),
            // One trash of the directory covers the files below it.
            step("old", Action::TrashLocal),
        ]
    );
}

#[test]
fn a_directory_deleted_locally_is_one_server_delete() {
    let mut i = synced(&["a", "d/", "d/x", "d/y", "d/s/", "d/s/z"]);
    remove_below(&mut i.local, "d");
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("d", Action::DeleteRemote)]
    );
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![step("d", Action::DeleteRemote)]
    );
}

#[test]
fn a_locally_deleted_directory_with_a_server_change_below_is_made_again() {
    // Row 16: the server modified d/x while d was deleted here.
    let mut i = synced(&["d/", "d/x", "d/y", "d/s/", "d/s/z"]);
    remove_below(&mut i.local, "d");
    i.remote.insert("d/x".into(), rf(70));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("d", Action::MkdirLocal),
            step("d/x", download()),
            step("d/y", Action::DeleteRemote),
            step("d/s", Action::DeleteRemote),
        ]
    );
    // Upload-only: the server keeps d with its change; the rest goes.
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![
            step("d/x", Action::Forget),
            step("d/y", Action::DeleteRemote),
            step("d/s", Action::DeleteRemote),
            step("d", Action::Forget),
        ]
    );
}

#[test]
fn a_locally_deleted_directory_with_a_new_server_file_below_is_made_again() {
    let mut i = synced(&["d/", "d/s/", "d/s/x"]);
    remove_below(&mut i.local, "d");
    i.remote.insert("d/s/new".into(), rf(80));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("d", Action::MkdirLocal),
            step("d/s", Action::MkdirLocal),
            step("d/s/new", download()),
            step("d/s/x", Action::DeleteRemote),
        ]
    );
    // Upload-only: the new server file stays there, so does its directory.
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![
            step("d/s/x", Action::DeleteRemote),
            step("d/s", Action::Forget),
            step("d", Action::Forget),
        ]
    );
}

#[test]
fn a_directory_deleted_on_the_server_is_trashed_or_put_back() {
    let mut i = synced(&["d/", "d/x", "d/y"]);
    remove_below(&mut i.remote, "d");
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("d", Action::TrashLocal)]
    );
    // Upload-only puts the backup back.
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![
            step("d", Action::MkdirRemote),
            step("d/x", upload_absent()),
            step("d/y", upload_absent()),
        ]
    );
    // A new local file below: the directory is made again on the server (row 16).
    i.local.insert("d/new".into(), lf(90, 90));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("d", Action::MkdirRemote),
            step("d/new", upload_absent()),
            step("d/y", Action::TrashLocal),
            step("d/x", Action::TrashLocal),
        ]
    );
    // A local edit below, likewise.
    let mut j = synced(&["d/", "d/x", "d/y"]);
    remove_below(&mut j.remote, "d");
    j.local.insert("d/x".into(), lf(91, 2));
    assert_eq!(
        steps(&j, rules(BI, false)),
        vec![
            step("d", Action::MkdirRemote),
            step("d/x", upload_absent()),
            step("d/y", Action::TrashLocal),
        ]
    );
}

#[test]
fn deleted_on_both_sides_is_forgotten() {
    let mut i = synced(&["a", "d/", "d/x"]);
    i.local.clear();
    i.remote.clear();
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("a", Action::Forget),
            step("d/x", Action::Forget),
            step("d", Action::Forget),
        ]
    );
}

#[test]
fn upload_only_keep_deleted_forgets_a_deleted_directory() {
    let mut i = synced(&["d/", "d/x", "e"]);
    remove_below(&mut i.local, "d");
    i.local.remove("e");
    assert_eq!(
        steps(&i, rules(UP, true)),
        vec![
            step("d/x", Action::Forget),
            step("e", Action::Forget),
            step("d", Action::Forget),
        ]
    );
}

#[test]
fn a_local_file_rename_is_a_server_move() {
    let mut i = synced(&["a", "d/"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("d/b".into(), meta);
    assert_eq!(steps(&i, rules(BI, false)), vec![mv("a", "d/b")]);
    assert_eq!(steps(&i, rules(UP, false)), vec![mv("a", "d/b")]);
    // Keeping deleted files, the old name stays on the server.
    assert_eq!(
        steps(&i, rules(UP, true)),
        vec![step("a", Action::Forget), step("d/b", upload_absent())]
    );
}

#[test]
fn a_rename_needs_the_old_name_unchanged_and_the_new_one_free() {
    // Edited while renamed: delete + upload.
    let mut i = synced(&["a"]);
    i.local.remove("a");
    i.local.insert("b".into(), lf(5, 1));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("b", upload_absent()), step("a", Action::DeleteRemote)]
    );
    // The server changed the old name: both are kept.
    let mut i = synced(&["a"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("b".into(), meta);
    i.remote.insert("a".into(), rf(9));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("a", download()), step("b", upload_absent())]
    );
    // The new name is taken on the server: no move.
    let mut i = synced(&["a"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("b".into(), meta);
    i.remote.insert("b".into(), rf(9));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("b", Action::Conflict), step("a", Action::DeleteRemote)]
    );
    // Two new names with the old inode (hard links): no guess.
    let mut i = synced(&["a"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("b".into(), meta.clone());
    i.local.insert("c".into(), meta);
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("b", upload_absent()),
            step("c", upload_absent()),
            step("a", Action::DeleteRemote)
        ]
    );
}

#[test]
fn a_file_replaced_at_its_old_name_is_no_rename() {
    // The old name is still there (an editor's save by rename): an edit, and a new file.
    let mut i = synced(&["b"]);
    let meta = i.local.remove("b").unwrap();
    i.local.insert("c".into(), meta);
    i.local.insert("b".into(), lf(40, 40));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step("b", upload_over(1)), step("c", upload_absent())]
    );
}

#[test]
fn a_local_directory_rename_is_one_server_move() {
    let mut i = synced(&["d/", "d/x", "d/y", "d/z", "d/s/", "d/s/w"]);
    let moved: Vec<(String, LocalMeta)> = i
        .local
        .iter()
        .map(|(k, v)| (k.replacen('d', "e", 1), v.clone()))
        .collect();
    i.local = moved.into_iter().collect();
    // Below the new name: x unchanged, y edited, z deleted; the server edited w.
    i.local.insert("e/y".into(), lf(30, 3));
    i.local.remove("e/z");
    i.remote.insert("d/s/w".into(), rf(31));
    i.remote.insert("d/new".into(), rf(32));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            mv("d", "e"),
            step("e/new", download()),
            step("e/s/w", download()),
            step("e/y", upload_over(3)),
            step("e/z", Action::DeleteRemote),
        ]
    );
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![
            mv("d", "e"),
            step("e/s/w", Action::KeepServerCopyThenUpload),
            step("e/y", upload_over(3)),
            step("e/z", Action::DeleteRemote),
        ]
    );
}

#[test]
fn a_file_moved_into_a_renamed_directory_follows_it() {
    let mut i = synced(&["a", "d/", "d/x"]);
    let a = i.local.remove("a").unwrap();
    let d = i.local.remove("d").unwrap();
    let x = i.local.remove("d/x").unwrap();
    i.local.insert("e".into(), d);
    i.local.insert("e/x".into(), x);
    i.local.insert("e/a".into(), a);
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![mv("d", "e"), mv("a", "e/a")]
    );
}

#[test]
fn a_move_into_a_directory_the_server_deleted_makes_it_again() {
    let mut i = synced(&["a", "d/", "d/x"]);
    let a = i.local.remove("a").unwrap();
    i.local.insert("d/a".into(), a);
    remove_below(&mut i.remote, "d");
    i.remote.remove("d");
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("d", Action::MkdirRemote),
            mv("a", "d/a"),
            step("d/x", Action::TrashLocal),
        ]
    );
}

#[test]
fn a_directory_replaced_by_a_new_one_at_its_old_name_moves_its_files() {
    // d renamed to e, then a new d made with a file moved into it: d is still there, so the
    // files move one by one.
    let mut i = synced(&["a", "d/", "d/x"]);
    let a = i.local.remove("a").unwrap();
    let d = i.local.remove("d").unwrap();
    let x = i.local.remove("d/x").unwrap();
    i.local.insert("e".into(), d);
    i.local.insert("e/x".into(), x);
    i.local.insert("d".into(), ld(99));
    i.local.insert("d/a".into(), a);
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            mv("a", "d/a"),
            step("e", Action::MkdirRemote),
            mv("d/x", "e/x")
        ]
    );
}

#[test]
fn conflict_copies_are_recognised_by_name() {
    let name = "d/notes (conflicted copy pc 2026-11-28 101500).txt";
    let mut i = synced(&["d/"]);
    i.local.insert(name.into(), lf(1, 20));
    i.remote.insert(name.into(), rf(2));
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![step(name, Action::Download { trash_local: true })]
    );
    i.local.insert("d/notes.txt".into(), lf(1, 21));
    i.remote.insert("d/notes.txt".into(), rf(2));
    let s = steps(&i, rules(BI, false));
    assert!(s.contains(&step("d/notes.txt", Action::Conflict)), "{s:?}");
    assert!(s.contains(&step(name, Action::Download { trash_local: true })));
}

fn limited(mode: Mode, confirmed: bool) -> Rules {
    Rules {
        mode,
        keep_deleted: false,
        delete_limit_percent: 50,
        deletes_confirmed: confirmed,
    }
}

#[test]
fn the_guard_stops_mass_deletes_on_the_server() {
    let mut i = synced(&["a", "b", "c", "d/", "d/x", "d/y"]);
    // 3 of 5 files: a, and the two below d.
    i.local.remove("a");
    remove_below(&mut i.local, "d");
    let p = plan(&i, limited(BI, false));
    assert_eq!(
        p,
        Plan {
            steps: vec![],
            stop: Some(Stop::TooManyDeletes {
                side: "server",
                count: 3,
                total: 5
            })
        }
    );
    let p = plan(&i, limited(UP, false));
    assert!(p.steps.is_empty() && p.stop.is_some());
    // Confirmed: it runs.
    let p = plan(&i, limited(BI, true));
    assert_eq!(p.stop, None);
    assert_eq!(
        p.steps,
        vec![
            step("d", Action::DeleteRemote),
            step("a", Action::DeleteRemote)
        ]
    );
    // Upload-only keeping deleted files deletes nothing.
    let p = plan(
        &i,
        Rules {
            keep_deleted: true,
            ..limited(UP, false)
        },
    );
    assert_eq!(p.stop, None);
    // At the limit exactly: 2 of 4 is 50 %, not more.
    let mut j = synced(&["a", "b", "c", "e"]);
    j.local.remove("a");
    j.local.remove("b");
    assert_eq!(plan(&j, limited(BI, false)).stop, None);
}

#[test]
fn the_guard_stops_mass_deletes_here() {
    let mut i = synced(&["a", "b", "c", "e"]);
    for p in ["a", "b", "c"] {
        i.remote.remove(p);
    }
    assert_eq!(
        plan(&i, limited(BI, false)).stop,
        Some(Stop::TooManyDeletes {
            side: "local",
            count: 3,
            total: 4
        })
    );
    // Both sides over the limit: the server side is reported.
    let mut j = synced(&["a", "b", "c", "e", "f", "g", "h", "k"]);
    for p in ["a", "b", "c", "e", "f"] {
        j.local.remove(p);
    }
    for p in ["g", "h", "k"] {
        j.remote.remove(p);
    }
    assert_eq!(
        plan(
            &j,
            Rules {
                delete_limit_percent: 10,
                ..limited(BI, false)
            }
        )
        .stop,
        Some(Stop::TooManyDeletes {
            side: "server",
            count: 5,
            total: 8
        })
    );
}

#[test]
fn the_guard_spares_tiny_folders_and_renames() {
    let mut i = synced(&["a", "b", "c"]);
    i.local.clear();
    assert_eq!(plan(&i, limited(BI, false)).stop, None);
    // Renaming every file of a folder deletes nothing.
    let mut j = synced(&["a", "b", "c", "e"]);
    let old = std::mem::take(&mut j.local);
    j.local = old.into_iter().map(|(k, v)| (format!("{k}2"), v)).collect();
    let p = plan(&j, limited(BI, false));
    assert_eq!(p.stop, None);
    assert_eq!(p.steps.len(), 4);
    assert!(p.steps.iter().all(|s| matches!(s, Step::MoveRemote { .. })));
}

#[test]
fn a_directory_replaced_by_a_file_keeps_both() {
    let mut i = synced(&["d/", "d/x"]);
    remove_below(&mut i.local, "d");
    i.local.insert("d".into(), lf(40, 40));
    // Bidirectional: the file becomes a conflict copy beside the (now empty) directory.
    assert_eq!(
        steps(&i, rules(BI, false)),
        vec![
            step("d", Action::Conflict),
            step("d/x", Action::DeleteRemote)
        ]
    );
    // Upload-only: the server's directory moves aside whole, the file goes up.
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![step("d", Action::KeepServerCopyThenUpload)]
    );
}

#[test]
fn a_server_directory_moved_aside_comes_after_moves_out_of_it() {
    // Upload-only: b (a directory) renamed to d here, and a new file b made.
    let mut i = synced(&["b/", "b/y", "b/z"]);
    let moved: Vec<(String, LocalMeta)> = std::mem::take(&mut i.local)
        .into_iter()
        .map(|(k, v)| (k.replacen('b', "d", 1), v))
        .collect();
    i.local = moved.into_iter().collect();
    i.local.insert("b".into(), lf(50, 50));
    assert_eq!(
        steps(&i, rules(UP, false)),
        vec![
            step("d", Action::MkdirRemote),
            mv("b/y", "d/y"),
            mv("b/z", "d/z"),
            step("b", Action::KeepServerCopyThenUpload),
        ]
    );
}
