//! Fetching a server file: into a temporary file beside the target, checked, renamed over
//! it once the local file is known unchanged.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures_util::stream::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{local_now, mkdir_local, same_file, Context, StepError, StepResult};
use crate::remote::ByteRange;
use crate::sync::exclude::TMP_PREFIX;
use crate::sync::plan::Inputs;
use crate::sync::remote_scan::etag_of;
use crate::sync::state::{Base, Kind, RemoteMeta};
use crate::transfer::temp::random_hex;

/// Downloads `rel` into a temporary file in its directory; returns it with its hash.
pub(super) async fn fetch_to_temp(
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
    let temp = TempFile::new(dir.join(format!("{}{}", TMP_PREFIX, random_hex())))?;
    // Written through tokio's file (its writes and the fsync run on the blocking pool, not on
    // the runtime's few workers).
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp.0)
        .await?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
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
    file.sync_all().await?;
    if let Some(secs) = server.mtime {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        let _ = file.into_std().await.set_modified(t);
    }
    Ok((temp, hasher.finalize().into()))
}

/// A temporary file removed on drop unless kept.
pub(super) struct TempFile(PathBuf);

impl TempFile {
    pub(super) fn new(p: PathBuf) -> io::Result<TempFile> {
        Ok(TempFile(p))
    }
    /// Renames it to `to`; it is no longer ours to remove.
    pub(super) fn place(self, to: &Path) -> io::Result<()> {
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
pub(super) async fn download(
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
