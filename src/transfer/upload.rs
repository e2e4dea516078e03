//! One upload that never destroys the server's copy: the mount's write-back and the sync
//! folders both send files through [`upload`].
//!
//! - **Via a temporary name** ([`Via::Temp`], the default): the content is PUT to a hidden
//!   name beside the target ([`super::temp`]) and MOVEd over it. A PUT cut midway then leaves
//!   only a stray temporary file, never a truncated target (rclone's server truncates the
//!   target on an aborted PUT). `Overwrite: F` on the MOVE makes "the file is new" a
//!   server-side check. When the server has no room for the temporary copy beside the old one
//!   (507 on a file that exists), the upload falls back to the direct way.
//! - **Directly** ([`Via::Direct`]): one conditional PUT (`If-Match` / `If-None-Match: *`), for
//!   servers whose PUT is atomic.
//!
//! What the server must hold for ours to replace it is the job's [`Expect`]; a version is
//! checked right before ours is placed (a large file takes a while to send), by
//! [`crate::remote::version::check`]: when it cannot tell, the server's copy counts as changed.
//! Nothing is placed when the local file changed while it was sent (the job's `unchanged`).
//! When the server's copy is not the one expected, nothing is replaced: [`Placed::Refused`]
//! hands the caller the server's entry (and our content, still under its temporary name) to
//! keep both its own way — the mount uploads a conflict copy, a sync folder keeps one locally.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::body::{file_body, padded_body};
use super::probe::{current, mkdir_p, placed};
use crate::remote::version::{self, Verdict};
use crate::remote::{
    ETag, Entry, EntryKind, PutCondition, PutOutcome, Remote, RemoteError, RemotePath, RemoteResult,
};

/// What the server must hold at the target for ours to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: ours is new, and a file that appeared meanwhile is not replaced.
    Absent,
    /// The version the change was based on (`None`: unknown, which never counts as unchanged).
    /// A file deleted on the server meanwhile gets ours as a new file.
    Version(Option<ETag>),
    /// Whatever is there is replaced: the caller has decided (a conflict copy is never copied
    /// again; our own earlier upload is replaced).
    Anything,
}

/// How the bytes travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// PUT to this temporary name, then MOVE over the target.
    Temp(RemotePath),
    /// One conditional PUT onto the target.
    Direct,
}

/// One file to send.
pub struct UploadJob<'a> {
    pub target: &'a RemotePath,
    /// The local file and the length it had when the job was made.
    pub file: &'a Path,
    pub size: u64,
    pub expect: Expect,
    pub via: Via,
    /// Create the target's missing parent folders on the server.
    pub make_parents: bool,
    /// Counts the bytes sent as the HTTP client reads them (from 0 at each attempt).
    pub sent: Option<Arc<AtomicU64>>,
    /// Ask the server for the placed file's version (one request more when the answer that
    /// placed it carries none); a caller that lists the folder afterwards learns it there.
    pub learn_version: bool,
    /// Whether the local file is still the version being sent: checked once our copy is on
    /// the server, before it is placed, and after a failed send (a future, so that a check
    /// that reads the disk runs off the async threads).
    pub unchanged: &'a Unchanged<'a>,
}

/// The job's check that the local file is still the version being sent.
pub type Unchanged<'a> = dyn Fn() -> BoxFuture<'static, bool> + Send + Sync + 'a;

/// How an upload ended.
#[derive(Debug)]
pub enum Placed {
    /// Under the target's name; what the server has there now, when it could be learnt (and
    /// the job asked for it: `learn_version`).
    Done(Option<Entry>),
    /// The local file changed while it was sent: nothing placed, nothing left on the server.
    SourceChanged,
    /// The server holds another version than the one expected (or a file appeared where ours
    /// is new): nothing replaced. `temp`: our content on the server under that temporary name,
    /// for the caller to move to a conflict copy or delete ([`discard`]).
    Refused {
        server: Entry,
        temp: Option<RemotePath>,
    },
}

/// Sends `job`. Errors are the server's (or reading the file's) and leave no temporary copy
/// behind when the server lets us remove it.
pub async fn upload(remote: &dyn Remote, job: &UploadJob<'_>) -> RemoteResult<Placed> {
    match &job.via {
        Via::Temp(temp) => via_temp(remote, job, temp).await,
        Via::Direct => direct(remote, job).await,
    }
}

/// Removes a temporary copy that will not be used (best effort: a stray copy is hidden, and
/// swept by its owner later).
pub async fn discard(remote: &dyn Remote, temp: &RemotePath) {
    if let Err(e) = remote.delete(temp).await {
        tracing::debug!(error = %e, temp = %temp, "could not remove the temporary upload");
    }
}

/// Whether a PUT failed for want of the target's parent folder: 409 on most servers (RFC 4918),
/// 404 on some.
fn parent_missing<T>(put: &RemoteResult<T>) -> bool {
    matches!(
        put,
        Err(RemoteError::MissingParent { .. } | RemoteError::NotFound { .. })
    )
}

/// Whether the server's entry is the version the change was based on: then ours replaces it.
fn is_base(base: Option<&ETag>, server: &Entry) -> bool {
    !server.is_dir() && version::check(base, server) == Verdict::Same
}

/// The placed file's entry, when the job asks for it.
async fn learn(remote: &dyn Remote, job: &UploadJob<'_>) -> Option<Entry> {
    if job.learn_version {
        placed(remote, job.target).await
    } else {
        None
    }
}

