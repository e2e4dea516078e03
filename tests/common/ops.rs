//! The operations of the reference-model tests (`tests/model.rs` on the vfs, and
//! `tests/mount_model.rs` on a real mount): random sequences of file operations on a small pool
//! of names, applied to a plain local directory as the reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Paths are drawn from a small pool so operations collide often.
pub const NAMES: &[&str] = &["a", "b", "c d", "é"];

#[derive(Clone)]
pub enum Op {
    /// Create (or truncate) a file with content.
    Write {
        path: Vec<u8>,
        data: Vec<u8>,
    },
    /// Write into an existing file at an offset (extends it when past the end).
    Patch {
        path: Vec<u8>,
        offset: u32,
        data: Vec<u8>,
    },
    Truncate {
        path: Vec<u8>,
        len: u32,
    },
    /// Create (or truncate) a file with a large content (several cache blocks), made from
    /// `seed` so that the sequence stays small.
    WriteBig {
        path: Vec<u8>,
        len: u32,
        seed: u8,
    },
    Mkdir {
        path: Vec<u8>,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Unlink {
        path: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        noreplace: bool,
    },
    Read {
        path: Vec<u8>,
    },
}

/// Compact: data as its length and first byte, so a failing sequence stays readable.
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |d: &Vec<u8>| format!("{}B#{}", d.len(), d.first().copied().unwrap_or(0));
        let p = |p: &Vec<u8>| names(p).join("/");
        match self {
            Op::Write { path, data } => write!(f, "Write({:?}, {})", p(path), d(data)),
            Op::Patch { path, offset, data } => {
                write!(f, "Patch({:?}, @{offset}, {})", p(path), d(data))
            }
            Op::Truncate { path, len } => write!(f, "Truncate({:?}, {len})", p(path)),
            Op::WriteBig { path, len, seed } => {
                write!(f, "WriteBig({:?}, {len}B#{seed})", p(path))
            }
            Op::Mkdir { path } => write!(f, "Mkdir({:?})", p(path)),
            Op::Rmdir { path } => write!(f, "Rmdir({:?})", p(path)),
            Op::Unlink { path } => write!(f, "Unlink({:?})", p(path)),
            Op::Rename {
                from,
                to,
                noreplace,
            } => {
                write!(
                    f,
                    "Rename({:?} -> {:?}, noreplace={noreplace})",
                    p(from),
                    p(to)
                )
            }
            Op::Read { path } => write!(f, "Read({:?})", p(path)),
        }
    }
}

/// Mostly shallow paths: with deep ones as likely, most operations would fail alike on both
/// sides for a missing parent (ENOENT) and test little.
pub fn path_strategy() -> impl Strategy<Value = Vec<u8>> {
    let n = NAMES.len() as u8;
    prop_oneof![
        6 => proptest::collection::vec(0u8..n, 1..=1),
        2 => proptest::collection::vec(0u8..n, 2..=2),
        1 => proptest::collection::vec(0u8..n, 3..=3),
    ]
}

pub fn op_strategy() -> impl Strategy<Value = Op> {
    let data = proptest::collection::vec(any::<u8>(), 0..3000);
    prop_oneof![
        4 => (path_strategy(), data.clone()).prop_map(|(path, data)| Op::Write { path, data }),
        2 => (path_strategy(), offset_strategy(), proptest::collection::vec(any::<u8>(), 1..500))
            .prop_map(|(path, offset, data)| Op::Patch { path, offset, data }),
        1 => (path_strategy(), offset_strategy()).prop_map(|(path, len)| Op::Truncate { path, len }),
        1 => (path_strategy(), 1u32..3_000_000, any::<u8>())
            .prop_map(|(path, len, seed)| Op::WriteBig { path, len, seed }),
        3 => path_strategy().prop_map(|path| Op::Mkdir { path }),
        1 => path_strategy().prop_map(|path| Op::Rmdir { path }),
        1 => path_strategy().prop_map(|path| Op::Unlink { path }),
        2 => (path_strategy(), path_strategy(), any::<bool>())
            .prop_map(|(from, to, noreplace)| Op::Rename { from, to, noreplace }),
        3 => path_strategy().prop_map(|path| Op::Read { path }),
    ]
}

