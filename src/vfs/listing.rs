//! Directory listings: how long one is trusted (`dir_ttl`), asking the server for it (PROPFIND
//! Depth 1), merging its answer into the tree, saving it in the metadata store (so a restart or
//! an outage still shows the tree), serving the last known listing while the server does not
//! answer, and the open directory handles (`opendir`, `readdir`).
//!
//! Only a positive 404 from the server removes an entry; an unreachable server never does.
//! Namespace operations made offline and not yet replayed are overlaid on what the server
//! lists, and folders the server does not have yet are listed from local knowledge only
//! (`offline_ops.rs`).
//! Nodes with local state are kept whatever the listing says. Temporary upload files are
//! hidden from listings, and those no upload will move into place are deleted
//! (`sweep_stray_uploads`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::tree::Node;
use super::{meta_op, version_of, DirEntry, FileKind, Ino, Vfs, VfsError, VfsResult};
use crate::meta::{AreaId, EntryRecord};
use crate::remote::{Entry, EntryKind, RemoteError, RemotePath};

/// Age after which anyone's temporary upload file seen in a listing counts as abandoned.
const STRAY_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// After a failed listing, how long a stale listing is served before asking again.
const OFFLINE_RETRY: Duration = Duration::from_secs(5);

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

impl Vfs {
    pub(super) fn is_fresh(&self, n: &Node) -> bool {
        n.dir
            .as_ref()
            .and_then(|d| d.listed_at)
            .is_some_and(|t| t.elapsed() < self.opts.dir_ttl)
    }

    /// Makes sure `dir`'s children are known and no older than the TTL.
    pub(super) async fn ensure_listed(&self, dir: Ino) -> VfsResult<()> {
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
                if known && self.health.is_offline() {
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
        if self.offline.local_only(area, &path) {
            // Made or renamed here, not on the server yet: only this machine knows it.
            return self.list_locally(dir, area, path, known).await;
        }
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
                    self.restore_local_attrs(dir).await;
                    return Ok(());
                }
                saved = Some(entries);
            }
        }
        if self.health.is_offline() && (known || saved.is_some()) {
            // The server did not answer lately: answer at once from what is known (never make
            // a program wait for a dead network each time), and ask again in the background.
            if let Some(entries) = &saved {
                let _ = self.merge_listing(dir, entries, None, None);
                self.restore_local_attrs(dir).await;
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
            let stray = match crate::transfer::temp::owner(&e.name) {
                crate::transfer::temp::TempOwner::NotTemp => continue,
                crate::transfer::temp::TempOwner::Cache { tag, id } if tag == self.temp_tag => {
                    !self.queue.has_id(id) && !self.set_aside.holds(id)
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
                let res = match me.remote(area) {
                    Ok(r) => r.delete(&path).await.map_err(VfsError::from),
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) | Err(VfsError::Remote(RemoteError::NotFound { .. })) => {
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
        let asked = SystemTime::now();
        match self.remote(area)?.list(&path).await {
            Ok(listing) => {
                let mut records: Vec<EntryRecord> =
                    listing.children.iter().map(record_of).collect();
                // What was changed here and waits for the server shows as done.
                self.offline.overlay(area, &path, &mut records);
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
                self.restore_local_attrs(dir).await;
                self.sweep_stray_uploads(area, &path, &records);
                if let Err(e) = self.forget_resolved_conflicts(area, gone).await {
                    tracing::warn!(error = %e, "cannot forget resolved conflicts");
                }
                let listed = SystemTime::now();
                let saved = meta_op(&self.meta, move |m| {
                    m.save_listing_asked_at(area, &path, listed, &records, Some(asked))
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
                // Offline: serve what we know, and ask again a little later.
                if let Some(entries) = saved {
                    let _ = self.merge_listing(dir, &entries, None, None);
                    self.restore_local_attrs(dir).await;
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
                // The health (told by `remote::watched`) logged the outage when it began.
                tracing::debug!(error = %e, dir = %path, "server unreachable; showing the last known listing");
                self.retry_listing_later(dir);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Shows again what the user set on `dir`'s children and WebDAV cannot store (kept in
    /// `meta.db`) on nodes that have none yet: after a restart, or a node forgotten and listed
    /// again. The mtimes: a file's time holds only for the version it was set on; a node with
    /// local changes keeps what it has. The permission bits (chmod) hold for the path, whatever
    /// its version; an area's root gets its own back too.
    pub(super) async fn restore_local_attrs(&self, dir: Ino) {
        let (Some((area, path)), is_area_root) = ({
            let t = self.tree();
            (t.path(dir), t.get(dir).is_some_and(|n| n.is_area_root))
        }) else {
            return;
        };
        let stored = meta_op(&self.meta, move |m| {
            let mtimes = m.local_mtimes_in(area, &path)?;
            let modes = m.local_modes_in(area, &path)?;
            let own = if is_area_root {
                m.local_mode(area, &path)?
            } else {
                None
            };
            Ok((mtimes, modes, own))
        })
        .await;
        let (mtimes, modes, own) = match stored {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the mtimes and modes set locally");
                return;
            }
        };
        let mut t = self.tree();
        for (name, mtime, version) in mtimes {
            let Some(ino) = t.child(dir, &name) else {
                continue;
            };
            let Some(n) = t.get_mut(ino) else {
                continue;
            };
            let holds = match n.kind {
                FileKind::Dir => true,
                FileKind::File => version.is_none_or(|v| v == version_of(n)),
            };
            if n.local_mtime.is_none() && !n.has_local_state() && holds {
                n.local_mtime = Some(mtime);
            }
        }
        let own = own.map(|perm| (dir, perm));
        let children = modes
            .into_iter()
            .filter_map(|(name, perm)| t.child(dir, &name).map(|ino| (ino, perm)));
        for (ino, perm) in own.into_iter().chain(children).collect::<Vec<_>>() {
            if let Some(n) = t.get_mut(ino).filter(|n| n.perm.is_none()) {
                n.perm = Some(perm);
            }
        }
    }

    /// Applies a listing to `dir`: updates and adds children, drops those the server no longer
    /// has (unless they hold local changes). `requested`: when the listing was asked for (None:
    /// long ago); files this mount uploaded since are newer than it and are left alone.
    pub(super) fn merge_listing(
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
        // A file new or changed on the server: a pin covering it must fetch it.
        let mut changed = false;
        for e in entries {
            if crate::transfer::temp::is_temp(&e.name) {
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
                    changed |= kind == FileKind::File && (!same_version || n.size != e.size);
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
            changed = true;
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
        self.place_unplaced(&mut t, dir);
        if let Some(d) = t.get_mut(dir).and_then(|n| n.dir.as_mut()) {
            d.listed_at = listed_at.or(d.listed_at);
        }
        drop(t);
        if changed && listed_at.is_some() {
            if let Some(p) = &dir_path {
                self.pins_changed_below(area, p);
            }
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
    pub(super) async fn revalidate(&self, ino: Ino) {
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
}
