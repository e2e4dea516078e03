//! File I/O helpers of the cache: vectored positioned writes, directory fsync, and moving a
//! complete file in (rename, or copy + fsync + rename across filesystems).

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::error::{io_err, CacheError};

/// Writes bytes `[from, to)` of the concatenation of `parts` to `file` at `base + from`, with
/// `pwritev` (at most `IOV_MAX` pieces a call), until all are written.
pub(super) fn write_all_vectored_at<B: AsRef<[u8]>>(
    file: &File,
    parts: &[B],
    from: u64,
    to: u64,
    base: u64,
) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    // The pieces of [from, to), as slices of the parts.
    let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len());
    let mut at = 0u64;
    for p in parts {
        let p = p.as_ref();
        let (s, e) = (at, at + p.len() as u64);
        at = e;
        if e <= from || s >= to {
            continue;
        }
        let lo = from.saturating_sub(s) as usize;
        let hi = (to.min(e) - s) as usize;
        slices.push(&p[lo..hi]);
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let mut pos = base + from;
    let (mut i, mut skip) = (0usize, 0usize);
    while i < slices.len() {
        let iov: Vec<libc::iovec> = slices[i..slices.len().min(i + IOV_MAX)]
            .iter()
            .enumerate()
            .map(|(k, sl)| {
                let sl = if k == 0 { &sl[skip..] } else { sl };
                libc::iovec {
                    iov_base: sl.as_ptr() as *mut libc::c_void,
                    iov_len: sl.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` and is only read by the
        // kernel; `iov.len()` is at most IOV_MAX.
        let r = unsafe {
            libc::pwritev(
                fd,
                iov.as_ptr(),
                iov.len() as libc::c_int,
                pos as libc::off_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut n = r as usize;
        pos += n as u64;
        // Step over what was written.
        while n > 0 {
            let left = slices[i].len() - skip;
            if n >= left {
                n -= left;
                i += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
        while i < slices.len() && slices[i].len() == skip {
            i += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// fsyncs a directory, making the names in it durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Moves a complete file to `dest`: rename, or copy + fsync + rename across filesystems.
pub(super) fn move_in(src: &Path, dest: &Path) -> Result<(), CacheError> {
    match fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = dest.with_extension("tmp");
            fs::copy(src, &tmp).map_err(io_err("copy into the cache", src))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, dest).map_err(io_err("rename", &tmp))?;
            fs::remove_file(src).map_err(io_err("remove", src))
        }
        Err(e) => Err(io_err("move into the cache", src)(e)),
    }
}
