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
//! - A file name is not reused while a power cut could bring back the row that named it: a
//!   row's deletion is not fsynced, so its name stays taken (`State::freed`) until the index is
//!   made durable (a WAL checkpoint at open, and whenever 4,096 names wait). Otherwise the
//!   same version cached again, under the same name, and flushed could come back after a cut
//!   under the old row's presence bits and serve holes (`tests/powerloss.rs`).
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
//! [`CacheLayout`] names every path of the cache directory (`layout.rs`); an older release's
//! `objects/objects/<h2>/` is moved into place at open (`migrate.rs`). All 256 `<h2>`
//! directories are created (and synced) at open.
//! `h32` is the first 32 hex digits of SHA-256(`"cloudmount-object-v1\0"`, area as 4 bytes LE,
//! path, `\0`, ETag value); `h2` its first two. The row maps key to file, so a renamed object
//! keeps its file name, and a name already taken gets a `-n` suffix. An `objects` row holds the
//! key, size, block size, file name, presence bitmap (see `bitmap.rs`), its byte count, and the
//! LRU clock (milliseconds, strictly increasing per access, persisted by the flusher about once
//! a second, never per read). Reopening with another block size converts the bitmaps (a new
//! block is present only if all old blocks under it were). The whole format of the cache
//! directory and of `meta.db`: `docs/design.md`.
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
//!
//! # Files
//!
//! `block_cache.rs` the public API ([`BlockCache`]); `object.rs` one object and its I/O
//! ([`CacheObject`]); `state.rs` what the handles and the thread share (create, load, drop);
//! `flush.rs`, `evict.rs` and `flusher.rs` (the background thread) keep the index durable and
//! within budget; `check.rs` the start-up check; `layout.rs` and `migrate.rs` the directory;
//! `io.rs` file I/O helpers; `bitmap.rs` presence bitmaps; `mapped.rs` mapped reads;
//! `error.rs` [`CacheError`].

mod bitmap;
mod block_cache;
mod check;
mod disk;
mod error;
mod evict;
mod flush;
mod flusher;
mod io;
mod layout;
mod mapped;
mod migrate;
mod object;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::remote::{ETag, RemotePath};

pub use crate::meta::AreaId;
pub use block_cache::BlockCache;
pub use disk::{disk_floor, disk_room};
pub use error::CacheError;
pub use layout::CacheLayout;
pub use object::{CacheObject, OpenGuard};

/// Default block size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Default interval between flushes of block presence and access times.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves consistent state before it can panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
