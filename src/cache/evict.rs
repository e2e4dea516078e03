//! Eviction: whole objects, least recently used first, until the bytes of present blocks fit
//! the budget; open (guarded) and pinned objects stay.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use super::error::CacheError;
use super::lock;
use super::state::Shared;
use crate::meta::objects::ObjectBrief;

impl Shared {
    /// Evicts least-recently-used unguarded, unpinned objects until usage fits the budget.
    pub(super) fn evict(&self) -> Result<u64, CacheError> {
        let _f = lock(&self.flush_lock);
        let mut st = self.state();
        if st.used <= self.budget {
            return Ok(0);
        }
        let need = st.used - self.budget;
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
        if st.used > self.budget {
            tracing::debug!(
                used = st.used,
                budget = self.budget,
                "cache over budget: the rest is open, pinned or not yet flushed"
            );
        }
        Ok(freed)
    }
}
