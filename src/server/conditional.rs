//! Conditional writes are atomic: dav-server checks `If-Match` / `If-None-Match` when a request
//! arrives, before it takes the body, so two conditional PUTs of one file in flight at once
//! could both pass the check (both based on the same version), and the second would overwrite
//! the first — the lost update the conditions are there to prevent (the sync folders' registry
//! saw it). Here every conditional request to a path waits for the one before it has finished:
//! the next one's check then sees the version the first made.
//!
//! The locks are per request path (as sent, percent-encoding included), kept while a request
//! holds or waits for them and forgotten after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use http::HeaderMap;
use tokio::sync::OwnedMutexGuard;

/// Past this many remembered paths, those no request holds are forgotten.
const PRUNE_AT: usize = 1024;

/// One lock per path with a conditional request in flight.
#[derive(Default)]
pub(super) struct ConditionalWrites {
    paths: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Whether the request carries a precondition on the target's version.
pub(super) fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::IF_MATCH)
        || headers.contains_key(http::header::IF_NONE_MATCH)
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

    #[test]
    fn conditions_are_if_match_and_if_none_match() {
        let mut h = HeaderMap::new();
        assert!(!is_conditional(&h));
        h.insert(http::header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(is_conditional(&h));
        let mut h = HeaderMap::new();
        h.insert(http::header::IF_MATCH, "\"x\"".parse().unwrap());
        assert!(is_conditional(&h));
    }
}
