//! The on-demand block cache: file contents fetched from the server, kept on local disk.
//!
//! # Design
//!
//! The unit is the *object*: one version of one remote file, identified by
//! [`ObjectKey`] `(area, path, ETag, size)`, stored as one sparse file of exactly `size` bytes.
//! The file is split into blocks of `block_size` bytes (the last one shorter); a bitmap says
//! which blocks hold fetched data. A read asks [`CacheObject::missing`] for the block-aligned
//! ranges it lacks, fetches them (ranged GET, in the vfs), stores them with
//! [`CacheObject::write_blocks`] and reads with [`CacheObject::read_at`] (or takes a view of the
//! file's pages with [`CacheObject::read_mapped`], see `mapped.rs`). A complete object is a
//! plain file ([`CacheObject::file_path`]): it can be copied to staging or handed to the kernel
//! (FUSE passthrough).
//!
//! There is at most one object per `(area, path)`. Asking for a version with another ETag or
//! size drops the old object (row and file) first, so old blocks are never served for a new
//! version. Holders of the old [`CacheObject`] keep reading their version from the unlinked
//! file; the object is then *detached* ([`CacheObject::is_current`] is false): it still works,
//! but nothing about it is persisted or counted any more.
//!
//! Eviction is **whole objects, least recently used first**, until the bytes of present blocks
//! are within the budget. Whole objects because a partially evicted file is rarely useful (a
//! reader that comes back usually wants it all), the sparse file is freed by one unlink (no hole
//! punching on a file others may be reading), and the index stays one row per file. Objects
//! with a live [`OpenGuard`] and pinned paths (a pin on a directory covers everything below) are
//! never evicted; an open file larger than the budget therefore makes usage exceed the budget
//! until it is closed. An object that is merely held (an `Arc`, no guard) may be evicted: it is
//! detached, so the vfs takes a guard for every open handle. Rows with no block present and
//! nobody holding them are swept when an eviction pass meets them. [`BlockCache::evict`] flushes
//! first, so its LRU order is exact; the background eviction uses the persisted access times
//! (at most one flush interval old). Dirty data is not here at all: it lives in staging files
//! owned by the upload queue, which [`BlockCache::adopt`] moves in once uploaded.
//!
//! # Invariants
//!
//! - **Never serve wrong bytes.** A block is recorded present in the persistent index only
//!   after its data is durable: the flusher snapshots the bitmap of each changed object, then
//!   fsyncs the object file (`fdatasync`), then the fan-out directory of every file created
//!   since the last flush (so the name is durable too: a power cut cannot leave a committed
//!   row naming a vanished or older file), then commits the snapshots in one transaction. Data
//!   was written (`pwrite`) before its bits were set in memory, so the fsync covers every block
//!   of the snapshot. In memory a block counts as present at once for this process. After a
//!   crash or power cut, blocks written since the last flush are simply missing. If an fsync
//!   fails the object is dropped (after a failed fsync the kernel may have discarded the data;
//!   retrying could "succeed" without it). [`BlockCache::adopt`] fsyncs the file and its
//!   directory before it commits the row with every block present.
//! - Present blocks are never rewritten: `write_blocks` writes only missing blocks, and a file
//!   is only ever unlinked, never truncated or reused, while its row exists.
//! - Row ids are never reused (`AUTOINCREMENT`) and every update names the row's file, so a
//!   late flush for a dropped object cannot land on a newer one.
//! - Checked at open: a row whose file is missing, has the wrong length, or whose bitmap does
//!   not fit the size is dropped; a file in `objects/` without a row is deleted (no leaks).
//!   The length is checked again whenever an object is loaded.
//! - `used_bytes` counts the bytes of present blocks of every object in the index: the
//!   in-memory count for loaded objects, the stored count for the others. An object with
//!   unflushed presence is held loaded by the flusher's queue until it is persisted, so both
//!   agree whenever an object is unloaded. Such objects keep their file open; past 256 of them
//!   the flusher is woken early, which bounds the descriptors the cache holds on its own.
//!   Pending access times hold no object (a `Weak` and the time).
//!
//! # On-disk format
//!
//! ```text
//! <cache dir>/meta.db                  the MetaStore (tables `objects` and `pins`)
//! <cache dir>/objects/<h2>/<h32>[-n]    one sparse file per object, exactly `size` bytes
//! ```
//! All 256 `<h2>` directories are created (and synced) at open.
//! `h32` is the first 32 hex digits of SHA-256(`"cloudmount-object-v1\0"`, area as 4 bytes LE,
//! path, `\0`, ETag value); `h2` its first two. The row maps key to file, so a renamed object
//! keeps its file name, and a name already taken gets a `-n` suffix. An `objects` row holds the
//! key, size, block size, file name, presence bitmap (see `bitmap.rs`), its byte count, and the
//! LRU clock (milliseconds, strictly increasing per access, persisted by the flusher about once
//! a second, never per read). Reopening with another block size converts the bitmaps (a new
//! block is present only if all old blocks under it were).
//!
//! # Concurrency and lock order
//!
//! Reads and writes of different blocks of one object run in parallel (`pread`/`pwrite` via
//! `FileExt`, no shared seek position). Locks, always taken in this order and never held across
//! an `.await` (every method is a short synchronous call):
//!
//! 1. `flush_lock`: one flush or eviction pass at a time;
//! 2. `state`: the map of loaded objects, the flusher's queues, usage, pins;
//! 3. one object's `bits` (presence bitmap, guard check), never two at once;
//! 4. the `MetaStore` connection (innermost).
//!
//! File I/O of block data happens with no lock held. A background thread flushes every
//! `flush_interval` (default 5 s) and evicts when a write pushed usage over the budget (at most
//! every 100 ms); dropping the [`BlockCache`] flushes a last time.

mod bitmap;
mod mapped;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use bitmap::Bitmap;
use mapped::{MappedRange, Mapping};

use crate::meta::objects::{NewObject, ObjectBrief, ObjectUpdate, RawObject};
use crate::meta::{check_rename, path_from_sql, MetaError, MetaStore};
use crate::remote::{ETag, RemotePath};

pub use crate::meta::AreaId;

/// Default block size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Default interval between flushes of block presence and access times.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

const OBJECTS_DIR: &str = "objects";
const NAME_DOMAIN: &[u8] = b"cloudmount-object-v1\0";
const MIN_EVICT_GAP: Duration = Duration::from_millis(100);
/// Objects with unflushed presence hold an open file each; past this many, flush early.
const PENDING_SOFT_MAX: usize = 256;

/// One version of one remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub area: AreaId,
    pub path: RemotePath,
    pub etag: ETag,
    pub size: u64,
}

/// How much of an object is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    /// No block present.
    Online,
    /// Some blocks present.
    Partial,
    /// Every block present (also an empty file).
    Cached,
}

/// Cache occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    /// Bytes of present blocks, over all objects.
    pub used_bytes: u64,
    pub budget_bytes: u64,
    /// Objects in the index.
    pub objects: u64,
}

/// Settings of a [`BlockCache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub budget_bytes: u64,
    /// A power of two, at least 512.
    pub block_size: u64,
    /// How often the background thread persists presence and access times; `None` runs no
    /// thread (tests: call [`BlockCache::flush`] and [`BlockCache::evict`] yourself).
    pub flush_interval: Option<Duration>,
}

