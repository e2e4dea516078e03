//! Conditional writes are atomic: dav-server checks `If-Match` / `If-None-Match` when a request
//! arrives, before it takes the body, so two conditional PUTs of one file in flight at once
//! could both pass the check (both based on the same version), and the second would overwrite
//! the first — the lost update the conditions are there to prevent (the sync folders' registry
//! saw it). Likewise a COPY or MOVE with `Overwrite: F` ("the destination must not exist"):
//! dav-server checks the destination before it copies or renames, and the rename replaces
//! whatever is there by then, so two of them to one destination could both succeed. Here every
//! conditional request to a path waits for the one before it has finished: the next one's
//! check then sees what the first made.
//!
//! The locks are per path (as sent, percent-encoding included: the request's path for
//! `If-Match` / `If-None-Match`, the `Destination`'s path for `Overwrite: F`), kept while a
//! request holds or waits for them and forgotten after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use http::{HeaderMap, Method, Uri};
use tokio::sync::OwnedMutexGuard;

/// Past this many remembered paths, those no request holds are forgotten.
const PRUNE_AT: usize = 1024;

/// One lock per path with a conditional request in flight.
#[derive(Default)]
pub(super) struct ConditionalWrites {
    paths: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// The paths a request's preconditions are about, each once, in order (none: the request has
/// none): its own path when it has `If-Match` / `If-None-Match`, the `Destination`'s path when
/// it is a COPY or MOVE with `Overwrite: F`.
pub(super) fn lock_paths(method: &Method, uri: &Uri, headers: &HeaderMap) -> Vec<String> {
    let mut paths = Vec::new();
    if headers.contains_key(http::header::IF_MATCH)
        || headers.contains_key(http::header::IF_NONE_MATCH)
    {
        paths.push(uri.path().to_string());
    }
    let copy_or_move = matches!(method.as_str(), "COPY" | "MOVE");
    let no_overwrite = headers
        .get("overwrite")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("F"));
    if copy_or_move && no_overwrite {
        // A Destination that does not parse is refused by dav-server: no lock needed.
        if let Some(dest) = headers
            .get("destination")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uri>().ok())
        {
            paths.push(dest.path().to_string());
        }
    }
    // Always taken in this order: two requests wanting the same two locks never wait for
    // each other.
    paths.sort();
    paths.dedup();
    paths
}

impl ConditionalWrites {
    /// Waits for the conditional requests to `path` before this one; held until dropped.
    pub(super) async fn acquire(&self, path: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
            if paths.len() >= PRUNE_AT {
                paths.retain(|_, w| w.strong_count() > 0);
            }
            match paths.get(path).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    paths.insert(path.to_string(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    /// [`Self::acquire`] for each of `paths` (as [`lock_paths`] gives them: sorted).
    pub(super) async fn acquire_all(&self, paths: &[String]) -> Vec<OwnedMutexGuard<()>> {
        let mut held = Vec::with_capacity(paths.len());
        for p in paths {
            held.push(self.acquire(p).await);
        }
        held
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.paths.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_path_at_a_time_and_other_paths_free() {
        let w = Arc::new(ConditionalWrites::default());
        let first = w.acquire("/f").await;
        // Another path is not held up.
        let other = tokio::time::timeout(Duration::from_millis(200), w.acquire("/g")).await;
        assert!(other.is_ok());
        // The same path waits until the first is done.
        let w2 = w.clone();
        let second = tokio::spawn(async move { w2.acquire("/f").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .expect("the second gets it")
            .unwrap();
    }

    #[tokio::test]
    async fn paths_no_request_holds_are_forgotten() {
        let w = ConditionalWrites::default();
        for i in 0..(PRUNE_AT + 10) {
            drop(w.acquire(&format!("/f{i}")).await);
        }
        assert!(w.remembered() <= 11, "{}", w.remembered());
    }

    fn paths(method: &str, uri: &str, headers: &[(&'static str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        lock_paths(&method.parse().unwrap(), &uri.parse().unwrap(), &h)
    }

    #[test]
    fn conditions_are_if_match_and_if_none_match() {
        assert!(paths("PUT", "/f", &[]).is_empty());
        assert_eq!(paths("PUT", "/f", &[("if-none-match", "*")]), ["/f"]);
        assert_eq!(paths("PUT", "/f", &[("if-match", "\"x\"")]), ["/f"]);
    }

    #[test]
    fn copy_or_move_without_overwrite_locks_its_destination() {
        let dest = ("destination", "http://h:1/d/a%20b");
        for m in ["MOVE", "COPY"] {
            assert_eq!(paths(m, "/s", &[dest, ("overwrite", "F")]), ["/d/a%20b"]);
            assert!(paths(m, "/s", &[dest, ("overwrite", "T")]).is_empty());
            assert!(paths(m, "/s", &[dest]).is_empty());
        }
        assert_eq!(
            paths("MOVE", "/s", &[("destination", "/d/x"), ("overwrite", "F")]),
            ["/d/x"]
        );
        // With a precondition on the source too: both, in order.
        assert_eq!(
            paths(
                "MOVE",
                "/z",
                &[dest, ("overwrite", "F"), ("if-match", "\"x\"")]
            ),
            ["/d/a%20b", "/z"]
        );
        // Not for other methods.
        assert!(paths("PUT", "/s", &[dest, ("overwrite", "F")]).is_empty());
    }
}
