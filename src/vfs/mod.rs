//! The filesystem logic, free of fuser types: inodes, areas, handles, the read path (block
//! cache) and the write path (staging, upload). The FUSE adapter (`fuse/`) calls these async
//! methods from tasks spawned per request; none of them blocks a FUSE thread, and blocking file
//! and database work runs on tokio's blocking pool.
//!
//! This file holds the [`Vfs`] struct, its construction and shutdown, the tree's accessors and
//! attributes, and `lookup`/`getattr`; each other job is an `impl Vfs` block in its own file:
//!
//! - `tree.rs`: inodes in memory, each with parent and name.
//! - `listing.rs`: directory listings, trusted for `dir_ttl`, saved in the metadata store,
//!   served stale while the server does not answer; `opendir`/`readdir`.
//! - `walk.rs`: reading ahead of a walk of the tree (sibling listings, small files).
//! - `namespace.rs`: `mkdir`, `rmdir`, `unlink`, `rename`, `setattr` (truncation, mtime);
//!   `offline_ops.rs`: those done while the server cannot be reached, recorded in order and
//!   replayed when it is back (uploads of the area wait for them).
//! - `read.rs`: `open`, the handle table, `read`, `release`. A handle reads one version (the
//!   ETag at open) through the block cache; a full local disk degrades reads to uncached
//!   downloads, never to errors. `io_mode.rs`: how the kernel serves each open (its page
//!   cache, or passthrough of a complete cache file in read-only areas).
//! - `stream.rs`: reads of a file larger than the cache's budget, from one long GET and never
//!   through the cache (so the cache stays within its budget while such a file is open).
//! - `set_aside.rs`: a file deleted or replaced while programs read it is moved to a hidden
//!   name on the server for them (the delete returns at once), and deleted when they close.
//! - `download.rs`: the download engine, keyed by cache object and version (never by inode):
//!   missing blocks fetched by ranged GET with `If-Match` (old and new bytes never mix),
//!   single flight per block, read-ahead windows, the mount's read-ahead budget, storing
//!   downloaded blocks. The vfs maps its errors to errno (`read.rs`).
//! - `write.rs`: staging (a file open for writing is kept whole on local disk), `write`,
//!   `create`, `flush`/`fsync`; `writeback.rs`: committing to the durable upload queue
//!   (`queue.rs`) and what an upload's end does; `upload.rs`: sending one file with
//!   conditional requests, keeping both versions on a conflict (`conflict.rs`).
//! - `pins.rs`: files and folders kept on this device (pin, unpin, free up space) and the
//!   keeper that downloads pinned trees and keeps them complete.
//! - `report.rs`: `statfs`, the `user.cloudmount.state` attribute, the `status` snapshot
//!   (its types in `status.rs`).
//! - `error.rs`: the one mapping of errors to errno; `types.rs`: the interface's data types.
//!
//! # Lock order
//!
//! The one table of the vfs's locks (the notes in `queue.rs` say why the queue's lock comes
//! before `tree`). A lock is taken only while holding none but those named in its last column;
//! the sync locks (all but the first three) are never held across an `.await`.
//!
//! | Lock | Guards | May be taken while holding |
//! |---|---|---|
//! | `Staged::commit_lock` (async) | one commit of a staged file, or the bookkeeping after its upload | nothing |
//! | inode lock (`Vfs::inode_lock`, async, per inode) | one listing refresh of a directory; one staging or unstaging of a file | `commit_lock` |
//! | `Staged::note` (async rwlock) | whether a staged file is noted as holding the server's version | `commit_lock`, inode lock |
//! | the upload queue's lock (`queue.rs`) | the queue's schedule | the async locks |
//! | `tree` | the inode tree | the async locks, the queue's lock |
//! | `unplaced` | changed files of earlier runs not on a node yet (their folder not listed) | the above, `tree` |
//! | `Staged::state` | a staged file's size, versions, writers, upload state | the above, `tree`, `unplaced` |
//! | `WalkAhead::fetching` (`walk.rs`) | small files being fetched ahead | `tree` |
//! | `handles` | open file handles | the async locks only (never `tree`) |
//! | `inode_locks`, `dir_handles`, `quota`, `problems`, `sweeping`, `disk_full_warned`, `invalidate_rx`, `BlockClaims` (`download.rs`), `SetAside::ids` (`set_aside.rs`) | their own map or value | the async locks only |
//! | `OfflineOps::ops`, `OfflineOps::notices` (`offline_ops.rs`) | the waiting namespace operations; the replay's notices | the queue's lock at most (never `tree`) |
//! | `Pins::progress` (`pins.rs`) | each pin's progress | the async locks only (the cache's own lock is taken inside it) |
//! | a handle's stream (async, `stream.rs`) | one read of a file read as a stream | nothing (held across its GET) |
//! | `Space::st` (`transfer/space.rs`, the account's pause, shared with the sync folders) | whether the account's uploads are paused, and the next probe | the queue's lock at most (never held while calling anything) |

