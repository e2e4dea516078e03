//! The persistent metadata store: one SQLite file, `meta.db`, in the cache directory.
//!
//! It keeps what must survive a restart so the tree can be browsed (and pinned files read) with
//! the server unreachable, without re-walking the account:
//!
//! - **entries**: the remote tree as last seen (name, kind, size, mtime, ETag), per *area* (one
//!   configured remote root; a mount may show several);
//! - **listings**: which directories were listed and when (for the listing TTL);
//! - **local mtimes**: mtimes set by the user (`utimens`), which WebDAV cannot store;
//! - **dirty**: files with local changes not yet uploaded (the upload queue's durable records);
//! - **ns_ops**: folder and name changes (mkdir, rmdir, unlink, rename) done while the server
//!   could not be reached, in order, waiting to be replayed on it (`ops.rs`);
//! - **objects** and **pins**: the block cache's index (see [`crate::cache`]); this module owns
//!   the schema and the SQL, the cache owns the policy.
//!
//! # Design and invariants
//!
//! - Rows are keyed by `(area, path)` where `path` is the [`RemotePath`] string (`a/b/c`, `""`
//!   for the area root); entries also store `parent` and `name` for listings
//!   (`entries_by_parent` index). Every subtree operation (remove, rename, dropping children
//!   that disappeared from a listing) is one indexed range statement per table:
//!   the descendants of `p` are exactly the paths in `[p + "/", p + "0")`, because SQLite
//!   compares TEXT bytewise (UTF-8 order = code point order), `'0'` is `'/' + 1`, and names
//!   never contain `/`. No `LIKE` is used, so `%` and `_` in names are plain characters.
//! - A directory's stored children are all entries whose `parent` is that directory. A listing
//!   row only says the children are known (and when they were fetched). [`invalidate_listing`]
//!   sets the time to the epoch instead of deleting the row, so the children stay available
//!   offline while any TTL check sees them as stale.
//! - An entry stored as a file never has descendants: storing a file at a path drops whatever
//!   was stored below it.
//! - Removing or renaming an entry carries its listing rows and local mtimes along; cache
//!   objects, pins and dirty records are *not* touched here (the cache and the upload queue
//!   decide; their tables have their own calls).
//! - Every stored value is checked when read back (kinds, sizes, ETags, paths); a bad value is
//!   [`MetaError::Corrupt`], never silently used.
//!
//! # On-disk format
//!
//! `meta.db` is SQLite in WAL mode, schema version in `PRAGMA user_version` (now
//! [`schema::SCHEMA_VERSION`]), `PRAGMA application_id` = `0x436c4d74`. [`MetaStore::open`]
//! creates the schema in a new file, migrates an older one in one transaction, and refuses a
//! newer schema or a foreign database with an error naming the file. The tables are described
//! in `schema.rs` (times are nanoseconds since the epoch; ETags are stored as
//! [`ETag::header_value`]). The connection uses `locking_mode=EXCLUSIVE`, so a second process on
//! the same cache directory gets [`MetaError::InUse`] instead of corrupting the first one's
//! state.
//!
//! # Durability
//!
//! - Listings, entries, local mtimes and the cache index are committed with
//!   `synchronous=NORMAL`: a power cut may lose the last transactions, never reorder them or
//!   corrupt the file (WAL). Losing them costs a re-fetch, nothing else.
//! - Dirty records and waiting namespace operations are committed with `synchronous=FULL` (switched on for that one transaction
//!   and back off after): the commit returns only once the WAL is fsynced, so a `close()` that
//!   returned survives a power cut. Because the WAL is sequential, that fsync also makes every
//!   earlier transaction durable.
//!
//! # Locking
//!
//! One `std::sync::Mutex<Connection>`; every method takes it for one short, synchronous call
//! (a few statements in at most one transaction) and never across an `.await`. It is the
//! innermost lock of the program: no other lock is taken while it is held (the cache takes it
//! last, see [`crate::cache`]). Statements are prepared once and cached.
//!
//! [`invalidate_listing`]: MetaStore::invalidate_listing
//! [`ETag::header_value`]: crate::remote::ETag::header_value

