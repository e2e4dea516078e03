//! Reference-model test: random sequences of file operations applied to the `Vfs` (on the
//! in-memory fake) and to a plain local directory; after every step both must agree on the
//! result (success or the same errno), and at the end on the whole tree — and the fake server
//! must hold exactly what the local directory holds.
//!
//! Shrunk failures are kept below as named regression tests.

use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::mem::MemRemote;
use cloudmount::vfs::{
    AreaSpec, FileKind, Ino, OpenMode, RenameFlags, SetAttr, Vfs, VfsOptions, VfsSetup, ROOT_INO,
};
use proptest::prelude::*;

mod common;
use common::ops::*;

const W: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};

/// Walks to the parent of `path`, returning (parent ino, last name).
async fn parent_of(vfs: &Vfs, path: &[u8]) -> Result<(Ino, &'static str), i32> {
    let ns = names(path);
    let mut ino = ROOT_INO;
    for n in &ns[..ns.len() - 1] {
        let a = vfs.lookup(ino, n).await.map_err(|e| e.errno())?;
        if a.kind != FileKind::Dir {
            return Err(libc::ENOTDIR);
        }
        ino = a.ino;
    }
    Ok((ino, ns[ns.len() - 1]))
}

async fn resolve(vfs: &Vfs, path: &[u8]) -> Result<cloudmount::vfs::Attr, i32> {
    let (p, n) = parent_of(vfs, path).await?;
    vfs.lookup(p, n).await.map_err(|e| e.errno())
}

/// Creates or truncates `path` and writes `data` as its whole content, through one handle.
async fn write_whole(vfs: &Vfs, path: &[u8], data: &[u8]) -> Result<Option<Vec<u8>>, i32> {
    let e = |e: cloudmount::vfs::VfsError| e.errno();
    let (p, n) = parent_of(vfs, path).await?;
    let (ino, fh) = match vfs.lookup(p, n).await {
        Ok(a) if a.kind == FileKind::Dir => return Err(libc::EISDIR),
        Ok(a) => {
            let o = vfs
                .open(
                    a.ino,
                    OpenMode {
                        write: true,
                        truncate: true,
                        append: false,
                    },
                )
                .await
                .map_err(e)?;
            (a.ino, o.fh)
        }
        Err(err) if err.errno() == libc::ENOENT => {
            let (a, o) = vfs.create(p, n, W).await.map_err(e)?;
            (a.ino, o.fh)
        }
        Err(err) => return Err(err.errno()),
    };
    if !data.is_empty() {
        vfs.write(ino, fh, 0, data).await.map_err(e)?;
    }
    vfs.flush(ino, fh).await.map_err(e)?;
    vfs.release(ino, fh).await.map_err(e)?;
    Ok(None)
}

async fn apply_vfs(vfs: &Vfs, op: &Op) -> Result<Option<Vec<u8>>, i32> {
    let e = |e: cloudmount::vfs::VfsError| e.errno();
    match op {
        Op::Write { path, data } => write_whole(vfs, path, data).await,
        Op::WriteBig { path, len, seed } => write_whole(vfs, path, &big_data(*len, *seed)).await,
        Op::Patch { path, offset, data } => {
            let a = resolve(vfs, path).await?;
            if a.kind == FileKind::Dir {
                return Err(libc::EISDIR);
            }
            let o = vfs.open(a.ino, W).await.map_err(e)?;
            vfs.write(a.ino, o.fh, u64::from(*offset), data)
                .await
                .map_err(e)?;
            vfs.flush(a.ino, o.fh).await.map_err(e)?;
            vfs.release(a.ino, o.fh).await.map_err(e)?;
            Ok(None)
        }
        Op::Truncate { path, len } => {
            let a = resolve(vfs, path).await?;
            if a.kind == FileKind::Dir {
                return Err(libc::EISDIR);
            }
            let o = vfs.open(a.ino, W).await.map_err(e)?;
            vfs.setattr(
                a.ino,
                Some(o.fh),
                SetAttr {
                    size: Some(u64::from(*len)),
                    ..Default::default()
                },
            )
            .await
            .map_err(e)?;
            vfs.flush(a.ino, o.fh).await.map_err(e)?;
            vfs.release(a.ino, o.fh).await.map_err(e)?;
            Ok(None)
        }
        Op::Mkdir { path } => {
            let (p, n) = parent_of(vfs, path).await?;
            vfs.mkdir(p, n).await.map(|_| None).map_err(e)
        }
        Op::Rmdir { path } => {
            let (p, n) = parent_of(vfs, path).await?;
            vfs.rmdir(p, n).await.map(|_| None).map_err(e)
        }
        Op::Unlink { path } => {
            let (p, n) = parent_of(vfs, path).await?;
            vfs.unlink(p, n).await.map(|_| None).map_err(e)
        }
        Op::Rename {
            from,
            to,
            noreplace,
        } => {
            let (fp, fname) = parent_of(vfs, from).await?;
            let (tp, tname) = parent_of(vfs, to).await?;
            let flags = RenameFlags {
                noreplace: *noreplace,
                exchange: false,
            };
            vfs.rename(fp, fname, tp, tname, flags)
                .await
                .map(|_| None)
                .map_err(e)
        }
        Op::Read { path } => {
            let a = resolve(vfs, path).await?;
            if a.kind == FileKind::Dir {
                return Err(libc::EISDIR);
            }
            let o = vfs.open(a.ino, OpenMode::default()).await.map_err(e)?;
            let mut out = Vec::new();
            loop {
                let c = vfs
                    .read(a.ino, o.fh, out.len() as u64, 65536)
                    .await
                    .map_err(e)?;
                if c.is_empty() {
                    break;
                }
                out.extend_from_slice(&c);
            }
            vfs.release(a.ino, o.fh).await.map_err(e)?;
            Ok(Some(out))
        }
    }
}

