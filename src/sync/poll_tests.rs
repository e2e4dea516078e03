use std::collections::BTreeMap;

use super::*;
use crate::remote::mem::MemRemote;
use crate::remote::RemotePath;
use crate::sync::state::{Kind, LocalMeta};

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

const ROOT: &str = "sync";

/// A server folder `sync` of `dirs` directories `dNN` with 3 files each, deepest at
/// `d00/deep/deeper/f.txt`.
fn server(dirs: usize, propagate: bool) -> MemRemote {
    let r = MemRemote::new();
    r.set_propagate_dir_etags(propagate);
    for d in 0..dirs {
        for f in 0..3 {
            r.insert_file(&format!("{ROOT}/d{d:02}/f{f}.txt"), format!("{d} {f}"));
        }
    }
    r.insert_file(&format!("{ROOT}/d00/deep/deeper/f.txt"), "deep");
    r
}

/// The bases of a sync that has just seen the whole server folder.
async fn synced_bases(r: &MemRemote) -> BTreeMap<String, Base> {
    let scan = remote_scan::scan(r, &p(ROOT), &|_, _| false).await.unwrap();
    scan.entries
        .into_iter()
        .map(|(path, remote)| {
            let local = LocalMeta {
                kind: remote.kind,
                size: remote.size,
                mtime_ns: 0,
                inode: 0,
                hash: None,
            };
            (path, Base { local, remote })
        })
        .collect()
}

/// What a run that synced everything hands over: its last listing, in sync.
async fn seen_in_sync(r: &MemRemote) -> Seen {
    let w = remote_scan::walk(r, &p(ROOT), &|_, _| false, None)
        .await
        .unwrap();
    Seen {
        snapshot: w.snapshot,
        in_sync: true,
    }
}

async fn poll(st: &mut PollState, r: &MemRemote, bases: &BTreeMap<String, Base>) -> Polled {
    st.poll(r, &p(ROOT), &|_, _| false, Mode::Bidirectional, || {
        Ok::<_, ()>(bases.clone())
    })
    .await
}

