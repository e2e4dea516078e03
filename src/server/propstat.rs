//! Completes the answers to PROPFIND requests that name their properties (`<D:prop>`).
//!
//! dav-server leaves out every requested property it cannot answer, where RFC 4918 §9.1 wants
//! each one in a `propstat` with `404 Not Found` (clients tell "no such property" from "the
//! server ignored my request" that way; litmus warns). It also lists a resource's dead
//! properties twice when one of them is requested. [`PropstatFixer`] rewrites the multistatus
//! on the fly, one `<D:response>` at a time: duplicates are dropped and a 404 propstat naming
//! the missing properties is added.

use super::rewrite::{Rewriter, RewrittenBody};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::collections::HashSet;

/// A property name: namespace (none for `xmlns=""`) and local name.
pub(crate) type PropName = (Option<String>, String);

const DAV: &[u8] = b"DAV:";
const RESPONSE_OPEN: &[u8] = b"<D:response>";
const RESPONSE_CLOSE: &[u8] = b"</D:response>";
/// The root element as dav-server writes it, to parse one response on its own.
const ROOT_OPEN: &[u8] = b"<D:multistatus xmlns:D=\"DAV:\">";
const ROOT_CLOSE: &[u8] = b"</D:multistatus>";

fn name_of(ns: &ResolveResult<'_>, local: &[u8]) -> Option<PropName> {
    let ns = match ns {
        ResolveResult::Bound(ns) => Some(String::from_utf8(ns.as_ref().to_vec()).ok()?),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(_) => return None,
    };
    Some((ns, String::from_utf8(local.to_vec()).ok()?))
}

fn is_dav(ns: &ResolveResult<'_>, local: &[u8], want: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == DAV) && local == want
}

/// The properties a PROPFIND body names, when it is a `<D:prop>` request (not `allprop`,
/// `propname` or an empty body, which are answered as they are).
pub(crate) fn requested(body: &[u8]) -> Option<Vec<PropName>> {
    let mut reader = NsReader::from_reader(body);
    let mut depth = 0usize;
    let mut in_prop = false;
    let mut names = Vec::new();
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth == 2 && is_dav(&ns, e.local_name().as_ref(), b"prop") {
                    in_prop = true;
                } else if depth == 3 && in_prop {
                    names.push(name_of(&ns, e.local_name().as_ref())?);
                }
            }
            Event::Empty(e) if depth == 2 && in_prop => {
                names.push(name_of(&ns, e.local_name().as_ref())?);
            }
            Event::End(_) => {
                if depth == 2 {
                    in_prop = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (!names.is_empty()).then_some(names)
}

/// The streaming rewriter.
#[derive(Debug)]
pub(crate) struct PropstatFixer {
    wanted: Vec<PropName>,
    buf: Vec<u8>,
}

impl PropstatFixer {
    pub(crate) fn new(wanted: Vec<PropName>) -> PropstatFixer {
        PropstatFixer {
            wanted,
            buf: Vec::new(),
        }
    }

    /// Rewrites the next chunk; `last` flushes everything held back.
    pub(crate) fn process(&mut self, input: &[u8], last: bool) -> Vec<u8> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::with_capacity(self.buf.len() + 64);
        let mut done = 0;
        while let Some(close) = find(&self.buf[done..], RESPONSE_CLOSE) {
            let end = done + close + RESPONSE_CLOSE.len();
            match find(&self.buf[done..end], RESPONSE_OPEN) {
                Some(open) => {
                    out.extend_from_slice(&self.buf[done..done + open]);
                    out.extend_from_slice(&self.fix_response(&self.buf[done + open..end]));
                }
                None => out.extend_from_slice(&self.buf[done..end]),
            }
            done = end;
        }
        if last {
            out.extend_from_slice(&self.buf[done..]);
            self.buf.clear();
        } else {
            self.buf.drain(..done);
        }
        out
    }

    /// One `<D:response>…</D:response>`, with duplicate properties dropped and the missing ones
    /// added in a 404 propstat. Left as it is if it does not parse.
    fn fix_response(&self, unit: &[u8]) -> Vec<u8> {
        let mut doc = ROOT_OPEN.to_vec();
        doc.extend_from_slice(unit);
        doc.extend_from_slice(ROOT_CLOSE);
        let Some(props) = prop_spans(&doc) else {
            return unit.to_vec();
        };
        let mut seen = HashSet::new();
        let mut drop = Vec::new();
        for (name, span) in props {
            if !seen.insert(name) {
                drop.push(span);
            }
        }
        let mut out = Vec::with_capacity(unit.len() + 128);
        let mut at = ROOT_OPEN.len();
        for span in drop {
            out.extend_from_slice(&doc[at..span.0]);
            at = span.1;
        }
        let body_end = doc.len() - ROOT_CLOSE.len() - RESPONSE_CLOSE.len();
        out.extend_from_slice(&doc[at..body_end]);
        let missing: Vec<&PropName> = self.wanted.iter().filter(|w| !seen.contains(*w)).collect();
        if !missing.is_empty() {
            out.extend_from_slice(b"<D:propstat><D:prop>");
            for (i, (ns, local)) in missing.iter().enumerate() {
                match ns {
                    Some(ns) if ns.as_bytes() == DAV => {
                        out.extend_from_slice(format!("<D:{local}/>").as_bytes())
                    }
                    Some(ns) => out.extend_from_slice(
                        format!("<P{i}:{local} xmlns:P{i}=\"{}\"/>", escape_attr(ns)).as_bytes(),
                    ),
                    None => out.extend_from_slice(format!("<{local} xmlns=\"\"/>").as_bytes()),
                }
            }
            out.extend_from_slice(
                b"</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>",
            );
        }
        out.extend_from_slice(RESPONSE_CLOSE);
        out
    }
}

