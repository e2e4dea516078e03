use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

pub(super) fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

fn file(name: &str, size: u64, etag: &str) -> EntryRecord {
    EntryRecord {
        name: name.into(),
        kind: EntryKind::File,
        size,
        mtime: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
        etag: ETag::parse(etag),
    }
}

fn dir(name: &str) -> EntryRecord {
    EntryRecord {
        name: name.into(),
        kind: EntryKind::Dir,
        size: 0,
        mtime: None,
        etag: None,
    }
}

fn names(m: &MetaStore, area: AreaId, d: &str) -> Vec<String> {
    m.load_listing(area, &p(d))
        .unwrap()
        .map(|(_, v)| v.into_iter().map(|e| e.name).collect())
        .unwrap_or_default()
}

/// A store at schema `version`, as that version's build wrote it (its SQL, in order).
pub(super) fn store_at_version(path: &Path, version: i64) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(super::schema::V1).unwrap();
    for step in &super::schema::MIGRATIONS[..(version - 1) as usize] {
        c.execute_batch(step).unwrap();
    }
    c.pragma_update(None, "application_id", super::schema::APPLICATION_ID)
        .unwrap();
    c.pragma_update(None, "user_version", version).unwrap();
    c
}

pub(super) fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const ODD: &[&str] = &[
    "a",
    "ab",
    "a b",
    "a0",
    "a.",
    "a-",
    "100%",
    "under_score",
    "it's",
    "\"q\"",
    "é",
    "e\u{301}",
    "😀 emoji",
    "中文",
    "%_%",
];

#[test]
fn listing_round_trip_with_odd_names() {
    let m = MetaStore::open_in_memory().unwrap();
    assert!(m.load_listing(0, &RemotePath::root()).unwrap().is_none());
    let mut entries: Vec<EntryRecord> = ODD.iter().map(|n| file(n, 7, "\"x\"")).collect();
    entries.push(dir("sub dir"));
    m.save_listing(0, &RemotePath::root(), t(100), &entries)
        .unwrap();
    let (at, got) = m.load_listing(0, &RemotePath::root()).unwrap().unwrap();
    assert_eq!(at, t(100));
    let mut want = entries.clone();
    want.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    assert_eq!(got, want);
    // Each entry is reachable by path, with the exact stored values.
    for e in &entries {
        assert_eq!(m.get_entry(0, &p(&e.name)).unwrap().as_ref(), Some(e));
    }
    // Another area is separate.
    assert!(m.load_listing(1, &RemotePath::root()).unwrap().is_none());
    assert!(m.get_entry(1, &p("a")).unwrap().is_none());
}

#[test]
fn bad_names_are_refused() {
    let m = MetaStore::open_in_memory().unwrap();
    for bad in ["", "a/b", ".", ".."] {
        let r = m.save_listing(0, &RemotePath::root(), t(1), &[file(bad, 1, "x")]);
        assert!(matches!(r, Err(MetaError::InvalidName { .. })), "{bad:?}");
    }
}

/// Builds `prefix/{a,ab,a b,a0,a.}/{x, y/z}` with listings and local mtimes everywhere.
fn populate(m: &MetaStore, area: AreaId) {
    let names: Vec<&str> = ["a", "ab", "a b", "a0", "a."].to_vec();
    let top: Vec<EntryRecord> = names.iter().map(|n| dir(n)).collect();
    m.save_listing(area, &RemotePath::root(), t(1), &top)
        .unwrap();
    for n in &names {
        m.save_listing(area, &p(n), t(2), &[file("x", 1, "e1"), dir("y")])
            .unwrap();
        m.save_listing(area, &p(&format!("{n}/y")), t(3), &[file("z", 2, "e2")])
            .unwrap();
        m.set_local_mtime(area, &p(&format!("{n}/y/z")), Some(t(42)), None)
            .unwrap();
        m.set_local_mtime(area, &p(n), Some(t(43)), None).unwrap();
        m.set_local_mode(area, &p(&format!("{n}/y/z")), Some(0o755))
            .unwrap();
        m.set_local_mode(area, &p(n), Some(0o700)).unwrap();
    }
}

