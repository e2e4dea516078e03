//! The schedule of the durable upload queue: which dirty file is uploaded next, when a failed
//! one is retried, and what `status` shows.
//!
//! The queue's truth is the `dirty` table of the metadata store (see [`crate::meta`]): a record
//! is written (fsynced) before `close()` returns and removed only after the server has the
//! content. This module keeps an in-memory mirror of those records with what is not worth a
//! disk write: attempts, the next retry time, the last error, which uploads are running.
//!
//! Rules:
//! - a record becomes ready `delay` after it was committed (the write-back delay, which lets a
//!   file rewritten or deleted right away be uploaded once or not at all);
//! - a failure retries after `retry_min · 2^(attempts-1)`, capped at `retry_max`; when the server
//!   answers again after being unreachable, every waiting record is ready at once;
//! - a 507 (server out of space) pauses the whole area; one record probes every `space_retry`
//!   and a success resumes the rest; with an account-wide [`Space`] (a profile's daemon, which
//!   also syncs folders of the same account), a pause or resume there is one here too;
//! - at most one upload per path runs, and none below a path that a rename or unlink has
//!   blocked (`UploadQueue::block`) until that operation is done.
//!
//! Lock order: this queue's lock comes before `Vfs::tree` (the `deferred` callback of
//! `UploadQueue::next` looks at the tree), so the vfs never calls the queue while holding the
//! tree; this lock is never held across an `.await` (the whole order is the table in
//! `vfs/mod.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::status::{ConflictInfo, FileProblem, QueueStatus};
use crate::meta::{AreaId, DirtyRecord};
use crate::remote::RemotePath;
use crate::transfer::space::Space;

/// Settings of the upload queue.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Uploads running at the same time.
    pub workers: usize,
    /// How long after its last close a file waits before its upload starts.
    pub delay: Duration,
    /// First retry delay after a failure; doubles per attempt.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often an area paused by a full server is probed.
    pub space_retry: Duration,
    /// Upload to a temporary name and MOVE it into place, so that an interrupted upload can
    /// never truncate the server's copy (some servers, rclone's among them, do on a cut PUT).
    pub via_temp: bool,
    /// The name of this machine in conflict copies.
    pub device: String,
    /// The account's room on the server, shared with the sync folders of the same daemon
    /// (see [`crate::transfer::space`]); `None`: this queue's own pauses only.
    pub space: Option<Arc<Space>>,
}

impl UploadOptions {
    /// No write-back delay and quick retries (tests, and anyone who wants uploads at once).
    pub fn immediate() -> UploadOptions {
        UploadOptions {
            delay: Duration::ZERO,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(500),
            space_retry: Duration::from_millis(500),
            ..UploadOptions::default()
        }
    }
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            workers: 4,
            delay: Duration::from_millis(500),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            space_retry: Duration::from_secs(30),
            via_temp: true,
            device: crate::transfer::conflict::device_name(),
            space: None,
        }
    }
}

struct Item {
    rec: DirtyRecord,
    ready_at: Instant,
    attempts: u32,
    error: Option<String>,
    /// The last failure reached no server: the server's health says why, once for all files,
    /// and `status` does not repeat it per file.
    offline: bool,
    running: bool,
    /// A newer record of the path was queued while this one was uploading: it only waits for
    /// its upload to end (so two uploads of one path never overlap).
    superseded: bool,
    /// Bytes of the running attempt's body sent so far (see `UploadQueue::sent_counter`).
    sent: Arc<std::sync::atomic::AtomicU64>,
}

struct Paused {
    reason: String,
    probe_at: Instant,
}

#[derive(Default)]
struct QueueState {
    items: BTreeMap<i64, Item>,
    by_path: HashMap<(AreaId, RemotePath), i64>,
    paused: HashMap<AreaId, Paused>,
    /// Paths (and everything below) no upload may start under, with a count per block.
    blocked: Vec<(AreaId, RemotePath)>,
    conflicts: Vec<(AreaId, RemotePath, RemotePath, SystemTime)>,
    stopping: bool,
}

