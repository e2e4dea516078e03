//! Pure conversions between the vfs types and fuser's, unit-tested without a kernel.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, FopenFlags, INodeNo, TimeOrNow};

use crate::vfs::{Attr, FileKind, Opened, RenameFlags, SetAttr, VfsError};

pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        // Creation time is shown on macOS only; WebDAV has none we rely on.
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The errno sent to the kernel for a vfs error (the mapping itself lives in the vfs).
pub(crate) fn errno(e: &VfsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A name from the kernel as UTF-8. WebDAV names are UTF-8, so other byte strings can name no
/// existing entry (lookups answer ENOENT) and cannot be created (EINVAL).
pub(crate) fn utf8_name(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_owned)
}

pub(crate) fn time(t: TimeOrNow, now: SystemTime) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => now,
    }
}

/// The changes of a setattr request. `ctime` and the macOS-only times are not settable.
pub(crate) fn set_attr(
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    now: SystemTime,
) -> SetAttr {
    SetAttr {
        size,
        mtime: mtime.map(|t| time(t, now)),
        atime: atime.map(|t| time(t, now)),
        mode,
        uid,
        gid,
    }
}

/// The open flags of a page-cache open (passthrough ones are answered apart).
pub(crate) fn fopen_flags(opened: &Opened) -> FopenFlags {
    if opened.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

/// renameat2 flags; `RENAME_WHITEOUT` (overlayfs) has no meaning here and is refused.
pub(crate) fn rename_flags(flags: fuser::RenameFlags) -> Result<RenameFlags, Errno> {
    if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
        return Err(Errno::EINVAL);
    }
    Ok(RenameFlags::from_bits(flags.bits()))
}

/// The answer to getxattr/listxattr under the size-probe protocol: `size == 0` asks for the
/// length only; a buffer too small gets ERANGE.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum XattrAnswer<'a> {
    Size(u32),
    Data(&'a [u8]),
    Error(Errno),
}

pub(crate) fn xattr_answer(value: &[u8], size: u32) -> XattrAnswer<'_> {
    let Ok(len) = u32::try_from(value.len()) else {
        return XattrAnswer::Error(Errno::E2BIG);
    };
    if size == 0 {
        XattrAnswer::Size(len)
    } else if len > size {
        XattrAnswer::Error(Errno::ERANGE)
    } else {
        XattrAnswer::Data(value)
    }
}

/// listxattr's value: each name followed by a NUL byte.
/// Whether `name` is in the `user.` namespace, the only one whose attributes the mount has
/// (the others: POSIX ACLs in `system.`, security labels in `security.`, `trusted.`).
pub(crate) fn is_user_xattr(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"user.")
}

