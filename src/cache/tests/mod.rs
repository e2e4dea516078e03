//! Unit tests of the block cache: reads, writes, versions, renames (here) and the life of
//! the index: eviction, persistence, crashes, the start-up check, the thread (`lifecycle.rs`).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{object_name, valid_name};
use super::state::under;
use super::*;
use crate::meta::MetaStore;

mod lifecycle;

const BS: u64 = 4096;

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

fn key(path: &str, etag: &str, size: u64) -> ObjectKey {
    ObjectKey {
        area: 0,
        path: p(path),
        etag: ETag::parse(etag).unwrap(),
        size,
    }
}

/// Deterministic content: byte `i` of the version named `seed`.
fn content(seed: u8, size: u64) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 12) as u8))
        .collect()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn layout(&self) -> CacheLayout {
        CacheLayout::new(self.dir.path())
    }

    fn meta(&self) -> Arc<MetaStore> {
        Arc::new(MetaStore::open(&self.dir.path().join("meta.db")).unwrap())
    }

    /// A cache without background thread: tests flush and evict explicitly.
    fn open(&self, budget: u64) -> BlockCache {
        self.open_bs(budget, BS)
    }

    fn open_bs(&self, budget: u64, bs: u64) -> BlockCache {
        BlockCache::open_with(
            &self.layout(),
            CacheConfig {
                budget_bytes: budget,
                block_size: bs,
                flush_interval: None,
            },
            self.meta(),
        )
        .unwrap()
    }

    fn object_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in fs::read_dir(self.layout().objects_dir()).unwrap() {
            let d = d.unwrap().path();
            if d.is_dir() {
                for f in fs::read_dir(&d).unwrap() {
                    out.push(f.unwrap().path());
                }
            } else {
                out.push(d);
            }
        }
        out.sort();
        out
    }
}

/// Writes the given blocks of `data` into `o`.
fn fill(o: &CacheObject, data: &[u8], blocks: impl IntoIterator<Item = u64>) {
    let bs = o.block_size();
    for b in blocks {
        let s = (b * bs) as usize;
        let e = (s + bs as usize).min(data.len());
        o.write_blocks(s as u64, &data[s..e]).unwrap();
    }
}

fn fill_all(o: &CacheObject, data: &[u8]) {
    fill(o, data, 0..o.size().div_ceil(o.block_size()));
}

fn read_all(o: &CacheObject) -> Vec<u8> {
    let mut buf = vec![0u8; o.size() as usize];
    let n = o.read_at(0, &mut buf).unwrap();
    assert_eq!(n as u64, o.size());
    buf
}

#[test]
fn missing_ranges_at_the_edges() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    // size 0: nothing is ever missing, and it is complete.
    let z = c.object(&key("zero", "e", 0)).unwrap();
    assert!(z.missing(0, 100).is_empty());
    assert_eq!(z.state(), ObjectState::Cached);
    assert!(z.is_complete());
    z.write_blocks(0, &[]).unwrap();
    assert_eq!(z.read_at(0, &mut [0u8; 4]).unwrap(), 0);

    for size in [1, BS - 1, BS, BS + 1, 3 * BS, 3 * BS + 7] {
        let o = c.object(&key(&format!("f{size}"), "e", size)).unwrap();
        assert_eq!(o.state(), ObjectState::Online);
        assert_eq!(o.missing(0, u64::MAX), vec![0..size], "size {size}");
        assert_eq!(o.missing(0, 1), vec![0..BS.min(size)]);
        assert!(o.missing(0, 0).is_empty(), "zero length");
        assert!(o.missing(size, 1).is_empty(), "at EOF");
        assert!(o.missing(size + 5, 1).is_empty(), "after EOF");
        assert_eq!(o.missing(size - 1, 1), vec![(size - 1) / BS * BS..size]);
    }

    // Three full blocks plus 7 bytes; block 1 present.
    let size = 3 * BS + 7;
    let data = content(1, size);
    let o = c.object(&key("f3", "e2", size)).unwrap();
    fill(&o, &data, [1]);
    assert_eq!(o.state(), ObjectState::Partial);
    assert_eq!(o.missing(0, size), vec![0..BS, 2 * BS..size]);
    assert_eq!(o.missing(BS - 1, 1), vec![0..BS], "last byte of block 0");
    assert!(o.missing(BS, 1).is_empty(), "first byte of block 1");
    assert!(o.missing(2 * BS - 1, 1).is_empty(), "last byte of block 1");
    assert_eq!(
        o.missing(2 * BS, 1),
        vec![2 * BS..3 * BS],
        "first of block 2"
    );
    assert_eq!(
        o.missing(BS - 1, BS + 2),
        vec![0..BS, 2 * BS..3 * BS],
        "spans blocks 0..=2"
    );
    assert_eq!(
        o.missing(3 * BS, 100),
        vec![3 * BS..size],
        "short last block"
    );
    assert_eq!(
        o.missing(2 * BS + 1, u64::MAX),
        vec![2 * BS..size],
        "runs merge"
    );
    // Fill the rest: complete.
    fill(&o, &data, [0, 2, 3]);
    assert!(o.missing(0, size).is_empty());
    assert_eq!(o.state(), ObjectState::Cached);
    assert_eq!(read_all(&o), data);
}

