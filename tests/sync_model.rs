//! Reference-model test of whole sync: two computers, A and B (each a local folder, its own
//! journal file, its own trash and device name), sync the same server folder bidirectionally
//! while "another client" edits the server directly. proptest draws a sequence of operations:
//!
//! - on A's or B's local folder: write a file (whole new content), append to a file, remove a
//!   file or a directory (`rm -rf`), rename a file or a directory (`mv`, onto an existing file
//!   too), `mkdir -p`;
//! - on the server, through the remote: put (new content or appended), delete (a directory with
//!   what is below it), mkdir;
//! - `Sync(A|B)`: one [`engine::run`] with deletes confirmed (the mass-delete guard is the
//!   plan's business, not this test's); it must end `Synced`;
//! - `Crash(A|B, k, lost)`: the same run, dropped (as by `kill -9`) once it makes its
//!   `k+1`-th server call; with `lost`, that call reaches the server and only its answer is
//!   lost (the server did it, the client never learns).
//!
//! Names come from a small set (`a.txt`, `d`, `d/x.txt`, `d/e/z.txt`, …) so that edits collide,
//! files and directories swap kinds, and renames land on existing names. An operation that is
//! impossible on its side (writing below a file, renaming a missing name, …) does nothing.
//!
//! Every content a user writes is a new *version*, identifiable: a fresh write is `v17\n`, an
//! append adds `v18\n` to what was there, so every content is unique. Every local write is given
//! its own modification time (a model clock, one second per write): the test checks the sync's
//! logic, not the coarse timestamps of the filesystem (two same-size writes within one kernel
//! tick are indistinguishable to any mtime-based sync; a documented limit, not checked here).
//!
//! After the operations, a final round syncs A, B, A, B… until a round changes nothing, and:
//!
//! 1. **Convergence**: A's tree, the server's tree and B's tree are equal (names, kinds,
//!    contents; the root's `.cloudmount-sync` marker aside). No temporary file is left locally
//!    (`.cloudmount-tmp-*`). On the server, a run cut after it sent an upload's temporary file
//!    (`.cloudmount-upload-sync-<folder>-*.part`) and before it moved it in place leaves that
//!    file behind until that computer's next run removes it (listings skip it): after the final
//!    round none may be left.
//! 2. **Nothing lost** (the oracle): every version a user wrote and did not destroy is still
//!    present — under some name of the converged tree (a conflict copy counts) or in A's or B's
//!    trash. A user *destroys* a version by overwriting it (write, append, a rename onto it) or
//!    deleting it (a file, or a directory it is below), on a side (A, B or the server) where it
//!    really was at that moment — the test reads the side before every such operation. So a
//!    version that only A had synced and that the server's client then overwrote may be gone;
//!    a version A wrote and never synced, that the server's client "overwrote" at the same name,
//!    may not (A's version was never on the server: that is a conflict, both kept). The check is
//!    per version, not per copy: a version destroyed at one place may vanish from every place
//!    (lenient when a version had been copied under two names).
//! 3. **No conflict copy of a conflict copy**: no name carries the `(conflicted copy` tag twice.
//!
//! Two runs: against the in-memory fake server (many cases), and against Apache mod_dav from
//! `tests/run.sh` (few cases, to keep its time small). Shrunk failures are kept below as named
//! regression tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use cloudmount::remote::faulty::{FaultyRemote, Op as FaultOp};
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::{
    ByteRange, ETag, Entry, Listing, PutBody, PutCondition, PutOutcome, Quota, ReadResponse,
    Remote, RemotePath, RemoteResult,
};
use cloudmount::sync::apply::Progress;
use cloudmount::sync::engine::{self, Env, Outcome};
use cloudmount::sync::journal::Journal;
use cloudmount::sync::trash::Trash;
use cloudmount::sync::{FolderId, FolderSpec, Mode, Schedule};
use common::mount::{Dav, Server};
use proptest::prelude::*;

// ---- Operations -----------------------------------------------------------------------------

/// One of the two computers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    A,
    B,
}

use Pc::{A, B};

