//! One mount's runtime files, and whether its daemon lives: what `daemon` writes and what
//! `control` and `cloudmount unmount` read to find a running mount.
//!
//! A mount is named by its canonical mount point ([`resolve_mount`] turns what the user typed
//! into it, and says when that is not a cloudmount mount). Its files sit in the private (0700)
//! runtime directory:
//! - the state file `<runtime>/<sanitised mount point>-<hash>.pid`, mode 0600, holding `pid=…`
//!   and informational lines; written atomically (temp file + rename) once the mount is live,
//!   removed when the daemon exits;
//! - the control socket, the same name with `.sock` ([`socket_path`]; see [`crate::control`]);
//! - `cloudmount unmount --lazy`'s request that the daemon upload its whole queue before it
//!   exits, an empty file with `.finish-uploads` (see [`Instance::ask_to_finish_uploads`]).
//!
//! [`Instance`] bundles them for one mount point.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::sanitize_name;
use crate::fuse::mounts;

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
pub const SUN_PATH_MAX: usize = 107;

/// Why a path does not name a cloudmount mount. One line each.
#[derive(Debug, thiserror::Error)]
pub enum MountLookupError {
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    #[error("{} is not a cloudmount mount (it is {fs_type})", path.display())]
    NotCloudmount { path: PathBuf, fs_type: String },
    #[error("cannot use {}: {source}", path.display())]
    Access { path: PathBuf, source: io::Error },
}

/// The canonical mount point of the cloudmount mount at `path`, the name its daemon's files
/// are keyed by. Fails when nothing, or something else, is mounted there. The mount table is
/// read before the path is touched; a dead mount (its daemon gone, every `stat` failing with
/// ENOTCONN) keeps the name given, made absolute.
pub fn resolve_mount(path: &Path) -> Result<PathBuf, MountLookupError> {
    let abs = mounts::absolute_mount_path(path)
        .map_err(|_| MountLookupError::NotMounted(path.to_path_buf()))?;
    // A live mount point canonicalises (it may have been given through a symlink); a dead one
    // fails, and `abs` is the best name for it.
    let mp = abs.canonicalize().unwrap_or(abs);
    let entry = mounts::mount_at(&mp)
        .map_err(|source| MountLookupError::Access {
            path: mp.clone(),
            source,
        })?
        .ok_or_else(|| MountLookupError::NotMounted(mp.clone()))?;
    if !entry.is_cloudmount() {
        return Err(MountLookupError::NotCloudmount {
            path: mp,
            fs_type: entry.fs_type,
        });
    }
    Ok(mp)
}

/// The runtime files of the mount at one (canonical) mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    mountpoint: PathBuf,
    state_file: PathBuf,
    socket: PathBuf,
}

impl Instance {
    /// The files of a mount at `mountpoint` (absolute, canonical), mounted or not.
    pub fn new(runtime_dir: &Path, mountpoint: &Path) -> Self {
        Instance {
            mountpoint: mountpoint.to_path_buf(),
            state_file: state_file(runtime_dir, mountpoint),
            socket: socket_path(runtime_dir, mountpoint),
        }
    }