#[test]
fn write_read_round_trip_and_bad_writes() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let size = 5 * BS + 100;
    let data = content(7, size);
    let o = c.object(&key("dir/file", "v1", size)).unwrap();
    // Out of order, one write covering two blocks, the short last block alone.
    fill(&o, &data, [5, 3]);
    o.write_blocks(0, &data[..2 * BS as usize]).unwrap();
    assert_eq!(o.present_bytes(), 3 * BS + 100);
    assert_eq!(c.usage().used_bytes, 3 * BS + 100);
    // Reads inside present blocks, across block edges, up to EOF.
    let mut buf = vec![0u8; 3000];
    assert_eq!(o.read_at(BS - 1000, &mut buf).unwrap(), 3000);
    assert_eq!(buf, &data[(BS - 1000) as usize..(BS + 2000) as usize]);
    let mut buf = vec![0u8; 500];
    assert_eq!(o.read_at(5 * BS + 50, &mut buf).unwrap(), 50);
    assert_eq!(&buf[..50], &data[(5 * BS + 50) as usize..]);
    assert_eq!(o.read_at(size, &mut buf).unwrap(), 0);
    // Reads touching a missing block fail, whole.
    let err = o.read_at(2 * BS - 10, &mut [0u8; 20]).unwrap_err();
    assert!(
        matches!(err, CacheError::NotCached { offset, end, .. } if offset == 2 * BS - 10 && end == 2 * BS + 10)
    );
    assert!(o.read_at(4 * BS, &mut [0u8; 1]).is_err());
    // The same through read_bytes (no zeroed buffer).
    assert_eq!(
        o.read_bytes(BS - 1000, 3000).unwrap(),
        &data[(BS - 1000) as usize..(BS + 2000) as usize]
    );
    assert_eq!(
        o.read_bytes(5 * BS + 50, 500).unwrap(),
        &data[(5 * BS + 50) as usize..]
    );
    assert!(o.read_bytes(size, 10).unwrap().is_empty());
    // Just written, so in the page cache: the non-blocking read finds it (or, on a file
    // system without RWF_NOWAIT, says to use the blocking one).
    if let Some(b) = o.read_bytes_nowait(BS - 1000, 3000).unwrap() {
        assert_eq!(b, &data[(BS - 1000) as usize..(BS + 2000) as usize]);
    }
    assert!(matches!(
        o.read_bytes(2 * BS - 10, 20).unwrap_err(),
        CacheError::NotCached { .. }
    ));
    // Bad writes.
    let bad = |off: u64, len: usize| o.write_blocks(off, &vec![0u8; len]).unwrap_err();
    assert!(
        matches!(bad(1, BS as usize), CacheError::BadWrite { .. }),
        "misaligned"
    );
    assert!(
        matches!(bad(2 * BS, 100), CacheError::BadWrite { .. }),
        "partial block"
    );
    assert!(
        matches!(bad(5 * BS, 101), CacheError::BadWrite { .. }),
        "past EOF"
    );
    assert!(
        matches!(bad(6 * BS, BS as usize), CacheError::BadWrite { .. }),
        "after EOF"
    );
    assert!(matches!(
        bad(u64::MAX - BS + 1, BS as usize),
        CacheError::BadWrite { .. }
    ));
    // Present blocks are never rewritten: a second write with other bytes changes nothing.
    o.write_blocks(0, &vec![0xAA; BS as usize]).unwrap();
    let mut buf = vec![0u8; BS as usize];
    o.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, &data[..BS as usize]);
    // A write over present and missing blocks writes only the missing ones.
    o.write_blocks(2 * BS, &data[2 * BS as usize..5 * BS as usize])
        .unwrap();
    fill(&o, &data, [3]);
    assert_eq!(read_all(&o), data);
    assert_eq!(c.usage().used_bytes, size);
}

