//! What the mount tells about itself: `statfs` (the server's quota, trusted for
//! [`QUOTA_TTL`]), the state of each file in the `user.cloudmount.state` extended attribute
//! (and of all the files of a folder at once, for the control socket's `states`), and the
//! snapshot shown by `cloudmount status` (its types are in `status.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    off_thread, status, version_of, FileKind, FsStats, Ino, Vfs, VfsError, VfsResult, ROOT_INO,
    STATE_XATTR,
};
use crate::cache::{BlockCache, CacheObject, ObjectState};
use crate::meta::AreaId;
use crate::remote::{ETag, RemotePath};

/// How long statfs trusts the last quota answer.
const QUOTA_TTL: Duration = Duration::from_secs(30);

/// The state of a file, as shown in `user.cloudmount.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// On the server only (and every directory).
    Online,
    /// Some of the current version is in the cache.
    Partial,
    /// The whole current version is in the cache (or a staged copy with nothing to upload).
    Cached,
    /// Changed here, waiting for its upload.
    Dirty,
    /// Being uploaded now.
    Uploading,
    /// Changed here, and its last upload failed (it is retried).
    Error,
    /// A conflict copy: our version, kept beside the server's.
    Conflict,
    /// Kept on this device (pinned), and all of it is here.
    Pinned,
    /// Kept on this device (pinned), still being downloaded.
    Pinning,
}

impl FileState {
    /// The word shown in the extended attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Online => "online",
            FileState::Partial => "partial",
            FileState::Cached => "cached",
            FileState::Dirty => "dirty",
            FileState::Uploading => "uploading",
            FileState::Error => "error",
            FileState::Conflict => "conflict",
            FileState::Pinned => "pinned",
            FileState::Pinning => "pinning",
        }
    }
}

impl std::fmt::Display for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Folders whose files with a cache object were read from the cache's index, and when (the
/// cache's generation): the state of their other files is then known from memory, until an
/// object is created or renamed anywhere. A file manager asks the state of every file of the
/// folder it shows; without this, each would read the index on a thread of its own.
#[derive(Default)]
pub(super) struct CachedNames(Mutex<Folders>);

type Names = HashSet<String>;

#[derive(Default)]
struct Folders {
    /// By folder: the cache's generation when read, and the names of its files that have a
    /// cache object (`None`: too many objects below it to keep; not read again until the
    /// generation moves).
    dirs: HashMap<(AreaId, RemotePath), (u64, Option<Names>)>,
    /// Names held in `dirs`, all folders together.
    names: usize,
}

/// Folders remembered at most (then forgotten all at once).
const CACHED_NAMES_DIRS: usize = 4096;
/// Names remembered at most, all folders together (then forgotten all at once).
const CACHED_NAMES_TOTAL: usize = 65536;
/// Objects below a folder above which its names are not remembered (the index is read for
/// each file then, after one look per generation that finds it so).
const CACHED_NAMES_MAX: usize = 4096;

impl CachedNames {
    /// Whether `path` is known from memory to have no cache object (the state lock busy, or
    /// its folder not read since the last change: not known).
    fn has_none(&self, cache: &BlockCache, area: AreaId, path: &RemotePath) -> bool {
        let Some(dir) = path.parent() else {
            return false;
        };
        let Some(now) = cache.generation_now() else {
            return false;
        };
        let Ok(folders) = self.0.try_lock() else {
            return false;
        };
        folders.dirs.get(&(area, dir)).is_some_and(|(at, names)| {
            *at == now && names.as_ref().is_some_and(|n| !n.contains(path.name()))
        })
    }

    /// Reads which files of `path`'s folder have a cache object and remembers it; returns
    /// whether `path` may have one (blocks: it reads the index).
    fn learn(&self, cache: &BlockCache, area: AreaId, path: &RemotePath) -> VfsResult<bool> {
        let Some(dir) = path.parent() else {
            return Ok(true);
        };
        let key = (area, dir);
        // Read already at this generation (the file has an object, or the folder has too
        // many): not read again.
        if let Some(now) = cache.generation_now() {
            let f = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, names)) = f.dirs.get(&key) {
                if *at == now {
                    return Ok(names.as_ref().is_none_or(|n| n.contains(path.name())));
                }
            }
        }
        let (at, names) = cache.objects_in(area, &key.1, CACHED_NAMES_MAX)?;
        let may = names.as_ref().is_none_or(|n| n.contains(path.name()));
        let count = names.as_ref().map_or(0, HashSet::len);
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, Some(old))) = f.dirs.remove(&key) {
            f.names -= old.len();
        }
        if f.dirs.len() >= CACHED_NAMES_DIRS || f.names + count > CACHED_NAMES_TOTAL {
            f.dirs.clear();
            f.names = 0;
        }
        f.names += count;
        f.dirs.insert(key, (at, names));
        Ok(may)
    }
}