async fn via_temp(
    remote: &dyn Remote,
    job: &UploadJob<'_>,
    temp: &RemotePath,
) -> RemoteResult<Placed> {
    let body = || padded_body(job.file, job.size, job.sent.clone());
    let mut put = remote.put_unversioned(temp, body()).await;
    if job.make_parents && parent_missing(&put) {
        if let Some(parent) = job.target.parent() {
            mkdir_p(remote, &parent).await?;
        }
        put = remote.put_unversioned(temp, body()).await;
    }
    match put {
        Ok(_) => {}
        Err(RemoteError::InsufficientStorage { .. }) if job.expect != Expect::Absent => {
            // Not room for two copies at once: replace the file in place instead, with a
            // conditional PUT (atomic on most servers; a PUT cut midway on a server whose PUT
            // is not atomic could still damage the old copy — the price of fitting).
            discard(remote, temp).await;
            tracing::info!(path = %job.target, "not enough space on the server for a temporary copy; uploading in place");
            return direct(remote, job).await;
        }
        Err(e) => {
            // A broken PUT may leave a partial temporary file: not left if we can help it.
            discard(remote, temp).await;
            if !(job.unchanged)().await {
                // The failure was reading a file that changed or went away meanwhile.
                return Ok(Placed::SourceChanged);
            }
            return Err(e);
        }
    }
    if !(job.unchanged)().await {
        discard(remote, temp).await;
        return Ok(Placed::SourceChanged);
    }
    let overwrite = match &job.expect {
        Expect::Absent => false,
        Expect::Anything => true,
        Expect::Version(base) => match current(remote, job.target).await {
            Ok(None) => false,
            Ok(Some(e)) if is_base(base.as_ref(), &e) => true,
            Ok(Some(server)) => {
                return Ok(Placed::Refused {
                    server,
                    temp: Some(temp.clone()),
                })
            }
            Err(e) => {
                discard(remote, temp).await;
                return Err(e);
            }
        },
    };
    match remote.rename(temp, job.target, overwrite).await {
        Ok(()) => Ok(Placed::Done(learn(remote, job).await)),
        Err(e @ (RemoteError::AlreadyExists { .. } | RemoteError::PreconditionFailed { .. })) => {
            match current(remote, job.target).await {
                Ok(Some(server)) => Ok(Placed::Refused {
                    server,
                    temp: Some(temp.clone()),
                }),
                // Refused, yet nothing is there: not a conflict; retried later.
                Ok(None) => {
                    discard(remote, temp).await;
                    Err(e)
                }
                Err(e) => {
                    discard(remote, temp).await;
                    Err(e)
                }
            }
        }
        Err(e) => {
            discard(remote, temp).await;
            Err(e)
        }
    }
}

/// The condition of a direct PUT: the server checks the version itself when it is one of its
/// ETags; a stand-in (size and mtime) or an unknown version is checked here first.
async fn condition(
    remote: &dyn Remote,
    job: &UploadJob<'_>,
) -> RemoteResult<Result<PutCondition, Entry>> {
    Ok(Ok(match &job.expect {
        Expect::Absent => PutCondition::IfNoneMatch,
        Expect::Anything => PutCondition::None,
        Expect::Version(Some(b)) if !b.is_stand_in() => PutCondition::IfMatch(b.clone()),
        Expect::Version(base) => match current(remote, job.target).await? {
            None => PutCondition::IfNoneMatch,
            Some(e) if is_base(base.as_ref(), &e) => PutCondition::None,
            Some(server) => return Ok(Err(server)),
        },
    }))
}

async fn direct(remote: &dyn Remote, job: &UploadJob<'_>) -> RemoteResult<Placed> {
    let cond = match condition(remote, job).await? {
        Ok(c) => c,
        Err(server) => return Ok(Placed::Refused { server, temp: None }),
    };
    let body = file_body(job.file, job.size, job.sent.clone());
    let mut put = remote.put(job.target, body.clone(), cond.clone()).await;
    if job.make_parents && parent_missing(&put) {
        if let Some(parent) = job.target.parent() {
            mkdir_p(remote, &parent).await?;
        }
        put = remote.put(job.target, body, cond).await;
    }
    match put {
        Ok(PutOutcome { etag: Some(etag) }) => Ok(Placed::Done(Some(Entry {
            path: job.target.clone(),
            kind: EntryKind::File,
            size: job.size,
            mtime: None,
            etag: Some(etag),
            content_type: None,
        }))),
        Ok(PutOutcome { etag: None }) => Ok(Placed::Done(learn(remote, job).await)),
        Err(e @ (RemoteError::PreconditionFailed { .. } | RemoteError::AlreadyExists { .. })) => {
            match current(remote, job.target).await? {
                Some(server) => Ok(Placed::Refused { server, temp: None }),
                // Deleted on the server meanwhile: ours as a new file.
                None if matches!(job.expect, Expect::Version(_)) => {
                    let again = UploadJob {
                        expect: Expect::Absent,
                        via: Via::Direct,
                        sent: job.sent.clone(),
                        ..*job
                    };
                    Box::pin(direct(remote, &again)).await
                }
                None => Err(e),
            }
        }
        Err(e) if !(job.unchanged)().await => {
            tracing::debug!(error = %e, path = %job.target, "the file changed while it was sent");
            Ok(Placed::SourceChanged)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
mod tests;
