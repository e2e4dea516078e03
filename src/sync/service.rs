//! The sync folders of one profile, run by its daemon: one task per folder, and the answers to
//! the `sync` and `settings` control requests.
//!
//! A folder's task:
//! - *immediate*: syncs at start, then whenever inotify reports a change (debounced: an
//!   editor's save is one sync), when the server folder changed (a look every
//!   `sync_poll_interval`, see [`super::poll`]: nothing else runs when nothing changed), and
//!   once an hour in full as a safety net (inotify can overflow or run out of watches);
//! - *daily / weekly*: runs when its time has come (a run missed while the machine was off runs
//!   at once), and sleeps until then;
//! - *paused*: does nothing until resumed.
//!
//! `sync now` wakes a task at once, whatever its schedule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::account::Account;
use super::apply::Progress;
use super::engine;
use super::folder::{FolderId, FolderSpec};
use super::journal::Journal;
use super::report::{ConflictReport, FolderReport, FolderState};
use super::trash::Trash;
use crate::control::protocol::{SyncAdd, SyncSet};
use crate::control::{ControlHandler, Request, Response};
use crate::remote::Remote;
use crate::transfer::space::Space;

mod account_ops;
mod areas;
mod defaults;
mod folder_loop;

use folder_loop::folder_loop;

pub use areas::AreaRemote;

/// How a profile's sync folders run.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The profile's name (messages).
    pub profile: String,
    /// Where new folders go on the server by default (a path below the profile's URL).
    pub sync_root: String,
    /// How often immediate folders look at the server.
    pub poll_interval: Duration,
    /// How often immediate folders are scanned in full anyway.
    pub rescan_interval: Duration,
    /// A burst of local changes is synced once it has been quiet this long...
    pub quiet: Duration,
    /// ...or this long after it began.
    pub max_delay: Duration,
    /// This computer's name, for conflict copies.
    pub device: String,
    /// The profile's default folders (see [`Service::apply_defaults`]).
    pub default_folders: Vec<crate::config::DefaultFolder>,
    /// The account's room on the server, shared by every folder (and the daemon's mount).
    pub space: Arc<Space>,
}

impl ServiceConfig {
    pub fn new(profile: &str, sync_root: &str, poll_interval: Duration) -> Self {
        ServiceConfig {
            profile: profile.to_string(),
            sync_root: sync_root.trim_matches('/').to_string(),
            poll_interval,
            rescan_interval: Duration::from_secs(3600),
            quiet: Duration::from_millis(400),
            max_delay: Duration::from_secs(5),
            device: crate::transfer::conflict::device_name(),
            default_folders: Vec::new(),
            space: Arc::new(Space::new(
                poll_interval.clamp(Duration::from_millis(100), Duration::from_secs(60)),
            )),
        }
    }
}

/// What a folder's task is doing, for `sync list`.
#[derive(Debug, Clone)]
struct Live {
    state: FolderState,
    reason: Option<String>,
    next_run: Option<i64>,
}

