//! [`CloudFs`]: the `DavFileSystem` the embedded server serves — dav-server's `LocalFs` plus
//! atomic uploads, quota accounting and hidden temp files.
//!
//! - **Atomic PUT.** A file opened for writing is a *temp file* in the target's directory, named
//!   `.cloudmount-put-<random>.tmp`. dav-server's PUT handler writes the body into it and calls
//!   `flush()` once the whole body has arrived; only then is the temp file renamed over the target
//!   (or hard-linked, for `If-None-Match: *`, so an existing file is never replaced). A PUT that
//!   fails for any reason (quota, client gone, short body) drops the file, which deletes the temp
//!   file: the target keeps its old content and readers never see a half-written file. Partial
//!   updates (`Content-Range`, SabreDAV `PATCH`) start from a copy of the current content.
//! - **Quota.** See [`super::quota`]. Growth is reserved before it is written: up front from
//!   `Content-Length` (dav-server passes it as `OpenOptions::size`, so an oversized PUT fails in
//!   `open`, before any byte is read), and chunk by chunk for bodies of unknown length. Failing to
//!   reserve gives `FsError::InsufficientStorage`, which dav-server answers with 507.
//! - **Hidden names.** Any path with a segment starting with `.cloudmount-put-` (upload temp
//!   files) or `.cloudmount-props-` (dead properties, see [`super::props`]) is invisible: left
//!   out of directory listings, 404 for reads, 403 for anything that would create one.
//! - **Confinement.** Symlinks are never followed: every operation checks its paths first (see
//!   [`super::confine`]), and listings leave symlinks out.
//!
//! Every other operation is `LocalFs`'s, so ETags (`<inode>-<size>-<mtime µs>` in hex, as Apache)
//! are the same in GET, HEAD, PUT responses and PROPFIND. Each version written through the server
//! (PUT, COPY) gets a strictly increasing mtime, so it also gets its own ETag even when inode
//! numbers are reused within one clock tick (see [`stamp_unique_mtime`]).

mod put_file;

use put_file::{PutFile, PutState};

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use dav_server::localfs::LocalFs;
use futures_util::{FutureExt, StreamExt};

use super::confine;
use super::props::{self, PROPS_PREFIX};
use super::quota::Quota;

/// Name prefix of upload temp files; names starting with it are never served.
pub(crate) const HIDDEN_PREFIX: &str = ".cloudmount-put-";

/// True when a file name (one path segment) is reserved for upload temp files.
pub(crate) fn is_hidden_name(name: &[u8]) -> bool {
    name.starts_with(HIDDEN_PREFIX.as_bytes())
}

/// True when a file name is never served: an upload temp file or a property file.
fn is_reserved_name(name: &[u8]) -> bool {
    is_hidden_name(name) || name.starts_with(PROPS_PREFIX.as_bytes())
}

/// True when any segment of the (decoded) request path is a reserved name.
fn names_hidden(path: &DavPath) -> bool {
    path.as_bytes().split(|b| *b == b'/').any(is_reserved_name)
}

/// Mode of files the server creates (before the umask), as `cp` would.
#[cfg(unix)]
const FILE_MODE: u32 = 0o644;

/// The served filesystem. Cheap to clone (everything is shared).
#[derive(Clone)]
pub(crate) struct CloudFs {
    inner: LocalFs,
    root: Arc<PathBuf>,
    quota: Option<Arc<Quota>>,
}

impl CloudFs {
    pub fn new(root: PathBuf, quota: Option<Arc<Quota>>) -> CloudFs {
        // public = true: new files get 0644/0755 minus the umask, like files made by `cp`.
        let inner = *LocalFs::new(&root, true, false, false);
        CloudFs {
            inner,
            root: Arc::new(root),
            quota,
        }
    }

    fn fspath(&self, path: &DavPath) -> PathBuf {
        self.root.join(path.as_rel_ospath())
    }

    /// The property file of `path`.
    fn props_file(&self, path: &DavPath) -> FsResult<PathBuf> {
        props::props_file(&self.root, path.as_rel_ospath()).ok_or(FsError::Forbidden)
    }

    /// After a MOVE or COPY: the destination's properties become the source's.
    async fn props_follow(&self, from: &DavPath, to: &DavPath, copy: bool) {
        let (Ok(src), Ok(dst)) = (self.props_file(from), self.props_file(to)) else {
            return;
        };
        let done = blocking(move || props::follow(&src, &dst, copy).map_err(fs_err)).await;
        if let Err(e) = done {
            tracing::warn!(from = %from, to = %to, error = ?e, "properties not moved along");
        }
    }

