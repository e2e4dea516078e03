//! Between runs, an immediate folder looks at the server every poll interval: did anything
//! change there since the last sync? This has to be cheap when nothing did, on a folder of
//! 100,000 files too, without ever reading an unanswered or partial listing as "nothing
//! changed".
//!
//! - **A walk** lists every directory (`Depth: 1` each, as a run does), but a directory whose
//!   listing has the digest it had at the last walk is not parsed, nor compared
//!   ([`remote_scan::walk`]). Only the directories that changed are compared with the journal's
//!   bases. This needs the last walk to be *in sync*: its listing matched the bases, and no run
//!   has changed them since (a run hands its own last listing over, see
//!   [`super::engine::run_seen`]); otherwise the walk parses everything and compares it all.
//! - **The folder's ETag** alone (one `Depth: 0` request) answers a poll where the server
//!   propagates directory ETags up the tree (Nextcloud, ownCloud): an unchanged ETag means
//!   nothing below changed. Apache's do not propagate (a file edited in place changes only its
//!   own ETag), so this is learnt per folder, never assumed: each pair of walks with changes
//!   between them is evidence ([`remote_scan::compare_walks`]); after [`TRUST_AFTER`] pieces of
//!   evidence for it and none against it, polls check the folder's ETag only, with a full walk
//!   still every [`WALK_EVERY`] polls; a single change without a new ETag turns it off for good
//!   (for the daemon's life).
//!
//! Any error (the server away, a 5xx, a timeout) counts as "changed": the run that follows
//! reports it, and a failed listing is never compared.

use std::collections::{BTreeMap, HashSet};

use super::folder::Mode;
use super::remote_scan::{self, Evidence, Snapshot};
use super::state::{Base, RemoteMeta};
use crate::remote::{Remote, RemotePath};

/// Pieces of evidence that the server propagates directory ETags before a poll trusts the
/// folder's ETag alone.
pub const TRUST_AFTER: u32 = 3;

/// While trusting the folder's ETag, one poll in this many walks the folder anyway.
pub const WALK_EVERY: u32 = 10;

/// What the polls have learnt about the server's directory ETags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Changes seen so far with every changed directory's ETag renewed, up to the folder's.
    Learning { seen: u32 },
    /// The folder's ETag answers most polls.
    Trusted,
    /// A change was seen that did not renew a directory's ETag: walks only.
    Off,
}

/// What a run saw of the server folder at its end.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The last listing of the run.
    pub snapshot: Snapshot,
    /// Whether that listing matched the journal's bases as the run left them.
    pub in_sync: bool,
}

impl Seen {
    /// A run's last listing, `listed` of `snapshot`, against the bases `bases` it left.
    pub fn new(
        snapshot: Snapshot,
        bases: &BTreeMap<String, Base>,
        listed: &BTreeMap<String, RemoteMeta>,
        mode: Mode,
    ) -> Seen {
        Seen {
            in_sync: !differs(bases, listed, None, mode),
            snapshot,
        }
    }
}

/// How a poll went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// The server folder may differ from the last sync: run.
    pub changed: bool,
    /// Listings were parsed (memory was used and freed).
    pub parsed: bool,
    /// Requests made.
    pub requests: usize,
}

/// One folder's memory of its server folder between polls.
#[derive(Debug, Clone)]
pub struct PollState {
    /// The last walk of the folder (a poll's or a run's).
    last: Option<Snapshot>,
    /// `last` matched the journal's bases, which no run has changed since.
    in_sync: bool,
    propagation: Propagation,
    /// Polls answered by the folder's ETag since the last walk.
    since_walk: u32,
}

impl Default for PollState {
    fn default() -> Self {
        PollState {
            last: None,
            in_sync: false,
            propagation: Propagation::Learning { seen: 0 },
            since_walk: 0,
        }
    }
}

impl PollState {
    pub fn propagation(&self) -> Propagation {
        self.propagation
    }

    /// After a run: what it saw replaces what the polls knew (`None`: the run did not end with
    /// a listing in hand, or did not sync; the next poll walks in full).
    pub fn after_run(&mut self, seen: Option<Seen>) {
        match seen {
            Some(s) => self.walked(s.snapshot, s.in_sync),
            None => self.in_sync = false,
        }
    }