impl CacheConfig {
    pub fn new(budget_bytes: u64) -> CacheConfig {
        CacheConfig {
            budget_bytes,
            block_size: DEFAULT_BLOCK_SIZE,
            flush_interval: Some(DEFAULT_FLUSH_INTERVAL),
        }
    }
}

/// Errors of the block cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("cache: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bytes {offset}..{end} of {path} are not cached")]
    NotCached {
        path: RemotePath,
        offset: u64,
        end: u64,
    },
    #[error(
        "bad block write to {path}: {len} bytes at {offset} are not whole {block_size}-byte \
         blocks inside its {size} bytes"
    )]
    BadWrite {
        path: RemotePath,
        offset: u64,
        len: u64,
        block_size: u64,
        size: u64,
    },
    #[error("{}: {actual} bytes, but the object for {path} must have {expected}", file.display())]
    SizeMismatch {
        file: PathBuf,
        path: RemotePath,
        expected: u64,
        actual: u64,
    },
    #[error("cached object file {} is damaged: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
    #[error("invalid block size {0}: must be a power of two between 512 bytes and 1 GiB")]
    BadBlockSize(u64),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves consistent state before it can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The block cache of one cache directory.
pub struct BlockCache {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("dir", &self.shared.objects_dir)
            .field("block_size", &self.shared.block_size)
            .field("budget", &self.shared.budget)
            .finish_non_exhaustive()
    }
}

struct Shared {
    objects_dir: PathBuf,
    meta: Arc<MetaStore>,
    block_size: u64,
    budget: u64,
    /// LRU clock: milliseconds, strictly increasing.
    clock: Arc<AtomicI64>,
    flush_lock: Mutex<()>,
    state: Mutex<State>,
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Default)]
struct Signal {
    shutdown: bool,
    crash: bool,
    evict: bool,
    flush: bool,
}

#[derive(Default)]
struct State {
    /// Loaded objects by `(area, path)`.
    live: HashMap<(AreaId, String), Weak<ObjectInner>>,
    /// Objects whose presence changed since the last flush, by row id. Holds them loaded, so
    /// an object is unloaded only once its presence is persisted.
    pending: HashMap<i64, Arc<ObjectInner>>,
    /// Access times not yet persisted, by row id. Does not keep objects (or their files) open.
    accessed: HashMap<i64, Access>,
    used: u64,
    objects: u64,
    pins: HashSet<(AreaId, String)>,
}

impl State {
    fn is_pinned(&self, area: AreaId, path: &str) -> bool {
        let mut p = path;
        loop {
            if self.pins.contains(&(area, p.to_string())) {
                return true;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None if p.is_empty() => return false,
                None => p = "",
            }
        }
    }

    fn live(&mut self, area: AreaId, path: &str) -> Option<Arc<ObjectInner>> {
        let k = (area, path.to_string());
        let inner = self.live.get(&k).and_then(Weak::upgrade);
        match inner {
            Some(i) if !lock(&i.bits).detached => Some(i),
            _ => {
                self.live.remove(&k);
                None
            }
        }
    }
}

/// An access to persist.
struct Access {
    file: String,
    inner: Weak<ObjectInner>,
    at: i64,
}

/// True when `p` is `base` or below it (string form of [`RemotePath::starts_with`]).
fn under(p: &str, base: &str) -> bool {
    base.is_empty()
        || p == base
        || (p.starts_with(base) && p.as_bytes().get(base.len()) == Some(&b'/'))
}

fn rebase(p: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &p[from.len()..])
}

struct ObjectInner {
    id: i64,
    etag: ETag,
    size: u64,
    block_size: u64,
    file: File,
    file_name: String,
    file_path: PathBuf,
    bits: Mutex<Bits>,
    /// Changed only under `bits` (increments) or freely (decrements).
    guards: AtomicUsize,
    last_access: AtomicI64,
    access_dirty: AtomicBool,
    /// The file's directory entry is known durable (false for a file created in this run
    /// until the flusher fsyncs its directory).
    dir_synced: AtomicBool,
    clock: Arc<AtomicI64>,
    shared: Weak<Shared>,
    /// The file mapped read-only, made on the first mapped read (`None`: mapping failed, the
    /// object reads by copy).
    mapping: std::sync::OnceLock<Option<Arc<Mapping>>>,
}

struct Bits {
    present: Bitmap,
    present_bytes: u64,
    /// Presence changed since the last flush snapshot.
    changed: bool,
    /// Dropped from the cache: still readable by its holders, no longer persisted or counted.
    detached: bool,
}

impl ObjectInner {
    fn block_len(&self, i: u64) -> u64 {
        let start = i * self.block_size;
        (start + self.block_size).min(self.size) - start
    }

    fn nblocks(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    /// Records an access; true when the object must be queued for the flusher.
    fn mark_access(&self) -> bool {
        let t = tick(&self.clock);
        self.last_access.fetch_max(t, Ordering::SeqCst);
        !self.access_dirty.swap(true, Ordering::SeqCst)
    }

    /// Records an access. Takes the state lock: never call it while holding it (see
    /// [`Self::touch_locked`]).
    fn touch(self: &Arc<Self>) {
        if self.mark_access() {
            if let Some(sh) = self.shared.upgrade() {
                self.touch_queue(&mut sh.state());
            }
        }
    }

    fn touch_locked(self: &Arc<Self>, st: &mut State) {
        if self.mark_access() {
            self.touch_queue(st);
        }
    }

    fn touch_queue(self: &Arc<Self>, st: &mut State) {
        if !lock(&self.bits).detached {
            st.accessed.insert(
                self.id,
                Access {
                    file: self.file_name.clone(),
                    inner: Arc::downgrade(self),
                    at: self.last_access.load(Ordering::SeqCst),
                },
            );
        }
    }

    /// Marks the object dropped; returns the bytes it counted in `used`.
    fn detach(&self) -> u64 {
        let mut b = lock(&self.bits);
        if b.detached {
            0
        } else {
            b.detached = true;
            b.present_bytes
        }
    }
}

/// Advances the LRU clock: wall-clock milliseconds, but strictly increasing.
fn tick(clock: &AtomicI64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let prev = clock
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| Some(now.max(p + 1)))
        .expect("the closure always returns Some");
    now.max(prev + 1)
}

