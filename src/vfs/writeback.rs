//! Write-back: committing staged files to the durable upload queue, the upload workers, and
//! what an upload's end does to the tree (clean file, conflict copy, retry).
//!
//! The invariant: **a file whose `close()` or `fsync()` returned success is on local disk
//! (staging file fsynced) and has a record in the `dirty` table (committed with
//! `synchronous=FULL`) until the server has its content.** Only an upload that succeeded, or
//! the user deleting or replacing the file, removes the record. A record names its staging
//! file, so after a crash the next start finds and uploads every record (`recover`).
//!
//! Lock order: `Staged::commit_lock` → inode lock → the queue's lock (while it picks a record,
//! it asks whether the file is open for writing) → `tree` → `unplaced` → `Staged::state` (the
//! whole order is the table in `vfs/mod.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::queue::{Finish, Next, UploadQueue};
use super::upload::{self, Sent};
use super::write::{self, Staged, StagedState};
use super::{meta_op, now, off_thread, tree::Node, version_of, FileKind, Ino, Vfs, VfsResult};
use crate::cache::{CacheLayout, ObjectKey};
use crate::meta::{AreaId, DirtyRecord, EntryRecord};
use crate::remote::{self, ETag, EntryKind, RemoteError, RemotePath};

impl Vfs {
    /// The staging file's name relative to the cache dir, as stored in a dirty record.
    pub(super) fn staging_rel(&self, file: &Path) -> PathBuf {
        let dir = self.staging_dir.file_name().unwrap_or_default();
        PathBuf::from(dir).join(file.file_name().unwrap_or_default())
    }

    fn staging_abs(&self, rel: &Path) -> PathBuf {
        match self.staging_dir.parent() {
            Some(p) => p.join(rel),
            None => rel.to_path_buf(),
        }
    }

    /// Finds the records of an earlier run and queues them; moves staging files no record
    /// names (written, never closed) to `recovered/`, except those recorded as uploaded and
    /// unchanged since (their content is on the server): those are dropped. Runs once, at
    /// start.
    pub(super) fn recover(&self) -> VfsResult<()> {
        let records = self.meta.list_dirty()?;
        let named: std::collections::HashSet<PathBuf> = records
            .iter()
            .map(|r| self.staging_abs(&r.staging))
            .collect();
        let uploaded: std::collections::HashMap<PathBuf, (u64, i64)> = self
            .meta
            .uploaded_staging()?
            .into_iter()
            .map(|(rel, size, mtime)| (self.staging_abs(&rel), (size, mtime)))
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.staging_dir) {
            let recovered = CacheLayout::of_staging(&self.staging_dir).recovered_dir();
            for e in rd.flatten() {
                if named.contains(&e.path()) {
                    continue;
                }
                let path = e.path();
                if uploaded
                    .get(&path)
                    .is_some_and(|&u| file_state(&path) == Some(u))
                {
                    tracing::debug!(file = %path.display(), "already uploaded; dropped");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let _ = std::fs::create_dir_all(&recovered);
                let to = recovered.join(e.file_name());
                tracing::warn!(from = %e.path().display(), to = %to.display(), "a file being written when cloudmount stopped was never closed; kept here");
                let _ = std::fs::rename(e.path(), to);
            }
        }
        self.meta.forget_uploaded_staging(None)?;
        let mounted: Vec<AreaId> = self.area_ids().collect();
        for w in self.meta.waiting_elsewhere(&mounted)? {
            tracing::warn!(
                area = w.area,
                url = w.url.as_deref().unwrap_or("unknown"),
                files = w.files,
                "files queued for an area this mount does not show are kept until it is mounted again"
            );
        }
        for rec in records {
            if !mounted.contains(&rec.area) {
                continue;
            }
            let st = match open_staged(self.staging_abs(&rec.staging), &rec) {
                Ok(st) => st,
                Err(e) => {
                    tracing::error!(file = %rec.path, staging = %rec.staging.display(), error = %e, "the local copy of a changed file is gone; it cannot be uploaded");
                    self.problems
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((rec.area, rec.path.clone(), format!("local copy lost: {e}")));
                    self.meta.remove_dirty(rec.id)?;
                    continue;
                }
            };
            let size = st.state().size;
            tracing::info!(file = %rec.path, size, "uploading a file changed before the last stop");
            self.unplaced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((rec.area, rec.path.clone()), st);
            self.queue.push(rec, Duration::ZERO);
        }
        for c in self.meta.conflicts()? {
            if !mounted.contains(&c.area) {
                continue;
            }
            self.queue.add_conflict(c.area, c.path, c.copy, c.at);
        }
        Ok(())
    }