/// One step of a sequence. Paths are relative to the synced folder.
#[derive(Debug, Clone)]
enum Op {
    /// Writes a new version as the whole content (creating parent directories).
    Write(Pc, &'static str),
    /// Appends a new version to an existing file.
    Append(Pc, &'static str),
    /// Removes a file, or a directory with everything below it.
    Remove(Pc, &'static str),
    /// `mv from to` (onto an existing file or empty directory too).
    Rename(Pc, &'static str, &'static str),
    /// `mkdir -p`.
    Mkdir(Pc, &'static str),
    /// Another client puts a new version (creating parent collections).
    ServerPut(&'static str),
    /// Another client appends a new version to an existing file.
    ServerAppend(&'static str),
    /// Another client deletes a file or a collection.
    ServerDelete(&'static str),
    /// Another client makes a collection (and its parents).
    ServerMkdir(&'static str),
    Sync(Pc),
    /// A sync killed at its `k+1`-th server call; with `lost`, that call is made and only its
    /// answer is lost.
    Crash(Pc, u8, bool),
}

use Op::*;

/// The names operations use: few, so that they collide.
const NAMES: [&str; 9] = [
    "a.txt",
    "b.txt",
    "d",
    "e",
    "d/x.txt",
    "d/y.txt",
    "d/e",
    "e/x.txt",
    "d/e/z.txt",
];

fn name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&NAMES[..])
}

fn pc() -> impl Strategy<Value = Pc> {
    prop_oneof![Just(A), Just(B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (pc(), name()).prop_map(|(c, p)| Write(c, p)),
        2 => (pc(), name()).prop_map(|(c, p)| Append(c, p)),
        2 => (pc(), name()).prop_map(|(c, p)| Remove(c, p)),
        2 => (pc(), name(), name()).prop_map(|(c, f, t)| Rename(c, f, t)),
        1 => (pc(), name()).prop_map(|(c, p)| Mkdir(c, p)),
        2 => name().prop_map(ServerPut),
        1 => name().prop_map(ServerAppend),
        1 => name().prop_map(ServerDelete),
        1 => name().prop_map(ServerMkdir),
        6 => pc().prop_map(Sync),
        2 => (pc(), 0u8..24, any::<bool>()).prop_map(|(c, k, l)| Crash(c, k, l)),
    ]
}

// ---- A remote that stops answering: a crash ---------------------------------------------------

/// Passes `left` calls through; the next one (made, with `lost_reply`, or not) and every later
/// one never answer, and `stalled` is notified: the run is then dropped.
struct Cut {
    inner: Arc<dyn Remote>,
    left: AtomicI64,
    lost_reply: bool,
    stalled: tokio::sync::Notify,
}

impl Cut {
    async fn gate<T>(&self, call: impl Future<Output = RemoteResult<T>>) -> RemoteResult<T> {
        let n = self.left.fetch_sub(1, Ordering::SeqCst);
        if n > 0 {
            return call.await;
        }
        if n == 0 && self.lost_reply {
            let _ = call.await;
        }
        self.stalled.notify_one();
        std::future::pending().await
    }
}

#[async_trait]
impl Remote for Cut {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.gate(self.inner.stat(path)).await
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        self.gate(self.inner.list(path)).await
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        self.gate(self.inner.read_range(path, range, expect)).await
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        self.gate(self.inner.put(path, body, cond)).await
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.gate(self.inner.mkdir(path)).await
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.gate(self.inner.delete(path)).await
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.gate(self.inner.rename(from, to, overwrite)).await
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.gate(self.inner.copy(from, to, overwrite)).await
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.gate(self.inner.quota()).await
    }
}

// ---- The world ----------------------------------------------------------------------------------

/// One computer: its folder, journal, trash and name.
struct Computer {
    spec: FolderSpec,
    journal: Mutex<Journal>,
    trash: Trash,
    device: String,
    progress: Progress,
    /// The computer's account room (its daemon's).
    space: cloudmount::transfer::space::Space,
}

/// A file tree: path → `None` for a directory, `Some(content)` for a file.
type Tree = BTreeMap<String, Option<String>>;

/// Which server the world syncs with.
enum Backend {
    Mem,
    Apache,
}

struct World {
    rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    /// Keeps the Apache test folder's client alive (its runtime), if any.
    _dav: Option<Dav>,
    remote: Arc<dyn Remote>,
    /// The synced folder on the server.
    root: RemotePath,
    pcs: [Computer; 2],
    next_version: u32,
    /// The model clock: seconds given to local writes as their mtime.
    clock: i64,
    /// Every version any user wrote.
    written: BTreeSet<String>,
    /// Versions a user overwrote or deleted where they were.
    destroyed: BTreeSet<String>,
    crashed: bool,
    /// Latency added to every PUT a sync makes (to order a race deterministically).
    put_delay: Option<Duration>,
    log: Vec<String>,
}

fn rel_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `dir` or below it.
fn at_or_below(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{dir}/"))
}

/// The local tree below `root` (marker aside).
fn local_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        for e in std::fs::read_dir(&abs).unwrap_or_else(|e| panic!("{}: {e}", abs.display())) {
            let e = e.unwrap();
            let name = e.file_name().into_string().expect("utf-8 name");
            if dir.is_empty() && name == engine::MARKER {
                continue;
            }
            let rel = rel_join(&dir, &name);
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel.clone(), None);
                stack.push(rel);
            } else {
                let c = std::fs::read(e.path()).unwrap();
                out.insert(rel, Some(String::from_utf8(c).expect("utf-8 content")));
            }
        }
    }
    out
}

/// Every file content below `dir` (recursive), for the trash.
fn contents_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(contents_below(&e.path()));
        } else {
            out.push(String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned());
        }
    }
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs as u64))
        .unwrap();
}

