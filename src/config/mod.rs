//! Configuration: the TOML config file and its profiles, XDG directories, the password lookup,
//! and the resolution of a `mount` request (command line, `-o` options, profile, defaults) into
//! a [`MountConfig`]. Plain data and pure functions; the only I/O is reading the config and
//! password files.
//!
//! ```toml
//! [profiles.work]
//! url = "https://webdav.example.com/alice/"   # one URL: its folder is the mount's root
//! user = "alice"
//! password_file = "~/.config/cloudmount/work.password"  # or password_env = "WORK_PW"
//! cache_dir = "~/.cache/cloudmount/work"      # default $XDG_CACHE_HOME/cloudmount/<profile>
//! cache_size = "10G"                          # default 10G
//! dir_cache_time = "30s"                      # default 30s
//! write_back_delay = "500ms"                 # default 500ms: wait after close before uploading
//! read_only = false
//! passthrough = true                          # default true: see `--no-passthrough`
//! allow_non_empty = false                     # default false: see `--allow-non-empty`
//! mountpoint = "~/Cloud"                      # optional: `cloudmount mount work` alone
//!
//! # preset = "cloudme"                       # a service's values under the profile's own (preset.rs)
//! # [[profiles.work.default_folders]]         # set up on the first start (defaults.rs)
//!
//! [[profiles.cloudme.areas]]                  # or areas: each one a folder at the root
//! name = "Cloud Drive"
//! url = "https://webdav.cloudme.com/alice/xios/"
//! read_only = false
//! ```
//!
//! Secrets: a password is taken, in this order, from `--password-file`, the profile's
//! `password`, `password_file` or `password_env`, and the `CLOUDMOUNT_PASSWORD` environment
//! variable; never from the command line. A password file, or a config file holding a
//! `password`, that other users can read (any group/other permission bit) is **refused**, with
//! the `chmod 600` that fixes it — the same rule ssh applies to private keys.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::size::{parse_size, SizeError};

/// The environment variable holding the password when no other source gives one.
pub const PASSWORD_ENV: &str = "CLOUDMOUNT_PASSWORD";
/// Default budget of the block cache.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;
/// The smallest cache budget taken: below it nothing read stays cached long enough to help.
pub const MIN_CACHE_SIZE: u64 = 1 << 20;
/// Default time a directory listing is trusted before it is revalidated with the server.
pub const DEFAULT_DIR_CACHE_TIME: Duration = Duration::from_secs(30);
/// Default wait after the last close of a changed file before its upload starts.
pub const DEFAULT_WRITE_BACK_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cache size {given} is too small: nothing read would stay cached (every read would \
         download again); give at least {min}, e.g. --cache-size 1G"
    )]
    CacheTooSmall { given: String, min: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{name:?} is not an http(s):// URL, and there is no config file {} to define it as a profile", path.display())]
    NoConfigFile { name: String, path: PathBuf },
    #[error("{name:?} is not an http(s):// URL nor a profile in {} (profiles: {known})", path.display())]
    NoProfile {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("profile {profile:?}: {message}")]
    Profile { profile: String, message: String },
    #[error("{} holds a password but other users can read it (mode {mode:04o}); fix it with: chmod 600 {}", path.display(), path.display())]
    Insecure { path: PathBuf, mode: u32 },
    #[error("password file {} is empty", .0.display())]
    EmptyPassword(PathBuf),
    #[error("no password for user {user:?}: set {PASSWORD_ENV}, or use --password-file FILE (a password is never taken from the command line)")]
    NoPassword { user: String },
    #[error("environment variable {0} (password_env of the profile) is not set or empty")]
    PasswordEnvUnset(String),
    #[error("a password file was given but no user: add --user USER (or user=USER)")]
    PasswordWithoutUser,
    #[error("invalid {what}: {source}")]
    Size {
        what: &'static str,
        source: SizeError,
    },
    #[error("invalid duration {0:?}: use a number with an optional unit: 30s, 5m, 1h, 1d, 500ms, 90 (seconds)")]
    Duration(String),
    #[error("unknown mount option {0:?}")]
    UnknownOption(String),
    #[error("invalid {key} {value:?}: {reason}")]
    Limit {
        key: String,
        value: String,
        reason: String,
    },
    #[error("mount option {0:?} needs a value ({0}=…)")]
    OptionNeedsValue(String),
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("no mount point: give MOUNTPOINT, or set `mountpoint` in the profile")]
    NoMountPoint,
    #[error("cannot find the home directory: set HOME")]
    NoHome,
}

