//! Folders and files kept on this device ("pins"): pinning and unpinning, *free up space*, and
//! the keeper that makes each pinned tree complete and keeps it so.
//!
//! - A pin is a mark in the block cache's index (`BlockCache::replace_pin_marks`): a pinned path
//!   covers everything below it, and an *exception* (unpinning a file or folder inside a pinned
//!   folder) takes its part out again; the nearest mark decides. Pinned bytes are never
//!   evicted and do not count against `--cache-size`.
//! - Pinning first lists the whole tree (so it also lists offline later) and refuses a pin
//!   whose missing bytes would leave the local disk with less than
//!   [`crate::cache::disk_floor`] free.
//! - The keeper (one task per mount) walks every pinned tree and downloads what is missing,
//!   [`PARALLEL`] files at once, through the download engine (by cache object and version, the
//!   same single-flight as reads). It runs when a pin is set, when the server is back after an
//!   outage, and every [`RECHECK`]: listings older than the mount's TTL are asked again then,
//!   so files that appeared under a pinned folder are pinned too (they are below the mark)
//!   and a file changed on the server is downloaded again.
//! - Offline, a round stops at the first download that cannot reach the server and says so in
//!   `status`; it starts again when the server is back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use super::{
    off_thread, status, version_key, FileKind, Ino, Vfs, VfsError, VfsResult, PIN_XATTR, ROOT_INO,
};
use crate::meta::AreaId;
use crate::remote::RemotePath;

/// How often every pinned tree is checked against the server.
pub const RECHECK: Duration = Duration::from_secs(180);
/// Files of pinned trees downloaded at once (each large file is fetched in parallel pieces by
/// the download engine too).
const PARALLEL: usize = 4;
/// Directories listed at once while walking a pinned tree.
const LIST_PARALLEL: usize = 8;

/// What pinning or unpinning did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinAnswer {
    /// The path, as shown below the mount point.
    pub path: String,
    /// Files kept by the pin (0 for an unpin).
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Bytes still to download.
    pub missing_bytes: u64,
    /// For `free`: bytes dropped from the cache.
    pub freed_bytes: u64,
    /// For `free`: cached files left because they are open.
    pub busy_files: u64,
    /// The keeper's round that covers this request: the pin is complete for it once its
    /// status shows this round (or a later one) complete.
    #[serde(default)]
    pub round: u64,
}

/// One file of a pinned tree.
struct PinnedFile {
    ino: Ino,
    size: u64,
}

/// The keeper's state, shared with its task.
#[derive(Default)]
pub(super) struct Pins {
    /// Wakes the keeper (a pin was set, the server is back).
    wake: Arc<Notify>,
    /// Progress of each pin, by its mark.
    progress: Mutex<BTreeMap<(AreaId, RemotePath), status::PinStatus>>,
    /// Set at unmount: the keeper ends.
    stopped: std::sync::atomic::AtomicBool,
    /// Rounds of the keeper started so far (each numbered by this count when it starts).
    rounds: std::sync::atomic::AtomicU64,
}

