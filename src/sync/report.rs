//! What `sync list` and `sync conflicts` show: the state of each folder as the daemon answers
//! it, and its one-screen human form.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::folder::{Mode, Schedule};
use super::journal::Problem;
use crate::size::FormatSize;

/// Where a folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderState {
    /// Not synced yet since the daemon started.
    Starting,
    UpToDate,
    Syncing,
    Paused,
    /// A scheduled folder waiting for its next run.
    Waiting,
    /// The server does not answer; retried.
    Offline,
    /// A safety rule stopped it (too many deletes, the folder missing): see `reason`.
    Stopped,
    /// The last run failed: see `reason`.
    Error,
    /// The account is out of space on the server: uploads wait (downloads go on) until space
    /// is freed; see `reason`.
    NoSpace,
}

impl FolderState {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderState::Starting => "starting",
            FolderState::UpToDate => "up to date",
            FolderState::Syncing => "syncing",
            FolderState::Paused => "paused",
            FolderState::Waiting => "waiting",
            FolderState::Offline => "offline",
            FolderState::Stopped => "stopped",
            FolderState::Error => "error",
            FolderState::NoSpace => "uploads paused",
        }
    }
}

/// One folder, as `sync list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderReport {
    pub id: String,
    pub local: PathBuf,
    pub remote: String,
    /// The profile's area (empty: the main one).
    #[serde(default)]
    pub area: String,
    pub mode: Mode,
    /// Why the folder has its mode when cloudmount chose it (empty: the user did).
    #[serde(default)]
    pub mode_reason: String,
    pub schedule: Schedule,
    pub keep_deleted: bool,
    pub delete_limit_percent: u8,
    pub state: FolderState,
    /// Why it is stopped, offline or failed; what the run found, when it matters.
    pub reason: Option<String>,
    /// Next scheduled run (seconds since the epoch), for scheduled folders.
    pub next_run: Option<i64>,
    /// When the last sync ended, and how.
    pub last_sync: Option<i64>,
    pub last_outcome: Option<String>,
    /// How many syncs ended since the daemon started (`sync now --wait` waits for it to grow).
    pub runs: u64,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Files that could not be synced, with the reason.
    pub problems: Vec<Problem>,
    pub conflicts: usize,
}

/// A top-level folder of a followed or shared area (`sync list --following`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedFolder {
    /// The area's name.
    pub area: String,
    /// The folder's path below the area (its name).
    pub remote: String,
    /// The area is read-only: its folders sync download-only.
    pub read_only: bool,
    /// The sync folders of this computer at or below it.
    pub synced: Vec<SyncedHere>,
}

/// A sync folder of this computer in a followed or shared area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedHere {
    /// Its server path below the area.
    pub remote: String,
    pub local: PathBuf,
}

/// The text of `sync list --following`.
pub fn format_following(folders: &[FollowedFolder]) -> String {
    let mut out = String::new();
    if folders.is_empty() {
        out.push_str(
            "No followed or shared folders (the profile has no other area, or they are empty).\n",
        );
    }
    for f in folders {
        let how = if f.read_only {
            "read-only, syncs download-only"
        } else {
            "writable, syncs both ways"
        };
        let _ = writeln!(out, "{}/{}   {how}", f.area, f.remote);
        if f.synced.is_empty() {
            let _ = writeln!(
                out,
                "  not synced here (cloudmount sync add DIR --area '{}' --remote '{}')",
                f.area, f.remote
            );
        }
        for s in &f.synced {
            let _ = writeln!(out, "  {} synced here at {}", s.remote, s.local.display());
        }
    }
    out
}

/// A conflict kept as two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub folder: PathBuf,
    /// The file that kept the name (the server's version), absolute on the local side.
    pub path: String,
    /// The other version.
    pub copy: String,
    pub at: i64,
}