/// Objects below a folder that [`Vfs::states_in`] reads from the index at most to know which
/// of its files have one (above, it looks each file up).
const STATES_INDEX_MAX: usize = 65536;

/// What memory tells of a file's state (see `Vfs::state_in_memory`).
enum Known {
    State(FileState),
    /// Whether the cache holds this version is in the cache's index, on disk.
    AskCache {
        area: AreaId,
        path: RemotePath,
        etag: ETag,
        pinned: bool,
    },
}

/// The state of a file of version `etag` whose cache object (any version) is `existing`;
/// `pinned`: a pin keeps it (then it is `pinned` once complete, `pinning` before).
fn cache_state(existing: Option<&CacheObject>, etag: &ETag, pinned: bool) -> FileState {
    match existing {
        Some(o) if o.key().etag == *etag => match o.state() {
            ObjectState::Cached if pinned => FileState::Pinned,
            ObjectState::Cached => FileState::Cached,
            _ if pinned => FileState::Pinning,
            ObjectState::Partial => FileState::Partial,
            ObjectState::Online => FileState::Online,
        },
        _ if pinned => FileState::Pinning,
        _ => FileState::Online,
    }
}

impl Vfs {
    pub async fn statfs(&self) -> VfsResult<FsStats> {
        let cached = *self.quota.lock().unwrap_or_else(|e| e.into_inner());
        let quota = match cached {
            Some((at, q)) if at.elapsed() < QUOTA_TTL => q,
            _ => match self.areas[0].remote.quota().await {
                Ok(q) => {
                    *self.quota.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now(), q));
                    q
                }
                Err(e) => {
                    tracing::debug!(error = %e, "quota unavailable");
                    cached.map(|(_, q)| q).unwrap_or_default()
                }
            },
        };
        const BS: u64 = 4096;
        let (total, mut avail) = match (quota.used, quota.available) {
            (Some(u), Some(a)) => (u + a, a),
            (None, Some(a)) => (a, a),
            // Unknown: a large, honest-looking number rather than "full".
            _ => (1 << 50, 1 << 50),
        };
        if self.area_ids().any(|a| self.queue.paused(a).is_some()) {
            // The server refused an upload for lack of space: say so until one succeeds.
            avail = 0;
        }
        Ok(FsStats {
            block_size: BS as u32,
            blocks: total / BS,
            blocks_free: avail / BS,
            blocks_avail: avail / BS,
            // WebDAV counts no inodes: all of them free, so `df -i` shows none used (not half).
            files: 1 << 32,
            files_free: 1 << 32,
            name_max: crate::remote::path::NAME_MAX as u32,
        })
    }

    /// The state of a file, as shown in `user.cloudmount.state`.
    pub async fn state_of(&self, ino: Ino) -> VfsResult<FileState> {
        match self.state_in_memory(ino)? {
            Known::State(s) => Ok(s),
            Known::AskCache {
                area,
                path,
                etag,
                pinned,
            } => {
                let cache = self.cache.clone();
                let existing = off_thread(move || cache.existing(area, &path)).await?;
                Ok(cache_state(existing.as_deref(), &etag, pinned))
            }
        }
    }

    /// The state of a file when it is known from memory (the tree, the upload queue, the
    /// cache's loaded objects): answered at once, for the FUSE thread. `None`: the cache's
    /// index must be read ([`Vfs::state_blocking`] or [`Vfs::state_of`]).
    pub fn state_now(&self, ino: Ino) -> Option<VfsResult<FileState>> {
        match self.state_in_memory(ino) {
            Ok(Known::State(s)) => Some(Ok(s)),
            Ok(Known::AskCache { .. }) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// [`Vfs::state_of`] on a thread that may block (it reads the cache's index).
    pub fn state_blocking(&self, ino: Ino) -> VfsResult<FileState> {
        match self.state_in_memory(ino)? {
            Known::State(s) => Ok(s),
            Known::AskCache {
                area,
                path,
                etag,
                pinned,
            } => {
                // The folder's other files are likely asked next (`ls`, a file manager).
                if !self.cached_names.learn(&self.cache, area, &path)? {
                    return Ok(cache_state(None, &etag, pinned));
                }
                let existing = self.cache.existing(area, &path)?;
                Ok(cache_state(existing.as_deref(), &etag, pinned))
            }
        }
    }

    /// The state of a folder and of each of its entries, by name: what `user.cloudmount.state`
    /// answers for each, in one go (a file manager showing the folder). `rel` is the folder
    /// below the mount point, `/`-separated. Never asks the server: the folder and the ones on
    /// the way must be known already (NotFound otherwise), and its entries are those known now
    /// (none for a folder never listed). Blocks: it may read the cache's index, once for the
    /// folder, then once per file that has a cache object.
    pub fn states_in(&self, rel: &str) -> VfsResult<(FileState, Vec<(String, FileState)>)> {
        let (dir, kids) = {
            let t = self.tree();
            let mut ino = ROOT_INO;
            for name in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
                if name == ".." {
                    return Err(VfsError::Invalid(
                        "a path below the mount point, without `..`",
                    ));
                }
                ino = t.child(ino, name).ok_or(VfsError::NotFound)?;
            }
            let d = t.get(ino).ok_or(VfsError::NotFound)?;
            let d = d.dir.as_ref().ok_or(VfsError::NotDir)?;
            let kids: Vec<(String, Ino)> = d
                .children
                .iter()
                .map(|(n, &i)| (n.to_string(), i))
                .collect();
            (ino, kids)
        };
        let own = self.state_blocking(dir)?;
        let mut out = Vec::with_capacity(kids.len());
        let mut ask = Vec::new();
        for (name, ino) in kids {
            match self.state_in_memory(ino) {
                Ok(Known::State(s)) => out.push((name, s)),
                Ok(Known::AskCache {
                    area,
                    path,
                    etag,
                    pinned,
                }) => ask.push((name, area, path, etag, pinned)),
                // Gone meanwhile: left out.
                Err(VfsError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some((_, area, path, _, _)) = ask.first() {
            // Which files of the folder have a cache object: one read of the index; only those
            // are looked up one by one.
            let with_objects = match path.parent() {
                Some(folder) => self.cache.objects_in(*area, &folder, STATES_INDEX_MAX)?.1,
                None => None,
            };
            for (name, area, path, etag, pinned) in ask {
                let existing = match &with_objects {
                    Some(names) if !names.contains(path.name()) => None,
                    _ => self.cache.existing(area, &path)?,
                };
                out.push((name, cache_state(existing.as_deref(), &etag, pinned)));
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok((own, out))
    }

    /// What memory tells of a file's state, or what to ask the cache's index.
    fn state_in_memory(&self, ino: Ino) -> VfsResult<Known> {
        let (staged, key) = {
            let t = self.tree();
            let n = t.get(ino).ok_or(VfsError::NotFound)?;
            if n.kind == FileKind::Dir {
                let path = t.path(ino);
                // The pins' progress is not taken while holding `tree` (see the lock order).
                drop(t);
                return Ok(Known::State(
                    match path.and_then(|(a, p)| self.pin_state_of_dir(a, &p)) {
                        Some(true) => FileState::Pinned,
                        Some(false) => FileState::Pinning,
                        None => FileState::Online,
                    },
                ));
            }
            let key = t.path(ino).map(|(a, p)| (a, p, version_of(n)));
            (n.staged.clone(), key)
        };
        if let Some((area, path, _)) = &key {
            if self.queue.is_conflict_copy(*area, path) {
                return Ok(Known::State(FileState::Conflict));
            }
        }
        if let Some(st) = staged {
            let s = st.snapshot();
            return Ok(Known::State(if s.uploading {
                FileState::Uploading
            } else if s.error.is_some() && s.dirty() {
                FileState::Error
            } else if s.dirty() {
                FileState::Dirty
            } else if key
                .as_ref()
                .is_some_and(|(a, p, _)| self.cache.is_pinned(*a, p))
            {
                // A local copy with nothing to upload: all of it is here.
                FileState::Pinned
            } else {
                FileState::Cached
            }));
        }
        let Some((area, path, etag)) = key else {
            return Ok(Known::State(FileState::Online));
        };
        let pinned = self.cache.is_pinned(area, &path);
        if let Some(o) = self.cache.loaded(area, &path) {
            return Ok(Known::State(cache_state(Some(&o), &etag, pinned)));
        }
        if self.cached_names.has_none(&self.cache, area, &path) {
            return Ok(Known::State(cache_state(None, &etag, pinned)));
        }
        Ok(Known::AskCache {
            area,
            path,
            etag,
            pinned,
        })
    }

    pub async fn getxattr(&self, ino: Ino, name: &str) -> VfsResult<Vec<u8>> {
        if name != STATE_XATTR {
            return Err(VfsError::NoAttr);
        }
        Ok(self.state_of(ino).await?.as_str().as_bytes().to_vec())
    }

    pub async fn listxattr(&self, ino: Ino) -> VfsResult<Vec<String>> {
        self.xattr_names(ino)
    }

    /// The extended attributes of `ino` (answered from memory).
    pub fn xattr_names(&self, ino: Ino) -> VfsResult<Vec<String>> {
        self.attr(ino)?;
        Ok(vec![STATE_XATTR.to_string()])
    }

    /// A snapshot for `cloudmount status`.
    pub fn status(&self) -> status::VfsStatus {
        let cached = *self.quota.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none_or(|(at, _)| at.elapsed() >= QUOTA_TTL) {
            // Asked in the background: this answer has the last known quota, the next the new.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let me = self.me.clone();
                rt.spawn(async move {
                    if let Some(me) = me.upgrade() {
                        let _ = me.statfs().await;
                    }
                });
            }
        }
        // `null` unless the server said something: never `{"used":null,"available":null}`.
        let quota = cached
            .map(|(_, q)| status::QuotaStatus {
                used: q.used,
                available: q.available,
            })
            .filter(|q| q.used.is_some() || q.available.is_some());
        let usage = self.cache.usage();
        let (mut queue, mut errors, conflicts) = self.queue.report(&|a, p| self.display_path(a, p));
        let (ns_ops, notices) = self.ns_report();
        queue.namespace_ops = ns_ops;
        let health = self.health.report();
        for (a, p, reason) in self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            errors.push(status::FileProblem {
                path: self.display_path(*a, p),
                reason: reason.clone(),
                attempts: 0,
            });
        }
        status::VfsStatus {
            connection: health.connection,
            last_error: health.last_error,
            cache: status::CacheStatus {
                used_bytes: usage.used_bytes,
                budget_bytes: usage.budget_bytes,
                dirty_bytes: queue.bytes,
                pinned_bytes: self.cache.pinned_bytes(),
            },
            queue,
            errors,
            conflicts,
            quota,
            kept_aside: self.kept_aside(),
            other_areas: self.other_areas(),
            pins: self.pin_report(),
            // The daemon's, not the filesystem's: filled in by the daemon.
            bandwidth: Default::default(),
            notices,
        }
    }

    /// Queued files of areas this mount does not show.
    fn other_areas(&self) -> Vec<status::OtherArea> {
        let mounted: Vec<AreaId> = self.area_ids().collect();
        match self.meta.waiting_elsewhere(&mounted) {
            Ok(w) => w
                .into_iter()
                .map(|w| status::OtherArea {
                    url: w.url,
                    name: w.name,
                    files: w.files,
                    bytes: w.bytes,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the files waiting for other areas");
                Vec::new()
            }
        }
    }

    /// The never-closed files of earlier runs in `<cache>/recovered/`, if any.
    pub(super) fn kept_aside(&self) -> Option<status::KeptAside> {
        let dir = self.staging_dir.with_file_name("recovered");
        let files = std::fs::read_dir(&dir).ok()?.flatten().count() as u64;
        (files > 0).then(|| status::KeptAside {
            dir: dir.display().to_string(),
            files,
        })
    }

    /// `path` of `area` as seen below the mount point.
    pub(super) fn display_path(&self, area: AreaId, path: &RemotePath) -> String {
        if self.area_roots.first().map(|r| r.1) == Some(ROOT_INO) {
            return path.as_str().to_string();
        }
        let name = self.area(area).map_or("?", |a| a.name.as_str());
        if path.is_root() {
            name.to_string()
        } else {
            format!("{name}/{}", path.as_str())
        }
    }
}
