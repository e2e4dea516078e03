//! The life of the cache's index: eviction, pins, persistence across reopen, crashes, the
//! background thread, the start-up check, adopting files, block size changes, names.

use super::*;

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
    // No budget: everything not open or pinned may go (pinned bytes are outside it).
    let c = env.open(0);
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
    let c = env.open(0);
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
fn a_cache_in_the_old_nested_layout_keeps_its_blocks() {
    let env = Env::new();
    let size = 3 * BS + 5;
    let data = content(5, size);
    let file = {
        let c = env.open(u64::MAX);
        let o = c.object(&key("d/f", "e", size)).unwrap();
        fill(&o, &data, [0, 3]);
        o.file_path().to_path_buf()
    };
    // The layout of the releases before the fix: objects/objects/<h2>/<name>.
    let l = env.layout();
    let tmp = env.dir.path().join("objects.old");
    fs::rename(l.objects_dir(), &tmp).unwrap();
    fs::create_dir(l.objects_dir()).unwrap();
    fs::rename(&tmp, l.objects_dir().join("objects")).unwrap();
    assert!(!file.exists());

    let c = env.open(u64::MAX);
    assert!(file.is_file(), "moved back to objects/<h2>/");
    assert!(!l.objects_dir().join("objects").exists());
    assert_eq!(fs::read_dir(l.objects_dir()).unwrap().count(), 256);
    assert_eq!(c.usage().used_bytes, BS + 5);
    let o = c.object(&key("d/f", "e", size)).unwrap();
    assert_eq!(o.missing(0, size), vec![BS..3 * BS]);
    let mut buf = vec![0u8; BS as usize + 5];
    o.read_at(0, &mut buf[..BS as usize]).unwrap();
    o.read_at(3 * BS, &mut buf[BS as usize..]).unwrap();
    assert_eq!(&buf[..BS as usize], &data[..BS as usize]);
    assert_eq!(&buf[BS as usize..], &data[3 * BS as usize..]);
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
            &env.layout(),
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
        &env.layout(),
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
    let objects = env.layout().objects_dir();
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
            &env.layout(),
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
            &CacheLayout::new(env.dir.path().join("x")),
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
fn a_dropped_rows_file_name_is_not_reused_before_the_index_is_synced() {
    let env = Env::new();
    let c = env.open(u64::MAX);
    let a = c.object(&key("a", "e", 2 * BS)).unwrap();
    fill_all(&a, &content(1, 2 * BS));
    c.flush().unwrap();
    let old = a.file_path().to_path_buf();
    drop(a);
    // The row's deletion is not fsynced: a power cut may bring it back, naming its file. The
    // same version cached again gets another name (a flush would make the new file durable
    // under the old row's presence bits otherwise: tests/powerloss.rs).
    c.remove_path(0, &p("a")).unwrap();
    let a2 = c.object(&key("a", "e", 2 * BS)).unwrap();
    assert_ne!(a2.file_path(), old);
    assert!(a2.file_path().to_str().unwrap().ends_with("-1"));
    drop(a2);
    drop(c);
    // After a start (which makes the index durable first) the plain name is free again.
    let c = env.open(u64::MAX);
    c.remove_path(0, &p("a")).unwrap();
    drop(c);
    let c = env.open(u64::MAX);
    let a3 = c.object(&key("a", "e", 2 * BS)).unwrap();
    assert_eq!(a3.file_path(), old);
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
        &env.layout(),
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
    let objects = env.layout().objects_dir();
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

#[test]
fn pinned_bytes_are_outside_the_budget_and_exceptions_are_not_kept() {
    let env = Env::new();
    // A budget of one block.
    let c = env.open(BS);
    c.set_pinned(0, &p("keep"), true).unwrap();
    c.set_pin_mark(0, &p("keep/not"), Some(false)).unwrap();
    for (i, name) in ["keep/a", "keep/b", "keep/sub/c", "keep/not", "loose"]
        .iter()
        .enumerate()
    {
        let o = c.object(&key(name, "e", BS)).unwrap();
        fill_all(&o, &content(i as u8, BS));
    }
    assert_eq!(c.pinned_bytes(), 3 * BS);
    assert!(c.is_pinned(0, &p("keep/sub/c")));
    assert!(!c.is_pinned(0, &p("keep/not")));
    // Two unpinned blocks for a budget of one: one goes, the pinned three stay.
    assert_eq!(c.evict().unwrap(), BS);
    assert_eq!(c.usage().used_bytes, 4 * BS);
    for name in ["keep/a", "keep/b", "keep/sub/c"] {
        assert!(c.existing(0, &p(name)).unwrap().is_some(), "{name} evicted");
    }
    // Counted again after a restart, and after an unpin (then they count against the budget).
    drop(c);
    let c = env.open(BS);
    assert_eq!(c.pinned_bytes(), 3 * BS);
    assert_eq!(c.pins(), vec![(0, p("keep"))]);
    assert_eq!(
        c.pin_marks_under(0, &p("keep")),
        vec![(p("keep"), true), (p("keep/not"), false)]
    );
    c.set_pin_mark(0, &p("keep"), None).unwrap();
    assert_eq!(c.pinned_bytes(), 0);
    assert!(c.evict().unwrap() >= 2 * BS);
    assert!(c.usage().used_bytes <= BS);
    // Freeing a subtree drops what nobody holds open.
    let o = c.object(&key("f/x", "e", BS)).unwrap();
    fill_all(&o, &content(9, BS));
    let held = c.object(&key("f/y", "e", BS)).unwrap();
    fill_all(&held, &content(8, BS));
    let _g = held.open_guard();
    drop(o);
    let (freed, busy) = c.free_path(0, &p("f")).unwrap();
    assert_eq!((freed, busy), (BS, 1));
    assert!(c.existing(0, &p("f/x")).unwrap().is_none());
    assert!(c.existing(0, &p("f/y")).unwrap().is_some());
}
