//! The account's registry of sync folders as this computer keeps it: the changes it made that
//! still wait for the server (an outbox on disk: a folder added or removed while the server is
//! away is registered when it answers, never lost, even across a restart) and the last copy it
//! read (so `sync list` shows the other computers' folders offline too).
//!
//! One update of the registry runs at a time; a change submitted meanwhile waits for the next.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::computer::Computer;
use super::registry::{self, Change, Registry, RegistryError};
use crate::remote::Remote;

/// What is kept on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    /// Changes not yet in the server's registry, oldest first.
    #[serde(default)]
    pending: Vec<Change>,
    /// The registry as last read or written.
    #[serde(default)]
    last: Option<Registry>,
    /// When (seconds since the epoch).
    #[serde(default)]
    read_at: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    saved: Saved,
    /// Why the last exchange with the server failed.
    error: Option<String>,
}

/// This computer's side of the account's registry.
pub struct Account {
    remote: Arc<dyn Remote>,
    computer: Computer,
    file: PathBuf,
    state: Mutex<State>,
    /// One update or read at a time.
    busy: tokio::sync::Mutex<()>,
    /// One write of `file` at a time, each of the state as it is when it begins.
    writing: Arc<tokio::sync::Mutex<()>>,
    wake: Notify,
}

/// The registry as this computer sees it, for `sync list`.
#[derive(Debug, Clone)]
pub struct View {
    /// The last copy read, with this computer's waiting changes applied.
    pub registry: Registry,
    /// Changes that wait for the server.
    pub pending: usize,
    /// When the copy was read; `None`: never.
    pub read_at: Option<i64>,
    /// Why the last exchange with the server failed.
    pub error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Account {
    /// This computer's registry state kept in `file`. A damaged file is set aside (renamed
    /// `….damaged`) and started over: the next read fetches the registry again, and the
    /// daemon registers its folders again (see the service).
    pub fn open(
        remote: Arc<dyn Remote>,
        computer: Computer,
        file: PathBuf,
    ) -> std::io::Result<Account> {
        let saved = match std::fs::read(&file) {
            Ok(b) => match serde_json::from_slice::<Saved>(&b) {
                Ok(s) => s,
                Err(e) => {
                    let aside = file.with_extension("json.damaged");
                    tracing::warn!(error = %e, file = %file.display(), "the registry's local state is damaged: set aside as {}", aside.display());
                    std::fs::rename(&file, &aside)?;
                    Saved::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        Ok(Account {
            remote,
            computer,
            file,
            state: Mutex::new(State { saved, error: None }),
            busy: tokio::sync::Mutex::new(()),
            writing: Arc::new(tokio::sync::Mutex::new(())),
            wake: Notify::new(),
        })
    }

    pub fn computer(&self) -> &Computer {
        &self.computer
    }

    /// Queues a change for the server (kept on disk first) and wakes the loop.
    pub async fn submit(&self, change: Change) -> std::io::Result<()> {
        self.submit_all(vec![change]).await
    }

    /// Queues changes for the server (kept on disk first) and wakes the loop.
    pub async fn submit_all(&self, changes: Vec<Change>) -> std::io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        lock(&self.state).saved.pending.extend(changes);
        self.save().await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Writes the state to `file`, on the blocking pool.
    async fn save(&self) -> std::io::Result<()> {
        // Held until the write ends, even when the caller stops waiting.
        let writing = self.writing.clone().lock_owned().await;
        // Taken once the previous write is done: a later write never puts back an older state.
        let body =
            serde_json::to_vec_pretty(&lock(&self.state).saved).map_err(std::io::Error::other)?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let _writing = writing;
            save(&file, &body)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// The number of changes waiting.
    pub fn pending(&self) -> usize {
        lock(&self.state).saved.pending.len()
    }

    /// The registry as seen from here: the last copy with the waiting changes applied.
    pub fn view(&self) -> View {
        let s = lock(&self.state);
        let mut registry = s.saved.last.clone().unwrap_or_default();
        for c in &s.saved.pending {
            registry.apply(c);
        }
        View {
            registry,
            pending: s.saved.pending.len(),
            read_at: s.saved.read_at,
            error: s.error.clone(),
        }
    }

    /// Writes the waiting changes to the server's registry (or, with none waiting, reads it).
    /// On success, the registry as the server now has it. A failure keeps the changes waiting.
    pub async fn sync(&self) -> Result<Registry, RegistryError> {
        let _busy = self.busy.lock().await;
        let pending = lock(&self.state).saved.pending.clone();
        let result = if pending.is_empty() {
            registry::read(&*self.remote)
                .await
                .map(|r| r.map(|(reg, _)| reg).unwrap_or_default())
        } else {
            registry::update(&*self.remote, &pending).await
        };
        match &result {
            Ok(reg) => {
                {
                    let mut s = lock(&self.state);
                    // Changes submitted during the update stay for the next one.
                    s.saved.pending.drain(..pending.len());
                    s.saved.last = Some(reg.clone());
                    s.saved.read_at = Some(crate::localtime::unix_now());
                    s.error = None;
                }
                if let Err(e) = self.save().await {
                    tracing::warn!(error = %e, "cannot save the registry's local state");
                }
            }
            Err(e) => {
                tracing::info!(error = %e, pending = pending.len(), "the account's list of sync folders: not read or written; tried again later");
                lock(&self.state).error = Some(e.to_string());
            }
        }
        result
    }

    /// [`sync`](Self::sync), giving up waiting after `limit` (the exchange goes on meanwhile
    /// only until `limit`; what was not written stays waiting).
    pub async fn sync_within(&self, limit: Duration) -> Result<Registry, String> {
        match tokio::time::timeout(limit, self.sync()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the server did not answer within {limit:?}")),
        }
    }

    /// Runs until the process ends: writes waiting changes at once, reads the registry every
    /// `every`, and after a failure tries again sooner (2 s, doubling up to `every`). `seen`
    /// is told every registry read or written, and answers the changes to queue then.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        seen: impl Fn(&Registry) -> Vec<Change> + Send,
    ) {
        let mut retry = Duration::from_secs(2);
        loop {
            let wait = match self.sync().await {
                Ok(reg) => {
                    retry = Duration::from_secs(2);
                    if let Err(e) = self.submit_all(seen(&reg)).await {
                        tracing::warn!(error = %e, "cannot queue a change of the account's registry");
                    }
                    if self.pending() > 0 {
                        continue;
                    }
                    every
                }
                Err(_) => {
                    let w = retry.min(every);
                    retry = (retry * 2).min(every);
                    w
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Wakes the loop (a change to write, or a read wanted).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Writes the state whole into `file` (blocking).
fn save(file: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        crate::instance::ensure_private_dir(dir)?;
    }
    crate::atomic_file::write(file, body, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::faulty::{FaultKind, FaultyRemote, Op};
    use crate::remote::mem::MemRemote;
    use crate::sync::folder::{FolderId, Mode, Schedule};
    use crate::sync::registry::{ComputerRef, FolderInfo};

    fn me() -> Computer {
        Computer {
            id: "1".repeat(32),
            host: "laptop".into(),
            user: Some("u".into()),
            profile: Some("t".into()),
        }
    }

    fn add(id: &str) -> Change {
        Change::Activate {
            folder: FolderInfo {
                id: FolderId(id.into()),
                name: id.into(),
                remote: format!("Docs/{id}"),
                mode: Mode::Bidirectional,
                schedule: Schedule::Immediate,
            },
            computer: ComputerRef::from(&me()),
            local: PathBuf::from(format!("/home/u/{id}")),
            at: 1,
        }
    }

    #[tokio::test]
    async fn changes_made_offline_are_kept_across_a_restart_and_written_later() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("t.registry.json");
        let f = Arc::new(FaultyRemote::new(MemRemote::new()));
        f.fail_next(Op::Any, 1000, FaultKind::Transient);
        let a = Account::open(f.clone(), me(), file.clone()).unwrap();
        a.submit(add("a")).await.unwrap();
        a.submit(add("b")).await.unwrap();
        let e = a.sync().await.unwrap_err();
        assert!(e.is_transient());
        let v = a.view();
        assert_eq!(v.pending, 2);
        assert!(v.error.is_some());
        assert_eq!(
            v.registry.folders.len(),
            2,
            "the view shows our own changes"
        );
        drop(a);

        // The daemon restarts; the server is back.
        f.clear();
        let a = Account::open(f.clone(), me(), file.clone()).unwrap();
        assert_eq!(a.pending(), 2);
        let reg = a.sync().await.unwrap();
        assert_eq!(reg.folders.len(), 2);
        assert_eq!(a.pending(), 0);
        assert!(a.view().error.is_none());
        let on_server: Registry =
            serde_json::from_slice(&f.inner().file_bytes(registry::REGISTRY_PATH).unwrap())
                .unwrap();
        assert_eq!(on_server.folders.len(), 2);
        // Offline again: the copy read is still shown.
        f.fail_next(Op::Any, 1000, FaultKind::Transient);
        let a = Account::open(f.clone(), me(), file).unwrap();
        assert!(a.sync().await.is_err());
        let v = a.view();
        assert_eq!(v.registry.folders.len(), 2);
        assert!(v.read_at.is_some());
    }

    #[tokio::test]
    async fn a_refused_write_keeps_the_change_waiting() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(FaultyRemote::new(MemRemote::new()));
        let a = Account::open(f.clone(), me(), d.path().join("s.json")).unwrap();
        f.fail_next(Op::Put, 1, FaultKind::Status(403));
        a.submit(add("a")).await.unwrap();
        assert!(a.sync().await.is_err());
        assert_eq!(a.pending(), 1);
        a.sync().await.unwrap();
        assert_eq!(a.pending(), 0);
    }

    #[tokio::test]
    async fn a_damaged_state_file_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("s.json");
        std::fs::write(&file, "{{{").unwrap();
        let a = Account::open(Arc::new(MemRemote::new()), me(), file.clone()).unwrap();
        assert_eq!(a.pending(), 0);
        assert!(d.path().join("s.json.damaged").exists());
        a.submit(add("a")).await.unwrap();
        assert!(file.exists());
    }
}
