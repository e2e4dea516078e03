//! Reference model of the account's sync folders on the real tier: three computers (three
//! homes, each with its own data directory, hence its own computer id, and its own `cloudmount`
//! daemon) on ONE account (one test folder of a real server), driven only by the `cloudmount`
//! commands a user types. proptest draws what the users do, one step at a time:
//!
//! - `Add`: `sync add ~/NAME` on a computer where the folder is not active (a file of its own
//!   in it first): it registers the folder, or, the account having that server folder already,
//!   makes this computer one more where it is active (one entry, never two);
//! - `Activate`: `sync activate NAME` on a computer where the folder is inactive, into the
//!   default place (`~/NAME`: empty, or holding what an earlier activation there left), or with
//!   the folder given and a file of this computer's own put there first (a name the others
//!   write too: the merge of a non-empty folder keeps both versions);
//! - `Remove`: `sync remove ~/NAME` on a computer where it is active;
//! - `Forget`: `sync forget NAME --yes` on any computer;
//! - `Write`: a new content for one of a few names in a folder active on that computer;
//! - `SyncNow`: `sync now --wait` on a computer that syncs a folder (it must end in sync);
//! - `Restart`: a computer's daemon stopped (`cloudmount stop`, or SIGKILL) and started;
//! - `Together`: two adds, activates or removes on two computers at the same moment (two
//!   processes), chosen so that either order gives the same model.
//!
//! Each step drawn is made one that applies where the model then is (the n-th computer and
//! folder where it can be done; one that applies nowhere becomes an add), so every step does
//! something; a sequence written by hand skips a step that does not apply.
//! After each step, by the commands and the daemons' own loops alone, the registry file on the
//! server and every computer's `sync list --json` and `sync list --inactive --json` must come
//! to match a plain model: which folders the account has (each once, under its server folder
//! of the same name), on which computers each is active (with the local folder there), and
//! inactive on the others.
//!
//! At the end every computer syncs (`sync now --wait`, in rounds) and:
//! 1. **Convergence**: every computer where a folder is active holds the server's tree of it.
//! 2. **Nothing lost**, as the in-memory model checks it: every content anyone wrote is still
//!    somewhere — on the server, in a computer's local folder (active or not any more), or in
//!    a computer's trash — under its name or as a conflict copy, unless a user overwrote it
//!    where it was (a write reads what it replaces). Removing and forgetting delete nothing.
//!
//! Runs against Apache mod_dav (Basic) and the embedded server (`cloudmount serve`), three
//! sequences of 18 to 27 steps drawn each, to keep within CI's time (`tests/run.sh -E
//! 'binary(sync_registry_model)'` on the 2-core machine: 48 s on Apache, 34 s on the embedded
//! server, 15 s the hand-written sequence, all three at once; 16 to 28 s a sequence on Apache
//! alone, 6 to 17 s on the embedded server; `CLOUDMOUNT_TEST_REGISTRY_MODEL_CASES` sets how
//! many);
//! a hand-written sequence through every kind of step runs on Apache with Digest. A failure
//! is shrunk (a few minutes at most) and printed: keep it below as a named regression test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cloudmount::sync::registry::{Registry, REGISTRY_PATH};
use common::mount::{local_tree, Dav, Node, Server, Tree};
use common::sync::{local, text, write, SyncHome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};

const COMPUTERS: usize = 3;
const FOLDERS: [&str; 2] = ["Docs", "Pics"];
/// How long the registry and the computers may take to agree with the model after a step
/// (a computer reads the registry every 4 s with the test's 1 s poll interval).
const SETTLE: Duration = Duration::from_secs(30);
/// Final rounds of `sync now --wait` on every computer before convergence must hold.
const FINAL_ROUNDS: usize = 4;

// ---- Steps ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// `sync add ~/NAME`: registers the folder, or (the account has it already: the same
    /// server folder) makes this computer one more where it is active.
    Add {
        c: usize,
        f: usize,
    },
    /// `own`: the name of a file this computer writes into the folder first (then the folder
    /// is given to the command), else the default place.
    Activate {
        c: usize,
        f: usize,
        own: Option<usize>,
    },
    Remove {
        c: usize,
        f: usize,
    },
    Forget {
        c: usize,
        f: usize,
    },
    Write {
        c: usize,
        f: usize,
        name: usize,
    },
    SyncNow {
        c: usize,
    },
    /// The daemon stopped (`cloudmount stop`, or killed with SIGKILL) and started again.
    Restart {
        c: usize,
        kill: bool,
    },
    /// Two steps (add, activate or remove) on two computers at the same moment.
    Together(Box<Op>, Box<Op>),
}

