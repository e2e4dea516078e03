//! The SQLite schema of `meta.db` and its migrations.
//!
//! The version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file as ours.
//! [`migrate`] runs in one exclusive transaction: it creates the schema in an empty file, brings
//! an older one up to [`SCHEMA_VERSION`] step by step, and refuses a newer one or a foreign
//! database with a clear error (nothing is written then).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::MetaError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 10;

/// `PRAGMA application_id` of a cloudmount metadata database ("ClMt").
pub const APPLICATION_ID: i64 = 0x436c_4d74;

/// Version 1. Paths are `RemotePath` strings (`a/b/c`, `""` for the area root). Times are
/// nanoseconds since the Unix epoch (negative before it) unless named otherwise.
pub(super) const V1: &str = r#"
-- The remote tree as last seen. `parent` is NULL only for the area root ('').
CREATE TABLE entries (
    area      INTEGER NOT NULL,
    path      TEXT    NOT NULL,
    parent    TEXT,
    name      TEXT    NOT NULL,
    kind      INTEGER NOT NULL CHECK (kind IN (0, 1)),   -- 0 file, 1 directory
    size      INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns  INTEGER,
    etag      TEXT,                                      -- ETag::header_value()
    PRIMARY KEY (area, path)
) WITHOUT ROWID;
CREATE INDEX entries_by_parent ON entries (area, parent, name);

-- Directories whose children were listed, and when (0 = invalidated).
CREATE TABLE listings (
    area          INTEGER NOT NULL,
    path          TEXT    NOT NULL,
    listed_at_ns  INTEGER NOT NULL,
    PRIMARY KEY (area, path)
) WITHOUT ROWID;

-- mtimes set by the user (utimens), which WebDAV cannot store.
CREATE TABLE local_mtimes (
    area      INTEGER NOT NULL,
    path      TEXT    NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    PRIMARY KEY (area, path)
) WITHOUT ROWID;

-- Files with local changes not yet uploaded (the upload queue). Ids are never reused.
CREATE TABLE dirty (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    area           INTEGER NOT NULL,
    path           TEXT    NOT NULL,
    staging        BLOB    NOT NULL,                     -- relative to the cache dir, raw bytes
    base_etag      TEXT,
    size           INTEGER NOT NULL CHECK (size >= 0),
    state          INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3)),
    error          TEXT,
    updated_at_ns  INTEGER NOT NULL,
    UNIQUE (area, path)
);

-- Block cache objects: one sparse file per (area, path, etag). Ids are never reused, so a
-- late update for a dropped object can never land on a newer one.
CREATE TABLE objects (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    area           INTEGER NOT NULL,
    path           TEXT    NOT NULL,
    etag           TEXT    NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    block_size     INTEGER NOT NULL CHECK (block_size > 0),
    file           TEXT    NOT NULL UNIQUE,              -- name under objects/<2 hex>/
    present        BLOB    NOT NULL,                     -- bitmap, bit i = block i, LSB first
    present_bytes  INTEGER NOT NULL CHECK (present_bytes >= 0),
    last_access    INTEGER NOT NULL,                     -- LRU clock, milliseconds
    UNIQUE (area, path)
);
CREATE INDEX objects_lru ON objects (last_access, id);

-- Pinned paths (files or directories: a pin covers everything below).
CREATE TABLE pins (
    area  INTEGER NOT NULL,
    path  TEXT    NOT NULL,
    PRIMARY KEY (area, path)
) WITHOUT ROWID;
"#;

/// Version 2: the upload queue knows whether a dirty file exists on the server (so a file
/// without an ETag is overwritten, not refused as new), and conflicts are remembered.
pub(super) const V2: &str = r#"
ALTER TABLE dirty ADD COLUMN on_server INTEGER NOT NULL DEFAULT 1 CHECK (on_server IN (0, 1));

-- Conflicts found by the upload queue: the server's version kept `path`, ours went to `copy`.
CREATE TABLE conflicts (
    area   INTEGER NOT NULL,
    copy   TEXT    NOT NULL,
    path   TEXT    NOT NULL,
    at_ns  INTEGER NOT NULL,
    PRIMARY KEY (area, copy)
) WITHOUT ROWID;
"#;

