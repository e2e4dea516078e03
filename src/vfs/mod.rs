//! The filesystem logic, free of fuser types: inodes, areas, handles, the read path (block
//! cache) and the write path (staging, upload). The FUSE adapter (`fuse/`) calls these async
//! methods from tasks spawned per request; none of them blocks a FUSE thread, and blocking file
//! and database work runs on tokio's blocking pool.
//!
//! - **Tree** (`tree.rs`): inodes in memory, each with parent and name. A directory's listing
//!   is trusted for `dir_ttl`; after that the next access lists it again (PROPFIND Depth 1), and
//!   the listing is saved in the metadata store so a restart or an outage still shows the tree.
//!   Only a positive 404 from the server removes an entry; an unreachable server never does.
//! - **Reads**: a handle reads one version (the ETag at open) through the block cache; missing
//!   blocks are fetched by ranged GET with `If-Match`, so old and new bytes never mix. A read
//!   that downloads its own bytes is answered from them and stores them after (a small file's
//!   first read also makes its cache object meanwhile); single flight and sequential read-ahead
//!   are in `read.rs`. Walks are read ahead: `opendir` lists the next sibling directories,
//!   small files opened in name order fetch the next ones. A full local disk degrades reads to
//!   uncached downloads, never to errors. How the kernel serves each open (its page cache, or
//!   passthrough of a complete cache file in read-only areas) is `io_mode.rs`.
//! - **Writes** (`write.rs`, `writeback.rs`): staged whole locally; flush/fsync/close make the
//!   file durable on local disk and queue it (`queue.rs`); upload workers send it later with
//!   conditional requests (`upload.rs`), keeping both versions on a conflict (`conflict.rs`).
//!   The uploaded file then becomes the cached copy of the new version.
//!
//! Lock order: a directory's listing lock or a node's staging lock (async, per inode) → `tree`
//! (sync, never held across `.await`) → `Staged::state`; `tree` → `fetching_ahead`. `handles`
//! is taken alone, never with `tree`.

mod conflict;
pub mod error;
mod io_mode;
pub mod queue;
pub mod read;
pub mod status;
mod tree;
pub mod types;
mod upload;
mod write;
mod writeback;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

pub use error::{VfsError, VfsResult};
pub use queue::UploadOptions;
pub use types::*;

use crate::cache::{BlockCache, CacheObject, ObjectKey, ObjectState, OpenGuard};
use crate::meta::{AreaId, EntryRecord, MetaStore};
use crate::remote::{ByteRange, ETag, Entry, EntryKind, Quota, Remote, RemoteError, RemotePath};
use io_mode::{HandleIo, Want};
use tree::{Node, Tree};
use write::{Staged, StagedState};

/// One remote root shown in the mount.
pub struct AreaSpec {
    /// Folder name at the mount's root (ignored when the single area is the root).
    pub name: String,
    pub remote: Arc<dyn Remote>,
    pub read_only: bool,
}

/// Options of the filesystem.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// How long a directory listing (and the kernel's entry/attr caches) is trusted.
    pub dir_ttl: Duration,
    /// Owner shown for every file.
    pub uid: u32,
    pub gid: u32,
    /// The whole mount is read-only.
    pub read_only: bool,
    /// Show each area as a folder at the root (profiles); with false, the single area is the root.
    pub areas_as_folders: bool,
    /// The upload queue.
    pub upload: UploadOptions,
    /// Use FUSE passthrough for cached large files of read-only areas where the kernel
    /// allows it (see `io_mode.rs`); the FUSE adapter says at mount time whether it does.
    pub passthrough: bool,
}

/// Everything needed to open the filesystem.
pub struct VfsSetup {
    pub areas: Vec<AreaSpec>,
    pub opts: VfsOptions,
    /// Holds `meta.db`, `objects/` (block cache) and `staging/` (files being written).
    pub cache_dir: PathBuf,
    /// Budget of clean cached data, in bytes.
    pub cache_size: u64,
}

/// Age after which anyone's temporary upload file seen in a listing counts as abandoned.
const STRAY_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Block size of the cache: the unit of presence and of the smallest download. Small, so a
/// random 4 KiB read costs one 16 KiB GET: what a cold random read costs is the server's time
/// per request, which grows with the range (Apache on loopback here: 0.46 ms for 16 KiB,
/// 0.55 ms for 64 KiB, 0.96 ms for 128 KiB). Sequential reads download many blocks per GET
/// anyway; the presence bitmap costs 8 KiB per GiB of file.
pub const BLOCK_SIZE: u64 = 16 << 10;
/// A demand read that must download a run of at most this many bytes (and is the only one
/// downloading it) is answered from the downloaded bytes; storing them in the cache happens
/// after, off the read's path.
const SERVE_FROM_DOWNLOAD_MAX: u64 = 1 << 20;
/// Files up to this size are downloaded whole on their first read (one GET).
pub const SMALL_FILE: u64 = 1 << 20;
/// Reads from the cache up to this size run on the async worker itself (see `read_object`).
const INLINE_READ_MAX: usize = 1 << 20;
/// Sibling directories listed ahead when a directory is read (see `list_siblings_ahead`).
const SIBLINGS_AHEAD: usize = 8;
/// Small files fetched ahead of a walk at once, for the whole mount (see `files_ahead`).
const FILES_AHEAD: usize = 4;
/// No listing ahead when listings are trusted for less than this.
const MIN_TTL_AHEAD: Duration = Duration::from_secs(1);
/// Listings fetched ahead at once, for the whole mount.
const LISTINGS_AHEAD: usize = 4;
/// Directories with more entries than this get nothing read ahead among them (each open
/// scans the entries: a walk of n entries costs n² steps).
const SIBLINGS_SCAN_MAX: usize = 4096;
/// How long statfs trusts the last quota answer.
const QUOTA_TTL: Duration = Duration::from_secs(30);
/// After a failed listing, how long a stale listing is served before asking again.
const OFFLINE_RETRY: Duration = Duration::from_secs(5);

struct Area {
    name: String,
    remote: Arc<dyn Remote>,
    read_only: bool,
}

/// An open file.
struct Handle {
    ino: Ino,
    write: bool,
    /// The cached version a read handle reads (None for write handles: they read the staging).
    object: Option<(Arc<CacheObject>, OpenGuard)>,
    readahead: read::ReadAhead,
    /// How the kernel serves it (its count in the node's `io`).
    io: HandleIo,
}

/// The filesystem.
pub struct Vfs {
    opts: VfsOptions,
    areas: Vec<Area>,
    tree: Mutex<Tree>,
    meta: Arc<MetaStore>,
    cache: Arc<BlockCache>,
    staging_dir: PathBuf,
    handles: Mutex<HashMap<u64, Handle>>,
    dir_handles: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    next_staging: AtomicU64,
    /// Per-inode async locks: one listing refresh or one staging at a time.
    inode_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    /// Blocks being downloaded (single flight).
    inflight: read::Inflight,
    /// Bytes of background read-ahead in flight, for the whole mount.
    ra_budget: Arc<tokio::sync::Semaphore>,
    /// Permits for listings fetched ahead ([`LISTINGS_AHEAD`]).
    listings_ahead: Arc<tokio::sync::Semaphore>,
    /// Permits for small files fetched ahead ([`FILES_AHEAD`]).
    files_ahead: Arc<tokio::sync::Semaphore>,
    /// Files being fetched ahead now (taken after `tree` when both are held).
    fetching_ahead: Mutex<std::collections::HashSet<Ino>>,
    /// When a full local disk was last logged at warn.
    disk_full_warned: Mutex<Option<Instant>>,
    /// Passthrough works on this mount (asked for, and granted by the kernel).
    passthrough: std::sync::atomic::AtomicBool,
    /// Itself, for spawning read-ahead tasks.
    me: std::sync::Weak<Vfs>,
    /// Inodes whose kernel page cache holds a version the server no longer has; the FUSE
    /// adapter drains this and tells the kernel (outside any request handler).
    invalidate_tx: tokio::sync::mpsc::UnboundedSender<Ino>,
    invalidate_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Ino>>>,
    quota: Mutex<Option<(Instant, Quota)>>,
    /// The upload queue's schedule (its records are in `meta`).
    queue: Arc<queue::UploadQueue>,
    /// The root inode of each area.
    area_roots: Vec<Ino>,
    /// Changed files of an earlier run whose folder was not listed yet (so not in the tree).
    recovered: Mutex<HashMap<(AreaId, RemotePath), Arc<Staged>>>,
    /// Files whose changes were lost before this run (shown by `status`).
    problems: Mutex<Vec<(AreaId, RemotePath, String)>>,
    /// Random per run: staging file names never repeat across runs.
    run_id: u64,
    /// This cache's identity (`MetaStore::cache_id`), in the names of temporary uploads.
    temp_tag: String,
    /// Stray temporary uploads being deleted (so a listing does not start a second DELETE).
    sweeping: Mutex<std::collections::HashSet<(AreaId, RemotePath)>>,
}