/// A drawn step: its kind and which of the (computer, folder) pairs where it applies (see
/// [`resolve`]).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Add,
    Activate { own: Option<usize> },
    Remove,
    Forget,
    Write { name: usize },
    SyncNow,
    Restart { kill: bool },
    Together(Solo, Solo, usize),
}

/// A step that may run at the same moment as another one on another computer.
#[derive(Debug, Clone, Copy)]
enum Solo {
    Add,
    Activate,
    Remove,
}

impl Solo {
    fn kind(self) -> Kind {
        match self {
            Solo::Add => Kind::Add,
            Solo::Activate => Kind::Activate { own: None },
            Solo::Remove => Kind::Remove,
        }
    }
}

fn draw() -> impl Strategy<Value = (Kind, usize)> {
    let solo = || prop_oneof![Just(Solo::Add), Just(Solo::Activate), Just(Solo::Remove)];
    let kind = prop_oneof![
        2 => Just(Kind::Add),
        3 => proptest::option::of(0..3usize).prop_map(|own| Kind::Activate { own }),
        1 => Just(Kind::Remove),
        1 => Just(Kind::Forget),
        4 => (0..3usize).prop_map(|name| Kind::Write { name }),
        2 => Just(Kind::SyncNow),
        1 => any::<bool>().prop_map(|kill| Kind::Restart { kill }),
        2 => (solo(), solo(), 0..64usize).prop_map(|(a, b, pick)| Kind::Together(a, b, pick)),
    ];
    (kind, 0..64usize)
}

fn active(m: &Model, c: usize, f: usize) -> bool {
    m.get(&f).is_some_and(|a| a.contains(&c))
}

/// The (computer, folder) pairs where a step of `kind` applies now (the folder is 0 for a
/// step of a whole computer).
fn fits(model: &Model, kind: Kind) -> Vec<(usize, usize)> {
    let pairs = (0..COMPUTERS).flat_map(|c| (0..FOLDERS.len()).map(move |f| (c, f)));
    let syncs = |c: usize| model.values().any(|a| a.contains(&c));
    match kind {
        Kind::Add => pairs.filter(|&(c, f)| !active(model, c, f)).collect(),
        Kind::Activate { .. } => pairs
            .filter(|&(c, f)| model.contains_key(&f) && !active(model, c, f))
            .collect(),
        Kind::Remove | Kind::Write { .. } => pairs.filter(|&(c, f)| active(model, c, f)).collect(),
        Kind::Forget => pairs.filter(|&(_, f)| model.contains_key(&f)).collect(),
        Kind::SyncNow => (0..COMPUTERS)
            .filter(|&c| syncs(c))
            .map(|c| (c, 0))
            .collect(),
        Kind::Restart { .. } => (0..COMPUTERS).map(|c| (c, 0)).collect(),
        Kind::Together(..) => Vec::new(),
    }
}

fn make(kind: Kind, (c, f): (usize, usize)) -> Op {
    match kind {
        Kind::Add => Op::Add { c, f },
        Kind::Activate { own } => Op::Activate { c, f, own },
        Kind::Remove => Op::Remove { c, f },
        Kind::Forget => Op::Forget { c, f },
        Kind::Write { name } => Op::Write { c, f, name },
        Kind::SyncNow => Op::SyncNow { c },
        Kind::Restart { kill } => Op::Restart { c, kill },
        Kind::Together(..) => unreachable!("made by resolve"),
    }
}

