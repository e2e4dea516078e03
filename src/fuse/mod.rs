//! The FUSE adapter: the only module that imports fuser.
//!
//! [`FuseFs`] implements `fuser::Filesystem` as a thin shell around [`Vfs`]: each request gets a
//! `tracing` span (operation, request id, inode, handle, name) and is spawned onto the tokio
//! runtime with its reply moved in. The FUSE thread only decodes, spawns and returns: it never
//! waits on the network, so a slow download of one file never stalls `ls` or reads of others.
//! The exceptions answer from memory at once, where a hop to the runtime would cost more than
//! the answer: `forget`, `releasedir`, `listxattr`, and `getxattr` whenever memory knows (see
//! below).
//! Errors are mapped to errno by [`crate::vfs::VfsError::errno`] (the one mapping).
//!
//! What is not supported, and the errno an application sees:
//! - symlinks and hard links (`symlink`, `link`): `EPERM` — WebDAV has neither;
//! - device nodes, FIFOs and sockets (`mknod` of anything but a regular file): `EPERM`;
//! - extended attributes: `user.cloudmount.state` is read-only, `user.cloudmount.pin` can be
//!   set (to `1` or `0`: pin, unpin); setting any other and `removexattr` give `ENOTSUP`;
//!   reading another `user.` attribute is
//!   `ENODATA`, and any attribute of another namespace (`security.selinux`,
//!   `system.posix_acl_access`, `trusted.…`) is `ENOTSUP`: the mount keeps no ACLs or security
//!   labels, and `ls -l`, told so for the first file, stops asking for the others (coreutils
//!   remembers it per device; `ENODATA` would have it ask again for every file). `cp -a` from
//!   the mount takes ENOTSUP as "no ACL" and keeps the mode bits, as from any filesystem
//!   without ACLs. These answers, and the state when memory knows it, are given on the FUSE
//!   thread without a hop to the runtime;
//! - permission checks are the kernel's (`default_permissions`), against the owner and mode the
//!   vfs reports; `access` therefore always allows. The mode given to `create`, `mkdir` and
//!   `mknod` (less the umask) is kept like a chmod's (locally, see `Vfs::setattr`), and the
//!   kernel's open of a program it executes is marked, so that a read-only `O_TRUNC` open of a
//!   running program is `ETXTBSY` (see `Vfs::open`).
//!
//! [`mount`] mounts a [`Vfs`] and gives back a [`MountHandle`] to wait for the end of the session
//! or to unmount it.

mod convert;
pub mod mounts;
mod passthrough;
mod reader;
mod session;

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::Instrument;

use crate::vfs::{Attr, OpenMode, SetAttr, Vfs, VfsError, VfsResult, STATE_XATTR};
use convert::{errno, file_attr, file_type, utf8_name, xattr_answer, XattrAnswer};

pub use mounts::{FuseUnavailable, UnmountError};
pub use session::{mount, MountError, MountHandle, MountOptions};

/// Largest write the kernel sends in one request (it still clamps to its own limit).
const MAX_WRITE: u32 = 1 << 20;
/// Read-ahead asked of the kernel (it clamps to what it offered, 128 KiB by default; see
/// `mounts::raise_read_ahead`).
const MAX_READAHEAD: u32 = 1 << 20;
/// Background requests (read-ahead, async reads) the kernel keeps in flight to us.
const MAX_BACKGROUND: u16 = 64;
/// Inodes are never reused for another file, so the generation stays 0.
const GENERATION: Generation = Generation(0);

/// Counts requests being handled, so shutdown can wait for the last reply.
#[derive(Clone)]
struct Inflight(Arc<watch::Sender<usize>>);

struct InflightGuard(Arc<watch::Sender<usize>>);

