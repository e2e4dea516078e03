//! Two computers' services on one in-memory account: the registry as the commands and the
//! reconciling loop keep it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{Service, ServiceConfig};
use crate::control::protocol::SyncAdd;
use crate::control::{ControlHandler, Request, Response};
use crate::remote::mem::MemRemote;
use crate::remote::Remote;
use crate::sync::account::Account;
use crate::sync::computer::Computer;
use crate::sync::journal::Journal;
use crate::sync::registry::{ComputerRef, Registry, REGISTRY_PATH};
use crate::sync::report::AccountReport;
use crate::sync::trash::Trash;
use crate::sync::{Mode, Schedule};

/// One computer: a sync service with its own journal, trash and computer id (host `hostN`),
/// on an account shared by all (also used by the three-computer model).
pub(super) struct Machine {
    pub(super) svc: Service,
    pub(super) home: PathBuf,
    pub(super) id: String,
    /// The participant of the registry it is.
    pub(super) who: ComputerRef,
}

pub(super) fn machine(dir: &Path, n: u8, remote: Arc<MemRemote>) -> Machine {
    let data = dir.join(format!("home{n}")).join("data");
    machine_in(dir, n, remote, &data, &format!("host{n}"), None)
}

/// Machine `n` (its journal, trash and folders in `homeN`) as profile `profile` of the computer
/// whose data directory is `data` on host `host`: two machines with one `data` are two
/// profiles of one computer (`None`: a daemon that does not tell profiles apart).
pub(super) fn machine_in(
    dir: &Path,
    n: u8,
    remote: Arc<MemRemote>,
    data: &Path,
    host: &str,
    profile: Option<&str>,
) -> Machine {
    let home = dir.join(format!("home{n}"));
    std::fs::create_dir_all(&home).unwrap();
    let journal = Journal::open(&home.join("sync.db")).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg = ServiceConfig::new("t", "", Duration::from_millis(200));
    let remote: Arc<dyn Remote> = remote;
    let svc = Service::start(
        cfg,
        remote.clone(),
        journal,
        Trash::at(home.join("Trash")),
        tx,
    )
    .unwrap();
    let host = host.to_string();
    let mut computer = Computer::load_or_create(data, &host).unwrap();
    if let Some(p) = profile {
        computer = computer.for_profile(p);
    }
    let id = computer.id.clone();
    let who = ComputerRef::from(&computer);
    let account = Account::open(remote, computer, home.join("registry.json")).unwrap();
    svc.attach_account(Arc::new(account), Duration::from_millis(200));
    Machine { svc, home, id, who }
}

async fn done(m: &Machine, r: Request) -> String {
    match m.svc.handle(r).await {
        Response::Done { message } => message,
        other => panic!("{other:?}"),
    }
}

async fn account(m: &Machine) -> AccountReport {
    match m.svc.handle(Request::SyncAccount).await {
        Response::SyncAccount(a) => *a,
        other => panic!("{other:?}"),
    }
}

async fn local_folders(m: &Machine) -> Vec<PathBuf> {
    match m.svc.handle(Request::SyncList).await {
        Response::SyncFolders(f) => f.into_iter().map(|f| f.local).collect(),
        other => panic!("{other:?}"),
    }
}