/// The steps drawn, each made one that applies where the model then is (the `pick`-th of the
/// pairs where it applies; one that applies nowhere becomes an add, or is left out). Two
/// steps together are on two computers, each applies where the model is before both, and
/// they give the same model in either order.
fn resolve(draws: &[(Kind, usize)]) -> Vec<Op> {
    let mut model = Model::new();
    let mut ops = Vec::new();
    for &(kind, pick) in draws {
        let op = match kind {
            Kind::Together(a, b, pick_b) => {
                let first = fits(&model, a.kind());
                let Some(&at) = first.get(pick % first.len().max(1)) else {
                    continue;
                };
                let a = make(a.kind(), at);
                let mut after = model.clone();
                apply(&mut after, &a);
                let second: Vec<(usize, usize)> = fits(&model, b.kind())
                    .into_iter()
                    .filter(|&(c, _)| c != at.0)
                    .filter(|&p| apply(&mut after.clone(), &make(b.kind(), p)))
                    .collect();
                match second.get(pick_b % second.len().max(1)) {
                    Some(&p) => Op::Together(Box::new(a), Box::new(make(b.kind(), p))),
                    None => a,
                }
            }
            _ => {
                let mut kind = kind;
                let mut here = fits(&model, kind);
                if here.is_empty() {
                    kind = Kind::Add;
                    here = fits(&model, kind);
                }
                if here.is_empty() {
                    continue;
                }
                make(kind, here[pick % here.len()])
            }
        };
        apply(&mut model, &op);
        ops.push(op);
    }
    ops
}

/// What `op` does to the model; whether it applies there.
fn apply(model: &mut Model, op: &Op) -> bool {
    match op {
        &Op::Add { c, f } => model.entry(f).or_default().insert(c),
        &Op::Activate { c, f, .. } => model.get_mut(&f).is_some_and(|a| a.insert(c)),
        &Op::Remove { c, f } => model.get_mut(&f).is_some_and(|a| a.remove(&c)),
        &Op::Forget { f, .. } => model.remove(&f).is_some(),
        &Op::Write { c, f, .. } => active(model, c, f),
        &Op::SyncNow { c } => model.values().any(|a| a.contains(&c)),
        &Op::Restart { c, .. } => c < COMPUTERS,
        Op::Together(a, b) => {
            let mut next = model.clone();
            if !(apply(&mut next, a) && apply(&mut next, b)) {
                return false;
            }
            *model = next;
            true
        }
    }
}

fn file_name(name: usize) -> String {
    format!("w{name}.txt")
}

// ---- The model and what is seen -------------------------------------------------------------

/// For each registered folder (index in [`FOLDERS`]), the computers where it is active.
type Model = BTreeMap<usize, BTreeSet<usize>>;

/// What the account and the computers say, in the model's terms.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// The registry's entries, sorted: (name, server folder, computer → local folder). An
    /// entry twice would show twice.
    registry: Vec<(String, String, BTreeMap<usize, PathBuf>)>,
    /// Per computer: the local folders `sync list --json` shows.
    synced: Vec<BTreeSet<PathBuf>>,
    /// Per computer: the names `sync list --inactive --json` shows.
    inactive: Vec<BTreeSet<String>>,
}

/// A content someone wrote: where, and its sha256 (what the trees give).
#[derive(Debug, Clone)]
struct Version {
    f: usize,
    name: String,
    sha: String,
    text: String,
}

/// Three computers of one account, their daemons running.
struct World {
    dav: Dav,
    homes: Vec<SyncHome>,
    /// Each computer's id, as the registry names it.
    ids: Vec<String>,
}

