//! A whole folder's plan: every path of the base, the local scan and the server listing,
//! decided by [`super::decide`], then put in an order that can be carried out (parents before
//! children for creations, children before parents for deletes), with local renames turned into
//! server moves and the safety guards applied.
//!
//! Conventions the executor relies on:
//! - Steps run in the order given. First every creation, upload, download, move, record and
//!   file forget, parents before children (a move counts as a creation at its target, after
//!   whatever makes the target's parent); then the deletes (`DeleteRemote`, `TrashLocal`) and
//!   the forgets of directories, children first.
//! - A `DeleteRemote` or `TrashLocal` of a directory covers its whole subtree, and the journal
//!   records below it are forgotten with it: no step is given for the paths below. It is only
//!   given when everything on that side below it goes too (rows 16/17); otherwise the directory
//!   is kept (bidirectional: recreated on the side that deleted it; upload-only: its record is
//!   forgotten and the server keeps it with what must stay) and the paths below get their own
//!   steps.
//! - A `Forget` drops the record of its own path only.
//! - Upload-only, a `KeepServerCopyThenUpload` over a server directory moves that directory
//!   aside whole: it comes after the other creations and moves (some may move things out of
//!   it), and no server deletes are given below it.
//! - After a `MoveRemote`, the paths below the new name were decided as if the server's entries
//!   and the records of the old name had moved with it (a MOVE keeps what is below): the
//!   executor moves the journal records of `from` and below to `to`. An `If-Match` at a moved
//!   path names the version from before the move; a server that changes ETags on MOVE answers
//!   412, which is the usual re-discovery.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::decide::{decide, Action};
use super::folder::Mode;
use super::state::{Base, Kind, LocalMeta, RemoteMeta};
use crate::transfer::conflict::is_conflict_copy;

/// The inputs of a plan. Paths are relative to the folder's root, `/`-separated, without a
/// leading slash; the root itself is not in the maps.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub base: BTreeMap<String, Base>,
    pub local: BTreeMap<String, LocalMeta>,
    pub remote: BTreeMap<String, RemoteMeta>,
}

/// The folder's settings that matter to the plan.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub mode: Mode,
    pub keep_deleted: bool,
    /// Pause when one side would lose more than this share of its files (percent of the base's
    /// files).
    pub delete_limit_percent: u8,
    /// The user confirmed the deletes (`sync now --confirm`): the limit does not apply.
    pub deletes_confirmed: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `action` at `path`.
    Do { path: String, action: Action },
    /// A local rename (same inode, the old path gone, the new one new) done on the server as a
    /// MOVE of `from` to `to`; for a directory it covers everything below it.
    MoveRemote { from: String, to: String },
}

/// Why a plan stops before doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The sync would delete `count` of the `total` files of the `side` ("server" or "local")
    /// the base knows, more than the limit.
    TooManyDeletes {
        side: &'static str,
        count: usize,
        total: usize,
    },
}

/// A plan: the steps in order, or the reason not to run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub stop: Option<Stop>,
}

