//! The sync folders of a profile and the settings, in the journal's file.
//!
//! Folders never overlap: a local folder is not inside another sync folder nor contains one,
//! and a server folder is synced with at most one local folder (nor is it inside, or does it
//! contain, another synced server folder) — two syncs of one tree would fight over it.
//! Paths are stored normalised: the local one absolute, without `.`, `..`, repeated or trailing
//! separators; the server one `/`-separated without leading or trailing `/` (`""` for the
//! account's root).

use std::path::{Component, Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::folder::{FolderId, FolderSpec, Mode, Schedule};
use super::journal::{Journal, JournalError, JournalResult};
use super::schedule::Weekday;

/// The settings a profile's sync folders share, with their defaults.
pub const SETTING_KEYS: &[&str] = &["schedule.time", "schedule.day"];

/// The settings, typed, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    schedule_time: (u8, u8),
    schedule_day: Weekday,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            schedule_time: (3, 0),
            schedule_day: Weekday::Sun,
        }
    }
}

impl Settings {
    /// When daily and weekly folders run (hour, minute; local time). Default 03:00.
    pub fn schedule_time(&self) -> (u8, u8) {
        self.schedule_time
    }

    /// The day weekly folders run. Default Sunday.
    pub fn schedule_day(&self) -> Weekday {
        self.schedule_day
    }

    /// Every setting with its value, in [`SETTING_KEYS`] order (for `sync settings`).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("schedule.time", format_time(self.schedule_time)),
            ("schedule.day", self.schedule_day.to_string()),
        ]
    }
}

/// `HH:MM` (or `H:MM`), 24-hour: hour 0–23, minute 00–59.
pub fn parse_time(s: &str) -> Result<(u8, u8), String> {
    let bad = || format!("invalid time {s:?}: expected HH:MM, 24-hour (e.g. 03:00)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let digits = |x: &str, max_len| {
        (!x.is_empty() && x.len() <= max_len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse::<u8>().ok())
            .flatten()
    };
    let h = digits(h, 2).filter(|h| *h < 24).ok_or_else(bad)?;
    let m = digits(m, 2)
        .filter(|v| *v < 60 && m.len() == 2)
        .ok_or_else(bad)?;
    Ok((h, m))
}

/// `HH:MM`.
pub fn format_time((h, m): (u8, u8)) -> String {
    format!("{h:02}:{m:02}")
}

/// A day of the week: `mon` or `monday` (any case).
pub fn parse_weekday(s: &str) -> Result<Weekday, String> {
    Weekday::parse(s).ok_or_else(|| {
        format!("invalid day {s:?}: expected a day of the week (monday … sunday, or mon … sun)")
    })
}

/// Checks a setting and gives its stored form.
fn normalise_setting(key: &str, value: &str) -> Result<String, String> {
    match key {
        "schedule.time" => parse_time(value).map(format_time),
        "schedule.day" => parse_weekday(value).map(|d| d.as_str().to_string()),
        _ => Err(format!(
            "unknown setting {key:?}; known settings: {}",
            SETTING_KEYS.join(", ")
        )),
    }
}

/// An absolute local path without `.`, `..`, repeated or trailing separators.
pub fn normalise_local(p: &Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                return Err(format!("{} contains `..`", p.display()));
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A server path `/`-separated, without leading, trailing or repeated `/`.
pub fn normalise_remote(p: &str) -> Result<String, String> {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == "." || *s == "..") {
        return Err(format!("server path {p:?} contains `.` or `..`"));
    }
    Ok(parts.join("/"))
}

/// Whether server path `a` is `b` or inside it (both normalised).
pub(crate) fn remote_within(a: &str, b: &str) -> bool {
    b.is_empty() || a == b || a.starts_with(&format!("{b}/"))
}

fn show_remote(r: &str) -> String {
    if r.is_empty() {
        "the server's root folder".to_string()
    } else {
        format!("server folder {r}")
    }
}

