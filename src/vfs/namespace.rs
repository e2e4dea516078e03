//! Changes to names and attributes: `mkdir`, `rmdir`, `unlink`, `rename`, and `setattr`
//! (truncation; mtime and permission bits, kept locally; owners are fixed). Deleting or
//! replacing a file that programs have open for reading first fetches what its version lacks in
//! the cache (`complete_for_readers`), so they go on reading it, as on a local disk.

use std::sync::Arc;
use std::time::Instant;

use super::tree::Node;
use super::{
    default_perm, meta_op, now, off_thread, version_of, write, Attr, FileKind, Ino, RenameFlags,
    SetAttr, Vfs, VfsError, VfsResult,
};
use crate::cache::CacheObject;
use crate::meta::{AreaId, EntryRecord, NsOp, NsOpKind};
use crate::remote::{EntryKind, RemoteError, RemotePath};

pub(super) fn check_name(name: &str) -> VfsResult<()> {
    if name.len() > crate::remote::path::NAME_MAX {
        return Err(VfsError::NameTooLong);
    }
    crate::remote::path::check_name(name).map_err(VfsError::Invalid)
}

impl Vfs {
    pub async fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr) -> VfsResult<Attr> {
        let current = self.attr(ino)?;
        // Only the permission bits are kept: set-user-ID, set-group-ID and sticky are dropped
        // (a server's content never runs set-ID here).
        let perm = set
            .mode
            .map(|mode| (mode & 0o777) as u16)
            .filter(|perm| *perm != current.perm);
        if perm.is_some() {
            // EROFS in a read-only area or mount, EPERM on the root above the areas.
            self.check_writable(ino)?;
        }
        if set.uid.is_some_and(|u| u != self.opts.uid)
            || set.gid.is_some_and(|g| g != self.opts.gid)
        {
            return Err(VfsError::NotPermitted("WebDAV has no file owners"));
        }
        if let Some(size) = set.size {
            if current.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
            self.check_writable(ino)?;
            // stage() counts us as a writer until the size is set.
            let staged = self.stage(ino, size == 0).await?;
            {
                let _change = self.changing(&staged).await;
                let st = staged.clone();
                let resized = write::blocking(move || st.file.set_len(size)).await;
                let mut s = staged.state();
                s.writers -= 1;
                if resized.is_ok() {
                    s.size = size;
                    s.version += 1;
                }
                drop(s);
                resized?;
            }
            self.touch_mtime(ino);
            let has_writer = fh.is_some_and(|fh| {
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&fh)
                    .is_some_and(|h| h.write)
            }) || staged.state().writers > 0;
            if !has_writer {
                // truncate(2) on a path: nothing will close it; commit now.
                self.commit(ino, &staged).await?;
            }
        }
        if let Some(mtime) = set.mtime {
            let (path, version) = {
                let mut t = self.tree();
                let n = t.get_mut(ino).ok_or(VfsError::NotFound)?;
                n.local_mtime = Some(mtime);
                // A file's time holds for its version; a directory's whatever happens in it.
                let version = (n.kind == FileKind::File).then(|| version_of(n));
                (t.path(ino), version)
            };
            if let Some((area, p)) = path {
                meta_op(&self.meta, move |m| {
                    m.set_local_mtime(area, &p, Some(mtime), version.as_ref())
                })
                .await?;
            }
        }
        if let Some(perm) = perm {
            self.set_perm(ino, perm).await?;
        }
        self.attr(ino)
    }

    /// chmod: the permission bits are shown from now on and kept in `meta.db` (WebDAV cannot
    /// store them; nothing is sent to the server). The default mode is kept as no mode at all.
    async fn set_perm(&self, ino: Ino, perm: u16) -> VfsResult<()> {
        let (path, kept) = {
            let mut t = self.tree();
            let n = t.get_mut(ino).ok_or(VfsError::NotFound)?;
            let kept = (perm != default_perm(n.kind)).then_some(perm);
            n.perm = kept;
            (t.path(ino), kept)
        };
        if let Some((area, p)) = path {
            meta_op(&self.meta, move |m| m.set_local_mode(area, &p, kept)).await?;
        }
        Ok(())
    }

    /// A directory's entries changed here: its mtime is now (until the server says otherwise).
    pub(super) fn touch_dir(&self, dir: Ino) {
        let mut t = self.tree();
        if let Some(n) = t.get_mut(dir) {
            n.mtime = now();
        }
    }

    pub(super) fn touch_mtime(&self, ino: Ino) {
        let mut t = self.tree();
        if let Some(n) = t.get_mut(ino) {
            n.mtime = now();
            n.local_mtime = None;
        }
    }

    pub async fn mkdir(&self, parent: Ino, name: &str) -> VfsResult<Attr> {
        check_name(name)?;
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        if self.tree().child(parent, name).is_some() {
            return Err(VfsError::Exists);
        }
        let (_, ppath) = self.node_path(parent)?;
        let path = ppath.join(name)?;
        let mut queued = self.ns_queued(area);
        if !queued {
            match self.remote(area)?.mkdir(&path).await {
                Ok(()) => {}
                Err(RemoteError::AlreadyExists { .. }) => return Err(VfsError::Exists),
                Err(e) if e.is_transient() => queued = true,
                Err(e) => return Err(e.into()),
            }
        }
        if queued {
            self.record_op(self.new_op(area, NsOpKind::Mkdir, &path, EntryKind::Dir))
                .await?;
            self.save_new_dir(area, &path).await?;
        }
        let ino = {
            let mut t = self.tree();
            let mut n = Node::new(parent, name, Some(area), FileKind::Dir);
            n.mtime = now();
            n.dir.as_mut().expect("dir").listed_at = Some(Instant::now());
            n.lookups = 1;
            // Not on the server until its operation is replayed: listings keep it.
            n.pending_create = queued;
            t.insert(n)
        };
        self.touch_dir(parent);
        let rec = EntryRecord {
            name: name.to_string(),
            kind: EntryKind::Dir,
            size: 0,
            mtime: Some(now()),
            etag: None,
        };
        meta_op(&self.meta, move |m| m.upsert_entry(area, &path, &rec)).await?;
        self.attr(ino)
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        let ino = self.tree().child(parent, name).ok_or(VfsError::NotFound)?;
        {
            let t = self.tree();
            if t.get(ino).map(|n| n.kind) != Some(FileKind::Dir) {
                return Err(VfsError::NotDir);
            }
        }
        if let Err(e) = self.ensure_listed(ino).await {
            if !matches!(&e, VfsError::Remote(r) if r.is_transient()) {
                return Err(e);
            }
            // Never listed, and the server cannot be asked: the removal waits for it, which
            // removes the folder only if it is empty there (nothing is lost).
        }
        let (_, path) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.dir.as_ref().is_some_and(|d| !d.children.is_empty()) {
                return Err(VfsError::NotEmpty);
            }
            t.path(ino).ok_or(VfsError::NotFound)?
        };
        if self.queue.has_under(area, &path) {
            // Changed files below, not yet uploaded.
            return Err(VfsError::NotEmpty);
        }
        let mut queued = self.ns_queued(area);
        if !queued {
            match self.remote(area)?.delete(&path).await {
                Ok(()) | Err(RemoteError::NotFound { .. }) => {}
                Err(e) if e.is_transient() => queued = true,
                Err(e) => return Err(e.into()),
            }
        }
        if queued {
            self.record_op(self.new_op(area, NsOpKind::Rmdir, &path, EntryKind::Dir))
                .await?;
        }
        self.tree().unlink(parent, name);
        self.touch_dir(parent);
        self.forget_remote_path(area, path).await
    }

    /// Drops metadata and cached blocks of a removed path (and below).
    async fn forget_remote_path(&self, area: AreaId, path: RemotePath) -> VfsResult<()> {
        let p = path.clone();
        meta_op(&self.meta, move |m| m.remove_entry(area, &p)).await?;
        let cache = self.cache.clone();
        off_thread(move || cache.remove_path(area, &path)).await?;
        Ok(())
    }

    /// Before a file is deleted through the mount: each program that has it open for reading
    /// must go on reading it afterwards, as on a local disk, so what its version lacks in the
    /// cache is fetched now (the handle keeps that object, which outlives the delete). Best
    /// effort: a failure (no room on the local disk, the server gone) is logged and the delete
    /// goes on; those readers then fail on the parts they lack. A staged file needs nothing:
    /// its local copy is kept for its readers.
    async fn complete_for_readers(&self, ino: Ino) {
        if self.tree().get(ino).is_none_or(|n| n.staged.is_some()) {
            return;
        }
        let readers: Vec<(u64, Option<Arc<CacheObject>>)> = {
            let hs = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            hs.iter()
                .filter(|(_, h)| h.ino == ino && !h.write)
                .map(|(fh, h)| (*fh, h.object.as_ref().map(|(o, _)| o.clone())))
                .collect()
        };
        let mut current: Option<Arc<CacheObject>> = None;
        for (fh, obj) in readers {
            let obj = match obj {
                Some(o) => o,
                None => {
                    if current.is_none() {
                        match self.object_for(ino).await {
                            Ok(found) => current = found.map(|(o, _guard)| o),
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot keep a deleted file for its readers");
                                return;
                            }
                        }
                    }
                    // An empty file has no object: nothing to keep.
                    let Some(o) = current.clone() else {
                        continue;
                    };
                    self.attach_object(fh, o.clone(), o.open_guard());
                    o
                }
            };
            if let Err(e) = self.ensure_blocks(ino, &obj, 0, obj.size()).await {
                tracing::warn!(error = %e, "a file open for reading is deleted before all of it could be fetched: its readers may fail");
            }
        }
    }

    /// For a file never seen on the server that goes from `path` here (deleted, renamed): an
    /// upload of it may have landed at `path` with its answer lost (cut off by going offline,
    /// or a crash). Records an unlink of ours that the replay does only while the server's
    /// file is that upload (its size).
    async fn record_landed_unlink(&self, area: AreaId, path: &RemotePath) -> VfsResult<()> {
        let p = path.clone();
        let landed = meta_op(&self.meta, move |m| m.upload_may_have_landed(area, &p)).await?;
        if let Some(size) = landed {
            let mut op = self.new_op(area, NsOpKind::Unlink, path, EntryKind::File);
            op.ours = true;
            op.size = size;
            self.record_op(op).await?;
        }
        Ok(())
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> VfsResult<()> {
        let area = self.check_writable(parent)?;
        self.ensure_listed(parent).await?;
        let (ino, path, pending) = {
            let t = self.tree();
            let ino = t.child(parent, name).ok_or(VfsError::NotFound)?;
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                return Err(VfsError::IsDir);
            }
            (
                ino,
                t.path(ino).ok_or(VfsError::NotFound)?.1,
                n.pending_create,
            )
        };
        // An upload of this file in flight must end first (or it would put the file back).
        let _block = if self.queue.has_under(area, &path) {
            Some(self.queue.block(area, vec![path.clone()]).await)
        } else {
            None
        };
        let pending = pending && self.tree().get(ino).is_some_and(|n| n.pending_create);
        let mut queued = !pending && self.ns_queued(area);
        if !pending && !queued {
            use super::set_aside::SetAsideOutcome as Aside;
            match self.set_aside_for_readers(area, ino, &path).await {
                Aside::Moved | Aside::Gone => {}
                aside => {
                    if aside == Aside::Failed {
                        self.complete_for_readers(ino).await;
                    }
                    match self.remote(area)?.delete(&path).await {
                        Ok(()) | Err(RemoteError::NotFound { .. }) => {}
                        Err(e) if e.is_transient() => queued = true,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if queued {
            // Deleted on the server later, and only while it has the version deleted here.
            let mut op = self.new_op(area, NsOpKind::Unlink, &path, EntryKind::File);
            self.describe_source(&mut op, ino);
            self.record_op(op).await?;
        } else if pending {
            // Never seen on the server, but an upload of it may have landed there.
            self.record_landed_unlink(area, &path).await?;
        }
        self.touch_dir(parent);
        {
            let mut t = self.tree();
            t.unlink(parent, name);
            // A staged copy nobody writes any more has nothing left to upload.
            if let Some(n) = t.get_mut(ino) {
                if let Some(st) = n.staged.clone() {
                    let mut s = st.state();
                    s.uploaded = s.version;
                }
            }
        }
        // The staged copy goes first: on a full disk, that is the space the next steps need.
        self.unstage_if_idle(ino).await;
        self.forget_dirty(area, &path).await?;
        self.forget_remote_path(area, path).await
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        if flags.exchange {
            return Err(VfsError::Invalid(
                "RENAME_EXCHANGE is not supported over WebDAV",
            ));
        }
        check_name(new_name)?;
        let area = self.check_writable(parent)?;
        let new_area = self.check_writable(new_parent)?;
        if area != new_area {
            return Err(VfsError::CrossDevice);
        }
        self.ensure_listed(parent).await?;
        self.ensure_listed(new_parent).await?;
        let (src, dst) = {
            let t = self.tree();
            let src = t.child(parent, name).ok_or(VfsError::NotFound)?;
            (src, t.child(new_parent, new_name))
        };
        if dst == Some(src) {
            // rename(2) of a name onto itself does nothing — unless told not to replace.
            return if flags.noreplace {
                Err(VfsError::Exists)
            } else {
                Ok(())
            };
        }
        // The kernel's order: an existing target with RENAME_NOREPLACE first, then a directory
        // moved below itself.
        if dst.is_some() && flags.noreplace {
            return Err(VfsError::Exists);
        }
        if let Some(d) = dst {
            if self.tree().is_within(src, d) {
                // The target is an ancestor of the source (a non-empty directory).
                return Err(VfsError::NotEmpty);
            }
        }
        let (src_kind, src_pending) = {
            let t = self.tree();
            let n = t.get(src).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir && t.is_within(new_parent, src) {
                return Err(VfsError::Invalid("cannot move a directory into itself"));
            }
            (n.kind, n.pending_create)
        };
        let mut dst_on_server = false;
        let mut dst_etag = None;
        if let Some(d) = dst {
            if flags.noreplace {
                return Err(VfsError::Exists);
            }
            let (dkind, dpending, detag) = {
                let t = self.tree();
                let n = t.get(d).ok_or(VfsError::NotFound)?;
                (n.kind, n.pending_create, Some(version_of(n)))
            };
            match (src_kind, dkind) {
                (FileKind::Dir, FileKind::File) => return Err(VfsError::NotDir),
                (FileKind::File, FileKind::Dir) => return Err(VfsError::IsDir),
                (FileKind::Dir, FileKind::Dir) => {
                    self.ensure_listed(d).await?;
                    let t = self.tree();
                    if t.get(d)
                        .and_then(|n| n.dir.as_ref())
                        .is_some_and(|dd| !dd.children.is_empty())
                    {
                        return Err(VfsError::NotEmpty);
                    }
                }
                _ => {}
            }
            dst_on_server = !dpending;
            dst_etag = detag;
        }
        let from = self.node_path(src)?.1;
        let to = self.node_path(new_parent)?.1.join(new_name)?;
        // Uploads of the source or the target in flight end first; none starts until done.
        let _block = if self.queue.has_under(area, &from) || self.queue.has_under(area, &to) {
            Some(self.queue.block(area, vec![from.clone(), to.clone()]).await)
        } else {
            None
        };
        // An upload that just ended may have put the source or the target on the server.
        let src_pending = src_pending && self.tree().get(src).is_some_and(|n| n.pending_create);
        // A folder made here and not on the server yet has its mkdir waiting: the rename
        // waits behind it, like every operation of an area with operations waiting.
        let src_pending = src_pending && src_kind == FileKind::File;
        let mut queued = !src_pending && self.ns_queued(area);
        if let Some(d) = dst {
            if let Some(n) = self.tree().get(d) {
                dst_on_server = !n.pending_create;
                dst_etag = Some(version_of(n));
            }
            // The target is replaced: programs reading it keep their version (see `unlink`;
            // not when the rename waits, as its set-aside would reach the server first).
            if dst_on_server
                && src_kind == FileKind::File
                && !queued
                && self.set_aside_for_readers(area, d, &to).await
                    == super::set_aside::SetAsideOutcome::Failed
            {
                self.complete_for_readers(d).await;
            }
        }
        if !src_pending && !queued {
            match self.remote(area)?.rename(&from, &to, dst.is_some()).await {
                Ok(()) => {}
                Err(RemoteError::AlreadyExists { .. }) => return Err(VfsError::Exists),
                Err(e) if e.is_transient() => queued = true,
                Err(e) => return Err(e.into()),
            }
        }
        // The replaced file was never seen on the server, but its upload may have landed there
        // with its answer lost: that copy goes first, so that the rename (waiting) or the
        // source's upload (a local rename) does not find it in the way and keep both.
        if dst.is_some() && !dst_on_server && src_kind == FileKind::File && (queued || src_pending)
        {
            self.record_landed_unlink(area, &to).await?;
        }
        if queued {
            let mut op = self.new_op(area, NsOpKind::Rename, &from, Self::entry_kind(src_kind));
            op.target = Some(to.clone());
            // Over a folder made here (its mkdir replayed first), or a file the server has.
            op.replace = dst.is_some();
            op.target_base = dst_etag.clone().filter(|_| dst_on_server);
            self.describe_source(&mut op, src);
            self.record_op(op).await?;
        }
        if src_pending {
            // An upload of it may have landed at the old name: that copy goes too.
            self.record_landed_unlink(area, &from).await?;
            // Not on the server yet: a local rename; the upload goes to the new name, over
            // whatever the server has there.
            if let Some(st) = self.tree().get(src).and_then(|n| n.staged.clone()) {
                let mut s = st.state();
                if dst_on_server {
                    s.exists_remote = true;
                    s.base = dst_etag.clone();
                }
            }
            if dst_on_server {
                let mut t = self.tree();
                if let Some(n) = t.get_mut(src) {
                    n.pending_create = false;
                }
            }
        }
        {
            let mut t = self.tree();
            // A replaced file that was changed here has nothing left to upload.
            if let Some(st) = dst.and_then(|d| t.get(d)).and_then(|n| n.staged.clone()) {
                let mut s = st.state();
                s.committed = s.version;
                s.uploaded = s.version;
            }
            t.rename(src, new_parent, new_name);
        }
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        let (f2, t2) = (from.clone(), to.clone());
        meta_op(&self.meta, move |m| m.rename_entry(area, &f2, &t2)).await?;
        self.move_dirty(area, &from, &to, src_pending && dst_on_server, dst_etag)
            .await?;
        let cache = self.cache.clone();
        off_thread(move || cache.rename_path(area, &from, &to)).await?;
        Ok(())
    }

    /// A namespace operation on `path` to record (see `offline_ops.rs`).
    fn new_op(&self, area: AreaId, kind: NsOpKind, path: &RemotePath, what: EntryKind) -> NsOp {
        NsOp {
            id: 0,
            area,
            kind,
            path: path.clone(),
            target: None,
            source_kind: what,
            size: 0,
            mtime: Some(now()),
            etag: None,
            base: None,
            replace: false,
            target_base: None,
            ours: false,
            at: now(),
        }
    }

    /// Fills in what `op` knows of its source `ino`: the server's version it is based on (a
    /// file's, from its staged copy's base when it has one), and how to show it meanwhile.
    fn describe_source(&self, op: &mut NsOp, ino: Ino) {
        let t = self.tree();
        let Some(n) = t.get(ino) else {
            return;
        };
        op.source_kind = Self::entry_kind(n.kind);
        op.size = n.size;
        op.mtime = Some(n.local_mtime.unwrap_or(n.mtime));
        op.etag = n.etag.clone();
        if n.kind == FileKind::File {
            let staged_base = n.staged.as_ref().map(|st| st.state().base.clone());
            op.base = match staged_base {
                Some(base) => base,
                None => Some(version_of(n)),
            };
        }
    }
}