fn object_name(area: AreaId, path: &RemotePath, etag: &ETag) -> String {
    let mut h = Sha256::new();
    h.update(NAME_DOMAIN);
    h.update(area.to_le_bytes());
    h.update(path.as_str().as_bytes());
    h.update([0u8]);
    h.update(etag.value().as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `h32` or `h32-n`, lower-case hex.
fn valid_name(name: &str) -> bool {
    let (hash, suffix) = match name.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (name, None),
    };
    hash.len() == 32
        && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && suffix
            .is_none_or(|s| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.objects_dir.join(&name[..2]).join(name)
    }

    fn request_evict(&self) {
        lock(&self.signal).evict = true;
        self.wake.notify_one();
    }

    fn request_flush(&self) {
        lock(&self.signal).flush = true;
        self.wake.notify_one();
    }

    fn wrap(&self, key: ObjectKey, inner: Arc<ObjectInner>) -> Arc<CacheObject> {
        Arc::new(CacheObject { key, inner })
    }

    /// Opens the file of a stored row and checks it against the row.
    fn load(self: &Arc<Self>, raw: &RawObject) -> Result<Arc<ObjectInner>, CacheError> {
        let checked = check_row(raw, self.block_size)?;
        let file_path = self.file_path(&raw.file);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file_path)
            .map_err(io_err("open", &file_path))?;
        let len = file.metadata().map_err(io_err("stat", &file_path))?.len();
        if len != checked.size {
            return Err(CacheError::Corrupt {
                file: file_path,
                reason: format!("length {len}, expected {}", checked.size),
            });
        }
        Ok(Arc::new(ObjectInner {
            id: raw.id,
            etag: checked.etag,
            size: checked.size,
            block_size: self.block_size,
            file,
            file_name: raw.file.clone(),
            file_path,
            bits: Mutex::new(Bits {
                present_bytes: checked.present_bytes,
                present: checked.bits,
                changed: false,
                detached: false,
            }),
            guards: AtomicUsize::new(0),
            last_access: AtomicI64::new(raw.last_access),
            access_dirty: AtomicBool::new(false),
            // Presence was committed only after its directory was synced (or it has none).
            dir_synced: AtomicBool::new(true),
            clock: self.clock.clone(),
            shared: Arc::downgrade(self),
            mapping: std::sync::OnceLock::new(),
        }))
    }

    /// A file name for a new object, not used by any row.
    fn pick_name(&self, key: &ObjectKey) -> Result<String, CacheError> {
        let base = object_name(key.area, &key.path, &key.etag);
        if !self.meta.obj_file_in_use(&base)? {
            return Ok(base);
        }
        for n in 1u32.. {
            let cand = format!("{base}-{n}");
            if !self.meta.obj_file_in_use(&cand)? {
                return Ok(cand);
            }
        }
        unreachable!("some suffix is free")
    }

    /// Creates a new object (file, then row) with the given content state. With `adopt`, the
    /// complete file at that path is moved in instead of creating an empty sparse file.
    fn create(
        self: &Arc<Self>,
        st: &mut State,
        key: &ObjectKey,
        adopt: Option<&Path>,
    ) -> Result<Arc<ObjectInner>, CacheError> {
        let name = self.pick_name(key)?;
        let file_path = self.file_path(&name);
        let dir = file_path.parent().expect("has a parent");
        let nblocks = key.size.div_ceil(self.block_size);
        let (file, bits) = match adopt {
            None => {
                // truncate: a stray file of that name (a failed unlink) must not leak its bytes.
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&file_path)
                    .map_err(io_err("create", &file_path))?;
                f.set_len(key.size)
                    .map_err(io_err("set the length of", &file_path))?;
                (f, Bitmap::new(nblocks))
            }
            Some(src) => {
                move_in(src, &file_path)?;
                // The row below records every block present: the name must be durable first,
                // or a power cut could leave the row naming a file that is not this one.
                sync_dir(dir)?;
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&file_path)
                    .map_err(io_err("open", &file_path))?;
                (f, Bitmap::full(nblocks))
            }
        };
        let present_bytes = if adopt.is_some() { key.size } else { 0 };
        let now = tick(&self.clock);
        let etag = key.etag.header_value();
        let id = self
            .meta
            .obj_insert(&NewObject {
                area: key.area,
                path: key.path.as_str(),
                etag: &etag,
                size: key.size,
                block_size: self.block_size,
                file: &name,
                present: &bits.to_bytes(),
                present_bytes,
                last_access: now,
            })
            .inspect_err(|_| {
                // Give an adopted file back to its owner; an empty new file just goes.
                let undo = match adopt {
                    Some(src) => fs::rename(&file_path, src),
                    None => fs::remove_file(&file_path),
                };
                if let Err(e) = undo {
                    tracing::warn!(file = %file_path.display(), error = %e, "cannot undo a failed cache insert");
                }
            })?;
        let inner = Arc::new(ObjectInner {
            id,
            etag: key.etag.clone(),
            size: key.size,
            block_size: self.block_size,
            file,
            file_name: name,
            file_path,
            bits: Mutex::new(Bits {
                present: bits,
                present_bytes,
                changed: false,
                detached: false,
            }),
            guards: AtomicUsize::new(0),
            last_access: AtomicI64::new(now),
            access_dirty: AtomicBool::new(false),
            // An adopted file's directory was synced before its row was committed.
            dir_synced: AtomicBool::new(adopt.is_some()),
            clock: self.clock.clone(),
            shared: Arc::downgrade(self),
            mapping: std::sync::OnceLock::new(),
        });
        st.objects += 1;
        st.used += present_bytes;
        st.live.insert(
            (key.area, key.path.as_str().to_string()),
            Arc::downgrade(&inner),
        );
        Ok(inner)
    }

    /// Drops objects: detaches loaded ones (skipping guarded ones when `keep_guarded`), deletes
    /// their rows, then their files. Returns the bytes freed.
    fn forget(
        &self,
        st: &mut State,
        rows: &[ObjectBrief],
        keep_guarded: bool,
    ) -> Result<u64, CacheError> {
        let mut victims = Vec::with_capacity(rows.len());
        let mut freed = 0u64;
        for r in rows {
            let k = (r.area, r.path.clone());
            let live = st
                .live
                .get(&k)
                .and_then(Weak::upgrade)
                .filter(|i| i.id == r.id)
                .or_else(|| st.pending.get(&r.id).cloned());
            let bytes = match live {
                Some(inner) => {
                    let mut b = lock(&inner.bits);
                    if keep_guarded && inner.guards.load(Ordering::SeqCst) > 0 {
                        continue;
                    }
                    let bytes = if b.detached { 0 } else { b.present_bytes };
                    b.detached = true;
                    drop(b);
                    st.live.remove(&k);
                    st.pending.remove(&r.id);
                    st.accessed.remove(&r.id);
                    bytes
                }
                None => r.present_bytes,
            };
            freed += bytes;
            victims.push(r);
        }
        let ids: Vec<i64> = victims.iter().map(|r| r.id).collect();
        self.meta.obj_delete(&ids)?;
        st.used = st.used.saturating_sub(freed);
        st.objects = st.objects.saturating_sub(victims.len() as u64);
        for r in victims {
            let path = self.file_path(&r.file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Left for the orphan sweep at the next open.
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete cache object")
                }
            }
        }
        Ok(freed)
    }

    fn brief_of(inner: &ObjectInner, area: AreaId, path: &str) -> ObjectBrief {
        ObjectBrief {
            id: inner.id,
            area,
            path: path.to_string(),
            file: inner.file_name.clone(),
            present_bytes: 0,
            last_access: 0,
        }
    }

    /// Persists presence and access times: snapshots the changed bitmaps, fsyncs the object
    /// files (and the directories of files created since the last flush), then commits
    /// everything in one transaction.
    fn flush(&self) -> Result<(), CacheError> {
        let _f = lock(&self.flush_lock);
        let (batch, accessed) = {
            let mut st = self.state();
            let batch: Vec<Arc<ObjectInner>> = st.pending.drain().map(|(_, v)| v).collect();
            let accessed: Vec<(i64, Access)> = st.accessed.drain().collect();
            (batch, accessed)
        };
        if batch.is_empty() && accessed.is_empty() {
            return Ok(());
        }
        let mut updates = Vec::with_capacity(batch.len() + accessed.len());
        for (id, a) in &accessed {
            let at = match a.inner.upgrade() {
                Some(i) => {
                    i.access_dirty.store(false, Ordering::SeqCst);
                    i.last_access.load(Ordering::SeqCst)
                }
                None => a.at,
            };
            updates.push(ObjectUpdate {
                id: *id,
                file: a.file.clone(),
                present: None,
                last_access: Some(at),
            });
        }
        let mut snaps: Vec<(Arc<ObjectInner>, Vec<u8>, u64)> = Vec::new();
        for inner in &batch {
            let mut b = lock(&inner.bits);
            if b.detached || !b.changed {
                continue;
            }
            b.changed = false;
            snaps.push((inner.clone(), b.present.to_bytes(), b.present_bytes));
        }
        // Data first: every block in a snapshot was written before its bit was set.
        let mut failed: Vec<Arc<ObjectInner>> = Vec::new();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        snaps.retain(|(inner, _, _)| match inner.file.sync_data() {
            Ok(()) => {
                if !inner.dir_synced.load(Ordering::SeqCst) {
                    dirs.insert(inner.file_path.parent().expect("in a dir").to_path_buf());
                }
                true
            }
            Err(e) => {
                tracing::error!(file = %inner.file_path.display(), error = %e,
                    "fsync of a cache object failed; dropping the object");
                failed.push(inner.clone());
                false
            }
        });
        // Then the names of new files, so that no committed row can name a file a power cut
        // takes back (or replaces with an older one of the same name).
        for d in &dirs {
            if let Err(e) = sync_dir(d) {
                tracing::error!(error = %e, "fsync of a cache directory failed; dropping its new objects");
                snaps.retain(|(inner, _, _)| {
                    let here = inner.file_path.parent() == Some(d.as_path())
                        && !inner.dir_synced.load(Ordering::SeqCst);
                    if here {
                        failed.push(inner.clone());
                    }
                    !here
                });
            }
        }
        for (inner, bits, bytes) in &snaps {
            inner.dir_synced.store(true, Ordering::SeqCst);
            updates.push(ObjectUpdate {
                id: inner.id,
                file: inner.file_name.clone(),
                present: Some((bits.clone(), *bytes)),
                last_access: None,
            });
        }
        if let Err(e) = self.meta.obj_commit(&updates) {
            // Nothing was recorded: queue it all again for the next flush.
            let mut st = self.state();
            for (inner, _, _) in &snaps {
                lock(&inner.bits).changed = true;
                st.pending.insert(inner.id, inner.clone());
            }
            for (id, a) in accessed {
                st.accessed.entry(id).or_insert(a);
            }
            return Err(e.into());
        }
        if !failed.is_empty() {
            let mut st = self.state();
            let mut rows = Vec::new();
            for inner in &failed {
                let key = st
                    .live
                    .iter()
                    .find(|(_, w)| w.as_ptr() == Arc::as_ptr(inner))
                    .map(|(k, _)| k.clone());
                match key {
                    Some((area, path)) => rows.push(Self::brief_of(inner, area, &path)),
                    None => {
                        inner.detach();
                    }
                }
            }
            self.forget(&mut st, &rows, false)?;
        }
        Ok(())
    }

    /// Evicts least-recently-used unguarded, unpinned objects until usage fits the budget.
    fn evict(&self) -> Result<u64, CacheError> {
        let _f = lock(&self.flush_lock);
        let mut st = self.state();
        if st.used <= self.budget {
            return Ok(0);
        }
        let need = st.used - self.budget;
        let mut chosen: Vec<ObjectBrief> = Vec::new();
        let mut planned = 0u64;
        let mut after = None;
        'pages: loop {
            let page = self.meta.obj_lru_page(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some((last.last_access, last.id));
            for r in page {
                if st.is_pinned(r.area, &r.path) {
                    continue;
                }
                let live = st
                    .live
                    .get(&(r.area, r.path.clone()))
                    .and_then(Weak::upgrade)
                    .filter(|i| i.id == r.id);
                let bytes = match &live {
                    Some(i) => {
                        let bytes = lock(&i.bits).present_bytes;
                        // A held object without data is probably being fetched: leave it.
                        if i.guards.load(Ordering::SeqCst) > 0 || bytes == 0 {
                            continue;
                        }
                        bytes
                    }
                    // Rows without data free nothing but an inode; sweep those we pass.
                    None => r.present_bytes,
                };
                planned += bytes;
                chosen.push(r);
                if planned >= need {
                    break 'pages;
                }
            }
        }
        // `forget` re-checks guards under each object's lock, so a guard taken meanwhile wins.
        let freed = self.forget(&mut st, &chosen, true)?;
        if st.used > self.budget {
            tracing::debug!(
                used = st.used,
                budget = self.budget,
                "cache over budget: the rest is open, pinned or not yet flushed"
            );
        }
        Ok(freed)
    }

    fn flusher(self: Arc<Self>, interval: Duration) {
        let mut next_flush = Instant::now() + interval;
        let mut last_evict = Instant::now()
            .checked_sub(MIN_EVICT_GAP)
            .unwrap_or_else(Instant::now);
        loop {
            let (shutdown, crash, evict) = {
                let mut sig = lock(&self.signal);
                loop {
                    if sig.shutdown {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next_flush || sig.flush {
                        break;
                    }
                    let evict_due = last_evict + MIN_EVICT_GAP;
                    if sig.evict && now >= evict_due {
                        break;
                    }
                    let until = if sig.evict {
                        evict_due.min(next_flush)
                    } else {
                        next_flush
                    };
                    sig = self
                        .wake
                        .wait_timeout(sig, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let r = (sig.shutdown, sig.crash, sig.evict);
                sig.evict = false;
                if sig.flush {
                    sig.flush = false;
                    next_flush = Instant::now();
                }
                r
            };
            if shutdown {
                if !crash {
                    if let Err(e) = self.flush() {
                        tracing::error!(error = %e, "final cache flush failed");
                    }
                }
                return;
            }
            if Instant::now() >= next_flush {
                if let Err(e) = self.flush() {
                    tracing::error!(error = %e, "cache flush failed");
                }
                self.state().live.retain(|_, w| w.strong_count() > 0);
                next_flush = Instant::now() + interval;
            }
            let over = {
                let st = self.state();
                st.used > self.budget
            };
            if evict || over {
                last_evict = Instant::now();
                if let Err(e) = self.evict() {
                    tracing::error!(error = %e, "cache eviction failed");
                }
            }
        }
    }
}

/// fsyncs a directory, making the names in it durable.
/// Writes bytes `[from, to)` of the concatenation of `parts` to `file` at `base + from`, with
/// `pwritev` (at most `IOV_MAX` pieces a call), until all are written.
fn write_all_vectored_at<B: AsRef<[u8]>>(
    file: &File,
    parts: &[B],
    from: u64,
    to: u64,
    base: u64,
) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    // The pieces of [from, to), as slices of the parts.
    let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len());
    let mut at = 0u64;
    for p in parts {
        let p = p.as_ref();
        let (s, e) = (at, at + p.len() as u64);
        at = e;
        if e <= from || s >= to {
            continue;
        }
        let lo = from.saturating_sub(s) as usize;
        let hi = (to.min(e) - s) as usize;
        slices.push(&p[lo..hi]);
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let mut pos = base + from;
    let (mut i, mut skip) = (0usize, 0usize);
    while i < slices.len() {
        let iov: Vec<libc::iovec> = slices[i..slices.len().min(i + IOV_MAX)]
            .iter()
            .enumerate()
            .map(|(k, sl)| {
                let sl = if k == 0 { &sl[skip..] } else { sl };
                libc::iovec {
                    iov_base: sl.as_ptr() as *mut libc::c_void,
                    iov_len: sl.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` and is only read by the
        // kernel; `iov.len()` is at most IOV_MAX.
        let r = unsafe {
            libc::pwritev(
                fd,
                iov.as_ptr(),
                iov.len() as libc::c_int,
                pos as libc::off_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut n = r as usize;
        pos += n as u64;
        // Step over what was written.
        while n > 0 {
            let left = slices[i].len() - skip;
            if n >= left {
                n -= left;
                i += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
        while i < slices.len() && slices[i].len() == skip {
            i += 1;
            skip = 0;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Moves a complete file to `dest`: rename, or copy + fsync + rename across filesystems.
fn move_in(src: &Path, dest: &Path) -> Result<(), CacheError> {
    match fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = dest.with_extension("tmp");
            fs::copy(src, &tmp).map_err(io_err("copy into the cache", src))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, dest).map_err(io_err("rename", &tmp))?;
            fs::remove_file(src).map_err(io_err("remove", src))
        }
        Err(e) => Err(io_err("move into the cache", src)(e)),
    }
}

/// A stored row, checked.
struct CheckedRow {
    etag: ETag,
    size: u64,
    bits: Bitmap,
    present_bytes: u64,
}

fn present_bytes_of(bits: &Bitmap, size: u64, bs: u64) -> u64 {
    let n = bits.len();
    let mut total = bits.count_ones() * bs;
    if n > 0 && bits.get(n - 1) {
        total -= n * bs - size;
    }
    total
}

/// Checks the values of a row (not its file); converts the bitmap to `block_size`.
fn check_row(raw: &RawObject, block_size: u64) -> Result<CheckedRow, CacheError> {
    let bad = |reason: String| {
        CacheError::Meta(MetaError::Corrupt(format!("object {}: {reason}", raw.id)))
    };
    AreaId::try_from(raw.area).map_err(|_| bad(format!("area {}", raw.area)))?;
    path_from_sql(raw.path.clone())?;
    let etag = ETag::parse(&raw.etag).ok_or_else(|| bad(format!("ETag {:?}", raw.etag)))?;
    let size = u64::try_from(raw.size).map_err(|_| bad(format!("size {}", raw.size)))?;
    let row_bs = u64::try_from(raw.block_size)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| bad(format!("block size {}", raw.block_size)))?;
    if !valid_name(&raw.file) {
        return Err(bad(format!("file name {:?}", raw.file)));
    }
    let bits = Bitmap::from_bytes(&raw.present, size.div_ceil(row_bs))
        .ok_or_else(|| bad("presence bitmap does not fit the size".into()))?;
    let bits = if row_bs == block_size {
        bits
    } else {
        bitmap::convert(&bits, row_bs, block_size, size)
    };
    let present_bytes = present_bytes_of(&bits, size, block_size);
    Ok(CheckedRow {
        etag,
        size,
        bits,
        present_bytes,
    })
}

impl BlockCache {
    /// Opens the cache in `dir` (objects under `dir/objects/`), with the index in `meta`.
    /// Checks the index against the files (see the module docs) and starts the flusher.
    pub fn open(
        dir: &Path,
        budget_bytes: u64,
        block_size: u64,
        meta: Arc<MetaStore>,
    ) -> Result<BlockCache, CacheError> {
        Self::open_with(
            dir,
            CacheConfig {
                budget_bytes,
                block_size,
                flush_interval: Some(DEFAULT_FLUSH_INTERVAL),
            },
            meta,
        )
    }

    /// [`open`](Self::open) with every setting.
    pub fn open_with(
        dir: &Path,
        config: CacheConfig,
        meta: Arc<MetaStore>,
    ) -> Result<BlockCache, CacheError> {
        let bs = config.block_size;
        if !bs.is_power_of_two() || !(512..=1 << 30).contains(&bs) {
            return Err(CacheError::BadBlockSize(bs));
        }
        let objects_dir = dir.join(OBJECTS_DIR);
        fs::create_dir_all(&objects_dir).map_err(io_err("create directory", &objects_dir))?;
        // All fan-out directories exist (durably) from the start, so a new object file only
        // ever needs its own directory synced.
        let mut created = false;
        for i in 0..=255u8 {
            let d = objects_dir.join(format!("{i:02x}"));
            match fs::create_dir(&d) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory", &d)(e)),
            }
        }
        if created {
            sync_dir(&objects_dir)?;
            sync_dir(dir)?;
        }
        let shared = Arc::new(Shared {
            objects_dir,
            meta,
            block_size: bs,
            budget: config.budget_bytes,
            clock: Arc::new(AtomicI64::new(0)),
            flush_lock: Mutex::new(()),
            state: Mutex::new(State::default()),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        });
        shared.check_index()?;
        let thread = match config.flush_interval {
            None => None,
            Some(interval) => {
                let sh = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("cache-flusher".into())
                        .spawn(move || sh.flusher(interval))
                        .map_err(io_err("start the flusher for", dir))?,
                )
            }
        };
        Ok(BlockCache { shared, thread })
    }

    /// The object for this version, created empty if new. Any object of the same
    /// `(area, path)` with another ETag or size is dropped first. Counts as an access.
    pub fn object(&self, key: &ObjectKey) -> Result<Arc<CacheObject>, CacheError> {
        self.lookup(key, true)
            .map(|o| o.expect("created when missing"))
    }

    /// Like [`BlockCache::object`], but `None` instead of creating the object when the cache
    /// has no object of that version (an older version's object is left for `object` to drop).
    pub fn cached_object(&self, key: &ObjectKey) -> Result<Option<Arc<CacheObject>>, CacheError> {
        self.lookup(key, false)
    }

    fn lookup(
        &self,
        key: &ObjectKey,
        create: bool,
    ) -> Result<Option<Arc<CacheObject>>, CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        let path = key.path.as_str();
        if let Some(inner) = st.live(key.area, path) {
            if inner.etag == key.etag && inner.size == key.size {
                inner.touch_locked(&mut st);
                return Ok(Some(sh.wrap(key.clone(), inner)));
            }
            if !create {
                return Ok(None);
            }
            sh.forget(&mut st, &[Shared::brief_of(&inner, key.area, path)], false)?;
        } else if let Some(raw) = sh.meta.obj_by_path(key.area, &key.path)? {
            let same = ETag::parse(&raw.etag).as_ref() == Some(&key.etag)
                && u64::try_from(raw.size).ok() == Some(key.size);
            if same {
                match sh.load(&raw) {
                    Ok(inner) => {
                        st.live
                            .insert((key.area, path.to_string()), Arc::downgrade(&inner));
                        inner.touch_locked(&mut st);
                        return Ok(Some(sh.wrap(key.clone(), inner)));
                    }
                    Err(e) => {
                        tracing::warn!(path = %key.path, error = %e, "dropping a damaged cache object")
                    }
                }
            } else if !create {
                // Another version: `object` drops it when this one is created.
                return Ok(None);
            }
            sh.forget(&mut st, &[brief_of_raw(&raw, key.area)], false)?;
        }
        if !create {
            return Ok(None);
        }
        let inner = sh.create(&mut st, key, None)?;
        inner.touch_locked(&mut st);
        Ok(Some(sh.wrap(key.clone(), inner)))
    }

    /// The cached object of a path whatever its ETag, without creating one (offline reads,
    /// the xattr state). Not an access.
    pub fn existing(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<Arc<CacheObject>>, CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        let inner = match st.live(area, path.as_str()) {
            Some(inner) => inner,
            None => {
                let Some(raw) = sh.meta.obj_by_path(area, path)? else {
                    return Ok(None);
                };
                match sh.load(&raw) {
                    Ok(inner) => {
                        st.live
                            .insert((area, path.as_str().to_string()), Arc::downgrade(&inner));
                        inner
                    }
                    Err(e) => {
                        tracing::warn!(%path, error = %e, "dropping a damaged cache object");
                        sh.forget(&mut st, &[brief_of_raw(&raw, area)], false)?;
                        return Ok(None);
                    }
                }
            }
        };
        let key = ObjectKey {
            area,
            path: path.clone(),
            etag: inner.etag.clone(),
            size: inner.size,
        };
        Ok(Some(sh.wrap(key, inner)))
    }

    /// Drops the objects at or below `path` and the pins there (the path is gone).
    pub fn remove_path(&self, area: AreaId, path: &RemotePath) -> Result<(), CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        let rows = sh.meta.obj_subtree(area, path)?;
        sh.forget(&mut st, &rows, false)?;
        sh.meta.pins_delete_subtree(area, path)?;
        st.pins
            .retain(|(a, p)| *a != area || !under(p, path.as_str()));
        Ok(())
    }

    /// Re-keys the objects and pins at or below `from` to `to` (files keep their names);
    /// objects and pins at or below `to` are dropped first. Holders of a moved object keep a
    /// [`CacheObject`] whose `key()` names the old path; ask again for the new one.
    pub fn rename_path(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<(), CacheError> {
        check_rename(from, to)?;
        if from == to {
            return Ok(());
        }
        let sh = &self.shared;
        let mut st = sh.state();
        let targets = sh.meta.obj_subtree(area, to)?;
        sh.forget(&mut st, &targets, false)?;
        sh.meta.obj_rename(area, from, to)?;
        let (f, t) = (from.as_str(), to.as_str());
        let moved: Vec<(AreaId, String)> = st
            .live
            .keys()
            .filter(|(a, p)| *a == area && under(p, f))
            .cloned()
            .collect();
        for k in moved {
            if let Some(w) = st.live.remove(&k) {
                st.live.insert((area, rebase(&k.1, f, t)), w);
            }
        }
        st.pins.retain(|(a, p)| *a != area || !under(p, t));
        let pins: Vec<(AreaId, String)> = st
            .pins
            .iter()
            .filter(|(a, p)| *a == area && under(p, f))
            .cloned()
            .collect();
        for k in pins {
            st.pins.remove(&k);
            st.pins.insert((area, rebase(&k.1, f, t)));
        }
        Ok(())
    }

    /// Moves the complete local `file` in as the object for `key` (all blocks present), e.g.
    /// after an upload succeeded. The file is fsynced before it is recorded; it must be on the
    /// same filesystem as the cache to be moved by a rename (it is copied otherwise). Any
    /// object of the path is dropped first.
    pub fn adopt(&self, key: &ObjectKey, file: &Path) -> Result<Arc<CacheObject>, CacheError> {
        let f = File::open(file).map_err(io_err("open", file))?;
        let len = f.metadata().map_err(io_err("stat", file))?.len();
        if len != key.size {
            return Err(CacheError::SizeMismatch {
                file: file.to_path_buf(),
                path: key.path.clone(),
                expected: key.size,
                actual: len,
            });
        }
        f.sync_all().map_err(io_err("fsync", file))?;
        drop(f);
        let sh = &self.shared;
        let mut st = sh.state();
        if let Some(raw) = sh.meta.obj_by_path(key.area, &key.path)? {
            sh.forget(&mut st, &[brief_of_raw(&raw, key.area)], false)?;
        }
        let inner = sh.create(&mut st, key, Some(file))?;
        let over = st.used > sh.budget;
        drop(st);
        if over {
            sh.request_evict();
        }
        Ok(sh.wrap(key.clone(), inner))
    }

    /// Bytes of present blocks, the budget, and the number of objects.
    pub fn usage(&self) -> CacheUsage {
        let st = self.shared.state();
        CacheUsage {
            used_bytes: st.used,
            budget_bytes: self.shared.budget,
            objects: st.objects,
        }
    }

    /// Evicts least-recently-used whole objects until usage is within the budget (after a
    /// flush, so the LRU order is exact). Never evicts an object with a live [`OpenGuard`] or a
    /// pinned one. Returns the bytes freed.
    pub fn evict(&self) -> Result<u64, CacheError> {
        self.shared.flush()?;
        self.shared.evict()
    }

    /// Makes present blocks and access times durable now (the flusher does it every interval).
    pub fn flush(&self) -> Result<(), CacheError> {
        self.shared.flush()
    }

    /// Pins or unpins a path (file or directory: a pin covers everything below). Pinned
    /// objects are never evicted. The path need not be cached.
    pub fn set_pinned(
        &self,
        area: AreaId,
        path: &RemotePath,
        pinned: bool,
    ) -> Result<(), CacheError> {
        let mut st = self.shared.state();
        self.shared.meta.pin_set(area, path, pinned)?;
        let k = (area, path.as_str().to_string());
        if pinned {
            st.pins.insert(k);
        } else {
            st.pins.remove(&k);
        }
        Ok(())
    }

    /// True when `path` or one of its ancestors is pinned.
    pub fn is_pinned(&self, area: AreaId, path: &RemotePath) -> bool {
        self.shared.state().is_pinned(area, path.as_str())
    }

    /// The pinned paths (as set, not expanded).
    pub fn pins(&self) -> Vec<(AreaId, RemotePath)> {
        let st = self.shared.state();
        let mut v: Vec<(AreaId, RemotePath)> = st
            .pins
            .iter()
            .filter_map(|(a, p)| RemotePath::new(p).ok().map(|p| (*a, p)))
            .collect();
        v.sort();
        v
    }

    pub fn block_size(&self) -> u64 {
        self.shared.block_size
    }

    /// Stops without the final flush, as a crash would.
    #[cfg(test)]
    pub(crate) fn simulate_crash(mut self) {
        let mut sig = lock(&self.shared.signal);
        sig.crash = true;
        sig.shutdown = true;
        drop(sig);
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = self.shared.state();
        st.pending.clear();
        st.accessed.clear();
    }
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        let crashed = {
            let mut sig = lock(&self.shared.signal);
            sig.shutdown = true;
            sig.crash
        };
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // The flusher does the final flush (unless crashed).
            if t.join().is_err() {
                tracing::error!("cache flusher panicked");
            }
        } else if !crashed {
            if let Err(e) = self.shared.flush() {
                tracing::error!(error = %e, "final cache flush failed");
            }
        }
    }
}

fn brief_of_raw(raw: &RawObject, area: AreaId) -> ObjectBrief {
    ObjectBrief {
        id: raw.id,
        area,
        path: raw.path.clone(),
        file: raw.file.clone(),
        present_bytes: u64::try_from(raw.present_bytes).unwrap_or(0),
        last_access: raw.last_access,
    }
}

impl Shared {
    /// The check at open: drops bad rows, converts bitmaps to the block size, deletes files
    /// without a row, and loads usage, pins and the LRU clock.
    fn check_index(&self) -> Result<(), CacheError> {
        let rows = self.meta.obj_all()?;
        let mut keep: HashSet<String> = HashSet::with_capacity(rows.len());
        let mut drop_rows = Vec::new();
        let mut rewrites = Vec::new();
        let (mut used, mut objects) = (0u64, 0u64);
        for raw in &rows {
            let checked = check_row(raw, self.block_size).and_then(|c| {
                let path = self.file_path(&raw.file);
                let meta = fs::metadata(&path).map_err(io_err("stat", &path))?;
                if !meta.is_file() || meta.len() != c.size {
                    return Err(CacheError::Corrupt {
                        file: path,
                        reason: format!("length {}, expected {}", meta.len(), c.size),
                    });
                }
                Ok(c)
            });
            match checked {
                Ok(c) => {
                    let stored_bytes = u64::try_from(raw.present_bytes).ok();
                    if raw.block_size as u64 != self.block_size
                        || stored_bytes != Some(c.present_bytes)
                    {
                        rewrites.push((
                            raw.id,
                            self.block_size,
                            c.bits.to_bytes(),
                            c.present_bytes,
                        ));
                    }
                    keep.insert(raw.file.clone());
                    used += c.present_bytes;
                    objects += 1;
                }
                Err(e) => {
                    tracing::warn!(object = raw.id, path = %raw.path, error = %e,
                        "dropping a cache object that failed its check");
                    drop_rows.push(raw.id);
                }
            }
        }
        self.meta.obj_delete(&drop_rows)?;
        self.meta.obj_rewrite(&rewrites)?;
        // Files without a row: leftovers of a crash between the steps of a create or a drop.
        let mut swept = 0u64;
        let top = fs::read_dir(&self.objects_dir).map_err(io_err("list", &self.objects_dir))?;
        for ent in top {
            let ent = ent.map_err(io_err("list", &self.objects_dir))?;
            let p = ent.path();
            let ft = ent.file_type().map_err(io_err("stat", &p))?;
            if !ft.is_dir() {
                remove_stray(&p, &mut swept);
                continue;
            }
            let dir_name = ent.file_name();
            let sub = fs::read_dir(&p).map_err(io_err("list", &p))?;
            for f in sub {
                let f = f.map_err(io_err("list", &p))?;
                let name = f.file_name();
                let known = name
                    .to_str()
                    .is_some_and(|n| keep.contains(n) && dir_name.to_str() == n.get(..2))
                    && f.file_type().is_ok_and(|t| t.is_file());
                if !known {
                    remove_stray(&f.path(), &mut swept);
                }
            }
        }
        if swept > 0 || !drop_rows.is_empty() {
            tracing::info!(
                dropped_rows = drop_rows.len(),
                deleted_files = swept,
                "cache index checked"
            );
        }
        let pins = self.meta.pins_all()?;
        let max_access = self.meta.obj_max_access()?;
        self.clock.fetch_max(max_access, Ordering::SeqCst);
        let mut st = self.state();
        st.used = used;
        st.objects = objects;
        st.pins = pins.into_iter().collect();
        Ok(())
    }
}

fn remove_stray(p: &Path, count: &mut u64) {
    let res = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match res {
        Ok(()) => *count += 1,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot delete a stray cache file")
        }
    }
}

/// One cached version of one remote file. Cheap to share (`Arc`); see the module docs.
pub struct CacheObject {
    key: ObjectKey,
    inner: Arc<ObjectInner>,
}

impl std::fmt::Debug for CacheObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheObject")
            .field("key", &self.key)
            .field("file", &self.inner.file_path)
            .field("state", &self.state())
            .finish()
    }
}

impl CacheObject {
    /// The key this object was obtained under.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    pub fn size(&self) -> u64 {
        self.inner.size
    }

    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    pub fn state(&self) -> ObjectState {
        let b = lock(&self.inner.bits);
        let n = b.present.count_ones();
        if n == self.inner.nblocks() {
            ObjectState::Cached
        } else if n == 0 {
            ObjectState::Online
        } else {
            ObjectState::Partial
        }
    }

    pub fn is_complete(&self) -> bool {
        self.state() == ObjectState::Cached
    }

    /// Bytes of present blocks.
    pub fn present_bytes(&self) -> u64 {
        lock(&self.inner.bits).present_bytes
    }

    /// False once the object was dropped from the cache (new version, removal, eviction,
    /// failed fsync): it still reads and writes, but nothing is persisted; ask the cache again.
    pub fn is_current(&self) -> bool {
        !lock(&self.inner.bits).detached
    }

    /// Block-aligned byte ranges inside `[offset, offset + len) ∩ [0, size)` whose blocks are
    /// missing, merged into runs (the last one ends at `size` when it holds the last block).
    pub fn missing(&self, offset: u64, len: u64) -> Vec<Range<u64>> {
        let (size, bs) = (self.inner.size, self.inner.block_size);
        if len == 0 || offset >= size {
            return Vec::new();
        }
        let end = offset.saturating_add(len).min(size);
        let runs = lock(&self.inner.bits)
            .present
            .clear_runs(offset / bs..end.div_ceil(bs));
        runs.into_iter()
            .map(|r| r.start * bs..(r.end * bs).min(size))
            .collect()
    }

    /// Stores fetched data at a block-aligned `offset`; `data` covers whole blocks, except the
    /// file's last block. Blocks already present are left alone (never rewritten). The blocks
    /// count as present at once in this process and durably after the next flush.
    pub fn write_blocks(&self, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        self.write_blocks_vectored(offset, &[data])
    }

    /// [`CacheObject::write_blocks`] of the concatenation of `parts`, written with `pwritev`
    /// straight from them (a download's body pieces need no copy into one buffer first).
    pub fn write_blocks_vectored<B: AsRef<[u8]>>(
        &self,
        offset: u64,
        parts: &[B],
    ) -> Result<(), CacheError> {
        let inner = &self.inner;
        let (size, bs) = (inner.size, inner.block_size);
        let len: u64 = parts.iter().map(|p| p.as_ref().len() as u64).sum();
        let end = offset.checked_add(len);
        let ok = offset % bs == 0 && end.is_some_and(|e| e <= size && (len % bs == 0 || e == size));
        if !ok {
            return Err(CacheError::BadWrite {
                path: self.key.path.clone(),
                offset,
                len,
                block_size: bs,
                size,
            });
        }
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let runs = lock(&inner.bits)
            .present
            .clear_runs(offset / bs..end.div_ceil(bs));
        if runs.is_empty() {
            return Ok(());
        }
        for r in &runs {
            let s = r.start * bs;
            let e = (r.end * bs).min(size);
            write_all_vectored_at(&inner.file, parts, s - offset, e - offset, offset)
                .map_err(io_err("write", &inner.file_path))?;
        }
        let mark = |b: &mut Bits| -> u64 {
            let mut added = 0;
            for r in &runs {
                for i in r.clone() {
                    if b.present.set(i) {
                        added += inner.block_len(i);
                    }
                }
            }
            b.present_bytes += added;
            added
        };
        match inner.shared.upgrade() {
            Some(sh) => {
                let mut st = sh.state();
                let mut b = lock(&inner.bits);
                let added = mark(&mut b);
                if !b.detached && added > 0 {
                    b.changed = true;
                    st.used += added;
                    st.pending.entry(inner.id).or_insert_with(|| inner.clone());
                }
                let over = st.used > sh.budget;
                let crowded = st.pending.len() >= PENDING_SOFT_MAX;
                drop(b);
                drop(st);
                if over {
                    sh.request_evict();
                }
                if crowded {
                    sh.request_flush();
                }
            }
            None => {
                mark(&mut lock(&inner.bits));
            }
        }
        Ok(())
    }

    /// Reads from present blocks only; fails with [`CacheError::NotCached`] if any block of the
    /// asked range is missing. Returns the bytes read (fewer than `buf.len()` only at the end
    /// of the file; 0 at or after it). Counts as an access.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, CacheError> {
        let data = self.read_bytes(offset, buf.len())?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    /// The bytes of `offset..offset + len` (clipped to the file) without copying them: a view
    /// of the object file's mapping, if every block is present and every page of the range is
    /// in the kernel's page cache. `Ok(None)` otherwise (the caller reads by copy). Never
    /// waits for the disk. Counts as an access.
    pub fn read_mapped(&self, offset: u64, len: usize) -> Result<Option<bytes::Bytes>, CacheError> {
        let inner = &self.inner;
        let Some(end) = self.present_end(offset, len)? else {
            return Ok(Some(bytes::Bytes::new()));
        };
        let map = inner.mapping.get_or_init(|| {
            Mapping::new(&inner.file, inner.size)
                .inspect_err(|e| {
                    tracing::debug!(file = %inner.file_path.display(), error = %e, "cannot map a cache file: reads copy")
                })
                .ok()
        });
        let Some(map) = map else {
            return Ok(None);
        };
        let (start, end) = (offset as usize, end as usize);
        if !map.resident(start, end) {
            return Ok(None);
        }
        inner.touch();
        map.populate(start, end);
        map.served(end - start);
        Ok(Some(bytes::Bytes::from_owner(MappedRange {
            map: map.clone(),
            start,
            len: end - start,
        })))
    }

    /// The end of a read of `len` bytes at `offset`, clipped to the file: `None` when there is
    /// nothing to read (at or past the end, or `len` 0); [`CacheError::NotCached`] if any block
    /// of the range is missing.
    fn present_end(&self, offset: u64, len: usize) -> Result<Option<u64>, CacheError> {
        let inner = &self.inner;
        if offset >= inner.size || len == 0 {
            return Ok(None);
        }
        let end = offset.saturating_add(len as u64).min(inner.size);
        let bs = inner.block_size;
        if lock(&inner.bits)
            .present
            .all_set(offset / bs..end.div_ceil(bs))
        {
            Ok(Some(end))
        } else {
            Err(CacheError::NotCached {
                path: self.key.path.clone(),
                offset,
                end,
            })
        }
    }

    /// Like [`CacheObject::read_at`], into a new buffer of up to `len` bytes that is not
    /// zeroed first (the hot read path: no memset before the copy).
    pub fn read_bytes(&self, offset: u64, len: usize) -> Result<Vec<u8>, CacheError> {
        self.read_bytes_with(offset, len, false)
            .map(|r| r.expect("a blocking read completes"))
    }

    /// [`CacheObject::read_bytes`] only if the bytes are in the kernel's page cache
    /// (`RWF_NOWAIT`): `Ok(None)` when reading would wait for the disk. For callers that must
    /// not block (an async worker).
    pub fn read_bytes_nowait(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        self.read_bytes_with(offset, len, true)
    }

    fn read_bytes_with(
        &self,
        offset: u64,
        len: usize,
        nowait: bool,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let inner = &self.inner;
        let Some(end) = self.present_end(offset, len)? else {
            return Ok(Some(Vec::new()));
        };
        let size = inner.size;
        let n = (end - offset) as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(n);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&inner.file);
        let mut done = 0usize;
        while done < n {
            // SAFETY: the pointer and length stay within the vector's allocation (capacity n,
            // `done` bytes initialised so far); preadv2 writes at most n - done bytes there.
            let iov = libc::iovec {
                iov_base: unsafe { buf.as_mut_ptr().add(done).cast() },
                iov_len: n - done,
            };
            let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
            let r =
                unsafe { libc::preadv2(fd, &iov, 1, (offset + done as u64) as libc::off_t, flags) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if nowait
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP)
                    )
                {
                    return Ok(None);
                }
                return Err(io_err("read", &inner.file_path)(e));
            }
            if r == 0 {
                return Err(CacheError::Corrupt {
                    file: inner.file_path.clone(),
                    reason: format!("shorter than {size} bytes"),
                });
            }
            done += r as usize;
            // SAFETY: preadv2 initialised the bytes up to `done`.
            unsafe { buf.set_len(done) };
            if nowait && done < n {
                // Part of the range is not in the page cache.
                return Ok(None);
            }
        }
        inner.touch();
        Ok(Some(buf))
    }

    /// The sparse file (copy to staging; FUSE passthrough once complete).
    pub fn file_path(&self) -> &Path {
        &self.inner.file_path
    }

    /// Another descriptor of the object's open file (`dup`: no path lookup, no disk I/O), as
    /// FUSE passthrough hands it to the kernel once the object is complete.
    pub fn file_handle(&self) -> io::Result<File> {
        self.inner.file.try_clone()
    }

    /// Records an access (LRU); persisted by the flusher, not per call.
    pub fn touch(&self) {
        self.inner.touch();
    }

    /// Keeps the object from eviction while the guard lives (an open file handle).
    pub fn open_guard(self: &Arc<Self>) -> OpenGuard {
        let _b = lock(&self.inner.bits);
        self.inner.guards.fetch_add(1, Ordering::SeqCst);
        OpenGuard {
            inner: self.inner.clone(),
        }
    }
}

/// While alive, the object it came from is not evicted. Dropping it counts as an access.
pub struct OpenGuard {
    inner: Arc<ObjectInner>,
}

impl std::fmt::Debug for OpenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenGuard")
            .field("file", &self.inner.file_path)
            .finish()
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.inner.guards.fetch_sub(1, Ordering::SeqCst);
        self.inner.touch();
    }
}
