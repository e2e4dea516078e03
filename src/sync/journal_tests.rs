//! Tests of the sync journal and of the folders and settings kept in it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::sync::folder::{FolderSpec, Mode, Schedule};
use crate::sync::schedule::Weekday;
use crate::sync::store::{parse_time, parse_weekday};

fn spec(id: &str, local: &str, remote: &str) -> FolderSpec {
    FolderSpec {
        id: FolderId(id.to_string()),
        local: PathBuf::from(local),
        remote: remote.to_string(),
        mode: Mode::Bidirectional,
        schedule: Schedule::Immediate,
        keep_deleted: false,
        paused: false,
        delete_limit_percent: 50,
        added_at: 1_700_000_000,
        area: String::new(),
        mode_reason: String::new(),
    }
}

fn fid(s: &str) -> FolderId {
    FolderId(s.to_string())
}

/// A journal in a fresh directory, with folder `f` (and `g`) added.
fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("sync/p.db")).unwrap();
    j.add_folder(&spec("f", "/home/u/F", "F")).unwrap();
    j.add_folder(&spec("g", "/home/u/G", "G")).unwrap();
    (dir, j)
}

fn base(n: u64) -> Base {
    Base {
        local: LocalMeta {
            kind: Kind::File,
            size: n,
            mtime_ns: -5 + n as i64,
            inode: u64::MAX - n,
            hash: Some([n as u8; 32]),
        },
        remote: RemoteMeta {
            kind: Kind::File,
            size: n,
            etag: Some(format!("\"e{n}\"")),
            mtime: Some(1_700_000_000 + n as i64),
        },
    }
}

fn dir_base() -> Base {
    Base {
        local: LocalMeta {
            kind: Kind::Dir,
            size: 0,
            mtime_ns: 0,
            inode: 7,
            hash: None,
        },
        remote: RemoteMeta {
            kind: Kind::Dir,
            size: 0,
            etag: None,
            mtime: None,
        },
    }
}

fn paths(j: &Journal, f: &str) -> Vec<String> {
    j.bases(&fid(f)).unwrap().into_keys().collect()
}

#[test]
fn open_creates_private_dir_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/p.db");
    let j = Journal::open(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    let wal: String = j
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(wal, "wal");
    let sync: i64 = j
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1, "synchronous=NORMAL");
    let fk: i64 = j
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let v: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert_eq!(j.path(), path.display().to_string());
}

#[test]
fn everything_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let f = fid("f");
    let conflict = ConflictRecord {
        path: "x.txt".into(),
        copy: "x (conflict).txt".into(),
        at: 5,
    };
    let run = RunRecord {
        at: 9,
        outcome: "partial".into(),
        message: "1 file could not be synced".into(),
    };
    {
        let j = Journal::open(&path).unwrap();
        let mut s = spec("f", "/home/u/F", "F");
        s.schedule = Schedule::Weekly;
        s.mode = Mode::UploadOnly;
        s.keep_deleted = true;
        j.add_folder(&s).unwrap();
        j.put_base(&f, "a", &base(1)).unwrap();
        j.put_base(&f, "d", &dir_base()).unwrap();
        j.add_conflict(&f, &conflict).unwrap();
        j.set_problem(&f, "bad", "permission denied").unwrap();
        j.set_last_run(&f, &run).unwrap();
        j.set_next_run(&f, Some(100)).unwrap();
        j.set_last_run_at(&f, 50).unwrap();
        j.set_setting("schedule.time", "4:05").unwrap();
    }
    let j = Journal::open(&path).unwrap();
    let b = j.bases(&f).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b["a"], base(1));
    assert_eq!(b["d"], dir_base());
    assert_eq!(j.conflicts(&f).unwrap(), vec![conflict]);
    assert_eq!(j.problems(&f).unwrap()[0].reason, "permission denied");
    assert_eq!(j.last_run(&f).unwrap(), Some(run));
    assert_eq!(j.next_run(&f).unwrap(), Some(100));
    assert_eq!(j.last_run_at(&f).unwrap(), Some(50));
    let s = j.folder(&f).unwrap().unwrap();
    assert_eq!(s.schedule, Schedule::Weekly);
    assert_eq!(s.mode, Mode::UploadOnly);
    assert!(s.keep_deleted);
    assert_eq!(j.settings().unwrap().schedule_time(), (4, 5));
}

