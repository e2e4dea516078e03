//! A response body rewritten on its way out by a streaming [`Rewriter`] (the ETag quoting of
//! `etagfix.rs`, the missing-property answers of `propstat.rs`): data frames go through the
//! rewriter, other frames pass as they are, and the rewriter is told when the body ends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};

/// A streaming rewrite of a body's bytes.
pub(crate) trait Rewriter {
    /// Takes the next piece of the body (`last`: the body ended; `input` is then empty) and
    /// returns what may be sent so far.
    fn process(&mut self, input: &[u8], last: bool) -> Vec<u8>;
}

/// `inner` rewritten by `rewriter`.
pub(crate) struct RewrittenBody<B, R> {
    inner: B,
    rewriter: R,
    done: bool,
}

impl<B, R> RewrittenBody<B, R> {
    pub(crate) fn new(inner: B, rewriter: R) -> Self {
        RewrittenBody {
            inner,
            rewriter,
            done: false,
        }
    }
}

impl<B, R> Body for RewrittenBody<B, R>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
    R: Rewriter + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let (data, last) = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => (data, false),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    (Bytes::new(), true)
                }
            };
            let out = this.rewriter.process(&data, last);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}
