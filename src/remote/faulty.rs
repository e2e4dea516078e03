//! Fault-injecting wrapper.
//!
//! [`FaultyRemote`] wraps any [`Remote`] and, following rules set at run time through `&self`,
//! fails calls, delays them, or cuts their body streams:
//!
//! - [`FaultyRemote::fail_nth`]: the nth call of an operation (counted from when the rule is set)
//!   fails; [`FaultyRemote::fail_next`]: the next n calls fail.
//! - [`FaultyRemote::fail_fraction`]: each call fails with probability `p`, drawn from a seeded
//!   SplitMix64 generator, so a run is reproducible.
//! - [`FaultyRemote::delay`]: latency before each call.
//! - [`FaultyRemote::cut_read_after`]: `read_range` bodies yield exactly that many bytes, then a
//!   transient error.
//! - [`FaultyRemote::cut_put_after`]: the body the inner remote reads for a `put` fails after that
//!   many bytes, so the inner `put` fails midway.
//!
//! Injected failures happen before the inner remote is called (it never sees the call), except
//! for the cuts, where the inner remote is called and its stream (or the body it reads) breaks.
//! Delays apply to every matching call, failed or not. [`FaultyRemote::calls`] and
//! [`FaultyRemote::injected`] count what happened.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use super::{
    ByteRange, ByteStream, ETag, Entry, Listing, PutBody, PutCondition, PutOutcome, Quota,
    ReadResponse, Remote, RemoteError, RemotePath, RemoteResult,
};

/// An operation of [`Remote`], or [`Op::Any`] in a rule to match them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Stat,
    List,
    ReadRange,
    Put,
    Mkdir,
    Delete,
    Rename,
    Copy,
    Quota,
    /// Matches every operation (in rules and in [`FaultyRemote::calls`]).
    Any,
}

impl Op {
    /// The concrete operations, in counter order.
    pub const ALL: [Op; 9] = [
        Op::Stat,
        Op::List,
        Op::ReadRange,
        Op::Put,
        Op::Mkdir,
        Op::Delete,
        Op::Rename,
        Op::Copy,
        Op::Quota,
    ];

    /// Whether a rule for `self` applies to a call of `call`.
    pub fn matches(self, call: Op) -> bool {
        self == Op::Any || self == call
    }

    /// The HTTP method the WebDAV implementation uses for this operation.
    pub fn method(self) -> &'static str {
        match self {
            Op::Stat | Op::List | Op::Quota => "PROPFIND",
            Op::ReadRange => "GET",
            Op::Put => "PUT",
            Op::Mkdir => "MKCOL",
            Op::Delete => "DELETE",
            Op::Rename => "MOVE",
            Op::Copy => "COPY",
            Op::Any => "ANY",
        }
    }

    fn index(self) -> Option<usize> {
        Op::ALL.iter().position(|&o| o == self)
    }
}

/// The error an injected failure produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A connection reset: [`RemoteError::Transient`].
    Transient,
    /// A timeout: [`RemoteError::Transient`].
    Timeout,
    /// An HTTP status, mapped by [`RemoteError::from_status`] as for a real server: 401 → `Auth`, 403 → `Forbidden`,
    /// 404/410 → `NotFound`, 409 → `MissingParent`, 412 → `PreconditionFailed`, 423 → `Locked`,
    /// 507 → `InsufficientStorage`, other 5xx → `Transient`, anything else → `Status`.
    Status(u16),
}

impl FaultKind {
    /// The error for a call of `op` on the entry named `url`.
    pub fn to_error(self, op: Op, url: &str) -> RemoteError {
        let url = url.to_string();
        let method = op.method().to_string();
        match self {
            FaultKind::Transient => RemoteError::Transient {
                method,
                url,
                reason: "connection reset by peer (injected)".into(),
            },
            FaultKind::Timeout => RemoteError::Transient {
                method,
                url,
                reason: "operation timed out (injected)".into(),
            },
            FaultKind::Status(status) => {
                let mut e = RemoteError::from_status(&method, &url, status);
                if let RemoteError::Transient { reason, .. } = &mut e {
                    reason.push_str(" (injected)");
                }
                e
            }
        }
    }
}

