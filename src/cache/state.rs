//! The state a [`BlockCache`](super::BlockCache) shares with its objects and its background
//! thread ([`Shared`]): the map of loaded objects, the flusher's queues, usage and pins, and the
//! operations that create, load and drop objects (file and row together).

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::bitmap::Bitmap;
use super::check::check_row;
use super::error::{io_err, CacheError};
use super::io::{move_in, sync_dir};
use super::layout::{object_name, CacheLayout};
use super::object::{Bits, CacheObject, ObjectInner};
use super::{lock, ObjectKey};
use crate::meta::objects::{NewObject, ObjectBrief, RawObject};
use crate::meta::{AreaId, MetaStore};

/// Names of deleted rows kept from reuse before the index is synced (see [`Shared::forget`]).
const FREED_MAX: usize = 4096;

/// What a cache's handles, its objects and its background thread share.
pub(super) struct Shared {
    pub(super) layout: CacheLayout,
    pub(super) meta: Arc<MetaStore>,
    pub(super) block_size: u64,
    pub(super) budget: u64,
    /// LRU clock: milliseconds, strictly increasing.
    pub(super) clock: Arc<AtomicI64>,
    pub(super) flush_lock: Mutex<()>,
    pub(super) state: Mutex<State>,
    pub(super) signal: Mutex<Signal>,
    pub(super) wake: Condvar,
    /// Whether the disk is below the free-space floor (see `disk.rs`).
    pub(super) disk: super::disk::DiskWatch,
}

/// Requests to the background thread (under `Shared::signal`, woken by `Shared::wake`).
#[derive(Default)]
pub(super) struct Signal {
    pub(super) shutdown: bool,
    pub(super) crash: bool,
    pub(super) evict: bool,
    pub(super) flush: bool,
}

/// Everything under the `state` lock (see the lock order in the module docs of `cache`).
#[derive(Default)]
pub(super) struct State {
    /// Loaded objects by `(area, path)`.
    pub(super) live: HashMap<(AreaId, String), Weak<ObjectInner>>,
    /// Objects whose presence changed since the last flush, by row id. Holds them loaded, so
    /// an object is unloaded only once its presence is persisted.
    pub(super) pending: HashMap<i64, Arc<ObjectInner>>,
    /// Access times not yet persisted, by row id. Does not keep objects (or their files) open.
    pub(super) accessed: HashMap<i64, Access>,
    pub(super) used: u64,
    /// Bytes of `used` that pins keep (outside the budget): counted as blocks arrive and are
    /// freed, and counted again from the index when pins change or paths move.
    pub(super) pinned: u64,
    pub(super) objects: u64,
    /// Pin marks: `true` pins a path and everything below, `false` is an exception inside a
    /// pinned folder; the nearest mark at or above a path decides.
    pub(super) pins: HashMap<(AreaId, String), bool>,
    /// File names of rows deleted since the index was last made durable: a power cut may
    /// bring such a row back, so no new file takes its name until then (see `forget`).
    pub(super) freed: HashSet<String>,
    /// Bumped whenever a path gains an object (a row created, paths renamed): what was read
    /// of the index before says nothing of such paths any more (see
    /// `BlockCache::objects_in`).
    pub(super) paths_added: u64,
}

impl State {
    /// True when the bytes not kept by pins exceed `budget`.
    pub(super) fn over_budget(&self, budget: u64) -> bool {
        self.used.saturating_sub(self.pinned) > budget
    }

    pub(super) fn is_pinned(&self, area: AreaId, path: &str) -> bool {
        if self.pins.is_empty() {
            return false;
        }
        let mut p = path;
        loop {
            if let Some(&keep) = self.pins.get(&(area, p.to_string())) {
                return keep;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None if p.is_empty() => return false,
                None => p = "",
            }
        }
    }

