//! The write path: a file open for writing is staged whole in a local file, and uploaded with a
//! conditional PUT on flush, fsync and the last close.
//!
//! A [`Staged`] file belongs to an inode, not to a handle: every handle of the inode reads and
//! writes the same bytes, so readers on the mount see writes at once. It knows the version it was
//! based on (`base`, sent as `If-Match`), or that the file is new (`If-None-Match: *`).
//!
//! Lock order: `Vfs::tree` → `Staged::state`; `Staged::upload_lock` (async) is taken before
//! either and never while holding them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::remote::ETag;

/// What is known about a staged file.
#[derive(Debug, Clone)]
pub(crate) struct StagedState {
    pub size: u64,
    /// The server version this content was based on.
    pub base: Option<ETag>,
    /// Whether the path exists on the server (decides If-Match vs If-None-Match).
    pub exists_remote: bool,
    /// Bumped on every change; `uploaded` is the version last uploaded.
    pub version: u64,
    pub uploaded: u64,
    /// An upload is running.
    pub uploading: bool,
    /// Why the last upload failed, if it did.
    pub error: Option<String>,
    /// Write handles open on it.
    pub writers: u32,
}

impl StagedState {
    pub fn dirty(&self) -> bool {
        self.version != self.uploaded
    }
}

/// A file being written, kept whole on local disk.
#[derive(Debug)]
pub(crate) struct Staged {
    pub path: PathBuf,
    pub file: File,
    pub state: Mutex<StagedState>,
    pub upload_lock: tokio::sync::Mutex<()>,
}

impl Staged {
    pub fn new(path: PathBuf, file: File, state: StagedState) -> Staged {
        Staged {
            path,
            file,
            state: Mutex::new(state),
            upload_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, StagedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> StagedState {
        self.state().clone()
    }
}

/// Runs blocking file I/O off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("blocking task failed: {e}")))?
}

pub(crate) async fn pwrite(st: Arc<Staged>, offset: u64, data: Vec<u8>) -> std::io::Result<()> {
    blocking(move || st.file.write_all_at(&data, offset)).await
}

pub(crate) async fn pread(st: Arc<Staged>, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    blocking(move || {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = st.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    })
    .await
}
