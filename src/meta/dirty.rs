//! Dirty files: the durable records of the upload queue.
//!
//! A record says "the content of `(area, path)` is the staging file `staging` (relative to the
//! cache dir), based on the server version `base_etag`, not yet uploaded". There is at most one
//! record per path.
//!
//! **An id names one (path, content) pair and is never reused.** Rewriting a dirty file
//! ([`MetaStore::insert_dirty`] again) or renaming it ([`MetaStore::update_dirty_path`]) gives
//! the record a new id; only state changes keep it. An uploader that finishes the upload of id
//! N therefore calls [`MetaStore::remove_dirty`]`(N)`, which removes nothing if the file was
//! rewritten or renamed meanwhile: the newer record stays queued and is uploaded in its turn.
//! Nothing closed is ever dropped by a stale upload.
//!
//! Every write here is committed with `synchronous=FULL` (see the module docs of
//! [`crate::meta`]): when the call returns, the record survives a power cut.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{params, Transaction};

use super::{
    descendant_bounds, etag_from_sql, ns_to_time, path_from_sql, time_to_ns, u64_from_sql,
    u64_to_sql, AreaId, EntryRecord, MetaError, MetaStore,
};
use crate::remote::{ETag, RemotePath};

/// Where a dirty file is in its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyState {
    /// Waiting for an upload.
    Pending,
    /// An upload is in flight.
    Uploading,
    /// The last attempt failed; the reason, for `status`.
    Error(String),
    /// The server copy changed meanwhile; a conflict copy was made.
    Conflict,
}

/// One dirty file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRecord {
    pub id: i64,
    pub area: AreaId,
    pub path: RemotePath,
    /// The staged content, relative to the cache dir.
    pub staging: PathBuf,
    /// The server version the change is based on (`None` for a new file, or a server that
    /// gives no ETags).
    pub base_etag: Option<ETag>,
    /// Whether the file existed on the server when the change began (decides `If-Match`
    /// against `If-None-Match: *`).
    pub on_server: bool,
    pub size: u64,
    pub state: DirtyState,
    pub updated_at: SystemTime,
    /// An upload of an earlier version of this file (the record this one replaced) that may
    /// have put it on the server just before a crash: its temporary name (empty for a PUT in
    /// place) and size. See the schema's version 4.
    pub prior_move: Option<(RemotePath, u64)>,
}

/// A conflict the upload queue resolved by keeping both versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub area: AreaId,
    /// Where the server's version stayed.
    pub path: RemotePath,
    /// Where our version was uploaded.
    pub copy: RemotePath,
    pub at: SystemTime,
}

/// What [`MetaStore::update_dirty_path`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyRename {
    /// The moved records, under their new paths and new ids.
    pub moved: Vec<DirtyRecord>,
    /// Records that were at or below the target and are now removed (their content was
    /// replaced by the rename): the caller deletes their staging files.
    pub displaced: Vec<DirtyRecord>,
}

const COLUMNS: &str = "id, area, path, staging, base_etag, size, state, error, updated_at_ns, \
                       on_server, prior_move, prior_size";

/// Sets the base of the record of `path`; returns it, if there is one.
fn set_base_tx(
    tx: &Transaction<'_>,
    area: AreaId,
    path: &RemotePath,
    base_etag: Option<&ETag>,
    on_server: bool,
) -> Result<Option<DirtyRecord>, MetaError> {
    tx.prepare_cached(
        "UPDATE dirty SET base_etag = ?3, on_server = ?4, prior_move = NULL, prior_size = NULL
         WHERE area = ?1 AND path = ?2",
    )?
    .execute(params![
        area,
        path.as_str(),
        base_etag.map(|t| t.header_value()),
        i64::from(on_server)
    ])?;
    select_where(tx, "area = ?1 AND path = ?2", params![area, path.as_str()]).map(|mut v| v.pop())
}

fn state_to_sql(s: &DirtyState) -> (i64, Option<&str>) {
    match s {
        DirtyState::Pending => (0, None),
        DirtyState::Uploading => (1, None),
        DirtyState::Error(e) => (2, Some(e.as_str())),
        DirtyState::Conflict => (3, None),
    }
}

