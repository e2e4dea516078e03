//! The mount daemon: wires config, remotes, the vfs and the FUSE mount together.
//!
//! [`start`] runs the checks that must fail with one clear line (mount point, FUSE, each area's
//! server: credentials, WebDAV collection, reachability), opens the [`Vfs`], mounts it and
//! returns once the mount is live. [`Running::serve`] then waits for a stop request (SIGINT /
//! SIGTERM, see [`stop_signals`]) or for the kernel unmount (`cloudmount unmount`,
//! `fusermount3 -u`), and shuts down in order: unmount (lazily if busy), let requests in flight
//! finish, `Vfs::shutdown` (uploads in flight), remove the state file and the control socket.
//! [`run`] is both.
//!
//! While mounted, the daemon records itself in its state file and answers control requests
//! (`cloudmount status`) on its control socket, both beside each other in the runtime
//! directory (see [`crate::instance`], [`crate::control`]); `requests.rs` holds its answers.
//! `background.rs` runs it as a background process (`cloudmount mount` without
//! `--foreground`).
//!
//! Remotes come from a [`RemoteFactory`], so tests mount the in-memory fake through the same
//! path as the real WebDAV client.
//!
//! [`unmount`] is the `cloudmount unmount` command: it unmounts and waits for the daemon to
//! exit, so uploads in flight have finished when it returns.

pub mod background;
pub mod bandwidth;
pub mod demo;
pub mod profile;
mod requests;

use std::fs::File;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::cache::CacheLayout;
use crate::config::{AreaConfig, Login, MountConfig};
use crate::control::{self, ControlServer};
use crate::fuse::mounts::{self, FuseUnavailable, UnmountError};
use crate::fuse::{MountError, MountHandle, MountOptions};
use crate::instance::{Instance, MountLookupError};
use crate::remote::webdav::auth::Credentials;
use crate::remote::webdav::{WebDavConfig, WebDavRemote};
use crate::remote::{Remote, RemoteError, RemoteResult};
use crate::vfs::{AreaSpec, Vfs, VfsError, VfsOptions, VfsSetup};

/// How long a normal unmount waits for the session to end.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after the unmount.
const IDLE_WAIT: Duration = Duration::from_secs(60);
/// Stopped by a signal (Ctrl-C, systemd): how long the queued uploads may take to finish
/// before the daemon exits anyway. What is left stays queued, durable, for the next mount.
const SIGNAL_UPLOAD_WAIT: Duration = Duration::from_secs(15);

/// A remote, built for one area, and the result of checking it.
pub struct Connected {
    pub remote: Arc<dyn Remote>,
    /// `Ok` when the area's root is a reachable collection that accepts the credentials.
    pub check: RemoteResult<()>,
}

/// Builds the remote of each area.
#[async_trait]
pub trait RemoteFactory: Send + Sync {
    /// Builds the remote for `area` (an error here is a configuration error) and checks it
    /// (the result goes in [`Connected::check`]: an unreachable server may still be mounted
    /// offline from the cache).
    async fn connect(
        &self,
        area: &AreaConfig,
        credentials: Option<&Credentials>,
    ) -> RemoteResult<Connected>;
}

/// The real factory: a [`WebDavRemote`] per area, checked with [`WebDavRemote::check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WebDavFactory;

#[async_trait]
impl RemoteFactory for WebDavFactory {
    async fn connect(
        &self,
        area: &AreaConfig,
        credentials: Option<&Credentials>,
    ) -> RemoteResult<Connected> {
        let mut cfg = WebDavConfig::new(area.url.clone());
        cfg.credentials = credentials.cloned();
        let remote = Arc::new(WebDavRemote::new(cfg)?);
        let check = remote.check().await;
        Ok(Connected { remote, check })
    }
}

