//! Carrying out a plan: conditional uploads, atomic downloads, deletes to the trash, conflict
//! copies. Each step that completes is recorded in the journal at once, so a sync cut at any
//! moment resumes where it stopped without false conflicts.
//!
//! What each step guarantees:
//! - **Upload**: the content goes to a temporary name beside the target
//!   (`.cloudmount-upload-sync-….part`) and is MOVEd over it, so a PUT cut midway never leaves
//!   a partial file under the real name. A new file is moved with `Overwrite: F`; a changed one
//!   only after checking — before the upload and again right before the MOVE — that the server
//!   still has the version the change was based on (WebDAV's MOVE takes no `If-Match`: a
//!   change landing between that last check and the MOVE, milliseconds, is the one window).
//!   A refusal either way is a conflict: both versions are kept.
//! - **Download**: into `.cloudmount-tmp-…` in the target's directory, checked for length,
//!   flushed to disk, then renamed over the target — after checking the local file did not
//!   change meanwhile (a reader sees the old or the new content, never a mix).
//! - **Deletes** on the local side go to the trash; on the server, a file is deleted only if it
//!   is still the version the plan saw.
//! - **Conflicts**: the contents are compared first (equal is no conflict); else the server's
//!   version keeps the name and ours becomes `name (conflicted copy HOST DATE).ext`, uploaded
//!   too. Upload-only folders move the server's version aside instead, on the server.
//!
//! Errors: a server that does not answer (or refuses the credentials) stops the whole run —
//! nothing is read as deleted. Anything else is a problem of that one path, recorded with its
//! reason and retried at the next sync; the rest goes on. A full server (507) stops the
//! uploads of the run; downloads go on.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use sha2::{Digest, Sha256};

use super::decide::{Action, Expect};
use super::folder::FolderId;
use super::journal::{ConflictRecord, Journal, JournalError};
use super::local;
use super::plan::{Inputs, Plan, Step};
use super::remote_scan::{etag_of, meta_of};
use super::state::{Base, Kind, LocalMeta, RemoteMeta};
use super::trash::Trash;
use crate::remote::{version, ByteRange, PutBody, Remote, RemoteError, RemotePath};
use crate::vfs::conflict;