impl Journal {
    /// Every sync folder of the profile, by local path.
    pub fn folders(&self) -> JournalResult<Vec<FolderSpec>> {
        let rows: Vec<RawFolder> = self
            .conn
            .prepare_cached(&format!("{SELECT_FOLDER} ORDER BY local"))
            .and_then(|mut st| st.query_map([], RawFolder::read)?.collect())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| r.check().map_err(|reason| self.damaged(reason)))
            .collect()
    }

    /// The sync folder with this id.
    pub fn folder(&self, id: &FolderId) -> JournalResult<Option<FolderSpec>> {
        self.folder_where("id = ?1", id.as_str())
    }

    /// The sync folder at exactly this local path (normalised first: `/a//b/` finds `/a/b`).
    /// A path inside a sync folder is not one.
    pub fn find_folder(&self, local: &Path) -> JournalResult<Option<FolderSpec>> {
        let Some(local) = normalise_local(local)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
        else {
            return Ok(None);
        };
        self.folder_where("local = ?1", &local)
    }

    fn folder_where(&self, cond: &str, value: &str) -> JournalResult<Option<FolderSpec>> {
        let row = self
            .conn
            .prepare_cached(&format!("{SELECT_FOLDER} WHERE {cond}"))
            .and_then(|mut st| st.query_row(params![value], RawFolder::read).optional())
            .map_err(|e| self.err(e))?;
        row.map(|r| r.check().map_err(|reason| self.damaged(reason)))
            .transpose()
    }

    /// Adds a sync folder (its paths normalised). Refused ([`JournalError::Refused`]) when the
    /// id is taken, the local folder is, is inside or contains another sync folder, or the
    /// server folder is already synced (or is inside, or contains, a synced one).
    pub fn add_folder(&self, spec: &FolderSpec) -> JournalResult<()> {
        let tx = self.write_tx()?;
        if self.folder(&spec.id)?.is_some() {
            return Err(JournalError::Refused(format!(
                "a sync folder with id {} already exists",
                spec.id
            )));
        }
        let (local, remote) = self.check_folder(spec)?;
        tx.prepare_cached(
            "INSERT INTO folders (id, local, remote, mode, schedule, keep_deleted, paused,
                                  delete_limit, added_at, area, mode_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut st| {
            st.execute(params![
                spec.id.as_str(),
                local,
                remote,
                spec.mode.as_str(),
                spec.schedule.as_str(),
                spec.keep_deleted,
                spec.paused,
                spec.delete_limit_percent,
                spec.added_at,
                spec.area,
                spec.mode_reason,
            ])
        })
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Replaces the settings of an existing sync folder (same checks as [`Journal::add_folder`];
    /// `added_at` is kept as stored).
    pub fn update_folder(&self, spec: &FolderSpec) -> JournalResult<()> {
        let tx = self.write_tx()?;
        if self.folder(&spec.id)?.is_none() {
            return Err(JournalError::Refused(format!(
                "no sync folder with id {}",
                spec.id
            )));
        }
        let (local, remote) = self.check_folder(spec)?;
        tx.prepare_cached(
            "UPDATE folders SET local = ?2, remote = ?3, mode = ?4, schedule = ?5,
                    keep_deleted = ?6, paused = ?7, delete_limit = ?8, area = ?9,
                    mode_reason = ?10
             WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                spec.id.as_str(),
                local,
                remote,
                spec.mode.as_str(),
                spec.schedule.as_str(),
                spec.keep_deleted,
                spec.paused,
                spec.delete_limit_percent,
                spec.area,
                spec.mode_reason,
            ])
        })
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Removes a sync folder and everything recorded for it (bases, conflicts, problems, runs,
    /// schedule). No file is touched, here or on the server. Whether it existed.
    pub fn remove_folder(&self, id: &FolderId) -> JournalResult<bool> {
        let tx = self.write_tx()?;
        let removed: rusqlite::Result<usize> = (|| {
            for table in ["bases", "conflicts", "problems", "runs", "schedule"] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE folder = ?1"))?
                    .execute(params![id.as_str()])?;
            }
            tx.prepare_cached("DELETE FROM folders WHERE id = ?1")?
                .execute(params![id.as_str()])
        })();
        let removed = removed.map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed > 0)
    }

    /// Validates a folder against the others; its normalised (local, remote) paths.
    fn check_folder(&self, spec: &FolderSpec) -> JournalResult<(String, String)> {
        let refuse = JournalError::Refused;
        if spec.id.as_str().is_empty() {
            return Err(refuse("a sync folder's id cannot be empty".to_string()));
        }
        if spec.delete_limit_percent > 100 {
            return Err(refuse(format!(
                "delete limit {}% is over 100%",
                spec.delete_limit_percent
            )));
        }
        let local = normalise_local(&spec.local).map_err(refuse)?;
        let local_str = local
            .to_str()
            .ok_or_else(|| {
                refuse(format!(
                    "{} is not valid UTF-8: it cannot be a sync folder",
                    local.display()
                ))
            })?
            .to_string();
        let remote = normalise_remote(&spec.remote).map_err(refuse)?;
        for other in self.folders()? {
            if other.id == spec.id {
                continue;
            }
            let (mine, theirs) = (local.display(), other.local.display());
            if other.local == local {
                return Err(refuse(format!("{mine} is already a sync folder")));
            }
            if local.starts_with(&other.local) {
                return Err(refuse(format!("{mine} is inside the sync folder {theirs}")));
            }
            if other.local.starts_with(&local) {
                return Err(refuse(format!("{mine} contains the sync folder {theirs}")));
            }
            if other.area != spec.area {
                // Another area is another server folder tree: its paths never overlap ours.
                continue;
            }
            if other.remote == remote {
                return Err(refuse(format!(
                    "{} is already synced with {theirs}",
                    show_remote(&remote)
                )));
            }
            if remote_within(&remote, &other.remote) {
                return Err(refuse(format!(
                    "{} is inside {}, synced with {theirs}",
                    show_remote(&remote),
                    show_remote(&other.remote)
                )));
            }
            if remote_within(&other.remote, &remote) {
                return Err(refuse(format!(
                    "{} contains {}, synced with {theirs}",
                    show_remote(&remote),
                    show_remote(&other.remote)
                )));
            }
        }
        Ok((local_str, remote))
    }

    /// The stored value of a setting (`None`: the default applies). Unknown keys are refused.
    pub fn setting(&self, key: &str) -> JournalResult<Option<String>> {
        if !SETTING_KEYS.contains(&key) {
            return Err(JournalError::Refused(format!(
                "unknown setting {key:?}; known settings: {}",
                SETTING_KEYS.join(", ")
            )));
        }
        self.conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")
            .and_then(|mut st| st.query_row(params![key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Sets a setting after checking its key and value (stored normalised: `3:00` as `03:00`,
    /// `mon` as `monday`). A bad key or value is refused with a one-line message.
    pub fn set_setting(&self, key: &str, value: &str) -> JournalResult<()> {
        let value = normalise_setting(key, value).map_err(JournalError::Refused)?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key, value]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The settings, typed, with defaults for those never set.
    pub fn settings(&self) -> JournalResult<Settings> {
        let mut s = Settings::default();
        if let Some(v) = self.setting("schedule.time")? {
            s.schedule_time = parse_time(&v).map_err(|e| self.damaged(e))?;
        }
        if let Some(v) = self.setting("schedule.day")? {
            s.schedule_day = parse_weekday(&v).map_err(|e| self.damaged(e))?;
        }
        Ok(s)
    }
}

const SELECT_FOLDER: &str = "SELECT id, local, remote, mode, schedule, keep_deleted, paused,
                                    delete_limit, added_at, area, mode_reason
                            FROM folders";

/// A `folders` row as stored, before its values are checked.
struct RawFolder {
    id: String,
    local: String,
    remote: String,
    mode: String,
    schedule: String,
    keep_deleted: bool,
    paused: bool,
    delete_limit: i64,
    added_at: i64,
    area: String,
    mode_reason: String,
}

impl RawFolder {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawFolder> {
        Ok(RawFolder {
            id: r.get(0)?,
            local: r.get(1)?,
            remote: r.get(2)?,
            mode: r.get(3)?,
            schedule: r.get(4)?,
            keep_deleted: r.get(5)?,
            paused: r.get(6)?,
            delete_limit: r.get(7)?,
            added_at: r.get(8)?,
            area: r.get(9)?,
            mode_reason: r.get(10)?,
        })
    }

    fn check(self) -> Result<FolderSpec, String> {
        let id = &self.id;
        Ok(FolderSpec {
            mode: Mode::parse(&self.mode)
                .ok_or_else(|| format!("folder {id}: mode {:?}", self.mode))?,
            schedule: Schedule::parse(&self.schedule)
                .ok_or_else(|| format!("folder {id}: schedule {:?}", self.schedule))?,
            delete_limit_percent: u8::try_from(self.delete_limit)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("folder {id}: delete limit {}", self.delete_limit))?,
            local: PathBuf::from(self.local),
            remote: self.remote,
            keep_deleted: self.keep_deleted,
            paused: self.paused,
            added_at: self.added_at,
            area: self.area,
            mode_reason: self.mode_reason,
            id: FolderId(self.id),
        })
    }
}
