use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::remote::faulty::{FaultKind, FaultyRemote, Op};
use crate::remote::mem::MemRemote;
use crate::remote::{Entry as RemoteEntry, Listing, PutOutcome, Quota, ReadResponse};

fn computer(n: u8) -> ComputerRef {
    ComputerRef {
        id: format!("{n:032x}"),
        host: format!("host{n}"),
        user: None,
        profile: None,
    }
}

/// Profile `profile` of computer `n` (user `u`).
fn profile(n: u8, profile: &str) -> ComputerRef {
    ComputerRef {
        user: Some("u".into()),
        profile: Some(profile.into()),
        ..computer(n)
    }
}

fn activate_as(id: &str, name: &str, who: &ComputerRef, local: &str, at: i64) -> Change {
    Change::Activate {
        folder: folder(id, name, &format!("Docs/{name}")),
        computer: who.clone(),
        local: PathBuf::from(local),
        at,
    }
}

fn deactivate_as(id: &str, name: &str, who: &ComputerRef, unclaimed: bool) -> Change {
    Change::Deactivate {
        id: FolderId(id.into()),
        remote: format!("Docs/{name}"),
        computer: who.id.clone(),
        profile: who.profile.clone(),
        unclaimed,
    }
}

/// Who is active on the first folder: (computer id, profile).
fn participants(r: &Registry) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = r.folders[0]
        .active
        .iter()
        .map(|a| (a.computer.clone(), a.profile.clone()))
        .collect();
    v.sort();
    v
}

fn folder(id: &str, name: &str, remote: &str) -> FolderInfo {
    FolderInfo {
        id: FolderId(id.into()),
        name: name.into(),
        remote: remote.into(),
        mode: Mode::Bidirectional,
        schedule: Schedule::Immediate,
    }
}

fn activate(id: &str, name: &str, c: u8, local: &str, at: i64) -> Change {
    Change::Activate {
        folder: folder(id, name, &format!("Docs/{name}")),
        computer: computer(c),
        local: PathBuf::from(local),
        at,
    }
}

fn stored(mem: &MemRemote) -> Registry {
    serde_json::from_slice(&mem.file_bytes(REGISTRY_PATH).expect("the registry")).unwrap()
}

fn ids(r: &Registry) -> Vec<&str> {
    r.folders.iter().map(|e| e.id.as_str()).collect()
}

#[test]
fn changes_register_join_deactivate_and_forget() {
    let mut r = Registry::default();
    assert!(r.apply(&activate("a1", "Projects", 1, "/home/u/Projects", 10)));
    // Idempotent.
    assert!(!r.apply(&activate("a1", "Projects", 1, "/home/u/Projects", 20)));
    // Another computer adding the same server folder under another id joins the entry.
    assert!(r.apply(&activate("b2", "Projects", 2, "/home/v/P", 30)));
    assert_eq!(ids(&r), ["a1"]);
    let e = &r.folders[0];
    assert_eq!(e.added_by, computer(1));
    assert_eq!(
        e.activation(&computer(2)).unwrap().local,
        Path::new("/home/v/P")
    );
    // Moving the folder on one computer replaces its activation.
    assert!(r.apply(&activate("a1", "Projects", 2, "/data/P", 40)));
    assert_eq!(r.folders[0].active.len(), 2);
    // Remove on one computer: the others keep it.
    let deact = deactivate_as("a1", "Projects", &computer(1), false);
    assert!(r.apply(&deact));
    assert!(!r.apply(&deact));
    assert_eq!(r.folders[0].active.len(), 1);
    assert_eq!(r.folders[0].active[0].host, "host2");
    // Forget: the entry goes, a tombstone stays; adding it again lifts the tombstone.
    let forget = Change::Forget {
        id: FolderId("a1".into()),
        by: computer(3),
        at: 50,
    };
    assert!(r.apply(&forget));
    assert!(!r.apply(&forget));
    assert!(r.folders.is_empty());
    assert_eq!(
        r.forgotten(&FolderId("zz".into()), "Docs/Projects")
            .unwrap()
            .at,
        50
    );
    assert!(r.apply(&activate("c3", "Projects", 1, "/home/u/Projects", 60)));
    assert!(r.forgotten.is_empty());
    assert_eq!(ids(&r), ["c3"]);
}

