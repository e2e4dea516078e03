//! The download engine: fetches the missing blocks of a cache object (one version of a remote
//! file) from the server into the block cache. It works on cache objects and the version they
//! hold, never on inodes, so pins and sync can fetch files the kernel never looked up; its
//! errors are its own (`DownloadError`), and the vfs maps them to errno.
//!
//! - **Versions**: every GET of a version the server gave an ETag is conditional on it
//!   (`If-Match`), so old and new bytes never mix (`Origin`); a body shorter than the
//!   version's size is an error too.
//! - **Single flight**: a block being downloaded is *claimed* in `BlockClaims`; another
//!   reader that needs it waits for that download instead of starting its own, and re-checks
//!   the cache each time the download stores a piece (about 1 MiB) and when it ends (if the
//!   download failed, the waiter claims and fetches what is still missing itself).
//! - **Read-ahead** ([`ReadAhead`], one per handle): a read at the start of the file, or one
//!   that continues where the last one ended, prefetches a window that doubles on each
//!   sequential read, from `INITIAL_WINDOW` (1 MiB + 128 KiB, which covers the kernel's own
//!   read-ahead) up to `MAX_WINDOW`; a jump (random access) prefetches nothing and resets it.
//!   The kernel has several reads of one reader in flight, and they reach us in any order: a
//!   read within `REORDER_SLACK` of the stream's end is part of the stream, not a jump (a
//!   1 GiB `cat` used to reset the window every 65 MiB).
//!   The window beyond the read is fetched in the background in `CHUNK`-sized pieces, several
//!   GETs in parallel (16 MiB: fewer, longer GETs cost the server and the daemon less than
//!   4 or 8 MiB ones did for a cold 1 GiB read here); a top-up is cut to whole pieces.
//! - **Budget**: all background read-ahead of the mount shares one budget of bytes in flight
//!   (`BUDGET`); a piece that does not fit is not prefetched now (the demand read fetches it
//!   if it comes first, the next read schedules it again otherwise), so memory and
//!   connections stay bounded however many files are read at once.
//! - **Storing**: downloaded bytes are written to the cache file off the async workers; a
//!   demand read of a small run is answered from the downloaded bytes and stores them after
//!   (`serve_from_download`).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};

use super::VfsError;
use crate::cache::{CacheError, CacheObject, ObjectKey};
use crate::remote::{ByteRange, ByteStream, ETag, Remote, RemoteError};

/// First read-ahead window.
pub const INITIAL_WINDOW: u64 = (1 << 20) + (128 << 10);
/// Largest read-ahead window of one handle.
pub const MAX_WINDOW: u64 = 128 << 20;
/// Size of one background GET.
const CHUNK: u64 = 16 << 20;
/// Bytes of background read-ahead in flight for the whole mount.
const BUDGET: u64 = 256 << 20;
/// Budget accounting unit.
const BUDGET_UNIT: u64 = 64 << 10;

/// A demand read that must download a run of at most this many bytes (and is the only one
/// downloading it) is answered from the downloaded bytes; storing them in the cache happens
/// after, off the read's path.
const SERVE_FROM_DOWNLOAD_MAX: u64 = 1 << 20;

/// Why a download failed. The vfs maps these to errno itself (see `Vfs::download_error`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    /// The server's answer is not the version asked for: another version (412 on `If-Match`),
    /// a body shorter than the version's size, or an answer that does not fit the request.
    #[error("{0}")]
    Changed(RemoteError),
    /// Any other failed request (network, authentication, not found, 5xx, ...).
    #[error(transparent)]
    Remote(RemoteError),
    /// Storing downloaded blocks in the cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A task on the blocking pool failed (panicked or was cancelled).
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl DownloadError {
    pub(super) fn remote(e: RemoteError) -> DownloadError {
        match e {
            RemoteError::VersionChanged { .. } | RemoteError::BadResponse { .. } => {
                DownloadError::Changed(e)
            }
            e => DownloadError::Remote(e),
        }
    }
}