// ---------------------------------------------------------------------------------------------
// Durations

/// Parses `30s`, `5m`, `1h`, `1d`, `500ms`, `1m30s`, or plain seconds (`90`).
pub fn parse_duration(input: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(input.to_string());
    let s = input.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// XDG directories

/// Where cloudmount keeps its files (each already ends in `cloudmount`, except `home`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME/cloudmount` (default `~/.config/cloudmount`).
    pub config: PathBuf,
    /// `$XDG_CACHE_HOME/cloudmount` (default `~/.cache/cloudmount`).
    pub cache: PathBuf,
    /// `$XDG_STATE_HOME/cloudmount` (default `~/.local/state/cloudmount`): logs.
    pub state: PathBuf,
    /// `$XDG_DATA_HOME/cloudmount` (default `~/.local/share/cloudmount`): the demo's files.
    pub data: PathBuf,
    /// `$XDG_RUNTIME_DIR/cloudmount`, else `/run/user/UID/cloudmount` when that exists, else
    /// `/tmp/cloudmount-UID`: daemon state files (pid per mount point).
    pub runtime: PathBuf,
}

impl Dirs {
    /// From the process environment (HOME falls back to the password database).
    pub fn from_env() -> Result<Dirs, ConfigError> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let home = std::env::var_os("HOME")
            .filter(|h| Path::new(h).is_absolute())
            .or_else(|| home_from_passwd(uid));
        Self::from_lookup(|k| std::env::var_os(k), home, uid, |p| p.is_dir())
    }

    /// From a variable lookup, for tests. `dir_exists` is asked about `/run/user/UID`.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<OsString>,
        home: Option<OsString>,
        uid: u32,
        dir_exists: impl Fn(&Path) -> bool,
    ) -> Result<Dirs, ConfigError> {
        let home = PathBuf::from(home.ok_or(ConfigError::NoHome)?);
        // The XDG spec says relative values are invalid and must be ignored.
        let xdg = |name: &str, default: &str| -> PathBuf {
            var(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(default))
                .join("cloudmount")
        };
        let runtime = match var("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            Some(p) => p.join("cloudmount"),
            None => {
                let run_user = PathBuf::from(format!("/run/user/{uid}"));
                if dir_exists(&run_user) {
                    run_user.join("cloudmount")
                } else {
                    PathBuf::from(format!("/tmp/cloudmount-{uid}"))
                }
            }
        };
        Ok(Dirs {
            config: xdg("XDG_CONFIG_HOME", ".config"),
            cache: xdg("XDG_CACHE_HOME", ".cache"),
            state: xdg("XDG_STATE_HOME", ".local/state"),
            data: xdg("XDG_DATA_HOME", ".local/share"),
            runtime,
            home,
        })
    }

    /// The default config file.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }

    /// The config file `given` by `--config` (`~` expanded, relative to `cwd`), else the
    /// default one.
    pub fn config_file_given(&self, given: Option<&Path>, cwd: &Path) -> PathBuf {
        match given {
            Some(p) => cwd.join(self.expand(p)),
            None => self.config_file(),
        }
    }

    /// `~` and `~/…` expanded; other paths unchanged.
    pub fn expand(&self, p: &Path) -> PathBuf {
        match p.strip_prefix("~") {
            Ok(rest) => self.home.join(rest),
            Err(_) => p.to_path_buf(),
        }
    }
}

