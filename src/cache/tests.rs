use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

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

    fn meta(&self) -> Arc<MetaStore> {
        Arc::new(MetaStore::open(&self.dir.path().join("meta.db")).unwrap())
    }

    /// A cache without background thread: tests flush and evict explicitly.
    fn open(&self, budget: u64) -> BlockCache {
        self.open_bs(budget, BS)
    }

    fn open_bs(&self, budget: u64, bs: u64) -> BlockCache {
        BlockCache::open_with(
            self.dir.path(),
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
        for d in fs::read_dir(self.dir.path().join(OBJECTS_DIR)).unwrap() {
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

#[test]
fn eviction_is_lru_within_budget() {
    let env = Env::new();
    let c = env.open(3 * BS);
    // An object nobody holds, with no data: swept by the first eviction pass that meets it.
    drop(c.object(&key("gone", "e", 10 * BS)).unwrap());
    for n in ["a", "b", "c"] {
        let o = c.object(&key(n, "e", BS)).unwrap();
        fill_all(&o, &content(0, BS));
    }
    assert_eq!(c.evict().unwrap(), 0, "within budget");
    // Access order now: a (oldest), b, c. Touch a: b becomes the oldest.
    c.existing(0, &p("a")).unwrap().unwrap().touch();
    let d = c.object(&key("d", "e", BS)).unwrap();
    fill_all(&d, &content(0, BS));
    assert_eq!(c.usage().used_bytes, 4 * BS);
    assert_eq!(c.evict().unwrap(), BS);
    assert!(
        c.existing(0, &p("b")).unwrap().is_none(),
        "b was least recent"
    );
    assert!(
        c.existing(0, &p("gone")).unwrap().is_none(),
        "empty row swept"
    );
    for n in ["a", "c", "d"] {
        assert!(c.existing(0, &p(n)).unwrap().is_some(), "{n}");
    }
    assert_eq!(c.usage().used_bytes, 3 * BS);
    assert_eq!(env.object_files().len(), 3);
    // A read counts as an access too.
    c.existing(0, &p("c"))
        .unwrap()
        .unwrap()
        .read_at(0, &mut [0u8; 10])
        .unwrap();
    let e = c.object(&key("e", "e", 2 * BS)).unwrap();
    fill_all(&e, &content(0, 2 * BS));
    c.evict().unwrap();
    // Oldest were a, d (c was read): both go to fit 2 more blocks.
    assert!(c.existing(0, &p("a")).unwrap().is_none());
    assert!(c.existing(0, &p("d")).unwrap().is_none());
    assert!(c.existing(0, &p("c")).unwrap().is_some());
    assert!(c.usage().used_bytes <= 3 * BS);
    // A held object with no present block is left alone (it is probably being fetched);
    // unheld ones are swept when eviction passes them.
    let empty = c.object(&key("empty", "e", 10 * BS)).unwrap();
    let f = c.object(&key("f", "e", 2 * BS)).unwrap();
    fill_all(&f, &content(0, 2 * BS));
    c.evict().unwrap();
    assert!(empty.is_current());
    assert!(c.existing(0, &p("empty")).unwrap().is_some());
    assert!(c.existing(0, &p("f")).unwrap().is_some());
}

#[test]
fn guards_and_pins_prevent_eviction() {
    let env = Env::new();
    let c = env.open(BS);
    let a = c.object(&key("dir/a", "e", BS)).unwrap();
    fill_all(&a, &content(0, BS));
    let b = c.object(&key("b", "e", BS)).unwrap();
    fill_all(&b, &content(1, BS));
    let g = a.open_guard();
    let g2 = a.open_guard();
    c.set_pinned(0, &p("b"), true).unwrap();
    // Over budget, but one is open and the other pinned.
    assert_eq!(c.evict().unwrap(), 0);
    assert!(a.is_current() && b.is_current());
    assert_eq!(c.usage().used_bytes, 2 * BS);
    // One guard gone: still guarded.
    drop(g);
    assert_eq!(c.evict().unwrap(), 0);
    drop(g2);
    assert_eq!(c.evict().unwrap(), BS);
    assert!(!a.is_current());
    assert_eq!(
        read_all(&a),
        content(0, BS),
        "a detached holder still reads"
    );
    // Pins survive a restart; a directory pin covers its files.
    c.set_pinned(0, &p("b"), false).unwrap();
    c.set_pinned(0, &p("dir"), true).unwrap();
    drop((a, b));
    drop(c);
    let c = env.open(BS);
    assert!(c.is_pinned(0, &p("dir/a")));
    assert!(!c.is_pinned(0, &p("b")));
    let a = c.object(&key("dir/a", "e", BS)).unwrap();
    fill_all(&a, &content(0, BS));
    drop(a);
    assert_eq!(c.evict().unwrap(), BS, "b is the one that can go");
    assert!(c.existing(0, &p("b")).unwrap().is_none());
    assert!(c.existing(0, &p("dir/a")).unwrap().unwrap().is_complete());
}

#[test]
fn persists_across_reopen() {
    let env = Env::new();
    let size = 10 * BS + 123;
    let data = content(3, size);
    {
        let c = env.open(u64::MAX);
        let o = c.object(&key("docs/ü b.txt", "W/\"v1\"", size)).unwrap();
        fill(&o, &data, [0, 1, 2, 9, 10]);
        let o2 = c.object(&key("other", "x", BS)).unwrap();
        fill_all(&o2, &content(9, BS));
        // Dropped without an explicit flush: Drop flushes.
    }
    let c = env.open(u64::MAX);
    assert_eq!(c.usage().objects, 2);
    assert_eq!(c.usage().used_bytes, 4 * BS + 123 + BS);
    let o = c.object(&key("docs/ü b.txt", "\"v1\"", size)).unwrap();
    assert_eq!(o.missing(0, size), vec![3 * BS..9 * BS]);
    for b in [0u64, 1, 2, 9] {
        let mut buf = vec![0u8; BS as usize];
        o.read_at(b * BS, &mut buf).unwrap();
        assert_eq!(buf, &data[(b * BS) as usize..((b + 1) * BS) as usize]);
    }
    let mut tail = vec![0u8; 123];
    o.read_at(10 * BS, &mut tail).unwrap();
    assert_eq!(tail, &data[(10 * BS) as usize..]);
    // The weak marker survives in the key.
    assert!(c
        .existing(0, &p("docs/ü b.txt"))
        .unwrap()
        .unwrap()
        .key()
        .etag
        .is_weak());
}

#[test]
fn lru_order_survives_restart() {
    let env = Env::new();
    {
        let c = env.open(u64::MAX);
        for n in ["a", "b", "c"] {
            fill_all(&c.object(&key(n, "e", BS)).unwrap(), &content(0, BS));
        }
        c.existing(0, &p("a")).unwrap().unwrap().touch();
    }
    let c = env.open(2 * BS);
    c.evict().unwrap();
    assert!(c.existing(0, &p("b")).unwrap().is_none());
    assert!(c.existing(0, &p("a")).unwrap().is_some());
    assert!(c.existing(0, &p("c")).unwrap().is_some());
}

#[test]
fn crash_loses_only_unflushed_blocks_never_serves_wrong_bytes() {
    let env = Env::new();
    let size = 4 * BS;
    let data = content(5, size);
    let file = {
        let c = env.open(u64::MAX);
        let o = c.object(&key("f", "e", size)).unwrap();
        fill(&o, &data, [0, 1]);
        c.flush().unwrap();
        fill(&o, &data, [2, 3]);
        // In memory they are present at once.
        assert!(o.is_complete());
        let f = o.file_path().to_path_buf();
        c.simulate_crash();
        f
    };
    // The power cut lost the unsynced data of blocks 2 and 3: garbage there now.
    {
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&vec![0xEE; 2 * BS as usize], 2 * BS)
            .unwrap();
    }
    let c = env.open(u64::MAX);
    let o = c.object(&key("f", "e", size)).unwrap();
    assert_eq!(o.missing(0, size), vec![2 * BS..4 * BS]);
    assert!(o.read_at(2 * BS, &mut [0u8; 1]).is_err());
    let mut buf = vec![0u8; 2 * BS as usize];
    o.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, &data[..2 * BS as usize]);
    assert_eq!(c.usage().used_bytes, 2 * BS);
    // Refetching fills them correctly.
    fill(&o, &data, [2, 3]);
    assert_eq!(read_all(&o), data);
}

#[test]
fn crash_before_any_flush_leaves_an_empty_object() {
    let env = Env::new();
    {
        let c = env.open(u64::MAX);
        let o = c.object(&key("f", "e", BS)).unwrap();
        fill_all(&o, &content(1, BS));
        c.simulate_crash();
    }
    let c = env.open(u64::MAX);
    let o = c.existing(0, &p("f")).unwrap().unwrap();
    assert_eq!(o.state(), ObjectState::Online);
    assert_eq!(c.usage().used_bytes, 0);
}

#[test]
fn background_flusher_persists_without_an_explicit_flush() {
    let env = Env::new();
    {
        let c = BlockCache::open_with(
            env.dir.path(),
            CacheConfig {
                budget_bytes: u64::MAX,
                block_size: BS,
                flush_interval: Some(Duration::from_millis(20)),
            },
            env.meta(),
        )
        .unwrap();
        let o = c.object(&key("f", "e", 2 * BS)).unwrap();
        fill_all(&o, &content(2, 2 * BS));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let raw = c.shared.meta.obj_by_path(0, &p("f")).unwrap().unwrap();
            if raw.present_bytes == 2 * BS as i64 {
                break;
            }
            assert!(Instant::now() < deadline, "flusher never committed");
            std::thread::sleep(Duration::from_millis(10));
        }
        c.simulate_crash();
    }
    let c = env.open(u64::MAX);
    let o = c.existing(0, &p("f")).unwrap().unwrap();
    assert!(o.is_complete());
    assert_eq!(read_all(&o), content(2, 2 * BS));
}

