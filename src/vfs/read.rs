//! Open files and reads: `open` (which version a read handle reads, and how the kernel serves
//! it, see `io_mode.rs`), the handle table, `read` (staged content first, else the cache object
//! of the handle's version, its missing blocks fetched by the download engine in
//! `download.rs`), the first read of a small file (answered from its download), reads served
//! uncached when the local disk is full, and `release`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::download::{DownloadError, Origin};
use super::io_mode::{HandleIo, Want};
use super::stream::{SharedStream, Stream};
use super::{
    download, off_thread, version_key, write, FileKind, Ino, OpenIo, OpenMode, Opened, Vfs,
    VfsError, VfsResult, SMALL_FILE,
};
use crate::cache::{CacheObject, ObjectKey, OpenGuard};

/// Reads from the cache up to this size run on the async worker itself (see `read_object`).
const INLINE_READ_MAX: usize = 1 << 20;

/// An open file.
pub(super) struct Handle {
    pub(super) ino: Ino,
    pub(super) write: bool,
    /// The cached version a read handle reads (None for write handles: they read the staging).
    pub(super) object: Option<(Arc<CacheObject>, OpenGuard)>,
    pub(super) readahead: download::ReadAhead,
    /// How the kernel serves it (its count in the node's `io`).
    pub(super) io: HandleIo,
    /// Opened by the kernel to execute the file: a program runs from it while it is open.
    pub(super) exec: bool,
    /// A file larger than the cache's budget is read from one long GET, never through the
    /// cache (see `stream.rs`).
    pub(super) stream: Option<SharedStream>,
    /// Opened by a thumbnailer, for a file not on this device (see
    /// [`Vfs::opened_by_thumbnailer`]).
    pub(super) preview: bool,
}

/// The largest file not on this device a thumbnailer may read (through the network, never
/// into the cache). Thumbnails of larger files are made once the file is cached or pinned.
pub const PREVIEW_MAX: u64 = 8 << 20;

impl Vfs {
    pub async fn open(&self, ino: Ino, mode: OpenMode) -> VfsResult<Opened> {
        {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
        }
        if mode.truncate && !mode.write && self.runs_a_program(ino) {
            // open(O_RDONLY | O_TRUNC) of a running program. Opens for writing get ETXTBSY
            // from the kernel before they reach us, this one only after a successful open —
            // which, with FUSE_ATOMIC_O_TRUNC, has already emptied the kernel's copy of the
            // file under the running program (it then crashes). Refused here first.
            return Err(VfsError::TextBusy);
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
                exec: false,
                stream: None,
                preview: false,
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
            let stream = self.stream_for(ino, object.as_ref().map(|o| &o.0))?;
            Handle {
                ino,
                write: false,
                object: if stream.is_some() { None } else { object },
                readahead: Default::default(),
                io: HandleIo::Cached,
                exec: false,
                stream,
                preview: false,
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

    /// The kernel opened `fh` to execute its file (see [`VfsError::TextBusy`]'s use in `open`).
    pub fn opened_for_exec(&self, fh: u64) {
        if let Some(h) = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&fh)
        {
            h.exec = true;
        }
    }

    /// The kernel opened `fh` for a thumbnailer (a file manager making previews of a folder
    /// it shows). A file that is complete in the cache (or pinned) reads as usual. Any other
    /// is not downloaded into the cache for it — looking at a folder must not fill the cache
    /// with every picture in it: up to [`PREVIEW_MAX`] it is read from the server as a
    /// stream, larger ones fail with EIO (no thumbnail until the file is on this device).
    pub fn opened_by_thumbnailer(&self, fh: u64) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = handles.get_mut(&fh).filter(|h| previews(h)) else {
            return;
        };
        h.object = None;
        h.stream = None;
        h.preview = true;
    }

    /// Whether [`Vfs::opened_by_thumbnailer`] would change handle `fh` (a read-only handle of
    /// a file not complete in the cache): when not, who opened it need not be asked.
    pub fn could_preview(&self, fh: u64) -> bool {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .is_some_and(previews)
    }

    /// The stream of a preview handle (see [`Vfs::opened_by_thumbnailer`]), made on its
    /// first read; None when the file is complete in the cache after all (read as usual).
    async fn preview_stream(&self, ino: Ino, fh: u64) -> VfsResult<Option<SharedStream>> {
        let (key, etag) = version_key(&self.tree(), ino)?;
        let cache = self.cache.clone();
        let k = key.clone();
        let cached = off_thread(move || cache.cached_object(&k)).await?;
        let on_handle = |f: &dyn Fn(&mut Handle)| {
            if let Some(h) = self
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&fh)
            {
                f(h);
            }
        };
        if cached.is_some_and(|o| o.is_complete()) || self.cache.is_pinned(key.area, &key.path) {
            on_handle(&|h| h.preview = false);
            return Ok(None);
        }
        if key.size > PREVIEW_MAX {
            tracing::debug!(file = %key.path, size = key.size, "a thumbnailer's read of a file not on this device: refused");
            return Err(VfsError::NotCachedForPreview);
        }
        let stream = self.new_stream(ino, key, etag.is_some())?;
        on_handle(&|h| h.stream = Some(stream.clone()));
        Ok(Some(stream))
    }

