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
//! - **New-files-only** folders send only new names: a new file is one direct PUT with
//!   `If-None-Match: *` (such a server refuses the MOVE and DELETE a temporary name needs), a
//!   new folder a MKCOL; a step that would change or remove what the server has is refused
//!   here as a problem (the plan never gives one).
//! - **A server that takes new files but refuses changes** is told apart by what it answers:
//!   [`Progress`] keeps whether a new file was refused (HTTP 403) in this run and whether one
//!   was accepted since the folder started; the owner picks the folder's mode from them. A
//!   new file whose upload through a temporary name is refused is sent once more directly
//!   (the MOVE of the temporary copy may be what the server refused; the temporary copy may
//!   then stay on the server, hidden, if it refuses its DELETE too).
//!
//! Errors: a server that does not answer (or refuses the credentials) stops the whole run —
//! nothing is read as deleted. Anything else is a problem of that one path, recorded with its
//! reason and retried at the next sync; the rest goes on. A full server (507) stops the
//! uploads of the run; downloads go on.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::decide::Action;
use super::folder::{FolderId, Mode};
use super::journal::{Journal, JournalError};
use super::local;
use super::plan::{Inputs, Plan, Step};
use super::state::{Base, Kind, LocalMeta, RemoteMeta};
use super::trash::Trash;
use crate::remote::{Remote, RemoteError, RemotePath};

mod adopt;
mod download;
mod keep_both;
mod upload;

pub use adopt::{adopt_uploaded, adopt_uploaded_checked};
use download::download;
use keep_both::{conflict_both, keep_server_copy};
use upload::{move_remote, still_version, upload};

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
    /// The server refused the request (HTTP 403): a problem of that path, and, for a step
    /// that sends, a sign the folder is read-only there.
    Refused(String),
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
            // The same words for every file (the request's URL names a temporary upload).
            RemoteError::InsufficientStorage { .. } => {
                StepError::Full(crate::transfer::space::OUT_OF_SPACE.into())
            }
            e @ RemoteError::Forbidden { .. } => StepError::Refused(e.to_string()),
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
    /// The server refused (HTTP 403) a step that sends, since the owner last cleared it.
    pub refused_writes: std::sync::atomic::AtomicBool,
    /// The server refused (HTTP 403) a new file or folder, since the owner last cleared it.
    pub refused_new: std::sync::atomic::AtomicBool,
    /// The server accepted a new file or folder of ours (never cleared: "it takes new files").
    pub accepted_new: std::sync::atomic::AtomicBool,
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
    /// The folder's mode. Download-only: nothing is ever sent to the server; new-files-only:
    /// only new names (a step that would send otherwise is refused as a problem; the plan
    /// never gives one).
    pub mode: Mode,
    /// The account's uploads are paused (the server is out of space, see
    /// [`crate::transfer::space`]): uploads wait from the start, with this reason.
    pub uploads_paused: Option<String>,
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
    /// Nothing is ever sent.
    fn download_only(&self) -> bool {
        self.mode == Mode::DownloadOnly
    }

    /// What the server has is never changed, moved or deleted (download-only,
    /// new-files-only): a conflict moves ours aside here.
    fn keeps_server_items(&self) -> bool {
        matches!(self.mode, Mode::DownloadOnly | Mode::NewFilesOnly)
    }

    fn local_path(&self, rel: &str) -> PathBuf {
        self.local_root.join(rel)
    }

    fn remote_path(&self, rel: &str) -> Result<RemotePath, RemoteError> {
        self.remote_root.join_path(rel)
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
        full: Mutex::new(ctx.uploads_paused.clone()),
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
            Err(StepError::Problem(reason)) | Err(StepError::Refused(reason)) => {
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
    let (path, r) = run_one(ctx, step, inputs, shared).await;
    if sends(step) && matches!(r, Err(StepError::Refused(_))) {
        ctx.progress.refused_writes.store(true, Ordering::Relaxed);
    }
    (path, r)
}

/// What the server answered to a new file or folder of ours: `true` it took it, `false` it
/// refused it (HTTP 403). Noted in [`Progress`], so the owner can tell a server that takes
/// nothing from one that takes new files only.
fn note_new(ctx: &Context<'_>, accepted: bool) {
    if accepted {
        ctx.progress.accepted_new.store(true, Ordering::Relaxed);
    } else {
        ctx.progress.refused_new.store(true, Ordering::Relaxed);
        ctx.progress.refused_writes.store(true, Ordering::Relaxed);
    }
}

async fn run_one(
    ctx: &Context<'_>,
    step: &Step,
    inputs: &Inputs,
    shared: &Shared,
) -> (String, StepResult<()>) {
    let why = if ctx.download_only() && sends(step) {
        Some("not sent: the folder is download-only (a read-only area)")
    } else if ctx.mode == Mode::NewFilesOnly && changes_server(step) {
        Some("not sent: the folder takes only new files (the server refuses changes there)")
    } else {
        None
    };
    if let Some(why) = why {
        let path = match step {
            Step::MoveRemote { to, .. } => to,
            Step::Do { path, .. } => path,
        };
        return (path.clone(), Err(StepError::Problem(why.into())));
    }
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

/// Whether a step changes, moves or deletes something the server has (not only adds a new
/// name).
fn changes_server(step: &Step) -> bool {
    match step {
        Step::MoveRemote { .. } => true,
        Step::Do { action, .. } => matches!(
            action,
            Action::Upload {
                expect: super::decide::Expect::Version(_)
            } | Action::DeleteRemote
                | Action::KeepServerCopyThenUpload
        ),
    }
}

/// Whether a step changes the server.
fn sends(step: &Step) -> bool {
    match step {
        Step::MoveRemote { .. } => true,
        Step::Do { action, .. } => matches!(
            action,
            Action::Upload { .. }
                | Action::MkdirRemote
                | Action::DeleteRemote
                | Action::KeepServerCopyThenUpload
        ),
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

async fn mkdir_remote(ctx: &Context<'_>, rel: &str) -> StepResult<()> {
    let rp = ctx.remote_path(rel)?;
    match ctx.remote.mkdir(&rp).await {
        Ok(()) => note_new(ctx, true),
        Err(e @ RemoteError::Forbidden { .. }) => {
            note_new(ctx, false);
            return Err(e.into());
        }
        Err(RemoteError::AlreadyExists { .. }) | Err(RemoteError::Status { status: 405, .. }) => {
            let e = ctx.remote.stat(&rp).await?;
            if !e.is_dir() {
                return Err(StepError::Problem(
                    "a file of that name appeared on the server".into(),
                ));
            }
        }
        Err(RemoteError::MissingParent { .. }) => {
            crate::transfer::probe::mkdir_p(ctx.remote, &rp).await?
        }
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
