//! Request targets with a `#fragment`, which the `http` crate's URI parser drops silently.
//!
//! A client never sends a fragment; a request like `DELETE /dir/#frag` most likely meant
//! something other than `/dir/`, and acting on `/dir/` (deleting the whole collection) is
//! unsafe (litmus warns about it). hyper hands the service the URI with the fragment already cut
//! off, so [`Sniffer`] watches the raw bytes of a connection as hyper reads them, finds each
//! request line, and queues whether its target had a `#`; the service takes one entry per
//! request, in order, and refuses those with 400.
//!
//! The sniffer follows HTTP/1.1 framing only as far as needed: request heads, and bodies with a
//! `Content-Length`. On anything it does not follow (a chunked body, a head it cannot parse,
//! a head over 64 KiB) it stops for the rest of the connection and reports nothing more: it can
//! miss a fragment, never invent one.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head followed.
const MAX_HEAD: usize = 64 << 10;

/// The service's side: one answer per request, in order.
#[derive(Clone, Default)]
pub(crate) struct Fragments(Arc<Mutex<Tracker>>);

impl Fragments {
    /// Whether the next request's target had a fragment (`false` when unknown).
    pub(crate) fn next_has_fragment(&self) -> bool {
        self.lock().queue.pop_front().unwrap_or(false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Tracker {
    phase: Phase,
    /// The head read so far (request line and headers), while in `Phase::Head`.
    head: Vec<u8>,
    queue: VecDeque<bool>,
}

#[derive(Default, Debug, PartialEq, Eq)]
enum Phase {
    #[default]
    Head,
    Body(u64),
    Lost,
}

impl Tracker {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Lost => return,
                Phase::Body(left) => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.phase = if left == n {
                        Phase::Head
                    } else {
                        Phase::Body(left - n)
                    };
                }
                Phase::Head => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.head.extend_from_slice(data);
                        if self.head.len() > MAX_HEAD {
                            self.phase = Phase::Lost;
                        }
                        return;
                    };
                    self.head.extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    self.end_of_line();
                }
            }
        }
    }

    /// A line of the head just ended (the buffer ends with `\n`).
    fn end_of_line(&mut self) {
        let line_start = self.head[..self.head.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = trim_eol(&self.head[line_start..]);
        if !line.is_empty() {
            if self.head.len() > MAX_HEAD {
                self.phase = Phase::Lost;
            }
            return;
        }
        if line_start == 0 {
            // Empty lines before a request line are allowed and skipped.
            self.head.clear();
            return;
        }
        let head = std::mem::take(&mut self.head);
        self.phase = match parse_head(&head) {
            Some((fragment, body)) => {
                self.queue.push_back(fragment);
                match body {
                    Some(0) => Phase::Head,
                    Some(len) => Phase::Body(len),
                    None => Phase::Lost,
                }
            }
            None => Phase::Lost,
        };
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// (target has a fragment, body length: `None` when the body is not followed).
fn parse_head(head: &[u8]) -> Option<(bool, Option<u64>)> {
    let mut lines = head.split(|b| *b == b'\n').map(trim_eol);
    let request_line = lines.next()?;
    let mut parts = request_line.split(|b| *b == b' ');
    let (_method, target) = (parts.next()?, parts.next()?);
    let fragment = target.contains(&b'#');
    let mut length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Some((fragment, None));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
            if length.is_some_and(|l| l != len) {
                return Some((fragment, None));
            }
            length = Some(len);
        }
    }
    Some((fragment, Some(length.unwrap_or(0))))
}

/// A connection's byte stream, watched for request targets with fragments.
pub(crate) struct Sniffer<IO> {
    inner: IO,
    fragments: Fragments,
}

impl<IO> Sniffer<IO> {
    pub(crate) fn new(inner: IO) -> (Sniffer<IO>, Fragments) {
        let fragments = Fragments::default();
        (
            Sniffer {
                inner,
                fragments: fragments.clone(),
            },
            fragments,
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniffer<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.fragments.lock().feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniffer<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(stream: &[u8], split: usize) -> Vec<bool> {
        let mut t = Tracker::default();
        for piece in stream.chunks(split.max(1)) {
            t.feed(piece);
        }
        t.queue.into_iter().collect()
    }

    #[test]
    fn finds_fragments_across_requests_and_bodies() {
        let stream = b"\r\nDELETE /a/#frag HTTP/1.1\r\nHost: x\r\n\r\n\
            PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n\
            GET /#not a request line!!\r\n\r\n\
            GET /c HTTP/1.1\nHost: x\n\n\
            PROPFIND /d#x HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        for split in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                answers(stream, split),
                [true, false, false, true],
                "split {split}"
            );
        }
    }

    #[test]
    fn stops_at_what_it_does_not_follow() {
        let stream = b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nGET /#x HTTP/1.1\r\n\r\n0\r\n\r\nDELETE /b#c HTTP/1.1\r\n\r\n";
        assert_eq!(answers(stream, 5), [false]);
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        long.extend_from_slice(b"#x HTTP/1.1\r\n\r\nGET /#y HTTP/1.1\r\n\r\n");
        assert!(answers(&long, 4096).is_empty());
    }
}
