//! How the kernel serves each open file: through its page cache, or from a complete cache
//! file itself (FUSE passthrough).
//!
//! - **Passthrough**, in a read-only area or mount only, for an open of a large file whose
//!   current version is wholly in the cache: the kernel reads the cache file as if it were
//!   the file, with no request to the daemon and no second copy of the pages. A warm re-read
//!   runs at page-cache speed.
//! - **Cached** (the kernel's page cache, as for any file) for everything else, and for every
//!   open when passthrough is not available (it needs CAP_SYS_ADMIN and Linux 6.9) or
//!   switched off.
//!
//! **Not direct I/O for cold reads.** It would spare the second copy of a cold file's pages
//! (a cold 1 GiB read took 0.71–0.81 s with it against 0.87–2.1 s here), but it takes the
//! kernel's read-ahead and page cache away from the reader: 256 MiB read 4 KiB at a time took
//! 4.0 s instead of 0.3 s, and a database rereading its pages would ask the daemon each time.
//!
//! **Why never where files can be written.** The kernel opens a passthrough open's backing
//! file with the open's own flags and the daemon's credentials, and maps it for mmap. A writer
//! that opens the file while a passthrough reader has it open must itself be passthrough (see
//! below), so a shared writable mapping of it would write into the cache file: the bytes would
//! change a cached version behind the cache's back and never reach the upload queue (lost).
//! Refusing such writers instead (the kernel's answer to a non-passthrough open) would make
//! `open(O_WRONLY)` fail while someone reads the file. Where nobody can write, neither happens.
//!
//! # The kernel's rule, and ours
//!
//! Linux keeps one I/O mode per inode. While a passthrough open exists, every new open of the
//! inode must be passthrough with the *same* backing file (or it fails with EIO); a
//! passthrough open fails while a page-cache open (or a shared mmap of a direct one) exists.
//! So [`NodeIo::choose`] starts a passthrough backing only when the inode has no open at all,
//! and while one exists answers every open with it: with `direct` set (reads and writes come
//! to the daemon, which serves the current content) unless the open is a reader of exactly
//! the backing's version (`FOPEN_DIRECT_IO` with passthrough: reads and writes come to the
//! daemon, only mmap uses the backing). So when the server's version changes while a passthrough reader is
//! open, readers opened after it read the new version with read(2), but their mmap still maps
//! the old version's file until every passthrough open is closed.
//!
//! The counts are taken at open and given back at release. The kernel leaves an inode's mode
//! before it sends the release, so the counts here are never below the kernel's.

use std::fs::File;
use std::sync::Arc;

use crate::cache::CacheObject;

/// How the kernel serves one open file (the answer to an open).
#[derive(Debug, Clone)]
pub enum OpenIo {
    /// Through the kernel's page cache.
    Cached,
    /// The kernel serves the file from `backing`, a descriptor of a complete cache file (the
    /// same file for every passthrough open of the inode while one exists). With `direct`,
    /// reads and writes still come to the daemon; only mmap maps the backing file.
    Passthrough { backing: Arc<File>, direct: bool },
}

/// The kind of an open, kept by its handle to give its count back at release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandleIo {
    Cached,
    Passthrough,
}

/// The backing file of an inode's passthrough opens and the version it holds.
#[derive(Debug)]
pub(crate) struct Backing {
    object: Arc<CacheObject>,
    file: Arc<File>,
}

/// What an open asks for.
pub(crate) enum Want<'a> {
    /// A writer, or a reader the page cache serves best (small or staged file).
    PageCache,
    /// A reader of a large file's current version, with its cache object.
    LargeRead(&'a Arc<CacheObject>),
}

/// The opens of one inode, by how the kernel serves them.
#[derive(Debug, Default)]
pub(crate) struct NodeIo {
    cached: u32,
    passthrough: u32,
    /// Set while `passthrough > 0`.
    backing: Option<Backing>,
}

impl NodeIo {
    /// Chooses how to serve a new open and counts it. `enabled`: passthrough may be used (it
    /// works on this mount, and the file cannot be written). A new backing is a second
    /// descriptor of the complete object's file; if that fails the open uses the page cache.
    pub fn choose(&mut self, enabled: bool, want: Want<'_>) -> (HandleIo, OpenIo) {
        if let Some(b) = &self.backing {
            // Every open must be passthrough with this file while one is.
            // Same version key, same bytes (a complete object is never rewritten).
            let same = matches!(want, Want::LargeRead(o) if o.key() == b.object.key());
            self.passthrough += 1;
            let io = OpenIo::Passthrough {
                backing: b.file.clone(),
                direct: !same,
            };
            return (HandleIo::Passthrough, io);
        }
        if let Want::LargeRead(object) = want {
            tracing::debug!(
                enabled,
                opens = self.opens(),
                complete = object.is_complete(),
                "large read open"
            );
            if enabled && self.opens() == 0 && object.is_complete() {
                match object.file_handle() {
                    Ok(file) => {
                        let file = Arc::new(file);
                        self.backing = Some(Backing {
                            object: object.clone(),
                            file: file.clone(),
                        });
                        self.passthrough = 1;
                        let io = OpenIo::Passthrough {
                            backing: file,
                            direct: false,
                        };
                        return (HandleIo::Passthrough, io);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot open the cache file for passthrough");
                    }
                }
            }
        }
        self.cached += 1;
        (HandleIo::Cached, OpenIo::Cached)
    }

    /// Gives back the count of a released open.
    pub fn release(&mut self, io: HandleIo) {
        match io {
            HandleIo::Cached => self.cached = self.cached.saturating_sub(1),
            HandleIo::Passthrough => {
                self.passthrough = self.passthrough.saturating_sub(1);
                if self.passthrough == 0 {
                    self.backing = None;
                }
            }
        }
    }

    /// The kernel refused a passthrough open this node counted: it is served through the page
    /// cache instead.
    pub fn passthrough_refused(&mut self) {
        self.release(HandleIo::Passthrough);
        self.cached += 1;
    }

    /// Opens of any kind.
    pub fn opens(&self) -> u32 {
        self.cached + self.passthrough
    }
}
