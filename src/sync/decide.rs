//! The three-way decision for one path: a pure function of the base (the last state both sides
//! agreed on), what each side holds now, and the folder's mode. No I/O.
//!
//! The table is `../shared/reference/sync-anchors.md` §8.3 (rows cited in the code); deviations
//! are written down beside the row.
//!
//! Conventions the executor relies on:
//! - [`Action::Upload`] and [`Action::Download`] are only given for files; a directory to create
//!   is [`Action::MkdirRemote`] / [`Action::MkdirLocal`].
//! - A kind change (file ↔ directory) is a change. When it leaves the two sides with different
//!   kinds, a bidirectional folder gets [`Action::Conflict`] (the file-side copy takes the
//!   conflict name, the directory keeps the name: row 14 applied to row 13 too, so the replaced
//!   side is never deleted on a guess), an upload-only folder gets
//!   [`Action::KeepServerCopyThenUpload`] (the server's item moves aside, the local one goes up).
//! - Download-only and new-files-only folders never change what the server has: no
//!   [`Action::DeleteRemote`], [`Action::KeepServerCopyThenUpload`] or upload over a version.
//!   New-files-only sends only what is new there (`Upload { expect: Absent }`,
//!   [`Action::MkdirRemote`]); its [`Action::Conflict`] moves ours aside locally, and that copy,
//!   new, is uploaded by the next pass.
//! - Only a conflict between two files becomes a download over a trashed conflict copy: a
//!   directory is never trashed in place of a conflict (its children have their own decisions).

use super::folder::Mode;
use super::state::{Base, Kind, LocalMeta, RemoteMeta};

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

/// How one side stands against its half of the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No base and nothing there.
    Absent,
    /// No base, something there.
    New,
    /// As the base says.
    Same,
    /// Different from the base (content, or kind).
    Changed,
    /// The base says something was there; nothing is now.
    Deleted,
}

/// How the local side stands against the base's local half.
pub fn local_change(base: Option<&Base>, local: Option<&LocalMeta>) -> Change {
    match (base, local) {
        (None, None) => Change::Absent,
        (None, Some(_)) => Change::New,
        (Some(_), None) => Change::Deleted,
        (Some(b), Some(l)) if l.changed_since(&b.local) => Change::Changed,
        (Some(_), Some(_)) => Change::Same,
    }
}

/// How the server side stands against the base's server half.
pub fn remote_change(base: Option<&Base>, remote: Option<&RemoteMeta>) -> Change {
    match (base, remote) {
        (None, None) => Change::Absent,
        (None, Some(_)) => Change::New,
        (Some(_), None) => Change::Deleted,
        (Some(b), Some(r)) if r.changed_since(&b.remote) => Change::Changed,
        (Some(_), Some(_)) => Change::Same,
    }
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
    let sides = Sides {
        l: local_change(base, local),
        r: remote_change(base, remote),
        base,
        local,
        remote,
    };
    let action = match mode {
        Mode::Bidirectional => sides.bidirectional(),
        Mode::UploadOnly => sides.upload_only(keep_deleted),
        Mode::DownloadOnly => sides.download_only(),
        Mode::NewFilesOnly => sides.new_files_only(),
    };
    let files =
        local.map(|m| m.kind) == Some(Kind::File) && remote.map(|m| m.kind) == Some(Kind::File);
    if action == Action::Conflict && conflict_copy && files {
        // §8.5 "never conflict a conflict": the server's version wins, ours goes to the trash.
        return Action::Download { trash_local: true };
    }
    action
}

/// One path's inputs and how each side stands.
struct Sides<'a> {
    l: Change,
    r: Change,
    base: Option<&'a Base>,
    local: Option<&'a LocalMeta>,
    remote: Option<&'a RemoteMeta>,
}