mod areas;
mod dirty;
#[cfg(test)]
mod migration_tests;
pub(crate) mod objects;
mod ops;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::remote::path::check_name;
use crate::remote::{ETag, EntryKind, RemotePath};

pub use areas::{normalise_key, AreaKey, WaitingElsewhere};
pub use dirty::{Conflict, DirtyRecord, DirtyRename, DirtyState};
pub use ops::{NsOp, NsOpKind};
pub use schema::SCHEMA_VERSION;

/// The stable identity of an area (one remote root shown by the mount), given to its URL by
/// [`MetaStore::resolve_areas`]; never a position in the profile's list.
pub type AreaId = u32;

/// One stored entry of the remote tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The last path segment.
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub etag: Option<ETag>,
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "{path}: metadata schema version {found} is newer than this cloudmount supports \
         ({supported}); use a newer cloudmount or another cache directory"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path} is not a cloudmount metadata database (application_id {application_id:#x})")]
    NotOurs { path: PathBuf, application_id: i64 },
    #[error("{path} is in use by another cloudmount process")]
    InUse { path: PathBuf },
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot rename {from} to {to}: {reason}")]
    InvalidRename {
        from: RemotePath,
        to: RemotePath,
        reason: &'static str,
    },
    #[error("invalid staging path {path:?}: must be relative to the cache dir, without `..`")]
    InvalidStaging { path: PathBuf },
    #[error("value out of range: {0}")]
    OutOfRange(String),
}

/// The metadata store. Cheap, short, synchronous calls; share it in an `Arc`.
pub struct MetaStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MetaStore {
    /// Opens (creating, migrating and checking) the database at `path`.
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        let conn = Connection::open(path)?;
        Self::setup(conn, path, true)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<MetaStore, MetaError> {
        let conn = Connection::open_in_memory()?;
        Self::setup(conn, Path::new(":memory:"), false)
    }

    fn setup(mut conn: Connection, path: &Path, on_disk: bool) -> Result<MetaStore, MetaError> {
        let in_use = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                MetaError::InUse {
                    path: path.to_path_buf(),
                }
            }
            _ => MetaError::Sqlite(e),
        };
        conn.busy_timeout(Duration::from_secs(2))?;
        if on_disk {
            // One process per cache dir: the first write lock is kept until the connection
            // closes, and with it the WAL index lives in private memory.
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
                .map_err(in_use)?;
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(in_use)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(MetaError::Corrupt(format!(
                    "{}: cannot switch to WAL mode (got {mode})",
                    path.display()
                )));
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn, path).map_err(|e| match e {
            MetaError::Sqlite(e) => in_use(e),
            e => e,
        })?;
        if on_disk {
            // Take the exclusive lock now (a no-op write transaction), so a second process
            // fails at open rather than at its first write.
            conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
                .map_err(in_use)?;
        }
        Ok(MetaStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves no half-done state: transactions roll back on drop.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one transaction committed with `synchronous=FULL` (see the module docs).
    pub(crate) fn durable<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let res = match conn.transaction() {
            Ok(tx) => f(&tx).and_then(|v| tx.commit().map(|()| v).map_err(MetaError::from)),
            Err(e) => Err(e.into()),
        };
        let reset = conn.pragma_update(None, "synchronous", "NORMAL");
        let v = res?;
        reset?;
        Ok(v)
    }

    /// Runs `f` in one ordinary (`synchronous=NORMAL`) transaction.
    pub(crate) fn tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// Replaces the stored children of `dir` with `entries` (one transaction) and records when
    /// it was listed. Children that disappeared are removed with their subtrees (entries,
    /// listings, local mtimes and modes) but not cache objects (the cache decides that). A child
    /// that became a file loses whatever was stored below it; one that changed kind, its mode.
    pub fn save_listing(
        &self,
        area: AreaId,
        dir: &RemotePath,
        listed_at: SystemTime,
        entries: &[EntryRecord],
    ) -> Result<(), MetaError> {
        self.save_listing_asked_at(area, dir, listed_at, entries, None)
    }

    /// [`save_listing`](Self::save_listing) of a listing asked for at `asked`: the entries
    /// this cache's uploads stored at or after that time (`upload_done`) are newer than the
    /// listing and are left as they are, neither replaced nor dropped.
    pub fn save_listing_asked_at(
        &self,
        area: AreaId,
        dir: &RemotePath,
        listed_at: SystemTime,
        entries: &[EntryRecord],
        asked: Option<SystemTime>,
    ) -> Result<(), MetaError> {
        let asked_ns = asked.map(time_to_ns);
        for e in entries {
            check_name(&e.name).map_err(|reason| MetaError::InvalidName {
                name: e.name.clone(),
                reason,
            })?;
        }
        let dir_s = dir.as_str();
        self.tx(|tx| {
            let mut old: HashMap<String, EntryKind> = HashMap::new();
            let mut newer: std::collections::HashSet<String> = Default::default();
            {
                let mut st = tx.prepare_cached(
                    "SELECT name, kind, uploaded_ns FROM entries WHERE area = ?1 AND parent = ?2",
                )?;
                let mut rows = st.query(params![area, dir_s])?;
                while let Some(r) = rows.next()? {
                    let name: String = r.get(0)?;
                    let uploaded: Option<i64> = r.get(2)?;
                    if let (Some(u), Some(a)) = (uploaded, asked_ns) {
                        if u >= a {
                            newer.insert(name);
                            continue;
                        }
                    }
                    old.insert(name, kind_from_sql(r.get(1)?)?);
                }
            }
            let new: HashMap<&str, &EntryRecord> =
                entries.iter().map(|e| (e.name.as_str(), e)).collect();
            for (name, old_kind) in &old {
                let child = child_path(dir_s, name);
                match new.get(name.as_str()) {
                    None => delete_subtree(tx, area, &child, true)?,
                    Some(e) if e.kind == EntryKind::File && *old_kind == EntryKind::Dir => {
                        make_file(tx, area, &child)?;
                        drop_local_mode(tx, area, &child)?;
                    }
                    Some(e) if e.kind != *old_kind => drop_local_mode(tx, area, &child)?,
                    Some(_) => {}
                }
            }
            for e in entries.iter().filter(|e| !newer.contains(&e.name)) {
                upsert(tx, area, &child_path(dir_s, &e.name), Some(dir_s), e)?;
            }
            tx.prepare_cached(
                "INSERT INTO listings (area, path, listed_at_ns) VALUES (?1, ?2, ?3)
                 ON CONFLICT (area, path) DO UPDATE SET listed_at_ns = excluded.listed_at_ns",
            )?
            .execute(params![area, dir_s, time_to_ns(listed_at)])?;
            Ok(())
        })
    }

    /// The stored listing of `dir` (children sorted by name, bytewise), if it was ever listed.
    /// After [`invalidate_listing`](Self::invalidate_listing) the time is the Unix epoch.
    pub fn load_listing(
        &self,
        area: AreaId,
        dir: &RemotePath,
    ) -> Result<Option<(SystemTime, Vec<EntryRecord>)>, MetaError> {
        let conn = self.lock();
        let listed: Option<i64> = conn
            .prepare_cached("SELECT listed_at_ns FROM listings WHERE area = ?1 AND path = ?2")?
            .query_row(params![area, dir.as_str()], |r| r.get(0))
            .optional()?;
        let Some(listed) = listed else {
            return Ok(None);
        };
        let mut st = conn.prepare_cached(
            "SELECT name, kind, size, mtime_ns, etag FROM entries
             WHERE area = ?1 AND parent = ?2 ORDER BY name",
        )?;
        let mut rows = st.query(params![area, dir.as_str()])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(entry_from_row(r)?);
        }
        Ok(Some((ns_to_time(listed), out)))
    }

    /// Stores one entry (its parent need not have a listing). `e.name` is ignored: the name is
    /// the last segment of `path`. Storing a file drops whatever was stored below `path`.
    pub fn upsert_entry(
        &self,
        area: AreaId,
        path: &RemotePath,
        e: &EntryRecord,
    ) -> Result<(), MetaError> {
        self.tx(|tx| upsert_entry_tx(tx, area, path, e))
    }

    /// The stored entry at `path`.
    pub fn get_entry(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<EntryRecord>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT name, kind, size, mtime_ns, etag FROM entries WHERE area = ?1 AND path = ?2",
        )?;
        let mut rows = st.query(params![area, path.as_str()])?;
        match rows.next()? {
            Some(r) => Ok(Some(entry_from_row(r)?)),
            None => Ok(None),
        }
    }

    /// Removes the entry at `path` with everything below it (entries, listings, local mtimes).
    /// Removing the root forgets the whole area.
    pub fn remove_entry(&self, area: AreaId, path: &RemotePath) -> Result<(), MetaError> {
        self.tx(|tx| delete_subtree(tx, area, path.as_str(), true))
    }

    /// Moves the entry at `from` with its subtree, listings, local mtimes and modes to `to`, replacing
    /// whatever was stored at `to` (and below it). Renaming a path onto itself does nothing;
    /// moving a directory into itself, onto one of its ancestors, or moving the root is refused.
    pub fn rename_entry(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<(), MetaError> {
        check_rename(from, to)?;
        if from == to {
            return Ok(());
        }
        let (f, t) = (from.as_str(), to.as_str());
        let to_parent = to.parent().expect("checked: not the root");
        let (lo, hi) = descendant_bounds(f);
        // SQLite's substr() counts characters in TEXT: skip the characters of `from`.
        let skip = f.chars().count() as i64 + 1;
        self.tx(|tx| {
            delete_subtree(tx, area, t, true)?;
            tx.prepare_cached(
                "UPDATE entries SET path = ?3, parent = ?4, name = ?5 WHERE area = ?1 AND path = ?2",
            )?
            .execute(params![area, f, t, to_parent.as_str(), to.name()])?;
            tx.prepare_cached(
                "UPDATE entries SET path = ?4 || substr(path, ?5), parent = ?4 || substr(parent, ?5)
                 WHERE area = ?1 AND path >= ?2 AND path < ?3",
            )?
            .execute(params![area, lo, hi, t, skip])?;
            for table in ["listings", "local_mtimes", "local_modes"] {
                move_paths_tx(tx, table, "path", area, from, to)?;
            }
            Ok(())
        })
    }

    /// This cache's random identity (16 hex digits, see the schema's version 3).
    pub fn cache_id(&self) -> Result<String, MetaError> {
        let conn = self.lock();
        let id: String = conn
            .prepare_cached("SELECT value FROM settings WHERE key = 'cache_id'")?
            .query_row([], |r| r.get(0))
            .map_err(|e| MetaError::Corrupt(format!("no cache_id setting: {e}")))?;
        if !is_cache_id(&id) {
            return Err(MetaError::Corrupt(format!("bad cache_id setting {id:?}")));
        }
        Ok(id)
    }

    /// Forgets when `dir` was listed (its listing time becomes the epoch), forcing a
    /// revalidation; the stored children stay available.
    pub fn invalidate_listing(&self, area: AreaId, dir: &RemotePath) -> Result<(), MetaError> {
        let conn = self.lock();
        conn.prepare_cached("UPDATE listings SET listed_at_ns = 0 WHERE area = ?1 AND path = ?2")?
            .execute(params![area, dir.as_str()])?;
        Ok(())
    }

    /// Records the mtime set locally by the user (`utimens`), kept even though WebDAV cannot
    /// store it, for the file's `version` (`None` for a directory: kept whatever the version);
    /// `mtime: None` forgets it. The path need not have an entry.
    pub fn set_local_mtime(
        &self,
        area: AreaId,
        path: &RemotePath,
        mtime: Option<SystemTime>,
        version: Option<&ETag>,
    ) -> Result<(), MetaError> {
        let conn = self.lock();
        match mtime {
            Some(t) => {
                let (sec, nsec) = time_to_sec_nsec(t);
                conn.prepare_cached(
                    "INSERT INTO local_mtimes (area, path, mtime_ns, sec, nsec, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (area, path) DO UPDATE SET mtime_ns = excluded.mtime_ns,
                        sec = excluded.sec, nsec = excluded.nsec, version = excluded.version",
                )?
                .execute(params![
                    area,
                    path.as_str(),
                    time_to_ns(t),
                    sec,
                    nsec,
                    version.map(ETag::header_value)
                ])?
            }
            None => conn
                .prepare_cached("DELETE FROM local_mtimes WHERE area = ?1 AND path = ?2")?
                .execute(params![area, path.as_str()])?,
        };
        Ok(())
    }

    /// The mtime set locally for `path`, if any.
    pub fn local_mtime(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<SystemTime>, MetaError> {
        let conn = self.lock();
        let row: Option<(i64, Option<i64>, Option<i64>)> = conn
            .prepare_cached(
                "SELECT mtime_ns, sec, nsec FROM local_mtimes WHERE area = ?1 AND path = ?2",
            )?
            .query_row(params![area, path.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        row.map(|(ns, sec, nsec)| stored_mtime(ns, sec, nsec))
            .transpose()
    }

    /// The local mtimes of the children of `dir`: (name, time, the version it was set on).
    pub fn local_mtimes_in(
        &self,
        area: AreaId,
        dir: &RemotePath,
    ) -> Result<Vec<(String, SystemTime, Option<ETag>)>, MetaError> {
        let conn = self.lock();
        let (lo, hi) = below_bounds(dir);
        let mut st = conn.prepare_cached(
            "SELECT path, mtime_ns, sec, nsec, version FROM local_mtimes
             WHERE area = ?1 AND path >= ?2 AND path < ?3",
        )?;
        let mut rows = st.query(params![area, lo, hi])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let path: String = r.get(0)?;
            let Some(name) = child_name(&path, &lo) else {
                continue;
            };
            let t = stored_mtime(r.get(1)?, r.get(2)?, r.get(3)?)?;
            out.push((name.to_string(), t, etag_from_sql(r.get(4)?)?));
        }
        Ok(out)
    }

    /// Records the permission bits set locally by the user (chmod), kept even though WebDAV
    /// cannot store them; `perm: None` (the default mode) forgets them. Only `perm & 0o777`
    /// is stored. The path need not have an entry.
    pub fn set_local_mode(
        &self,
        area: AreaId,
        path: &RemotePath,
        perm: Option<u16>,
    ) -> Result<(), MetaError> {
        let conn = self.lock();
        match perm {
            Some(perm) => conn
                .prepare_cached(
                    "INSERT INTO local_modes (area, path, perm) VALUES (?1, ?2, ?3)
                     ON CONFLICT (area, path) DO UPDATE SET perm = excluded.perm",
                )?
                .execute(params![area, path.as_str(), perm & 0o777])?,
            None => conn
                .prepare_cached("DELETE FROM local_modes WHERE area = ?1 AND path = ?2")?
                .execute(params![area, path.as_str()])?,
        };
        Ok(())
    }

    /// The permission bits set locally on `path`, if any.
    pub fn local_mode(&self, area: AreaId, path: &RemotePath) -> Result<Option<u16>, MetaError> {
        let conn = self.lock();
        let perm: Option<i64> = conn
            .prepare_cached("SELECT perm FROM local_modes WHERE area = ?1 AND path = ?2")?
            .query_row(params![area, path.as_str()], |r| r.get(0))
            .optional()?;
        perm.map(perm_from_sql).transpose()
    }

    /// The permission bits set locally on the children of `dir`: (name, bits).
    pub fn local_modes_in(
        &self,
        area: AreaId,
        dir: &RemotePath,
    ) -> Result<Vec<(String, u16)>, MetaError> {
        let conn = self.lock();
        let (lo, hi) = below_bounds(dir);
        let mut st = conn.prepare_cached(
            "SELECT path, perm FROM local_modes WHERE area = ?1 AND path >= ?2 AND path < ?3",
        )?;
        let mut rows = st.query(params![area, lo, hi])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let path: String = r.get(0)?;
            let Some(name) = child_name(&path, &lo) else {
                continue;
            };
            out.push((name.to_string(), perm_from_sql(r.get(1)?)?));
        }
        Ok(out)
    }
}

/// Stored permission bits, checked (0..=0o777).
fn perm_from_sql(v: i64) -> Result<u16, MetaError> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p <= 0o777)
        .ok_or_else(|| MetaError::Corrupt(format!("local mode {v:o}")))
}