    pub(super) fn live(&mut self, area: AreaId, path: &str) -> Option<Arc<ObjectInner>> {
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
pub(super) struct Access {
    pub(super) file: String,
    pub(super) inner: Weak<ObjectInner>,
    pub(super) at: i64,
}

/// True when `p` is `base` or below it (string form of [`RemotePath::starts_with`]).
pub(super) fn under(p: &str, base: &str) -> bool {
    base.is_empty()
        || p == base
        || (p.starts_with(base) && p.as_bytes().get(base.len()) == Some(&b'/'))
}

pub(super) fn rebase(p: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &p[from.len()..])
}

/// Advances the LRU clock: wall-clock milliseconds, but strictly increasing.
pub(super) fn tick(clock: &AtomicI64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let prev = clock
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| Some(now.max(p + 1)))
        .expect("the closure always returns Some");
    now.max(prev + 1)
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn file_path(&self, name: &str) -> PathBuf {
        self.layout.object_file(name)
    }

    pub(super) fn request_evict(&self) {
        lock(&self.signal).evict = true;
        self.wake.notify_one();
    }

    pub(super) fn request_flush(&self) {
        lock(&self.signal).flush = true;
        self.wake.notify_one();
    }

    pub(super) fn wrap(&self, key: ObjectKey, inner: Arc<ObjectInner>) -> Arc<CacheObject> {
        Arc::new(CacheObject { key, inner })
    }

    /// Opens the file of a stored row and checks it against the row.
    pub(super) fn load(self: &Arc<Self>, raw: &RawObject) -> Result<Arc<ObjectInner>, CacheError> {
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

    /// A file name for a new object, not used by any row, nor by a row whose deletion may
    /// not be durable yet (`State::freed`).
    pub(super) fn pick_name(&self, st: &State, key: &ObjectKey) -> Result<String, CacheError> {
        let base = object_name(key.area, &key.path, &key.etag);
        let taken = |name: &str| -> Result<bool, CacheError> {
            Ok(st.freed.contains(name) || self.meta.obj_file_in_use(name)?)
        };
        if !taken(&base)? {
            return Ok(base);
        }
        for n in 1u32.. {
            let cand = format!("{base}-{n}");
            if !taken(&cand)? {
                return Ok(cand);
            }
        }
        unreachable!("some suffix is free")
    }

    /// Creates a new object (file, then row) with the given content state. With `adopt`, the
    /// complete file at that path is moved in instead of creating an empty sparse file.
    pub(super) fn create(
        self: &Arc<Self>,
        st: &mut State,
        key: &ObjectKey,
        adopt: Option<&Path>,
    ) -> Result<Arc<ObjectInner>, CacheError> {
        let name = self.pick_name(st, key)?;
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
        st.paths_added += 1;
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
    pub(super) fn forget(
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
            if st.is_pinned(r.area, &r.path) {
                st.pinned = st.pinned.saturating_sub(bytes);
            }
            victims.push(r);
        }
        let ids: Vec<i64> = victims.iter().map(|r| r.id).collect();
        self.meta.obj_delete(&ids)?;
        // The deletion is not fsynced (synchronous=NORMAL): after a power cut the rows may be
        // back, naming these files. A new file of the same name (the same version cached
        // again) made durable by a flush would then be served under the old row's presence
        // bits: holes as data. So the names stay taken until the index is durable; past
        // FREED_MAX names, make it durable and free them.
        if st.freed.len() + victims.len() > FREED_MAX {
            self.meta.sync_wal()?;
            st.freed.clear();
        }
        st.freed.extend(victims.iter().map(|r| r.file.clone()));
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

    pub(super) fn brief_of(inner: &ObjectInner, area: AreaId, path: &str) -> ObjectBrief {
        ObjectBrief {
            id: inner.id,
            area,
            path: path.to_string(),
            file: inner.file_name.clone(),
            present_bytes: 0,
            last_access: 0,
        }
    }
}

pub(super) fn brief_of_raw(raw: &RawObject, area: AreaId) -> ObjectBrief {
    ObjectBrief {
        id: raw.id,
        area,
        path: raw.path.clone(),
        file: raw.file.clone(),
        present_bytes: u64::try_from(raw.present_bytes).unwrap_or(0),
        last_access: raw.last_access,
    }
}
