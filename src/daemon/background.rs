//! Running the daemon in the background (`cloudmount mount` without `--foreground`).
//!
//! The command re-executes itself with arguments that make the new process the daemon
//! ([`spawn`]): the child (new session, stdin closed, stderr appended to the log file) re-reads
//! the same arguments, config and environment, so the password travels by inheritance, never
//! on a command line. The child ([`run_child`]) mounts and reports on its stdout, a pipe to the
//! parent: `warning: …` lines, then `ready` or `error: …`; it then points its stdout at
//! /dev/null and serves. The parent relays the report and succeeds only on `ready`.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::runtime::Runtime;

use super::{DaemonError, WebDavFactory};
use crate::config::{Dirs, MountConfig};
use crate::instance;

/// The report line that says the mount is live.
const READY: &str = "ready";
/// Prefix of a report line carrying a warning.
const WARNING: &str = "warning: ";
/// Prefix of the report line carrying the error that stopped the daemon.
const ERROR: &str = "error: ";

/// Why the background daemon could not be started, or did not get the mount live.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot create {}: {source}", path.display())]
    StateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the log file {}: {source}", path.display())]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot start the background daemon: {0}")]
    Spawn(io::Error),
    #[error("cannot read the background daemon's report: {0}")]
    Report(io::Error),
    /// The daemon's own error, as it reported it.
    #[error("{0}")]
    Failed(String),
    #[error("the background daemon stopped ({status}) before the mount was ready; see {}", log.display())]
    Stopped {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

/// The log file of the background daemon of `cfg`.
pub fn log_file(cfg: &MountConfig, dirs: &Dirs) -> PathBuf {
    dirs.state.join(format!("{}.log", cfg.name))
}

/// Starts the background daemon for `cfg`: this program again, with `child_args` (the command
/// line that makes it run [`run_child`] for the same mount). Relays the warnings it reports to
/// `warning`; returns once the mount is live.
pub fn spawn(
    cfg: &MountConfig,
    dirs: &Dirs,
    child_args: Vec<OsString>,
    warning: &mut dyn FnMut(&str),
) -> Result<(), BackgroundError> {
    instance::ensure_private_dir(&dirs.state).map_err(|source| BackgroundError::StateDir {
        path: dirs.state.clone(),
        source,
    })?;
    let log = log_file(cfg, dirs);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .map_err(|source| BackgroundError::Log {
            path: log.clone(),
            source,
        })?;
    let exe = std::env::current_exe().map_err(BackgroundError::Spawn)?;
    let mut child = std::process::Command::new(exe)
        .args(child_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(BackgroundError::Spawn)?;
    let Some(out) = child.stdout.take() else {
        return Err(BackgroundError::Report(io::Error::other(
            "the background daemon has no report pipe",
        )));
    };
    for line in BufReader::new(out).lines() {
        let line = line.map_err(BackgroundError::Report)?;
        if line == READY {
            return Ok(());
        } else if let Some(w) = line.strip_prefix(WARNING) {
            warning(w);
        } else if let Some(e) = line.strip_prefix(ERROR) {
            let _ = child.wait();
            return Err(BackgroundError::Failed(e.to_string()));
        }
    }
    let status = child.wait().map_err(BackgroundError::Report)?;
    Err(BackgroundError::Stopped { status, log })
}

/// Makes this process the leader of a new session, out of the terminal's reach: the first
/// step of the background daemon, before anything else runs.
pub fn new_session() {
    // SAFETY: setsid has no memory-safety preconditions; it fails harmlessly if this process
    // already leads a process group.
    unsafe { libc::setsid() };
}

/// The background daemon: mounts `cfg`, reports on stdout (the parent's pipe), then serves
/// until the mount ends. An error is logged and, before the mount is live, also reported.
pub fn run_child(cfg: &MountConfig, rt: &Runtime) -> Result<(), DaemonError> {
    // Hold no directory busy (it would keep another filesystem from being unmounted).
    let _ = std::env::set_current_dir("/");
    let mut report = io::stdout();
    let started = rt.block_on(async {
        let stop = super::stop_signals()?;
        let running = super::start(cfg, &WebDavFactory).await?;
        Ok::<_, DaemonError>((stop, running))
    });
    let (stop, running) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            let _ = writeln!(report, "{ERROR}{e}");
            let _ = report.flush();
            return Err(e);
        }
    };
    for w in running.warnings() {
        tracing::warn!("{w}");
        let _ = writeln!(report, "{WARNING}{w}");
    }
    let _ = writeln!(report, "{READY}");
    let _ = report.flush();
    detach_stdout();
    rt.block_on(running.serve(stop)).inspect_err(|e| {
        tracing::error!("{e}");
    })
}

/// Points stdout at /dev/null, closing the report pipe (the parent has exited or will).
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .write(true)
        .open(Path::new("/dev/null"))
    {
        // SAFETY: both descriptors are valid; dup2 atomically replaces fd 1.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}