/// Where a version is downloaded from: the server holding it, and whether the version's ETag
/// is the server's (then every GET is conditional on it with `If-Match`, so old and new bytes
/// never mix) or a stand-in made up from size and mtime for a server that gives none.
#[derive(Clone)]
pub(crate) struct Origin {
    pub remote: Arc<dyn Remote>,
    pub conditional: bool,
    /// Where the version is on the server when not at its key's path (a file deleted while
    /// read, set aside for its readers: see `set_aside.rs`).
    pub at: Option<crate::remote::RemotePath>,
}

impl Origin {
    /// The ETag a download of `key` must match.
    fn expect<'k>(&self, key: &'k ObjectKey) -> Option<&'k ETag> {
        self.conditional.then_some(&key.etag)
    }
}

/// The download engine of a mount: fetches missing blocks of a cache object (one version of a
/// remote file) from the server and stores them. Keyed by the cache object, never by inode, so
/// it can fetch files the kernel never looked up.
pub(crate) struct Downloads {
    /// Blocks being downloaded (single flight).
    claims: BlockClaims,
    /// Bytes of background read-ahead in flight, for the whole mount ([`BUDGET`]).
    budget: Arc<Semaphore>,
    /// Downloaded bytes being stored in the background now (see [`Downloads::wait_for_stores`]).
    storing: Arc<watch::Sender<usize>>,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads {
            claims: BlockClaims::default(),
            budget: Arc::new(Semaphore::new((BUDGET / BUDGET_UNIT) as usize)),
            storing: Arc::new(watch::channel(0).0),
        }
    }
}

impl Downloads {
    /// Starts background downloads of `range` of `obj` (read-ahead), in pieces, within the
    /// mount's read-ahead budget; a piece that fails is given to `on_error`. Returns where it
    /// stopped when the budget ran out (the rest is left to later reads).
    pub fn prefetch(
        self: &Arc<Self>,
        origin: &Origin,
        obj: &Arc<CacheObject>,
        range: Range<u64>,
        on_error: impl Fn(DownloadError) + Clone + Send + 'static,
    ) -> Option<u64> {
        let bs = obj.block_size();
        let mut pos = range.start / bs * bs;
        while pos < range.end {
            let piece_end = (pos + CHUNK).min(range.end);
            if obj.missing(pos, piece_end - pos).is_empty() {
                pos = piece_end;
                continue;
            }
            let Ok(permit) = self
                .budget
                .clone()
                .try_acquire_many_owned(permits(piece_end - pos))
            else {
                tracing::trace!("read-ahead budget exhausted");
                return Some(pos);
            };
            let (me, origin, obj, on_error) =
                (self.clone(), origin.clone(), obj.clone(), on_error.clone());
            tokio::spawn(async move {
                if let Err(e) = me.ensure_blocks(&origin, &obj, pos, piece_end - pos).await {
                    on_error(e);
                }
                drop(permit);
            });
            pos = piece_end;
        }
        None
    }

    /// Makes sure the blocks of `[offset, offset+len)` are in `obj`: downloads the missing
    /// ones not already being downloaded (several GETs at once), and waits for the others.
    pub async fn ensure_blocks(
        &self,
        origin: &Origin,
        obj: &Arc<CacheObject>,
        offset: u64,
        len: u64,
    ) -> Result<(), DownloadError> {
        let bs = obj.block_size();
        loop {
            let runs = obj.missing(offset, len);
            if runs.is_empty() {
                return Ok(());
            }
            let plan = self.claims.plan(obj.file_path(), &runs, bs, 2 * CHUNK);
            let mut waits = plan.waits;
            if !plan.claimed.is_empty() {
                let results: Vec<Result<(), DownloadError>> = futures_util::stream::iter(
                    plan.claimed
                        .into_iter()
                        .map(|claim| self.fetch_claimed(origin, obj, claim)),
                )
                .buffer_unordered(4)
                .collect()
                .await;
                for r in results {
                    r?;
                }
            }
            if !waits.is_empty() {
                // Woken when another download stores some blocks or ends, whatever its
                // outcome: the loop re-checks what is still missing.
                let woken = waits.iter_mut().map(|w| Box::pin(w.changed()));
                let _ = futures_util::future::select_all(woken).await;
            }
        }
    }