#[test]
fn background_eviction_after_writes() {
    let env = Env::new();
    let c = BlockCache::open_with(
        env.dir.path(),
        CacheConfig {
            budget_bytes: 2 * BS,
            block_size: BS,
            flush_interval: Some(Duration::from_secs(3600)),
        },
        env.meta(),
    )
    .unwrap();
    for n in ["a", "b", "c", "d"] {
        let o = c.object(&key(n, "e", BS)).unwrap();
        fill_all(&o, &content(0, BS));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.usage().used_bytes > 2 * BS {
        assert!(Instant::now() < deadline, "no eviction: {:?}", c.usage());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        c.existing(0, &p("d")).unwrap().is_some(),
        "the newest stays"
    );
}

#[test]
fn damaged_state_is_discarded_at_open() {
    let env = Env::new();
    let (truncated, vanished, kept) = {
        let c = env.open(u64::MAX);
        let mut files = Vec::new();
        for n in ["truncated", "vanished", "kept"] {
            let o = c.object(&key(n, "e", 2 * BS)).unwrap();
            fill_all(&o, &content(1, 2 * BS));
            files.push(o.file_path().to_path_buf());
        }
        (files[0].clone(), files[1].clone(), files[2].clone())
    };
    // A truncated file, a missing file, stray files, a row with a bad bitmap.
    OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(BS)
        .unwrap();
    fs::remove_file(&vanished).unwrap();
    let objects = env.dir.path().join(OBJECTS_DIR);
    let stray = objects.join("ab").join("ab".repeat(16));
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, b"leak").unwrap();
    fs::write(objects.join("junk.tmp"), b"leak").unwrap();
    let kept_name = kept.file_name().unwrap().to_str().unwrap().to_string();
    let misplaced = objects.join("zz").join(&kept_name);
    fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
    fs::write(&misplaced, b"leak").unwrap();
    {
        let m = env.meta();
        let c = BlockCache::open_with(
            env.dir.path(),
            CacheConfig {
                budget_bytes: u64::MAX,
                block_size: BS,
                flush_interval: None,
            },
            m.clone(),
        )
        .unwrap();
        // Corrupt a row behind the cache's back: bitmap too long.
        m.lock()
            .execute(
                "UPDATE objects SET present = X'FFFF' WHERE path = 'kept'",
                [],
            )
            .unwrap();
        c.simulate_crash();
    }
    let c = env.open(u64::MAX);
    assert_eq!(c.usage().objects, 0);
    assert_eq!(c.usage().used_bytes, 0);
    for n in ["truncated", "vanished", "kept"] {
        assert!(c.existing(0, &p(n)).unwrap().is_none(), "{n}");
    }
    assert!(env.object_files().is_empty(), "{:?}", env.object_files());
    // A fresh object of a dropped path works normally.
    let o = c.object(&key("truncated", "e", 2 * BS)).unwrap();
    assert_eq!(o.state(), ObjectState::Online);
}

