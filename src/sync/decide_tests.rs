//! The decision table, row by row, for both modes (`sync-anchors.md` §8.3/§8.4).

use super::*;
use crate::sync::state::Kind;

pub(super) fn lf(v: u64) -> LocalMeta {
    LocalMeta {
        kind: Kind::File,
        size: v,
        mtime_ns: v as i64,
        inode: 7,
        hash: None,
    }
}

pub(super) fn rf(v: u64) -> RemoteMeta {
    RemoteMeta {
        kind: Kind::File,
        size: v,
        etag: Some(format!("e{v}")),
        mtime: None,
    }
}

pub(super) fn ld() -> LocalMeta {
    LocalMeta {
        kind: Kind::Dir,
        size: 0,
        mtime_ns: 1,
        inode: 8,
        hash: None,
    }
}

pub(super) fn rd() -> RemoteMeta {
    RemoteMeta {
        kind: Kind::Dir,
        size: 0,
        etag: None,
        mtime: None,
    }
}

pub(super) fn bf(v: u64) -> Base {
    Base {
        local: lf(v),
        remote: rf(v),
    }
}

pub(super) fn bd() -> Base {
    Base {
        local: ld(),
        remote: rd(),
    }
}

fn bi(base: Option<Base>, local: Option<LocalMeta>, remote: Option<RemoteMeta>) -> Action {
    decide(
        Mode::Bidirectional,
        false,
        false,
        base.as_ref(),
        local.as_ref(),
        remote.as_ref(),
    )
}

fn up(
    keep_deleted: bool,
    base: Option<Base>,
    local: Option<LocalMeta>,
    remote: Option<RemoteMeta>,
) -> Action {
    decide(
        Mode::UploadOnly,
        keep_deleted,
        false,
        base.as_ref(),
        local.as_ref(),
        remote.as_ref(),
    )
}

fn upload_absent() -> Action {
    Action::Upload {
        expect: Expect::Absent,
    }
}

fn download() -> Action {
    Action::Download { trash_local: false }
}

#[test]
fn change_classification() {
    assert_eq!(local_change(None, None), Change::Absent);
    assert_eq!(local_change(None, Some(&lf(1))), Change::New);
    assert_eq!(local_change(Some(&bf(1)), None), Change::Deleted);
    assert_eq!(local_change(Some(&bf(1)), Some(&lf(1))), Change::Same);
    assert_eq!(local_change(Some(&bf(1)), Some(&lf(2))), Change::Changed);
    assert_eq!(local_change(Some(&bf(1)), Some(&ld())), Change::Changed);
    assert_eq!(remote_change(None, Some(&rf(1))), Change::New);
    assert_eq!(remote_change(Some(&bf(1)), Some(&rf(1))), Change::Same);
    assert_eq!(remote_change(Some(&bf(1)), Some(&rf(2))), Change::Changed);
    assert_eq!(remote_change(Some(&bf(1)), None), Change::Deleted);
    // An unknown version is a change.
    let unknown = RemoteMeta {
        etag: None,
        ..rf(1)
    };
    assert_eq!(remote_change(Some(&bf(1)), Some(&unknown)), Change::Changed);
}

#[test]
fn bidirectional_rows() {
    // Row 1.
    assert_eq!(bi(Some(bf(1)), Some(lf(1)), Some(rf(1))), Action::Nothing);
    assert_eq!(bi(Some(bd()), Some(ld()), Some(rd())), Action::Nothing);
    assert_eq!(bi(None, None, None), Action::Nothing);
    // Row 2.
    assert_eq!(bi(None, Some(lf(1)), None), upload_absent());
    assert_eq!(bi(None, Some(ld()), None), Action::MkdirRemote);
    // Row 3.
    assert_eq!(bi(None, None, Some(rf(1))), download());
    assert_eq!(bi(None, None, Some(rd())), Action::MkdirLocal);
    // Row 4 (the executor records equal contents) and row 15.
    assert_eq!(bi(None, Some(lf(1)), Some(rf(1))), Action::Conflict);
    assert_eq!(bi(None, Some(lf(1)), Some(rf(2))), Action::Conflict);
    assert_eq!(bi(None, Some(ld()), Some(rd())), Action::Record);
    assert_eq!(bi(None, Some(ld()), Some(rf(1))), Action::Conflict);
    assert_eq!(bi(None, Some(lf(1)), Some(rd())), Action::Conflict);
    // Row 5: only the version the base knows may be replaced.
    assert_eq!(
        bi(Some(bf(1)), Some(lf(2)), Some(rf(1))),
        Action::Upload {
            expect: Expect::Version("e1".into())
        }
    );
    // Row 6.
    assert_eq!(bi(Some(bf(1)), Some(lf(1)), Some(rf(2))), download());
    // Row 7.
    assert_eq!(bi(Some(bf(1)), Some(lf(2)), Some(rf(3))), Action::Conflict);
    // Row 8.
    assert_eq!(bi(Some(bf(1)), None, Some(rf(1))), Action::DeleteRemote);
    assert_eq!(bi(Some(bd()), None, Some(rd())), Action::DeleteRemote);
    // Row 9.
    assert_eq!(bi(Some(bf(1)), Some(lf(1)), None), Action::TrashLocal);
    assert_eq!(bi(Some(bd()), Some(ld()), None), Action::TrashLocal);
    // Row 10: modification beats deletion.
    assert_eq!(bi(Some(bf(1)), None, Some(rf(2))), download());
    assert_eq!(bi(Some(bf(1)), None, Some(rd())), Action::MkdirLocal);
    // Row 11.
    assert_eq!(bi(Some(bf(1)), Some(lf(2)), None), upload_absent());
    assert_eq!(bi(Some(bf(1)), Some(ld()), None), Action::MkdirRemote);
    // Row 12.
    assert_eq!(bi(Some(bf(1)), None, None), Action::Forget);
    assert_eq!(bi(Some(bd()), None, None), Action::Forget);
}

