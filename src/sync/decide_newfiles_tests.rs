//! New-files-only (a folder the server lets us add to but not change): the decision table row
//! by row, the guarantee that nothing the server has is ever changed, moved or deleted (every
//! combination of base, local and server), and the plan-level rules (a local rename is no
//! server move: the old name comes back and the new one goes up as a new file).

use super::tests::{bd, bf, ld, lf, rd, rf};
use super::*;
use crate::sync::plan::{plan, Inputs, Rules, Step};

fn new_only(base: Option<Base>, local: Option<LocalMeta>, remote: Option<RemoteMeta>) -> Action {
    decide(
        Mode::NewFilesOnly,
        false,
        false,
        base.as_ref(),
        local.as_ref(),
        remote.as_ref(),
    )
}

fn download() -> Action {
    Action::Download { trash_local: false }
}

fn upload_new() -> Action {
    Action::Upload {
        expect: Expect::Absent,
    }
}

#[test]
fn new_files_only_rows() {
    // Row 1.
    assert_eq!(
        new_only(Some(bf(1)), Some(lf(1)), Some(rf(1))),
        Action::Nothing
    );
    assert_eq!(
        new_only(Some(bd()), Some(ld()), Some(rd())),
        Action::Nothing
    );
    assert_eq!(new_only(None, None, None), Action::Nothing);
    // Row 2: a new local file goes up as a new file (never over anything); a new local
    // folder is made on the server.
    assert_eq!(new_only(None, Some(lf(1)), None), upload_new());
    assert_eq!(new_only(None, Some(ld()), None), Action::MkdirRemote);
    // Row 3: the server's comes down.
    assert_eq!(new_only(None, None, Some(rf(1))), download());
    assert_eq!(new_only(None, None, Some(rd())), Action::MkdirLocal);
    // Row 4: both new: ours moves aside here (and goes up as a new file); two directories
    // merge.
    assert_eq!(new_only(None, Some(lf(1)), Some(rf(2))), Action::Conflict);
    assert_eq!(new_only(None, Some(ld()), Some(rd())), Action::Record);
    assert_eq!(new_only(None, Some(ld()), Some(rf(1))), Action::Conflict);
    // Row 5: a local edit of a file the server has is never sent over it: ours becomes a
    // conflict copy, the server's version comes back under the name.
    assert_eq!(
        new_only(Some(bf(1)), Some(lf(2)), Some(rf(1))),
        Action::Conflict
    );
    // A kind change here (file → directory) too.
    assert_eq!(
        new_only(Some(bf(1)), Some(ld()), Some(rf(1))),
        Action::Conflict
    );
    // A directory whose metadata changed here has nothing to send.
    let touched = LocalMeta {
        mtime_ns: 9,
        ..ld()
    };
    assert_eq!(
        new_only(Some(bd()), Some(touched), Some(rd())),
        Action::Nothing
    );
    // Row 6: a server change comes down, as in bidirectional.
    assert_eq!(new_only(Some(bf(1)), Some(lf(1)), Some(rf(2))), download());
    assert_eq!(
        new_only(Some(bf(1)), Some(lf(1)), Some(rd())),
        Action::Conflict,
        "row 13: the server replaced the file by a directory: ours moves aside here"
    );
    // Row 7: both changed: ours aside, the server's under the name.
    assert_eq!(
        new_only(Some(bf(1)), Some(lf(2)), Some(rf(3))),
        Action::Conflict
    );
    // Row 8: a local delete is not done on the server: the server's item comes back.
    assert_eq!(new_only(Some(bf(1)), None, Some(rf(1))), download());
    assert_eq!(new_only(Some(bd()), None, Some(rd())), Action::MkdirLocal);
    // Row 9: deleted on the server: trashed here.
    assert_eq!(new_only(Some(bf(1)), Some(lf(1)), None), Action::TrashLocal);
    // Row 10: deleted here, changed there: the server's version comes down.
    assert_eq!(new_only(Some(bf(1)), None, Some(rf(2))), download());
    // Row 11: changed here, deleted there: the name is free, the edit goes up as a new file.
    assert_eq!(new_only(Some(bf(1)), Some(lf(2)), None), upload_new());
    // Row 12.
    assert_eq!(new_only(Some(bf(1)), None, None), Action::Forget);
}

#[test]
fn a_conflict_copy_is_never_conflicted_again() {
    let a = decide(
        Mode::NewFilesOnly,
        false,
        true,
        Some(&bf(1)),
        Some(&lf(2)),
        Some(&rf(1)),
    );
    assert_eq!(a, Action::Download { trash_local: true });
}

