//! Read-only shared mappings of object files, for replies that need no copy in the daemon.
//!
//! A FUSE read reply is written to `/dev/fuse` from a user buffer; the kernel copies it into
//! the mount's page cache. Read into a buffer first, the bytes would be copied twice (the
//! object file's page cache to the buffer, the buffer to the mount). A reply that points into
//! a mapping of the object file is copied once, straight from the object file's page cache.
//!
//! Safety rests on the cache's invariants: a block recorded present is never rewritten, and
//! an object file is never truncated (only unlinked, which keeps a mapping valid), so the
//! bytes behind a [`MappedRange`] (present blocks only) neither change nor vanish while it
//! lives. Only a file shortened behind the cache's back could fault; the reply's copy is made
//! by the kernel, which fails it (`EFAULT`, the read ends in `EIO`) instead of signalling.
//! Residency is checked first (`mincore`), so a reply does not wait for the disk on an async
//! worker; pages evicted between the check and the copy are read back by the kernel.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Pages counted by `mincore`.
const PAGE: usize = 4096;
/// Bytes served from one mapping between two drops of its page-table entries (see
/// [`Mapping::served`]).
const UNMAP_EVERY: u64 = 32 << 20;

/// A whole object file mapped read-only and shared; unmapped on drop.
pub(super) struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Bytes served since the page-table entries were last dropped.
    since_unmap: AtomicU64,
}

// SAFETY: the mapping is read-only and never unmapped while shared (drop needs the last Arc).
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent readers of read-only memory are fine.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (`len` > 0).
    pub(super) fn new(file: &File, len: u64) -> io::Result<Arc<Mapping>> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh mapping chosen by the kernel; the fd stays valid for the call.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Mapping {
            ptr: ptr.cast(),
            len,
            since_unmap: AtomicU64::new(0),
        }))
    }

    /// Whether every page of `range` is in the page cache (reading it would not wait for the
    /// disk). False on any error.
    pub(super) fn resident(&self, start: usize, end: usize) -> bool {
        if start >= end || end > self.len {
            return false;
        }
        let first = start / PAGE * PAGE;
        let pages = (end - first).div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `first` is page-aligned and inside the mapping; the vector has one byte per
        // page of the range.
        let r = unsafe {
            libc::mincore(
                self.ptr.add(first).cast(),
                end - first,
                vec.as_mut_ptr().cast(),
            )
        };
        r == 0 && vec.iter().all(|b| b & 1 == 1)
    }

    /// Maps the page-table entries of `range` in one call (its pages are resident), so the
    /// kernel's copy of a reply finds them all mapped instead of faulting each page in.
    pub(super) fn populate(&self, start: usize, end: usize) {
        let first = start / PAGE * PAGE;
        // SAFETY: a range inside our read-only mapping; populating reads nothing itself.
        unsafe {
            libc::madvise(
                self.ptr.add(first).cast(),
                end - first,
                libc::MADV_POPULATE_READ,
            );
        }
    }

    /// Counts `len` bytes served. The kernel maps each page a reply is copied from into the
    /// daemon, where it would stay (a whole file read would show as that much resident memory
    /// of the daemon, though it is only the page cache): every [`UNMAP_EVERY`] bytes the
    /// mapping's page-table entries are dropped (`MADV_DONTNEED`; the page cache keeps the
    /// pages, and a reply still being copied takes them again).
    pub(super) fn served(&self, len: usize) {
        let before = self.since_unmap.fetch_add(len as u64, Ordering::Relaxed);
        if before + len as u64 >= UNMAP_EVERY && before < UNMAP_EVERY {
            self.since_unmap.store(0, Ordering::Relaxed);
            // SAFETY: the whole mapping, which is ours; dropping the entries of a shared file
            // mapping loses nothing (its pages belong to the file).
            unsafe {
                libc::madvise(self.ptr.cast(), self.len, libc::MADV_DONTNEED);
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are the ones mmap returned; nothing borrows it now.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Bytes of a mapping (present blocks of an object), the owner of a `Bytes`.
pub(super) struct MappedRange {
    pub(super) map: Arc<Mapping>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        debug_assert!(self.start + self.len <= self.map.len);
        // SAFETY: the range is inside the mapping (checked at construction), which lives as
        // long as `self`; its pages are present blocks, which the cache never rewrites.
        unsafe { std::slice::from_raw_parts(self.map.ptr.add(self.start), self.len) }
    }
}