/// Makes the plan.
pub fn plan(inputs: &Inputs, rules: Rules) -> Plan {
    let mut base = inputs.base.clone();
    let mut remote = inputs.remote.clone();
    // Row 18. Upload-only folders that keep deleted files keep the old name on the server too:
    // there a rename is an upload of the new name and a forget of the old one.
    // Download-only folders never move anything on the server: the old name comes back, the
    // new one stays local. New-files-only folders neither: the old name comes back, the new
    // one is uploaded as a new file.
    let moves = if rules.mode == Mode::Bidirectional
        || (rules.mode == Mode::UploadOnly && !rules.keep_deleted)
    {
        detect_renames(&inputs.local, &mut base, &mut remote)
    } else {
        Vec::new()
    };
    let local = &inputs.local;

    let paths: BTreeSet<&String> = base
        .keys()
        .chain(local.keys())
        .chain(remote.keys())
        .collect();
    let mut actions: BTreeMap<String, Action> = BTreeMap::new();
    for path in paths {
        let action = decide(
            rules.mode,
            rules.keep_deleted,
            is_conflict_copy(last_segment(path)),
            base.get(path),
            local.get(path),
            remote.get(path),
        );
        if action != Action::Nothing {
            actions.insert(path.clone(), action);
        }
    }
    keep_unsafe_dirs(&mut actions, rules.mode, local, &remote);
    // Upload-only, a local file where the server holds a directory: the directory moves
    // aside whole (to a conflict-copy name), so the server deletes below it are moot (nothing
    // is left there to delete, and the moved copy keeps it). Their records go at the next
    // sync, when both sides no longer hold them.
    drop_below(
        &mut actions,
        |p, a| {
            *a == Action::KeepServerCopyThenUpload
                && remote.get(p).map(|m| m.kind) == Some(Kind::Dir)
        },
        |a| *a == Action::DeleteRemote,
    );
    if matches!(rules.mode, Mode::DownloadOnly | Mode::NewFilesOnly) {
        // Download-only and new-files-only, a local directory where the server holds a file:
        // the directory moves aside here whole (to a conflict-copy name, with what is below
        // it), so every step below it is moot: the trashes and forgets (the copy keeps all of
        // it, untracked; the move forgets the records) and, new-files-only, the uploads and
        // server folders (the copy, new, goes up whole by the next pass).
        drop_below(
            &mut actions,
            |p, a| {
                *a == Action::Conflict
                    && local.get(p).map(|m| m.kind) == Some(Kind::Dir)
                    && remote.get(p).map(|m| m.kind) == Some(Kind::File)
            },
            |_| true,
        );
    }

    let total = inputs
        .base
        .values()
        .filter(|b| b.local.kind == Kind::File)
        .count();
    let server = count(&actions, &Action::DeleteRemote, |p| {
        remote.get(p).map(|m| m.kind)
    });
    let local_count = count(&actions, &Action::TrashLocal, |p| {
        local.get(p).map(|m| m.kind)
    });
    for (side, n) in [("server", server), ("local", local_count)] {
        if !rules.deletes_confirmed
            && n > 0
            && total >= 4
            && n * 100 > total * usize::from(rules.delete_limit_percent)
        {
            return Plan {
                steps: Vec::new(),
                stop: Some(Stop::TooManyDeletes {
                    side,
                    count: n,
                    total,
                }),
            };
        }
    }

    Plan {
        steps: order(actions, moves, &base, local, &remote),
        stop: None,
    }
}

/// The last `/`-separated segment of a path.
fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The keys of `map` strictly below `dir`.
fn below<'a, V>(map: &'a BTreeMap<String, V>, dir: &str) -> impl Iterator<Item = &'a String> {
    map.range(format!("{dir}/")..format!("{dir}0"))
        .map(|(k, _)| k)
}