fn record_from_row(r: &rusqlite::Row<'_>) -> Result<DirtyRecord, MetaError> {
    let staging: Vec<u8> = r.get(3)?;
    let state = match (r.get::<_, i64>(6)?, r.get::<_, Option<String>>(7)?) {
        (0, _) => DirtyState::Pending,
        (1, _) => DirtyState::Uploading,
        (2, e) => DirtyState::Error(e.unwrap_or_default()),
        (3, _) => DirtyState::Conflict,
        (s, _) => return Err(MetaError::Corrupt(format!("dirty state {s}"))),
    };
    let staging = PathBuf::from(OsStr::from_bytes(&staging));
    check_staging(&staging)
        .map_err(|_| MetaError::Corrupt(format!("staging path {}", staging.display())))?;
    Ok(DirtyRecord {
        id: r.get(0)?,
        area: r.get(1)?,
        path: path_from_sql(r.get(2)?)?,
        staging,
        base_etag: etag_from_sql(r.get(4)?)?,
        size: u64_from_sql(r.get(5)?, "dirty size")?,
        state,
        updated_at: ns_to_time(r.get(8)?),
        on_server: r.get::<_, i64>(9)? != 0,
        prior_move: move_from_sql(r.get(10)?, r.get(11)?)?,
    })
}

/// A `(temporary name, size)` pair of the schema's version 4 (`''`: a PUT in place, read as
/// the root path).
fn move_from_sql(
    temp: Option<String>,
    size: Option<i64>,
) -> Result<Option<(RemotePath, u64)>, MetaError> {
    match (temp, size) {
        (Some(t), Some(n)) => {
            let temp = if t.is_empty() {
                RemotePath::root()
            } else {
                path_from_sql(t)?
            };
            Ok(Some((temp, u64_from_sql(n, "upload size")?)))
        }
        _ => Ok(None),
    }
}

fn insert_uploaded(
    tx: &Transaction<'_>,
    staging: &Path,
    size: u64,
    mtime_ns: i64,
) -> Result<(), MetaError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO uploaded_staging (staging, size, mtime_ns) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        staging.as_os_str().as_bytes(),
        u64_to_sql(size)?,
        mtime_ns
    ])?;
    Ok(())
}

fn delete_uploaded(tx: &Transaction<'_>, staging: &Path) -> Result<(), MetaError> {
    tx.prepare_cached("DELETE FROM uploaded_staging WHERE staging = ?1")?
        .execute(params![staging.as_os_str().as_bytes()])?;
    Ok(())
}

fn check_staging(p: &Path) -> Result<(), MetaError> {
    let ok = !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(MetaError::InvalidStaging {
            path: p.to_path_buf(),
        })
    }
}

fn select_where(
    tx: &Transaction<'_>,
    cond: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DirtyRecord>, MetaError> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM dirty WHERE {cond} ORDER BY id"
    ))?;
    let mut rows = st.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(record_from_row(r)?);
    }
    Ok(out)
}

/// The records at or below `path`.
fn select_subtree(
    tx: &Transaction<'_>,
    area: AreaId,
    path: &RemotePath,
) -> Result<Vec<DirtyRecord>, MetaError> {
    if path.is_root() {
        return select_where(tx, "area = ?1", params![area]);
    }
    let (lo, hi) = descendant_bounds(path.as_str());
    select_where(
        tx,
        "area = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
        params![area, path.as_str(), lo, hi],
    )
}

fn insert_row(tx: &Transaction<'_>, r: &DirtyRecord) -> Result<i64, MetaError> {
    let (state, error) = state_to_sql(&r.state);
    tx.prepare_cached(
        "INSERT INTO dirty (area, path, staging, base_etag, size, state, error, updated_at_ns,
                            on_server, prior_move, prior_size)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.area,
        r.path.as_str(),
        r.staging.as_os_str().as_bytes(),
        r.base_etag.as_ref().map(|t| t.header_value()),
        u64_to_sql(r.size)?,
        state,
        error,
        time_to_ns(r.updated_at),
        i64::from(r.on_server),
        r.prior_move.as_ref().map(|(t, _)| t.as_str().to_string()),
        r.prior_move
            .as_ref()
            .map(|(_, n)| u64_to_sql(*n))
            .transpose()?,
    ])?;
    Ok(tx.last_insert_rowid())
}

