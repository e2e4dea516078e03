//! One cached object: [`CacheObject`] (what callers hold), its shared inner state, block
//! presence, and its I/O (positioned reads and writes of blocks, mapped reads, open guards).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::bitmap::Bitmap;
use super::error::{io_err, CacheError};
use super::io::write_all_vectored_at;
use super::mapped::{MappedRange, Mapping};
use super::state::{tick, Access, Shared, State};
use super::{lock, ObjectKey, ObjectState, PENDING_SOFT_MAX};
use crate::remote::ETag;

/// The state of one object shared by every [`CacheObject`] of it, the cache's maps and the
/// flusher's queue.
pub(super) struct ObjectInner {
    pub(super) id: i64,
    pub(super) etag: ETag,
    pub(super) size: u64,
    pub(super) block_size: u64,
    pub(super) file: File,
    pub(super) file_name: String,
    pub(super) file_path: PathBuf,
    pub(super) bits: Mutex<Bits>,
    /// Changed only under `bits` (increments) or freely (decrements).
    pub(super) guards: AtomicUsize,
    pub(super) last_access: AtomicI64,
    pub(super) access_dirty: AtomicBool,
    /// The file's directory entry is known durable (false for a file created in this run
    /// until the flusher fsyncs its directory).
    pub(super) dir_synced: AtomicBool,
    pub(super) clock: Arc<AtomicI64>,
    pub(super) shared: Weak<Shared>,
    /// The file mapped read-only, made on the first mapped read (`None`: mapping failed, the
    /// object reads by copy).
    pub(super) mapping: std::sync::OnceLock<Option<Arc<Mapping>>>,
}

/// Presence and status of an object, under its own lock (`bits`).
pub(super) struct Bits {
    pub(super) present: Bitmap,
    pub(super) present_bytes: u64,
    /// Presence changed since the last flush snapshot.
    pub(super) changed: bool,
    /// Dropped from the cache: still readable by its holders, no longer persisted or counted.
    pub(super) detached: bool,
}

impl ObjectInner {
    pub(super) fn block_len(&self, i: u64) -> u64 {
        let start = i * self.block_size;
        (start + self.block_size).min(self.size) - start
    }

    pub(super) fn nblocks(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    /// Records an access; true when the object must be queued for the flusher.
    pub(super) fn mark_access(&self) -> bool {
        let t = tick(&self.clock);
        self.last_access.fetch_max(t, Ordering::SeqCst);
        !self.access_dirty.swap(true, Ordering::SeqCst)
    }

    /// Records an access. Takes the state lock: never call it while holding it (see
    /// [`Self::touch_locked`]).
    pub(super) fn touch(self: &Arc<Self>) {
        if self.mark_access() {
            if let Some(sh) = self.shared.upgrade() {
                self.touch_queue(&mut sh.state());
            }
        }
    }

    pub(super) fn touch_locked(self: &Arc<Self>, st: &mut State) {
        if self.mark_access() {
            self.touch_queue(st);
        }
    }

    pub(super) fn touch_queue(self: &Arc<Self>, st: &mut State) {
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
    pub(super) fn detach(&self) -> u64 {
        let mut b = lock(&self.bits);
        if b.detached {
            0
        } else {
            b.detached = true;
            b.present_bytes
        }
    }
}

/// One cached version of one remote file. Cheap to share (`Arc`); see the module docs.
pub struct CacheObject {
    pub(super) key: ObjectKey,
    pub(super) inner: Arc<ObjectInner>,
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
        // Below the disk's free-space floor: nothing new is kept (the caller serves the read
        // from its download, as on a full disk).
        if let Some(sh) = inner.shared.upgrade() {
            if sh.disk.below_floor(sh.layout.root()) {
                sh.request_evict();
                return Err(io_err("write", &inner.file_path)(
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
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
                    if st.is_pinned(self.key.area, self.key.path.as_str()) {
                        st.pinned += added;
                    }
                    st.pending.entry(inner.id).or_insert_with(|| inner.clone());
                }
                let over = st.over_budget(sh.budget);
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