    /// After a DELETE: the resource's properties go too.
    async fn props_remove(&self, path: &DavPath) {
        let Ok(file) = self.props_file(path) else {
            return;
        };
        if let Err(e) = blocking(move || props::remove(&file).map_err(fs_err)).await {
            tracing::warn!(path = %path, error = ?e, "properties not removed");
        }
    }

    /// Refuses (403) a path that names or passes through a symlink (see [`confine`]).
    async fn confine(&self, path: &DavPath) -> FsResult<()> {
        let (root, rel) = (self.root.clone(), path.as_rel_ospath().to_path_buf());
        blocking(move || {
            confine::check(&root, &rel).map_err(|e| {
                tracing::info!(path = %rel.display(), reason = %e, "request refused: outside the served directory");
                FsError::Forbidden
            })
        })
        .await
    }

    /// Wraps directory metadata so that its `len()` is the quota usage (see [`QuotaDirMeta`]).
    fn wrap_meta(&self, meta: Box<dyn DavMetaData>) -> Box<dyn DavMetaData> {
        match &self.quota {
            Some(q) if meta.is_dir() => Box::new(QuotaDirMeta {
                inner: meta,
                used: q.used(),
            }),
            _ => meta,
        }
    }
}

/// Runs blocking filesystem code off the async threads.
async fn blocking<F, R>(f: F) -> FsResult<R>
where
    F: FnOnce() -> FsResult<R> + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(FsError::GeneralFailure))
}

fn fs_err(e: io::Error) -> FsError {
    FsError::from(&e)
}