/// What a worker should do next.
pub(crate) enum Next {
    Run(DirtyRecord),
    /// Nothing ready; wait for a wake-up or until this time.
    Wait(Option<Instant>),
    Stop,
}

/// How an upload attempt ended.
pub(crate) enum Finish {
    /// No longer needed (removed from the store by the caller).
    Done,
    /// Uploaded (removed from the store by the caller): the server had room.
    Landed,
    /// Could not start now (the file is open for writing); a release wakes the queue.
    Deferred,
    /// Failed; retried later. `offline` when the server could not be reached.
    Failed { reason: String, offline: bool },
    /// The server is out of space: pause the area.
    NoSpace(String),
}

/// The in-memory side of the upload queue, shared by the vfs and its upload workers.
pub(crate) struct UploadQueue {
    opts: UploadOptions,
    state: Mutex<QueueState>,
    /// Wakes the workers (new record, retry time changed, block lifted, stop).
    pub wake: Notify,
    /// Wakes those waiting for a change of the queue (wait_idle, blocks).
    changed: Notify,
}

impl UploadQueue {
    pub fn new(opts: UploadOptions) -> UploadQueue {
        UploadQueue {
            opts,
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            changed: Notify::new(),
        }
    }

    pub fn options(&self) -> &UploadOptions {
        &self.opts
    }

    fn st(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changed.notify_waiters();
        self.wake.notify_waiters();
    }

    /// Queues a committed record, replacing the older record of the same path. `delay`: the
    /// write-back delay (zero for records found at start).
    pub fn push(&self, rec: DirtyRecord, delay: Duration) {
        {
            let mut st = self.st();
            let key = (rec.area, rec.path.clone());
            if let Some(old) = st.by_path.insert(key, rec.id) {
                if old != rec.id {
                    match st.items.get_mut(&old) {
                        Some(it) if it.running => it.superseded = true,
                        _ => {
                            st.items.remove(&old);
                        }
                    }
                }
            }
            st.items.insert(
                rec.id,
                Item {
                    rec,
                    ready_at: Instant::now() + delay,
                    attempts: 0,
                    error: None,
                    offline: false,
                    running: false,
                    superseded: false,
                    sent: Default::default(),
                },
            );
        }
        self.changed();
    }

