//! Daemon state files: one per mount point under the runtime directory, so `cloudmount
//! unmount` finds the process to wait for.
//!
//! The file is `<runtime>/<sanitised mount point>-<hash>.pid`, mode 0600, holding `pid=…` and
//! informational lines; it is written atomically (temp file + rename) once the mount is live,
//! and removed when the daemon exits.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::sanitize_name;

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
pub fn write(path: &Path, source: &str, mountpoint: &Path) -> io::Result<()> {
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
pub fn remove_own(path: &Path) {
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
        write(&a, "work\nx", Path::new("/home/alice/Cloud")).unwrap();
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
