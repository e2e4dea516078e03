//! The shared upload path against the in-memory server and the fault injector.

use super::*;
use crate::remote::faulty::{FaultKind, FaultyRemote, Op};
use crate::remote::mem::MemRemote;
use crate::transfer::temp::{self, TEMP_PREFIX};

fn local(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    std::fs::write(&p, content).unwrap();
    (d, p)
}

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

fn vias(target: &RemotePath) -> [Via; 2] {
    [
        Via::Temp(temp::for_sync(target, "test").unwrap()),
        Via::Direct,
    ]
}

fn temps_left(m: &MemRemote) -> Vec<String> {
    m.paths()
        .into_iter()
        .filter(|x| x.contains(TEMP_PREFIX))
        .collect()
}

async fn send(
    remote: &dyn Remote,
    target: &RemotePath,
    file: &Path,
    size: u64,
    expect: Expect,
    via: Via,
    unchanged: &(dyn Fn() -> bool + Send + Sync),
) -> RemoteResult<Placed> {
    let unchanged = || -> futures_util::future::BoxFuture<'static, bool> {
        Box::pin(std::future::ready(unchanged()))
    };
    let job = UploadJob {
        target,
        file,
        size,
        expect,
        via,
        make_parents: true,
        learn_version: true,
        sent: None,
        unchanged: &unchanged,
    };
    upload(remote, &job).await
}

