//! Conflicts: both versions kept — ours to a conflict copy here, or (upload-only) the
//! server's moved aside on the server — after the contents are compared (equal is no conflict).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::download::fetch_to_temp;
use super::upload::upload;
use super::{
    local_now, mkdir_local, mkdir_remote, record_both, same_file, uploads_stopped, Context, Shared,
    StepError, StepResult,
};
use crate::remote::RemoteError;
use crate::sync::decide::Expect;
use crate::sync::journal::{ConflictRecord, JournalError};
use crate::sync::plan::Inputs;
use crate::sync::state::{Base, Kind, LocalMeta, RemoteMeta};
use crate::transfer::conflict;

/// A free conflict-copy name for `rel` (relative path), beside it.
pub(super) fn conflict_copy_path(
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

pub(super) fn mtime_of(l: &LocalMeta) -> SystemTime {
    if l.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(l.mtime_ns as u64)
    } else {
        UNIX_EPOCH
    }
}

/// Both sides changed: equal contents are recorded; else the server's version keeps the name
/// and ours is renamed to a conflict copy (uploaded by the next pass, new-files-only too as
/// the new file it is; download-only: kept here only).
pub(super) async fn conflict_both(
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
    if local.kind == Kind::Dir && !ctx.keeps_server_items() {
        // A directory here, a file on the server: the directory keeps the name (its content
        // has paths of its own); the server's file moves aside to a conflict copy there, and
        // the next pass brings each to the other side. (Download-only and new-files-only: the
        // server is not changed; our directory moves aside here, below.)
        move_server_copy_aside(ctx, rel, server, inputs, shared).await?;
        shared.again.store(true, Ordering::Relaxed);
        return Ok(());
    }
    // Fetch the server's file first: equal contents are no conflict.
    let fetched = if server.kind == Kind::File {
        let (temp, hash) = fetch_to_temp(ctx, rel, server).await?;
        if local.kind == Kind::File
            && local.size == server.size
            && adopt_if_equal(ctx, rel, local, server, hash).await?
        {
            return Ok(());
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

pub(super) fn add_conflict(ctx: &Context<'_>, rel: &str, copy: &str) -> Result<(), JournalError> {
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
pub(super) async fn move_server_copy_aside(
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
pub(super) async fn keep_server_copy(
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
        if adopt_if_equal(ctx, rel, local, server, hash).await? {
            return Ok(());
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

/// When our file is still `local` and holds exactly the server's content (`hash`), both sides
/// agree: records the base and says so (no conflict).
async fn adopt_if_equal(
    ctx: &Context<'_>,
    rel: &str,
    local: &LocalMeta,
    server: &RemoteMeta,
    hash: [u8; 32],
) -> StepResult<bool> {
    match local_now(ctx, rel, true).await? {
        Some(ours) if same_file(&ours, local) && ours.hash == Some(hash) => {
            ctx.put_base(
                rel,
                &Base {
                    local: ours,
                    remote: server.clone(),
                },
            )?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
