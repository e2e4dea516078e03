//! A file deleted (or replaced by a rename) through the mount while programs read it: as on a
//! local disk, they go on reading it, and the delete returns at once.
//!
//! When the readers do not have the whole version in the cache, the file is not deleted on the
//! server but moved (one MOVE, done at once whatever the file's size) to a hidden temporary
//! name of this cache — `.cloudmount-upload-<cache_id>--<n>.part`, the form of the upload
//! queue's temporary files with a negative id that no queue record has — and the readers'
//! downloads go there. When the last reader closes, that name is deleted. If the daemon stops
//! first (killed, power cut), the hidden file is swept like any temporary upload of this cache
//! that no record names (`Vfs::sweep_stray_uploads`, the next time its folder is listed).
//!
//! The set-aside name is the server's copy of a version nobody else can name, so downloads
//! from it are not made conditional (a server may give a moved file a new ETag).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::{Ino, Vfs};
use crate::meta::AreaId;
use crate::remote::{RemoteError, RemotePath};

/// Files set aside for their readers in this run, by their temporary name's id.
#[derive(Default)]
pub(super) struct SetAside {
    next: AtomicI64,
    ids: Mutex<std::collections::HashSet<i64>>,
}

impl SetAside {
    /// Whether the temporary name of id `id` holds a file set aside for readers now.
    pub(super) fn holds(&self, id: i64) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    fn take_id(&self) -> i64 {
        // Negative: never an upload record's id (those count up from 1).
        let id = -1 - self.next.fetch_add(1, Ordering::Relaxed);
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        id
    }

    fn release(&self, id: i64) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// What [`Vfs::set_aside_for_readers`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SetAsideOutcome {
    /// Nobody reads the file, or its readers have all of it: delete it as usual.
    NotNeeded,
    /// Moved to its hidden name: the path is free on the server now.
    Moved,
    /// Gone from the server already.
    Gone,
    /// The MOVE failed: fall back to fetching what the readers lack, then deleting.
    Failed,
}

impl Vfs {
    /// Before `ino` (a file at `path` of `area`, on the server) is deleted or replaced: when a
    /// program reads it and lacks part of its version in the cache, moves the server's copy
    /// aside for it (see the module docs).
    pub(super) async fn set_aside_for_readers(
        &self,
        area: AreaId,
        ino: Ino,
        path: &RemotePath,
    ) -> SetAsideOutcome {
        if self.tree().get(ino).is_none_or(|n| n.staged.is_some()) {
            return SetAsideOutcome::NotNeeded;
        }
        type Reader = (u64, bool, bool, Option<super::stream::SharedStream>);
        let readers: Vec<Reader> = {
            let hs = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            hs.iter()
                .filter(|(_, h)| h.ino == ino && !h.write)
                .map(|(fh, h)| {
                    (
                        *fh,
                        h.object.is_some(),
                        h.object.as_ref().is_some_and(|(o, _)| o.is_complete()),
                        h.stream.clone(),
                    )
                })
                .collect()
        };
        if readers.iter().all(|(_, _, complete, _)| *complete) {
            return SetAsideOutcome::NotNeeded;
        }
        // Handles that have no cache object yet (a small file not read so far) get one now,
        // while the file still has its path: their reads then go through it.
        if readers
            .iter()
            .any(|(_, has, _, stream)| !has && stream.is_none())
        {
            match self.object_for(ino).await {
                Ok(Some((o, _))) => {
                    for (fh, has, _, stream) in &readers {
                        if !has && stream.is_none() {
                            self.attach_object(*fh, o.clone(), o.open_guard());
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "no cache object for the readers of a deleted file");
                    return SetAsideOutcome::Failed;
                }
            }
        }
        let id = self.set_aside.take_id();
        let temp = match crate::transfer::temp::for_record(path, &self.temp_tag, id) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no temporary name for a file deleted while read");
                self.set_aside.release(id);
                return SetAsideOutcome::Failed;
            }
        };
        let moved = match self.remote(area) {
            Ok(r) => r.rename(path, &temp, false).await,
            Err(_) => {
                self.set_aside.release(id);
                return SetAsideOutcome::Failed;
            }
        };
        match moved {
            Ok(()) => {}
            Err(RemoteError::NotFound { .. }) => {
                self.set_aside.release(id);
                return SetAsideOutcome::Gone;
            }
            Err(e) => {
                tracing::info!(error = %e, file = %path, "cannot set a file deleted while read aside; fetching it for its readers first");
                self.set_aside.release(id);
                return SetAsideOutcome::Failed;
            }
        }
        tracing::debug!(file = %path, aside = %temp, "deleted while read: kept on the server for its readers");
        if let Some(n) = self.tree().get_mut(ino) {
            n.set_aside = Some((id, temp.clone()));
        }
        for (_, _, _, stream) in readers {
            if let Some(s) = stream {
                s.lock().await.redirect(temp.clone());
            }
        }
        SetAsideOutcome::Moved
    }

    /// Where the content of `ino` is on the server when it was set aside for its readers.
    pub(super) fn set_aside_path(&self, ino: Ino) -> Option<RemotePath> {
        self.tree()
            .get(ino)
            .and_then(|n| n.set_aside.as_ref().map(|(_, p)| p.clone()))
    }

    /// After a handle of `ino` closed: when the node is deleted, set aside, and nobody reads it
    /// any more, deletes its hidden copy on the server (in the background).
    pub(super) fn drop_set_aside_if_unread(&self, ino: Ino) {
        let open = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| h.ino == ino);
        if open {
            return;
        }
        let (area, (id, temp)) = {
            let mut t = self.tree();
            let Some(n) = t.get_mut(ino) else { return };
            if n.linked {
                return;
            }
            let Some(aside) = n.set_aside.take() else {
                return;
            };
            let Some(area) = n.area else { return };
            (area, aside)
        };
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let res = match me.remote(area) {
                Ok(r) => r.delete(&temp).await,
                Err(_) => return,
            };
            match res {
                Ok(()) | Err(RemoteError::NotFound { .. }) => {
                    tracing::debug!(file = %temp, "the last reader closed: deleted")
                }
                // Left hidden on the server: swept at the next listing of its folder.
                Err(e) => {
                    tracing::info!(file = %temp, error = %e, "cannot delete a file set aside for its readers yet")
                }
            }
            me.set_aside.release(id);
        });
    }
}
