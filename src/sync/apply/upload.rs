//! Sending a local file, through the shared upload path ([`crate::transfer`]): a refusal
//! becomes a conflict kept locally; a local rename done as a server MOVE.

use std::sync::atomic::Ordering;

use futures_util::future::BoxFuture;

use super::keep_both::conflict_both;
use super::{local_now, mkdir_remote, note_new, same_file, Context, Shared, StepResult};
use crate::remote::{version, Remote, RemoteError, RemotePath};
use crate::sync::decide::Expect;
use crate::sync::folder::Mode;
use crate::sync::local;
use crate::sync::plan::Inputs;
use crate::sync::remote_scan::{etag_of, meta_of};
use crate::sync::state::{Base, Kind, RemoteMeta};
use crate::transfer::probe::mkdir_p;
use crate::transfer::{self, Placed, UploadJob, Via};

/// Whether the server's copy of `rp` is still `expected` (a stored version).
pub(super) async fn still_version(
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
pub(super) async fn upload(
    ctx: &Context<'_>,
    rel: &str,
    expect: Expect,
    shared: &Shared,
) -> StepResult<()> {
    let Some(l) = local_now(ctx, rel, true).await? else {
        // Gone since the scan: the next sync sees it.
        return Ok(());
    };
    if l.kind == Kind::Dir {
        return mkdir_remote(ctx, rel).await;
    }
    let rp = ctx.remote_path(rel)?;
    // Checked now, so that a conflict costs no upload; checked again by the upload right
    // before ours is placed (a large file takes a while).
    let job_expect = match &expect {
        Expect::Absent => transfer::Expect::Absent,
        Expect::Version(v) => match still_version(ctx.remote, &rp, v).await? {
            Some(true) => transfer::Expect::Version(etag_of(v)),
            // Deleted on the server meanwhile: our change wins, as a new file.
            None => transfer::Expect::Absent,
            Some(false) => return conflict_on_upload(ctx, rel, shared).await,
        },
    };
    // Whether the file is still what the scan saw (a stat, on the blocking pool; the send is
    // thrown away if not).
    let (root, rel_owned, scanned) = (ctx.local_root.clone(), rel.to_string(), l.clone());
    let unchanged = move || -> BoxFuture<'static, bool> {
        let (root, rel, scanned) = (root.clone(), rel_owned.clone(), scanned.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                matches!(local::stat(&root, &rel), Ok(Some(now)) if same_file(&now, &scanned))
            })
            .await
            .unwrap_or(false)
        })
    };
    let file = ctx.local_path(rel);
    let new = job_expect == transfer::Expect::Absent;
    // New-files-only: one direct PUT (`If-None-Match: *`), as such a server refuses the MOVE
    // and the DELETE of a temporary copy.
    let direct = new && ctx.mode == Mode::NewFilesOnly;
    let mut job = UploadJob {
        target: &rp,
        file: &file,
        size: l.size,
        expect: job_expect,
        via: if direct {
            Via::Direct
        } else {
            Via::Temp(transfer::temp::for_sync(&rp, ctx.folder.as_str())?)
        },
        make_parents: true,
        learn_version: false,
        sent: None,
        unchanged: &unchanged,
    };
    let mut placed = transfer::upload(ctx.remote, &job).await;
    if new && matches!(placed, Err(RemoteError::Forbidden { .. })) {
        if transfer::probe::current(ctx.remote, &rp).await?.is_some() {
            // A file of that name appeared meanwhile (a server that takes new files only
            // answers 403, not 412, to a PUT over it): both are kept.
            return conflict_on_upload(ctx, rel, shared).await;
        }
        if !direct {
            // The server may take a new file but refuse the MOVE of its temporary copy (a
            // folder that accepts new files only): once more, directly.
            tracing::info!(
                path = rel,
                "the server refused the new file through a temporary name; sending it directly"
            );
            job.via = Via::Direct;
            placed = transfer::upload(ctx.remote, &job).await;
        }
    }
    if new {
        match &placed {
            Ok(Placed::Done(_)) => note_new(ctx, true),
            Err(RemoteError::Forbidden { .. }) => note_new(ctx, false),
            _ => {}
        }
    }
    match placed? {
        Placed::Done(_) => {}
        Placed::SourceChanged => {
            // The file changed, or went away, while it was sent (a rename or delete here, or
            // a conflict copy this run made of a directory above it): the next pass sends
            // what is there now.
            shared.again.store(true, Ordering::Relaxed);
            return Ok(());
        }
        Placed::Refused { temp, .. } => {
            if let Some(t) = temp {
                transfer::discard(ctx.remote, &t).await;
            }
            return conflict_on_upload(ctx, rel, shared).await;
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
pub(super) async fn conflict_on_upload(
    ctx: &Context<'_>,
    rel: &str,
    shared: &Shared,
) -> StepResult<()> {
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

/// A local rename done on the server as a MOVE. When the server refuses, the new path is
/// uploaded instead (the old one is deleted by the next sync, as any local delete).
pub(super) async fn move_remote(
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
