//! Bandwidth limits: one token bucket per direction, shared by every body stream of the
//! process (the mount's uploads and reads, pins, the sync folders), so a limit is a limit on
//! what the daemon sends or receives as a whole, not per transfer.
//!
//! The limit is applied where the bytes flow, chunk by chunk: an upload's body is handed to
//! the connection only as fast as the upload bucket allows, and a download's chunks are
//! handed to the reader only as fast as the download bucket allows (TCP then slows the
//! server down). A change of limit ([`Bucket::set_rate`]) wakes every stream waiting for
//! tokens, so it takes effect at once, also in the middle of a transfer. With no limit
//! (rate 0) a stream passes its chunks through untouched: one atomic load per chunk.
//!
//! The bucket holds at most an eighth of a second of traffic ([`Bucket::capacity`]): enough to
//! keep a connection busy, small enough that a limit shows within a fraction of a second.
//! Time is read by the caller and passed in ([`Bucket::take_at`]), so tests drive it with a
//! fake clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use super::ByteStream;

/// The smallest bucket: a limit of a few bytes a second still moves pieces of this size.
const MIN_CAPACITY: u64 = 1024;
/// Largest piece a stream takes from the bucket at once (and so hands on at once).
const MAX_PIECE: u64 = 64 * 1024;

/// The limits of both directions, in bytes per second; 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub upload: u64,
    pub download: u64,
}

/// A token bucket: `rate` bytes a second, at most [`Bucket::capacity`] saved up.
#[derive(Debug)]
pub struct Bucket {
    /// Bytes per second; 0: no limit.
    rate: AtomicU64,
    state: Mutex<State>,
    /// Woken on every change of rate.
    changed: tokio::sync::Notify,
    /// The origin of the times given to [`Bucket::take_at`] by the streams.
    epoch: Instant,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    /// When `tokens` was last brought up to date (time since the epoch).
    at: Duration,
}

impl Bucket {
    /// A bucket of `rate` bytes a second (0: no limit), full.
    pub fn new(rate: u64) -> Bucket {
        Bucket {
            rate: AtomicU64::new(rate),
            state: Mutex::new(State {
                tokens: Self::capacity(rate) as f64,
                at: Duration::ZERO,
            }),
            changed: tokio::sync::Notify::new(),
            epoch: Instant::now(),
        }
    }

    /// The limit in bytes per second; 0: none.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// The most a bucket of `rate` saves up: an eighth of a second, at least 1 KiB.
    pub fn capacity(rate: u64) -> u64 {
        (rate / 8).max(MIN_CAPACITY)
    }

    /// The largest piece a stream takes at once under the current rate.
    pub fn piece(&self) -> u64 {
        Self::capacity(self.rate()).min(MAX_PIECE)
    }

    /// The time since this bucket's epoch: what the streams pass to [`Bucket::take_at`].
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Changes the rate at once; streams waiting for tokens look again. `now` as in
    /// [`Bucket::take_at`].
    pub fn set_rate_at(&self, rate: u64, now: Duration) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // What the old rate earned until now is kept, up to the new capacity; coming
            // from no limit, the bucket starts full.
            let old = self.rate();
            Self::refill(&mut s, old, now);
            let cap = Self::capacity(rate) as f64;
            s.tokens = if old == 0 { cap } else { s.tokens.min(cap) };
            self.rate.store(rate, Ordering::Relaxed);
        }
        self.changed.notify_waiters();
    }

    /// Changes the rate (0: no limit), live.
    pub fn set_rate(&self, rate: u64) {
        self.set_rate_at(rate, self.now());
    }

    fn refill(s: &mut State, rate: u64, now: Duration) {
        let elapsed = now.saturating_sub(s.at);
        s.at = s.at.max(now);
        if rate > 0 {
            let cap = Self::capacity(rate) as f64;
            s.tokens = (s.tokens + elapsed.as_secs_f64() * rate as f64).min(cap);
        }
    }

    /// Takes `n` bytes' worth of tokens at time `now` (since the epoch), or says how long
    /// until there are enough (then nothing is taken). `n` above the capacity counts as the
    /// capacity: a stream never asks for more than [`Bucket::piece`].
    pub fn take_at(&self, n: u64, now: Duration) -> Option<Duration> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Self::refill(&mut s, rate, now);
        let n = n.min(Self::capacity(rate)) as f64;
        if s.tokens >= n {
            s.tokens -= n;
            None
        } else {
            Some(Duration::from_secs_f64((n - s.tokens) / rate as f64))
        }
    }

    /// Waits until `n` bytes' worth of tokens are taken, a piece at a time (for bytes that
    /// did not come through a [`Throttled`] stream). Returns at once with no limit.
    pub async fn spend(&self, mut n: u64) {
        while n > 0 && self.rate() > 0 {
            let piece = n.min(self.piece());
            self.acquire(piece).await;
            n -= piece;
        }
    }

    /// Waits until `n` bytes' worth of tokens are taken. A change of rate cuts the wait short
    /// (and no limit ends it).
    pub async fn acquire(&self, n: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.take_at(n, self.now()) {
                None => return,
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut changed => {}
                    }
                }
            }
        }
    }
}

