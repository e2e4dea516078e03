//! The local side: a scan of the folder into [`LocalMeta`](super::state::LocalMeta) per path,
//! and the files that cannot be synced (symlinks, special files, unreadable, names that are not
//! UTF-8) with the reason.
//!
//! Everything here blocks; the engine runs it on `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::exclude::Excludes;
use super::state::{Base, Kind, LocalMeta};

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalScan {
    /// Every file and directory that can be synced, by relative path (`/`-separated, no
    /// leading slash; the root itself is not in it).
    pub entries: BTreeMap<String, LocalMeta>,
    /// Paths that exist but cannot be synced, with the reason for the user. Such a path is
    /// neither present nor absent: the plan must leave it (and what is below it) alone rather
    /// than take it for a delete.
    pub problems: Vec<(String, String)>,
    /// How many names the excludes skipped (an excluded directory counts once).
    pub excluded: u64,
    /// Temporary files of downloads cut short, removed by the scan.
    pub stale_removed: u64,
}

/// Scans the folder at `root`. `base` (the last synced state) lets an unchanged file keep its
/// known hash, and a file whose size is the same but mtime differs be hashed, so a touch is not
/// taken for a change. The root missing is `Err(NotFound)`; the root not readable is an error
/// too (an unreadable root must never look like an empty one).
pub fn scan(
    root: &Path,
    excludes: &Excludes,
    base: &BTreeMap<String, Base>,
) -> io::Result<LocalScan> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut out = LocalScan::default();
    // The root's listing failing is the caller's error; below it, a problem of that directory.
    let mut stack: Vec<String> = Vec::new();
    scan_dir(root, "", excludes, base, &mut out, &mut stack, true)?;
    while let Some(dir) = stack.pop() {
        scan_dir(root, &dir, excludes, base, &mut out, &mut stack, false)?;
    }
    Ok(out)
}

/// Lists one directory (`rel` relative to the root, `""` for the root), recording its entries
/// and pushing its subdirectories on `stack`.
fn scan_dir(
    root: &Path,
    rel: &str,
    excludes: &Excludes,
    base: &BTreeMap<String, Base>,
    out: &mut LocalScan,
    stack: &mut Vec<String>,
    is_root: bool,
) -> io::Result<()> {
    let abs = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let listing = match fs::read_dir(&abs) {
        Ok(l) => l,
        Err(e) if is_root => return Err(e),
        // Gone since its parent was listed: the next scan sees it as deleted.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            out.entries.remove(rel);
            return Ok(());
        }
        Err(e) => {
            out.problems
                .push((rel.to_string(), format!("cannot list the folder: {e}")));
            return Ok(());
        }
    };
    for item in listing {
        let item = match item {
            Ok(i) => i,
            Err(e) if is_root => return Err(e),
            Err(e) => {
                out.problems
                    .push((rel.to_string(), format!("cannot list the folder: {e}")));
                return Ok(());
            }
        };
        let os_name = item.file_name();
        let Some(name) = os_name.to_str() else {
            let shown = join(rel, &os_name.to_string_lossy());
            out.problems
                .push((shown, "the name is not valid UTF-8: not synced".to_string()));
            continue;
        };
        let path = join(rel, name);
        let meta = match fs::symlink_metadata(item.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                out.problems.push((path, format!("cannot read it: {e}")));
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_file() && name.starts_with(super::exclude::TMP_PREFIX) {
            // A download cut short (the process killed): no download of this folder runs
            // while it is scanned, so it is stale.
            match fs::remove_file(item.path()) {
                Ok(()) => out.stale_removed += 1,
                Err(e) => tracing::debug!(path, error = %e, "cannot remove a stale download"),
            }
            continue;
        }
        if excludes.is_excluded(&path, ft.is_dir()) {
            out.excluded += 1;
            continue;
        }
        if let Some(reason) = unsupported(&meta) {
            out.problems.push((path, reason.to_string()));
            continue;
        }
        if ft.is_dir() {
            out.entries.insert(path.clone(), meta_of(&meta, Kind::Dir));
            stack.push(path);
            continue;
        }
        let mut m = meta_of(&meta, Kind::File);
        match base.get(&path).map(|b| &b.local) {
            Some(b) if b.kind == Kind::File && b.size == m.size => {
                if b.mtime_ns == m.mtime_ns && b.inode == m.inode {
                    m.hash = b.hash;
                } else {
                    // Touched, or replaced (a rename over it): the content tells.
                    match hash_file(&item.path()) {
                        Ok(h) => m.hash = Some(h),
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => {
                            out.problems.push((path, format!("cannot read it: {e}")));
                            continue;
                        }
                    }
                }
            }
            _ => {}
        }
        out.entries.insert(path, m);
    }
    Ok(())
}

/// Why a file of this type is not synced, or `None` for files and directories.
fn unsupported(meta: &Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() || ft.is_dir() {
        None
    } else if ft.is_symlink() {
        Some("symbolic link: not synced")
    } else if ft.is_fifo() {
        Some("named pipe (FIFO): not synced")
    } else if ft.is_socket() {
        Some("socket: not synced")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("device file: not synced")
    } else {
        Some("special file: not synced")
    }
}

fn meta_of(meta: &Metadata, kind: Kind) -> LocalMeta {
    LocalMeta {
        kind,
        size: if kind == Kind::Dir { 0 } else { meta.size() },
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        inode: meta.ino(),
        hash: None,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The SHA-256 of a file's content, read in 256 KiB pieces.
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// One path as a scan would see it (not following a symlink; no hash): `None` when nothing is
/// there (or a parent is not a directory), an `Unsupported` error naming the reason for a
/// symlink or a special file. `rel` `""` is the root.
pub fn stat(root: &Path, rel: &str) -> io::Result<Option<LocalMeta>> {
    let path = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if let Some(reason) = unsupported(&meta) {
        return Err(io::Error::new(ErrorKind::Unsupported, reason));
    }
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    Ok(Some(meta_of(&meta, kind)))
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
