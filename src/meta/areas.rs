//! The areas' stable identities (schema v6, table `areas`).
//!
//! Every row of the store that belongs to an area (entries, listings, local mtimes, dirty
//! records, cache objects, pins, conflicts) carries an [`AreaId`]: a number given to the area's
//! URL the first time it is mounted on this cache and never reused. A profile's areas are matched
//! by URL ([`MetaStore::resolve_areas`]), so reordering them, renaming them or mounting the cache
//! with another URL never sends one area's queued files into another's folder. Records of an
//! area that is no longer mounted are kept untouched ([`MetaStore::waiting_elsewhere`] names
//! them), and go out when the area is back.
//!
//! A store migrated from v5 with data in it holds positions, not ids; it is marked with the
//! setting `legacy_area_positions`, and the first [`MetaStore::resolve_areas`] adopts the
//! positions of the areas it is given (what the older version meant by them), once.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Transaction};

use super::{time_to_ns, AreaId, MetaError, MetaStore};

/// One area as configured: its identity (the URL) and its folder name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaKey {
    /// The area's URL; compared after [`normalise_key`].
    pub url: String,
    /// Its folder name at the mount's root.
    pub name: String,
}

/// Files waiting for upload in an area that is not part of this mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingElsewhere {
    pub area: AreaId,
    /// The area's URL, when the store knows it (not for an area removed before schema v6).
    pub url: Option<String>,
    /// Its folder name when it was last mounted.
    pub name: Option<String>,
    pub files: u64,
    pub bytes: u64,
}

/// The form in which URLs are compared: one trailing slash, no fragment.
pub fn normalise_key(url: &str) -> String {
    let u = url.split('#').next().unwrap_or(url).trim();
    format!("{}/", u.trim_end_matches('/'))
}

const LEGACY: &str = "legacy_area_positions";

impl MetaStore {
    /// The stable id of each of `areas`, in order: the id stored for its URL, or a new one.
    /// Names are updated (a renamed area keeps its data). Two areas with one URL are refused.
    pub fn resolve_areas(&self, areas: &[AreaKey]) -> Result<Vec<AreaId>, MetaError> {
        let keys: Vec<String> = areas.iter().map(|a| normalise_key(&a.url)).collect();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(MetaError::OutOfRange(format!("two areas have the URL {k}")));
            }
        }
        let now = time_to_ns(SystemTime::now());
        self.durable(|tx| {
            let legacy: bool = tx
                .prepare_cached("SELECT 1 FROM settings WHERE key = ?1")?
                .query_row([LEGACY], |_| Ok(()))
                .optional()?
                .is_some();
            let mut ids = Vec::with_capacity(areas.len());
            for (i, (a, key)) in areas.iter().zip(&keys).enumerate() {
                let known: Option<i64> = tx
                    .prepare_cached("SELECT id FROM areas WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                let id = match known {
                    Some(id) => id,
                    None if legacy && !id_taken(tx, i as i64)? => i as i64,
                    None => next_id(tx)?,
                };
                tx.prepare_cached(
                    "INSERT INTO areas (id, key, name, seen_ns) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, seen_ns = excluded.seen_ns",
                )?
                .execute(params![id, key, a.name, now])?;
                ids.push(
                    AreaId::try_from(id)
                        .map_err(|_| MetaError::Corrupt(format!("area id {id} out of range")))?,
                );
            }
            if legacy {
                tx.prepare_cached("DELETE FROM settings WHERE key = ?1")?
                    .execute([LEGACY])?;
                tracing::info!(
                    areas = areas.len(),
                    "areas of an older cache identified by their position in the profile, once"
                );
            }
            Ok(ids)
        })
    }

    /// Dirty records of areas not in `mounted`, per area: they wait until that area is
    /// mounted again.
    pub fn waiting_elsewhere(
        &self,
        mounted: &[AreaId],
    ) -> Result<Vec<WaitingElsewhere>, MetaError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT d.area, count(*), sum(d.size), a.key, a.name
             FROM dirty d LEFT JOIN areas a ON a.id = d.area
             GROUP BY d.area ORDER BY d.area",
        )?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let area: i64 = r.get(0)?;
            let area = AreaId::try_from(area)
                .map_err(|_| MetaError::Corrupt(format!("area id {area} out of range")))?;
            if mounted.contains(&area) {
                continue;
            }
            out.push(WaitingElsewhere {
                area,
                files: super::u64_from_sql(r.get(1)?, "count")?,
                bytes: super::u64_from_sql(r.get::<_, Option<i64>>(2)?.unwrap_or(0), "size")?,
                url: r.get(3)?,
                name: r.get(4)?,
            });
        }
        Ok(out)
    }
}

fn id_taken(tx: &Transaction<'_>, id: i64) -> Result<bool, MetaError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM areas WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// One past every id in use, by the `areas` table or by any row (an area removed from the
/// profile before v6 has rows but no `areas` row: its id is never given to another URL).
fn next_id(tx: &Transaction<'_>) -> Result<i64, MetaError> {
    let max: Option<i64> = tx
        .prepare_cached(
            "SELECT max(m) FROM (
                SELECT max(id) AS m FROM areas
                UNION ALL SELECT max(area) FROM entries
                UNION ALL SELECT max(area) FROM listings
                UNION ALL SELECT max(area) FROM local_mtimes
                UNION ALL SELECT max(area) FROM local_modes
                UNION ALL SELECT max(area) FROM dirty
                UNION ALL SELECT max(area) FROM objects
                UNION ALL SELECT max(area) FROM pins
                UNION ALL SELECT max(area) FROM conflicts)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(max.map_or(0, |m| m + 1))
}
