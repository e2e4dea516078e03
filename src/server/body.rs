//! [`SharedBody`]: a request body shared between dav-server and the service, with an idle
//! timeout.
//!
//! - **Shared.** dav-server may stop reading a body early (an error answer before the upload
//!   ends); the service then drains what is left, within limits, so the client sees the answer
//!   instead of a connection reset (closing a socket with unread data makes the kernel send RST).
//! - **Idle timeout.** A body that makes no progress for [`SharedBody::new`]'s `idle` while it is
//!   being read fails with a `TimedOut` error (and stays failed): a client trickling a byte every
//!   few seconds can no longer hold a connection, a task and an upload temp file forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// After an error answer to a request whose body was not read (401, 507, …), up to this much of
/// the body is read and discarded before answering.
const DRAIN_MAX_BYTES: u64 = 32 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// The request body; clones share it.
#[derive(Clone)]
pub(crate) struct SharedBody(Arc<Mutex<State>>);

struct State {
    body: Incoming,
    done: bool,
    polled: bool,
    timed_out: bool,
    idle: Duration,
    /// Runs while the body is waited for; dropped whenever a frame arrives.
    timer: Option<Pin<Box<Sleep>>>,
}

impl SharedBody {
    pub(crate) fn new(body: Incoming, idle: Duration) -> SharedBody {
        SharedBody(Arc::new(Mutex::new(State {
            body,
            done: false,
            polled: false,
            timed_out: false,
            idle,
            timer: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once reading stopped because the client sent nothing for the idle timeout.
    pub(crate) fn timed_out(&self) -> bool {
        self.lock().timed_out
    }

    /// Reads the whole body into memory, refusing more than `max` bytes (`Ok(None)`).
    pub(crate) async fn read_to_bytes(&self, max: usize) -> io::Result<Option<Bytes>> {
        let mut body = self.clone();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(chunk) = frame?.into_data() {
                if data.len() + chunk.len() > max {
                    return Ok(None);
                }
                data.extend_from_slice(&chunk);
            }
        }
        Ok(Some(Bytes::from(data)))
    }

    /// Reads and discards the rest of the body, within limits. With `Expect: 100-continue` and
    /// nothing read yet, the client is waiting for our answer and will not send the body: then
    /// there is nothing to drain.
    pub(crate) async fn drain(&self, expect_continue: bool) {
        {
            let st = self.lock();
            if st.done || st.body.is_end_stream() || (expect_continue && !st.polled) {
                return;
            }
        }
        let mut body = self.clone();
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, async move {
            let mut left = DRAIN_MAX_BYTES;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    match left.checked_sub(data.len() as u64) {
                        Some(l) => left = l,
                        None => return,
                    }
                }
            }
        })
        .await;
    }
}

impl Body for SharedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let mut st = self.lock();
        if st.done {
            return Poll::Ready(None);
        }
        st.polled = true;
        match Pin::new(&mut st.body).poll_frame(cx) {
            Poll::Pending => {
                let idle = st.idle;
                let timer = st
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                st.done = true;
                st.timed_out = true;
                st.timer = None;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request body data for {} s", idle.as_secs_f32()),
                ))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                st.timer = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                st.done = true;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(None) => {
                st.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = self.lock();
        st.done || st.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().body.size_hint()
    }
}