fn home_from_passwd(uid: u32) -> Option<OsString> {
    let dir = passwd_entry(uid)?.dir;
    Path::new(&dir).is_absolute().then_some(dir)
}

/// A user's entry in the password database (what `getpwuid_r` says).
pub(crate) struct PasswdEntry {
    pub name: OsString,
    pub dir: OsString,
}

/// The password database's entry of `uid`, if it has one.
pub(crate) fn passwd_entry(uid: u32) -> Option<PasswdEntry> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pwd`'s fields.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_name and pw_dir point into `buf`, NUL-terminated, as getpwuid_r guarantees.
    let (name, dir) = unsafe {
        (
            std::ffi::CStr::from_ptr(pwd.pw_name),
            std::ffi::CStr::from_ptr(pwd.pw_dir),
        )
    };
    let os = |c: &std::ffi::CStr| std::ffi::OsStr::from_bytes(c.to_bytes()).to_os_string();
    Some(PasswdEntry {
        name: os(name),
        dir: os(dir),
    })
}

// ---------------------------------------------------------------------------------------------
// The config file

/// A size as a string (`"10G"`) or a number of bytes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self, what: &'static str) -> Result<u64, ConfigError> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(s) => {
                parse_size(s).map_err(|source| ConfigError::Size { what, source })
            }
        }
    }
}

/// A duration as a string (`"30s"`) or a number of seconds.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn duration(&self) -> Result<Duration, ConfigError> {
        match self {
            DurationValue::Seconds(n) => Ok(Duration::from_secs(*n)),
            DurationValue::Text(s) => parse_duration(s),
        }
    }
}

/// One area of a profile: a folder at the mount's root.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AreaEntry {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A profile as written in the config file.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: Option<String>,
    #[serde(default)]
    pub areas: Vec<AreaEntry>,
    pub user: Option<String>,
    /// Inline password: allowed only in a config file only its owner can read.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<SizeValue>,
    pub dir_cache_time: Option<DurationValue>,
    pub write_back_delay: Option<DurationValue>,
    pub read_only: Option<bool>,
    pub allow_other: Option<bool>,
    /// FUSE passthrough for cached large files in read-only mounts and areas (default true;
    /// see `--no-passthrough`).
    pub passthrough: Option<bool>,
    /// Mount over a directory that holds files (default false; see `--allow-non-empty`).
    pub allow_non_empty: Option<bool>,
    pub mountpoint: Option<PathBuf>,
    /// Where sync folders go on the server by default: a path below the profile's URL.
    pub sync_root: Option<String>,
    /// How often immediate sync folders look at the server (default 30 s).
    pub sync_poll_interval: Option<DurationValue>,
    /// A service's known settings (`"cloudme"`), under the profile's own: see [`preset`].
    pub preset: Option<String>,
    /// Sync folders set up on the profile's first start on a computer: see [`defaults`].
    pub default_folders: Option<Vec<defaults::DefaultFolderEntry>>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("url", &self.url)
            .field("areas", &self.areas)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("cache_dir", &self.cache_dir)
            .field("cache_size", &self.cache_size)
            .field("dir_cache_time", &self.dir_cache_time)
            .field("write_back_delay", &self.write_back_delay)
            .field("read_only", &self.read_only)
            .field("allow_other", &self.allow_other)
            .field("passthrough", &self.passthrough)
            .field("mountpoint", &self.mountpoint)
            .field("sync_root", &self.sync_root)
            .field("sync_poll_interval", &self.sync_poll_interval)
            .field("preset", &self.preset)
            .field("default_folders", &self.default_folders)
            .finish()
    }
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

impl ConfigFile {
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Reads and parses `path`; refuses it when it holds a password and others can read it.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = Self::parse(&text, path)?;
        if file.profiles.values().any(|p| p.password.is_some()) {
            check_private(path)?;
        }
        Ok(file)
    }
}

/// Refuses a file holding a secret that anyone but its owner may access.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Insecure {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a password file (private to its owner); one trailing newline is not part of it.
pub fn read_password_file(path: &Path) -> Result<String, ConfigError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pw = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if pw.is_empty() {
        return Err(ConfigError::EmptyPassword(path.to_path_buf()));
    }
    Ok(pw.to_string())
}

// ---------------------------------------------------------------------------------------------
// The mount request and `-o` options

/// What the command line asked for (flags, then `-o` options filling what flags left unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// An `http(s)://` URL or a profile name.
    pub source: String,
    pub mountpoint: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<u64>,
    pub dir_cache_time: Option<Duration>,
    pub write_back_delay: Option<Duration>,
    /// How often an area paused by a full server is probed (hidden `--space-retry`, for
    /// tests); `None`: the upload queue's default.
    pub space_retry: Option<Duration>,
    pub read_only: Option<bool>,
    pub allow_other: Option<bool>,
    pub passthrough: Option<bool>,
    /// Mount over a directory that holds files (hiding them until the unmount).
    pub allow_non_empty: Option<bool>,
    pub config: Option<PathBuf>,
    /// Bandwidth limits of this mount's daemon, bytes per second (0: none); `None`: the
    /// settings file's.
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
}