/// Why the daemon could not mount, or stopped badly. Each message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("mount point {} does not exist; create it with: mkdir -p {}", .0.display(), .0.display())]
    MountPointMissing(PathBuf),
    #[error("mount point {} is not a directory", .0.display())]
    MountPointNotDir(PathBuf),
    #[error(
        "mount point {} is not empty: mounting over it would hide its files until the unmount; \
         use an empty directory, or pass --allow-non-empty (-o nonempty) to mount anyway",
        .0.display()
    )]
    MountPointNotEmpty(PathBuf),
    #[error("cannot use mount point {}: {source}", path.display())]
    MountPointAccess { path: PathBuf, source: io::Error },
    #[error("{} is already mounted (cloudmount); unmount it first with: cloudmount unmount {}", .0.display(), .0.display())]
    AlreadyMounted(PathBuf),
    #[error("{} is already a mount point ({fs_type}); choose another directory", path.display())]
    IsMountPoint { path: PathBuf, fs_type: String },
    #[error(transparent)]
    FuseUnavailable(#[from] FuseUnavailable),
    #[error("credentials refused by {url}: check the user name and password")]
    AuthRefused { url: String },
    #[error("{url} asks for a login: give --user USER (the password comes from CLOUDMOUNT_PASSWORD or --password-file)")]
    AuthRequired { url: String },
    #[error("access to {url} is forbidden for this account (HTTP 403)")]
    Forbidden { url: String },
    #[error("{url} does not exist on the server (HTTP 404)")]
    NotFound { url: String },
    #[error("{url} is not a WebDAV collection: {reason}")]
    NotCollection { url: String, reason: String },
    #[error("cannot reach {url} ({reason}), and nothing is cached for an offline mount")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Remote(RemoteError),
    #[error("cache directory {}: {source}", path.display())]
    CacheDir { path: PathBuf, source: io::Error },
    #[error(
        "cache directory {} is in use by {}; one cache serves one mount: to mount the same \
         account a second time, give that mount its own cache with --cache-dir DIR",
        dir.display(),
        match user { Some(m) => format!("the cloudmount mounted at {}", m.display()),
                     None => "another cloudmount process".to_string() }
    )]
    CacheInUse {
        dir: PathBuf,
        /// Where the process holding it has its mount, as it wrote in the lock file.
        user: Option<PathBuf>,
    },
    #[error("cannot open the filesystem: {0}")]
    Vfs(#[from] VfsError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot write the state file {}: {source}", path.display())]
    StateFile { path: PathBuf, source: io::Error },
    #[error("cannot listen for signals: {0}")]
    Signals(io::Error),
    #[error("stopped by a second {0} before the shutdown finished")]
    Interrupted(&'static str),
    #[error(transparent)]
    NotAMount(#[from] MountLookupError),
    #[error(transparent)]
    Unmount(#[from] UnmountError),
}

/// The WebDAV client's credentials for the configured login.
pub(crate) fn credentials(login: &Login) -> Credentials {
    Credentials {
        user: login.user.clone(),
        password: login.password.clone(),
    }
}

/// Turns the check of one area into an error, or a warning when the mount can go on offline.
fn classify(
    area: &AreaConfig,
    credentials: Option<&Credentials>,
    err: RemoteError,
    has_cache: bool,
) -> Result<String, DaemonError> {
    let url = area.url.clone();
    Err(match err {
        RemoteError::Auth { .. } if credentials.is_none() => DaemonError::AuthRequired { url },
        RemoteError::Auth { .. } => DaemonError::AuthRefused { url },
        RemoteError::Forbidden { .. } => DaemonError::Forbidden { url },
        RemoteError::NotFound { .. } => DaemonError::NotFound { url },
        RemoteError::NotADirectory { .. } => DaemonError::NotCollection {
            url,
            reason: "it is a file".into(),
        },
        RemoteError::Status { status, method, .. } => DaemonError::NotCollection {
            url,
            reason: format!("the server answers {method} with HTTP {status}"),
        },
        RemoteError::BadResponse { reason, .. } => DaemonError::NotCollection { url, reason },
        RemoteError::Transient { reason, .. } if has_cache => {
            return Ok(format!(
                "cannot reach {url} ({reason}): mounting from the cache, offline until it is back"
            ))
        }
        RemoteError::Transient { reason, .. } => DaemonError::Unreachable { url, reason },
        other => DaemonError::Remote(other),
    })
}

/// Checks the mount point: an existing directory that is not a mount point yet. A dead
/// cloudmount mount left by a crashed daemon (ENOTCONN) is detached, with a warning. Returns
/// the canonical path. The mount table is read before the path is touched: a live mount point
/// is recognised without sending it a request.
fn check_mountpoint(path: &Path, warnings: &mut Vec<String>) -> Result<PathBuf, DaemonError> {
    let abs = mounts::absolute_mount_path(path)
        .map_err(|_| DaemonError::MountPointMissing(path.to_path_buf()))?;
    check_not_mounted(&abs, warnings)?;
    let meta = match std::fs::metadata(&abs) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DaemonError::MountPointMissing(abs))
        }
        Err(source) => return Err(DaemonError::MountPointAccess { path: abs, source }),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return Err(DaemonError::MountPointNotDir(abs));
    }
    let canonical = abs
        .canonicalize()
        .map_err(|source| DaemonError::MountPointAccess {
            path: abs.clone(),
            source,
        })?;
    if canonical != abs {
        check_not_mounted(&canonical, warnings)?; // the last component was a symlink
    }
    Ok(canonical)
}