impl World {
    fn new(server: &Server) -> World {
        let dav = Dav::fresh(server, "regmodel");
        let homes: Vec<SyncHome> = (0..COMPUTERS)
            .map(|_| {
                let mut h = SyncHome::new(server, &dav.url);
                h.start();
                h
            })
            .collect();
        let ids: Vec<String> = homes.iter().map(|h| h.account().computer).collect();
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            COMPUTERS,
            "three homes, three computers: {ids:?}"
        );
        World { dav, homes, ids }
    }

    /// Where computer `c` syncs folder `f` (the same place each time: `sync activate`'s
    /// default, `~/NAME`).
    fn local_of(&self, c: usize, f: usize) -> PathBuf {
        self.homes[c].dir(FOLDERS[f])
    }

    fn registry(&self) -> Option<Registry> {
        self.dav.stat(REGISTRY_PATH)?;
        let bytes = self.dav.get(REGISTRY_PATH);
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{REGISTRY_PATH}: {e}: {}", String::from_utf8_lossy(&bytes))
        }))
    }

    fn seen(&self) -> Seen {
        let mut registry: Vec<(String, String, BTreeMap<usize, PathBuf>)> = self
            .registry()
            .map(|reg| {
                reg.folders
                    .iter()
                    .map(|e| {
                        let active = e
                            .active
                            .iter()
                            .map(|a| {
                                let c = self
                                    .ids
                                    .iter()
                                    .position(|id| *id == a.computer)
                                    .unwrap_or_else(|| {
                                        panic!("the registry names an unknown computer: {reg:?}")
                                    });
                                (c, a.local.clone())
                            })
                            .collect();
                        (e.name.clone(), e.remote.clone(), active)
                    })
                    .collect()
            })
            .unwrap_or_default();
        registry.sort();
        let synced = self
            .homes
            .iter()
            .map(|h| h.list().into_iter().map(|f| f.local).collect())
            .collect();
        let inactive = self
            .homes
            .iter()
            .map(|h| {
                h.account()
                    .folders
                    .into_iter()
                    .filter(|f| !f.active_here)
                    .map(|f| f.name)
                    .collect()
            })
            .collect();
        Seen {
            registry,
            synced,
            inactive,
        }
    }

    fn want(&self, model: &Model) -> Seen {
        let registry = model
            .iter()
            .map(|(&f, active)| {
                let on = active.iter().map(|&c| (c, self.local_of(c, f))).collect();
                (FOLDERS[f].to_string(), FOLDERS[f].to_string(), on)
            })
            .collect();
        let synced = (0..COMPUTERS)
            .map(|c| {
                model
                    .iter()
                    .filter(|(_, active)| active.contains(&c))
                    .map(|(&f, _)| self.local_of(c, f))
                    .collect()
            })
            .collect();
        let inactive = (0..COMPUTERS)
            .map(|c| {
                model
                    .iter()
                    .filter(|(_, active)| !active.contains(&c))
                    .map(|(&f, _)| FOLDERS[f].to_string())
                    .collect()
            })
            .collect();
        Seen {
            registry,
            synced,
            inactive,
        }
    }

    /// Waits until the account and every computer agree with `model`.
    fn settle(&self, model: &Model, step: &str) {
        let want = self.want(model);
        let began = Instant::now();
        loop {
            let seen = self.seen();
            if seen == want {
                return;
            }
            assert!(
                began.elapsed() < SETTLE,
                "after {step}, not so within {SETTLE:?}:\n  seen  {seen:?}\n  model {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's tree of folder `f` (empty when it does not exist yet).
    fn server_tree(&self, f: usize) -> Tree {
        if self.dav.stat(FOLDERS[f]).is_none() {
            return Tree::new();
        }
        self.dav.tree_at(FOLDERS[f])
    }
}

/// `content`'s sha256, as the trees give it.
fn sha(content: &[u8]) -> String {
    common::sha256(content)
}

/// The sha256 of every file of `t`.
fn contents(t: &Tree) -> impl Iterator<Item = &String> {
    t.values().filter_map(|n| match n {
        Node::File { sha256, .. } => Some(sha256),
        Node::Dir => None,
    })
}

fn tree_if_there(dir: &Path) -> Tree {
    if dir.is_dir() {
        local_tree(dir)
    } else {
        Tree::new()
    }
}

// ---- One sequence ---------------------------------------------------------------------------

/// What a sequence did, for the measurements printed.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    steps: usize,
    registry_steps: usize,
    writes: usize,
    together: usize,
    restarts: usize,
}

/// Writes `content` to `path` as a user does: the version there before (if any) is the user's
/// to destroy, so it is no longer owed.
fn user_write(path: &Path, f: usize, content: String, written: &mut Vec<Version>) {
    if let Ok(before) = std::fs::read(path) {
        let gone = sha(&before);
        written.retain(|v| v.sha != gone);
    }
    write(path, content.as_bytes());
    written.push(Version {
        f,
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        sha: sha(content.as_bytes()),
        text: content,
    });
}

/// A command a step runs on one computer, and what its output must say.
struct Command {
    c: usize,
    args: Vec<String>,
    says: String,
}

/// Does what a step does before its command (the files a user writes) and gives the command;
/// `None` for a step that is a user's write only.
fn prepare(w: &World, op: &Op, i: usize, written: &mut Vec<Version>) -> Option<Command> {
    let cmd = |c: usize, args: &[&str], says: &str| Command {
        c,
        args: args.iter().map(|a| a.to_string()).collect(),
        says: says.to_string(),
    };
    match *op {
        Op::Add { c, f } => {
            let dir = w.local_of(c, f);
            let content = format!("{} first from computer {c} at step {i}\n", FOLDERS[f]);
            user_write(&dir.join(format!("first{c}-{i}.txt")), f, content, written);
            Some(cmd(
                c,
                &["sync", "add", dir.to_str().unwrap()],
                "registered in the account",
            ))
        }
        Op::Activate { c, f, own } => {
            let says = format!("activated {}", FOLDERS[f]);
            Some(match own {
                Some(name) => {
                    let dir = w.local_of(c, f);
                    let content = format!("computer {c}'s own {} at step {i}\n", file_name(name));
                    user_write(&dir.join(file_name(name)), f, content, written);
                    cmd(
                        c,
                        &["sync", "activate", FOLDERS[f], dir.to_str().unwrap()],
                        &says,
                    )
                }
                None => cmd(c, &["sync", "activate", FOLDERS[f]], &says),
            })
        }
        Op::Remove { c, f } => {
            let dir = w.local_of(c, f);
            Some(cmd(
                c,
                &["sync", "remove", dir.to_str().unwrap()],
                "the account's list says so",
            ))
        }
        Op::Forget { c, f } => Some(cmd(
            c,
            &["sync", "forget", FOLDERS[f], "--yes"],
            "no file was deleted",
        )),
        Op::Write { c, f, name } => {
            let content = format!("written by computer {c} at step {i}\n");
            let path = w.local_of(c, f).join(file_name(name));
            user_write(&path, f, content, written);
            None
        }
        Op::SyncNow { c } => Some(cmd(c, &["sync", "now", "--wait"], "up to date")),
        Op::Restart { .. } | Op::Together(..) => unreachable!("not one command"),
    }
}

/// Runs `cmds` at the same moment and checks that each succeeds saying what it must.
fn run_together(w: &World, cmds: &[Command], step: &str) {
    let children: Vec<std::process::Child> = cmds
        .iter()
        .map(|cmd| {
            w.homes[cmd.c]
                .command()
                .args(&cmd.args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn cloudmount")
        })
        .collect();
    for (cmd, child) in cmds.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&cmd.says),
            "{step}: computer {}: cloudmount {} should say {:?}: {}\ndaemon log:\n{}",
            cmd.c,
            cmd.args.join(" "),
            cmd.says,
            text(&out),
            w.homes[cmd.c].log()
        );
    }
}