#[test]
fn defaults_change_the_mode_and_schedule_and_keep_the_activations() {
    let mut r = Registry::default();
    r.apply(&activate("a1", "Music", 1, "/home/u/Music", 10));
    r.apply(&activate("a1", "Music", 2, "/home/v/Music", 20));
    let defaults = Change::Defaults {
        id: FolderId("a1".into()),
        remote: "Docs/Music".into(),
        mode: Mode::UploadOnly,
        schedule: Schedule::Weekly,
    };
    assert!(r.apply(&defaults));
    assert!(!r.apply(&defaults), "idempotent");
    let e = &r.folders[0];
    assert_eq!((e.mode, e.schedule), (Mode::UploadOnly, Schedule::Weekly));
    assert_eq!(e.active.len(), 2);
    // Of a folder the account no longer has: nothing.
    let mut empty = Registry::default();
    assert!(!empty.apply(&defaults));
    // It travels as the other changes do.
    let json = serde_json::to_string(&defaults).unwrap();
    assert!(json.contains("\"change\":\"defaults\""), "{json}");
    assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), defaults);
}

#[test]
fn fields_of_a_later_build_are_kept() {
    let text = r#"{"format":1,"colour":"blue","folders":[{"id":"a","name":"A","remote":"A",
        "mode":"upload-only","schedule":"weekly","added_by":{"id":"x","host":"h"},"added_at":1,
        "icon":"star","active":[{"computer":"x","host":"h","local":"/a","since":1,"paused":true}]}]}"#;
    let mut r: Registry = serde_json::from_str(text).unwrap();
    r.apply(&activate("b", "B", 1, "/b", 2));
    let back: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(back["colour"], "blue");
    assert_eq!(back["folders"][0]["icon"], "star");
    assert_eq!(back["folders"][0]["active"][0]["paused"], true);
    assert_eq!(back["folders"][0]["mode"], "upload-only");
}

