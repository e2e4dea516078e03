//! What `cloudmount status` shows: a snapshot of the mount's connection, upload queue,
//! problems, conflicts, quota and cache, serialisable as JSON for `--json` and the control
//! socket. Paths are relative to the mount point (`Cloud Drive/notes.txt` when areas are shown
//! as folders).

use serde::{Deserialize, Serialize};

pub use crate::health::Connection;

/// The upload queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Files with local changes not yet on the server.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Uploads running now.
    pub in_flight: u64,
    /// Bytes of the running uploads.
    pub in_flight_bytes: u64,
    /// Of those, the bytes already sent (a large upload shows its progress).
    #[serde(default)]
    pub in_flight_sent: u64,
    /// Set while uploads are paused, with the reason (the server is out of space).
    pub paused: Option<String>,
    /// Files whose last upload attempt could not reach the server; why is said once, in
    /// [`VfsStatus::last_error`], not per file.
    #[serde(default)]
    pub waiting_for_server: u64,
    /// Folder and name changes (mkdir, rmdir, rm, mv) made while the server could not be
    /// reached, waiting to be sent to it; the uploads of their area wait for them.
    #[serde(default)]
    pub namespace_ops: u64,
}

/// What the replay of a change made offline had to decide so that nothing was lost (a file
/// changed on the server was not deleted, a folder with new content was not removed, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub path: String,
    pub what: String,
    /// When, seconds since the Unix epoch.
    pub at: i64,
}

/// A file whose last upload failed; it stays queued and is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProblem {
    pub path: String,
    pub reason: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Both versions were kept: the server's under `path`, ours under `copy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub path: String,
    pub copy: String,
    /// When it was found, seconds since the Unix epoch.
    pub at: i64,
}

/// Space on the server, when it says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    pub used: Option<u64>,
    pub available: Option<u64>,
}

/// The local block cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatus {
    pub used_bytes: u64,
    pub budget_bytes: u64,
    /// Bytes of changed files kept locally until uploaded (outside the budget).
    pub dirty_bytes: u64,
    /// Bytes of `used_bytes` kept by pins (outside the budget).
    #[serde(default)]
    pub pinned_bytes: u64,
}

/// Where the keeper of a pinned tree is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinPhase {
    /// Listing the tree (the first round, or a check of the server).
    #[default]
    Listing,
    /// Downloading what is missing.
    Downloading,
    /// Everything is on this device, as of `checked_at`.
    Complete,
    /// The server does not answer: resumes when it does (the reason in `error`).
    Waiting,
    /// The last round failed (the reason in `error`); retried at the next check.
    Error,
}

impl PinPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PinPhase::Listing => "listing",
            PinPhase::Downloading => "downloading",
            PinPhase::Complete => "complete",
            PinPhase::Waiting => "waiting",
            PinPhase::Error => "error",
        }
    }
}

/// A pinned file or folder ("keep on this device") and how complete it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// The path below the mount point.
    pub path: String,
    pub state: PinPhase,
    /// Files the pin keeps, and how many of them are complete in this round.
    pub files: u64,
    pub files_done: u64,
    /// Their size, and how much of it is on this device.
    pub bytes: u64,
    pub bytes_done: u64,
    pub error: Option<String>,
    /// When the tree was last found complete, seconds since the Unix epoch.
    pub checked_at: Option<i64>,
    /// The keeper's round that last found it complete (see `PinAnswer::round`).
    #[serde(default)]
    pub round: u64,
}

/// Files kept aside because they were being written when cloudmount stopped unexpectedly and
/// were never closed (so never queued): never deleted, the user decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAside {
    /// The folder holding them.
    pub dir: String,
    pub files: u64,
}

/// Files queued for upload in an area that is not part of this mount (taken out of the
/// profile, or the cache mounted with another URL): kept, never sent elsewhere, uploaded when
/// that area is mounted on this cache again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherArea {
    /// The area's URL (unknown for an area removed before cloudmount kept them).
    pub url: Option<String>,
    /// Its folder name when it was last mounted.
    pub name: Option<String>,
    pub files: u64,
    pub bytes: u64,
}

/// Everything `cloudmount status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfsStatus {
    pub connection: Connection,
    /// The last error that made the mount offline.
    pub last_error: Option<String>,
    pub queue: QueueStatus,
    pub errors: Vec<FileProblem>,
    pub conflicts: Vec<ConflictInfo>,
    pub quota: Option<QuotaStatus>,
    pub cache: CacheStatus,
    /// Never-closed files found after a crash (see [`KeptAside`]); `None` when there are none.
    #[serde(default)]
    pub kept_aside: Option<KeptAside>,
    /// Queued files of areas this mount does not show (see [`OtherArea`]).
    #[serde(default)]
    pub other_areas: Vec<OtherArea>,
    /// The pinned files and folders, with their progress.
    #[serde(default)]
    pub pins: Vec<PinStatus>,
    /// The daemon's bandwidth limits in bytes per second (0: none), filled in by the daemon.
    #[serde(default)]
    pub bandwidth: crate::remote::throttle::Limits,
    /// Decisions of the replay of changes made offline (see [`Notice`]).
    #[serde(default)]
    pub notices: Vec<Notice>,
}