    /// Forgets records (removed from the store: deleted, replaced or renamed files).
    pub fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        {
            let mut st = self.st();
            for id in ids {
                if let Some(it) = st.items.remove(&id) {
                    let key = (it.rec.area, it.rec.path.clone());
                    if st.by_path.get(&key) == Some(&id) {
                        st.by_path.remove(&key);
                    }
                }
            }
        }
        self.changed();
    }

    /// Forgets the records at or below `path` (their store records were moved or removed).
    pub fn remove_under(&self, area: AreaId, path: &RemotePath) {
        let ids: Vec<i64> = self
            .st()
            .items
            .values()
            .filter(|it| it.rec.area == area && it.rec.path.starts_with(path))
            .map(|it| it.rec.id)
            .collect();
        self.remove(ids);
    }

    /// Updates the queued copy of a record whose base changed (same id).
    pub fn update(&self, rec: &DirtyRecord) {
        let mut st = self.st();
        if let Some(it) = st.items.get_mut(&rec.id) {
            it.rec = rec.clone();
        }
    }

    /// The counter of bytes sent by the running upload of record `id` (reset by each attempt).
    pub fn sent_counter(&self, id: i64) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.st().items.get(&id).map(|it| {
            it.sent.store(0, std::sync::atomic::Ordering::Relaxed);
            it.sent.clone()
        })
    }

    /// Whether record `id` is queued or being uploaded (a superseded one until it ends).
    pub fn has_id(&self, id: i64) -> bool {
        self.st().items.contains_key(&id)
    }

    /// Whether any record is at or below `path`.
    pub fn has_under(&self, area: AreaId, path: &RemotePath) -> bool {
        self.st()
            .items
            .values()
            .any(|it| it.rec.area == area && it.rec.path.starts_with(path))
    }

    /// Picks the next record to upload and marks it running. `deferred` says whether a record
    /// must wait for its writers to close.
    pub fn next(&self, deferred: &dyn Fn(&DirtyRecord) -> bool) -> Next {
        let now = Instant::now();
        let mut st = self.st();
        if st.stopping {
            return Next::Stop;
        }
        self.follow_space(&mut st, now);
        let mut wait: Option<Instant> = None;
        let mut earliest = |t: Instant| {
            wait = Some(wait.map_or(t, |w| w.min(t)));
        };
        let running: Vec<(AreaId, RemotePath)> = st
            .items
            .values()
            .filter(|it| it.running)
            .map(|it| (it.rec.area, it.rec.path.clone()))
            .collect();
        let mut pick = None;
        let mut probe_area = None;
        let mut probe: Option<(i64, u64, AreaId)> = None;
        for (id, it) in &st.items {
            if it.running
                || running
                    .iter()
                    .any(|(a, p)| *a == it.rec.area && *p == it.rec.path)
            {
                continue;
            }
            if st
                .blocked
                .iter()
                .any(|(a, p)| *a == it.rec.area && it.rec.path.starts_with(p))
            {
                continue;
            }
            if let Some(p) = st.paused.get(&it.rec.area) {
                if p.probe_at > now {
                    earliest(p.probe_at);
                    continue;
                }
            }
            if it.ready_at > now {
                earliest(it.ready_at);
                continue;
            }
            if deferred(&it.rec) {
                continue;
            }
            if st.paused.contains_key(&it.rec.area) {
                // The probe of a full server: the smallest file, the likeliest to fit.
                if probe.is_none_or(|(_, size, _)| it.rec.size < size) {
                    probe = Some((*id, it.rec.size, it.rec.area));
                }
                continue;
            }
            pick = Some(*id);
            break;
        }
        if pick.is_none() {
            if let Some((id, _, area)) = probe {
                pick = Some(id);
                probe_area = Some(area);
            }
        }
        if let Some(area) = probe_area {
            let next_probe = now + self.opts.space_retry;
            if let Some(p) = st.paused.get_mut(&area) {
                p.probe_at = next_probe;
            }
        }
        match pick {
            Some(id) => {
                let it = st.items.get_mut(&id).expect("picked from the map");
                it.running = true;
                Next::Run(it.rec.clone())
            }
            None => Next::Wait(wait),
        }
    }

    /// Follows the account's pause (see [`UploadOptions::space`]): paused there, every area
    /// with records waits too (probed by the account); resumed there, this queue's pauses end.
    fn follow_space(&self, st: &mut QueueState, now: Instant) {
        let Some(space) = &self.opts.space else {
            return;
        };
        match space.paused() {
            Some(p) => {
                let probe_at = space.next_probe().unwrap_or(now);
                let areas: Vec<AreaId> = st.items.values().map(|it| it.rec.area).collect();
                for area in areas {
                    st.paused.entry(area).or_insert_with(|| Paused {
                        reason: p.reason.clone(),
                        probe_at,
                    });
                }
            }
            None => st.paused.clear(),
        }
    }

    /// Records how the upload of `rec` ended.
    pub fn finish(&self, rec: &DirtyRecord, how: Finish) {
        if let Some(space) = &self.opts.space {
            match &how {
                Finish::NoSpace(reason) => space.full(reason.clone()),
                Finish::Landed => space.landed(),
                _ => {}
            }
        }
        {
            let mut st = self.st();
            if st.items.get(&rec.id).is_some_and(|it| it.superseded) {
                st.items.remove(&rec.id);
                if let Finish::NoSpace(reason) = how {
                    let probe_at = Instant::now() + self.opts.space_retry;
                    st.paused.insert(rec.area, Paused { reason, probe_at });
                }
                drop(st);
                self.changed();
                return;
            }
            match how {
                Finish::Done | Finish::Landed => {
                    if let Some(it) = st.items.remove(&rec.id) {
                        let key = (it.rec.area, it.rec.path.clone());
                        if st.by_path.get(&key) == Some(&rec.id) {
                            st.by_path.remove(&key);
                        }
                    }
                    st.paused.remove(&rec.area);
                }
                Finish::Deferred => {
                    if let Some(it) = st.items.get_mut(&rec.id) {
                        it.running = false;
                    }
                }
                Finish::Failed { reason, offline } => {
                    let backoff = |attempts: u32| {
                        let f = 1u32 << attempts.saturating_sub(1).min(16);
                        (self.opts.retry_min * f).min(self.opts.retry_max)
                    };
                    if let Some(it) = st.items.get_mut(&rec.id) {
                        it.running = false;
                        it.attempts += 1;
                        it.ready_at = Instant::now() + backoff(it.attempts);
                        it.error = Some(reason);
                        it.offline = offline;
                    }
                }
                Finish::NoSpace(reason) => {
                    let probe_at = Instant::now() + self.opts.space_retry;
                    if let Some(it) = st.items.get_mut(&rec.id) {
                        it.running = false;
                        it.attempts += 1;
                        it.error = Some(reason.clone());
                        it.offline = false;
                    }
                    st.paused.insert(rec.area, Paused { reason, probe_at });
                }
            }
        }
        self.changed();
    }

    /// The server is back (see [`crate::health::Health::on_back_online`]): every record that
    /// failed and waits for its retry is ready now.
    pub fn retry_now(&self) {
        {
            let mut st = self.st();
            let now = Instant::now();
            for it in st.items.values_mut() {
                if it.attempts > 0 {
                    it.ready_at = it.ready_at.min(now);
                }
            }
        }
        self.changed();
    }

    /// Every record that waits for the write-back delay is ready now (the unmount waits for
    /// them; a retry after a failure keeps its back-off).
    pub fn hurry(&self) {
        {
            let mut st = self.st();
            let now = Instant::now();
            for it in st.items.values_mut().filter(|it| it.attempts == 0) {
                it.ready_at = it.ready_at.min(now);
            }
        }
        self.changed();
    }

    /// Whether uploads to `area` are paused for lack of space, and why.
    pub fn paused(&self, area: AreaId) -> Option<String> {
        if let Some(space) = &self.opts.space {
            // The account's pause is this queue's too (its own refusals are reported there).
            return space.paused().map(|p| p.reason);
        }
        self.st().paused.get(&area).map(|p| p.reason.clone())
    }

    /// Remembers a conflict for `status`.
    pub fn add_conflict(&self, area: AreaId, path: RemotePath, copy: RemotePath, at: SystemTime) {
        let mut st = self.st();
        st.conflicts
            .retain(|(a, _, c, _)| !(*a == area && *c == copy));
        st.conflicts.push((area, path, copy, at));
    }

    /// Forgets conflicts whose copy is at or below `copy` (the user deleted it).
    pub fn remove_conflicts(&self, area: AreaId, copy: &RemotePath) -> bool {
        let mut st = self.st();
        let before = st.conflicts.len();
        st.conflicts
            .retain(|(a, _, c, _)| !(*a == area && c.starts_with(copy)));
        st.conflicts.len() != before
    }

    /// Moves remembered conflict copies on a rename; whether any moved.
    pub fn rename_conflicts(&self, area: AreaId, from: &RemotePath, to: &RemotePath) -> bool {
        let mut st = self.st();
        let mut moved = false;
        for (a, _, c, _) in st.conflicts.iter_mut() {
            if *a != area {
                continue;
            }
            if let Some(p) = c.rebase(from, to) {
                *c = p;
                moved = true;
            }
        }
        moved
    }

    /// Whether `path` is a conflict copy made by this queue.
    pub fn is_conflict_copy(&self, area: AreaId, path: &RemotePath) -> bool {
        self.st()
            .conflicts
            .iter()
            .any(|(a, _, c, _)| *a == area && c == path)
    }

    /// Blocks uploads at or below `paths` and waits until none of them is running. Uploads
    /// resume when the guard is dropped.
    pub async fn block(self: &Arc<Self>, area: AreaId, paths: Vec<RemotePath>) -> BlockGuard {
        {
            let mut st = self.st();
            for p in &paths {
                st.blocked.push((area, p.clone()));
            }
        }
        let guard = BlockGuard {
            queue: self.clone(),
            area,
            paths,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self.st().items.values().any(|it| {
                it.running
                    && it.rec.area == area
                    && guard.paths.iter().any(|p| it.rec.path.starts_with(p))
            });
            if !busy {
                return guard;
            }
            notified.await;
        }
    }

    /// Stops the workers (at unmount); records stay in the store for the next mount.
    pub fn stop(&self) {
        self.st().stopping = true;
        self.changed();
    }

    /// Number of queued files (a record replaced while uploading is not counted twice).
    pub fn len(&self) -> usize {
        self.st().items.values().filter(|it| !it.superseded).count()
    }

    /// Waits until the queue is empty.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.st().items.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The queue part of `status`; `name` turns an (area, path) into a mount-relative path.
    pub fn report(
        &self,
        name: &dyn Fn(AreaId, &RemotePath) -> String,
    ) -> (QueueStatus, Vec<FileProblem>, Vec<ConflictInfo>) {
        let st = self.st();
        let mut q = QueueStatus::default();
        let mut problems = Vec::new();
        for it in st.items.values().filter(|it| !it.superseded) {
            q.files += 1;
            q.bytes += it.rec.size;
            if it.running {
                q.in_flight += 1;
                q.in_flight_bytes += it.rec.size;
                q.in_flight_sent += it
                    .sent
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .min(it.rec.size);
            }
            // A failure that reached no server is the server's health's to report, once.
            if it.error.is_some() && it.offline {
                q.waiting_for_server += 1;
            }
            if let (Some(e), false) = (&it.error, it.offline) {
                problems.push(FileProblem {
                    path: name(it.rec.area, &it.rec.path),
                    reason: e.clone(),
                    attempts: it.attempts,
                });
            }
        }
        q.paused = st
            .paused
            .values()
            .next()
            .map(|p| p.reason.clone())
            .or_else(|| {
                // The account's pause (a sync folder found the server full) holds this mount's
                // uploads too, queued or not yet.
                self.opts
                    .space
                    .as_ref()
                    .and_then(|s| s.paused())
                    .map(|p| p.reason)
            });
        let conflicts = st
            .conflicts
            .iter()
            .map(|(a, p, c, at)| ConflictInfo {
                path: name(*a, p),
                copy: name(*a, c),
                at: at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
            })
            .collect();
        (q, problems, conflicts)
    }
}

