//! Namespace operations waiting for the server: the `ns_ops` table (schema v10).
//!
//! A `mkdir`, `rmdir`, `unlink` or `rename` done on the mount while the server could not be
//! reached is done locally at once and recorded here, durably (`synchronous=FULL`, like the
//! dirty records), before the call returns. The write-back replays the records in id order
//! when the server is back and removes each once it is done (or resolved without loss); ids
//! are never reused, so the order is the order the user did them in.

use std::time::SystemTime;

use rusqlite::params;

use super::{
    etag_from_sql, move_paths_tx, ns_to_time, path_from_sql, time_to_ns, u64_from_sql, u64_to_sql,
    AreaId, MetaError, MetaStore,
};
use crate::remote::{ETag, EntryKind, RemotePath};

/// What a recorded operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsOpKind {
    Mkdir,
    Rmdir,
    Unlink,
    /// `path` → `target`.
    Rename,
}

impl NsOpKind {
    fn to_sql(self) -> i64 {
        match self {
            NsOpKind::Mkdir => 0,
            NsOpKind::Rmdir => 1,
            NsOpKind::Unlink => 2,
            NsOpKind::Rename => 3,
        }
    }

    fn from_sql(v: i64) -> Result<NsOpKind, MetaError> {
        Ok(match v {
            0 => NsOpKind::Mkdir,
            1 => NsOpKind::Rmdir,
            2 => NsOpKind::Unlink,
            3 => NsOpKind::Rename,
            v => return Err(MetaError::Corrupt(format!("namespace operation {v}"))),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NsOpKind::Mkdir => "mkdir",
            NsOpKind::Rmdir => "rmdir",
            NsOpKind::Unlink => "unlink",
            NsOpKind::Rename => "rename",
        }
    }
}

/// One namespace operation waiting for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsOp {
    /// Its place in the order (ignored by [`MetaStore::add_ns_op`], which draws it).
    pub id: i64,
    pub area: AreaId,
    pub kind: NsOpKind,
    pub path: RemotePath,
    /// A rename's new path (`None` for the others).
    pub target: Option<RemotePath>,
    /// The source as this machine knew it: kind, size, mtime, ETag.
    pub source_kind: EntryKind,
    pub size: u64,
    pub mtime: Option<SystemTime>,
    pub etag: Option<ETag>,
    /// The version of the source the operation was based on (a file's; `None` for folders).
    pub base: Option<ETag>,
    /// A rename replacing something the server has at `target`, and that thing's version
    /// (`None` for a folder, or a server without versions).
    pub replace: bool,
    pub target_base: Option<ETag>,
    /// An unlink of a file this machine never saw on the server, but whose upload may have
    /// landed there with its answer lost (cut off, or a crash): deleted on the server when the
    /// file there has that upload's size (`size`), kept otherwise.
    pub ours: bool,
    pub at: SystemTime,
}

const COLUMNS: &str =
    "id, area, op, path, target, is_dir, size, mtime_ns, etag, base, replace, target_base, at_ns, ours";