impl Pins {
    /// Ends the keeper (at unmount): its round stops at the next file.
    pub(super) fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn progress(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(AreaId, RemotePath), status::PinStatus>> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Vfs {
    /// Starts the keeper of pinned trees (once, at construction, inside a tokio runtime).
    pub(super) fn start_pin_keeper(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wake = self.pins.wake.clone();
        let w = wake.clone();
        self.health.on_back_online(move || w.notify_one());
        let me = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                {
                    let Some(vfs) = me.upgrade() else { return };
                    if vfs.pins.is_stopped() {
                        return;
                    }
                    vfs.keep_pins().await;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                }
            }
        });
    }

    /// A listing from the server showed files new or changed in `dir`: when a pin covers
    /// it, the keeper runs (a round that lists it again finds it fresh and fetches the files).
    pub(super) fn pins_changed_below(&self, area: AreaId, dir: &RemotePath) {
        if self.cache.is_pinned(area, dir) {
            self.pins.wake.notify_one();
        }
    }

    /// The inode at `rel` (a path below the mount point, `/`-separated; empty for the root),
    /// listing each folder on the way as needed.
    pub async fn resolve(&self, rel: &str) -> VfsResult<Ino> {
        let mut ino = ROOT_INO;
        for name in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if name == ".." {
                return Err(VfsError::Invalid(
                    "a path below the mount point, without `..`",
                ));
            }
            self.ensure_listed(ino).await?;
            ino = self.tree().child(ino, name).ok_or(VfsError::NotFound)?;
        }
        Ok(ino)
    }

    /// The inode of `path` in `area`, listing each folder on the way as needed.
    async fn ino_of(&self, area: AreaId, path: &RemotePath) -> VfsResult<Ino> {
        let mut ino = self
            .area_roots
            .iter()
            .find(|r| r.0 == area)
            .map(|r| r.1)
            .ok_or(VfsError::AreaNotMounted(area))?;
        for name in path.as_str().split('/').filter(|c| !c.is_empty()) {
            self.ensure_listed(ino).await?;
            ino = self.tree().child(ino, name).ok_or(VfsError::NotFound)?;
        }
        Ok(ino)
    }

    /// Setting an extended attribute: only [`PIN_XATTR`] can be set, to `1` (pin) or `0`
    /// (unpin); every other name is not supported.
    pub async fn setxattr(&self, ino: Ino, name: &str, value: &[u8]) -> VfsResult<()> {
        if name != PIN_XATTR {
            return Err(VfsError::NotSupported(
                "extended attributes (only user.cloudmount.pin can be set)",
            ));
        }
        match value.trim_ascii() {
            b"1" => self.pin(ino).await.map(drop),
            b"0" => self.unpin(ino).await.map(drop),
            _ => Err(VfsError::Invalid(
                "user.cloudmount.pin takes 1 (pin) or 0 (unpin)",
            )),
        }
    }

    fn pin_target(&self, ino: Ino) -> VfsResult<(AreaId, RemotePath)> {
        self.tree().path(ino).ok_or(VfsError::NotPermitted(
            "the mount's root holds only its areas: pin a folder inside one",
        ))
    }

    /// Keeps `ino` (a file or a folder, with everything below it) on this device: downloads it
    /// in the background, never evicts it. Lists the tree first and refuses, with ENOSPC, a
    /// pin whose missing bytes would leave the cache's disk with less than
    /// [`crate::cache::disk_floor`].
    pub async fn pin(&self, ino: Ino) -> VfsResult<PinAnswer> {
        let (area, path) = self.pin_target(ino)?;
        let files = self.pinned_files(area, ino, true).await?;
        let (bytes, missing) = self.missing_bytes(&files).await?;
        let answer = PinAnswer {
            path: self.display_path(area, &path),
            files: files.len() as u64,
            bytes,
            missing_bytes: missing,
            ..Default::default()
        };
        if missing > 0 {
            let dir = self.staging_dir.clone();
            let (free, total) = off_thread(move || crate::cache::disk_room(&dir)).await?;
            let floor = crate::cache::disk_floor(total);
            if free < missing.saturating_add(floor) {
                return Err(VfsError::NoSpace(format!(
                    "pinning {} needs {} more on this computer's disk, which has {} free \
                     (cloudmount keeps {} free)",
                    answer.path,
                    crate::size::format_size(missing),
                    crate::size::format_size(free),
                    crate::size::format_size(floor)
                )));
            }
        }
        let cache = self.cache.clone();
        let p = path.clone();
        // A pin covers everything below it: earlier marks there (pins and exceptions) go.
        off_thread(move || cache.replace_pin_marks(area, &p, true)).await?;
        // The pin that keeps it (itself, or a folder above it that was pinned already): its
        // progress is what `pin --wait` follows.
        let mut answer = answer;
        if let Some(cover) = self.covering_pin(area, &path) {
            answer.path = self.display_path(area, &cover);
        }
        // The round after the one running now (if any) lists the tree after this request.
        answer.round = self.pins.rounds.load(std::sync::atomic::Ordering::SeqCst) + 1;
        tracing::info!(path = %answer.path, files = answer.files, missing, "pinned");
        self.pins.wake.notify_one();
        Ok(answer)
    }

    /// Stops keeping `ino` on this device: its marks and those below go; inside a pinned
    /// folder it becomes an exception. What is cached stays until the budget needs the room.
    pub async fn unpin(&self, ino: Ino) -> VfsResult<PinAnswer> {
        let (area, path) = self.pin_target(ino)?;
        let cache = self.cache.clone();
        let p = path.clone();
        off_thread(move || cache.replace_pin_marks(area, &p, false)).await?;
        self.pins
            .progress()
            .retain(|(a, p), _| *a != area || !p.starts_with(&path));
        let answer = PinAnswer {
            path: self.display_path(area, &path),
            ..Default::default()
        };
        tracing::info!(path = %answer.path, "unpinned");
        Ok(answer)
    }

    /// *Free up space*: unpins `ino` and drops its cached copies (and those below it). Files
    /// with changes not uploaded yet are never touched (they are not cache objects but staged
    /// files), nor are cached files open now (counted in `busy_files`).
    pub async fn free(&self, ino: Ino) -> VfsResult<PinAnswer> {
        let mut answer = self.unpin(ino).await?;
        let (area, path) = self.pin_target(ino)?;
        // Local copies of files written here that are uploaded and idle go into the cache
        // first (as they would later), so they are freed with the rest; the others stay.
        let staged: Vec<Ino> = {
            let t = self.tree();
            t.staged_nodes()
                .into_iter()
                .filter(|(i, _)| t.is_within(*i, ino))
                .map(|(i, _)| i)
                .collect()
        };
        for i in staged {
            self.unstage_if_idle(i).await;
        }
        let cache = self.cache.clone();
        let (freed, busy) = off_thread(move || cache.free_path(area, &path)).await?;
        answer.freed_bytes = freed;
        answer.busy_files = busy;
        tracing::info!(path = %answer.path, freed, busy, "freed");
        Ok(answer)
    }

    /// The pin state of a path that is not staged: `Some(true)` pinned and complete,
    /// `Some(false)` pinned and not yet complete, `None` not pinned. For a folder: whether
    /// the pin covering it finished its last round.
    pub(super) fn pin_state_of_dir(&self, area: AreaId, path: &RemotePath) -> Option<bool> {
        if !self.cache.is_pinned(area, path) {
            return None;
        }
        let progress = self.pins.progress();
        let covering = progress
            .iter()
            .filter(|((a, p), _)| *a == area && path.starts_with(p))
            .map(|(_, s)| s)
            .next_back();
        Some(covering.is_some_and(|s| s.state == status::PinPhase::Complete))
    }

    /// The outermost pin mark at or above `path` that pins it (the one whose keeper round
    /// fetches it), if any.
    fn covering_pin(&self, area: AreaId, path: &RemotePath) -> Option<RemotePath> {
        self.cache
            .pins()
            .into_iter()
            .filter(|(a, p)| *a == area && path.starts_with(p))
            .map(|(_, p)| p)
            .min_by_key(|p| p.as_str().len())
    }

    /// The pins and their progress, for `status`. A pin inside another pinned folder shows
    /// the progress of the outer one (whose round keeps it), under its own path.
    pub(super) fn pin_report(&self) -> Vec<status::PinStatus> {
        let pins = self.cache.pins();
        let progress = self.pins.progress();
        pins.iter()
            .map(|(area, path)| {
                let cover = self
                    .covering_pin(*area, path)
                    .unwrap_or_else(|| path.clone());
                let mut s =
                    progress
                        .get(&(*area, cover))
                        .cloned()
                        .unwrap_or_else(|| status::PinStatus {
                            state: status::PinPhase::Listing,
                            ..Default::default()
                        });
                s.path = self.display_path(*area, path);
                s
            })
            .collect()
    }

    /// One round of the keeper: every pin made complete (or stopped by an outage).
    async fn keep_pins(&self) {
        let round = self
            .pins
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let pins = self.cache.pins();
        // The keeper's progress of pins removed meanwhile goes.
        self.pins
            .progress()
            .retain(|k, _| pins.iter().any(|(a, p)| (*a, p) == (k.0, &k.1)));
        for (area, path) in pins {
            // A pin inside another is kept by the outer one's walk.
            if let Some(parent) = path.parent() {
                if !path.is_root() && self.cache.is_pinned(area, &parent) {
                    self.pins.progress().remove(&(area, path.clone()));
                    continue;
                }
            }
            if self.pins.is_stopped() {
                return;
            }
            if let Err(e) = self.keep_pin(area, &path, round).await {
                let offline = self.health.is_offline();
                let reason = match &e {
                    VfsError::Remote(r) if offline => {
                        format!(
                            "waiting for the server: {}",
                            crate::health::why_unreachable(r)
                        )
                    }
                    VfsError::NotFound => "not on the server (any more)".to_string(),
                    e => e.to_string(),
                };
                tracing::info!(pin = %path, reason, "pin not complete");
                let mut progress = self.pins.progress();
                let s = progress
                    .entry((area, path.clone()))
                    .or_insert_with(|| status::PinStatus {
                        path: self.display_path(area, &path),
                        ..Default::default()
                    });
                s.state = if offline {
                    status::PinPhase::Waiting
                } else {
                    status::PinPhase::Error
                };
                s.error = Some(reason);
                if offline {
                    return;
                }
            }
        }
    }

    /// Makes one pinned tree complete.
    async fn keep_pin(&self, area: AreaId, path: &RemotePath, round: u64) -> VfsResult<()> {
        let key = (area, path.clone());
        let shown = self.display_path(area, path);
        let set = |f: &dyn Fn(&mut status::PinStatus)| {
            let mut progress = self.pins.progress();
            let s = progress
                .entry(key.clone())
                .or_insert_with(|| status::PinStatus {
                    path: shown.clone(),
                    ..Default::default()
                });
            f(s);
        };
        set(&|s| {
            s.state = status::PinPhase::Listing;
            s.error = None;
        });
        let root = self.ino_of(area, path).await?;
        let files = self.pinned_files(area, root, false).await?;
        let (bytes, missing) = self.missing_bytes(&files).await?;
        let count = files.len() as u64;
        set(&|s| {
            s.state = status::PinPhase::Downloading;
            s.files = count;
            s.bytes = bytes;
            s.bytes_done = bytes - missing;
            s.files_done = 0;
        });
        let results: Vec<VfsResult<(u64, u64)>> = futures_util::stream::iter(files)
            .map(|f| async move {
                if self.pins.is_stopped() {
                    return Ok((f.size, 0));
                }
                let fetched = self.keep_file(f.ino).await?;
                Ok((f.size, fetched))
            })
            .buffer_unordered(PARALLEL)
            .inspect(|r| {
                if let Ok((_, fetched)) = r {
                    let fetched = *fetched;
                    set(&|s| {
                        s.files_done += 1;
                        s.bytes_done = (s.bytes_done + fetched).min(s.bytes);
                    });
                }
            })
            .collect()
            .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(_) => {}
                // Deleted or changed on the server meanwhile: the next round sees it.
                Err(VfsError::NotFound | VfsError::Changed(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        set(&|s| {
            s.state = status::PinPhase::Complete;
            s.files_done = s.files;
            s.bytes_done = s.bytes;
            s.checked_at = Some(crate::localtime::unix_now());
            s.round = round;
        });
        Ok(())
    }

    /// Downloads what is missing of the current version of `ino`; returns the bytes fetched.
    async fn keep_file(&self, ino: Ino) -> VfsResult<u64> {
        let Some((obj, _guard)) = self.object_for(ino).await? else {
            // Staged here: the local copy is the file.
            return Ok(0);
        };
        let size = obj.size();
        let before = obj.present_bytes();
        self.ensure_blocks(ino, &obj, 0, size).await?;
        Ok(size - before)
    }

    /// The files of the tree at `root` that pins keep (all of them when `all`, for a pin being
    /// set: exceptions below are about to go), listing every folder of it.
    async fn pinned_files(&self, area: AreaId, root: Ino, all: bool) -> VfsResult<Vec<PinnedFile>> {
        let mut files = Vec::new();
        let mut level = vec![root];
        while !level.is_empty() {
            let dirs: Vec<Ino> = {
                let t = self.tree();
                let mut dirs = Vec::new();
                for ino in level.drain(..) {
                    let Some(n) = t.get(ino) else { continue };
                    let Some((a, p)) = t.path(ino) else { continue };
                    if a != area || !(all || self.cache.is_pinned(a, &p)) {
                        // An exception: nothing below is kept (a pin below has its own walk).
                        continue;
                    }
                    match n.kind {
                        FileKind::File => files.push(PinnedFile { ino, size: n.size }),
                        FileKind::Dir => dirs.push(ino),
                    }
                }
                dirs
            };
            let listed: Vec<(Ino, VfsResult<()>)> = futures_util::stream::iter(dirs)
                .map(|d| async move { (d, self.ensure_listed(d).await) })
                .buffer_unordered(LIST_PARALLEL)
                .collect()
                .await;
            let t = self.tree();
            for (d, r) in listed {
                r?;
                if let Some(dir) = t.get(d).and_then(|n| n.dir.as_ref()) {
                    level.extend(dir.children.values().copied());
                }
            }
        }
        Ok(files)
    }

    /// The total size of `files` and the bytes of it not in the cache.
    async fn missing_bytes(&self, files: &[PinnedFile]) -> VfsResult<(u64, u64)> {
        let keys: Vec<(u64, Option<crate::cache::ObjectKey>)> = {
            let t = self.tree();
            files
                .iter()
                .map(|f| {
                    let staged = t
                        .get(f.ino)
                        .is_some_and(|n| n.staged.is_some() || n.pending_create);
                    let key = if staged {
                        None
                    } else {
                        version_key(&t, f.ino).ok().map(|k| k.0)
                    };
                    (f.size, key)
                })
                .collect()
        };
        let cache = self.cache.clone();
        off_thread(move || {
            let (mut total, mut missing) = (0u64, 0u64);
            for (size, key) in keys {
                total += size;
                let Some(key) = key else { continue };
                missing += match cache.cached_object(&key)? {
                    Some(o) => o.size() - o.present_bytes(),
                    None => size,
                };
            }
            Ok::<_, crate::cache::CacheError>((total, missing))
        })
        .await
    }
}
