//! Kernel mounts: is FUSE usable, what is mounted where (`/proc/self/mountinfo`), and unmounting
//! a path (`umount2` as root, `fusermount3 -u` otherwise).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The FUSE device.
pub const DEV_FUSE: &str = "/dev/fuse";

/// The kernel filesystem type of our mounts, as `/proc/self/mountinfo` and `mount` show it.
pub const FS_TYPE: &str = "fuse.cloudmount";
/// The mount source (the "Filesystem" column of `df`).
pub const FS_NAME: &str = "cloudmount";

/// Why FUSE cannot be used on this machine.
#[derive(Debug, thiserror::Error)]
pub enum FuseUnavailable {
    #[error(
        "FUSE is not available: {DEV_FUSE} is missing. Install FUSE with `apt install fuse3` \
         (or your distribution's fuse3 package) and load it with `modprobe fuse`; in a \
         container, start it with `--device /dev/fuse --cap-add SYS_ADMIN`"
    )]
    NoDevice,
    #[error("FUSE is not available: {DEV_FUSE} exists but is not a character device")]
    NotADevice,
    #[error(
        "FUSE is not available: fusermount3 was not found, and mounting without root needs it. \
         Install it with `apt install fuse3`"
    )]
    NoFusermount,
    #[error(
        "FUSE is not usable by this user: {DEV_FUSE} is not readable and writable (it is \
         normally mode 0666: as root, run `chmod 666 {DEV_FUSE}`)"
    )]
    NoDeviceAccess,
}

/// Checks that a FUSE mount can be attempted: the device exists and, without root, the setuid
/// helper `fusermount3` (or `fusermount`) is installed.
pub fn check_fuse_available() -> Result<(), FuseUnavailable> {
    match std::fs::metadata(DEV_FUSE) {
        Ok(m) if m.file_type().is_char_device() => {}
        Ok(_) => return Err(FuseUnavailable::NotADevice),
        Err(_) => return Err(FuseUnavailable::NoDevice),
    }
    if !is_root() {
        if fusermount_bin().is_none() {
            return Err(FuseUnavailable::NoFusermount);
        }
        // fuser opens the device itself before it hands the mount to fusermount3.
        let dev = CString::new(DEV_FUSE).expect("no NUL in a constant");
        // SAFETY: `dev` is a valid NUL-terminated path; access has no other preconditions.
        if unsafe { libc::access(dev.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
            return Err(FuseUnavailable::NoDeviceAccess);
        }
    }
    Ok(())
}

/// The FUSE configuration file read by `fusermount3`.
pub const FUSE_CONF: &str = "/etc/fuse.conf";

/// `--allow-other` by a normal user was refused before asking the kernel.
#[derive(Debug, thiserror::Error)]
#[error(
    "--allow-other (allow_other) is not allowed for a normal user on this machine: {FUSE_CONF} \
     does not enable `user_allow_other`. Either leave the option out (then only you, not other \
     users, see the files), or, as root, uncomment the line `user_allow_other` in {FUSE_CONF}"
)]
pub struct AllowOtherRefused;

/// Whether `--allow-other` can be used by this process: as root always; otherwise only when
/// [`FUSE_CONF`] enables `user_allow_other` (fusermount3 refuses it otherwise).
pub fn check_allow_other() -> Result<(), AllowOtherRefused> {
    if is_root() {
        return Ok(());
    }
    // A missing or unreadable file enables nothing, for fusermount3 too.
    let conf = std::fs::read_to_string(FUSE_CONF).unwrap_or_default();
    if fuse_conf_allows_other(&conf) {
        Ok(())
    } else {
        Err(AllowOtherRefused)
    }
}

