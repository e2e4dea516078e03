//! What the server holds at a path: its entry now, and whether it is exactly a local file's
//! bytes (a conflict that is none: our own upload whose confirmation was lost, or the same
//! edit made twice).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::remote::{ByteRange, Entry, Remote, RemoteError, RemotePath, RemoteResult};

/// What the server has at `path` now (`None`: nothing).
pub async fn current(remote: &dyn Remote, path: &RemotePath) -> RemoteResult<Option<Entry>> {
    match remote.stat(path).await {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the server has at `path` after we placed a file there (`None`: could not be learnt;
/// the caller learns it from a later listing).
pub async fn placed(remote: &dyn Remote, path: &RemotePath) -> Option<Entry> {
    match remote.stat(path).await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!(error = %e, path = %path, "no version after upload");
            None
        }
    }
}

/// How many of the server's bytes are compared with the local file's at a time.
const COMPARE_BLOCK: usize = 1 << 20;

/// Whether the server's `path`, found as `server`, holds exactly the `size` bytes of `file`:
/// sizes first, then the bytes, read as they come (the local file on the blocking pool, a
/// block at a time: a compare may read gigabytes).
pub async fn same_content(
    remote: &dyn Remote,
    path: &RemotePath,
    server: &Entry,
    file: &Path,
    size: u64,
) -> RemoteResult<bool> {
    if server.is_dir() || server.size != size {
        return Ok(false);
    }
    if size == 0 {
        return Ok(true);
    }
    let file = file.to_path_buf();
    let f = Arc::new(off_thread(move || std::fs::File::open(file)).await?);
    let resp = remote
        .read_range(path, ByteRange::from(0), server.etag.as_ref())
        .await?;
    let mut body = resp.body;
    // `pos`: bytes compared so far; `pending`: the server's bytes after them.
    let mut pos = 0u64;
    let mut pending = Vec::with_capacity(COMPARE_BLOCK);
    loop {
        let chunk = body.next().await.transpose()?;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            if pos + (pending.len() + chunk.len()) as u64 > size {
                return Ok(false);
            }
            pending.extend_from_slice(&chunk);
        }
        if pending.len() >= COMPARE_BLOCK || (end && !pending.is_empty()) {
            let at = pos;
            pos += pending.len() as u64;
            let (f, server_bytes) = (f.clone(), std::mem::take(&mut pending));
            let same = off_thread(move || {
                let mut local = vec![0; server_bytes.len()];
                f.read_exact_at(&mut local, at)?;
                Ok((local == server_bytes, server_bytes))
            })
            .await?;
            if !same.0 {
                return Ok(false);
            }
            pending = same.1;
            pending.clear();
        }
        if end {
            return Ok(pos == size);
        }
    }
}

/// `read` (local disk work) run on the blocking pool.
async fn off_thread<T: Send + 'static>(
    read: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> RemoteResult<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| RemoteError::Io(std::io::Error::other(e)))?
        .map_err(RemoteError::Io)
}

/// Creates `path` and its missing parents on the server (a folder already there is fine).
pub async fn mkdir_p(remote: &dyn Remote, path: &RemotePath) -> RemoteResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::mem::MemRemote;

    #[tokio::test]
    async fn same_content_compares_sizes_then_bytes() {
        let m = MemRemote::new();
        m.insert_file("a", &b"hello"[..]);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        let a = RemotePath::new("a").unwrap();
        let e = current(&m, &a).await.unwrap().unwrap();
        for (local, same) in [(&b"hello"[..], true), (b"hellO", false), (b"hell", false)] {
            std::fs::write(&f, local).unwrap();
            let got = same_content(&m, &a, &e, &f, local.len() as u64)
                .await
                .unwrap();
            assert_eq!(got, same, "{local:?}");
        }
        assert!(current(&m, &RemotePath::new("b").unwrap())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn mkdir_p_creates_every_missing_parent_and_accepts_existing_ones() {
        let m = MemRemote::new();
        let deep = RemotePath::new("x/y/z").unwrap();
        mkdir_p(&m, &deep).await.unwrap();
        mkdir_p(&m, &deep).await.unwrap();
        for p in ["x", "x/y", "x/y/z"] {
            assert!(current(&m, &RemotePath::new(p).unwrap())
                .await
                .unwrap()
                .is_some_and(|e| e.is_dir()));
        }
    }
}
