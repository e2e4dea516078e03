//! Namespace operations while the server cannot be reached: `mkdir`, `rmdir`, `unlink` and
//! `rename` are done locally at once, recorded durably in order (`ns_ops` in `meta.db`, see
//! [`crate::meta::NsOp`]) and replayed on the server when it is back.
//!
//! Rules:
//! - An area with operations waiting queues every new one too (so they reach the server in
//!   the order they were made), as does an offline server, or a request that fails without
//!   reaching it.
//! - Uploads of an area wait while operations of that area wait (`upload_deferred`): a folder
//!   is created before the files written into it are sent, a rename before the upload of the
//!   file it moved (the dirty record moved with it and is sent under the new name).
//! - Listings show the local result: what the server lists is overlaid with the waiting
//!   operations ([`OfflineOps::overlay`]), and a folder the server does not have yet (made or
//!   renamed here) is never asked for ([`OfflineOps::local_only`]).
//! - Replay never loses anything: a delete happens only while the server still has the
//!   version it was based on (`remote::version::check`); a folder is removed only while empty
//!   on the server; a name taken on the server meanwhile keeps the server's file or folder and
//!   ours goes to a conflict-copy name; a folder deleted on the server with our new files
//!   inside is made again. Each such decision is a notice in `status` (or a conflict).
//! - A request the server refuses for another reason drops the operation with a notice: the
//!   next listing shows what the server has.
//!
//! Lock order: `OfflineOps::ops` and `OfflineOps::notices` are leaves, taken holding at most
//! the upload queue's lock (its `deferred` callback asks whether an area has operations).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::status::Notice;
use super::{meta_op, now, off_thread, FileKind, Vfs, VfsResult};
use crate::meta::{AreaId, EntryRecord, NsOp, NsOpKind};
use crate::remote::{self, version::Verdict, EntryKind, Remote, RemoteError, RemotePath};
use crate::transfer::conflict;

/// How many of the replay's notices `status` keeps (in memory: a restart forgets them).
const NOTICES_KEPT: usize = 100;

/// The waiting operations (a mirror of `ns_ops`) and what their replay decided.
#[derive(Default)]
pub(crate) struct OfflineOps {
    ops: Mutex<Vec<NsOp>>,
    /// `(area, path, what, when)`, when in seconds since the epoch.
    notices: Mutex<Vec<(AreaId, RemotePath, String, i64)>>,
    /// Wakes the replayer (a new operation, the server back, stop).
    wake: Notify,
    /// Wakes those waiting for the operations to be done.
    changed: Notify,
    stopping: AtomicBool,
}

impl OfflineOps {
    fn ops(&self) -> std::sync::MutexGuard<'_, Vec<NsOp>> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether operations of `area` wait for the server.
    pub fn pending_in(&self, area: AreaId) -> bool {
        self.ops().iter().any(|o| o.area == area)
    }

    pub fn len(&self) -> usize {
        self.ops().len()
    }

    fn push(&self, op: NsOp) {
        self.ops().push(op);
        self.wake.notify_one();
        self.changed.notify_waiters();
    }

    fn first(&self) -> Option<NsOp> {
        self.ops().first().cloned()
    }

    /// Forgets a replayed operation; [`OfflineOps::done`] tells the waiters once the tree
    /// shows its result.
    fn remove(&self, id: i64) {
        self.ops().retain(|o| o.id != id);
    }

