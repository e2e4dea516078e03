//! A *lossy* filesystem for power-loss tests: an in-memory FUSE filesystem that serves every
//! write at once but keeps, beside the current state, the state a power cut would leave.
//!
//! The model (the strict reading of POSIX, stricter than ext4's or XFS's journal):
//!
//! - a file's content (and length and mtime) is durable as of its last `fsync`/`fdatasync`;
//!   a file never synced comes back empty;
//! - a directory's entries (names → inodes) are durable as of the last `fsync` of that
//!   directory, each directory on its own: a rename is durable in the target directory when
//!   the target is synced and gone from the source when the source is; a new directory whose
//!   parent was never synced vanishes with everything in it;
//! - [`Disk::cut_at`] chooses the sync request at which the power goes: that sync and every
//!   request after it fail with `EIO` (the machine is off: nothing after the cut lands);
//! - [`Disk::revert`] is the next boot: every inode reachable through durable entries gets its
//!   durable content back, the rest is gone. Remount ([`LossyMount::mount`]) so the kernel's
//!   caches (dentries, pages) are dropped too.
//!
//! A session belongs to one "boot" (`epoch`): requests reaching a session of an earlier boot
//! (a descriptor that outlived its unmount) fail with `EIO` and change nothing.
//!
//! Extended attributes, links, locks (`fcntl` locks stay in the kernel), `copy_file_range`
//! (callers fall back to read/write) are not implemented.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Dir,
}

#[derive(Clone)]
struct Node {
    kind: Kind,
    /// Files: the current content.
    data: Vec<u8>,
    /// Files: the content as of the last sync (`None`: never synced).
    synced: Option<(Vec<u8>, SystemTime)>,
    /// Directories: the current entries.
    entries: BTreeMap<OsString, u64>,
    /// Directories: the entries as of the last sync.
    synced_entries: BTreeMap<OsString, u64>,
    mtime: SystemTime,
}

impl Node {
    fn new(kind: Kind) -> Node {
        Node {
            kind,
            data: Vec::new(),
            synced: None,
            entries: BTreeMap::new(),
            synced_entries: BTreeMap::new(),
            mtime: SystemTime::now(),
        }
    }
}

/// What one sync request did (for the trace of a failing seed).
#[derive(Debug, Clone)]
pub struct SyncEvent {
    pub n: u64,
    pub path: String,
}

/// The disk: the current and the durable state, and the power switch.
pub struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    epoch: u64,
    dead: bool,
    syncs: u64,
    cut_at: Option<u64>,
    trace: Vec<SyncEvent>,
}

impl Disk {
    fn new() -> Disk {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir));
        Disk {
            nodes,
            next_ino: ROOT + 1,
            epoch: 0,
            dead: false,
            syncs: 0,
            cut_at: None,
            trace: Vec::new(),
        }
    }

    /// Sync requests handled so far (over every boot).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The power goes at sync request number `n` (counted by [`Disk::syncs`]): that request
    /// and everything after it fail.
    pub fn cut_at(&mut self, n: u64) {
        self.cut_at = Some(n);
    }

    /// The power goes now.
    pub fn cut_now(&mut self) {
        self.dead = true;
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The last `n` sync requests (path of what was synced).
    pub fn recent_syncs(&self, n: usize) -> Vec<SyncEvent> {
        let from = self.trace.len().saturating_sub(n);
        self.trace[from..].to_vec()
    }

    /// The next boot: durable state only, power back on, sessions of earlier boots cut off.
    pub fn revert(&mut self) {
        let mut keep: HashMap<u64, Node> = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if keep.contains_key(&ino) {
                continue;
            }
            let Some(old) = self.nodes.get(&ino) else {
                continue;
            };
            let mut n = old.clone();
            match n.kind {
                Kind::File => {
                    let (data, mtime) = n.synced.clone().unwrap_or((Vec::new(), n.mtime));
                    n.data = data;
                    n.mtime = mtime;
                }
                Kind::Dir => {
                    n.entries = n.synced_entries.clone();
                    stack.extend(n.entries.values().copied());
                }
            }
            keep.insert(ino, n);
        }
        self.nodes = keep;
        self.dead = false;
        self.cut_at = None;
        self.epoch += 1;
    }

    /// The current content of the file at `rel` (relative to the mount's root).
    pub fn read(&self, rel: &Path) -> Option<Vec<u8>> {
        let ino = self.resolve(rel)?;
        let n = self.nodes.get(&ino)?;
        (n.kind == Kind::File).then(|| n.data.clone())
    }

    fn resolve(&self, rel: &Path) -> Option<u64> {
        let mut ino = ROOT;
        for c in rel.components() {
            match c {
                Component::Normal(name) => ino = *self.nodes.get(&ino)?.entries.get(name)?,
                Component::CurDir => {}
                _ => return None,
            }
        }
        Some(ino)
    }

    fn path_of(&self, ino: u64) -> String {
        fn walk(d: &Disk, dir: u64, want: u64, prefix: &str) -> Option<String> {
            for (name, &child) in &d.nodes.get(&dir)?.entries {
                let p = format!("{prefix}/{}", name.to_string_lossy());
                if child == want {
                    return Some(p);
                }
                if d.nodes.get(&child).is_some_and(|n| n.kind == Kind::Dir) {
                    if let Some(found) = walk(d, child, want, &p) {
                        return Some(found);
                    }
                }
            }
            None
        }
        if ino == ROOT {
            return "/".into();
        }
        walk(self, ROOT, ino, "").unwrap_or_else(|| format!("<unlinked inode {ino}>"))
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, perm, size) = match n.kind {
            Kind::File => (FileType::RegularFile, 0o644, n.data.len() as u64),
            Kind::Dir => (FileType::Directory, 0o755, 0),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn add(&mut self, parent: u64, name: &OsStr, kind: Kind) -> Result<u64, Errno> {
        let p = self.nodes.get(&parent).ok_or(Errno::ENOENT)?;
        if p.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if p.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node::new(kind));
        let p = self.nodes.get_mut(&parent).expect("checked");
        p.entries.insert(name.to_os_string(), ino);
        p.mtime = SystemTime::now();
        Ok(ino)
    }

    fn file(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(n) if n.kind == Kind::File => Ok(n),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// One sync request: applies it unless the power goes here.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let n = self.syncs;
        self.syncs += 1;
        if self.cut_at == Some(n) {
            self.dead = true;
            return Err(Errno::EIO);
        }
        let path = self.path_of(ino);
        self.trace.push(SyncEvent { n, path });
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        match node.kind {
            Kind::File => node.synced = Some((node.data.clone(), node.mtime)),
            Kind::Dir => node.synced_entries = node.entries.clone(),
        }
        Ok(())
    }
}

