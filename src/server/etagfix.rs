//! Quotes `getetag` values in PROPFIND answers.
//!
//! dav-server 0.11 sends the `ETag` header as an entity-tag (`"a1-2b-3c"`, quoted, as HTTP
//! requires) but writes the PROPFIND `DAV:getetag` property from the same value *without* the
//! quotes (`<D:getetag>a1-2b-3c</D:getetag>`). RFC 4918 §15.6 defines `getetag` as the
//! entity-tag, quotes included, and a client comparing a listing's ETag with a GET's must see the
//! same string. The property is built inside dav-server with no hook to change it, so the
//! response body is rewritten on the fly: a quote is inserted after `<D:getetag>` and before
//! `</D:getetag>`, unless the value already starts with a quote (in case a later dav-server
//! fixes this). Streaming, with a carry-over of at most a tag's length between chunks.

use super::rewrite::{Rewriter, RewrittenBody};

const OPEN: &[u8] = b"<D:getetag>";
const CLOSE: &[u8] = b"</D:getetag>";

/// The streaming rewriter, independent of any body type (unit-testable).
#[derive(Debug, Default)]
pub(crate) struct EtagQuoter {
    carry: Vec<u8>,
    /// Inside a `getetag` element to which we added an opening quote.
    quoting: bool,
}

impl Rewriter for EtagQuoter {
    /// Rewrites the next chunk; `last` flushes everything held back.
    fn process(&mut self, input: &[u8], last: bool) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(input);
        let mut out = Vec::with_capacity(data.len() + 8);
        let mut i = 0;
        while i < data.len() {
            let Some(off) = data[i..].iter().position(|b| *b == b'<') else {
                out.extend_from_slice(&data[i..]);
                break;
            };
            let p = i + off;
            out.extend_from_slice(&data[i..p]);
            let rest = &data[p..];
            if rest.starts_with(OPEN) {
                match rest.get(OPEN.len()) {
                    // Need one byte after the tag to know whether the value is already quoted.
                    None if !last => {
                        self.carry = rest.to_vec();
                        break;
                    }
                    Some(b'"') | Some(b'&') | Some(b'<') | None => {}
                    Some(_) => self.quoting = true,
                }
                out.extend_from_slice(OPEN);
                if self.quoting {
                    out.push(b'"');
                }
                i = p + OPEN.len();
            } else if rest.starts_with(CLOSE) {
                if self.quoting {
                    out.push(b'"');
                    self.quoting = false;
                }
                out.extend_from_slice(CLOSE);
                i = p + CLOSE.len();
            } else if !last && (OPEN.starts_with(rest) || CLOSE.starts_with(rest)) {
                // A tag cut by the chunk boundary: wait for the rest.
                self.carry = rest.to_vec();
                break;
            } else {
                out.push(b'<');
                i = p + 1;
            }
        }
        out
    }
}

/// A response body with its PROPFIND ETags quoted.
pub(crate) type EtagQuotedBody<B> = RewrittenBody<B, EtagQuoter>;

/// `inner` with its ETags quoted.
pub(crate) fn quoted<B>(inner: B) -> EtagQuotedBody<B> {
    RewrittenBody::new(inner, EtagQuoter::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> String {
        let mut q = EtagQuoter::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(q.process(c, false));
        }
        out.extend(q.process(&[], true));
        String::from_utf8(out).unwrap()
    }

    const XML: &str = "<D:prop><D:getetag>a1-2b-3c</D:getetag><D:getcontentlength>5</D:getcontentlength></D:prop>";
    const WANT: &str = "<D:prop><D:getetag>\"a1-2b-3c\"</D:getetag><D:getcontentlength>5</D:getcontentlength></D:prop>";

    #[test]
    fn quotes_in_one_chunk() {
        assert_eq!(run(&[XML.as_bytes()]), WANT);
    }

    #[test]
    fn quotes_across_every_split() {
        let b = XML.as_bytes();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                assert_eq!(run(&[&b[..i], &b[i..j], &b[j..]]), WANT, "split {i} {j}");
            }
        }
    }

    #[test]
    fn leaves_quoted_and_empty_values() {
        let already = "<D:getetag>\"x\"</D:getetag>";
        assert_eq!(run(&[already.as_bytes()]), already);
        let entity = "<D:getetag>&quot;x&quot;</D:getetag>";
        assert_eq!(run(&[entity.as_bytes()]), entity);
        let empty = "<D:getetag/><D:getetag></D:getetag>";
        assert_eq!(run(&[empty.as_bytes()]), empty);
        let other = "<a><D:getetagx>1</D:getetagx> 1 < 2";
        assert_eq!(run(&[other.as_bytes()]), other);
    }

    #[test]
    fn many_responses() {
        let one = "<D:response><D:getetag>1</D:getetag></D:response>";
        let want = "<D:response><D:getetag>\"1\"</D:getetag></D:response>";
        let input = one.repeat(100);
        let bytes = input.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(run(&chunks), want.repeat(100));
    }
}