fn check(server: &Server, ops: &[Op]) -> Tally {
    let mut w = World::new(server);
    let mut model = Model::new();
    let mut written: Vec<Version> = Vec::new();
    let mut tally = Tally::default();
    for (i, op) in ops.iter().enumerate() {
        let mut next = model.clone();
        if !apply(&mut next, op) {
            continue;
        }
        let step = format!("step {i} {op:?}");
        match op {
            &Op::Restart { c, kill } => {
                if kill {
                    w.homes[c].kill9();
                } else {
                    w.homes[c].stop();
                }
                w.homes[c].start();
                tally.restarts += 1;
            }
            Op::Together(a, b) => {
                let cmds: Vec<Command> = [a, b]
                    .iter()
                    .filter_map(|op| prepare(&w, op, i, &mut written))
                    .collect();
                run_together(&w, &cmds, &step);
                tally.registry_steps += 2;
                tally.together += 1;
            }
            op => {
                match op {
                    Op::Write { .. } => tally.writes += 1,
                    Op::SyncNow { .. } => {}
                    _ => tally.registry_steps += 1,
                }
                if let Some(cmd) = prepare(&w, op, i, &mut written) {
                    run_together(&w, &[cmd], &step);
                }
            }
        }
        model = next;
        tally.steps += 1;
        w.settle(&model, &step);
    }
    converge(&w, &model);
    nothing_lost(&w, &written);
    tally
}

/// Every computer syncs, in rounds, until every computer where a folder is active holds the
/// server's tree of it.
fn converge(w: &World, model: &Model) {
    let mut apart = Vec::new();
    for round in 0..FINAL_ROUNDS {
        for (c, h) in w.homes.iter().enumerate() {
            if model.values().any(|a| a.contains(&c)) {
                h.ok(&["sync", "now", "--wait"]);
            }
        }
        apart.clear();
        for (&f, active) in model {
            let server = w.server_tree(f);
            for &c in active {
                let here = local(&w.local_of(c, f));
                if here != server {
                    apart.push(format!(
                        "{} on computer {c}: {:?}\n    server: {:?}",
                        FOLDERS[f],
                        here.keys().collect::<Vec<_>>(),
                        server.keys().collect::<Vec<_>>()
                    ));
                }
            }
        }
        if apart.is_empty() {
            if round > 1 {
                eprintln!("converged after {} rounds", round + 1);
            }
            return;
        }
    }
    panic!("not converged after {FINAL_ROUNDS} rounds: {apart:#?}");
}

