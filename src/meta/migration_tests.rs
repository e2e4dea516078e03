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
    assert_eq!(v, 9);
    assert_eq!(SCHEMA_VERSION, 9);
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
