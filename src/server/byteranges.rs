//! A random boundary (and CRLF line ends) for `multipart/byteranges` replies.
//!
//! dav-server 0.11 answers a GET of several ranges with the fixed boundary `BOUNDARY` and
//! LF-only line ends (`\n--BOUNDARY\n`). A fixed boundary lets a file's content forge part
//! delimiters (a file holding `\n--BOUNDARY\n` garbles every multi-range reply of itself), and
//! RFC 2046 §5.1.1 wants CRLF. The reply is built inside dav-server with no hook, so it is
//! rewritten on the fly: each response gets a fresh random boundary, and the body is re-framed.
//!
//! The rewrite never searches file bytes for a delimiter: dav-server's reply is parsed by its
//! known layout — delimiter, `Content-Range: bytes S-E/LEN`, `Content-Type`, empty line, then
//! exactly E-S+1 bytes of data — so data is passed through by count. A reply that does not
//! follow that layout (a later dav-server changed it) ends the body early, logged, with no
//! closing delimiter: a client sees an incomplete reply, never a wrong one.

use http::{header, HeaderMap, HeaderValue};

use super::rewrite::{Rewriter, RewrittenBody};

/// The `Content-Type` dav-server 0.11 sends with a multi-range reply.
const DAV_CONTENT_TYPE: &str = "multipart/byteranges; boundary=BOUNDARY";
const DAV_DELIMITER: &[u8] = b"\n--BOUNDARY\n";
const DAV_CLOSE: &[u8] = b"\n--BOUNDARY--\n";
/// Longest part header accepted from dav-server (two short lines in practice).
const MAX_PART_HEAD: usize = 4096;

/// Whether `headers` are those of dav-server's multi-range reply.
pub(crate) fn is_dav_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == DAV_CONTENT_TYPE.as_bytes())
}

/// A fresh boundary: 128 random bits, hex, so that no file content can predict it.
pub(crate) fn new_boundary() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("cloudmount-{hex}"))
}

/// Sets the `Content-Type` of a multi-range reply to `boundary` (and drops any
/// `Content-Length`: the re-framed body has another length).
pub(crate) fn set_boundary(headers: &mut HeaderMap, boundary: &str) {
    let value = format!("multipart/byteranges; boundary={boundary}");
    // A boundary from new_boundary() is ASCII letters, digits and '-': always a valid value.
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.remove(header::CONTENT_LENGTH);
}

/// dav-server's multi-range body re-framed with `boundary`.
pub(crate) fn reframed<B>(inner: B, boundary: String) -> RewrittenBody<B, Reframer> {
    RewrittenBody::new(inner, Reframer::new(boundary))
}

#[derive(Debug, PartialEq)]
enum Expect {
    /// A delimiter or the closing delimiter (`first`: none seen yet).
    Delimiter { first: bool },
    /// The part's header lines, up to the empty line.
    PartHead,
    /// This many bytes of file data.
    Data(u64),
    /// Nothing more: the reply was closed, or broke the layout.
    End,
}

/// The streaming re-framer, independent of any body type (unit-testable).
#[derive(Debug)]
pub(crate) struct Reframer {
    boundary: String,
    expect: Expect,
    /// Bytes of a delimiter or part header received so far.
    held: Vec<u8>,
}

impl Reframer {
    pub(crate) fn new(boundary: String) -> Reframer {
        Reframer {
            boundary,
            expect: Expect::Delimiter { first: true },
            held: Vec::new(),
        }
    }

    fn broken(&mut self, what: &str) {
        tracing::error!(
            what,
            "multi-range reply not in dav-server's known layout: reply cut short"
        );
        self.expect = Expect::End;
        self.held.clear();
    }

