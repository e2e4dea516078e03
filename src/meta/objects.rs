//! The block cache's index (`objects` and `pins` tables): SQL only, the policy is in
//! [`crate::cache`]. Rows come back raw ([`RawObject`]) so the cache can check each one and
//! drop what is bad instead of failing to open.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{below_bounds, descendant_bounds, move_paths_tx, AreaId, MetaError, MetaStore};
use crate::remote::RemotePath;

/// An `objects` row as stored, unchecked.
#[derive(Debug, Clone)]
pub(crate) struct RawObject {
    pub id: i64,
    pub area: i64,
    pub path: String,
    pub etag: String,
    pub size: i64,
    pub block_size: i64,
    pub file: String,
    pub present: Vec<u8>,
    pub present_bytes: i64,
    pub last_access: i64,
}

/// The columns of a row needed to drop or evict it.
#[derive(Debug, Clone)]
pub(crate) struct ObjectBrief {
    pub id: i64,
    pub area: AreaId,
    pub path: String,
    pub file: String,
    pub present_bytes: u64,
    pub last_access: i64,
}

/// A persisted state change of one object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectUpdate {
    pub id: i64,
    /// The file the row must still name (guards against updating a replaced row).
    pub file: String,
    /// New presence bitmap and its byte count.
    pub present: Option<(Vec<u8>, u64)>,
    pub last_access: Option<i64>,
}

/// A new row.
pub(crate) struct NewObject<'a> {
    pub area: AreaId,
    pub path: &'a str,
    pub etag: &'a str,
    pub size: u64,
    pub block_size: u64,
    pub file: &'a str,
    pub present: &'a [u8],
    pub present_bytes: u64,
    pub last_access: i64,
}

const RAW_COLUMNS: &str =
    "id, area, path, etag, size, block_size, file, present, present_bytes, last_access";

fn raw_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawObject> {
    Ok(RawObject {
        id: r.get(0)?,
        area: r.get(1)?,
        path: r.get(2)?,
        etag: r.get(3)?,
        size: r.get(4)?,
        block_size: r.get(5)?,
        file: r.get(6)?,
        present: r.get(7)?,
        present_bytes: r.get(8)?,
        last_access: r.get(9)?,
    })
}

fn brief_from_row(r: &rusqlite::Row<'_>) -> Result<ObjectBrief, MetaError> {
    let bytes: i64 = r.get(4)?;
    Ok(ObjectBrief {
        id: r.get(0)?,
        area: r.get(1)?,
        path: r.get(2)?,
        file: r.get(3)?,
        present_bytes: u64::try_from(bytes).unwrap_or(0),
        last_access: r.get(5)?,
    })
}

const BRIEF_COLUMNS: &str = "id, area, path, file, present_bytes, last_access";

fn delete_pins_subtree(tx: &Transaction<'_>, area: AreaId, path: &str) -> Result<(), MetaError> {
    if path.is_empty() {
        tx.prepare_cached("DELETE FROM pins WHERE area = ?1")?
            .execute(params![area])?;
        return Ok(());
    }
    let (lo, hi) = descendant_bounds(path);
    tx.prepare_cached(
        "DELETE FROM pins WHERE area = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
    )?
    .execute(params![area, path, lo, hi])?;
    Ok(())
}