fn all_paths(m: &MetaStore, area: AreaId) -> Vec<String> {
    let conn = m.lock();
    let mut st = conn
        .prepare("SELECT path FROM entries WHERE area = ?1 ORDER BY path")
        .unwrap();
    let v = st
        .query_map([area], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    v
}

fn table_paths(m: &MetaStore, table: &str, area: AreaId) -> Vec<String> {
    let conn = m.lock();
    let mut st = conn
        .prepare(&format!(
            "SELECT path FROM {table} WHERE area = ?1 ORDER BY path"
        ))
        .unwrap();
    let v = st
        .query_map([area], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    v
}

#[test]
fn remove_subtree_spares_prefix_siblings() {
    let m = MetaStore::open_in_memory().unwrap();
    populate(&m, 0);
    populate(&m, 1);
    m.remove_entry(0, &p("a")).unwrap();
    for path in all_paths(&m, 0) {
        assert!(path != "a" && !path.starts_with("a/"), "{path} survived");
    }
    for sib in ["ab", "a b", "a0", "a."] {
        assert_eq!(names(&m, 0, sib), vec!["x", "y"], "{sib}");
        assert_eq!(names(&m, 0, &format!("{sib}/y")), vec!["z"]);
        assert_eq!(
            m.local_mtime(0, &p(&format!("{sib}/y/z"))).unwrap(),
            Some(t(42))
        );
        assert_eq!(
            m.local_mode(0, &p(&format!("{sib}/y/z"))).unwrap(),
            Some(0o755)
        );
    }
    assert!(m.load_listing(0, &p("a")).unwrap().is_none());
    assert!(m.load_listing(0, &p("a/y")).unwrap().is_none());
    assert_eq!(m.local_mtime(0, &p("a/y/z")).unwrap(), None);
    assert_eq!(m.local_mtime(0, &p("a")).unwrap(), None);
    assert_eq!(m.local_mode(0, &p("a/y/z")).unwrap(), None);
    assert_eq!(m.local_mode(0, &p("a")).unwrap(), None);
    // The other area is untouched.
    assert_eq!(all_paths(&m, 1).len(), 5 * 4);
    // The root: everything of the area goes.
    m.remove_entry(0, &RemotePath::root()).unwrap();
    assert!(all_paths(&m, 0).is_empty());
    assert!(table_paths(&m, "listings", 0).is_empty());
    assert!(table_paths(&m, "local_mtimes", 0).is_empty());
    assert!(table_paths(&m, "local_modes", 0).is_empty());
    assert_eq!(all_paths(&m, 1).len(), 5 * 4);
    assert_eq!(table_paths(&m, "local_modes", 1).len(), 5 * 2);
}

#[test]
fn save_listing_drops_vanished_children_with_subtrees() {
    let m = MetaStore::open_in_memory().unwrap();
    populate(&m, 0);
    // `a` vanished, `ab` became a file, the rest stays.
    m.save_listing(
        0,
        &RemotePath::root(),
        t(10),
        &[file("ab", 5, "new"), dir("a b"), dir("a0"), dir("a.")],
    )
    .unwrap();
    assert_eq!(names(&m, 0, ""), vec!["a b", "a.", "a0", "ab"]);
    assert!(m.get_entry(0, &p("a/x")).unwrap().is_none());
    assert!(m.load_listing(0, &p("a")).unwrap().is_none());
    assert_eq!(m.local_mtime(0, &p("a")).unwrap(), None);
    assert_eq!(m.local_mode(0, &p("a")).unwrap(), None);
    assert_eq!(m.local_mode(0, &p("a/y/z")).unwrap(), None);
    // `ab` is a file now: nothing below it, its listing gone, its own local mtime kept.
    assert!(m.get_entry(0, &p("ab/x")).unwrap().is_none());
    assert!(m.load_listing(0, &p("ab")).unwrap().is_none());
    assert_eq!(m.local_mtime(0, &p("ab/y/z")).unwrap(), None);
    assert_eq!(m.local_mtime(0, &p("ab")).unwrap(), Some(t(43)));
    assert_eq!(m.local_mode(0, &p("ab/y/z")).unwrap(), None);
    // A directory's mode is no file's: another kind of entry took the path.
    assert_eq!(m.local_mode(0, &p("ab")).unwrap(), None);
    assert_eq!(m.local_mode(0, &p("a b")).unwrap(), Some(0o700));
    assert_eq!(m.get_entry(0, &p("ab")).unwrap().unwrap().size, 5);
    // Directories that stayed keep their subtrees.
    for sib in ["a b", "a0", "a."] {
        assert_eq!(names(&m, 0, &format!("{sib}/y")), vec!["z"]);
    }
}

#[test]
fn entries_added_after_a_listing_appear_in_it() {
    let m = MetaStore::open_in_memory().unwrap();
    m.save_listing(0, &p("d"), t(1), &[file("old", 1, "a")])
        .unwrap();
    m.upsert_entry(0, &p("d/new"), &file("ignored", 3, "b"))
        .unwrap();
    assert_eq!(names(&m, 0, "d"), vec!["new", "old"]);
    assert_eq!(m.get_entry(0, &p("d/new")).unwrap().unwrap().name, "new");
    // Without a listing of the parent, the entry is stored but no listing appears.
    m.upsert_entry(0, &p("e/f/g"), &file("g", 1, "c")).unwrap();
    assert!(m.get_entry(0, &p("e/f/g")).unwrap().is_some());
    assert!(m.load_listing(0, &p("e/f")).unwrap().is_none());
    // The root entry can be stored, and is nobody's child.
    m.upsert_entry(0, &RemotePath::root(), &dir("")).unwrap();
    assert_eq!(
        m.get_entry(0, &RemotePath::root()).unwrap().unwrap().kind,
        EntryKind::Dir
    );
    m.save_listing(0, &RemotePath::root(), t(1), &[dir("d")])
        .unwrap();
    assert_eq!(names(&m, 0, ""), vec!["d"]);
}

#[test]
fn upserting_a_file_over_a_directory_drops_its_subtree() {
    let m = MetaStore::open_in_memory().unwrap();
    populate(&m, 0);
    m.upsert_entry(0, &p("a"), &file("a", 1, "f")).unwrap();
    assert!(m.get_entry(0, &p("a/x")).unwrap().is_none());
    assert!(m.load_listing(0, &p("a")).unwrap().is_none());
    assert_eq!(names(&m, 0, "ab"), vec!["x", "y"]);
}

#[test]
fn invalidate_keeps_children_but_forces_revalidation() {
    let m = MetaStore::open_in_memory().unwrap();
    m.save_listing(0, &p("d"), t(1000), &[file("f", 1, "a")])
        .unwrap();
    m.invalidate_listing(0, &p("d")).unwrap();
    let (at, v) = m.load_listing(0, &p("d")).unwrap().unwrap();
    assert_eq!(at, UNIX_EPOCH);
    assert_eq!(v.len(), 1);
    // Invalidating a directory never listed creates nothing.
    m.invalidate_listing(0, &p("nope")).unwrap();
    assert!(m.load_listing(0, &p("nope")).unwrap().is_none());
}

#[test]
fn rename_moves_subtree_listings_local_mtimes_and_modes() {
    let m = MetaStore::open_in_memory().unwrap();
    populate(&m, 0);
    m.set_local_mode(0, &p("ab/x"), Some(0o600)).unwrap();
    m.rename_entry(0, &p("a"), &p("ab")).unwrap(); // replaces `ab`
    assert_eq!(names(&m, 0, ""), vec!["a b", "a.", "a0", "ab"]);
    assert_eq!(names(&m, 0, "ab"), vec!["x", "y"]);
    assert_eq!(names(&m, 0, "ab/y"), vec!["z"]);
    assert_eq!(m.local_mtime(0, &p("ab/y/z")).unwrap(), Some(t(42)));
    assert_eq!(m.local_mode(0, &p("ab/y/z")).unwrap(), Some(0o755));
    assert_eq!(m.local_mode(0, &p("ab")).unwrap(), Some(0o700));
    // The replaced `ab/x` took its mode along; nothing is left under the old name.
    assert_eq!(m.local_mode(0, &p("ab/x")).unwrap(), None);
    for path in table_paths(&m, "local_modes", 0) {
        assert!(path != "a" && !path.starts_with("a/"), "{path}");
    }
    assert!(m.load_listing(0, &p("a")).unwrap().is_none());
    for path in all_paths(&m, 0) {
        assert!(path != "a" && !path.starts_with("a/"), "{path}");
    }
    // Parents and names were rewritten, so listings agree with paths.
    let e = m.get_entry(0, &p("ab/y/z")).unwrap().unwrap();
    assert_eq!(e.name, "z");
    // Into another directory, with unicode in both names (substr counts characters).
    m.save_listing(0, &p("ü/ñ"), t(5), &[dir("😀"), file("f", 1, "x")])
        .unwrap();
    m.save_listing(0, &p("ü/ñ/😀"), t(5), &[file("g", 2, "y")])
        .unwrap();
    m.rename_entry(0, &p("ü/ñ"), &p("a b/中文")).unwrap();
    assert_eq!(names(&m, 0, "a b/中文"), vec!["f", "😀"]);
    assert_eq!(names(&m, 0, "a b/中文/😀"), vec!["g"]);
    assert!(m.get_entry(0, &p("a b/中文/😀/g")).unwrap().is_some());
    assert!(m.load_listing(0, &p("ü/ñ")).unwrap().is_none());
    // Renaming a file entry onto itself does nothing.
    m.rename_entry(0, &p("ab/x"), &p("ab/x")).unwrap();
    assert!(m.get_entry(0, &p("ab/x")).unwrap().is_some());
    // A single file moves its mode too.
    m.rename_entry(0, &p("ab/y/z"), &p("a0/z2")).unwrap();
    assert_eq!(m.local_mode(0, &p("a0/z2")).unwrap(), Some(0o755));
    assert_eq!(m.local_mode(0, &p("ab/y/z")).unwrap(), None);
}

#[test]
fn impossible_renames_are_refused() {
    let m = MetaStore::open_in_memory().unwrap();
    populate(&m, 0);
    for (f, to) in [("a", "a/y/n"), ("a/y", "a"), ("", "x"), ("a", "")] {
        assert!(
            matches!(
                m.rename_entry(0, &p(f), &p(to)),
                Err(MetaError::InvalidRename { .. })
            ),
            "{f} -> {to}"
        );
    }
    assert_eq!(all_paths(&m, 0).len(), 20);
}

#[test]
fn big_subtree_operations_are_fast_and_complete() {
    let m = MetaStore::open_in_memory().unwrap();
    let dirs: Vec<EntryRecord> = (0..100).map(|i| dir(&format!("d{i}"))).collect();
    m.save_listing(0, &p("big"), t(1), &dirs).unwrap();
    for i in 0..100 {
        let files: Vec<EntryRecord> = (0..100).map(|j| file(&format!("f{j}"), j, "e")).collect();
        m.save_listing(0, &p(&format!("big/d{i}")), t(1), &files)
            .unwrap();
    }
    m.save_listing(0, &RemotePath::root(), t(1), &[dir("big"), dir("big0")])
        .unwrap();
    let start = std::time::Instant::now();
    m.rename_entry(0, &p("big"), &p("moved")).unwrap();
    assert_eq!(names(&m, 0, "moved/d57").len(), 100);
    assert!(m.get_entry(0, &p("moved/d99/f99")).unwrap().is_some());
    m.remove_entry(0, &p("moved")).unwrap();
    assert_eq!(all_paths(&m, 0), vec!["big0"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn subtree_statements_use_the_primary_key() {
    let m = MetaStore::open_in_memory().unwrap();
    let conn = m.lock();
    for table in ["entries", "listings", "local_mtimes", "local_modes", "pins"] {
        let mut st = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN DELETE FROM {table} WHERE area = 1 AND path >= 'a/' AND path < 'a0'"
            ))
            .unwrap();
        let plan: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            plan.contains("SEARCH") && plan.contains("path>? AND path<?"),
            "{table}: {plan}"
        );
    }
    let mut st = conn
        .prepare("EXPLAIN QUERY PLAN SELECT name FROM entries WHERE area = 1 AND parent = 'x' ORDER BY name")
        .unwrap();
    let plan: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("entries_by_parent")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:?}");
}

#[test]
fn times_round_trip() {
    let m = MetaStore::open_in_memory().unwrap();
    for time in [
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::new(1, 1),
        UNIX_EPOCH - Duration::new(86_400 * 365, 5),
        UNIX_EPOCH + Duration::new(4_000_000_000, 999_999_999),
    ] {
        m.set_local_mtime(0, &p("f"), Some(time), None).unwrap();
        assert_eq!(m.local_mtime(0, &p("f")).unwrap(), Some(time));
        let mut e = file("f", 1, "x");
        e.mtime = Some(time);
        m.upsert_entry(0, &p("f"), &e).unwrap();
        assert_eq!(m.get_entry(0, &p("f")).unwrap().unwrap().mtime, Some(time));
    }
    m.set_local_mtime(0, &p("f"), None, None).unwrap();
    assert_eq!(m.local_mtime(0, &p("f")).unwrap(), None);
}

#[test]
fn weak_etags_keep_their_weakness() {
    let m = MetaStore::open_in_memory().unwrap();
    let mut e = file("f", 1, "W/\"abc\"");
    m.upsert_entry(0, &p("f"), &e).unwrap();
    let got = m.get_entry(0, &p("f")).unwrap().unwrap();
    assert!(got.etag.as_ref().unwrap().is_weak());
    assert_eq!(got, e);
    e.etag = None;
    m.upsert_entry(0, &p("f"), &e).unwrap();
    assert_eq!(m.get_entry(0, &p("f")).unwrap().unwrap().etag, None);
}

#[test]
fn persists_across_reopen_and_checks_version() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let m = MetaStore::open(&path).unwrap();
        m.save_listing(3, &p("x"), t(9), &[file("y", 1, "e")])
            .unwrap();
        // A second process (here: a second connection) is refused while this one is open.
        match MetaStore::open(&path) {
            Err(MetaError::InUse { .. }) => {}
            other => panic!("second open: {other:?}"),
        }
    }
    {
        let m = MetaStore::open(&path).unwrap();
        assert_eq!(names(&m, 3, "x"), vec!["y"]);
        m.lock()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match MetaStore::open(&path) {
        Err(e @ MetaError::NewerSchema { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("meta.db") && msg.contains("newer"), "{msg}");
        }
        other => panic!("newer schema: {other:?}"),
    }
}

