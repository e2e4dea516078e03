//! One sync of one folder: check both roots, scan both sides, plan, apply; again while the
//! previous pass placed something the plan did not know (a conflict copy to upload), at most
//! [`MAX_PASSES`] times.
//!
//! Safety before anything is decided:
//! - **the local folder must be there and be the one we synced**: its marker file
//!   (`.cloudmount-sync`, holding the folder's id) is written at the first sync; a folder that
//!   is missing, or has lost its marker (a disk that is not mounted leaves an empty mount
//!   point), stops the folder with that reason — it is never read as "everything deleted";
//! - **the server folder must answer**: an error listing it (offline, 5xx, a timeout, a
//!   partial listing) stops the run; a server folder that is gone after it was synced stops it
//!   too (nothing deleted locally);
//! - the plan's mass-delete guard (see [`super::plan`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::apply::{self, ApplyError, Context};
use super::exclude::Excludes;
use super::folder::{FolderId, FolderSpec, Mode};
use super::journal::{Journal, JournalError};
use super::local;
use super::plan::{self, Inputs, Rules, Stop};
use super::poll::Seen;
use super::remote_scan;
use crate::remote::{RemoteError, RemotePath};
use crate::transfer::space::Check;

/// Name of the marker file at the root of every local sync folder.
pub const MARKER: &str = ".cloudmount-sync";

/// Most passes of one run.
pub const MAX_PASSES: usize = 3;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides agree (except `problems` files that could not be synced).
    Synced {
        changes: usize,
        conflicts: usize,
        problems: usize,
        /// Files a download-only folder keeps here only, as it should (listed with the
        /// problems, but not one: the run still ends in sync).
        kept_here: usize,
        /// The server is out of space: some uploads wait.
        full: Option<String>,
    },
    /// A safety rule stopped it before anything was done; the reason is for the user.
    Stopped(String),
    /// The server does not answer (or refuses the credentials): tried again later.
    Offline(String),
    /// Something else failed.
    Failed(String),
}

impl Outcome {
    /// The word the journal keeps for it.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Synced {
                problems: 0,
                full: None,
                ..
            } => "ok",
            Outcome::Synced { .. } => "partial",
            Outcome::Stopped(_) => "stopped",
            Outcome::Offline(_) => "offline",
            Outcome::Failed(_) => "failed",
        }
    }

    /// One line for the user.
    pub fn message(&self) -> String {
        match self {
            Outcome::Synced {
                changes,
                conflicts,
                problems,
                kept_here,
                full,
            } => {
                let n = |count: usize, one: &str, many: &str| {
                    format!("{count} {}", if count == 1 { one } else { many })
                };
                let mut s = if *changes == 0 {
                    "nothing to do".to_string()
                } else {
                    n(*changes, "change", "changes")
                };
                if *conflicts > 0 {
                    s.push_str(&format!(
                        ", {} (both versions kept)",
                        n(*conflicts, "conflict", "conflicts")
                    ));
                }
                if *problems > 0 {
                    s.push_str(&format!(", {} not synced", n(*problems, "file", "files")));
                }
                if *kept_here > 0 {
                    s.push_str(&format!(
                        ", {} kept here only (download-only)",
                        n(*kept_here, "file", "files")
                    ));
                }
                if let Some(f) = full {
                    s.push_str(&format!("; uploads wait: {f}"));
                }
                s
            }
            Outcome::Stopped(r) | Outcome::Offline(r) | Outcome::Failed(r) => r.clone(),
        }
    }
}

/// Writes the marker of a folder (first sync).
fn write_marker(root: &Path, id: &FolderId) -> std::io::Result<()> {
    let text = format!(
        "# cloudmount sync folder {id}\n\
         # This file tells cloudmount that this is the folder it syncs. If the folder is ever\n\
         # found without it (a disk that is not mounted, a folder replaced), syncing stops\n\
         # instead of deleting the server's files. Do not delete it.\n"
    );
    // A temporary name the excludes and the watcher ignore (the marker being written must not
    // set off a sync of its own).
    let tmp = root.join(format!("{}marker", super::exclude::TMP_PREFIX));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, root.join(MARKER))
}