    /// Handles a complete part header (without its final empty line): writes it with CRLFs and
    /// returns the part's data length.
    fn part_head(&mut self, head: &[u8], out: &mut Vec<u8>) -> Option<u64> {
        let text = std::str::from_utf8(head).ok()?;
        let mut len = None;
        for line in text.split('\n') {
            if line.is_empty() || line.contains('\r') {
                return None;
            }
            if let Some(spec) = line.strip_prefix("Content-Range: bytes ") {
                let (range, _total) = spec.split_once('/')?;
                let (start, end) = range.split_once('-')?;
                let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
                len = Some(end.checked_sub(start)?.checked_add(1)?);
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        len
    }
}

impl Rewriter for Reframer {
    fn process(&mut self, input: &[u8], last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 96);
        let mut rest = input;
        // Data that arrived with a part header, to go round the loop again.
        let mut after_head: Vec<u8>;
        loop {
            match self.expect {
                Expect::End => break,
                Expect::Data(left) => {
                    let n = (rest.len() as u64).min(left) as usize;
                    out.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if n as u64 == left {
                        self.expect = Expect::Delimiter { first: false };
                    } else {
                        self.expect = Expect::Data(left - n as u64);
                        break;
                    }
                }
                Expect::Delimiter { first } => {
                    // Take bytes while they can still become one of the two delimiters.
                    while let Some((&b, tail)) = rest.split_first() {
                        let n = self.held.len();
                        let fits = |d: &[u8]| d.len() > n && d[..n] == self.held[..] && d[n] == b;
                        if !fits(DAV_DELIMITER) && !fits(DAV_CLOSE) {
                            break;
                        }
                        self.held.push(b);
                        rest = tail;
                        if self.held == DAV_DELIMITER || self.held == DAV_CLOSE {
                            break;
                        }
                    }
                    if self.held == DAV_DELIMITER {
                        if !first {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"--");
                        out.extend_from_slice(self.boundary.as_bytes());
                        out.extend_from_slice(b"\r\n");
                        self.held.clear();
                        self.expect = Expect::PartHead;
                    } else if self.held == DAV_CLOSE && !first {
                        out.extend_from_slice(b"\r\n--");
                        out.extend_from_slice(self.boundary.as_bytes());
                        out.extend_from_slice(b"--\r\n");
                        self.held.clear();
                        self.expect = Expect::End;
                    } else if rest.is_empty() && !last {
                        break; // A delimiter cut by the chunk boundary: wait for the rest.
                    } else {
                        self.broken("delimiter");
                    }
                }
                Expect::PartHead => {
                    let start = self.held.len().saturating_sub(1);
                    self.held.extend_from_slice(rest);
                    rest = &[];
                    let Some(end) = self.held[start..]
                        .windows(2)
                        .position(|w| w == b"\n\n")
                        .map(|p| start + p)
                    else {
                        if last || self.held.len() > MAX_PART_HEAD {
                            self.broken("part header");
                        }
                        break;
                    };
                    let held = std::mem::take(&mut self.held);
                    match self.part_head(&held[..end], &mut out) {
                        Some(len) => {
                            self.expect = Expect::Data(len);
                            after_head = held[end + 2..].to_vec();
                            rest = &after_head;
                        }
                        None => self.broken("part header"),
                    }
                }
            }
        }
        if !rest.is_empty() {
            // Only after the end (closing delimiter or a layout surprise): dropped.
            tracing::debug!(
                dropped = rest.len(),
                "bytes after a multi-range reply's end"
            );
        }
        if last && !matches!(self.expect, Expect::End) {
            self.broken("end of body");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dav-server 0.11's multi-range reply of `parts` (start, data) of a file of `total` bytes.
    fn dav_reply(parts: &[(u64, &[u8])], total: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for (start, data) in parts {
            v.extend_from_slice(DAV_DELIMITER);
            let end = start + data.len() as u64 - 1;
            v.extend_from_slice(format!("Content-Range: bytes {start}-{end}/{total}\n").as_bytes());
            v.extend_from_slice(b"Content-Type: text/plain\n\n");
            v.extend_from_slice(data);
        }
        v.extend_from_slice(DAV_CLOSE);
        v
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = Reframer::new("B0UND".into());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(r.process(c, false));
        }
        out.extend(r.process(&[], true));
        out
    }

    // Data that forges dav-server's own delimiters: passed through by count, untouched.
    const A: &[u8] = b"\n--BOUNDARY\nxy";
    const B: &[u8] = b"\n--BOUNDARY--\n\n\n";

    fn want() -> Vec<u8> {
        let mut w = b"--B0UND\r\nContent-Range: bytes 0-13/100\r\nContent-Type: text/plain\r\n\r\n"
            .to_vec();
        w.extend_from_slice(A);
        w.extend_from_slice(
            b"\r\n--B0UND\r\nContent-Range: bytes 50-65/100\r\nContent-Type: text/plain\r\n\r\n",
        );
        w.extend_from_slice(B);
        w.extend_from_slice(b"\r\n--B0UND--\r\n");
        w
    }

    #[test]
    fn reframes_in_one_chunk() {
        let input = dav_reply(&[(0, A), (50, B)], 100);
        assert_eq!(run(&[&input]), want());
    }

    #[test]
    fn reframes_across_every_split() {
        let input = dav_reply(&[(0, A), (50, B)], 100);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = run(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, want(), "split {i} {j}");
            }
        }
    }