#[test]
fn foreign_databases_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert!(matches!(
        MetaStore::open(&path),
        Err(MetaError::NotOurs { .. })
    ));
    // Nothing was changed.
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 0);
}

#[test]
fn corrupt_values_are_errors_not_data() {
    let m = MetaStore::open_in_memory().unwrap();
    m.upsert_entry(0, &p("f"), &file("f", 1, "x")).unwrap();
    m.lock()
        .execute("UPDATE entries SET etag = '\"\"' WHERE path = 'f'", [])
        .unwrap();
    assert!(matches!(
        m.get_entry(0, &p("f")),
        Err(MetaError::Corrupt(_))
    ));
}

// ---- dirty records ----

#[test]
fn dirty_insert_replace_remove() {
    let m = MetaStore::open_in_memory().unwrap();
    let base = ETag::parse("\"v1\"").unwrap();
    let (r1, old) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/1"), Some(&base), true, 10)
        .unwrap();
    assert!(old.is_none());
    assert_eq!(r1.state, DirtyState::Pending);
    assert_eq!(m.dirty_for(0, &p("d/f")).unwrap().unwrap(), r1);
    // Rewritten before upload: one record, new id, the old one handed back.
    let (r2, old) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/2"), Some(&base), true, 20)
        .unwrap();
    assert_eq!(old.unwrap().id, r1.id);
    assert!(r2.id > r1.id);
    assert_eq!(m.list_dirty().unwrap(), vec![r2.clone()]);
    // The uploader of r1 finishing late removes nothing.
    assert!(!m.set_dirty_state(r1.id, &DirtyState::Uploading).unwrap());
    assert!(m.remove_dirty(r1.id).unwrap().is_none());
    assert_eq!(m.list_dirty().unwrap().len(), 1);
    assert!(m
        .set_dirty_state(r2.id, &DirtyState::Error("HTTP 507".into()))
        .unwrap());
    assert_eq!(
        m.dirty_for(0, &p("d/f")).unwrap().unwrap().state,
        DirtyState::Error("HTTP 507".into())
    );
    assert_eq!(
        m.remove_dirty(r2.id).unwrap().unwrap().staging,
        Path::new("staging/2")
    );
    assert!(m.list_dirty().unwrap().is_empty());
}