/// Whether the text of a fuse.conf enables `user_allow_other`: a line that is just that word
/// (blanks around it allowed); `#` starts a comment.
pub(crate) fn fuse_conf_allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| l == "user_allow_other")
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `fusermount3`, or the FUSE 2 `fusermount`, found on `PATH` (or in `/bin`, `/usr/bin`).
fn fusermount_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .collect();
    for name in ["fusermount3", "fusermount"] {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem (its backing-device-info name in
    /// `/sys/class/bdi/`).
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// A cloudmount mount: `fuse.cloudmount`, or plain `fuse` with our source name (kernels
    /// that do not take the `subtype` option).
    pub fn is_cloudmount(&self) -> bool {
        self.fs_type == FS_TYPE
            || (self.fs_type == "fuse"
                && (self.source == FS_NAME || self.source.starts_with(&format!("{FS_NAME}:"))))
    }
}

/// The source a mount shows in `mount` and `df`: `cloudmount:` and the profile or URL it was
/// mounted from, so two mounts can be told apart. A URL loses any user name and password in
/// it (the table is world-readable); commas and whitespace, which the kernel's option parser
/// and the mount table would take apart, are percent-encoded.
pub fn source_name(source: &str) -> String {
    let shown = match url::Url::parse(source) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => source.to_string(),
    };
    let mut out = format!("{FS_NAME}:");
    for c in shown.chars() {
        match c {
            ',' => out.push_str("%2C"),
            c if c.is_whitespace() || c.is_control() => {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Decodes the octal escapes (`\040` for a space, …) of mountinfo fields.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses mountinfo text (see proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        out.push(MountEntry {
            device: fields[2].to_string(),
            mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape(fields[4]))),
            fs_type: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
            source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
        });
    }
    out
}

/// Raises the kernel's read-ahead for the mount at `path` to `kib` KiB (never lowers it).
///
/// The kernel caps a FUSE mount's read-ahead at its default of 128 KiB whatever the filesystem
/// asks for at init; only `/sys/class/bdi/<major:minor>/read_ahead_kb` raises it, and only
/// root may write there. With 1 MiB, a sequential read arrives in 1 MiB requests instead of
/// 128-256 KiB ones: a quarter of the round trips through the daemon.
/// Returns the value in force afterwards.
pub fn raise_read_ahead(path: &Path, kib: u32) -> io::Result<u32> {
    let entry = mount_at(path)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mount at {}", path.display()),
        )
    })?;
    let file = Path::new("/sys/class/bdi")
        .join(&entry.device)
        .join("read_ahead_kb");
    let now: u32 = std::fs::read_to_string(&file)?
        .trim()
        .parse()
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        })?;
    if now >= kib {
        return Ok(now);
    }
    std::fs::write(&file, format!("{kib}\n"))?;
    Ok(kib)
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The mount whose mount point is exactly `path` (the top one when several are stacked).
/// `path` must be absolute and free of `.`/`..`/symlinks (see [`absolute_mount_path`]).
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// The canonical form of a mount point path without touching the mount point itself (a dead
/// FUSE mount fails every `stat` with ENOTCONN): the parent is canonicalised and the last
/// component appended.
pub fn absolute_mount_path(path: &Path) -> io::Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    // Drop trailing `/` and `.` components lexically; `..` needs the real parent.
    let mut comps: Vec<_> = abs.components().collect();
    while matches!(comps.last(), Some(std::path::Component::CurDir)) {
        comps.pop();
    }
    let abs: PathBuf = comps.iter().collect();
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if name != ".." => Ok(parent.canonicalize()?.join(name)),
        _ => abs.canonicalize(),
    }
}

/// Why an unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{}: the mount is busy (a file is open there, or a shell's working directory is inside); close them and retry, or unmount lazily with --lazy", .0.display())]
    Busy(PathBuf),
    #[error("{}: not mounted", .0.display())]
    NotMounted(PathBuf),
    #[error("cannot unmount {}: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
}