/// Whether the directory `dir` holds anything.
fn has_entries(dir: &Path) -> Result<bool, DaemonError> {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .map_err(|source| DaemonError::MountPointAccess {
            path: dir.to_path_buf(),
            source,
        })
}

/// Fails if something is mounted at `abs`, except a dead cloudmount mount, which is detached.
fn check_not_mounted(abs: &Path, warnings: &mut Vec<String>) -> Result<(), DaemonError> {
    let entry = mounts::mount_at(abs).map_err(|source| DaemonError::MountPointAccess {
        path: abs.to_path_buf(),
        source,
    })?;
    let Some(entry) = entry else {
        return Ok(());
    };
    if !entry.is_cloudmount() {
        return Err(DaemonError::IsMountPoint {
            path: abs.to_path_buf(),
            fs_type: entry.fs_type,
        });
    }
    match std::fs::symlink_metadata(abs) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            mounts::unmount(abs, true)?;
            warnings.push(format!(
                "{} held a dead cloudmount mount (its daemon had stopped); it was detached",
                abs.display()
            ));
            Ok(())
        }
        _ => Err(DaemonError::AlreadyMounted(abs.to_path_buf())),
    }
}

/// Creates the cache directory (0700) and takes its lock for the life of the daemon.
/// Takes the cache directory's lock for this process and writes in the lock file where it
/// mounts (`mountpoint=…`), so that a second mount of it can say where the first one is.
fn lock_cache_dir(dir: &Path, mountpoint: &Path) -> Result<File, DaemonError> {
    let io_err = |source| DaemonError::CacheDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let lock_path = CacheLayout::new(dir).daemon_lock();
    let mut lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err)?;
    // SAFETY: the descriptor is valid for the life of `lock`.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let user = std::fs::read_to_string(&lock_path).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("mountpoint="))
                    .map(PathBuf::from)
            });
            DaemonError::CacheInUse {
                dir: dir.to_path_buf(),
                user,
            }
        } else {
            io_err(e)
        });
    }
    // Informational only: the lock is the flock, not this text.
    let text = format!(
        "pid={}\nmountpoint={}\n",
        std::process::id(),
        mountpoint.to_string_lossy().replace(['\n', '\r'], " ")
    );
    let written = lock
        .set_len(0)
        .and_then(|()| std::io::Write::write_all(&mut lock, text.as_bytes()));
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot note the mount point in the cache's lock file");
    }
    Ok(lock)
}

/// Stop requests: the name of the signal (or any label, in tests).
pub type StopRequests = mpsc::UnboundedReceiver<&'static str>;

/// Forwards SIGINT and SIGTERM as stop requests. Install it before [`start`], so a signal sent
/// as soon as the mount is live is not lost. Must run inside a tokio runtime.
pub fn stop_signals() -> Result<StopRequests, DaemonError> {
    let (tx, rx) = mpsc::unbounded_channel();
    forward_signals(tx)?;
    Ok(rx)
}

