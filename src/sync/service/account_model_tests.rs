//! Reference model of sync folders on three computers of one account (in memory): proptest
//! draws a sequence of what users do on each computer — add a folder, activate one added
//! elsewhere, remove it here, forget it everywhere, write a file into a folder synced here —
//! and after each step the account's registry and every computer's list of folders must come to
//! match a plain model (which folders exist, and which computers sync each), by the commands
//! and the reconciling loop alone. At the end every computer that syncs a folder holds the
//! server's tree of it, and no file anyone wrote is lost (removing and forgetting delete
//! nothing). Shrunk failures are kept below as named regressions.
//!
//! Computers 1 and 2 are two profiles of one data directory (one computer id, one host): each
//! must act as a computer of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::tests::{machine, machine_in, Machine};
use crate::control::protocol::SyncAdd;
use crate::control::{ControlHandler, Request, Response};
use crate::remote::mem::MemRemote;
use crate::sync::registry::{Registry, REGISTRY_PATH};
use crate::sync::{Mode, Schedule};

const COMPUTERS: usize = 3;
const FOLDERS: [&str; 2] = ["Docs", "Pics"];

#[derive(Debug, Clone)]
enum Op {
    Add { c: usize, f: usize },
    Activate { c: usize, f: usize },
    Remove { c: usize, f: usize },
    Forget { c: usize, f: usize },
    Write { c: usize, f: usize, name: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..COMPUTERS;
    let f = 0..FOLDERS.len();
    prop_oneof![
        (c.clone(), f.clone()).prop_map(|(c, f)| Op::Add { c, f }),
        (c.clone(), f.clone()).prop_map(|(c, f)| Op::Activate { c, f }),
        (c.clone(), f.clone()).prop_map(|(c, f)| Op::Remove { c, f }),
        (c.clone(), f.clone()).prop_map(|(c, f)| Op::Forget { c, f }),
        (c, f, 0..3usize).prop_map(|(c, f, name)| Op::Write { c, f, name }),
    ]
}

/// Where computer `m` syncs folder `f` (the same place each time it adds or activates it).
fn local_of(m: &Machine, f: usize) -> PathBuf {
    m.home.join(FOLDERS[f])
}

/// The model: for each registered folder, the computers that sync it.
type Model = BTreeMap<&'static str, BTreeSet<usize>>;

async fn ask(m: &Machine, r: Request) -> Response {
    m.svc.handle(r).await
}

async fn folders_here(m: &Machine) -> BTreeSet<PathBuf> {
    match ask(m, Request::SyncList).await {
        Response::SyncFolders(f) => f.into_iter().map(|f| f.local).collect(),
        other => panic!("{other:?}"),
    }
}

/// What the registry on the server says: folder name → the machines where it is active.
fn registry_view(mem: &MemRemote, ms: &[Machine]) -> BTreeMap<String, BTreeSet<usize>> {
    let Some(bytes) = mem.file_bytes(REGISTRY_PATH) else {
        return BTreeMap::new();
    };
    let reg: Registry = serde_json::from_slice(&bytes).expect("the registry parses");
    reg.folders
        .iter()
        .map(|e| {
            let active = e
                .active
                .iter()
                .map(|a| {
                    ms.iter()
                        .position(|m| a.of(&m.who))
                        .unwrap_or_else(|| panic!("an unknown participant: {a:?}"))
                })
                .collect();
            (e.name.clone(), active)
        })
        .collect()
}

/// Waits until the registry and every computer's folders agree with `model`.
async fn settle(mem: &MemRemote, ms: &[Machine], model: &Model, step: &str) {
    let want_reg: BTreeMap<String, BTreeSet<usize>> = model
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let began = Instant::now();
    loop {
        let reg = registry_view(mem, ms);
        let mut here = Vec::new();
        for m in ms {
            here.push(folders_here(m).await);
        }
        let want_here: Vec<BTreeSet<PathBuf>> = (0..ms.len())
            .map(|c| {
                (0..FOLDERS.len())
                    .filter(|&f| model.get(FOLDERS[f]).is_some_and(|s| s.contains(&c)))
                    .map(|f| local_of(&ms[c], f))
                    .collect()
            })
            .collect();
        if reg == want_reg && here == want_here {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "after {step}: the registry says {reg:?}, the model {want_reg:?}; \
             computers sync {here:?}, the model says {want_here:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A folder's files (names and contents), the sync's marker aside.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".cloudmount") || !e.path().is_file() {
            continue;
        }
        out.insert(name, std::fs::read(e.path()).unwrap());
    }
    out
}

fn server_tree(mem: &MemRemote, f: usize) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{}/", FOLDERS[f]);
    mem.paths()
        .into_iter()
        .filter_map(|p| {
            let name = p.strip_prefix(&prefix)?.to_string();
            if name.contains('/') || name.starts_with(".cloudmount") {
                return None;
            }
            Some((name, mem.file_bytes(&p)?))
        })
        .collect()
}

fn run(ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check(ops));
}