    /// The files of the cloudmount mount at `path` (see [`resolve_mount`]).
    pub fn find(runtime_dir: &Path, path: &Path) -> Result<Self, MountLookupError> {
        resolve_mount(path).map(|mp| Instance::new(runtime_dir, &mp))
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Where the daemon's control socket is (it may not be there).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Records this process as the mount's daemon (`source`: what was mounted, for people).
    /// A request to finish uploads left by an earlier daemon is dropped.
    pub fn write_state(&self, source: &str) -> io::Result<()> {
        let _ = std::fs::remove_file(self.finish_file());
        write_state(&self.state_file, source, &self.mountpoint)
    }

    /// Asks the mount's daemon to upload everything queued before it exits, once the session
    /// ends (`unmount --lazy` returns at once and leaves that to the daemon; without it the
    /// daemon finishes the uploads in flight only, the rest waits for the next mount).
    pub fn ask_to_finish_uploads(&self) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.finish_file())
            .map(drop)
    }

    /// Whether [`Instance::ask_to_finish_uploads`] was called for this daemon.
    pub fn finish_uploads_asked(&self) -> bool {
        self.finish_file().exists()
    }

    fn finish_file(&self) -> PathBuf {
        self.state_file.with_extension("finish-uploads")
    }

    /// The pid of the mount's daemon, if its state file names one that is alive.
    pub fn live_daemon(&self) -> Option<u32> {
        read_pid(&self.state_file).filter(|p| is_cloudmount_alive(*p))
    }

    /// Removes the state file (and a request to finish uploads) if it names this process (a
    /// newer daemon may own it).
    pub fn remove_own_state(&self) {
        if read_pid(&self.state_file) == Some(std::process::id()) {
            let _ = std::fs::remove_file(self.finish_file());
        }
        remove_own(&self.state_file);
    }

    /// Removes the state file if the daemon it names is dead (it did not clean up).
    pub fn remove_stale_state(&self) {
        if read_pid(&self.state_file).is_some_and(|p| !is_cloudmount_alive(p)) {
            let _ = std::fs::remove_file(&self.state_file);
        }
    }
}

/// The control socket of the mount at `mountpoint` (absolute, canonical): the state file's
/// name with `.sock` instead of `.pid`. Its readable part is shortened when the whole path
/// would not fit in a socket address (the hash that ends the name keeps it unique).
pub fn socket_path(runtime_dir: &Path, mountpoint: &Path) -> PathBuf {
    let state = state_file(runtime_dir, mountpoint);
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let full = runtime_dir.join(format!("{stem}.sock"));
    let len = full.as_os_str().len();
    if len <= SUN_PATH_MAX {
        return full;
    }
    // `<readable>-<hash>`: drop characters from the end of `<readable>` (ASCII, see
    // `sanitize_name`), keeping at least the hash.
    let (readable, hash) = stem.rsplit_once('-').unwrap_or(("", stem.as_str()));
    let keep = readable.len().saturating_sub(len - SUN_PATH_MAX);
    let readable = readable.get(..keep).unwrap_or("").trim_end_matches('-');
    if readable.is_empty() {
        runtime_dir.join(format!("{hash}.sock"))
    } else {
        runtime_dir.join(format!("{readable}-{hash}.sock"))
    }
}

/// Creates `dir` (mode 0700) if missing; an existing one must be a real directory owned by us
/// and closed to others (it may sit in a shared place such as /tmp).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(io::Error::other(format!(
            "{} is not a directory owned by uid {uid}",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The state file of the mount at `mountpoint` (absolute, canonical).
pub fn state_file(runtime_dir: &Path, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hash = Sha256::digest(mountpoint.as_os_str().as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut readable = sanitize_name(&mountpoint.to_string_lossy());
    readable.truncate(100);
    runtime_dir.join(format!("{readable}-{hex}.pid"))
}

/// Writes the state file for this process.
fn write_state(path: &Path, source: &str, mountpoint: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let oneline = |s: &str| s.replace(['\n', '\r'], " ");
    let text = format!(
        "pid={}\nsource={}\nmountpoint={}\n",
        std::process::id(),
        oneline(source),
        oneline(&mountpoint.to_string_lossy())
    );
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path)
}

/// The pid recorded in a state file, if the file exists and holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
}

