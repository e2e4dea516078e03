//! The write path: a file open for writing is staged whole in a local file; flush, fsync and
//! close commit it to the durable upload queue (`writeback.rs`), which uploads it later.
//!
//! A [`Staged`] file belongs to an inode, not to a handle: every handle of the inode reads and
//! writes the same bytes, so readers on the mount see writes at once. It knows the version it was
//! based on (`base`, sent as `If-Match`), or that the file is new (`If-None-Match: *`).
//!
//! A staged file may be *noted* as holding the server's version (its size and mtime in the
//! `uploaded_staging` table): the next start then drops it after a crash instead of keeping it
//! aside as a file never closed. The note is taken back before the file changes (see
//! `Vfs::changing`): size and mtime alone miss a change to the same size within one tick of a
//! coarse file clock.
//!
//! Lock order: `Staged::commit_lock` → the inode's lock (`Vfs::inode_lock`) →
//! `Staged::note` (these three async) → `Vfs::tree` → `Staged::state`; none is taken while
//! holding a later one.

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
    /// Bumped on every change; `committed` is the version last made durable and queued,
    /// `uploaded` the version last uploaded (`uploaded <= committed <= version`).
    pub version: u64,
    pub committed: u64,
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

    /// Nobody writes it, nothing is left to upload and no upload runs: it may be unstaged.
    pub fn idle(&self) -> bool {
        self.writers == 0 && !self.dirty() && !self.uploading
    }
}

/// A file being written, kept whole on local disk.
#[derive(Debug)]
pub(crate) struct Staged {
    pub path: PathBuf,
    pub file: File,
    pub state: Mutex<StagedState>,
    /// Serialises commits and the bookkeeping after an upload of this file.
    pub commit_lock: tokio::sync::Mutex<()>,
    /// The staging directory was fsynced after this file was created.
    pub dir_synced: std::sync::atomic::AtomicBool,
    /// Whether the file is noted as holding the server's version. Changes to the file and
    /// its version are made holding this for reading, with the note taken back first; notes
    /// are made holding it for writing.
    pub note: tokio::sync::RwLock<bool>,
}

impl Staged {
    /// `noted`: the file is noted as holding the server's version already.
    pub fn new(path: PathBuf, file: File, state: StagedState, noted: bool) -> Staged {
        Staged {
            path,
            file,
            state: Mutex::new(state),
            commit_lock: tokio::sync::Mutex::new(()),
            dir_synced: std::sync::atomic::AtomicBool::new(false),
            note: tokio::sync::RwLock::new(noted),
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