/// SplitMix64: a tiny, good-enough deterministic generator.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Debug, Clone)]
enum Trigger {
    /// Fires on call number `n` (1-based) seen by the rule.
    Nth { n: u64, seen: u64 },
    /// Fires on the next `left` calls.
    Next { left: u64 },
    /// Fires with probability `p` per call.
    Fraction { p: f64, rng: SplitMix64 },
}

#[derive(Debug, Clone)]
struct Rule {
    op: Op,
    trigger: Trigger,
    kind: FaultKind,
}

impl Rule {
    /// Advances the rule by one matching call; returns whether it fires.
    fn step(&mut self) -> bool {
        match &mut self.trigger {
            Trigger::Nth { n, seen } => {
                *seen += 1;
                *seen == *n
            }
            Trigger::Next { left } => {
                if *left > 0 {
                    *left -= 1;
                    true
                } else {
                    false
                }
            }
            Trigger::Fraction { p, rng } => rng.next_f64() < *p,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    after: u64,
    /// How many more streams to cut; `None` for all.
    times: Option<u64>,
}

impl Cut {
    /// Takes one use of the cut; returns the byte count when it applies.
    fn take(slot: &mut Option<Cut>) -> Option<u64> {
        let cut = slot.as_mut()?;
        let after = cut.after;
        match &mut cut.times {
            None => {}
            Some(0) => {
                *slot = None;
                return None;
            }
            Some(t) => {
                *t -= 1;
                if *t == 0 {
                    *slot = None;
                }
            }
        }
        Some(after)
    }
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<Rule>,
    delays: Vec<(Op, Duration)>,
    cut_read: Option<Cut>,
    cut_put: Option<Cut>,
    /// `read_range` bodies pause this long once this many bytes went through.
    stall_read: Option<(u64, Duration)>,
    calls: [u64; 9],
    injected: [u64; 9],
}

impl FaultState {
    fn count_injected(&mut self, op: Op) {
        if let Some(i) = op.index() {
            self.injected[i] += 1;
        }
    }
}

type Shared = Arc<Mutex<FaultState>>;

fn lock(state: &Shared) -> MutexGuard<'_, FaultState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Remote`] that passes calls to `R` and injects failures, latency and cut streams.
pub struct FaultyRemote<R: Remote> {
    inner: R,
    state: Shared,
}

impl<R: Remote> std::fmt::Debug for FaultyRemote<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyRemote")
            .field("state", &*lock(&self.state))
            .finish_non_exhaustive()
    }
}

impl<R: Remote> FaultyRemote<R> {
    /// Wraps `inner` with no rules: every call passes through.
    pub fn new(inner: R) -> Self {
        FaultyRemote {
            inner,
            state: Arc::default(),
        }
    }