fn delete_id(tx: &Transaction<'_>, id: i64) -> Result<usize, MetaError> {
    Ok(tx
        .prepare_cached("DELETE FROM dirty WHERE id = ?1")?
        .execute(params![id])?)
}

impl MetaStore {
    /// Records that `path` is dirty with the content staged at `staging` (relative to the cache
    /// dir), state [`DirtyState::Pending`]. Replaces any record of the same path; returns the new
    /// record and the replaced one (whose staging file the caller may now delete, if it differs).
    pub fn insert_dirty(
        &self,
        area: AreaId,
        path: &RemotePath,
        staging: &Path,
        base_etag: Option<&ETag>,
        on_server: bool,
        size: u64,
    ) -> Result<(DirtyRecord, Option<DirtyRecord>), MetaError> {
        check_staging(staging)?;
        let mut rec = DirtyRecord {
            id: 0,
            area,
            path: path.clone(),
            staging: staging.to_path_buf(),
            base_etag: base_etag.cloned(),
            on_server,
            size,
            state: DirtyState::Pending,
            updated_at: SystemTime::now(),
            prior_move: None,
        };
        self.durable(|tx| {
            let old =
                select_where(tx, "area = ?1 AND path = ?2", params![area, path.as_str()])?.pop();
            if let Some(o) = &old {
                // An upload of the replaced version may have reached the server: remembered.
                let moving: (Option<String>, Option<i64>) = tx
                    .prepare_cached("SELECT moving, moving_size FROM dirty WHERE id = ?1")?
                    .query_row(params![o.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rec.prior_move = match move_from_sql(moving.0, moving.1)? {
                    Some(m) => Some(m),
                    None => o.prior_move.clone(),
                };
                delete_id(tx, o.id)?;
            }
            delete_uploaded(tx, staging)?;
            rec.id = insert_row(tx, &rec)?;
            Ok((rec, old))
        })
    }

    /// Moves the dirty records at or below `from` to the same place below `to` (a file or
    /// directory rename), giving them new ids. Records at or below `to` are removed first and
    /// returned in [`DirtyRename::displaced`].
    pub fn update_dirty_path(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<DirtyRename, MetaError> {
        super::check_rename(from, to)?;
        if from == to {
            return Ok(DirtyRename::default());
        }
        self.durable(|tx| {
            let displaced = select_subtree(tx, area, to)?;
            for d in &displaced {
                delete_id(tx, d.id)?;
            }
            let mut moved = select_subtree(tx, area, from)?;
            let now = SystemTime::now();
            for m in &mut moved {
                delete_id(tx, m.id)?;
                let rest = &m.path.as_str()[from.as_str().len()..];
                let new = format!("{}{rest}", to.as_str());
                m.path = path_from_sql(new)?;
                m.updated_at = now;
                m.id = insert_row(tx, m)?;
            }
            Ok(DirtyRename { moved, displaced })
        })
    }

    /// Sets the state of record `id`; false if there is no such record (rewritten, renamed or
    /// removed meanwhile).
    pub fn set_dirty_state(&self, id: i64, state: &DirtyState) -> Result<bool, MetaError> {
        let (s, error) = state_to_sql(state);
        let now = time_to_ns(SystemTime::now());
        self.durable(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE dirty SET state = ?2, error = ?3, updated_at_ns = ?4 WHERE id = ?1",
                )?
                .execute(params![id, s, error, now])?;
            Ok(n == 1)
        })
    }

    /// Removes record `id` and returns it; `None` if it no longer exists (the file was
    /// rewritten or renamed since this id was read: the newer record stays queued).
    pub fn remove_dirty(&self, id: i64) -> Result<Option<DirtyRecord>, MetaError> {
        self.durable(|tx| {
            let rec = select_where(tx, "id = ?1", params![id])?.pop();
            if rec.is_some() {
                delete_id(tx, id)?;
            }
            Ok(rec)
        })
    }

    /// Sets the base of the record of `path` (same id: the content did not change): after an
    /// upload of an earlier version finished, or when a rename put the file over one on the
    /// server. Returns the updated record, if there is one.
    pub fn set_dirty_base(
        &self,
        area: AreaId,
        path: &RemotePath,
        base_etag: Option<&ETag>,
        on_server: bool,
    ) -> Result<Option<DirtyRecord>, MetaError> {
        self.durable(|tx| set_base_tx(tx, area, path, base_etag, on_server))
    }

    /// The size of an upload of the file at `path` that may have reached the server without
    /// this machine learning it (one under way, or one cut short by a crash before its record
    /// was updated); `None` when no upload of it was ever begun.
    pub fn upload_may_have_landed(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<u64>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT moving_size, prior_size FROM dirty WHERE area = ?1 AND path = ?2",
        )?;
        let mut rows = st.query(params![area, path.as_str()])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        let size: Option<i64> = r.get::<_, Option<i64>>(0)?.or(r.get(1)?);
        size.map(|s| u64_from_sql(s, "upload size")).transpose()
    }