/// Whole seconds since the epoch (negative before it) and nanoseconds 0..1e9.
fn time_to_sec_nsec(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_nanos()),
        ),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                i64::from(d.subsec_nanos()),
            );
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

/// A stored local mtime: exact from `sec`/`nsec` (v7), else from `mtime_ns`.
fn stored_mtime(ns: i64, sec: Option<i64>, nsec: Option<i64>) -> Result<SystemTime, MetaError> {
    let (Some(sec), Some(nsec)) = (sec, nsec) else {
        return Ok(ns_to_time(ns));
    };
    let nsec = u32::try_from(nsec)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| MetaError::Corrupt(format!("local mtime nanoseconds {nsec}")))?;
    let t = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(sec as u64, nsec))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(sec.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nsec))))
    };
    t.ok_or_else(|| MetaError::Corrupt(format!("local mtime {sec}.{nsec} out of range")))
}

/// Refuses renames that cannot be expressed on a tree.
pub(crate) fn check_rename(from: &RemotePath, to: &RemotePath) -> Result<(), MetaError> {
    let err = |reason| MetaError::InvalidRename {
        from: from.clone(),
        to: to.clone(),
        reason,
    };
    if from.is_root() || to.is_root() {
        return Err(err("the root cannot be renamed or replaced"));
    }
    if from != to && to.starts_with(from) {
        return Err(err("cannot move a directory into itself"));
    }
    if from != to && from.starts_with(to) {
        return Err(err("cannot replace an ancestor of the source"));
    }
    Ok(())
}