    /// The wrapped remote.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.state)
    }

    fn add_rule(&self, op: Op, trigger: Trigger, kind: FaultKind) {
        self.lock().rules.push(Rule { op, trigger, kind });
    }

    /// The `n`th call (1-based, counted from now) of `op` fails with `kind`; once.
    /// `n == 0` never fires.
    pub fn fail_nth(&self, op: Op, n: u64, kind: FaultKind) {
        self.add_rule(op, Trigger::Nth { n, seen: 0 }, kind);
    }

    /// The next `count` calls of `op` fail with `kind`.
    pub fn fail_next(&self, op: Op, count: u64, kind: FaultKind) {
        self.add_rule(op, Trigger::Next { left: count }, kind);
    }

    /// Each call of `op` fails with probability `p` (clamped to 0..=1). The draws come from a
    /// generator seeded with `seed`, so the same calls fail in every run.
    pub fn fail_fraction(&self, op: Op, p: f64, seed: u64, kind: FaultKind) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.add_rule(
            op,
            Trigger::Fraction {
                p,
                rng: SplitMix64(seed),
            },
            kind,
        );
    }

    /// Waits `d` before each call of `op` (replacing an earlier delay for the same `op`; a zero
    /// `d` removes it). Delays of matching rules add up (`Any` plus a specific one).
    pub fn delay(&self, op: Op, d: Duration) {
        let mut s = self.lock();
        s.delays.retain(|(o, _)| *o != op);
        if !d.is_zero() {
            s.delays.push((op, d));
        }
    }

    /// Every `read_range` body yields exactly `bytes` bytes, then a transient error (bodies that
    /// are not longer end normally). Lasts until [`Self::clear`].
    pub fn cut_read_after(&self, bytes: u64) {
        self.lock().cut_read = Some(Cut {
            after: bytes,
            times: None,
        });
    }

    /// `read_range` bodies pass `bytes` bytes (at least: the pause falls between chunks), then
    /// pause for `pause` before the rest: a server that stalls mid-download.
    pub fn stall_read_after(&self, bytes: u64, pause: Duration) {
        self.lock().stall_read = Some((bytes, pause));
    }

    /// Like [`Self::cut_read_after`], for the next `times` `read_range` calls only.
    pub fn cut_read_after_times(&self, bytes: u64, times: u64) {
        self.lock().cut_read = Some(Cut {
            after: bytes,
            times: Some(times),
        });
    }

    /// The body handed to the inner `put` fails with a transient error after `bytes` bytes
    /// (bodies that are not longer are untouched). Lasts until [`Self::clear`].
    pub fn cut_put_after(&self, bytes: u64) {
        self.lock().cut_put = Some(Cut {
            after: bytes,
            times: None,
        });
    }

    /// Like [`Self::cut_put_after`], for the next `times` `put` calls only.
    pub fn cut_put_after_times(&self, bytes: u64, times: u64) {
        self.lock().cut_put = Some(Cut {
            after: bytes,
            times: Some(times),
        });
    }

    /// Removes every rule, delay and cut. The counters stay.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.delays.clear();
        s.cut_read = None;
        s.stall_read = None;
        s.cut_put = None;
    }

    /// Calls of `op` made so far (all calls for `Op::Any`), injected failures included.
    pub fn calls(&self, op: Op) -> u64 {
        let s = self.lock();
        match op.index() {
            Some(i) => s.calls[i],
            None => s.calls.iter().sum(),
        }
    }

    /// Failures injected into `op` so far (all for `Op::Any`), cut streams included (counted when
    /// the cut happens).
    pub fn injected(&self, op: Op) -> u64 {
        let s = self.lock();
        match op.index() {
            Some(i) => s.injected[i],
            None => s.injected.iter().sum(),
        }
    }

    /// Sets the call and failure counters back to zero.
    pub fn reset_counters(&self) {
        let mut s = self.lock();
        s.calls = [0; 9];
        s.injected = [0; 9];
    }

    /// Counts the call, waits its delay, and fails it if a rule fires.
    async fn before(&self, op: Op, path: &RemotePath) -> RemoteResult<()> {
        let (delay, fault) = {
            let mut s = self.lock();
            if let Some(i) = op.index() {
                s.calls[i] += 1;
            }
            let delay: Duration = s
                .delays
                .iter()
                .filter(|(o, _)| o.matches(op))
                .map(|(_, d)| *d)
                .sum();
            // Every matching rule sees the call; the first that fires decides.
            let mut fault = None;
            for rule in s.rules.iter_mut().filter(|r| r.op.matches(op)) {
                if rule.step() && fault.is_none() {
                    fault = Some(rule.kind);
                }
            }
            if fault.is_some() {
                s.count_injected(op);
            }
            (delay, fault)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fault {
            Some(kind) => Err(kind.to_error(op, &url(path))),
            None => Ok(()),
        }
    }
}

fn url(path: &RemotePath) -> String {
    format!("injected:{path}")
}

/// A stream that passes `after` bytes of `inner` through, then fails with a transient error if
/// `inner` has more.
struct CutStream {
    inner: ByteStream,
    left: u64,
    /// Set once the cut point is reached with more data pending.
    cut: bool,
    done: bool,
    op: Op,
    url: String,
    after: u64,
    state: Shared,
}

