//! Power-loss tests of the block cache and the metadata store, in the spirit of redb's
//! crash-testing backend: the cache directory lives on a *lossy* filesystem
//! (`common/lossy.rs`) that forgets, at a power cut, every write that was not fsynced (file
//! content as of the file's last fsync, directory entries as of the directory's last fsync).
//! A `kill -9` keeps such writes (the kernel has them); a power cut does not.
//!
//! Each seed drives the vfs (in-process, on the in-memory server) through a random workload —
//! files of 0 B to 3 MB written and closed, read whole or in part (downloads into the cache),
//! cache flushes and evictions (a small budget), waits for the upload queue; a third of the
//! rounds only read, so no `close()` fsyncs the WAL for the cache — and cuts the power at a
//! random fsync. The next boot reverts the disk to its durable state, and the test checks:
//!
//! 1. `meta.db` opens, and SQLite's `integrity_check` passes;
//! 2. after the cache's start-up check, every block the cache records present holds exactly
//!    the bytes of the version its row names (no holes, no other version's bytes);
//! 3. every file whose `close()` returned is uploaded by the next start, byte-exact (at its
//!    path, or — the documented cost of a cut in the middle of an upload — as a conflict copy);
//! 4. every file reads back right through the vfs.
//!
//! Then the workload goes on from there, for a few cuts per seed. The workload, the cut points
//! (as the index of the fsync at which the power goes) and all content are drawn from the seed;
//! uploads run in the background, so the interleaving (and with it the exact cut) may vary a
//! little between runs of one seed. A failing seed prints its trace and the last fsyncs;
//! `CLOUDMOUNT_POWERLOSS_SEED=n` runs seed n alone, `CLOUDMOUNT_POWERLOSS_SEEDS=n` seeds 1 to n
//! (default 12), `RUST_LOG=cloudmount=debug` shows what the vfs did.
//!
//! Needs `/dev/fuse` (it mounts the lossy filesystem; as a normal user, through fusermount3, as
//! the test command runs it); fails loudly without it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloudmount::cache::{BlockCache, CacheConfig, CacheLayout};
use cloudmount::meta::MetaStore;
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::{
    ByteRange, ETag, Entry, Listing, PutBody, PutCondition, PutOutcome, Quota, ReadResponse,
    Remote, RemotePath, RemoteResult,
};
use cloudmount::vfs::{
    AreaSpec, Ino, OpenMode, UploadOptions, Vfs, VfsOptions, VfsResult, ROOT_INO,
};

#[path = "common/lossy.rs"]
mod lossy;
#[path = "common/vfs.rs"]
#[allow(dead_code)]
mod vfs_util;

use lossy::LossyMount;
use vfs_util::W;