#[test]
fn newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    drop(Journal::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    match Journal::open(&path) {
        Err(JournalError::Newer {
            found, supported, ..
        }) => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected Newer, got {other:?}"),
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn garbage_file_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    std::fs::write(&path, "this is not a database at all\n".repeat(200)).unwrap();
    match Journal::open(&path) {
        Err(e @ JournalError::Damaged { .. }) => {
            assert!(e.to_string().contains("not a SQLite database"), "{e}");
            assert!(e.to_string().contains("p.db"), "{e}");
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn corrupt_pages_are_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    {
        let j = Journal::open(&path).unwrap();
        j.add_folder(&spec("f", "/home/u/F", "F")).unwrap();
        let many: Vec<(String, Base)> = (0..2000).map(|i| (format!("p{i}"), base(i))).collect();
        j.put_bases(&fid("f"), &many).unwrap();
        j.conn
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .unwrap();
    }
    // Overwrite pages 3.. with garbage (page 1 keeps the header, so it still opens).
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 6 * page);
    for b in &mut bytes[2 * page..5 * page] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    match Journal::open(&path) {
        Err(JournalError::Damaged { .. }) => {}
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(c);
    assert!(matches!(
        Journal::open(&path),
        Err(JournalError::Damaged { .. })
    ));
}

#[test]
fn bases_are_per_folder_and_replaced() {
    let (_d, j) = journal();
    j.put_base(&fid("f"), "a", &base(1)).unwrap();
    j.put_base(&fid("g"), "a", &base(2)).unwrap();
    j.put_base(&fid("f"), "a", &base(3)).unwrap();
    assert_eq!(j.bases(&fid("f")).unwrap()["a"], base(3));
    assert_eq!(j.bases(&fid("g")).unwrap()["a"], base(2));
    let many: Vec<(String, Base)> = (0..50).map(|i| (format!("m/{i}"), base(i))).collect();
    j.put_bases(&fid("f"), &many).unwrap();
    assert_eq!(j.bases(&fid("f")).unwrap().len(), 51);
    assert_eq!(j.bases(&fid("f")).unwrap()["m/7"], base(7));
}

#[test]
fn bases_of_an_unknown_folder_are_refused() {
    let (_d, j) = journal();
    assert!(j.put_base(&fid("nope"), "a", &base(1)).is_err());
    assert!(j.bases(&fid("nope")).unwrap().is_empty());
}

#[test]
fn put_bases_is_all_or_nothing() {
    let (_d, j) = journal();
    let mut too_big = base(1);
    too_big.local.size = u64::MAX;
    let batch = vec![("a".to_string(), base(1)), ("b".to_string(), too_big)];
    assert!(j.put_bases(&fid("f"), &batch).is_err());
    assert!(paths(&j, "f").is_empty());
}

const TRICKY: &[&str] = &[
    "a", "a/x", "a/y/z", "a b", "a-b", "a.b", "a0", "ab/x", "a%/x", "a_", "a_/x", "%", "%/q", "_",
    "_/q", "b",
];

fn tricky(j: &Journal) {
    let all: Vec<(String, Base)> = TRICKY.iter().map(|p| (p.to_string(), base(1))).collect();
    j.put_bases(&fid("f"), &all).unwrap();
    j.put_bases(&fid("g"), &all).unwrap();
}

fn without(drop: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = TRICKY
        .iter()
        .filter(|p| !drop.contains(p))
        .map(|p| p.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn forget_tree_takes_exactly_the_subtree() {
    let (_d, j) = journal();
    tricky(&j);
    j.forget_tree(&fid("f"), "a").unwrap();
    assert_eq!(paths(&j, "f"), without(&["a", "a/x", "a/y/z"]));
    j.forget_tree(&fid("f"), "%").unwrap();
    assert_eq!(paths(&j, "f"), without(&["a", "a/x", "a/y/z", "%", "%/q"]));
    j.forget_tree(&fid("f"), "_").unwrap();
    assert_eq!(
        paths(&j, "f"),
        without(&["a", "a/x", "a/y/z", "%", "%/q", "_", "_/q"])
    );
    j.forget_tree(&fid("f"), "a%").unwrap();
    assert_eq!(
        paths(&j, "f"),
        without(&["a", "a/x", "a/y/z", "%", "%/q", "_", "_/q", "a%/x"])
    );
    // The other folder is untouched; "" forgets a whole folder.
    assert_eq!(paths(&j, "g"), without(&[]));
    j.forget_tree(&fid("g"), "").unwrap();
    assert!(paths(&j, "g").is_empty());
}

#[test]
fn move_tree_moves_exactly_the_subtree() {
    let (_d, j) = journal();
    tricky(&j);
    let mut marked = base(9);
    marked.remote.etag = Some("\"moved\"".into());
    j.put_base(&fid("f"), "a/y/z", &marked).unwrap();
    j.move_tree(&fid("f"), "a", "n/a").unwrap();
    let mut expect = without(&["a", "a/x", "a/y/z"]);
    expect.extend(["n/a", "n/a/x", "n/a/y/z"].map(String::from));
    expect.sort();
    assert_eq!(paths(&j, "f"), expect);
    assert_eq!(j.bases(&fid("f")).unwrap()["n/a/y/z"], marked);
    assert_eq!(paths(&j, "g"), without(&[]));

    // Names with LIKE wildcards move alone.
    j.move_tree(&fid("f"), "_", "u").unwrap();
    j.move_tree(&fid("f"), "%", "p").unwrap();
    let b = j.bases(&fid("f")).unwrap();
    assert!(b.contains_key("u") && b.contains_key("u/q") && b.contains_key("a_/x"));
    assert!(b.contains_key("p") && b.contains_key("p/q") && b.contains_key("a%/x"));
    assert!(!b.contains_key("_") && !b.contains_key("%/q"));
}

#[test]
fn move_tree_replaces_the_target_and_refuses_nesting() {
    let (_d, j) = journal();
    tricky(&j);
    // "ab/x" is replaced by the moved "a" subtree's descendants; "ab" was only a prefix.
    j.move_tree(&fid("f"), "a", "ab").unwrap();
    let b = j.bases(&fid("f")).unwrap();
    assert!(b.contains_key("ab") && b.contains_key("ab/y/z"));
    assert_eq!(b["ab/x"], base(1));
    assert!(!b.contains_key("a") && b.contains_key("a0") && b.contains_key("a b"));
    for (from, to) in [("b", "b/c"), ("b/c", "b"), ("", "x"), ("x", "")] {
        assert!(
            matches!(
                j.move_tree(&fid("f"), from, to),
                Err(JournalError::Refused(_))
            ),
            "{from} -> {to}"
        );
    }
    j.move_tree(&fid("f"), "b", "b").unwrap();
    assert!(j.bases(&fid("f")).unwrap().contains_key("b"));
}

#[test]
fn conflicts_add_list_forget() {
    let (_d, j) = journal();
    let f = fid("f");
    let c1 = ConflictRecord {
        path: "x".into(),
        copy: "x (1)".into(),
        at: 2,
    };
    let c2 = ConflictRecord {
        path: "y".into(),
        copy: "y (1)".into(),
        at: 1,
    };
    j.add_conflict(&f, &c1).unwrap();
    j.add_conflict(&f, &c2).unwrap();
    j.add_conflict(&fid("g"), &c1).unwrap();
    assert_eq!(j.conflicts(&f).unwrap(), vec![c2.clone(), c1.clone()]);
    j.forget_conflict(&f, "x (1)").unwrap();
    assert_eq!(j.conflicts(&f).unwrap(), vec![c2]);
    j.forget_conflict(&f, "y").unwrap();
    assert!(j.conflicts(&f).unwrap().is_empty());
    assert_eq!(j.conflicts(&fid("g")).unwrap(), vec![c1]);
}

#[test]
fn problems_count_attempts_and_clear() {
    let (_d, j) = journal();
    let f = fid("f");
    j.set_problem(&f, "a", "r1").unwrap();
    j.set_problem(&f, "a", "r2").unwrap();
    j.set_problem(&f, "b", "rb").unwrap();
    j.set_problem(&f, "c", "rc").unwrap();
    j.set_problem(&fid("g"), "a", "other").unwrap();
    let p = j.problems(&f).unwrap();
    assert_eq!(
        p[0],
        Problem {
            path: "a".into(),
            reason: "r2".into(),
            attempts: 2
        }
    );
    assert_eq!(p.len(), 3);
    j.clear_problem(&f, "b").unwrap();
    assert_eq!(j.problems(&f).unwrap().len(), 2);
    j.clear_problems_except(&f, &["c".to_string(), "zz".to_string()])
        .unwrap();
    let p = j.problems(&f).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].path, "c");
    assert_eq!(j.problems(&fid("g")).unwrap().len(), 1);
}

#[test]
fn runs_and_schedule() {
    let (_d, j) = journal();
    let f = fid("f");
    assert_eq!(j.last_run(&f).unwrap(), None);
    assert_eq!(j.next_run(&f).unwrap(), None);
    assert_eq!(j.last_run_at(&f).unwrap(), None);
    let r1 = RunRecord {
        at: 1,
        outcome: "ok".into(),
        message: "synced".into(),
    };
    let r2 = RunRecord {
        at: 2,
        outcome: "failed".into(),
        message: "server unreachable".into(),
    };
    j.set_last_run(&f, &r1).unwrap();
    j.set_last_run(&f, &r2).unwrap();
    assert_eq!(j.last_run(&f).unwrap(), Some(r2));
    assert_eq!(j.last_run(&fid("g")).unwrap(), None);
    j.set_next_run(&f, Some(10)).unwrap();
    j.set_last_run_at(&f, 5).unwrap();
    assert_eq!(j.next_run(&f).unwrap(), Some(10));
    assert_eq!(j.last_run_at(&f).unwrap(), Some(5));
    j.set_next_run(&f, None).unwrap();
    assert_eq!(j.next_run(&f).unwrap(), None);
    assert_eq!(j.last_run_at(&f).unwrap(), Some(5));
}

#[test]
fn folders_add_list_find_update() {
    let (_d, j) = journal();
    let all = j.folders().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], spec("f", "/home/u/F", "F"));
    assert_eq!(
        j.folder(&fid("g")).unwrap(),
        Some(spec("g", "/home/u/G", "G"))
    );
    assert_eq!(j.folder(&fid("h")).unwrap(), None);
    assert_eq!(
        j.find_folder(Path::new("/home//u/F/")).unwrap().unwrap().id,
        fid("f")
    );
    assert_eq!(j.find_folder(Path::new("/home/u/F/sub")).unwrap(), None);
    assert_eq!(j.find_folder(Path::new("F")).unwrap(), None);

    // Stored normalised.
    j.add_folder(&spec("h", "/data//H/./", "/x//H/")).unwrap();
    let h = j.folder(&fid("h")).unwrap().unwrap();
    assert_eq!(h.local, PathBuf::from("/data/H"));
    assert_eq!(h.remote, "x/H");

    let mut g = spec("g", "/home/u/G2", "G2");
    g.paused = true;
    g.schedule = Schedule::Daily;
    g.delete_limit_percent = 10;
    g.added_at = 1; // kept as stored
    j.update_folder(&g).unwrap();
    let stored = j.folder(&fid("g")).unwrap().unwrap();
    assert_eq!(stored.local, PathBuf::from("/home/u/G2"));
    assert!(stored.paused);
    assert_eq!(stored.schedule, Schedule::Daily);
    assert_eq!(stored.delete_limit_percent, 10);
    assert_eq!(stored.added_at, 1_700_000_000);
    assert!(matches!(
        j.update_folder(&spec("zz", "/z", "z")),
        Err(JournalError::Refused(_))
    ));
    // Updating a folder does not collide with itself.
    j.update_folder(&stored).unwrap();
}

#[test]
fn overlapping_folders_are_refused() {
    let (_d, j) = journal();
    let refused = |s: FolderSpec, words: &str| match j.add_folder(&s) {
        Err(JournalError::Refused(m)) => {
            assert!(m.contains(words), "{m:?} lacks {words:?}");
            assert!(!m.contains('\n'));
        }
        other => panic!("{s:?}: expected Refused, got {other:?}"),
    };
    refused(spec("x", "/home/u/F", "X"), "already a sync folder");
    refused(spec("x", "/home/u/F/", "X"), "already a sync folder");
    refused(
        spec("x", "/home/u/F/sub/deep", "X"),
        "inside the sync folder /home/u/F",
    );
    refused(spec("x", "/home/u", "X"), "contains the sync folder");
    refused(spec("x", "/", "X"), "contains the sync folder");
    refused(spec("x", "/home/u/X", "F"), "already synced with /home/u/F");
    refused(
        spec("x", "/home/u/X", "/F/"),
        "already synced with /home/u/F",
    );
    refused(spec("x", "/home/u/X", "F/sub"), "inside server folder F");
    refused(spec("x", "/home/u/X", ""), "contains server folder");
    refused(spec("f", "/home/u/X", "X"), "already exists");
    refused(spec("x", "relative/X", "X"), "not an absolute path");
    refused(spec("x", "/home/u/../X", "X"), "..");
    refused(spec("x", "/home/u/X", "a/../b"), "..");
    let mut over = spec("x", "/home/u/X", "X");
    over.delete_limit_percent = 101;
    refused(over, "over 100%");
    // A sibling whose name only starts the same is fine, on both sides.
    j.add_folder(&spec("x", "/home/u/FF", "FF")).unwrap();
    // An update is checked the same way.
    match j.update_folder(&spec("x", "/home/u/G/in", "FF")) {
        Err(JournalError::Refused(m)) => assert!(m.contains("inside the sync folder")),
        other => panic!("{other:?}"),
    }
    assert_eq!(j.folders().unwrap().len(), 3);
}

#[test]
fn remove_folder_drops_its_rows_only() {
    let (_d, j) = journal();
    for f in ["f", "g"] {
        let f = fid(f);
        j.put_base(&f, "a", &base(1)).unwrap();
        j.add_conflict(
            &f,
            &ConflictRecord {
                path: "a".into(),
                copy: "a (1)".into(),
                at: 1,
            },
        )
        .unwrap();
        j.set_problem(&f, "a", "r").unwrap();
        j.set_last_run(
            &f,
            &RunRecord {
                at: 1,
                outcome: "ok".into(),
                message: String::new(),
            },
        )
        .unwrap();
        j.set_next_run(&f, Some(3)).unwrap();
    }
    assert!(j.remove_folder(&fid("f")).unwrap());
    assert!(!j.remove_folder(&fid("f")).unwrap());
    assert_eq!(j.folder(&fid("f")).unwrap(), None);
    for table in ["bases", "conflicts", "problems", "runs", "schedule"] {
        let n: i64 = j
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE folder = 'f'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table}");
        let n: i64 = j
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE folder = 'g'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{table}");
    }
    // Its paths are free again.
    j.add_folder(&spec("f2", "/home/u/F", "F")).unwrap();
}