/// Whatever both sides and the base hold, a new-files-only folder never changes, moves or
/// deletes what the server has: the only things sent are a new file where the server has
/// nothing and a new folder; and nothing that exists only here is trashed.
#[test]
fn new_files_only_never_changes_what_the_server_has() {
    let bases = [None, Some(bf(1)), Some(bd())];
    let locals = [None, Some(lf(1)), Some(lf(2)), Some(ld())];
    let remotes = [None, Some(rf(1)), Some(rf(3)), Some(rd())];
    let mut seen = 0;
    let mut sent = 0;
    for b in &bases {
        for l in &locals {
            for r in &remotes {
                for copy in [false, true] {
                    for keep in [false, true] {
                        let a = decide(
                            Mode::NewFilesOnly,
                            keep,
                            copy,
                            b.as_ref(),
                            l.as_ref(),
                            r.as_ref(),
                        );
                        let why = format!("{a:?} for base {b:?}, local {l:?}, server {r:?}");
                        assert!(
                            !matches!(
                                a,
                                Action::Upload {
                                    expect: Expect::Version(_)
                                } | Action::DeleteRemote
                                    | Action::KeepServerCopyThenUpload
                            ),
                            "{why}"
                        );
                        if matches!(a, Action::Upload { .. } | Action::MkdirRemote) {
                            assert!(r.is_none(), "sent over the server's item: {why}");
                            sent += 1;
                        }
                        if a == Action::TrashLocal {
                            assert!(r.is_none() && b.is_some(), "{why}");
                        }
                        seen += 1;
                    }
                }
            }
        }
    }
    assert_eq!(seen, 3 * 4 * 4 * 4);
    assert!(sent > 0, "new files do go up");
}

/// New-files-only differs from bidirectional only where bidirectional would change the
/// server's item: everywhere else it decides the same.
#[test]
fn new_files_only_is_bidirectional_where_nothing_on_the_server_changes() {
    let bases = [None, Some(bf(1)), Some(bd())];
    let locals = [None, Some(lf(1)), Some(lf(2)), Some(ld())];
    let remotes = [None, Some(rf(1)), Some(rf(3)), Some(rd())];
    for b in &bases {
        for l in &locals {
            for r in &remotes {
                let bi = decide(
                    Mode::Bidirectional,
                    false,
                    false,
                    b.as_ref(),
                    l.as_ref(),
                    r.as_ref(),
                );
                let changes_server = matches!(
                    bi,
                    Action::Upload {
                        expect: Expect::Version(_)
                    } | Action::DeleteRemote
                ) || (bi == Action::Conflict
                    && l.as_ref().map(|m| m.kind) == Some(Kind::Dir)
                    && r.as_ref().map(|m| m.kind) == Some(Kind::File));
                if changes_server {
                    continue;
                }
                let nf = new_only(b.clone(), l.clone(), r.clone());
                assert_eq!(nf, bi, "base {b:?}, local {l:?}, server {r:?}");
            }
        }
    }
}

fn rules() -> Rules {
    Rules {
        mode: Mode::NewFilesOnly,
        keep_deleted: false,
        delete_limit_percent: 100,
        deletes_confirmed: false,
    }
}

/// Synced files `paths` (a trailing `/`: a directory), each with its own inode.
fn synced(paths: &[&str]) -> Inputs {
    let mut i = Inputs::default();
    for (n, p) in paths.iter().enumerate() {
        let v = n as u64 + 1;
        let (path, l, r) = match p.strip_suffix('/') {
            Some(dir) => (
                dir,
                LocalMeta {
                    inode: 100 + v,
                    ..ld()
                },
                rd(),
            ),
            None => (*p, LocalMeta { inode: v, ..lf(v) }, rf(v)),
        };
        let base = Base {
            local: l.clone(),
            remote: r.clone(),
        };
        i.base.insert(path.into(), base);
        i.local.insert(path.into(), l);
        i.remote.insert(path.into(), r);
    }
    i
}

fn do_step(path: &str, action: Action) -> Step {
    Step::Do {
        path: path.into(),
        action,
    }
}

#[test]
fn a_local_rename_is_no_server_move_the_old_name_comes_back_the_new_goes_up() {
    let mut i = synced(&["a", "b"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("c".into(), meta);
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    assert_eq!(
        p.steps,
        vec![do_step("a", download()), do_step("c", upload_new())]
    );
}

#[test]
fn a_locally_deleted_directory_comes_back_whole() {
    let mut i = synced(&["d/", "d/x", "d/y"]);
    i.local.clear();
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    assert_eq!(
        p.steps,
        vec![
            do_step("d", Action::MkdirLocal),
            do_step("d/x", download()),
            do_step("d/y", download()),
        ]
    );
}

#[test]
fn a_new_local_folder_with_files_goes_up_parents_first() {
    let mut i = synced(&["a"]);
    i.local.insert("n".into(), LocalMeta { inode: 50, ..ld() });
    i.local
        .insert("n/f".into(), LocalMeta { inode: 51, ..lf(7) });
    let p = plan(&i, rules());
    assert_eq!(
        p.steps,
        vec![
            do_step("n", Action::MkdirRemote),
            do_step("n/f", upload_new())
        ]
    );
}

#[test]
fn a_directory_deleted_on_the_server_with_new_files_here_is_made_again() {
    let mut i = synced(&["d/", "d/x"]);
    i.remote.clear();
    i.local
        .insert("d/mine".into(), LocalMeta { inode: 60, ..lf(9) });
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    // d is made again on the server (a new folder there), mine goes up, x (known and
    // unchanged here) follows the server's delete.
    assert_eq!(
        p.steps,
        vec![
            do_step("d", Action::MkdirRemote),
            do_step("d/mine", upload_new()),
            do_step("d/x", Action::TrashLocal),
        ]
    );
}

/// A local directory where the server now has a file: the directory moves aside here whole
/// (nothing below it is trashed or forgotten on its own); the server's file is left alone.
#[test]
fn a_local_directory_over_a_server_file_moves_aside_here_whole() {
    let mut i = synced(&["d/", "d/x"]);
    i.remote.clear();
    i.remote.insert("d".into(), rf(5));
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    assert_eq!(p.steps, vec![do_step("d", Action::Conflict)]);
}