impl World {
    fn new(backend: Backend) -> World {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let tmp = tempfile::Builder::new()
            .prefix("cm-sync-model.")
            .tempdir()
            .expect("tempdir");
        let (remote, root, dav): (Arc<dyn Remote>, RemotePath, Option<Dav>) = match backend {
            Backend::Mem => {
                let mem = MemRemote::new();
                mem.insert_dir("sync");
                (Arc::new(mem), RemotePath::new("sync").unwrap(), None)
            }
            Backend::Apache => {
                let server = Server::apache_basic();
                let dav = Dav::fresh(&server, "sync-model");
                let remote = Arc::new(common::webdav(&server.url, &server.user, &server.password));
                (remote, dav.root.clone(), Some(dav))
            }
        };
        let computer = |label: &str, device: &str| {
            let home = tmp.path().join(label);
            let local = home.join("Folder");
            std::fs::create_dir_all(&local).unwrap();
            let spec = FolderSpec {
                id: FolderId::random().unwrap(),
                local,
                remote: root.as_str().to_string(),
                mode: Mode::Bidirectional,
                schedule: Schedule::Immediate,
                keep_deleted: false,
                paused: false,
                delete_limit_percent: 100,
                added_at: 0,
                area: String::new(),
                mode_reason: String::new(),
            };
            let journal = Journal::open(&home.join("journal.db")).expect("journal");
            journal.add_folder(&spec).expect("add folder");
            Computer {
                spec,
                journal: Mutex::new(journal),
                trash: Trash::at(home.join("Trash")),
                device: device.to_string(),
                progress: Progress::default(),
                space: Default::default(),
            }
        };
        let pcs = [computer("A", "alpha"), computer("B", "beta")];
        World {
            rt,
            _tmp: tmp,
            _dav: dav,
            remote,
            root,
            pcs,
            next_version: 0,
            clock: 1_000_000_000,
            written: BTreeSet::new(),
            destroyed: BTreeSet::new(),
            crashed: false,
            put_delay: None,
            log: Vec::new(),
        }
    }

    fn pc(&self, c: Pc) -> &Computer {
        &self.pcs[c as usize]
    }

    fn local_root(&self, c: Pc) -> &Path {
        &self.pc(c).spec.local
    }