    fn done(&self) {
        self.changed.notify_waiters();
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Returns once no operation waits.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ops().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Applies the waiting operations of `area`, in order, to the server's listing of `dir`.
    pub fn overlay(&self, area: AreaId, dir: &RemotePath, records: &mut Vec<EntryRecord>) {
        let ops = self.ops();
        for op in ops.iter().filter(|o| o.area == area) {
            let in_dir = |p: &RemotePath| !p.is_root() && p.parent_or_root() == *dir;
            match op.kind {
                NsOpKind::Mkdir if in_dir(&op.path) => {
                    records.retain(|r| r.name != op.path.name());
                    records.push(EntryRecord {
                        name: op.path.name().to_string(),
                        kind: EntryKind::Dir,
                        size: 0,
                        mtime: Some(op.at),
                        etag: None,
                    });
                }
                NsOpKind::Rmdir | NsOpKind::Unlink if in_dir(&op.path) => {
                    records.retain(|r| r.name != op.path.name());
                }
                NsOpKind::Rename => {
                    if in_dir(&op.path) {
                        records.retain(|r| r.name != op.path.name());
                    }
                    if let Some(to) = op.target.as_ref().filter(|t| in_dir(t)) {
                        records.retain(|r| r.name != to.name());
                        records.push(EntryRecord {
                            name: to.name().to_string(),
                            kind: op.source_kind,
                            size: op.size,
                            mtime: op.mtime,
                            etag: op.etag.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the server may not have `dir` yet (made or renamed here, the operation still
    /// waiting): its listing is then this machine's alone.
    pub fn local_only(&self, area: AreaId, dir: &RemotePath) -> bool {
        self.ops().iter().any(|o| {
            o.area == area
                && match o.kind {
                    NsOpKind::Mkdir => dir.starts_with(&o.path),
                    NsOpKind::Rename => o.target.as_ref().is_some_and(|t| dir.starts_with(t)),
                    _ => false,
                }
        })
    }

    /// Our `from` became `to`: the waiting operations follow (see `MetaStore::move_ns_ops`).
    fn relocate(&self, area: AreaId, from: &RemotePath, to: &RemotePath) {
        for o in self.ops().iter_mut().filter(|o| o.area == area) {
            if let Some(p) = o.path.rebase(from, to) {
                o.path = p;
            }
            if let Some(p) = o.target.as_ref().and_then(|t| t.rebase(from, to)) {
                o.target = Some(p);
            }
        }
    }

    /// Remembers what a replay decided, for `status` (the newest [`NOTICES_KEPT`]).
    fn notice(&self, area: AreaId, path: &RemotePath, what: String) {
        tracing::warn!(path = %path, "{what}");
        let mut n = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() >= NOTICES_KEPT {
            n.remove(0);
        }
        n.push((area, path.clone(), what, crate::localtime::unix_now()));
    }

    /// The notices for `status`; `name` turns an (area, path) into a mount-relative path.
    pub fn report(&self, name: &dyn Fn(AreaId, &RemotePath) -> String) -> Vec<Notice> {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, p, what, at)| Notice {
                path: name(*a, p),
                what: what.clone(),
                at: *at,
            })
            .collect()
    }
}

/// How one replay went.
enum Replayed {
    /// Done, or resolved without loss: the operation goes.
    Done,
    /// The server could not be reached: the operation stays, tried again later.
    Retry(RemoteError),
}

impl Vfs {
    /// Whether a namespace operation of `area` must be queued rather than sent now.
    pub(super) fn ns_queued(&self, area: AreaId) -> bool {
        self.offline.pending_in(area) || self.health.is_offline()
    }

    /// Records `op` durably after every waiting one and wakes the replayer.
    pub(super) async fn record_op(&self, op: NsOp) -> VfsResult<()> {
        let op = meta_op(&self.meta, move |m| m.add_ns_op(&op)).await?;
        tracing::info!(op = op.kind.as_str(), path = %op.path, "server unreachable: done here, sent when it is back");
        self.offline.push(op);
        Ok(())
    }

    /// The operations of an earlier run (at start).
    pub(super) fn load_ns_ops(&self) -> VfsResult<()> {
        let mounted: Vec<AreaId> = self.area_ids().collect();
        for op in self.meta.ns_ops()? {
            if mounted.contains(&op.area) {
                self.offline.push(op);
            }
        }
        Ok(())
    }

    /// Starts the replayer on the current tokio runtime.
    pub(super) fn spawn_ns_replayer(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(replayer(Arc::downgrade(self), self.offline.clone()));
        }
    }

    /// Replays the waiting operations in order until none is left or the server cannot be
    /// reached. Then the uploads that waited for them go.
    async fn replay_ns_ops(&self) -> Result<(), RemoteError> {
        while let Some(op) = self.offline.first() {
            if self.offline.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.replay_one(&op).await {
                Replayed::Done => {
                    let id = op.id;
                    if let Err(e) = meta_op(&self.meta, move |m| m.remove_ns_op(id)).await {
                        tracing::error!(error = %e, "cannot record a replayed operation as done");
                        return Err(RemoteError::Io(std::io::Error::other(e.to_string())));
                    }
                    self.offline.remove(op.id);
                    self.after_replay(&op);
                    self.offline.done();
                    tracing::info!(op = op.kind.as_str(), path = %op.path, "sent to the server");
                }
                Replayed::Retry(e) => return Err(e),
            }
        }
        // Uploads deferred behind the operations go now.
        self.queue.retry_now();
        Ok(())
    }

    /// The server's listings of the folders `op` touched are asked again (they now hold the
    /// result, or what the server kept).
    fn after_replay(&self, op: &NsOp) {
        let mut dirs = vec![op.path.parent_or_root()];
        if let Some(t) = &op.target {
            dirs.push(t.parent_or_root());
        }
        // A folder made here is on the server once no waiting operation still makes or
        // moves it (a mkdir then a rename: at the rename's replay, under its new name).
        for p in std::iter::once(&op.path).chain(op.target.as_ref()) {
            if self.offline.local_only(op.area, p) {
                continue;
            }
            if let Some(ino) = self.find_ino(op.area, p) {
                if let Some(n) = self.tree().get_mut(ino).filter(|n| n.kind == FileKind::Dir) {
                    n.pending_create = false;
                }
            }
        }
        for d in dirs {
            self.listing_stale(op.area, &d);
        }
    }

    /// The listing of `dir` is to be asked again at its next use (what the server has there
    /// changed): known, but older than the TTL.
    fn listing_stale(&self, area: AreaId, dir: &RemotePath) {
        let Some(ino) = self.find_ino(area, dir) else {
            return;
        };
        let old = std::time::Instant::now().checked_sub(self.opts.dir_ttl + Duration::from_secs(1));
        if let Some(dd) = self.tree().get_mut(ino).and_then(|n| n.dir.as_mut()) {
            if dd.listed_at.is_some() {
                dd.listed_at = old;
            }
        }
    }

    /// A refusal other than "unreachable": the operation cannot be done as it was; nothing of
    /// ours is lost (the server keeps what it has, shown by the next listing).
    fn refused(&self, op: &NsOp, e: RemoteError) -> Replayed {
        if e.is_transient() {
            return Replayed::Retry(e);
        }
        self.offline.notice(
            op.area,
            &op.path,
            format!(
                "{} done while offline was refused by the server ({e}); the server's state is shown",
                op.kind.as_str()
            ),
        );
        Replayed::Done
    }

    async fn replay_one(&self, op: &NsOp) -> Replayed {
        let remote = match self.remote(op.area) {
            Ok(r) => r.clone(),
            Err(_) => return Replayed::Done,
        };
        let remote = &*remote;
        match op.kind {
            NsOpKind::Mkdir => self.replay_mkdir(remote, op).await,
            NsOpKind::Rmdir => match remote.list(&op.path).await {
                Err(RemoteError::NotFound { .. }) => Replayed::Done,
                Err(RemoteError::NotADirectory { .. }) => {
                    self.offline.notice(
                        op.area,
                        &op.path,
                        "not removed: the server has a file there now; it is kept".into(),
                    );
                    Replayed::Done
                }
                Ok(l) if !l.children.is_empty() => {
                    self.offline.notice(
                        op.area,
                        &op.path,
                        "folder not removed: it has new content on the server, which is kept"
                            .into(),
                    );
                    Replayed::Done
                }
                Ok(_) => self.replay_delete(remote, op).await,
                Err(e) => self.refused(op, e),
            },
            NsOpKind::Unlink => match remote.stat(&op.path).await {
                Err(RemoteError::NotFound { .. }) => Replayed::Done,
                Ok(e) if e.kind == EntryKind::Dir => {
                    self.offline.notice(
                        op.area,
                        &op.path,
                        "not deleted: the server has a folder there now; it is kept".into(),
                    );
                    Replayed::Done
                }
                Ok(e) if op.ours && e.size == op.size => self.replay_delete(remote, op).await,
                Ok(_) if op.ours => {
                    self.offline.notice(op.area, &op.path, "not deleted: the server's file there is not this machine's upload; it is kept".into());
                    Replayed::Done
                }
                Ok(e) => match remote::version::check(op.base.as_ref(), &e) {
                    Verdict::Same => self.replay_delete(remote, op).await,
                    _ => {
                        self.offline.notice(op.area, &op.path, "not deleted: changed on the server after it was deleted here; the server's version is kept".into());
                        Replayed::Done
                    }
                },
                Err(e) => self.refused(op, e),
            },
            NsOpKind::Rename => self.replay_rename(remote, op).await,
        }
    }

    /// Deletes `op`'s path on the server (gone already is as good).
    async fn replay_delete(&self, remote: &dyn Remote, op: &NsOp) -> Replayed {
        match remote.delete(&op.path).await {
            Ok(()) | Err(RemoteError::NotFound { .. }) => Replayed::Done,
            Err(e) => self.refused(op, e),
        }
    }

    /// Runs `attempt` (of `op`, placing something at `path`); when a folder above `path` was
    /// deleted on the server meanwhile, makes the folders again (what we made goes on), notes
    /// `what` for `path`, and runs it once more. `Err`: the folders could not be made, how the
    /// replay ends.
    async fn with_parents_made<Fut>(
        &self,
        op: &NsOp,
        path: &RemotePath,
        what: &str,
        attempt: impl Fn() -> Fut,
    ) -> Result<Result<(), RemoteError>, Replayed>
    where
        Fut: std::future::Future<Output = Result<(), RemoteError>>,
    {
        let res = attempt().await;
        if !matches!(res, Err(RemoteError::MissingParent { .. })) {
            return Ok(res);
        }
        if let Err(e) = self.make_parents(op.area, path).await {
            return Err(self.refused(op, e));
        }
        self.offline.notice(op.area, path, what.into());
        Ok(attempt().await)
    }

    async fn replay_mkdir(&self, remote: &dyn Remote, op: &NsOp) -> Replayed {
        let made = "made again: a folder above it was deleted on the server meanwhile";
        let res = match self
            .with_parents_made(op, &op.path, made, || remote.mkdir(&op.path))
            .await
        {
            Ok(res) => res,
            Err(done) => return done,
        };
        match res {
            Ok(()) => Replayed::Done,
            Err(RemoteError::AlreadyExists { .. }) => match remote.stat(&op.path).await {
                // Someone made the same folder: ours joins it.
                Ok(e) if e.kind == EntryKind::Dir => Replayed::Done,
                Ok(_) => {
                    // A file took the name: it keeps it, our folder goes to a copy's name.
                    match self.free_copy_name(remote, &op.path).await {
                        Ok(copy) => match remote.mkdir(&copy).await {
                            Ok(()) => {
                                self.relocate_local(op.area, &op.path, &copy).await;
                                Replayed::Done
                            }
                            Err(e) => self.refused(op, e),
                        },
                        Err(e) => self.refused(op, e),
                    }
                }
                Err(e) => Replayed::Retry(e),
            },
            Err(e) => self.refused(op, e),
        }
    }

    async fn replay_rename(&self, remote: &dyn Remote, op: &NsOp) -> Replayed {
        let Some(to) = op.target.clone() else {
            return Replayed::Done;
        };
        let src = match remote.stat(&op.path).await {
            Ok(e) => e,
            Err(RemoteError::NotFound { .. }) => {
                self.offline.notice(
                    op.area,
                    &to,
                    format!(
                        "not renamed on the server: {} was deleted there meanwhile",
                        op.path
                    ),
                );
                return Replayed::Done;
            }
            Err(e) => return self.refused(op, e),
        };
        if src.kind == EntryKind::File
            && remote::version::check(op.base.as_ref(), &src) == Verdict::Changed
        {
            self.offline.notice(op.area, &to, format!("{} was changed on the server before this rename reached it; the changed version was moved", op.path));
        }
        let mut overwrite = false;
        if op.replace {
            match remote.stat(&to).await {
                Err(RemoteError::NotFound { .. }) => {}
                Ok(t) if t.kind == EntryKind::File && src.kind == EntryKind::File => {
                    overwrite =
                        remote::version::check(op.target_base.as_ref(), &t) == Verdict::Same;
                }
                Ok(t) if t.kind == EntryKind::Dir && src.kind == EntryKind::Dir => {
                    overwrite = match remote.list(&to).await {
                        Ok(l) => l.children.is_empty(),
                        Err(e) => return self.refused(op, e),
                    };
                }
                Ok(_) => {}
                Err(e) => return self.refused(op, e),
            }
        }
        let made = "its folder was made again: it was deleted on the server meanwhile";
        let res = match self
            .with_parents_made(op, &to, made, || remote.rename(&op.path, &to, overwrite))
            .await
        {
            Ok(res) => res,
            Err(done) => return done,
        };
        match res {
            Ok(()) => Replayed::Done,
            Err(RemoteError::AlreadyExists { .. })
            | Err(RemoteError::PreconditionFailed { .. }) => {
                // The name was taken (or changed) on the server meanwhile: the server's keeps
                // it, ours goes to a copy's name.
                let copy = match self.free_copy_name(remote, &to).await {
                    Ok(c) => c,
                    Err(e) => return self.refused(op, e),
                };
                match remote.rename(&op.path, &copy, false).await {
                    Ok(()) => {
                        self.relocate_local(op.area, &to, &copy).await;
                        Replayed::Done
                    }
                    Err(e) => self.refused(op, e),
                }
            }
            Err(e) => self.refused(op, e),
        }
    }

    /// A conflict-copy name beside `path` that the server does not have.
    async fn free_copy_name(
        &self,
        remote: &dyn Remote,
        path: &RemotePath,
    ) -> Result<RemotePath, RemoteError> {
        let parent = path.parent_or_root();
        let stamp = conflict::timestamp(SystemTime::now());
        let device = &self.queue.options().device;
        for n in 1..=20 {
            let copy = parent.join(&conflict::conflict_name(path.name(), device, &stamp, n))?;
            match remote.stat(&copy).await {
                Err(RemoteError::NotFound { .. }) => return Ok(copy),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::AlreadyExists {
            url: path.to_string(),
        })
    }

    /// The server kept `from` (another client's): ours moves to `to` here too — its node,
    /// stored entries, queued uploads, cached blocks and the operations after this one — and
    /// the conflict is remembered for `status`.
    async fn relocate_local(&self, area: AreaId, from: &RemotePath, to: &RemotePath) {
        let ino = self.find_ino(area, from);
        let parent = self.find_ino(area, &to.parent_or_root());
        {
            let mut t = self.tree();
            if let (Some(ino), Some(parent)) = (ino, parent) {
                t.rename(ino, parent, to.name());
            }
        }
        self.listing_stale(area, &to.parent_or_root());
        self.offline.relocate(area, from, to);
        let (f, t) = (from.clone(), to.clone());
        let moved = meta_op(&self.meta, move |m| {
            m.rename_entry(area, &f, &t)?;
            m.move_ns_ops(area, &f, &t)
        })
        .await;
        if let Err(e) = moved {
            tracing::error!(error = %e, "cannot record where a conflicting folder or file went");
        }
        if let Err(e) = self.move_dirty(area, from, to, false, None).await {
            tracing::error!(error = %e, "cannot move the queued uploads of a conflict copy");
        }
        let (cache, f, t) = (self.cache.clone(), from.clone(), to.clone());
        let _ = off_thread(move || cache.rename_path(area, &f, &t)).await;
        let at = now();
        self.queue.add_conflict(area, from.clone(), to.clone(), at);
        let (f, t) = (from.clone(), to.clone());
        if let Err(e) = meta_op(&self.meta, move |m| m.add_conflict(area, &f, &t, at)).await {
            tracing::warn!(error = %e, "cannot remember a conflict");
        }
    }

    /// Shows a folder the server may not have yet from what is known here (the caller holds
    /// its inode lock); see [`OfflineOps::local_only`].
    pub(super) async fn list_locally(
        &self,
        dir: super::Ino,
        area: AreaId,
        path: RemotePath,
        known: bool,
    ) -> VfsResult<()> {
        if !known {
            let p = path.clone();
            let saved = meta_op(&self.meta, move |m| m.load_listing(area, &p)).await?;
            let entries = saved.map(|(_, e)| e).unwrap_or_default();
            let _ = self.merge_listing(dir, &entries, Some(std::time::Instant::now()), None);
            self.restore_local_attrs(dir).await;
        } else if let Some(d) = self.tree().get_mut(dir).and_then(|n| n.dir.as_mut()) {
            d.listed_at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// The waiting operations and the replay's notices, for `status`.
    pub(super) fn ns_report(&self) -> (u64, Vec<Notice>) {
        (
            self.offline.len() as u64,
            self.offline.report(&|a, p| self.display_path(a, p)),
        )
    }

    /// A node made here while the server could not be reached: a folder, its listing known
    /// (empty) so that it is shown after a restart too.
    pub(super) async fn save_new_dir(&self, area: AreaId, path: &RemotePath) -> VfsResult<()> {
        let p = path.clone();
        meta_op(&self.meta, move |m| m.save_listing(area, &p, now(), &[])).await
    }

    /// The kind of a node, for an operation's record.
    pub(super) fn entry_kind(kind: FileKind) -> EntryKind {
        match kind {
            FileKind::File => EntryKind::File,
            FileKind::Dir => EntryKind::Dir,
        }
    }
}

/// The replayer: replays the waiting operations when woken (new operation, server back) and
/// retries with back-off while the server cannot be reached.
async fn replayer(vfs: Weak<Vfs>, ops: Arc<OfflineOps>) {
    let mut attempts: u32 = 0;
    loop {
        let notified = ops.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if ops.stopping.load(Ordering::Relaxed) {
            return;
        }
        let delay = if ops.len() == 0 {
            None
        } else {
            let Some(v) = vfs.upgrade() else {
                return;
            };
            let (min, max) = (v.queue.options().retry_min, v.queue.options().retry_max);
            match v.replay_ns_ops().await {
                Ok(()) => {
                    attempts = 0;
                    None
                }
                Err(e) => {
                    attempts += 1;
                    tracing::debug!(error = %e, "operations made offline wait for the server");
                    let f = 1u32 << attempts.saturating_sub(1).min(16);
                    Some((min * f).min(max))
                }
            }
        };
        match delay {
            None => notified.await,
            Some(d) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(d.max(Duration::from_millis(10))) => {}
                }
            }
        }
    }
}