pub mod download;
pub mod error;
mod io_mode;
mod listing;
mod namespace;
mod offline_ops;
#[cfg(test)]
mod offline_tests;
pub mod pins;
pub mod queue;
mod read;
mod report;
mod set_aside;
pub mod status;
mod stream;
mod tree;
pub mod types;
mod upload;
mod walk;
mod write;
#[cfg(test)]
mod write_tests;
mod writeback;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use error::{VfsError, VfsResult};
pub use queue::UploadOptions;
pub use report::FileState;
pub use types::*;

use crate::cache::{BlockCache, ObjectKey};
use crate::health::Health;
use crate::meta::{AreaId, MetaStore};
use crate::remote::watched::Watched;
use crate::remote::{ETag, Quota, Remote, RemotePath};
use tree::{Node, Tree};
use write::Staged;

/// One remote root shown in the mount.
pub struct AreaSpec {
    /// Folder name at the mount's root (ignored when the single area is the root).
    pub name: String,
    /// The area's identity: its URL. Stored data is matched to the area by it (see
    /// [`MetaStore::resolve_areas`]), never by the area's position in the list.
    pub url: String,
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

/// Block size of the cache: the unit of presence and of the smallest download. Small, so a
/// random 4 KiB read costs one 16 KiB GET: what a cold random read costs is the server's time
/// per request, which grows with the range (Apache on loopback here: 0.46 ms for 16 KiB,
/// 0.55 ms for 64 KiB, 0.96 ms for 128 KiB). Sequential reads download many blocks per GET
/// anyway; the presence bitmap costs 8 KiB per GiB of file.
pub const BLOCK_SIZE: u64 = 16 << 10;
/// Files up to this size are downloaded whole on their first read (one GET).
pub const SMALL_FILE: u64 = 1 << 20;

struct Area {
    /// Its stable id in the metadata store.
    id: AreaId,
    name: String,
    remote: Arc<dyn Remote>,
    read_only: bool,
}

/// The filesystem.
pub struct Vfs {
    opts: VfsOptions,
    areas: Vec<Area>,
    tree: Mutex<Tree>,
    meta: Arc<MetaStore>,
    cache: Arc<BlockCache>,
    staging_dir: PathBuf,
    handles: Mutex<HashMap<u64, read::Handle>>,
    dir_handles: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    /// Names of new staging files.
    staging_names: write::StagingNames,
    /// Per-inode async locks: one listing refresh or one staging at a time.
    inode_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    /// The download engine (single-flight blocks, the read-ahead budget).
    downloads: Arc<download::Downloads>,
    /// What is listed and fetched ahead of a walk of the tree.
    walk: walk::WalkAhead,
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
    /// Namespace operations made while the server could not be reached, waiting for it
    /// (`offline_ops.rs`; their records are in `meta`).
    offline: Arc<offline_ops::OfflineOps>,
    /// Whether the server answers: fed by every request (each area's remote is wrapped in
    /// `remote::watched::Watched`), read by listings, walks and `status`.
    health: Arc<Health>,
    /// The root inode of each area, by id.
    area_roots: Vec<(AreaId, Ino)>,
    /// Changed files of an earlier run whose folder was not listed yet (so not in the tree).
    unplaced: Mutex<HashMap<(AreaId, RemotePath), Arc<Staged>>>,
    /// Files whose changes were lost before this run (shown by `status`).
    problems: Mutex<Vec<(AreaId, RemotePath, String)>>,
    /// This cache's identity (`MetaStore::cache_id`), in the names of temporary uploads.
    temp_tag: String,
    /// Stray temporary uploads being deleted (so a listing does not start a second DELETE).
    sweeping: Mutex<std::collections::HashSet<(AreaId, RemotePath)>>,
    /// The keeper of pinned trees (`pins.rs`).
    pins: pins::Pins,
    /// Files deleted while read, kept on the server under hidden names (`set_aside.rs`).
    set_aside: set_aside::SetAside,
    /// Which files of recently asked folders have a cache object (for the xattr state).
    cached_names: report::CachedNames,
}

impl Drop for Vfs {
    fn drop(&mut self) {
        self.queue.stop();
        self.offline.stop();
        self.pins.stop();
    }
}

fn now() -> SystemTime {
    SystemTime::now()
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
        let layout = crate::cache::CacheLayout::new(&setup.cache_dir);
        std::fs::create_dir_all(layout.root())?;
        let staging_dir = layout.staging_dir();
        std::fs::create_dir_all(&staging_dir)?;
        let meta = Arc::new(MetaStore::open(&layout.meta_db())?);
        let cache = Arc::new(BlockCache::open(
            &layout,
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
        let keys: Vec<crate::meta::AreaKey> = areas
            .iter()
            .map(|a| crate::meta::AreaKey {
                url: a.url.clone(),
                name: a.name.clone(),
            })
            .collect();
        let ids = meta.resolve_areas(&keys)?;
        let t0 = now();
        let mut root = Node::new(ROOT_INO, "", None, FileKind::Dir);
        root.mtime = t0;
        let tree = if as_folders {
            root.dir.as_mut().expect("dir").listed_at = Some(Instant::now());
            let mut tree = Tree::new(root);
            for (i, a) in areas.iter().enumerate() {
                let mut n = Node::new(ROOT_INO, &a.name, Some(ids[i]), FileKind::Dir);
                n.is_area_root = true;
                n.mtime = t0;
                tree.insert_at(ROOT_INO + 1 + i as u64, n);
            }
            tree
        } else {
            root.area = Some(ids[0]);
            root.is_area_root = true;
            Tree::new(root)
        };
        let (invalidate_tx, invalidate_rx) = tokio::sync::mpsc::unbounded_channel();
        let area_roots = if as_folders {
            ids.iter()
                .enumerate()
                .map(|(i, &id)| (id, ROOT_INO + 1 + i as u64))
                .collect()
        } else {
            vec![(ids[0], ROOT_INO)]
        };
        let staging_names = write::StagingNames::new()?;
        let queue = Arc::new(queue::UploadQueue::new(opts.upload.clone()));
        let health = Health::new();
        let q = Arc::downgrade(&queue);
        health.on_back_online(move || {
            if let Some(q) = q.upgrade() {
                q.retry_now();
            }
        });
        let offline: Arc<offline_ops::OfflineOps> = Default::default();
        let o = Arc::downgrade(&offline);
        health.on_back_online(move || {
            if let Some(o) = o.upgrade() {
                o.wake();
            }
        });
        let temp_tag = meta.cache_id()?;
        let vfs = Arc::new_cyclic(|me| Vfs {
            me: me.clone(),
            invalidate_tx,
            invalidate_rx: Mutex::new(Some(invalidate_rx)),
            opts,
            areas: areas
                .into_iter()
                .zip(&ids)
                .map(|(a, &id)| Area {
                    id,
                    name: a.name,
                    remote: Arc::new(Watched::new(a.remote, health.clone())),
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
            staging_names,
            inode_locks: Mutex::new(HashMap::new()),
            downloads: Default::default(),
            walk: Default::default(),
            disk_full_warned: Default::default(),
            passthrough: Default::default(),
            quota: Mutex::new(None),
            queue,
            offline,
            health,
            area_roots,
            unplaced: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
            temp_tag,
            sweeping: Mutex::new(Default::default()),
            pins: Default::default(),
            set_aside: Default::default(),
            cached_names: Default::default(),
        });
        vfs.recover()?;
        vfs.load_ns_ops()?;
        vfs.spawn_upload_workers();
        vfs.spawn_ns_replayer();
        vfs.start_pin_keeper();
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

    /// The mounted area of id `area`. Only mounted areas' ids reach the tree and the upload
    /// queue (records of others wait in the store), so this fails only on a bug.
    fn area(&self, area: AreaId) -> VfsResult<&Area> {
        self.areas
            .iter()
            .find(|a| a.id == area)
            .ok_or(VfsError::AreaNotMounted(area))
    }

    fn remote(&self, area: AreaId) -> VfsResult<&Arc<dyn Remote>> {
        self.area(area).map(|a| &a.remote)
    }

    /// The ids of the areas this mount shows.
    fn area_ids(&self) -> impl Iterator<Item = AreaId> + '_ {
        self.areas.iter().map(|a| a.id)
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
        if self.area(area)?.read_only {
            return Err(VfsError::ReadOnly);
        }
        Ok(area)
    }

    fn node_path(&self, ino: Ino) -> VfsResult<(AreaId, RemotePath)> {
        self.tree().path(ino).ok_or(VfsError::NotFound)
    }

    /// Nothing can be written at `n`: a read-only mount or area, or the root above the areas.
    fn is_read_only(&self, n: &Node) -> bool {
        self.opts.read_only
            || n.area
                .is_none_or(|a| self.area(a).map_or(true, |a| a.read_only))
    }

    fn attr_of(&self, ino: Ino, n: &Node) -> Attr {
        let read_only = self.is_read_only(n);
        let (size, mtime) = match &n.staged {
            Some(s) => (s.state().size, n.mtime),
            None => (n.size, n.mtime),
        };
        let mtime = n.local_mtime.unwrap_or(mtime);
        let perm = perm_of(n.kind, n.perm, read_only);
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

    /// Files in the upload queue (closed, not yet on the server).
    pub fn queued_files(&self) -> usize {
        self.queue.len()
    }

    /// Returns once the upload queue is empty (every closed file is on the server) and no
    /// namespace operation waits for the server.
    pub async fn wait_idle(&self) {
        // Whoever waits for the queue wants it sent: the write-back delay is not waited out.
        self.send_now();
        loop {
            self.offline.wait_empty().await;
            self.queue.wait_empty().await;
            if self.offline.len() == 0 {
                return;
            }
        }
    }

    /// Starts the uploads that wait for the write-back delay now.
    pub fn send_now(&self) {
        self.queue.hurry();
    }

    /// Namespace operations (mkdir, rmdir, unlink, rename) waiting for the server.
    pub fn queued_ns_ops(&self) -> usize {
        self.offline.len()
    }

    /// Waits until the downloaded bytes being stored in the background are in the cache (a
    /// file read to its end is then wholly cached, for a passthrough open for instance).
    pub async fn wait_for_stores(&self) {
        self.downloads.wait_for_stores().await;
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
        self.offline.stop();
        self.pins.stop();
        self.downloads.wait_for_stores().await;
        if let Err(e) = self.cache.flush() {
            tracing::warn!(error = %e, "cache flush at unmount failed");
        }
    }
}

/// The permission bits of a node of `kind` nobody set a mode on: 0644 files, 0755 directories.
pub(crate) fn default_perm(kind: FileKind) -> u16 {
    match kind {
        FileKind::Dir => 0o755,
        FileKind::File => 0o644,
    }
}

/// The permission bits shown: those set with chmod (kept in `meta.db`) or the default, without
/// the write bits in a read-only area or mount.
fn perm_of(kind: FileKind, set: Option<u16>, read_only: bool) -> u16 {
    let perm = set.unwrap_or_else(|| default_perm(kind));
    if read_only {
        perm & !0o222
    } else {
        perm
    }
}
