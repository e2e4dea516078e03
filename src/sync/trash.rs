//! Deletes the sync makes on the local side go to the user's trash (freedesktop.org Trash
//! specification 1.0), never `unlink`.
//!
//! A file on the home trash's filesystem goes to the home trash (`$XDG_DATA_HOME/Trash`);
//! another filesystem's file goes to that filesystem's trash at its mount point: the shared
//! `.Trash/$uid` when the administrator made `.Trash` (a sticky directory, not a symlink), else
//! `.Trash-$uid`. Nothing is ever copied across filesystems. The `info/NAME.trashinfo` file is
//! written first (created exclusively, which reserves NAME), then the file is renamed into
//! `files/NAME`; if the rename fails the info file is removed.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Bytes kept as they are in the info file's `Path=` (RFC 2396 unreserved characters and `/`);
/// everything else is percent-encoded.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'/');

/// The user's trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trash {
    home_trash: PathBuf,
}

impl Trash {
    /// The home trash of this user: `$XDG_DATA_HOME/Trash`, by default
    /// `~/.local/share/Trash`.
    pub fn from_env() -> io::Result<Trash> {
        let dirs = crate::config::Dirs::from_env()
            .map_err(|e| io::Error::new(ErrorKind::NotFound, e.to_string()))?;
        // `data` is `$XDG_DATA_HOME/cloudmount`.
        let data_home = dirs.data.parent().unwrap_or(&dirs.data);
        Ok(Trash::at(data_home.join("Trash")))
    }

    /// A trash whose home trash directory is `home_trash` (created when first used).
    pub fn at(home_trash: impl Into<PathBuf>) -> Trash {
        Trash {
            home_trash: home_trash.into(),
        }
    }

    /// The home trash directory.
    pub fn home(&self) -> &Path {
        &self.home_trash
    }

    /// Moves the file or directory at `path` (a symlink is moved itself) to the trash and
    /// returns where it is now.
    pub fn put(&self, path: &Path) -> io::Result<PathBuf> {
        let abs = absolute(path)?;
        let meta = fs::symlink_metadata(&abs)?;
        let dev = meta.dev();
        if dev_of_nearest(&self.home_trash)? == dev {
            make_trash_dir(&self.home_trash)?;
            let info_path = abs.as_os_str().to_os_string();
            return put_in(&self.home_trash, &abs, &info_path);
        }
        let top = mount_point(&abs, dev)?;
        let trash = topdir_trash(&top, uid())?;
        let rel = abs
            .strip_prefix(&top)
            .map_err(|_| io::Error::other("the file is not below its mount point"))?;
        put_in(&trash, &abs, rel.as_os_str())
    }
}

/// Moves a file or directory to the user's trash (see [`Trash::from_env`]).
pub fn trash(path: &Path) -> io::Result<PathBuf> {
    Trash::from_env()?.put(path)
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `path` made absolute, with its parent's symlinks and `..` resolved (the last component is
/// kept: a symlink is trashed itself, not its target).
fn absolute(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "nothing to trash at this path"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(fs::canonicalize(parent)?.join(name))
}

/// The device of `path`, or of its nearest existing ancestor.
fn dev_of_nearest(path: &Path) -> io::Result<u64> {
    let mut p = path;
    loop {
        match fs::metadata(p) {
            Ok(m) => return Ok(m.dev()),
            Err(e) if e.kind() == ErrorKind::NotFound => match p.parent() {
                Some(up) => p = up,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// The mount point of the filesystem holding `abs` (device `dev`): the highest ancestor on
/// the same device.
fn mount_point(abs: &Path, dev: u64) -> io::Result<PathBuf> {
    let mut top = abs
        .parent()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "cannot trash the root"))?;
    if fs::metadata(top)?.dev() != dev {
        // `abs` is itself a mount point.
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "cannot trash a mount point",
        ));
    }
    while let Some(up) = top.parent() {
        if fs::metadata(up)?.dev() != dev {
            break;
        }
        top = up;
    }
    Ok(top.to_path_buf())
}

/// The trash directory of the filesystem mounted at `top`, for user `uid`: `top/.Trash/uid`
/// when `top/.Trash` is a sticky directory (not a symlink), else `top/.Trash-uid`; created
/// when missing.
fn topdir_trash(top: &Path, uid: u32) -> io::Result<PathBuf> {
    let shared = top.join(".Trash");
    if let Ok(m) = fs::symlink_metadata(&shared) {
        if m.is_dir() && m.mode() & libc::S_ISVTX != 0 {
            let mine = shared.join(uid.to_string());
            if make_trash_dir(&mine).is_ok() {
                return Ok(mine);
            }
        }
    }
    let own = top.join(format!(".Trash-{uid}"));
    make_trash_dir(&own)?;
    let m = fs::symlink_metadata(&own)?;
    if !m.is_dir() || m.uid() != uid {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!("{} is not a trash directory of this user", own.display()),
        ));
    }
    Ok(own)
}

/// Creates `dir` (mode 0700) with its `files` and `info` when missing; refuses a symlink.
fn make_trash_dir(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.mode(0o700).recursive(true);
    for d in [dir.join("files"), dir.join("info")] {
        b.create(&d)?;
    }
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    Ok(())
}

/// Puts `abs` in the trash directory `trash`, recording `info_path` (absolute for the home
/// trash, relative to the mount point for a topdir trash) as where it came from.
fn put_in(trash: &Path, abs: &Path, info_path: &OsStr) -> io::Result<PathBuf> {
    let name = abs
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "nothing to trash"))?;
    let info = format!(
        "[Trash Info]\nPath={}\nDeletionDate={}\n",
        percent_encoding::percent_encode(info_path.as_bytes(), PATH_KEEP),
        deletion_date()?
    );
    for n in 1..10_000u32 {
        let candidate = numbered(name, n);
        let mut info_name = candidate.clone();
        info_name.push(".trashinfo");
        let info_file = trash.join("info").join(&info_name);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&info_file)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let target = trash.join("files").join(&candidate);
        // A stray file without its info file (another program's crash) keeps its name.
        let stray = fs::symlink_metadata(&target).is_ok();
        let written = if stray {
            Ok(())
        } else {
            f.write_all(info.as_bytes()).and_then(|_| f.sync_all())
        };
        drop(f);
        if stray {
            fs::remove_file(&info_file)?;
            continue;
        }
        if let Err(e) = written.and_then(|_| fs::rename(abs, &target)) {
            let _ = fs::remove_file(&info_file);
            return Err(e);
        }
        return Ok(target);
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        "no free name in the trash",
    ))
}

/// `name` for `n == 1`, else `name` with ` n` before its extension (`a.txt` → `a 2.txt`;
/// `.bashrc` → `.bashrc 2`; `dir` → `dir 2`).
fn numbered(name: &OsStr, n: u32) -> OsString {
    if n == 1 {
        return name.to_os_string();
    }
    let bytes = name.as_bytes();
    let dot = bytes.iter().rposition(|b| *b == b'.').filter(|i| *i > 0);
    let (stem, ext) = match dot {
        Some(i) => bytes.split_at(i),
        None => (bytes, &[][..]),
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(" {n}").as_bytes());
    out.extend_from_slice(ext);
    OsString::from_vec(out)
}

/// Now in local time, `YYYY-MM-DDThh:mm:ss`.
fn deletion_date() -> io::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tm = crate::localtime::local_tm(now)
        .ok_or_else(|| io::Error::other("the local time is unknown"))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    ))
}

#[cfg(test)]
#[path = "trash_tests.rs"]
mod tests;