#[test]
fn a_file_damaged_while_running_is_not_served() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let o = c.object(&key("f", "e", 2 * BS)).unwrap();
    fill_all(&o, &content(1, 2 * BS));
    c.flush().unwrap();
    let path = o.file_path().to_path_buf();
    drop(o);
    c.flush().unwrap(); // unloads nothing pending; the object is no longer held
    c.shared.state().live.clear();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(BS)
        .unwrap();
    // Loading checks the length again: dropped, not served.
    assert!(c.existing(0, &p("f")).unwrap().is_none());
    assert!(!path.exists());
    assert_eq!(c.usage().used_bytes, 0);
}

#[test]
fn adopt_moves_a_complete_file_in() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let size = 3 * BS + 1;
    let data = content(4, size);
    // An older partial version is replaced.
    let old = c.object(&key("up/f", "old", BS)).unwrap();
    fill_all(&old, &content(0, BS));
    let staging = env.dir.path().join("staging-1");
    fs::write(&staging, &data).unwrap();
    let o = c.adopt(&key("up/f", "new", size), &staging).unwrap();
    assert!(!staging.exists(), "moved, not copied");
    assert!(o.is_complete());
    assert!(!old.is_current());
    assert_eq!(read_all(&o), data);
    assert_eq!(c.usage().used_bytes, size);
    assert_eq!(c.usage().objects, 1);
    // Size mismatch is refused and leaves the file alone.
    fs::write(&staging, b"short").unwrap();
    assert!(matches!(
        c.adopt(&key("up/g", "x", 10), &staging),
        Err(CacheError::SizeMismatch { .. })
    ));
    assert!(staging.exists());
    // Adopted content is durable at once.
    drop((o, old));
    c.simulate_crash();
    let c = env.open(u64::MAX);
    let o = c.object(&key("up/f", "new", size)).unwrap();
    assert!(o.is_complete());
    assert_eq!(read_all(&o), data);
}