/// A small tree to start a sequence from, so that more of its operations find their targets:
/// `a` (a file), `c d/` with the file `b` and the folder `é` in it.
pub fn seed_ops() -> Vec<Op> {
    let data = |n: usize, k: u8| (0..n).map(|i| (i as u8).wrapping_mul(k)).collect();
    vec![
        Op::Write {
            path: vec![0],
            data: data(1000, 3),
        },
        Op::Mkdir { path: vec![2] },
        Op::Write {
            path: vec![2, 1],
            data: data(2000, 5),
        },
        Op::Mkdir { path: vec![2, 3] },
    ]
}

/// Offsets and lengths: mostly within a few KiB, sometimes megabytes out (holes, several
/// cache blocks).
fn offset_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4000, 1 => 0u32..3_000_000]
}

/// The content of a [`Op::WriteBig`].
pub fn big_data(len: u32, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
        .collect()
}

pub fn names(path: &[u8]) -> Vec<&'static str> {
    path.iter().map(|&i| NAMES[i as usize]).collect()
}

pub fn local(root: &Path, path: &[u8]) -> PathBuf {
    let mut p = root.to_path_buf();
    for n in names(path) {
        p.push(n);
    }
    p
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Applies an op to the plain directory: Ok(read data) or Err(errno).
pub fn apply_local(root: &Path, op: &Op) -> Result<Option<Vec<u8>>, i32> {
    use std::fs;
    use std::os::unix::fs::FileExt;
    let r: std::io::Result<Option<Vec<u8>>> = (|| match op {
        Op::Write { path, data } => {
            fs::write(local(root, path), data)?;
            Ok(None)
        }
        Op::Patch { path, offset, data } => {
            let f = fs::OpenOptions::new().write(true).open(local(root, path))?;
            f.write_all_at(data, u64::from(*offset))?;
            Ok(None)
        }
        Op::WriteBig { path, len, seed } => {
            fs::write(local(root, path), big_data(*len, *seed))?;
            Ok(None)
        }
        Op::Truncate { path, len } => {
            let f = fs::OpenOptions::new().write(true).open(local(root, path))?;
            f.set_len(u64::from(*len))?;
            Ok(None)
        }
        Op::Mkdir { path } => fs::create_dir(local(root, path)).map(|_| None),
        Op::Rmdir { path } => fs::remove_dir(local(root, path)).map(|_| None),
        Op::Unlink { path } => fs::remove_file(local(root, path)).map(|_| None),
        Op::Rename {
            from,
            to,
            noreplace,
        } => {
            let (f, t) = (local(root, from), local(root, to));
            let cf = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
            let ct = std::ffi::CString::new(t.as_os_str().as_encoded_bytes()).unwrap();
            let flags = if *noreplace {
                libc::RENAME_NOREPLACE
            } else {
                0
            };
            // SAFETY: both are valid NUL-terminated paths.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    cf.as_ptr(),
                    libc::AT_FDCWD,
                    ct.as_ptr(),
                    flags,
                )
            };
            if rc == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        Op::Read { path } => fs::read(local(root, path)).map(Some),
    })();
    r.map_err(|e| errno_of(&e))
}

/// The tree as (path → content, or None for a directory).
pub type Snapshot = BTreeMap<String, Option<Vec<u8>>>;

pub fn snapshot_local(root: &Path) -> Snapshot {
    fn walk(dir: &Path, prefix: &str, out: &mut Snapshot) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let p = format!("{prefix}{name}");
            if e.file_type().unwrap().is_dir() {
                out.insert(p.clone(), None);
                walk(&e.path(), &format!("{p}/"), out);
            } else {
                out.insert(p, Some(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, "", &mut out);
    out
}