impl Drop for Vfs {
    fn drop(&mut self) {
        self.queue.stop();
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The time to show when the server reports `server` for a node we knew as `known`: servers
/// keep whole seconds (getlastmodified), so within the same second our finer time stays and
/// times never step backwards by a fraction.
fn server_time(known: SystemTime, server: SystemTime) -> SystemTime {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    if secs(known) == secs(server) {
        known
    } else {
        server
    }
}

/// Whether a directory's server mtime `m` only reflects uploads of this mount into it (which
/// land after the change the user made, and must not move the time shown).
fn explained_by_us(n: &Node, m: SystemTime) -> bool {
    n.own_change_at
        .is_some_and(|own| m <= own + Duration::from_secs(1))
}

fn instant_of(t: SystemTime) -> Option<Instant> {
    let age = SystemTime::now().duration_since(t).unwrap_or_default();
    Instant::now().checked_sub(age)
}

fn check_name(name: &str) -> VfsResult<()> {
    if name.len() > crate::remote::path::NAME_MAX {
        return Err(VfsError::NameTooLong);
    }
    crate::remote::path::check_name(name).map_err(VfsError::Invalid)
}

fn record_of(e: &Entry) -> EntryRecord {
    EntryRecord {
        name: e.name().to_string(),
        kind: e.kind,
        size: e.size,
        mtime: e.mtime,
        etag: e.etag.clone(),
    }
}

fn kind_of(k: EntryKind) -> FileKind {
    match k {
        EntryKind::File => FileKind::File,
        EntryKind::Dir => FileKind::Dir,
    }
}

/// The node's current version as a cache key, and the ETag a download of it must match
/// (`None` when the server gives no ETags: the key's is then made up by [`version_of`]).
fn version_key(t: &Tree, ino: Ino) -> VfsResult<(ObjectKey, Option<ETag>)> {
    let n = t.get(ino).ok_or(VfsError::NotFound)?;
    let (area, path) = t.path(ino).ok_or(VfsError::NotFound)?;
    let key = ObjectKey {
        area,
        path,
        etag: version_of(n),
        size: n.size,
    };
    Ok((key, n.etag.clone()))
}

/// The version key of a file: its ETag, or a stand-in from size and mtime when the server gives
/// none (then reads are not conditional).
fn version_of(node: &Node) -> ETag {
    match &node.etag {
        Some(e) => e.clone(),
        None => ETag::stand_in(node.size, node.mtime),
    }
}

/// The `k` entries of `entries` first in name order, sorted; only those are copied.
fn first_by_name<'a>(
    entries: impl Iterator<Item = (&'a Box<str>, &'a Ino)>,
    k: usize,
) -> Vec<(&'a str, Ino)> {
    let mut v: Vec<(&str, Ino)> = entries.map(|(n, i)| (&**n, *i)).collect();
    if v.len() > k {
        v.select_nth_unstable(k);
        v.truncate(k);
    }
    v.sort_unstable();
    v
}

/// Stores downloaded `data` (starting at byte `data_start` of `obj`) for each of `claims`, on
/// the blocking pool; each claim is released when its bytes are in (waking its waiters). A
/// failed store is logged: the reader has its bytes, a later read downloads them again.
fn store_in_background(
    obj: &Arc<CacheObject>,
    claims: Vec<read::Claim>,
    data: Bytes,
    data_start: u64,
) {
    let o = obj.clone();
    tokio::task::spawn_blocking(move || {
        for claim in claims {
            let r = claim.bytes.clone();
            let piece = &data[(r.start - data_start) as usize..(r.end - data_start) as usize];
            if let Err(e) = o.write_blocks(r.start, piece) {
                match VfsError::from(e) {
                    e if e.is_local_disk_full() => tracing::debug!(error = %e, "local disk full"),
                    e => {
                        tracing::warn!(error = %e, "storing downloaded blocks in the cache failed")
                    }
                }
            }
            drop(claim);
        }
    });
}

/// Runs blocking work (SQLite, the cache's files) on tokio's blocking pool, never on an async
/// worker, and maps its error into the vfs's.
async fn off_thread<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> VfsResult<T>
where
    T: Send + 'static,
    E: Send + 'static,
    VfsError: From<E>,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VfsError::Io(std::io::Error::other(format!("blocking task failed: {e}"))))?
        .map_err(VfsError::from)
}

async fn meta_op<T: Send + 'static>(
    meta: &Arc<MetaStore>,
    f: impl FnOnce(&MetaStore) -> Result<T, crate::meta::MetaError> + Send + 'static,
) -> VfsResult<T> {
    let m = meta.clone();
    off_thread(move || f(&m)).await
}

impl Vfs {
    /// Opens the metadata store and block cache under `setup.cache_dir` (created if missing).
    pub fn new(setup: VfsSetup) -> VfsResult<Arc<Vfs>> {
        if setup.areas.is_empty() {
            return Err(VfsError::Invalid("no area to mount"));
        }
        std::fs::create_dir_all(&setup.cache_dir)?;
        let staging_dir = setup.cache_dir.join("staging");
        std::fs::create_dir_all(&staging_dir)?;
        let meta = Arc::new(MetaStore::open(&setup.cache_dir.join("meta.db"))?);
        let cache = Arc::new(BlockCache::open(
            &setup.cache_dir.join("objects"),
            setup.cache_size,
            BLOCK_SIZE,
            meta.clone(),
        )?);
        Self::with_parts(setup.areas, setup.opts, meta, cache, staging_dir)
    }

    /// Builds the filesystem on an open store and cache (tests use small block sizes).
    pub fn with_parts(
        areas: Vec<AreaSpec>,
        opts: VfsOptions,
        meta: Arc<MetaStore>,
        cache: Arc<BlockCache>,
        staging_dir: PathBuf,
    ) -> VfsResult<Arc<Vfs>> {
        let as_folders = opts.areas_as_folders || areas.len() > 1;
        let t0 = now();
        let mut root = Node::new(ROOT_INO, "", None, FileKind::Dir);
        root.mtime = t0;
        let tree = if as_folders {
            root.dir.as_mut().expect("dir").listed_at = Some(Instant::now());
            let mut tree = Tree::new(root);
            for (i, a) in areas.iter().enumerate() {
                let mut n = Node::new(ROOT_INO, &a.name, Some(i as AreaId), FileKind::Dir);
                n.is_area_root = true;
                n.mtime = t0;
                tree.insert_at(ROOT_INO + 1 + i as u64, n);
            }
            tree
        } else {
            root.area = Some(0);
            root.is_area_root = true;
            Tree::new(root)
        };
        let (invalidate_tx, invalidate_rx) = tokio::sync::mpsc::unbounded_channel();
        let area_roots = if as_folders {
            (0..areas.len() as u64).map(|i| ROOT_INO + 1 + i).collect()
        } else {
            vec![ROOT_INO]
        };
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let queue = Arc::new(queue::UploadQueue::new(opts.upload.clone()));
        let temp_tag = meta.cache_id()?;
        let vfs = Arc::new_cyclic(|me| Vfs {
            me: me.clone(),
            invalidate_tx,
            invalidate_rx: Mutex::new(Some(invalidate_rx)),
            opts,
            areas: areas
                .into_iter()
                .map(|a| Area {
                    name: a.name,
                    remote: a.remote,
                    read_only: a.read_only,
                })
                .collect(),
            tree: Mutex::new(tree),
            meta,
            cache,
            staging_dir,
            handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            next_staging: AtomicU64::new(1),
            inode_locks: Mutex::new(HashMap::new()),
            inflight: read::Inflight::default(),
            ra_budget: read::budget(),
            listings_ahead: Arc::new(tokio::sync::Semaphore::new(LISTINGS_AHEAD)),
            files_ahead: Arc::new(tokio::sync::Semaphore::new(FILES_AHEAD)),
            fetching_ahead: Default::default(),
            disk_full_warned: Default::default(),
            passthrough: Default::default(),
            quota: Mutex::new(None),
            queue,
            area_roots,
            recovered: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
            run_id: u64::from_le_bytes(seed),
            temp_tag,
            sweeping: Mutex::new(Default::default()),
        });
        vfs.recover()?;
        vfs.spawn_upload_workers();
        Ok(vfs)
    }

    pub fn ttl(&self) -> Duration {
        self.opts.dir_ttl
    }