    /// Starts the upload workers on the current tokio runtime (none outside one).
    pub(super) fn spawn_upload_workers(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: uploads will not run");
            return;
        };
        for _ in 0..self.queue.options().workers.max(1) {
            rt.spawn(upload_worker(Arc::downgrade(self), self.queue.clone()));
        }
        if let Some(space) = &self.queue.options().space {
            // A pause or resume of the account (a sync folder's upload) reaches the workers.
            let (mut rx, queue) = (space.changed(), Arc::downgrade(&self.queue));
            rt.spawn(async move {
                while rx.changed().await.is_ok() {
                    match queue.upgrade() {
                        Some(q) => q.wake.notify_waiters(),
                        None => return,
                    }
                }
            });
        }
    }

    /// The inode of `path`, if it is in the tree.
    pub(super) fn find_ino(&self, area: AreaId, path: &RemotePath) -> Option<Ino> {
        let t = self.tree();
        let mut ino = self.area_roots.iter().find(|r| r.0 == area)?.1;
        for seg in path.segments() {
            ino = t.child(ino, seg)?;
        }
        Some(ino)
    }

    /// The staged content of `path`: on its node, or unplaced (an earlier run's, not in the tree yet).
    fn find_staged(&self, area: AreaId, path: &RemotePath) -> Option<(Option<Ino>, Arc<Staged>)> {
        if let Some(ino) = self.find_ino(area, path) {
            if let Some(st) = self.tree().get(ino).and_then(|n| n.staged.clone()) {
                return Some((Some(ino), st));
            }
        }
        self.unplaced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(area, path.clone()))
            .map(|st| (None, st.clone()))
    }

    /// The node of `path` if it holds exactly this staged file.
    fn ino_holding(&self, area: AreaId, path: &RemotePath, st: &Arc<Staged>) -> Option<Ino> {
        let ino = self.find_ino(area, path)?;
        let holds = self
            .tree()
            .get(ino)
            .and_then(|n| n.staged.clone())
            .is_some_and(|s| Arc::ptr_eq(&s, st));
        holds.then_some(ino)
    }

    /// Whether the upload of `rec` must wait: its file is open for writing, or namespace
    /// operations made offline in its area are not replayed yet (its folder may not exist on
    /// the server yet; see `offline_ops.rs`). The replay wakes the queue when done.
    fn upload_deferred(&self, rec: &DirtyRecord) -> bool {
        self.offline.pending_in(rec.area)
            || self
                .find_staged(rec.area, &rec.path)
                .is_some_and(|(_, st)| st.state().writers > 0)
    }

    /// Makes the staged content of `ino` durable and queues its upload: fsync, then the dirty
    /// record. What `close()` and `fsync()` wait for.
    pub(super) async fn commit(&self, ino: Ino, st: &Arc<Staged>) -> VfsResult<()> {
        let _c = st.commit_lock.lock().await;
        let snap = st.snapshot();
        if snap.version == snap.committed {
            return Ok(());
        }
        let loc = self.tree().path(ino);
        let Some((area, path)) = loc else {
            // Deleted while open: nothing to keep (nor to keep aside, if the daemon dies
            // before the staging file is removed).
            st.state().committed = snap.version;
            self.note_clean(st).await;
            return Ok(());
        };
        let (s2, dir) = (st.clone(), self.staging_dir.clone());
        write::blocking(move || {
            s2.file.sync_data()?;
            if !s2
                .dir_synced
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                std::fs::File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })
        .await?;
        let rel = self.staging_rel(&st.path);
        let (base, on_server, size) = (snap.base.clone(), snap.exists_remote, snap.size);
        let p2 = path.clone();
        let (rec, _) = meta_op(&self.meta, move |m| {
            m.insert_dirty(area, &p2, &rel, base.as_ref(), on_server, size)
        })
        .await?;
        st.state().committed = snap.version;
        tracing::debug!(file = %path, size, id = rec.id, "committed; upload queued");
        self.queue.push(rec, self.queue.options().delay);
        Ok(())
    }

    /// One upload attempt of `rec`.
    async fn upload_record(&self, rec: &DirtyRecord) -> Finish {
        // The body counts what it sends, for `status` and `unmount`.
        let sent = self.queue.sent_counter(rec.id);
        let found = match self.find_staged(rec.area, &rec.path) {
            Some(f) => f,
            None => match self.adopt_orphan(rec).await {
                Some(st) => (None, st),
                None => return Finish::Done,
            },
        };
        let (ino, st) = found;
        let (version, size) = {
            let mut s = st.state();
            if s.writers > 0 {
                return Finish::Deferred;
            }
            s.uploading = true;
            (s.version, s.size)
        };
        let remote = match self.remote(rec.area) {
            Ok(r) => r.clone(),
            Err(e) => {
                st.state().uploading = false;
                return Finish::Failed {
                    reason: e.to_string(),
                    offline: false,
                };
            }
        };
        let opts = self.queue.options().clone();
        tracing::debug!(file = %rec.path, size, id = rec.id, "uploading");
        // Write-ahead: from here on this content may reach the file's name (schema v4).
        let temp = opts
            .via_temp
            .then(|| crate::transfer::temp::for_record(&rec.path, &self.temp_tag, rec.id).ok())
            .flatten();
        let id = rec.id;
        if let Err(e) = meta_op(&self.meta, move |m| m.mark_moving(id, temp.as_ref(), size)).await {
            return Finish::Failed {
                reason: format!("recording the upload's start failed: {e}"),
                offline: false,
            };
        }
        let unchanged = || !Self::changed_since(&st, version);
        let attempt = || {
            upload::send(
                &*remote,
                rec,
                &st.path,
                size,
                &opts,
                &self.temp_tag,
                upload::Watch {
                    unchanged: &unchanged,
                    sent: sent.clone(),
                },
            )
        };
        let mut res = attempt().await;
        if let Err(RemoteError::MissingParent { .. }) = res {
            // The folder was deleted on the server meanwhile: the change wins, recreate it.
            if self.make_parents(rec.area, &rec.path).await.is_ok() {
                res = attempt().await;
            }
        }
        st.state().uploading = false;
        match res {
            Ok(None) => {
                // Written to while it was sent: the copy on the server was thrown away. The
                // new content is committed (or will be at its close) and queued again.
                tracing::debug!(file = %rec.path, "changed while uploading; the new content will be sent");
                Finish::Deferred
            }
            Ok(Some(sent)) => match self.uploaded(rec, ino, &st, version, size, sent).await {
                Ok(()) => Finish::Landed,
                Err(e) => Finish::Failed {
                    reason: format!("recording the upload failed: {e}"),
                    offline: false,
                },
            },
            Err(e) if Self::changed_since(&st, version) => {
                // The file was written to (truncated, say) while it was being sent, so the
                // body could end short: not the server's fault. The new content is committed
                // (or will be, at its close) and queued again.
                tracing::debug!(file = %rec.path, error = %e, "changed while uploading; the new content will be sent");
                Finish::Deferred
            }
            Err(e) => {
                tracing::warn!(file = %rec.path, error = %e, "upload failed; the file stays queued");
                st.state().error = Some(e.to_string());
                match e {
                    RemoteError::InsufficientStorage { .. } => {
                        Finish::NoSpace(crate::transfer::space::OUT_OF_SPACE.into())
                    }
                    e if e.is_transient() => Finish::Failed {
                        reason: e.to_string(),
                        offline: true,
                    },
                    e => Finish::Failed {
                        reason: e.to_string(),
                        offline: false,
                    },
                }
            }
        }
    }

    /// Whether the staged file changed after `version` was taken, or is open for writing now.
    fn changed_since(st: &Staged, version: u64) -> bool {
        let s = st.state();
        s.version != version || s.writers > 0
    }

    /// A record whose content is on disk but on no node (cannot normally happen): open it as
    /// unplaced, so it is uploaded rather than lost.
    async fn adopt_orphan(&self, rec: &DirtyRecord) -> Option<Arc<Staged>> {
        let path = self.staging_abs(&rec.staging);
        let r = rec.clone();
        let st = write::blocking(move || open_staged(path, &r)).await.ok()?;
        self.unplaced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((rec.area, rec.path.clone()), st.clone());
        Some(st)
    }

    pub(super) async fn make_parents(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<(), RemoteError> {
        let Ok(remote) = self.remote(area).cloned() else {
            return Ok(());
        };
        let mut dirs = Vec::new();
        let mut p = path.parent();
        while let Some(d) = p.filter(|d| !d.is_root()) {
            p = d.parent();
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            match remote.mkdir(d).await {
                Ok(()) | Err(RemoteError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The server has our content (as `rec.path`, or as a conflict copy): update the record,
    /// the node, the cache.
    async fn uploaded(
        &self,
        rec: &DirtyRecord,
        ino: Option<Ino>,
        st: &Arc<Staged>,
        version: u64,
        size: u64,
        sent: Sent,
    ) -> VfsResult<()> {
        let area = rec.area;
        let commit = st.commit_lock.lock().await;
        // An unplaced file may have been put on its node (its folder was listed) meanwhile.
        let ino = ino.or_else(|| self.ino_holding(area, &rec.path, st));
        let id = rec.id;
        match sent {
            Sent::Uploaded(placed) => {
                // The server's ETag (what reads may ask for), and the version the next change
                // is based on: that ETag, or a stand-in from size and mtime when the server
                // gives none (then the node and the stored listing take the server's mtime,
                // so that the stand-in made from them later is this one).
                let etag = placed.as_ref().and_then(|e| e.etag.clone());
                let server_version = placed.as_ref().and_then(remote::version::of);
                let server_mtime = placed
                    .as_ref()
                    .filter(|_| etag.is_none())
                    .and_then(|e| e.mtime);
                // The record goes, and the file enters its folder's stored listing, at once
                // (after a crash between the two the file would be missing from a listing
                // the next start trusts). A record gone already means the file was committed
                // again while it was sent: that newer record is now based on this version.
                let record = EntryRecord {
                    name: rec.path.name().to_string(),
                    kind: EntryKind::File,
                    size,
                    mtime: Some(server_mtime.unwrap_or_else(now)),
                    etag: etag.clone(),
                };
                let p = rec.path.clone();
                // The staged file as it is now: dropped, not kept aside, if a crash comes
                // before it leaves the staging folder (schema v5) — only if it still is the
                // version sent (with no change under way): writes since, not yet closed, are
                // kept aside after a crash rather than dropped as the server's version.
                let mut note = st.note.write().await;
                let sent_is_current = st.state().version == version;
                let file = st.path.clone();
                let (removed, newer) = meta_op(&self.meta, move |m| {
                    let staged = if sent_is_current {
                        file_state(&file)
                    } else {
                        None
                    };
                    m.upload_done(id, area, &p, &record, staged)
                })
                .await?;
                if removed.is_some() && sent_is_current {
                    *note = true;
                }
                drop(note);
                let newer = match (newer, &etag, &server_version) {
                    // Rebased above on the ETag, which the server does not give: on the
                    // stand-in instead (after a crash in between it has no base, which the
                    // check before its upload takes for "changed").
                    (Some(_), None, Some(v)) => {
                        let (p, v) = (rec.path.clone(), v.clone());
                        meta_op(&self.meta, move |m| {
                            m.set_dirty_base(area, &p, Some(&v), true)
                        })
                        .await?
                    }
                    (newer, _, _) => newer,
                };
                {
                    let mut s = st.state();
                    s.base = server_version.clone();
                    s.exists_remote = true;
                    s.error = None;
                    if removed.is_some() && s.version == version {
                        s.uploaded = version;
                    }
                }
                if let Some(n) = newer {
                    self.queue.update(&n);
                }
                if let Some(ino) = ino {
                    self.mark_uploaded(ino, etag.clone(), size);
                    if let Some(m) = server_mtime {
                        if let Some(n) = self.tree().get_mut(ino) {
                            n.mtime = m;
                        }
                    }
                    if removed.is_some() && sent_is_current {
                        self.repin_local_mtime(ino).await;
                    }
                }
                drop(commit);
                tracing::debug!(file = %rec.path, size, "uploaded");
                match ino {
                    Some(ino) => self.unstage_if_idle(ino).await,
                    None => {
                        let keep = etag.map(|e| (rec.path.clone(), e));
                        self.settle_unplaced(area, &rec.path, st, keep, size).await
                    }
                }
                Ok(())
            }
            Sent::Conflict { copy, copy_etag } => {
                let removed = meta_op(&self.meta, move |m| m.remove_dirty(id)).await?;
                let at = SystemTime::now();
                let (p, c) = (rec.path.clone(), copy.clone());
                meta_op(&self.meta, move |m| m.add_conflict(area, &p, &c, at)).await?;
                self.queue
                    .add_conflict(area, rec.path.clone(), copy.clone(), at);
                let idle = {
                    let s = st.state();
                    s.writers == 0 && s.version == version && removed.is_some()
                };
                if !idle {
                    // Written again meanwhile: the newer content stays queued (and will find
                    // the server's version changed too).
                    return Ok(());
                }
                {
                    let mut s = st.state();
                    s.uploaded = version;
                }
                let server = match self.remote(area) {
                    Ok(r) => r.stat(&rec.path).await.ok(),
                    Err(_) => None,
                };
                if let Some(ino) = ino {
                    let mut t = self.tree();
                    let parent = t.get(ino).map(|n| n.parent);
                    if let Some(n) = t.get_mut(ino) {
                        if n.staged.as_ref().is_some_and(|s| Arc::ptr_eq(s, st)) {
                            n.staged = None;
                        }
                        n.pending_create = false;
                        match &server {
                            Some(e) => {
                                n.etag = e.etag.clone();
                                n.size = e.size;
                                if let Some(m) = e.mtime {
                                    n.mtime = m;
                                }
                            }
                            None => n.etag = None,
                        }
                        n.local_mtime = None;
                        if n.kernel_etag.is_some() {
                            n.kernel_etag = None;
                            let _ = self.invalidate_tx.send(ino);
                        }
                    }
                    // The copy appears with the next listing.
                    if let Some(d) = parent
                        .and_then(|p| t.get_mut(p))
                        .and_then(|n| n.dir.as_mut())
                    {
                        d.listed_at = None;
                    }
                } else if let Some(parent) = rec.path.parent() {
                    if let Some(pino) = self.find_ino(area, &parent) {
                        if let Some(d) = self.tree().get_mut(pino).and_then(|n| n.dir.as_mut()) {
                            d.listed_at = None;
                        }
                    }
                }
                let p = rec.path.clone();
                let _ = meta_op(&self.meta, move |m| {
                    m.invalidate_listing(area, &p.parent_or_root())
                })
                .await;
                self.settle_unplaced(area, &rec.path, st, copy_etag.map(|e| (copy, e)), size)
                    .await;
                Ok(())
            }
        }
    }

    /// A staged file no node uses any more is done: its content becomes the cached copy of
    /// `keep` (path and version on the server), or is deleted.
    async fn settle_unplaced(
        &self,
        area: AreaId,
        path: &RemotePath,
        st: &Arc<Staged>,
        keep: Option<(RemotePath, ETag)>,
        size: u64,
    ) {
        // Shown before it leaves the unplaced files: a listing merged in between either puts
        // the staged file on this node (handled below) or finds the node, so the file is in
        // its folder all along (removed first, a listing merged before it was shown left it
        // out: a `readdir` then missed it).
        if let Some((p, etag)) = &keep {
            self.show_uploaded(area, p, etag, size);
        }
        {
            let mut rec = self.unplaced.lock().unwrap_or_else(|e| e.into_inner());
            if rec
                .get(&(area, path.clone()))
                .is_some_and(|s| Arc::ptr_eq(s, st))
            {
                rec.remove(&(area, path.clone()));
            }
        }
        if let Some(ino) = self.ino_holding(area, path, st) {
            // Attached to its node after all (its folder was listed during the upload).
            match keep.as_ref().filter(|(p, _)| p == path) {
                Some((_, etag)) => {
                    // The node shows the uploaded version and lets go of the staged file.
                    self.mark_uploaded(ino, Some(etag.clone()), size);
                    self.unstage_if_idle(ino).await;
                    return;
                }
                None => {
                    // Ours went elsewhere (a conflict copy): the node shows the server's
                    // version, learnt with the next listing.
                    let mut t = self.tree();
                    let parent = t.get(ino).map(|n| n.parent);
                    if let Some(n) = t.get_mut(ino) {
                        n.staged = None;
                        n.pending_create = false;
                        n.etag = None;
                    }
                    if let Some(d) = parent
                        .and_then(|p| t.get_mut(p))
                        .and_then(|n| n.dir.as_mut())
                    {
                        d.listed_at = None;
                    }
                }
            }
        }
        if let Some((p, etag)) = keep {
            let key = ObjectKey {
                area,
                path: p,
                etag,
                size,
            };
            let (cache, file) = (self.cache.clone(), st.path.clone());
            if off_thread(move || cache.adopt(&key, &file)).await.is_ok() {
                self.drop_staging_file(&st.path).await;
                return;
            }
        }
        self.drop_staging_file(&st.path).await;
    }

    /// `st` is about to change: if it is noted as holding the server's version, the note is
    /// taken back first. The guard is held while the file and its version change.
    pub(super) async fn changing<'a>(
        &self,
        st: &'a Staged,
    ) -> tokio::sync::RwLockReadGuard<'a, bool> {
        loop {
            let g = st.note.read().await;
            if !*g {
                return g;
            }
            drop(g);
            let mut w = st.note.write().await;
            if *w {
                let rel = self.staging_rel(&st.path);
                let forgotten =
                    meta_op(&self.meta, move |m| m.forget_uploaded_staging(Some(&rel))).await;
                if let Err(e) = forgotten {
                    // The size and mtime the note holds still tell most changes apart.
                    tracing::warn!(error = %e, "could not take back the note of a staging file");
                }
                *w = false;
            }
        }
    }

    /// Notes `st` as holding the server's version (see [`Vfs::note_clean_staging`]), with no
    /// change to it under way.
    pub(super) async fn note_clean(&self, st: &Staged) {
        let mut w = st.note.write().await;
        self.note_clean_staging(&st.path).await;
        *w = true;
    }

    /// Records that the staging file `file`, as it is now, can be dropped without loss (a
    /// copy of the server's version just made, or the content of a deleted file), so a crash
    /// does not make it "never closed".
    pub(super) async fn note_clean_staging(&self, file: &Path) {
        let (f, rel) = (file.to_path_buf(), self.staging_rel(file));
        let noted = meta_op(&self.meta, move |m| match file_state(&f) {
            Some((size, mtime)) => m.note_uploaded_staging(&rel, size, mtime),
            None => Ok(()),
        })
        .await;
        if let Err(e) = noted {
            tracing::debug!(error = %e, "could not note a clean staging file");
        }
    }

    /// Removes a staging file whose content is on the server (and in the cache, when it could
    /// be kept there), and forgets that it was uploaded.
    pub(super) async fn drop_staging_file(&self, file: &Path) {
        let (f, rel) = (file.to_path_buf(), self.staging_rel(file));
        let forgotten = meta_op(&self.meta, move |m| {
            if let Err(e) = std::fs::remove_file(&f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(file = %f.display(), error = %e, "could not remove a staging file");
                }
            }
            m.forget_uploaded_staging(Some(&rel))
        })
        .await;
        if let Err(e) = forgotten {
            tracing::debug!(error = %e, "could not forget an uploaded staging file");
        }
    }

    /// The node of an uploaded file now shows the server's new version.
    /// The content just uploaded is the file's current one: an mtime set on it (utimens, not
    /// undone by a write since) now holds for the version the server gave it. `meta.db` named
    /// the version it was set on, now replaced: without this the time would be lost at the
    /// next start (`rsync -a` would then send every file again).
    async fn repin_local_mtime(&self, ino: Ino) {
        let pin = {
            let t = self.tree();
            t.get(ino)
                .filter(|n| n.kind == FileKind::File)
                .and_then(|n| n.local_mtime.map(|m| (m, version_of(n))))
                .zip(t.path(ino))
        };
        let Some(((mtime, version), (area, path))) = pin else {
            return;
        };
        let res = meta_op(&self.meta, move |m| {
            m.set_local_mtime(area, &path, Some(mtime), Some(&version))
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot keep the mtime set on an uploaded file");
        }
    }

    fn mark_uploaded(&self, ino: Ino, etag: Option<ETag>, size: u64) {
        let mut t = self.tree();
        let parent = t.get(ino).map(|n| n.parent);
        if let Some(p) = parent.and_then(|p| t.get_mut(p)) {
            p.own_change_at = Some(SystemTime::now());
        }
        if let Some(n) = t.get_mut(ino) {
            n.pending_create = false;
            // Every write went through the kernel's page cache: it holds this version.
            if n.kernel_etag == n.etag || n.kernel_etag.is_none() {
                n.kernel_etag = etag.clone();
            }
            n.etag = etag;
            n.size = size;
            n.uploaded_at = Some(Instant::now());
        }
    }

    /// A file uploaded from the queue without a node: if its folder is in the tree (perhaps
    /// being listed right now, by a request sent before the upload), show it there.
    fn show_uploaded(&self, area: AreaId, path: &RemotePath, etag: &ETag, size: u64) {
        let Some(parent) = path.parent().and_then(|p| self.find_ino(area, &p)) else {
            return;
        };
        let ino = {
            let mut t = self.tree();
            if t.get(parent).and_then(|n| n.dir.as_ref()).is_none() {
                return;
            }
            match t.child(parent, path.name()) {
                Some(ino)
                    if t.get(ino)
                        .is_some_and(|n| n.kind == FileKind::File && n.staged.is_none()) =>
                {
                    ino
                }
                Some(_) => return,
                None => {
                    let mut n = Node::new(parent, path.name(), Some(area), FileKind::File);
                    n.mtime = now();
                    t.insert(n)
                }
            }
        };
        self.mark_uploaded(ino, Some(etag.clone()), size);
    }

    /// Puts the unplaced files of `dir` (an earlier run's changes, not yet in the tree) on their nodes. Called with the
    /// tree locked, from `merge_listing`.
    pub(super) fn place_unplaced(&self, t: &mut super::tree::Tree, dir: Ino) {
        let Some((area, dir_path)) = t.path(dir) else {
            return;
        };
        let mine: Vec<(RemotePath, Arc<Staged>)> = {
            let mut rec = self.unplaced.lock().unwrap_or_else(|e| e.into_inner());
            if rec.is_empty() {
                return;
            }
            let keys: Vec<(AreaId, RemotePath)> = rec
                .keys()
                .filter(|(a, p)| *a == area && p.parent_or_root() == dir_path && !p.is_root())
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| rec.remove(&k).map(|st| (k.1, st)))
                .collect()
        };
        for (path, st) in mine {
            let name = path.name();
            let ino = match t.child(dir, name) {
                Some(ino) if t.get(ino).is_some_and(|n| n.kind == FileKind::File) => ino,
                other => {
                    if other.is_some() {
                        t.unlink(dir, name);
                    }
                    let mut n = Node::new(dir, name, Some(area), FileKind::File);
                    n.mtime = now();
                    n.pending_create = true;
                    t.insert(n)
                }
            };
            if let Some(n) = t.get_mut(ino) {
                if n.staged.is_none() {
                    n.staged = Some(st);
                }
            }
        }
    }

    /// A rename moved `from` to `to`: the queued files below move with it (new records, same
    /// content); those it replaced are dropped. With `over_server`, a file not yet uploaded
    /// now replaces the server's file `to` (version `dst_etag`).
    pub(super) async fn move_dirty(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
        over_server: bool,
        dst_etag: Option<ETag>,
    ) -> VfsResult<()> {
        if self.queue.rename_conflicts(area, from, to) {
            let (f, t) = (from.clone(), to.clone());
            meta_op(&self.meta, move |m| m.rename_conflicts(area, &f, &t)).await?;
        }
        if !self.queue.has_under(area, from) && !self.queue.has_under(area, to) {
            return Ok(());
        }
        let (f, t) = (from.clone(), to.clone());
        let mv = meta_op(&self.meta, move |m| m.update_dirty_path(area, &f, &t)).await?;
        self.queue.remove_under(area, from);
        self.queue.remove_under(area, to);
        let keep: std::collections::HashSet<&Path> =
            mv.moved.iter().map(|m| m.staging.as_path()).collect();
        // Replaced by the rename; an open handle keeps its descriptor.
        let replaced: Vec<PathBuf> = mv
            .displaced
            .iter()
            .filter(|d| !keep.contains(d.staging.as_path()))
            .map(|d| self.staging_abs(&d.staging))
            .collect();
        if !replaced.is_empty() {
            let _ = write::blocking(move || {
                for f in replaced {
                    let _ = std::fs::remove_file(f);
                }
                Ok(())
            })
            .await;
        }
        for m in mv.moved {
            self.queue.push(m, self.queue.options().delay);
        }
        if over_server {
            let (t, e) = (to.clone(), dst_etag);
            let rec = meta_op(&self.meta, move |m| {
                m.set_dirty_base(area, &t, e.as_ref(), true)
            })
            .await?;
            if let Some(r) = rec {
                self.queue.update(&r);
            }
        }
        let mut rec = self.unplaced.lock().unwrap_or_else(|e| e.into_inner());
        let moved: Vec<(AreaId, RemotePath)> = rec
            .keys()
            .filter(|(a, p)| *a == area && (p.starts_with(from) || p.starts_with(to)))
            .cloned()
            .collect();
        for k in moved {
            if let Some(st) = rec.remove(&k) {
                if let Some(p) = k.1.rebase(from, to) {
                    rec.insert((area, p), st);
                }
            }
        }
        Ok(())
    }

    /// Drops the queue records at or below `path` (deleted by the user).
    pub(super) async fn forget_dirty(&self, area: AreaId, path: &RemotePath) -> VfsResult<()> {
        let p = path.clone();
        let gone = meta_op(&self.meta, move |m| m.remove_dirty_subtree(area, &p)).await?;
        self.queue.remove(gone.iter().map(|r| r.id));
        {
            let mut rec = self.unplaced.lock().unwrap_or_else(|e| e.into_inner());
            rec.retain(|(a, p), _| !(*a == area && p.starts_with(path)));
        }
        if self.queue.remove_conflicts(area, path) {
            let p = path.clone();
            meta_op(&self.meta, move |m| m.remove_conflicts(area, &p)).await?;
        }
        Ok(())
    }
}

/// The staged file of a record, opened as a committed, not yet uploaded version.
fn open_staged(path: PathBuf, rec: &DirtyRecord) -> std::io::Result<Arc<Staged>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    // Normally the committed size; another when it was written again after its last close
    // and before a crash: those newer bytes are the user's latest.
    let size = file.metadata()?.len();
    if size != rec.size {
        tracing::warn!(file = %rec.path, committed = rec.size, found = size, "a changed file was written again after its last close; uploading what is on disk");
    }
    Ok(Arc::new(Staged::new(
        path,
        file,
        StagedState {
            size,
            base: rec.base_etag.clone(),
            exists_remote: rec.on_server,
            version: 1,
            committed: 1,
            uploaded: 0,
            uploading: false,
            error: None,
            writers: 0,
        },
        false,
    )))
}

/// A file's size and mtime (ns), to tell later whether it changed.
fn file_state(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    Some((md.len(), md.mtime() * 1_000_000_000 + md.mtime_nsec()))
}

/// One upload worker: takes the next ready record, uploads it, reports how it went.
async fn upload_worker(vfs: Weak<Vfs>, queue: Arc<UploadQueue>) {
    loop {
        let notified = queue.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(v) = vfs.upgrade() else {
                return;
            };
            queue.next(&|r| v.upload_deferred(r))
        };
        match next {
            Next::Stop => return,
            Next::Run(rec) => {
                let how = match vfs.upgrade() {
                    Some(v) => v.upload_record(&rec).await,
                    None => return,
                };
                queue.finish(&rec, how);
            }
            Next::Wait(Some(until)) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
            }
            Next::Wait(None) => notified.await,
        }
    }
}