/// Options that mount(8) passes to helpers and that mean nothing to cloudmount.
fn is_ignored_option(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "exec"
            | "noexec"
            | "suid"
            | "nosuid"
            | "dev"
            | "nodev"
            | "atime"
            | "noatime"
            | "relatime"
            | "nodiratime"
            | "async"
            | "loud"
            | "silent"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

impl MountRequest {
    /// Applies fstab-style options (`ro,allow_other,cache_size=5G,user=alice,…`) to the fields
    /// the command line left unset (a flag wins over the same `-o` option).
    pub fn apply_options(&mut self, opts: &str) -> Result<(), ConfigError> {
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let need = |v: Option<&str>| -> Result<String, ConfigError> {
                match v {
                    Some(v) if !v.is_empty() => Ok(v.to_string()),
                    _ => Err(ConfigError::OptionNeedsValue(key.to_string())),
                }
            };
            match key {
                "ro" if value.is_none() => {
                    self.read_only.get_or_insert(true);
                }
                "rw" if value.is_none() => {
                    self.read_only.get_or_insert(false);
                }
                "allow_other" if value.is_none() => {
                    self.allow_other.get_or_insert(true);
                }
                "allow_non_empty" | "nonempty" if value.is_none() => {
                    self.allow_non_empty.get_or_insert(true);
                }
                "passthrough" if value.is_none() => {
                    self.passthrough.get_or_insert(true);
                }
                "nopassthrough" if value.is_none() => {
                    self.passthrough.get_or_insert(false);
                }
                "user" | "username" if value.is_some() => {
                    let v = need(value)?;
                    self.user.get_or_insert(v);
                }
                "password_file" => {
                    let v = need(value)?;
                    self.password_file.get_or_insert(PathBuf::from(v));
                }
                "cache_dir" => {
                    let v = need(value)?;
                    self.cache_dir.get_or_insert(PathBuf::from(v));
                }
                "cache_size" => {
                    let v = parse_size(&need(value)?).map_err(|source| ConfigError::Size {
                        what: "cache_size",
                        source,
                    })?;
                    self.cache_size.get_or_insert(v);
                }
                "dir_cache_time" => {
                    let v = parse_duration(&need(value)?)?;
                    self.dir_cache_time.get_or_insert(v);
                }
                "write_back_delay" => {
                    let v = parse_duration(&need(value)?)?;
                    self.write_back_delay.get_or_insert(v);
                }
                "config" => {
                    let v = need(value)?;
                    self.config.get_or_insert(PathBuf::from(v));
                }
                "upload_limit" | "download_limit" => {
                    let v = need(value)?;
                    let limit = settings::parse_limit(&v).map_err(|reason| ConfigError::Limit {
                        key: key.to_string(),
                        value: v.clone(),
                        reason,
                    })?;
                    if key == "upload_limit" {
                        self.upload_limit.get_or_insert(limit);
                    } else {
                        self.download_limit.get_or_insert(limit);
                    }
                }
                "password" => {
                    // Options are visible in `ps` and /proc/mounts-adjacent logs.
                    return Err(ConfigError::UnknownOption(
                        "password (never pass a password as an option: use password_file=FILE)"
                            .into(),
                    ));
                }
                _ if value.is_none() && is_ignored_option(key) => {}
                _ if key.starts_with("x-") || key == "comment" => {}
                _ => return Err(ConfigError::UnknownOption(opt.to_string())),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The resolved configuration

/// One remote root of the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaConfig {
    /// Folder name at the root (unused when the single area is the root).
    pub name: String,
    /// The base URL (http or https).
    pub url: String,
    pub read_only: bool,
}

/// A user name and its password, as the configuration gives them (the daemon turns them into
/// the WebDAV client's credentials). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything needed to mount, resolved. `Debug` never shows the password.
#[derive(Clone)]
pub struct MountConfig {
    /// The profile name, or a name made from the mount point: names the log file.
    pub name: String,
    pub profile: Option<String>,
    /// The SOURCE as given (URL or profile), for messages.
    pub source: String,
    /// Absolute (made absolute against the working directory; `~` expanded).
    pub mountpoint: PathBuf,
    pub areas: Vec<AreaConfig>,
    /// Show each area as a folder at the root (a profile with `areas`).
    pub areas_as_folders: bool,
    pub credentials: Option<Login>,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub dir_cache_time: Duration,
    /// How long after its last close a changed file waits before its upload starts.
    pub write_back_delay: Duration,
    /// How often uploads paused by a full server are tried again; `None`: the upload queue's
    /// default (30 s).
    pub space_retry: Option<Duration>,
    pub read_only: bool,
    pub allow_other: bool,
    /// FUSE passthrough for cached large files of read-only areas where the kernel allows it.
    pub passthrough: bool,
    /// Mount over a directory that holds files, hiding them until the unmount.
    pub allow_non_empty: bool,
    /// Where the daemon's state file goes (see [`Dirs::runtime`]).
    pub runtime_dir: PathBuf,
    /// Bandwidth limits given for this mount, over the settings file's (bytes per second,
    /// 0: none).
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
}

impl fmt::Debug for MountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountConfig")
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("source", &self.source)
            .field("mountpoint", &self.mountpoint)
            .field("areas", &self.areas)
            .field("areas_as_folders", &self.areas_as_folders)
            .field("credentials", &self.credentials)
            .field("cache_dir", &self.cache_dir)
            .field("cache_size", &self.cache_size)
            .field("dir_cache_time", &self.dir_cache_time)
            .field("write_back_delay", &self.write_back_delay)
            .field("space_retry", &self.space_retry)
            .field("read_only", &self.read_only)
            .field("allow_other", &self.allow_other)
            .field("passthrough", &self.passthrough)
            .field("runtime_dir", &self.runtime_dir)
            .field("upload_limit", &self.upload_limit)
            .field("download_limit", &self.download_limit)
            .finish()
    }
}

/// Whether SOURCE is a URL (rather than a profile name).
pub fn is_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| ConfigError::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConfigError::Url {
            url: url.to_string(),
            reason: "only http:// and https:// URLs with a host are supported".into(),
        });
    }
    Ok(())
}

