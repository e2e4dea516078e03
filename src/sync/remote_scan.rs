//! The server side: a listing of the sync folder's server folder into
//! [`RemoteMeta`](super::state::RemoteMeta) per path.
//!
//! The whole tree is listed (`Depth: 1` per collection, several at once). Any error fails the
//! whole scan: an unreachable server, a 5xx or a timeout never reads as "files removed" (a
//! partial listing is never used). Our own uploads in progress (`.cloudmount-upload-*`) are
//! not entries.
//!
//! Versions: the listing's ETag, or a stand-in made of size and last-modified when the server
//! lists none ([`crate::remote::version::of`]), kept as the header form (`"…"` or `W/"…"`) so
//! [`etag_of`] gives the tag back for `If-Match`.

use std::collections::BTreeMap;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::state::{Kind, RemoteMeta};
use crate::remote::{version, ETag, Entry, EntryKind, Remote, RemotePath, RemoteResult};

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
    name.starts_with(crate::vfs::UPLOAD_TEMP_PREFIX)
}

/// Lists everything below `root`. `excluded(rel_path, is_dir)` leaves paths out (and, for a
/// directory, what is below it).
pub async fn scan(
    remote: &dyn Remote,
    root: &RemotePath,
    excluded: &(dyn Fn(&str, bool) -> bool + Sync),
) -> RemoteResult<RemoteScan> {
    let mut out = RemoteScan::default();
    let prefix_len = if root.is_root() {
        0
    } else {
        root.as_str().len() + 1
    };
    let mut pending = vec![root.clone()];
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < PARALLEL_LISTS {
            let Some(dir) = pending.pop() else { break };
            running.push(async move { remote.list(&dir).await });
        }
        let Some(listing) = running.next().await else {
            break;
        };
        let listing = listing?;
        for child in listing.children {
            if is_internal(child.name()) {
                if !child.is_dir() {
                    out.temporaries.push(child.path.clone());
                }
                continue;
            }
            let full = child.path.as_str();
            if full.len() <= prefix_len || !child.path.starts_with(root) {
                // Not below the folder: a server answering with other paths is not trusted
                // to list this one.
                return Err(crate::remote::RemoteError::BadResponse {
                    method: "PROPFIND".into(),
                    url: root.to_string(),
                    reason: format!("the listing names {full:?}, outside the folder"),
                });
            }
            let rel = full[prefix_len..].to_string();
            if excluded(&rel, child.is_dir()) {
                out.excluded += 1;
                continue;
            }
            if child.is_dir() {
                pending.push(child.path.clone());
            }
            out.entries.insert(rel, meta_of(&child));
        }
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
