//! A profile's default sync folders (see [`crate::config::defaults`]), set up once per computer:
//! the first start of the profile's daemon here makes the active ones sync here and registers
//! the others in the account, inactive. Which defaults were set up is remembered in the data
//! directory (beside the profile's journal), so a default the user removes later stays
//! removed, and a default added to the config later is set up at the next start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::account_ops::info;
use super::{lock, Service};
use crate::config::DefaultFolder;
use crate::sync::folder::{FolderId, FolderSpec};
use crate::sync::registry::{Change, ComputerRef, Entry, FolderInfo};

/// How long the first start waits for the account's registry, read and then written.
const REGISTRY_WITHIN: Duration = Duration::from_secs(8);

/// What is kept of the defaults set up on this computer: their server paths.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Applied {
    applied: BTreeSet<String>,
}

fn read_applied(file: &Path) -> Applied {
    match std::fs::read(file) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            // Set up again rather than never: each step skips what is there already.
            tracing::warn!(error = %e, file = %file.display(), "unreadable record of the default folders set up");
            Applied::default()
        }),
        Err(_) => Applied::default(),
    }
}

fn write_applied(file: &Path, a: &Applied) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        crate::instance::ensure_private_dir(dir)?;
    }
    let body = serde_json::to_vec_pretty(a).map_err(std::io::Error::other)?;
    crate::atomic_file::write(file, &body, None)
}

impl Service {
    /// Sets up the profile's default folders not set up on this computer yet (recorded in
    /// `record`): an active one syncs here (its local folder created; files already there are
    /// merged by the first sync, nothing overwritten), an inactive one is registered in the
    /// account. One line per default set up or skipped, for the log.
    pub async fn apply_defaults(&self, record: &Path) -> Vec<String> {
        let defaults = &self.inner.cfg.default_folders;
        let mut applied = read_applied(record);
        let todo: Vec<&DefaultFolder> = defaults
            .iter()
            .filter(|d| !applied.applied.contains(&d.remote))
            .collect();
        if todo.is_empty() {
            return Vec::new();
        }
        let account = self.inner.account.get().cloned();
        if let Some(a) = &account {
            // What the account has already (another computer's first start, a forgotten one).
            if let Err(e) = a.sync_within(REGISTRY_WITHIN).await {
                tracing::info!(error = %e, "default folders: the account's list is not read; set up from what is known");
            }
        }
        let mut said = Vec::new();
        for d in todo {
            let r = if d.active {
                self.default_active(d).await
            } else {
                self.default_inactive(d).await
            };
            match r {
                Ok(line) => {
                    applied.applied.insert(d.remote.clone());
                    said.push(line);
                }
                // Not recorded: tried again at the next start.
                Err(e) => said.push(format!("default folder {}: not set up: {e}", d.name)),
            }
        }
        let file = record.to_path_buf();
        let written = tokio::task::spawn_blocking(move || write_applied(&file, &applied))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            said.push(format!(
                "cannot record the default folders set up in {}: {e}",
                record.display()
            ));
        }
        if let Some(a) = &account {
            if let Err(e) = a.sync_within(REGISTRY_WITHIN).await {
                said.push(format!(
                    "the account's list of sync folders is written later ({e})"
                ));
            }
        }
        said
    }

    /// An active default: synced here from now on.
    async fn default_active(&self, d: &DefaultFolder) -> Result<String, String> {
        let specs = lock(&self.inner.journal)
            .folders()
            .map_err(|e| e.to_string())?;
        if let Some(s) = specs.iter().find(|s| s.remote == d.remote) {
            return Ok(format!(
                "default folder {}: already synced here, at {}",
                d.name,
                s.local.display()
            ));
        }
        let account = self.inner.account.get();
        let entry: Option<Entry> = account.and_then(|a| {
            a.view()
                .registry
                .find(&FolderId(String::new()), &d.remote)
                .cloned()
        });
        let local = Self::prepare_local(&d.local)?;
        let id = match &entry {
            Some(e) => e.id.clone(),
            None => FolderId::random().map_err(|e| e.to_string())?,
        };
        // Default folders are the account's own: in the main area.
        let spec = FolderSpec::new(id, local.clone(), d.remote.clone(), d.mode, d.schedule);
        self.add_spec(&spec)?;
        if let Some(a) = account {
            let change = Change::Activate {
                folder: info(&spec, entry.as_ref().map_or(&d.name, |e| &e.name)),
                computer: ComputerRef::from(a.computer()),
                local: local.clone(),
                at: spec.added_at,
            };
            if let Err(e) = a.submit(change).await {
                tracing::warn!(error = %e, "cannot queue a change of the account's registry");
            }
        }
        self.spawn(spec.clone());
        Ok(format!(
            "default folder {}: syncing {} ⇄ {} ({}, {})",
            d.name,
            local.display(),
            spec.remote,
            spec.mode.as_str(),
            spec.schedule.as_str()
        ))
    }

    /// An inactive default: registered in the account, for `sync activate NAME`.
    async fn default_inactive(&self, d: &DefaultFolder) -> Result<String, String> {
        let a = self
            .inner
            .account
            .get()
            .ok_or("this daemon keeps no registry of the account's sync folders")?;
        let view = a.view().registry;
        let none = FolderId(String::new());
        if let Some(e) = view.find(&none, &d.remote) {
            return Ok(format!(
                "default folder {}: the account has it already (as {})",
                d.name, e.name
            ));
        }
        if view.forgotten(&none, &d.remote).is_some() {
            return Ok(format!(
                "default folder {}: forgotten in the account (sync forget): not registered again",
                d.name
            ));
        }
        let change = Change::Register {
            folder: FolderInfo {
                id: FolderId::random().map_err(|e| e.to_string())?,
                name: d.name.clone(),
                remote: d.remote.clone(),
                mode: d.mode,
                schedule: d.schedule,
            },
            by: ComputerRef::from(a.computer()),
            at: crate::localtime::unix_now(),
        };
        a.submit(change).await.map_err(|e| e.to_string())?;
        Ok(format!(
            "default folder {}: registered in the account, inactive ({} ⇄ {}, {}, {}; cloudmount sync activate {})",
            d.name,
            d.local.display(),
            d.remote,
            d.mode.as_str(),
            d.schedule.as_str(),
            d.name
        ))
    }

    /// Where `sync activate` puts a folder of the account when no local folder is given: the
    /// local folder of the profile's default folder of that server path, else the home
    /// directory's folder of its name.
    pub(super) fn default_local(&self, e: &Entry) -> Result<PathBuf, String> {
        if let Some(d) = self
            .inner
            .cfg
            .default_folders
            .iter()
            .find(|d| d.remote == e.remote)
        {
            return Ok(d.local.clone());
        }
        Ok(crate::config::Dirs::from_env()
            .map_err(|err| err.to_string())?
            .home
            .join(&e.name))
    }
}