/// The two buckets of one daemon.
#[derive(Debug)]
pub struct Bandwidth {
    upload: Arc<Bucket>,
    download: Arc<Bucket>,
}

impl Bandwidth {
    /// Buckets of their own (for tests and for clients that must not share the process's).
    pub fn new(limits: Limits) -> Arc<Bandwidth> {
        Arc::new(Bandwidth {
            upload: Arc::new(Bucket::new(limits.upload)),
            download: Arc::new(Bucket::new(limits.download)),
        })
    }

    /// The process's buckets: what every WebDAV client uses unless told otherwise, so one
    /// daemon's limits cover all its areas, its pins and its sync folders. No limit until
    /// [`Bandwidth::set`].
    pub fn process() -> Arc<Bandwidth> {
        static PROCESS: OnceLock<Arc<Bandwidth>> = OnceLock::new();
        PROCESS
            .get_or_init(|| Bandwidth::new(Limits::default()))
            .clone()
    }

    /// Changes both limits, live.
    pub fn set(&self, limits: Limits) {
        self.upload.set_rate(limits.upload);
        self.download.set_rate(limits.download);
        tracing::info!(
            upload = limits.upload,
            download = limits.download,
            "bandwidth limits (bytes/s, 0: none)"
        );
    }

    /// The limits in effect.
    pub fn limits(&self) -> Limits {
        Limits {
            upload: self.upload.rate(),
            download: self.download.rate(),
        }
    }

    /// `body`, sent no faster than the upload limit.
    pub fn upload(&self, body: ByteStream) -> ByteStream {
        Box::pin(Throttled::new(body, self.upload.clone()))
    }

    /// Counts `n` bytes received outside a body stream (a listing), waiting as the download
    /// limit says.
    pub async fn received(&self, n: u64) {
        self.download.spend(n).await;
    }