    /// The download half of a demand read that has `need` to fetch alone: when the missing
    /// part of `need` is one run of at most [`SERVE_FROM_DOWNLOAD_MAX`] bytes covering it and
    /// nobody else is downloading any of it, downloads that run and returns it (its start and
    /// bytes); the bytes are stored in the cache in the background, the claim held until they
    /// are (a failed store is logged: the read has its bytes, a later read downloads again).
    /// `None` when the general path must do it (cached already, bigger, or shared).
    pub async fn serve_from_download(
        &self,
        origin: &Origin,
        obj: &Arc<CacheObject>,
        need: Range<u64>,
    ) -> Result<Option<(u64, Bytes)>, DownloadError> {
        let runs = obj.missing(need.start, need.end - need.start);
        let [run] = runs.as_slice() else {
            return Ok(None);
        };
        if run.start > need.start
            || run.end < need.end
            || run.end - run.start > SERVE_FROM_DOWNLOAD_MAX
        {
            return Ok(None);
        }
        let bs = obj.block_size();
        let plan = self
            .claims
            .plan(obj.file_path(), std::slice::from_ref(run), bs, 2 * CHUNK);
        if plan.claimed.len() != 1 || !plan.waits.is_empty() {
            // Shared with another download: the general path waits for it (the claims taken
            // here are dropped first).
            return Ok(None);
        }
        let claim = plan.claimed.into_iter().next().expect("one claim");
        let run = claim.bytes.clone();
        let data = self.download(origin, obj.key(), run.clone()).await?;
        self.store_in_background(obj, vec![claim], data.clone(), run.start);
        Ok(Some((run.start, data)))
    }

    /// Stores the whole downloaded content `data` of `obj` in the background: the blocks no
    /// other download is storing already.
    pub fn store_whole(&self, obj: &Arc<CacheObject>, data: Bytes) {
        let size = obj.size();
        let missing = obj.missing(0, size);
        let bs = obj.block_size();
        let plan = self
            .claims
            .plan(obj.file_path(), &missing, bs, size.max(bs));
        self.store_in_background(obj, plan.claimed, data, 0);
    }

    /// Returns once the downloaded bytes being stored in the background are in the cache (at
    /// unmount, before the cache is flushed: a small file read just before would otherwise
    /// be missing from the cache at the next mount).
    pub async fn wait_for_stores(&self) {
        let mut rx = self.storing.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Stores downloaded `data` (starting at byte `data_start` of `obj`) for each of `claims`,
    /// on the blocking pool; each claim is released when its bytes are in (waking its
    /// waiters). A failed store is logged: the reader has its bytes, a later read downloads
    /// them again.
    fn store_in_background(
        &self,
        obj: &Arc<CacheObject>,
        claims: Vec<Claim>,
        data: Bytes,
        data_start: u64,
    ) {
        let o = obj.clone();
        let storing = Storing::start(&self.storing);
        tokio::task::spawn_blocking(move || {
            for claim in claims {
                let r = claim.bytes.clone();
                let piece = &data[(r.start - data_start) as usize..(r.end - data_start) as usize];
                if let Err(e) = o.write_blocks(r.start, piece) {
                    match VfsError::from(e) {
                        e if e.is_local_disk_full() => {
                            tracing::debug!(error = %e, "local disk full")
                        }
                        e => {
                            tracing::warn!(error = %e, "storing downloaded blocks in the cache failed")
                        }
                    }
                }
                drop(claim);
            }
            drop(storing);
        });
    }

    /// Downloads `range` of `key`'s file whole into memory.
    pub async fn download(
        &self,
        origin: &Origin,
        key: &ObjectKey,
        range: Range<u64>,
    ) -> Result<Bytes, DownloadError> {
        let len = range.end - range.start;
        let mut body = get_range(origin, key, range.clone()).await?;
        let mut buf = BytesMut::with_capacity(len as usize);
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.map_err(DownloadError::remote)?);
        }
        check_length(key, range.start + buf.len() as u64, range.end)?;
        buf.truncate(len as usize);
        Ok(buf.freeze())
    }

    /// Downloads a claimed run; the claim is released (waking waiters) when this ends.
    async fn fetch_claimed(
        &self,
        origin: &Origin,
        obj: &Arc<CacheObject>,
        claim: Claim,
    ) -> Result<(), DownloadError> {
        let r = fetch_run(origin, obj, &claim).await;
        drop(claim);
        r
    }
}

