//! The write path: a file open for writing (`open` for writing, `create`, a truncating
//! `setattr`) is staged whole in a local file (`stage`), which `write` changes; flush, fsync and
//! close commit it to the durable upload queue (`writeback.rs`), which uploads it later; once
//! uploaded and idle, the staged file becomes the cached copy of the new version
//! (`unstage_if_idle`).
//!
//! A [`Staged`] file belongs to an inode, not to a handle: every handle of the inode reads and
//! writes the same bytes, so readers on the mount see writes at once. It knows the version it was
//! based on (`base`, sent as `If-Match`), or that the file is new (`If-None-Match: *`).
//!
//! A staged file may be *noted* as holding the server's version (its size and mtime in the
//! `uploaded_staging` table): the next start then drops it after a crash instead of keeping it
//! aside as a file never closed. The note is taken back before the file changes (see
//! `Vfs::changing`): size and mtime alone miss a change to the same size within one tick of a
//! coarse file clock.
//!
//! Lock order: `Staged::commit_lock` → the inode lock → `Staged::note` → `Vfs::tree` →
//! `Staged::state` (the whole order is the table in `vfs/mod.rs`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::io_mode::{HandleIo, Want};
use super::tree::Node;
use super::{
    namespace, now, off_thread, read, version_of, Attr, FileKind, Ino, OpenIo, OpenMode, Opened,
    Vfs, VfsError, VfsResult,
};
use crate::cache::{CacheObject, ObjectKey};
use crate::remote::ETag;

/// What is known about a staged file.
#[derive(Debug, Clone)]
pub(crate) struct StagedState {
    pub size: u64,
    /// The server version this content was based on.
    pub base: Option<ETag>,
    /// Whether the path exists on the server (decides If-Match vs If-None-Match).
    pub exists_remote: bool,
    /// Bumped on every change; `committed` is the version last made durable and queued,
    /// `uploaded` the version last uploaded (`uploaded <= committed <= version`).
    pub version: u64,
    pub committed: u64,
    pub uploaded: u64,
    /// An upload is running.
    pub uploading: bool,
    /// Why the last upload failed, if it did.
    pub error: Option<String>,
    /// Write handles open on it.
    pub writers: u32,
}

impl StagedState {
    pub fn dirty(&self) -> bool {
        self.version != self.uploaded
    }

    /// Nobody writes it, nothing is left to upload and no upload runs: it may be unstaged.
    pub fn idle(&self) -> bool {
        self.writers == 0 && !self.dirty() && !self.uploading
    }
}

/// A file being written, kept whole on local disk.
#[derive(Debug)]
pub(crate) struct Staged {
    pub path: PathBuf,
    pub file: File,
    pub state: Mutex<StagedState>,
    /// Serialises commits and the bookkeeping after an upload of this file.
    pub commit_lock: tokio::sync::Mutex<()>,
    /// The staging directory was fsynced after this file was created.
    pub dir_synced: std::sync::atomic::AtomicBool,
    /// Whether the file is noted as holding the server's version. Changes to the file and
    /// its version are made holding this for reading, with the note taken back first; notes
    /// are made holding it for writing.
    pub note: tokio::sync::RwLock<bool>,
}

impl Staged {
    /// `noted`: the file is noted as holding the server's version already.
    pub fn new(path: PathBuf, file: File, state: StagedState, noted: bool) -> Staged {
        Staged {
            path,
            file,
            state: Mutex::new(state),
            commit_lock: tokio::sync::Mutex::new(()),
            dir_synced: std::sync::atomic::AtomicBool::new(false),
            note: tokio::sync::RwLock::new(noted),
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, StagedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> StagedState {
        self.state().clone()
    }
}

/// Names of staging files: `<run>-<inode>-<n>`, never repeated across runs (the run's part is
/// random) nor within one (a counter).
pub(super) struct StagingNames {
    run_id: u64,
    next: AtomicU64,
}

impl StagingNames {
    pub fn new() -> std::io::Result<StagingNames> {
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(StagingNames {
            run_id: u64::from_le_bytes(seed),
            next: AtomicU64::new(1),
        })
    }

    /// A new name for a staging file of `ino`.
    pub fn next(&self, ino: Ino) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{ino}-{n}", self.run_id)
    }
}

/// Runs blocking file I/O off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("blocking task failed: {e}")))?
}

