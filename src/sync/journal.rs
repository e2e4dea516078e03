//! The sync journal: one SQLite file per profile (`$XDG_DATA_HOME/cloudmount/sync/<profile>.db`)
//! holding its sync folders ([`super::store`]), the settings, and per folder the last synced
//! state of each path (the base), conflicts, files that cannot be synced, and the runs.
//! Versioned, migrated forward, checked on open; its format is in docs/design.md.
//!
//! # Invariants
//!
//! - Every per-folder row (bases, conflicts, problems, runs, schedule) names a folder of the
//!   `folders` table (foreign keys, `ON DELETE CASCADE`): a folder must be added
//!   ([`Journal::add_folder`]) before anything is recorded for it.
//! - Paths are relative to the folder root, `/`-separated. The subtree of `p` is `p` itself and
//!   the paths in `[p + "/", p + "0")` (SQLite compares TEXT bytewise, `'0'` is `'/' + 1`): no
//!   `LIKE`, so `%` and `_` in names are plain characters.
//! - Every stored value is checked when read back; a bad one is [`JournalError::Damaged`],
//!   never silently used.
//!
//! # Durability
//!
//! WAL with `synchronous=NORMAL`: each call is one transaction, written after the server
//! operation it records was confirmed. A crash of the process loses nothing that returned; a
//! power cut may lose the last few transactions (never reorder them or damage the file). That
//! is safe by construction: a lost base makes the next sync see a file present on both sides
//! with no base, which compares the contents — equal is adopted, so there are no false
//! conflicts and nothing is sent twice in vain beyond that comparison. FULL (an fsync per
//! recorded file) cost more than the transfer of small files.

use std::collections::{BTreeMap, HashSet};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::folder::FolderId;
use super::state::{Base, Kind, LocalMeta, RemoteMeta};

/// The journal format this build reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// `PRAGMA application_id` of a cloudmount sync journal ("ClSy").
pub const APPLICATION_ID: i64 = 0x436c_5379;

