//! Mounting: the fuser options of a cloudmount mount, [`mount`] (a [`Vfs`] on a mount point,
//! once the kernel's first request has come) and the [`MountHandle`] that waits for the end of
//! the session or unmounts it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{INodeNo, MountOption, SessionACL};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::mounts::{self, FuseUnavailable, UnmountError};
use super::{FuseFs, Inflight, MAX_READAHEAD};
use crate::vfs::Vfs;

/// How to mount.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Let other users (and root) in; needs `user_allow_other` in /etc/fuse.conf without root.
    pub allow_other: bool,
    /// Mount read-only (the kernel refuses writes with EROFS before they reach us).
    pub read_only: bool,
    /// What `mount` and `df` show as the source (see [`mounts::source_name`]); empty: plain
    /// `cloudmount`.
    pub source: String,
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Unavailable(#[from] FuseUnavailable),
    #[error(transparent)]
    AllowOther(#[from] mounts::AllowOtherRefused),
    #[error("cannot mount at {}: {source}", path.display())]
    Mount { path: PathBuf, source: io::Error },
    #[error("cannot start the FUSE session thread: {0}")]
    Thread(io::Error),
}

/// The fuser options of a cloudmount mount.
pub(super) fn fuser_config(options: &MountOptions) -> fuser::Config {
    let mut mount_options = vec![
        MountOption::FSName(if options.source.is_empty() {
            mounts::FS_NAME.into()
        } else {
            options.source.clone()
        }),
        // As `subtype=…` rather than `MountOption::Subtype`: fuser sends `Subtype` only to
        // fusermount, so a mount made directly by root would show plain `fuse`; the kernel and
        // fusermount3 both take `subtype=` and show `fuse.cloudmount`.
        MountOption::CUSTOM("subtype=cloudmount".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if options.read_only {
        mount_options.push(MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config
}

/// Mounts `vfs` at `mountpoint`. Blocks while the kernel mounts and sends its first request
/// (call it from `spawn_blocking` in async code); must run inside a tokio runtime, onto which
/// every request is spawned. Returns once the mount is live.
pub fn mount(
    vfs: Arc<Vfs>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<MountHandle, MountError> {
    mounts::check_fuse_available()?;
    if options.allow_other {
        mounts::check_allow_other()?;
    }
    let rt = Handle::current();
    let invalidations = vfs.take_invalidations();
    let fs = FuseFs::new(vfs, rt.clone());
    let inflight = fs.inflight.clone();
    let session = fuser::Session::new(fs, mountpoint, &fuser_config(options)).map_err(|e| {
        MountError::Mount {
            path: mountpoint.to_path_buf(),
            source: e,
        }
    })?;
    if let Some(mut rx) = invalidations {
        // Page-cache invalidations, from a task of their own: never inside a request handler
        // (the kernel may wait on a request while handling the notification).
        let notifier = session.notifier();
        rt.spawn(async move {
            while let Some(ino) = rx.recv().await {
                let n = notifier.clone();
                let r =
                    tokio::task::spawn_blocking(move || n.inval_inode(INodeNo(ino), 0, -1)).await;
                match r {
                    Ok(Ok(())) => tracing::debug!(ino, "kernel page cache invalidated"),
                    // ENOENT: the kernel no longer knows the inode; nothing to drop.
                    Ok(Err(e)) => tracing::debug!(ino, error = %e, "inval_inode"),
                    Err(e) => tracing::debug!(ino, error = %e, "inval_inode task"),
                }
            }
        });
    }
    let (ended_tx, ended_rx) = watch::channel(false);
    let path = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            if let Err(e) = session.run() {
                tracing::error!(mountpoint = %path.display(), error = %e, "FUSE session failed");
            }
            let _ = ended_tx.send(true);
        })
        .map_err(MountError::Thread)?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    match mounts::raise_read_ahead(mountpoint, MAX_READAHEAD >> 10) {
        Ok(kib) => tracing::debug!(kib, "kernel read-ahead"),
        // Not root, or no sysfs: reads arrive in smaller pieces, nothing else changes.
        Err(e) => tracing::debug!(error = %e, "kernel read-ahead left at its default"),
    }
    Ok(MountHandle {
        mountpoint: mountpoint.to_path_buf(),
        ended: ended_rx,
        inflight,
        detached: false,
    })
}

/// A live mount. Dropping it without [`MountHandle::unmount`] detaches the mount lazily.
pub struct MountHandle {
    mountpoint: PathBuf,
    ended: watch::Receiver<bool>,
    inflight: Inflight,
    /// Unmounted (maybe lazily) by [`MountHandle::unmount`]: nothing left to do on drop.
    detached: bool,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .field("ended", &*self.ended.borrow())
            .finish_non_exhaustive()
    }
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session has ended (the filesystem was unmounted).
    pub fn has_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Resolves when the session ends: after an unmount by anyone (`cloudmount unmount`,
    /// `fusermount3 -u`, `umount`). Cancel-safe.
    pub async fn ended(&mut self) {
        let _ = self.ended.wait_for(|e| *e).await;
    }

    /// Unmounts (lazily if asked: detached at once, finished by the kernel when the last file
    /// is closed) and, unless lazy, waits up to `wait` for the session to end.
    pub async fn unmount(&mut self, lazy: bool, wait: Duration) -> Result<(), UnmountError> {
        if !self.has_ended() {
            let path = self.mountpoint.clone();
            let res = tokio::task::spawn_blocking(move || mounts::unmount(&path, lazy))
                .await
                .unwrap_or_else(|e| {
                    Err(UnmountError::Failed {
                        path: self.mountpoint.clone(),
                        reason: e.to_string(),
                    })
                });
            match res {
                Ok(()) | Err(UnmountError::NotMounted(_)) => self.detached = true,
                Err(e) => return Err(e),
            }
        }
        if !lazy {
            let _ = tokio::time::timeout(wait, self.ended()).await;
        }
        Ok(())
    }

    /// Waits until no request is being handled (after the session ended, the replies of
    /// requests in flight are still being worked on).
    pub async fn idle(&self) {
        self.inflight.idle().await;
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if !self.detached && !self.has_ended() {
            if let Err(e) = mounts::unmount(&self.mountpoint, true) {
                tracing::warn!(error = %e, "unmount on drop failed");
            }
        }
    }
}
