//! The public face of the block cache: [`BlockCache`] (open, look up and create objects,
//! rename and remove paths, adopt uploaded files, pins, usage, flush and evict on demand) and
//! its shutdown.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::error::{io_err, CacheError};
use super::layout::CacheLayout;
use super::migrate::migrate_nested_objects;
use super::object::CacheObject;
use super::state::{brief_of_raw, rebase, under, Shared, Signal, State};
use super::{lock, CacheConfig, CacheUsage, ObjectKey, DEFAULT_FLUSH_INTERVAL};
use crate::meta::{check_rename, AreaId, MetaStore};
use crate::remote::{ETag, RemotePath};

/// The block cache of one cache directory.
pub struct BlockCache {
    pub(super) shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("dir", &self.shared.layout.root())
            .field("block_size", &self.shared.block_size)
            .field("budget", &self.shared.budget)
            .finish_non_exhaustive()
    }
}

impl BlockCache {
    /// Opens the block cache of the cache directory `layout` (object files under its
    /// `objects/`), with the index in `meta`. Moves an older release's layout first (see
    /// `migrate.rs`), checks the index against the files (see the module docs) and starts the
    /// flusher.
    pub fn open(
        layout: &CacheLayout,
        budget_bytes: u64,
        block_size: u64,
        meta: Arc<MetaStore>,
    ) -> Result<BlockCache, CacheError> {
        Self::open_with(
            layout,
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
        layout: &CacheLayout,
        config: CacheConfig,
        meta: Arc<MetaStore>,
    ) -> Result<BlockCache, CacheError> {
        let bs = config.block_size;
        if !bs.is_power_of_two() || !(512..=1 << 30).contains(&bs) {
            return Err(CacheError::BadBlockSize(bs));
        }
        migrate_nested_objects(layout)?;
        layout.create_object_dirs()?;
        let shared = Arc::new(Shared {
            layout: layout.clone(),
            meta,
            block_size: bs,
            budget: config.budget_bytes,
            clock: Arc::new(AtomicI64::new(0)),
            flush_lock: Mutex::new(()),
            state: Mutex::new(State::default()),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            disk: Default::default(),
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
                        .map_err(io_err("start the flusher for", layout.root()))?,
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

    /// The object of a path whatever its ETag, if it is loaded: answered from memory without
    /// waiting (`None` also when the cache's state is busy; ask [`BlockCache::existing`]
    /// then). For the xattr state, answered on the FUSE thread. Not an access.
    pub fn loaded(&self, area: AreaId, path: &RemotePath) -> Option<Arc<CacheObject>> {
        let sh = &self.shared;
        let mut st = sh.state.try_lock().ok()?;
        let inner = st.live(area, path.as_str())?;
        let key = ObjectKey {
            area,
            path: path.clone(),
            etag: inner.etag.clone(),
            size: inner.size,
        };
        Some(sh.wrap(key, inner))
    }

    /// The names of the files directly in folder `dir` that have an object (any version)
    /// (`None` when more than `max` objects are below `dir`, at any depth), with the index's
    /// generation they were read at. A path not among them has no object for as long as
    /// [`BlockCache::generation_now`] gives the same generation.
    pub fn objects_in(
        &self,
        area: AreaId,
        dir: &RemotePath,
        max: usize,
    ) -> Result<(u64, Option<HashSet<String>>), CacheError> {
        let sh = &self.shared;
        let st = sh.state();
        // Read no more than needed: a folder with more objects below it is not listed.
        let paths = sh.meta.obj_paths_below(area, dir, max.saturating_add(1))?;
        let names = (paths.len() <= max).then(|| {
            let prefix = if dir.is_root() {
                String::new()
            } else {
                format!("{}/", dir.as_str())
            };
            paths
                .iter()
                .filter_map(|p| p.strip_prefix(&prefix))
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .map(str::to_string)
                .collect()
        });
        Ok((st.paths_added, names))
    }

    /// The generation of [`BlockCache::objects_in`] now, if it can be read without waiting.
    pub fn generation_now(&self) -> Option<u64> {
        self.shared.state.try_lock().ok().map(|st| st.paths_added)
    }

    /// Drops the objects at or below `path` and the pins there (the path is gone).
    pub fn remove_path(&self, area: AreaId, path: &RemotePath) -> Result<(), CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        let rows = sh.meta.obj_subtree(area, path)?;
        sh.forget(&mut st, &rows, false)?;
        sh.meta.pins_delete_subtree(area, path)?;
        st.pins
            .retain(|(a, p), _| *a != area || !under(p, path.as_str()));
        // No recount: `forget` took the removed objects' bytes off the pinned count, and the
        // marks that went decided only for paths at or below `path`, all removed.
        Ok(())
    }

    /// *Free up space*: drops the cached objects at or below `path` that nobody holds open
    /// (pins are not changed: unpin first). Returns the bytes freed and the objects left
    /// because they are open.
    pub fn free_path(&self, area: AreaId, path: &RemotePath) -> Result<(u64, u64), CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        let rows = sh.meta.obj_subtree(area, path)?;
        let before = st.objects;
        let freed = sh.forget(&mut st, &rows, true)?;
        let dropped = before - st.objects;
        Ok((freed, rows.len() as u64 - dropped))
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
        st.paths_added += 1;
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
        st.pins.retain(|(a, p), _| *a != area || !under(p, t));
        let pins: Vec<(AreaId, String)> = st
            .pins
            .keys()
            .filter(|(a, p)| *a == area && under(p, f))
            .cloned()
            .collect();
        for k in pins {
            if let Some(keep) = st.pins.remove(&k) {
                st.pins.insert((area, rebase(&k.1, f, t)), keep);
            }
        }
        drop(st);
        sh.recount_pinned()
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
        let over = st.over_budget(sh.budget);
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
    /// objects are never evicted. The path need not be cached. Unpinning removes the path's
    /// own mark only (see [`BlockCache::set_pin_mark`] for exceptions inside a pin).
    pub fn set_pinned(
        &self,
        area: AreaId,
        path: &RemotePath,
        pinned: bool,
    ) -> Result<(), CacheError> {
        self.set_pin_mark(area, path, pinned.then_some(true))
    }

    /// Sets a path's pin mark: `Some(true)` pins it with everything below, `Some(false)` makes
    /// it an exception inside a pinned folder (not kept), `None` removes the mark (the nearest
    /// mark above decides again).
    pub fn set_pin_mark(
        &self,
        area: AreaId,
        path: &RemotePath,
        mark: Option<bool>,
    ) -> Result<(), CacheError> {
        let mut st = self.shared.state();
        self.shared.meta.pin_set(area, path, mark)?;
        let k = (area, path.as_str().to_string());
        match mark {
            Some(keep) => {
                st.pins.insert(k, keep);
            }
            None => {
                st.pins.remove(&k);
            }
        }
        drop(st);
        // Bytes that were kept may count against the budget again.
        self.shared.recount_pinned()?;
        self.shared.request_evict();
        Ok(())
    }

    /// Replaces the pin marks at or below `path` by one: all go, then `path` gets the mark
    /// `keep` unless the nearest mark above already gives it that (pin: `true`, unpin:
    /// `false`). The pinned bytes are counted once, at the end.
    pub fn replace_pin_marks(
        &self,
        area: AreaId,
        path: &RemotePath,
        keep: bool,
    ) -> Result<(), CacheError> {
        let sh = &self.shared;
        let mut st = sh.state();
        sh.meta.pins_delete_subtree(area, path)?;
        st.pins
            .retain(|(a, p), _| *a != area || !under(p, path.as_str()));
        if st.is_pinned(area, path.as_str()) != keep {
            sh.meta.pin_set(area, path, Some(keep))?;
            st.pins.insert((area, path.as_str().to_string()), keep);
        }
        drop(st);
        // Bytes that were kept may count against the budget again.
        sh.recount_pinned()?;
        sh.request_evict();
        Ok(())
    }

    /// The pin marks at or below `path` (for "unpin everything here").
    pub fn pin_marks_under(&self, area: AreaId, path: &RemotePath) -> Vec<(RemotePath, bool)> {
        let st = self.shared.state();
        let mut v: Vec<(RemotePath, bool)> = st
            .pins
            .iter()
            .filter(|((a, p), _)| *a == area && under(p, path.as_str()))
            .filter_map(|((_, p), &k)| RemotePath::new(p).ok().map(|p| (p, k)))
            .collect();
        v.sort();
        v
    }

    /// True when the nearest pin mark at or above `path` pins it.
    pub fn is_pinned(&self, area: AreaId, path: &RemotePath) -> bool {
        self.shared.state().is_pinned(area, path.as_str())
    }

    /// The pinned paths (as set, not expanded; exceptions left out).
    pub fn pins(&self) -> Vec<(AreaId, RemotePath)> {
        let st = self.shared.state();
        let mut v: Vec<(AreaId, RemotePath)> = st
            .pins
            .iter()
            .filter(|(_, &keep)| keep)
            .filter_map(|((a, p), _)| RemotePath::new(p).ok().map(|p| (*a, p)))
            .collect();
        v.sort();
        v
    }

    /// Bytes of present blocks kept by pins (outside the budget).
    pub fn pinned_bytes(&self) -> u64 {
        self.shared.state().pinned
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
