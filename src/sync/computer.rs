//! This computer, as the account's registry of sync folders knows it: a stable random id kept
//! in the user's cloudmount data directory, shown as `user@host`.
//!
//! A computer is one data directory, not one machine: two users, or two `HOME`s, on one
//! machine are two computers; a reinstalled system that keeps the home keeps its id.
//!
//! Each profile of a data directory (two profiles of one account in one `HOME`) is its own
//! participant in the registry: the computer's id and the profile's name (the user's name for
//! it, from the config file — never its position there). How participants are shown, told apart
//! when they would look the same, is [`super::registry::names`].

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file of the data directory that holds the id.
pub const ID_FILE: &str = "computer-id";

/// This computer: its id and its host name (for people; the id is what identifies it), the
/// user whose data directory it is, and the profile a daemon runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computer {
    pub id: String,
    pub host: String,
    /// The user's login name, for people (`user@host`); `None`: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The profile of the config file: with the id, what identifies this participant of the
    /// registry. `None` only for a registry client without profiles (and in records made
    /// before profiles were told apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Why the id could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum ComputerError {
    #[error("cannot read or create this computer's id in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a computer id (32 hex digits); remove it to make a new one")]
    Damaged { path: PathBuf },
}

fn valid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Computer {
    /// The computer of data directory `data` (`$XDG_DATA_HOME/cloudmount`): its id, created on
    /// first use (two processes creating it at once agree on one), and `host`.
    pub fn load_or_create(data: &Path, host: &str) -> Result<Computer, ComputerError> {
        let path = data.join(ID_FILE);
        let io = |source| ComputerError::Io {
            path: path.clone(),
            source,
        };
        let id = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::instance::ensure_private_dir(data).map_err(io)?;
                let id = super::FolderId::random().map_err(io)?.0;
                // Written aside, then linked into place: a link never replaces an id another
                // process made meanwhile, and nobody ever reads a half-written one.
                let tmp = data.join(format!(
                    ".{ID_FILE}.{}",
                    super::FolderId::random().map_err(io)?
                ));
                let made = (|| {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(format!("{id}\n").as_bytes())?;
                    f.sync_all()?;
                    match std::fs::hard_link(&tmp, &path) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                        Err(e) => Err(e),
                    }
                })();
                let _ = std::fs::remove_file(&tmp);
                made.map_err(io)?;
                std::fs::read_to_string(&path)
                    .map_err(io)?
                    .trim()
                    .to_string()
            }
            Err(e) => return Err(io(e)),
        };
        if !valid(&id) {
            return Err(ComputerError::Damaged { path });
        }
        Ok(Computer {
            id,
            host: host.to_string(),
            user: None,
            profile: None,
        })
    }

    /// The same computer, shown with user `user`.
    pub fn with_user(mut self, user: Option<String>) -> Computer {
        self.user = user;
        self
    }

    /// The same computer as profile `profile` runs it: its own participant in the registry.
    pub fn for_profile(mut self, profile: &str) -> Computer {
        self.profile = Some(profile.to_string());
        self
    }
}

/// The login name of the user this process runs as (the passwd entry of its effective uid,
/// else `$USER`), made printable; `None` when there is none.
pub fn user_name() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    passwd_name(uid)
        .or_else(|| std::env::var("USER").ok())
        .map(|n| printable(&n))
        .filter(|n| !n.is_empty())
}

/// At most 64 characters of `s`, without control characters and spaces.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .take(64)
        .collect()
}

fn passwd_name(uid: u32) -> Option<String> {
    let e = crate::config::passwd_entry(uid)?;
    Some(e.name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("cloudmount");
        let a = Computer::load_or_create(&data, "laptop").unwrap();
        assert!(valid(&a.id), "{}", a.id);
        let b = Computer::load_or_create(&data, "laptop").unwrap();
        assert_eq!(a, b);
        // Another data directory (another HOME) is another computer.
        let other = Computer::load_or_create(&d.path().join("other"), "laptop").unwrap();
        assert_ne!(a.id, other.id);
        assert!(std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == ID_FILE));
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_id() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().to_path_buf();
        let ids: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Computer::load_or_create(&data, "h").unwrap().id))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    }

    #[test]
    fn profiles_of_one_data_directory_share_its_id_and_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let work = Computer::load_or_create(d.path(), "vm")
            .unwrap()
            .for_profile("work");
        let home = Computer::load_or_create(d.path(), "vm")
            .unwrap()
            .for_profile("home");
        assert_eq!(work.id, home.id);
        assert_ne!(work, home);
        assert_eq!(work.profile.as_deref(), Some("work"));
    }

    #[test]
    fn the_user_name_is_this_process_user_and_printable() {
        let n = user_name().expect("a user name");
        assert!(!n.is_empty() && n.chars().all(|c| !c.is_control() && c != ' '));
        assert_eq!(printable("a b\u{7}c"), "abc");
        assert_eq!(printable(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn a_damaged_id_is_reported_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(ID_FILE), "not an id").unwrap();
        let e = Computer::load_or_create(d.path(), "h").unwrap_err();
        assert!(matches!(e, ComputerError::Damaged { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.path().join(ID_FILE)).unwrap(),
            "not an id"
        );
    }
}