/// Creates a new, uniquely named temp file in `dir`.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, FILE_MODE);
    loop {
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
        let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{HIDDEN_PREFIX}{hex}.tmp"));
        match opts.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Size a path contributes to the quota: its length if it is a regular file (not followed if a
/// symlink), else 0.
fn counted_len(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

/// Last modification time handed out by [`stamp_unique_mtime`], in µs since the epoch.
static LAST_MTIME_US: AtomicU64 = AtomicU64::new(0);

/// Sets the file's mtime to "now", made strictly greater than any mtime this process set before.
///
/// LocalFs's ETag is `<inode>-<size>-<mtime µs>`. Kernel file timestamps advance in clock ticks
/// (often milliseconds), and a rename-based PUT frees the old inode for reuse, so two uploads of
/// the same size in one tick could otherwise get the same ETag for different content. With a
/// unique mtime per written version, every version written through this server has its own ETag.
fn stamp_unique_mtime(file: &std::fs::File) -> io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let prev = LAST_MTIME_US
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    let stamp = now.max(prev + 1);
    file.set_modified(UNIX_EPOCH + Duration::from_micros(stamp))
}

/// Puts `tmp` at `target` only if `target` does not exist (for `If-None-Match: *`).
///
/// A hard link fails atomically with EEXIST, unlike rename(2), which replaces. On filesystems
/// without hard links, falls back to check-then-rename (racy, but only against a concurrent
/// creation of the same name).
fn link_no_replace(tmp: &Path, target: &Path) -> FsResult<()> {
    match std::fs::hard_link(tmp, target) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(FsError::Exists),
        Err(e) => {
            tracing::debug!(error = %e, "hard link failed, falling back to check-then-rename");
            if std::fs::symlink_metadata(target).is_ok() {
                return Err(FsError::Exists);
            }
            std::fs::rename(tmp, target).map_err(fs_err)
        }
    }
}

impl DavFileSystem for CloudFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let writing = options.write || options.append;
            if names_hidden(path) {
                return Err(if writing {
                    FsError::Forbidden
                } else {
                    FsError::NotFound
                });
            }
            self.confine(path).await?;
            if !writing {
                return self.inner.open(path, options).await;
            }
            let target = self.fspath(path);
            let quota = self.quota.clone();
            let opened = {
                let options = options.clone();
                blocking(move || open_for_write(target, &options, quota.as_deref())).await?
            };
            let file = PutFile {
                file: Some(tokio::fs::File::from_std(opened.file)),
                tmp: opened.tmp,
                target: opened.target,
                davpath: path.clone(),
                inner: self.inner.clone(),
                pos: 0,
                len: opened.len,
                base_len: opened.base_len,
                reserved: opened.reserved,
                append: options.append,
                expect_len: if options.truncate { options.size } else { None },
                create_new: options.create_new,
                quota: self.quota.clone(),
                state: PutState::Writing,
            };
            tracing::trace!(target = %file.target.display(), tmp = %file.tmp.display(), "opened for writing");
            Ok(Box::new(file) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            if names_hidden(path) {
                return Err(FsError::NotFound);
            }
            self.confine(path).await?;
            let quota = self.quota.clone();
            // Entries are always read with lstat data (whatever was asked), so that symlinks
            // are seen as such and dropped; for every entry kept, lstat and stat data agree.
            let stream = self.inner.read_dir(path, ReadDirMeta::DataSymlink).await?;
            let filtered = stream.filter_map(move |item| {
                let quota = quota.clone();
                async move {
                    match item {
                        Ok(entry) if is_reserved_name(&entry.name()) => None,
                        // Symlinks are never served, so never listed (see `confine`).
                        Ok(entry) if entry.is_symlink().await.unwrap_or(true) => None,
                        Ok(entry) => Some(Ok(match quota {
                            Some(q) => Box::new(QuotaDirEntry {
                                inner: entry,
                                quota: q,
                            }) as Box<dyn DavDirEntry>,
                            None => entry,
                        })),
                        Err(e) => Some(Err(e)),
                    }
                }
            });
            Ok(Box::pin(filtered) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            if names_hidden(path) {
                return Err(FsError::NotFound);
            }
            self.confine(path).await?;
            let meta = self.inner.metadata(path).await?;
            Ok(self.wrap_meta(meta))
        }
        .boxed()
    }

    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            if names_hidden(path) {
                return Err(FsError::NotFound);
            }
            self.confine(path).await?;
            let meta = self.inner.symlink_metadata(path).await?;
            Ok(self.wrap_meta(meta))
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            if names_hidden(path) {
                return Err(FsError::Forbidden);
            }
            self.confine(path).await?;
            self.inner.create_dir(path).await
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            if names_hidden(path) {
                return Err(FsError::NotFound);
            }
            self.confine(path).await?;
            let dir = self.fspath(path);
            blocking(move || match std::fs::remove_dir(&dir) {
                // Symlinks and property files are not listed, so a recursive DELETE did not
                // remove them: unlink them (never what a symlink points to) and try again.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                    let links = confine::remove_symlinks_in(&dir).map_err(fs_err)?;
                    if links + props::remove_all_in(&dir).map_err(fs_err)? == 0 {
                        return Err(fs_err(e));
                    }
                    std::fs::remove_dir(&dir).map_err(fs_err)
                }
                r => r.map_err(fs_err),
            })
            .await?;
            self.props_remove(path).await;
            Ok(())
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            if names_hidden(path) {
                return Err(FsError::NotFound);
            }
            self.confine(path).await?;
            match self.quota.clone() {
                None => self.inner.remove_file(path).await?,
                Some(quota) => {
                    let target = self.fspath(path);
                    blocking(move || {
                        let mut st = quota.lock();
                        let old = counted_len(&target);
                        std::fs::remove_file(&target).map_err(fs_err)?;
                        st.used = st.used.saturating_sub(old);
                        Ok(())
                    })
                    .await?
                }
            }
            self.props_remove(path).await;
            Ok(())
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            if names_hidden(from) {
                return Err(FsError::NotFound);
            }
            if names_hidden(to) {
                return Err(FsError::Forbidden);
            }
            self.confine(from).await?;
            self.confine(to).await?;
            self.rename_counted(from, to).await?;
            self.props_follow(from, to, false).await;
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            if names_hidden(from) {
                return Err(FsError::NotFound);
            }
            if names_hidden(to) {
                return Err(FsError::Forbidden);
            }
            self.confine(from).await?;
            self.confine(to).await?;
            let (src, dst) = (self.fspath(from), self.fspath(to));
            let quota = self.quota.clone();
            blocking(move || copy_atomic(&src, &dst, quota.as_deref())).await?;
            self.props_follow(from, to, true).await;
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(http::StatusCode, DavProp)>> {
        async move {
            // The resource must exist (and be reachable); metadata() checks both.
            self.metadata(path).await?;
            let file = self.props_file(path)?;
            let answer = patch
                .iter()
                .map(|(_, p)| (http::StatusCode::OK, without_value(p)))
                .collect();
            blocking(move || {
                props::patch(&file, &patch, create_temp).map_err(|e| {
                    tracing::warn!(file = %file.display(), error = %e, "PROPPATCH not stored");
                    fs_err(e)
                })
            })
            .await?;
            Ok(answer)
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            self.metadata(path).await?;
            let file = self.props_file(path)?;
            let all = blocking(move || props::load(&file).map_err(fs_err)).await?;
            Ok(if do_content {
                all
            } else {
                all.iter().map(without_value).collect()
            })
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            self.metadata(path).await?;
            let file = self.props_file(path)?;
            let all = blocking(move || props::load(&file).map_err(fs_err)).await?;
            all.into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        let q = self.quota.as_ref().map(|q| (q.used(), Some(q.limit())));
        std::future::ready(q.ok_or(FsError::NotImplemented)).boxed()
    }
}

