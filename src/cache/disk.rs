//! The local disk under the cache: how much is free, and the floor cloudmount leaves free on
//! it. Pins that would go below the floor are refused (`vfs/pins.rs`); the cache stores no new
//! blocks while the disk is below it (reads are then served from their downloads, uncached,
//! as on a full disk), so cloudmount never fills the disk.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The free space cloudmount leaves on the cache's disk: 5 % of it, at most 1 GiB.
pub fn disk_floor(total: u64) -> u64 {
    (total / 20).min(1 << 30)
}

/// Free bytes (for an unprivileged user) and total bytes of the file system holding `dir`.
pub fn disk_room(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = s.f_frsize as u64;
    Ok((s.f_bavail as u64 * frsize, s.f_blocks as u64 * frsize))
}

/// How long a look that found room is trusted (a look that found none is not: the next store
/// looks again, so caching resumes as soon as room is made).
const ROOM_TTL: Duration = Duration::from_secs(1);

/// Whether the cache's disk is below its floor, looked at most every [`ROOM_TTL`] while there is
/// room.
#[derive(Default)]
pub(super) struct DiskWatch {
    last_ok: Mutex<Option<Instant>>,
}

impl DiskWatch {
    /// True when the disk holding `dir` has less free than [`disk_floor`].
    pub(super) fn below_floor(&self, dir: &Path) -> bool {
        let mut last = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < ROOM_TTL) {
            return false;
        }
        let low = match disk_room(dir) {
            Ok((free, total)) => free < disk_floor(total),
            // Cannot tell: the writes themselves will say.
            Err(_) => false,
        };
        *last = (!low).then(Instant::now);
        if low {
            tracing::debug!(dir = %dir.display(), "the cache's disk is below its free-space floor: no new blocks are kept");
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_five_percent_at_most_a_gibibyte() {
        assert_eq!(disk_floor(100 << 20), 5 << 20);
        assert_eq!(disk_floor(1 << 40), 1 << 30);
        let (free, total) = disk_room(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
