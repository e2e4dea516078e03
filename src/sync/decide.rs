//! The three-way decision for one path: a pure function of the base (the last state both sides
//! agreed on), what each side holds now, and the folder's mode. No I/O.
//!
//! The table is `../shared/reference/sync-anchors.md` §8.3 (rows cited in the code); deviations
//! are written down beside the row.

use super::folder::Mode;
use super::state::{Base, LocalMeta, RemoteMeta};

/// What an upload may overwrite on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Nothing may be there (`If-None-Match: *`).
    Absent,
    /// Only this version (`If-Match`).
    Version(String),
}

/// What to do at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// Both sides hold the same thing already: record the current state of both as the base.
    Record,
    /// Drop the base record (gone on both sides, or no longer tracked).
    Forget,
    /// Send the local file to the server, only if the server holds `expect`.
    Upload { expect: Expect },
    /// Create the directory on the server.
    MkdirRemote,
    /// Replace the local file with the server's version (temporary file + rename). With
    /// `trash_local`, the local file is moved to the trash first (it holds a version that
    /// exists nowhere else).
    Download { trash_local: bool },
    /// Create the directory locally.
    MkdirLocal,
    /// Delete on the server (a directory with what is below it).
    DeleteRemote,
    /// Move the local file or directory to the trash.
    TrashLocal,
    /// Both sides changed (or both are new): if both are files with the same content, record;
    /// otherwise keep both — the server's version keeps the name, ours is renamed to a
    /// conflict copy (and uploaded as a new file by the same sync).
    Conflict,
    /// Upload-only: the server holds a version the local folder does not: move it aside on the
    /// server to a conflict copy name (nothing lost), then upload ours under the name. Equal
    /// contents are recorded instead.
    KeepServerCopyThenUpload,
}

/// Decides one path. `conflict_copy` says the path's name is already a conflict copy (a copy
/// is never conflicted again: the server's version wins and ours goes to the trash).
pub fn decide(
    mode: Mode,
    keep_deleted: bool,
    conflict_copy: bool,
    base: Option<&Base>,
    local: Option<&LocalMeta>,
    remote: Option<&RemoteMeta>,
) -> Action {
    let _ = (mode, keep_deleted, conflict_copy, base, local, remote);
    todo!("sync::decide")
}