#[test]
fn dirty_staging_must_be_relative() {
    let m = MetaStore::open_in_memory().unwrap();
    for bad in ["/tmp/x", "../x", "a/../../x", ""] {
        assert!(matches!(
            m.insert_dirty(0, &p("f"), Path::new(bad), None, true, 0),
            Err(MetaError::InvalidStaging { .. })
        ));
    }
}

#[test]
fn dirty_rename_moves_subtree_with_new_ids() {
    let m = MetaStore::open_in_memory().unwrap();
    let (a, _) = m
        .insert_dirty(0, &p("a/x"), Path::new("s/1"), None, true, 1)
        .unwrap();
    let (b, _) = m
        .insert_dirty(0, &p("a/y/z"), Path::new("s/2"), None, true, 2)
        .unwrap();
    let (c, _) = m
        .insert_dirty(0, &p("ab/x"), Path::new("s/3"), None, true, 3)
        .unwrap();
    let (d, _) = m
        .insert_dirty(0, &p("b/x"), Path::new("s/4"), None, true, 4)
        .unwrap();
    let r = m.update_dirty_path(0, &p("a"), &p("b")).unwrap();
    assert_eq!(r.displaced, vec![d.clone()]);
    let mut moved: Vec<(String, PathBuf)> = r
        .moved
        .iter()
        .map(|x| (x.path.as_str().to_string(), x.staging.clone()))
        .collect();
    moved.sort();
    assert_eq!(
        moved,
        vec![
            ("b/x".to_string(), PathBuf::from("s/1")),
            ("b/y/z".to_string(), PathBuf::from("s/2"))
        ]
    );
    assert!(r.moved.iter().all(|x| x.id > d.id));
    // Stale ids are gone; `ab/x` untouched.
    assert!(m.remove_dirty(a.id).unwrap().is_none());
    assert!(m.remove_dirty(b.id).unwrap().is_none());
    let all = m.list_dirty().unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.contains(&c));
    // A single file rename.
    let r = m
        .update_dirty_path(0, &p("ab/x"), &p("ab/renamed"))
        .unwrap();
    assert_eq!(r.moved.len(), 1);
    assert!(r.displaced.is_empty());
    assert_eq!(m.dirty_for(0, &p("ab/renamed")).unwrap().unwrap().size, 3);
}