fn op_from_row(r: &rusqlite::Row<'_>) -> Result<NsOp, MetaError> {
    let kind = NsOpKind::from_sql(r.get(2)?)?;
    let target = r
        .get::<_, Option<String>>(4)?
        .map(path_from_sql)
        .transpose()?;
    if (kind == NsOpKind::Rename) != target.is_some() {
        return Err(MetaError::Corrupt("rename without target".into()));
    }
    Ok(NsOp {
        id: r.get(0)?,
        area: r.get(1)?,
        kind,
        path: path_from_sql(r.get(3)?)?,
        target,
        source_kind: if r.get::<_, i64>(5)? != 0 {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: u64_from_sql(r.get(6)?, "operation size")?,
        mtime: r.get::<_, Option<i64>>(7)?.map(ns_to_time),
        etag: etag_from_sql(r.get(8)?)?,
        base: etag_from_sql(r.get(9)?)?,
        replace: r.get::<_, i64>(10)? != 0,
        target_base: etag_from_sql(r.get(11)?)?,
        at: ns_to_time(r.get(12)?),
        ours: r.get::<_, i64>(13)? != 0,
    })
}

impl MetaStore {
    /// Records an operation after every one recorded before; returns it with its id. Durable
    /// when this returns.
    pub fn add_ns_op(&self, op: &NsOp) -> Result<NsOp, MetaError> {
        if (op.kind == NsOpKind::Rename) != op.target.is_some() {
            return Err(MetaError::Corrupt("rename without target".into()));
        }
        let id = self.durable(|tx| {
            tx.prepare_cached(
                "INSERT INTO ns_ops (area, op, path, target, is_dir, size, mtime_ns, etag, base,
                                     replace, target_base, at_ns, ours)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                op.area,
                op.kind.to_sql(),
                op.path.as_str(),
                op.target.as_ref().map(|t| t.as_str()),
                i64::from(op.source_kind == EntryKind::Dir),
                u64_to_sql(op.size)?,
                op.mtime.map(time_to_ns),
                op.etag.as_ref().map(|e| e.header_value()),
                op.base.as_ref().map(|e| e.header_value()),
                i64::from(op.replace),
                op.target_base.as_ref().map(|e| e.header_value()),
                time_to_ns(op.at),
                i64::from(op.ours),
            ])?;
            Ok(tx.last_insert_rowid())
        })?;
        Ok(NsOp { id, ..op.clone() })
    }

    /// Every waiting operation, in order.
    pub fn ns_ops(&self) -> Result<Vec<NsOp>, MetaError> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM ns_ops ORDER BY id"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(op_from_row(r)?);
            }
            Ok(out)
        })
    }

    /// Removes a replayed (or resolved) operation; whether it was there.
    pub fn remove_ns_op(&self, id: i64) -> Result<bool, MetaError> {
        self.durable(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM ns_ops WHERE id = ?1")?
                .execute(params![id])?
                > 0)
        })
    }

    /// Our folder or file at `from` was moved to `to` (its name was taken on the server): the
    /// waiting operations at or below `from` now name the same place below `to`. Returns how
    /// many paths changed.
    pub fn move_ns_ops(
        &self,
        area: AreaId,
        from: &RemotePath,
        to: &RemotePath,
    ) -> Result<usize, MetaError> {
        super::check_rename(from, to)?;
        self.durable(|tx| {
            Ok(move_paths_tx(tx, "ns_ops", "path", area, from, to)?
                + move_paths_tx(tx, "ns_ops", "target", area, from, to)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::tests::{p, t};

    fn op(kind: NsOpKind, path: &str, target: Option<&str>) -> NsOp {
        NsOp {
            id: 0,
            area: 1,
            kind,
            path: p(path),
            target: target.map(p),
            source_kind: EntryKind::File,
            size: 3,
            mtime: Some(t(7)),
            etag: ETag::parse("\"e1\""),
            base: ETag::parse("\"e1\""),
            replace: false,
            target_base: None,
            ours: false,
            at: t(9),
        }
    }

    #[test]
    fn operations_come_back_in_order_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("meta.db");
        {
            let m = MetaStore::open(&path).unwrap();
            let a = m.add_ns_op(&op(NsOpKind::Mkdir, "d", None)).unwrap();
            let b = m
                .add_ns_op(&op(NsOpKind::Rename, "a", Some("d/b")))
                .unwrap();
            let c = m.add_ns_op(&op(NsOpKind::Unlink, "c", None)).unwrap();
            assert!(a.id < b.id && b.id < c.id);
        }
        let m = MetaStore::open(&path).unwrap();
        let ops = m.ns_ops().unwrap();
        let kinds: Vec<NsOpKind> = ops.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            vec![NsOpKind::Mkdir, NsOpKind::Rename, NsOpKind::Unlink]
        );
        assert_eq!(ops[1].target, Some(p("d/b")));
        assert_eq!(ops[1].base, ETag::parse("\"e1\""));
        assert_eq!(ops[1].mtime, Some(t(7)));
        assert!(m.remove_ns_op(ops[0].id).unwrap());
        assert!(!m.remove_ns_op(ops[0].id).unwrap());
        assert_eq!(m.ns_ops().unwrap().len(), 2);
    }

    #[test]
    fn a_relocation_rewrites_paths_and_targets_below_it_only() {
        let m = MetaStore::open_in_memory().unwrap();
        m.add_ns_op(&op(NsOpKind::Mkdir, "d", None)).unwrap();
        m.add_ns_op(&op(NsOpKind::Rename, "d/x", Some("d/y")))
            .unwrap();
        m.add_ns_op(&op(NsOpKind::Unlink, "d0", None)).unwrap();
        m.add_ns_op(&op(NsOpKind::Rename, "e", Some("d/e")))
            .unwrap();
        assert_eq!(m.move_ns_ops(1, &p("d"), &p("d (2)")).unwrap(), 4);
        let got: Vec<(String, Option<String>)> = m
            .ns_ops()
            .unwrap()
            .into_iter()
            .map(|o| {
                (
                    o.path.as_str().to_string(),
                    o.target.map(|t| t.as_str().to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("d (2)".into(), None),
                ("d (2)/x".into(), Some("d (2)/y".into())),
                ("d0".into(), None),
                ("e".into(), Some("d (2)/e".into())),
            ]
        );
    }

    #[test]
    fn a_rename_needs_a_target_and_others_none() {
        let m = MetaStore::open_in_memory().unwrap();
        assert!(m.add_ns_op(&op(NsOpKind::Rename, "a", None)).is_err());
        assert!(m.add_ns_op(&op(NsOpKind::Unlink, "a", Some("b"))).is_err());
        assert!(m
            .lock()
            .execute(
                "INSERT INTO ns_ops (area, op, path, is_dir, at_ns) VALUES (0, 3, 'a', 0, 0)",
                []
            )
            .is_err());
    }
}
