//! Confinement: no request reaches outside the served directory.
//!
//! Paths arrive already normalized by dav-server (`..`, `.`, `//` and percent-encoded forms of
//! them resolved against the URL root, never above it; NUL and encoded `/` refused), so a path
//! can only leave the served directory through a symbolic link. The policy is the simplest safe
//! one: **symlinks are never followed**. A request whose path names a symlink, or passes
//! through one, is refused with 403 Forbidden (as Apache does without `FollowSymLinks`), for
//! every method; symlinks are left out of listings and are not copied. The only thing done to
//! a symlink is unlinking it when the collection holding it is deleted (never what it points
//! to).
//!
//! Each path component below the root is checked with `lstat` before the operation. The
//! check guards against what remote clients can do (they cannot create symlinks); it does not
//! close the race with a *local* user swapping a directory for a symlink between the check and
//! the operation.
//!
//! Hard links need no check: a hard link *is* a file inside the directory, and the server never
//! writes into an existing file (every PUT or COPY writes a new temp file renamed over the
//! name), so writing through a name hard-linked to a file elsewhere replaces the name and leaves
//! the other file untouched.

use std::io;
use std::path::{Component, Path};

/// Why a path is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Escape {
    #[error("the path goes through a symbolic link")]
    Symlink,
    #[error("the path is not a plain relative path")]
    NotRelative,
}

/// Checks `rel` (relative to `root`, the canonical served directory): every existing component
/// must be something other than a symlink. Components past the first missing one are not
/// checked (they do not exist; the operation itself will fail or create them inside).
pub(crate) fn check(root: &Path, rel: &Path) -> Result<(), Escape> {
    let mut path = root.to_path_buf();
    for comp in rel.components() {
        match comp {
            Component::Normal(name) => path.push(name),
            Component::CurDir => continue,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Escape::NotRelative)
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(Escape::Symlink),
            Ok(_) => {}
            // Missing (or a file in the middle of the path): nothing further exists to follow.
            Err(e) if is_absent(&e) => return Ok(()),
            // Anything else (EACCES, EIO): let the operation itself report it.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Unlinks the symlinks directly in `dir` (not what they point to), so that deleting a
/// collection is not stopped by entries that are never listed. Returns how many were removed.
pub(crate) fn remove_symlinks_in(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_anywhere_in_the_path_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), b"x").unwrap();
        symlink(outside.path(), r.join("a/out")).unwrap();
        symlink("b", r.join("a/inside")).unwrap();
        symlink("/nonexistent", r.join("dangling")).unwrap();

        assert_eq!(check(r, Path::new("")), Ok(()));
        assert_eq!(check(r, Path::new("a/b/f")), Ok(()));
        assert_eq!(check(r, Path::new("a/b/new/deeper")), Ok(()));
        assert_eq!(check(r, Path::new("a/b/f/x")), Ok(()));
        for bad in ["a/out", "a/out/x", "a/out/x/y", "a/inside/f", "dangling"] {
            assert_eq!(check(r, Path::new(bad)), Err(Escape::Symlink), "{bad}");
        }
        assert_eq!(check(r, Path::new("a/../../etc")), Err(Escape::NotRelative));
        assert_eq!(check(r, Path::new("/etc")), Err(Escape::NotRelative));
    }

    #[test]
    fn removing_symlinks_leaves_their_targets() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        symlink(outside.path(), root.path().join("l1")).unwrap();
        symlink(outside.path().join("keep"), root.path().join("l2")).unwrap();
        std::fs::write(root.path().join("plain"), b"p").unwrap();
        assert_eq!(remove_symlinks_in(root.path()).unwrap(), 2);
        assert!(root.path().join("plain").exists());
        assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"k");
    }
}