    /// A stream of the version `key` of `ino` (conditional on it when the server gave it an
    /// ETag), for one handle.
    fn new_stream(&self, ino: Ino, key: ObjectKey, conditional: bool) -> VfsResult<SharedStream> {
        let origin = self.origin_of(ino, &key, conditional)?;
        Ok(Arc::new(tokio::sync::Mutex::new(Stream::new(key, origin))))
    }

    /// Whether a program runs from `ino` (a handle the kernel opened to execute it is open).
    fn runs_a_program(&self, ino: Ino) -> bool {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| h.ino == ino && h.exec)
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

    /// A stream for a read handle of `ino` when its file is larger than the cache's budget,
    /// not pinned, and not complete in the cache (`obj`): it is then read from one long GET,
    /// never through the cache (see `stream.rs`).
    fn stream_for(
        &self,
        ino: Ino,
        obj: Option<&Arc<CacheObject>>,
    ) -> VfsResult<Option<SharedStream>> {
        let (key, etag) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.staged.is_some() || n.pending_create || n.size <= SMALL_FILE {
                return Ok(None);
            }
            version_key(&t, ino)?
        };
        if key.size <= self.cache.usage().budget_bytes
            || obj.is_some_and(|o| o.is_complete())
            || self.cache.is_pinned(key.area, &key.path)
        {
            return Ok(None);
        }
        tracing::debug!(file = %key.path, size = key.size, "larger than the cache: read as a stream");
        self.new_stream(ino, key, etag.is_some()).map(Some)
    }

    /// The cache object of the node's current version (None while the node is staged). The
    /// cache's index lives in SQLite: looked up on the blocking pool.
    pub(super) async fn object_for(
        &self,
        ino: Ino,
    ) -> VfsResult<Option<(Arc<CacheObject>, OpenGuard)>> {
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
        let (object, mut stream, preview) = {
            let h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            let h = h.get(&fh).ok_or(VfsError::BadHandle)?;
            if h.ino != ino {
                return Err(VfsError::BadHandle);
            }
            (
                h.object.as_ref().map(|(o, _)| o.clone()),
                h.stream.clone(),
                h.preview,
            )
        };
        if preview && stream.is_none() {
            stream = self.preview_stream(ino, fh).await?;
        }
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
        if let Some(stream) = stream {
            return stream
                .lock()
                .await
                .read(offset, u64::from(size))
                .await
                .map_err(|e| self.download_error(ino, e));
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
        // Under a download limit (the daemon's, shared by all its clients), read-ahead is
        // held to about two seconds of data, so the read waited for is not starved by it.
        let max_window = super::download::window_for_limit(
            crate::remote::throttle::Bandwidth::process()
                .limits()
                .download,
        );
        let ahead = {
            let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            h.get_mut(&fh).and_then(|h| {
                h.readahead
                    .on_read_within(offset, end, obj.size(), max_window)
            })
        };
        if let Some(range) = ahead {
            let me = self.me.clone();
            let failed = move |e| {
                if let Some(me) = me.upgrade() {
                    let e = me.download_error(ino, e);
                    tracing::debug!(error = %e, "read-ahead failed");
                }
            };
            let origin = self.origin(ino, &obj)?;
            if let Some(from) = self.downloads.prefetch(&origin, &obj, range, failed) {
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

    /// The first read of a small file the cache does not have: the whole file is downloaded
    /// while its cache object is made (one GET, and the object's creation off the critical
    /// path), the read is answered from the download, and the bytes are stored in the
    /// background. The object is given to the handle, so its next reads use the cache.
    async fn read_small(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> VfsResult<Bytes> {
        let (key, etag) = version_key(&self.tree(), ino)?;
        let file_size = key.size;
        let origin = self.origin_of(ino, &key, etag.is_some())?;
        let download = async {
            self.downloads
                .download(&origin, &key, 0..file_size)
                .await
                .map_err(|e| self.download_error(ino, e))
        };
        let (data, object) = if file_size == 0 {
            (Ok(Bytes::new()), self.object_for(ino).await)
        } else {
            tokio::join!(download, self.object_for(ino))
        };
        let data = data?;
        match object {
            // The version downloaded: keep it for the handle and store the bytes.
            Ok(Some((obj, guard))) if obj.key().etag == key.etag && obj.size() == file_size => {
                self.downloads.store_whole(&obj, data.clone());
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
    pub(super) fn attach_object(&self, fh: u64, obj: Arc<CacheObject>, guard: OpenGuard) {
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
        let origin = self.origin_of(ino, &key, etag.is_some())?;
        self.downloads
            .download(&origin, &key, offset..end)
            .await
            .map_err(|e| self.download_error(ino, e))
    }

    /// Logs that the local disk is full, at most once a minute (a full disk fails every
    /// store until space comes back).
    pub(super) fn local_disk_full(&self, e: &VfsError) {
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
        // Cached already (the common case): no download, and no look at the tree.
        if !obj.missing(need.start, need.end - need.start).is_empty() {
            let origin = self.origin(ino, obj)?;
            let served = self
                .downloads
                .serve_from_download(&origin, obj, need.clone())
                .await
                .map_err(|e| self.download_error(ino, e))?;
            if let Some((start, data)) = served {
                return Ok(data.slice((offset - start) as usize..(end - start) as usize));
            }
            self.downloads
                .ensure_blocks(&origin, obj, need.start, need.end - need.start)
                .await
                .map_err(|e| self.download_error(ino, e))?;
        }
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
        self.drop_set_aside_if_unread(ino);
        self.tree().maybe_drop(ino);
        result
    }

    /// Makes sure the blocks of `[offset, offset+len)` of `ino`'s cached version `obj` are in
    /// the cache (see [`download::Downloads::ensure_blocks`]).
    pub(super) async fn ensure_blocks(
        &self,
        ino: Ino,
        obj: &Arc<CacheObject>,
        offset: u64,
        len: u64,
    ) -> VfsResult<()> {
        if obj.missing(offset, len).is_empty() {
            return Ok(());
        }
        self.downloads
            .ensure_blocks(&self.origin(ino, obj)?, obj, offset, len)
            .await
            .map_err(|e| self.download_error(ino, e))
    }

    /// Where the version `obj` of `ino` is downloaded from: its GETs are conditional when the
    /// server gives the node an ETag (without one the version is made up locally).
    fn origin(&self, ino: Ino, obj: &CacheObject) -> VfsResult<Origin> {
        let conditional = self.tree().get(ino).is_some_and(|n| n.etag.is_some());
        self.origin_of(ino, obj.key(), conditional)
    }

    /// Where `key` (the version of `ino`) is downloaded from: its path, or the hidden name it
    /// was set aside to for its readers (then unconditionally, see `set_aside.rs`).
    fn origin_of(&self, ino: Ino, key: &ObjectKey, conditional: bool) -> VfsResult<Origin> {
        let at = self.set_aside_path(ino);
        Ok(Origin {
            remote: self.remote(key.area)?.clone(),
            conditional: conditional && at.is_none(),
            at,
        })
    }

    /// The errno side of a failed download of `ino`. When the server has another version,
    /// its listing is forgotten so the next access sees the new version, and EIO is reported.
    fn download_error(&self, ino: Ino, e: DownloadError) -> VfsError {
        match e {
            DownloadError::Changed(e) => {
                let mut t = self.tree();
                let parent = t.get(ino).map(|n| n.parent);
                if let Some(d) = parent
                    .and_then(|p| t.get_mut(p))
                    .and_then(|p| p.dir.as_mut())
                {
                    d.listed_at = None;
                }
                tracing::warn!(error = %e, "file changed on the server while reading");
                VfsError::Changed(e.to_string())
            }
            DownloadError::Remote(e) => e.into(),
            DownloadError::Cache(e) => e.into(),
            DownloadError::Task(e) => {
                VfsError::Io(std::io::Error::other(format!("blocking task failed: {e}")))
            }
        }
    }
}

/// Whether a thumbnailer's open of `h` makes it a preview handle: read-only, of a file not
/// complete in the cache.
fn previews(h: &Handle) -> bool {
    !h.write && !h.object.as_ref().is_some_and(|(o, _)| o.is_complete())
}
