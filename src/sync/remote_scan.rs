//! The server side: a listing of the sync folder's server folder into
//! [`RemoteMeta`](super::state::RemoteMeta) per path.
//!
//! The whole tree is listed (`Depth: 1` per collection, several at once). Any error fails the
//! whole scan: an unreachable server, a 5xx or a timeout never reads as "files removed" (a
//! partial listing is never used). Our own uploads in progress (`.cloudmount-upload-*`) are
//! not entries.
//!
//! A [`walk`] also remembers a digest of each directory's listing ([`Snapshot`]): given the
//! snapshot of an earlier walk, the directories whose listing is the same are not parsed again
//! (the poll between runs, see [`super::poll`]); two snapshots tell whether the server
//! propagates directory ETags ([`compare_walks`]).
//!
//! Versions: the listing's ETag, or a stand-in made of size and last-modified when the server
//! lists none ([`crate::remote::version::of`]), kept as the header form (`"…"` or `W/"…"`) so
//! [`etag_of`] gives the tag back for `If-Match`.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::state::{Kind, RemoteMeta};
use crate::remote::{
    version, ETag, Entry, EntryKind, ListingDigest, MaybeListing, Remote, RemotePath, RemoteResult,
};

/// How many collections are listed at once.
const PARALLEL_LISTS: usize = 8;

/// What the server folder holds.
#[derive(Debug, Clone, Default)]
pub struct RemoteScan {
    /// Every entry below the folder, by path relative to it.
    pub entries: BTreeMap<String, RemoteMeta>,
    /// Entries left out because the excludes say so.
    pub excluded: u64,
    /// Our temporary upload files (names starting with [`is_internal`]'s prefix), by full path.
    pub temporaries: Vec<RemotePath>,
}

/// The [`RemoteMeta`] of a listed entry.
pub fn meta_of(e: &Entry) -> RemoteMeta {
    RemoteMeta {
        kind: match e.kind {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
        },
        size: if e.is_dir() { 0 } else { e.size },
        etag: version::of(e).map(|t| t.header_value()),
        mtime: e
            .mtime
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64),
    }
}

/// The tag of a stored version, for a conditional request.
pub fn etag_of(stored: &str) -> Option<ETag> {
    ETag::parse(stored)
}

/// Whether a server name is one of ours that is never an entry (an upload in progress).
pub fn is_internal(name: &str) -> bool {
    crate::transfer::temp::is_temp(name)
}

/// What a walk remembers of one directory, to know it again at the next walk.
#[derive(Debug, Clone)]
struct DirMemo {
    digest: ListingDigest,
    /// The directory's own version, as its listing gave it (header form).
    etag: Option<String>,
    /// Its subdirectories that are walked (not excluded, not ours).
    subdirs: Vec<RemotePath>,
}

/// The directories of one walk of a server folder, each with the digest of its listing: what a
/// later walk compares with to leave unchanged directories unparsed ([`walk`]), and to learn
/// whether the server propagates directory ETags ([`compare_walks`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By path relative to the folder (`""`: the folder itself).
    dirs: HashMap<String, DirMemo>,
}

impl Snapshot {
    /// The folder's own version at that walk.
    pub fn root_etag(&self) -> Option<&str> {
        self.dirs.get("").and_then(|d| d.etag.as_deref())
    }

    /// How many directories were walked.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// A walk of the server folder.
#[derive(Debug, Default)]
pub struct Walk {
    /// The entries of the directories listed anew (all of them without a known snapshot).
    pub scan: RemoteScan,
    /// Those directories, by path relative to the folder (`""`: the folder itself); the others
    /// answered with the listing the known snapshot has.
    pub listed: HashSet<String>,
    pub snapshot: Snapshot,
}

/// What two walks of a folder say about its server's directory ETags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// No directory's listing changed between them.
    Nothing,
    /// Listings changed, and each changed directory had a new ETag of its own: as a server
    /// that propagates directory ETags shows it.
    Propagated,
    /// A directory's listing changed while its own ETag did not (or it has none): a change
    /// below it does not reach the folder's ETag.
    NotPropagated,
}

/// Compares two walks of the same folder (`old` before `new`). If every directory whose
/// content changed has a new ETag, then by induction from the deepest change up, the folder's
/// own ETag changes whenever anything below it does; one directory that changed without a new
/// ETag disproves it.
pub fn compare_walks(old: &Snapshot, new: &Snapshot) -> Evidence {
    let mut seen = Evidence::Nothing;
    for (path, n) in &new.dirs {
        let Some(o) = old.dirs.get(path) else {
            // New directory: its parent's listing changed, which is judged there.
            continue;
        };
        if o.digest == n.digest {
            continue;
        }
        match (&o.etag, &n.etag) {
            (Some(a), Some(b)) if !same_version(a, b) => seen = Evidence::Propagated,
            _ => return Evidence::NotPropagated,
        }
    }
    if seen == Evidence::Propagated {
        // What the polls rely on, checked itself: the folder's own ETag moved too.
        match (old.root_etag(), new.root_etag()) {
            (Some(a), Some(b)) if !same_version(a, b) => {}
            _ => return Evidence::NotPropagated,
        }
    }
    seen
}