/// The folder id a marker names, if it is one.
fn read_marker(root: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(root.join(MARKER)) {
        Ok(t) => Ok(t
            .lines()
            .find_map(|l| l.strip_prefix("# cloudmount sync folder "))
            .map(|s| s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks the local root; `Some(reason)` stops the run.
fn check_local_root(spec: &FolderSpec, synced_before: bool) -> Result<Option<String>, String> {
    let root = &spec.local;
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Ok(Some(format!(
                "{} is not a directory; nothing was deleted",
                root.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!(
                "the local folder {} is missing (is its disk mounted?); nothing was deleted on the server",
                root.display()
            )))
        }
        Err(e) => return Err(format!("{}: {e}", root.display())),
    }
    match read_marker(root) {
        Ok(Some(id)) if id == spec.id.as_str() => Ok(None),
        Ok(Some(other)) => Ok(Some(format!(
            "{} is marked as another sync folder ({other}) in {MARKER}; nothing was synced",
            root.display()
        ))),
        Ok(None) if synced_before => Ok(Some(format!(
            "{} has lost its marker file {MARKER}: its disk may not be mounted, or the folder was replaced; \
             nothing was deleted. If the folder is right, remove it and add it again: \
             cloudmount sync remove {p}; cloudmount sync add {p}",
            root.display(),
            p = root.display()
        ))),
        Ok(None) => {
            write_marker(root, &spec.id).map_err(|e| format!("{}: {e}", root.display()))?;
            Ok(None)
        }
        Err(e) => Err(format!("{}: {e}", root.display())),
    }
}

/// Everything one run needs besides the folder.
pub struct Env<'a> {
    pub remote: &'a dyn crate::remote::Remote,
    pub journal: &'a Mutex<Journal>,
    pub trash: &'a super::trash::Trash,
    pub device: String,
    pub progress: &'a apply::Progress,
    /// The account's room on the server, shared by every folder (and the mount) of the daemon.
    pub space: &'a crate::transfer::space::Space,
}

fn journal_err(e: JournalError) -> Outcome {
    Outcome::Failed(e.to_string())
}

fn remote_outcome(e: RemoteError) -> Outcome {
    match e {
        e @ RemoteError::Transient { .. } => Outcome::Offline(format!(
            "the server does not answer ({})",
            crate::health::why_unreachable(&e)
        )),
        e @ RemoteError::Auth { .. } => Outcome::Offline(e.to_string()),
        e => Outcome::Failed(e.to_string()),
    }
}

/// The server path of a folder.
pub fn remote_root(spec: &FolderSpec) -> Result<RemotePath, RemoteError> {
    RemotePath::new(&spec.remote)
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one sync of `spec`. `confirm` lets deletes beyond the folder's limit go ahead.
pub async fn run(env: &Env<'_>, spec: &FolderSpec, confirm: bool) -> Outcome {
    run_seen(env, spec, confirm).await.0
}

/// [`run`], and what it saw of the server folder at its end when it synced: its last listing,
/// and whether that listing matched the bases as the run left them (the polls that follow
/// compare only what changed since, see [`super::poll`]).
pub async fn run_seen(env: &Env<'_>, spec: &FolderSpec, confirm: bool) -> (Outcome, Option<Seen>) {
    let mut seen = None;
    let outcome = run_inner(env, spec, confirm, &mut seen).await;
    if !matches!(outcome, Outcome::Synced { .. }) {
        seen = None;
    }
    (outcome, seen)
}

async fn run_inner(
    env: &Env<'_>,
    spec: &FolderSpec,
    confirm: bool,
    seen: &mut Option<Seen>,
) -> Outcome {
    env.progress.reset();
    let mut bases = match lock(env.journal).bases(&spec.id) {
        Ok(b) => b,
        Err(e) => return journal_err(e),
    };
    match check_local_root(spec, !bases.is_empty()) {
        Ok(None) => {}
        Ok(Some(stop)) => return Outcome::Stopped(stop),
        Err(e) => return Outcome::Failed(e),
    }
    let root = match remote_root(spec) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let (excludes, warning) = Excludes::load(&spec.local);
    if let Some(w) = warning {
        tracing::warn!(folder = %spec.local.display(), "{w}");
    }
    let excludes = std::sync::Arc::new(excludes);
    let rules = Rules {
        mode: spec.mode,
        keep_deleted: spec.keep_deleted,
        delete_limit_percent: spec.delete_limit_percent,
        deletes_confirmed: confirm,
    };
    let mut ctx = Context {
        remote: env.remote,
        remote_root: root.clone(),
        local_root: spec.local.clone(),
        journal: env.journal,
        folder: spec.id.clone(),
        trash: env.trash,
        device: env.device.clone(),
        progress: env.progress,
        mode: spec.mode,
        uploads_paused: None,
    };
    let mut changes = 0;
    let mut conflicts = 0;
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut full = None;
    // Download-only: what exists only here (kept, never uploaded), as of the last pass.
    let mut local_only: Vec<String> = Vec::new();
    for pass in 0..MAX_PASSES {
        // The server side.
        let ex = excludes.clone();
        let scan =
            remote_scan::walk(env.remote, &root, &move |p, d| ex.is_excluded(p, d), None).await;
        let mut snapshot = None;
        let remote = match scan {
            Ok(w) => {
                snapshot = Some(w.snapshot);
                let s = w.scan;
                // Uploads of ours cut short (the daemon killed mid-upload).
                let ours = crate::transfer::temp::sync_prefix(spec.id.as_str());
                for t in s.temporaries.iter().filter(|t| t.name().starts_with(&ours)) {
                    match env.remote.delete(t).await {
                        Ok(()) => {
                            tracing::info!(path = %t, "removed a temporary upload left by a run cut short")
                        }
                        Err(e) => {
                            tracing::debug!(path = %t, error = %e, "cannot remove a temporary upload")
                        }
                    }
                }
                s.entries
            }
            Err(e) if e.is_not_found() && bases.is_empty() && spec.mode == Mode::DownloadOnly => {
                return Outcome::Stopped(format!(
                    "the server folder {} does not exist (a download-only folder is never \
                     created on the server)",
                    spec.remote
                ));
            }
            Err(e) if e.is_not_found() && bases.is_empty() => {
                if let Err(e) = crate::transfer::probe::mkdir_p(env.remote, &root).await {
                    return remote_outcome(e);
                }
                Default::default()
            }
            Err(e) if e.is_not_found() => {
                return Outcome::Stopped(format!(
                    "the server folder {} is gone; nothing was deleted locally. To upload the \
                     folder again, remove it and add it again",
                    spec.remote
                ))
            }
            Err(e) => return remote_outcome(e),
        };
        let mut remote = remote;
        if let Err(e) = find_hidden(env.remote, &root, &bases, &mut remote).await {
            return remote_outcome(e);
        }
        // Our uploads whose version was not learnt yet (a run cut short): from this listing,
        // once their content is checked (another client may have replaced them since).
        let adopted = match apply::adopt_uploaded_checked(env.remote, &root, &bases, &remote).await
        {
            Ok(a) => a,
            Err(e) => return remote_outcome(e),
        };
        if !adopted.is_empty() {
            let j = lock(env.journal);
            for (p, b) in &adopted {
                if let Err(e) = j.put_base(&spec.id, p, b) {
                    return journal_err(e);
                }
            }
            drop(j);
            for (p, b) in adopted {
                bases.insert(p, b);
            }
        }
        // The local side.
        // The bases go to the scan's thread and come back (no copy of every path).
        let (lroot, ex) = (spec.local.clone(), excludes.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let s = local::scan(&lroot, &ex, &bases);
            (s, bases)
        })
        .await;
        let scanned = match scanned {
            Ok((s, b)) => {
                bases = b;
                s
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let local = match scanned {
            Ok(s) => {
                let mut entries = s.entries;
                // A path the scan could not read is neither present nor absent: it (and what
                // is below it) counts as unchanged, never as deleted.
                for (p, _) in &s.problems {
                    let below = format!("{p}/");
                    for (bp, b) in bases.range(p.clone()..) {
                        if bp != p && !bp.starts_with(&below) {
                            break;
                        }
                        entries.entry(bp.clone()).or_insert_with(|| b.local.clone());
                    }
                }
                problems = s.problems;
                entries
            }
            Err(e) => return Outcome::Failed(format!("{}: {e}", spec.local.display())),
        };
        let inputs = Inputs {
            base: bases,
            local,
            remote,
        };
        if spec.mode == Mode::DownloadOnly {
            local_only = local_only_paths(&inputs);
        }
        let plan = plan::plan(&inputs, rules);
        if let Some(stop) = plan.stop {
            return Outcome::Stopped(stop_message(&stop, spec));
        }
        if plan.steps.is_empty() {
            *seen = snapshot.map(|s| Seen::new(s, &inputs.base, &inputs.remote, spec.mode));
            break;
        }
        tracing::info!(folder = %spec.local.display(), pass, steps = plan.steps.len(), "syncing");
        // While the account is out of space, one run per retry interval probes with its
        // uploads; the others keep theirs for later.
        ctx.uploads_paused = match env.space.check() {
            Check::Paused(p) => Some(p.reason),
            Check::Open | Check::Probe => None,
        };
        let applied = match apply::apply(&ctx, &plan, &inputs).await {
            Ok(a) => a,
            Err(ApplyError::Server(e)) => return remote_outcome(e),
            Err(ApplyError::Journal(e)) => return journal_err(e),
        };
        match (&applied.full, ctx.uploads_paused.is_some()) {
            (Some(_), false) => env.space.full(crate::transfer::space::OUT_OF_SPACE),
            (None, false) if applied.uploaded => env.space.landed(),
            _ => {}
        }
        changes += applied.done;
        conflicts += applied.conflicts;
        problems.extend(applied.problems);
        full = applied.full.or(full);
        bases = match lock(env.journal).bases(&spec.id) {
            Ok(b) => b,
            Err(e) => return journal_err(e),
        };
        // This pass's listing, against the bases the pass left: the server may have changed
        // since (our uploads, deletes), but a poll compares again whatever lists otherwise
        // than this listing did. After downloads only, it is in sync.
        *seen = snapshot.map(|s| Seen::new(s, &bases, &inputs.remote, spec.mode));
        if applied.uploaded {
            // Learn the versions of what we placed, at once (a later listing might already
            // show another client's change, which would then be taken for ours).
            let ex = excludes.clone();
            if let Ok(w) =
                remote_scan::walk(env.remote, &root, &move |p, d| ex.is_excluded(p, d), None).await
            {
                let adopted = apply::adopt_uploaded(&bases, &w.scan.entries);
                let j = lock(env.journal);
                for (p, b) in adopted {
                    if let Err(e) = j.put_base(&spec.id, &p, &b) {
                        return journal_err(e);
                    }
                    bases.insert(p, b);
                }
                drop(j);
                *seen = Some(Seen::new(w.snapshot, &bases, &w.scan.entries, spec.mode));
            }
        }
        if !applied.again {
            break;
        }
    }
    let kept_here = local_only.len();
    problems.extend(local_only.into_iter().map(|p| {
        let why =
            "kept here only: the folder is download-only (a read-only area), nothing is uploaded";
        (p, why.to_string())
    }));
    {
        let j = lock(env.journal);
        let keep: Vec<String> = problems.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = j.clear_problems_except(&spec.id, &keep) {
            return journal_err(e);
        }
        for (p, reason) in &problems {
            if let Err(e) = j.set_problem(&spec.id, p, reason) {
                return journal_err(e);
            }
        }
    }
    Outcome::Synced {
        changes,
        conflicts,
        problems: problems.len() - kept_here,
        kept_here,
        full,
    }
}

/// Some servers leave names starting with a dot out of their listings (nginx's dav-ext) while
/// the files are there. A synced path with such a name that a listing does not show is asked
/// about directly: only a "not found" makes it deleted. (Dot files another client puts there
/// stay unseen on such servers.)
async fn find_hidden(
    remote: &dyn crate::remote::Remote,
    root: &RemotePath,
    bases: &std::collections::BTreeMap<String, super::state::Base>,
    listed: &mut std::collections::BTreeMap<String, super::state::RemoteMeta>,
) -> Result<(), RemoteError> {
    let hidden: Vec<&String> = bases
        .keys()
        .filter(|p| !listed.contains_key(*p) && p.split('/').any(|s| s.starts_with('.')))
        .collect();
    for p in hidden {
        // Below a dot directory that is itself missing: its answer covers the children.
        if let Some((parent, _)) = p.rsplit_once('/') {
            if bases.contains_key(parent) && !listed.contains_key(parent) {
                continue;
            }
        }
        let full = root.join_path(p)?;
        match remote.stat(&full).await {
            Ok(e) => {
                listed.insert(p.clone(), remote_scan::meta_of(&e));
                if e.is_dir() {
                    // Its content is unlisted too: walk it.
                    let prefix = format!("{p}/");
                    let below = remote_scan::scan(remote, &full, &|_, _| false).await?;
                    for (rel, m) in below.entries {
                        listed.insert(format!("{prefix}{rel}"), m);
                    }
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn stop_message(stop: &Stop, spec: &FolderSpec) -> String {
    match stop {
        Stop::TooManyDeletes { side, count, total } => format!(
            "this sync would delete {count} of the {total} files on the {side} (more than {}%); \
             nothing was done. If that is what you want: cloudmount sync now {} --confirm",
            spec.delete_limit_percent,
            shell_path(&spec.local)
        ),
    }
}

fn shell_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-~+".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The local path of a folder's root, for messages.
pub fn describe(spec: &FolderSpec) -> PathBuf {
    spec.local.clone()
}

/// Download-only: the local items the server and the base do not know (a directory stands
/// for what is below it). They are kept and reported, never uploaded.
fn local_only_paths(inputs: &Inputs) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in inputs.local.keys() {
        if inputs.remote.contains_key(path) || inputs.base.contains_key(path) {
            continue;
        }
        // `path` is never `d` itself (the paths are a map's keys).
        if out.last().is_some_and(|d| plan::at_or_below(path, d)) {
            continue;
        }
        out.push(path.clone());
    }
    out
}