/// Whether `path` is `dir` or below it.
pub(super) fn at_or_below(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// How many files `action` removes on one side (`kind` says what that side holds at a path).
fn count(
    actions: &BTreeMap<String, Action>,
    action: &Action,
    kind: impl Fn(&str) -> Option<Kind>,
) -> usize {
    actions
        .iter()
        .filter(|(p, a)| *a == action && kind(p) == Some(Kind::File))
        .count()
}

/// Row 18: local renames whose old name the server still holds unchanged become server moves.
/// The records and server entries of each old name (and what is below it) are moved to the new
/// name in `base` and `remote`, so the paths below are then decided as moved.
fn detect_renames(
    local: &BTreeMap<String, LocalMeta>,
    base: &mut BTreeMap<String, Base>,
    remote: &mut BTreeMap<String, RemoteMeta>,
) -> Vec<(String, String)> {
    let mut by_inode: HashMap<u64, Vec<&String>> = HashMap::new();
    for (path, meta) in local {
        if !base.contains_key(path) {
            by_inode.entry(meta.inode).or_default().push(path);
        }
    }
    // Directories first (parents first), so a file moved into a renamed directory finds the
    // directory's new name made by its move and not by the file's.
    let mut originals: Vec<String> = base.keys().cloned().collect();
    originals.sort_by_key(|p| base[p].local.kind != Kind::Dir);
    let mut arrived: HashSet<String> = HashSet::new();
    let mut taken: HashSet<&String> = HashSet::new();
    let mut moves = Vec::new();
    for from in originals {
        if arrived.contains(&from) || local.contains_key(&from) {
            continue;
        }
        let Some(b) = base.get(&from) else { continue };
        let Some(r) = remote.get(&from) else { continue };
        if b.local.kind != b.remote.kind || r.kind != b.remote.kind || r.changed_since(&b.remote) {
            continue;
        }
        let Some(candidates) = by_inode.get(&b.local.inode) else {
            continue;
        };
        let mut matching = candidates.iter().copied().filter(|to| {
            let meta = &local[*to];
            meta.kind == b.local.kind
                && (meta.kind == Kind::Dir
                    || (meta.size == b.local.size && meta.mtime_ns == b.local.mtime_ns))
                && !taken.contains(*to)
                && !at_or_below(to, &from)
                && !at_or_below(&from, to)
                && !base.contains_key(*to)
                && below(base, to).next().is_none()
                && !remote.contains_key(*to)
                && below(remote, to).next().is_none()
        });
        let (Some(to), None) = (matching.next(), matching.next()) else {
            // None, or several (hard links): no guess.
            continue;
        };
        taken.insert(to);
        arrived.extend(rename_keys(base, &from, to));
        rename_keys(remote, &from, to);
        moves.push((from, to.clone()));
    }
    moves
}

/// Moves the keys at and below `from` to `to`; returns the new keys.
fn rename_keys<V>(map: &mut BTreeMap<String, V>, from: &str, to: &str) -> Vec<String> {
    let keys: Vec<String> = map
        .range(from.to_string()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(from))
        .filter(|k| at_or_below(k, from))
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(value) = map.remove(&key) {
            let new = format!("{to}{}", &key[from.len()..]);
            map.insert(new.clone(), value);
            out.push(new);
        }
    }
    out
}

/// Rows 16/17: a directory is deleted on one side only when everything that side holds below
/// it goes too; otherwise it stays (bidirectional: made again on the side that deleted it;
/// upload-only: forgotten, the server keeps it). Deepest first, so a kept subdirectory keeps
/// its parents.
fn keep_unsafe_dirs(
    actions: &mut BTreeMap<String, Action>,
    mode: Mode,
    local: &BTreeMap<String, LocalMeta>,
    remote: &BTreeMap<String, RemoteMeta>,
) {
    let dirs: Vec<String> = actions
        .iter()
        .rev()
        .filter(|(p, a)| match a {
            Action::DeleteRemote => remote.get(*p).map(|m| m.kind) == Some(Kind::Dir),
            Action::TrashLocal => local.get(*p).map(|m| m.kind) == Some(Kind::Dir),
            _ => false,
        })
        .map(|(p, _)| p.clone())
        .collect();
    for dir in dirs {
        let action = actions[&dir].clone();
        let (side_keys, replacement): (Vec<&String>, Action) = if action == Action::DeleteRemote {
            let keep = match mode {
                Mode::Bidirectional => Action::MkdirLocal,
                // (Download-only and new-files-only never delete on the server.)
                Mode::UploadOnly | Mode::DownloadOnly | Mode::NewFilesOnly => Action::Forget,
            };
            (below(remote, &dir).collect(), keep)
        } else {
            let keep = match mode {
                // Download-only: the server deleted it, but something here stays: the
                // directory stays too, untracked.
                Mode::DownloadOnly => Action::Forget,
                // New-files-only too makes it again: a new folder for the server.
                _ => Action::MkdirRemote,
            };
            (below(local, &dir).collect(), keep)
        };
        if side_keys.iter().any(|k| actions.get(*k) != Some(&action)) {
            actions.insert(dir, replacement);
        }
    }
}

