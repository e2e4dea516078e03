//! A profile's daemon (`cloudmount start PROFILE`): its sync folders, its control socket, and
//! its mount when the profile has a mount point; until a stop request (SIGINT, SIGTERM, the
//! `stop` control request) or the mount's end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{credentials, forward_signals, DaemonError, WebDavFactory};
use crate::config::ProfileDaemonConfig;
use crate::remote::webdav::{WebDavConfig, WebDavRemote};
use crate::sync::account::Account;
use crate::sync::computer::Computer;
use crate::sync::journal::Journal;
use crate::sync::service::{AreaRemote, Service, ServiceConfig};
use crate::sync::trash::Trash;

/// Why a profile's daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Journal(#[from] crate::sync::journal::JournalError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("{0}")]
    Remote(#[from] crate::remote::RemoteError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started profile daemon.
pub struct ProfileDaemon {
    service: Service,
    control: Option<crate::control::ControlServer>,
    mount: Option<super::Running>,
    stop: mpsc::UnboundedReceiver<&'static str>,
}

/// Starts the daemon of `cfg`: the sync folders, the control socket, the mount. Returns once
/// all of them are up (the sync folders then run on their own).
pub async fn start(cfg: &ProfileDaemonConfig) -> Result<ProfileDaemon, ProfileError> {
    let (tx, rx) = mpsc::unbounded_channel();
    forward_signals(tx.clone())?;
    crate::instance::ensure_private_dir(cfg.socket.parent().unwrap_or(std::path::Path::new("/")))?;
    if cfg.mount.is_none() {
        // A mount sets them when it starts (its own limits win over the settings file).
        super::bandwidth::apply_at_start(None, None);
    }
    // A client of the profile's account at `url`.
    let client = |url: &str| {
        let mut c = WebDavConfig::new(url);
        c.credentials = cfg.credentials.as_ref().map(credentials);
        WebDavRemote::new(c)
    };
    let remote = Arc::new(client(&cfg.url)?);
    // A remote per area (the same credentials), for sync folders in followed or shared areas.
    let mut areas = Vec::new();
    for (i, a) in cfg.areas.iter().enumerate() {
        let area_remote: Arc<dyn crate::remote::Remote> = if i == 0 && a.url == cfg.url {
            remote.clone()
        } else {
            Arc::new(client(&a.url)?)
        };
        areas.push(AreaRemote {
            name: a.name.clone(),
            remote: area_remote,
            read_only: a.read_only,
        });
    }
    let journal = Journal::open(&cfg.journal)?;
    let trash = Trash::from_env()?;
    let mut scfg = ServiceConfig::new(&cfg.name, &cfg.sync_root, cfg.poll_interval);
    scfg.default_folders = cfg.default_folders.clone();
    if let Ok(ms) = std::env::var("CLOUDMOUNT_SYNC_QUIET_MS") {
        // For tests: how long a burst of local changes must settle.
        if let Ok(ms) = ms.parse::<u64>() {
            scfg.quiet = std::time::Duration::from_millis(ms);
        }
    }
    // The account's room on the server: a full server pauses the uploads of every sync folder
    // and of the mount at once, and one probe per interval finds out when space is freed.
    let retry = cfg.mount.as_ref().and_then(|m| m.space_retry).unwrap_or(
        cfg.poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60)),
    );
    let space = Arc::new(crate::transfer::space::Space::new(retry));
    scfg.space = space.clone();
    // The mount first: `cloudmount start` returns once the socket answers, and by then the
    // mount must be live.
    let mount = match &cfg.mount {
        Some(m) => Some(super::start_sharing(m, &WebDavFactory, Some(space)).await?),
        None => None,
    };
    let service = Service::start_with_areas(scfg, remote.clone(), areas, journal, trash, tx)?;
    // The account's registry of sync folders: this computer is this user's data directory, and
    // this profile of it one participant.
    let dirs = crate::config::Dirs::from_env().map_err(|e| std::io::Error::other(e.to_string()))?;
    let computer = Computer::load_or_create(&dirs.data, &crate::transfer::conflict::device_name())
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_user(crate::sync::computer::user_name())
        .for_profile(&cfg.name);
    let account = Account::open(
        remote,
        computer,
        cfg.journal.with_extension("registry.json"),
    )?;
    let every = (cfg.poll_interval * 4).clamp(Duration::from_secs(2), Duration::from_secs(300));
    service.attach_account(Arc::new(account), every);
    for line in &cfg.preset_used {
        tracing::info!("{line}");
    }
    // The profile's default folders, the first time here: before the socket answers, so that
    // `cloudmount start` returns with them in place.
    for line in service
        .apply_defaults(&cfg.journal.with_extension("defaults.json"))
        .await
    {
        tracing::info!("{line}");
    }
    let control = crate::control::serve(&cfg.socket, service.clone())?;
    tracing::info!(profile = %cfg.name, socket = %cfg.socket.display(), "profile daemon started");
    Ok(ProfileDaemon {
        service,
        control: Some(control),
        mount,
        stop: rx,
    })
}

impl ProfileDaemon {
    /// What the user should know (the mount's warnings).
    pub fn warnings(&self) -> Vec<String> {
        self.mount
            .as_ref()
            .map(|m| m.warnings().to_vec())
            .unwrap_or_default()
    }

    /// Runs until stopped, then stops the sync folders (after their transfers in flight) and
    /// the mount.
    pub async fn serve(mut self) -> Result<(), ProfileError> {
        let result = match self.mount.take() {
            Some(m) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut stop = std::mem::replace(&mut self.stop, mpsc::unbounded_channel().1);
                tokio::spawn(async move {
                    while let Some(s) = stop.recv().await {
                        if tx.send(s).is_err() {
                            break;
                        }
                    }
                });
                m.serve(rx).await.map_err(ProfileError::from)
            }
            None => {
                if let Some(s) = self.stop.recv().await {
                    tracing::info!("{s} received: stopping after the transfers in flight");
                }
                Ok(())
            }
        };
        if let Some(c) = self.control.take() {
            c.shutdown();
        }
        self.service.shutdown().await;
        tracing::info!("stopped");
        result
    }
}