#[test]
fn bidirectional_kind_changes() {
    // Row 13: one side changed kind, the other did not: the kinds differ, so both are kept.
    assert_eq!(bi(Some(bf(1)), Some(ld()), Some(rf(1))), Action::Conflict);
    assert_eq!(bi(Some(bf(1)), Some(lf(1)), Some(rd())), Action::Conflict);
    assert_eq!(bi(Some(bd()), Some(lf(1)), Some(rd())), Action::Conflict);
    assert_eq!(bi(Some(bd()), Some(ld()), Some(rf(1))), Action::Conflict);
    // Row 14, and both sides becoming directories is a merge.
    assert_eq!(bi(Some(bf(1)), Some(ld()), Some(rf(2))), Action::Conflict);
    assert_eq!(bi(Some(bf(1)), Some(ld()), Some(rd())), Action::Record);
}

#[test]
fn a_touch_with_the_same_hash_is_no_change() {
    let mut base = bf(1);
    base.local.hash = Some([1; 32]);
    let touched = LocalMeta {
        mtime_ns: 99,
        hash: Some([1; 32]),
        ..lf(1)
    };
    assert_eq!(
        bi(Some(base.clone()), Some(touched), Some(rf(1))),
        Action::Nothing
    );
    let edited = LocalMeta {
        mtime_ns: 99,
        hash: Some([2; 32]),
        ..lf(1)
    };
    assert!(matches!(
        bi(Some(base), Some(edited), Some(rf(1))),
        Action::Upload { .. }
    ));
}

#[test]
fn a_conflict_copy_is_never_conflicted_again() {
    let copy = |base: Option<Base>, local: LocalMeta, remote: RemoteMeta| {
        decide(
            Mode::Bidirectional,
            false,
            true,
            base.as_ref(),
            Some(&local),
            Some(&remote),
        )
    };
    let trash = Action::Download { trash_local: true };
    assert_eq!(copy(None, lf(1), rf(2)), trash);
    assert_eq!(copy(Some(bf(1)), lf(2), rf(3)), trash);
    // Not a conflict: the usual actions.
    assert_eq!(copy(Some(bf(1)), lf(1), rf(3)), download());
    assert!(matches!(
        copy(Some(bf(1)), lf(2), rf(1)),
        Action::Upload { .. }
    ));
    // A directory is never trashed in place of a conflict.
    assert_eq!(copy(None, ld(), rf(1)), Action::Conflict);
    assert_eq!(copy(None, ld(), rd()), Action::Record);
    // Upload-only never conflicts, copy or not.
    let a = decide(
        Mode::UploadOnly,
        false,
        true,
        None,
        Some(&lf(1)),
        Some(&rf(2)),
    );
    assert_eq!(a, Action::KeepServerCopyThenUpload);
}