/// Cache block size (small, so files have many blocks).
const BLOCK: u64 = 4096;
/// Cache budget: a few files, so evictions happen.
const BUDGET: u64 = 96 * 1024;
/// Names the workload writes and reads (the first ones exist on the server at the start).
const NAMES: [&str; 6] = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin", "f.bin"];
/// Sizes of the files written: small ones (read whole at once by the vfs) and large ones (past
/// its 1 MiB inline read, so a random read caches only some blocks).
const SIZES: [usize; 10] = [
    0, 1, 4095, 4096, 9000, 20_000, 70_000, 1_500_000, 2_200_000, 3_000_000,
];

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Content of version `id`: every 8 bytes differ between versions and are never all zero, so
/// a hole or another version's block never passes for this one.
fn content(id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(&(mix(id << 32 | i) | 1).to_le_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

/// The in-memory server, recording every version it ever held (ETag value → bytes), so that
/// a cached block can be checked against the version its row names.
struct Recorder {
    mem: Arc<MemRemote>,
    versions: Mutex<HashMap<String, Vec<u8>>>,
}

impl Recorder {
    fn note(&self, path: &RemotePath) {
        let (Some(etag), Some(bytes)) = (
            self.mem.etag(path.as_str()),
            self.mem.file_bytes(path.as_str()),
        ) else {
            return;
        };
        self.versions
            .lock()
            .unwrap()
            .insert(etag.value().to_string(), bytes);
    }

    fn version(&self, etag: &str) -> Option<Vec<u8>> {
        self.versions.lock().unwrap().get(etag).cloned()
    }
}

#[async_trait]
impl Remote for Recorder {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.mem.stat(path).await
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        self.mem.list(path).await
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        self.mem.read_range(path, range, expect).await
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        let r = self.mem.put(path, body, cond).await;
        if r.is_ok() {
            self.note(path);
        }
        r
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.mem.mkdir(path).await
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.mem.delete(path).await
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        let r = self.mem.rename(from, to, overwrite).await;
        if r.is_ok() {
            self.note(to);
        }
        r
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        let r = self.mem.copy(from, to, overwrite).await;
        if r.is_ok() {
            self.note(to);
        }
        r
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.mem.quota().await
    }
}

/// One boot's vfs and the cache under it (held to flush and evict on demand).
struct Boot {
    vfs: Arc<Vfs>,
    cache: Arc<BlockCache>,
}

fn open_cache(dir: &Path) -> (Arc<MetaStore>, Arc<BlockCache>) {
    let layout = CacheLayout::new(dir);
    let meta = Arc::new(
        MetaStore::open(&layout.meta_db())
            .unwrap_or_else(|e| panic!("meta.db does not open after a power cut: {e}")),
    );
    let config = CacheConfig {
        budget_bytes: BUDGET,
        block_size: BLOCK,
        // No background flusher: flushes and evictions are steps of the workload.
        flush_interval: None,
    };
    let cache = Arc::new(
        BlockCache::open_with(&layout, config, meta.clone())
            .unwrap_or_else(|e| panic!("the block cache does not open after a power cut: {e}")),
    );
    (meta, cache)
}

fn boot(dir: &Path, remote: Arc<Recorder>) -> Boot {
    let layout = CacheLayout::new(dir);
    std::fs::create_dir_all(layout.staging_dir()).expect("staging dir");
    let (meta, cache) = open_cache(dir);
    let vfs = Vfs::with_parts(
        vec![AreaSpec {
            name: "Cloud Drive".into(),
            url: "mem://Cloud-Drive/".into(),
            remote,
            read_only: false,
        }],
        VfsOptions {
            dir_ttl: Duration::from_secs(60),
            uid: 0,
            gid: 0,
            read_only: false,
            areas_as_folders: false,
            passthrough: false,
            upload: UploadOptions {
                workers: 1,
                ..UploadOptions::immediate()
            },
        },
        meta,
        cache.clone(),
        layout.staging_dir(),
    )
    .unwrap_or_else(|e| panic!("the vfs does not start after a power cut: {e}"));
    Boot { vfs, cache }
}

/// Writes `data` as the whole content of `name` (created, or opened with `O_TRUNC`) and
/// closes it. `O_TRUNC` on a file still queued for upload is what seed 12 found racing an
/// upload's end (the closed version was lost to zeros); it is fixed in `Vfs::stage`.
async fn write_file(vfs: &Vfs, name: &str, data: &[u8]) -> VfsResult<()> {
    let (ino, fh) = match vfs.lookup(ROOT_INO, name).await {
        Ok(a) => {
            let truncate = OpenMode {
                write: true,
                truncate: true,
                append: false,
            };
            (a.ino, vfs.open(a.ino, truncate).await?.fh)
        }
        Err(_) => {
            let (a, o) = vfs.create(ROOT_INO, name, W).await?;
            (a.ino, o.fh)
        }
    };
    vfs.write(ino, fh, 0, data).await?;
    vfs.flush(ino, fh).await?;
    vfs.release(ino, fh).await
}

async fn read_range(vfs: &Vfs, ino: Ino, offset: u64, len: u32) -> VfsResult<Vec<u8>> {
    let o = vfs.open(ino, vfs_util::R).await?;
    let mut out = Vec::new();
    let end = offset + len as u64;
    let mut res = Ok(());
    while (offset + out.len() as u64) < end {
        let at = offset + out.len() as u64;
        match vfs
            .read(ino, o.fh, at, (end - at).min(64 * 1024) as u32)
            .await
        {
            Ok(chunk) if chunk.is_empty() => break,
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    vfs.release(ino, o.fh).await?;
    res.map(|()| out)
}

/// What the test knows: the content each name has through the vfs, and what must reach the
/// server.
#[derive(Default)]
struct Model {
    /// Content of each name as the vfs shows it now.
    current: HashMap<String, Vec<u8>>,
    /// The content of the last `close()` that returned success, per name (must be uploaded).
    closed: HashMap<String, Vec<u8>>,
    /// A write whose `close()` was under way at the cut (its content may win: all of it was
    /// written before the cut, and its fsync may have landed).
    interrupted: Option<(String, Vec<u8>)>,
    next_id: u64,
    /// Every content written, with what wrote it (to name what a failure found).
    history: Vec<(String, Vec<u8>)>,
}

impl Model {
    /// Which written content `data` is (or is the start of).
    fn describe(&self, data: &[u8]) -> String {
        for (label, d) in &self.history {
            if d.as_slice() == data {
                return format!("the content of {label}");
            }
        }
        for (label, d) in &self.history {
            if !data.is_empty() && d.starts_with(data) {
                return format!("the first {} bytes of {label}", data.len());
            }
        }
        // The written content it shares most bytes with (at the same offsets).
        let best = self
            .history
            .iter()
            .map(|(label, d)| (d.iter().zip(data).filter(|(a, b)| a == b).count(), label))
            .max();
        let zeros = data.iter().filter(|b| **b == 0).count();
        format!(
            "{} bytes of no content ever written ({zeros} zero bytes; closest: {best:?})",
            data.len()
        )
    }
}

struct Run {
    seed: u64,
    rng: Rng,
    trace: Vec<String>,
    mount: LossyMount,
    mem: Arc<MemRemote>,
    remote: Arc<Recorder>,
    model: Model,
    false_conflicts: usize,
    stats: Stats,
}

/// What a seed checked (printed, so a run that checks nothing shows).
#[derive(Default, Debug)]
struct Stats {
    cuts_mid_workload: usize,
    objects_checked: usize,
    blocks_checked: usize,
    closed_files_checked: usize,
}

/// How a workload step went.
enum Step {
    Done,
    /// The power went during the step.
    Cut,
}

impl Run {
    fn fail(&self, what: String) -> ! {
        // try_lock: a check may fail while it holds the disk.
        let syncs = match self.mount.disk.try_lock() {
            Ok(d) => d.recent_syncs(12),
            Err(_) => Vec::new(),
        };
        panic!(
            "seed {}: {what}\ntrace (last 30 steps): {:#?}\nlast fsyncs: {syncs:#?}",
            self.seed,
            &self.trace[self.trace.len().saturating_sub(40)..]
        );
    }

    /// An error is expected only once the power is off.
    fn check_err<T>(&self, r: VfsResult<T>, what: &str) -> Result<T, Step> {
        match r {
            Ok(v) => Ok(v),
            Err(_) if self.mount.disk().is_dead() => Err(Step::Cut),
            Err(e) => self.fail(format!("{what} failed with the power on: {e}")),
        }
    }

    /// One random step; `reads_only` rounds write nothing (so no `close()` commits the WAL
    /// with FULL sync: the cache's own transactions stay undurable between flushes).
    async fn step(&mut self, b: &Boot, reads_only: bool) -> Step {
        let name = NAMES[self.rng.below(NAMES.len() as u64) as usize].to_string();
        let pick = if reads_only {
            7 + self.rng.below(11)
        } else {
            self.rng.below(20)
        };
        match pick {
            0..=6 => {
                let len = SIZES[self.rng.below(SIZES.len() as u64) as usize];
                self.model.next_id += 1;
                let data = content(self.seed << 20 | self.model.next_id, len);
                let label = format!("write #{} of {name} ({len} bytes)", self.model.next_id);
                self.model.history.push((label.clone(), data.clone()));
                self.trace.push(label);
                match write_file(&b.vfs, &name, &data).await {
                    Ok(()) => {
                        self.model.current.insert(name.clone(), data.clone());
                        self.model.closed.insert(name, data);
                        Step::Done
                    }
                    Err(_) if self.mount.disk().is_dead() => {
                        self.model.interrupted = Some((name, data));
                        Step::Cut
                    }
                    Err(e) => self.fail(format!("writing {name} failed with the power on: {e}")),
                }
            }
            7..=12 => {
                let Some(want) = self.model.current.get(&name).cloned() else {
                    return Step::Done;
                };
                let (offset, len) = if self.rng.below(2) == 0 || want.is_empty() {
                    (0, want.len() as u64 + 1)
                } else {
                    let off = self.rng.below(want.len() as u64);
                    (off, 1 + self.rng.below(20_000))
                };
                self.trace
                    .push(format!("read {name} [{offset}, +{len}) of {}", want.len()));
                let attr = match self.check_err(b.vfs.lookup(ROOT_INO, &name).await, "lookup") {
                    Ok(a) => a,
                    Err(s) => return s,
                };
                let got = match self.check_err(
                    read_range(&b.vfs, attr.ino, offset, len as u32).await,
                    "read",
                ) {
                    Ok(g) => g,
                    Err(s) => return s,
                };
                let end = (offset + len).min(want.len() as u64) as usize;
                if got != want[offset as usize..end] {
                    self.fail(format!(
                        "read of {name} [{offset}, {end}) served wrong bytes ({} bytes)",
                        got.len()
                    ));
                }
                Step::Done
            }
            13..=15 => {
                self.trace.push("cache flush".into());
                match b.cache.flush() {
                    Err(_) if self.mount.disk().is_dead() => Step::Cut,
                    Err(e) => self.fail(format!("cache flush failed with the power on: {e}")),
                    Ok(()) => Step::Done,
                }
            }
            16 | 17 => {
                self.trace.push("cache evict".into());
                match b.cache.evict() {
                    Err(_) if self.mount.disk().is_dead() => Step::Cut,
                    Err(e) => self.fail(format!("cache eviction failed with the power on: {e}")),
                    Ok(_) => Step::Done,
                }
            }
            _ => {
                self.trace.push("wait for the upload queue".into());
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let idle =
                        tokio::time::timeout(Duration::from_millis(20), b.vfs.wait_idle()).await;
                    if self.mount.disk().is_dead() {
                        return Step::Cut;
                    }
                    if idle.is_ok() {
                        return Step::Done;
                    }
                    if tokio::time::Instant::now() > deadline {
                        self.fail(format!(
                            "uploads did not finish with the power on: {:?}",
                            b.vfs.status()
                        ));
                    }
                }
            }
        }
    }

    /// One round: the workload until the power goes at a random fsync (or at its end).
    async fn round(&mut self, b: Boot, steps: usize) {
        let cut = self.mount.disk().syncs() + 1 + self.rng.below(80);
        self.mount.disk().cut_at(cut);
        self.trace.push(format!("power goes at fsync #{cut}"));
        let reads_only = self.rng.below(3) == 0;
        if reads_only {
            self.trace.push("reads, flushes and evictions only".into());
        }
        let mut cut_seen = false;
        for _ in 0..steps {
            if let Step::Cut = self.step(&b, reads_only).await {
                cut_seen = true;
                break;
            }
        }
        if cut_seen {
            self.stats.cuts_mid_workload += 1;
        } else {
            self.trace.push("power goes at the end of the round".into());
        }
        // The machine stops: nothing after this point lands on the disk.
        self.mount.disk().cut_now();
        // The process dies: no shutdown. (Whatever its handles still try fails with EIO.)
        drop(b);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.mount.reboot();
    }

    /// The checks of a boot after a power cut; returns the booted vfs.
    async fn after_cut(&mut self) -> Boot {
        let dir = self.mount.dir.clone();
        // 1. meta.db: SQLite's own check, on a copy of the files as the boot found them.
        self.integrity_check("at boot");
        // 2. The cache after its start-up check: every present block is its version's bytes.
        {
            let (meta, cache) = open_cache(&dir);
            drop(cache);
            drop(meta);
        }
        self.integrity_check("after the cache's start-up check");
        self.check_cached_blocks();
        // 3. Every closed file reaches the server.
        let b = boot(&dir, self.remote.clone());
        if tokio::time::timeout(Duration::from_secs(30), b.vfs.wait_idle())
            .await
            .is_err()
        {
            self.fail(format!(
                "queued uploads did not finish after the power cut: {:?}",
                b.vfs.status()
            ));
        }
        self.check_uploads();
        // 4. Everything reads back right.
        for (name, want) in self.model.current.clone() {
            let ino = match b.vfs.lookup(ROOT_INO, &name).await {
                Ok(a) => a.ino,
                Err(e) => self.fail(format!("{name} is gone after the power cut: {e}")),
            };
            match read_range(&b.vfs, ino, 0, want.len() as u32 + 1).await {
                Ok(got) if got == want => {}
                Ok(got) => self.fail(format!(
                    "{name} reads {} bytes after the power cut, not its {} bytes",
                    got.len(),
                    want.len()
                )),
                Err(e) => self.fail(format!("{name} does not read after the power cut: {e}")),
            }
        }
        b
    }

    /// `PRAGMA integrity_check` on a copy of `meta.db` (and its WAL) as it is on the disk.
    fn integrity_check(&self, when: &str) {
        let copy = tempfile::tempdir().expect("tempdir");
        let disk = self.mount.disk();
        let db = disk
            .read(Path::new("meta.db"))
            .unwrap_or_else(|| self.fail(format!("meta.db is gone {when}")));
        std::fs::write(copy.path().join("meta.db"), db).expect("copy");
        if let Some(wal) = disk.read(Path::new("meta.db-wal")) {
            std::fs::write(copy.path().join("meta.db-wal"), wal).expect("copy");
        }
        drop(disk);
        let conn = rusqlite::Connection::open(copy.path().join("meta.db"))
            .unwrap_or_else(|e| self.fail(format!("meta.db does not open {when}: {e}")));
        let res: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| self.fail(format!("integrity_check of meta.db {when}: {e}")));
        if res != "ok" {
            self.fail(format!("meta.db is damaged {when}: {res}"));
        }
    }

    /// Every block the cache's index records present holds the bytes of the row's version.
    fn check_cached_blocks(&mut self) {
        let copy = tempfile::tempdir().expect("tempdir");
        let disk = self.mount.disk();
        for f in ["meta.db", "meta.db-wal"] {
            if let Some(bytes) = disk.read(Path::new(f)) {
                std::fs::write(copy.path().join(f), bytes).expect("copy");
            }
        }
        let conn = rusqlite::Connection::open(copy.path().join("meta.db")).expect("open copy");
        let mut st = conn
            .prepare("SELECT path, etag, size, block_size, file, present FROM objects")
            .expect("objects table");
        let rows: Vec<(String, String, i64, i64, String, Vec<u8>)> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        drop(st);
        self.stats.objects_checked += rows.len();
        for (path, etag, size, bs, file, present) in rows {
            let (size, bs) = (size as u64, bs as u64);
            let etag = ETag::parse(&etag)
                .unwrap_or_else(|| self.fail(format!("object {path}: bad ETag {etag}")));
            let Some(want) = self.remote.version(etag.value()) else {
                self.fail(format!(
                    "object {path} names version {etag:?}, which the server never had"
                ));
            };
            if want.len() as u64 != size {
                self.fail(format!(
                    "object {path} {etag:?}: size {size}, the version has {}",
                    want.len()
                ));
            }
            let rel = Path::new("objects").join(&file[..2]).join(&file);
            let Some(have) = disk.read(&rel) else {
                self.fail(format!(
                    "object {path}: its file {} is missing after the start-up check",
                    rel.display()
                ));
            };
            if have.len() as u64 != size {
                self.fail(format!(
                    "object {path}: file of {} bytes, row says {size}",
                    have.len()
                ));
            }
            for i in 0..size.div_ceil(bs) {
                if present[(i / 8) as usize] & (1 << (i % 8)) == 0 {
                    continue;
                }
                self.stats.blocks_checked += 1;
                let (s, e) = ((i * bs) as usize, ((i + 1) * bs).min(size) as usize);
                if have[s..e] != want[s..e] {
                    let zeros = have[s..e].iter().all(|b| *b == 0);
                    self.fail(format!(
                        "object {path} {etag:?} (file {file}): block {i} is recorded present \
                         but holds {} after the power cut",
                        if zeros {
                            "zeros (a hole)".to_string()
                        } else {
                            "other bytes".to_string()
                        }
                    ));
                }
            }
        }
    }

    /// Every closed file is on the server: at its path, or as a conflict copy (a cut during
    /// an upload may cost a false conflict, see docs/design.md).
    fn check_uploads(&mut self) {
        let on_server: Vec<(String, Vec<u8>)> = self
            .mem
            .paths()
            .into_iter()
            .filter_map(|p| self.mem.file_bytes(&p).map(|b| (p, b)))
            .collect();
        let interrupted = self.model.interrupted.take();
        for (name, closed) in self.model.closed.clone() {
            let newer = interrupted
                .as_ref()
                .filter(|(n, _)| *n == name)
                .map(|(_, d)| d.clone());
            self.stats.closed_files_checked += 1;
            let at_path = self.mem.file_bytes(&name);
            let ok = |d: &Vec<u8>| *d == closed || newer.as_ref() == Some(d);
            match at_path {
                Some(ref d) if ok(d) => {}
                _ => {
                    let copy = on_server.iter().find(|(p, d)| *p != name && ok(d));
                    match copy {
                        Some((p, _)) => {
                            self.false_conflicts += 1;
                            self.trace
                                .push(format!("{name}: its content went to the copy {p}"));
                        }
                        None => self.fail(format!(
                            "{name}: its last closed version ({}) is not on the server after \
                             the power cut; the server has {} there",
                            self.model.describe(&closed),
                            match &at_path {
                                Some(d) => self.model.describe(d),
                                None => "nothing".into(),
                            }
                        )),
                    }
                }
            }
            let now = self.mem.file_bytes(&name).unwrap_or_default();
            self.model.current.insert(name.clone(), now.clone());
            self.model.closed.insert(name, now);
        }
        // A file whose first close was cut may or may not exist now.
        if let Some((name, _)) = interrupted {
            if let Some(d) = self.mem.file_bytes(&name) {
                self.model.current.insert(name.clone(), d.clone());
                self.model.closed.insert(name, d);
            }
        }
    }
}

async fn run_seed(seed: u64, rounds: usize, steps: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).expect("mountpoint");
    let mount = LossyMount::new(&dir);
    let mem = Arc::new(MemRemote::new());
    let remote = Arc::new(Recorder {
        mem: mem.clone(),
        versions: Mutex::new(HashMap::new()),
    });
    let mut run = Run {
        seed,
        rng: Rng(seed),
        trace: Vec::new(),
        mount,
        mem,
        remote,
        model: Model::default(),
        false_conflicts: 0,
        stats: Stats::default(),
    };
    let t0 = std::time::Instant::now();
    // Files already on the server.
    for (i, name) in NAMES.iter().take(4).enumerate() {
        let len = SIZES[run.rng.below(SIZES.len() as u64) as usize].max(1000 * (i + 1));
        let data = content(seed << 20 | 0xf0000 | i as u64, len);
        run.model
            .history
            .push((format!("the first version of {name}"), data.clone()));
        run.mem.insert_file(name, data.clone());
        run.remote.note(&RemotePath::new(name).unwrap());
        run.model.current.insert(name.to_string(), data);
    }
    let mut b = boot(&dir, run.remote.clone());
    for r in 0..rounds {
        run.trace.push(format!("--- round {r}"));
        run.round(b, steps).await;
        b = run.after_cut().await;
    }
    drop(b);
    eprintln!(
        "seed {seed}: {rounds} power cuts in {:?}, {} fsyncs, {} false conflicts, {:?}",
        t0.elapsed(),
        run.mount.disk().syncs(),
        run.false_conflicts,
        run.stats
    );
}

