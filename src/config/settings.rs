//! The user's settings file, `settings.toml` beside the config file
//! (`$XDG_CONFIG_HOME/cloudmount/settings.toml`): what `cloudmount settings set` changes for
//! every daemon of the user, read by each daemon when it starts. Today: the bandwidth limits.
//!
//! The file is written whole by [`save`] (a temporary file, flushed, renamed over the old one:
//! a reader sees the old settings or the new, never half of them) and carries its format's
//! `version`; a file of a newer version is refused rather than misread. A missing file is the
//! defaults. A person may edit it: limits are numbers of bytes per second or sizes (`"2M"`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Dirs, SizeValue};
use crate::remote::throttle::Limits;
use crate::size::{parse_size, FormatSize};

/// The version of the file's format this build writes and reads.
pub const SETTINGS_VERSION: u32 = 1;

/// The keys of the settings file, as `cloudmount settings` spells them.
pub const KEYS: &[&str] = &["upload_limit", "download_limit"];

/// Why the settings could not be read, changed or written. One line each.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the settings file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "settings file {} is of version {version}, newer than this cloudmount's \
         ({SETTINGS_VERSION}): use the newer cloudmount, or remove the file",
        path.display()
    )]
    Newer { path: PathBuf, version: u32 },
    #[error("unknown setting {0:?}; known settings: {known}", known = KEYS.join(", "))]
    UnknownKey(String),
    #[error("invalid {key} {value:?}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot write the settings file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The user's settings, defaults filled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSettings {
    /// Bytes per second; 0: no limit.
    pub limits: Limits,
}

#[derive(Deserialize)]
struct File {
    version: Option<u32>,
    upload_limit: Option<SizeValue>,
    download_limit: Option<SizeValue>,
}

/// Where the settings file is.
pub fn settings_file(dirs: &Dirs) -> PathBuf {
    dirs.config.join("settings.toml")
}

impl UserSettings {
    /// Reads the file at `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<UserSettings, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(UserSettings::default())
            }
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Reads the text of a settings file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<UserSettings, SettingsError> {
        let parse_err = |reason: String| SettingsError::Parse {
            path: path.to_path_buf(),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| parse_err(e.message().to_string()))?;
        let version = file.version.unwrap_or(SETTINGS_VERSION);
        if version > SETTINGS_VERSION {
            return Err(SettingsError::Newer {
                path: path.to_path_buf(),
                version,
            });
        }
        let limit = |key: &str, v: Option<SizeValue>| -> Result<u64, SettingsError> {
            match v {
                None => Ok(0),
                Some(SizeValue::Bytes(n)) => check_limit(n),
                // A size as the command line takes it (one parser for both).
                Some(SizeValue::Text(s)) => parse_limit(&s),
            }
            .map_err(|e| parse_err(format!("{key}: {e}")))
        };
        Ok(UserSettings {
            limits: Limits {
                upload: limit("upload_limit", file.upload_limit)?,
                download: limit("download_limit", file.download_limit)?,
            },
        })
    }

    /// Changes one setting, checking its value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        let slot = match key {
            "upload_limit" => &mut self.limits.upload,
            "download_limit" => &mut self.limits.download,
            _ => return Err(SettingsError::UnknownKey(key.to_string())),
        };
        *slot = parse_limit(value).map_err(|reason| SettingsError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        })?;
        Ok(())
    }

    /// Every setting with its value as people read it, in [`KEYS`] order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("upload_limit", format_limit(self.limits.upload)),
            ("download_limit", format_limit(self.limits.download)),
        ]
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        format!(
            "# cloudmount settings, written by `cloudmount settings set`.\n\
             # Limits are bytes per second (or sizes such as \"2M\"); 0 is no limit.\n\
             version = {SETTINGS_VERSION}\n\
             upload_limit = {}\n\
             download_limit = {}\n",
            self.limits.upload, self.limits.download
        )
    }

    /// Writes the settings to `path` at once: the old file or the new, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let err = |source| SettingsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        crate::atomic_file::write(path, self.to_text().as_bytes(), None).map_err(err)
    }
}