#[test]
fn upload_only_rows() {
    for keep in [false, true] {
        // Row 1.
        assert_eq!(
            up(keep, Some(bf(1)), Some(lf(1)), Some(rf(1))),
            Action::Nothing
        );
        assert_eq!(
            up(keep, Some(bd()), Some(ld()), Some(rd())),
            Action::Nothing
        );
        // Row 2.
        assert_eq!(up(keep, None, Some(lf(1)), None), upload_absent());
        assert_eq!(up(keep, None, Some(ld()), None), Action::MkdirRemote);
        // Row 3: left on the server.
        assert_eq!(up(keep, None, None, Some(rf(1))), Action::Nothing);
        assert_eq!(up(keep, None, None, Some(rd())), Action::Nothing);
        // Row 4.
        assert_eq!(
            up(keep, None, Some(lf(1)), Some(rf(2))),
            Action::KeepServerCopyThenUpload
        );
        assert_eq!(up(keep, None, Some(ld()), Some(rd())), Action::Record);
        assert_eq!(
            up(keep, None, Some(ld()), Some(rf(1))),
            Action::KeepServerCopyThenUpload
        );
        // Row 5.
        assert_eq!(
            up(keep, Some(bf(1)), Some(lf(2)), Some(rf(1))),
            Action::Upload {
                expect: Expect::Version("e1".into())
            }
        );
        // Rows 6 and 7: the server's version moves aside.
        assert_eq!(
            up(keep, Some(bf(1)), Some(lf(1)), Some(rf(2))),
            Action::KeepServerCopyThenUpload
        );
        assert_eq!(
            up(keep, Some(bf(1)), Some(lf(2)), Some(rf(3))),
            Action::KeepServerCopyThenUpload
        );
        // Row 9: put back.
        assert_eq!(up(keep, Some(bf(1)), Some(lf(1)), None), upload_absent());
        assert_eq!(up(keep, Some(bd()), Some(ld()), None), Action::MkdirRemote);
        // Row 10: the server's change stays there.
        assert_eq!(up(keep, Some(bf(1)), None, Some(rf(2))), Action::Forget);
        // Row 11.
        assert_eq!(up(keep, Some(bf(1)), Some(lf(2)), None), upload_absent());
        // Row 12.
        assert_eq!(up(keep, Some(bf(1)), None, None), Action::Forget);
        // Rows 13/14: the local kind wins, the server's item moves aside.
        assert_eq!(
            up(keep, Some(bf(1)), Some(ld()), Some(rf(1))),
            Action::KeepServerCopyThenUpload
        );
        assert_eq!(
            up(keep, Some(bf(1)), Some(lf(1)), Some(rd())),
            Action::KeepServerCopyThenUpload
        );
        assert_eq!(
            up(keep, Some(bf(1)), Some(ld()), Some(rd())),
            Action::Record
        );
    }
    // Row 8: mirror, or keep the server copy.
    assert_eq!(
        up(false, Some(bf(1)), None, Some(rf(1))),
        Action::DeleteRemote
    );
    assert_eq!(
        up(false, Some(bd()), None, Some(rd())),
        Action::DeleteRemote
    );
    assert_eq!(up(true, Some(bf(1)), None, Some(rf(1))), Action::Forget);
    assert_eq!(up(true, Some(bd()), None, Some(rd())), Action::Forget);
}

#[test]
fn upload_only_never_changes_the_local_side() {
    let bases = [None, Some(bf(1)), Some(bd())];
    let locals = [None, Some(lf(1)), Some(lf(2)), Some(ld())];
    let remotes = [None, Some(rf(1)), Some(rf(2)), Some(rd())];
    for keep in [false, true] {
        for copy in [false, true] {
            for b in &bases {
                for l in &locals {
                    for r in &remotes {
                        let a = decide(
                            Mode::UploadOnly,
                            keep,
                            copy,
                            b.as_ref(),
                            l.as_ref(),
                            r.as_ref(),
                        );
                        assert!(
                            !matches!(
                                a,
                                Action::Download { .. }
                                    | Action::MkdirLocal
                                    | Action::TrashLocal
                                    | Action::Conflict
                            ),
                            "{b:?} {l:?} {r:?} -> {a:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn every_combination_fits_the_sides() {
    // What is decided can be carried out: an upload has a local file, a download a server
    // file, a delete something to delete, a record or conflict both sides.
    let bases = [None, Some(bf(1)), Some(bd())];
    let locals = [None, Some(lf(1)), Some(lf(2)), Some(ld())];
    let remotes = [None, Some(rf(1)), Some(rf(2)), Some(rd())];
    for mode in [Mode::Bidirectional, Mode::UploadOnly] {
        for b in &bases {
            for l in &locals {
                for r in &remotes {
                    let a = decide(mode, false, false, b.as_ref(), l.as_ref(), r.as_ref());
                    let lk = l.as_ref().map(|m| m.kind);
                    let rk = r.as_ref().map(|m| m.kind);
                    let ok = match &a {
                        Action::Nothing => true,
                        Action::Record => lk == Some(Kind::Dir) && rk == Some(Kind::Dir),
                        Action::Forget => b.is_some(),
                        Action::Upload { expect } => {
                            lk == Some(Kind::File) && (*expect == Expect::Absent) == r.is_none()
                        }
                        Action::MkdirRemote => lk == Some(Kind::Dir) && r.is_none(),
                        Action::Download { .. } => rk == Some(Kind::File),
                        Action::MkdirLocal => rk == Some(Kind::Dir) && l.is_none(),
                        Action::DeleteRemote => r.is_some() && l.is_none(),
                        Action::TrashLocal => l.is_some() && r.is_none(),
                        Action::Conflict | Action::KeepServerCopyThenUpload => {
                            l.is_some() && r.is_some()
                        }
                    };
                    assert!(ok, "{mode:?} {b:?} {l:?} {r:?} -> {a:?}");
                }
            }
        }
    }
}