#[test]
fn a_vectored_write_stores_the_pieces_as_one_stream() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let size = 6 * BS + 100;
    let data = content(7, size);
    let o = c.object(&key("v", "e", size)).unwrap();
    // Blocks 1 and 4 are present already, with other bytes than `data`: they must stay.
    o.write_blocks(BS, &vec![0x11; BS as usize]).unwrap();
    o.write_blocks(4 * BS, &vec![0x44; BS as usize]).unwrap();
    // The whole file as pieces of odd sizes (one empty), crossing every block boundary.
    let cuts = [
        0usize,
        1,
        1,
        5000,
        9000,
        9001,
        17_000,
        24_576,
        size as usize,
    ];
    let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
    o.write_blocks_vectored(0, &parts).unwrap();
    let mut want = data.clone();
    want[BS as usize..2 * BS as usize].fill(0x11);
    want[4 * BS as usize..5 * BS as usize].fill(0x44);
    assert_eq!(read_all(&o), want);
    assert!(o.is_complete());
    assert_eq!(c.usage().used_bytes, size);
    // Unaligned or past the end: refused, as for one buffer.
    let o2 = c.object(&key("w", "e", 2 * BS)).unwrap();
    let half = vec![0u8; BS as usize / 2];
    assert!(matches!(
        o2.write_blocks_vectored(0, &[&half[..]]),
        Err(CacheError::BadWrite { .. })
    ));
    assert!(o2.missing(0, 2 * BS).len() == 1);
}

#[test]
fn mapped_reads_serve_present_blocks_without_a_copy_and_outlive_the_file() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let size = 4 * BS + 100;
    let data = content(9, size);
    let o = c.object(&key("m", "v1", size)).unwrap();
    fill(&o, &data, [0, 1, 4]);
    // Just written, so in the page cache: served as a view of the file, across block edges
    // and clipped at the end of the file.
    let view = |off: u64, len: usize| o.read_mapped(off, len).unwrap().expect("resident");
    assert_eq!(
        view(BS - 7, 20),
        &data[(BS - 7) as usize..(BS + 13) as usize]
    );
    assert_eq!(view(4 * BS, 1000), &data[(4 * BS) as usize..]);
    assert!(view(size, 10).is_empty());
    // A range touching a missing block is refused whole, like a copying read.
    assert!(matches!(
        o.read_mapped(2 * BS - 10, 20).unwrap_err(),
        CacheError::NotCached { .. }
    ));
    // A view taken before the version is replaced (its file unlinked) keeps its bytes.
    let held = view(0, 2 * BS as usize);
    let newer = c.object(&key("m", "v2", size)).unwrap();
    assert!(!o.is_current());
    drop((o, newer));
    c.flush().unwrap();
    assert_eq!(held, &data[..(2 * BS) as usize]);
}

#[test]
fn new_etag_drops_the_old_blocks() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let size = 2 * BS;
    let v1 = content(1, size);
    let old = c.object(&key("f", "v1", size)).unwrap();
    fill_all(&old, &v1);
    c.flush().unwrap();
    let old_file = old.file_path().to_path_buf();
    assert!(old_file.exists());
    // Same ETag again: the same object, blocks kept.
    let same = c.object(&key("f", "v1", size)).unwrap();
    assert!(same.is_complete());
    assert_eq!(same.file_path(), old.file_path());
    // New version: empty, old file gone, old blocks never served for it.
    let new = c.object(&key("f", "v2", size)).unwrap();
    assert_eq!(new.state(), ObjectState::Online);
    assert!(!old_file.exists());
    assert!(!old.is_current() && new.is_current());
    assert_eq!(c.usage().used_bytes, 0);
    assert_eq!(c.usage().objects, 1);
    // A holder of the old version still reads it (from the unlinked file).
    assert_eq!(read_all(&old), v1);
    // `existing` sees the new one.
    let e = c.existing(0, &p("f")).unwrap().unwrap();
    assert_eq!(e.key().etag, ETag::strong("v2"));
    // Same ETag but another size is another version too.
    let other = c.object(&key("f", "v2", size + 1)).unwrap();
    assert!(!new.is_current());
    assert_eq!(other.size(), size + 1);
    // And after a restart the old version is not there either.
    drop((old, same, new, e, other));
    drop(c);
    let c = env.open(u64::MAX);
    let e = c.existing(0, &p("f")).unwrap().unwrap();
    assert_eq!(e.key().size, size + 1);
    assert_eq!(env.object_files().len(), 1);
}

