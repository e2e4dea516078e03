//! Reading ahead of a walk of the tree (`find`, `du`, `cp -r`, `grep -r`, a file manager):
//! `opendir` lists the next few sibling directories in the background (`list_siblings_ahead`),
//! and small files opened one after the other in name order fetch the next ones into the cache
//! (`files_ahead`). Both are bounded for the whole mount and skip very large directories.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{FileKind, Ino, Vfs, VfsResult, SMALL_FILE};

/// Sibling directories listed ahead when a directory is read (see `list_siblings_ahead`).
const SIBLINGS_AHEAD: usize = 8;
/// Small files fetched ahead of a walk at once, for the whole mount (see `files_ahead`).
const FILES_AHEAD: usize = 4;
/// No listing ahead when listings are trusted for less than this.
const MIN_TTL_AHEAD: Duration = Duration::from_secs(1);
/// Listings fetched ahead at once, for the whole mount.
const LISTINGS_AHEAD: usize = 4;
/// Directories with more entries than this get nothing read ahead among them (each open
/// scans the entries: a walk of n entries costs n² steps).
const SIBLINGS_SCAN_MAX: usize = 4096;

/// The `k` entries of `entries` first in name order, sorted; only those are copied.
fn first_by_name<'a>(
    entries: impl Iterator<Item = (&'a Box<str>, &'a Ino)>,
    k: usize,
) -> Vec<(&'a str, Ino)> {
    let mut v: Vec<(&str, Ino)> = entries.map(|(n, i)| (&**n, *i)).collect();
    if v.len() > k {
        v.select_nth_unstable(k);
        v.truncate(k);
    }
    v.sort_unstable();
    v
}

/// The state of reading ahead of walks, for the whole mount.
pub(super) struct WalkAhead {
    /// Permits for listings fetched ahead ([`LISTINGS_AHEAD`]).
    listings: Arc<Semaphore>,
    /// Permits for small files fetched ahead ([`FILES_AHEAD`]).
    files: Arc<Semaphore>,
    /// Files being fetched ahead now (taken after `tree` when both are held).
    fetching: Mutex<HashSet<Ino>>,
}

impl Default for WalkAhead {
    fn default() -> Self {
        WalkAhead {
            listings: Arc::new(Semaphore::new(LISTINGS_AHEAD)),
            files: Arc::new(Semaphore::new(FILES_AHEAD)),
            fetching: Mutex::default(),
        }
    }
}

impl Vfs {
    /// A directory is being read, maybe by a walk of the tree (`find`, `du`, a file manager):
    /// starts listing, in the background, the next few of its sibling directories (in name
    /// order after it, the order a walk takes) whose listing is not fresh. At most
    /// [`SIBLINGS_AHEAD`] per call and [`LISTINGS_AHEAD`] at once for the mount (more are
    /// simply not started); nothing under a parent of more than [`SIBLINGS_SCAN_MAX`] entries.
    pub(super) fn list_siblings_ahead(&self, dir: Ino) {
        // Offline, or listings trusted too briefly to be of use when the walk gets there.
        if self.health.is_offline() || self.opts.dir_ttl < MIN_TTL_AHEAD {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let next: Vec<Ino> = {
            let t = self.tree();
            let Some(n) = t.get(dir).filter(|n| !n.is_area_root && n.area.is_some()) else {
                return;
            };
            let Some(siblings) = t.get(n.parent).and_then(|p| p.dir.as_ref()) else {
                return;
            };
            if siblings.children.len() > SIBLINGS_SCAN_MAX {
                return;
            }
            let later = siblings
                .children
                .iter()
                .filter(|(name, _)| **name > n.name)
                .filter(|(_, ino)| {
                    t.get(**ino)
                        .is_some_and(|c| c.kind == FileKind::Dir && !self.is_fresh(c))
                });
            first_by_name(later, SIBLINGS_AHEAD)
                .into_iter()
                .map(|(_, ino)| ino)
                .collect()
        };
        for sibling in next {
            let Ok(permit) = self.walk.listings.clone().try_acquire_owned() else {
                return;
            };
            let me = me.clone();
            tokio::spawn(async move {
                if let Err(e) = me.ensure_listed(sibling).await {
                    tracing::debug!(error = %e, "listing ahead failed");
                }
                drop(permit);
            });
        }
    }

    /// Small files are being opened one after the other in name order in a directory (a walk:
    /// `cp -r`, `tar`, `grep -r`, `cat dir/*`): fetches the next few small files of the
    /// directory (in name order after the one opened now) into the cache in the background,
    /// each once. At most [`FILES_AHEAD`] at once for the mount (more are not started now but
    /// on a later open); nothing in directories of more than [`SIBLINGS_SCAN_MAX`] entries.
    pub(super) fn files_ahead(&self, ino: Ino) {
        if self.health.is_offline() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let mut t = self.tree();
        let Some((parent, name)) = t.get(ino).map(|n| (n.parent, n.name.clone())) else {
            return;
        };
        let Some(dir) = t.get_mut(parent).and_then(|p| p.dir.as_mut()) else {
            return;
        };
        let walking = dir.last_open.as_deref().is_some_and(|l| *l < *name);
        dir.last_open = Some(name.clone());
        if !walking || dir.children.len() > SIBLINGS_SCAN_MAX {
            return;
        }
        // Borrow the directory immutably while looking at its children.
        let Some(dir) = t.get(parent).and_then(|p| p.dir.as_ref()) else {
            return;
        };
        let from = match dir.ahead_to.as_deref() {
            Some(a) if *a > *name => a.to_string(),
            _ => name.to_string(),
        };
        let later = dir
            .children
            .iter()
            .filter(|(n, _)| ***n > *from)
            .filter(|(_, i)| {
                t.get(**i).is_some_and(|c| {
                    c.kind == FileKind::File
                        && c.size > 0
                        && c.size <= SMALL_FILE
                        && !c.has_local_state()
                })
            });
        let next: Vec<(Box<str>, Ino)> = first_by_name(later, FILES_AHEAD)
            .into_iter()
            .map(|(n, i)| (n.into(), i))
            .collect();
        let mut last = None;
        for (child_name, child) in next {
            let Ok(permit) = self.walk.files.clone().try_acquire_owned() else {
                break;
            };
            if !self.lock_fetching_ahead().insert(child) {
                continue;
            }
            let me = me.clone();
            tokio::spawn(async move {
                if let Err(e) = me.fetch_whole(child).await {
                    tracing::debug!(error = %e, "fetching ahead failed");
                }
                me.lock_fetching_ahead().remove(&child);
                drop(permit);
            });
            last = Some(child_name);
        }
        if let Some(d) = t.get_mut(parent).and_then(|p| p.dir.as_mut()) {
            if last.is_some() {
                d.ahead_to = last;
            }
        }
    }

    pub(super) fn lock_fetching_ahead(&self) -> std::sync::MutexGuard<'_, HashSet<Ino>> {
        self.walk.fetching.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Downloads a whole file into the cache (when not there yet), one GET.
    async fn fetch_whole(&self, ino: Ino) -> VfsResult<()> {
        let Some((obj, _guard)) = self.object_for(ino).await? else {
            return Ok(());
        };
        self.ensure_blocks(ino, &obj, 0, obj.size()).await
    }
}