impl MetaStore {
    /// Every object row, for the check at open.
    pub(crate) fn obj_all(&self) -> Result<Vec<RawObject>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(&format!("SELECT {RAW_COLUMNS} FROM objects"))?;
        let rows = st.query_map([], raw_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn obj_by_path(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Option<RawObject>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {RAW_COLUMNS} FROM objects WHERE area = ?1 AND path = ?2"
        ))?;
        Ok(st
            .query_row(params![area, path.as_str()], raw_from_row)
            .optional()?)
    }

    /// Makes every committed transaction durable now (a checkpoint, which fsyncs the WAL
    /// first): the cache calls it before it reuses file names of deleted rows.
    pub(crate) fn sync_wal(&self) -> Result<(), MetaError> {
        let conn = self.lock();
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(MetaError::Corrupt(
                "WAL checkpoint could not complete (database busy)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn obj_file_in_use(&self, file: &str) -> Result<bool, MetaError> {
        let conn = self.lock();
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM objects WHERE file = ?1")?
            .query_row(params![file], |r| r.get(0))?;
        Ok(n > 0)
    }

    pub(crate) fn obj_insert(&self, o: &NewObject<'_>) -> Result<i64, MetaError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO objects (area, path, etag, size, block_size, file, present,
                                  present_bytes, last_access)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            o.area,
            o.path,
            o.etag,
            super::u64_to_sql(o.size)?,
            super::u64_to_sql(o.block_size)?,
            o.file,
            o.present,
            super::u64_to_sql(o.present_bytes)?,
            o.last_access,
        ])?;
        Ok(conn.last_insert_rowid())
    }

    pub(crate) fn obj_delete(&self, ids: &[i64]) -> Result<(), MetaError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
            for id in ids {
                st.execute(params![id])?;
            }
            Ok(())
        })
    }

    /// The objects at or below `path` (all of the area for the root).
    pub(crate) fn obj_subtree(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<Vec<ObjectBrief>, MetaError> {
        let conn = self.lock();
        let mut out = Vec::new();
        if path.is_root() {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {BRIEF_COLUMNS} FROM objects WHERE area = ?1"
            ))?;
            let mut rows = st.query(params![area])?;
            while let Some(r) = rows.next()? {
                out.push(brief_from_row(r)?);
            }
            return Ok(out);
        }
        let (lo, hi) = descendant_bounds(path.as_str());
        let mut st = conn.prepare_cached(&format!(
            "SELECT {BRIEF_COLUMNS} FROM objects WHERE area = ?1 AND path = ?2
             UNION ALL
             SELECT {BRIEF_COLUMNS} FROM objects WHERE area = ?1 AND path >= ?3 AND path < ?4"
        ))?;
        let mut rows = st.query(params![area, path.as_str(), lo, hi])?;
        while let Some(r) = rows.next()? {
            out.push(brief_from_row(r)?);
        }
        Ok(out)
    }

    /// The paths of at most `limit` objects below folder `dir` (of the whole area for the
    /// root), not `dir` itself.
    pub(crate) fn obj_paths_below(
        &self,
        area: AreaId,
        dir: &RemotePath,
        limit: usize,
    ) -> Result<Vec<String>, MetaError> {
        let conn = self.lock();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (lo, hi) = below_bounds(dir);
        let mut st = conn.prepare_cached(
            "SELECT path FROM objects WHERE area = ?1 AND path >= ?2 AND path < ?3 LIMIT ?4",
        )?;
        let rows = st.query_map(params![area, lo, hi, limit], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Re-keys the objects and pins at or below `from` to `to` (whose own rows the caller has
    /// dropped), in one transaction; pins at or below `to` are removed first.
    pub(crate) fn obj_rename(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<(), MetaError> {
        self.tx(|tx| {
            delete_pins_subtree(tx, area, to.as_str())?;
            for table in ["objects", "pins"] {
                move_paths_tx(tx, table, "path", area, from, to)?;
            }
            Ok(())
        })
    }

    /// Persists presence bitmaps and access times, in one transaction. An update whose row was
    /// deleted or replaced meanwhile (id or file differs) changes nothing.
    pub(crate) fn obj_commit(&self, updates: &[ObjectUpdate]) -> Result<(), MetaError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            for u in updates {
                if let Some((bits, bytes)) = &u.present {
                    tx.prepare_cached(
                        "UPDATE objects SET present = ?3, present_bytes = ?4
                         WHERE id = ?1 AND file = ?2",
                    )?
                    .execute(params![
                        u.id,
                        u.file,
                        bits,
                        super::u64_to_sql(*bytes)?
                    ])?;
                }
                if let Some(t) = u.last_access {
                    tx.prepare_cached(
                        "UPDATE objects SET last_access = ?3 WHERE id = ?1 AND file = ?2",
                    )?
                    .execute(params![u.id, u.file, t])?;
                }
            }
            Ok(())
        })
    }

    /// Rewrites the block size and bitmap of rows (block-size change, repairs at open).
    pub(crate) fn obj_rewrite(&self, rows: &[(i64, u64, Vec<u8>, u64)]) -> Result<(), MetaError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE objects SET block_size = ?2, present = ?3, present_bytes = ?4 WHERE id = ?1",
            )?;
            for (id, bs, bits, bytes) in rows {
                st.execute(params![
                    id,
                    super::u64_to_sql(*bs)?,
                    bits,
                    super::u64_to_sql(*bytes)?
                ])?;
            }
            Ok(())
        })
    }

    /// Up to `limit` objects, least recently used first, after `after` (keyset pagination on
    /// `(last_access, id)`). The stored byte counts may lag for loaded objects, so rows with
    /// none are listed too.
    pub(crate) fn obj_lru_page(
        &self,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<ObjectBrief>, MetaError> {
        let conn = self.lock();
        let (a, i) = after.unwrap_or((i64::MIN, i64::MIN));
        let mut st = conn.prepare_cached(&format!(
            "SELECT {BRIEF_COLUMNS} FROM objects
             WHERE (last_access, id) > (?1, ?2)
             ORDER BY last_access, id LIMIT ?3"
        ))?;
        let mut rows = st.query(params![a, i, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(brief_from_row(r)?);
        }
        Ok(out)
    }

    /// The largest access clock value stored (to keep the clock monotonic across restarts).
    pub(crate) fn obj_max_access(&self) -> Result<i64, MetaError> {
        let conn = self.lock();
        let v: Option<i64> =
            conn.query_row("SELECT max(last_access) FROM objects", [], |r| r.get(0))?;
        Ok(v.unwrap_or(0))
    }

    /// Every pin mark: `(area, path, keep)`; `keep` false is an exception inside a pin.
    pub(crate) fn pins_all(&self) -> Result<Vec<(AreaId, String, bool)>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT area, path, keep FROM pins")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sets the pin mark of a path (`Some(true)` pinned, `Some(false)` an exception inside a
    /// pinned folder) or removes it (`None`).
    pub(crate) fn pin_set(
        &self,
        area: AreaId,
        path: &RemotePath,
        mark: Option<bool>,
    ) -> Result<(), MetaError> {
        let conn = self.lock();
        match mark {
            Some(keep) => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO pins (area, path, keep) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![area, path.as_str(), keep as i64])?;
            }
            None => {
                conn.prepare_cached("DELETE FROM pins WHERE area = ?1 AND path = ?2")?
                    .execute(params![area, path.as_str()])?;
            }
        }
        Ok(())
    }

    /// The present bytes of every object that holds data: `(area, path, bytes)` (to count
    /// what pins keep).
    pub(crate) fn obj_present(&self) -> Result<Vec<(AreaId, String, u64)>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT area, path, present_bytes FROM objects WHERE present_bytes > 0",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn pins_delete_subtree(
        &self,
        area: AreaId,
        path: &RemotePath,
    ) -> Result<(), MetaError> {
        self.tx(|tx| delete_pins_subtree(tx, area, path.as_str()))
    }
}