#[test]
fn concurrent_writers_and_readers() {
    let env = Env::new();
    let c = Arc::new(env.open(u64::MAX));
    let nblocks = 256u64;
    let size = nblocks * BS - 17;
    let data = Arc::new(content(8, size));
    let o = c.object(&key("big", "e", size)).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (o, data, c) = (o.clone(), data.clone(), c.clone());
            std::thread::spawn(move || {
                // Each thread writes every block in its own order, runs of 1-3 blocks,
                // overlapping the others; and reads what is present.
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..200 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let b = x % nblocks;
                    let n = 1 + (x >> 20) % 3;
                    let s = b * BS;
                    let e = ((b + n) * BS).min(size);
                    o.write_blocks(s, &data[s as usize..e as usize]).unwrap();
                    let mut buf = vec![0u8; (e - s) as usize];
                    o.read_at(s, &mut buf).unwrap();
                    assert_eq!(buf, &data[s as usize..e as usize]);
                    if x % 17 == 0 {
                        c.flush().unwrap();
                    }
                }
                for b in 0..nblocks {
                    let s = b * BS;
                    let e = (s + BS).min(size);
                    o.write_blocks(s, &data[s as usize..e as usize]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(o.is_complete());
    assert_eq!(read_all(&o), *data);
    assert_eq!(c.usage().used_bytes, size);
    drop(o);
    drop(Arc::into_inner(c).unwrap());
    let c = env.open(u64::MAX);
    let o = c.existing(0, &p("big")).unwrap().unwrap();
    assert!(o.is_complete());
    assert_eq!(read_all(&o), *data);
}

#[test]
fn block_size_change_converts_presence() {
    let env = Env::new();
    let size = 4 * BS + 10;
    let data = content(6, size);
    {
        let c = env.open(u64::MAX);
        let o = c.object(&key("f", "e", size)).unwrap();
        fill(&o, &data, [0, 1, 2, 4]);
    }
    let c = env.open_bs(u64::MAX, 2 * BS);
    let o = c.object(&key("f", "e", size)).unwrap();
    // Big blocks: [0,2) present, [2,4) half missing, [4, end) present.
    assert_eq!(o.missing(0, size), vec![2 * BS..4 * BS]);
    assert_eq!(c.usage().used_bytes, 2 * BS + 10);
    let mut buf = vec![0u8; 2 * BS as usize];
    o.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, &data[..2 * BS as usize]);
    assert!(matches!(
        BlockCache::open_with(
            &env.dir.path().join("x"),
            CacheConfig {
                budget_bytes: 1,
                block_size: 3000,
                flush_interval: None
            },
            Arc::new(MetaStore::open_in_memory().unwrap()),
        ),
        Err(CacheError::BadBlockSize(3000))
    ));
}

#[test]
fn areas_are_separate() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let mut k1 = key("same/path", "e", BS);
    k1.area = 1;
    let mut k2 = k1.clone();
    k2.area = 2;
    k2.etag = ETag::strong("other");
    let a = c.object(&k1).unwrap();
    fill_all(&a, &content(1, BS));
    let b = c.object(&k2).unwrap();
    assert!(a.is_current(), "another area's version does not replace it");
    assert_ne!(a.file_path(), b.file_path());
    c.remove_path(2, &p("same")).unwrap();
    assert!(a.is_current() && !b.is_current());
    assert!(c.existing(1, &p("same/path")).unwrap().is_some());
}

#[test]
fn file_names_are_unique_even_when_hashes_collide() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    // `a` renamed to `b` keeps the file named after (a, e); a new object for (a, e) must not
    // reuse that name.
    let a = c.object(&key("a", "e", BS)).unwrap();
    fill_all(&a, &content(1, BS));
    c.rename_path(0, &p("a"), &p("b")).unwrap();
    let a2 = c.object(&key("a", "e", BS)).unwrap();
    assert_ne!(a2.file_path(), a.file_path());
    assert!(a2.file_path().to_str().unwrap().ends_with("-1"));
    assert_eq!(a2.state(), ObjectState::Online);
    let b = c.existing(0, &p("b")).unwrap().unwrap();
    assert_eq!(read_all(&b), content(1, BS));
    drop((a, a2, b));
    drop(c);
    let c = env.open(u64::MAX);
    assert_eq!(c.usage().objects, 2);
    assert_eq!(env.object_files().len(), 2);
}

