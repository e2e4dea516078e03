//! A sync folder: its stable identity and the settings the user chose for it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The stable identity of a sync folder: 32 hex digits, random, never a position in a list.
/// Another computer of the same account refers to a folder by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FolderId(pub String);

impl FolderId {
    /// A new random id.
    pub fn random() -> std::io::Result<FolderId> {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(FolderId(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which way changes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Changes on either side reach the other, deletes included.
    #[default]
    Bidirectional,
    /// A backup: the server follows the local folder; nothing on the server ever changes the
    /// local folder.
    UploadOnly,
    /// A mirror of a server folder this computer may not change (a read-only followed or
    /// shared folder): nothing is ever sent. A local edit is kept as a local conflict copy and
    /// the server's version comes back under the name; a local delete brings the server's file
    /// back; a local new file stays here only.
    DownloadOnly,
    /// A folder the server lets us add to but not change (CloudMe's WebShare+, a drop box):
    /// only new names are ever sent. A new local file or folder is uploaded; a local edit of
    /// a file the server has is kept as a conflict copy (a new file: uploaded, so the edit
    /// reaches the server under that name) and the server's version comes back under the
    /// name; a local delete or rename brings the server's file back (a renamed file's new
    /// name is new: uploaded). Server changes come down as in [`Mode::Bidirectional`].
    NewFilesOnly,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bidirectional => "bidirectional",
            Mode::UploadOnly => "upload-only",
            Mode::DownloadOnly => "download-only",
            Mode::NewFilesOnly => "new-files-only",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "bidirectional" | "bi" | "both" => Some(Mode::Bidirectional),
            "upload-only" | "upload" | "backup" => Some(Mode::UploadOnly),
            "download-only" | "download" | "mirror" => Some(Mode::DownloadOnly),
            "new-files-only" | "new-files" | "dropbox" => Some(Mode::NewFilesOnly),
            _ => None,
        }
    }
}

/// When a folder syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// As soon as something changes (inotify on the local side, polling on the server).
    #[default]
    Immediate,
    /// Once a day, at the settings' `schedule.time`.
    Daily,
    /// Once a week, on the settings' `schedule.day` at `schedule.time`.
    Weekly,
}

impl Schedule {
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Immediate => "immediate",
            Schedule::Daily => "daily",
            Schedule::Weekly => "weekly",
        }
    }

    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "immediate" | "now" | "continuous" => Some(Schedule::Immediate),
            "daily" => Some(Schedule::Daily),
            "weekly" => Some(Schedule::Weekly),
            _ => None,
        }
    }
}

/// Share of one side's files a single sync may delete before it pauses for a confirmation.
pub const DEFAULT_DELETE_LIMIT_PERCENT: u8 = 50;

/// One sync folder of this computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSpec {
    pub id: FolderId,
    /// Absolute local path.
    pub local: PathBuf,
    /// Path on the server, below the area's URL (`/`-separated, no leading slash).
    pub remote: String,
    /// The profile's area the folder is in, by its name (stable: never a position in the
    /// list); empty for the profile's main area (its `url`, or its first area).
    #[serde(default)]
    pub area: String,
    pub mode: Mode,
    /// Why the folder has its mode when cloudmount chose it (the server refused a change
    /// there), for `sync list`; empty when the user chose it.
    #[serde(default)]
    pub mode_reason: String,
    pub schedule: Schedule,
    /// Upload-only: a local delete does not delete the server copy.
    pub keep_deleted: bool,
    /// Paused by the user: nothing runs until resumed.
    pub paused: bool,
    /// A sync that would delete more than this share (percent) of one side's files pauses
    /// until confirmed.
    pub delete_limit_percent: u8,
    /// Seconds since the Unix epoch when the folder was added.
    pub added_at: i64,
}

impl FolderSpec {
    /// A new folder of the main area, added now: running, deletes kept in step, the default
    /// delete limit.
    pub fn new(
        id: FolderId,
        local: PathBuf,
        remote: String,
        mode: Mode,
        schedule: Schedule,
    ) -> Self {
        FolderSpec {
            id,
            local,
            remote,
            area: String::new(),
            mode,
            mode_reason: String::new(),
            schedule,
            keep_deleted: false,
            paused: false,
            delete_limit_percent: DEFAULT_DELETE_LIMIT_PERCENT,
            added_at: crate::localtime::unix_now(),
        }
    }
}