/// Unmounts the filesystem at `path`. `lazy` detaches it at once even when busy (the kernel
/// finishes the unmount when the last file is closed).
pub fn unmount(path: &Path, lazy: bool) -> Result<(), UnmountError> {
    if is_root() {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| UnmountError::Failed {
            path: path.to_path_buf(),
            reason: "path contains a NUL byte".into(),
        })?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EBUSY) => UnmountError::Busy(path.to_path_buf()),
            Some(libc::EINVAL) => UnmountError::NotMounted(path.to_path_buf()),
            _ => UnmountError::Failed {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
        });
    }
    let bin = fusermount_bin().ok_or_else(|| UnmountError::Failed {
        path: path.to_path_buf(),
        reason: "fusermount3 not found (apt install fuse3)".into(),
    })?;
    let mut cmd = Command::new(bin);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg("--")
        .arg(path)
        .output()
        .map_err(|e| UnmountError::Failed {
            path: path.to_path_buf(),
            reason: format!("cannot run fusermount3: {e}"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("busy") {
        Err(UnmountError::Busy(path.to_path_buf()))
    } else if stderr.contains("not found in") || stderr.contains("not mounted") {
        Err(UnmountError::NotMounted(path.to_path_buf()))
    } else {
        Err(UnmountError::Failed {
            path: path.to_path_buf(),
            reason: stderr.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_allow_other_is_found_only_when_not_commented_out() {
        use super::fuse_conf_allows_other as allows;
        // Debian's default file.
        let debian = "# The file /etc/fuse.conf allows for the following parameters:\n\
                      #\n# user_allow_other - Using the allow_other mount option works fine as root, \
                      in\n#\n#user_allow_other\n#mount_max = 1000\n";
        assert!(!allows(debian));
        assert!(!allows(""));
        assert!(allows("user_allow_other\n"));
        assert!(allows(
            "mount_max = 1000\n  user_allow_other  # for cloudmount\n"
        ));
        assert!(!allows("user_allow_other_not\n"));
    }

    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:30 / /home/alice/My\\040Cloud rw,nosuid,nodev,noatime shared:5 - fuse.cloudmount cloudmount rw,user_id=1000,group_id=1000,default_permissions
37 22 0:31 / /mnt/old rw,nosuid,nodev master:3 - fuse cloudmount rw,user_id=0,group_id=0
38 22 0:32 / /tmp rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn sources_name_the_profile_or_url_without_secrets() {
        assert_eq!(source_name("work"), "cloudmount:work");
        assert_eq!(
            source_name("https://alice:secret@dav.example.com/remote.php/dav/files/alice/"),
            "cloudmount:https://dav.example.com/remote.php/dav/files/alice/"
        );
        assert_eq!(
            source_name("http://h/a,b c/"),
            "cloudmount:http://h/a%2Cb%20c/"
        );
    }

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, PathBuf::from("/home/alice/My Cloud"));
        assert_eq!(m[1].fs_type, "fuse.cloudmount");
        assert_eq!(m[1].source, "cloudmount");
        assert!(m[1].is_cloudmount());
        assert!(m[2].is_cloudmount(), "plain fuse with our source name");
        let named = MountEntry {
            source: source_name("work"),
            ..m[2].clone()
        };
        assert!(named.is_cloudmount(), "plain fuse with a named source");
        let other = MountEntry {
            source: "cloudmountx".into(),
            ..m[2].clone()
        };
        assert!(!other.is_cloudmount());
        assert!(!m[3].is_cloudmount());
        assert!(!m[0].is_cloudmount());
        assert_eq!(m[3].fs_type, "tmpfs");
        assert_eq!(m[3].device, "0:32");
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape("a\\040b"), b"a b");
        assert_eq!(unescape("a\\134b"), b"a\\b");
        assert_eq!(unescape("a\\9z"), b"a\\9z");
        assert_eq!(unescape("end\\"), b"end\\");
        assert_eq!(unescape("\\011"), b"\t");
    }

    #[test]
    fn root_is_a_mount_point() {
        let root = mount_at(Path::new("/")).unwrap();
        assert!(root.is_some(), "/ must be in /proc/self/mountinfo");
    }

    #[test]
    fn absolute_mount_path_resolves_parent_only() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("sub")).unwrap();
        std::os::unix::fs::symlink(real.join("sub"), real.join("link")).unwrap();
        // The last component is kept as given (it may be a dead mount), the parent resolved.
        assert_eq!(
            absolute_mount_path(&real.join("link").join("x")).unwrap(),
            real.join("sub").join("x")
        );
        assert_eq!(
            absolute_mount_path(&real.join("sub").join(".")).unwrap(),
            real.join("sub")
        );
        assert_eq!(
            absolute_mount_path(&real.join("sub").join("..")).unwrap(),
            real
        );
        // Missing last component: fine (the caller reports it); missing parent: error.
        assert_eq!(
            absolute_mount_path(&real.join("missing")).unwrap(),
            real.join("missing")
        );
        assert!(absolute_mount_path(&real.join("no").join("x")).is_err());
    }
}
