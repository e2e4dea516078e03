//! Plain data types of the filesystem interface, free of fuser types: the FUSE adapter converts
//! them, so the filesystem logic can be tested without a kernel.

use std::time::SystemTime;

pub use super::io_mode::OpenIo;

/// An inode number. 1 is the root.
pub type Ino = u64;

pub const ROOT_INO: Ino = 1;

/// File or directory (WebDAV has nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    /// 512-byte blocks (rounded up from `size`).
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Permission bits (no type bits).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Preferred I/O size reported to `stat` (what stdio, coreutils and Python read at once).
    pub blksize: u32,
}

/// One directory entry with its attributes (readdirplus).
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// How a file is opened (from the open(2) flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenMode {
    /// Decodes open(2) flags.
    pub fn from_flags(flags: i32) -> OpenMode {
        let acc = flags & libc::O_ACCMODE;
        OpenMode {
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
        }
    }
}

/// The answer to an open: the handle and how the kernel serves it.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fh: u64,
    /// The kernel may keep its page cache from earlier opens (content unchanged).
    pub keep_cache: bool,
    /// Page cache or passthrough (see `io_mode.rs`).
    pub io: OpenIo,
}

/// Attribute changes asked by setattr; `None` means unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Rename flags (renameat2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with EEXIST if the target exists.
    pub noreplace: bool,
    /// Swap source and target (not supported over WebDAV: EINVAL).
    pub exchange: bool,
}

impl RenameFlags {
    pub fn from_bits(flags: u32) -> RenameFlags {
        RenameFlags {
            noreplace: flags & libc::RENAME_NOREPLACE != 0,
            exchange: flags & libc::RENAME_EXCHANGE != 0,
        }
    }
}

/// Filesystem statistics for statfs / `df`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// The name of the extended attribute that shows a file's cache/upload state.
pub const STATE_XATTR: &str = "user.cloudmount.state";
/// The extended attribute that pins (`1`) or unpins (`0`) a file or folder when set.
pub const PIN_XATTR: &str = "user.cloudmount.pin";
