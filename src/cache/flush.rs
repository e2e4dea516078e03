//! Making block presence and access times durable: one flush pass snapshots what changed,
//! fsyncs the data, then the names of new files, then commits in one transaction (the order
//! that keeps "never serve wrong bytes" across a power cut, see the module docs of `cache`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::CacheError;
use super::io::sync_dir;
use super::lock;
use super::object::ObjectInner;
use super::state::{Access, Shared};
use crate::meta::objects::ObjectUpdate;

impl Shared {
    /// Persists presence and access times: snapshots the changed bitmaps, fsyncs the object
    /// files (and the directories of files created since the last flush), then commits
    /// everything in one transaction.
    pub(super) fn flush(&self) -> Result<(), CacheError> {
        let _f = lock(&self.flush_lock);
        let (batch, accessed) = {
            let mut st = self.state();
            let batch: Vec<Arc<ObjectInner>> = st.pending.drain().map(|(_, v)| v).collect();
            let accessed: Vec<(i64, Access)> = st.accessed.drain().collect();
            (batch, accessed)
        };
        if batch.is_empty() && accessed.is_empty() {
            return Ok(());
        }
        let mut updates = Vec::with_capacity(batch.len() + accessed.len());
        for (id, a) in &accessed {
            let at = match a.inner.upgrade() {
                Some(i) => {
                    i.access_dirty.store(false, Ordering::SeqCst);
                    i.last_access.load(Ordering::SeqCst)
                }
                None => a.at,
            };
            updates.push(ObjectUpdate {
                id: *id,
                file: a.file.clone(),
                present: None,
                last_access: Some(at),
            });
        }
        let mut snaps: Vec<(Arc<ObjectInner>, Vec<u8>, u64)> = Vec::new();
        for inner in &batch {
            let mut b = lock(&inner.bits);
            if b.detached || !b.changed {
                continue;
            }
            b.changed = false;
            snaps.push((inner.clone(), b.present.to_bytes(), b.present_bytes));
        }
        // Data first: every block in a snapshot was written before its bit was set.
        let mut failed: Vec<Arc<ObjectInner>> = Vec::new();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        snaps.retain(|(inner, _, _)| match inner.file.sync_data() {
            Ok(()) => {
                if !inner.dir_synced.load(Ordering::SeqCst) {
                    dirs.insert(inner.file_path.parent().expect("in a dir").to_path_buf());
                }
                true
            }
            Err(e) => {
                tracing::error!(file = %inner.file_path.display(), error = %e,
                    "fsync of a cache object failed; dropping the object");
                failed.push(inner.clone());
                false
            }
        });
        // Then the names of new files, so that no committed row can name a file a power cut
        // takes back (or replaces with an older one of the same name).
        for d in &dirs {
            if let Err(e) = sync_dir(d) {
                tracing::error!(error = %e, "fsync of a cache directory failed; dropping its new objects");
                snaps.retain(|(inner, _, _)| {
                    let here = inner.file_path.parent() == Some(d.as_path())
                        && !inner.dir_synced.load(Ordering::SeqCst);
                    if here {
                        failed.push(inner.clone());
                    }
                    !here
                });
            }
        }
        for (inner, bits, bytes) in &snaps {
            inner.dir_synced.store(true, Ordering::SeqCst);
            updates.push(ObjectUpdate {
                id: inner.id,
                file: inner.file_name.clone(),
                present: Some((bits.clone(), *bytes)),
                last_access: None,
            });
        }
        if let Err(e) = self.meta.obj_commit(&updates) {
            // Nothing was recorded: queue it all again for the next flush.
            let mut st = self.state();
            for (inner, _, _) in &snaps {
                lock(&inner.bits).changed = true;
                st.pending.insert(inner.id, inner.clone());
            }
            for (id, a) in accessed {
                st.accessed.entry(id).or_insert(a);
            }
            return Err(e.into());
        }
        if !failed.is_empty() {
            let mut st = self.state();
            let mut rows = Vec::new();
            for inner in &failed {
                let key = st
                    .live
                    .iter()
                    .find(|(_, w)| w.as_ptr() == Arc::as_ptr(inner))
                    .map(|(k, _)| k.clone());
                match key {
                    Some((area, path)) => rows.push(Self::brief_of(inner, area, &path)),
                    None => {
                        inner.detach();
                    }
                }
            }
            self.forget(&mut st, &rows, false)?;
        }
        Ok(())
    }
}