    /// The stream of inodes whose kernel page cache must be dropped because the server has a
    /// new version (taken once, by the FUSE adapter, which sends `inval_inode` for each).
    pub fn take_invalidations(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Ino>> {
        self.invalidate_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inode_lock(&self, ino: Ino) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.inode_locks.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 4096 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        m.entry(ino).or_default().clone()
    }

    fn remote(&self, area: AreaId) -> &Arc<dyn Remote> {
        &self.areas[area as usize].remote
    }

    /// Fails with EROFS when `ino`'s area (or the mount) is read-only; EPERM at the virtual root.
    fn check_writable(&self, ino: Ino) -> VfsResult<AreaId> {
        if self.opts.read_only {
            return Err(VfsError::ReadOnly);
        }
        let t = self.tree();
        let n = t.get(ino).ok_or(VfsError::NotFound)?;
        let area = n
            .area
            .ok_or(VfsError::NotPermitted("the root holds only the areas"))?;
        if self.areas[area as usize].read_only {
            return Err(VfsError::ReadOnly);
        }
        Ok(area)
    }

    fn node_path(&self, ino: Ino) -> VfsResult<(AreaId, RemotePath)> {
        self.tree().path(ino).ok_or(VfsError::NotFound)
    }

    /// Nothing can be written at `n`: a read-only mount or area, or the root above the areas.
    fn is_read_only(&self, n: &Node) -> bool {
        self.opts.read_only || n.area.is_none_or(|a| self.areas[a as usize].read_only)
    }

    fn attr_of(&self, ino: Ino, n: &Node) -> Attr {
        let read_only = self.is_read_only(n);
        let (size, mtime) = match &n.staged {
            Some(s) => (s.state().size, n.mtime),
            None => (n.size, n.mtime),
        };
        let mtime = n.local_mtime.unwrap_or(mtime);
        let perm = match (n.kind, read_only) {
            (FileKind::Dir, false) => 0o755,
            (FileKind::Dir, true) => 0o555,
            (FileKind::File, false) => 0o644,
            (FileKind::File, true) => 0o444,
        };
        Attr {
            ino,
            kind: n.kind,
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            perm,
            nlink: match (n.kind, n.linked) {
                (_, false) => 0,
                (FileKind::Dir, true) => 2,
                (FileKind::File, true) => 1,
            },
            uid: self.opts.uid,
            gid: self.opts.gid,
            // Large files are read in 1 MiB requests (the kernel's read-ahead): programs that
            // size their reads by this ask as much.
            blksize: if n.kind == FileKind::File && size > SMALL_FILE {
                1 << 20
            } else {
                128 << 10
            },
        }
    }

    fn attr(&self, ino: Ino) -> VfsResult<Attr> {
        let t = self.tree();
        let n = t.get(ino).ok_or(VfsError::NotFound)?;
        Ok(self.attr_of(ino, n))
    }

    // ---- listings -------------------------------------------------------------------------

    fn is_fresh(&self, n: &Node) -> bool {
        n.dir
            .as_ref()
            .and_then(|d| d.listed_at)
            .is_some_and(|t| t.elapsed() < self.opts.dir_ttl)
    }

    /// Makes sure `dir`'s children are known and no older than the TTL.
    async fn ensure_listed(&self, dir: Ino) -> VfsResult<()> {
        {
            let t = self.tree();
            let n = t.get(dir).ok_or(VfsError::NotFound)?;
            if n.kind != FileKind::Dir {
                return Err(VfsError::NotDir);
            }
            // A removed directory (still open) has nothing left to list.
            if n.area.is_none() || !n.linked || self.is_fresh(n) {
                return Ok(());
            }
        }
        let lock = self.inode_lock(dir);
        let _g = match lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // Being listed (or refreshed in the background). Offline, with a listing known,
                // do not wait for a request that may hang until its timeout.
                let known = self
                    .tree()
                    .get(dir)
                    .and_then(|n| n.dir.as_ref())
                    .is_some_and(|d| d.listed_at.is_some());
                if known && self.queue.is_offline() {
                    return Ok(());
                }
                lock.lock().await
            }
        };
        let (area, path, known) = {
            let t = self.tree();
            let n = t.get(dir).ok_or(VfsError::NotFound)?;
            if self.is_fresh(n) {
                return Ok(());
            }
            let (area, path) = t.path(dir).ok_or(VfsError::NotFound)?;
            (
                area,
                path,
                n.dir.as_ref().is_some_and(|d| d.listed_at.is_some()),
            )
        };
        // Nothing in memory yet: a listing saved by an earlier run may still be fresh.
        let mut saved = None;
        if !known {
            let p = path.clone();
            if let Some((at, entries)) =
                meta_op(&self.meta, move |m| m.load_listing(area, &p)).await?
            {
                let fresh = SystemTime::now()
                    .duration_since(at)
                    .is_ok_and(|age| age < self.opts.dir_ttl);
                if fresh {
                    tracing::debug!(dir = %path, entries = entries.len(), "saved listing still fresh");
                    let at = instant_of(at);
                    let _ = self.merge_listing(dir, &entries, at, at);
                    return Ok(());
                }
                saved = Some(entries);
            }
        }
        if self.queue.is_offline() && (known || saved.is_some()) {
            // The server did not answer lately: answer at once from what is known (never make
            // a program wait for a dead network each time), and ask again in the background.
            if let Some(entries) = &saved {
                let _ = self.merge_listing(dir, entries, None, None);
            }
            self.retry_listing_later(dir);
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(async move {
                    if let Err(e) = me.relist_in_background(dir).await {
                        tracing::debug!(error = %e, "background listing failed");
                    }
                });
            }
            return Ok(());
        }
        self.list_now(dir, area, path, known, saved).await
    }

    /// A directory is being read, maybe by a walk of the tree (`find`, `du`, a file manager):
    /// starts listing, in the background, the next few of its sibling directories (in name
    /// order after it, the order a walk takes) whose listing is not fresh. At most
    /// [`SIBLINGS_AHEAD`] per call and [`LISTINGS_AHEAD`] at once for the mount (more are
    /// simply not started); nothing under a parent of more than [`SIBLINGS_SCAN_MAX`] entries.
    fn list_siblings_ahead(&self, dir: Ino) {
        // Offline, or listings trusted too briefly to be of use when the walk gets there.
        if self.queue.is_offline() || self.opts.dir_ttl < MIN_TTL_AHEAD {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let next: Vec<Ino> = {
            let t = self.tree();
            let Some(n) = t.get(dir).filter(|n| !n.is_area_root && n.area.is_some()) else {
                return;
            };
            let Some(siblings) = t.get(n.parent).and_then(|p| p.dir.as_ref()) else {
                return;
            };
            if siblings.children.len() > SIBLINGS_SCAN_MAX {
                return;
            }
            let later = siblings
                .children
                .iter()
                .filter(|(name, _)| **name > n.name)
                .filter(|(_, ino)| {
                    t.get(**ino)
                        .is_some_and(|c| c.kind == FileKind::Dir && !self.is_fresh(c))
                });
            first_by_name(later, SIBLINGS_AHEAD)
                .into_iter()
                .map(|(_, ino)| ino)
                .collect()
        };
        for sibling in next {
            let Ok(permit) = self.listings_ahead.clone().try_acquire_owned() else {
                return;
            };
            let me = me.clone();
            tokio::spawn(async move {
                if let Err(e) = me.ensure_listed(sibling).await {
                    tracing::debug!(error = %e, "listing ahead failed");
                }
                drop(permit);
            });
        }
    }

    /// Lists `dir` again (holding its lock), whatever its age: the background refresh of an
    /// offline mount.
    async fn relist_in_background(&self, dir: Ino) -> VfsResult<()> {
        let lock = self.inode_lock(dir);
        let _g = lock.lock().await;
        let (area, path) = self.node_path(dir)?;
        self.list_now(dir, area, path, true, None).await
    }

    /// After a failed listing: the known one is served for [`OFFLINE_RETRY`] before the next try.
    fn retry_listing_later(&self, dir: Ino) {
        let mut t = self.tree();
        let ttl = self.opts.dir_ttl;
        if let Some(d) = t.get_mut(dir).and_then(|n| n.dir.as_mut()) {
            d.listed_at = Instant::now()
                .checked_sub(ttl.saturating_sub(OFFLINE_RETRY))
                .or(Some(Instant::now()));
        }
    }

    /// Deletes, in the background, the temporary upload files in a fresh listing of `dir` that
    /// no upload will move into place: this cache's whose record is no longer queued (a crash
    /// came between the PUT and the MOVE), and anyone's older than [`STRAY_TEMP_AGE`]. They are
    /// hidden from listings but take space on the server. Another client's upload in progress
    /// is never touched: its name carries its own cache's identity, and it is young.
    fn sweep_stray_uploads(&self, area: AreaId, dir: &RemotePath, entries: &[EntryRecord]) {
        let now = SystemTime::now();
        for e in entries {
            let stray = match upload::temp_owner(&e.name) {
                upload::TempOwner::NotTemp => continue,
                upload::TempOwner::Cache { tag, id } if tag == self.temp_tag => {
                    !self.queue.has_id(id)
                }
                _ => e
                    .mtime
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > STRAY_TEMP_AGE),
            };
            if !stray || e.kind != EntryKind::File {
                continue;
            }
            let Ok(path) = dir.join(&e.name) else {
                continue;
            };
            let fresh = self
                .sweeping
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((area, path.clone()));
            let Some(me) = self.me.upgrade().filter(|_| fresh) else {
                continue;
            };
            tokio::spawn(async move {
                match me.remote(area).delete(&path).await {
                    Ok(()) | Err(RemoteError::NotFound { .. }) => {
                        tracing::info!(file = %path, "removed a temporary upload file left behind")
                    }
                    Err(e) => {
                        tracing::debug!(file = %path, error = %e, "could not remove a stray temporary upload")
                    }
                }
                me.sweeping
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(area, path));
            });
        }
    }

    /// Asks the server for `dir`'s listing and applies it (the caller holds the dir's lock).
    async fn list_now(
        &self,
        dir: Ino,
        area: AreaId,
        path: RemotePath,
        known: bool,
        saved: Option<Vec<EntryRecord>>,
    ) -> VfsResult<()> {
        let requested = Instant::now();
        match self.remote(area).list(&path).await {
            Ok(listing) => {
                self.queue.online();
                let records: Vec<EntryRecord> = listing.children.iter().map(record_of).collect();
                tracing::debug!(dir = %path, entries = records.len(), "listed");
                {
                    let mut t = self.tree();
                    if let Some(n) = t.get_mut(dir) {
                        if let Some(m) = listing.dir.mtime.filter(|m| !explained_by_us(n, *m)) {
                            n.mtime = server_time(n.mtime, m);
                        }
                    }
                }
                let gone = self.merge_listing(dir, &records, Some(Instant::now()), Some(requested));
                self.sweep_stray_uploads(area, &path, &records);
                if let Err(e) = self.forget_resolved_conflicts(area, gone).await {
                    tracing::warn!(error = %e, "cannot forget resolved conflicts");
                }
                let listed = SystemTime::now();
                let saved = meta_op(&self.meta, move |m| {
                    m.save_listing(area, &path, listed, &records)
                })
                .await;
                match saved {
                    // Kept for offline use and the next start; browsing goes on without it.
                    Err(e) if e.is_local_disk_full() => self.local_disk_full(&e),
                    other => other?,
                }
                Ok(())
            }
            Err(RemoteError::NotFound { .. }) | Err(RemoteError::NotADirectory { .. }) => {
                let mut t = self.tree();
                let (parent, name) = match t.get(dir) {
                    Some(n) if !n.is_area_root => (n.parent, n.name.clone()),
                    _ => return Err(VfsError::NotFound),
                };
                t.unlink(parent, &name);
                Err(VfsError::NotFound)
            }
            Err(e) if e.is_transient() => {
                let was_offline = self.queue.is_offline();
                self.queue.offline(e.to_string());
                // Offline: serve what we know, and ask again a little later.
                if let Some(entries) = saved {
                    let _ = self.merge_listing(dir, &entries, None, None);
                }
                let something_known = known || {
                    let t = self.tree();
                    let n = t.get(dir).ok_or(VfsError::NotFound)?;
                    let d = n.dir.as_ref().ok_or(VfsError::NotDir)?;
                    d.listed_at.is_some() || !d.children.is_empty()
                };
                if !something_known {
                    return Err(e.into());
                }
                if was_offline {
                    tracing::debug!(error = %e, dir = %path, "still unreachable");
                } else {
                    tracing::warn!(error = %e, dir = %path, "server unreachable; showing the last known listing");
                }
                self.retry_listing_later(dir);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a listing to `dir`: updates and adds children, drops those the server no longer
    /// has (unless they hold local changes). `requested`: when the listing was asked for (None:
    /// long ago); files this mount uploaded since are newer than it and are left alone.
    fn merge_listing(
        &self,
        dir: Ino,
        entries: &[EntryRecord],
        listed_at: Option<Instant>,
        requested: Option<Instant>,
    ) -> Vec<RemotePath> {
        let newer_here = |n: &Node| {
            n.uploaded_at
                .is_some_and(|u| requested.is_none_or(|r| u >= r))
        };
        let mut t = self.tree();
        let Some(area) = t.get(dir).and_then(|n| n.area) else {
            return Vec::new();
        };
        let mut seen: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity(entries.len());
        for e in entries {
            if e.name.starts_with(upload::TEMP_PREFIX) {
                // Our own upload in progress (or one a crash left behind).
                continue;
            }
            seen.insert(&e.name);
            let kind = kind_of(e.kind);
            if let Some(ino) = t.child(dir, &e.name) {
                let n = t.get_mut(ino).expect("child exists");
                if n.has_local_state() || newer_here(n) {
                    continue;
                }
                if n.kind == kind {
                    let same_version = n.etag.is_some() && n.etag == e.etag;
                    if !same_version && n.kernel_etag.is_some() && n.kernel_etag != e.etag {
                        // The kernel caches pages of the old version: have them dropped.
                        n.kernel_etag = None;
                        let _ = self.invalidate_tx.send(ino);
                    }
                    if n.etag.is_some() && !same_version {
                        n.local_mtime = None;
                    }
                    n.size = e.size;
                    n.etag = e.etag.clone();
                    // The version we know (often our own upload): keep the time we showed.
                    if let (Some(m), false) = (e.mtime, same_version) {
                        if !explained_by_us(n, m) {
                            n.mtime = server_time(n.mtime, m);
                        }
                    }
                    continue;
                }
                // A file became a directory or the reverse: a new inode.
                t.unlink(dir, &e.name);
            }
            let mut n = Node::new(dir, &e.name, Some(area), kind);
            n.size = e.size;
            n.etag = e.etag.clone();
            n.mtime = e.mtime.unwrap_or(SystemTime::UNIX_EPOCH);
            t.insert(n);
        }
        let gone: Vec<Box<str>> = t
            .get(dir)
            .and_then(|n| n.dir.as_ref())
            .map(|d| {
                d.children
                    .iter()
                    .filter(|(name, _)| !seen.contains(&***name))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let dir_path = t.path(dir).map(|(_, p)| p);
        let mut removed = Vec::new();
        for name in gone {
            let keep = t
                .child(dir, &name)
                .and_then(|c| t.get(c))
                .is_some_and(|c| c.has_local_state() || newer_here(c));
            if !keep {
                t.unlink(dir, &name);
                if let Some(p) = dir_path.as_ref().and_then(|d| d.join(&name).ok()) {
                    removed.push(p);
                }
            }
        }
        self.attach_recovered(&mut t, dir);
        if let Some(d) = t.get_mut(dir).and_then(|n| n.dir.as_mut()) {
            d.listed_at = listed_at.or(d.listed_at);
        }
        removed
    }

    /// After a listing from the server (its word): forgets the remembered conflicts whose copy
    /// is at or below one of `gone` (deleted there: the user resolved the conflict elsewhere),
    /// so they leave `status`.
    async fn forget_resolved_conflicts(
        &self,
        area: AreaId,
        gone: Vec<RemotePath>,
    ) -> VfsResult<()> {
        let gone: Vec<RemotePath> = gone
            .into_iter()
            .filter(|p| self.queue.remove_conflicts(area, p))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        meta_op(&self.meta, move |m| {
            for p in &gone {
                m.remove_conflicts(area, p)?;
            }
            Ok(())
        })
        .await
    }

    /// Refreshes the parent listing of `ino` when it is older than the TTL (errors ignored:
    /// the last known state is served).
    async fn revalidate(&self, ino: Ino) {
        let parent = {
            let t = self.tree();
            match t.get(ino) {
                Some(n) if n.linked && !n.is_area_root && n.parent != ino => n.parent,
                _ => return,
            }
        };
        if let Err(e) = self.ensure_listed(parent).await {
            tracing::debug!(error = %e, "revalidation failed");
        }
    }

    // ---- lookups and attributes -------------------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &str) -> VfsResult<Attr> {
        if name.len() > crate::remote::path::NAME_MAX {
            return Err(VfsError::NameTooLong);
        }
        self.ensure_listed(parent).await?;
        let mut t = self.tree();
        let ino = t.child(parent, name).ok_or(VfsError::NotFound)?;
        let n = t.get_mut(ino).ok_or(VfsError::NotFound)?;
        n.lookups += 1;
        let n = t.get(ino).ok_or(VfsError::NotFound)?;
        Ok(self.attr_of(ino, n))
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let mut t = self.tree();
        if let Some(n) = t.get_mut(ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
        t.maybe_drop(ino);
    }

    pub async fn getattr(&self, ino: Ino) -> VfsResult<Attr> {
        self.revalidate(ino).await;
        self.attr(ino)
    }

    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> VfsResult<Attr> {
        let current = self.attr(ino)?;
        if let Some(mode) = set.mode {
            if (mode & 0o7777) as u16 != current.perm {
                return Err(VfsError::NotPermitted(
                    "WebDAV has no permissions; modes are fixed",
                ));
            }
        }
        if set.uid.is_some_and(|u| u != self.opts.uid)
            || set.gid.is_some_and(|g| g != self.opts.gid)
        {
            return Err(VfsError::NotPermitted("WebDAV has no file owners"));
        }
        if let Some(size) = set.size {
            if current.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
            self.check_writable(ino)?;
            // stage() counts us as a writer until the size is set.
            let staged = self.stage(ino, size == 0).await?;
            {
                let _change = self.changing(&staged).await;
                let st = staged.clone();
                let resized = write::blocking(move || st.file.set_len(size)).await;
                let mut s = staged.state();
                s.writers -= 1;
                if resized.is_ok() {
                    s.size = size;
                    s.version += 1;
                }
                drop(s);
                resized?;
            }
            self.touch_mtime(ino);
            let has_writer = fh.is_some_and(|fh| {
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&fh)
                    .is_some_and(|h| h.write)
            }) || staged.state().writers > 0;
            if !has_writer {
                // truncate(2) on a path: nothing will close it; commit now.
                self.commit(ino, &staged).await?;
            }
        }
        if let Some(mtime) = set.mtime {
            let path = {
                let mut t = self.tree();
                let n = t.get_mut(ino).ok_or(VfsError::NotFound)?;
                n.local_mtime = Some(mtime);
                t.path(ino)
            };
            if let Some((area, p)) = path {
                meta_op(&self.meta, move |m| {
                    m.set_local_mtime(area, &p, Some(mtime))
                })
                .await?;
            }
        }
        self.attr(ino)
    }

    /// A directory's entries changed here: its mtime is now (until the server says otherwise).
    fn touch_dir(&self, dir: Ino) {
        let mut t = self.tree();
        if let Some(n) = t.get_mut(dir) {
            n.mtime = now();
        }
    }

    fn touch_mtime(&self, ino: Ino) {
        let mut t = self.tree();
        if let Some(n) = t.get_mut(ino) {
            n.mtime = now();
            n.local_mtime = None;
        }
    }

    // ---- directories ------------------------------------------------------------------------

    pub async fn opendir(&self, ino: Ino) -> VfsResult<u64> {
        self.ensure_listed(ino).await?;
        self.list_siblings_ahead(ino);
        let entries = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            let d = n.dir.as_ref().ok_or(VfsError::NotDir)?;
            let mut v = Vec::with_capacity(d.children.len() + 2);
            v.push(DirEntry {
                name: ".".into(),
                attr: self.attr_of(ino, n),
            });
            let parent = t.get(n.parent).unwrap_or(n);
            v.push(DirEntry {
                name: "..".into(),
                attr: self.attr_of(n.parent, parent),
            });
            let mut kids: Vec<(&Box<str>, &Ino)> = d.children.iter().collect();
            kids.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (name, &c) in kids {
                if let Some(cn) = t.get(c) {
                    v.push(DirEntry {
                        name: name.to_string(),
                        attr: self.attr_of(c, cn),
                    });
                }
            }
            v
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(entries));
        Ok(fh)
    }

    /// Entries of an open directory after `offset` (0 = from the start, including `.` and
    /// `..`); each comes with the offset of the entry after it.
    pub async fn readdir(
        &self,
        _ino: Ino,
        fh: u64,
        offset: u64,
    ) -> VfsResult<Vec<(u64, DirEntry)>> {
        let entries = self
            .dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(VfsError::BadHandle)?;
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dir_handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }

    pub async fn mkdir(&self, parent: Ino, name: &str) -> VfsResult<Attr> {
        check_name(name)?;
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        if self.tree().child(parent, name).is_some() {
            return Err(VfsError::Exists);
        }
        let (_, ppath) = self.node_path(parent)?;
        let path = ppath.join(name)?;
        self.remote(area).mkdir(&path).await.map_err(|e| match e {
            RemoteError::AlreadyExists { .. } => VfsError::Exists,
            e => e.into(),
        })?;
        let ino = {
            let mut t = self.tree();
            let mut n = Node::new(parent, name, Some(area), FileKind::Dir);
            n.mtime = now();
            n.dir.as_mut().expect("dir").listed_at = Some(Instant::now());
            n.lookups = 1;
            t.insert(n)
        };
        self.touch_dir(parent);
        let rec = EntryRecord {
            name: name.to_string(),
            kind: EntryKind::Dir,
            size: 0,
            mtime: Some(now()),
            etag: None,
        };
        meta_op(&self.meta, move |m| m.upsert_entry(area, &path, &rec)).await?;
        self.attr(ino)
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        let ino = self.tree().child(parent, name).ok_or(VfsError::NotFound)?;
        {
            let t = self.tree();
            if t.get(ino).map(|n| n.kind) != Some(FileKind::Dir) {
                return Err(VfsError::NotDir);
            }
        }
        self.ensure_listed(ino).await?;
        let (_, path) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.dir.as_ref().is_some_and(|d| !d.children.is_empty()) {
                return Err(VfsError::NotEmpty);
            }
            t.path(ino).ok_or(VfsError::NotFound)?
        };
        if self.queue.has_under(area, &path) {
            // Changed files below, not yet uploaded.
            return Err(VfsError::NotEmpty);
        }
        match self.remote(area).delete(&path).await {
            Ok(()) | Err(RemoteError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.tree().unlink(parent, name);
        self.touch_dir(parent);
        self.forget_remote_path(area, path).await
    }

    /// Drops metadata and cached blocks of a removed path (and below).
    async fn forget_remote_path(&self, area: AreaId, path: RemotePath) -> VfsResult<()> {
        let p = path.clone();
        meta_op(&self.meta, move |m| m.remove_entry(area, &p)).await?;
        let cache = self.cache.clone();
        off_thread(move || cache.remove_path(area, &path)).await?;
        Ok(())
    }

    // ---- files --------------------------------------------------------------------------------

    pub async fn open(&self, ino: Ino, mode: OpenMode) -> VfsResult<Opened> {
        {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
        }
        let mut handle = if mode.write {
            self.check_writable(ino)?;
            self.stage(ino, mode.truncate).await?;
            if mode.truncate {
                self.touch_mtime(ino);
            }
            Handle {
                ino,
                write: true,
                object: None,
                readahead: Default::default(),
                io: HandleIo::Cached,
            }
        } else {
            self.revalidate(ino).await;
            // A small file's cache object is made by its first read, beside its download
            // (`read_small`), not here: opening it costs one index lookup.
            let small = self.tree().get(ino).is_some_and(|n| n.size <= SMALL_FILE);
            if small {
                self.files_ahead(ino);
            }
            // Being fetched ahead: the object is made here, so the read waits for that download
            // (one fetch per block) instead of starting its own.
            let lazy = small && !self.lock_fetching_ahead().contains(&ino);
            let object = match self.object_lookup(ino, !lazy).await {
                // No room for a cache entry: the handle reads from the server (see `read`).
                Err(e) if e.is_local_disk_full() => {
                    self.local_disk_full(&e);
                    None
                }
                other => other?,
            };
            Handle {
                ino,
                write: false,
                object,
                readahead: Default::default(),
                io: HandleIo::Cached,
            }
        };
        let (keep_cache, io) = {
            let passthrough = self.passthrough.load(Ordering::Relaxed);
            let mut t = self.tree();
            match t.get_mut(ino) {
                Some(n) => {
                    // Only where nobody can open the file for writing (see `io_mode.rs`).
                    let enabled = passthrough && self.is_read_only(n);
                    let want = match &handle.object {
                        Some((o, _)) if !handle.write && n.size > SMALL_FILE => Want::LargeRead(o),
                        _ => Want::PageCache,
                    };
                    let (kind, io) = n.io.choose(enabled, want);
                    handle.io = kind;
                    // The kernel may keep its pages when they hold the version the server
                    // still has (an open that does not keep them drops them).
                    let keep =
                        kind == HandleIo::Cached && n.etag.is_some() && n.kernel_etag == n.etag;
                    n.kernel_etag = n.etag.clone();
                    (keep, io)
                }
                None => (false, OpenIo::Cached),
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, handle);
        Ok(Opened { fh, keep_cache, io })
    }

    /// Says whether passthrough works on this mount (the FUSE adapter, once the kernel has
    /// answered; off when the options switch it off).
    pub fn set_passthrough(&self, available: bool) {
        let on = available && self.opts.passthrough;
        self.passthrough.store(on, Ordering::Relaxed);
        tracing::debug!(on, "passthrough for cached large files");
    }

    /// The kernel refused the passthrough open `fh`: it is answered through the page cache
    /// instead, and passthrough is not offered again on this mount.
    pub fn passthrough_refused(&self, ino: Ino, fh: u64) {
        self.passthrough.store(false, Ordering::Relaxed);
        // One lock at a time (`handles` is never held with `tree`).
        let was_passthrough = {
            let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            match h.get_mut(&fh) {
                Some(h) if h.io == HandleIo::Passthrough => {
                    h.io = HandleIo::Cached;
                    true
                }
                _ => false,
            }
        };
        if was_passthrough {
            if let Some(n) = self.tree().get_mut(ino) {
                n.io.passthrough_refused();
            }
        }
    }

    /// The cache object of the node's current version (None while the node is staged). The
    /// cache's index lives in SQLite: looked up on the blocking pool.
    async fn object_for(&self, ino: Ino) -> VfsResult<Option<(Arc<CacheObject>, OpenGuard)>> {
        self.object_lookup(ino, true).await
    }

    /// [`Vfs::object_for`], or with `create` false only an object the cache already has.
    async fn object_lookup(
        &self,
        ino: Ino,
        create: bool,
    ) -> VfsResult<Option<(Arc<CacheObject>, OpenGuard)>> {
        let key = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.staged.is_some() || n.pending_create {
                return Ok(None);
            }
            version_key(&t, ino)?.0
        };
        let cache = self.cache.clone();
        let found = off_thread(move || {
            let obj = if create {
                Some(cache.object(&key)?)
            } else {
                cache.cached_object(&key)?
            };
            Ok::<_, crate::cache::CacheError>(obj.map(|o| {
                let guard = o.open_guard();
                (o, guard)
            }))
        })
        .await?;
        Ok(found)
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> VfsResult<Bytes> {
        let object = {
            let h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            let h = h.get(&fh).ok_or(VfsError::BadHandle)?;
            if h.ino != ino {
                return Err(VfsError::BadHandle);
            }
            h.object.as_ref().map(|(o, _)| o.clone())
        };
        // Staged content wins: it is what this mount last wrote.
        let (staged, small) = {
            let t = self.tree();
            let n = t.get(ino);
            (
                n.and_then(|n| n.staged.clone()),
                n.is_some_and(|n| n.size <= SMALL_FILE),
            )
        };
        if let Some(st) = staged {
            let len = {
                let s = st.state();
                s.size.saturating_sub(offset).min(u64::from(size)) as usize
            };
            if len == 0 {
                return Ok(Bytes::new());
            }
            return Ok(Bytes::from(write::pread(st, offset, len).await?));
        }
        let obj = match object {
            Some(o) => o,
            None if small => return self.read_small(ino, fh, offset, size).await,
            None => match self.object_for(ino).await {
                // Kept by the handle: its next reads need no index lookup.
                Ok(Some((o, guard))) => {
                    self.attach_object(fh, o.clone(), guard);
                    o
                }
                Ok(None) => return Ok(Bytes::new()),
                Err(e) if e.is_local_disk_full() => {
                    self.local_disk_full(&e);
                    return self.read_uncached(ino, offset, size).await;
                }
                Err(e) => return Err(e),
            },
        };
        let end = offset.saturating_add(u64::from(size)).min(obj.size());
        let ahead = {
            let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            h.get_mut(&fh)
                .and_then(|h| h.readahead.on_read(offset, end, obj.size()))
        };
        if let Some(range) = ahead {
            if let Some(from) = self.prefetch(ino, &obj, range) {
                let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(h) = h.get_mut(&fh) {
                    h.readahead.unscheduled_from(from);
                }
            }
        }
        match self.read_object(ino, &obj, offset, u64::from(size)).await {
            Err(e) if e.is_local_disk_full() => {
                self.local_disk_full(&e);
                self.read_uncached(ino, offset, size).await
            }
            other => other,
        }
    }

    /// Small files are being opened one after the other in name order in a directory (a walk:
    /// `cp -r`, `tar`, `grep -r`, `cat dir/*`): fetches the next few small files of the
    /// directory (in name order after the one opened now) into the cache in the background,
    /// each once. At most [`FILES_AHEAD`] at once for the mount (more are not started now but
    /// on a later open); nothing in directories of more than [`SIBLINGS_SCAN_MAX`] entries.
    fn files_ahead(&self, ino: Ino) {
        if self.queue.is_offline() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let mut t = self.tree();
        let Some((parent, name)) = t.get(ino).map(|n| (n.parent, n.name.clone())) else {
            return;
        };
        let Some(dir) = t.get_mut(parent).and_then(|p| p.dir.as_mut()) else {
            return;
        };
        let walking = dir.last_open.as_deref().is_some_and(|l| *l < *name);
        dir.last_open = Some(name.clone());
        if !walking || dir.children.len() > SIBLINGS_SCAN_MAX {
            return;
        }
        // Borrow the directory immutably while looking at its children.
        let Some(dir) = t.get(parent).and_then(|p| p.dir.as_ref()) else {
            return;
        };
        let from = match dir.ahead_to.as_deref() {
            Some(a) if *a > *name => a.to_string(),
            _ => name.to_string(),
        };
        let later = dir
            .children
            .iter()
            .filter(|(n, _)| ***n > *from)
            .filter(|(_, i)| {
                t.get(**i).is_some_and(|c| {
                    c.kind == FileKind::File
                        && c.size > 0
                        && c.size <= SMALL_FILE
                        && !c.has_local_state()
                })
            });
        let next: Vec<(Box<str>, Ino)> = first_by_name(later, FILES_AHEAD)
            .into_iter()
            .map(|(n, i)| (n.into(), i))
            .collect();
        let mut last = None;
        for (child_name, child) in next {
            let Ok(permit) = self.files_ahead.clone().try_acquire_owned() else {
                break;
            };
            if !self.lock_fetching_ahead().insert(child) {
                continue;
            }
            let me = me.clone();
            tokio::spawn(async move {
                if let Err(e) = me.fetch_whole(child).await {
                    tracing::debug!(error = %e, "fetching ahead failed");
                }
                me.lock_fetching_ahead().remove(&child);
                drop(permit);
            });
            last = Some(child_name);
        }
        if let Some(d) = t.get_mut(parent).and_then(|p| p.dir.as_mut()) {
            if last.is_some() {
                d.ahead_to = last;
            }
        }
    }

    fn lock_fetching_ahead(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Ino>> {
        self.fetching_ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Downloads a whole file into the cache (when not there yet), one GET.
    async fn fetch_whole(&self, ino: Ino) -> VfsResult<()> {
        let Some((obj, _guard)) = self.object_for(ino).await? else {
            return Ok(());
        };
        self.ensure_blocks(ino, &obj, 0, obj.size()).await
    }

    /// The first read of a small file the cache does not have: the whole file is downloaded
    /// while its cache object is made (one GET, and the object's creation off the critical
    /// path), the read is answered from the download, and the bytes are stored in the
    /// background. The object is given to the handle, so its next reads use the cache.
    async fn read_small(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> VfsResult<Bytes> {
        let (key, etag) = version_key(&self.tree(), ino)?;
        let file_size = key.size;
        let download = self.download(ino, &key, etag.as_ref(), 0..file_size);
        let (data, object) = if file_size == 0 {
            (Ok(Bytes::new()), self.object_for(ino).await)
        } else {
            tokio::join!(download, self.object_for(ino))
        };
        let data = data?;
        match object {
            // The version downloaded: keep it for the handle and store the bytes.
            Ok(Some((obj, guard))) if obj.key().etag == key.etag && obj.size() == file_size => {
                // The blocks no other download is storing already.
                let missing = obj.missing(0, file_size);
                let bs = self.cache.block_size();
                let plan = self
                    .inflight
                    .plan(obj.file_path(), &missing, bs, file_size.max(bs));
                store_in_background(&obj, plan.claimed, data.clone(), 0);
                self.attach_object(fh, obj, guard);
            }
            // Changed meanwhile (a new listing, a local write): the next read sees to it.
            Ok(_) => {}
            Err(e) if e.is_local_disk_full() => self.local_disk_full(&e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a cache object; the read is served from the download")
            }
        }
        let start = (offset.min(file_size)) as usize;
        let end = (offset.saturating_add(u64::from(size)).min(file_size)) as usize;
        Ok(data.slice(start..end))
    }

    /// Gives a read handle that had no cache object the one its read found or made.
    fn attach_object(&self, fh: u64, obj: Arc<CacheObject>, guard: OpenGuard) {
        let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.get_mut(&fh).filter(|h| !h.write && h.object.is_none()) {
            h.object = Some((obj, guard));
        }
    }

    /// A read straight from the server, kept nowhere: the local disk has no room for the cache.
    async fn read_uncached(&self, ino: Ino, offset: u64, size: u32) -> VfsResult<Bytes> {
        let (key, etag) = version_key(&self.tree(), ino)?;
        let end = offset.saturating_add(u64::from(size)).min(key.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.download(ino, &key, etag.as_ref(), offset..end).await
    }

    /// Logs that the local disk is full, at most once a minute (a full disk fails every
    /// store until space comes back).
    fn local_disk_full(&self, e: &VfsError) {
        let mut last = self
            .disk_full_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(error = %e, "the local disk is full: reads are served from the server without being cached");
        } else {
            tracing::debug!(error = %e, "local disk full");
        }
    }

    /// Reads from a cached version, fetching the missing blocks first.
    async fn read_object(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        offset: u64,
        len: u64,
    ) -> VfsResult<Bytes> {
        let end = offset.saturating_add(len).min(obj.size());
        if offset >= end {
            return Ok(Bytes::new());
        }
        // One GET for the whole small file rather than one per block.
        let need = if obj.size() <= SMALL_FILE {
            0..obj.size()
        } else {
            offset..end
        };
        obj.touch();
        if let Some((start, data)) = self.serve_from_download(ino, obj, need.clone()).await? {
            return Ok(data.slice((offset - start) as usize..(end - start) as usize));
        }
        self.ensure_blocks(ino, obj, need.start, need.end - need.start)
            .await?;
        let o = obj.clone();
        let n = (end - offset) as usize;
        // Bytes in the kernel's page cache (just downloaded, or read lately) are answered as a
        // view of the cache file (the kernel copies them once, into the reply); failing that
        // (no mapping), copied here on the async worker (tens of microseconds), which is
        // cheaper than a round trip through the blocking pool. Anything that would wait for
        // the disk goes to the pool.
        if let Some(b) = o.read_mapped(offset, n)? {
            return Ok(b);
        }
        let inline = if n <= INLINE_READ_MAX {
            o.read_bytes_nowait(offset, n)?
        } else {
            None
        };
        let buf = match inline {
            Some(b) => b,
            None => off_thread(move || o.read_bytes(offset, n)).await?,
        };
        Ok(Bytes::from(buf))
    }

    /// Starts background downloads of `range` (read-ahead), in pieces, within the mount's
    /// read-ahead budget. Returns where it stopped when the budget ran out (the rest is left
    /// to later reads).
    fn prefetch(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        range: std::ops::Range<u64>,
    ) -> Option<u64> {
        let me = self.me.upgrade()?;
        let bs = self.cache.block_size();
        let mut pos = range.start / bs * bs;
        while pos < range.end {
            let piece_end = (pos + read::CHUNK).min(range.end);
            if obj.missing(pos, piece_end - pos).is_empty() {
                pos = piece_end;
                continue;
            }
            let Ok(permit) = self
                .ra_budget
                .clone()
                .try_acquire_many_owned(read::permits(piece_end - pos))
            else {
                tracing::trace!("read-ahead budget exhausted");
                return Some(pos);
            };
            let (me, obj) = (me.clone(), obj.clone());
            tokio::spawn(async move {
                if let Err(e) = me.ensure_blocks(ino, &obj, pos, piece_end - pos).await {
                    tracing::debug!(error = %e, "read-ahead failed");
                }
                drop(permit);
            });
            pos = piece_end;
        }
        None
    }

    /// Makes sure the blocks of `[offset, offset+len)` are in `obj`: downloads the missing
    /// ones not already being downloaded (several GETs at once), and waits for the others.
    async fn ensure_blocks(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        offset: u64,
        len: u64,
    ) -> VfsResult<()> {
        let bs = self.cache.block_size();
        loop {
            let runs = obj.missing(offset, len);
            if runs.is_empty() {
                return Ok(());
            }
            let plan = self
                .inflight
                .plan(obj.file_path(), &runs, bs, 2 * read::CHUNK);
            let mut waits = plan.waits;
            if !plan.claimed.is_empty() {
                let results: Vec<VfsResult<()>> = futures_util::stream::iter(
                    plan.claimed
                        .into_iter()
                        .map(|claim| self.fetch_claimed(ino, obj, claim)),
                )
                .buffer_unordered(4)
                .collect()
                .await;
                for r in results {
                    r?;
                }
            }
            if !waits.is_empty() {
                // Woken when another download stores some blocks or ends, whatever its
                // outcome: the loop re-checks what is still missing.
                let woken = waits.iter_mut().map(|w| Box::pin(w.changed()));
                let _ = futures_util::future::select_all(woken).await;
            }
        }
    }

    /// The download half of a demand read that has `need` to fetch alone: when the missing
    /// part of `need` is one run of at most [`SERVE_FROM_DOWNLOAD_MAX`] bytes covering it and
    /// nobody else is downloading any of it, downloads that run and returns it (its start and
    /// bytes); the bytes are stored in the cache in the background, the claim held until they
    /// are (a failed store is logged: the read has its bytes, a later read downloads again).
    /// `None` when the general path must do it (cached already, bigger, or shared).
    async fn serve_from_download(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        need: std::ops::Range<u64>,
    ) -> VfsResult<Option<(u64, Bytes)>> {
        let runs = obj.missing(need.start, need.end - need.start);
        let [run] = runs.as_slice() else {
            return Ok(None);
        };
        if run.start > need.start
            || run.end < need.end
            || run.end - run.start > SERVE_FROM_DOWNLOAD_MAX
        {
            return Ok(None);
        }
        let bs = self.cache.block_size();
        let plan = self.inflight.plan(
            obj.file_path(),
            std::slice::from_ref(run),
            bs,
            2 * read::CHUNK,
        );
        if plan.claimed.len() != 1 || !plan.waits.is_empty() {
            // Shared with another download: the general path waits for it (the claims taken
            // here are dropped first).
            return Ok(None);
        }
        let claim = plan.claimed.into_iter().next().expect("one claim");
        let run = claim.bytes.clone();
        let key = obj.key();
        let expect = self.expected_etag(ino, key);
        let data = self.download(ino, key, expect, run.clone()).await?;
        store_in_background(obj, vec![claim], data.clone(), run.start);
        Ok(Some((run.start, data)))
    }

    /// Downloads a claimed run; the claim is released (waking waiters) when this ends.
    async fn fetch_claimed(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        claim: read::Claim,
    ) -> VfsResult<()> {
        let r = self.fetch_run(ino, obj, &claim).await;
        drop(claim);
        r
    }

    /// Downloads the block-aligned byte run of `claim` into `obj`, waking the claim's waiters
    /// after each stored piece.
    async fn fetch_run(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        claim: &read::Claim,
    ) -> VfsResult<()> {
        let run = claim.bytes.clone();
        let bs = self.cache.block_size();
        let key = obj.key();
        let expect = self.expected_etag(ino, key);
        let mut body = self.get_range(ino, key, expect, run.clone()).await?;
        let mut pos = run.start;
        // Written to the cache file in batches of whole blocks (about 1 MiB), each waking the
        // readers that wait for this run. The body's own pieces are written (`pwritev`), never
        // copied into one buffer; a piece across a block boundary is split (no copy either).
        let batch = bs.max(1 << 20);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut held = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.read_error(ino, e))?;
            held += chunk.len() as u64;
            parts.push(chunk);
            if held < batch {
                continue;
            }
            let whole = (held / bs) * bs;
            if whole > 0 {
                let rest = read::split_parts_at(&mut parts, whole);
                let data = std::mem::replace(&mut parts, rest);
                self.store_blocks(obj, pos, data).await?;
                claim.stored();
                pos += whole;
                held -= whole;
            }
        }
        if held > 0 {
            self.store_blocks(obj, pos, parts).await?;
            pos += held;
        }
        self.check_length(ino, key, pos, run.end)
    }

    /// Starts the GET of `range` of `key`'s file, conditional on `expect` when given.
    async fn get_range(
        &self,
        ino: Ino,
        key: &ObjectKey,
        expect: Option<&ETag>,
        range: std::ops::Range<u64>,
    ) -> VfsResult<crate::remote::ByteStream> {
        let remote = self.remote(key.area).clone();
        let resp = remote
            .read_range(
                &key.path,
                ByteRange::new(range.start, range.end - range.start),
                expect,
            )
            .await
            .map_err(|e| self.read_error(ino, e))?;
        Ok(resp.body)
    }

    /// Downloads `range` of `key`'s file whole into memory (conditional on `expect` when
    /// given).
    async fn download(
        &self,
        ino: Ino,
        key: &ObjectKey,
        expect: Option<&ETag>,
        range: std::ops::Range<u64>,
    ) -> VfsResult<Bytes> {
        let len = range.end - range.start;
        let mut body = self.get_range(ino, key, expect, range.clone()).await?;
        let mut buf = BytesMut::with_capacity(len as usize);
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| self.read_error(ino, e))?);
        }
        self.check_length(ino, key, range.start + buf.len() as u64, range.end)?;
        buf.truncate(len as usize);
        Ok(buf.freeze())
    }

    /// The ETag a download of `key` must match: its own, when the server gives ETags (without
    /// them the version is made up locally and the GET cannot be conditional).
    fn expected_etag<'k>(&self, ino: Ino, key: &'k ObjectKey) -> Option<&'k ETag> {
        let conditional = {
            let t = self.tree();
            t.get(ino).is_some_and(|n| n.etag.is_some())
        };
        conditional.then_some(&key.etag)
    }

    /// A body that ended at `got` before `want`: the file is shorter than its listing said.
    fn check_length(&self, ino: Ino, key: &ObjectKey, got: u64, want: u64) -> VfsResult<()> {
        if got >= want {
            return Ok(());
        }
        Err(self.read_error(
            ino,
            RemoteError::BadResponse {
                method: "GET".into(),
                url: key.path.to_string(),
                reason: format!("the file is shorter on the server than listed ({got} < {want})"),
            },
        ))
    }

    /// Stores the concatenation of `parts` at `offset` of `obj` (block-aligned, whole blocks
    /// but for the file's last), off the async workers.
    async fn store_blocks(
        &self,
        obj: &Arc<CacheObject>,
        offset: u64,
        parts: Vec<Bytes>,
    ) -> VfsResult<()> {
        let o = obj.clone();
        off_thread(move || o.write_blocks_vectored(offset, &parts)).await?;
        Ok(())
    }

    /// A read that failed because the server has another version: forget the listing so the
    /// next access sees the new version, and report EIO.
    fn read_error(&self, ino: Ino, e: RemoteError) -> VfsError {
        if matches!(
            e,
            RemoteError::VersionChanged { .. } | RemoteError::BadResponse { .. }
        ) {
            let mut t = self.tree();
            let parent = t.get(ino).map(|n| n.parent);
            if let Some(d) = parent
                .and_then(|p| t.get_mut(p))
                .and_then(|p| p.dir.as_mut())
            {
                d.listed_at = None;
            }
            tracing::warn!(error = %e, "file changed on the server while reading");
            return VfsError::Changed(e.to_string());
        }
        e.into()
    }

    /// Gets (or makes) the staged copy of a file, counting the caller as one more writer (the
    /// caller must take that back: `release` for handles, `setattr` itself). Without
    /// `truncate`, the current content is downloaded into it first.
    async fn stage(&self, ino: Ino, truncate: bool) -> VfsResult<Arc<Staged>> {
        let lock = self.inode_lock(ino);
        let _g = lock.lock().await;
        let existing = self.tree().get(ino).and_then(|n| n.staged.clone());
        if let Some(st) = existing {
            // An empty copy is left alone: truncating it would change nothing but its mtime,
            // yet count as a change (taking back a note that it is the server's version, so a
            // crash would keep it aside as a file never closed).
            if truncate && st.state().size != 0 {
                let _change = self.changing(&st).await;
                let s2 = st.clone();
                write::blocking(move || s2.file.set_len(0)).await?;
                let mut s = st.state();
                s.size = 0;
                s.version += 1;
            }
            st.state().writers += 1;
            return Ok(st);
        }
        let (size, etag, pending) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            // The version staged, named even when the server lists no ETag: the base the
            // check before the upload compares with (`remote::version`).
            let base = (!n.pending_create).then(|| version_of(n));
            (n.size, base, n.pending_create)
        };
        let path = self.staging_dir.join(format!(
            "{:016x}-{ino}-{}",
            self.run_id,
            self.next_staging.fetch_add(1, Ordering::Relaxed)
        ));
        let fill = !truncate && size > 0 && !pending;
        if fill {
            // The whole current version, through the cache.
            let (obj, _guard) = self.object_for(ino).await?.ok_or(VfsError::NotFound)?;
            self.ensure_blocks(ino, &obj, 0, size).await?;
            let (src, dst) = (obj.file_path().to_path_buf(), path.clone());
            write::blocking(move || {
                std::fs::copy(&src, &dst)?;
                let f = std::fs::OpenOptions::new().write(true).open(&dst)?;
                f.set_len(size)?;
                Ok(())
            })
            .await?;
        }
        let p2 = path.clone();
        let file = write::blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p2)
        })
        .await?;
        let changed = truncate && size > 0;
        // A copy of the server's version: if the daemon dies before anything is written to
        // it, the next start drops it rather than keeping it aside (schema v5).
        let noted = !changed && !pending;
        if noted {
            self.note_clean_staging(&path).await;
        }
        let st = Arc::new(Staged::new(
            path,
            file,
            StagedState {
                size: if fill { size } else { 0 },
                base: etag,
                exists_remote: !pending,
                version: u64::from(changed || pending),
                committed: 0,
                uploaded: 0,
                uploading: false,
                error: None,
                // The caller is the first writer (under the inode lock, so unstaging cannot
                // slip in between).
                writers: 1,
            },
            noted,
        ));
        let mut t = self.tree();
        let n = t.get_mut(ino).ok_or(VfsError::NotFound)?;
        n.staged = Some(st.clone());
        Ok(st)
    }

    pub async fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> VfsResult<u32> {
        {
            let h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            let h = h.get(&fh).ok_or(VfsError::BadHandle)?;
            if !h.write || h.ino != ino {
                return Err(VfsError::BadHandle);
            }
        }
        let (st, area) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::BadHandle)?;
            (n.staged.clone().ok_or(VfsError::BadHandle)?, n.area)
        };
        let grows = offset + data.len() as u64 > st.state().size;
        if let Some(reason) = area.filter(|_| grows).and_then(|a| self.queue.paused(a)) {
            // The server is full: what cannot be uploaded is refused now, not lost later.
            return Err(VfsError::NoSpace(reason));
        }
        {
            let _change = self.changing(&st).await;
            write::pwrite(st.clone(), offset, data.to_vec()).await?;
            let mut s = st.state();
            s.size = s.size.max(offset + data.len() as u64);
            s.version += 1;
        }
        self.touch_mtime(ino);
        Ok(data.len() as u32)
    }

    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: OpenMode,
    ) -> VfsResult<(Attr, Opened)> {
        check_name(name)?;
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        let ino = {
            let mut t = self.tree();
            if t.child(parent, name).is_some() {
                return Err(VfsError::Exists);
            }
            let mut n = Node::new(parent, name, Some(area), FileKind::File);
            n.mtime = now();
            n.pending_create = true;
            n.lookups = 1;
            t.insert(n)
        };
        self.touch_dir(parent);
        let staged = match self.stage(ino, true).await {
            Ok(s) => s,
            Err(e) => {
                self.tree().unlink(parent, name);
                return Err(e);
            }
        };
        let _ = (mode, staged);
        let io = {
            let mut t = self.tree();
            match t.get_mut(ino) {
                Some(n) => n.io.choose(false, Want::PageCache).0,
                None => HandleIo::Cached,
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                Handle {
                    ino,
                    write: true,
                    object: None,
                    readahead: Default::default(),
                    io,
                },
            );
        Ok((
            self.attr(ino)?,
            Opened {
                fh,
                keep_cache: false,
                io: OpenIo::Cached,
            },
        ))
    }

    /// Drops the staging of a node that has no writer and no pending changes, moving its
    /// content into the block cache as the uploaded version.
    async fn unstage_if_idle(&self, ino: Ino) {
        // Under the inode lock: no new writer can stage (and write to the file being moved
        // into the cache) until this is done.
        let lock = self.inode_lock(ino);
        let _g = lock.lock().await;
        let readers = {
            let hs = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            hs.values().any(|h| h.ino == ino)
        };
        // `None` for the key: a deleted file, whose content is no version of anything on the
        // server (not cached).
        let (st, key) = {
            let t = self.tree();
            let Some(st) = t
                .get(ino)
                .and_then(|n| n.staged.clone())
                .filter(|st| st.snapshot().idle())
            else {
                return;
            };
            let s = st.snapshot();
            let key = t.path(ino).map(|(area, path)| {
                s.base.map(|etag| ObjectKey {
                    area,
                    path,
                    etag,
                    size: s.size,
                })
            });
            (st, key)
        };
        let key = match key {
            Some(key) => key,
            None if readers => {
                // Deleted while open: the staged content is all its readers have left. Noted
                // as droppable: if the daemon dies before the last reader closes, the next
                // start drops it instead of keeping it aside as a file never closed.
                self.note_clean(&st).await;
                return;
            }
            None => None,
        };
        // Move the content into the cache first, then let go of the staging: in between, the
        // file is readable and its state is right, whichever of the two a reader finds.
        // The object now holding the uploaded content, for the read handles below.
        let mut adopted = None;
        if let Some(key) = key {
            let (cache, path) = (self.cache.clone(), st.path.clone());
            match off_thread(move || cache.adopt(&key, &path)).await {
                Ok(obj) => adopted = Some(obj),
                Err(e) => {
                    tracing::debug!(error = %e, "could not keep the uploaded file in the cache")
                }
            }
        }
        let still_idle = {
            let mut t = self.tree();
            let idle = match t.get_mut(ino) {
                Some(n) if n.staged.as_ref().is_some_and(|s| Arc::ptr_eq(s, &st)) => {
                    let idle = st.snapshot().idle();
                    if idle {
                        n.staged = None;
                    }
                    idle
                }
                _ => false,
            };
            t.maybe_drop(ino);
            idle
        };
        if still_idle {
            // Read handles opened before the change read the content written here, as on a
            // local disk: they move to the version just uploaded, also if the file is deleted
            // later (changes by other clients never do this: an open file keeps its version).
            // Without that object they let go of theirs and take the current one at the next
            // read.
            {
                let mut hs = self.handles.lock().unwrap_or_else(|e| e.into_inner());
                for h in hs.values_mut().filter(|h| h.ino == ino && !h.write) {
                    h.object = adopted.as_ref().map(|o| (o.clone(), o.open_guard()));
                }
            }
            self.drop_staging_file(&st.path).await;
        }
    }

    pub async fn flush(&self, ino: Ino, fh: u64) -> VfsResult<()> {
        let write = {
            let h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            h.get(&fh).ok_or(VfsError::BadHandle)?.write
        };
        if !write {
            return Ok(());
        }
        let st = self.tree().get(ino).and_then(|n| n.staged.clone());
        match st {
            Some(st) => self.commit(ino, &st).await,
            None => Ok(()),
        }
    }

    pub async fn fsync(&self, ino: Ino, fh: u64) -> VfsResult<()> {
        self.flush(ino, fh).await
    }

    pub async fn release(&self, ino: Ino, fh: u64) -> VfsResult<()> {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)
            .ok_or(VfsError::BadHandle)?;
        let staged = {
            let mut t = self.tree();
            let st = t.get(ino).and_then(|n| n.staged.clone());
            if let Some(n) = t.get_mut(ino) {
                n.io.release(h.io);
            }
            st
        };
        let mut result = Ok(());
        if h.write {
            if let Some(st) = staged {
                let last = {
                    let mut s = st.state();
                    s.writers = s.writers.saturating_sub(1);
                    s.writers == 0
                };
                if last {
                    result = self.commit(ino, &st).await;
                    // A deferred upload may go now.
                    self.queue.wake.notify_waiters();
                }
            }
            self.unstage_if_idle(ino).await;
        } else if staged.is_some() && self.tree().get(ino).is_some_and(|n| !n.linked) {
            // The last reader of a file deleted while open lets go of its staged copy.
            self.unstage_if_idle(ino).await;
        }
        self.tree().maybe_drop(ino);
        result
    }

    /// Before a file is deleted through the mount: each program that has it open for reading
    /// must go on reading it afterwards, as on a local disk, so what its version lacks in the
    /// cache is fetched now (the handle keeps that object, which outlives the delete). Best
    /// effort: a failure (no room on the local disk, the server gone) is logged and the delete
    /// goes on; those readers then fail on the parts they lack. A staged file needs nothing:
    /// its local copy is kept for its readers.
    async fn complete_for_readers(&self, ino: Ino) {
        if self.tree().get(ino).is_none_or(|n| n.staged.is_some()) {
            return;
        }
        let readers: Vec<(u64, Option<Arc<CacheObject>>)> = {
            let hs = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            hs.iter()
                .filter(|(_, h)| h.ino == ino && !h.write)
                .map(|(fh, h)| (*fh, h.object.as_ref().map(|(o, _)| o.clone())))
                .collect()
        };
        let mut current: Option<Arc<CacheObject>> = None;
        for (fh, obj) in readers {
            let obj = match obj {
                Some(o) => o,
                None => {
                    if current.is_none() {
                        match self.object_for(ino).await {
                            Ok(found) => current = found.map(|(o, _guard)| o),
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot keep a deleted file for its readers");
                                return;
                            }
                        }
                    }
                    // An empty file has no object: nothing to keep.
                    let Some(o) = current.clone() else {
                        continue;
                    };
                    self.attach_object(fh, o.clone(), o.open_guard());
                    o
                }
            };
            if let Err(e) = self.ensure_blocks(ino, &obj, 0, obj.size()).await {
                tracing::warn!(error = %e, "a file open for reading is deleted before all of it could be fetched: its readers may fail");
            }
        }
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        let (ino, path, pending) = {
            let t = self.tree();
            let ino = t.child(parent, name).ok_or(VfsError::NotFound)?;
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
            (
                ino,
                t.path(ino).ok_or(VfsError::NotFound)?.1,
                n.pending_create,
            )
        };
        // An upload of this file in flight must end first (or it would put the file back).
        let _block = if self.queue.has_under(area, &path) {
            Some(self.queue.block(area, vec![path.clone()]).await)
        } else {
            None
        };
        let pending = pending && self.tree().get(ino).is_some_and(|n| n.pending_create);
        if !pending {
            self.complete_for_readers(ino).await;
            match self.remote(area).delete(&path).await {
                Ok(()) | Err(RemoteError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.touch_dir(parent);
        {
            let mut t = self.tree();
            t.unlink(parent, name);
            // A staged copy nobody writes any more has nothing left to upload.
            if let Some(n) = t.get_mut(ino) {
                if let Some(st) = n.staged.clone() {
                    let mut s = st.state();
                    s.uploaded = s.version;
                }
            }
        }
        // The staged copy goes first: on a full disk, that is the space the next steps need.
        self.unstage_if_idle(ino).await;
        self.forget_dirty(area, &path).await?;
        self.forget_remote_path(area, path).await
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        if flags.exchange {
            return Err(VfsError::Invalid(
                "RENAME_EXCHANGE is not supported over WebDAV",
            ));
        }
        check_name(new_name)?;
        let area = self.check_writable(parent)?;
        let new_area = self.check_writable(new_parent)?;
        if area != new_area {
            return Err(VfsError::CrossDevice);
        }
        self.ensure_listed(parent).await?;
        self.ensure_listed(new_parent).await?;
        let (src, dst) = {
            let t = self.tree();
            let src = t.child(parent, name).ok_or(VfsError::NotFound)?;
            (src, t.child(new_parent, new_name))
        };
        if dst == Some(src) {
            // rename(2) of a name onto itself does nothing — unless told not to replace.
            return if flags.noreplace {
                Err(VfsError::Exists)
            } else {
                Ok(())
            };
        }
        // The kernel's order: an existing target with RENAME_NOREPLACE first, then a directory
        // moved below itself.
        if dst.is_some() && flags.noreplace {
            return Err(VfsError::Exists);
        }
        if let Some(d) = dst {
            if self.tree().is_within(src, d) {
                // The target is an ancestor of the source (a non-empty directory).
                return Err(VfsError::NotEmpty);
            }
        }
        let (src_kind, src_pending) = {
            let t = self.tree();
            let n = t.get(src).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir && t.is_within(new_parent, src) {
                return Err(VfsError::Invalid("cannot move a directory into itself"));
            }
            (n.kind, n.pending_create)
        };
        let mut dst_on_server = false;
        let mut dst_etag = None;
        if let Some(d) = dst {
            if flags.noreplace {
                return Err(VfsError::Exists);
            }
            let (dkind, dpending, detag) = {
                let t = self.tree();
                let n = t.get(d).ok_or(VfsError::NotFound)?;
                (n.kind, n.pending_create, Some(version_of(n)))
            };
            match (src_kind, dkind) {
                (FileKind::Dir, FileKind::File) => return Err(VfsError::NotDir),
                (FileKind::File, FileKind::Dir) => return Err(VfsError::IsDir),
                (FileKind::Dir, FileKind::Dir) => {
                    self.ensure_listed(d).await?;
                    let t = self.tree();
                    if t.get(d)
                        .and_then(|n| n.dir.as_ref())
                        .is_some_and(|dd| !dd.children.is_empty())
                    {
                        return Err(VfsError::NotEmpty);
                    }
                }
                _ => {}
            }
            dst_on_server = !dpending;
            dst_etag = detag;
        }
        let from = self.node_path(src)?.1;
        let to = self.node_path(new_parent)?.1.join(new_name)?;
        // Uploads of the source or the target in flight end first; none starts until done.
        let _block = if self.queue.has_under(area, &from) || self.queue.has_under(area, &to) {
            Some(self.queue.block(area, vec![from.clone(), to.clone()]).await)
        } else {
            None
        };
        // An upload that just ended may have put the source or the target on the server.
        let src_pending = src_pending && self.tree().get(src).is_some_and(|n| n.pending_create);
        if let Some(d) = dst {
            if let Some(n) = self.tree().get(d) {
                dst_on_server = !n.pending_create;
                dst_etag = Some(version_of(n));
            }
            // The target is replaced: programs reading it keep their version (see `unlink`).
            if dst_on_server && src_kind == FileKind::File {
                self.complete_for_readers(d).await;
            }
        }
        if src_pending {
            // Not on the server yet: a local rename; the upload goes to the new name, over
            // whatever the server has there.
            if let Some(st) = self.tree().get(src).and_then(|n| n.staged.clone()) {
                let mut s = st.state();
                if dst_on_server {
                    s.exists_remote = true;
                    s.base = dst_etag.clone();
                }
            }
            if dst_on_server {
                let mut t = self.tree();
                if let Some(n) = t.get_mut(src) {
                    n.pending_create = false;
                }
            }
        } else {
            self.remote(area)
                .rename(&from, &to, dst.is_some())
                .await
                .map_err(|e| match e {
                    RemoteError::AlreadyExists { .. } => VfsError::Exists,
                    e => e.into(),
                })?;
        }
        {
            let mut t = self.tree();
            // A replaced file that was changed here has nothing left to upload.
            if let Some(st) = dst.and_then(|d| t.get(d)).and_then(|n| n.staged.clone()) {
                let mut s = st.state();
                s.committed = s.version;
                s.uploaded = s.version;
            }
            t.rename(src, new_parent, new_name);
        }
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        let (f2, t2) = (from.clone(), to.clone());
        meta_op(&self.meta, move |m| m.rename_entry(area, &f2, &t2)).await?;
        self.move_dirty(area, &from, &to, src_pending && dst_on_server, dst_etag)
            .await?;
        let cache = self.cache.clone();
        off_thread(move || cache.rename_path(area, &from, &to)).await?;
        Ok(())
    }

    pub async fn statfs(&self) -> VfsResult<FsStats> {
        let cached = *self.quota.lock().unwrap_or_else(|e| e.into_inner());
        let quota = match cached {
            Some((at, q)) if at.elapsed() < QUOTA_TTL => q,
            _ => match self.areas[0].remote.quota().await {
                Ok(q) => {
                    *self.quota.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now(), q));
                    q
                }
                Err(e) => {
                    tracing::debug!(error = %e, "quota unavailable");
                    cached.map(|(_, q)| q).unwrap_or_default()
                }
            },
        };
        const BS: u64 = 4096;
        let (total, mut avail) = match (quota.used, quota.available) {
            (Some(u), Some(a)) => (u + a, a),
            (None, Some(a)) => (a, a),
            // Unknown: a large, honest-looking number rather than "full".
            _ => (1 << 50, 1 << 50),
        };
        if (0..self.areas.len() as AreaId).any(|a| self.queue.paused(a).is_some()) {
            // The server refused an upload for lack of space: say so until one succeeds.
            avail = 0;
        }
        Ok(FsStats {
            block_size: BS as u32,
            blocks: total / BS,
            blocks_free: avail / BS,
            blocks_avail: avail / BS,
            files: 1 << 32,
            files_free: 1 << 31,
            name_max: crate::remote::path::NAME_MAX as u32,
        })
    }

    /// The state of a file, as shown in `user.cloudmount.state`.
    pub async fn state_of(&self, ino: Ino) -> VfsResult<&'static str> {
        let (staged, key) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                return Ok("online");
            }
            let key = t.path(ino).map(|(a, p)| (a, p, version_of(n)));
            (n.staged.clone(), key)
        };
        if let Some((area, path, _)) = &key {
            if self.queue.is_conflict_copy(*area, path) {
                return Ok("conflict");
            }
        }
        if let Some(st) = staged {
            let s = st.snapshot();
            return Ok(if s.uploading {
                "uploading"
            } else if s.error.is_some() && s.dirty() {
                "error"
            } else if s.dirty() {
                "dirty"
            } else {
                "cached"
            });
        }
        let Some((area, path, etag)) = key else {
            return Ok("online");
        };
        let cache = self.cache.clone();
        let existing = off_thread(move || cache.existing(area, &path)).await?;
        Ok(match existing {
            Some(o) if o.key().etag == etag => match o.state() {
                ObjectState::Cached => "cached",
                ObjectState::Partial => "partial",
                ObjectState::Online => "online",
            },
            _ => "online",
        })
    }

    pub async fn getxattr(&self, ino: Ino, name: &str) -> VfsResult<Vec<u8>> {
        if name != STATE_XATTR {
            return Err(VfsError::NoAttr);
        }
        Ok(self.state_of(ino).await?.as_bytes().to_vec())
    }

    pub async fn listxattr(&self, ino: Ino) -> VfsResult<Vec<String>> {
        self.attr(ino)?;
        Ok(vec![STATE_XATTR.to_string()])
    }

    /// A snapshot for `cloudmount status`.
    pub fn status(&self) -> status::VfsStatus {
        let cached = *self.quota.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none_or(|(at, _)| at.elapsed() >= QUOTA_TTL) {
            // Asked in the background: this answer has the last known quota, the next the new.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let me = self.me.clone();
                rt.spawn(async move {
                    if let Some(me) = me.upgrade() {
                        let _ = me.statfs().await;
                    }
                });
            }
        }
        let quota = cached.map(|(_, q)| status::QuotaStatus {
            used: q.used,
            available: q.available,
        });
        let usage = self.cache.usage();
        let (queue, mut errors, conflicts, connection, last_error) =
            self.queue.report(&|a, p| self.display_path(a, p));
        for (a, p, reason) in self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            errors.push(status::FileProblem {
                path: self.display_path(*a, p),
                reason: reason.clone(),
                attempts: 0,
            });
        }
        status::VfsStatus {
            connection,
            last_error,
            cache: status::CacheStatus {
                used_bytes: usage.used_bytes,
                budget_bytes: usage.budget_bytes,
                dirty_bytes: queue.bytes,
            },
            queue,
            errors,
            conflicts,
            quota,
            kept_aside: self.kept_aside(),
        }
    }

    /// The never-closed files of earlier runs in `<cache>/recovered/`, if any.
    fn kept_aside(&self) -> Option<status::KeptAside> {
        let dir = self.staging_dir.with_file_name("recovered");
        let files = std::fs::read_dir(&dir).ok()?.flatten().count() as u64;
        (files > 0).then(|| status::KeptAside {
            dir: dir.display().to_string(),
            files,
        })
    }

    /// `path` of `area` as seen below the mount point.
    fn display_path(&self, area: AreaId, path: &RemotePath) -> String {
        if self.area_roots.first() == Some(&ROOT_INO) {
            return path.as_str().to_string();
        }
        let name = self
            .areas
            .get(area as usize)
            .map_or("?", |a| a.name.as_str());
        if path.is_root() {
            name.to_string()
        } else {
            format!("{name}/{}", path.as_str())
        }
    }

    /// Files in the upload queue (closed, not yet on the server).
    pub fn queued_files(&self) -> usize {
        self.queue.len()
    }

    /// Returns once the upload queue is empty (every closed file is on the server).
    pub async fn wait_idle(&self) {
        self.queue.wait_empty().await;
    }

    /// Makes files still open for writing durable and stops the upload workers; called once
    /// at unmount. What is not uploaded yet stays queued for the next mount.
    pub async fn shutdown(&self) {
        let staged = self.tree().staged_nodes();
        for (ino, st) in staged {
            if let Err(e) = self.commit(ino, &st).await {
                tracing::error!(error = %e, file = %st.path.display(), "a changed file could not be made durable at unmount; it is kept in the cache's staging folder");
            }
        }
        let left = self.queue.len();
        if left > 0 {
            tracing::info!(
                files = left,
                "changed files not uploaded yet stay queued for the next mount"
            );
        }
        self.queue.stop();
        if let Err(e) = self.cache.flush() {
            tracing::warn!(error = %e, "cache flush at unmount failed");
        }
    }
}