impl CutStream {
    fn new(inner: ByteStream, after: u64, op: Op, url: String, state: Shared) -> Self {
        CutStream {
            inner,
            left: after,
            cut: false,
            done: false,
            op,
            url,
            after,
            state,
        }
    }

    fn error(&mut self) -> RemoteError {
        self.done = true;
        lock(&self.state).count_injected(self.op);
        RemoteError::Transient {
            method: self.op.method().to_string(),
            url: self.url.clone(),
            reason: format!(
                "connection reset after {} body bytes (injected)",
                self.after
            ),
        }
    }
}

impl Stream for CutStream {
    type Item = RemoteResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cut {
            return Poll::Ready(Some(Err(self.error())));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                if len <= self.left {
                    self.left -= len;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                let head = chunk.slice(..self.left as usize);
                self.left = 0;
                if head.is_empty() {
                    Poll::Ready(Some(Err(self.error())))
                } else {
                    self.cut = true;
                    Poll::Ready(Some(Ok(head)))
                }
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[async_trait]
impl<R: Remote> Remote for FaultyRemote<R> {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.before(Op::Stat, path).await?;
        self.inner.stat(path).await
    }

    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        self.before(Op::List, path).await?;
        self.inner.list(path).await
    }

    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        self.before(Op::ReadRange, path).await?;
        let mut resp = self.inner.read_range(path, range, expect).await?;
        if let Some((after, pause)) = self.lock().stall_read {
            let body = std::mem::replace(&mut resp.body, Box::pin(futures_util::stream::empty()));
            let sent = Arc::new(Mutex::new((0u64, false)));
            resp.body = Box::pin(futures_util::StreamExt::then(body, move |item| {
                let sent = sent.clone();
                async move {
                    let stall = {
                        let mut g = sent.lock().unwrap_or_else(|e| e.into_inner());
                        let stall = g.0 >= after && !g.1;
                        g.1 |= stall;
                        if let Ok(c) = &item {
                            g.0 += c.len() as u64;
                        }
                        stall
                    };
                    if stall {
                        tokio::time::sleep(pause).await;
                    }
                    item
                }
            }));
        }
        let cut = Cut::take(&mut self.lock().cut_read);
        if let Some(after) = cut {
            let body = std::mem::replace(&mut resp.body, Box::pin(futures_util::stream::empty()));
            resp.body = Box::pin(CutStream::new(
                body,
                after,
                Op::ReadRange,
                url(path),
                self.state.clone(),
            ));
        }
        Ok(resp)
    }

    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        self.before(Op::Put, path).await?;
        let cut = Cut::take(&mut self.lock().cut_put);
        let body = match cut {
            Some(after) if after < body.len() => {
                let len = body.len();
                let state = self.state.clone();
                let url = url(path);
                PutBody::Stream {
                    len,
                    make: Arc::new(move || {
                        Box::pin(CutStream::new(
                            body.open(),
                            after,
                            Op::Put,
                            url.clone(),
                            state.clone(),
                        ))
                    }),
                }
            }
            _ => body,
        };
        self.inner.put(path, body, cond).await
    }

    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.before(Op::Mkdir, path).await?;
        self.inner.mkdir(path).await
    }

    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.before(Op::Delete, path).await?;
        self.inner.delete(path).await
    }

    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.before(Op::Rename, from).await?;
        self.inner.rename(from, to, overwrite).await
    }

    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.before(Op::Copy, from).await?;
        self.inner.copy(from, to, overwrite).await
    }

    async fn quota(&self) -> RemoteResult<Quota> {
        self.before(Op::Quota, &RemotePath::root()).await?;
        self.inner.quota().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::mem::MemRemote;
    use std::time::Instant;

    fn p(s: &str) -> RemotePath {
        RemotePath::new(s).unwrap()
    }

    fn setup() -> (MemRemote, FaultyRemote<MemRemote>) {
        let mem = MemRemote::new();
        (mem.clone(), FaultyRemote::new(mem))
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 253) as u8).collect()
    }

    /// Reads a body to its end; returns the bytes received and the error that ended it, if any.
    async fn drain(mut body: ByteStream) -> (Vec<u8>, Option<RemoteError>) {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    // Nothing follows the error.
                    assert!(body.next().await.is_none());
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn passes_everything_through_without_rules() {
        let (mem, f) = setup();
        f.mkdir(&p("d")).await.unwrap();
        f.put(&p("d/x"), PutBody::from(&b"hello"[..]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(f.stat(&p("d/x")).await.unwrap().size, 5);
        assert_eq!(f.list(&p("d")).await.unwrap().children.len(), 1);
        let r = f
            .read_range(&p("d/x"), ByteRange::new(1, 3), None)
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), "ell");
        f.copy(&p("d/x"), &p("y"), false).await.unwrap();
        f.rename(&p("y"), &p("z"), false).await.unwrap();
        f.delete(&p("z")).await.unwrap();
        assert_eq!(f.quota().await.unwrap().used, Some(5));
        for op in Op::ALL {
            assert_eq!(f.calls(op), 1, "{op:?}");
            assert_eq!(f.injected(op), 0, "{op:?}");
        }
        assert_eq!(f.calls(Op::Any), 9);
        let c = mem.counters();
        assert_eq!((c.stat, c.put, c.read_range, c.quota), (1, 1, 1, 1));
        f.reset_counters();
        assert_eq!(f.calls(Op::Any), 0);
    }

    #[tokio::test]
    async fn fail_nth_counts_from_when_it_is_set() {
        let (mem, f) = setup();
        mem.insert_file("x", "1");
        f.stat(&p("x")).await.unwrap();
        f.stat(&p("x")).await.unwrap();
        f.fail_nth(Op::Stat, 2, FaultKind::Transient);
        f.list(&RemotePath::root()).await.unwrap(); // another op: not counted by the rule
        f.stat(&p("x")).await.unwrap();
        let err = f.stat(&p("x")).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("/x"), "{err}");
        // Once only.
        for _ in 0..5 {
            f.stat(&p("x")).await.unwrap();
        }
        assert_eq!(f.calls(Op::Stat), 9);
        assert_eq!(f.injected(Op::Stat), 1);
        assert_eq!(f.injected(Op::Any), 1);
        // The failed call never reached the inner remote.
        assert_eq!(mem.counters().stat, 8);
    }

    #[tokio::test]
    async fn fail_nth_any_and_fail_next() {
        let (mem, f) = setup();
        mem.insert_file("x", "1");
        f.fail_nth(Op::Any, 3, FaultKind::Status(503));
        f.stat(&p("x")).await.unwrap();
        f.quota().await.unwrap();
        assert!(f
            .list(&RemotePath::root())
            .await
            .unwrap_err()
            .is_transient());
        f.list(&RemotePath::root()).await.unwrap();
        assert_eq!(f.injected(Op::List), 1);

        f.fail_next(Op::Mkdir, 2, FaultKind::Timeout);
        assert!(f.mkdir(&p("d")).await.unwrap_err().is_transient());
        assert!(f.mkdir(&p("d")).await.unwrap_err().is_transient());
        f.mkdir(&p("d")).await.unwrap();
        assert_eq!(mem.counters().mkdir, 1);
        f.fail_nth(Op::Delete, 0, FaultKind::Transient);
        f.delete(&p("d")).await.unwrap();
    }

    #[tokio::test]
    async fn injected_put_failure_never_reaches_the_inner_remote() {
        let (mem, f) = setup();
        let old = mem.insert_file("f", "old");
        f.fail_nth(Op::Put, 1, FaultKind::Status(507));
        let err = f
            .put(&p("f"), PutBody::from(&b"new"[..]), PutCondition::None)
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::InsufficientStorage { .. }));
        assert_eq!(mem.counters().put, 0);
        assert_eq!(mem.file_bytes("f").unwrap(), b"old");
        assert_eq!(mem.etag("f"), Some(old));
        f.put(&p("f"), PutBody::from(&b"new"[..]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(mem.file_bytes("f").unwrap(), b"new");
    }

    #[tokio::test]
    async fn fail_fraction_is_reproducible() {
        async fn pattern(seed: u64, p_fail: f64) -> Vec<bool> {
            let (_, f) = setup();
            f.fail_fraction(Op::Quota, p_fail, seed, FaultKind::Transient);
            let mut out = Vec::new();
            for _ in 0..1000 {
                out.push(f.quota().await.is_err());
            }
            assert_eq!(
                f.injected(Op::Quota),
                out.iter().filter(|&&b| b).count() as u64
            );
            out
        }
        let a = pattern(42, 0.3).await;
        let b = pattern(42, 0.3).await;
        let c = pattern(43, 0.3).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let failed = a.iter().filter(|&&x| x).count();
        assert!((220..=380).contains(&failed), "{failed} of 1000 failed");
        assert!(!pattern(1, 0.0).await.contains(&true));
        assert!(!pattern(1, 1.0).await.contains(&false));
        assert!(!pattern(1, f64::NAN).await.contains(&true));
    }

    #[test]
    fn status_faults_use_the_shared_mapping() {
        let e = |s| FaultKind::Status(s).to_error(Op::Put, "u");
        assert!(matches!(e(412), RemoteError::PreconditionFailed { .. }));
        assert!(matches!(e(507), RemoteError::InsufficientStorage { .. }));
        assert!(matches!(
            e(400),
            RemoteError::Status { status: 400, ref method, .. } if method == "PUT"
        ));
        // Injected transient failures say so in their reason.
        assert!(e(503).is_transient());
        assert!(e(503).to_string().contains("injected"));
    }

    #[tokio::test]
    async fn delay_adds_latency_to_matching_calls() {
        // Lower bounds are exact (tokio never wakes a sleep early); upper bounds only need to
        // tell "delayed" from "not delayed", so they are generous.
        let (mem, f) = setup();
        mem.insert_file("x", "1");
        let ms = Duration::from_millis;
        f.delay(Op::Stat, ms(200));
        let t = Instant::now();
        f.stat(&p("x")).await.unwrap();
        assert!(t.elapsed() >= ms(200), "{:?}", t.elapsed());
        // Other operations are not delayed.
        let t = Instant::now();
        f.quota().await.unwrap();
        assert!(t.elapsed() < ms(150), "{:?}", t.elapsed());
        // Failing calls are delayed too.
        f.fail_nth(Op::Stat, 1, FaultKind::Transient);
        let t = Instant::now();
        f.stat(&p("x")).await.unwrap_err();
        assert!(t.elapsed() >= ms(200));
        // Any adds up with the specific delay.
        f.delay(Op::Any, ms(100));
        let t = Instant::now();
        f.stat(&p("x")).await.unwrap();
        assert!(t.elapsed() >= ms(300));
        let t = Instant::now();
        f.quota().await.unwrap();
        assert!(t.elapsed() >= ms(100));
        // A zero delay removes that delay; clear removes all.
        f.delay(Op::Stat, Duration::ZERO);
        let t = Instant::now();
        f.stat(&p("x")).await.unwrap();
        let el = t.elapsed();
        assert!(el >= ms(100) && el < ms(250), "{el:?}");
        f.clear();
        let t = Instant::now();
        f.stat(&p("x")).await.unwrap();
        assert!(t.elapsed() < ms(90), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn cut_read_yields_a_prefix_then_a_transient_error() {
        let (mem, f) = setup();
        let d = data(300_000);
        mem.insert_file("big", d.clone());
        f.cut_read_after(100_000);
        for start in [0u64, 1, 65_535] {
            let resp = f
                .read_range(&p("big"), ByteRange::from(start), None)
                .await
                .unwrap();
            let (got, err) = drain(resp.body).await;
            assert_eq!(got.len(), 100_000);
            assert_eq!(got, &d[start as usize..start as usize + 100_000]);
            let err = err.expect("the stream must fail");
            assert!(err.is_transient(), "{err:?}");
        }
        assert_eq!(f.injected(Op::ReadRange), 3);
        // A body not longer than the cut ends normally.
        let resp = f
            .read_range(&p("big"), ByteRange::new(5, 100_000), None)
            .await
            .unwrap();
        let (got, err) = drain(resp.body).await;
        assert!(err.is_none());
        assert_eq!(got, &d[5..100_005]);
        // Zero: fails at once.
        f.cut_read_after(0);
        let resp = f
            .read_range(&p("big"), ByteRange::whole(), None)
            .await
            .unwrap();
        let (got, err) = drain(resp.body).await;
        assert!(got.is_empty());
        assert!(err.unwrap().is_transient());
        f.clear();
        let resp = f
            .read_range(&p("big"), ByteRange::whole(), None)
            .await
            .unwrap();
        assert_eq!(resp.bytes().await.unwrap(), d);
    }

    #[tokio::test]
    async fn cut_read_for_a_number_of_reads() {
        let (mem, f) = setup();
        mem.insert_file("f", data(1000));
        f.cut_read_after_times(10, 2);
        for _ in 0..2 {
            let resp = f
                .read_range(&p("f"), ByteRange::whole(), None)
                .await
                .unwrap();
            let (got, err) = drain(resp.body).await;
            assert_eq!(got.len(), 10);
            assert!(err.is_some());
        }
        let resp = f
            .read_range(&p("f"), ByteRange::whole(), None)
            .await
            .unwrap();
        assert_eq!(resp.bytes().await.unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn cut_put_breaks_the_inner_put_and_keeps_the_old_content() {
        let (mem, f) = setup();
        let old = mem.insert_file("f", "old content");
        f.cut_put_after(5);
        let err = f
            .put(
                &p("f"),
                PutBody::from(&b"brand new content"[..]),
                PutCondition::None,
            )
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        // The inner put was called, and failed midway.
        assert_eq!(mem.counters().put, 1);
        assert_eq!(f.injected(Op::Put), 1);
        assert_eq!(mem.file_bytes("f").unwrap(), b"old content");
        assert_eq!(mem.etag("f"), Some(old));
        // New files are not created either.
        assert!(f
            .put(&p("g"), PutBody::from(vec![7u8; 100]), PutCondition::None)
            .await
            .is_err());
        assert!(!mem.exists("g"));
        // A body not longer than the cut goes through.
        f.put(&p("h"), PutBody::from(&b"tiny"[..]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(mem.file_bytes("h").unwrap(), b"tiny");
        f.clear();
        f.put(
            &p("f"),
            PutBody::from(&b"brand new content"[..]),
            PutCondition::None,
        )
        .await
        .unwrap();
        assert_eq!(mem.file_bytes("f").unwrap(), b"brand new content");
    }

    #[tokio::test]
    async fn cut_put_of_a_file_body_for_one_call() {
        let (mem, f) = setup();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("up");
        let d = data(600_000);
        std::fs::write(&local, &d).unwrap();
        let body = PutBody::File {
            path: local,
            len: d.len() as u64,
        };
        f.cut_put_after_times(300_000, 1);
        assert!(f
            .put(&p("f"), body.clone(), PutCondition::IfNoneMatch)
            .await
            .unwrap_err()
            .is_transient());
        assert!(!mem.exists("f"));
        // A retry of the same body succeeds.
        f.put(&p("f"), body, PutCondition::IfNoneMatch)
            .await
            .unwrap();
        assert_eq!(mem.file_bytes("f").unwrap(), d);
    }

    #[tokio::test]
    async fn wraps_shared_and_dyn_remotes() {
        let mem = Arc::new(MemRemote::new());
        let f: Arc<dyn Remote> = Arc::new(FaultyRemote::new(mem.clone()));
        f.put(&p("x"), PutBody::from(&b"1"[..]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(mem.file_bytes("x").unwrap(), b"1");
        let boxed: FaultyRemote<Arc<dyn Remote>> = FaultyRemote::new(f);
        boxed.fail_nth(Op::Stat, 1, FaultKind::Status(404));
        assert!(boxed.stat(&p("x")).await.unwrap_err().is_not_found());
        assert!(boxed.stat(&p("x")).await.is_ok());
    }
}