/// A file-name-safe form of `s`: ASCII letters, digits, `.`, `_`, `@` and `-`; runs of other
/// characters become one `-`.
pub fn sanitize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.is_empty() {
        "root".to_string()
    } else {
        out
    }
}

/// Cache directory name for a URL mount: user and URL without the scheme, so a remount of the
/// same account reuses the cache wherever it is mounted.
fn url_cache_name(url: &str, user: Option<&str>) -> String {
    let no_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match user {
        Some(u) => sanitize_name(&format!("{u}@{no_scheme}")),
        None => sanitize_name(no_scheme),
    }
}

/// A profile and the directory of its config file (its relative paths are taken from there).
pub(crate) struct LoadedProfile {
    pub(crate) name: String,
    pub(crate) profile: Profile,
    pub(crate) dir: PathBuf,
    /// The values its preset filled in, one line each.
    pub(crate) preset_used: Vec<String>,
}

/// Reads the config file for `req` when SOURCE is a profile name.
pub(crate) fn load_profile(
    req: &MountRequest,
    dirs: &Dirs,
    cwd: &Path,
) -> Result<Option<LoadedProfile>, ConfigError> {
    if is_url(&req.source) {
        return Ok(None);
    }
    let path = dirs.config_file_given(req.config.as_deref(), cwd);
    if !path.exists() {
        return Err(ConfigError::NoConfigFile {
            name: req.source.clone(),
            path,
        });
    }
    let mut file = ConfigFile::load(&path)?;
    match file.profiles.remove(&req.source) {
        Some(mut profile) => Ok(Some(LoadedProfile {
            name: req.source.clone(),
            preset_used: preset::apply(&mut profile).map_err(|message| ConfigError::Profile {
                profile: req.source.clone(),
                message,
            })?,
            profile,
            dir: path
                .parent()
                .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf),
        })),
        None => Err(ConfigError::NoProfile {
            name: req.source.clone(),
            path,
            known: if file.profiles.is_empty() {
                "none".into()
            } else {
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        }),
    }
}