/// `[lo, hi)` holding exactly the strict descendants of the non-root path `p`.
pub(crate) fn descendant_bounds(p: &str) -> (String, String) {
    debug_assert!(!p.is_empty());
    (format!("{p}/"), format!("{p}0"))
}

/// Rewrites the paths at or below `from` in `column` of `table` to the same place below `to`
/// (in the caller's transaction); returns the rows changed.
pub(super) fn move_paths_tx(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    area: AreaId,
    from: &RemotePath,
    to: &RemotePath,
) -> Result<usize, MetaError> {
    let (f, t) = (from.as_str(), to.as_str());
    let (lo, hi) = descendant_bounds(f);
    // SQLite's substr() counts characters in TEXT: skip the characters of `from`.
    let skip = f.chars().count() as i64 + 1;
    let mut n = tx
        .prepare_cached(&format!(
            "UPDATE {table} SET {column} = ?3 WHERE area = ?1 AND {column} = ?2"
        ))?
        .execute(params![area, f, t])?;
    n += tx
        .prepare_cached(&format!(
            "UPDATE {table} SET {column} = ?4 || substr({column}, ?5)
             WHERE area = ?1 AND {column} >= ?2 AND {column} < ?3"
        ))?
        .execute(params![area, lo, hi, t, skip])?;
    Ok(n)
}