    #[test]
    fn a_reply_off_the_layout_is_cut_without_closing() {
        for bad in [
            &b"\n--OTHER\nContent-Range: bytes 0-0/1\n\nx\n--OTHER--\n"[..],
            b"\n--BOUNDARY\nContent-Range: bytes 5-1/9\n\nx\n--BOUNDARY--\n",
            b"\n--BOUNDARY\nContent-Range: bytes 0-0/1\n\nxEXTRA\n--BOUNDARY--\n",
            b"\n--BOUNDARY--\n",
        ] {
            let out = String::from_utf8_lossy(&run(&[bad])).into_owned();
            assert!(!out.contains("--B0UND--"), "{bad:?} gave {out:?}");
        }
        // A body that stops in the middle of a part: no closing delimiter either.
        let input = dav_reply(&[(0, A)], 100);
        let out = run(&[&input[..input.len() - 20]]);
        assert!(!String::from_utf8_lossy(&out).contains("--B0UND--"));
    }

    #[test]
    fn boundaries_are_fresh_and_header_safe() {
        let a = new_boundary().unwrap();
        let b = new_boundary().unwrap();
        assert_ne!(a, b);
        assert!(a.len() <= 70, "RFC 2046 limit");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(DAV_CONTENT_TYPE),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(is_dav_multipart(&h));
        set_boundary(&mut h, &a);
        assert_eq!(
            h[header::CONTENT_TYPE],
            format!("multipart/byteranges; boundary={a}").as_str()
        );
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(!is_dav_multipart(&h));
    }
    /// The parts of a multipart/byteranges `body` split by the boundary of `content_type`, each
    /// as (Content-Range value, data); panics on anything off RFC 2046's layout.
    fn parse(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
        let boundary = content_type
            .strip_prefix("multipart/byteranges; boundary=")
            .expect("multipart content type");
        let delim = format!("\r\n--{boundary}");
        // The first delimiter has no CRLF before it.
        let mut text = b"\r\n".to_vec();
        text.extend_from_slice(body);
        let mut pieces = Vec::new();
        let mut rest = &text[..];
        loop {
            let p = rest
                .windows(delim.len())
                .position(|w| w == delim.as_bytes())
                .expect("delimiter");
            pieces.push(rest[..p].to_vec());
            rest = &rest[p + delim.len()..];
            if rest == b"--\r\n" {
                break;
            }
            rest = rest.strip_prefix(b"\r\n").expect("CRLF after delimiter");
        }
        assert!(pieces.remove(0).is_empty(), "no preamble");
        pieces
            .into_iter()
            .map(|p| {
                let h = p
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .expect("part head");
                let head = std::str::from_utf8(&p[..h]).unwrap();
                let range = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("Content-Range: "))
                    .expect("Content-Range")
                    .to_string();
                (range, p[h + 4..].to_vec())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_server_sends_a_fresh_boundary_and_parsable_parts() {
        let dir = tempfile::tempdir().unwrap();
        // Content that forges dav-server's old delimiter.
        let mut content = b"0123\n--BOUNDARY\n--BOUNDARY--\n".to_vec();
        content.extend((0..200u8).map(|i| b'a' + i % 26));
        std::fs::write(dir.path().join("f.txt"), &content).unwrap();
        let server = crate::server::start(crate::server::ServeConfig {
            root: dir.path().into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: None,
            quota: None,
        })
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}f.txt", server.url());
        let mut boundaries = Vec::new();
        for _ in 0..2 {
            let resp = client
                .get(&url)
                .header("Range", "bytes=2-20,100-109,-5")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            let body = resp.bytes().await.unwrap();
            let len = content.len();
            let parts = parse(&ct, &body);
            assert_eq!(
                parts,
                vec![
                    (format!("bytes 2-20/{len}"), content[2..=20].to_vec()),
                    (format!("bytes 100-109/{len}"), content[100..=109].to_vec()),
                    (
                        format!("bytes {}-{}/{len}", len - 5, len - 1),
                        content[len - 5..].to_vec()
                    ),
                ]
            );
            boundaries.push(ct);
        }
        assert_ne!(
            boundaries[0], boundaries[1],
            "each reply has its own boundary"
        );
        // HEAD announces a boundary too, a fresh one, and no dav-server default.
        let resp = client
            .head(&url)
            .header("Range", "bytes=0-1,5-6")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        let ct = resp.headers()["content-type"].to_str().unwrap();
        assert!(
            ct.starts_with("multipart/byteranges; boundary=cloudmount-"),
            "{ct}"
        );
        assert!(!boundaries.iter().any(|b| b == ct));
        server.shutdown().await;
    }
}
