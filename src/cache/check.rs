//! The start-up check of the index against the files: every `objects` row is checked (values,
//! bitmap, file present with the right length) and dropped if bad, bitmaps are converted to the
//! block size, files no row names are deleted, and usage, pins and the LRU clock are loaded.
//! [`check_row`] is also the check of every row loaded later.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::bitmap::{self, Bitmap};
use super::error::{io_err, CacheError};
use super::layout::valid_name;
use super::state::Shared;
use crate::meta::objects::RawObject;
use crate::meta::{path_from_sql, AreaId, MetaError};
use crate::remote::ETag;

/// A stored row, checked.
pub(super) struct CheckedRow {
    pub(super) etag: ETag,
    pub(super) size: u64,
    pub(super) bits: Bitmap,
    pub(super) present_bytes: u64,
}

fn present_bytes_of(bits: &Bitmap, size: u64, bs: u64) -> u64 {
    let n = bits.len();
    let mut total = bits.count_ones() * bs;
    if n > 0 && bits.get(n - 1) {
        total -= n * bs - size;
    }
    total
}

/// Checks the values of a row (not its file); converts the bitmap to `block_size`.
pub(super) fn check_row(raw: &RawObject, block_size: u64) -> Result<CheckedRow, CacheError> {
    let bad = |reason: String| {
        CacheError::Meta(MetaError::Corrupt(format!("object {}: {reason}", raw.id)))
    };
    AreaId::try_from(raw.area).map_err(|_| bad(format!("area {}", raw.area)))?;
    path_from_sql(raw.path.clone())?;
    let etag = ETag::parse(&raw.etag).ok_or_else(|| bad(format!("ETag {:?}", raw.etag)))?;
    let size = u64::try_from(raw.size).map_err(|_| bad(format!("size {}", raw.size)))?;
    let row_bs = u64::try_from(raw.block_size)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| bad(format!("block size {}", raw.block_size)))?;
    if !valid_name(&raw.file) {
        return Err(bad(format!("file name {:?}", raw.file)));
    }
    let bits = Bitmap::from_bytes(&raw.present, size.div_ceil(row_bs))
        .ok_or_else(|| bad("presence bitmap does not fit the size".into()))?;
    let bits = if row_bs == block_size {
        bits
    } else {
        bitmap::convert(&bits, row_bs, block_size, size)
    };
    let present_bytes = present_bytes_of(&bits, size, block_size);
    Ok(CheckedRow {
        etag,
        size,
        bits,
        present_bytes,
    })
}

impl Shared {
    /// The check at open: drops bad rows, converts bitmaps to the block size, deletes files
    /// without a row, and loads usage, pins and the LRU clock.
    pub(super) fn check_index(&self) -> Result<(), CacheError> {
        let rows = self.meta.obj_all()?;
        let mut keep: HashSet<String> = HashSet::with_capacity(rows.len());
        let mut drop_rows = Vec::new();
        let mut rewrites = Vec::new();
        let (mut used, mut objects) = (0u64, 0u64);
        for raw in &rows {
            let checked = check_row(raw, self.block_size).and_then(|c| {
                let path = self.file_path(&raw.file);
                let meta = fs::metadata(&path).map_err(io_err("stat", &path))?;
                if !meta.is_file() || meta.len() != c.size {
                    return Err(CacheError::Corrupt {
                        file: path,
                        reason: format!("length {}, expected {}", meta.len(), c.size),
                    });
                }
                Ok(c)
            });
            match checked {
                Ok(c) => {
                    let stored_bytes = u64::try_from(raw.present_bytes).ok();
                    if raw.block_size as u64 != self.block_size
                        || stored_bytes != Some(c.present_bytes)
                    {
                        rewrites.push((
                            raw.id,
                            self.block_size,
                            c.bits.to_bytes(),
                            c.present_bytes,
                        ));
                    }
                    keep.insert(raw.file.clone());
                    used += c.present_bytes;
                    objects += 1;
                }
                Err(e) => {
                    tracing::warn!(object = raw.id, path = %raw.path, error = %e,
                        "dropping a cache object that failed its check");
                    drop_rows.push(raw.id);
                }
            }
        }
        self.meta.obj_delete(&drop_rows)?;
        self.meta.obj_rewrite(&rewrites)?;
        // Files without a row: leftovers of a crash between the steps of a create or a drop.
        let mut swept = 0u64;
        let objects_dir = self.layout.objects_dir();
        let top = fs::read_dir(&objects_dir).map_err(io_err("list", &objects_dir))?;
        for ent in top {
            let ent = ent.map_err(io_err("list", &objects_dir))?;
            let p = ent.path();
            let ft = ent.file_type().map_err(io_err("stat", &p))?;
            if !ft.is_dir() {
                remove_stray(&p, &mut swept);
                continue;
            }
            let dir_name = ent.file_name();
            let sub = fs::read_dir(&p).map_err(io_err("list", &p))?;
            for f in sub {
                let f = f.map_err(io_err("list", &p))?;
                let name = f.file_name();
                let known = name
                    .to_str()
                    .is_some_and(|n| keep.contains(n) && dir_name.to_str() == n.get(..2))
                    && f.file_type().is_ok_and(|t| t.is_file());
                if !known {
                    remove_stray(&f.path(), &mut swept);
                }
            }
        }
        if swept > 0 || !drop_rows.is_empty() {
            tracing::info!(
                dropped_rows = drop_rows.len(),
                deleted_files = swept,
                "cache index checked"
            );
        }
        // Rows deleted by an earlier run (or just now) may not be durable yet (a process
        // killed before its WAL was fsynced, then a power cut): make them durable before this
        // run creates any file, which could take the name of such a row (see `forget`).
        self.meta.sync_wal()?;
        let pins = self.meta.pins_all()?;
        let max_access = self.meta.obj_max_access()?;
        self.clock.fetch_max(max_access, Ordering::SeqCst);
        let mut st = self.state();
        st.used = used;
        st.objects = objects;
        st.pins = pins
            .into_iter()
            .map(|(a, p, keep)| ((a, p), keep))
            .collect();
        drop(st);
        self.recount_pinned()
    }
}

fn remove_stray(p: &Path, count: &mut u64) {
    let res = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match res {
        Ok(()) => *count += 1,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot delete a stray cache file")
        }
    }
}
