//! The account's registry of sync folders: a small JSON file on the server that says which
//! folders the account syncs and on which computers each one is active, so that a folder added
//! on one computer shows on the others as *inactive*, ready to be activated there.
//!
//! Where: [`REGISTRY_PATH`], below the profile's URL (the first area's on a profile with areas:
//! the drive, `…/xios/` on CloudMe), the same base the sync folders' server paths are below.
//! A plain file in a plain folder, so any WebDAV server keeps it (CloudMe, Nextcloud, Apache).
//!
//! How it is written: read-modify-write, conditional on the version read (`If-Match` on its
//! ETag, `If-None-Match: *` when it does not exist yet), so two computers never overwrite each
//! other's change: the one that loses the race (412) reads again, applies its change to what
//! the other wrote, and tries again ([`update`]). A change is a small, idempotent edit
//! ([`Change`]), applied to whatever the file holds at that moment — never a whole list of
//! this computer's view written over the account's.
//!
//! Format: `{"format": 1, "folders": [...], "forgotten": [...]}`. Fields this build does not
//! know are kept as they are; a file of a newer format is read but never written.
//!
//! Who is active where: an activation names a *participant*, a computer's id and the profile
//! of that computer's config file that syncs the folder (optional `profile`, with the optional
//! `user` shown as `user@host`) — two profiles of one account in one `HOME` are two
//! participants of one computer. Both fields are optional additions to format 1: a reader that
//! does not know them keeps them (an activation's unknown fields are kept) and identifies by
//! the computer's id alone, which is right for every computer but its own. An activation without
//! a profile was recorded before profiles were told apart: it belongs to whichever profile of
//! that computer syncs the folder (has it in its journal), which takes it over — replaces it by
//! its own — when it next records itself ([`Change::Activate`], [`Change::Deactivate`]); a
//! profile that does not sync the folder leaves it alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::computer::Computer;
use super::folder::{FolderId, Mode, Schedule};
use crate::remote::{
    ByteRange, ETag, PutBody, PutCondition, Remote, RemoteError, RemotePath, RemoteResult,
};

/// The registry's folder, below the profile's URL.
pub const REGISTRY_DIR: &str = ".cloudmount";
/// The registry, below the profile's URL.
pub const REGISTRY_PATH: &str = ".cloudmount/sync-folders.json";
/// The format this build writes.
pub const FORMAT: u32 = 1;
/// Tombstones of forgotten folders kept (the newest).
const MAX_FORGOTTEN: usize = 200;
/// Read-modify-write rounds before giving up on a contended registry (each lost round means
/// another computer's change went in: the file is not stuck, it is busy).
const MAX_ROUNDS: u32 = 40;
/// How long after a write it is read back (longer than a registry's PUT takes to land).
const VERIFY_AFTER: Duration = Duration::from_millis(if cfg!(test) { 2 } else { 300 });

type Extra = BTreeMap<String, serde_json::Value>;

/// The whole registry file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub format: u32,
    #[serde(default)]
    pub folders: Vec<Entry>,
    /// Folders removed from the account, so that a computer still syncing one stops instead of
    /// registering it again.
    #[serde(default)]
    pub forgotten: Vec<Forgotten>,
    #[serde(flatten)]
    pub other: Extra,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            format: FORMAT,
            folders: Vec::new(),
            forgotten: Vec::new(),
            other: Extra::new(),
        }
    }
}

/// A participant (a profile of a computer), as the registry names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerRef {
    /// The computer's id.
    pub id: String,
    pub host: String,
    /// The user's login name, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The profile; `None`: recorded before profiles were told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl From<&Computer> for ComputerRef {
    fn from(c: &Computer) -> ComputerRef {
        ComputerRef {
            id: c.id.clone(),
            host: c.host.clone(),
            user: c.user.clone(),
            profile: c.profile.clone(),
        }
    }
}

/// A sync folder of the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: FolderId,
    /// What people call it (`sync activate NAME`): the local folder's name where it was added.
    pub name: String,
    /// Server path below the profile's URL, normalised (no leading or trailing `/`).
    pub remote: String,
    /// What a computer that activates it starts with.
    pub mode: Mode,
    pub schedule: Schedule,
    pub added_by: ComputerRef,
    /// Seconds since the Unix epoch.
    pub added_at: i64,
    /// The computers where it is active.
    #[serde(default)]
    pub active: Vec<Activation>,
    #[serde(flatten)]
    pub other: Extra,
}

