//! The block cache's error type, and the helper that names the path of a failed I/O call.

use std::io;
use std::path::{Path, PathBuf};

use crate::meta::MetaError;
use crate::remote::RemotePath;

/// Errors of the block cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("cache: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bytes {offset}..{end} of {path} are not cached")]
    NotCached {
        path: RemotePath,
        offset: u64,
        end: u64,
    },
    #[error(
        "bad block write to {path}: {len} bytes at {offset} are not whole {block_size}-byte \
         blocks inside its {size} bytes"
    )]
    BadWrite {
        path: RemotePath,
        offset: u64,
        len: u64,
        block_size: u64,
        size: u64,
    },
    #[error("{}: {actual} bytes, but the object for {path} must have {expected}", file.display())]
    SizeMismatch {
        file: PathBuf,
        path: RemotePath,
        expected: u64,
        actual: u64,
    },
    #[error("cached object file {} is damaged: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
    #[error("invalid block size {0}: must be a power of two between 512 bytes and 1 GiB")]
    BadBlockSize(u64),
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