    fn new_version(&mut self) -> String {
        self.next_version += 1;
        let v = format!("v{}\n", self.next_version);
        v
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn rp(&self, rel: &str) -> RemotePath {
        RemotePath::new(&rel_join(self.root.as_str(), rel)).unwrap()
    }

    // -- the server, through the remote --

    fn server_tree(&self) -> (Tree, Vec<(String, String)>) {
        self.rt.block_on(async {
            let mut out = Tree::new();
            let mut strays = Vec::new();
            let mut stack = vec![String::new()];
            while let Some(dir) = stack.pop() {
                let at = if dir.is_empty() {
                    self.root.clone()
                } else {
                    self.rp(&dir)
                };
                let listing = self
                    .remote
                    .list(&at)
                    .await
                    .unwrap_or_else(|e| panic!("list {at}: {e}"));
                for child in listing.children {
                    let name = child.name().to_string();
                    let rel = rel_join(&dir, &name);
                    if child.is_dir() {
                        out.insert(rel.clone(), None);
                        stack.push(rel);
                        continue;
                    }
                    let body = self
                        .remote
                        .read_range(&child.path, ByteRange::whole(), None)
                        .await
                        .unwrap_or_else(|e| panic!("get {rel}: {e}"))
                        .bytes()
                        .await
                        .unwrap();
                    let text = String::from_utf8(body.to_vec()).expect("utf-8 content");
                    if name.starts_with(".cloudmount-upload-") {
                        strays.push((rel, text));
                    } else {
                        out.insert(rel, Some(text));
                    }
                }
            }
            (out, strays)
        })
    }

    /// What the server holds at `rel` and below.
    fn server_at(&self, rel: &str) -> Tree {
        self.server_tree()
            .0
            .into_iter()
            .filter(|(p, _)| at_or_below(p, rel))
            .collect()
    }

    fn destroy(&mut self, t: &Tree) {
        self.destroyed.extend(t.values().flatten().cloned());
    }

    /// Makes the parent collections of `rel` on the server; false if one is a file.
    async fn server_parents(remote: &dyn Remote, root: &RemotePath, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut at = root.clone();
        for seg in &parts[..parts.len() - 1] {
            at = at.join(seg).unwrap();
            match remote.mkdir(&at).await {
                Ok(()) => {}
                Err(_) => match remote.stat(&at).await {
                    Ok(e) if e.is_dir() => {}
                    _ => return false,
                },
            }
        }
        true
    }

    fn server_put(&mut self, rel: &str, append: bool) -> bool {
        let here = self.server_at(rel);
        let old = match here.get(rel) {
            Some(None) => return false,
            Some(Some(c)) => Some(c.clone()),
            None if append => return false,
            None => None,
        };
        let v = self.new_version();
        let content = match (&old, append) {
            (Some(o), true) => format!("{o}{v}"),
            _ => v,
        };
        let (remote, root, rp) = (self.remote.clone(), self.root.clone(), self.rp(rel));
        let data = content.clone().into_bytes();
        let ok = self.rt.block_on(async {
            if !Self::server_parents(&*remote, &root, rel).await {
                return false;
            }
            remote
                .put(&rp, data.into(), PutCondition::None)
                .await
                .is_ok()
        });
        if ok {
            if let Some(o) = old {
                self.destroyed.insert(o);
            }
            self.written.insert(content);
        }
        ok
    }

    fn server_delete(&mut self, rel: &str) -> bool {
        let here = self.server_at(rel);
        if here.is_empty() {
            return false;
        }
        let (remote, rp) = (self.remote.clone(), self.rp(rel));
        self.rt
            .block_on(remote.delete(&rp))
            .unwrap_or_else(|e| panic!("server delete {rel}: {e}"));
        self.destroy(&here);
        true
    }

    fn server_mkdir(&mut self, rel: &str) -> bool {
        let (remote, root, rp) = (self.remote.clone(), self.root.clone(), self.rp(rel));
        self.rt.block_on(async {
            Self::server_parents(&*remote, &root, rel).await && remote.mkdir(&rp).await.is_ok()
        })
    }

    // -- a computer's local folder --

    /// What the local folder holds at `rel` and below.
    fn local_at(&self, c: Pc, rel: &str) -> Tree {
        local_tree(self.local_root(c))
            .into_iter()
            .filter(|(p, _)| at_or_below(p, rel))
            .collect()
    }

    fn local_write(&mut self, c: Pc, rel: &str, append: bool) -> bool {
        let path = self.local_root(c).join(rel);
        let old = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => return false,
            Ok(_) => Some(String::from_utf8(std::fs::read(&path).unwrap()).unwrap()),
            Err(_) if append => return false,
            Err(_) => None,
        };
        if std::fs::create_dir_all(path.parent().unwrap()).is_err() {
            return false;
        }
        let v = self.new_version();
        let content = match (&old, append) {
            (Some(o), true) => format!("{o}{v}"),
            _ => v,
        };
        // In place, as an editor that truncates and writes (the inode stays).
        std::fs::write(&path, &content).unwrap();
        let t = self.tick();
        set_mtime(&path, t);
        if let Some(o) = old {
            self.destroyed.insert(o);
        }
        self.written.insert(content);
        true
    }