/// The account's sync folders, as `sync list` shows them beside this computer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReport {
    /// This computer's id and host name.
    pub computer: String,
    pub host: String,
    /// How this computer (this profile of it) is shown to people: `user@host`, told apart from
    /// the registry's other computers (see `registry::names`).
    #[serde(default)]
    pub shown: String,
    pub folders: Vec<RegisteredFolder>,
    /// Changes of this computer that wait for the server (retried).
    pub pending: usize,
    /// When the registry was last read (seconds since the epoch); `None`: never.
    pub read_at: Option<i64>,
    /// Why it could not be read or written last time.
    pub error: Option<String>,
}

/// A sync folder of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredFolder {
    pub id: String,
    pub name: String,
    pub remote: String,
    pub mode: Mode,
    pub schedule: Schedule,
    /// Who added it, as shown (like [`ActiveOn::shown`]).
    pub added_by: String,
    pub added_at: i64,
    /// Whether it is active on this computer.
    pub active_here: bool,
    pub active: Vec<ActiveOn>,
}

/// A computer where a folder is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveOn {
    pub computer: String,
    /// The profile there; `None`: recorded before profiles were told apart.
    #[serde(default)]
    pub profile: Option<String>,
    pub host: String,
    /// How it is shown to people: `user@host`, with a short id or the profile when the
    /// registry has others that would look the same.
    #[serde(default)]
    pub shown: String,
    pub local: PathBuf,
    pub since: i64,
}

impl ActiveOn {
    /// How it is shown (its host, from a daemon that did not say).
    pub fn name(&self) -> &str {
        if self.shown.is_empty() {
            &self.host
        } else {
            &self.shown
        }
    }
}

