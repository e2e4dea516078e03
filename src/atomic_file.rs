//! Writing a small file whole: into a temporary file beside it, flushed to disk, renamed over
//! the old one, the rename flushed too. A reader sees the old content or the new, never half
//! of it, even after a crash. It blocks on the disk: async code calls it on the blocking pool.

use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes `body` to `path` whole; with `mode`, the file gets those permissions (else the
/// ones a new file gets). Its directory must exist. The temporary file is removed when a
/// step fails.
pub fn write(path: &Path, body: &[u8], mode: Option<u32>) -> io::Result<()> {
    let tmp = temp_name(path);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        if let Some(mode) = mode {
            f.set_permissions(Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself, on disk.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `.cloudmount-tmp-NAME.PID` beside `path`: hidden, skipped by the sync folders, and one per
/// process.
fn temp_name(path: &Path) -> PathBuf {
    let mut name = OsString::from(crate::sync::exclude::TMP_PREFIX);
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_with_the_mode_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("a.json");
        write(&file, b"old", None).unwrap();
        write(&file, b"new", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the file: {names:?}");
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        // A directory where the file goes: the rename fails.
        let file = d.path().join("taken");
        std::fs::create_dir_all(file.join("inside")).unwrap();
        assert!(write(&file, b"x", None).is_err());
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the directory: {names:?}");
    }
}
