//! Eviction: whole objects, least recently used first, until the bytes of present blocks fit
//! the budget; open (guarded) and pinned objects stay.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use super::error::CacheError;
use super::lock;
use super::state::Shared;
use crate::meta::objects::ObjectBrief;
use crate::meta::AreaId;

impl Shared {
    /// Counts the bytes pins keep from the index (after pins changed or paths moved; blocks
    /// stored and freed keep the count up to date in between). Present bytes of loaded
    /// objects are newer than their rows: those count as loaded.
    pub(super) fn recount_pinned(&self) -> Result<(), CacheError> {
        let rows = if self.state().pins.values().any(|&k| k) {
            self.meta.obj_present()?
        } else {
            Vec::new()
        };
        let mut st = self.state();
        let mut pinned = 0;
        let mut seen = std::collections::HashSet::new();
        let live: Vec<((AreaId, String), u64)> = st
            .live
            .iter()
            .filter_map(|(k, w)| w.upgrade().map(|i| (k.clone(), i)))
            .filter_map(|(k, i)| {
                let b = lock(&i.bits);
                (!b.detached).then_some((k, b.present_bytes))
            })
            .collect();
        for ((a, p), b) in live {
            if st.is_pinned(a, &p) {
                pinned += b;
            }
            seen.insert((a, p));
        }
        for (a, p, b) in rows {
            if st.is_pinned(a, &p) && !seen.contains(&(a, p)) {
                pinned += b;
            }
        }
        st.pinned = pinned.min(st.used);
        Ok(())
    }

    /// Evicts least-recently-used unguarded, unpinned objects until the bytes not kept by
    /// pins fit the budget.
    pub(super) fn evict(&self) -> Result<u64, CacheError> {
        let _f = lock(&self.flush_lock);
        let mut st = self.state();
        if !st.over_budget(self.budget) {
            return Ok(0);
        }
        let unpinned = st.used.saturating_sub(st.pinned);
        let need = unpinned - self.budget;
        let mut chosen: Vec<ObjectBrief> = Vec::new();
        let mut planned = 0u64;
        let mut after = None;
        'pages: loop {
            let page = self.meta.obj_lru_page(after, 256)?;
            let Some(last) = page.last() else { break };
            after = Some((last.last_access, last.id));
            for r in page {
                if st.is_pinned(r.area, &r.path) {
                    continue;
                }
                let live = st
                    .live
                    .get(&(r.area, r.path.clone()))
                    .and_then(Weak::upgrade)
                    .filter(|i| i.id == r.id);
                let bytes = match &live {
                    Some(i) => {
                        let bytes = lock(&i.bits).present_bytes;
                        // A held object without data is probably being fetched: leave it.
                        if i.guards.load(Ordering::SeqCst) > 0 || bytes == 0 {
                            continue;
                        }
                        bytes
                    }
                    // Rows without data free nothing but an inode; sweep those we pass.
                    None => r.present_bytes,
                };
                planned += bytes;
                chosen.push(r);
                if planned >= need {
                    break 'pages;
                }
            }
        }
        // `forget` re-checks guards under each object's lock, so a guard taken meanwhile wins.
        let freed = self.forget(&mut st, &chosen, true)?;
        if st.over_budget(self.budget) {
            tracing::debug!(
                used = st.used,
                budget = self.budget,
                "cache over budget: the rest is open, pinned or not yet flushed"
            );
        }
        Ok(freed)
    }
}