/// "5 minutes ago", "2 days ago".
pub fn ago(secs: i64) -> String {
    let s = secs.max(0);
    let (n, unit) = match s {
        0..=59 => return "just now".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The account's folders that are not active here, for `sync list`; and what waits for the
/// server.
pub fn inactive(a: &AccountReport, now: i64) -> String {
    let mut out = String::new();
    let others: Vec<&RegisteredFolder> = a.folders.iter().filter(|f| !f.active_here).collect();
    if !others.is_empty() {
        let _ =
            writeln!(
            out,
            "Inactive on this computer ({}; start one with: cloudmount sync activate NAME [DIR])",
            if a.shown.is_empty() { &a.host } else { &a.shown }
        );
        for f in others {
            let _ = writeln!(out, "{}", f.name);
            let _ = writeln!(out, "  server:    {}", f.remote);
            let _ = writeln!(
                out,
                "  mode:      {}, {}",
                f.mode.as_str(),
                f.schedule.as_str()
            );
            let _ = writeln!(
                out,
                "  state:     inactive (added on {}, {})",
                f.added_by,
                ago(now - f.added_at)
            );
            if f.active.is_empty() {
                let _ = writeln!(out, "  active on: no computer");
            }
            for on in &f.active {
                let _ = writeln!(
                    out,
                    "  active on: {} at {}, since {}",
                    on.name(),
                    on.local.display(),
                    local_time(on.since)
                );
            }
        }
    }
    if a.pending > 0 {
        let _ = writeln!(
            out,
            "{} change{} to the account's list of sync folders wait{} for the server; retried until written{}",
            a.pending,
            if a.pending == 1 { "" } else { "s" },
            if a.pending == 1 { "s" } else { "" },
            a.error.as_deref().map(|e| format!(" (last try: {e})")).unwrap_or_default()
        );
    } else if let Some(e) = &a.error {
        let _ = writeln!(
            out,
            "The account's list of sync folders could not be read now ({e}); {}",
            a.read_at
                .map(|t| format!("shown as last read, {}", ago(now - t)))
                .unwrap_or_else(|| "it has never been read here".into())
        );
    }
    out
}

/// Local date and time, `YYYY-MM-DD HH:MM`.
pub fn local_time(secs: i64) -> String {
    let tm = crate::localtime::local_or_utc(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// The state column: "syncing 3 of 10 files, 2 MiB left", "waiting until 2026-12-07 03:00".
pub fn state_line(f: &FolderReport) -> String {
    let mut s = f.state.as_str().to_string();
    match f.state {
        FolderState::Syncing if f.files_total > 0 => {
            let _ = write!(
                s,
                " {} of {} files, {} left",
                f.files_done,
                f.files_total,
                FormatSize(f.bytes_total.saturating_sub(f.bytes_done))
            );
        }
        FolderState::Waiting => {
            if let Some(n) = f.next_run {
                let _ = write!(s, " until {}", local_time(n));
            }
        }
        _ => {}
    }
    if let Some(r) = &f.reason {
        let _ = write!(s, ": {r}");
    }
    s
}

/// `sync list` for people.
pub fn list(folders: &[FolderReport]) -> String {
    if folders.is_empty() {
        return "No sync folders. Add one with: cloudmount sync add DIR\n".into();
    }
    let mut out = String::new();
    for f in folders {
        let _ = writeln!(out, "{}", f.local.display());
        if f.area.is_empty() {
            let _ = writeln!(out, "  server:    {}", f.remote);
        } else {
            let _ = writeln!(out, "  server:    {} (area {})", f.remote, f.area);
        }
        let mut mode = format!("{}, {}", f.mode.as_str(), f.schedule.as_str());
        if f.keep_deleted {
            mode.push_str(", keeps deleted files on the server");
        }
        let _ = writeln!(out, "  mode:      {mode}");
        if !f.mode_reason.is_empty() {
            let _ = writeln!(out, "             ({})", f.mode_reason);
        }
        let _ = writeln!(out, "  state:     {}", state_line(f));
        match (f.last_sync, &f.last_outcome) {
            (Some(at), Some(o)) => {
                let _ = writeln!(out, "  last sync: {} ({o})", local_time(at));
            }
            _ => {
                let _ = writeln!(out, "  last sync: never");
            }
        }
        if f.conflicts > 0 {
            let _ = writeln!(
                out,
                "  conflicts: {} (cloudmount sync conflicts)",
                f.conflicts
            );
        }
        if !f.problems.is_empty() {
            let _ = writeln!(
                out,
                "  not synced: {}",
                crate::control::report::files(f.problems.len() as u64)
            );
            for p in f.problems.iter().take(5) {
                let _ = writeln!(out, "    {}: {}", p.path, p.reason);
            }
            if f.problems.len() > 5 {
                let _ = writeln!(
                    out,
                    "    … and {} more (--json lists all)",
                    f.problems.len() - 5
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> FolderReport {
        FolderReport {
            id: "ab".into(),
            local: "/home/u/Music".into(),
            remote: "CloudDrive/Documents/Music".into(),
            area: String::new(),
            mode: Mode::UploadOnly,
            mode_reason: String::new(),
            schedule: Schedule::Weekly,
            keep_deleted: true,
            delete_limit_percent: 50,
            state: FolderState::Syncing,
            reason: None,
            next_run: None,
            last_sync: None,
            last_outcome: None,
            runs: 0,
            files_total: 10,
            files_done: 3,
            bytes_total: 3 << 20,
            bytes_done: 1 << 20,
            problems: vec![Problem {
                path: "a|b".into(),
                reason: "the server refused the name".into(),
                attempts: 2,
            }],
            conflicts: 1,
        }
    }

    #[test]
    fn the_list_says_mode_progress_conflicts_and_problems() {
        let s = list(&[folder()]);
        assert!(s.contains("/home/u/Music"), "{s}");
        assert!(s.contains("upload-only, weekly, keeps deleted"), "{s}");
        assert!(s.contains("syncing 3 of 10 files, 2 MiB left"), "{s}");
        assert!(s.contains("last sync: never"), "{s}");
        assert!(s.contains("conflicts: 1"), "{s}");
        assert!(s.contains("a|b: the server refused the name"), "{s}");
        assert!(list(&[]).contains("cloudmount sync add"));
    }

    #[test]
    fn the_list_says_why_cloudmount_chose_a_mode() {
        let mut f = folder();
        f.mode = Mode::NewFilesOnly;
        f.keep_deleted = false;
        f.mode_reason = "the server refused a change but took new files".into();
        let s = list(&[f]);
        assert!(
            s.contains(
                "  mode:      new-files-only, weekly\n             (the server refused a change \
                 but took new files)\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn inactive_folders_say_where_and_when_they_were_added() {
        let mut a = AccountReport {
            computer: "c".into(),
            host: "vm".into(),
            shown: "cmuser@vm #c0de (profile home)".into(),
            folders: vec![RegisteredFolder {
                id: "f".into(),
                name: "Projects".into(),
                remote: "Docs/Projects".into(),
                mode: Mode::Bidirectional,
                schedule: Schedule::Immediate,
                added_by: "cmuser@vm #c0de (profile work)".into(),
                added_at: 1000,
                active_here: false,
                active: vec![
                    ActiveOn {
                        computer: "c0de".into(),
                        profile: Some("work".into()),
                        host: "vm".into(),
                        shown: "cmuser@vm #c0de (profile work)".into(),
                        local: "/home/u/Projects".into(),
                        since: 1000,
                    },
                    ActiveOn {
                        computer: "l".into(),
                        profile: None,
                        host: "laptop".into(),
                        shown: String::new(),
                        local: "/home/l/P".into(),
                        since: 1000,
                    },
                ],
            }],
            pending: 0,
            read_at: Some(1000),
            error: None,
        };
        let s = inactive(&a, 1000 + 2 * 86_400 + 5);
        assert!(s.contains("Projects"), "{s}");
        assert!(
            s.contains("Inactive on this computer (cmuser@vm #c0de (profile home); "),
            "{s}"
        );
        assert!(
            s.contains("inactive (added on cmuser@vm #c0de (profile work), 2 days ago)"),
            "{s}"
        );
        assert!(
            s.contains("active on: cmuser@vm #c0de (profile work) at /home/u/Projects"),
            "{s}"
        );
        assert!(s.contains("active on: laptop at /home/l/P"), "{s}");
        a.folders[0].active_here = true;
        a.pending = 2;
        a.error = Some("offline".into());
        let s = inactive(&a, 2000);
        assert!(!s.contains("Projects"), "{s}");
        assert!(
            s.contains("2 changes to the account's list of sync folders wait for the server"),
            "{s}"
        );
        a.pending = 0;
        let s = inactive(&a, 1000 + 7200);
        assert!(
            s.contains("could not be read now (offline); shown as last read, 2 hours ago"),
            "{s}"
        );
        assert_eq!(ago(59), "just now");
        assert_eq!(ago(3600), "1 hour ago");
    }

    #[test]
    fn the_following_list_says_how_each_syncs_and_where() {
        let f = vec![
            FollowedFolder {
                area: "Following".into(),
                remote: "Bob".into(),
                read_only: true,
                synced: vec![SyncedHere {
                    remote: "Bob/Photos".into(),
                    local: "/home/u/Bob".into(),
                }],
            },
            FollowedFolder {
                area: "Shared".into(),
                remote: "Team".into(),
                read_only: false,
                synced: vec![],
            },
        ];
        let t = format_following(&f);
        assert!(
            t.contains("Following/Bob   read-only, syncs download-only\n"),
            "{t}"
        );
        assert!(
            t.contains("  Bob/Photos synced here at /home/u/Bob\n"),
            "{t}"
        );
        assert!(
            t.contains("Shared/Team   writable, syncs both ways\n"),
            "{t}"
        );
        assert!(
            t.contains("not synced here (cloudmount sync add DIR --area 'Shared' --remote 'Team')"),
            "{t}"
        );
        assert!(format_following(&[]).starts_with("No followed or shared folders"));
    }
}
