//! A profile's default sync folders: declared in the config file, made active (or registered in
//! the account, inactive) by the profile's daemon on its first start on a computer.
//!
//! ```toml
//! [[profiles.work.default_folders]]
//! name = "CloudMe"                 # the folder's name in the account (`sync activate NAME`)
//! remote = "Documents/CloudMe"     # below the profile's URL
//! local = "~/Documents/CloudMe"    # absolute, `~/…`, or `xdg:PICTURES` (the user's folder)
//! active = true                    # default true: synced here from the first start
//!
//! [[profiles.work.default_folders]]
//! name = "Pictures"
//! remote = "Documents/Pictures"
//! local = "xdg:PICTURES"
//! mode = "upload-only"             # default bidirectional
//! schedule = "weekly"              # default immediate
//! active = false                   # registered in the account only, for `sync activate`
//! ```
//!
//! `xdg:NAME` (DESKTOP, DOCUMENTS, DOWNLOAD, MUSIC, PICTURES, PUBLICSHARE, TEMPLATES, VIDEOS)
//! is the user's folder of that kind: the `XDG_NAME_DIR` environment variable when it holds an
//! absolute path, else its line in `$XDG_CONFIG_HOME/user-dirs.dirs`, else `~/Pictures` etc.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Dirs;
use crate::sync::folder::{Mode, Schedule};
use crate::sync::store::remote_within;

/// A default sync folder as written in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefaultFolderEntry {
    pub name: String,
    pub remote: String,
    pub local: String,
    pub mode: Option<String>,
    pub schedule: Option<String>,
    pub active: Option<bool>,
}

/// A default sync folder, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultFolder {
    /// Its name in the account's registry.
    pub name: String,
    /// Server path below the profile's URL, normalised (no leading or trailing `/`).
    pub remote: String,
    /// Absolute local folder (where it is synced when active, or activated by default).
    pub local: PathBuf,
    pub mode: Mode,
    pub schedule: Schedule,
    /// Synced here from the first start; else only registered in the account.
    pub active: bool,
}

/// The kinds of `xdg:` folders and their defaults below the home directory.
const XDG_KINDS: &[(&str, &str)] = &[
    ("DESKTOP", "Desktop"),
    ("DOCUMENTS", "Documents"),
    ("DOWNLOAD", "Downloads"),
    ("MUSIC", "Music"),
    ("PICTURES", "Pictures"),
    ("PUBLICSHARE", "Public"),
    ("TEMPLATES", "Templates"),
    ("VIDEOS", "Videos"),
];