/// Version 1. Times are seconds since the Unix epoch unless named otherwise.
const V1: &str = r#"
CREATE TABLE folders (
    id            TEXT    NOT NULL PRIMARY KEY,
    local         TEXT    NOT NULL UNIQUE,
    remote        TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    schedule      TEXT    NOT NULL,
    keep_deleted  INTEGER NOT NULL CHECK (keep_deleted IN (0, 1)),
    paused        INTEGER NOT NULL CHECK (paused IN (0, 1)),
    delete_limit  INTEGER NOT NULL CHECK (delete_limit BETWEEN 0 AND 100),
    added_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE settings (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE bases (
    folder      TEXT    NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path        TEXT    NOT NULL,
    l_kind      TEXT    NOT NULL CHECK (l_kind IN ('f', 'd')),
    l_size      INTEGER NOT NULL CHECK (l_size >= 0),
    l_mtime_ns  INTEGER NOT NULL,
    l_inode     INTEGER NOT NULL,
    l_hash      BLOB    CHECK (l_hash IS NULL OR length(l_hash) = 32),
    r_kind      TEXT    NOT NULL CHECK (r_kind IN ('f', 'd')),
    r_size      INTEGER NOT NULL CHECK (r_size >= 0),
    r_etag      TEXT,
    r_mtime     INTEGER,
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;

CREATE TABLE conflicts (
    folder  TEXT    NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path    TEXT    NOT NULL,
    copy    TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (folder, copy)
) WITHOUT ROWID;

CREATE TABLE problems (
    folder    TEXT    NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path      TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    attempts  INTEGER NOT NULL CHECK (attempts >= 1),
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;

CREATE TABLE runs (
    folder   TEXT    NOT NULL PRIMARY KEY REFERENCES folders (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    message  TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE schedule (
    folder       TEXT    NOT NULL PRIMARY KEY REFERENCES folders (id) ON DELETE CASCADE,
    next_run_at  INTEGER,
    last_run_at  INTEGER
) WITHOUT ROWID;
"#;

/// Steps from version N to N+1, indexed by N-1. A new file is created at version 1 and brought
/// up through every step, so new and migrated files are the same.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: a folder's area of the profile, by name ('' = the main area, as every folder of
    // version 1 was).
    "ALTER TABLE folders ADD COLUMN area TEXT NOT NULL DEFAULT '';",
    // 2 → 3: why cloudmount chose a folder's mode ('' = the user chose it); and the mode
    // 'new-files-only', which a reader of version 2 does not know: the version says so, so
    // that an older cloudmount refuses the file as newer instead of calling it damaged.
    "ALTER TABLE folders ADD COLUMN mode_reason TEXT NOT NULL DEFAULT '';",
];

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("sync journal {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("sync journal {path} was written by a newer cloudmount (format {found}, this one reads up to {supported})")]
    Newer {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("sync journal {path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
    #[error("sync journal {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

pub type JournalResult<T> = Result<T, JournalError>;

/// A conflict the sync resolved by keeping both versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictRecord {
    /// The path that kept its name (the server's version).
    pub path: String,
    /// Where the other version is (relative to the folder root).
    pub copy: String,
    /// Seconds since the epoch.
    pub at: i64,
}

/// A file that could not be synced, with the reason; retried at every sync.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub path: String,
    pub reason: String,
    pub attempts: u32,
}

/// How the last run of a folder ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// Seconds since the epoch when it ended.
    pub at: i64,
    /// `ok`, `partial` (some files could not be synced), `stopped` (a guard stopped it),
    /// `failed`.
    pub outcome: String,
    /// One line for the user.
    pub message: String,
}

/// The open journal.
pub struct Journal {
    pub(crate) conn: rusqlite::Connection,
    pub(crate) path: String,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Maps SQLite errors to journal errors naming the file; a file that is not a database or is
/// corrupt is [`JournalError::Damaged`].
pub(crate) fn sql_error(path: &str, e: rusqlite::Error) -> JournalError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => JournalError::Damaged {
            path: path.to_string(),
            reason: "not a SQLite database".to_string(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => JournalError::Damaged {
            path: path.to_string(),
            reason: format!("SQLite reports corruption ({e})"),
        },
        _ => JournalError::Sqlite {
            path: path.to_string(),
            source: e,
        },
    }
}

impl Journal {
    /// Opens (creating or migrating) the journal at `path`: creates the parent directory
    /// (mode 0700) and the file (mode 0600) when missing, checks the file (`quick_check`) and
    /// its format, and refuses a newer format ([`JournalError::Newer`]) or a file that is not a
    /// sync journal or is damaged ([`JournalError::Damaged`]) without writing to it.
    pub fn open(path: &Path) -> JournalResult<Journal> {
        let name = path.display().to_string();
        let io = |source| JournalError::Io {
            path: name.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        // Created here (not by SQLite) so that its mode is 0600 from the start; SQLite gives
        // the -wal and -shm files the database file's mode.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let conn = Connection::open(path).map_err(|e| sql_error(&name, e))?;
        let mut journal = Journal { conn, path: name };
        journal.setup()?;
        Ok(journal)
    }

    fn setup(&mut self) -> JournalResult<()> {
        let err = |e| sql_error(&self.path, e);
        let conn = &self.conn;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // The first read of the file: a file that is not SQLite fails here.
        let _: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(err)?;
        let mut problems = Vec::new();
        conn.pragma_query(None, "quick_check", |r| {
            problems.push(r.get::<_, String>(0)?);
            Ok(())
        })
        .map_err(err)?;
        if problems.len() != 1 || problems[0] != "ok" {
            let mut reason = problems.iter().take(3).cloned().collect::<Vec<_>>();
            if problems.len() > 3 {
                reason.push(format!("and {} more", problems.len() - 3));
            }
            return Err(self.damaged(format!("integrity check failed: {}", reason.join("; "))));
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(self.damaged(format!("cannot switch to WAL mode (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        conn.set_prepared_statement_cache_capacity(32);
        self.migrate()
    }

    /// Creates, migrates or checks the schema, in one exclusive transaction.
    fn migrate(&mut self) -> JournalResult<()> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let damaged = |reason: String| JournalError::Damaged {
            path: path.clone(),
            reason,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(err)?;
        let app: i64 = tx
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if app == 0 && version == 0 {
            let tables: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(err)?;
            if tables != 0 {
                return Err(damaged(
                    "a SQLite database of another program (it has tables but no cloudmount mark)"
                        .to_string(),
                ));
            }
            tx.execute_batch(V1).map_err(err)?;
            for step in MIGRATIONS {
                tx.execute_batch(step).map_err(err)?;
            }
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::debug!(path = %path, "created sync journal format v{SCHEMA_VERSION}");
            return Ok(());
        }
        if app != APPLICATION_ID {
            return Err(damaged(format!(
                "not a cloudmount sync journal (application_id {app:#x})"
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(JournalError::Newer {
                path: path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            return Err(damaged(format!("format version {version} is invalid")));
        }
        let mut v = version;
        while v < SCHEMA_VERSION {
            let step = MIGRATIONS
                .get((v - 1) as usize)
                .expect("a migration exists for every older version");
            tx.execute_batch(step).map_err(err)?;
            v += 1;
            tracing::info!(path = %path, "migrated sync journal to format v{v}");
        }
        if v != version {
            tx.pragma_update(None, "user_version", v).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// The journal's file, as given to [`Journal::open`].
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> JournalError {
        sql_error(&self.path, e)
    }

    pub(crate) fn damaged(&self, reason: String) -> JournalError {
        JournalError::Damaged {
            path: self.path.clone(),
            reason,
        }
    }

    /// One immediate transaction (takes the write lock at once, so a concurrent writer waits
    /// for the busy timeout instead of failing on a lock upgrade).
    pub(crate) fn write_tx(&self) -> JournalResult<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))
    }

    /// The base of every path of a folder.
    pub fn bases(&self, folder: &FolderId) -> JournalResult<BTreeMap<String, Base>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, l_kind, l_size, l_mtime_ns, l_inode, l_hash,
                        r_kind, r_size, r_etag, r_mtime
                 FROM bases WHERE folder = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query(params![folder.as_str()])
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let raw = RawBase::read(r).map_err(|e| self.err(e))?;
            let (path, base) = raw.check().map_err(|reason| self.damaged(reason))?;
            out.insert(path, base);
        }
        Ok(out)
    }

    /// Records (or replaces) the base of one path.
    pub fn put_base(&self, folder: &FolderId, path: &str, base: &Base) -> JournalResult<()> {
        let tx = self.write_tx()?;
        insert_base(&tx, folder, path, base).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records (or replaces) the bases of many paths, in one transaction.
    pub fn put_bases(&self, folder: &FolderId, bases: &[(String, Base)]) -> JournalResult<()> {
        let tx = self.write_tx()?;
        for (path, base) in bases {
            insert_base(&tx, folder, path, base).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Drops the base of `path` and of everything below it (`""`: every base of the folder).
    pub fn forget_tree(&self, folder: &FolderId, path: &str) -> JournalResult<()> {
        let tx = self.write_tx()?;
        delete_tree(&tx, folder, path).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Moves the base of `from` and everything below it to `to`, replacing what `to` had.
    /// Refuses to move a path into itself or onto one of its ancestors.
    pub fn move_tree(&self, folder: &FolderId, from: &str, to: &str) -> JournalResult<()> {
        if from == to {
            return Ok(());
        }
        let inside = |a: &str, b: &str| b.is_empty() || a.starts_with(&format!("{b}/"));
        if inside(to, from) || inside(from, to) {
            return Err(JournalError::Refused(format!(
                "cannot move {from:?} to {to:?}: one is inside the other"
            )));
        }
        let tx = self.write_tx()?;
        let moved: rusqlite::Result<()> = (|| {
            let (lo, hi) = descendant_bounds(from);
            let paths: Vec<String> = tx
                .prepare_cached(
                    "SELECT path FROM bases WHERE folder = ?1
                     AND (path = ?2 OR (path >= ?3 AND path < ?4))",
                )?
                .query_map(params![folder.as_str(), from, lo, hi], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            delete_tree(&tx, folder, to)?;
            let mut st =
                tx.prepare_cached("UPDATE bases SET path = ?3 WHERE folder = ?1 AND path = ?2")?;
            for p in &paths {
                let new = format!("{to}{}", &p[from.len()..]);
                st.execute(params![folder.as_str(), p, new])?;
            }
            Ok(())
        })();
        moved.map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// The conflicts kept for a folder, oldest first.
    pub fn conflicts(&self, folder: &FolderId) -> JournalResult<Vec<ConflictRecord>> {
        let rows: Vec<(String, String, i64)> = (|| {
            self.conn
                .prepare_cached(
                    "SELECT path, copy, at FROM conflicts WHERE folder = ?1 ORDER BY at, path, copy",
                )?
                .query_map(params![folder.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|(path, copy, at)| ConflictRecord { path, copy, at })
            .collect())
    }

    /// Records a conflict (replacing one with the same copy).
    pub fn add_conflict(&self, folder: &FolderId, c: &ConflictRecord) -> JournalResult<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO conflicts (folder, path, copy, at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![folder.as_str(), c.path, c.copy, c.at]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets the conflicts whose path or copy is `path` (the user resolved it: the copy was
    /// deleted or renamed, or the file itself).
    pub fn forget_conflict(&self, folder: &FolderId, path: &str) -> JournalResult<()> {
        self.conn
            .prepare_cached("DELETE FROM conflicts WHERE folder = ?1 AND (path = ?2 OR copy = ?2)")
            .and_then(|mut st| st.execute(params![folder.as_str(), path]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The files of a folder that could not be synced, by path.
    pub fn problems(&self, folder: &FolderId) -> JournalResult<Vec<Problem>> {
        let rows: Vec<(String, String, i64)> = (|| {
            self.conn
                .prepare_cached(
                    "SELECT path, reason, attempts FROM problems WHERE folder = ?1 ORDER BY path",
                )?
                .query_map(params![folder.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(path, reason, attempts)| {
                let attempts = u32::try_from(attempts)
                    .map_err(|_| self.damaged(format!("problem {path:?}: attempts {attempts}")))?;
                Ok(Problem {
                    path,
                    reason,
                    attempts,
                })
            })
            .collect()
    }

    /// Records that `path` could not be synced: a new problem has 1 attempt, a known one one
    /// more, with the latest reason.
    pub fn set_problem(&self, folder: &FolderId, path: &str, reason: &str) -> JournalResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO problems (folder, path, reason, attempts) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (folder, path) DO UPDATE SET
                   reason = excluded.reason, attempts = attempts + 1",
            )
            .and_then(|mut st| st.execute(params![folder.as_str(), path, reason]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets the problem of `path` (it synced).
    pub fn clear_problem(&self, folder: &FolderId, path: &str) -> JournalResult<()> {
        self.conn
            .prepare_cached("DELETE FROM problems WHERE folder = ?1 AND path = ?2")
            .and_then(|mut st| st.execute(params![folder.as_str(), path]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets every problem of a folder except those of the paths in `keep` (after a run:
    /// what was not met again is gone or synced).
    pub fn clear_problems_except(&self, folder: &FolderId, keep: &[String]) -> JournalResult<()> {
        let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
        let tx = self.write_tx()?;
        let cleared: rusqlite::Result<()> = (|| {
            let paths: Vec<String> = tx
                .prepare_cached("SELECT path FROM problems WHERE folder = ?1")?
                .query_map(params![folder.as_str()], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut st =
                tx.prepare_cached("DELETE FROM problems WHERE folder = ?1 AND path = ?2")?;
            for p in paths.iter().filter(|p| !keep.contains(p.as_str())) {
                st.execute(params![folder.as_str(), p])?;
            }
            Ok(())
        })();
        cleared.map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// How the last run of a folder ended, if it ever ran.
    pub fn last_run(&self, folder: &FolderId) -> JournalResult<Option<RunRecord>> {
        self.conn
            .prepare_cached("SELECT at, outcome, message FROM runs WHERE folder = ?1")
            .and_then(|mut st| {
                st.query_row(params![folder.as_str()], |r| {
                    Ok(RunRecord {
                        at: r.get(0)?,
                        outcome: r.get(1)?,
                        message: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Records how the last run of a folder ended (replacing the previous one).
    pub fn set_last_run(&self, folder: &FolderId, run: &RunRecord) -> JournalResult<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO runs (folder, at, outcome, message) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![folder.as_str(), run.at, run.outcome, run.message])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When a scheduled folder runs next, as last recorded.
    pub fn next_run(&self, folder: &FolderId) -> JournalResult<Option<i64>> {
        Ok(self.schedule_row(folder)?.and_then(|(next, _)| next))
    }

    /// Records when a scheduled folder runs next (`None`: not scheduled).
    pub fn set_next_run(&self, folder: &FolderId, at: Option<i64>) -> JournalResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO schedule (folder, next_run_at) VALUES (?1, ?2)
                 ON CONFLICT (folder) DO UPDATE SET next_run_at = excluded.next_run_at",
            )
            .and_then(|mut st| st.execute(params![folder.as_str(), at]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When a scheduled run of the folder last took place (what [`super::schedule::next_run`]
    /// counts from), if ever.
    pub fn last_run_at(&self, folder: &FolderId) -> JournalResult<Option<i64>> {
        Ok(self.schedule_row(folder)?.and_then(|(_, last)| last))
    }

    /// Records when a scheduled run of the folder took place. The caller decides which runs
    /// count (a run that failed for want of the server may be retried sooner).
    pub fn set_last_run_at(&self, folder: &FolderId, at: i64) -> JournalResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO schedule (folder, last_run_at) VALUES (?1, ?2)
                 ON CONFLICT (folder) DO UPDATE SET last_run_at = excluded.last_run_at",
            )
            .and_then(|mut st| st.execute(params![folder.as_str(), at]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn schedule_row(&self, folder: &FolderId) -> JournalResult<Option<(Option<i64>, Option<i64>)>> {
        self.conn
            .prepare_cached("SELECT next_run_at, last_run_at FROM schedule WHERE folder = ?1")
            .and_then(|mut st| {
                st.query_row(params![folder.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }
}

/// `[lo, hi)` holding exactly the strict descendants of the non-root path `p`.
fn descendant_bounds(p: &str) -> (String, String) {
    (format!("{p}/"), format!("{p}0"))
}

/// Deletes the base of `path` and its descendants (`""`: all of the folder's).
fn delete_tree(tx: &Transaction<'_>, folder: &FolderId, path: &str) -> rusqlite::Result<()> {
    if path.is_empty() {
        tx.prepare_cached("DELETE FROM bases WHERE folder = ?1")?
            .execute(params![folder.as_str()])?;
        return Ok(());
    }
    let (lo, hi) = descendant_bounds(path);
    tx.prepare_cached(
        "DELETE FROM bases WHERE folder = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
    )?
    .execute(params![folder.as_str(), path, lo, hi])?;
    Ok(())
}

fn insert_base(
    tx: &Transaction<'_>,
    folder: &FolderId,
    path: &str,
    b: &Base,
) -> rusqlite::Result<()> {
    let size = |v: u64| {
        i64::try_from(v).map_err(|_| rusqlite::Error::ToSqlConversionFailure(Box::from("size")))
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO bases
           (folder, path, l_kind, l_size, l_mtime_ns, l_inode, l_hash,
            r_kind, r_size, r_etag, r_mtime)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        folder.as_str(),
        path,
        kind_to_sql(b.local.kind),
        size(b.local.size)?,
        b.local.mtime_ns,
        // Inode numbers use all 64 bits on some filesystems: stored as the same bits.
        b.local.inode as i64,
        b.local.hash.as_ref().map(|h| &h[..]),
        kind_to_sql(b.remote.kind),
        size(b.remote.size)?,
        b.remote.etag,
        b.remote.mtime,
    ])?;
    Ok(())
}

/// A `bases` row as stored, before its values are checked.
struct RawBase {
    path: String,
    l_kind: String,
    l_size: i64,
    l_mtime_ns: i64,
    l_inode: i64,
    l_hash: Option<Vec<u8>>,
    r_kind: String,
    r_size: i64,
    r_etag: Option<String>,
    r_mtime: Option<i64>,
}

impl RawBase {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawBase> {
        Ok(RawBase {
            path: r.get(0)?,
            l_kind: r.get(1)?,
            l_size: r.get(2)?,
            l_mtime_ns: r.get(3)?,
            l_inode: r.get(4)?,
            l_hash: r.get(5)?,
            r_kind: r.get(6)?,
            r_size: r.get(7)?,
            r_etag: r.get(8)?,
            r_mtime: r.get(9)?,
        })
    }

    fn check(self) -> Result<(String, Base), String> {
        let p = &self.path;
        let size = |v: i64| u64::try_from(v).map_err(|_| format!("base {p:?}: size {v}"));
        let hash = match self.l_hash {
            None => None,
            Some(h) => Some(
                <[u8; 32]>::try_from(h.as_slice())
                    .map_err(|_| format!("base {p:?}: hash of {} bytes", h.len()))?,
            ),
        };
        let base = Base {
            local: LocalMeta {
                kind: kind_from_sql(&self.l_kind).ok_or_else(|| format!("base {p:?}: kind"))?,
                size: size(self.l_size)?,
                mtime_ns: self.l_mtime_ns,
                inode: self.l_inode as u64,
                hash,
            },
            remote: RemoteMeta {
                kind: kind_from_sql(&self.r_kind).ok_or_else(|| format!("base {p:?}: kind"))?,
                size: size(self.r_size)?,
                etag: self.r_etag,
                mtime: self.r_mtime,
            },
        };
        Ok((self.path, base))
    }
}

fn kind_to_sql(k: Kind) -> &'static str {
    match k {
        Kind::File => "f",
        Kind::Dir => "d",
    }
}

fn kind_from_sql(s: &str) -> Option<Kind> {
    match s {
        "f" => Some(Kind::File),
        "d" => Some(Kind::Dir),
        _ => None,
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