#[tokio::test]
async fn the_first_update_creates_the_file_and_later_ones_keep_it() {
    let mem = MemRemote::new();
    let r = update(&mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap();
    assert_eq!(ids(&r), ["a"]);
    assert!(mem.exists(REGISTRY_DIR));
    update(&mem, &[activate("b", "B", 2, "/b", 2)])
        .await
        .unwrap();
    let s = stored(&mem);
    assert_eq!(s.format, FORMAT);
    assert_eq!(ids(&s), ["a", "b"]);
    // Nothing to change: nothing written.
    let tag = mem.etag(REGISTRY_PATH);
    update(&mem, &[activate("b", "B", 2, "/b", 3)])
        .await
        .unwrap();
    assert_eq!(mem.etag(REGISTRY_PATH), tag);
}

/// A remote on which another computer's update lands just before our first PUT: the race
/// the conditional write is for, made to happen every time.
struct Intruder {
    inner: Arc<MemRemote>,
    theirs: Mutex<Option<Vec<Change>>>,
    /// The next reads carry weak ETags (Apache's, for a file written within the second).
    weak_reads: std::sync::atomic::AtomicU32,
    /// Their update lands *after* our PUT, on the version both read: a server that checked
    /// both `If-Match`es before either replaced the file.
    clobber: bool,
}

impl Intruder {
    fn new(inner: Arc<MemRemote>, theirs: Option<Vec<Change>>) -> Intruder {
        Intruder {
            inner,
            theirs: Mutex::new(theirs),
            weak_reads: Default::default(),
            clobber: false,
        }
    }
}

#[async_trait]
impl Remote for Intruder {
    async fn stat(&self, p: &RemotePath) -> RemoteResult<RemoteEntry> {
        self.inner.stat(p).await
    }
    async fn list(&self, p: &RemotePath) -> RemoteResult<Listing> {
        self.inner.list(p).await
    }
    async fn read_range(
        &self,
        p: &RemotePath,
        r: ByteRange,
        e: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        use std::sync::atomic::Ordering;
        let mut resp = self.inner.read_range(p, r, e).await?;
        let weak = self
            .weak_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if weak {
            resp.etag = resp
                .etag
                .and_then(|t| ETag::parse(&format!("W/{}", t.header_value())));
        }
        Ok(resp)
    }
    async fn put(&self, p: &RemotePath, b: PutBody, c: PutCondition) -> RemoteResult<PutOutcome> {
        let theirs = self.theirs.lock().unwrap().take();
        match theirs {
            Some(theirs) if self.clobber => {
                let (mut old, _) = read(&*self.inner).await.unwrap().unwrap_or_default();
                let ours = self.inner.put(p, b, c).await;
                for t in &theirs {
                    old.apply(t);
                }
                let body = serde_json::to_vec(&old).unwrap();
                self.inner
                    .put(p, PutBody::from(body), PutCondition::None)
                    .await
                    .unwrap();
                ours
            }
            Some(theirs) => {
                update(&*self.inner, &theirs).await.expect("their update");
                self.inner.put(p, b, c).await
            }
            None => self.inner.put(p, b, c).await,
        }
    }
    async fn mkdir(&self, p: &RemotePath) -> RemoteResult<()> {
        self.inner.mkdir(p).await
    }
    async fn delete(&self, p: &RemotePath) -> RemoteResult<()> {
        self.inner.delete(p).await
    }
    async fn rename(&self, f: &RemotePath, t: &RemotePath, o: bool) -> RemoteResult<()> {
        self.inner.rename(f, t, o).await
    }
    async fn copy(&self, f: &RemotePath, t: &RemotePath, o: bool) -> RemoteResult<()> {
        self.inner.copy(f, t, o).await
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.inner.quota().await
    }
}

async fn race(existing: bool) {
    let mem = Arc::new(MemRemote::new());
    if existing {
        update(&*mem, &[activate("old", "Old", 3, "/old", 1)])
            .await
            .unwrap();
    }
    let r = Intruder::new(
        mem.clone(),
        Some(vec![activate("theirs", "Theirs", 2, "/t", 5)]),
    );
    let ours = update(&r, &[activate("ours", "Ours", 1, "/o", 5)])
        .await
        .unwrap();
    let mut want = if existing { vec!["old"] } else { vec![] };
    want.extend(["theirs", "ours"]);
    assert_eq!(ids(&ours), want);
    assert_eq!(ids(&stored(&mem)), want, "both computers' folders survive");
}

#[tokio::test]
async fn a_lost_race_on_an_existing_registry_is_retried_with_both_changes() {
    race(true).await;
}

#[tokio::test]
async fn a_lost_race_to_create_the_registry_is_retried_with_both_changes() {
    race(false).await;
}

#[tokio::test]
async fn a_remove_racing_an_add_keeps_both() {
    let mem = Arc::new(MemRemote::new());
    update(
        &*mem,
        &[
            activate("a", "A", 1, "/a", 1),
            activate("a", "A", 2, "/a2", 1),
        ],
    )
    .await
    .unwrap();
    let r = Intruder::new(mem.clone(), Some(vec![activate("b", "B", 2, "/b", 2)]));
    let deact = deactivate_as("a", "A", &computer(1), false);
    update(&r, &[deact]).await.unwrap();
    let s = stored(&mem);
    assert_eq!(ids(&s), ["a", "b"]);
    assert_eq!(s.folders[0].active.len(), 1);
    assert_eq!(s.folders[0].active[0].computer, computer(2).id);
}

#[tokio::test]
async fn injected_precondition_failures_are_retried_and_other_errors_returned() {
    let f = FaultyRemote::new(MemRemote::new());
    update(&f, &[activate("a", "A", 1, "/a", 1)]).await.unwrap();
    f.fail_next(Op::Put, 3, FaultKind::Status(412));
    f.reset_counters();
    update(&f, &[activate("b", "B", 2, "/b", 2)]).await.unwrap();
    assert_eq!(f.calls(Op::Put), 4, "three lost rounds, then written");
    assert_eq!(ids(&stored(f.inner())), ["a", "b"]);

    // The server away: a transient error, nothing changed.
    f.fail_next(Op::ReadRange, 1, FaultKind::Transient);
    let e = update(&f, &[activate("c", "C", 3, "/c", 3)])
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    f.fail_next(Op::Put, 1, FaultKind::Status(503));
    let e = update(&f, &[activate("c", "C", 3, "/c", 3)])
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(ids(&stored(f.inner())), ["a", "b"]);
    // Refused: not transient.
    f.fail_next(Op::Put, 1, FaultKind::Status(403));
    let e = update(&f, &[activate("c", "C", 3, "/c", 3)])
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
}

#[tokio::test]
async fn a_registry_that_never_settles_gives_up_as_transient() {
    let f = FaultyRemote::new(MemRemote::new());
    f.fail_next(Op::Put, u64::from(MAX_ROUNDS) + 5, FaultKind::Status(412));
    let e = update(&f, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Contended), "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_damaged_or_newer_registry_is_not_written() {
    let mem = MemRemote::new();
    mem.insert_dir(REGISTRY_DIR);
    mem.insert_file(REGISTRY_PATH, &b"{not json"[..]);
    let e = update(&mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Damaged(_)), "{e}");
    assert!(!e.is_transient());
    assert_eq!(mem.file_bytes(REGISTRY_PATH).unwrap(), b"{not json");
    let newer = br#"{"format":2,"folders":[]}"#;
    mem.insert_file(REGISTRY_PATH, &newer[..]);
    let e = update(&mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Newer(2)), "{e}");
    assert_eq!(mem.file_bytes(REGISTRY_PATH).unwrap(), newer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_computers_adding_at_once_all_survive() {
    let f = Arc::new(FaultyRemote::new(MemRemote::new()));
    // A slow PUT widens every race window.
    f.delay(Op::Put, Duration::from_millis(5));
    let tasks: Vec<_> = (0..12u8)
        .map(|n| {
            let f = f.clone();
            tokio::spawn(async move {
                let c = activate(&format!("f{n:02}"), &format!("F{n}"), n, "/x", 1);
                update(&*f, &[c]).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut got: Vec<String> = stored(f.inner())
        .folders
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    got.sort();
    let want: Vec<String> = (0..12).map(|n| format!("f{n:02}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_server_without_etags_is_written_and_read_back() {
    let mem = MemRemote::new();
    mem.set_etag_report(crate::remote::mem::ETagReport::Nowhere);
    update(&mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap();
    update(&mem, &[activate("b", "B", 2, "/b", 1)])
        .await
        .unwrap();
    assert_eq!(ids(&stored(&mem)), ["a", "b"]);
}

#[tokio::test]
async fn a_weak_etag_is_read_again_until_if_match_can_name_the_version() {
    let mem = Arc::new(MemRemote::new());
    update(&*mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap();
    // Two weak answers, then a strong one: the write is conditional, and a race is still seen.
    let r = Intruder::new(mem.clone(), Some(vec![activate("t", "T", 2, "/t", 2)]));
    r.weak_reads.store(2, std::sync::atomic::Ordering::SeqCst);
    update(&r, &[activate("o", "O", 3, "/o", 3)]).await.unwrap();
    assert_eq!(ids(&stored(&mem)), ["a", "t", "o"]);
    // Weak for good: written without a version, read back and checked.
    let r = Intruder::new(mem.clone(), None);
    r.weak_reads
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    update(&r, &[activate("w", "W", 4, "/w", 4)]).await.unwrap();
    assert_eq!(ids(&stored(&mem)), ["a", "t", "o", "w"]);
}

#[tokio::test]
async fn two_conditional_writes_both_accepted_by_the_server_keep_both_changes() {
    let mem = Arc::new(MemRemote::new());
    update(&*mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap();
    let mut r = Intruder::new(mem.clone(), Some(vec![activate("t", "T", 2, "/t", 2)]));
    r.clobber = true;
    update(&r, &[activate("o", "O", 3, "/o", 3)]).await.unwrap();
    let mut got = ids(&stored(&mem))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(
        got,
        ["a", "o", "t"],
        "our change, overwritten, was seen missing and written again"
    );
}

#[tokio::test]
async fn a_collection_in_the_registrys_place_is_an_error_not_a_loop() {
    let mem = MemRemote::new();
    mem.insert_dir(REGISTRY_DIR);
    mem.insert_dir(REGISTRY_PATH);
    let e = update(&mem, &[activate("a", "A", 1, "/a", 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Remote(RemoteError::IsADirectory { .. })),
        "{e}"
    );
}

#[test]
fn register_adds_an_inactive_folder_once_and_never_brings_back_a_forgotten_one() {
    let mut r = Registry::default();
    let reg = |id: &str, name: &str, remote: &str| Change::Register {
        folder: folder(id, name, remote),
        by: computer(1),
        at: 10,
    };
    assert!(r.apply(&reg("a", "Pictures", "Docs/Pictures")));
    assert_eq!(ids(&r), ["a"]);
    assert!(r.folders[0].active.is_empty(), "registered inactive");
    assert_eq!(r.folders[0].added_by, computer(1));
    // Again, or by another id for the same server folder: nothing changes.
    assert!(!r.apply(&reg("a", "Pictures", "Docs/Pictures")));
    assert!(!r.apply(&reg("b", "Pics", "Docs/Pictures")));
    assert_eq!(ids(&r), ["a"]);
    // An activation of the same server folder joins the registered entry.
    assert!(r.apply(&activate("c", "Pictures", 2, "/home/u/Pictures", 11)));
    assert_eq!(ids(&r), ["a"]);
    assert_eq!(r.folders[0].active.len(), 1);
    // Forgotten: a later registration does not bring it back.
    assert!(r.apply(&Change::Forget {
        id: FolderId("a".into()),
        by: computer(2),
        at: 12,
    }));
    assert!(!r.apply(&reg("d", "Pictures", "Docs/Pictures")));
    assert!(r.folders.is_empty());
}

#[test]
fn two_profiles_of_one_computer_are_two_participants() {
    let (work, home) = (profile(1, "work"), profile(1, "home"));
    let mut r = Registry::default();
    assert!(r.apply(&activate_as("p", "Projects", &work, "/h/Projects", 10)));
    assert!(
        r.folders[0].activation(&home).is_none(),
        "not active for home"
    );
    assert!(r.apply(&activate_as("p", "Projects", &home, "/h/P2", 20)));
    let id = computer(1).id;
    assert_eq!(
        participants(&r),
        [
            (id.clone(), Some("home".to_string())),
            (id.clone(), Some("work".to_string()))
        ]
    );
    // Again as it is: nothing changes, `since` stays.
    assert!(!r.apply(&activate_as("p", "Projects", &work, "/h/Projects", 30)));
    assert_eq!(r.folders[0].activation(&work).unwrap().since, 10);
    // Remove in one profile: the other stays.
    assert!(r.apply(&deactivate_as("p", "Projects", &home, true)));
    assert_eq!(participants(&r), [(id, Some("work".to_string()))]);
    assert_eq!(
        r.folders[0].activation(&work).unwrap().local,
        Path::new("/h/Projects")
    );
}

#[test]
fn an_activation_without_a_profile_is_taken_over_by_the_profile_that_syncs_the_folder() {
    // Recorded by a cloudmount that did not tell profiles apart (and another computer's).
    let old = computer(1);
    let mut r = Registry::default();
    r.apply(&activate("p", "Projects", 1, "/h/Projects", 10));
    r.apply(&activate("p", "Projects", 2, "/v/Projects", 10));
    let work = profile(1, "work");
    assert!(r.folders[0].has_unclaimed(&work));
    assert!(!r.folders[0].has_unclaimed(&profile(3, "work")));
    // A withdrawal of a profile that never had it leaves it alone.
    assert!(!r.apply(&deactivate_as("p", "Projects", &profile(1, "home"), false)));
    // The profile that has it records itself: the old record is replaced, `since` kept
    // only for its own record, the other computer's stays.
    assert!(r.apply(&activate_as("p", "Projects", &work, "/h/Projects", 30)));
    assert_eq!(
        participants(&r),
        [
            (old.id.clone(), Some("work".to_string())),
            (computer(2).id, None)
        ]
    );
    let a = r.folders[0].activation(&work).unwrap();
    assert_eq!((a.user.as_deref(), a.since), (Some("u"), 30));
    assert!(!r.folders[0].has_unclaimed(&work));
    // `sync remove` in a profile that had the folder also drops an old record of its computer.
    r.apply(&activate("p", "Projects", 1, "/h/Projects", 40));
    assert!(r.apply(&deactivate_as("p", "Projects", &work, true)));
    assert_eq!(participants(&r), [(computer(2).id, None)]);
    // An old change waiting in an outbox (no profile) still means that old record.
    r.apply(&activate("p", "Projects", 1, "/h/Projects", 50));
    let queued: Change = serde_json::from_str(
        r#"{"change": "deactivate", "id": "p", "remote": "Docs/Projects", "computer": "00000000000000000000000000000001"}"#,
    )
    .unwrap();
    assert_eq!(queued, deactivate_as("p", "Projects", &old, false));
    assert!(r.apply(&queued));
    assert_eq!(participants(&r), [(computer(2).id, None)]);
}

#[test]
fn the_new_fields_are_optional_and_an_older_reader_keeps_them() {
    let mut r = Registry::default();
    r.apply(&activate_as(
        "p",
        "Projects",
        &profile(1, "work"),
        "/h/P",
        10,
    ));
    r.apply(&activate("q", "Q", 2, "/v/Q", 10));
    let text = serde_json::to_string(&r).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 1, "no new format: the fields are optional");
    let a = &v["folders"][0]["active"][0];
    assert_eq!((&a["profile"], &a["user"]), (&"work".into(), &"u".into()));
    // Records without them (as format 1 has always been) have no such keys.
    let b = &v["folders"][1]["active"][0];
    assert!(b.get("profile").is_none() && b.get("user").is_none(), "{b}");
    assert!(v["folders"][1]["added_by"].get("profile").is_none());
    // A reader of format 1 that knows neither keeps them in an activation.
    #[derive(serde::Deserialize, serde::Serialize)]
    struct OldActivation {
        computer: String,
        host: String,
        local: PathBuf,
        since: i64,
        #[serde(flatten)]
        other: BTreeMap<String, serde_json::Value>,
    }
    let old: OldActivation = serde_json::from_value(a.clone()).unwrap();
    let back: Activation = serde_json::from_value(serde_json::to_value(&old).unwrap()).unwrap();
    assert_eq!(back, r.folders[0].active[0]);
}
