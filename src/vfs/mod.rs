//! The filesystem logic, free of fuser types: inodes, areas, handles, the read path (block
//! cache) and the write path (staging, upload). The FUSE adapter (`fuse/`) calls these async
//! methods from tasks spawned per request; none of them blocks a FUSE thread.

pub mod error;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use error::{VfsError, VfsResult};
pub use types::*;

use crate::remote::Remote;

/// One remote root shown in the mount.
pub struct AreaSpec {
    /// Folder name at the mount's root (ignored when the single area is the root).
    pub name: String,
    pub remote: Arc<dyn Remote>,
    pub read_only: bool,
}

/// Options of the filesystem.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// How long a directory listing (and the kernel's entry/attr caches) is trusted.
    pub dir_ttl: Duration,
    /// Owner shown for every file.
    pub uid: u32,
    pub gid: u32,
    /// The whole mount is read-only.
    pub read_only: bool,
    /// Show each area as a folder at the root (profiles); with false, the single area is the root.
    pub areas_as_folders: bool,
}

/// Everything needed to open the filesystem.
pub struct VfsSetup {
    pub areas: Vec<AreaSpec>,
    pub opts: VfsOptions,
    /// Holds `meta.db`, `objects/` (block cache) and `staging/` (files being written).
    pub cache_dir: PathBuf,
    /// Budget of clean cached data, in bytes.
    pub cache_size: u64,
}

/// The filesystem.
pub struct Vfs {
    opts: VfsOptions,
}

const NOT_YET: VfsError = VfsError::NotSupported("not implemented yet");

impl Vfs {
    /// Opens the metadata store and block cache under `setup.cache_dir` (created if missing).
    pub fn new(setup: VfsSetup) -> VfsResult<Arc<Vfs>> {
        Ok(Arc::new(Vfs { opts: setup.opts }))
    }

    pub fn ttl(&self) -> Duration {
        self.opts.dir_ttl
    }
    pub async fn lookup(&self, _parent: Ino, _name: &str) -> VfsResult<Attr> {
        Err(NOT_YET)
    }
    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, _ino: Ino, _nlookup: u64) {}
    pub async fn getattr(&self, _ino: Ino) -> VfsResult<Attr> {
        Err(NOT_YET)
    }
    pub async fn setattr(&self, _ino: Ino, _fh: Option<u64>, _set: SetAttr) -> VfsResult<Attr> {
        Err(NOT_YET)
    }
    pub async fn opendir(&self, _ino: Ino) -> VfsResult<u64> {
        Err(NOT_YET)
    }
    /// Entries of an open directory after `offset` (0 = from the start, including `.` and
    /// `..`); each comes with the offset of the entry after it.
    pub async fn readdir(
        &self,
        _ino: Ino,
        _fh: u64,
        _offset: u64,
    ) -> VfsResult<Vec<(u64, DirEntry)>> {
        Err(NOT_YET)
    }
    pub fn releasedir(&self, _fh: u64) {}
    pub async fn open(&self, _ino: Ino, _mode: OpenMode) -> VfsResult<Opened> {
        Err(NOT_YET)
    }
    pub async fn read(&self, _ino: Ino, _fh: u64, _offset: u64, _size: u32) -> VfsResult<Bytes> {
        Err(NOT_YET)
    }
    pub async fn write(&self, _ino: Ino, _fh: u64, _offset: u64, _data: &[u8]) -> VfsResult<u32> {
        Err(NOT_YET)
    }
    pub async fn create(
        &self,
        _parent: Ino,
        _name: &str,
        _mode: OpenMode,
    ) -> VfsResult<(Attr, Opened)> {
        Err(NOT_YET)
    }
    pub async fn mkdir(&self, _parent: Ino, _name: &str) -> VfsResult<Attr> {
        Err(NOT_YET)
    }
    pub async fn unlink(&self, _parent: Ino, _name: &str) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn rmdir(&self, _parent: Ino, _name: &str) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn rename(
        &self,
        _parent: Ino,
        _name: &str,
        _new_parent: Ino,
        _new_name: &str,
        _flags: RenameFlags,
    ) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn flush(&self, _ino: Ino, _fh: u64) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn fsync(&self, _ino: Ino, _fh: u64) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn release(&self, _ino: Ino, _fh: u64) -> VfsResult<()> {
        Err(NOT_YET)
    }
    pub async fn statfs(&self) -> VfsResult<FsStats> {
        Err(NOT_YET)
    }
    pub async fn getxattr(&self, _ino: Ino, _name: &str) -> VfsResult<Vec<u8>> {
        Err(NOT_YET)
    }
    pub async fn listxattr(&self, _ino: Ino) -> VfsResult<Vec<String>> {
        Err(NOT_YET)
    }
    /// Finishes uploads in flight and persists state; called once at unmount.
    pub async fn shutdown(&self) {}
}
