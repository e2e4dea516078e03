//! Reading a file larger than the cache's budget: straight from one long GET, never through
//! the cache, so the cache stays within `--cache-size` however large the file is (a file that
//! cannot fit would otherwise fill the cache, and the disk, while it is open).
//!
//! A handle of such a file (not pinned, not already complete in the cache) reads through a
//! [`Stream`]: one GET from the first offset read to the end of the file (conditional on the
//! handle's version, like every download), consumed as reads advance. The kernel has several
//! reads of one reader in flight and they arrive in any order, so the last [`KEEP_BEHIND`]
//! bytes stay in memory, and a read up to [`AHEAD_SLACK`] past the stream's position pulls the
//! stream forward to it; any other read (a seek) starts a new GET at its offset. Memory per
//! handle is bounded by `KEEP_BEHIND` plus one body chunk. GETs ask for ranges that double
//! while the reading goes on sequentially ([`FIRST_SPAN`] to [`MAX_SPAN`]).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::download::{DownloadError, Origin};
use crate::cache::ObjectKey;
use crate::remote::ByteStream;

/// Bytes kept behind the stream's position for reads that arrive late.
const KEEP_BEHIND: u64 = 8 << 20;
/// A read at most this far past the stream's position pulls it forward (instead of a new GET).
const AHEAD_SLACK: u64 = 16 << 20;
/// The first GET after a seek asks for this much; each GET that continues the last one asks
/// for twice as much, up to [`MAX_SPAN`]. Bodies are read to their end, so the connection is
/// reused, and a reader that jumps around costs no more than the bytes it asked for.
const FIRST_SPAN: u64 = 4 << 20;
const MAX_SPAN: u64 = 256 << 20;

/// A handle's stream: one read at a time.
pub(super) type SharedStream = std::sync::Arc<tokio::sync::Mutex<Stream>>;

/// The sequential download of one version of a file, for one handle.
pub(super) struct Stream {
    key: ObjectKey,
    origin: Origin,
    body: Option<ByteStream>,
    /// Where the running GET's range ends, and how long it was.
    body_end: u64,
    span: u64,
    /// Bytes `[start, pos)` of the file, kept in order.
    kept: VecDeque<Bytes>,
    start: u64,
    pos: u64,
    /// GETs started (one per seek), for the log.
    gets: u64,
}

impl Stream {
    pub(super) fn new(key: ObjectKey, origin: Origin) -> Stream {
        Stream {
            key,
            origin,
            body: None,
            body_end: 0,
            span: FIRST_SPAN,
            kept: VecDeque::new(),
            start: 0,
            pos: 0,
            gets: 0,
        }
    }

    /// The version was moved to `at` on the server (set aside for its readers): the next
    /// GETs go there, unconditionally.
    pub(super) fn redirect(&mut self, at: crate::remote::RemotePath) {
        self.origin.at = Some(at);
        self.origin.conditional = false;
        self.body = None;
    }

    /// Bytes `[offset, offset + len)` of the file (fewer at its end).
    pub(super) async fn read(&mut self, offset: u64, len: u64) -> Result<Bytes, DownloadError> {
        let size = self.key.size;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let within = offset >= self.start && offset <= self.pos.saturating_add(AHEAD_SLACK);
        if !within {
            self.kept.clear();
            self.start = offset;
            self.pos = offset;
            self.body = None;
            self.span = FIRST_SPAN;
        }
        let mut retried = false;
        while self.pos < end {
            if self.body.is_none() {
                // Continuing where the last GET ended: ask for more at once.
                if self.pos == self.body_end && self.gets > 0 {
                    self.span = (self.span * 2).min(MAX_SPAN);
                }
                self.get_from(self.pos).await?;
            }
            match self.pull().await {
                Ok(()) => {}
                // A connection lost mid-body: once, go on from where it stopped.
                Err(e) if !retried => {
                    tracing::debug!(error = %e, pos = self.pos, "stream broke; asking again");
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
        let out = self.copy(offset, end);
        self.trim(offset);
        Ok(out)
    }

    /// Starts the GET of the next span at `offset` (the stream's position).
    async fn get_from(&mut self, offset: u64) -> Result<(), DownloadError> {
        let end = offset.saturating_add(self.span).min(self.key.size);
        self.gets += 1;
        tracing::trace!(file = %self.key.path, offset, end, gets = self.gets, "streaming read from the server");
        self.body = Some(super::download::get_range(&self.origin, &self.key, offset..end).await?);
        self.body_end = end;
        Ok(())
    }

    /// Appends the body's next chunk.
    async fn pull(&mut self) -> Result<(), DownloadError> {
        let body = self.body.as_mut().expect("a body to pull from");
        match body.next().await {
            Some(Ok(chunk)) => {
                let room = self.body_end - self.pos;
                let chunk = if chunk.len() as u64 > room {
                    chunk.slice(..room as usize)
                } else {
                    chunk
                };
                self.pos += chunk.len() as u64;
                if !chunk.is_empty() {
                    self.kept.push_back(chunk);
                }
                Ok(())
            }
            Some(Err(e)) => {
                self.body = None;
                Err(DownloadError::remote(e))
            }
            None => {
                self.body = None;
                super::download::check_length(&self.key, self.pos, self.body_end)?;
                Ok(())
            }
        }
    }

    /// The kept bytes `[from, to)` (within `[start, pos)`).
    fn copy(&self, from: u64, to: u64) -> Bytes {
        let mut out = BytesMut::with_capacity((to - from) as usize);
        let mut at = self.start;
        for chunk in &self.kept {
            let c_end = at + chunk.len() as u64;
            if c_end > from && at < to {
                let s = from.max(at) - at;
                let e = to.min(c_end) - at;
                out.extend_from_slice(&chunk[s as usize..e as usize]);
            }
            if c_end >= to {
                break;
            }
            at = c_end;
        }
        out.freeze()
    }

    /// Drops kept chunks that end more than [`KEEP_BEHIND`] before `read_at`.
    fn trim(&mut self, read_at: u64) {
        let keep_from = read_at.saturating_sub(KEEP_BEHIND);
        while let Some(first) = self.kept.front() {
            let end = self.start + first.len() as u64;
            if end > keep_from {
                break;
            }
            self.start = end;
            self.kept.pop_front();
        }
    }
}