    /// `body`, received no faster than the download limit.
    pub fn download(&self, body: ByteStream) -> ByteStream {
        Box::pin(Throttled::new(body, self.download.clone()))
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A byte stream that hands its chunks on as the bucket allows: in pieces of at most
/// [`Bucket::piece`], each once its tokens are taken.
pub struct Throttled {
    inner: ByteStream,
    bucket: Arc<Bucket>,
    /// What is left of the last chunk read from `inner`.
    rest: Bytes,
    /// The piece whose tokens are being waited for, and the wait.
    waiting: Option<(Bytes, Wait)>,
}

impl Throttled {
    pub fn new(inner: ByteStream, bucket: Arc<Bucket>) -> Throttled {
        Throttled {
            inner,
            bucket,
            rest: Bytes::new(),
            waiting: None,
        }
    }
}

impl Stream for Throttled {
    type Item = Result<Bytes, super::RemoteError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some((_, wait)) = this.waiting.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (piece, _) = this.waiting.take().expect("checked above");
            return Poll::Ready(Some(Ok(piece)));
        }
        while this.rest.is_empty() {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.rest = chunk,
                other => return other,
            }
        }
        if this.bucket.rate() == 0 {
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.rest))));
        }
        let n = (this.rest.len() as u64).min(this.bucket.piece()) as usize;
        let piece = this.rest.split_to(n);
        if this.bucket.take_at(n as u64, this.bucket.now()).is_none() {
            return Poll::Ready(Some(Ok(piece)));
        }
        let bucket = this.bucket.clone();
        let mut wait: Wait = Box::pin(async move { bucket.acquire(n as u64).await });
        if wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Ok(piece)));
        }
        this.waiting = Some((piece, wait));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Takes `total` bytes in pieces at the fake clock, advancing it by each wait; returns
    /// the time it took.
    fn drain(b: &Bucket, total: u64, start: Duration) -> Duration {
        let mut now = start;
        let mut left = total;
        while left > 0 {
            let n = left.min(b.piece());
            match b.take_at(n, now) {
                None => left -= n,
                Some(wait) => now += wait,
            }
        }
        now - start
    }

    #[test]
    fn rate_holds_over_seconds() {
        let b = Bucket::new(MIB);
        let took = drain(&b, 5 * MIB, Duration::ZERO);
        // 5 MiB at 1 MiB/s, less the first burst (1/8 s).
        let secs = took.as_secs_f64();
        assert!((4.8..=5.0).contains(&secs), "{secs}");
    }

    #[test]
    fn burst_is_an_eighth_of_a_second_then_nothing() {
        let b = Bucket::new(8 * MIB);
        assert_eq!(b.take_at(MIB, Duration::ZERO), None, "a full bucket");
        let wait = b.take_at(64 * 1024, Duration::ZERO).expect("empty now");
        assert!(wait > Duration::ZERO);
        // Idle for a long time saves no more than the capacity.
        assert_eq!(b.take_at(MIB, Duration::from_secs(60)), None);
        assert!(b.take_at(1, Duration::from_secs(60)).is_some());
        // A piece larger than the capacity counts as the capacity.
        assert_eq!(Bucket::capacity(8 * MIB), MIB);
        assert_eq!(Bucket::capacity(100), MIN_CAPACITY);
    }

    #[test]
    fn wait_says_when_the_tokens_are_there() {
        let b = Bucket::new(MIB);
        assert_eq!(b.take_at(MIB / 8, Duration::ZERO), None);
        let wait = b.take_at(64 * 1024, Duration::ZERO).unwrap();
        assert_eq!(wait, ms(62) + Duration::from_micros(500));
        assert!(b.take_at(64 * 1024, ms(62)).is_some());
        assert_eq!(b.take_at(64 * 1024, ms(63)), None);
    }

    #[test]
    fn a_change_of_rate_applies_from_then_on() {
        let b = Bucket::new(MIB);
        let first = drain(&b, 2 * MIB, Duration::ZERO);
        b.set_rate_at(4 * MIB, first);
        let second = drain(&b, 4 * MIB, first);
        let secs = second.as_secs_f64();
        // 4 MiB at 4 MiB/s, less the new capacity saved (none: the bucket was empty).
        assert!((0.95..=1.01).contains(&secs), "{secs}");
        // Down again: slower at once, and the new capacity caps what is saved.
        b.set_rate_at(MIB / 2, first + second);
        let third = drain(&b, MIB, first + second).as_secs_f64();
        assert!((1.9..=2.01).contains(&third), "{third}");
    }

    #[test]
    fn no_limit_takes_everything_at_once() {
        let b = Bucket::new(0);
        assert_eq!(b.take_at(u64::MAX, Duration::ZERO), None);
        b.set_rate_at(MIB, Duration::ZERO);
        assert_eq!(b.take_at(MIB / 8, Duration::ZERO), None);
        assert!(b.take_at(MIB / 8, Duration::ZERO).is_some());
        b.set_rate_at(0, Duration::ZERO);
        assert_eq!(b.take_at(MIB, Duration::ZERO), None);
    }

    fn chunks(n: usize, size: usize) -> ByteStream {
        let v: Vec<_> = (0..n)
            .map(|i| Ok(Bytes::from(vec![i as u8; size])))
            .collect();
        Box::pin(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn spending_outside_a_stream_keeps_the_limit() {
        let bw = Bandwidth::new(Limits {
            upload: 0,
            download: 1 << 20,
        });
        let start = Instant::now();
        bw.received(128 * 1024).await;
        assert!(start.elapsed() < ms(50), "the first burst is free");
        bw.received(256 * 1024).await;
        let took = start.elapsed();
        assert!(took >= ms(200), "256 KiB at 1 MiB/s: {took:?}");
        let none = Bandwidth::new(Limits::default());
        let start = Instant::now();
        none.received(u64::MAX).await;
        assert!(start.elapsed() < ms(50));
    }

    #[tokio::test]
    async fn unlimited_passes_the_chunks_through_as_they_are() {
        let bw = Bandwidth::new(Limits::default());
        let out: Vec<Bytes> = bw
            .upload(chunks(4, 1 << 20))
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(out.len(), 4, "not cut into pieces");
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, c)| c.len() == 1 << 20 && c[0] == i as u8));
    }

    #[tokio::test]
    async fn a_limited_stream_keeps_its_bytes_and_their_order() {
        let bw = Bandwidth::new(Limits {
            upload: 0,
            download: 64 << 20,
        });
        let start = Instant::now();
        let out: Vec<u8> = bw
            .download(chunks(3, 200_000))
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(out.len(), 600_000);
        assert!(out[..200_000].iter().all(|b| *b == 0));
        assert!(out[400_000..].iter().all(|b| *b == 2));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn lifting_the_limit_wakes_a_waiting_stream_at_once() {
        let bw = Bandwidth::new(Limits {
            upload: 64 * 1024,
            download: 0,
        });
        // 1 MiB at 64 KiB/s would take 16 s.
        let mut s = bw.upload(chunks(1, 1 << 20));
        let first = s.next().await.unwrap().unwrap();
        assert!(first.len() <= 8 * 1024, "{}", first.len());
        let bw2 = bw.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(300)).await;
            bw2.set(Limits::default());
        });
        let start = Instant::now();
        let mut rest = 0;
        while let Some(c) = s.next().await {
            rest += c.unwrap().len();
        }
        assert_eq!(first.len() + rest, 1 << 20);
        let took = start.elapsed();
        assert!(took >= ms(250), "the limit held until lifted: {took:?}");
        assert!(took < ms(1500), "lifted at 300 ms: {took:?}");
    }

    #[tokio::test]
    async fn a_lower_limit_slows_a_waiting_stream_down() {
        let bw = Bandwidth::new(Limits {
            upload: 4 << 20,
            download: 0,
        });
        bw.set(Limits {
            upload: 100 * 1024,
            download: 0,
        });
        let start = Instant::now();
        let n = bw.upload(chunks(1, 50 * 1024)).count().await;
        let took = start.elapsed();
        // 50 KiB at 100 KiB/s: half a second, less the 12.5 KiB burst.
        assert!(n >= 4, "{n} pieces");
        assert!(took >= ms(300), "{took:?}");
        assert!(took < ms(1500), "{took:?}");
    }
}