/// Every version written and not destroyed is somewhere: the server, a computer's folder
/// (whatever its state now) or a computer's trash.
fn nothing_lost(w: &World, written: &[Version]) {
    let mut everywhere: BTreeSet<String> = BTreeSet::new();
    for f in 0..FOLDERS.len() {
        everywhere.extend(contents(&w.server_tree(f)).cloned());
        for c in 0..COMPUTERS {
            everywhere.extend(contents(&tree_if_there(&w.local_of(c, f))).cloned());
        }
    }
    for h in &w.homes {
        everywhere.extend(contents(&tree_if_there(&h.dir(".local/share/Trash/files"))).cloned());
    }
    for v in written {
        assert!(
            everywhere.contains(&v.sha),
            "lost: {}/{} {:?}",
            FOLDERS[v.f],
            v.name,
            v.text
        );
    }
}

// ---- The runs -------------------------------------------------------------------------------

fn run_model(server: Server, default_cases: u32) {
    let cases = std::env::var("CLOUDMOUNT_TEST_REGISTRY_MODEL_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("CLOUDMOUNT_TEST_REGISTRY_MODEL_CASES is a number")
        })
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        max_shrink_time: 300_000,
        failure_persistence: None,
        ..Config::default()
    });
    let began = Instant::now();
    let total = std::sync::Mutex::new(Vec::<Tally>::new());
    let result = runner.run(&proptest::collection::vec(draw(), 18..28), |draws| {
        let t0 = Instant::now();
        let t = check(&server, &resolve(&draws));
        eprintln!("{}: {t:?} in {:?}", server.name, t0.elapsed());
        total.lock().unwrap().push(t);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, draws)) => {
            let ops = resolve(&draws);
            panic!("minimal failing sequence (keep it below as a regression): {ops:?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
    let total = total.into_inner().unwrap();
    eprintln!(
        "{}: {cases} sequences in {:?}: {total:?}",
        server.name,
        began.elapsed()
    );
    // The sequences must do real work, not mostly skip.
    let steps: usize = total.iter().map(|t| t.steps).sum();
    let registry: usize = total.iter().map(|t| t.registry_steps).sum();
    assert!(
        steps >= 10 * cases as usize && registry >= 4 * cases as usize,
        "too few steps done: {total:?}"
    );
}

#[test]
fn three_computers_agree_with_the_model_and_lose_nothing_on_apache() {
    run_model(Server::apache_basic(), 3);
}

#[test]
fn three_computers_agree_with_the_model_and_lose_nothing_on_the_embedded_server() {
    let s = common::embedded_server(None);
    run_model(Server::embedded(&s), 3);
}

/// A hand-written sequence through every kind of step: add on 0, activate on 1 (default place),
/// a write and a sync there, 1 killed and restarted, activate on 2 (a non-empty folder whose
/// file collides with the one 1 wrote), 0 and 2 adding the same folder at the same moment, 1
/// and 2 removing a folder each at the same moment, 0 stopped and restarted, forget on 2 while
/// 0 still syncs, add again on 1 (into its old, non-empty folder and the server folder that
/// still holds everything), activate on 0 again with a file of its own.
#[test]
fn three_computers_through_every_step_on_apache_digest() {
    use Op::*;
    let ops = [
        Add { c: 0, f: 0 },
        Activate {
            c: 1,
            f: 0,
            own: None,
        },
        Write {
            c: 1,
            f: 0,
            name: 0,
        },
        SyncNow { c: 1 },
        Restart { c: 1, kill: true },
        Activate {
            c: 2,
            f: 0,
            own: Some(0),
        },
        Together(Box::new(Add { c: 2, f: 1 }), Box::new(Add { c: 0, f: 1 })),
        Write {
            c: 0,
            f: 0,
            name: 1,
        },
        SyncNow { c: 2 },
        Together(
            Box::new(Remove { c: 1, f: 0 }),
            Box::new(Remove { c: 2, f: 1 }),
        ),
        Restart { c: 0, kill: false },
        Forget { c: 2, f: 0 },
        Add { c: 1, f: 0 },
        Write {
            c: 0,
            f: 1,
            name: 2,
        },
        Activate {
            c: 0,
            f: 0,
            own: Some(1),
        },
    ];
    let t = check(&Server::apache_digest(), &ops);
    assert_eq!(t.steps, ops.len(), "every step applies: {t:?}");
}