/// Drops the actions `dropped` below the paths whose action `is_aside` moves them aside
/// whole (the moved copy keeps what is below).
fn drop_below(
    actions: &mut BTreeMap<String, Action>,
    is_aside: impl Fn(&str, &Action) -> bool,
    dropped: impl Fn(&Action) -> bool,
) {
    let aside: BTreeSet<String> = actions
        .iter()
        .filter(|(p, a)| is_aside(p, a))
        .map(|(p, _)| p.clone())
        .collect();
    if !aside.is_empty() {
        actions.retain(|p, a| !dropped(a) || !has_ancestor_in(p, &aside));
    }
}

/// Puts the decided actions and the moves in an order that can be carried out, dropping the
/// steps covered by a directory delete.
fn order(
    actions: BTreeMap<String, Action>,
    moves: Vec<(String, String)>,
    base: &BTreeMap<String, Base>,
    local: &BTreeMap<String, LocalMeta>,
    remote: &BTreeMap<String, RemoteMeta>,
) -> Vec<Step> {
    let is_dir = |p: &str| {
        local.get(p).map(|m| m.kind) == Some(Kind::Dir)
            || remote.get(p).map(|m| m.kind) == Some(Kind::Dir)
            || base
                .get(p)
                .is_some_and(|b| b.local.kind == Kind::Dir || b.remote.kind == Kind::Dir)
    };
    let mut creations: Vec<(String, Step)> = moves
        .iter()
        .map(|(from, to)| {
            let step = Step::MoveRemote {
                from: from.clone(),
                to: to.clone(),
            };
            (to.clone(), step)
        })
        .collect();
    let mut deletes: Vec<(String, Action)> = Vec::new();
    let mut asides: Vec<Step> = Vec::new();
    for (path, action) in actions {
        let late = match action {
            Action::DeleteRemote | Action::TrashLocal => true,
            Action::Forget => is_dir(&path),
            _ => false,
        };
        let aside = action == Action::KeepServerCopyThenUpload
            && remote.get(&path).map(|m| m.kind) == Some(Kind::Dir);
        if late {
            deletes.push((path, action));
        } else if aside {
            asides.push(Step::Do { path, action });
        } else {
            creations.push((path.clone(), Step::Do { path, action }));
        }
    }
    // Parents first: a path sorts after its ancestors. A move counts at its target (stable:
    // before a step at the target itself). Nothing is ever created at a move's old name (it
    // is absent locally, and its records and server entries went with the move), so no step
    // has to wait for a move other than through the target's ancestors.
    creations.sort_by(|a, b| a.0.cmp(&b.0));
    let mut steps: Vec<Step> = creations.into_iter().map(|(_, s)| s).collect();
    // A server directory moved aside takes what is below it: after the moves out of it. Nothing
    // is made below it (here it is a file).
    steps.extend(asides);

    // Deletes: a directory delete covers (and drops) everything below it.
    let mut covering: BTreeSet<String> = BTreeSet::new();
    let mut kept: Vec<(String, Action)> = Vec::new();
    for (path, action) in deletes {
        if has_ancestor_in(&path, &covering) {
            continue;
        }
        if matches!(action, Action::DeleteRemote | Action::TrashLocal) && is_dir(&path) {
            covering.insert(path.clone());
        }
        kept.push((path, action));
    }
    // Creation-phase forgets below a covering delete are implied by it.
    steps.retain(|s| match s {
        Step::Do {
            path,
            action: Action::Forget,
        } => !has_ancestor_in(path, &covering),
        _ => true,
    });
    kept.sort_by(|a, b| b.0.cmp(&a.0));
    steps.extend(
        kept.into_iter()
            .map(|(path, action)| Step::Do { path, action }),
    );
    steps
}

/// Whether a proper ancestor of `path` is in `dirs`.
fn has_ancestor_in(path: &str, dirs: &BTreeSet<String>) -> bool {
    let mut prefix = path;
    while let Some(cut) = prefix.rfind('/') {
        prefix = &prefix[..cut];
        if dirs.contains(prefix) {
            return true;
        }
    }
    false
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_model_tests.rs"]
mod model_tests;
