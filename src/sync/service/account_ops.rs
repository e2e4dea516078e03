//! The service's side of the account's registry: registering what this computer adds and
//! removes, `sync activate`, `sync forget`, the account's folders for `sync list`, and keeping
//! the registry and this computer's folders agreeing each time it is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{lock, FolderSpec, Service};
use crate::sync::account::Account;
use crate::sync::registry::names::Names;
use crate::sync::registry::{Change, ComputerRef, Entry, FolderInfo, Registry};
use crate::sync::report::{AccountReport, ActiveOn, RegisteredFolder};
use crate::sync::store::normalise_remote;

/// How long a command waits for the registry to be written before answering (what is not
/// written by then is written later).
const ANSWER_WITHIN: Duration = Duration::from_secs(8);
/// How long `sync list` waits for a fresh copy of the registry.
const LIST_WITHIN: Duration = Duration::from_secs(3);

/// Whether a folder of this computer is the registry's entry (the same id, or the same server
/// folder: two computers that added one server folder each share its entry).
fn is(spec: &FolderSpec, e: &Entry) -> bool {
    spec.area.is_empty() && (spec.id == e.id || spec.remote == e.remote)
}

pub(super) fn info(spec: &FolderSpec, name: &str) -> FolderInfo {
    FolderInfo {
        id: spec.id.clone(),
        name: name.to_string(),
        remote: spec.remote.clone(),
        mode: spec.mode,
        schedule: spec.schedule,
    }
}

/// Whether `key` names folder `spec` other than by its local path or id: its server path,
/// or its name in the account's `registry` (else its local folder's name).
pub(super) fn named(spec: &FolderSpec, key: &str, registry: Option<&Registry>) -> bool {
    if key.starts_with('/') {
        return false;
    }
    if normalise_remote(key).is_ok_and(|r| !r.is_empty() && r == spec.remote) {
        return true;
    }
    let entry_name = registry.and_then(|r| r.folders.iter().find(|e| is(spec, e)));
    match entry_name {
        Some(e) => e.name == key,
        None => local_name(spec) == key,
    }
}

fn local_name(spec: &FolderSpec) -> String {
    spec.local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.remote.clone())
}

impl Service {
    /// Keeps the account's registry from now on: the folders of this computer are registered
    /// (those added before are too), its changes are written, and the registry is read every
    /// `every`.
    pub fn attach_account(&self, account: Arc<Account>, every: Duration) {
        if self.inner.account.set(account.clone()).is_err() {
            return;
        }
        let svc = self.clone();
        let task = tokio::spawn(account.run(every, move |reg| svc.reconcile(reg)));
        *lock(&self.inner.account_task) = Some(task.abort_handle());
    }

    fn account(&self) -> Result<&Arc<Account>, String> {
        self.inner.account.get().ok_or_else(|| {
            "this daemon keeps no registry of the account's sync folders".to_string()
        })
    }

    /// This computer's folders of the main area, as the journal has them (a folder being added
    /// is there before its task starts): those the account's registry lists (a followed or
    /// shared folder is another account's, never registered in this one).
    fn specs(&self) -> Result<Vec<FolderSpec>, String> {
        let mut all = lock(&self.inner.journal)
            .folders()
            .map_err(|e| e.to_string())?;
        all.retain(|s| s.area.is_empty());
        Ok(all)
    }

    /// Queues a change and gives it a few seconds to reach the server; the words that say how
    /// it went, to end a command's message: `done` when written, else `later` (what happens
    /// once the server answers).
    async fn register(&self, change: Change, done: &str, later: &str) -> String {
        let Ok(account) = self.account() else {
            return String::new();
        };
        if let Err(e) = account.submit(change).await {
            tracing::warn!(error = %e, "cannot queue a change of the account's registry");
            return format!("; the account's list of sync folders could not be told ({e})");
        }
        match account.sync_within(ANSWER_WITHIN).await {
            Ok(_) => format!("; {done}"),
            Err(e) => format!(
                "; the account's list of sync folders could not be written ({e}): {later} as soon as the server answers (kept, retried)"
            ),
        }
    }