    fn local_remove(&mut self, c: Pc, rel: &str) -> bool {
        let path = self.local_root(c).join(rel);
        let here = self.local_at(c, rel);
        let r = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => return false,
        };
        r.unwrap();
        self.destroy(&here);
        true
    }

    fn local_rename(&mut self, c: Pc, from: &str, to: &str) -> bool {
        if at_or_below(to, from) || at_or_below(from, to) {
            return false;
        }
        let root = self.local_root(c).to_path_buf();
        let over = self.local_at(c, to);
        if !root.join(from).exists() {
            return false;
        }
        if std::fs::rename(root.join(from), root.join(to)).is_err() {
            return false;
        }
        self.destroy(&over);
        true
    }

    fn local_mkdir(&mut self, c: Pc, rel: &str) -> bool {
        std::fs::create_dir_all(self.local_root(c).join(rel)).is_ok()
    }

    // -- syncs --

    fn env<'a>(&'a self, c: Pc, remote: &'a dyn Remote) -> Env<'a> {
        let pc = self.pc(c);
        Env {
            remote,
            journal: &pc.journal,
            trash: &pc.trash,
            device: pc.device.clone(),
            progress: &pc.progress,
            space: &pc.space,
        }
    }

    fn sync(&mut self, c: Pc) -> Outcome {
        let slow = FaultyRemote::new(self.remote.clone());
        if let Some(d) = self.put_delay {
            slow.delay(FaultOp::Put, d);
        }
        let env = self.env(c, &slow);
        let spec = &self.pc(c).spec;
        let out = self.rt.block_on(engine::run(&env, spec, true));
        assert!(
            matches!(out, Outcome::Synced { .. }),
            "sync {c:?} did not end in sync: {out:?}\n{}",
            self.log.join("\n")
        );
        out
    }

    /// Returns whether the run was cut.
    fn crash(&mut self, c: Pc, k: u8, lost: bool) -> bool {
        let cut = Cut {
            inner: self.remote.clone(),
            left: AtomicI64::new(i64::from(k)),
            lost_reply: lost,
            stalled: tokio::sync::Notify::new(),
        };
        let env = self.env(c, &cut);
        let spec = &self.pc(c).spec;
        let out = self.rt.block_on(async {
            tokio::select! {
                o = engine::run(&env, spec, true) => Some(o),
                _ = cut.stalled.notified() => None,
            }
        });
        match out {
            None => {
                self.crashed = true;
                true
            }
            Some(o) => {
                assert!(
                    matches!(o, Outcome::Synced { .. }),
                    "sync {c:?} (not cut) did not end in sync: {o:?}\n{}",
                    self.log.join("\n")
                );
                false
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let did = match *op {
            Write(c, p) => self.local_write(c, p, false),
            Append(c, p) => self.local_write(c, p, true),
            Remove(c, p) => self.local_remove(c, p),
            Rename(c, f, t) => self.local_rename(c, f, t),
            Mkdir(c, p) => self.local_mkdir(c, p),
            ServerPut(p) => self.server_put(p, false),
            ServerAppend(p) => self.server_put(p, true),
            ServerDelete(p) => self.server_delete(p),
            ServerMkdir(p) => self.server_mkdir(p),
            Sync(c) => {
                let o = self.sync(c);
                self.log.push(format!("{op:?} -> {o:?}"));
                return;
            }
            Crash(c, k, l) => {
                let cut = self.crash(c, k, l);
                self.log
                    .push(format!("{op:?} -> {}", if cut { "cut" } else { "ran" }));
                return;
            }
        };
        self.log
            .push(format!("{op:?}{}", if did { "" } else { " (nothing)" }));
    }

    fn describe(&self) -> String {
        let (server, strays) = self.server_tree();
        format!(
            "ops:\n  {}\nA: {:?}\nserver: {server:?} (strays {strays:?})\nB: {:?}\nA's trash: {:?}\nB's trash: {:?}",
            self.log.join("\n  "),
            local_tree(self.local_root(A)),
            local_tree(self.local_root(B)),
            contents_below(&self.pc(A).trash.home().join("files")),
            contents_below(&self.pc(B).trash.home().join("files")),
        )
    }

    /// The final round and the three checks.
    fn finish(mut self) {
        let mut quiet = false;
        for round in 0..8 {
            let mut changes = 0;
            for c in [A, B] {
                let o = self.sync(c);
                self.log
                    .push(format!("final {round}: Sync({c:?}) -> {o:?}"));
                if let Outcome::Synced {
                    changes: n,
                    problems,
                    ..
                } = o
                {
                    changes += n + problems;
                }
            }
            if changes == 0 {
                quiet = true;
                break;
            }
        }
        assert!(
            quiet,
            "the final syncs never became quiet\n{}",
            self.describe()
        );
        let a = local_tree(self.local_root(A));
        let b = local_tree(self.local_root(B));
        let (server, strays) = self.server_tree();
        assert!(
            a == server && server == b,
            "the trees differ after a quiet round\n{}",
            self.describe()
        );
        for p in a.keys() {
            let name = p.rsplit('/').next().unwrap();
            assert!(
                !name.starts_with(".cloudmount-"),
                "a temporary file is left: {p}\n{}",
                self.describe()
            );
            assert!(
                name.matches("(conflicted copy").count() <= 1,
                "a conflict copy of a conflict copy: {p}\n{}",
                self.describe()
            );
        }
        assert!(
            strays.is_empty(),
            "temporary uploads left on the server after the final round: {strays:?}\n{}",
            self.describe()
        );
        for (p, c) in &strays {
            assert!(
                self.written.contains(c),
                "the stray {p} holds {c:?}, which no user wrote"
            );
        }
        let mut present: BTreeSet<String> = a.values().flatten().cloned().collect();
        for c in [A, B] {
            present.extend(contents_below(&self.pc(c).trash.home().join("files")));
        }
        let lost: Vec<&String> = self
            .written
            .difference(&self.destroyed)
            .filter(|v| !present.contains(*v))
            .collect();
        assert!(
            lost.is_empty(),
            "versions lost (written, never overwritten or deleted by a user where they were): {lost:?}\n{}",
            self.describe()
        );
        for v in a.values().flatten() {
            assert!(
                self.written.contains(v),
                "the tree holds {v:?}, which no user wrote\n{}",
                self.describe()
            );
        }
    }
}

fn check(backend: Backend, ops: &[Op]) {
    check_with(backend, ops, None)
}

fn check_with(backend: Backend, ops: &[Op], put_delay: Option<Duration>) {
    let mut w = World::new(backend);
    w.put_delay = put_delay;
    for op in ops {
        w.apply(op);
    }
    w.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 1000, .. ProptestConfig::default() })]
    #[test]
    fn two_computers_and_another_client_converge_and_lose_nothing(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        check(Backend::Mem, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, .. ProptestConfig::default() })]
    #[test]
    fn two_computers_and_another_client_converge_and_lose_nothing_on_apache(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        check(Backend::Apache, &ops);
    }
}