/// The bounds of every path below `dir` (all paths for the root), for a range statement.
fn below_bounds(dir: &RemotePath) -> (String, String) {
    if dir.is_root() {
        (String::new(), "\u{10FFFF}".to_string())
    } else {
        descendant_bounds(dir.as_str())
    }
}

/// The name of `path` when it is a child (not a deeper descendant) of the folder whose lower
/// bound (see [`below_bounds`]) is `lo`.
fn child_name<'a>(path: &'a str, lo: &str) -> Option<&'a str> {
    let name = path.get(lo.len()..)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Deletes the descendants of `path` (and `path` itself if `with_self`) from the entries,
/// listings, local mtimes and local modes tables.
fn delete_subtree(
    tx: &Transaction<'_>,
    area: AreaId,
    path: &str,
    with_self: bool,
) -> Result<(), MetaError> {
    for table in ["entries", "listings", "local_mtimes", "local_modes"] {
        if path.is_empty() {
            if with_self {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE area = ?1"))?
                    .execute(params![area])?;
            } else {
                tx.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE area = ?1 AND path > ''"
                ))?
                .execute(params![area])?;
            }
            continue;
        }
        if with_self {
            tx.prepare_cached(&format!(
                "DELETE FROM {table} WHERE area = ?1 AND path = ?2"
            ))?
            .execute(params![area, path])?;
        }
        let (lo, hi) = descendant_bounds(path);
        tx.prepare_cached(&format!(
            "DELETE FROM {table} WHERE area = ?1 AND path >= ?2 AND path < ?3"
        ))?
        .execute(params![area, lo, hi])?;
    }
    Ok(())
}

