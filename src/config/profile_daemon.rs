//! The settings of a profile's daemon (`cloudmount start PROFILE`): its server and login, its
//! sync folders' defaults, and its mount when the profile names a mount point.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults::{read_user_dirs, resolve_defaults, DefaultFolder};
use super::{
    load_profile, resolve, sanitize_name, AreaConfig, ConfigError, ConfigFile, Dirs, Login,
    MountConfig, MountRequest,
};

/// How often immediate sync folders look at the server, when the profile does not say.
pub const DEFAULT_SYNC_POLL: Duration = Duration::from_secs(30);

/// What `cloudmount start PROFILE` runs.
#[derive(Debug, Clone)]
pub struct ProfileDaemonConfig {
    /// The profile's name.
    pub name: String,
    /// The URL sync folders' server paths are below: the profile's `url`, or its first area's.
    pub url: String,
    pub credentials: Option<Login>,
    /// Default parent of new sync folders on the server (below `url`).
    pub sync_root: String,
    pub poll_interval: Duration,
    /// The mount, when the profile has a `mountpoint`.
    pub mount: Option<MountConfig>,
    /// The profile's areas, the main one (`url`) first: sync folders may be in any of them.
    pub areas: Vec<AreaConfig>,
    /// The sync journal of the profile.
    pub journal: PathBuf,
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// The background daemon's log.
    pub log: PathBuf,
    /// Sync folders set up on the profile's first start on this computer.
    pub default_folders: Vec<DefaultFolder>,
    /// The values the profile's preset filled in, one line each (`cloudmount start` says them).
    pub preset_used: Vec<String>,
}

/// The control socket of profile `name`'s daemon.
pub fn socket_of(dirs: &Dirs, name: &str) -> PathBuf {
    dirs.runtime
        .join(format!("sync-{}.sock", sanitize_name(name)))
}

/// Picks the profile: the one named, or the only one of the config file.
pub fn pick_profile(
    name: Option<&str>,
    config: Option<&Path>,
    dirs: &Dirs,
    cwd: &Path,
) -> Result<String, ConfigError> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let path = dirs.config_file_given(config, cwd);
    if !path.exists() {
        // `cloudmount demo` runs a daemon without a config file.
        if socket_of(dirs, "demo").exists() {
            return Ok("demo".into());
        }
        return Err(ConfigError::Profile {
            profile: String::new(),
            message: format!(
                "no config file at {}: sync folders belong to a profile (an account); see `cloudmount start --help`",
                path.display()
            ),
        });
    }
    let file = ConfigFile::load(&path)?;
    let mut names = file.profiles.keys();
    match (names.next(), names.next()) {
        (Some(one), None) => Ok(one.clone()),
        (None, _) => Err(ConfigError::Profile {
            profile: String::new(),
            message: format!("{} has no profiles", path.display()),
        }),
        (Some(_), Some(_)) => Err(ConfigError::Profile {
            profile: String::new(),
            message: format!(
                "{} has several profiles ({}): say which with --profile NAME",
                path.display(),
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Resolves profile `name` for its daemon.
pub fn resolve_profile_daemon(
    name: &str,
    config: Option<&Path>,
    dirs: &Dirs,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProfileDaemonConfig, ConfigError> {
    let mut req = MountRequest {
        source: name.to_string(),
        config: config.map(Path::to_path_buf),
        ..MountRequest::default()
    };
    let Some(loaded) = load_profile(&req, dirs, cwd)? else {
        return Err(ConfigError::Profile {
            profile: name.to_string(),
            message: "a profile name is needed here, not a URL".into(),
        });
    };
    let has_mount = loaded.profile.mountpoint.is_some();
    if !has_mount {
        // Resolved for the login and areas only; no mount is made.
        req.mountpoint = Some(PathBuf::from("/"));
    }
    let cfg = resolve(&req, dirs, cwd, env)?;
    let url = cfg
        .areas
        .first()
        .map(|a| a.url.clone())
        .ok_or_else(|| ConfigError::Profile {
            profile: name.to_string(),
            message: "no `url` and no `areas`".into(),
        })?;
    let poll_interval = match &loaded.profile.sync_poll_interval {
        Some(v) => v.duration()?,
        None => DEFAULT_SYNC_POLL,
    };
    if poll_interval < Duration::from_secs(1) {
        return Err(ConfigError::Profile {
            profile: name.to_string(),
            message: "sync_poll_interval must be at least 1s".into(),
        });
    }
    let sync_root = loaded
        .profile
        .sync_root
        .clone()
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    if !sync_root.is_empty() {
        crate::remote::RemotePath::new(&sync_root).map_err(|e| ConfigError::Profile {
            profile: name.to_string(),
            message: format!("sync_root: {e}"),
        })?;
    }
    let user_dirs = read_user_dirs(dirs);
    let default_folders = resolve_defaults(
        loaded
            .profile
            .default_folders
            .as_deref()
            .unwrap_or_default(),
        dirs,
        env,
        user_dirs.as_deref(),
    )
    .map_err(|message| ConfigError::Profile {
        profile: name.to_string(),
        message,
    })?;
    let clean = sanitize_name(name);
    Ok(ProfileDaemonConfig {
        default_folders,
        preset_used: loaded.preset_used.clone(),
        name: name.to_string(),
        url,
        credentials: cfg.credentials.clone(),
        areas: cfg.areas.clone(),
        sync_root,
        poll_interval,
        journal: dirs.data.join("sync").join(format!("{clean}.db")),
        socket: socket_of(dirs, name),
        log: dirs.state.join(format!("{clean}-daemon.log")),
        mount: has_mount.then_some(cfg),
    })
}