impl Inflight {
    fn new() -> Self {
        Inflight(Arc::new(watch::channel(0).0))
    }
    fn enter(&self) -> InflightGuard {
        self.0.send_modify(|n| *n += 1);
        InflightGuard(self.0.clone())
    }
    async fn idle(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The `fuser::Filesystem` over a [`Vfs`].
pub struct FuseFs {
    vfs: Arc<Vfs>,
    rt: Handle,
    inflight: Inflight,
    backings: Arc<passthrough::Backings>,
}

/// A span for one request: operation name plus request id and the given fields.
macro_rules! op_span {
    ($op:literal, $req:expr $(, $($field:tt)*)?) => {
        tracing::warn_span!($op, req = $req.unique().0 $(, $($field)*)?)
    };
}

impl FuseFs {
    pub fn new(vfs: Arc<Vfs>, rt: Handle) -> Self {
        FuseFs {
            vfs,
            rt,
            inflight: Inflight::new(),
            backings: Default::default(),
        }
    }

    /// Runs `fut` on the runtime inside `span`; the FUSE thread returns at once.
    fn spawn<F>(&self, span: tracing::Span, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = self.inflight.enter();
        self.rt.spawn(
            async move {
                fut.await;
                drop(guard);
            }
            .instrument(span),
        );
    }

    /// Runs `f` on the runtime's blocking pool inside `span` (work that reads local files or
    /// the index, never the network); the FUSE thread returns at once.
    fn spawn_blocking(&self, span: tracing::Span, f: impl FnOnce() + Send + 'static) {
        let guard = self.inflight.enter();
        self.rt.spawn_blocking(move || {
            span.in_scope(f);
            drop(guard);
        });
    }

    /// Spawns a request answered with an empty reply.
    fn spawn_empty<F>(&self, span: tracing::Span, reply: ReplyEmpty, fut: F)
    where
        F: Future<Output = VfsResult<()>> + Send + 'static,
    {
        self.spawn(span, async move {
            match fut.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    /// Spawns a request answered with an entry (lookup, mkdir, mknod).
    fn spawn_entry<F>(&self, span: tracing::Span, reply: ReplyEntry, fut: F)
    where
        F: Future<Output = VfsResult<Attr>> + Send + 'static,
    {
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match fut.await {
                Ok(attr) => reply.entry(&vfs.ttl(), &file_attr(&attr), GENERATION),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    /// Spawns a request answered with attributes (getattr, setattr).
    fn spawn_attr<F>(&self, span: tracing::Span, reply: ReplyAttr, fut: F)
    where
        F: Future<Output = VfsResult<Attr>> + Send + 'static,
    {
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match fut.await {
                Ok(attr) => reply.attr(&vfs.ttl(), &file_attr(&attr)),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }
}

/// Answers an open as the vfs chose: page cache or passthrough (with direct I/O when the open
/// must be passthrough but read what the daemon serves, see `vfs/io_mode.rs`). A backing file
/// the kernel refuses makes the open a page-cache one (and the vfs offers no more).
fn reply_opened(
    vfs: &Vfs,
    backings: &passthrough::Backings,
    ino: u64,
    reply: ReplyOpen,
    o: &crate::vfs::Opened,
) {
    let fh = FileHandle(o.fh);
    if let crate::vfs::OpenIo::Passthrough { backing, direct } = &o.io {
        match backings.open(&reply, o.fh, backing) {
            Ok(id) => {
                let flags = if *direct {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                };
                return reply.opened_passthrough(fh, flags, &id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the kernel refused a passthrough file: reads go through the daemon");
                vfs.passthrough_refused(ino, o.fh);
                return reply.opened(fh, FopenFlags::empty());
            }
        }
    }
    reply.opened(fh, convert::fopen_flags(o));
}

/// Logs a failed request (at debug: ENOENT on lookup is routine; EIO is logged with its reason
/// where the vfs maps it) and gives its errno.
fn fail(e: &VfsError) -> Errno {
    let code = errno(e);
    tracing::debug!(errno = code.code(), error = %e, "request failed");
    code
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        use fuser::InitFlags as F;
        // Not asked: FUSE_AUTO_INVAL_DATA (the vfs decides with keep_cache), writeback cache
        // (writes must reach the vfs in order to be staged and uploaded), export support.
        for cap in [
            F::FUSE_ASYNC_READ,
            F::FUSE_BIG_WRITES,
            F::FUSE_ATOMIC_O_TRUNC,
            F::FUSE_DO_READDIRPLUS,
            F::FUSE_READDIRPLUS_AUTO,
            F::FUSE_PARALLEL_DIROPS,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                tracing::debug!(?missing, "capability not offered by the kernel");
            }
        }
        // Passthrough needs CAP_SYS_ADMIN to register backing files. Stack depth 1: the
        // backing files (the cache) are on a plain filesystem.
        let passthrough = passthrough::allowed()
            && config.add_capabilities(F::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.vfs.set_passthrough(passthrough);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let span = op_span!("lookup", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::ENOENT);
        };
        let vfs = self.vfs.clone();
        self.spawn_entry(
            span,
            reply,
            async move { vfs.lookup(parent.0, &name).await },
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(ino.0, nlookup);
    }

    // batch_forget: fuser's default calls `forget` for each node (its `ForgetOne` type is not
    // exported, so it cannot be overridden; `forget` is cheap and synchronous anyway).

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let span = op_span!("getattr", req, ino = ino.0, fh = fh.map(|f| f.0));
        let vfs = self.vfs.clone();
        self.spawn_attr(span, reply, async move { vfs.getattr(ino.0).await });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let span = op_span!("setattr", req, ino = ino.0, fh = fh.map(|f| f.0), ?size);
        let set = convert::set_attr(mode, uid, gid, size, atime, mtime, SystemTime::now());
        let vfs = self.vfs.clone();
        self.spawn_attr(span, reply, async move {
            vfs.setattr(ino.0, fh.map(|f| f.0), set).await
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only (mknod(2) with S_IFREG): created empty, like create + close.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let span = op_span!("mknod", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::EINVAL);
        };
        let vfs = self.vfs.clone();
        self.spawn_entry(span, reply, async move {
            let open = OpenMode {
                write: true,
                ..OpenMode::default()
            };
            let (attr, opened) = vfs.create(parent.0, &name, open).await?;
            let attr = creation_mode(&vfs, attr, Some(opened.fh), mode, umask).await;
            vfs.release(attr.ino, opened.fh).await?;
            Ok(attr)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let span = op_span!("mkdir", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::EINVAL);
        };
        let vfs = self.vfs.clone();
        self.spawn_entry(span, reply, async move {
            let attr = vfs.mkdir(parent.0, &name).await?;
            Ok(creation_mode(&vfs, attr, None, mode, umask).await)
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = op_span!("unlink", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::ENOENT);
        };
        let vfs = self.vfs.clone();
        self.spawn_empty(
            span,
            reply,
            async move { vfs.unlink(parent.0, &name).await },
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = op_span!("rmdir", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::ENOENT);
        };
        let vfs = self.vfs.clone();
        self.spawn_empty(span, reply, async move { vfs.rmdir(parent.0, &name).await });
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let span = op_span!(
            "rename",
            req,
            ino = parent.0,
            name = %name.to_string_lossy(),
            new_ino = newparent.0,
            new_name = %newname.to_string_lossy()
        );
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(newname) = utf8_name(newname) else {
            return reply.error(Errno::EINVAL);
        };
        let flags = match convert::rename_flags(flags) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let vfs = self.vfs.clone();
        self.spawn_empty(span, reply, async move {
            vfs.rename(parent.0, &name, newparent.0, &newname, flags)
                .await
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let span = op_span!("open", req, ino = ino.0, flags = flags.0);
        let mode = OpenMode::from_flags(flags.0);
        // The kernel's own flag for the open of a program it executes (`__FMODE_EXEC`).
        let exec = flags.0 & FMODE_EXEC != 0;
        let pid = req.pid();
        let vfs = self.vfs.clone();
        let backings = self.backings.clone();
        self.spawn(span, async move {
            match vfs.open(ino.0, mode).await {
                Ok(o) => {
                    if exec {
                        vfs.opened_for_exec(o.fh);
                    }
                    // Who opened it is read from /proc (off the async threads), and only when
                    // a thumbnailer's open would change how the handle reads.
                    if !mode.write
                        && vfs.could_preview(o.fh)
                        && tokio::task::spawn_blocking(move || reader::is_thumbnailer(pid))
                            .await
                            .unwrap_or(false)
                    {
                        vfs.opened_by_thumbnailer(o.fh);
                    }
                    reply_opened(&vfs, &backings, ino.0, reply, &o)
                }
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let span = op_span!("read", req, ino = ino.0, fh = fh.0, offset, size);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.read(ino.0, fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let span = op_span!(
            "write",
            req,
            ino = ino.0,
            fh = fh.0,
            offset,
            size = data.len()
        );
        let data = data.to_vec();
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.write(ino.0, fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let span = op_span!("flush", req, ino = ino.0, fh = fh.0);
        let vfs = self.vfs.clone();
        self.spawn_empty(span, reply, async move { vfs.flush(ino.0, fh.0).await });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        let span = op_span!("release", req, ino = ino.0, fh = fh.0);
        let vfs = self.vfs.clone();
        let backings = self.backings.clone();
        self.spawn_empty(span, reply, async move {
            // The kernel has let go of the file: its backing id (if any) may close.
            backings.release(fh.0);
            let flushed = if flush {
                vfs.flush(ino.0, fh.0).await
            } else {
                Ok(())
            };
            // The handle is released even when the flush failed; the first error is reported
            // (the kernel does not pass it on to close(), but it is logged).
            let released = vfs.release(ino.0, fh.0).await;
            flushed.and(released)
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let span = op_span!("fsync", req, ino = ino.0, fh = fh.0);
        let vfs = self.vfs.clone();
        self.spawn_empty(span, reply, async move { vfs.fsync(ino.0, fh.0).await });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let span = op_span!("opendir", req, ino = ino.0);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let span = op_span!("readdir", req, ino = ino.0, fh = fh.0, offset);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.readdir(ino.0, fh.0, offset).await {
                Ok(entries) => {
                    for (next, e) in &entries {
                        let kind = file_type(e.attr.kind);
                        if reply.add(INodeNo(e.attr.ino), *next, kind, &e.name) {
                            break; // buffer full: the kernel asks again from `next`
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let span = op_span!("readdirplus", req, ino = ino.0, fh = fh.0, offset);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            let entries = match vfs.readdir(ino.0, fh.0, offset).await {
                Ok(entries) => entries,
                Err(e) => return reply.error(fail(&e)),
            };
            let ttl = vfs.ttl();
            let mut sent = 0usize;
            for (next, e) in entries {
                // Every entry the kernel receives here (but `.` and `..`) counts as a lookup
                // and will be forgotten later; `Vfs::lookup` takes that reference.
                let counted = !convert::is_dot_or_dotdot(&e.name);
                let attr = if counted {
                    match vfs.lookup(ino.0, &e.name).await {
                        Ok(attr) => attr,
                        Err(err) => {
                            let code = fail(&err);
                            if code == Errno::ENOENT {
                                continue; // gone since the listing: leave it out
                            }
                            if sent == 0 {
                                return reply.error(code);
                            }
                            break; // send what we have; the kernel asks again from here
                        }
                    }
                } else {
                    e.attr
                };
                let full = reply.add(
                    INodeNo(attr.ino),
                    next,
                    &e.name,
                    &ttl,
                    &file_attr(&attr),
                    GENERATION,
                );
                if full {
                    if counted {
                        vfs.forget(attr.ino, 1); // not sent: give the reference back
                    }
                    break;
                }
                sent += 1;
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.vfs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made on the server before their request is answered.
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let span = op_span!("statfs", req);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks,
                    s.blocks_free,
                    s.blocks_avail,
                    s.files,
                    s.files_free,
                    s.block_size,
                    s.name_max,
                    s.block_size,
                ),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let span = op_span!("setxattr", req, ino = ino.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::ENOTSUP);
        };
        let (vfs, value) = (self.vfs.clone(), value.to_vec());
        self.spawn(span, async move {
            match vfs.setxattr(ino.0, &name, &value).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // Answered on this thread whenever memory knows (see the module docs): `ls -l` asks
        // for two attributes of every file it shows, a file manager for the state of each.
        if !convert::is_user_xattr(name) {
            return reply.error(Errno::ENOTSUP);
        }
        if name != STATE_XATTR {
            return reply.error(Errno::NO_XATTR);
        }
        match self.vfs.state_now(ino.0) {
            Some(Ok(state)) => return send_xattr(reply, state.as_str().as_bytes(), size),
            Some(Err(e)) => return reply.error(fail(&e)),
            None => {}
        }
        // Whether the cache holds the file is in its index, on disk: one hop to a thread
        // that may block.
        let span = op_span!("getxattr", req, ino = ino.0, name = STATE_XATTR, size);
        let vfs = self.vfs.clone();
        self.spawn_blocking(span, move || match vfs.state_blocking(ino.0) {
            Ok(state) => send_xattr(reply, state.as_str().as_bytes(), size),
            Err(e) => reply.error(fail(&e)),
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        // From memory, on this thread.
        match self.vfs.xattr_names(ino.0) {
            Ok(names) => send_xattr(reply, &convert::xattr_list(&names), size),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOTSUP);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Not called with `default_permissions`; the kernel checks the mode bits itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let span = op_span!("create", req, ino = parent.0, name = %name.to_string_lossy());
        let Some(name) = utf8_name(name) else {
            return reply.error(Errno::EINVAL);
        };
        let open = OpenMode::from_flags(flags);
        let vfs = self.vfs.clone();
        self.spawn(span, async move {
            match vfs.create(parent.0, &name, open).await {
                Ok((attr, o)) => reply.created(
                    &vfs.ttl(),
                    &file_attr(&creation_mode(&vfs, attr, Some(o.fh), mode, umask).await),
                    GENERATION,
                    FileHandle(o.fh),
                    convert::fopen_flags(&o),
                ),
                Err(e) => reply.error(fail(&e)),
            }
        });
    }
}

/// `__FMODE_EXEC` (include/linux/fcntl.h): set in the flags of the open of a file the kernel
/// executes; no open(2) flag has this bit.
const FMODE_EXEC: i32 = 0x20;

/// The permission bits a new file or directory was created with (`mode` less `umask`; set-ID
/// and sticky bits dropped), kept like chmod's when they are not the default. Best effort: the
/// entry exists either way, and shows the default mode if they could not be kept.
async fn creation_mode(vfs: &Vfs, attr: Attr, fh: Option<u64>, mode: u32, umask: u32) -> Attr {
    let perm = mode & !umask & 0o777;
    if perm == u32::from(attr.perm) {
        return attr;
    }
    let set = SetAttr {
        mode: Some(perm),
        ..SetAttr::default()
    };
    match vfs.setattr(attr.ino, fh, set).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "the mode given at creation is not kept");
            attr
        }
    }
}

fn send_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    match xattr_answer(value, size) {
        XattrAnswer::Size(n) => reply.size(n),
        XattrAnswer::Data(d) => reply.data(d),
        XattrAnswer::Error(e) => reply.error(e),
    }
}

#[cfg(test)]
mod tests;