/// Forgets the mode set on `path` (another kind of entry took its place on the server).
fn drop_local_mode(tx: &Transaction<'_>, area: AreaId, path: &str) -> Result<(), MetaError> {
    tx.prepare_cached("DELETE FROM local_modes WHERE area = ?1 AND path = ?2")?
        .execute(params![area, path])?;
    Ok(())
}

/// Whether `s` has the form of a cache's identity (16 hex digits, schema version 3).
pub(crate) fn is_cache_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// [`MetaStore::upsert_entry`] inside a transaction.
pub(crate) fn upsert_entry_tx(
    tx: &Transaction<'_>,
    area: AreaId,
    path: &RemotePath,
    e: &EntryRecord,
) -> Result<(), MetaError> {
    if e.kind == EntryKind::File {
        make_file(tx, area, path.as_str())?;
    }
    let rec = EntryRecord {
        name: path.name().to_string(),
        ..e.clone()
    };
    let parent = path.parent();
    upsert(
        tx,
        area,
        path.as_str(),
        parent.as_ref().map(|p| p.as_str()),
        &rec,
    )
}

/// Drops what a file cannot have: descendants and a listing of its own.
fn make_file(tx: &Transaction<'_>, area: AreaId, path: &str) -> Result<(), MetaError> {
    delete_subtree(tx, area, path, false)?;
    tx.prepare_cached("DELETE FROM listings WHERE area = ?1 AND path = ?2")?
        .execute(params![area, path])?;
    Ok(())
}