impl Entry {
    /// Folder `folder`, added by `by` at `at`, active nowhere yet.
    pub fn new(folder: &FolderInfo, by: &ComputerRef, at: i64) -> Entry {
        Entry {
            id: folder.id.clone(),
            name: folder.name.clone(),
            remote: folder.remote.clone(),
            mode: folder.mode,
            schedule: folder.schedule,
            added_by: by.clone(),
            added_at: at,
            active: Vec::new(),
            other: Extra::new(),
        }
    }

    /// The activation of participant `who`, if the folder is active there.
    pub fn activation(&self, who: &ComputerRef) -> Option<&Activation> {
        self.active.iter().find(|a| a.of(who))
    }

    /// Whether an activation of `who`'s computer recorded before profiles were told apart is
    /// there (the profile that syncs the folder takes it over).
    pub fn has_unclaimed(&self, who: &ComputerRef) -> bool {
        who.profile.is_some() && self.active.iter().any(|a| a.unclaimed_of(who))
    }
}

/// A folder active on one participant (a profile of a computer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// The computer's id.
    pub computer: String,
    /// The profile there; `None`: recorded before profiles were told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub host: String,
    /// The user's login name there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The local folder there.
    pub local: PathBuf,
    /// Seconds since the Unix epoch.
    pub since: i64,
    #[serde(flatten)]
    pub other: Extra,
}

impl Activation {
    /// Whether this is participant `who`'s activation.
    pub fn of(&self, who: &ComputerRef) -> bool {
        self.computer == who.id && self.profile == who.profile
    }

    /// Whether this is an activation of `who`'s computer recorded without a profile.
    fn unclaimed_of(&self, who: &ComputerRef) -> bool {
        self.computer == who.id && self.profile.is_none()
    }

    /// Whether `who` replaces or withdraws this activation when it records itself: its own, or
    /// its computer's recorded without a profile.
    fn replaced_by(&self, who: &ComputerRef) -> bool {
        self.of(who) || self.unclaimed_of(who)
    }

    /// The participant, as the registry names it.
    pub fn who(&self) -> ComputerRef {
        ComputerRef {
            id: self.computer.clone(),
            host: self.host.clone(),
            user: self.user.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// A folder removed from the account (`sync forget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forgotten {
    pub id: FolderId,
    pub remote: String,
    pub by: ComputerRef,
    pub at: i64,
}

/// What a folder is, for [`Change::Activate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderInfo {
    pub id: FolderId,
    pub name: String,
    pub remote: String,
    pub mode: Mode,
    pub schedule: Schedule,
}

/// One edit of the registry. Each is idempotent: applied twice, it leaves what it left once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `computer` syncs the folder at `local`: the folder is registered if the account does
    /// not have it yet (the same id, or the same server path: two computers that add the same
    /// server folder share one entry), and the participant's activation is recorded (replacing
    /// an older one of the same participant, and one of its computer recorded without a
    /// profile; `since` is kept when the local folder is the same). A tombstone of the folder
    /// is lifted.
    Activate {
        folder: FolderInfo,
        computer: ComputerRef,
        local: PathBuf,
        at: i64,
    },
    /// Participant `computer`/`profile` no longer syncs the folder (by id, else by server
    /// path); the folder stays registered, active wherever else it is. With `unclaimed`, an
    /// activation of the computer recorded without a profile goes too (the profile had the
    /// folder: that activation was its own).
    Deactivate {
        id: FolderId,
        remote: String,
        computer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unclaimed: bool,
    },
    /// The folder's default mode and schedule (what a computer that activates it later
    /// starts with) become these; its activations stay.
    Defaults {
        id: FolderId,
        remote: String,
        mode: Mode,
        schedule: Schedule,
    },
    /// The folder is registered, active nowhere, if the account has neither it (the same id or
    /// server path) nor its tombstone (a folder the user forgot is not brought back): a
    /// profile's inactive default folder.
    Register {
        folder: FolderInfo,
        by: ComputerRef,
        at: i64,
    },
    /// The account no longer syncs the folder: its entry goes, a tombstone stays.
    Forget {
        id: FolderId,
        by: ComputerRef,
        at: i64,
    },
}

impl Registry {
    /// The entry of folder `id`, else the one of server path `remote`.
    pub fn find(&self, id: &FolderId, remote: &str) -> Option<&Entry> {
        self.index(id, remote).map(|i| &self.folders[i])
    }

    fn index(&self, id: &FolderId, remote: &str) -> Option<usize> {
        self.folders
            .iter()
            .position(|e| e.id == *id)
            .or_else(|| self.folders.iter().position(|e| e.remote == remote))
    }

