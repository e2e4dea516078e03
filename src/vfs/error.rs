//! Errors of the filesystem layer and the one mapping of every error to an errno.
//!
//! Each error below the vfs (remote, cache, metadata, local I/O) arrives wrapped in
//! [`VfsError`]; [`VfsError::errno`] is an exhaustive match, so a new error variant anywhere
//! cannot silently become the wrong errno. Errors without a precise errno become `EIO`, and are
//! logged with their full reason where they are mapped.

use crate::cache::CacheError;
use crate::meta::MetaError;
use crate::remote::RemoteError;

#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only area")]
    ReadOnly,
    #[error("the file is a running program")]
    TextBusy,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("rename across areas")]
    CrossDevice,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("not supported over WebDAV: {0}")]
    NotSupported(&'static str),
    #[error("no such attribute")]
    NoAttr,
    #[error("bad file handle")]
    BadHandle,
    #[error("area {0} is not part of this mount")]
    AreaNotMounted(crate::meta::AreaId),
    #[error("the file changed on the server: {0}")]
    Changed(String),
    #[error("not on this device: a thumbnailer does not download files larger than 8 MiB")]
    NotCachedForPreview,
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type VfsResult<T> = Result<T, VfsError>;

/// SQLite's "database or disk is full".
fn sqlite_disk_full(e: &MetaError) -> bool {
    matches!(e, MetaError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
        if f.code == rusqlite::ErrorCode::DiskFull)
}

fn io_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl VfsError {
    /// The local disk (cache, metadata store) has no room: what the read path survives by
    /// serving downloads without keeping them.
    pub fn is_local_disk_full(&self) -> bool {
        match self {
            VfsError::Meta(e) | VfsError::Cache(CacheError::Meta(e)) => sqlite_disk_full(e),
            VfsError::Cache(CacheError::Io { source, .. }) => io_full(source),
            VfsError::Io(e) => io_full(e),
            _ => false,
        }
    }

    /// The errno reported to the kernel. Logs the reason of errors that become EIO.
    pub fn errno(&self) -> i32 {
        use libc::*;
        let errno = match self {
            VfsError::NotFound => ENOENT,
            VfsError::Exists => EEXIST,
            VfsError::NotDir => ENOTDIR,
            VfsError::IsDir => EISDIR,
            VfsError::NotEmpty => ENOTEMPTY,
            VfsError::ReadOnly => EROFS,
            VfsError::TextBusy => ETXTBSY,
            VfsError::NotPermitted(_) => EPERM,
            VfsError::NoSpace(_) => ENOSPC,
            VfsError::CrossDevice => EXDEV,
            VfsError::NameTooLong => ENAMETOOLONG,
            VfsError::Invalid(_) => EINVAL,
            VfsError::NotSupported(_) => ENOTSUP,
            VfsError::NoAttr => ENODATA,
            VfsError::BadHandle => EBADF,
            VfsError::Changed(_) | VfsError::AreaNotMounted(_) | VfsError::NotCachedForPreview => {
                EIO
            }
            VfsError::Remote(e) => match e {
                RemoteError::NotFound { .. } => ENOENT,
                RemoteError::MissingParent { .. } => ENOENT,
                RemoteError::AlreadyExists { .. } => EEXIST,
                RemoteError::Auth { .. } | RemoteError::Forbidden { .. } => EACCES,
                RemoteError::InsufficientStorage { .. } => ENOSPC,
                RemoteError::Locked { .. } => EBUSY,
                RemoteError::IsADirectory { .. } => EISDIR,
                RemoteError::NotADirectory { .. } => ENOTDIR,
                RemoteError::InvalidPath { .. } => EINVAL,
                RemoteError::PreconditionFailed { .. }
                | RemoteError::VersionChanged { .. }
                | RemoteError::Transient { .. }
                | RemoteError::Status { .. }
                | RemoteError::BadResponse { .. }
                | RemoteError::Config(_)
                | RemoteError::Io(_) => EIO,
            },
            // The local disk is full: the metadata store cannot commit (SQLITE_FULL).
            VfsError::Meta(e) | VfsError::Cache(CacheError::Meta(e)) if sqlite_disk_full(e) => {
                ENOSPC
            }
            VfsError::Cache(CacheError::Io { source, .. }) if io_full(source) => ENOSPC,
            VfsError::Cache(_) | VfsError::Meta(_) => EIO,
            VfsError::Io(e) => match e.raw_os_error() {
                Some(ENOSPC) => ENOSPC,
                Some(EDQUOT) => EDQUOT,
                _ => EIO,
            },
        };
        // A thumbnailer kept off a file is expected (a folder of photos shown): not a warning.
        if errno == EIO && !matches!(self, VfsError::NotCachedForPreview) {
            tracing::warn!(error = %self, "I/O error reported to the application");
        }
        errno
    }
}