fn stored(mem: &MemRemote) -> Registry {
    serde_json::from_slice(&mem.file_bytes(REGISTRY_PATH).expect("the registry")).unwrap()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let began = Instant::now();
    while !cond() {
        assert!(began.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_activate_remove_forget_and_reconcile_on_two_computers() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let a = machine(dir.path(), 1, mem.clone());
    let b = machine(dir.path(), 2, mem.clone());
    let docs = a.home.join("Docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("x.txt"), "x").unwrap();
    let add = |local: PathBuf| {
        Request::SyncAdd(SyncAdd {
            local,
            remote: None,
            mode: Mode::Bidirectional,
            schedule: Schedule::Immediate,
            keep_deleted: false,
            area: None,
        })
    };
    let out = done(&a, add(docs.clone())).await;
    assert!(
        out.contains("registered in the account (the other"),
        "{out}"
    );

    // b sees it inactive, activates it into its own folder.
    let seen = account(&b).await;
    assert_eq!(seen.folders.len(), 1);
    assert!(!seen.folders[0].active_here);
    assert_eq!(seen.folders[0].added_by, "host1");
    let here = b.home.join("D");
    let out = done(
        &b,
        Request::SyncActivate {
            name: "docs".into(),
            local: Some(here.clone()),
        },
    )
    .await;
    assert!(out.contains("activated Docs"), "{out}");
    let reg = stored(&mem);
    assert_eq!(reg.folders[0].active.len(), 2);
    assert_eq!(
        reg.folders[0].activation(&b.who).unwrap().local,
        here.as_path()
    );
    wait_for("the file reaches b", || here.join("x.txt").exists()).await;

    // The registry lost (deleted by hand): each computer registers its folder again.
    mem.delete(&crate::remote::RemotePath::new(REGISTRY_PATH).unwrap())
        .await
        .unwrap();
    wait_for("the folder registered again by both", || {
        mem.file_bytes(REGISTRY_PATH).is_some()
            && stored(&mem).folders.first().map_or(0, |e| e.active.len()) == 2
    })
    .await;

    // remove on b (by the folder's name in the account): only b withdrawn.
    let out = done(
        &b,
        Request::SyncRemove {
            folder: "Docs".into(),
        },
    )
    .await;
    assert!(out.contains("keep syncing it"), "{out}");
    let reg = stored(&mem);
    assert_eq!(reg.folders.len(), 1);
    let active: Vec<&str> = reg.folders[0]
        .active
        .iter()
        .map(|x| x.computer.as_str())
        .collect();
    assert_eq!(active, [a.id.as_str()]);

    // b activates it again, then a forgets it: b stops by itself, nothing deleted.
    done(
        &b,
        Request::SyncActivate {
            name: "Docs".into(),
            local: Some(here.clone()),
        },
    )
    .await;
    let out = done(
        &a,
        Request::SyncForget {
            name: "Docs".into(),
        },
    )
    .await;
    assert!(out.contains("host2 stops when it next reads"), "{out}");
    assert!(local_folders(&a).await.is_empty());
    let began = Instant::now();
    while !local_folders(&b).await.is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "b still syncs it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored(&mem).folders.is_empty());
    assert!(docs.join("x.txt").exists() && here.join("x.txt").exists());
    assert!(mem.exists("Docs/x.txt"));
    // Nobody registers it again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(stored(&mem).folders.is_empty());
    a.svc.shutdown().await;
    b.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_set_changes_the_accounts_defaults_for_the_folder() {
    use crate::control::protocol::SyncSet;
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let a = machine(dir.path(), 1, mem.clone());
    let music = a.home.join("Music");
    std::fs::create_dir_all(&music).unwrap();
    done(
        &a,
        Request::SyncAdd(SyncAdd {
            local: music.clone(),
            remote: None,
            mode: Mode::Bidirectional,
            schedule: Schedule::Immediate,
            keep_deleted: false,
            area: None,
        }),
    )
    .await;
    let out = done(
        &a,
        Request::SyncSet(SyncSet {
            folder: music.to_string_lossy().into_owned(),
            mode: Some(Mode::UploadOnly),
            schedule: Some(Schedule::Weekly),
            keep_deleted: None,
            delete_limit_percent: None,
        }),
    )
    .await;
    assert!(
        out.contains("the account's defaults for this folder follow"),
        "{out}"
    );
    wait_for("the registry has the new defaults", || {
        mem.file_bytes(REGISTRY_PATH).is_some()
            && stored(&mem)
                .folders
                .first()
                .is_some_and(|e| (e.mode, e.schedule) == (Mode::UploadOnly, Schedule::Weekly))
    })
    .await;
    // A second computer sees them.
    let b = machine(dir.path(), 2, mem.clone());
    let seen = account(&b).await;
    assert_eq!(seen.folders[0].mode, Mode::UploadOnly);
    assert_eq!(seen.folders[0].schedule, Schedule::Weekly);
    a.svc.shutdown().await;
    b.svc.shutdown().await;
}

fn add_request(local: PathBuf) -> Request {
    Request::SyncAdd(SyncAdd {
        local,
        remote: None,
        mode: Mode::Bidirectional,
        schedule: Schedule::Immediate,
        keep_deleted: false,
        area: None,
    })
}

/// Who is active on folder `name` in the server's registry: (computer id, profile), sorted.
fn active_on(mem: &MemRemote, name: &str) -> Vec<(String, Option<String>)> {
    let reg = stored(mem);
    let e = reg
        .folders
        .iter()
        .find(|e| e.name == name)
        .expect("registered");
    let mut v: Vec<_> = e
        .active
        .iter()
        .map(|a| (a.computer.clone(), a.profile.clone()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_profiles_of_one_account_in_one_home_are_two_participants() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let data = dir.path().join("data");
    let work = machine_in(dir.path(), 1, mem.clone(), &data, "vm", Some("work"));
    let home = machine_in(dir.path(), 2, mem.clone(), &data, "vm", Some("home"));
    assert_eq!(work.id, home.id, "one data directory: one computer");
    let p = work.home.join("Projects");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("x.txt"), "x").unwrap();
    done(&work, add_request(p.clone())).await;
    let w = (work.id.clone(), Some("work".to_string()));
    let h = (work.id.clone(), Some("home".to_string()));
    assert_eq!(active_on(&mem, "Projects"), std::slice::from_ref(&w));

    // The other profile sees it inactive, active on the first profile; its loop (every
    // 200 ms) does not take the first profile's activation for its own.
    let seen = account(&home).await;
    assert!(!seen.folders[0].active_here);
    assert_eq!(seen.shown, "vm (profile home)");
    assert_eq!(seen.folders[0].active[0].shown, "vm (profile work)");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(active_on(&mem, "Projects"), std::slice::from_ref(&w));

    // Activated in the second profile too; removed there: the first keeps syncing.
    let here = home.home.join("P");
    let out = done(
        &home,
        Request::SyncActivate {
            name: "Projects".into(),
            local: Some(here.clone()),
        },
    )
    .await;
    assert!(out.contains("activated Projects"), "{out}");
    assert_eq!(active_on(&mem, "Projects"), [h, w.clone()]);
    wait_for("the file reaches the second profile", || {
        here.join("x.txt").exists()
    })
    .await;
    let out = done(
        &home,
        Request::SyncRemove {
            folder: "Projects".into(),
        },
    )
    .await;
    assert!(out.contains("keep syncing it"), "{out}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(active_on(&mem, "Projects"), [w]);
    assert_eq!(local_folders(&work).await, [p]);
    assert!(local_folders(&home).await.is_empty());
    work.svc.shutdown().await;
    home.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_from_before_profiles_is_taken_over_by_the_profile_that_has_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    let data = dir.path().join("data");
    // A daemon that did not tell profiles apart adds the folder (journal of home1).
    let old = machine_in(dir.path(), 1, mem.clone(), &data, "vm", None);
    let p = old.home.join("Projects");
    std::fs::create_dir_all(&p).unwrap();
    done(&old, add_request(p.clone())).await;
    let id = old.id.clone();
    assert_eq!(active_on(&mem, "Projects"), [(id.clone(), None)]);
    old.svc.shutdown().await;
    drop(old);

    // Upgraded: a profile of the same computer that does not have the folder leaves it alone.
    let other = machine_in(dir.path(), 2, mem.clone(), &data, "vm", Some("home"));
    assert!(!account(&other).await.folders[0].active_here);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(active_on(&mem, "Projects"), [(id.clone(), None)]);
    // The profile whose journal has it takes it over.
    let work = machine_in(dir.path(), 1, mem.clone(), &data, "vm", Some("work"));
    wait_for("the old activation taken over", || {
        active_on(&mem, "Projects") == [(id.clone(), Some("work".to_string()))]
    })
    .await;
    let reg = stored(&mem);
    assert_eq!(reg.folders[0].active[0].local, p);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        active_on(&mem, "Projects"),
        [(id, Some("work".to_string()))],
        "and it stays so"
    );
    work.svc.shutdown().await;
    other.svc.shutdown().await;
}