struct FolderTask {
    spec: Mutex<FolderSpec>,
    live: Mutex<Live>,
    progress: Progress,
    wake: Notify,
    /// `sync now` asked for a run.
    now: AtomicBool,
    /// `sync now --confirm`: deletes beyond the limit go ahead, once.
    confirm: AtomicBool,
    stopped: AtomicBool,
    /// Runs begun, and ended, since the daemon started.
    started: AtomicU64,
    runs: AtomicU64,
    handle: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FolderTask {
    fn spec(&self) -> FolderSpec {
        lock(&self.spec).clone()
    }
    fn set(&self, state: FolderState, reason: Option<String>, next_run: Option<i64>) {
        *lock(&self.live) = Live {
            state,
            reason,
            next_run,
        };
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    cfg: ServiceConfig,
    /// The main area's remote (folders whose `area` is empty).
    remote: Arc<dyn Remote>,
    /// The profile's areas, the main one first (empty: only `remote`).
    areas: Vec<AreaRemote>,
    journal: Arc<Mutex<Journal>>,
    trash: Trash,
    folders: Mutex<BTreeMap<FolderId, Arc<FolderTask>>>,
    /// Told when the daemon should stop (the `stop` request).
    stop: tokio::sync::mpsc::UnboundedSender<&'static str>,
    /// The account's registry of sync folders, when the daemon keeps one (see
    /// [`Service::attach_account`]), and the task that exchanges it with the server.
    account: std::sync::OnceLock<Arc<Account>>,
    account_task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Inner {
    /// Changes a folder's settings: in the journal, then for its task, which is woken.
    fn update(
        &self,
        t: &FolderTask,
        f: impl FnOnce(&mut FolderSpec),
    ) -> Result<FolderSpec, String> {
        let mut spec = t.spec();
        f(&mut spec);
        lock(&self.journal)
            .update_folder(&spec)
            .map_err(|e| e.to_string())?;
        *lock(&t.spec) = spec.clone();
        t.wake.notify_one();
        Ok(spec)
    }
}

/// The running sync folders of a profile.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// Starts a task for every folder of the journal. `stop` receives the `stop` request.
    pub fn start(
        cfg: ServiceConfig,
        remote: Arc<dyn Remote>,
        journal: Journal,
        trash: Trash,
        stop: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Result<Service, super::journal::JournalError> {
        Service::start_with_areas(cfg, remote, Vec::new(), journal, trash, stop)
    }

    /// [`Service::start`] for a profile with areas: `areas` lists them, the main one (whose
    /// remote is `remote`) first; a folder's `area` names one.
    pub fn start_with_areas(
        cfg: ServiceConfig,
        remote: Arc<dyn Remote>,
        areas: Vec<AreaRemote>,
        journal: Journal,
        trash: Trash,
        stop: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Result<Service, super::journal::JournalError> {
        let folders = journal.folders()?;
        let svc = Service {
            inner: Arc::new(Inner {
                cfg,
                remote,
                areas,
                journal: Arc::new(Mutex::new(journal)),
                trash,
                folders: Mutex::new(BTreeMap::new()),
                stop,
                account: std::sync::OnceLock::new(),
                account_task: Mutex::new(None),
            }),
        };
        for spec in folders {
            svc.spawn(spec);
        }
        Ok(svc)
    }

    fn spawn(&self, spec: FolderSpec) -> Arc<FolderTask> {
        let task = Arc::new(FolderTask {
            spec: Mutex::new(spec.clone()),
            live: Mutex::new(Live {
                state: FolderState::Starting,
                reason: None,
                next_run: None,
            }),
            progress: Progress::default(),
            wake: Notify::new(),
            now: AtomicBool::new(false),
            confirm: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            started: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            handle: Mutex::new(None),
        });
        let handle = tokio::spawn(folder_loop(self.inner.clone(), task.clone()));
        *lock(&task.handle) = Some(handle);
        lock(&self.inner.folders).insert(spec.id.clone(), task.clone());
        task
    }

    /// Stops every folder's task: the transfers in flight end (a cut transfer leaves only a
    /// temporary file, removed or ignored; the next run redoes it).
    pub async fn shutdown(&self) {
        if let Some(a) = lock(&self.inner.account_task).take() {
            a.abort();
        }
        let tasks: Vec<Arc<FolderTask>> = lock(&self.inner.folders).values().cloned().collect();
        for t in &tasks {
            t.stopped.store(true, Ordering::SeqCst);
            t.wake.notify_one();
        }
        for t in tasks {
            let h = lock(&t.handle).take();
            if let Some(h) = h {
                // A run finishes its transfers in flight; give it a while, then cut it.
                let abort = h.abort_handle();
                if tokio::time::timeout(Duration::from_secs(20), h)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        }
    }

    fn find(&self, key: &str) -> Result<Arc<FolderTask>, String> {
        let folders = lock(&self.inner.folders);
        if let Some(t) = folders.get(&FolderId(key.to_string())) {
            return Ok(t.clone());
        }
        let want = normalize(Path::new(key));
        for t in folders.values() {
            if normalize(&t.spec().local) == want {
                return Ok(t.clone());
            }
        }
        // Not a path: the folder's name in the account, or its server path.
        let tasks: Vec<Arc<FolderTask>> = folders.values().cloned().collect();
        drop(folders);
        // The account's registry as this computer sees it, taken once for all the folders.
        let registry = self.inner.account.get().map(|a| a.view().registry);
        let named: Vec<Arc<FolderTask>> = tasks
            .into_iter()
            .filter(|t| account_ops::named(&t.spec(), key, registry.as_ref()))
            .collect();
        match named.as_slice() {
            [one] => return Ok(one.clone()),
            [] => {}
            many => {
                return Err(format!(
                    "{key} names {} sync folders here ({}); give the local folder",
                    many.len(),
                    many.iter()
                        .map(|t| t.spec().local.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        Err(format!(
            "{key} is not a sync folder of profile {} (cloudmount sync list shows them)",
            self.inner.cfg.profile
        ))
    }

    fn report(&self, t: &FolderTask) -> FolderReport {
        let spec = t.spec();
        let live = lock(&t.live).clone();
        let j = lock(&self.inner.journal);
        let last = j.last_run(&spec.id).ok().flatten();
        let problems = j.problems(&spec.id).unwrap_or_default();
        let conflicts = j.conflicts(&spec.id).map(|c| c.len()).unwrap_or(0);
        FolderReport {
            id: spec.id.to_string(),
            local: spec.local.clone(),
            remote: spec.remote.clone(),
            area: spec.area.clone(),
            mode: spec.mode,
            mode_reason: spec.mode_reason.clone(),
            schedule: spec.schedule,
            keep_deleted: spec.keep_deleted,
            delete_limit_percent: spec.delete_limit_percent,
            state: live.state,
            reason: live.reason,
            next_run: live.next_run,
            last_sync: last.as_ref().map(|r| r.at),
            last_outcome: last.map(|r| r.message),
            runs: t.runs.load(Ordering::SeqCst),
            files_total: t.progress.files_total.load(Ordering::Relaxed),
            files_done: t.progress.files_done.load(Ordering::Relaxed),
            bytes_total: t.progress.bytes_total.load(Ordering::Relaxed),
            bytes_done: t.progress.bytes_done.load(Ordering::Relaxed),
            problems,
            conflicts,
        }
    }

    fn list(&self) -> Vec<FolderReport> {
        let tasks: Vec<Arc<FolderTask>> = lock(&self.inner.folders).values().cloned().collect();
        let mut out: Vec<FolderReport> = tasks.iter().map(|t| self.report(t)).collect();
        out.sort_by(|a, b| a.local.cmp(&b.local));
        out
    }

    /// Checks a new sync folder's local path and creates the folder when missing; the path,
    /// normalised.
    fn prepare_local(local: &Path) -> Result<PathBuf, String> {
        let local = normalize(local);
        if !local.is_absolute() {
            return Err(format!("{} is not an absolute path", local.display()));
        }
        refuse_cloudmount_mounts(&local)?;
        match std::fs::symlink_metadata(&local) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; add the folder it points to",
                    local.display()
                ))
            }
            Ok(_) => return Err(format!("{} is not a directory", local.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&local)
                    .map_err(|e| format!("cannot create {}: {e}", local.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", local.display())),
        }
        Ok(local)
    }

    /// Records a new folder (its task is started by the caller, once the folder is registered
    /// in the account: the first sync does not wait on, nor slow, the registry's requests).
    fn add_spec(&self, spec: &FolderSpec) -> Result<(), String> {
        lock(&self.inner.journal)
            .add_folder(spec)
            .map_err(|e| e.to_string())
    }

    async fn add(&self, req: SyncAdd) -> Result<String, String> {
        let local = Self::prepare_local(&req.local)?;
        let remote = match &req.remote {
            Some(r) => r.trim_matches('/').to_string(),
            None => {
                let name = local
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        format!(
                            "{} has no name to give the server folder; use --remote PATH",
                            local.display()
                        )
                    })?;
                if self.inner.cfg.sync_root.is_empty() {
                    name
                } else {
                    format!("{}/{name}", self.inner.cfg.sync_root)
                }
            }
        };
        crate::remote::RemotePath::new(&remote).map_err(|e| e.to_string())?;
        let (area, mode) = self.area_for_add(req.area.as_deref(), req.mode)?;
        let id = FolderId::random().map_err(|e| e.to_string())?;
        let spec = FolderSpec {
            area,
            keep_deleted: req.keep_deleted,
            ..FolderSpec::new(id, local.clone(), remote.clone(), mode, req.schedule)
        };
        self.add_spec(&spec)?;
        // The account's registry lists the main area's folders (a followed folder is
        // another account's).
        let registered = if spec.area.is_empty() {
            self.registered_added(&spec).await
        } else {
            String::new()
        };
        self.spawn(spec.clone());
        let shown = if spec.area.is_empty() {
            remote
        } else {
            format!("{remote} in area {}", spec.area)
        };
        Ok(format!(
            "added {} ⇄ {} ({}, {}); the first sync has started{registered}",
            local.display(),
            shown,
            spec.mode.as_str(),
            spec.schedule.as_str()
        ))
    }

    async fn set(&self, req: SyncSet) -> Result<String, String> {
        let t = self.find(&req.folder)?;
        if let Some(p) = req.delete_limit_percent {
            if p == 0 || p > 100 {
                return Err("the delete limit is a percentage from 1 to 100".into());
            }
        }
        if let Some(m) = req.mode {
            let spec = t.spec();
            let area = (!spec.area.is_empty()).then_some(spec.area.as_str());
            let (_, allowed) = self.area_for_add(area, m)?;
            if allowed != m {
                return Err(format!(
                    "{} is in a read-only area: it can only be download-only",
                    spec.local.display()
                ));
            }
        }
        let spec = self.inner.update(&t, |s| {
            if let Some(m) = req.mode {
                s.mode = m;
                s.mode_reason.clear();
            }
            if let Some(sch) = req.schedule {
                s.schedule = sch;
            }
            if let Some(k) = req.keep_deleted {
                s.keep_deleted = k;
            }
            if let Some(p) = req.delete_limit_percent {
                s.delete_limit_percent = p;
            }
        })?;
        let account = if req.mode.is_some() || req.schedule.is_some() {
            self.defaults_changed(&spec).await
        } else {
            String::new()
        };
        Ok(format!(
            "{}: {}, {}{}, pauses for confirmation beyond {}% deletes{account}",
            spec.local.display(),
            spec.mode.as_str(),
            spec.schedule.as_str(),
            if spec.keep_deleted {
                ", keeps deleted files on the server"
            } else {
                ""
            },
            spec.delete_limit_percent
        ))
    }

    async fn remove(&self, key: &str) -> Result<String, String> {
        let spec = self.stop_local(key).await?;
        let registered = self.registered_removed(&spec).await;
        Ok(format!(
            "{} is no longer synced; nothing was deleted (its files stay there and on the server in {}){registered}",
            spec.local.display(),
            spec.remote
        ))
    }

    /// Stops syncing a folder on this computer and forgets what the journal knew of it; no
    /// file is touched. The folder's settings.
    async fn stop_local(&self, key: &str) -> Result<FolderSpec, String> {
        let t = self.find(key)?;
        let spec = t.spec();
        t.stopped.store(true, Ordering::SeqCst);
        t.wake.notify_one();
        let h = lock(&t.handle).take();
        if let Some(h) = h {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        lock(&self.inner.folders).remove(&spec.id);
        lock(&self.inner.journal)
            .remove_folder(&spec.id)
            .map_err(|e| e.to_string())?;
        // Our marker goes (it names a folder that no longer exists); the files stay.
        let marker = spec.local.join(engine::MARKER);
        if let Err(e) = std::fs::remove_file(&marker) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(error = %e, "cannot remove {}", marker.display());
            }
        }
        Ok(spec)
    }

    fn conflicts(&self, key: Option<&str>) -> Result<Vec<ConflictReport>, String> {
        let tasks: Vec<Arc<FolderTask>> = match key {
            Some(k) => vec![self.find(k)?],
            None => lock(&self.inner.folders).values().cloned().collect(),
        };
        let specs: Vec<FolderSpec> = tasks.iter().map(|t| t.spec()).collect();
        let mut out = Vec::new();
        let j = lock(&self.inner.journal);
        for spec in specs {
            for c in j.conflicts(&spec.id).map_err(|e| e.to_string())? {
                out.push(ConflictReport {
                    folder: spec.local.clone(),
                    path: c.path,
                    copy: c.copy,
                    at: c.at,
                });
            }
        }
        Ok(out)
    }

    fn settings(&self, set: Option<(String, String)>) -> Result<BTreeMap<String, String>, String> {
        let j = lock(&self.inner.journal);
        if let Some((k, v)) = set {
            j.set_setting(&k, &v).map_err(|e| e.to_string())?;
        }
        let all: BTreeMap<String, String> = j
            .settings()
            .map_err(|e| e.to_string())?
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        drop(j);
        // Scheduled folders compute their next run again.
        for t in lock(&self.inner.folders).values() {
            t.wake.notify_one();
        }
        Ok(all)
    }
}

/// A sync folder inside a cloudmount mount (its files are in the cloud already), or holding
/// one (the sync would copy the whole mounted drive into the folder), is refused.
fn refuse_cloudmount_mounts(local: &Path) -> Result<(), String> {
    // The deepest existing ancestor, resolved (the folder itself may not exist yet).
    let mut real = local.to_path_buf();
    let mut rest = Vec::new();
    while !real.exists() {
        match (real.file_name().map(|n| n.to_os_string()), real.parent()) {
            (Some(n), Some(p)) => {
                rest.push(n);
                real = p.to_path_buf();
            }
            _ => break,
        }
    }
    let mut real = real.canonicalize().unwrap_or(real);
    for n in rest.into_iter().rev() {
        real.push(n);
    }
    let Ok(mounts) = crate::fuse::mounts::mounts() else {
        return Ok(());
    };
    for m in mounts.iter().filter(|m| m.is_cloudmount()) {
        if real.starts_with(&m.mount_point) {
            return Err(format!(
                "{} is inside the cloudmount mount at {}: its files are in the cloud already; \
                 a sync folder is a folder on a local disk",
                local.display(),
                m.mount_point.display()
            ));
        }
        if m.mount_point.starts_with(&real) {
            return Err(format!(
                "{} holds the cloudmount mount at {}: syncing it would copy the whole mounted \
                 drive; choose a folder that does not contain the mount",
                local.display(),
                m.mount_point.display()
            ));
        }
    }
    Ok(())
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[async_trait]
impl ControlHandler for Service {
    async fn handle(&self, request: Request) -> Response {
        let done = |r: Result<String, String>| match r {
            Ok(message) => Response::Done { message },
            Err(message) => Response::Error { message },
        };
        match request {
            Request::SyncList => Response::SyncFolders(self.list()),
            Request::SyncAdd(a) => done(self.add(a).await),
            Request::SyncSet(s) => done(self.set(s).await),
            Request::SyncNow { folder, confirm } => {
                let tasks = match folder {
                    Some(f) => match self.find(&f) {
                        Ok(t) => vec![t],
                        Err(e) => return Response::error(e),
                    },
                    None => lock(&self.inner.folders).values().cloned().collect(),
                };
                if tasks.is_empty() {
                    return Response::error("no sync folders: add one with cloudmount sync add DIR");
                }
                let mut tickets = Vec::new();
                for t in &tasks {
                    t.confirm.store(confirm, Ordering::SeqCst);
                    t.now.store(true, Ordering::SeqCst);
                    // The next run to begin starts after this request: the one to wait for.
                    tickets.push((t.spec().id.to_string(), t.started.load(Ordering::SeqCst) + 1));
                    t.wake.notify_one();
                }
                Response::SyncStarted(tickets)
            }
            Request::SyncPause { folder } => done(self.find(&folder).and_then(|t| {
                self.inner.update(&t, |s| s.paused = true)
                    .map(|s| format!("{} paused", s.local.display()))
            })),
            Request::SyncResume { folder } => done(self.find(&folder).and_then(|t| {
                self.inner.update(&t, |s| s.paused = false)
                    .map(|s| format!("{} resumed", s.local.display()))
            })),
            Request::SyncRemove { folder } => done(self.remove(&folder).await),
            Request::SyncFollowing => {
                let (folders, error) = self.following().await;
                match (folders.is_empty(), error) {
                    (true, Some(e)) => Response::error(e),
                    _ => Response::SyncFollowing(folders),
                }
            }
            Request::SyncAccount => match self.account_report().await {
                Ok(a) => Response::SyncAccount(Box::new(a)),
                Err(e) => Response::error(e),
            },
            Request::SyncActivate { name, local } => done(self.activate(&name, local).await),
            Request::SyncForget { name } => done(self.forget(&name).await),
            Request::SyncConflicts { folder } => match self.conflicts(folder.as_deref()) {
                Ok(c) => Response::SyncConflicts(c),
                Err(e) => Response::error(e),
            },
            Request::Settings { set } => match self.settings(set) {
                Ok(s) => Response::Settings(s),
                Err(e) => Response::error(e),
            },
            Request::Bandwidth { upload, download } => {
                crate::daemon::bandwidth::answer(upload, download)
            }
            Request::Stop => {
                let _ = self.inner.stop.send("stop request");
                Response::Done {
                    message: "stopping after the transfers in flight".into(),
                }
            }
            Request::States { .. } => Response::error(
                "this is the daemon of a profile's sync folders; the states of a folder's files are asked of a mount (cloudmount state DIR)",
            ),
            Request::Status
            | Request::Pin { .. }
            | Request::Free { .. }
            | Request::SendNow => Response::error(
                "this is the daemon of a profile's sync folders; status, pin and free are asked of a mount (cloudmount status MOUNTPOINT)",
            ),
        }
    }
}