#[test]
fn settings_validated_and_typed() {
    let (_d, j) = journal();
    let s = j.settings().unwrap();
    assert_eq!(s.schedule_time(), (3, 0));
    assert_eq!(s.schedule_day(), Weekday::Sun);
    assert_eq!(j.setting("schedule.time").unwrap(), None);
    j.set_setting("schedule.time", "7:30").unwrap();
    j.set_setting("schedule.day", "Mon").unwrap();
    assert_eq!(
        j.setting("schedule.time").unwrap().as_deref(),
        Some("07:30")
    );
    assert_eq!(
        j.setting("schedule.day").unwrap().as_deref(),
        Some("monday")
    );
    let s = j.settings().unwrap();
    assert_eq!(s.schedule_time(), (7, 30));
    assert_eq!(s.schedule_day(), Weekday::Mon);
    assert_eq!(
        s.entries(),
        vec![
            ("schedule.time", "07:30".to_string()),
            ("schedule.day", "monday".to_string())
        ]
    );
    for (k, v) in [
        ("schedule.time", "24:00"),
        ("schedule.time", "7:3"),
        ("schedule.day", "someday"),
    ] {
        assert!(matches!(j.set_setting(k, v), Err(JournalError::Refused(_))));
    }
    match j.set_setting("colour", "blue") {
        Err(JournalError::Refused(m)) => {
            assert!(
                m.contains("schedule.time") && m.contains("schedule.day"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(j.setting("colour"), Err(JournalError::Refused(_))));
    assert_eq!(j.settings().unwrap().schedule_time(), (7, 30));
}

#[test]
fn time_and_weekday_parsing() {
    assert_eq!(parse_time("03:00"), Ok((3, 0)));
    assert_eq!(parse_time("3:00"), Ok((3, 0)));
    assert_eq!(parse_time("23:59"), Ok((23, 59)));
    assert_eq!(parse_time(" 00:00 "), Ok((0, 0)));
    for bad in [
        "", "3", "24:00", "12:60", "12:5", "-1:00", "1:2:3", "ab:cd", "+1:00", "123:00",
    ] {
        assert!(parse_time(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_weekday("fri"), Ok(Weekday::Fri));
    assert_eq!(parse_weekday("Saturday"), Ok(Weekday::Sat));
    assert!(parse_weekday("fr").unwrap_err().contains("monday"));
}

/// A journal of format 1 (folders without an area) opens migrated: every folder is in the
/// main area, and a folder of another area may then sync the same server path.
#[test]
fn a_version_1_journal_gets_the_area_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(V1).unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO folders VALUES ('aa', '/home/u/Docs', 'Docs', 'bidirectional',
                                         'immediate', 0, 0, 50, 1700000000)",
            [],
        )
        .unwrap();
    }
    let j = Journal::open(&path).unwrap();
    let v: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let f = j.folders().unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].area, "");
    assert_eq!(f[0].remote, "Docs");
    // The same server path in another area is another folder; in the same area it is refused.
    let mut followed = spec("bb", "/home/u/Bob", "Docs");
    followed.area = "Following".into();
    followed.mode = Mode::DownloadOnly;
    j.add_folder(&followed).unwrap();
    let again = spec("cc", "/home/u/Other", "Docs");
    assert!(matches!(
        j.add_folder(&again),
        Err(JournalError::Refused(_))
    ));
    drop(j);
    let j = Journal::open(&path).unwrap();
    let got = j.folder(&FolderId("bb".into())).unwrap().unwrap();
    assert_eq!(got.area, "Following");
    assert_eq!(got.mode, Mode::DownloadOnly);
}