/// Removes the state file if it still names this process (a newer daemon may own it).
fn remove_own(path: &Path) {
    if read_pid(path) == Some(std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether `pid` is a live cloudmount process (not a zombie, not a reused pid).
pub fn is_cloudmount_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3, after the parenthesised command name, is the state; Z = zombie, X = dead.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| String::from_utf8_lossy(argv0).contains("cloudmount"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip_and_naming() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("run/cloudmount");
        let a = state_file(&rt, Path::new("/home/alice/Cloud"));
        let b = state_file(&rt, Path::new("/home/alice-Cloud"));
        assert_ne!(a, b, "sanitised names collide, the hash keeps them apart");
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("home-alice-Cloud-"));
        assert_eq!(read_pid(&a), None);
        write_state(&a, "work\nx", Path::new("/home/alice/Cloud")).unwrap();
        assert_eq!(read_pid(&a), Some(std::process::id()));
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&rt).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        let text = std::fs::read_to_string(&a).unwrap();
        assert!(text.contains("source=work x\n"), "{text}");
        remove_own(&a);
        assert!(!a.exists());
    }

    #[test]
    fn remove_own_keeps_another_daemons_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "pid=1\n").unwrap();
        remove_own(&p);
        assert!(p.exists());
    }

    #[test]
    fn private_dir_is_tightened_and_foreign_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(ensure_private_dir(&f).is_err());
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        assert!(ensure_private_dir(&l).is_err(), "a symlink is not trusted");
    }

    #[test]
    fn socket_sits_beside_the_state_file() {
        let rt = Path::new("/run/user/1000/cloudmount");
        let mp = Path::new("/home/alice/Cloud");
        let inst = Instance::new(rt, mp);
        assert_eq!(inst.state_file(), state_file(rt, mp));
        assert_eq!(inst.socket(), state_file(rt, mp).with_extension("sock"));
        assert_eq!(inst.mountpoint(), mp);

        // A long mount point still gives an address that fits, unique by its hash.
        let long_a = PathBuf::from(format!("/home/alice/{}/a", "x".repeat(200)));
        let long_b = PathBuf::from(format!("/home/alice/{}/b", "x".repeat(200)));
        let (a, b) = (socket_path(rt, &long_a), socket_path(rt, &long_b));
        assert!(a.as_os_str().len() <= SUN_PATH_MAX, "{}", a.display());
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(rt));
        let hash_a = state_file(rt, &long_a)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .rsplit_once('-')
            .unwrap()
            .1
            .to_string();
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-{hash_a}.sock")), "{name}");
        assert!(name.starts_with("home-alice-xxx"), "{name}");
    }

    #[test]
    fn instance_state_and_liveness() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("run");
        let inst = Instance::new(&rt, Path::new("/m"));
        assert_eq!(inst.live_daemon(), None);
        inst.write_state("src").unwrap();
        assert_eq!(inst.live_daemon(), Some(std::process::id()));
        // Our own daemon is alive: not stale.
        inst.remove_stale_state();
        assert!(inst.state_file().exists());
        // unmount --lazy's request goes with the daemon's state, and a new daemon drops it.
        assert!(!inst.finish_uploads_asked());
        inst.ask_to_finish_uploads().unwrap();
        assert!(inst.finish_uploads_asked());
        inst.write_state("src").unwrap();
        assert!(!inst.finish_uploads_asked(), "left by an earlier daemon");
        inst.ask_to_finish_uploads().unwrap();
        inst.remove_own_state();
        assert!(!inst.state_file().exists());
        assert!(!inst.finish_uploads_asked());
        // A dead daemon's file is stale.
        std::fs::write(inst.state_file(), format!("pid={}\n", u32::MAX)).unwrap();
        assert_eq!(inst.live_daemon(), None);
        inst.remove_own_state();
        assert!(inst.state_file().exists(), "not ours");
        inst.remove_stale_state();
        assert!(!inst.state_file().exists());
    }

    #[test]
    fn not_a_mount_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve_mount(dir.path()).unwrap_err();
        assert!(matches!(e, MountLookupError::NotMounted(_)), "{e}");
        assert!(e.to_string().contains("is not mounted"), "{e}");
        let e = Instance::find(dir.path(), Path::new("/proc")).unwrap_err();
        assert!(
            matches!(e, MountLookupError::NotCloudmount { ref fs_type, .. } if fs_type == "proc"),
            "{e}"
        );
        assert!(e.to_string().contains("not a cloudmount mount"), "{e}");
    }

    #[test]
    fn liveness() {
        // The test binary's name contains "cloudmount" (cloudmount-<hash>).
        assert!(is_cloudmount_alive(std::process::id()));
        assert!(
            !is_cloudmount_alive(1)
                || std::fs::read_to_string("/proc/1/cmdline")
                    .unwrap_or_default()
                    .contains("cloudmount")
        );
        assert!(!is_cloudmount_alive(u32::MAX));
    }
}