/// Sends the name of each SIGINT and SIGTERM to `tx` (which other stop requests may share).
/// Must run inside a tokio runtime.
pub fn forward_signals(tx: mpsc::UnboundedSender<&'static str>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if tx.send(name).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// A live mount and what it needs until it stops.
pub struct Running {
    vfs: Arc<Vfs>,
    mount: MountHandle,
    instance: Instance,
    /// The control socket; `None` if it could not be set up (a warning says why).
    control: Option<ControlServer>,
    warnings: Vec<String>,
    _cache_lock: File,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("mount", &self.mount)
            .field("instance", &self.instance)
            .field("control", &self.control.as_ref().map(ControlServer::path))
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Checks everything, opens the filesystem and mounts it; returns once the mount is live.
pub async fn start(cfg: &MountConfig, factory: &dyn RemoteFactory) -> Result<Running, DaemonError> {
    start_sharing(cfg, factory, None).await
}

/// [`start`], with uploads that pause and resume with the rest of the account's (a profile's
/// daemon shares `space` with its sync folders; see [`crate::transfer::space`]).
pub async fn start_sharing(
    cfg: &MountConfig,
    factory: &dyn RemoteFactory,
    space: Option<Arc<crate::transfer::space::Space>>,
) -> Result<Running, DaemonError> {
    let mut warnings = Vec::new();
    let mountpoint = check_mountpoint(&cfg.mountpoint, &mut warnings)?;
    bandwidth::apply_at_start(cfg.upload_limit, cfg.download_limit);
    if !cfg.allow_non_empty && has_entries(&mountpoint)? {
        return Err(DaemonError::MountPointNotEmpty(mountpoint));
    }
    mounts::check_fuse_available()?;
    let has_cache = CacheLayout::new(&cfg.cache_dir).meta_db().exists();

    let creds = cfg.credentials.as_ref().map(credentials);
    let creds = creds.as_ref();
    let connected =
        futures_util::future::join_all(cfg.areas.iter().map(|a| factory.connect(a, creds))).await;
    let mut areas = Vec::with_capacity(cfg.areas.len());
    for (area, conn) in cfg.areas.iter().zip(connected) {
        let conn = conn.map_err(DaemonError::Remote)?;
        if let Err(e) = conn.check {
            warnings.push(classify(area, creds, e, has_cache)?);
        }
        areas.push(AreaSpec {
            name: area.name.clone(),
            url: area.url.to_string(),
            remote: conn.remote,
            read_only: area.read_only,
        });
    }

    // After the server checks, so that their errors come first.
    let cache_lock = lock_cache_dir(&cfg.cache_dir, &mountpoint)?;

    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let vfs = Vfs::new(VfsSetup {
        areas,
        opts: VfsOptions {
            dir_ttl: cfg.dir_cache_time,
            uid,
            gid,
            read_only: cfg.read_only,
            areas_as_folders: cfg.areas_as_folders,
            passthrough: cfg.passthrough,
            upload: {
                let mut u = crate::vfs::UploadOptions {
                    delay: cfg.write_back_delay,
                    ..crate::vfs::UploadOptions::default()
                };
                if let Some(d) = cfg.space_retry {
                    u.space_retry = d;
                }
                u.space = space;
                u
            },
        },
        cache_dir: cfg.cache_dir.clone(),
        cache_size: cfg.cache_size,
    })?;

    let options = MountOptions {
        allow_other: cfg.allow_other,
        read_only: cfg.read_only,
        source: mounts::source_name(&cfg.source),
    };
    let (vfs2, mp) = (vfs.clone(), mountpoint.clone());
    let mount = tokio::task::spawn_blocking(move || crate::fuse::mount(vfs2, &mp, &options))
        .await
        .map_err(|e| MountError::Thread(io::Error::other(e.to_string())))??;

    let instance = Instance::new(&cfg.runtime_dir, &mountpoint);
    if let Err(source) = instance.write_state(&cfg.source) {
        // `mount` is dropped here, which detaches it: no mount is left behind.
        return Err(DaemonError::StateFile {
            path: instance.state_file().to_path_buf(),
            source,
        });
    }
    // A mount without the control socket still works; only `status` and the waiting of
    // `unmount` are missing, so this is a warning.
    let handler = requests::Requests::new(vfs.clone());
    let control = match control::serve(instance.socket(), handler) {
        Ok(c) => Some(c),
        Err(e) => {
            warnings.push(format!(
                "{e}; `cloudmount status` will not work for this mount"
            ));
            None
        }
    };
    tracing::info!(
        source = %cfg.source,
        mountpoint = %mountpoint.display(),
        areas = cfg.areas.len(),
        cache_dir = %cfg.cache_dir.display(),
        "mount is live"
    );
    Ok(Running {
        vfs,
        mount,
        instance,
        control,
        warnings,
        _cache_lock: cache_lock,
    })
}

impl Running {
    /// What the user should know (offline mount, dead mount cleaned up).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn mountpoint(&self) -> &Path {
        self.mount.mountpoint()
    }

    /// Serves until a stop request or the kernel unmount, then shuts down cleanly. A second
    /// stop request during the shutdown gives up on it ([`DaemonError::Interrupted`]).
    pub async fn serve(mut self, mut stop: StopRequests) -> Result<(), DaemonError> {
        let mut stop_open = true;
        let signal = loop {
            tokio::select! {
                _ = self.mount.ended() => break None,
                s = stop.recv(), if stop_open => match s {
                    Some(s) => break Some(s),
                    None => stop_open = false,
                },
            }
        };
        match signal {
            Some(s) => tracing::info!("{s} received: unmounting (send it again to stop at once)"),
            None => tracing::info!("unmounted: shutting down"),
        }
        let result = tokio::select! {
            r = self.shutdown(signal.is_some()) => r,
            Some(s) = stop.recv(), if stop_open => Err(DaemonError::Interrupted(s)),
        };
        self.instance.remove_own_state();
        if let Some(c) = self.control.take() {
            c.shutdown();
        }
        result
    }

    async fn shutdown(&mut self, unmount: bool) -> Result<(), DaemonError> {
        if unmount {
            match self.mount.unmount(false, UNMOUNT_WAIT).await {
                Ok(()) => {}
                Err(UnmountError::Busy(p)) => {
                    tracing::warn!(
                        "{} is busy (a file is open there, or a working directory is inside): \
                         detaching it lazily; programs still using it get errors from now on",
                        p.display()
                    );
                    self.mount.unmount(true, UNMOUNT_WAIT).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unmount failed: detaching the mount lazily");
                    self.mount.unmount(true, UNMOUNT_WAIT).await?;
                }
            }
        }
        if tokio::time::timeout(IDLE_WAIT, self.mount.idle())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {IDLE_WAIT:?}; shutting down anyway");
        }
        // `cloudmount unmount --lazy` returned at once and left the queue to this daemon: it
        // is uploaded before the daemon exits (a stop signal ends the wait; what is left is
        // uploaded at the next mount).
        let queued = self.vfs.queued_files();
        if !unmount && queued > 0 && self.instance.finish_uploads_asked() {
            tracing::info!(
                files = queued,
                "unmounted lazily: uploading the files still queued before exiting"
            );
            self.vfs.wait_idle().await;
            tracing::info!("every queued file is uploaded");
        }
        // `cloudmount unmount` waits for the queue itself before the kernel unmount (or was
        // told not to); a signal gets a short grace period here.
        let queued = self.vfs.queued_files();
        if unmount && queued > 0 {
            tracing::info!(
                files = queued,
                "waiting up to {SIGNAL_UPLOAD_WAIT:?} for queued uploads"
            );
            if tokio::time::timeout(SIGNAL_UPLOAD_WAIT, self.vfs.wait_idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    files = self.vfs.queued_files(),
                    "uploads not finished; they stay queued (on local disk) for the next mount"
                );
            }
        }
        self.vfs.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Checks, mounts, and serves until SIGINT/SIGTERM or the kernel unmount.
pub async fn run(cfg: MountConfig, factory: &dyn RemoteFactory) -> Result<(), DaemonError> {
    let stop = stop_signals()?;
    let running = start(&cfg, factory).await?;
    for w in running.warnings() {
        tracing::warn!("{w}");
    }
    running.serve(stop).await
}

/// Options of [`unmount`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UnmountOptions {
    /// Detach at once even if busy; the kernel finishes when the last file is closed.
    pub lazy: bool,
    /// Have the daemon upload its whole queue before it exits (see
    /// [`Instance::ask_to_finish_uploads`]), for a lazy unmount that did not wait for it.
    pub finish_uploads: bool,
}