#[tokio::test]
async fn new_files_and_replacements_land_under_their_name_and_leave_no_temporary_copy() {
    let target = p("d/e/a.txt");
    for via in vias(&target) {
        let m = MemRemote::new();
        let (_d, f) = local(b"hello");
        let placed = send(&m, &target, &f, 5, Expect::Absent, via.clone(), &|| true)
            .await
            .unwrap();
        let Placed::Done(Some(e)) = placed else {
            panic!("{via:?}: {placed:?}")
        };
        assert_eq!(m.file_bytes("d/e/a.txt").unwrap(), b"hello", "{via:?}");
        std::fs::write(&f, b"world!").unwrap();
        let placed = send(
            &m,
            &target,
            &f,
            6,
            Expect::Version(version::of(&e)),
            via.clone(),
            &|| true,
        )
        .await
        .unwrap();
        assert!(matches!(placed, Placed::Done(_)), "{via:?}: {placed:?}");
        assert_eq!(m.file_bytes("d/e/a.txt").unwrap(), b"world!");
        assert_eq!(temps_left(&m), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_version_changed_while_ours_was_sent_is_never_replaced() {
    let target = p("doc");
    let m = MemRemote::new();
    m.insert_file("doc", &b"base"[..]);
    let base = version::of(&m.stat(&target).await.unwrap());
    let (_d, f) = local(b"ours");
    // Another client saves right while our copy travels (after our PUT, before the MOVE).
    let other = m.clone();
    let edit_meanwhile = move || {
        other.insert_file("doc", &b"theirs, saved meanwhile"[..]);
        true
    };
    let via = Via::Temp(temp::for_sync(&target, "x").unwrap());
    let placed = send(
        &m,
        &target,
        &f,
        4,
        Expect::Version(base),
        via,
        &edit_meanwhile,
    )
    .await
    .unwrap();
    let Placed::Refused {
        server,
        temp: Some(t),
    } = placed
    else {
        panic!("{placed:?}")
    };
    assert_eq!(server.size, 23);
    assert_eq!(m.file_bytes("doc").unwrap(), b"theirs, saved meanwhile");
    assert_eq!(
        m.file_bytes(t.as_str()).unwrap(),
        b"ours",
        "our copy is handed back"
    );
    discard(&m, &t).await;
    assert_eq!(temps_left(&m), Vec::<String>::new());
}

#[tokio::test]
async fn an_unknown_or_other_version_is_refused_both_ways() {
    let target = p("c.txt");
    for via in vias(&target) {
        for expect in [
            Expect::Version(None),
            Expect::Version(ETag::parse("\"other\"")),
            Expect::Absent,
        ] {
            let m = MemRemote::new();
            m.insert_file("c.txt", &b"theirs"[..]);
            let (_d, f) = local(b"ours");
            let placed = send(&m, &target, &f, 4, expect.clone(), via.clone(), &|| true)
                .await
                .unwrap();
            let Placed::Refused { server, temp } = placed else {
                panic!("{via:?} {expect:?}: {placed:?}")
            };
            assert_eq!(server.size, 6);
            if let Some(t) = temp {
                discard(&m, &t).await;
            }
            assert_eq!(m.file_bytes("c.txt").unwrap(), b"theirs");
            assert_eq!(temps_left(&m), Vec::<String>::new(), "{via:?} {expect:?}");
        }
    }
}

#[tokio::test]
async fn a_file_deleted_on_the_server_meanwhile_gets_ours_as_new() {
    let target = p("gone.txt");
    for via in vias(&target) {
        let m = MemRemote::new();
        let (_d, f) = local(b"kept");
        let expect = Expect::Version(ETag::parse("\"old\""));
        let placed = send(&m, &target, &f, 4, expect, via.clone(), &|| true)
            .await
            .unwrap();
        assert!(matches!(placed, Placed::Done(_)), "{via:?}: {placed:?}");
        assert_eq!(m.file_bytes("gone.txt").unwrap(), b"kept");
    }
}

#[tokio::test]
async fn a_source_changed_while_sent_places_nothing_and_leaves_nothing() {
    let target = p("doc");
    let m = MemRemote::new();
    m.insert_file("doc", &b"old"[..]);
    let base = version::of(&m.stat(&target).await.unwrap());
    // 11 bytes when the job was made; cut to 3 since.
    let (_d, f) = local(b"new");
    let via = Via::Temp(temp::for_sync(&target, "x").unwrap());
    let placed = send(&m, &target, &f, 11, Expect::Version(base), via, &|| false)
        .await
        .unwrap();
    assert!(matches!(placed, Placed::SourceChanged), "{placed:?}");
    assert_eq!(m.file_bytes("doc").unwrap(), b"old");
    assert_eq!(temps_left(&m), Vec::<String>::new());
}

#[tokio::test]
async fn a_server_too_full_for_two_copies_gets_the_file_replaced_in_place() {
    let target = p("big");
    let m = MemRemote::with_quota(1000);
    m.insert_file("big", vec![1u8; 700]);
    let base = version::of(&m.stat(&target).await.unwrap());
    let (_d, f) = local(&[2u8; 700]);
    let via = Via::Temp(temp::for_sync(&target, "x").unwrap());
    let placed = send(
        &m,
        &target,
        &f,
        700,
        Expect::Version(base),
        via.clone(),
        &|| true,
    )
    .await
    .unwrap();
    assert!(matches!(placed, Placed::Done(_)), "{placed:?}");
    assert_eq!(m.file_bytes("big").unwrap(), vec![2u8; 700]);
    assert_eq!(m.paths(), vec!["big".to_string()]);
    // A new file gets no such fallback: the 507 is the answer.
    let (_d, f) = local(&[3u8; 400]);
    let err = send(&m, &p("new"), &f, 400, Expect::Absent, via, &|| true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::InsufficientStorage { .. }),
        "{err:?}"
    );
    assert_eq!(m.paths(), vec!["big".to_string()]);
}

#[tokio::test]
async fn a_failed_send_or_move_leaves_the_server_as_it_was() {
    let target = p("doc");
    for op in [Op::Put, Op::Rename] {
        let f_remote = FaultyRemote::new(MemRemote::new());
        f_remote.inner().insert_file("doc", &b"old"[..]);
        let base = version::of(&f_remote.stat(&target).await.unwrap());
        f_remote.fail_next(op, 1, FaultKind::Transient);
        let (_d, f) = local(b"new content");
        let via = Via::Temp(temp::for_sync(&target, "x").unwrap());
        let err = send(
            &f_remote,
            &target,
            &f,
            11,
            Expect::Version(base),
            via,
            &|| true,
        )
        .await
        .unwrap_err();
        assert!(err.is_transient(), "{op:?}: {err:?}");
        assert_eq!(f_remote.inner().file_bytes("doc").unwrap(), b"old");
        assert_eq!(temps_left(f_remote.inner()), Vec::<String>::new(), "{op:?}");
    }
    // A PUT cut midway, too.
    let f_remote = FaultyRemote::new(MemRemote::new());
    f_remote.cut_put_after(3);
    let (_d, f) = local(b"new content");
    let via = Via::Temp(temp::for_sync(&target, "x").unwrap());
    assert!(
        send(&f_remote, &target, &f, 11, Expect::Absent, via, &|| true)
            .await
            .is_err()
    );
    assert!(
        f_remote.inner().paths().is_empty(),
        "{:?}",
        f_remote.inner().paths()
    );
}
