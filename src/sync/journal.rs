//! The sync journal: one SQLite file per profile (`$XDG_DATA_HOME/cloudmount/sync/<profile>.db`)
//! holding its sync folders ([`super::store`]), the settings, and per folder the last synced
//! state of each path (the base), conflicts, files that cannot be synced, and the runs.
//! Versioned, migrated forward, checked on open; its format is in docs/design.md.

use std::collections::BTreeMap;
use std::path::Path;

use super::folder::FolderId;
use super::state::Base;

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

impl Journal {
    /// Opens (creating or migrating) the journal at `path`.
    pub fn open(path: &Path) -> JournalResult<Journal> {
        let _ = path;
        todo!("sync::journal::open")
    }

    /// The base of every path of a folder.
    pub fn bases(&self, folder: &FolderId) -> JournalResult<BTreeMap<String, Base>> {
        let _ = folder;
        todo!()
    }

    /// Records (or replaces) the base of one path.
    pub fn put_base(&self, folder: &FolderId, path: &str, base: &Base) -> JournalResult<()> {
        let _ = (folder, path, base);
        todo!()
    }

    /// Drops the base of `path` and of everything below it.
    pub fn forget_tree(&self, folder: &FolderId, path: &str) -> JournalResult<()> {
        let _ = (folder, path);
        todo!()
    }

    /// Moves the base of `from` and everything below it to `to`.
    pub fn move_tree(&self, folder: &FolderId, from: &str, to: &str) -> JournalResult<()> {
        let _ = (folder, from, to);
        todo!()
    }
}
