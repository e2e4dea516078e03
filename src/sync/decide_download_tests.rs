//! Download-only: the decision table row by row, the guarantee that nothing is ever sent
//! (every combination of base, local and server), and the plan-level rules (no server moves,
//! a kept directory is never made on the server).

use std::collections::BTreeMap;

use super::tests::{bd, bf, ld, lf, rd, rf};
use super::*;
use crate::sync::plan::{plan, Inputs, Rules, Step};

fn down(base: Option<Base>, local: Option<LocalMeta>, remote: Option<RemoteMeta>) -> Action {
    decide(
        Mode::DownloadOnly,
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

#[test]
fn download_only_rows() {
    // Row 1.
    assert_eq!(down(Some(bf(1)), Some(lf(1)), Some(rf(1))), Action::Nothing);
    assert_eq!(down(Some(bd()), Some(ld()), Some(rd())), Action::Nothing);
    assert_eq!(down(None, None, None), Action::Nothing);
    // Row 2: a new local file or directory stays here, never uploaded.
    assert_eq!(down(None, Some(lf(1)), None), Action::Nothing);
    assert_eq!(down(None, Some(ld()), None), Action::Nothing);
    // Row 3: the server's comes down.
    assert_eq!(down(None, None, Some(rf(1))), download());
    assert_eq!(down(None, None, Some(rd())), Action::MkdirLocal);
    // Row 4: both new: ours moves aside locally (equal contents are recorded by the
    // executor); two directories merge.
    assert_eq!(down(None, Some(lf(1)), Some(rf(2))), Action::Conflict);
    assert_eq!(down(None, Some(ld()), Some(rd())), Action::Record);
    assert_eq!(down(None, Some(ld()), Some(rf(1))), Action::Conflict);
    // Row 5: a local edit of an unchanged server file is kept as a local conflict copy and the
    // server's version comes back under the name (never an upload).
    assert_eq!(
        down(Some(bf(1)), Some(lf(2)), Some(rf(1))),
        Action::Conflict
    );
    // A kind change here (file → directory) too.
    assert_eq!(down(Some(bf(1)), Some(ld()), Some(rf(1))), Action::Conflict);
    // A directory whose metadata changed here has nothing to send.
    let touched = LocalMeta {
        mtime_ns: 9,
        ..ld()
    };
    assert_eq!(down(Some(bd()), Some(touched), Some(rd())), Action::Nothing);
    // Row 6: a server change comes down.
    assert_eq!(down(Some(bf(1)), Some(lf(1)), Some(rf(2))), download());
    assert_eq!(
        down(Some(bf(1)), Some(lf(1)), Some(rd())),
        Action::Conflict,
        "row 13: the server replaced the file by a directory: ours moves aside here"
    );
    // Row 7: both changed: ours aside, the server's under the name.
    assert_eq!(
        down(Some(bf(1)), Some(lf(2)), Some(rf(3))),
        Action::Conflict
    );
    // Row 8: a local delete brings the server's file (or directory) back.
    assert_eq!(down(Some(bf(1)), None, Some(rf(1))), download());
    assert_eq!(down(Some(bd()), None, Some(rd())), Action::MkdirLocal);
    // Row 9: deleted on the server: trashed here.
    assert_eq!(down(Some(bf(1)), Some(lf(1)), None), Action::TrashLocal);
    // Row 10: deleted here, changed there: the server's version comes down.
    assert_eq!(down(Some(bf(1)), None, Some(rf(2))), download());
    // Row 11: changed here, deleted there: the only copy of the edit stays here, untracked.
    assert_eq!(down(Some(bf(1)), Some(lf(2)), None), Action::Forget);
    // Row 12.
    assert_eq!(down(Some(bf(1)), None, None), Action::Forget);
}

#[test]
fn a_conflict_copy_is_never_conflicted_again() {
    let a = decide(
        Mode::DownloadOnly,
        false,
        true,
        Some(&bf(1)),
        Some(&lf(2)),
        Some(&rf(1)),
    );
    assert_eq!(a, Action::Download { trash_local: true });
}

/// Whatever both sides and the base hold, a download-only folder never changes the server.
#[test]
fn download_only_never_sends_anything() {
    let bases = [None, Some(bf(1)), Some(bd())];
    let locals = [None, Some(lf(1)), Some(lf(2)), Some(ld())];
    let remotes = [None, Some(rf(1)), Some(rf(3)), Some(rd())];
    let mut seen = 0;
    for b in &bases {
        for l in &locals {
            for r in &remotes {
                for copy in [false, true] {
                    for keep in [false, true] {
                        let a = decide(
                            Mode::DownloadOnly,
                            keep,
                            copy,
                            b.as_ref(),
                            l.as_ref(),
                            r.as_ref(),
                        );
                        assert!(
                            !matches!(
                                a,
                                Action::Upload { .. }
                                    | Action::MkdirRemote
                                    | Action::DeleteRemote
                                    | Action::KeepServerCopyThenUpload
                            ),
                            "{a:?} for base {b:?}, local {l:?}, server {r:?}"
                        );
                        // Nothing that exists only here is trashed: a trash is only given
                        // for what the server deleted and the base knows unchanged here.
                        if a == Action::TrashLocal {
                            assert!(r.is_none() && b.is_some());
                        }
                        seen += 1;
                    }
                }
            }
        }
    }
    assert_eq!(seen, 3 * 4 * 4 * 4);
}

fn rules() -> Rules {
    Rules {
        mode: Mode::DownloadOnly,
        keep_deleted: false,
        delete_limit_percent: 100,
        deletes_confirmed: false,
    }
}

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
fn a_local_rename_is_no_server_move_the_old_name_comes_back() {
    let mut i = synced(&["a", "b"]);
    let meta = i.local.remove("a").unwrap();
    i.local.insert("c".into(), meta);
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    // The old name comes down again; the new name stays here only.
    assert_eq!(p.steps, vec![do_step("a", download())]);
}

#[test]
fn a_directory_deleted_on_the_server_keeps_what_is_only_here() {
    let mut i = synced(&["d/", "d/x"]);
    i.remote.clear();
    i.local.insert("d/mine".into(), lf(9));
    let p = plan(&i, rules());
    assert_eq!(p.stop, None);
    // d/x (known, unchanged) is trashed; d stays, untracked (never made on the server).
    assert_eq!(
        p.steps,
        vec![
            do_step("d/x", Action::TrashLocal),
            do_step("d", Action::Forget)
        ]
    );
    let everything: BTreeMap<&str, &Step> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::Do { path, .. } => (path.as_str(), s),
            Step::MoveRemote { to, .. } => (to.as_str(), s),
        })
        .collect();
    assert!(!everything.contains_key("d/mine"));
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
