//! What one side holds at a path, and the last state both sides agreed on (the base).
//!
//! Each side is compared only with its own last synced state: a local file with the local half
//! of the base, a server entry with the server half. A local mtime is never compared with the
//! server's `getlastmodified`.

use serde::{Deserialize, Serialize};

/// File or directory. Symlinks and special files are never synced (the local scan reports them
/// as problems instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
}

/// A local file or directory as the scan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMeta {
    pub kind: Kind,
    /// Bytes (0 for directories).
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub inode: u64,
    /// SHA-256 of the content, when it was computed (files only).
    pub hash: Option<[u8; 32]>,
}

impl LocalMeta {
    /// Whether this differs from the base's local half: kind, size or mtime changed. When both
    /// hashes are known and equal, a touch (mtime only) is not a change.
    pub fn changed_since(&self, base: &LocalMeta) -> bool {
        if self.kind != base.kind {
            return true;
        }
        if self.kind == Kind::Dir {
            return false;
        }
        if self.size != base.size {
            return true;
        }
        if self.mtime_ns == base.mtime_ns {
            return false;
        }
        match (&self.hash, &base.hash) {
            (Some(a), Some(b)) => a != b,
            _ => true,
        }
    }
}

/// A server entry as the listing saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMeta {
    pub kind: Kind,
    pub size: u64,
    /// The version: the listing's ETag, or a stand-in made of size and last-modified when the
    /// server lists none (see [`crate::remote::ETag::stand_in`]). `None`: unknown.
    pub etag: Option<String>,
    /// Last-modified in seconds since the epoch, when the server says it.
    pub mtime: Option<i64>,
}

impl RemoteMeta {
    /// Whether this differs from the base's server half. An unknown version is a change
    /// ("unknown" is never "unchanged").
    pub fn changed_since(&self, base: &RemoteMeta) -> bool {
        if self.kind != base.kind {
            return true;
        }
        if self.kind == Kind::Dir {
            return false;
        }
        match (&self.etag, &base.etag) {
            // Tags compare by value: Apache lists a file as W/"x" within a second of its change
            // and as "x" after (the same version).
            (Some(a), Some(b)) => {
                crate::remote::ETag::parse(a) != crate::remote::ETag::parse(b)
                    || self.size != base.size
            }
            _ => true,
        }
    }
}

/// The last state both sides agreed on at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub local: LocalMeta,
    pub remote: RemoteMeta,
}