impl Sides<'_> {
    fn bidirectional(&self) -> Action {
        use Change::*;
        match (self.l, self.r) {
            // Row 1.
            (Same, Same) | (Absent, Absent) => Action::Nothing,
            // Row 2.
            (New, Absent) => self.send(Expect::Absent),
            // Row 3.
            (Absent, New) => self.fetch(),
            // Rows 4 and 15: the executor records equal files; directories merge.
            (New, New) | (Changed, Changed) => self.merge_or(Action::Conflict),
            // Rows 5 and 13.
            (Changed, Same) if self.kinds_equal() => self.send_over(Action::Conflict),
            // Rows 6 and 13.
            (Same, Changed) if self.kinds_equal() => self.fetch(),
            (Changed, Same) | (Same, Changed) => Action::Conflict,
            // Row 8 (directories: the plan checks row 16 first).
            (Deleted, Same) => Action::DeleteRemote,
            // Row 9.
            (Same, Deleted) => Action::TrashLocal,
            // Row 10: modification beats deletion.
            (Deleted, Changed) => self.fetch(),
            // Row 11.
            (Changed, Deleted) => self.send(Expect::Absent),
            // Row 12.
            (Deleted, Deleted) => Action::Forget,
            // A base gives Same/Changed/Deleted on both sides, no base New/Absent.
            _ => Action::Nothing,
        }
    }

    fn upload_only(&self, keep_deleted: bool) -> Action {
        use Change::*;
        match (self.l, self.r) {
            (Same, Same) | (Absent, Absent) => Action::Nothing,
            (New, Absent) => self.send(Expect::Absent),
            // Row 3: left on the server, never downloaded.
            (Absent, New) => Action::Nothing,
            // Rows 4, 6, 7, 14: the server's version moves aside, ours goes up.
            (New, New) | (Same, Changed) | (Changed, Changed) => {
                self.merge_or(Action::KeepServerCopyThenUpload)
            }
            (Changed, Same) if self.kinds_equal() => {
                self.send_over(Action::KeepServerCopyThenUpload)
            }
            (Changed, Same) => Action::KeepServerCopyThenUpload,
            // Rows 9 and 11: put the backup back.
            (Same, Deleted) | (Changed, Deleted) => self.send(Expect::Absent),
            // Row 8: "mirror" unless the folder keeps deleted files.
            (Deleted, Same) if keep_deleted => Action::Forget,
            (Deleted, Same) => Action::DeleteRemote,
            // Row 10: the server's change stays there. Row 12.
            (Deleted, Changed) | (Deleted, Deleted) => Action::Forget,
            _ => Action::Nothing,
        }
    }

    /// The mirror image of upload-only: the local folder follows the server, and nothing is
    /// ever sent (no upload, no server mkdir, move or delete). What exists only here is kept:
    /// a local edit becomes a local conflict copy (the server's version takes the name back),
    /// a local new item stays local (the plan never uploads it; the engine reports it), a local
    /// edit of a file the server deleted stays as a local-only file.
    fn download_only(&self) -> Action {
        use Change::*;
        match (self.l, self.r) {
            (Same, Same) | (Absent, Absent) => Action::Nothing,
            // Row 2: kept here, never uploaded.
            (New, Absent) => Action::Nothing,
            // Rows 3, 6, 10: the server's version comes down; a local delete is undone.
            (Absent, New) | (Deleted, Same) | (Deleted, Changed) => self.fetch(),
            (Same, Changed) if self.kinds_equal() => self.fetch(),
            // Row 13: the server changed the kind; ours moves aside here.
            (Same, Changed) => Action::Conflict,
            // Rows 4, 5, 7, 13, 15: ours moves aside locally, the server's takes the name.
            (New, New) | (Changed, Changed) => self.merge_or(Action::Conflict),
            (Changed, Same)
                if self.kinds_equal() && self.local.map(|l| l.kind) == Some(Kind::Dir) =>
            {
                Action::Nothing
            }
            (Changed, Same) => Action::Conflict,
            // Row 9.
            (Same, Deleted) => Action::TrashLocal,
            // Row 11: the only copy of the edit is here; it stays, untracked (local only).
            (Changed, Deleted) | (Deleted, Deleted) => Action::Forget,
            _ => Action::Nothing,
        }
    }

    /// Between bidirectional and download-only: what is new here goes up as a new file (the
    /// server accepts new names), what the server has is never changed — a local edit moves
    /// aside here as a conflict copy (uploaded by the next pass as the new file it is) and the
    /// server's version takes the name back; a local delete brings the server's item back.
    /// Server changes come down as in bidirectional.
    fn new_files_only(&self) -> Action {
        use Change::*;
        match (self.l, self.r) {
            // Row 2: new here, absent there: a new file (or folder) for the server.
            (New, Absent) => self.send(Expect::Absent),
            // Row 11: the name is free on the server now: the edit goes up as a new file.
            (Changed, Deleted) => self.send(Expect::Absent),
            // Every other row as download-only: the server's items are never changed, a local
            // edit moves aside here (and goes up as a new file at the next pass), a local
            // delete is undone, server changes come down.
            _ => self.download_only(),
        }
    }

    fn kinds_equal(&self) -> bool {
        matches!((self.local, self.remote), (Some(l), Some(r)) if l.kind == r.kind)
    }

    /// Both present: two directories are the same thing (row 15), anything else is `other`.
    fn merge_or(&self, other: Action) -> Action {
        let dirs = matches!((self.local, self.remote), (Some(l), Some(r)) if l.kind == Kind::Dir && r.kind == Kind::Dir);
        if dirs {
            Action::Record
        } else {
            other
        }
    }

    /// The local item goes to the server.
    fn send(&self, expect: Expect) -> Action {
        match self.local.map(|l| l.kind) {
            Some(Kind::Dir) => Action::MkdirRemote,
            _ => Action::Upload { expect },
        }
    }

    /// The server's item comes here.
    fn fetch(&self) -> Action {
        match self.remote.map(|r| r.kind) {
            Some(Kind::Dir) => Action::MkdirLocal,
            _ => Action::Download { trash_local: false },
        }
    }

    /// A local edit over an unchanged server file: only the version the base knows may be
    /// replaced. With no known version there is nothing safe to name (`Absent` would fail, a
    /// blind PUT could overwrite), so it becomes `otherwise`.
    fn send_over(&self, otherwise: Action) -> Action {
        if self.local.map(|l| l.kind) == Some(Kind::Dir) {
            // Same kind on both sides and the server unchanged: a directory has no content.
            return Action::Nothing;
        }
        let known = self.base.and_then(|b| b.remote.etag.clone());
        let current = self.remote.and_then(|r| r.etag.clone());
        match known.or(current) {
            Some(etag) => Action::Upload {
                expect: Expect::Version(etag),
            },
            None => otherwise,
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_download_tests.rs"]
mod download_tests;

#[cfg(test)]
#[path = "decide_newfiles_tests.rs"]
mod newfiles_tests;