// ---- Shrunk failures, kept as regressions ---------------------------------------------------

#[test]
fn an_edit_on_each_computer_and_the_server_keeps_every_version() {
    check(
        Backend::Mem,
        &[
            Write(A, "a.txt"),
            Sync(A),
            Sync(B),
            Append(A, "a.txt"),
            Write(B, "a.txt"),
            ServerAppend("a.txt"),
            Sync(B),
            Sync(A),
        ],
    );
}

/// Found by this model: a run cut after it moved an upload in place and before it learnt the
/// uploaded file's version left the version unknown; the next run took the server's file of the
/// same size for ours without looking — here another client's edit made meanwhile — so B kept
/// its older file for good (and its next edit would have overwritten the other client's
/// unseen). Fixed in `sync::apply::adopt_uploaded_checked`: adopted only when the content is
/// the one sent.
#[test]
fn regression_an_upload_cut_before_its_version_was_learnt_does_not_adopt_another_clients_edit() {
    check(
        Backend::Mem,
        &[
            Write(B, "e/x.txt"),
            ServerMkdir("d/e/z.txt"),
            ServerPut("b.txt"),
            Sync(B),
            Write(B, "b.txt"),
            Crash(B, 8, false),
            ServerPut("b.txt"),
        ],
    );
}

/// Found by this model: A renamed a synced directory while another client changed a file in it
/// (same size); the sync moved the directory on the server and then took the changed file's
/// version from the next listing as the moved file's own, so A kept its older file for good.
/// Fixed in `sync::apply::move_remote`: only files the server still held as the base says have
/// their version learnt again after a move.
#[test]
fn regression_a_file_changed_on_the_server_inside_a_directory_renamed_here_is_downloaded() {
    check(
        Backend::Mem,
        &[
            ServerPut("d/e"),
            Sync(A),
            Rename(A, "d", "a.txt"),
            ServerPut("d/e"),
        ],
    );
}