#[tokio::test]
async fn an_unchanged_folder_is_walked_but_nothing_is_parsed_or_compared() {
    let r = server(5, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    r.reset_counters();
    let mut asked = false;
    let polled = st
        .poll(&r, &p(ROOT), &|_, _| false, Mode::Bidirectional, || {
            asked = true;
            Ok::<_, ()>(bases.clone())
        })
        .await;
    assert!(!polled.changed);
    assert!(!polled.parsed, "no listing changed: nothing parsed");
    assert!(!asked, "no listing changed: the bases are not even read");
    // root, 5 directories, d00/deep, d00/deep/deeper: every directory is still asked.
    assert_eq!(r.counters().list, 8);
    assert_eq!(polled.requests, 8);
}

#[tokio::test]
async fn a_file_edited_in_place_deep_down_is_seen_without_propagating_etags() {
    let r = server(5, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    assert!(!poll(&mut st, &r, &bases).await.changed);
    let root_tag = r.etag(ROOT);
    r.insert_file(&format!("{ROOT}/d00/deep/deeper/f.txt"), "edited");
    assert_eq!(
        r.etag(ROOT),
        root_tag,
        "Apache-like: the folder's ETag stays"
    );
    let polled = poll(&mut st, &r, &bases).await;
    assert!(polled.changed, "the in-place edit is a change");
    assert!(polled.parsed);
    assert_eq!(st.propagation(), Propagation::Off);
    // Still seen at the next poll (nothing synced meanwhile): the state is not in sync.
    assert!(poll(&mut st, &r, &bases).await.changed);
}

#[tokio::test]
async fn without_a_listing_from_a_run_the_first_poll_compares_everything_then_only_changes() {
    let r = server(3, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    let first = poll(&mut st, &r, &bases).await;
    assert!(!first.changed);
    assert!(
        first.parsed,
        "nothing known: every listing parsed and compared"
    );
    let second = poll(&mut st, &r, &bases).await;
    assert!(!second.changed);
    assert!(!second.parsed, "the first poll found it in sync");
    r.delete(&p(&format!("{ROOT}/d00/deep/deeper/f.txt")))
        .await
        .unwrap();
    assert!(
        poll(&mut st, &r, &bases).await.changed,
        "a delete is a change"
    );
}

#[tokio::test]
async fn a_new_file_is_a_change_except_in_upload_only_mode() {
    let r = server(3, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    let mut up = st.clone();
    r.insert_file(&format!("{ROOT}/d02/new.txt"), "new");
    assert!(
        poll(&mut st, &r, &bases).await.changed,
        "a new file is a change"
    );
    let polled = up
        .poll(&r, &p(ROOT), &|_, _| false, Mode::UploadOnly, || {
            Ok::<_, ()>(bases.clone())
        })
        .await;
    assert!(
        !polled.changed,
        "upload-only leaves server-only files alone"
    );
}

#[tokio::test]
async fn a_run_that_did_not_sync_makes_the_next_poll_compare_everything() {
    let r = server(3, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    st.after_run(None);
    r.reset_counters();
    let polled = poll(&mut st, &r, &bases).await;
    assert!(!polled.changed);
    assert!(polled.parsed, "not in sync: every listing is parsed");
}

#[tokio::test]
async fn an_unreachable_server_is_a_change_never_a_quiet_folder() {
    let r = server(2, false);
    let bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    // The folder gone (as a listing that fails): "changed", so that the run reports it.
    r.delete(&p(ROOT)).await.unwrap();
    assert!(poll(&mut st, &r, &bases).await.changed);
}

/// Makes one change deep down, then polls: the learning sees it.
async fn change_and_poll(
    st: &mut PollState,
    r: &MemRemote,
    bases: &mut BTreeMap<String, Base>,
    n: usize,
) -> Polled {
    r.insert_file(&format!("{ROOT}/d01/f1.txt"), format!("edit {n}"));
    let polled = poll(st, r, bases).await;
    // A run syncs it: the bases follow, and the run hands its listing over.
    *bases = synced_bases(r).await;
    st.after_run(Some(seen_in_sync(r).await));
    polled
}

#[tokio::test]
async fn a_propagating_server_is_trusted_after_three_changes_and_answers_with_one_request() {
    let r = server(4, true);
    let mut bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    for n in 0..TRUST_AFTER {
        assert_ne!(st.propagation(), Propagation::Trusted);
        let polled = change_and_poll(&mut st, &r, &mut bases, n as usize).await;
        assert!(polled.changed, "edit {n} seen");
    }
    assert_eq!(st.propagation(), Propagation::Trusted);
    // Now an unchanged folder costs one Depth:0 request.
    r.reset_counters();
    let polled = poll(&mut st, &r, &bases).await;
    assert!(!polled.changed);
    assert_eq!(polled.requests, 1);
    assert_eq!(r.counters().list, 0);
    assert_eq!(r.counters().stat, 1);
    // A deep in-place edit renews the folder's ETag: seen at once.
    r.insert_file(&format!("{ROOT}/d00/deep/deeper/f.txt"), "edited");
    let polled = poll(&mut st, &r, &bases).await;
    assert!(polled.changed);
    assert!(polled.requests > 1, "the changed ETag leads to a walk");
    assert_eq!(st.propagation(), Propagation::Trusted);
}

#[tokio::test]
async fn a_trusted_folder_is_still_walked_every_few_polls_and_one_unpropagated_change_turns_it_off()
{
    let r = server(4, true);
    let mut bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    for n in 0..TRUST_AFTER {
        change_and_poll(&mut st, &r, &mut bases, n as usize).await;
    }
    assert_eq!(st.propagation(), Propagation::Trusted);
    // The server stops propagating (another server behind the same URL, a bug): a change that
    // leaves the folder's ETag alone is missed by the ETag check, but not by the walk that
    // comes within WALK_EVERY polls.
    r.set_propagate_dir_etags(false);
    r.insert_file(&format!("{ROOT}/d02/f2.txt"), "unpropagated");
    let mut seen_after = None;
    for i in 1..=WALK_EVERY {
        if poll(&mut st, &r, &bases).await.changed {
            seen_after = Some(i);
            break;
        }
    }
    let i = seen_after.expect("the safety walk sees the change");
    assert!(i <= WALK_EVERY, "seen at poll {i}");
    assert_eq!(st.propagation(), Propagation::Off, "turned off for good");
    // Off for good: even after the server propagates again and changes are seen with it.
    r.set_propagate_dir_etags(true);
    bases = synced_bases(&r).await;
    st.after_run(Some(seen_in_sync(&r).await));
    for n in 0..TRUST_AFTER + 1 {
        change_and_poll(&mut st, &r, &mut bases, 10 + n as usize).await;
    }
    assert_eq!(st.propagation(), Propagation::Off);
    r.reset_counters();
    let polled = poll(&mut st, &r, &bases).await;
    assert!(!polled.changed);
    assert_eq!(r.counters().stat, 0, "no ETag check once off");
    assert!(polled.requests > 1);
}

#[tokio::test]
async fn a_non_propagating_server_is_never_trusted() {
    let r = server(4, false);
    let mut bases = synced_bases(&r).await;
    let mut st = PollState::default();
    st.after_run(Some(seen_in_sync(&r).await));
    // A new file at the folder's top renews the folder's ETag even on Apache: evidence for...
    r.insert_file(&format!("{ROOT}/top.txt"), "top");
    assert!(poll(&mut st, &r, &bases).await.changed);
    assert_eq!(st.propagation(), Propagation::Learning { seen: 1 });
    bases = synced_bases(&r).await;
    st.after_run(Some(seen_in_sync(&r).await));
    // ...but the first change below it disproves it.
    change_and_poll(&mut st, &r, &mut bases, 0).await;
    assert_eq!(st.propagation(), Propagation::Off);
}

#[tokio::test]
async fn compare_walks_needs_every_changed_directory_and_the_folder_to_have_a_new_etag() {
    let r = server(2, true);
    let walk = |r: MemRemote| async move {
        remote_scan::walk(&r, &p(ROOT), &|_, _| false, None)
            .await
            .unwrap()
            .snapshot
    };
    let a = walk(r.clone()).await;
    assert_eq!(
        remote_scan::compare_walks(&a, &walk(r.clone()).await),
        remote_scan::Evidence::Nothing
    );
    r.insert_file(&format!("{ROOT}/d00/deep/deeper/f.txt"), "x");
    let b = walk(r.clone()).await;
    assert_eq!(
        remote_scan::compare_walks(&a, &b),
        remote_scan::Evidence::Propagated
    );
    r.set_propagate_dir_etags(false);
    r.insert_file(&format!("{ROOT}/d00/deep/deeper/f.txt"), "y");
    let c = walk(r.clone()).await;
    assert_eq!(
        remote_scan::compare_walks(&b, &c),
        remote_scan::Evidence::NotPropagated
    );
}

#[test]
fn differs_compares_only_the_listed_directories_when_told() {
    let meta = |tag: &str| RemoteMeta {
        kind: Kind::File,
        size: 1,
        etag: Some(format!("\"{tag}\"")),
        mtime: None,
    };
    let base = |tag: &str| Base {
        local: LocalMeta {
            kind: Kind::File,
            size: 1,
            mtime_ns: 0,
            inode: 0,
            hash: None,
        },
        remote: meta(tag),
    };
    let bases: BTreeMap<String, Base> = [
        ("a/x".to_string(), base("1")),
        ("b/y".to_string(), base("2")),
        (".hidden".to_string(), base("3")),
    ]
    .into();
    let listed: BTreeMap<String, RemoteMeta> = [("a/x".to_string(), meta("1"))].into();
    let only_a: HashSet<String> = ["a".to_string()].into();
    let only_b: HashSet<String> = ["b".to_string()].into();
    // b/y is not listed: a change when b was listed, or when everything was.
    assert!(!differs(
        &bases,
        &listed,
        Some(&only_a),
        Mode::Bidirectional
    ));
    assert!(differs(&bases, &listed, Some(&only_b), Mode::Bidirectional));
    assert!(differs(&bases, &listed, None, Mode::Bidirectional));
    // A changed version, a new file: changes (a new one not in upload-only mode).
    let edited: BTreeMap<String, RemoteMeta> = [("a/x".to_string(), meta("9"))].into();
    assert!(differs(&bases, &edited, Some(&only_a), Mode::Bidirectional));
    let new: BTreeMap<String, RemoteMeta> = [
        ("a/x".to_string(), meta("1")),
        ("a/n".to_string(), meta("5")),
    ]
    .into();
    assert!(differs(&bases, &new, Some(&only_a), Mode::Bidirectional));
    assert!(!differs(&bases, &new, Some(&only_a), Mode::UploadOnly));
}

#[tokio::test]
async fn a_run_hands_its_listing_over_in_sync_after_uploads_and_after_downloads() {
    use crate::sync::apply::Progress;
    use crate::sync::engine::{self, Env, Outcome};
    use crate::sync::folder::{FolderId, FolderSpec, Schedule};
    use crate::sync::journal::Journal;
    use crate::sync::trash::Trash;
    use std::sync::Mutex;

    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("Folder");
    for f in ["a/b/one.txt", "a/two.txt", "three.txt"] {
        let path = local.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, f).unwrap();
    }
    let spec = FolderSpec {
        id: FolderId::random().unwrap(),
        local: local.clone(),
        remote: ROOT.to_string(),
        mode: Mode::Bidirectional,
        schedule: Schedule::Immediate,
        keep_deleted: false,
        paused: false,
        delete_limit_percent: 100,
        added_at: 0,
        area: String::new(),
        mode_reason: String::new(),
    };
    let journal = Journal::open(&tmp.path().join("journal.db")).unwrap();
    journal.add_folder(&spec).unwrap();
    let journal = Mutex::new(journal);
    let trash = Trash::at(tmp.path().join("Trash"));
    let progress = Progress::default();
    let r = MemRemote::new();
    let env = Env {
        remote: &r,
        journal: &journal,
        trash: &trash,
        device: "test".into(),
        progress: &progress,
        space: &Default::default(),
    };
    let bases = || journal.lock().unwrap().bases(&spec.id);
    let mut st = PollState::default();

    // The first sync uploads everything and hands over the listing it learnt the versions from.
    let (out, seen) = engine::run_seen(&env, &spec, false).await;
    assert!(matches!(out, Outcome::Synced { changes: 5, .. }), "{out:?}");
    let seen = seen.expect("a run that synced hands its listing over");
    assert!(seen.in_sync, "after the uploads' versions were learnt");
    st.after_run(Some(seen));
    let polled = st
        .poll(&r, &p(ROOT), &|_, _| false, Mode::Bidirectional, bases)
        .await;
    assert_eq!((polled.changed, polled.parsed), (false, false));

    // Another client edits a file deep down: seen, downloaded, and in sync again.
    r.insert_file(&format!("{ROOT}/a/b/one.txt"), "edited elsewhere");
    let polled = st
        .poll(&r, &p(ROOT), &|_, _| false, Mode::Bidirectional, bases)
        .await;
    assert!(polled.changed);
    let (out, seen) = engine::run_seen(&env, &spec, false).await;
    assert!(matches!(out, Outcome::Synced { changes: 1, .. }), "{out:?}");
    assert_eq!(
        std::fs::read(local.join("a/b/one.txt")).unwrap(),
        b"edited elsewhere"
    );
    let seen = seen.expect("listing handed over");
    assert!(seen.in_sync, "a download leaves the server as listed");
    st.after_run(Some(seen));
    let polled = st
        .poll(&r, &p(ROOT), &|_, _| false, Mode::Bidirectional, bases)
        .await;
    assert_eq!((polled.changed, polled.parsed), (false, false));

    // A run that does not sync (the server folder gone) hands nothing over.
    r.delete(&p(ROOT)).await.unwrap();
    let (out, seen) = engine::run_seen(&env, &spec, false).await;
    assert!(!matches!(out, Outcome::Synced { .. }), "{out:?}");
    assert!(seen.is_none());
}