/// Resolves a mount request: command line over `-o` (already in `req`) over profile over
/// defaults. `env` looks up environment variables (the password variables). Relative paths of
/// the command line are taken against `cwd`, those of the config file against its directory;
/// `~/` is the home directory in both.
pub fn resolve(
    req: &MountRequest,
    dirs: &Dirs,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MountConfig, ConfigError> {
    let (profile_name, profile, profile_dir) = match load_profile(req, dirs, cwd)? {
        Some(l) => (Some(l.name), l.profile, l.dir),
        None => (None, Profile::default(), cwd.to_path_buf()),
    };
    let perr = |message: String| ConfigError::Profile {
        profile: req.source.clone(),
        message,
    };
    // `join` keeps an absolute path as it is.
    let abs = |p: &Path| cwd.join(dirs.expand(p));
    let abs_profile = |p: &Path| profile_dir.join(dirs.expand(p));

    // Areas.
    let (areas, areas_as_folders) = if profile_name.is_none() {
        check_url(&req.source)?;
        let area = AreaConfig {
            name: String::new(),
            url: req.source.clone(),
            read_only: false,
        };
        (vec![area], false)
    } else {
        match (&profile.url, profile.areas.is_empty()) {
            (Some(_), false) => {
                return Err(perr("give either `url` or `areas`, not both".into()));
            }
            (None, true) => return Err(perr("no `url` and no `areas`".into())),
            (Some(url), true) => {
                check_url(url)?;
                let area = AreaConfig {
                    name: String::new(),
                    url: url.clone(),
                    read_only: false,
                };
                (vec![area], false)
            }
            (None, false) => {
                let mut seen = std::collections::HashSet::new();
                let mut areas = Vec::new();
                for a in &profile.areas {
                    crate::remote::path::check_name(&a.name)
                        .map_err(|why| perr(format!("area name {:?}: {why}", a.name)))?;
                    if !seen.insert(a.name.as_str()) {
                        return Err(perr(format!("two areas are named {:?}", a.name)));
                    }
                    check_url(&a.url)?;
                    areas.push(AreaConfig {
                        name: a.name.clone(),
                        url: a.url.clone(),
                        read_only: a.read_only,
                    });
                }
                (areas, true)
            }
        }
    };

    // Credentials.
    let user = req.user.clone().or_else(|| profile.user.clone());
    let credentials = match &user {
        None if req.password_file.is_some() => return Err(ConfigError::PasswordWithoutUser),
        None => None,
        Some(user) => {
            let password = if let Some(f) = &req.password_file {
                read_password_file(&abs(f))?
            } else if let Some(p) = &profile.password {
                p.clone()
            } else if let Some(f) = &profile.password_file {
                read_password_file(&abs_profile(f))?
            } else if let Some(var) = &profile.password_env {
                env(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ConfigError::PasswordEnvUnset(var.clone()))?
            } else {
                env(PASSWORD_ENV)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ConfigError::NoPassword { user: user.clone() })?
            };
            Some(Login {
                user: user.clone(),
                password,
            })
        }
    };

    let mountpoint = match (&req.mountpoint, &profile.mountpoint) {
        (Some(m), _) => abs(m),
        (None, Some(m)) => abs_profile(m),
        (None, None) => return Err(ConfigError::NoMountPoint),
    };

    let name = match &profile_name {
        Some(p) => sanitize_name(p),
        None => sanitize_name(&mountpoint.to_string_lossy()),
    };
    let cache_dir = match (&req.cache_dir, &profile.cache_dir) {
        (Some(d), _) => abs(d),
        (None, Some(d)) => abs_profile(d),
        (None, None) => match &profile_name {
            Some(p) => dirs.cache.join(sanitize_name(p)),
            None => dirs
                .cache
                .join(url_cache_name(&req.source, user.as_deref())),
        },
    };
    let cache_size = match (req.cache_size, &profile.cache_size) {
        (Some(n), _) => n,
        (None, Some(v)) => v.bytes("cache_size")?,
        (None, None) => DEFAULT_CACHE_SIZE,
    };
    if cache_size < MIN_CACHE_SIZE {
        return Err(ConfigError::CacheTooSmall {
            given: crate::size::FormatSize(cache_size).to_string(),
            min: crate::size::FormatSize(MIN_CACHE_SIZE).to_string(),
        });
    }
    let dir_cache_time = match (req.dir_cache_time, &profile.dir_cache_time) {
        (Some(d), _) => d,
        (None, Some(v)) => v.duration()?,
        (None, None) => DEFAULT_DIR_CACHE_TIME,
    };
    let write_back_delay = match (req.write_back_delay, &profile.write_back_delay) {
        (Some(d), _) => d,
        (None, Some(v)) => v.duration()?,
        (None, None) => DEFAULT_WRITE_BACK_DELAY,
    };

    Ok(MountConfig {
        name,
        profile: profile_name,
        source: req.source.clone(),
        mountpoint,
        areas,
        areas_as_folders,
        credentials,
        cache_dir,
        cache_size,
        dir_cache_time,
        write_back_delay,
        space_retry: req.space_retry,
        read_only: req.read_only.or(profile.read_only).unwrap_or(false),
        allow_other: req.allow_other.or(profile.allow_other).unwrap_or(false),
        passthrough: req.passthrough.or(profile.passthrough).unwrap_or(true),
        allow_non_empty: req
            .allow_non_empty
            .or(profile.allow_non_empty)
            .unwrap_or(false),
        runtime_dir: dirs.runtime.clone(),
        upload_limit: req.upload_limit,
        download_limit: req.download_limit,
    })
}

pub mod defaults;
pub mod preset;
mod profile_daemon;
pub mod settings;
pub use defaults::DefaultFolder;
pub use profile_daemon::{
    pick_profile, resolve_profile_daemon, socket_of, ProfileDaemonConfig, DEFAULT_SYNC_POLL,
};

#[cfg(test)]
mod defaults_tests;
#[cfg(test)]
mod tests;