async fn snapshot_vfs(vfs: &Vfs) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![(ROOT_INO, String::new())];
    while let Some((ino, prefix)) = stack.pop() {
        let fh = vfs.opendir(ino).await.unwrap();
        let entries = vfs.readdir(ino, fh, 0).await.unwrap();
        vfs.releasedir(fh);
        for (_, e) in entries.into_iter().skip(2) {
            let p = format!("{prefix}{}", e.name);
            if e.attr.kind == FileKind::Dir {
                out.insert(p.clone(), None);
                stack.push((e.attr.ino, format!("{p}/")));
            } else {
                let o = vfs.open(e.attr.ino, OpenMode::default()).await.unwrap();
                let mut data = Vec::new();
                loop {
                    let c = vfs
                        .read(e.attr.ino, o.fh, data.len() as u64, 65536)
                        .await
                        .unwrap();
                    if c.is_empty() {
                        break;
                    }
                    data.extend_from_slice(&c);
                }
                vfs.release(e.attr.ino, o.fh).await.unwrap();
                out.insert(p, Some(data));
            }
        }
    }
    out
}

fn snapshot_mem(mem: &MemRemote) -> Snapshot {
    mem.paths()
        .into_iter()
        .map(|p| match p.strip_suffix('/') {
            Some(d) => (d.to_string(), None),
            None => {
                let data = mem.file_bytes(&p);
                (p, data)
            }
        })
        .collect()
}

/// Runs a sequence on both sides and checks they agree.
fn check(ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let plain = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemRemote::new());
        let vfs = Vfs::new(VfsSetup {
            areas: vec![AreaSpec {
                name: "m".into(),
                url: "mem://m/".into(),
                remote: mem.clone(),
                read_only: false,
            }],
            opts: VfsOptions {
                dir_ttl: Duration::from_secs(3600),
                uid: 0,
                gid: 0,
                read_only: false,
                areas_as_folders: false,
                passthrough: true,
                upload: cloudmount::vfs::UploadOptions::immediate(),
            },
            cache_dir: cache.path().to_path_buf(),
            cache_size: 64 << 20,
        })
        .unwrap();
        for (i, op) in ops.iter().enumerate() {
            let want = apply_local(plain.path(), op);
            let got = apply_vfs(&vfs, op).await;
            assert_eq!(got, want, "step {i}: {op:?}\nops: {ops:?}");
        }
        let want = snapshot_local(plain.path());
        assert_eq!(
            snapshot_vfs(&vfs).await,
            want,
            "tree through the vfs\nops: {ops:?}"
        );
        tokio::time::timeout(Duration::from_secs(30), vfs.wait_idle())
            .await
            .expect("the upload queue drains");
        assert_eq!(snapshot_mem(&mem), want, "tree on the server\nops: {ops:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, .. ProptestConfig::default() })]
    #[test]
    fn vfs_behaves_like_a_local_directory(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        check(&ops);
    }
}

// ---- Shrunk failures, kept as regressions -------------------------------------------------

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// renameat2(x, x, RENAME_NOREPLACE) is EEXIST on Linux, not a no-op.
#[test]
fn regression_rename_onto_itself_with_noreplace() {
    check(&[
        Op::Write {
            path: vec![2],
            data: data(10),
        },
        Op::Rename {
            from: vec![2],
            to: vec![2],
            noreplace: true,
        },
        Op::Rename {
            from: vec![2],
            to: vec![2],
            noreplace: false,
        },
    ]);
}

/// The kernel reports EEXIST for RENAME_NOREPLACE before EINVAL for a move below itself.
#[test]
fn regression_noreplace_into_own_subdirectory() {
    check(&[
        Op::Mkdir { path: vec![0] },
        Op::Mkdir { path: vec![0, 0] },
        Op::Rename {
            from: vec![0],
            to: vec![0, 0],
            noreplace: true,
        },
    ]);
}

/// A file renamed onto its own parent directory: the kernel says ENOTEMPTY (target is an
/// ancestor of the source) before any type check.
#[test]
fn regression_rename_file_onto_its_parent() {
    check(&[
        Op::Mkdir { path: vec![0] },
        Op::Write {
            path: vec![0, 3],
            data: data(748),
        },
        Op::Rename {
            from: vec![0, 3],
            to: vec![0],
            noreplace: false,
        },
    ]);
}

/// Write, read, patch: the uploaded file is adopted into the cache before the next open, so
/// the read handle and the staging agree (this raced once).
#[test]
fn regression_patch_after_read_of_a_new_file() {
    check(&[
        Op::Write {
            path: vec![1],
            data: data(2000),
        },
        Op::Read { path: vec![1] },
        Op::Patch {
            path: vec![1],
            offset: 1802,
            data: data(313),
        },
    ]);
}