/// How many transfers run at once.
const PARALLEL_TRANSFERS: usize = 6;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The server did not answer, or refused us: nothing more can be done now.
    #[error("{0}")]
    Server(#[source] RemoteError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What went wrong with one path (recorded as a problem; the run goes on).
#[derive(Debug)]
enum StepError {
    Stop(ApplyError),
    Problem(String),
    /// The server is out of space: no more uploads this run.
    Full(String),
}

impl From<JournalError> for StepError {
    fn from(e: JournalError) -> Self {
        StepError::Stop(ApplyError::Journal(e))
    }
}

impl From<RemoteError> for StepError {
    fn from(e: RemoteError) -> Self {
        match e {
            e @ (RemoteError::Transient { .. } | RemoteError::Auth { .. }) => {
                StepError::Stop(ApplyError::Server(e))
            }
            e @ RemoteError::InsufficientStorage { .. } => StepError::Full(e.to_string()),
            e => StepError::Problem(e.to_string()),
        }
    }
}

impl From<io::Error> for StepError {
    fn from(e: io::Error) -> Self {
        StepError::Problem(format!("local: {e}"))
    }
}

type StepResult<T> = Result<T, StepError>;

/// Progress of a run, read by `sync list` while it goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

impl Progress {
    pub fn reset(&self) {
        for a in [
            &self.files_total,
            &self.files_done,
            &self.bytes_total,
            &self.bytes_done,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// Everything a run needs.
pub struct Context<'a> {
    pub remote: &'a dyn Remote,
    pub remote_root: RemotePath,
    pub local_root: PathBuf,
    pub journal: &'a Mutex<Journal>,
    pub folder: FolderId,
    pub trash: &'a Trash,
    /// This computer's name, for conflict copies.
    pub device: String,
    pub progress: &'a Progress,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Steps carried out.
    pub done: usize,
    /// Paths that could not be synced, with the reason.
    pub problems: Vec<(String, String)>,
    /// Conflicts kept as two versions.
    pub conflicts: usize,
    /// The server said it is full: uploads stopped.
    pub full: Option<String>,
    /// Something was placed that the next pass must look at (a conflict copy to upload, a
    /// directory whose content was not planned).
    pub again: bool,
    /// Files were uploaded whose server version is not known yet (see [`adopt_uploaded`]).
    pub uploaded: bool,
}

struct Shared {
    full: Mutex<Option<String>>,
    again: AtomicBool,
    uploaded: AtomicBool,
    conflicts: AtomicU64,
}

impl Context<'_> {
    fn local_path(&self, rel: &str) -> PathBuf {
        self.local_root.join(rel)
    }

    fn remote_path(&self, rel: &str) -> Result<RemotePath, RemoteError> {
        if self.remote_root.is_root() {
            RemotePath::new(rel)
        } else {
            RemotePath::new(&format!("{}/{rel}", self.remote_root.as_str()))
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_base(&self, rel: &str, base: &Base) -> Result<(), JournalError> {
        self.journal().put_base(&self.folder, rel, base)
    }
}

/// Carries out `plan`, made from `inputs`.
pub async fn apply(ctx: &Context<'_>, plan: &Plan, inputs: &Inputs) -> Result<Applied, ApplyError> {
    let shared = Shared {
        full: Mutex::new(None),
        again: AtomicBool::new(false),
        uploaded: AtomicBool::new(false),
        conflicts: AtomicU64::new(0),
    };
    let mut out = Applied::default();
    // Phases: moves and directory creations in order (parents first), then the transfers
    // several at once, then the deletes in order (children first).
    let mut first = Vec::new();
    let mut transfers = Vec::new();
    let mut last = Vec::new();
    for step in &plan.steps {
        match step {
            Step::MoveRemote { .. } => first.push(step),
            Step::Do { action, .. } => match action {
                Action::Nothing => {}
                Action::MkdirRemote | Action::MkdirLocal | Action::Record => first.push(step),
                Action::DeleteRemote | Action::TrashLocal | Action::Forget => last.push(step),
                Action::Upload { .. }
                | Action::Download { .. }
                | Action::Conflict
                | Action::KeepServerCopyThenUpload => transfers.push(step),
            },
        }
    }
    ctx.progress
        .files_total
        .fetch_add(transfers.len() as u64, Ordering::Relaxed);
    let bytes: u64 = transfers
        .iter()
        .map(|s| match s {
            Step::Do { path, action } => match action {
                Action::Download { .. } => inputs.remote.get(path).map_or(0, |m| m.size),
                _ => inputs.local.get(path).map_or(0, |m| m.size),
            },
            Step::MoveRemote { .. } => 0,
        })
        .sum();
    ctx.progress.bytes_total.fetch_add(bytes, Ordering::Relaxed);

    let record = |path: &str, r: StepResult<()>, out: &mut Applied| -> Result<(), ApplyError> {
        match r {
            Ok(()) => {
                out.done += 1;
                ctx.journal().clear_problem(&ctx.folder, path)?;
                Ok(())
            }
            Err(StepError::Stop(e)) => Err(e),
            Err(StepError::Problem(reason)) => {
                tracing::warn!(folder = %ctx.folder, path, %reason, "not synced");
                ctx.journal().set_problem(&ctx.folder, path, &reason)?;
                out.problems.push((path.to_string(), reason));
                Ok(())
            }
            Err(StepError::Full(reason)) => {
                ctx.journal().set_problem(&ctx.folder, path, &reason)?;
                out.problems.push((path.to_string(), reason.clone()));
                *shared.full.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                Ok(())
            }
        }
    };

    for step in first {
        let (path, r) = run_step(ctx, step, inputs, &shared).await;
        record(&path, r, &mut out)?;
    }
    let mut running = FuturesUnordered::new();
    let mut queue = transfers.into_iter();
    loop {
        while running.len() < PARALLEL_TRANSFERS {
            let Some(step) = queue.next() else { break };
            running.push(run_step(ctx, step, inputs, &shared));
        }
        let Some((path, r)) = running.next().await else {
            break;
        };
        ctx.progress.files_done.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = record(&path, r, &mut out) {
            // Let the transfers in flight finish (each records itself), then stop.
            while let Some((path, r)) = running.next().await {
                let _ = record(&path, r, &mut out);
            }
            return Err(e);
        }
    }
    for step in last {
        let (path, r) = run_step(ctx, step, inputs, &shared).await;
        record(&path, r, &mut out)?;
    }
    out.full = shared.full.lock().unwrap_or_else(|p| p.into_inner()).take();
    out.again = shared.again.load(Ordering::Relaxed);
    out.uploaded = shared.uploaded.load(Ordering::Relaxed);
    out.conflicts = shared.conflicts.load(Ordering::Relaxed) as usize;
    Ok(out)
}

async fn run_step(
    ctx: &Context<'_>,
    step: &Step,
    inputs: &Inputs,
    shared: &Shared,
) -> (String, StepResult<()>) {
    match step {
        Step::MoveRemote { from, to } => {
            (to.clone(), move_remote(ctx, from, to, inputs, shared).await)
        }
        Step::Do { path, action } => {
            let r = match action {
                Action::Nothing => Ok(()),
                Action::Record => record_both(ctx, path, inputs).await,
                Action::Forget => ctx
                    .journal()
                    .forget_tree(&ctx.folder, path)
                    .map_err(Into::into),
                Action::Upload { expect } => {
                    if uploads_stopped(shared) {
                        Err(StepError::Problem(
                            "waiting: the server is out of space".into(),
                        ))
                    } else {
                        upload(ctx, path, expect.clone(), shared).await
                    }
                }
                Action::MkdirRemote => mkdir_remote(ctx, path).await,
                Action::Download { trash_local } => {
                    download(ctx, path, inputs, *trash_local).await.map(|_| ())
                }
                Action::MkdirLocal => mkdir_local(ctx, path, inputs),
                Action::DeleteRemote => delete_remote(ctx, path, inputs).await,
                Action::TrashLocal => trash_local(ctx, path, inputs).await,
                Action::Conflict => conflict_both(ctx, path, inputs, shared).await,
                Action::KeepServerCopyThenUpload => {
                    keep_server_copy(ctx, path, inputs, shared).await
                }
            };
            (path.clone(), r)
        }
    }
}

fn uploads_stopped(shared: &Shared) -> bool {
    shared
        .full
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some()
}

/// The local file or directory now, with its hash for a file.
async fn local_now(ctx: &Context<'_>, rel: &str, hash: bool) -> StepResult<Option<LocalMeta>> {
    let root = ctx.local_root.clone();
    let rel = rel.to_string();
    let r = tokio::task::spawn_blocking(move || -> io::Result<Option<LocalMeta>> {
        let Some(mut m) = local::stat(&root, &rel)? else {
            return Ok(None);
        };
        if hash && m.kind == Kind::File {
            m.hash = Some(local::hash_file(&root.join(&rel))?);
        }
        Ok(Some(m))
    })
    .await
    .map_err(|e| StepError::Problem(format!("local: {e}")))?;
    Ok(r?)
}

fn same_file(a: &LocalMeta, b: &LocalMeta) -> bool {
    a.kind == b.kind && (a.kind == Kind::Dir || (a.size == b.size && a.mtime_ns == b.mtime_ns))
}

/// Records what both sides hold now as the base.
async fn record_both(ctx: &Context<'_>, rel: &str, inputs: &Inputs) -> StepResult<()> {
    let (Some(l), Some(r)) = (inputs.local.get(rel), inputs.remote.get(rel)) else {
        return Ok(());
    };
    let mut l = l.clone();
    if l.kind == Kind::File && l.hash.is_none() {
        match local_now(ctx, rel, true).await? {
            Some(now) if same_file(&now, &l) => l.hash = now.hash,
            // Changed since the scan: the next sync sees it.
            _ => return Ok(()),
        }
    }
    ctx.put_base(
        rel,
        &Base {
            local: l,
            remote: r.clone(),
        },
    )?;
    Ok(())
}

/// Creates `path` and its missing parents on the server.
async fn mkdir_p(remote: &dyn Remote, path: &RemotePath) -> Result<(), RemoteError> {
    let mut missing = Vec::new();
    let mut at = Some(path.clone());
    while let Some(p) = at {
        if p.is_root() {
            break;
        }
        match remote.mkdir(&p).await {
            Ok(()) => break,
            Err(RemoteError::AlreadyExists { .. }) => break,
            Err(RemoteError::MissingParent { .. }) | Err(RemoteError::NotFound { .. }) => {
                at = p.parent();
                missing.push(p);
            }
            Err(RemoteError::Status { status: 405, .. }) => break,
            Err(e) => return Err(e),
        }
    }
    while let Some(p) = missing.pop() {
        match remote.mkdir(&p).await {
            Ok(()) | Err(RemoteError::AlreadyExists { .. }) => {}
            Err(RemoteError::Status { status: 405, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes sure the server folder of a sync exists.
pub async fn ensure_remote_dir(remote: &dyn Remote, path: &RemotePath) -> Result<(), RemoteError> {
    mkdir_p(remote, path).await
}

async fn mkdir_remote(ctx: &Context<'_>, rel: &str) -> StepResult<()> {
    let rp = ctx.remote_path(rel)?;
    match ctx.remote.mkdir(&rp).await {
        Ok(()) => {}
        Err(RemoteError::AlreadyExists { .. }) | Err(RemoteError::Status { status: 405, .. }) => {
            let e = ctx.remote.stat(&rp).await?;
            if !e.is_dir() {
                return Err(StepError::Problem(
                    "a file of that name appeared on the server".into(),
                ));
            }
        }
        Err(RemoteError::MissingParent { .. }) => mkdir_p(ctx.remote, &rp).await?,
        Err(e) => return Err(e.into()),
    }
    let Some(l) = local_now(ctx, rel, false).await? else {
        return Ok(());
    };
    ctx.put_base(
        rel,
        &Base {
            local: l,
            remote: dir_meta(),
        },
    )?;
    Ok(())
}

fn dir_meta() -> RemoteMeta {
    RemoteMeta {
        kind: Kind::Dir,
        size: 0,
        etag: None,
        mtime: None,
    }
}

fn mkdir_local(ctx: &Context<'_>, rel: &str, inputs: &Inputs) -> StepResult<()> {
    let p = ctx.local_path(rel);
    std::fs::create_dir_all(&p)?;
    let Some(l) = local::stat(&ctx.local_root, rel)? else {
        return Ok(());
    };
    if l.kind != Kind::Dir {
        return Err(StepError::Problem(
            "a file of that name is in the way".into(),
        ));
    }
    let remote = inputs.remote.get(rel).cloned().unwrap_or_else(dir_meta);
    ctx.put_base(rel, &Base { local: l, remote })?;
    Ok(())
}

/// A name for a temporary upload of `rel`.
fn upload_temp(ctx: &Context<'_>, rel: &str) -> Result<RemotePath, RemoteError> {
    let rp = ctx.remote_path(rel)?;
    let name = format!("{}{}.part", upload_temp_prefix(&ctx.folder), random_hex());
    match rp.parent() {
        Some(p) => p.join(&name),
        None => RemotePath::new(&name),
    }
}

/// The start of the names of this folder's temporary uploads on the server: a temporary file
/// of this prefix found by a scan is left from a run cut short (no upload of the folder runs
/// during its scan) and is deleted. Other computers' have other prefixes.
pub fn upload_temp_prefix(folder: &FolderId) -> String {
    let id: String = folder.as_str().chars().take(12).collect();
    format!("{}sync-{id}-", crate::vfs::UPLOAD_TEMP_PREFIX)
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether the server's copy of `rp` is still `expected` (a stored version).
async fn still_version(
    remote: &dyn Remote,
    rp: &RemotePath,
    expected: &str,
) -> Result<Option<bool>, RemoteError> {
    let e = match remote.stat(rp).await {
        Ok(e) => e,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(
        version::check(etag_of(expected).as_ref(), &e) == version::Verdict::Same,
    ))
}

/// Sends the local file `rel` to the server, if the server holds `expect`. A refusal becomes
/// a conflict (both kept).
async fn upload(ctx: &Context<'_>, rel: &str, expect: Expect, shared: &Shared) -> StepResult<()> {
    let Some(l) = local_now(ctx, rel, true).await? else {
        // Gone since the scan: the next sync sees it.
        return Ok(());
    };
    if l.kind == Kind::Dir {
        return mkdir_remote(ctx, rel).await;
    }
    let rp = ctx.remote_path(rel)?;
    let mut overwrite = match &expect {
        Expect::Absent => false,
        Expect::Version(v) => match still_version(ctx.remote, &rp, v).await? {
            Some(true) => true,
            // Deleted on the server meanwhile: our change wins, as a new file.
            None => false,
            Some(false) => return conflict_on_upload(ctx, rel, shared).await,
        },
    };
    let temp = upload_temp(ctx, rel)?;
    let body = PutBody::File {
        path: ctx.local_path(rel),
        len: l.size,
    };
    // The temporary copy's version is of no use (the MOVE makes the real one): not asked for.
    let put = match ctx.remote.put_unversioned(&temp, body.clone()).await {
        Err(RemoteError::MissingParent { .. }) | Err(RemoteError::NotFound { .. }) => {
            if let Some(parent) = rp.parent() {
                mkdir_p(ctx.remote, &parent).await?;
            }
            ctx.remote.put_unversioned(&temp, body).await
        }
        r => r,
    };
    if let Err(e) = put {
        let _ = ctx.remote.delete(&temp).await;
        // The file went away or changed while it was read (a rename or delete here, or a
        // conflict copy this run made of a directory above it): the failure was reading it,
        // not the server (which a body error would otherwise stand for); the next pass sees
        // what is there now.
        match local_now(ctx, rel, false).await? {
            Some(now) if same_file(&now, &l) => {}
            _ => {
                shared.again.store(true, Ordering::Relaxed);
                return Ok(());
            }
        }
        return Err(e.into());
    }
    // The file changed while it was sent: throw the copy away; the next sync sends the new
    // content.
    match local_now(ctx, rel, false).await? {
        Some(now) if same_file(&now, &l) => {}
        _ => {
            let _ = ctx.remote.delete(&temp).await;
            shared.again.store(true, Ordering::Relaxed);
            return Ok(());
        }
    }
    // The server's copy may have changed while ours was sent (a large file takes a while):
    // checked again right before it is replaced.
    if let (true, Expect::Version(v)) = (overwrite, &expect) {
        match still_version(ctx.remote, &rp, v).await {
            Ok(Some(true)) => {}
            Ok(None) => overwrite = false,
            Ok(Some(false)) => {
                let _ = ctx.remote.delete(&temp).await;
                return conflict_on_upload(ctx, rel, shared).await;
            }
            Err(e) => {
                let _ = ctx.remote.delete(&temp).await;
                return Err(e.into());
            }
        }
    }
    match ctx.remote.rename(&temp, &rp, overwrite).await {
        Ok(()) => {}
        Err(RemoteError::AlreadyExists { .. }) | Err(RemoteError::PreconditionFailed { .. }) => {
            let _ = ctx.remote.delete(&temp).await;
            return conflict_on_upload(ctx, rel, shared).await;
        }
        Err(e) => {
            let _ = ctx.remote.delete(&temp).await;
            return Err(e.into());
        }
    }
    ctx.progress.bytes_done.fetch_add(l.size, Ordering::Relaxed);
    shared.uploaded.store(true, Ordering::Relaxed);
    // The server's version is learnt from the listing after the run ([`adopt_uploaded`]).
    ctx.put_base(
        rel,
        &Base {
            local: l.clone(),
            remote: RemoteMeta {
                kind: Kind::File,
                size: l.size,
                etag: None,
                mtime: None,
            },
        },
    )?;
    Ok(())
}

/// An upload found another version on the server: handled as a conflict of the current state.
async fn conflict_on_upload(ctx: &Context<'_>, rel: &str, shared: &Shared) -> StepResult<()> {
    let rp = ctx.remote_path(rel)?;
    let server = match ctx.remote.stat(&rp).await {
        Ok(e) => meta_of(&e),
        Err(e) if e.is_not_found() => {
            shared.again.store(true, Ordering::Relaxed);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(local) = local_now(ctx, rel, false).await? else {
        return Ok(());
    };
    let mut inputs = Inputs::default();
    inputs.local.insert(rel.to_string(), local);
    inputs.remote.insert(rel.to_string(), server);
    conflict_both(ctx, rel, &inputs, shared).await
}

/// Downloads `rel` into a temporary file in its directory; returns it with its hash.
async fn fetch_to_temp(
    ctx: &Context<'_>,
    rel: &str,
    server: &RemoteMeta,
) -> StepResult<(TempFile, [u8; 32])> {
    let rp = ctx.remote_path(rel)?;
    let target = ctx.local_path(rel);
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ctx.local_root.clone());
    std::fs::create_dir_all(&dir)?;
    let expect = server
        .etag
        .as_deref()
        .and_then(etag_of)
        .filter(|t| !t.is_stand_in());
    let resp = ctx
        .remote
        .read_range(&rp, ByteRange::whole(), expect.as_ref())
        .await?;
    let temp = TempFile::new(dir.join(format!("{}{}", super::exclude::TMP_PREFIX, random_hex())))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp.0)?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        len += chunk.len() as u64;
        ctx.progress
            .bytes_done
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    if server.kind == Kind::File && len != server.size {
        return Err(StepError::Problem(format!(
            "the server sent {len} bytes, its listing said {}: changed while downloading; tried again at the next sync",
            server.size
        )));
    }
    file.sync_all()?;
    if let Some(secs) = server.mtime {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        let _ = file.set_modified(t);
    }
    Ok((temp, hasher.finalize().into()))
}

/// A temporary file removed on drop unless kept.
struct TempFile(PathBuf);

impl TempFile {
    fn new(p: PathBuf) -> io::Result<TempFile> {
        Ok(TempFile(p))
    }
    /// Renames it to `to`; it is no longer ours to remove.
    fn place(self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.0, to)?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Replaces the local `rel` with the server's version. Returns whether it was placed.
async fn download(
    ctx: &Context<'_>,
    rel: &str,
    inputs: &Inputs,
    trash_first: bool,
) -> StepResult<bool> {
    let Some(server) = inputs.remote.get(rel) else {
        return Ok(false);
    };
    if server.kind == Kind::Dir {
        mkdir_local(ctx, rel, inputs)?;
        return Ok(true);
    }
    let (temp, hash) = fetch_to_temp(ctx, rel, server).await?;
    // The local file must still be what the plan saw (or still absent).
    let now = local_now(ctx, rel, false).await?;
    let unchanged = match (&now, inputs.local.get(rel)) {
        (None, None) => true,
        (Some(n), Some(seen)) => same_file(n, seen),
        _ => false,
    };
    if !unchanged {
        tracing::info!(folder = %ctx.folder, path = rel, "changed locally while downloading: left for the next sync");
        return Ok(false);
    }
    let target = ctx.local_path(rel);
    if let Some(n) = &now {
        if trash_first || n.kind == Kind::Dir {
            ctx.trash.put(&target)?;
        }
    }
    temp.place(&target)?;
    let Some(mut l) = local_now(ctx, rel, false).await? else {
        return Ok(true);
    };
    l.hash = Some(hash);
    ctx.put_base(
        rel,
        &Base {
            local: l,
            remote: server.clone(),
        },
    )?;
    Ok(true)
}

async fn delete_remote(ctx: &Context<'_>, rel: &str, inputs: &Inputs) -> StepResult<()> {
    let rp = ctx.remote_path(rel)?;
    if let Some(RemoteMeta {
        kind: Kind::File,
        etag: Some(v),
        ..
    }) = inputs.remote.get(rel)
    {
        match still_version(ctx.remote, &rp, v).await? {
            Some(true) => {}
            None => {}
            // Changed on the server since the scan: the change survives (next sync).
            Some(false) => return Ok(()),
        }
    }
    match ctx.remote.delete(&rp).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    ctx.journal().forget_tree(&ctx.folder, rel)?;
    Ok(())
}

async fn trash_local(ctx: &Context<'_>, rel: &str, inputs: &Inputs) -> StepResult<()> {
    let now = local_now(ctx, rel, false).await?;
    match (&now, inputs.local.get(rel)) {
        (None, _) => {}
        (Some(n), Some(seen)) if same_file(n, seen) => {
            ctx.trash.put(&ctx.local_path(rel))?;
        }
        // Changed since the scan: kept, and uploaded by the next sync.
        _ => return Ok(()),
    }
    ctx.journal().forget_tree(&ctx.folder, rel)?;
    Ok(())
}

/// A free conflict-copy name for `rel` (relative path), beside it.
fn conflict_copy_path(
    ctx: &Context<'_>,
    rel: &str,
    stamp: SystemTime,
    taken: &dyn Fn(&str) -> bool,
) -> String {
    let (dir, name) = match rel.rfind('/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => ("", rel),
    };
    let stamp = conflict::timestamp(stamp);
    for n in 1.. {
        let candidate = format!(
            "{dir}{}",
            conflict::conflict_name(name, &ctx.device, &stamp, n)
        );
        if !taken(&candidate) {
            return candidate;
        }
    }
    unreachable!("some counter is free")
}

fn mtime_of(l: &LocalMeta) -> SystemTime {
    if l.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(l.mtime_ns as u64)
    } else {
        UNIX_EPOCH
    }
}

/// Both sides changed: equal contents are recorded; else the server's version keeps the name
/// and ours is renamed to a conflict copy (uploaded by the next pass).
async fn conflict_both(
    ctx: &Context<'_>,
    rel: &str,
    inputs: &Inputs,
    shared: &Shared,
) -> StepResult<()> {
    let (Some(local), Some(server)) = (inputs.local.get(rel), inputs.remote.get(rel)) else {
        shared.again.store(true, Ordering::Relaxed);
        return Ok(());
    };
    if local.kind == Kind::Dir && server.kind == Kind::Dir {
        return record_both(ctx, rel, inputs).await;
    }
    if local.kind == Kind::Dir {
        // A directory here, a file on the server: the directory keeps the name (its content
        // has paths of its own); the server's file moves aside to a conflict copy there, and
        // the next pass brings each to the other side.
        move_server_copy_aside(ctx, rel, server, inputs, shared).await?;
        shared.again.store(true, Ordering::Relaxed);
        return Ok(());
    }
    // Fetch the server's file first: equal contents are no conflict.
    let fetched = if server.kind == Kind::File {
        let (temp, hash) = fetch_to_temp(ctx, rel, server).await?;
        if local.kind == Kind::File && local.size == server.size {
            let ours = local_now(ctx, rel, true).await?;
            if let Some(ours) = ours {
                if same_file(&ours, local) && ours.hash == Some(hash) {
                    drop(temp);
                    ctx.put_base(
                        rel,
                        &Base {
                            local: ours,
                            remote: server.clone(),
                        },
                    )?;
                    return Ok(());
                }
            }
        }
        Some((temp, hash))
    } else {
        None
    };
    // Keep both: ours moves aside, locally.
    let now = local_now(ctx, rel, false).await?;
    match &now {
        Some(n) if same_file(n, local) => {}
        _ => {
            shared.again.store(true, Ordering::Relaxed);
            return Ok(());
        }
    }
    let root = ctx.local_root.clone();
    let copy = conflict_copy_path(ctx, rel, mtime_of(local), &|c| {
        root.join(c).symlink_metadata().is_ok() || inputs.remote.contains_key(c)
    });
    let target = ctx.local_path(rel);
    std::fs::rename(&target, ctx.local_path(&copy))?;
    ctx.journal().forget_tree(&ctx.folder, rel)?;
    match fetched {
        Some((temp, hash)) => {
            temp.place(&target)?;
            if let Some(mut l) = local_now(ctx, rel, false).await? {
                l.hash = Some(hash);
                ctx.put_base(
                    rel,
                    &Base {
                        local: l,
                        remote: server.clone(),
                    },
                )?;
            }
        }
        None => mkdir_local(ctx, rel, inputs)?,
    }
    add_conflict(ctx, rel, &copy)?;
    shared.conflicts.fetch_add(1, Ordering::Relaxed);
    // The copy is new here: the next pass uploads it (and a directory's content).
    shared.again.store(true, Ordering::Relaxed);
    Ok(())
}

fn add_conflict(ctx: &Context<'_>, rel: &str, copy: &str) -> Result<(), JournalError> {
    tracing::warn!(folder = %ctx.folder, path = rel, copy, "conflict: both versions kept");
    ctx.journal().add_conflict(
        &ctx.folder,
        &ConflictRecord {
            path: rel.to_string(),
            copy: copy.to_string(),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        },
    )
}

/// Moves the server's copy of `rel` aside to a free conflict-copy name (on the server) and
/// records the conflict. `Ok(false)`: it was gone already.
async fn move_server_copy_aside(
    ctx: &Context<'_>,
    rel: &str,
    server: &RemoteMeta,
    inputs: &Inputs,
    shared: &Shared,
) -> StepResult<bool> {
    let rp = ctx.remote_path(rel)?;
    let stamp = server
        .mtime
        .map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64))
        .unwrap_or_else(SystemTime::now);
    let root = ctx.local_root.clone();
    let mut tries = 0;
    loop {
        tries += 1;
        let copy = conflict_copy_path(ctx, rel, stamp, &|c| {
            inputs.remote.contains_key(c) || root.join(c).symlink_metadata().is_ok()
        });
        match ctx
            .remote
            .rename(&rp, &ctx.remote_path(&copy)?, false)
            .await
        {
            Ok(()) => {
                ctx.journal().forget_tree(&ctx.folder, rel)?;
                add_conflict(ctx, rel, &copy)?;
                shared.conflicts.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            // Taken meanwhile (by another computer's copy): the next free name.
            Err(RemoteError::AlreadyExists { .. }) if tries < 5 => continue,
            Err(e) if e.is_not_found() => {
                ctx.journal().forget_tree(&ctx.folder, rel)?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Upload-only: the server has a version the local folder does not. Equal contents are
/// recorded; else the server's version is moved aside to a conflict copy on the server, and
/// ours is uploaded under the name.
async fn keep_server_copy(
    ctx: &Context<'_>,
    rel: &str,
    inputs: &Inputs,
    shared: &Shared,
) -> StepResult<()> {
    let (Some(local), Some(server)) = (inputs.local.get(rel), inputs.remote.get(rel)) else {
        shared.again.store(true, Ordering::Relaxed);
        return Ok(());
    };
    if local.kind == Kind::Dir && server.kind == Kind::Dir {
        return record_both(ctx, rel, inputs).await;
    }
    if local.kind == Kind::File && server.kind == Kind::File && local.size == server.size {
        let (temp, hash) = fetch_to_temp(ctx, rel, server).await?;
        drop(temp);
        if let Some(ours) = local_now(ctx, rel, true).await? {
            if same_file(&ours, local) && ours.hash == Some(hash) {
                ctx.put_base(
                    rel,
                    &Base {
                        local: ours,
                        remote: server.clone(),
                    },
                )?;
                return Ok(());
            }
        }
    }
    move_server_copy_aside(ctx, rel, server, inputs, shared).await?;
    if uploads_stopped(shared) {
        return Err(StepError::Problem(
            "waiting: the server is out of space".into(),
        ));
    }
    if local.kind == Kind::Dir {
        mkdir_remote(ctx, rel).await?;
        shared.again.store(true, Ordering::Relaxed);
        return Ok(());
    }
    upload(ctx, rel, Expect::Absent, shared).await
}

/// A local rename done on the server as a MOVE. When the server refuses, the new path is
/// uploaded instead (the old one is deleted by the next sync, as any local delete).
async fn move_remote(
    ctx: &Context<'_>,
    from: &str,
    to: &str,
    inputs: &Inputs,
    shared: &Shared,
) -> StepResult<()> {
    let (rf, rt) = (ctx.remote_path(from)?, ctx.remote_path(to)?);
    if let Some(parent) = rt.parent() {
        mkdir_p(ctx.remote, &parent).await?;
    }
    match ctx.remote.rename(&rf, &rt, false).await {
        Ok(()) => {}
        Err(
            e @ (RemoteError::Transient { .. }
            | RemoteError::Auth { .. }
            | RemoteError::InsufficientStorage { .. }),
        ) => return Err(e.into()),
        Err(e) => {
            tracing::info!(from, to, error = %e, "the server refused the move: uploading instead");
            shared.again.store(true, Ordering::Relaxed);
            return match inputs.local.get(to).map(|l| l.kind) {
                Some(Kind::Dir) => mkdir_remote(ctx, to).await,
                Some(Kind::File) => upload(ctx, to, Expect::Absent, shared).await,
                None => Ok(()),
            };
        }
    }
    let moved: Vec<(String, Base)> = {
        let j = ctx.journal();
        j.move_tree(&ctx.folder, from, to)?;
        let bases = j.bases(&ctx.folder)?;
        let prefix = format!("{to}/");
        bases
            .into_iter()
            .filter(|(p, _)| p == to || p.starts_with(&prefix))
            .collect()
    };
    // The server may give moved files new versions: learnt from the listing after the run —
    // only for the files the server still held as the base says. A file another client changed
    // before the move keeps the base's version, so the change is still seen as one (taking its
    // version from a listing would make it ours, never downloaded).
    let mut updated = Vec::new();
    for (p, mut b) in moved {
        if p == to {
            if let Some(l) = inputs.local.get(to) {
                b.local = l.clone();
            }
        }
        if b.remote.kind == Kind::File {
            let old = format!("{from}{}", &p[to.len()..]);
            let unchanged = inputs
                .remote
                .get(&old)
                .is_some_and(|r| !r.changed_since(&b.remote));
            if unchanged {
                b.remote.etag = None;
            }
        }
        updated.push((p, b));
    }
    {
        let j = ctx.journal();
        for (p, b) in &updated {
            j.put_base(&ctx.folder, p, b)?;
        }
    }
    shared.uploaded.store(true, Ordering::Relaxed);
    Ok(())
}

/// [`adopt_uploaded`] for a run that starts after one was cut short between placing a file
/// and learning its version: meanwhile another client may have replaced it with a file of the
/// same size, which must not be taken for ours (our next change would then overwrite it
/// unseen). A listed file is adopted only when its content is the one we sent (its SHA-256 is
/// the base's); otherwise its version stays unknown, which the plan takes for a server change
/// (a download, or a conflict whose contents are compared first). `root` is the folder's
/// server path.
pub async fn adopt_uploaded_checked(
    remote: &dyn Remote,
    root: &RemotePath,
    bases: &std::collections::BTreeMap<String, Base>,
    listed: &std::collections::BTreeMap<String, RemoteMeta>,
) -> Result<Vec<(String, Base)>, RemoteError> {
    let mut out = Vec::new();
    for (rel, base) in adopt_uploaded(bases, listed) {
        let Some(sent) = bases.get(&rel).and_then(|b| b.local.hash) else {
            continue;
        };
        let rp = if root.is_root() {
            RemotePath::new(&rel)?
        } else {
            RemotePath::new(&format!("{}/{rel}", root.as_str()))?
        };
        let expect = base
            .remote
            .etag
            .as_deref()
            .and_then(etag_of)
            .filter(|t| !t.is_stand_in());
        let hash = match server_hash(remote, &rp, expect.as_ref()).await {
            Ok(h) => h,
            Err(e @ (RemoteError::Transient { .. } | RemoteError::Auth { .. })) => return Err(e),
            // Gone or changed again since the listing: left unknown.
            Err(_) => continue,
        };
        if hash == sent {
            out.push((rel, base));
        }
    }
    Ok(out)
}

/// The SHA-256 of a server file (of version `expect`, when given).
async fn server_hash(
    remote: &dyn Remote,
    rp: &RemotePath,
    expect: Option<&crate::remote::ETag>,
) -> Result<[u8; 32], RemoteError> {
    let resp = remote.read_range(rp, ByteRange::whole(), expect).await?;
    let mut hasher = Sha256::new();
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher.finalize().into())
}

/// Completes the bases of files this computer placed on the server (whose version the
/// upload could not learn) from a listing: the listed file of the size we sent is ours.
/// Returns how many were completed.
pub fn adopt_uploaded(
    bases: &std::collections::BTreeMap<String, Base>,
    listed: &std::collections::BTreeMap<String, RemoteMeta>,
) -> Vec<(String, Base)> {
    let mut out = Vec::new();
    for (p, b) in bases {
        if b.remote.kind != Kind::File || b.remote.etag.is_some() {
            continue;
        }
        if let Some(r) = listed.get(p) {
            if r.kind == Kind::File && r.size == b.remote.size && r.etag.is_some() {
                out.push((
                    p.clone(),
                    Base {
                        local: b.local.clone(),
                        remote: r.clone(),
                    },
                ));
            }
        }
    }
    out
}