/// The seeds that found bugs, kept whatever the default range becomes: 3, 6 and 15 served
/// holes as data after a cut (an object file name reused while its old row could come back;
/// fixed in the cache), 12 lost a closed file to zeros (an `open(O_TRUNC)` racing an upload's
/// end; fixed in `Vfs::stage`). The interleaving with background uploads varies, so each failed in some
/// runs only (15 in about half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_seeds_that_found_bugs() {
    for seed in [3, 6, 12, 15] {
        run_seed(seed, 3, 40).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_no_closed_file_and_serve_no_garbage() {
    // RUST_LOG=cloudmount=debug shows what the vfs and the cache did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // CLOUDMOUNT_POWERLOSS_SEED=n runs seed n alone (to reproduce a failure);
    // CLOUDMOUNT_POWERLOSS_SEEDS=n runs seeds 1 to n (default 12).
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds = match var("CLOUDMOUNT_POWERLOSS_SEED") {
        Some(one) => one..=one,
        None => 1..=var("CLOUDMOUNT_POWERLOSS_SEEDS").unwrap_or(12),
    };
    for seed in seeds {
        run_seed(seed, 3, 40).await;
    }
}

/// The scenario the random workload reaches only rarely, step by step: an object's row and
/// blocks are durable; the object is dropped (its row deleted in a transaction that is not
/// fsynced, its file unlinked); the same version is cached again, under the same file name
/// (names come from the key); a flush makes the new file's directory entry durable; the power
/// goes. The old row must not come back naming the new file, whose blocks are holes.
#[test]
fn a_dropped_objects_row_never_comes_back_over_a_new_file_of_its_name() {
    use cloudmount::cache::ObjectKey;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).expect("mountpoint");
    let mut mount = LossyMount::new(&dir);
    let path = RemotePath::new("f.bin").unwrap();
    let key = ObjectKey {
        area: 0,
        path: path.clone(),
        etag: ETag::strong("v1"),
        size: 3 * BLOCK,
    };
    let data = content(77, 3 * BLOCK as usize);
    {
        // All three blocks, durable (a clean close checkpoints the WAL).
        let (meta, cache) = open_cache(&dir);
        let o = cache.object(&key).expect("object");
        o.write_blocks(0, &data).expect("write");
        drop(o);
        cache.flush().expect("flush");
        drop(cache);
        drop(meta);
    }
    {
        let (_meta, cache) = open_cache(&dir);
        // Dropped: row deleted (not fsynced), file unlinked.
        cache.remove_path(0, &path).expect("remove");
        // Cached again: a new file of the same name with only its first block.
        let o = cache.object(&key).expect("object");
        o.write_blocks(0, &data[..BLOCK as usize]).expect("write");
        cache.flush().expect("flush");
        mount.disk().cut_now();
    }
    mount.reboot();
    let (_meta, cache) = open_cache(&dir);
    if let Some(o) = cache.cached_object(&key).expect("lookup") {
        for i in 0..3u64 {
            if !o.missing(i * BLOCK, BLOCK).is_empty() {
                continue;
            }
            let got = o.read_bytes(i * BLOCK, BLOCK as usize).expect("read");
            assert!(
                got == data[(i * BLOCK) as usize..((i + 1) * BLOCK) as usize],
                "block {i} is served from the new file after a power cut, but holds {}",
                if got.iter().all(|b| *b == 0) {
                    "zeros (a hole)"
                } else {
                    "other bytes"
                }
            );
        }
    }
}