    /// After `sync set` of the mode or schedule: the folder's defaults in the account follow
    /// (what a computer that activates it later starts with). Queued, written by the
    /// registry's loop; the words that end the command's message.
    pub(super) async fn defaults_changed(&self, spec: &FolderSpec) -> String {
        let Ok(account) = self.account() else {
            return String::new();
        };
        let change = Change::Defaults {
            id: spec.id.clone(),
            remote: spec.remote.clone(),
            mode: spec.mode,
            schedule: spec.schedule,
        };
        match account.submit(change).await {
            Ok(_) => "; the account's defaults for this folder follow".to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue a change of the account's registry");
                format!("; the account's defaults could not be told ({e})")
            }
        }
    }

    /// After `sync add`: the folder registered in the account, active here.
    pub(super) async fn registered_added(&self, spec: &FolderSpec) -> String {
        let Ok(account) = self.account() else {
            return String::new();
        };
        let change = Change::Activate {
            folder: info(spec, &local_name(spec)),
            computer: ComputerRef::from(account.computer()),
            local: spec.local.clone(),
            at: crate::localtime::unix_now(),
        };
        self.register(
            change,
            "registered in the account (the other computers show it as inactive)",
            "registered in the account",
        )
        .await
    }

    /// After `sync remove`: this computer no longer in the folder's entry.
    pub(super) async fn registered_removed(&self, spec: &FolderSpec) -> String {
        let Ok(account) = self.account() else {
            return String::new();
        };
        if !spec.area.is_empty() {
            return String::new();
        }
        // An activation of this computer recorded before profiles were told apart was this
        // profile's: it had the folder (another profile that has it too records itself again).
        let change = Change::Deactivate {
            id: spec.id.clone(),
            remote: spec.remote.clone(),
            computer: account.computer().id.clone(),
            profile: account.computer().profile.clone(),
            unclaimed: true,
        };
        self.register(
            change,
            "the account's list says so (the other computers where it is active keep syncing it)",
            "the account's list says so",
        )
        .await
    }

    /// The account's folders, read anew when the server answers soon enough.
    pub(super) async fn account_report(&self) -> Result<AccountReport, String> {
        let account = self.account()?;
        // A list should not hang on a server that does not answer: the last copy serves.
        let _ = account.sync_within(LIST_WITHIN).await;
        let view = account.view();
        let me = ComputerRef::from(account.computer());
        let names = Names::of(&view.registry, &me);
        let specs = self.specs().unwrap_or_default();
        let folders = view
            .registry
            .folders
            .iter()
            .map(|e| RegisteredFolder {
                id: e.id.to_string(),
                name: e.name.clone(),
                remote: e.remote.clone(),
                mode: e.mode,
                schedule: e.schedule,
                added_by: names.name(&e.added_by),
                added_at: e.added_at,
                active_here: specs.iter().any(|s| is(s, e)),
                active: e
                    .active
                    .iter()
                    .map(|a| ActiveOn {
                        computer: a.computer.clone(),
                        profile: a.profile.clone(),
                        host: a.host.clone(),
                        shown: names.name(&a.who()),
                        local: a.local.clone(),
                        since: a.since,
                    })
                    .collect(),
            })
            .collect();
        Ok(AccountReport {
            shown: names.name(&me),
            computer: me.id,
            host: me.host,
            folders,
            pending: view.pending,
            read_at: view.read_at,
            error: view.error,
        })
    }

    /// The registry's entry that `name` names: its id, its server path or its name (any case
    /// when no name matches exactly). Read anew first when the server answers.
    async fn entry(&self, name: &str) -> Result<Entry, String> {
        let account = self.account()?;
        let fresh = account.sync_within(ANSWER_WITHIN).await;
        let view = account.view();
        if view.read_at.is_none() {
            return Err(format!(
                "the account's list of sync folders cannot be read: {}",
                fresh.err().unwrap_or_default()
            ));
        }
        let folders = &view.registry.folders;
        let remote = normalise_remote(name).unwrap_or_default();
        let mut found: Vec<&Entry> = folders
            .iter()
            .filter(|e| e.id.as_str() == name || e.remote == remote || e.name == name)
            .collect();
        if found.is_empty() {
            found = folders
                .iter()
                .filter(|e| e.name.to_lowercase() == name.to_lowercase())
                .collect();
        }
        match found.as_slice() {
            [e] => Ok((*e).clone()),
            [] => Err(format!(
                "the account has no sync folder {name:?} (cloudmount sync list shows them){}",
                fresh
                    .err()
                    .map(|e| format!("; as last read, the server does not answer now: {e}"))
                    .unwrap_or_default()
            )),
            many => Err(format!(
                "{name:?} names {} folders of the account: {}; give the server path or the id",
                many.len(),
                many.iter()
                    .map(|e| format!("{} (id {})", e.remote, e.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// `sync activate`: starts syncing a folder of the account here.
    pub(super) async fn activate(
        &self,
        name: &str,
        local: Option<PathBuf>,
    ) -> Result<String, String> {
        let e = self.entry(name).await?;
        if let Some(s) = self.specs()?.iter().find(|s| is(s, &e)) {
            return Err(format!(
                "{} is already synced on this computer, at {}",
                e.name,
                s.local.display()
            ));
        }
        let local = match local {
            Some(l) => l,
            None => self.default_local(&e)?,
        };
        let local = Self::prepare_local(&local)?;
        let had_files = std::fs::read_dir(&local)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let spec = FolderSpec::new(
            e.id.clone(),
            local.clone(),
            e.remote.clone(),
            e.mode,
            e.schedule,
        );
        self.add_spec(&spec)?;
        let account = self.account()?;
        let change = Change::Activate {
            folder: info(&spec, &e.name),
            computer: ComputerRef::from(account.computer()),
            local: local.clone(),
            at: spec.added_at,
        };
        let registered = self
            .register(
                change,
                "the account's list shows it active here",
                "the account's list shows it active here",
            )
            .await;
        self.spawn(spec.clone());
        let merge = if had_files {
            " (the files already there are kept: the first sync merges both sides, overwrites nothing, and keeps differing files as conflict copies)"
        } else {
            ""
        };
        Ok(format!(
            "activated {}: {} ⇄ {} ({}, {}); the first sync has started{merge}{registered}",
            e.name,
            local.display(),
            e.remote,
            e.mode.as_str(),
            e.schedule.as_str()
        ))
    }

    /// `sync forget`: the folder is no longer one of the account's sync folders. This computer
    /// stops syncing it now, the others when they next read the registry; no file is deleted.
    pub(super) async fn forget(&self, name: &str) -> Result<String, String> {
        let e = self.entry(name).await?;
        let here = self.specs()?.into_iter().find(|s| is(s, &e));
        if let Some(s) = &here {
            self.stop_local(s.id.as_str()).await?;
        }
        let account = self.account()?;
        let me = ComputerRef::from(account.computer());
        let names = Names::of(&account.view().registry, &me);
        let change = Change::Forget {
            id: e.id.clone(),
            by: me.clone(),
            at: crate::localtime::unix_now(),
        };
        let registered = self
            .register(
                change,
                "the account's list no longer has it",
                "removed from the account's list",
            )
            .await;
        // The others: not this profile (nor this computer's activation recorded before profiles
        // were told apart, when this profile had the folder: it was this profile's).
        let others: Vec<String> = e
            .active
            .iter()
            .filter(|a| {
                let was_ours = here.is_some() && a.computer == me.id && a.profile.is_none();
                !a.of(&me) && !was_ours
            })
            .map(|a| names.name(&a.who()))
            .collect();
        Ok(format!(
            "{} (server folder {}) is no longer a sync folder of the account{}{}; no file was deleted, anywhere{registered}",
            e.name,
            e.remote,
            if here.is_some() { "; this computer stopped syncing it" } else { "" },
            if others.is_empty() {
                String::new()
            } else {
                format!("; {} stop{} when {} next read{} the account's list", others.join(", "),
                    if others.len() == 1 { "s" } else { "" },
                    if others.len() == 1 { "it" } else { "they" },
                    if others.len() == 1 { "s" } else { "" })
            }
        ))
    }

    /// Makes the registry and this computer's folders agree, after each read or write:
    /// - a folder synced here is registered, active here at its local path (a folder added
    ///   before the registry existed, or lost from it, is registered again);
    /// - a folder synced here that was forgotten (`sync forget` elsewhere) after it was added
    ///   here stops here (its files stay);
    /// - an activation of this computer for a folder no longer synced here is withdrawn.
    ///
    /// The changes to queue (the registry's loop queues them).
    fn reconcile(&self, _read: &Registry) -> Vec<Change> {
        let mut out = Vec::new();
        let Ok(account) = self.account() else {
            return out;
        };
        // The view first: a folder added meanwhile is registered twice (harmless), never a
        // folder removed meanwhile registered again.
        let view = account.view().registry;
        let me = ComputerRef::from(account.computer());
        let Ok(specs) = self.specs() else {
            return out;
        };
        let now = crate::localtime::unix_now();
        for spec in &specs {
            let change = match view.find(&spec.id, &spec.remote) {
                // Recorded as this profile is now; an activation of this computer recorded
                // before profiles were told apart is taken over (it is this profile's: it has
                // the folder).
                Some(e) => match e.activation(&me) {
                    Some(a)
                        if a.local == spec.local
                            && a.host == me.host
                            && a.user == me.user
                            && !e.has_unclaimed(&me) =>
                    {
                        None
                    }
                    _ => Some(info(spec, &e.name)),
                },
                None => match view.forgotten(&spec.id, &spec.remote) {
                    Some(t) if t.at >= spec.added_at => {
                        tracing::info!(folder = %spec.local.display(), by = %t.by.host, "forgotten in the account: no longer synced here (nothing deleted)");
                        let svc = self.clone();
                        let id = spec.id.clone();
                        tokio::spawn(async move {
                            if let Err(e) = svc.stop_local(id.as_str()).await {
                                tracing::warn!(error = %e, "cannot stop a forgotten folder");
                            }
                        });
                        None
                    }
                    _ => Some(info(spec, &local_name(spec))),
                },
            };
            if let Some(folder) = change {
                tracing::info!(folder = %spec.local.display(), "registering in the account");
                out.push(Change::Activate {
                    folder,
                    computer: me.clone(),
                    local: spec.local.clone(),
                    at: now,
                });
            }
        }
        // Only this profile's own: an activation of this computer without a profile may be
        // another profile's (the one that has the folder takes it over).
        for e in &view.folders {
            if e.activation(&me).is_some() && !specs.iter().any(|s| is(s, e)) {
                tracing::info!(folder = %e.name, "not synced here any more: withdrawn from the account's list");
                out.push(Change::Deactivate {
                    id: e.id.clone(),
                    remote: e.remote.clone(),
                    computer: me.id.clone(),
                    profile: me.profile.clone(),
                    unclaimed: false,
                });
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "account_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "account_model_tests.rs"]
mod model_tests;
