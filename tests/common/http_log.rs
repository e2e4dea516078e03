//! The HTTP/1.1 requests seen on a proxied connection, for the fault proxy's request log: each
//! request's method and target (from its request line) and its response's status (from the
//! status line), told apart by following the message framing in both directions
//! (`Content-Length`, chunked transfer coding, bodiless responses to HEAD and 1xx/204/304).
//!
//! The parsers only watch bytes that are forwarded anyway; when a stream stops making sense as
//! HTTP/1.1 (e.g. a body delimited by the connection's close), they stop recording for that
//! direction instead of guessing.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// As sent: `GET`, `PROPFIND`, …
    pub method: String,
    /// The request target as sent (a percent-encoded path, for the clients under test).
    pub target: String,
    /// Whether it carried an `Authorization` header (credentials, Basic or Digest).
    pub signed: bool,
    /// The final (non-1xx) response's status, once its status line went back to the client.
    pub status: Option<u16>,
}

impl Request {
    /// The target's path, without a query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The proxy's log: every request of every connection, in the order their request lines
/// were forwarded.
#[derive(Default)]
pub struct RequestLog {
    requests: Mutex<Vec<Request>>,
}

impl RequestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Vec<Request> {
        self.lock().clone()
    }

    fn push(&self, method: String, target: String, signed: bool) -> usize {
        let mut v = self.lock();
        v.push(Request {
            method,
            target,
            signed,
            status: None,
        });
        v.len() - 1
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(r) = self.lock().get_mut(index) {
            r.status = Some(status);
        }
    }

    fn method_of(&self, index: usize) -> String {
        self.lock()
            .get(index)
            .map(|r| r.method.clone())
            .unwrap_or_default()
    }
}

/// Where a parser is in its byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a message head (up to and including the empty line).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// In a chunked body: collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping a chunk's data and its CRLF.
    ChunkData(u64),
    /// After the last chunk: collecting trailer lines until the empty one.
    Trailer(Vec<u8>),
    /// The stream no longer parses (or its body runs to the close): nothing more is recorded.
    Lost,
}

/// How the body after a head is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

const MAX_HEAD: usize = 256 * 1024;

/// Follows message framing; `on_head` gets each complete head and says how its body is framed.
fn feed(state: &mut State, mut data: &[u8], on_head: &mut dyn FnMut(&[u8]) -> Framing) {
    while !data.is_empty() {
        match state {
            State::Lost => return,
            State::Head(buf) => {
                // Byte by byte up to the end of the head: heads are small.
                let b = data[0];
                data = &data[1..];
                buf.push(b);
                if buf.ends_with(b"\r\n\r\n") {
                    let head = std::mem::take(buf);
                    // Stray CRLFs before a request line are allowed (RFC 9112 2.2).
                    if head == b"\r\n\r\n" {
                        continue;
                    }
                    *state = match on_head(&head) {
                        Framing::None | Framing::Length(0) => State::Head(Vec::new()),
                        Framing::Length(n) => State::Body(n),
                        Framing::Chunked => State::ChunkSize(Vec::new()),
                        Framing::UntilClose => State::Lost,
                    };
                } else if buf.len() > MAX_HEAD {
                    *state = State::Lost;
                }
            }
            State::Body(left) => {
                let n = (*left).min(data.len() as u64);
                data = &data[n as usize..];
                *left -= n;
                if *left == 0 {
                    *state = State::Head(Vec::new());
                }
            }
            State::ChunkSize(line) => {
                let b = data[0];
                data = &data[1..];
                line.push(b);
                if line.ends_with(b"\r\n") {
                    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                    let hex = text.split(';').next().unwrap_or("").trim();
                    *state = match u64::from_str_radix(hex, 16) {
                        Ok(0) => State::Trailer(Vec::new()),
                        Ok(n) => State::ChunkData(n + 2),
                        Err(_) => State::Lost,
                    };
                } else if line.len() > 1024 {
                    *state = State::Lost;
                }
            }
            State::ChunkData(left) => {
                let n = (*left).min(data.len() as u64);
                data = &data[n as usize..];
                *left -= n;
                if *left == 0 {
                    *state = State::ChunkSize(Vec::new());
                }
            }
            State::Trailer(line) => {
                let b = data[0];
                data = &data[1..];
                line.push(b);
                if line.ends_with(b"\r\n") {
                    if line.len() == 2 {
                        *state = State::Head(Vec::new());
                    } else {
                        line.clear();
                    }
                } else if line.len() > MAX_HEAD {
                    *state = State::Lost;
                }
            }
        }
    }
}

/// The value of header `name` (case-insensitive) in a head, if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn is_chunked(head: &str) -> bool {
    header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(head: &str) -> Option<u64> {
    header(head, "content-length").and_then(|v| v.parse().ok())
}

/// One connection's two parsers, sharing the queue of requests awaiting their responses.
pub struct Exchange {
    log: Arc<RequestLog>,
    /// Indexes into the log of this connection's requests without a final response yet.
    pending: Mutex<VecDeque<usize>>,
    up: Mutex<State>,
    down: Mutex<State>,
}

impl Exchange {
    pub fn new(log: Arc<RequestLog>) -> Exchange {
        Exchange {
            log,
            pending: Mutex::new(VecDeque::new()),
            up: Mutex::new(State::Head(Vec::new())),
            down: Mutex::new(State::Head(Vec::new())),
        }
    }

    /// Client→server bytes, as forwarded.
    pub fn client_sent(&self, data: &[u8]) {
        let mut state = self.up.lock().unwrap_or_else(|e| e.into_inner());
        feed(&mut state, data, &mut |head| {
            let text = String::from_utf8_lossy(head);
            let mut parts = text.split("\r\n").next().unwrap_or("").split(' ');
            let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
                return Framing::UntilClose;
            };
            let signed = header(&text, "authorization").is_some();
            let index = self
                .log
                .push(method.to_string(), target.to_string(), signed);
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(index);
            if is_chunked(&text) {
                Framing::Chunked
            } else {
                content_length(&text).map_or(Framing::None, Framing::Length)
            }
        });
    }

    /// Server→client bytes, as forwarded.
    pub fn server_sent(&self, data: &[u8]) {
        let mut state = self.down.lock().unwrap_or_else(|e| e.into_inner());
        feed(&mut state, data, &mut |head| {
            let text = String::from_utf8_lossy(head);
            let Some(status) = text
                .split("\r\n")
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse::<u16>().ok())
            else {
                return Framing::UntilClose;
            };
            if (100..200).contains(&status) {
                // Interim (100 Continue): the final response follows.
                return Framing::None;
            }
            let Some(index) = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            else {
                return Framing::UntilClose;
            };
            self.log.set_status(index, status);
            if self.log.method_of(index) == "HEAD" || status == 204 || status == 304 {
                Framing::None
            } else if is_chunked(&text) {
                Framing::Chunked
            } else {
                content_length(&text).map_or(Framing::UntilClose, Framing::Length)
            }
        });
    }
}