/// Downloads the block-aligned byte run of `claim` into `obj`, waking the claim's waiters
/// after each stored piece.
async fn fetch_run(
    origin: &Origin,
    obj: &Arc<CacheObject>,
    claim: &Claim,
) -> Result<(), DownloadError> {
    let run = claim.bytes.clone();
    let bs = obj.block_size();
    let key = obj.key();
    let mut body = get_range(origin, key, run.clone()).await?;
    let mut pos = run.start;
    // Written to the cache file in batches of whole blocks (about 1 MiB), each waking the
    // readers that wait for this run. The body's own pieces are written (`pwritev`), never
    // copied into one buffer; a piece across a block boundary is split (no copy either).
    let batch = bs.max(1 << 20);
    let mut parts: Vec<Bytes> = Vec::new();
    let mut held = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(DownloadError::remote)?;
        held += chunk.len() as u64;
        parts.push(chunk);
        if held < batch {
            continue;
        }
        let whole = (held / bs) * bs;
        if whole > 0 {
            let rest = split_parts_at(&mut parts, whole);
            let data = std::mem::replace(&mut parts, rest);
            store_blocks(obj, pos, data).await?;
            claim.stored();
            pos += whole;
            held -= whole;
        }
    }
    if held > 0 {
        store_blocks(obj, pos, parts).await?;
        pos += held;
    }
    check_length(key, pos, run.end)
}

/// Starts the GET of `range` of `key`'s file (conditional when the origin says so).
pub(super) async fn get_range(
    origin: &Origin,
    key: &ObjectKey,
    range: Range<u64>,
) -> Result<ByteStream, DownloadError> {
    let resp = origin
        .remote
        .read_range(
            origin.at.as_ref().unwrap_or(&key.path),
            ByteRange::new(range.start, range.end - range.start),
            origin.expect(key),
        )
        .await
        .map_err(DownloadError::remote)?;
    Ok(resp.body)
}

/// A body that ended at `got` before `want`: the file is shorter than its listing said.
pub(super) fn check_length(key: &ObjectKey, got: u64, want: u64) -> Result<(), DownloadError> {
    if got >= want {
        return Ok(());
    }
    Err(DownloadError::remote(RemoteError::BadResponse {
        method: "GET".into(),
        url: key.path.to_string(),
        reason: format!("the file is shorter on the server than listed ({got} < {want})"),
    }))
}

/// Stores the concatenation of `parts` at `offset` of `obj` (block-aligned, whole blocks but
/// for the file's last), off the async workers.
async fn store_blocks(
    obj: &Arc<CacheObject>,
    offset: u64,
    parts: Vec<Bytes>,
) -> Result<(), DownloadError> {
    let o = obj.clone();
    tokio::task::spawn_blocking(move || o.write_blocks_vectored(offset, &parts))
        .await
        .map_err(|e| DownloadError::Task(e.to_string()))??;
    Ok(())
}

/// One background store counted in `Downloads::storing` while it lives.
struct Storing(Arc<watch::Sender<usize>>);

impl Storing {
    fn start(count: &Arc<watch::Sender<usize>>) -> Storing {
        count.send_modify(|n| *n += 1);
        Storing(count.clone())
    }
}

impl Drop for Storing {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Blocks being downloaded: object file → block index → the download's completion.
type Claims = Arc<Mutex<HashMap<PathBuf, HashMap<u64, watch::Receiver<u64>>>>>;

#[derive(Default)]
struct BlockClaims {
    claims: Claims,
}

/// A claimed run of blocks: dropping it releases the claim and wakes the waiters; so does
/// each [`Claim::stored`] on the way (waiters re-check which blocks are present).
struct Claim {
    claims: Claims,
    file: PathBuf,
    blocks: Range<u64>,
    /// Counts the pieces stored so far; dropped with the claim (the end).
    progress: watch::Sender<u64>,
    /// Byte range of the claimed blocks (clipped to the file size by the caller).
    pub bytes: Range<u64>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut m = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(blocks) = m.get_mut(&self.file) {
            for b in self.blocks.clone() {
                blocks.remove(&b);
            }
            if blocks.is_empty() {
                m.remove(&self.file);
            }
        }
        // The sender goes with the claim: its waiters' `changed()` ends.
    }
}