#[test]
fn dirty_records_survive_reopen_and_leave_sync_normal() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    let rec = {
        let m = MetaStore::open(&path).unwrap();
        let (r, _) = m
            .insert_dirty(2, &p("doc.txt"), Path::new("staging/x"), None, false, 5)
            .unwrap();
        let sync: i64 = m
            .lock()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(
            sync, 1,
            "synchronous is back to NORMAL after a durable commit"
        );
        r
    };
    let m = MetaStore::open(&path).unwrap();
    assert_eq!(m.list_dirty().unwrap(), vec![rec]);
}

#[test]
fn a_finished_upload_removes_its_record_and_lists_the_file_at_once() {
    let m = MetaStore::open_in_memory().unwrap();
    m.save_listing(0, &p("d"), t(100), &[file("old", 1, "\"o\"")])
        .unwrap();
    let (r, _) = m
        .insert_dirty(0, &p("d/new"), Path::new("staging/1"), None, false, 3)
        .unwrap();
    let (removed, newer) = m
        .upload_done(
            r.id,
            0,
            &p("d/new"),
            &file("new", 3, "\"n1\""),
            Some((3, 77)),
        )
        .unwrap();
    assert_eq!(removed.map(|r| r.id), Some(r.id));
    assert!(newer.is_none());
    assert!(m.list_dirty().unwrap().is_empty());
    assert_eq!(names(&m, 0, "d"), vec!["new", "old"]);
    // Its staging file is recorded as uploaded until it goes, or is committed again.
    assert_eq!(
        m.uploaded_staging().unwrap(),
        vec![(PathBuf::from("staging/1"), 3, 77)]
    );
    // Committed again while it was sent: the new record stays, based on the version sent.
    let (r1, _) = m
        .insert_dirty(0, &p("d/new"), Path::new("staging/2"), None, true, 4)
        .unwrap();
    let (r2, _) = m
        .insert_dirty(0, &p("d/new"), Path::new("staging/3"), None, true, 5)
        .unwrap();
    let (removed, newer) = m
        .upload_done(
            r1.id,
            0,
            &p("d/new"),
            &file("new", 4, "\"n2\""),
            Some((4, 78)),
        )
        .unwrap();
    assert!(
        removed.is_none(),
        "the record was replaced by the newer one"
    );
    let n = newer.expect("the newer record, rebased");
    assert_eq!((n.id, n.base_etag), (r2.id, ETag::parse("\"n2\"")));
    assert_eq!(m.list_dirty().unwrap().len(), 1);
    let (_, stored) = m.load_listing(0, &p("d")).unwrap().unwrap();
    let new = stored.iter().find(|e| e.name == "new").unwrap();
    assert_eq!((new.size, new.etag.clone()), (4, ETag::parse("\"n2\"")));
    // Committed again (staging/2, staging/3): not an uploaded staging file any more; the
    // replaced record's upload did not remove a record, so it recorded nothing either.
    assert_eq!(
        m.uploaded_staging().unwrap(),
        vec![(PathBuf::from("staging/1"), 3, 77)]
    );
    m.insert_dirty(0, &p("d/other"), Path::new("staging/1"), None, false, 9)
        .unwrap();
    assert!(m.uploaded_staging().unwrap().is_empty());
    m.forget_uploaded_staging(None).unwrap();
}

