//! Sending a local file: to a temporary name, checked, moved into place; a local rename
//! done as a server MOVE.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::keep_both::conflict_both;
use super::{local_now, mkdir_p, mkdir_remote, same_file, Context, Shared, StepResult};
use crate::remote::{version, PutBody, Remote, RemoteError, RemotePath};
use crate::sync::decide::Expect;
use crate::sync::folder::FolderId;
use crate::sync::plan::Inputs;
use crate::sync::remote_scan::{etag_of, meta_of};
use crate::sync::state::{Base, Kind, RemoteMeta};

/// A name for a temporary upload of `rel`.
pub(super) fn upload_temp(ctx: &Context<'_>, rel: &str) -> Result<RemotePath, RemoteError> {
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

pub(super) fn random_hex() -> String {
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