#[test]
fn rename_and_remove_subtrees() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let names = ["a/x", "a/y/z", "ab/x", "a b/x", "a0", "b/old"];
    for (i, n) in names.iter().enumerate() {
        let o = c.object(&key(n, "e", BS + i as u64)).unwrap();
        fill_all(&o, &content(i as u8, BS + i as u64));
    }
    c.set_pinned(0, &p("a/y"), true).unwrap();
    c.set_pinned(0, &p("b"), true).unwrap();
    let held = c.existing(0, &p("a/x")).unwrap().unwrap();
    let used = c.usage().used_bytes;
    // `b` is replaced by `a`: `b/old` goes, with its pin.
    c.rename_path(0, &p("a"), &p("b")).unwrap();
    assert!(c.existing(0, &p("a/x")).unwrap().is_none());
    assert!(c.existing(0, &p("b/old")).unwrap().is_none());
    let bx = c.existing(0, &p("b/x")).unwrap().unwrap();
    assert_eq!(read_all(&bx), content(0, BS));
    assert_eq!(bx.file_path(), held.file_path(), "files keep their names");
    assert!(held.is_current(), "a renamed object is the same object");
    let bz = c.existing(0, &p("b/y/z")).unwrap().unwrap();
    assert_eq!(read_all(&bz), content(1, BS + 1));
    assert_eq!(c.usage().used_bytes, used - (BS + 5));
    assert_eq!(c.usage().objects, 5);
    // Pins moved with the tree; the replaced pin is gone.
    assert_eq!(c.pins(), vec![(0, p("b/y"))]);
    assert!(c.is_pinned(0, &p("b/y/z")));
    assert!(!c.is_pinned(0, &p("a/y/z")));
    // Prefix siblings untouched.
    for n in ["ab/x", "a b/x", "a0"] {
        assert!(c.existing(0, &p(n)).unwrap().is_some(), "{n}");
    }
    // Refused renames.
    assert!(c.rename_path(0, &p("b"), &p("b/y/q")).is_err());
    // Remove a subtree: files deleted, pins gone, siblings stay.
    let files_before = env.object_files().len();
    c.remove_path(0, &p("b")).unwrap();
    assert!(c.existing(0, &p("b/x")).unwrap().is_none());
    assert!(c.existing(0, &p("b/y/z")).unwrap().is_none());
    assert!(!bx.is_current());
    assert!(c.pins().is_empty());
    assert_eq!(env.object_files().len(), files_before - 2);
    assert_eq!(c.usage().objects, 3);
    assert_eq!(c.usage().used_bytes, 3 * BS + 2 + 3 + 4);
    // Everything survives a restart as it is now.
    drop((held, bx, bz));
    drop(c);
    let c = env.open(u64::MAX);
    assert_eq!(c.usage().objects, 3);
    assert!(c.existing(0, &p("ab/x")).unwrap().unwrap().is_complete());
    // Removing the root empties the area.
    c.remove_path(0, &RemotePath::root()).unwrap();
    assert_eq!(c.usage().objects, 0);
    assert!(env.object_files().is_empty());
}

/// `objects_in` names the files directly in a folder that have an object, and the generation
/// it gives changes whenever a path gains an object (created, or renamed into place), so that
/// what was read before is known to be stale; `loaded` answers from memory only.
#[test]
fn objects_in_a_folder_and_the_generation() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    for n in ["d/x", "d/y", "d/sub/z", "dd/w", "top"] {
        c.object(&key(n, "e", BS)).unwrap();
    }
    let names = |dir: &str| {
        let (at, names) = c.objects_in(0, &p(dir), 100).unwrap();
        let mut v: Vec<String> = names.unwrap().into_iter().collect();
        v.sort();
        (at, v)
    };
    let (at, d) = names("d");
    assert_eq!(d, vec!["x", "y"]);
    assert_eq!(names("").1, vec!["top"]);
    assert_eq!(names("d/sub").1, vec!["z"]);
    assert_eq!(names("none").1, Vec::<String>::new());
    assert_eq!(c.generation_now(), Some(at), "nothing changed");
    // Too many objects under the folder: not listed.
    assert_eq!(c.objects_in(0, &p("d"), 2).unwrap().1, None);

    c.object(&key("d/new", "e", BS)).unwrap();
    let after_create = c.generation_now().unwrap();
    assert_ne!(after_create, at, "a created object changes the generation");
    assert_eq!(names("d").1, vec!["new", "x", "y"]);
    c.rename_path(0, &p("dd/w"), &p("d/w")).unwrap();
    assert_ne!(c.generation_now().unwrap(), after_create, "a rename too");
    assert_eq!(names("d").1, vec!["new", "w", "x", "y"]);

    // Loaded objects are answered from memory; others are not (ask `existing`).
    assert!(c.loaded(0, &p("d/x")).is_none(), "not held by anyone");
    let held = c.existing(0, &p("d/x")).unwrap().unwrap();
    let seen = c.loaded(0, &p("d/x")).expect("loaded while held");
    assert_eq!(seen.key().etag, held.key().etag);
}