impl Claim {
    /// Some of the claimed blocks are stored: wakes the waiters, who re-check.
    pub fn stored(&self) {
        self.progress.send_modify(|n| *n += 1);
    }
}

/// What a reader must do for a set of missing byte runs.
struct Plan {
    /// Runs this reader claimed and must download.
    pub claimed: Vec<Claim>,
    /// Downloads by others to wait for: `changed()` returns when some of their blocks are
    /// stored or when they end, whatever their outcome (the caller re-checks).
    pub waits: Vec<watch::Receiver<u64>>,
}

impl BlockClaims {
    /// Splits block-aligned missing `runs` of `file` into runs to download (claimed now) and
    /// downloads already in flight. Claimed runs are cut at `max_run` bytes.
    pub fn plan(&self, file: &Path, runs: &[Range<u64>], block: u64, max_run: u64) -> Plan {
        let mut all = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let m = all.entry(file.to_path_buf()).or_default();
        let mut claimed = Vec::new();
        let mut waits: Vec<watch::Receiver<u64>> = Vec::new();
        let max_blocks = (max_run / block).max(1);
        for run in runs {
            let first = run.start / block;
            let last = run.end.div_ceil(block); // exclusive
            let mut b = first;
            while b < last {
                if let Some(rx) = m.get(&b) {
                    if !waits.iter().any(|w| w.same_channel(rx)) {
                        // Progress so far counts as seen: wait for the next.
                        let mut w = rx.clone();
                        w.borrow_and_update();
                        waits.push(w);
                    }
                    b += 1;
                    continue;
                }
                // Claim a stretch of unclaimed blocks.
                let start = b;
                let (tx, rx) = watch::channel(0u64);
                while b < last && b - start < max_blocks && !m.contains_key(&b) {
                    m.insert(b, rx.clone());
                    b += 1;
                }
                claimed.push(Claim {
                    claims: self.claims.clone(),
                    file: file.to_path_buf(),
                    blocks: start..b,
                    progress: tx,
                    bytes: (start * block).max(run.start)..(b * block).min(run.end),
                });
            }
        }
        if m.is_empty() {
            all.remove(file);
        }
        Plan { claimed, waits }
    }
}

/// How far a read may land from where the last one ended and still count as the same
/// sequential stream: the kernel keeps several reads of one reader in flight (its own
/// read-ahead), and they reach the read path in any order.
pub const REORDER_SLACK: u64 = 4 << 20;

/// The largest read-ahead window under a download limit of `limit` bytes a second (0: none):
/// about two seconds of data. The read-ahead's requests share the limit with the read a
/// program waits for; a window of 128 MiB at 256 KiB/s had a reader get 128 KiB in 7.5 s while
/// 3 MiB arrived for later.
pub fn window_for_limit(limit: u64) -> u64 {
    if limit == 0 {
        MAX_WINDOW
    } else {
        limit.saturating_mul(2).clamp(INITIAL_WINDOW, MAX_WINDOW)
    }
}

/// Sequential-read detection of one handle.
#[derive(Debug, Clone, Copy)]
pub struct ReadAhead {
    /// The furthest end of a read so far (where the next in-order read starts).
    next: u64,
    window: u64,
    /// Read-ahead was scheduled up to here.
    scheduled_to: u64,
    /// The reads so far form a sequential stream (reordering is tolerated only then).
    streaming: bool,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            next: 0,
            window: INITIAL_WINDOW,
            scheduled_to: 0,
            streaming: false,
        }
    }
}

impl ReadAhead {
    /// Records a read of `[offset, end)` and returns the byte range to prefetch now, if any.
    pub fn on_read(&mut self, offset: u64, end: u64, size: u64) -> Option<Range<u64>> {
        self.on_read_within(offset, end, size, MAX_WINDOW)
    }