/// The filesystem of one boot (one mount session) over a shared [`Disk`].
struct LossyFs {
    disk: Arc<Mutex<Disk>>,
    epoch: u64,
}

impl LossyFs {
    /// The disk, if the power is on and this session belongs to the current boot.
    fn live(&self) -> Result<MutexGuard<'_, Disk>, Errno> {
        let d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if d.dead || d.epoch != self.epoch {
            return Err(Errno::EIO);
        }
        Ok(d)
    }
}

fn entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn to_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.live().and_then(|d| {
            let ino = *d
                .nodes
                .get(&parent.0)
                .ok_or(Errno::ENOENT)?
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            d.attr(ino).ok_or(Errno::ENOENT)
        });
        entry(reply, r);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|d| d.attr(ino.0).ok_or(Errno::ENOENT)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.live().and_then(|mut d| {
            if let Some(size) = size {
                let n = d.file(ino.0)?;
                n.data.resize(size as usize, 0);
                n.mtime = SystemTime::now();
            }
            if let Some(t) = mtime {
                d.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?.mtime = to_time(t);
            }
            d.attr(ino.0).ok_or(Errno::ENOENT)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.live().and_then(|mut d| {
            let ino = d.add(parent.0, name, Kind::Dir)?;
            d.attr(ino).ok_or(Errno::EIO)
        });
        entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut d| {
            let p = d.nodes.get_mut(&parent.0).ok_or(Errno::ENOENT)?;
            match p.entries.get(name) {
                None => return Err(Errno::ENOENT),
                Some(&ino) => {
                    if d.nodes.get(&ino).is_some_and(|n| n.kind == Kind::Dir) {
                        return Err(Errno::EISDIR);
                    }
                }
            }
            // The inode stays (open descriptors keep reading it); a revert drops it unless a
            // durable entry still names it.
            let p = d.nodes.get_mut(&parent.0).expect("checked");
            p.entries.remove(name);
            p.mtime = SystemTime::now();
            Ok(())
        });
        empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut d| {
            let ino = *d
                .nodes
                .get(&parent.0)
                .ok_or(Errno::ENOENT)?
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let n = d.nodes.get(&ino).ok_or(Errno::ENOENT)?;
            if n.kind != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            if !n.entries.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            d.nodes
                .get_mut(&parent.0)
                .expect("checked")
                .entries
                .remove(name);
            Ok(())
        });
        empty(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.live().and_then(|mut d| {
            if flags.bits() & !libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EINVAL);
            }
            let ino = *d
                .nodes
                .get(&parent.0)
                .ok_or(Errno::ENOENT)?
                .entries
                .get(name)
                .ok_or(Errno::ENOENT)?;
            let target = d.nodes.get(&newparent.0).ok_or(Errno::ENOENT)?;
            if target.kind != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            if let Some(&old) = target.entries.get(newname) {
                if flags.bits() & libc::RENAME_NOREPLACE != 0 {
                    return Err(Errno::EEXIST);
                }
                let (a, b) = (d.nodes[&ino].kind, d.nodes[&old].kind);
                if a != b {
                    return Err(if b == Kind::Dir {
                        Errno::EISDIR
                    } else {
                        Errno::ENOTDIR
                    });
                }
                if b == Kind::Dir && !d.nodes[&old].entries.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            let now = SystemTime::now();
            let p = d.nodes.get_mut(&parent.0).expect("checked");
            p.entries.remove(name);
            p.mtime = now;
            let t = d.nodes.get_mut(&newparent.0).expect("checked");
            t.entries.insert(newname.to_os_string(), ino);
            t.mtime = now;
            Ok(())
        });
        empty(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.live().and_then(|mut d| {
            let n = d.file(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                n.data.clear();
                n.mtime = SystemTime::now();
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.live().and_then(|mut d| {
            let existing = d.nodes.get(&parent.0).and_then(|p| p.entries.get(name));
            let ino = match existing {
                Some(&ino) if flags & libc::O_EXCL != 0 => {
                    let _ = ino;
                    return Err(Errno::EEXIST);
                }
                Some(&ino) => {
                    let n = d.file(ino)?;
                    if flags & libc::O_TRUNC != 0 {
                        n.data.clear();
                    }
                    ino
                }
                None => d.add(parent.0, name, Kind::File)?,
            };
            d.attr(ino).ok_or(Errno::EIO)
        });
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.live().and_then(|mut d| {
            let n = d.file(ino.0)?;
            let start = (offset as usize).min(n.data.len());
            let end = (start + size as usize).min(n.data.len());
            Ok(n.data[start..end].to_vec())
        });
        match r {
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.live().and_then(|mut d| {
            let n = d.file(ino.0)?;
            let end = offset as usize + data.len();
            if n.data.len() < end {
                n.data.resize(end, 0);
            }
            n.data[offset as usize..end].copy_from_slice(data);
            n.mtime = SystemTime::now();
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(): durable nothing (that is fsync's job).
        empty(reply, self.live().map(|_| ()));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.live().and_then(|mut d| d.sync(ino.0)));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.live().and_then(|d| {
            let n = d.nodes.get(&ino.0).ok_or(Errno::ENOENT)?;
            if n.kind != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            let mut list = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in &n.entries {
                let kind = match d.nodes.get(&child).map(|c| c.kind) {
                    Some(Kind::Dir) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                list.push((child, kind, name.clone()));
            }
            Ok(list)
        });
        match r {
            Ok(list) => {
                for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.live().and_then(|mut d| d.sync(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 1 GiB, nearly all free.
        reply.statfs(262_144, 260_000, 260_000, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A lossy filesystem mounted at a directory, remountable after a power cut.
pub struct LossyMount {
    pub disk: Arc<Mutex<Disk>>,
    pub dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl LossyMount {
    /// A new empty disk mounted at `dir` (which must exist).
    pub fn new(dir: &Path) -> LossyMount {
        let mut m = LossyMount {
            disk: Arc::new(Mutex::new(Disk::new())),
            dir: dir.to_path_buf(),
            session: None,
        };
        m.mount();
        m
    }

    pub fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts the disk as it is now (a new session of the current boot).
    pub fn mount(&mut self) {
        assert!(self.session.is_none(), "already mounted");
        let epoch = self.disk().epoch;
        let fs = LossyFs {
            disk: self.disk.clone(),
            epoch,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("cloudmount-lossy".into()),
            fuser::MountOption::CUSTOM("subtype=lossy".into()),
        ];
        let session = fuser::Session::new(fs, &self.dir, &config)
            .and_then(|s| s.spawn())
            .unwrap_or_else(|e| {
                panic!(
                    "cannot mount the lossy test filesystem at {} (this test needs /dev/fuse, \
                     and fusermount3 when not root): {e}",
                    self.dir.display()
                )
            });
        self.session = Some(session);
    }

    /// Unmounts (lazily if something still holds a file open: that session is of an old
    /// boot, so whatever it still does fails and changes nothing).
    pub fn unmount(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // As root umount2; as a normal user (the mount tests run as one) the setuid
        // fusermount3, which unmounts what the user mounted.
        // SAFETY: geteuid has no preconditions.
        let done = if unsafe { libc::geteuid() } == 0 {
            let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).expect("path");
            // SAFETY: a valid C string; umount2 only reads it.
            let r = unsafe { libc::umount2(c.as_ptr(), 0) };
            if r != 0 {
                // SAFETY: as above.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            r == 0
        } else {
            let fusermount = |args: &[&str]| {
                std::process::Command::new("fusermount3")
                    .args(args)
                    .arg(&self.dir)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let r = fusermount(&["-u", "-q"]);
            if !r {
                fusermount(&["-u", "-z", "-q"]);
            }
            r
        };
        // The session thread ends when the kernel closes the connection; a lazily detached
        // one ends when its last descriptor goes (not waited for).
        if done {
            let _ = session.join();
        }
    }

    /// The power cut and the next boot: unmount, revert to the durable state, mount again.
    pub fn reboot(&mut self) {
        self.disk().cut_now();
        self.unmount();
        self.disk().revert();
        self.mount();
    }
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        self.disk().cut_now();
        self.unmount();
    }
}