/// Found by this model: B had two files of the same size downloaded in the same second (so of
/// the same mtime, the server's) and renamed one over the other; the local scan saw the size
/// and mtime of the base and took the replaced file for unchanged (the inode was not looked
/// at), so the rename was never uploaded and B kept a file the others did not have. Fixed in
/// `sync::state::LocalMeta::changed_since` (a new inode is a change unless the hashes are
/// equal) and `sync::local::scan` (such a file is hashed).
#[test]
fn regression_a_file_replaced_by_a_rename_with_the_same_size_and_mtime_is_a_change() {
    check(
        Backend::Mem,
        &[
            Write(A, "e"),
            Write(A, "d/e/z.txt"),
            Sync(A),
            Sync(B),
            Rename(B, "e", "d/e/z.txt"),
        ],
    );
}

/// Found by this model on Apache: B made `d/e/z.txt` while A made a file `d`; B's sync keeps
/// both (its directory `d` becomes a conflict copy) while, in parallel, it uploads
/// `d/e/z.txt` — whose file had just moved away with its directory. The PUT's body could not be
/// read, and that local error came back as a server that does not answer: the whole run ended
/// `Offline`. Fixed in `sync::apply::upload`: a failed upload of a file that is no longer what
/// was being sent is left for the next pass. (The PUTs are delayed so that the conflict's
/// rename comes first; the in-memory server reports an unreadable body as a local error, so
/// only Apache showed it.)
fn an_upload_whose_file_moves_away_while_sent(backend: Backend) {
    check_with(
        backend,
        &[
            Write(B, "d/e/z.txt"),
            Write(B, "d/x.txt"),
            Write(B, "d/y.txt"),
            Write(A, "d"),
            Sync(A),
            Sync(B),
        ],
        Some(Duration::from_millis(300)),
    );
}

#[test]
fn regression_an_upload_whose_file_moves_away_while_sent_is_not_a_server_failure() {
    an_upload_whose_file_moves_away_while_sent(Backend::Mem);
}

#[test]
fn regression_an_upload_whose_file_moves_away_while_sent_is_not_a_server_failure_on_apache() {
    an_upload_whose_file_moves_away_while_sent(Backend::Apache);
}