/// The user's folder of `kind` (`PICTURES`, any case): `XDG_<KIND>_DIR` from `var` when
/// absolute, else its line in `user_dirs` (the text of `user-dirs.dirs`), else the default
/// below the home directory.
pub fn xdg_user_dir(
    kind: &str,
    home: &Path,
    var: &dyn Fn(&str) -> Option<String>,
    user_dirs: Option<&str>,
) -> Result<PathBuf, String> {
    let kind = kind.to_ascii_uppercase();
    let Some((_, default)) = XDG_KINDS.iter().find(|(k, _)| *k == kind) else {
        return Err(format!(
            "unknown xdg folder {kind:?}: use one of {}",
            XDG_KINDS
                .iter()
                .map(|(k, _)| format!("xdg:{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let key = format!("XDG_{kind}_DIR");
    if let Some(v) = var(&key).filter(|v| Path::new(v).is_absolute()) {
        return Ok(PathBuf::from(v));
    }
    if let Some(v) = user_dirs.and_then(|text| user_dirs_value(text, &key, home)) {
        return Ok(v);
    }
    Ok(home.join(default))
}

/// The value of `key` in a `user-dirs.dirs` text (`KEY="$HOME/Pictures"` or an absolute
/// path); the last line wins, as when the shell sources it. `$HOME` alone is refused (the
/// spec's way of saying the folder is disabled).
fn user_dirs_value(text: &str, key: &str, home: &Path) -> Option<PathBuf> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim().trim_matches('"');
        let path = if let Some(rest) = v.strip_prefix("$HOME") {
            let rest = rest.trim_start_matches('/');
            if rest.is_empty() {
                None
            } else {
                Some(home.join(rest))
            }
        } else if Path::new(v).is_absolute() {
            Some(PathBuf::from(v))
        } else {
            None
        };
        if path.is_some() {
            found = path;
        }
    }
    found
}

/// Reads `user-dirs.dirs` of the user's config directory (`$XDG_CONFIG_HOME`, the parent of
/// cloudmount's); `None` when there is none.
pub fn read_user_dirs(dirs: &Dirs) -> Option<String> {
    let base = dirs.config.parent()?;
    std::fs::read_to_string(base.join("user-dirs.dirs")).ok()
}

/// Resolves a profile's default folders; a one-line reason for the first bad one.
pub fn resolve_defaults(
    entries: &[DefaultFolderEntry],
    dirs: &Dirs,
    var: &dyn Fn(&str) -> Option<String>,
    user_dirs: Option<&str>,
) -> Result<Vec<DefaultFolder>, String> {
    let mut out: Vec<DefaultFolder> = Vec::new();
    let mut names = HashSet::new();
    for e in entries {
        let what = format!("default folder {:?}", e.name);
        crate::remote::path::check_name(&e.name).map_err(|why| format!("{what}: name: {why}"))?;
        if !names.insert(e.name.to_lowercase()) {
            return Err(format!("two default folders are named {:?}", e.name));
        }
        let remote = crate::sync::store::normalise_remote(&e.remote)
            .map_err(|why| format!("{what}: remote: {why}"))?;
        if remote.is_empty() {
            return Err(format!(
                "{what}: remote is the server's root folder: give a folder below the profile's URL"
            ));
        }
        crate::remote::RemotePath::new(&remote).map_err(|why| format!("{what}: remote: {why}"))?;
        let local = resolve_local(&e.local, dirs, var, user_dirs)
            .map_err(|why| format!("{what}: local: {why}"))?;
        let mode = match &e.mode {
            None => Mode::default(),
            // Default folders are the drive's: new-files-only is for followed folders.
            Some(m) => Mode::parse(m).filter(|m| *m != Mode::NewFilesOnly).ok_or_else(|| {
                format!("{what}: mode {m:?}: use \"bidirectional\", \"upload-only\" or \"download-only\"")
            })?,
        };
        let schedule = match &e.schedule {
            None => Schedule::default(),
            Some(s) => Schedule::parse(s).ok_or_else(|| {
                format!("{what}: schedule {s:?}: use \"immediate\", \"daily\" or \"weekly\"")
            })?,
        };
        for o in &out {
            if remote_within(&remote, &o.remote) || remote_within(&o.remote, &remote) {
                return Err(format!(
                    "default folders {:?} and {:?}: server folders {} and {} overlap",
                    o.name, e.name, o.remote, remote
                ));
            }
        }
        out.push(DefaultFolder {
            name: e.name.clone(),
            remote,
            local,
            mode,
            schedule,
            active: e.active.unwrap_or(true),
        });
    }
    let active: Vec<&DefaultFolder> = out.iter().filter(|d| d.active).collect();
    for (i, a) in active.iter().enumerate() {
        for b in &active[i + 1..] {
            if a.local.starts_with(&b.local) || b.local.starts_with(&a.local) {
                return Err(format!(
                    "active default folders {:?} and {:?}: local folders {} and {} overlap",
                    a.name,
                    b.name,
                    a.local.display(),
                    b.local.display()
                ));
            }
        }
    }
    Ok(out)
}

/// `~`, `~/…`, an absolute path or `xdg:KIND`, as an absolute path without `.` or `..`.
fn resolve_local(
    local: &str,
    dirs: &Dirs,
    var: &dyn Fn(&str) -> Option<String>,
    user_dirs: Option<&str>,
) -> Result<PathBuf, String> {
    let path = if let Some(kind) = local.strip_prefix("xdg:") {
        xdg_user_dir(kind, &dirs.home, var, user_dirs)?
    } else {
        let p = dirs.expand(Path::new(local));
        if !p.is_absolute() {
            return Err(format!(
                "{local:?} is not absolute: give /path, ~/path or xdg:PICTURES (MUSIC, VIDEOS, \
                 DOCUMENTS, …)"
            ));
        }
        p
    };
    crate::sync::store::normalise_local(&path)
}