/// Whether two stored versions are the same (weak and strong forms of a tag are).
fn same_version(a: &str, b: &str) -> bool {
    match (etag_of(a), etag_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Lists everything below `root`. `excluded(rel_path, is_dir)` leaves paths out (and, for a
/// directory, what is below it).
pub async fn scan(
    remote: &dyn Remote,
    root: &RemotePath,
    excluded: &(dyn Fn(&str, bool) -> bool + Sync),
) -> RemoteResult<RemoteScan> {
    walk(remote, root, excluded, None).await.map(|w| w.scan)
}

/// Walks everything below `root` as [`scan`] does, and remembers each directory's listing.
/// With `known` (an earlier walk with the same excludes), a directory whose listing has the
/// digest it had then is not parsed: its entries are not in the result's `scan` (nor in
/// `listed`), and its subdirectories are those it had. Any error fails the whole walk.
pub async fn walk(
    remote: &dyn Remote,
    root: &RemotePath,
    excluded: &(dyn Fn(&str, bool) -> bool + Sync),
    known: Option<&Snapshot>,
) -> RemoteResult<Walk> {
    let mut out = Walk::default();
    let prefix_len = if root.is_root() {
        0
    } else {
        root.as_str().len() + 1
    };
    let rel_of = |p: &RemotePath| -> String {
        if p == root {
            String::new()
        } else {
            p.as_str()[prefix_len..].to_string()
        }
    };
    let mut pending = vec![root.clone()];
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < PARALLEL_LISTS {
            let Some(dir) = pending.pop() else { break };
            let rel = rel_of(&dir);
            let memo = known.and_then(|k| k.dirs.get(&rel));
            running.push(async move {
                let r = remote.list_unless(&dir, memo.map(|m| &m.digest)).await;
                (dir, rel, memo, r)
            });
        }
        let Some((dir, rel, memo, listing)) = running.next().await else {
            break;
        };
        let (listing, digest) = match listing? {
            MaybeListing::Listed(l, d) => (l, d),
            MaybeListing::Unchanged => {
                // Answered as the known snapshot has it (`memo` is set: a digest was given).
                if let Some(m) = memo {
                    pending.extend(m.subdirs.iter().cloned());
                    out.snapshot.dirs.insert(rel, m.clone());
                }
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for child in listing.children {
            if is_internal(child.name()) {
                if !child.is_dir() {
                    out.scan.temporaries.push(child.path.clone());
                }
                continue;
            }
            let full = child.path.as_str();
            if full.len() <= prefix_len || !child.path.starts_with(root) {
                // Not below the folder: a server answering with other paths is not trusted
                // to list this one.
                return Err(crate::remote::RemoteError::BadResponse {
                    method: "PROPFIND".into(),
                    url: dir.to_string(),
                    reason: format!("the listing names {full:?}, outside the folder"),
                });
            }
            let rel = full[prefix_len..].to_string();
            if excluded(&rel, child.is_dir()) {
                out.scan.excluded += 1;
                continue;
            }
            if child.is_dir() {
                subdirs.push(child.path.clone());
            }
            out.scan.entries.insert(rel, meta_of(&child));
        }
        pending.extend(subdirs.iter().cloned());
        // The server's own tag only (no stand-in): what the folder's ETag check compares.
        let etag = listing.dir.etag.as_ref().map(ETag::header_value);
        out.listed.insert(rel.clone());
        out.snapshot.dirs.insert(
            rel,
            DirMemo {
                digest,
                etag,
                subdirs,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::mem::MemRemote;
    use crate::remote::PutCondition;

    fn p(s: &str) -> RemotePath {
        RemotePath::new(s).unwrap()
    }

    #[tokio::test]
    async fn lists_the_whole_tree_relative_to_the_folder_and_skips_excluded_and_internal() {
        let r = MemRemote::new();
        r.mkdir(&p("docs")).await.unwrap();
        r.mkdir(&p("docs/sync")).await.unwrap();
        r.mkdir(&p("docs/sync/a")).await.unwrap();
        r.mkdir(&p("docs/sync/skip")).await.unwrap();
        for (f, body) in [
            ("docs/sync/x.txt", "x"),
            ("docs/sync/a/y.txt", "yy"),
            ("docs/sync/skip/z.txt", "z"),
            ("docs/sync/.cloudmount-upload-1-2.part", "t"),
            ("docs/outside.txt", "o"),
        ] {
            r.put(&p(f), body.as_bytes().to_vec().into(), PutCondition::None)
                .await
                .unwrap();
        }
        let s = scan(&r, &p("docs/sync"), &|rel, _| rel == "skip")
            .await
            .unwrap();
        let names: Vec<&str> = s.entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "a/y.txt", "x.txt"]);
        assert_eq!(s.excluded, 1);
        assert_eq!(s.entries["a/y.txt"].size, 2);
        assert_eq!(s.entries["a"].kind, Kind::Dir);
        assert!(s.entries["x.txt"].etag.is_some());
        let tag = etag_of(s.entries["x.txt"].etag.as_ref().unwrap()).unwrap();
        assert_eq!(
            r.stat(&p("docs/sync/x.txt")).await.unwrap().etag.unwrap(),
            tag
        );
    }

    #[tokio::test]
    async fn a_missing_folder_is_an_error_not_an_empty_folder() {
        let r = MemRemote::new();
        let e = scan(&r, &p("nope"), &|_, _| false).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}
