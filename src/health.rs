//! The server's health, as every part of the daemon sees it: whether the last request reached
//! the server, and if not, why.
//!
//! One [`Health`] per account (per daemon), fed by every request: the remotes handed to the
//! filesystem are wrapped in [`crate::remote::watched::Watched`], which reports each answer
//! here the moment it comes, whoever asked (a listing, a read, an upload, and later pins and
//! sync folders). An error that reached no server (connection refused or reset, a timeout, a
//! 5xx or 408/429 answer: [`RemoteError::is_transient`]) makes it *offline*; any other answer,
//! error statuses included, means the server was reached and makes it *online*.
//!
//! Parts that must act when the server comes back (the upload queue retries at once what waited
//! for it) register with [`Health::on_back_online`]. The callbacks run on the task whose request
//! found the server back, with no lock of this module held, and only after an outage of at least
//! [`MIN_OUTAGE`]: a server that answers listings but resets every upload flips between the
//! states at each attempt, and retrying everything at each flip would retry without back-off.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::remote::RemoteError;

/// Whether the server answered lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Connection {
    /// The last request reached the server.
    Online,
    /// The last request could not reach the server (network, timeout, 5xx).
    Offline,
    /// Nothing was asked yet.
    Unknown,
}

/// A snapshot of the health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub connection: Connection,
    /// Why the server is offline (`None` when it is not).
    pub last_error: Option<String>,
    /// When the connection last changed (`None` before the first request).
    pub since: Option<SystemTime>,
}

type Callback = Box<dyn Fn() + Send + Sync>;

/// How long the server must have been unreachable for its return to retry what waited for it.
pub const MIN_OUTAGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The server's health; share it in an `Arc`.
pub struct Health {
    state: Mutex<HealthReport>,
    back_online: Mutex<Vec<Callback>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Mutex::new(HealthReport {
                connection: Connection::Unknown,
                last_error: None,
                since: None,
            }),
            back_online: Mutex::new(Vec::new()),
        }
    }
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthReport> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of one request.
    pub fn observe<T>(&self, outcome: &Result<T, RemoteError>) {
        match outcome {
            Err(e) if e.is_transient() => self.unreachable(e),
            _ => self.reached(),
        }
    }

    /// A request reached the server. Coming back from offline, runs the callbacks.
    pub fn reached(&self) {
        let was_offline = {
            let mut s = self.lock();
            let was = s.connection == Connection::Offline
                && s.since
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|d| d >= MIN_OUTAGE);
            if s.connection != Connection::Online {
                s.connection = Connection::Online;
                s.since = Some(SystemTime::now());
            }
            s.last_error = None;
            was
        };
        if was_offline {
            tracing::info!("the server answers again");
            for cb in self
                .back_online
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                cb();
            }
        }
    }

    /// A request could not reach the server.
    pub fn unreachable(&self, e: &RemoteError) {
        let mut s = self.lock();
        if s.connection != Connection::Offline {
            tracing::warn!(error = %e, "the server cannot be reached; working offline");
            s.connection = Connection::Offline;
            s.since = Some(SystemTime::now());
        }
        s.last_error = Some(why_unreachable(e));
    }

    /// Whether the last request could not reach the server.
    pub fn is_offline(&self) -> bool {
        self.lock().connection == Connection::Offline
    }

    pub fn report(&self) -> HealthReport {
        self.lock().clone()
    }

    /// Runs `f` each time the server is reached again after being offline.
    pub fn on_back_online(&self, f: impl Fn() + Send + Sync + 'static) {
        self.back_online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }
}

/// Why the server cannot be reached, said of the server rather than of the request that found
/// out (which may be an upload's clean-up of a temporary file): its host and the root cause,
/// e.g. `127.0.0.1:4918: Connection refused (os error 111)`.
pub fn why_unreachable(e: &RemoteError) -> String {
    let RemoteError::Transient { url, reason, .. } = e else {
        return e.to_string();
    };
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| url.clone());
    // reqwest's chain ends with the cause ("…: tcp connect error: Connection refused (…)").
    let cause = reason.rsplit(": ").next().unwrap_or(reason);
    format!("{host}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn transient() -> RemoteError {
        RemoteError::Transient {
            method: "PROPFIND".into(),
            url: "http://h/".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn every_answer_moves_the_state_at_once() {
        let h = Health::new();
        assert_eq!(h.report().connection, Connection::Unknown);
        h.observe::<()>(&Err(transient()));
        let r = h.report();
        assert_eq!(r.connection, Connection::Offline);
        assert_eq!(r.last_error.as_deref(), Some("h: connection refused"));
        let reqwest_like = RemoteError::Transient {
            method: "DELETE".into(),
            url: "http://127.0.0.1:4918/docs/.cloudmount-upload-1.part".into(),
            reason: "error sending request for url (http://127.0.0.1:4918/docs/x): client error \
                     (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        };
        h.unreachable(&reqwest_like);
        assert_eq!(
            h.report().last_error.as_deref(),
            Some("127.0.0.1:4918: Connection refused (os error 111)"),
            "the server and the cause, not the request that found out"
        );
        // An error status is an answer: the server was reached.
        h.observe::<()>(&Err(RemoteError::NotFound { url: "x".into() }));
        assert_eq!(h.report().connection, Connection::Online);
        assert_eq!(h.report().last_error, None);
    }

    #[test]
    fn back_online_runs_the_callbacks_once_per_return() {
        let h = Health::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        h.on_back_online(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        h.reached();
        assert_eq!(n.load(Ordering::SeqCst), 0, "never offline: nothing to do");
        // A flip back within MIN_OUTAGE (an upload reset, the next listing fine): nothing.
        h.unreachable(&transient());
        h.reached();
        assert_eq!(n.load(Ordering::SeqCst), 0);
        h.unreachable(&transient());
        h.unreachable(&transient());
        std::thread::sleep(MIN_OUTAGE);
        h.reached();
        h.reached();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
