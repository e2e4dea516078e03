//! The bodies that cross the wire: a download cut to its range and checked for length
//! (`RangeBody`), and an upload that records its progress for the stall watchdog
//! (`ProgressBody`, `Progress`).

use super::*;
/// A body stream cut down to a range and checked for length: skips `skip` bytes, yields at most
/// `take`, and fails if the server's body ends before `expect` bytes were yielded.
pub(super) struct RangeBody {
    pub(super) inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// Longest wait for the next chunk (reqwest's `read_timeout` on a body, which the client no
    /// longer has): timed from the first poll after a chunk.
    pub(super) idle: Duration,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) skip: u64,
    pub(super) take: Option<u64>,
    pub(super) expect: Option<u64>,
    pub(super) yielded: u64,
    pub(super) done: bool,
    pub(super) url: Url,
    /// The request's slot, held until the body is read or dropped.
    pub(super) _slot: Option<Slot>,
}

impl Stream for RangeBody {
    type Item = RemoteResult<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.take == Some(0) {
                this.done = true;
                return Poll::Ready(None);
            }
            let polled = this.inner.as_mut().poll_next(cx);
            if polled.is_pending() {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(transient(
                        &Method::GET,
                        &this.url,
                        body_timed_out(idle),
                    ))));
                }
                return Poll::Pending;
            }
            this.sleep = None;
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(transient(
                        &Method::GET,
                        &this.url,
                        reqwest_reason(&e),
                    ))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(exp) = this.expect {
                        if this.yielded < exp {
                            return Poll::Ready(Some(Err(transient(
                                &Method::GET,
                                &this.url,
                                format!("body cut short: {} of {exp} bytes", this.yielded),
                            ))));
                        }
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if this.skip > 0 {
                        let n = this.skip.min(chunk.len() as u64);
                        this.skip -= n;
                        chunk = chunk.slice(n as usize..);
                    }
                    if let Some(t) = this.take.as_mut() {
                        if (chunk.len() as u64) > *t {
                            chunk.truncate(*t as usize);
                        }
                        *t -= chunk.len() as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    this.yielded += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(chunk)));
                }
            }
        }
    }
}

/// When an upload last made progress.
pub(super) struct Progress {
    pub(super) start: Instant,
    /// Milliseconds from `start` to the last progress.
    pub(super) last_ms: AtomicU64,
    /// Body bytes handed to the connection, out of `len`.
    pub(super) bytes: AtomicU64,
    pub(super) len: u64,
    /// Milliseconds from `start` to the end of the body, plus one (0: not ended yet).
    pub(super) done_ms: AtomicU64,
}

/// The most a Linux socket's send buffer grows to by default (`net.ipv4.tcp_wmem`): what may
/// still be unsent, unseen by the watchdog, when the last body byte has been handed over.
const SEND_BUFFER_MAX: u64 = 4 << 20;

impl Progress {
    pub(super) fn new(len: u64) -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            len,
            done_ms: AtomicU64::new(0),
        }
    }
    pub(super) fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
    pub(super) fn sent(&self, n: usize) {
        let total = self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total >= self.len {
            // The connection may not ask again once it has the announced length.
            self.ended();
        }
    }
    pub(super) fn ended(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        let _ = self
            .done_ms
            .compare_exchange(0, ms + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    /// Time since the last progress.
    pub(super) fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
    /// How long the upload may go without visible progress. Once the whole body is handed
    /// over, the socket's send buffer may still hold up to [`SEND_BUFFER_MAX`] bytes that drain
    /// unseen: they get the time the rate seen so far needs for them, on top of `limit`.
    pub(super) fn allowed_idle(&self, limit: Duration) -> Duration {
        let done = self.done_ms.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        if done <= 1 || bytes == 0 {
            return limit;
        }
        let took = Duration::from_millis(done - 1);
        let buffered = bytes.min(SEND_BUFFER_MAX);
        limit + took.mul_f64(buffered as f64 / bytes as f64)
    }
}

/// Largest piece handed to the connection at once, so progress is seen at a fine grain even
/// on a slow link (a piece is only asked for when the connection has room for it).
const UPLOAD_PIECE: usize = 64 * 1024;

/// An upload body that records progress each time the connection asks for more.
pub(super) struct ProgressBody {
    pub(super) inner: ByteStream,
    /// What is left of the last chunk read from `inner`.
    pub(super) rest: Bytes,
    pub(super) progress: Arc<Progress>,
}

impl Stream for ProgressBody {
    type Item = RemoteResult<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Being polled means the connection took the previous piece and has room for more.
        this.progress.touch();
        if this.rest.is_empty() {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.rest = chunk,
                Poll::Ready(None) => {
                    this.progress.ended();
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
        let n = this.rest.len().min(UPLOAD_PIECE);
        this.progress.sent(n);
        Poll::Ready(Some(Ok(this.rest.split_to(n))))
    }
}

pub(super) fn empty_stream() -> ByteStream {
    Box::pin(futures_util::stream::empty())
}