/// A journal of format 2 opens migrated to 3 (a folder's mode chosen by the user: no reason);
/// the mode `new-files-only` and its reason round-trip. A reader of format 2 would refuse the
/// file as newer (the version is what says a new mode value may be there).
#[test]
fn a_version_2_journal_gets_the_mode_reason_and_keeps_new_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(V1).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute(
            "INSERT INTO folders VALUES ('aa', '/home/u/Drop', 'Drop', 'download-only',
                                         'immediate', 0, 0, 50, 1700000000, 'Shared')",
            [],
        )
        .unwrap();
    }
    assert_eq!(SCHEMA_VERSION, 3);
    let j = Journal::open(&path).unwrap();
    let v: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 3);
    let mut f = j.folder(&FolderId("aa".into())).unwrap().unwrap();
    assert_eq!(f.mode, Mode::DownloadOnly);
    assert_eq!(f.mode_reason, "");
    f.mode = Mode::NewFilesOnly;
    f.mode_reason = "the server refused a change".into();
    j.update_folder(&f).unwrap();
    drop(j);
    let j = Journal::open(&path).unwrap();
    let got = j.folder(&FolderId("aa".into())).unwrap().unwrap();
    assert_eq!(got.mode, Mode::NewFilesOnly);
    assert_eq!(got.mode_reason, "the server refused a change");
    let stored: String = j
        .conn
        .query_row("SELECT mode FROM folders WHERE id = 'aa'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, "new-files-only");
}