#[test]
fn a_record_replacing_one_whose_upload_started_remembers_it() {
    let m = MetaStore::open_in_memory().unwrap();
    let (r1, _) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/1"), None, false, 2001)
        .unwrap();
    assert_eq!(r1.prior_move, None);
    let temp = p("d/.cloudmount-upload-0123456789abcdef-1.part");
    m.mark_moving(r1.id, Some(&temp), 2001).unwrap();
    let (r2, _) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/1"), None, false, 106)
        .unwrap();
    assert_eq!(r2.prior_move, Some((temp.clone(), 2001)));
    assert_eq!(
        m.list_dirty().unwrap()[0].prior_move,
        Some((temp.clone(), 2001))
    );
    // Replaced again before its own upload started: the earlier upload is still the one.
    let (r3, _) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/1"), None, false, 7)
        .unwrap();
    assert_eq!(r3.prior_move, Some((temp, 2001)));
    // A PUT in place has no temporary name.
    m.mark_moving(r3.id, None, 7).unwrap();
    let (r4, _) = m
        .insert_dirty(0, &p("d/f"), Path::new("staging/1"), None, false, 8)
        .unwrap();
    assert_eq!(r4.prior_move, Some((RemotePath::root(), 7)));
    // Rebased on the version uploaded: nothing to guess any more.
    let r = m.set_dirty_base(0, &p("d/f"), None, true).unwrap().unwrap();
    assert_eq!(r.prior_move, None);
}