    /// [`Self::on_read`] with the window held to `max_window` (see [`window_for_limit`]).
    pub fn on_read_within(
        &mut self,
        offset: u64,
        end: u64,
        size: u64,
        max_window: u64,
    ) -> Option<Range<u64>> {
        let max_window = max_window.clamp(INITIAL_WINDOW, MAX_WINDOW);
        let in_order = offset == self.next;
        let reordered = self.streaming && offset.abs_diff(self.next) <= REORDER_SLACK;
        if in_order && offset != 0 {
            self.window = (self.window * 2).min(max_window);
        } else if !in_order && !reordered {
            // A jump: random access. No read-ahead until reads are sequential again.
            self.window = INITIAL_WINDOW;
            self.scheduled_to = end;
            self.next = end;
            self.streaming = false;
            return None;
        }
        // In order, or a read of the stream that arrived before or after its neighbour.
        self.streaming = true;
        self.window = self.window.min(max_window);
        self.next = self.next.max(end);
        let front = self.next;
        let mut target = front.saturating_add(self.window).min(size);
        // Top up when less than half the window is scheduled ahead.
        if target > self.scheduled_to && self.scheduled_to < front + self.window / 2 {
            let from = self.scheduled_to.max(front);
            if target < size && target - from > CHUNK {
                // Whole pieces: the rest goes with the next top-up, not as a small GET now.
                target = from + (target - from) / CHUNK * CHUNK;
            }
            self.scheduled_to = target;
            if from < target {
                return Some(from..target);
            }
        }
        None
    }

    /// The read-ahead from `from` on was not started (no budget): a later read schedules it
    /// again.
    pub fn unscheduled_from(&mut self, from: u64) {
        self.scheduled_to = self.scheduled_to.min(from);
    }
}

/// Permits needed for `bytes` of read-ahead.
fn permits(bytes: u64) -> u32 {
    bytes.div_ceil(BUDGET_UNIT).max(1) as u32
}