pub(crate) fn xattr_list(names: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// `.` and `..` in a readdirplus reply take no lookup reference in the kernel.
pub(crate) fn is_dot_or_dotdot(name: &str) -> bool {
    name == "." || name == ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::OpenIo;
    use std::os::unix::ffi::OsStrExt;
    use std::time::Duration;

    fn attr(kind: FileKind) -> Attr {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Attr {
            ino: 42,
            kind,
            size: 5000,
            blocks: 10,
            atime: t,
            mtime: t + Duration::from_secs(1),
            ctime: t + Duration::from_secs(2),
            perm: 0o640,
            nlink: 1,
            uid: 1000,
            gid: 100,
            blksize: 4096,
        }
    }

    #[test]
    fn attr_converts_field_by_field() {
        let a = attr(FileKind::File);
        let f = file_attr(&a);
        assert_eq!(f.ino, INodeNo(42));
        assert_eq!(f.size, 5000);
        assert_eq!(f.blocks, 10);
        assert_eq!(f.atime, a.atime);
        assert_eq!(f.mtime, a.mtime);
        assert_eq!(f.ctime, a.ctime);
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(f.perm, 0o640);
        assert_eq!(f.nlink, 1);
        assert_eq!((f.uid, f.gid), (1000, 100));
        assert_eq!(f.blksize, 4096);
        assert_eq!(f.rdev, 0);
        assert_eq!(file_attr(&attr(FileKind::Dir)).kind, FileType::Directory);
    }

    #[test]
    fn errors_keep_their_errno() {
        assert_eq!(errno(&VfsError::NotFound), Errno::ENOENT);
        assert_eq!(errno(&VfsError::ReadOnly), Errno::EROFS);
        assert_eq!(errno(&VfsError::NotEmpty), Errno::ENOTEMPTY);
        assert_eq!(errno(&VfsError::NoAttr), Errno::NO_XATTR);
        assert_eq!(errno(&VfsError::NotSupported("x")), Errno::ENOTSUP);
        assert_eq!(errno(&VfsError::CrossDevice), Errno::EXDEV);
    }

    #[test]
    fn names_must_be_utf8() {
        assert_eq!(utf8_name(OsStr::new("ok ü 🎉")).as_deref(), Some("ok ü 🎉"));
        assert_eq!(utf8_name(OsStr::from_bytes(b"bad\xff")), None);
    }

    #[test]
    fn setattr_resolves_now_and_keeps_absent_fields() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(99);
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let s = set_attr(
            Some(0o600),
            None,
            Some(5),
            Some(12),
            Some(TimeOrNow::Now),
            Some(TimeOrNow::SpecificTime(then)),
            now,
        );
        assert_eq!(s.mode, Some(0o600));
        assert_eq!(s.uid, None);
        assert_eq!(s.gid, Some(5));
        assert_eq!(s.size, Some(12));
        assert_eq!(s.atime, Some(now));
        assert_eq!(s.mtime, Some(then));
        let none = set_attr(None, None, None, None, None, None, now);
        assert!(none.size.is_none() && none.atime.is_none() && none.mtime.is_none());
    }

    #[test]
    fn keep_cache_sets_fopen_flag() {
        let keep = Opened {
            fh: 1,
            keep_cache: true,
            io: OpenIo::Cached,
        };
        let fresh = Opened {
            fh: 1,
            keep_cache: false,
            io: OpenIo::Cached,
        };
        assert_eq!(fopen_flags(&keep), FopenFlags::FOPEN_KEEP_CACHE);
        assert_eq!(fopen_flags(&fresh), FopenFlags::empty());
    }

    #[test]
    fn rename_flags_convert_and_whiteout_is_refused() {
        let f = rename_flags(fuser::RenameFlags::RENAME_NOREPLACE).unwrap();
        assert!(f.noreplace && !f.exchange);
        let f = rename_flags(fuser::RenameFlags::RENAME_EXCHANGE).unwrap();
        assert!(f.exchange && !f.noreplace);
        assert_eq!(
            rename_flags(fuser::RenameFlags::empty()).unwrap(),
            RenameFlags::default()
        );
        assert_eq!(
            rename_flags(fuser::RenameFlags::RENAME_WHITEOUT),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn xattr_size_probe_protocol() {
        let v = b"cached";
        assert_eq!(xattr_answer(v, 0), XattrAnswer::Size(6));
        assert_eq!(xattr_answer(v, 6), XattrAnswer::Data(v));
        assert_eq!(xattr_answer(v, 100), XattrAnswer::Data(v));
        assert_eq!(xattr_answer(v, 5), XattrAnswer::Error(Errno::ERANGE));
        assert_eq!(xattr_answer(b"", 0), XattrAnswer::Size(0));
    }

    #[test]
    fn xattr_names_are_nul_terminated() {
        let names = vec!["user.cloudmount.state".to_string(), "user.x".to_string()];
        assert_eq!(
            xattr_list(&names),
            b"user.cloudmount.state\0user.x\0".to_vec()
        );
        assert!(xattr_list(&[]).is_empty());
    }

    #[test]
    fn dots_are_recognised() {
        assert!(is_dot_or_dotdot("."));
        assert!(is_dot_or_dotdot(".."));
        assert!(!is_dot_or_dotdot("..."));
        assert!(!is_dot_or_dotdot(".hidden"));
    }
}