    /// The tombstone of folder `id` or server path `remote`, the newest.
    pub fn forgotten(&self, id: &FolderId, remote: &str) -> Option<&Forgotten> {
        self.forgotten
            .iter()
            .filter(|f| f.id == *id || f.remote == remote)
            .max_by_key(|f| f.at)
    }

    /// Applies a change; whether the registry changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        let before = self.clone();
        match change {
            Change::Activate {
                folder,
                computer,
                local,
                at,
            } => {
                self.forgotten
                    .retain(|f| f.id != folder.id && f.remote != folder.remote);
                let i = match self.index(&folder.id, &folder.remote) {
                    Some(i) => i,
                    None => {
                        self.folders.push(Entry::new(folder, computer, *at));
                        self.folders.len() - 1
                    }
                };
                let e = &mut self.folders[i];
                let old = e.activation(computer).filter(|a| a.local == *local);
                let new = Activation {
                    computer: computer.id.clone(),
                    profile: computer.profile.clone(),
                    host: computer.host.clone(),
                    user: computer.user.clone(),
                    local: local.clone(),
                    since: old.map_or(*at, |a| a.since),
                    other: old.map(|a| a.other.clone()).unwrap_or_default(),
                };
                let mine: Vec<&Activation> = e
                    .active
                    .iter()
                    .filter(|a| a.replaced_by(computer))
                    .collect();
                if mine != [&new] {
                    e.active.retain(|a| !a.replaced_by(computer));
                    e.active.push(new);
                }
            }
            Change::Deactivate {
                id,
                remote,
                computer,
                profile,
                unclaimed,
            } => {
                if let Some(i) = self.index(id, remote) {
                    self.folders[i].active.retain(|a| {
                        a.computer != *computer
                            || (a.profile != *profile && !(*unclaimed && a.profile.is_none()))
                    });
                }
            }
            Change::Defaults {
                id,
                remote,
                mode,
                schedule,
            } => {
                if let Some(i) = self.index(id, remote) {
                    self.folders[i].mode = *mode;
                    self.folders[i].schedule = *schedule;
                }
            }
            Change::Register { folder, by, at } => {
                let known = self.index(&folder.id, &folder.remote).is_some()
                    || self.forgotten(&folder.id, &folder.remote).is_some();
                if !known {
                    self.folders.push(Entry::new(folder, by, *at));
                }
            }
            Change::Forget { id, by, at } => {
                if let Some(i) = self.folders.iter().position(|e| e.id == *id) {
                    let e = self.folders.remove(i);
                    self.forgotten.push(Forgotten {
                        id: e.id,
                        remote: e.remote,
                        by: by.clone(),
                        at: *at,
                    });
                    self.forgotten.sort_by_key(|f| std::cmp::Reverse(f.at));
                    self.forgotten.truncate(MAX_FORGOTTEN);
                }
            }
        }
        *self != before
    }
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("the account's list of sync folders ({REGISTRY_PATH}) is damaged ({0}); nothing was written to it: repair or delete it")]
    Damaged(String),
    #[error("the account's list of sync folders ({REGISTRY_PATH}) was written by a newer cloudmount (format {0}); it is not changed by this one: upgrade cloudmount")]
    Newer(u32),
    #[error("the account's list of sync folders ({REGISTRY_PATH}) kept changing under us ({MAX_ROUNDS} tries); tried again later")]
    Contended,
}

impl RegistryError {
    /// Whether trying again later may succeed (the server away, the file busy).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Remote(e) => e.is_transient(),
            RegistryError::Contended => true,
            _ => false,
        }
    }
}

fn path() -> RemotePath {
    RemotePath::new(REGISTRY_PATH).expect("a valid constant path")
}

/// Reads the registry: `None` when the account has none yet; else the registry and the version
/// read (`None` when the server gives no ETag).
pub async fn read(remote: &dyn Remote) -> Result<Option<(Registry, Option<ETag>)>, RegistryError> {
    let r = match remote.read_range(&path(), ByteRange::whole(), None).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let etag = r.etag.clone();
    let body = r.bytes().await?;
    let reg: Registry =
        serde_json::from_slice(&body).map_err(|e| RegistryError::Damaged(e.to_string()))?;
    Ok(Some((reg, etag)))
}

/// [`read`], waiting for a version `If-Match` can name: a weak ETag is not sent in `If-Match`
/// (Apache gives a file written within the last second a weak one, exactly when computers race),
/// so the read is repeated a little later; still weak, it counts as no version.
async fn read_versioned(
    remote: &dyn Remote,
) -> Result<Option<(Registry, Option<ETag>)>, RegistryError> {
    let mut tries = 0;
    loop {
        match read(remote).await? {
            Some((reg, Some(tag))) if tag.is_weak() => {
                tries += 1;
                if tries > 3 {
                    return Ok(Some((reg, None)));
                }
                tokio::time::sleep(Duration::from_millis(if cfg!(test) { 5 } else { 400 })).await;
            }
            other => return Ok(other),
        }
    }
}