async fn check(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    // 0 alone; 1 and 2 two profiles of one computer.
    let shared = dir.path().join("home1").join("data");
    let ms: Vec<Machine> = (0..COMPUTERS)
        .map(|n| match n {
            0 => machine(dir.path(), 0, mem.clone()),
            n => machine_in(
                dir.path(),
                n as u8,
                mem.clone(),
                &shared,
                "host1",
                Some(&format!("p{n}")),
            ),
        })
        .collect();
    assert_eq!(ms[1].id, ms[2].id);
    let mut model = Model::new();
    // Every content written: (folder, name, content).
    let mut written: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let step = format!("step {i} {op:?}");
        match *op {
            Op::Add { c, f } => {
                if model.contains_key(FOLDERS[f]) {
                    continue;
                }
                let local = local_of(&ms[c], f);
                std::fs::create_dir_all(&local).unwrap();
                let content = format!("{} first from {c} at {i}\n", FOLDERS[f]).into_bytes();
                let name = format!("first{c}-{i}.txt");
                std::fs::write(local.join(&name), &content).unwrap();
                written.push((f, name, content));
                let r = ask(
                    &ms[c],
                    Request::SyncAdd(SyncAdd {
                        local,
                        remote: None,
                        mode: Mode::Bidirectional,
                        schedule: Schedule::Immediate,
                        keep_deleted: false,
                        area: None,
                    }),
                )
                .await;
                assert!(matches!(r, Response::Done { .. }), "{step}: {r:?}");
                model.insert(FOLDERS[f], BTreeSet::from([c]));
            }
            Op::Activate { c, f } => {
                let Some(active) = model.get_mut(FOLDERS[f]) else {
                    continue;
                };
                if active.contains(&c) {
                    continue;
                }
                let r = ask(
                    &ms[c],
                    Request::SyncActivate {
                        name: FOLDERS[f].into(),
                        local: Some(local_of(&ms[c], f)),
                    },
                )
                .await;
                assert!(matches!(r, Response::Done { .. }), "{step}: {r:?}");
                active.insert(c);
            }
            Op::Remove { c, f } => {
                let Some(active) = model.get_mut(FOLDERS[f]) else {
                    continue;
                };
                if !active.remove(&c) {
                    continue;
                }
                let folder = local_of(&ms[c], f).to_string_lossy().into_owned();
                let r = ask(&ms[c], Request::SyncRemove { folder }).await;
                assert!(matches!(r, Response::Done { .. }), "{step}: {r:?}");
            }
            Op::Forget { c, f } => {
                if model.remove(FOLDERS[f]).is_none() {
                    continue;
                }
                let r = ask(
                    &ms[c],
                    Request::SyncForget {
                        name: FOLDERS[f].into(),
                    },
                )
                .await;
                assert!(matches!(r, Response::Done { .. }), "{step}: {r:?}");
            }
            Op::Write { c, f, name } => {
                if !model.get(FOLDERS[f]).is_some_and(|s| s.contains(&c)) {
                    continue;
                }
                let name = format!("w{name}.txt");
                let content = format!("written by {c} at step {i}\n").into_bytes();
                let path = local_of(&ms[c], f).join(&name);
                // The version there now (if any) is the user's to destroy: no longer owed.
                if let Ok(before) = std::fs::read(&path) {
                    written.retain(|(_, _, v)| *v != before);
                }
                std::fs::write(&path, &content).unwrap();
                written.push((f, name, content));
            }
        }
        settle(&mem, &ms, &model, &step).await;
    }
    // Every computer that syncs a folder ends with the server's tree of it.
    let began = Instant::now();
    loop {
        let mut apart = Vec::new();
        for (name, active) in &model {
            let f = FOLDERS.iter().position(|x| x == name).unwrap();
            let server = server_tree(&mem, f);
            for &c in active {
                let here = tree(&local_of(&ms[c], f));
                if here != server {
                    apart.push(format!("{name} on {c}: {here:?} vs server {server:?}"));
                }
            }
        }
        if apart.is_empty() {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "not converged: {apart:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing anyone wrote is lost: each content is somewhere (a computer's folder, whatever
    // its state now, the server, or a computer's trash), unless a user overwrote it where it
    // was (a write read what it replaced).
    let mut everywhere: Vec<Vec<u8>> = Vec::new();
    for f in 0..FOLDERS.len() {
        everywhere.extend(server_tree(&mem, f).into_values());
        for m in &ms {
            everywhere.extend(tree(&local_of(m, f)).into_values());
        }
    }
    for m in &ms {
        let trash = m.home.join("Trash").join("files");
        everywhere.extend(tree(&trash).into_values());
    }
    for (f, name, content) in &written {
        assert!(
            everywhere.iter().any(|c| c == content),
            "lost: {}/{name} {:?}",
            FOLDERS[*f],
            String::from_utf8_lossy(content)
        );
    }
    for m in &ms {
        m.svc.shutdown().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, .. ProptestConfig::default() })]
    #[test]
    fn three_computers_activating_and_removing_folders_agree_and_lose_nothing(
        ops in proptest::collection::vec(op(), 1..16)
    ) {
        run(&ops);
    }
}

/// A hand-written sequence through every kind of step: add on 0, activate on 1 and 2, writes,
/// remove on 1, forget on 2 while 0 still syncs, add again on 1.
#[test]
fn three_computers_through_every_step() {
    run(&[
        Op::Add { c: 0, f: 0 },
        Op::Activate { c: 1, f: 0 },
        Op::Activate { c: 2, f: 0 },
        Op::Write {
            c: 1,
            f: 0,
            name: 0,
        },
        Op::Add { c: 2, f: 1 },
        Op::Write {
            c: 0,
            f: 0,
            name: 1,
        },
        Op::Remove { c: 1, f: 0 },
        Op::Activate { c: 0, f: 1 },
        Op::Forget { c: 2, f: 0 },
        Op::Add { c: 1, f: 0 },
        Op::Write {
            c: 0,
            f: 1,
            name: 2,
        },
    ]);
}
