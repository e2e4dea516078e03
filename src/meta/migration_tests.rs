//! Migrations of `meta.db` from one schema version to the next, each on a store written by
//! the older version's SQL.

use super::tests::{p, store_at_version, t};
use super::*;

#[test]
fn version_7_database_gets_local_modes_keeping_its_mtimes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let mut c = store_at_version(&path, 7);
        let tx = c.transaction().unwrap();
        tx.execute(
            "INSERT INTO local_mtimes (area, path, mtime_ns, sec, nsec, version)
             VALUES (0, 'd/f', 5000000000, 5, 0, NULL)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let m = MetaStore::open(&path).unwrap();
    let v: i64 = m
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(m.local_mtime(0, &p("d/f")).unwrap(), Some(t(5)));
    assert!(m.local_modes_in(0, &p("d")).unwrap().is_empty());
    m.set_local_mode(0, &p("d/f"), Some(0o751)).unwrap();
    assert_eq!(m.local_mode(0, &p("d/f")).unwrap(), Some(0o751));
}

#[test]
fn version_8_database_keeps_its_pins_as_pins() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let c = store_at_version(&path, 8);
        c.execute("INSERT INTO pins (area, path) VALUES (0, 'Projects')", [])
            .unwrap();
    }
    let m = MetaStore::open(&path).unwrap();
    let v: i64 = m
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(
        m.pins_all().unwrap(),
        vec![(0, "Projects".to_string(), true)]
    );
    // An exception inside it, then the mark removed.
    m.pin_set(0, &p("Projects/big"), Some(false)).unwrap();
    let mut all = m.pins_all().unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            (0, "Projects".to_string(), true),
            (0, "Projects/big".to_string(), false)
        ]
    );
    m.pin_set(0, &p("Projects/big"), None).unwrap();
    assert_eq!(m.pins_all().unwrap().len(), 1);
    assert!(m.lock().execute("UPDATE pins SET keep = 2", []).is_err());
}

#[test]
fn version_9_database_gets_an_empty_ns_ops_table_keeping_its_dirty_records() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta.db");
    {
        let c = store_at_version(&path, 9);
        c.execute(
            "INSERT INTO dirty (area, path, staging, size, state, updated_at_ns, on_server)
             VALUES (0, 'd/f', CAST('staging/1' AS BLOB), 3, 0, 0, 0)",
            [],
        )
        .unwrap();
    }
    let m = MetaStore::open(&path).unwrap();
    let v: i64 = m
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 10);
    assert_eq!(SCHEMA_VERSION, 10);
    assert_eq!(m.list_dirty().unwrap().len(), 1);
    assert!(m.ns_ops().unwrap().is_empty());
    let op = NsOp {
        id: 0,
        area: 0,
        kind: NsOpKind::Mkdir,
        path: p("d"),
        target: None,
        source_kind: crate::remote::EntryKind::Dir,
        size: 0,
        mtime: None,
        etag: None,
        base: None,
        replace: false,
        target_base: None,
        ours: false,
        at: t(1),
    };
    let got = m.add_ns_op(&op).unwrap();
    assert_eq!(m.ns_ops().unwrap(), vec![got]);
}