/// A property without its value (for the status list of a PROPPATCH, and a names-only listing).
fn without_value(p: &DavProp) -> DavProp {
    DavProp {
        xml: None,
        ..p.clone()
    }
}

impl CloudFs {
    /// The rename of a MOVE, with the quota kept right when it replaces a file.
    async fn rename_counted(&self, from: &DavPath, to: &DavPath) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return self.inner.rename(from, to).await;
        };
        let (src, dst) = (self.fspath(from), self.fspath(to));
        blocking(move || {
            let mut st = quota.lock();
            let replaced = counted_len(&dst);
            match std::fs::rename(&src, &dst) {
                Ok(()) => {}
                // As LocalFs: WebDAV allows a MOVE of a directory over a file.
                Err(e) if e.kind() == io::ErrorKind::NotADirectory && src.is_dir() => {
                    let _ = std::fs::remove_file(&dst);
                    std::fs::rename(&src, &dst).map_err(fs_err)?;
                }
                Err(e) => return Err(fs_err(e)),
            }
            st.used = st.used.saturating_sub(replaced);
            Ok(())
        })
        .await
    }
}

/// What [`open_for_write`] prepared.
struct OpenedTemp {
    file: std::fs::File,
    tmp: PathBuf,
    target: PathBuf,
    /// Current length of the temp file (the copied content for a partial update).
    len: u64,
    /// Length of the target when opened (what a commit replaces).
    base_len: u64,
    /// Quota bytes reserved up front.
    reserved: u64,
}

/// Blocking part of `open` for writing: checks the target, reserves quota from the announced
/// size and creates the temp file (with the current content when not truncating).
fn open_for_write(
    target: PathBuf,
    options: &OpenOptions,
    quota: Option<&Quota>,
) -> FsResult<OpenedTemp> {
    let existing = match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => return Err(FsError::Forbidden),
        Ok(_) if options.create_new => return Err(FsError::Exists),
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !options.create && !options.create_new {
                return Err(FsError::NotFound);
            }
            None
        }
        Err(e) => return Err(fs_err(e)),
    };
    let base_len = existing.as_ref().map_or(0, |m| m.len());
    let dir = target.parent().ok_or(FsError::Forbidden)?;

    // Reserve the growth announced by Content-Length before touching the disk.
    let mut reserved = 0;
    if let (Some(q), true, Some(size)) = (quota, options.truncate, options.size) {
        reserved = size.saturating_sub(base_len);
        if !q.try_reserve(reserved) {
            tracing::info!(target = %target.display(), size, used = q.used(), limit = q.limit(),
                "upload refused: it would exceed the quota");
            return Err(FsError::InsufficientStorage);
        }
    }
    let release = |e: FsError| {
        if let Some(q) = quota {
            q.release(reserved);
        }
        e
    };

    let (tmp, mut file) = create_temp(dir).map_err(|e| release(fs_err(e)))?;
    let mut len = 0;
    let prepared = (|| -> io::Result<()> {
        if let Some(m) = &existing {
            // Keep the mode of the file being replaced.
            std::fs::set_permissions(&tmp, m.permissions())?;
            if !options.truncate {
                let mut src = std::fs::File::open(&target)?;
                len = io::copy(&mut src, &mut file)?;
                use std::io::Seek;
                file.seek(SeekFrom::Start(0))?;
            }
        } else if !options.truncate {
            // LOCK on a missing resource creates it empty (and never flushes); a partial update of
            // a missing file starts from empty. Either way an empty file is not a partial one.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target)?;
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&tmp);
        return Err(release(fs_err(e)));
    }
    Ok(OpenedTemp {
        file,
        tmp,
        target,
        len,
        base_len,
        reserved,
    })
}

