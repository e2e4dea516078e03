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

    /// The server refused (HTTP 403) to take a change of a folder of a followed or shared
    /// area: the folder becomes download-only (kept in the journal) and runs again at once,
    /// so the local edits it could not send are kept as conflict copies here and the server's
    /// versions come back. The main area's folders are left as they are (a 403 there is a
    /// problem of the path).
    pub(super) fn refused_writes(&self, task: &FolderTask, spec: &FolderSpec) {
        if spec.area.is_empty() || spec.mode == Mode::DownloadOnly {
            return;
        }
        if let Err(e) = self.update(task, |s| s.mode = Mode::DownloadOnly) {
            tracing::warn!(error = %e, "cannot make the folder download-only");
            return;
        }
        tracing::warn!(
            folder = %spec.local.display(),
            area = %spec.area,
            "the server refuses changes in this folder: it is download-only from now on"
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

impl Service {
    /// The area a new folder goes in, as stored (`""` for the main one), and the mode it
    /// gets: a read-only area's folders are download-only whatever was asked.
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