    /// An upload of record `id` starts: its content may reach the file's name from now on,
    /// through `temp` (`None`: a PUT in place), `size` bytes. Not fsynced: it guards against
    /// a crash of the daemon, and a power cut in that window costs a false conflict at worst.
    pub fn mark_moving(
        &self,
        id: i64,
        temp: Option<&RemotePath>,
        size: u64,
    ) -> Result<(), MetaError> {
        self.tx(|tx| {
            tx.prepare_cached("UPDATE dirty SET moving = ?2, moving_size = ?3 WHERE id = ?1")?
                .execute(params![
                    id,
                    temp.map(|t| t.as_str().to_string()).unwrap_or_default(),
                    u64_to_sql(size)?
                ])?;
            Ok(())
        })
    }

    /// Staging files recorded as uploaded (schema v5): path relative to the cache dir, size,
    /// mtime in ns.
    pub fn uploaded_staging(&self) -> Result<Vec<(PathBuf, u64, i64)>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT staging, size, mtime_ns FROM uploaded_staging")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let staging: Vec<u8> = r.get(0)?;
            out.push((
                PathBuf::from(OsStr::from_bytes(&staging)),
                u64_from_sql(r.get(1)?, "uploaded size")?,
                r.get(2)?,
            ));
        }
        Ok(out)
    }

    /// Records that `staging` (relative to the cache dir) holds what the server has, at this
    /// size and mtime (ns).
    pub fn note_uploaded_staging(
        &self,
        staging: &Path,
        size: u64,
        mtime_ns: i64,
    ) -> Result<(), MetaError> {
        self.tx(|tx| insert_uploaded(tx, staging, size, mtime_ns))
    }

    /// Forgets that `staging` was uploaded (its file is gone); `None`: forgets them all.
    pub fn forget_uploaded_staging(&self, staging: Option<&Path>) -> Result<(), MetaError> {
        self.tx(|tx| match staging {
            Some(p) => delete_uploaded(tx, p),
            None => {
                tx.execute("DELETE FROM uploaded_staging", [])?;
                Ok(())
            }
        })
    }

    /// The upload of record `id` put `path` on the server as `entry` (with its ETag). In one
    /// durable transaction, so that a crash cannot leave the record gone but the file missing
    /// from its folder's stored listing: removes the record; when it is gone already (the file
    /// was committed again while it was sent) rebases the newer record of `path` onto the
    /// version sent; stores the entry. Returns the removed record and the rebased one.
    ///
    /// `staged` is the staging file's state now (size, mtime in ns): when the record is
    /// removed, it is recorded as uploaded (schema v5) until the file is dropped.
    pub fn upload_done(
        &self,
        id: i64,
        area: AreaId,
        path: &RemotePath,
        entry: &EntryRecord,
        staged: Option<(u64, i64)>,
    ) -> Result<(Option<DirtyRecord>, Option<DirtyRecord>), MetaError> {
        self.durable(|tx| {
            let removed = select_where(tx, "id = ?1", params![id])?.pop();
            let newer = match &removed {
                Some(r) => {
                    delete_id(tx, id)?;
                    if let Some((size, mtime_ns)) = staged {
                        insert_uploaded(tx, &r.staging, size, mtime_ns)?;
                    }
                    None
                }
                None => set_base_tx(tx, area, path, entry.etag.as_ref(), true)?,
            };
            super::upsert_entry_tx(tx, area, path, entry)?;
            // Newer than any listing asked for before now (see `save_listing_asked_at`).
            tx.prepare_cached("UPDATE entries SET uploaded_ns = ?3 WHERE area = ?1 AND path = ?2")?
                .execute(params![
                    area,
                    path.as_str(),
                    super::time_to_ns(SystemTime::now())
                ])?;
            Ok((removed, newer))
        })
    }

    /// Removes the records at or below `path` (a deleted file or directory) and returns them.
    pub fn remove_dirty_subtree(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Vec<DirtyRecord>, MetaError> {
        self.durable(|tx| {
            let gone = select_subtree(tx, area, path)?;
            for g in &gone {
                delete_id(tx, g.id)?;
            }
            Ok(gone)
        })
    }

    /// Remembers a conflict: the server's version kept `path`, ours was uploaded as `copy`.
    pub fn add_conflict(
        &self,
        area: AreaId,
        path: &RemotePath,
        copy: &RemotePath,
        at: SystemTime,
    ) -> Result<(), MetaError> {
        self.durable(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO conflicts (area, copy, path, at_ns) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![area, copy.as_str(), path.as_str(), time_to_ns(at)])?;
            Ok(())
        })
    }

    /// Forgets the conflicts whose copy is at or below `copy` (deleted by the user).
    pub fn remove_conflicts(&self, area: AreaId, copy: &RemotePath) -> Result<usize, MetaError> {
        self.durable(|tx| {
            let n = if copy.is_root() {
                tx.prepare_cached("DELETE FROM conflicts WHERE area = ?1")?
                    .execute(params![area])?
            } else {
                let (lo, hi) = descendant_bounds(copy.as_str());
                tx.prepare_cached(
                    "DELETE FROM conflicts WHERE area = ?1 AND (copy = ?2 OR (copy >= ?3 AND copy < ?4))",
                )?
                .execute(params![area, copy.as_str(), lo, hi])?
            };
            Ok(n)
        })
    }

    /// Moves remembered conflict copies at or below `from` to the same place below `to` (a
    /// rename); returns how many moved.
    pub fn rename_conflicts(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<usize, MetaError> {
        super::check_rename(from, to)?;
        self.durable(|tx| {
            let rows: Vec<(String, String, i64)> = {
                let (lo, hi) = descendant_bounds(from.as_str());
                let mut st = tx.prepare_cached(
                    "SELECT copy, path, at_ns FROM conflicts
                     WHERE area = ?1 AND (copy = ?2 OR (copy >= ?3 AND copy < ?4))",
                )?;
                let rows = st.query_map(params![area, from.as_str(), lo, hi], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            for (copy, path, at) in &rows {
                let new = format!("{}{}", to.as_str(), &copy[from.as_str().len()..]);
                tx.prepare_cached("DELETE FROM conflicts WHERE area = ?1 AND copy = ?2")?
                    .execute(params![area, copy])?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO conflicts (area, copy, path, at_ns) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![area, new, path, at])?;
            }
            Ok(rows.len())
        })
    }

    /// The remembered conflicts, oldest first: `(area, path, copy, at)`.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, MetaError> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT area, path, copy, at_ns FROM conflicts ORDER BY at_ns, copy",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(Conflict {
                    area: r.get(0)?,
                    path: path_from_sql(r.get(1)?)?,
                    copy: path_from_sql(r.get(2)?)?,
                    at: ns_to_time(r.get(3)?),
                });
            }
            Ok(out)
        })
    }

    /// All dirty records, oldest id first.
    pub fn list_dirty(&self) -> Result<Vec<DirtyRecord>, MetaError> {
        self.tx(|tx| select_where(tx, "1", params![]))
    }

    /// The dirty record of `path`, if any (for the file's state).
    pub fn dirty_for(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<DirtyRecord>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM dirty WHERE area = ?1 AND path = ?2"
        ))?;
        let mut rows = st.query(params![area, path.as_str()])?;
        match rows.next()? {
            Some(r) => Ok(Some(record_from_row(r)?)),
            None => Ok(None),
        }
    }
}