/// COPY of one file: into a temp file beside the destination, then renamed over it, with the
/// quota checked before copying.
fn copy_atomic(src: &Path, dst: &Path, quota: Option<&Quota>) -> FsResult<()> {
    let size = std::fs::metadata(src).map_err(fs_err)?.len();
    let dir = dst.parent().ok_or(FsError::Forbidden)?;
    let reserved = match quota {
        Some(q) => {
            let need = size.saturating_sub(counted_len(dst));
            if !q.try_reserve(need) {
                return Err(FsError::InsufficientStorage);
            }
            need
        }
        None => 0,
    };
    let result = (|| -> FsResult<()> {
        let (tmp, file) = create_temp(dir).map_err(fs_err)?;
        drop(file);
        let copied = match std::fs::copy(src, &tmp).and_then(|n| {
            stamp_unique_mtime(&std::fs::OpenOptions::new().write(true).open(&tmp)?)?;
            Ok(n)
        }) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(fs_err(e));
            }
        };
        let guard = quota.map(|q| q.lock());
        let replaced = counted_len(dst);
        if let Err(e) = std::fs::rename(&tmp, dst) {
            let _ = std::fs::remove_file(&tmp);
            return Err(fs_err(e));
        }
        if let Some(mut st) = guard {
            st.used = st.used.saturating_sub(replaced).saturating_add(copied);
        }
        Ok(())
    })();
    if let Some(q) = quota {
        q.release(reserved);
    }
    result
}

/// Metadata of a temp file not yet committed (same ETag formula as LocalFs).
#[derive(Debug, Clone)]
struct StdMeta(std::fs::Metadata);

impl DavMetaData for StdMeta {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn modified(&self) -> FsResult<SystemTime> {
        self.0.modified().map_err(fs_err)
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn is_file(&self) -> bool {
        self.0.is_file()
    }
    #[cfg(unix)]
    fn etag(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let t = self.0.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        let t = t.as_secs() * 1_000_000 + u64::from(t.subsec_micros());
        Some(format!("{:x}-{:x}-{:x}", self.0.ino(), self.0.len(), t))
    }
}

/// Directory metadata whose `len()` is the quota usage of the whole tree.
///
/// dav-server answers `quota-used-bytes` on any collection but the root with the collection's
/// `len()` (the size of the directory inode, e.g. 4096), and `quota-available-bytes` as the limit
/// minus that. A client that mounts a subfolder would see nonsense, so every collection reports
/// the account's usage instead, as Apache and most servers do. A directory's `len()` is used for
/// nothing else (`getcontentlength` is not reported for collections, and the ETag of a
/// directory does not include it).
#[derive(Debug, Clone)]
struct QuotaDirMeta {
    inner: Box<dyn DavMetaData>,
    used: u64,
}

impl DavMetaData for QuotaDirMeta {
    fn len(&self) -> u64 {
        self.used
    }
    fn modified(&self) -> FsResult<SystemTime> {
        self.inner.modified()
    }
    fn is_dir(&self) -> bool {
        self.inner.is_dir()
    }
    fn etag(&self) -> Option<String> {
        self.inner.etag()
    }
    fn is_file(&self) -> bool {
        self.inner.is_file()
    }
    fn is_symlink(&self) -> bool {
        self.inner.is_symlink()
    }
    fn accessed(&self) -> FsResult<SystemTime> {
        self.inner.accessed()
    }
    fn created(&self) -> FsResult<SystemTime> {
        self.inner.created()
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        self.inner.status_changed()
    }
    fn executable(&self) -> FsResult<bool> {
        self.inner.executable()
    }
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// A directory entry whose directory metadata is wrapped in [`QuotaDirMeta`].
struct QuotaDirEntry {
    inner: Box<dyn DavDirEntry>,
    quota: Arc<Quota>,
}

impl DavDirEntry for QuotaDirEntry {
    fn name(&self) -> Vec<u8> {
        self.inner.name()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let meta = self.inner.metadata().await?;
            Ok(if meta.is_dir() {
                Box::new(QuotaDirMeta {
                    inner: meta,
                    used: self.quota.used(),
                }) as Box<dyn DavMetaData>
            } else {
                meta
            })
        }
        .boxed()
    }

    fn is_dir(&self) -> FsFuture<'_, bool> {
        self.inner.is_dir()
    }

    fn is_file(&self) -> FsFuture<'_, bool> {
        self.inner.is_file()
    }

    fn is_symlink(&self) -> FsFuture<'_, bool> {
        self.inner.is_symlink()
    }
}
