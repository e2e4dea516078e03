//! The file a PUT writes: a hidden temporary file beside the target, its quota reserved as it
//! grows, renamed over the target only when the whole body has arrived (`PutFile`).

use std::fmt;
use std::io::SeekFrom;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PutState {
    Writing,
    Committed,
    Failed,
}

/// A file opened for writing: a temp file that replaces the target on `flush()`.
pub(super) struct PutFile {
    pub(super) file: Option<tokio::fs::File>,
    pub(super) tmp: PathBuf,
    pub(super) target: PathBuf,
    pub(super) davpath: DavPath,
    pub(super) inner: LocalFs,
    /// Current position (of the temp file's cursor).
    pub(super) pos: u64,
    /// Current length of the temp file.
    pub(super) len: u64,
    /// Length of the target when opened; growth beyond it is what the quota is charged.
    pub(super) base_len: u64,
    /// Quota bytes reserved by this write.
    pub(super) reserved: u64,
    pub(super) append: bool,
    /// The body length announced for a whole-file PUT; a commit with another length is refused.
    pub(super) expect_len: Option<u64>,
    pub(super) create_new: bool,
    pub(super) quota: Option<Arc<Quota>>,
    pub(super) state: PutState,
}

impl fmt::Debug for PutFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutFile")
            .field("tmp", &self.tmp)
            .field("target", &self.target)
            .field("pos", &self.pos)
            .field("len", &self.len)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl PutFile {
    fn writable(&mut self) -> FsResult<&mut tokio::fs::File> {
        if self.state != PutState::Writing {
            return Err(FsError::GeneralFailure);
        }
        self.file.as_mut().ok_or(FsError::GeneralFailure)
    }

    /// Makes sure the quota covers the file growing to `end` bytes.
    fn reserve_up_to(&mut self, end: u64) -> FsResult<()> {
        let Some(q) = &self.quota else {
            return Ok(());
        };
        let need = end.saturating_sub(self.base_len);
        if need > self.reserved {
            if !q.try_reserve(need - self.reserved) {
                tracing::info!(target = %self.target.display(), bytes = end, used = q.used(),
                    limit = q.limit(), "upload stopped: it would exceed the quota");
                self.state = PutState::Failed;
                return Err(FsError::InsufficientStorage);
            }
            self.reserved = need;
        }
        Ok(())
    }

    async fn write_all(&mut self, data: &[u8]) -> FsResult<()> {
        let start = if self.append { self.len } else { self.pos };
        let end = start + data.len() as u64;
        self.reserve_up_to(end)?;
        let pos = self.pos;
        let file = self.writable()?;
        if pos != start {
            file.seek(SeekFrom::Start(start)).await.map_err(fs_err)?;
        }
        if let Err(e) = file.write_all(data).await {
            self.state = PutState::Failed;
            return Err(fs_err(e));
        }
        self.pos = end;
        self.len = self.len.max(end);
        Ok(())
    }

    async fn commit(&mut self) -> FsResult<()> {
        match self.state {
            PutState::Committed => return Ok(()),
            PutState::Failed => return Err(FsError::GeneralFailure),
            PutState::Writing => {}
        }
        if let Some(expected) = self.expect_len {
            if self.len != expected {
                tracing::warn!(target = %self.target.display(), expected, got = self.len,
                    "upload not committed: body length differs from Content-Length");
                self.state = PutState::Failed;
                return Err(FsError::GeneralFailure);
            }
        }
        let mut file = self.file.take().ok_or(FsError::GeneralFailure)?;
        if let Err(e) = file.flush().await {
            self.state = PutState::Failed;
            return Err(fs_err(e));
        }
        let file = file.into_std().await;

        let (tmp, target) = (self.tmp.clone(), self.target.clone());
        let (create_new, len, reserved) = (self.create_new, self.len, self.reserved);
        let quota = self.quota.clone();
        let result = blocking(move || {
            stamp_unique_mtime(&file).map_err(fs_err)?;
            drop(file);
            let guard = quota.as_ref().map(|q| q.lock());
            let replaced = counted_len(&target);
            if create_new {
                link_no_replace(&tmp, &target)?;
            } else {
                std::fs::rename(&tmp, &target).map_err(fs_err)?;
            }
            if let Some(mut st) = guard {
                st.used = st.used.saturating_sub(replaced).saturating_add(len);
                st.reserved = st.reserved.saturating_sub(reserved);
            }
            Ok(())
        })
        .await;
        match result {
            Ok(()) => {
                self.state = PutState::Committed;
                self.reserved = 0;
                tracing::debug!(target = %self.target.display(), bytes = len, "upload committed");
                Ok(())
            }
            Err(e) => {
                self.state = PutState::Failed;
                Err(e)
            }
        }
    }
}

impl Drop for PutFile {
    fn drop(&mut self) {
        if self.state == PutState::Committed {
            return;
        }
        // Not committed: the upload failed or was abandoned. The target is untouched.
        match std::fs::remove_file(&self.tmp) {
            Ok(()) => {
                tracing::debug!(target = %self.target.display(), "write not committed, temp file removed")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(tmp = %self.tmp.display(), error = %e,
                "could not remove an upload temp file"),
        }
        if let Some(q) = &self.quota {
            q.release(self.reserved);
        }
    }
}

impl DavFile for PutFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            if self.state == PutState::Committed {
                // The committed file's metadata as LocalFs reports it everywhere else, so the
                // ETag of the PUT response is the one GET and PROPFIND will show.
                return self.inner.metadata(&self.davpath).await;
            }
            let file = self.file.as_ref().ok_or(FsError::GeneralFailure)?;
            let meta = file.metadata().await.map_err(fs_err)?;
            Ok(Box::new(StdMeta(meta)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            let data = buf.copy_to_bytes(buf.remaining());
            self.write_all(&data).await
        }
        .boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.write_all(&buf).await }.boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let file = self.file.as_mut().ok_or(FsError::GeneralFailure)?;
            let mut buf = vec![0u8; count];
            let mut filled = 0;
            while filled < count {
                let n = file.read(&mut buf[filled..]).await.map_err(fs_err)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            self.pos += filled as u64;
            Ok(Bytes::from(buf))
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            let file = self.writable()?;
            let new = file.seek(pos).await.map_err(fs_err)?;
            self.pos = new;
            Ok(new)
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move { self.commit().await }.boxed()
    }
}