#[test]
fn dirty_subtree_removal_and_conflicts() {
    let m = MetaStore::open_in_memory().unwrap();
    for (path, s) in [("a/x", "s/1"), ("a/y/z", "s/2"), ("ab/x", "s/3")] {
        m.insert_dirty(0, &p(path), Path::new(s), None, false, 1)
            .unwrap();
    }
    let gone = m.remove_dirty_subtree(0, &p("a")).unwrap();
    let mut names: Vec<_> = gone.iter().map(|r| r.path.as_str().to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["a/x", "a/y/z"]);
    assert_eq!(m.list_dirty().unwrap().len(), 1, "ab/x is not below a");
    assert!(!m.list_dirty().unwrap()[0].on_server);
    let e = ETag::parse("\"v9\"").unwrap();
    let before = m.list_dirty().unwrap()[0].id;
    let r = m
        .set_dirty_base(0, &p("ab/x"), Some(&e), true)
        .unwrap()
        .unwrap();
    assert_eq!((r.id, r.base_etag, r.on_server), (before, Some(e), true));
    assert!(m
        .set_dirty_base(0, &p("nope"), None, true)
        .unwrap()
        .is_none());

    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    m.add_conflict(
        0,
        &p("d/f.txt"),
        &p("d/f (conflicted copy h 2027-01-15 080000).txt"),
        at,
    )
    .unwrap();
    m.add_conflict(
        1,
        &p("g"),
        &p("g (conflicted copy h 2027-01-15 080001)"),
        at,
    )
    .unwrap();
    let c = m.conflicts().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].path, p("d/f.txt"));
    assert_eq!(c[0].at, at);
    assert_eq!(m.rename_conflicts(0, &p("d"), &p("e")).unwrap(), 1);
    assert_eq!(
        m.conflicts().unwrap()[0].copy,
        p("e/f (conflicted copy h 2027-01-15 080000).txt")
    );
    assert_eq!(m.remove_conflicts(0, &p("e")).unwrap(), 1);
    assert_eq!(m.conflicts().unwrap().len(), 1);
}

#[test]
fn version_1_database_is_migrated_keeping_dirty_records() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let c = store_at_version(&path, 1);
        c.execute(
            "INSERT INTO dirty (area, path, staging, base_etag, size, state, updated_at_ns)
             VALUES (0, 'old/file.txt', x'73746167696e672f31', '\"e\"', 3, 0, 0)",
            [],
        )
        .unwrap();
    }
    let m = MetaStore::open(&path).unwrap();
    let recs = m.list_dirty().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].path, p("old/file.txt"));
    assert!(
        recs[0].on_server,
        "records of v1 were for files on the server"
    );
    assert!(m.conflicts().unwrap().is_empty());
    // Version 3 gave it an identity, kept from then on.
    let id = m.cache_id().unwrap();
    drop(m);
    assert_eq!(MetaStore::open(&path).unwrap().cache_id().unwrap(), id);
}

#[test]
fn every_cache_has_its_own_stable_identity() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
    let id_a = MetaStore::open(&a).unwrap().cache_id().unwrap();
    let id_b = MetaStore::open(&b).unwrap().cache_id().unwrap();
    assert_eq!(id_a.len(), 16);
    assert_ne!(id_a, id_b);
    assert_eq!(MetaStore::open(&a).unwrap().cache_id().unwrap(), id_a);
    // A damaged value is an error, not a silently new identity.
    rusqlite::Connection::open(&a)
        .unwrap()
        .execute(
            "UPDATE settings SET value = 'zz' WHERE key = 'cache_id'",
            [],
        )
        .unwrap();
    assert!(matches!(
        MetaStore::open(&a).unwrap().cache_id(),
        Err(MetaError::Corrupt(_))
    ));
}

fn key(url: &str, name: &str) -> AreaKey {
    AreaKey {
        url: url.into(),
        name: name.into(),
    }
}

#[test]
fn areas_are_identified_by_url_not_by_position() {
    let m = MetaStore::open_in_memory().unwrap();
    let a = key("http://h/dav/a/", "A");
    let b = key("http://h/dav/b", "B");
    let ids = m.resolve_areas(&[a.clone(), b.clone()]).unwrap();
    assert_ne!(ids[0], ids[1]);
    // Reordered: each URL keeps its id.
    assert_eq!(
        m.resolve_areas(&[b.clone(), a.clone()]).unwrap(),
        vec![ids[1], ids[0]]
    );
    // Renamed, and spelled with or without the trailing slash: same id.
    assert_eq!(
        m.resolve_areas(&[key("http://h/dav/a", "Renamed")])
            .unwrap(),
        vec![ids[0]]
    );
    // Another URL gets a new id, never one that was used.
    let c = m.resolve_areas(&[key("http://h/dav/c/", "A")]).unwrap()[0];
    assert!(!ids.contains(&c));
    // Two areas with one URL are refused.
    assert!(m
        .resolve_areas(&[a.clone(), key("http://h/dav/a", "again")])
        .is_err());
}

#[test]
fn records_of_unmounted_areas_are_reported_and_kept() {
    let m = MetaStore::open_in_memory().unwrap();
    let ids = m
        .resolve_areas(&[key("http://h/a/", "A"), key("http://h/b/", "B")])
        .unwrap();
    m.insert_dirty(ids[1], &p("x.txt"), Path::new("staging/1"), None, false, 10)
        .unwrap();
    m.insert_dirty(ids[1], &p("y.txt"), Path::new("staging/2"), None, false, 5)
        .unwrap();
    m.insert_dirty(ids[0], &p("z.txt"), Path::new("staging/3"), None, false, 1)
        .unwrap();
    assert!(m.waiting_elsewhere(&ids).unwrap().is_empty());
    let only_a = m.resolve_areas(&[key("http://h/a/", "A")]).unwrap();
    let w = m.waiting_elsewhere(&only_a).unwrap();
    assert_eq!(
        w,
        vec![WaitingElsewhere {
            area: ids[1],
            url: Some("http://h/b/".into()),
            name: Some("B".into()),
            files: 2,
            bytes: 15,
        }]
    );
    assert_eq!(m.list_dirty().unwrap().len(), 3, "nothing is dropped");
}