#[test]
fn names_and_paths_helpers() {
    assert!(valid_name(&"0a".repeat(16)));
    assert!(valid_name(&format!("{}-12", "0a".repeat(16))));
    assert!(!valid_name(&"0A".repeat(16)));
    assert!(!valid_name(&format!("{}-", "0a".repeat(16))));
    assert!(!valid_name("../../etc/passwd"));
    assert!(under("a/b", "a") && under("a", "a") && under("x", ""));
    assert!(!under("ab", "a") && !under("a b", "a") && !under("a", "a/b"));
    let n1 = object_name(0, &p("a"), &ETag::strong("e"));
    assert_eq!(
        n1,
        object_name(0, &p("a"), &ETag::parse("W/\"e\"").unwrap())
    );
    assert_ne!(n1, object_name(1, &p("a"), &ETag::strong("e")));
    assert_ne!(n1, object_name(0, &p("a"), &ETag::strong("f")));
    let _ = Path::new(&n1);
}

#[test]
fn accesses_do_not_keep_objects_open() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let o = c.object(&key("f", "e", BS)).unwrap();
    fill_all(&o, &content(1, BS));
    c.flush().unwrap();
    o.touch();
    let weak = Arc::downgrade(&o.inner);
    drop(o);
    assert!(
        weak.upgrade().is_none(),
        "file closed before the access is flushed"
    );
    c.flush().unwrap();
    // An object with unflushed blocks stays loaded until they are persisted.
    let o = c.object(&key("g", "e", BS)).unwrap();
    fill_all(&o, &content(2, BS));
    let weak = Arc::downgrade(&o.inner);
    drop(o);
    assert!(weak.upgrade().is_some());
    c.flush().unwrap();
    assert!(weak.upgrade().is_none());
    assert!(c.existing(0, &p("g")).unwrap().unwrap().is_complete());
}

#[test]
fn many_pending_objects_trigger_an_early_flush() {
    let env = Env::new();
    let c = BlockCache::open_with(
        env.dir.path(),
        CacheConfig {
            budget_bytes: u64::MAX,
            block_size: BS,
            flush_interval: Some(Duration::from_secs(3600)),
        },
        env.meta(),
    )
    .unwrap();
    let n = PENDING_SOFT_MAX + 10;
    for i in 0..n {
        let o = c.object(&key(&format!("f{i}"), "e", 512)).unwrap();
        o.write_blocks(0, &content(i as u8, 512)).unwrap();
    }
    // The interval is an hour: only the early flush can have committed these.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = c.shared.meta.obj_by_path(0, &p("f0")).unwrap().unwrap();
        if raw.present_bytes == 512 {
            break;
        }
        assert!(Instant::now() < deadline, "no early flush");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fan_out_directories_exist_from_the_start() {
    let env = Env::new();
    let _c = env.open(1);
    let objects = env.dir.path().join(OBJECTS_DIR);
    assert_eq!(fs::read_dir(&objects).unwrap().count(), 256);
    assert!(objects.join("00").is_dir() && objects.join("ff").is_dir());
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<BlockCache>();
    check::<CacheObject>();
    check::<OpenGuard>();
    check::<MetaStore>();
}