    /// Learns from a new walk and keeps it.
    fn walked(&mut self, snapshot: Snapshot, in_sync: bool) {
        if let Some(old) = &self.last {
            self.learn(remote_scan::compare_walks(old, &snapshot));
        }
        self.last = Some(snapshot);
        self.in_sync = in_sync;
        self.since_walk = 0;
    }

    fn learn(&mut self, e: Evidence) {
        self.propagation = match (self.propagation, e) {
            (p, Evidence::Nothing) => p,
            (_, Evidence::NotPropagated) => {
                if self.propagation != Propagation::Off {
                    tracing::info!(
                        "the server does not propagate directory ETags: polls walk the folder"
                    );
                }
                Propagation::Off
            }
            (Propagation::Off, Evidence::Propagated) => Propagation::Off,
            (Propagation::Trusted, Evidence::Propagated) => Propagation::Trusted,
            (Propagation::Learning { seen }, Evidence::Propagated) if seen + 1 >= TRUST_AFTER => {
                tracing::info!(
                    "the server propagates directory ETags: polls check the folder's ETag"
                );
                Propagation::Trusted
            }
            (Propagation::Learning { seen }, Evidence::Propagated) => {
                Propagation::Learning { seen: seen + 1 }
            }
        };
    }

    /// Looks at the server folder `root`: whether it differs from the bases `bases()` reads
    /// (only called when a listing has to be compared).
    pub async fn poll<E>(
        &mut self,
        remote: &dyn Remote,
        root: &RemotePath,
        excluded: &(dyn Fn(&str, bool) -> bool + Sync),
        mode: Mode,
        bases: impl FnOnce() -> Result<BTreeMap<String, Base>, E>,
    ) -> Polled {
        let changed = |requests| Polled {
            changed: true,
            parsed: false,
            requests,
        };
        let mut requests = 0;
        if self.propagation == Propagation::Trusted
            && self.in_sync
            && self.since_walk + 1 < WALK_EVERY
        {
            if let Some(known) = self.last.as_ref().and_then(Snapshot::root_etag) {
                requests += 1;
                let Ok(now) = remote.stat(root).await else {
                    return changed(requests);
                };
                if now
                    .etag
                    .as_ref()
                    .and_then(|t| remote_scan::etag_of(known).map(|k| &k == t))
                    == Some(true)
                {
                    self.since_walk += 1;
                    return Polled {
                        changed: false,
                        parsed: false,
                        requests,
                    };
                }
            }
        }
        let known = if self.in_sync {
            self.last.as_ref()
        } else {
            None
        };
        let walk = match remote_scan::walk(remote, root, excluded, known).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "the poll's listing failed");
                return changed(requests + 1);
            }
        };
        requests += walk.snapshot.len();
        let parsed = !walk.listed.is_empty();
        let partial = self.in_sync;
        let differs = if partial && walk.listed.is_empty() {
            false
        } else {
            match bases() {
                Ok(b) => differs(
                    &b,
                    &walk.scan.entries,
                    partial.then_some(&walk.listed),
                    mode,
                ),
                Err(_) => true,
            }
        };
        self.walked(walk.snapshot, !differs);
        Polled {
            changed: differs,
            parsed,
            requests,
        }
    }
}

/// Whether the server entries `listed` differ from the bases' server halves. With `only`, the
/// entries are the children of those directories (relative paths, `""` the folder) and only
/// they are compared; without it, `listed` is the whole folder.
///
/// Not a difference: an entry the base knows with the same version; in upload-only mode, an
/// entry without a base (left on the server on purpose); a missing name with a dot segment
/// (servers such as nginx's leave dot names out of listings: the run asks about them).
pub fn differs(
    bases: &BTreeMap<String, Base>,
    listed: &BTreeMap<String, RemoteMeta>,
    only: Option<&HashSet<String>>,
    mode: Mode,
) -> bool {
    for (p, r) in listed {
        match bases.get(p) {
            Some(b) if !r.changed_since(&b.remote) => {}
            None if mode == Mode::UploadOnly => {}
            _ => return true,
        }
    }
    let compared = |p: &str| match only {
        None => true,
        Some(dirs) => dirs.contains(p.rsplit_once('/').map_or("", |(parent, _)| parent)),
    };
    bases.keys().any(|p| {
        compared(p) && !listed.contains_key(p) && !p.split('/').any(|s| s.starts_with('.'))
    })
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