/// Version 3: settings of this cache, among them its random identity (`cache_id`, 16 hex
/// digits, drawn once by SQLite's `randomblob`): it marks the temporary files this cache's
/// uploads leave on servers, so that strays left by a crash can be told from other clients'.
pub(super) const V3: &str = r#"
CREATE TABLE settings (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO settings (key, value) VALUES ('cache_id', lower(hex(randomblob(8))));
"#;

/// Version 4: the write-ahead of an upload. Before an upload of a record starts, `moving`
/// (its temporary name, `''` for a PUT in place) and `moving_size` are set: its content may
/// reach the file's name from then on. A record that replaces one so marked inherits them as
/// `prior_move` / `prior_size` (cleared when it is rebased on the version uploaded): after a
/// crash, a server copy of that size, its temporary file gone, is our own earlier version —
/// not another client's change to keep beside ours as a conflict.
pub(super) const V4: &str = r#"
ALTER TABLE dirty ADD COLUMN moving TEXT;
ALTER TABLE dirty ADD COLUMN moving_size INTEGER;
ALTER TABLE dirty ADD COLUMN prior_move TEXT;
ALTER TABLE dirty ADD COLUMN prior_size INTEGER;
"#;

/// Version 5: staging files whose content is what the server has — their upload ended (and
/// their record was removed) but they are not yet moved into the cache, or they are a copy of
/// the server's version made when the file was opened for writing — with their size and mtime
/// then.
/// After a crash such a file, unchanged since, is not "written and never closed": it is
/// simply dropped, not kept aside. A row is removed when its file is, or committed again.
pub(super) const V5: &str = r#"
CREATE TABLE uploaded_staging (
    staging   BLOB    NOT NULL PRIMARY KEY,   -- relative to the cache dir, as in `dirty`
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 6: the areas' stable identities. Every `area` column holds an `areas.id`, never a
/// position in the profile's list: a configured area is matched by its URL (`key`), a new URL
/// gets a new id (never reused), and a renamed area keeps its id and its data. Before v6 the
/// column held the area's position in the profile; a store migrated with data in it is marked
/// (`settings.legacy_area_positions`), and the first open that names its areas adopts those
/// positions for them once (see `areas.rs`).
pub(super) const V6: &str = r#"
CREATE TABLE areas (
    id     INTEGER NOT NULL PRIMARY KEY,
    key    TEXT    NOT NULL UNIQUE,      -- the area's URL, as configured (normalised)
    name   TEXT    NOT NULL,             -- its folder name when last mounted
    seen_ns INTEGER NOT NULL             -- when it was last part of a mount
);
INSERT INTO settings (key, value)
    SELECT 'legacy_area_positions', '1'
    WHERE EXISTS (SELECT 1 FROM entries) OR EXISTS (SELECT 1 FROM dirty)
       OR EXISTS (SELECT 1 FROM objects) OR EXISTS (SELECT 1 FROM listings)
       OR EXISTS (SELECT 1 FROM conflicts) OR EXISTS (SELECT 1 FROM pins)
       OR EXISTS (SELECT 1 FROM local_mtimes);
"#;

/// Version 7: a local mtime is kept exactly (`sec`, `nsec`: whole seconds since the epoch,
/// and nanoseconds 0..1e9, for times `mtime_ns` cannot hold, past 2262) and names the version
/// of the file it was set on (`version`, an ETag header value; NULL for directories, and for
/// rows written before v7): after a restart it is shown again only while the file has that
/// version. `entries.uploaded_ns`: when this cache's upload stored the entry (NULL when a
/// listing did): a listing asked for before that time does not replace or drop it.
pub(super) const V7: &str = r#"
ALTER TABLE local_mtimes ADD COLUMN sec INTEGER;
ALTER TABLE local_mtimes ADD COLUMN nsec INTEGER CHECK (nsec IS NULL OR (nsec >= 0 AND nsec < 1000000000));
ALTER TABLE local_mtimes ADD COLUMN version TEXT;
ALTER TABLE entries ADD COLUMN uploaded_ns INTEGER;
"#;

/// Version 8: permission bits set by the user (chmod), which WebDAV cannot store: kept on this
/// machine only, per path (a mode belongs to the path, whatever its version). `perm` is
/// `mode & 0o777`; a path showing the default mode (0644 files, 0755 directories) has no row.
/// Moved by renames and dropped with their path, like `local_mtimes`.
pub(super) const V8: &str = r#"
CREATE TABLE local_modes (
    area  INTEGER NOT NULL,
    path  TEXT    NOT NULL,
    perm  INTEGER NOT NULL CHECK (perm >= 0 AND perm <= 511),   -- 0o777
    PRIMARY KEY (area, path)
) WITHOUT ROWID;
"#;

/// Version 9: a pin row is a *mark*: `keep = 1` pins the path and everything below it,
/// `keep = 0` is an exception inside a pinned folder (a file or folder the user unpinned
/// there: not kept, but cached like any other). The nearest mark at or above a path decides.
/// Rows of earlier versions were all pins.
pub(super) const V9: &str = r#"
ALTER TABLE pins ADD COLUMN keep INTEGER NOT NULL DEFAULT 1 CHECK (keep IN (0, 1));
"#;

/// Version 10: namespace operations (mkdir, rmdir, unlink, rename) done on the mount while the
/// server could not be reached, waiting to be replayed on it, in `id` order (ids are never
/// reused). `op`: 0 mkdir, 1 rmdir, 2 unlink, 3 rename (`path` → `target`). For an unlink or
/// a rename, `is_dir`, `size`, `mtime_ns` and `etag` describe the source as this machine knew
/// it (a rename's target shows it until the server lists it), and `base` is the version the
/// operation was based on (an ETag header value, or a size+mtime stand-in; NULL for a
/// folder): a delete is done only while the server still has that version. A rename that
/// replaces a file the server has names its version in `target_base` (`replace` = 1); one
/// replacing nothing (`replace` = 0) never overwrites what the server got meanwhile.
pub(super) const V10: &str = r#"
CREATE TABLE ns_ops (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    area         INTEGER NOT NULL,
    op           INTEGER NOT NULL CHECK (op IN (0, 1, 2, 3)),
    path         TEXT    NOT NULL,
    target       TEXT,
    is_dir       INTEGER NOT NULL CHECK (is_dir IN (0, 1)),
    size         INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    mtime_ns     INTEGER,
    etag         TEXT,
    base         TEXT,
    replace      INTEGER NOT NULL DEFAULT 0 CHECK (replace IN (0, 1)),
    target_base  TEXT,
    ours         INTEGER NOT NULL DEFAULT 0 CHECK (ours IN (0, 1)),
    at_ns        INTEGER NOT NULL,
    CHECK ((op = 3) = (target IS NOT NULL))
);
"#;

/// Steps from version N to N+1, indexed by N-1. A new file is created at version 1 and
/// brought up through every step, so new and migrated files are the same.
pub(super) const MIGRATIONS: &[&str] = &[V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// Creates, migrates or checks the schema, in one exclusive transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), MetaError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let app: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if app == 0 && version == 0 {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables != 0 {
            return Err(MetaError::NotOurs {
                path: path.to_path_buf(),
                application_id: app,
            });
        }
        tx.execute_batch(V1)?;
        for step in MIGRATIONS {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        tracing::debug!(path = %path.display(), "created metadata schema v{SCHEMA_VERSION}");
        return Ok(());
    }
    if app != APPLICATION_ID {
        return Err(MetaError::NotOurs {
            path: path.to_path_buf(),
            application_id: app,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(MetaError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(MetaError::Corrupt(format!(
            "{}: schema version {version} is invalid",
            path.display()
        )));
    }
    let mut v = version;
    while v < SCHEMA_VERSION {
        let step = MIGRATIONS
            .get((v - 1) as usize)
            .expect("a migration exists for every older version");
        tx.execute_batch(step)?;
        v += 1;
        tracing::info!(path = %path.display(), "migrated metadata schema to v{v}");
    }
    if v != version {
        tx.pragma_update(None, "user_version", v)?;
    }
    tx.commit()?;
    Ok(())
}
