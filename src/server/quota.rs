//! Quota accounting for the embedded server.
//!
//! `used` is the total size of the regular files under the served directory. It is computed once
//! at start by walking the tree ([`scan`]) and then kept up to date by the filesystem wrapper,
//! which applies every change (PUT commit, COPY, DELETE, MOVE over a file) under the one mutex
//! here, together with the syscall that makes the change, so concurrent requests cannot make the
//! counter drift. A PROPFIND therefore costs one mutex lock, never a walk.
//!
//! Writes in flight *reserve* the bytes by which they will grow their target (`reserved`), so two
//! concurrent uploads cannot both squeeze into the same free space.
//!
//! Limits of the approach: changes made to the directory behind the server's back (another
//! process writing into it) are not seen until the next start. Symbolic links count as zero bytes
//! and are not followed, hard links count once per name.

use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::fs::is_hidden_name;
use super::props::PROPS_PREFIX;

/// The counters, behind [`Quota::lock`].
#[derive(Debug, Default)]
pub(crate) struct QuotaState {
    /// Bytes in regular files under the root (committed data only).
    pub used: u64,
    /// Bytes promised to writes in flight (growth over the files they replace).
    pub reserved: u64,
}

/// Quota limit and usage, shared by every request.
#[derive(Debug)]
pub(crate) struct Quota {
    limit: u64,
    state: Mutex<QuotaState>,
}

impl Quota {
    pub fn new(limit: u64, used: u64) -> Quota {
        Quota {
            limit,
            state: Mutex::new(QuotaState { used, reserved: 0 }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes used by committed files.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Locks the counters. Callers that change the tree hold this across the syscall.
    pub fn lock(&self) -> MutexGuard<'_, QuotaState> {
        // A panic while holding the lock leaves plain integers behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `bytes` more for a write in flight; false when that would exceed the limit.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let mut st = self.lock();
        let wanted = st.used.saturating_add(st.reserved).saturating_add(bytes);
        if wanted > self.limit {
            return false;
        }
        st.reserved += bytes;
        true
    }

    /// Returns a reservation made with [`try_reserve`](Self::try_reserve).
    pub fn release(&self, bytes: u64) {
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(bytes);
    }
}

/// Walks `root` and returns the total size of the regular files in it.
///
/// Leftover upload temp files (from a crash) are deleted on the way and not counted, nor are
/// property files. Symbolic links are not followed. Blocking: run it on a blocking thread.
pub(crate) fn scan(root: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // The root must be readable; an unreadable subdirectory is skipped (the server
            // could not serve it either).
            Err(e) if dir != root => {
                tracing::warn!(dir = %dir.display(), error = %e, "quota scan: skipping unreadable directory");
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let file_type = entry.file_type()?;
            if is_hidden_name(name.as_encoded_bytes()) {
                if file_type.is_file() {
                    let path = entry.path();
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed a leftover upload temp file")
                        }
                        Err(e) => tracing::warn!(path = %path.display(), error = %e,
                            "could not remove a leftover upload temp file"),
                    }
                }
                continue;
            }
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if name.as_encoded_bytes().starts_with(PROPS_PREFIX.as_bytes()) {
                // Property files are metadata, not counted (as they are not while serving).
            } else if file_type.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_and_release() {
        let q = Quota::new(100, 40);
        assert!(q.try_reserve(60));
        assert!(!q.try_reserve(1));
        q.release(60);
        assert!(q.try_reserve(1));
        assert!(q.try_reserve(0));
    }

    #[test]
    fn scan_counts_files_and_removes_temps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"12345").unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/b"), vec![0u8; 1000]).unwrap();
        let temp = dir.path().join("sub/.cloudmount-put-0123456789abcdef.tmp");
        std::fs::write(&temp, b"partial").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join(".cloudmount-props-a"), b"cmprops1").unwrap();
        assert_eq!(scan(dir.path()).unwrap(), 1005);
        assert!(!temp.exists());
        assert!(dir.path().join(".cloudmount-props-a").exists());
    }
}
