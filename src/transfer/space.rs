//! The account's room on the server: when the server says it is full (HTTP 507), uploads of
//! the whole account pause — every sync folder and the mount's write-back queue of the same
//! daemon — with that reason shown, and resume by themselves once space is freed.
//!
//! One [`Space`] is shared by everything a daemon uploads to one account:
//! - an upload refused for lack of space calls [`Space::full`]: the account is paused;
//! - while paused, [`Space::check`] answers [`Check::Paused`] to everyone except one caller
//!   every `retry` ([`Check::Probe`]), whose uploads find out whether space was freed;
//! - an upload that lands calls [`Space::landed`]: the pause ends, and everyone waiting in
//!   [`Space::changed`] is woken to send what waited.
//!
//! Nothing waiting is dropped or moved: callers keep their own records (the write-back queue's
//! in `meta.db`, a sync folder's local files) and only ask here whether to send now.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// Why uploads pause, for people.
pub const OUT_OF_SPACE: &str = "the server is out of space (HTTP 507)";

/// How often a paused account is probed by default.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(60);

/// Why and since when the account's uploads are paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// The server's refusal, for people.
    pub reason: String,
    /// When the pause began.
    pub since: SystemTime,
}

/// Whether a caller may send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Not paused.
    Open,
    /// Paused, and this caller is the probe: it sends, and reports what came of it.
    Probe,
    /// Paused: keep what waits for later.
    Paused(Paused),
}

struct State {
    paused: Option<Paused>,
    /// When the next probe may go (paused only).
    probe_at: Instant,
}

/// The account's room on the server (see the module docs).
pub struct Space {
    retry: Duration,
    st: Mutex<State>,
    /// Bumped at every pause and resume; [`Space::changed`] waits on it.
    tx: watch::Sender<u64>,
}

impl Space {
    /// An account with room; a pause is probed every `retry`.
    pub fn new(retry: Duration) -> Space {
        Space {
            retry,
            st: Mutex::new(State {
                paused: None,
                probe_at: Instant::now(),
            }),
            tx: watch::Sender::new(0),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How often a pause is probed.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// Whether the caller may send now (see [`Check`]). A [`Check::Probe`] is handed to one
    /// caller per `retry`.
    pub fn check(&self) -> Check {
        let mut st = self.st();
        let Some(p) = st.paused.clone() else {
            return Check::Open;
        };
        let now = Instant::now();
        if st.probe_at <= now {
            st.probe_at = now + self.retry;
            return Check::Probe;
        }
        Check::Paused(p)
    }

    /// The pause, if any (for reports; does not hand out a probe).
    pub fn paused(&self) -> Option<Paused> {
        self.st().paused.clone()
    }

    /// When the next probe may go, if paused.
    pub fn next_probe(&self) -> Option<Instant> {
        let st = self.st();
        st.paused.as_ref().map(|_| st.probe_at)
    }

    /// An upload was refused for lack of space: the account's uploads pause (a pause already
    /// on keeps its start and is probed again after `retry`).
    pub fn full(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let began = {
            let mut st = self.st();
            st.probe_at = Instant::now() + self.retry;
            match &mut st.paused {
                Some(p) => {
                    p.reason = reason.clone();
                    false
                }
                None => {
                    st.paused = Some(Paused {
                        reason: reason.clone(),
                        since: SystemTime::now(),
                    });
                    true
                }
            }
        };
        if began {
            tracing::warn!(%reason, "the server is out of space: uploads of the account pause until space is freed");
            self.tx.send_modify(|g| *g += 1);
        }
    }

    /// An upload landed: if paused, the pause ends and every waiter is woken.
    pub fn landed(&self) {
        let ended = self.st().paused.take().is_some();
        if ended {
            tracing::info!("the server has room again: uploads resume");
            self.tx.send_modify(|g| *g += 1);
        }
    }

    /// A receiver that sees every pause and resume from now on ([`watch::Receiver::changed`]).
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Waits until the pause ends (at once when there is none).
    pub async fn resumed(&self) {
        let mut rx = self.changed();
        while self.paused().is_some() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Default for Space {
    fn default() -> Space {
        Space::new(DEFAULT_RETRY)
    }
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("retry", &self.retry)
            .field("paused", &self.paused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_until_full_then_one_probe_per_retry() {
        let s = Space::new(Duration::from_millis(50));
        assert_eq!(s.check(), Check::Open);
        s.full("HTTP 507");
        let p = s.paused().expect("paused");
        assert_eq!(p.reason, "HTTP 507");
        assert!(
            matches!(s.check(), Check::Paused(_)),
            "no probe before retry"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(), Check::Probe);
        assert!(
            matches!(s.check(), Check::Paused(_)),
            "one probe per retry, not one per caller"
        );
    }

    #[test]
    fn a_second_refusal_keeps_the_start_and_delays_the_probe() {
        let s = Space::new(Duration::from_millis(50));
        s.full("first");
        let since = s.paused().unwrap().since;
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(), Check::Probe);
        s.full("second");
        let p = s.paused().unwrap();
        assert_eq!((p.reason.as_str(), p.since), ("second", since));
        assert!(matches!(s.check(), Check::Paused(_)));
    }

    #[tokio::test]
    async fn landing_resumes_and_wakes_waiters() {
        let s = std::sync::Arc::new(Space::new(Duration::from_secs(3600)));
        s.full("full");
        let rx = s.changed();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.resumed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while paused");
        s.landed();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the resume")
            .unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(s.check(), Check::Open);
        assert!(s.next_probe().is_none());
    }

    #[test]
    fn landing_when_open_changes_nothing() {
        let s = Space::new(Duration::from_secs(1));
        let rx = s.changed();
        s.landed();
        assert!(!rx.has_changed().unwrap());
    }
}