#[test]
fn a_version_5_store_adopts_positions_once() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let mut c = store_at_version(&path, 5);
        // Queued files of positions 1 and 2 (position 2's area was removed before the upgrade).
        let tx = c.transaction().unwrap();
        for (area, path) in [(1, "b.txt"), (2, "gone.txt")] {
            tx.execute(
                "INSERT INTO dirty (area, path, staging, base_etag, on_server, size, state, updated_at_ns)
                 VALUES (?1, ?2, x'73746167696e672f31', NULL, 0, 3, 0, 0)",
                rusqlite::params![area, path],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let m = MetaStore::open(&path).unwrap();
    let (a, b) = (key("http://h/a/", "A"), key("http://h/b/", "B"));
    assert_eq!(
        m.resolve_areas(&[a.clone(), b.clone()]).unwrap(),
        vec![0, 1]
    );
    // From now on the URL decides: reordered, B keeps id 1.
    assert_eq!(m.resolve_areas(&[b, a]).unwrap(), vec![1, 0]);
    // A new URL never gets the id of the removed area's rows.
    let c = m.resolve_areas(&[key("http://h/c/", "C")]).unwrap()[0];
    assert_eq!(c, 3);
    let w = m.waiting_elsewhere(&[0, 1, 3]).unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].area, w[0].url.clone(), w[0].files), (2, None, 1));
}

#[test]
fn local_mtimes_are_exact_and_listed_per_directory_with_their_version() {
    let m = MetaStore::open_in_memory().unwrap();
    let far = UNIX_EPOCH + Duration::new(1 << 34, 999_999_999); // past 2262
    let before = UNIX_EPOCH - Duration::new(5, 250_000_000);
    let v = ETag::parse("\"v1\"").unwrap();
    m.set_local_mtime(0, &p("d/a"), Some(far), Some(&v))
        .unwrap();
    m.set_local_mtime(0, &p("d/b"), Some(before), None).unwrap();
    m.set_local_mtime(0, &p("d/b/deeper"), Some(t(1)), None)
        .unwrap();
    m.set_local_mtime(0, &p("top"), Some(t(2)), None).unwrap();
    assert_eq!(m.local_mtime(0, &p("d/a")).unwrap(), Some(far));
    assert_eq!(m.local_mtime(0, &p("d/b")).unwrap(), Some(before));
    let mut d = m.local_mtimes_in(0, &p("d")).unwrap();
    d.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        d,
        vec![
            ("a".to_string(), far, Some(v)),
            ("b".to_string(), before, None)
        ]
    );
    let root = m.local_mtimes_in(0, &RemotePath::root()).unwrap();
    assert_eq!(root, vec![("top".to_string(), t(2), None)]);
}

#[test]
fn local_modes_are_listed_per_directory_and_forgotten_at_the_default() {
    let m = MetaStore::open_in_memory().unwrap();
    m.set_local_mode(0, &p("d/a"), Some(0o755)).unwrap();
    m.set_local_mode(0, &p("d/b"), Some(0o000)).unwrap();
    m.set_local_mode(0, &p("d/b/deeper"), Some(0o600)).unwrap();
    m.set_local_mode(0, &p("top"), Some(0o7777)).unwrap();
    m.set_local_mode(1, &p("d/c"), Some(0o700)).unwrap();
    // Only the permission bits are stored.
    assert_eq!(m.local_mode(0, &p("top")).unwrap(), Some(0o777));
    let mut d = m.local_modes_in(0, &p("d")).unwrap();
    d.sort();
    assert_eq!(d, vec![("a".to_string(), 0o755), ("b".to_string(), 0)]);
    assert_eq!(
        m.local_modes_in(0, &RemotePath::root()).unwrap(),
        vec![("top".to_string(), 0o777)]
    );
    m.set_local_mode(0, &p("d/a"), None).unwrap();
    assert_eq!(m.local_mode(0, &p("d/a")).unwrap(), None);
    assert_eq!(m.local_modes_in(0, &p("d")).unwrap().len(), 1);
    // A value no release writes is an error, not a mode.
    m.lock()
        .execute("UPDATE local_modes SET perm = 511 WHERE path = 'top'", [])
        .unwrap();
    assert_eq!(m.local_mode(0, &p("top")).unwrap(), Some(0o777));
    assert!(m
        .lock()
        .execute("UPDATE local_modes SET perm = 512 WHERE path = 'top'", [])
        .is_err());
}