impl Rewriter for PropstatFixer {
    fn process(&mut self, input: &[u8], last: bool) -> Vec<u8> {
        PropstatFixer::process(self, input, last)
    }
}

/// A response body passed through [`PropstatFixer`].
pub(crate) type PropstatBody<B> = RewrittenBody<B, PropstatFixer>;

/// `inner` with the properties asked for and missing answered 404 (see [`PropstatFixer`]).
pub(crate) fn fixed<B>(inner: B, wanted: Vec<PropName>) -> PropstatBody<B> {
    RewrittenBody::new(inner, PropstatFixer::new(wanted))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// The properties in the `D:prop` elements of a parsed response document, with their byte
/// spans in it.
fn prop_spans(doc: &[u8]) -> Option<Vec<(PropName, (usize, usize))>> {
    let mut reader = NsReader::from_reader(doc);
    // Elements: multistatus (1) / response (2) / propstat (3) / prop (4) / property (5).
    let mut depth = 0usize;
    let mut in_prop = false;
    let mut open: Option<(PropName, usize)> = None;
    let mut spans = Vec::new();
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, event) = reader.read_resolved_event().ok()?;
        // Owned facts about the element, so that the reader can be asked its position.
        let (name, is_prop) = match &event {
            Event::Start(e) | Event::Empty(e) => (
                name_of(&ns, e.local_name().as_ref()),
                is_dav(&ns, e.local_name().as_ref(), b"prop"),
            ),
            _ => (None, false),
        };
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(_) => {
                depth += 1;
                if depth == 4 {
                    in_prop = is_prop;
                } else if depth == 5 && in_prop {
                    open = Some((name?, before));
                }
            }
            Event::Empty(_) if depth == 4 && in_prop => {
                spans.push((name?, (before, after)));
            }
            Event::End(_) => {
                if depth == 5 {
                    if let Some((name, start)) = open.take() {
                        spans.push((name, (start, after)));
                    }
                } else if depth == 4 {
                    in_prop = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_requested_names() {
        let body = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z">
            <D:prop><Z:color/><D:getetag></D:getetag><x xmlns=""/></D:prop></D:propfind>"#;
        assert_eq!(
            requested(body).unwrap(),
            [
                (Some("urn:z".into()), "color".into()),
                (Some("DAV:".into()), "getetag".into()),
                (None, "x".into()),
            ]
        );
        assert_eq!(requested(b""), None);
        let all = br#"<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;
        assert_eq!(requested(all), None);
    }

    const ANSWER: &str = concat!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#,
        r#"<D:response><D:href>/</D:href><D:propstat><D:prop><D:getetag>"e1"</D:getetag></D:prop>"#,
        r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#,
        r#"<D:response><D:href>/f</D:href><D:propstat><D:prop><Z:color xmlns:Z="urn:z">blue</Z:color>"#,
        r#"<D:getetag>"e2"</D:getetag><Z:color xmlns:Z="urn:z">blue</Z:color></D:prop>"#,
        r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
    );

    fn fixed(split: usize) -> String {
        let wanted = requested(
            br#"<D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:color/><D:getetag/><x xmlns=""/></D:prop></D:propfind>"#,
        )
        .unwrap();
        let mut f = PropstatFixer::new(wanted);
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = ANSWER.as_bytes().chunks(split).collect();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(f.process(c, i + 1 == chunks.len()));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn missing_properties_get_a_404_and_duplicates_go() {
        let want = concat!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#,
            r#"<D:response><D:href>/</D:href><D:propstat><D:prop><D:getetag>"e1"</D:getetag></D:prop>"#,
            r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"#,
            r#"<D:propstat><D:prop><P0:color xmlns:P0="urn:z"/><x xmlns=""/></D:prop>"#,
            r#"<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response>"#,
            r#"<D:response><D:href>/f</D:href><D:propstat><D:prop><Z:color xmlns:Z="urn:z">blue</Z:color>"#,
            r#"<D:getetag>"e2"</D:getetag></D:prop>"#,
            r#"<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"#,
            r#"<D:propstat><D:prop><x xmlns=""/></D:prop>"#,
            r#"<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response></D:multistatus>"#
        );
        for split in [1, 5, 13, 100, ANSWER.len()] {
            assert_eq!(fixed(split), want, "split {split}");
        }
    }
}