/// Reads the registry, applies `changes` to it and writes it back under the version read; a
/// lost race is read again and retried. Returns the registry as written (or as read, when the
/// changes were all there already: then nothing is written).
///
/// A server that gives the file no ETag cannot be asked for `If-Match`: the file is written
/// without it and read back, and the round is retried while the changes are not all in it —
/// this narrows the window but cannot close it (see the README). Every write is read back a
/// moment later in the same way: servers check `If-Match` before they take the body, so two
/// conditional PUTs in flight at once can both be accepted.
pub async fn update(remote: &dyn Remote, changes: &[Change]) -> Result<Registry, RegistryError> {
    let file = path();
    for round in 0..MAX_ROUNDS {
        let (mut reg, cond) = match read_versioned(remote).await? {
            Some((reg, Some(tag))) => (reg, PutCondition::IfMatch(tag)),
            Some((reg, None)) => (reg, PutCondition::None),
            None => (Registry::default(), PutCondition::IfNoneMatch),
        };
        if reg.format > FORMAT {
            return Err(RegistryError::Newer(reg.format));
        }
        let mut changed = false;
        for c in changes {
            changed |= reg.apply(c);
        }
        if !changed {
            return Ok(reg);
        }
        reg.format = FORMAT;
        let body =
            serde_json::to_vec_pretty(&reg).map_err(|e| RegistryError::Damaged(e.to_string()))?;
        let create = cond == PutCondition::IfNoneMatch;
        match put(remote, &file, body, cond).await {
            Ok(()) => {
                // The write holds if a read a moment later shows every change: a server checks
                // `If-Match` before it takes the body and replaces the file after (Apache's
                // mod_dav, the embedded server), so two conditional PUTs in flight at once can
                // both succeed, the later replacing the earlier. The moment lets such a PUT land.
                tokio::time::sleep(VERIFY_AFTER).await;
                if let Some((mut back, _)) = read(remote).await? {
                    if changes.iter().all(|c| !back.apply(c)) {
                        return Ok(back);
                    }
                }
                tracing::debug!(round, "registry: our write was overwritten; again");
            }
            // The embedded server answers a creation that lost the race with 405 (taken for
            // "a collection"): the next read tells (a real collection there fails it).
            Err(RemoteError::IsADirectory { .. }) if create => {
                tracing::debug!(
                    round,
                    "registry: created meanwhile by another computer; again"
                );
            }
            Err(RemoteError::PreconditionFailed { .. } | RemoteError::AlreadyExists { .. }) => {
                tracing::debug!(
                    round,
                    create,
                    "registry: another computer wrote first; again"
                );
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(backoff(round)).await;
    }
    Err(RegistryError::Contended)
}

/// A short random pause that grows with the rounds lost, so racing computers fall apart.
fn backoff(round: u32) -> Duration {
    // Unit tests lose dozens of rounds on purpose: they need not wait for real.
    let step = if cfg!(test) { 1 } else { 10 };
    let mut b = [0u8; 2];
    let jitter = getrandom::getrandom(&mut b)
        .map(|()| u64::from(u16::from_le_bytes(b)) % (5 * step))
        .unwrap_or(0);
    Duration::from_millis((step * u64::from(round + 1)).min(50 * step) + jitter)
}

/// Makes the registry's folder; there already is fine.
async fn make_registry_dir(remote: &dyn Remote) -> RemoteResult<()> {
    let dir = RemotePath::new(REGISTRY_DIR).expect("a valid constant path");
    match remote.mkdir(&dir).await {
        Ok(()) | Err(RemoteError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the file; its folder is made when missing (before a creation: a server may answer a
/// conditional PUT into a missing folder with 412, as the embedded one does, not 409).
async fn put(
    remote: &dyn Remote,
    file: &RemotePath,
    body: Vec<u8>,
    cond: PutCondition,
) -> RemoteResult<()> {
    if cond == PutCondition::IfNoneMatch {
        make_registry_dir(remote).await?;
    }
    match remote
        .put(file, PutBody::from(body.clone()), cond.clone())
        .await
    {
        Err(RemoteError::MissingParent { .. } | RemoteError::NotFound { .. }) => {
            make_registry_dir(remote).await?;
            remote
                .put(file, PutBody::from(body), cond)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

#[path = "registry_names.rs"]
pub mod names;

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