/// What [`unmount`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmounted {
    pub mountpoint: PathBuf,
    /// The daemon that was waited for, if one was found.
    pub daemon_pid: Option<u32>,
}

/// Unmounts the cloudmount mount at `path` and waits for its daemon to exit (it finishes the
/// uploads in flight first). `waiting` is called once if that takes more than a second.
pub fn unmount(
    runtime_dir: &Path,
    path: &Path,
    options: UnmountOptions,
    waiting: &mut dyn FnMut(u32),
) -> Result<Unmounted, DaemonError> {
    let instance = Instance::find(runtime_dir, path)?;
    let mp = instance.mountpoint().to_path_buf();
    let pid = instance.live_daemon();
    if options.finish_uploads && pid.is_some() {
        if let Err(e) = instance.ask_to_finish_uploads() {
            tracing::warn!(error = %e, "cannot ask the daemon to finish its uploads before it exits");
        }
    }
    mounts::unmount(&mp, options.lazy)?;
    // Lazily detached, the daemon serves the programs still using the mount until the last
    // one lets go: not waited for (that is what --lazy is for).
    if let Some(pid) = pid.filter(|_| !options.lazy) {
        let started = Instant::now();
        let mut told = false;
        while crate::instance::is_cloudmount_alive(pid) {
            if !told && started.elapsed() > Duration::from_secs(1) {
                waiting(pid);
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Left behind by a daemon that died without cleaning up.
    instance.remove_stale_state();
    Ok(Unmounted {
        mountpoint: mp,
        daemon_pid: pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::mem::MemRemote;

    /// Gives each area the same in-memory remote, checked like the real factory would.
    struct MemFactory(MemRemote);

    #[async_trait]
    impl RemoteFactory for MemFactory {
        async fn connect(
            &self,
            _area: &AreaConfig,
            _credentials: Option<&Credentials>,
        ) -> RemoteResult<Connected> {
            let remote: Arc<dyn Remote> = Arc::new(self.0.clone());
            let check = remote
                .stat(&crate::remote::RemotePath::root())
                .await
                .map(|_| ());
            Ok(Connected { remote, check })
        }
    }

    /// A factory whose check fails with the given error.
    struct FailingFactory(fn() -> RemoteError);

    #[async_trait]
    impl RemoteFactory for FailingFactory {
        async fn connect(
            &self,
            _area: &AreaConfig,
            _credentials: Option<&Credentials>,
        ) -> RemoteResult<Connected> {
            Ok(Connected {
                remote: Arc::new(MemRemote::new()),
                check: Err((self.0)()),
            })
        }
    }

    fn config(dir: &Path) -> MountConfig {
        let mp = dir.join("mnt");
        std::fs::create_dir_all(&mp).unwrap();
        MountConfig {
            name: "test".into(),
            profile: None,
            source: "mem".into(),
            mountpoint: mp,
            areas: vec![AreaConfig {
                name: String::new(),
                url: "http://127.0.0.1:9/".into(),
                read_only: false,
            }],
            areas_as_folders: false,
            credentials: None,
            cache_dir: dir.join("cache"),
            cache_size: 1 << 20,
            dir_cache_time: Duration::from_secs(1),
            write_back_delay: Duration::ZERO,
            space_retry: None,
            read_only: false,
            allow_other: false,
            passthrough: true,
            allow_non_empty: false,
            runtime_dir: dir.join("run"),
            upload_limit: None,
            download_limit: None,
        }
    }

    fn transient() -> RemoteError {
        RemoteError::Transient {
            method: "PROPFIND".into(),
            url: "http://127.0.0.1:9/".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn classify_turns_check_errors_into_one_line_each() {
        let area = AreaConfig {
            name: String::new(),
            url: "https://h/dav/".into(),
            read_only: false,
        };
        let creds = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        let auth = || RemoteError::Auth {
            url: "https://h/dav/".into(),
            status: 401,
        };
        let e = classify(&area, Some(&creds), auth(), false).unwrap_err();
        assert!(matches!(e, DaemonError::AuthRefused { .. }), "{e}");
        assert!(e.to_string().contains("check the user name and password"));
        let e = classify(&area, None, auth(), false).unwrap_err();
        assert!(e.to_string().contains("--user"), "{e}");
        let e = classify(
            &area,
            None,
            RemoteError::NotADirectory { url: "x".into() },
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a WebDAV collection"), "{e}");
        let e = classify(
            &area,
            None,
            RemoteError::Status {
                method: "PROPFIND".into(),
                url: "x".into(),
                status: 405,
            },
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTP 405"), "{e}");
        let e = classify(&area, None, transient(), false).unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("nothing is cached"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        let w = classify(&area, None, transient(), true).unwrap();
        assert!(w.contains("offline"), "{w}");
    }

    #[test]
    fn mount_point_checks() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Vec::new();
        let missing = dir.path().join("missing");
        assert!(matches!(
            check_mountpoint(&missing, &mut w),
            Err(DaemonError::MountPointMissing(_))
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_mountpoint(&file, &mut w),
            Err(DaemonError::MountPointNotDir(_))
        ));
        let ok = check_mountpoint(dir.path(), &mut w).unwrap();
        assert_eq!(ok, dir.path().canonicalize().unwrap());
        // `/proc` is always a mount point.
        let e = check_mountpoint(Path::new("/proc"), &mut w).unwrap_err();
        assert!(
            matches!(e, DaemonError::IsMountPoint { ref fs_type, .. } if fs_type == "proc"),
            "{e}"
        );
        assert!(w.is_empty());
    }

    #[test]
    fn cache_dir_is_locked_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a/b");
        let first = lock_cache_dir(&cache, Path::new("/home/u/Cloud")).unwrap();
        let e = lock_cache_dir(&cache, Path::new("/elsewhere")).unwrap_err();
        assert!(
            matches!(&e, DaemonError::CacheInUse { user: Some(m), .. } if m == Path::new("/home/u/Cloud")),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("mounted at /home/u/Cloud") && msg.contains("--cache-dir"),
            "{msg}"
        );
        drop(first);
        lock_cache_dir(&cache, Path::new("/elsewhere")).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_without_cache_fails_before_mounting() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let e = start(&cfg, &FailingFactory(transient)).await.unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable { .. }), "{e}");
        assert_eq!(
            mounts::mount_at(&cfg.mountpoint.canonicalize().unwrap()).unwrap(),
            None,
            "no mount left behind"
        );
    }

    /// Mounts the in-memory fake for real, then unmounts from outside like `fusermount3 -u`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mounts_and_stops_on_kernel_unmount() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let mem = MemRemote::new();
        let running = start(&cfg, &MemFactory(mem)).await.expect("mount");
        let mp = running.mountpoint().to_path_buf();
        let entry = mounts::mount_at(&mp).unwrap().expect("mounted");
        assert!(entry.is_cloudmount(), "{entry:?}");
        let instance = Instance::new(&cfg.runtime_dir, &mp);
        let state_file = instance.state_file().to_path_buf();
        assert_eq!(instance.live_daemon(), Some(std::process::id()));
        // The control socket answers with the real vfs's status.
        let socket = instance.socket().to_path_buf();
        assert_eq!(socket.parent(), state_file.parent());
        let status = control::query_status(&cfg.runtime_dir, &mp)
            .await
            .expect("status over the control socket");
        assert_eq!(status.queue.files, 0);
        assert_eq!(status.cache.budget_bytes, cfg.cache_size);
        // A second mount at the same place is refused.
        let e = start(&cfg, &MemFactory(MemRemote::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                DaemonError::AlreadyMounted(_) | DaemonError::CacheInUse { .. }
            ),
            "{e}"
        );

        let (_tx, rx) = mpsc::unbounded_channel();
        let served = tokio::spawn(running.serve(rx));
        let mp2 = mp.clone();
        tokio::task::spawn_blocking(move || mounts::unmount(&mp2, false))
            .await
            .unwrap()
            .expect("unmount");
        tokio::time::timeout(Duration::from_secs(20), served)
            .await
            .expect("serve returns after the unmount")
            .unwrap()
            .expect("clean stop");
        assert_eq!(mounts::mount_at(&mp).unwrap(), None);
        assert!(!state_file.exists(), "state file removed");
        assert!(!socket.exists(), "control socket removed");
    }

    /// A stop request unmounts and stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_request_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let running = start(&cfg, &MemFactory(MemRemote::new()))
            .await
            .expect("mount");
        let mp = running.mountpoint().to_path_buf();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send("test-stop").unwrap();
        tokio::time::timeout(Duration::from_secs(20), running.serve(rx))
            .await
            .expect("serve returns")
            .expect("clean stop");
        assert_eq!(mounts::mount_at(&mp).unwrap(), None);
    }
}