/// Copies the complete object `obj` (`size` bytes) to a new file `dst`, through the object's
/// open descriptor rather than its path: the cache may drop the object meanwhile (an upload's
/// end moving the same version in from staging, a newer version asked for), which unlinks its
/// file while its holders keep reading it through their descriptors.
fn copy_object(obj: &CacheObject, dst: &std::path::Path, size: u64) -> VfsResult<()> {
    const CHUNK: u64 = 1 << 20;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)?;
    let mut at = 0;
    while at < size {
        let data = obj.read_bytes(at, CHUNK.min(size - at) as usize)?;
        if data.is_empty() {
            break;
        }
        out.write_all_at(&data, at)?;
        at += data.len() as u64;
    }
    out.set_len(size)?;
    Ok(())
}

pub(crate) async fn pwrite(st: Arc<Staged>, offset: u64, data: Vec<u8>) -> std::io::Result<()> {
    blocking(move || st.file.write_all_at(&data, offset)).await
}

pub(crate) async fn pread(st: Arc<Staged>, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    blocking(move || {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = st.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    })
    .await
}

impl Vfs {
    /// Gets (or makes) the staged copy of a file, counting the caller as one more writer (the
    /// caller must take that back: `release` for handles, `setattr` itself). Without
    /// `truncate`, the current content is downloaded into it first.
    pub(super) async fn stage(&self, ino: Ino, truncate: bool) -> VfsResult<Arc<Staged>> {
        let lock = self.inode_lock(ino);
        let _g = lock.lock().await;
        let existing = self.tree().get(ino).and_then(|n| n.staged.clone());
        if let Some(st) = existing {
            // An empty copy is left alone: truncating it would change nothing but its mtime,
            // yet count as a change (taking back a note that it is the server's version, so a
            // crash would keep it aside as a file never closed).
            if truncate && st.state().size != 0 {
                let change = self.changing(&st).await;
                // Counted as a writer and a new version before the file is cut: an upload of
                // the closed version finishing meanwhile must see the change (else it would
                // take the emptied file, padded with zeros, for the version it sent, and drop
                // that version's record).
                {
                    let mut s = st.state();
                    s.writers += 1;
                    s.version += 1;
                }
                let s2 = st.clone();
                if let Err(e) = blocking(move || s2.file.set_len(0)).await {
                    st.state().writers -= 1;
                    return Err(e.into());
                }
                {
                    let mut s = st.state();
                    s.size = 0;
                    s.version += 1;
                }
                drop(change);
                return Ok(st);
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
        let path = self.staging_dir.join(self.staging_names.next(ino));
        let fill = !truncate && size > 0 && !pending;
        if fill {
            // The whole current version, through the cache.
            let (obj, _guard) = self.object_for(ino).await?.ok_or(VfsError::NotFound)?;
            self.ensure_blocks(ino, &obj, 0, size).await?;
            let dst = path.clone();
            off_thread(move || copy_object(&obj, &dst, size)).await?;
        }
        let p2 = path.clone();
        let file = blocking(move || {
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
            pwrite(st.clone(), offset, data.to_vec()).await?;
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
        namespace::check_name(name)?;
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
                read::Handle {
                    ino,
                    write: true,
                    object: None,
                    readahead: Default::default(),
                    io,
                    exec: false,
                    stream: None,
                    preview: false,
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
    pub(super) async fn unstage_if_idle(&self, ino: Ino) {
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
}