/// The smallest limit: below it a transfer would sit longer between two pieces than a
/// server waits for the next bytes.
pub const MIN_LIMIT: u64 = 1024;

/// A limit as given on the command line: a size per second (`2M`, `500K`, `1.5M`, `2048`),
/// binary multiples; `0` (or `off`, `unlimited`) for no limit. A trailing `/s` is allowed.
/// Limits below [`MIN_LIMIT`] (1K) are refused.
pub fn parse_limit(value: &str) -> Result<u64, String> {
    let v = value.trim();
    if matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "none" | "unlimited"
    ) {
        return Ok(0);
    }
    let v = v.strip_suffix("/s").unwrap_or(v);
    check_limit(parse_size(v).map_err(|e| e.to_string())?)
}

fn check_limit(rate: u64) -> Result<u64, String> {
    if rate != 0 && rate < MIN_LIMIT {
        return Err(format!(
            "{rate} bytes per second is too slow for a transfer to make progress; the least \
             is 1K (1024), and 0 is no limit"
        ));
    }
    Ok(rate)
}

/// `2 MiB/s`, or `0 (no limit)`.
pub fn format_limit(rate: u64) -> String {
    if rate == 0 {
        "0 (no limit)".to_string()
    } else {
        format!("{}/s", FormatSize(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_missing_file_is_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = UserSettings::load(&dir.path().join("settings.toml")).unwrap();
        assert_eq!(s, UserSettings::default());
        assert_eq!(s.limits, Limits::default());
    }

    #[test]
    fn saved_settings_read_back_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/settings.toml");
        let mut s = UserSettings::default();
        s.set("upload_limit", "2M").unwrap();
        s.set("download_limit", "1.5M/s").unwrap();
        s.save(&path).unwrap();
        let back = UserSettings::load(&path).unwrap();
        assert_eq!(back.limits.upload, 2 * MIB);
        assert_eq!(back.limits.download, 3 * MIB / 2);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("settings.toml")]);
        s.set("upload_limit", "0").unwrap();
        s.save(&path).unwrap();
        assert_eq!(UserSettings::load(&path).unwrap().limits.upload, 0);
    }

    #[test]
    fn a_person_may_write_sizes_and_leave_keys_out() {
        let p = Path::new("s.toml");
        let s = UserSettings::parse("upload_limit = \"512K\"\n", p).unwrap();
        assert_eq!(s.limits.upload, 512 * 1024);
        assert_eq!(s.limits.download, 0);
        let bad = UserSettings::parse("upload_limit = \"fast\"\n", p).unwrap_err();
        assert!(bad.to_string().contains("upload_limit"), "{bad}");
        assert!(UserSettings::parse("upload_limit = [", p).is_err());
    }

    #[test]
    fn a_newer_file_is_refused() {
        let e = UserSettings::parse("version = 2\nupload_limit = 1\n", Path::new("s.toml"))
            .unwrap_err();
        assert!(matches!(e, SettingsError::Newer { version: 2, .. }), "{e}");
    }

    #[test]
    fn values_and_keys_are_checked() {
        let mut s = UserSettings::default();
        assert!(matches!(
            s.set("speed", "1M"),
            Err(SettingsError::UnknownKey(_))
        ));
        let e = s.set("upload_limit", "fast").unwrap_err();
        assert!(e.to_string().contains("upload_limit"), "{e}");
        s.set("download_limit", "unlimited").unwrap();
        assert_eq!(s.limits.download, 0);
        assert_eq!(parse_limit("100K").unwrap(), 100 * 1024);
        assert!(parse_limit("100").unwrap_err().contains("1K"));
        assert_eq!(parse_limit("1K").unwrap(), MIN_LIMIT);
        assert!(UserSettings::parse("download_limit = 10\n", Path::new("s")).is_err());
        assert_eq!(format_limit(0), "0 (no limit)");
        assert_eq!(format_limit(2 * MIB), "2 MiB/s");
        // What is shown is accepted back.
        assert_eq!(
            parse_limit(&format_limit(3 * MIB / 2)).unwrap(),
            3 * MIB / 2
        );
    }
}