/// Uploads at or below some paths wait while this lives.
pub(crate) struct BlockGuard {
    queue: Arc<UploadQueue>,
    area: AreaId,
    paths: Vec<RemotePath>,
}

impl Drop for BlockGuard {
    fn drop(&mut self) {
        {
            let mut st = self.queue.st();
            for p in &self.paths {
                if let Some(i) = st
                    .blocked
                    .iter()
                    .position(|(a, q)| *a == self.area && q == p)
                {
                    st.blocked.remove(i);
                }
            }
        }
        self.queue.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DirtyState;

    fn rec(id: i64, path: &str) -> DirtyRecord {
        DirtyRecord {
            id,
            area: 0,
            path: RemotePath::new(path).unwrap(),
            staging: "staging/x".into(),
            base_etag: None,
            on_server: false,
            size: 10,
            state: DirtyState::Pending,
            updated_at: SystemTime::now(),
            prior_move: None,
        }
    }

    fn opts() -> UploadOptions {
        UploadOptions {
            workers: 2,
            delay: Duration::ZERO,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            space_retry: Duration::from_secs(60),
            via_temp: true,
            device: "t".into(),
            space: None,
        }
    }

    fn run(q: &UploadQueue) -> Option<i64> {
        match q.next(&|_| false) {
            Next::Run(r) => Some(r.id),
            _ => None,
        }
    }

    #[test]
    fn a_rewrite_replaces_the_queued_record() {
        let q = UploadQueue::new(opts());
        q.push(rec(1, "a"), Duration::ZERO);
        q.push(rec(2, "a"), Duration::ZERO);
        assert_eq!(q.len(), 1);
        assert_eq!(run(&q), Some(2));
        assert_eq!(run(&q), None, "one upload per path at a time");
    }

    #[test]
    fn a_rewrite_during_an_upload_waits_for_it() {
        let q = UploadQueue::new(opts());
        q.push(rec(1, "a"), Duration::ZERO);
        assert_eq!(run(&q), Some(1));
        q.push(rec(2, "a"), Duration::ZERO);
        assert_eq!(
            run(&q),
            None,
            "record 1 of the same path is still uploading"
        );
        assert_eq!(q.report(&|_, p| p.to_string()).0.files, 1);
        q.finish(&rec(1, "a"), Finish::Done);
        assert_eq!(run(&q), Some(2));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let q = UploadQueue::new(opts());
        let r = rec(1, "a");
        q.push(r.clone(), Duration::ZERO);
        let mut delays = Vec::new();
        for _ in 0..5 {
            assert_eq!(run(&q), Some(1));
            q.finish(
                &r,
                Finish::Failed {
                    reason: "x".into(),
                    offline: true,
                },
            );
            match q.next(&|_| false) {
                Next::Wait(Some(t)) => delays.push(t.duration_since(Instant::now())),
                _ => panic!("expected a wait"),
            }
            // Make it ready again without sleeping.
            q.st().items.get_mut(&1).unwrap().ready_at = Instant::now();
        }
        let ms: Vec<u128> = delays
            .iter()
            .map(|d| (d.as_millis() + 50) / 100 * 100)
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 400, 400]);
        let (q_status, problems, _) = q.report(&|_, p| p.to_string());
        assert_eq!(q_status.files, 1);
        assert!(
            problems.is_empty(),
            "an offline failure is the health's to report, not the file's"
        );
        q.retry_now();
        assert_eq!(run(&q), Some(1), "back online: retried at once");
    }

    #[test]
    fn no_space_pauses_the_area_until_a_probe_succeeds() {
        let q = UploadQueue::new(opts());
        q.push(rec(1, "a"), Duration::ZERO);
        q.push(rec(2, "b"), Duration::ZERO);
        let r1 = rec(1, "a");
        assert_eq!(run(&q), Some(1));
        q.finish(&r1, Finish::NoSpace("full".into()));
        assert_eq!(run(&q), None, "paused");
        assert_eq!(q.paused(0).as_deref(), Some("full"));
        q.st().paused.get_mut(&0).unwrap().probe_at = Instant::now();
        let probe = run(&q).expect("one probe");
        assert_eq!(run(&q), None, "only one probe at a time");
        q.finish(
            &rec(probe, if probe == 1 { "a" } else { "b" }),
            Finish::Landed,
        );
        assert!(q.paused(0).is_none());
        assert!(run(&q).is_some(), "resumed");
    }

    #[test]
    fn an_account_pause_holds_the_queue_and_its_resume_frees_it() {
        let space = Arc::new(Space::new(Duration::from_secs(3600)));
        let q = UploadQueue::new(UploadOptions {
            space: Some(space.clone()),
            ..opts()
        });
        q.push(rec(1, "a"), Duration::ZERO);
        // A sync folder of the same account found the server full.
        space.full("the server is out of space (HTTP 507)");
        assert_eq!(run(&q), None, "the mount's uploads wait too");
        assert!(
            q.report(&|_, p| p.to_string()).0.paused.is_some(),
            "and status says why"
        );
        // Space was freed: a sync folder's upload landed.
        space.landed();
        assert_eq!(run(&q), Some(1), "resumed without waiting for a probe");
    }

    #[test]
    fn the_queue_pauses_and_resumes_the_account() {
        let space = Arc::new(Space::new(Duration::from_secs(3600)));
        let q = UploadQueue::new(UploadOptions {
            space: Some(space.clone()),
            ..opts()
        });
        q.push(rec(1, "a"), Duration::ZERO);
        assert_eq!(run(&q), Some(1));
        q.finish(&rec(1, "a"), Finish::NoSpace("full".into()));
        assert!(space.paused().is_some(), "the sync folders pause too");
        q.st().paused.get_mut(&0).unwrap().probe_at = Instant::now();
        assert_eq!(run(&q), Some(1), "probe");
        q.finish(&rec(1, "a"), Finish::Done);
        assert!(
            space.paused().is_some(),
            "a record no longer needed proves nothing"
        );
        q.push(rec(2, "b"), Duration::ZERO);
        assert_eq!(run(&q), None, "still paused by the account");
        q.st().paused.get_mut(&0).unwrap().probe_at = Instant::now();
        assert_eq!(run(&q), Some(2));
        q.finish(&rec(2, "b"), Finish::Landed);
        assert!(
            space.paused().is_none(),
            "an upload that landed resumes the account"
        );
    }

    #[test]
    fn a_full_server_is_probed_with_the_smallest_file() {
        let q = UploadQueue::new(opts());
        let mut big = rec(1, "big");
        big.size = 1000;
        let mut small = rec(2, "small");
        small.size = 5;
        q.push(big.clone(), Duration::ZERO);
        q.push(small.clone(), Duration::ZERO);
        assert_eq!(run(&q), Some(1));
        q.finish(&big, Finish::NoSpace("full".into()));
        q.st().paused.get_mut(&0).unwrap().probe_at = Instant::now();
        assert_eq!(run(&q), Some(2), "the smaller file probes");
    }

    #[tokio::test]
    async fn blocks_wait_for_running_uploads_and_hold_new_ones() {
        let q = Arc::new(UploadQueue::new(opts()));
        q.push(rec(1, "d/a"), Duration::ZERO);
        q.push(rec(2, "d/b"), Duration::ZERO);
        q.push(rec(3, "e"), Duration::ZERO);
        assert_eq!(run(&q), Some(1));
        let q2 = q.clone();
        let blocker = tokio::spawn(async move {
            let g = q2.block(0, vec![RemotePath::new("d").unwrap()]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(g);
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !blocker.is_finished(),
            "waits for the running upload below d"
        );
        assert_eq!(run(&q), Some(3), "d/b is blocked, e is not");
        q.finish(&rec(1, "d/a"), Finish::Done);
        blocker.await.unwrap();
        assert_eq!(run(&q), Some(2));
    }

    #[test]
    fn deferred_records_wait_and_writers_do_not_block_others() {
        let q = UploadQueue::new(opts());
        q.push(rec(1, "open"), Duration::ZERO);
        q.push(rec(2, "closed"), Duration::ZERO);
        let got = match q.next(&|r| r.path.as_str() == "open") {
            Next::Run(r) => r.id,
            _ => 0,
        };
        assert_eq!(got, 2);
        assert!(matches!(
            q.next(&|r| r.path.as_str() == "open"),
            Next::Wait(None)
        ));
    }
}
