//! The profile's areas as the sync folders see them: a remote per area (same credentials), the
//! area a new folder goes in (a read-only area makes it download-only), and the folders of the
//! followed and shared areas (`sync list --following`).

use std::sync::Arc;

use std::sync::atomic::Ordering;

use super::{lock, FolderTask, Inner, Service};
use crate::remote::{Remote, RemotePath};
use crate::sync::folder::{FolderSpec, Mode};
use crate::sync::report::{FollowedFolder, SyncedHere};
use crate::sync::store::remote_within;

/// One area of the profile, for the sync folders.
#[derive(Clone)]
pub struct AreaRemote {
    /// The area's name, as the configuration gives it.
    pub name: String,
    pub remote: Arc<dyn Remote>,
    /// The configuration says `read_only = true`: its folders sync download-only.
    pub read_only: bool,
}

impl Inner {
    /// The area `name` (`""`: the main one): its index in the list, where the first area is
    /// the main one. `None` when the profile has no such area.
    fn area_index(&self, name: &str) -> Option<usize> {
        if name.is_empty() {
            return Some(0);
        }
        self.areas.iter().position(|a| a.name == name)
    }

    /// The server refused (HTTP 403) something a folder of a followed or shared area sent.
    /// What it refused and what it took decide the folder's new mode, kept in the journal with
    /// the reason (`sync list` shows it), and the folder runs again at once:
    ///
    /// - a change (an upload over a file, a delete, a move) was refused, and the server took a
    ///   new file or folder of ours (in this run or earlier since the folder started) and
    ///   refused none in this run: **new-files-only** (CloudMe's WebShare+, a drop box) — the
    ///   edits it could not send go up as conflict copies, deletes are undone;
    /// - a new file was refused too, or none was ever sent: **download-only**, as for a
    ///   read-only folder — the edits are kept here as conflict copies.
    ///
    /// A new-files-only folder whose new file is refused becomes download-only. The main
    /// area's folders are left as they are (a 403 there is a problem of the path).
    pub(super) fn refused_writes(&self, task: &FolderTask, spec: &FolderSpec) {
        let refused_new = task.progress.refused_new.swap(false, Ordering::SeqCst);
        let accepted_new = task.progress.accepted_new.load(Ordering::SeqCst);
        if spec.area.is_empty() {
            return;
        }
        let Some((mode, reason)) = mode_after_refusal(spec.mode, accepted_new, refused_new) else {
            return;
        };
        let since = crate::localtime::unix_now();
        let reason = format!("{reason}; since {}", crate::sync::report::local_time(since));
        if let Err(e) = self.update(task, |s| {
            s.mode = mode;
            s.mode_reason = reason.clone();
        }) {
            tracing::warn!(error = %e, mode = mode.as_str(), "cannot change the folder's mode");
            return;
        }
        tracing::warn!(
            folder = %spec.local.display(),
            area = %spec.area,
            mode = mode.as_str(),
            "{reason}"
        );
        task.now.store(true, Ordering::SeqCst);
        task.wake.notify_one();
    }

    /// The remote of a folder's area.
    pub(super) fn remote_of(&self, spec: &FolderSpec) -> Result<Arc<dyn Remote>, String> {
        if spec.area.is_empty() {
            return Ok(self.remote.clone());
        }
        match self.area_index(&spec.area) {
            Some(i) if i > 0 => Ok(self.areas[i].remote.clone()),
            _ => Err(format!(
                "the profile has no area {:?} any more (its configuration changed); nothing was \
                 synced",
                spec.area
            )),
        }
    }
}

/// The mode a folder of a followed or shared area takes after the server refused (HTTP 403)
/// something it sent, with the reason (`None`: it keeps its mode). `accepted_new`: the server
/// took a new file or folder of it (this run or earlier); `refused_new`: it refused one in
/// this run. See [`Inner::refused_writes`].
pub(super) fn mode_after_refusal(
    mode: Mode,
    accepted_new: bool,
    refused_new: bool,
) -> Option<(Mode, &'static str)> {
    match mode {
        Mode::DownloadOnly => None,
        // It sends nothing but new names: only a refused new one says more.
        Mode::NewFilesOnly if !refused_new => None,
        Mode::Bidirectional | Mode::UploadOnly if accepted_new && !refused_new => Some((
            Mode::NewFilesOnly,
            "the server took new files here but refused a change (HTTP 403): only new files \
             are sent",
        )),
        _ => Some((
            Mode::DownloadOnly,
            "the server refused what this computer sent here (HTTP 403): nothing is sent",
        )),
    }
}

impl Service {
    /// The area a new folder goes in, as stored (`""` for the main one), and the mode it
    /// gets: a read-only area's folders are download-only whatever was asked. New-files-only
    /// is refused in the main area: the drive takes changes, and the account's registry
    /// records the modes of the drive's folders for every computer (a cloudmount from before
    /// that mode could not read it).
    pub(super) fn area_for_add(
        &self,
        area: Option<&str>,
        mode: Mode,
    ) -> Result<(String, Mode), String> {
        let name = area.unwrap_or("");
        let i = self.inner.area_index(name).ok_or_else(|| {
            let known: Vec<String> = self
                .inner
                .areas
                .iter()
                .map(|a| format!("{:?}", a.name))
                .collect();
            format!(
                "profile {} has no area {name:?} (its areas: {})",
                self.inner.cfg.profile,
                if known.is_empty() {
                    "only its url".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
        // The main area is stored as `""`; a profile without areas has only it.
        let a = self.inner.areas.get(i);
        let stored = match a {
            Some(a) if i > 0 => a.name.clone(),
            _ => String::new(),
        };
        let read_only = a.is_some_and(|a| a.read_only);
        if stored.is_empty() && mode == Mode::NewFilesOnly && !read_only {
            return Err(
                "new-files-only is for folders of a followed or shared area (--area NAME): \
                 the drive takes changes"
                    .to_string(),
            );
        }
        Ok((stored, if read_only { Mode::DownloadOnly } else { mode }))
    }

    /// The top-level folders of the profile's areas other than the main one, marked with
    /// where each is synced here; and the first error met (an area that did not answer).
    pub(super) async fn following(&self) -> (Vec<FollowedFolder>, Option<String>) {
        let synced: Vec<FolderSpec> = lock(&self.inner.folders)
            .values()
            .map(|t| t.spec())
            .collect();
        let mut out = Vec::new();
        let mut error = None;
        for a in self.inner.areas.iter().skip(1) {
            let listing = match a.remote.list(&RemotePath::root()).await {
                Ok(l) => l,
                Err(e) => {
                    error.get_or_insert(format!("area {}: {e}", a.name));
                    continue;
                }
            };
            let mut names: Vec<String> = listing
                .children
                .iter()
                .filter(|e| e.is_dir())
                .map(|e| e.path.name().to_string())
                .collect();
            names.sort();
            for name in names {
                let synced: Vec<SyncedHere> = synced
                    .iter()
                    .filter(|s| s.area == a.name && remote_within(&s.remote, &name))
                    .map(|s| SyncedHere {
                        remote: s.remote.clone(),
                        local: s.local.clone(),
                    })
                    .collect();
                out.push(FollowedFolder {
                    area: a.name.clone(),
                    remote: name,
                    read_only: a.read_only,
                    synced,
                });
            }
        }
        (out, error)
    }
}

#[cfg(test)]
#[path = "areas_tests.rs"]
mod tests;
