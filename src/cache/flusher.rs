//! The cache's background thread: flushes every interval, evicts when a write pushed usage
//! over the budget (at most every [`MIN_EVICT_GAP`]), and flushes a last time at shutdown
//! (unless the cache is dropped as a crash, in tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lock;
use super::state::Shared;

/// The least time between two background eviction passes.
const MIN_EVICT_GAP: Duration = Duration::from_millis(100);

impl Shared {
    pub(super) fn flusher(self: Arc<Self>, interval: Duration) {
        let mut next_flush = Instant::now() + interval;
        let mut last_evict = Instant::now()
            .checked_sub(MIN_EVICT_GAP)
            .unwrap_or_else(Instant::now);
        loop {
            let (shutdown, crash, evict) = {
                let mut sig = lock(&self.signal);
                loop {
                    if sig.shutdown {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next_flush || sig.flush {
                        break;
                    }
                    let evict_due = last_evict + MIN_EVICT_GAP;
                    if sig.evict && now >= evict_due {
                        break;
                    }
                    let until = if sig.evict {
                        evict_due.min(next_flush)
                    } else {
                        next_flush
                    };
                    sig = self
                        .wake
                        .wait_timeout(sig, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let r = (sig.shutdown, sig.crash, sig.evict);
                sig.evict = false;
                if sig.flush {
                    sig.flush = false;
                    next_flush = Instant::now();
                }
                r
            };
            if shutdown {
                if !crash {
                    if let Err(e) = self.flush() {
                        tracing::error!(error = %e, "final cache flush failed");
                    }
                }
                return;
            }
            if Instant::now() >= next_flush {
                if let Err(e) = self.flush() {
                    tracing::error!(error = %e, "cache flush failed");
                }
                self.state().live.retain(|_, w| w.strong_count() > 0);
                next_flush = Instant::now() + interval;
            }
            let over = {
                let st = self.state();
                st.over_budget(self.budget)
            };
            if evict || over {
                last_evict = Instant::now();
                if let Err(e) = self.evict() {
                    tracing::error!(error = %e, "cache eviction failed");
                }
            }
        }
    }
}
