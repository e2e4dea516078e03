//! Where everything lives in a cache directory: [`CacheLayout`] names every path in it, and
//! the rule that names object files.
//!
//! ```text
//! <cache dir>/daemon.lock               flock'ed by the daemon for its life (no content)
//! <cache dir>/meta.db                   the metadata store (SQLite; with -wal and -shm)
//! <cache dir>/objects/<h2>/<h32>[-n]     one sparse file per cached object
//! <cache dir>/staging/                  local copies of files written through the mount
//! <cache dir>/recovered/                files written but never closed before a crash
//! <cache dir>/objects.migrating/        only while an old layout is moved (see `migrate.rs`)
//! ```
//!
//! Everyone asks the layout for these paths; nothing else joins names onto a cache directory.
//! The format of each is described in `docs/design.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{io_err, CacheError};
use super::io::sync_dir;
use crate::meta::AreaId;
use crate::remote::{ETag, RemotePath};

const META_DB: &str = "meta.db";
const DAEMON_LOCK: &str = "daemon.lock";
const OBJECTS_DIR: &str = "objects";
const STAGING_DIR: &str = "staging";
const RECOVERED_DIR: &str = "recovered";
const MIGRATING_DIR: &str = "objects.migrating";

/// Hash domain of object file names (a new naming rule takes a new domain).
const NAME_DOMAIN: &[u8] = b"cloudmount-object-v1\0";

/// The paths of one cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayout {
    root: PathBuf,
}

impl CacheLayout {
    /// The layout of the cache directory `root` (nothing is created or checked).
    pub fn new(root: impl Into<PathBuf>) -> CacheLayout {
        CacheLayout { root: root.into() }
    }

    /// The layout whose staging directory is `staging` (the vfs keeps only that path).
    pub fn of_staging(staging: &Path) -> CacheLayout {
        CacheLayout::new(staging.parent().unwrap_or(Path::new("")))
    }

    /// The cache directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata store.
    pub fn meta_db(&self) -> PathBuf {
        self.root.join(META_DB)
    }

    /// The daemon's lock file: whoever holds its `flock` owns the directory.
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join(DAEMON_LOCK)
    }

    /// The block cache's files, fanned out into 256 directories.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join(OBJECTS_DIR)
    }

    /// The fan-out directory `h2` (two lower-case hex digits) of [`Self::objects_dir`].
    pub fn fanout_dir(&self, h2: u8) -> PathBuf {
        self.objects_dir().join(format!("{h2:02x}"))
    }

    /// The file of the object named `name` (a name [`valid_name`] accepts).
    pub fn object_file(&self, name: &str) -> PathBuf {
        self.objects_dir().join(&name[..2]).join(name)
    }

    /// Local copies of files written through the mount, until uploaded.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    /// Files that were being written when the daemon stopped and were never closed.
    pub fn recovered_dir(&self) -> PathBuf {
        self.root.join(RECOVERED_DIR)
    }

    /// The old `objects/` directory while the nested layout is moved (see `migrate.rs`).
    pub(super) fn migrating_dir(&self) -> PathBuf {
        self.root.join(MIGRATING_DIR)
    }

    /// Where the releases before the layout fix kept object files: `objects/objects/`.
    pub(super) fn nested_objects_dir(&self) -> PathBuf {
        self.objects_dir().join(OBJECTS_DIR)
    }

    /// Creates `objects/` and its 256 fan-out directories, durably, so that a new object file
    /// only ever needs its own directory synced.
    pub(super) fn create_object_dirs(&self) -> Result<(), CacheError> {
        let objects = self.objects_dir();
        fs::create_dir_all(&objects).map_err(io_err("create directory", &objects))?;
        let mut created = false;
        for i in 0..=255u8 {
            let d = self.fanout_dir(i);
            match fs::create_dir(&d) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create directory", &d)(e)),
            }
        }
        if created {
            sync_dir(&objects)?;
            sync_dir(&self.root)?;
        }
        Ok(())
    }
}

/// The file name of a new object: the first 32 hex digits of SHA-256 over the name domain, the
/// area (4 bytes LE), the path, a NUL and the ETag's value.
pub(super) fn object_name(area: AreaId, path: &RemotePath, etag: &ETag) -> String {
    let mut h = Sha256::new();
    h.update(NAME_DOMAIN);
    h.update(area.to_le_bytes());
    h.update(path.as_str().as_bytes());
    h.update([0u8]);
    h.update(etag.value().as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `h32` or `h32-n`, lower-case hex.
pub(super) fn valid_name(name: &str) -> bool {
    let (hash, suffix) = match name.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (name, None),
    };
    hash.len() == 32
        && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && suffix
            .is_none_or(|s| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root() {
        let l = CacheLayout::new("/c");
        assert_eq!(l.root(), Path::new("/c"));
        assert_eq!(l.meta_db(), Path::new("/c/meta.db"));
        assert_eq!(l.daemon_lock(), Path::new("/c/daemon.lock"));
        assert_eq!(l.objects_dir(), Path::new("/c/objects"));
        assert_eq!(l.fanout_dir(0xa7), Path::new("/c/objects/a7"));
        assert_eq!(
            l.object_file("ab0123456789abcdef0123456789abcd-2"),
            Path::new("/c/objects/ab/ab0123456789abcdef0123456789abcd-2")
        );
        assert_eq!(l.staging_dir(), Path::new("/c/staging"));
        assert_eq!(l.recovered_dir(), Path::new("/c/recovered"));
        assert_eq!(l.migrating_dir(), Path::new("/c/objects.migrating"));
        assert_eq!(l.nested_objects_dir(), Path::new("/c/objects/objects"));
        assert_eq!(CacheLayout::of_staging(&l.staging_dir()), l);
    }
}