/// Splits `parts` (pieces of one byte stream) after its first `at` bytes: `parts` keeps them
/// and the rest is returned. A piece across the cut is split in two (`Bytes`, no copy).
fn split_parts_at(parts: &mut Vec<Bytes>, at: u64) -> Vec<Bytes> {
    let mut seen = 0u64;
    for i in 0..parts.len() {
        let len = parts[i].len() as u64;
        if seen + len <= at {
            seen += len;
            continue;
        }
        let mut rest = parts.split_off(i);
        let keep = (at - seen) as usize;
        if keep > 0 {
            parts.push(rest[0].split_to(keep));
        }
        return rest;
    }
    Vec::new()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn window_doubles_on_sequential_reads_and_resets_on_jumps() {
        let size = 1 << 30;
        let mut ra = ReadAhead::default();
        let first = ra.on_read(0, 128 << 10, size).unwrap();
        assert_eq!(first, (128 << 10)..(128 << 10) + INITIAL_WINDOW);
        let mut pos = 128 << 10;
        let mut max_seen = 0;
        for _ in 0..2000 {
            let end = pos + (128 << 10);
            if let Some(r) = ra.on_read(pos, end, size) {
                assert!(r.start >= end, "prefetch starts after the read");
                assert!(r.end - end <= MAX_WINDOW);
            }
            max_seen = max_seen.max(ra.window);
            pos = end;
        }
        assert_eq!(max_seen, MAX_WINDOW);
        // A random read resets the window and prefetches nothing.
        assert_eq!(ra.on_read(5, 4096 + 5, size), None);
        assert_eq!(ra.window, INITIAL_WINDOW);
        assert_eq!(ra.on_read(900_000, 904_096, size), None);
        // Sequential again: read-ahead resumes.
        assert!(ra.on_read(904_096, 908_192, size).is_some());
    }

    #[test]
    fn under_a_download_limit_the_window_stays_near_two_seconds_of_data() {
        assert_eq!(window_for_limit(0), MAX_WINDOW);
        assert_eq!(window_for_limit(256 << 10), INITIAL_WINDOW);
        assert_eq!(window_for_limit(4 << 20), 8 << 20);
        assert_eq!(window_for_limit(u64::MAX), MAX_WINDOW);
        let size = 1 << 30;
        let cap = window_for_limit(4 << 20);
        let mut ra = ReadAhead::default();
        let mut furthest = 0;
        let mut pos = 0;
        while pos < 256 << 20 {
            let end = pos + (128 << 10);
            if let Some(r) = ra.on_read_within(pos, end, size, cap) {
                furthest = furthest.max(r.end);
            }
            assert!(furthest <= end + cap, "{furthest} scheduled at {end}");
            pos = end;
        }
        assert!(furthest > (256 << 20) + cap / 2, "read-ahead still runs");
        // Lifting the limit lets the window grow again.
        for _ in 0..20 {
            let end = pos + (128 << 10);
            ra.on_read_within(pos, end, size, MAX_WINDOW);
            pos = end;
        }
        assert!(ra.window > cap);
    }

    #[test]
    fn reads_of_a_stream_arriving_out_of_order_keep_the_window() {
        let size = 1 << 30;
        let mb = 1u64 << 20;
        let mut ra = ReadAhead::default();
        let mut pos = 0;
        for _ in 0..16 {
            ra.on_read(pos, pos + mb, size);
            pos += mb;
        }
        assert_eq!(ra.window, MAX_WINDOW);
        // The kernel's next three reads reach the read path as 2nd, 1st, 3rd.
        ra.on_read(pos + mb, pos + 2 * mb, size);
        ra.on_read(pos, pos + mb, size);
        ra.on_read(pos + 2 * mb, pos + 3 * mb, size);
        assert_eq!(ra.window, MAX_WINDOW, "reordering is not a jump");
        assert!(ra.scheduled_to >= pos + 3 * mb + MAX_WINDOW / 2);
        // A read far from the stream still is.
        assert_eq!(ra.on_read(pos + 64 * mb, pos + 65 * mb, size), None);
        assert_eq!(ra.window, INITIAL_WINDOW);
        // Random reads never count as a stream, however close to each other.
        let mut ra = ReadAhead::default();
        assert_eq!(ra.on_read(10 * mb, 10 * mb + 4096, size), None);
        assert_eq!(ra.on_read(11 * mb, 11 * mb + 4096, size), None);
        assert_eq!(ra.on_read(10 * mb + 8192, 10 * mb + 12288, size), None);
    }

    #[test]
    fn budget_refusals_are_scheduled_again() {
        let size = 1 << 30;
        let mut ra = ReadAhead::default();
        let r = ra.on_read(0, 4096, size).unwrap();
        assert_eq!(r, 4096..4096 + INITIAL_WINDOW);
        // Nothing of it was started: the next read schedules it again, from where it reads.
        ra.unscheduled_from(r.start);
        assert_eq!(ra.on_read(4096, 8192, size).map(|r| r.start), Some(8192));
    }

    #[test]
    fn nothing_past_the_end_of_the_file() {
        let mut ra = ReadAhead::default();
        assert_eq!(ra.on_read(0, 100, 100), None);
        let mut ra = ReadAhead::default();
        assert_eq!(ra.on_read(0, 4096, 10_000), Some(4096..10_000));
        assert_eq!(ra.on_read(4096, 8192, 10_000), None);
    }

    #[test]
    fn plan_claims_once_and_others_wait() {
        let inf = BlockClaims::default();
        let f = PathBuf::from("/x");
        let bs = 1 << 20;
        let p1 = inf.plan(&f, &[0..(3 << 20)], bs, 8 << 20);
        assert_eq!(p1.claimed.len(), 1);
        assert_eq!(p1.claimed[0].bytes, 0..(3 << 20));
        assert!(p1.waits.is_empty());
        // A second reader wanting blocks 2..4 waits for the first and claims block 3.
        let p2 = inf.plan(&f, &[(2 << 20)..(4 << 20)], bs, 8 << 20);
        assert_eq!(p2.waits.len(), 1);
        assert_eq!(p2.claimed.len(), 1);
        assert_eq!(p2.claimed[0].bytes, (3 << 20)..(4 << 20));
        let mut w = p2.waits[0].clone();
        assert!(!w.has_changed().unwrap(), "nothing stored yet");
        p1.claimed[0].stored();
        assert!(w.has_changed().unwrap(), "woken by progress");
        w.borrow_and_update();
        drop(p1);
        assert!(w.has_changed().is_err(), "woken by the end");
        // Released: a new plan claims again.
        let p3 = inf.plan(&f, &[0..(1 << 20)], bs, 8 << 20);
        assert_eq!(p3.claimed.len(), 1);
    }

    #[test]
    fn claims_are_cut_at_max_run() {
        let inf = BlockClaims::default();
        let f = PathBuf::from("/y");
        let p = inf.plan(&f, &[0..(10 << 20)], 1 << 20, 4 << 20);
        let sizes: Vec<u64> = p
            .claimed
            .iter()
            .map(|c| c.bytes.end - c.bytes.start)
            .collect();
        assert_eq!(sizes, vec![4 << 20, 4 << 20, 2 << 20]);
    }

    /// A cache and a server holding `f`, for the engine alone: no vfs, no inode.
    fn engine_setup(
        content: &[u8],
    ) -> (
        tempfile::TempDir,
        Arc<crate::remote::mem::MemRemote>,
        crate::cache::BlockCache,
        ObjectKey,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(crate::meta::MetaStore::open_in_memory().unwrap());
        let layout = crate::cache::CacheLayout::new(dir.path());
        let cache = crate::cache::BlockCache::open(&layout, 1 << 30, 16 << 10, meta).unwrap();
        let mem = Arc::new(crate::remote::mem::MemRemote::new());
        let etag = mem.insert_file("f", content.to_vec());
        let key = ObjectKey {
            area: 0,
            path: crate::remote::RemotePath::new("f").unwrap(),
            etag,
            size: content.len() as u64,
        };
        (dir, mem, cache, key)
    }

    #[tokio::test]
    async fn the_engine_fetches_a_version_by_its_cache_object_and_refuses_another() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, mem, cache, key) = engine_setup(&content);
        let origin = Origin {
            remote: mem.clone(),
            conditional: true,
            at: None,
        };
        let downloads = Downloads::default();
        let obj = cache.object(&key).unwrap();
        downloads
            .ensure_blocks(&origin, &obj, 0, key.size)
            .await
            .unwrap();
        assert!(obj.is_complete());
        assert_eq!(obj.read_bytes(0, content.len()).unwrap(), content);
        // Whole-file download, stored in the background: waited for before a flush.
        let (_dir2, mem2, cache2, key2) = engine_setup(&content);
        let origin2 = Origin {
            remote: mem2.clone(),
            conditional: true,
            at: None,
        };
        let data = downloads
            .download(&origin2, &key2, 0..key2.size)
            .await
            .unwrap();
        assert_eq!(&data[..], &content[..]);
        let obj2 = cache2.object(&key2).unwrap();
        downloads.store_whole(&obj2, data);
        downloads.wait_for_stores().await;
        assert!(obj2.is_complete());
        // The server has another version of the same size now: a download of the old one (its
        // cached copy dropped) fails on `If-Match` as a changed version, never mixing bytes.
        mem.insert_file("f", vec![7u8; content.len()]);
        drop(obj);
        cache.remove_path(0, &key.path).unwrap();
        let old = cache.object(&key).unwrap();
        let got = downloads.ensure_blocks(&origin, &old, 0, key.size).await;
        assert!(matches!(got, Err(DownloadError::Changed(_))), "{got:?}");
        assert!(!old.is_complete());
    }

    #[test]
    fn parts_split_at_a_byte_count_without_copying() {
        let whole = Bytes::from_static(b"abcdefghij");
        let mut parts = vec![
            whole.slice(0..3),
            whole.slice(3..3),
            whole.slice(3..7),
            whole.slice(7..10),
        ];
        let rest = split_parts_at(&mut parts, 5);
        let join = |p: &[Bytes]| {
            p.iter()
                .flat_map(|b| b.iter().copied())
                .collect::<Vec<u8>>()
        };
        assert_eq!(join(&parts), b"abcde");
        assert_eq!(join(&rest), b"fghij");
        // The split piece still points into the original buffer.
        assert_eq!(rest[0].as_ptr(), whole[5..].as_ptr());
        // At a piece boundary, and at the end.
        let mut p2 = vec![whole.slice(0..3), whole.slice(3..10)];
        let r2 = split_parts_at(&mut p2, 3);
        assert_eq!((p2.len(), r2.len()), (1, 1));
        let mut p3 = vec![whole.clone()];
        assert!(split_parts_at(&mut p3, 10).is_empty());
        assert_eq!(join(&p3), b"abcdefghij");
    }
}