fn upsert(
    tx: &Transaction<'_>,
    area: AreaId,
    path: &str,
    parent: Option<&str>,
    e: &EntryRecord,
) -> Result<(), MetaError> {
    tx.prepare_cached(
        "INSERT INTO entries (area, path, parent, name, kind, size, mtime_ns, etag)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (area, path) DO UPDATE SET
           kind = excluded.kind, size = excluded.size,
           mtime_ns = excluded.mtime_ns, etag = excluded.etag, uploaded_ns = NULL",
    )?
    .execute(params![
        area,
        path,
        parent,
        e.name,
        kind_to_sql(e.kind),
        u64_to_sql(e.size)?,
        e.mtime.map(time_to_ns),
        e.etag.as_ref().map(|t| t.header_value()),
    ])?;
    Ok(())
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> Result<EntryRecord, MetaError> {
    Ok(EntryRecord {
        name: r.get(0)?,
        kind: kind_from_sql(r.get(1)?)?,
        size: u64_from_sql(r.get(2)?, "entry size")?,
        mtime: r.get::<_, Option<i64>>(3)?.map(ns_to_time),
        etag: etag_from_sql(r.get(4)?)?,
    })
}

fn kind_to_sql(k: EntryKind) -> i64 {
    match k {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
    }
}

fn kind_from_sql(v: i64) -> Result<EntryKind, MetaError> {
    match v {
        0 => Ok(EntryKind::File),
        1 => Ok(EntryKind::Dir),
        v => Err(MetaError::Corrupt(format!("entry kind {v}"))),
    }
}

pub(crate) fn etag_from_sql(v: Option<String>) -> Result<Option<ETag>, MetaError> {
    match v {
        None => Ok(None),
        Some(s) => ETag::parse(&s)
            .map(Some)
            .ok_or_else(|| MetaError::Corrupt(format!("ETag {s:?}"))),
    }
}

pub(crate) fn u64_to_sql(v: u64) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| MetaError::OutOfRange(format!("{v} does not fit the database")))
}

pub(crate) fn u64_from_sql(v: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(v).map_err(|_| MetaError::Corrupt(format!("{what} {v}")))
}

pub(crate) fn path_from_sql(s: String) -> Result<RemotePath, MetaError> {
    let p = RemotePath::new(&s).map_err(|e| MetaError::Corrupt(format!("path {s:?}: {e}")))?;
    if p.as_str() != s {
        return Err(MetaError::Corrupt(format!("path {s:?} is not canonical")));
    }
    Ok(p)
}

/// Nanoseconds since the epoch (negative before it), saturating.
pub(crate) fn time_to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

pub(crate) fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}
