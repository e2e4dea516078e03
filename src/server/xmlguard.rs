//! A cheap check of XML request bodies before dav-server parses them.
//!
//! dav-server parses PROPFIND, PROPPATCH and LOCK bodies into a tree with a recursive parser: a
//! body of a few thousand nested elements (14 KB) overflows a worker thread's stack and aborts the
//! whole process. This module walks the body with quick-xml's streaming reader, which keeps no
//! recursion, and refuses it when elements nest deeper than [`MAX_DEPTH`], when it is not
//! well-formed, or when it carries a document type declaration (no WebDAV body needs one, and
//! entity declarations are the other classic way to make a parser work without bound).

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest element nesting accepted. Real WebDAV bodies nest 4 or 5 levels (`propertyupdate` /
/// `set` / `prop` / a property / its value); dead property values may nest a little more.
pub(crate) const MAX_DEPTH: usize = 64;

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum XmlRefused {
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a document type declaration")]
    DocType,
    #[error("not well-formed XML: {0}")]
    Malformed(String),
}

/// Checks a request body (already bounded in size). An empty body passes.
pub(crate) fn check(body: &[u8]) -> Result<(), XmlRefused> {
    let mut reader = Reader::from_reader(body);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlRefused::TooDeep);
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::DocType(_)) => return Err(XmlRefused::DocType),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(XmlRefused::Malformed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        let mut s = String::from(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:">"#);
        for _ in 0..n {
            s.push_str("<D:prop>");
        }
        for _ in 0..n {
            s.push_str("</D:prop>");
        }
        s.push_str("</D:propfind>");
        s
    }

    #[test]
    fn ordinary_bodies_pass() {
        assert_eq!(check(b""), Ok(()));
        assert_eq!(check(b"   \r\n"), Ok(()));
        let propfind = br#"<?xml version="1.0" encoding="utf-8"?>
            <D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"#;
        assert_eq!(check(propfind), Ok(()));
        let lock = br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>
            </D:lockscope><D:locktype><D:write/></D:locktype><D:owner><![CDATA[<x>]]>
            <!-- a comment --></D:owner></D:lockinfo>"#;
        assert_eq!(check(lock), Ok(()));
        assert_eq!(check(nested(MAX_DEPTH - 1).as_bytes()), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        assert_eq!(
            check(nested(MAX_DEPTH).as_bytes()),
            Err(XmlRefused::TooDeep)
        );
        // Far deeper than any stack could take recursively; unclosed, too.
        let deep = "<a>".repeat(1_000_000);
        assert_eq!(check(deep.as_bytes()), Err(XmlRefused::TooDeep));
    }

    #[test]
    fn doctype_and_malformed_bodies_are_refused() {
        let dtd = br#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;</d>"#;
        assert_eq!(check(dtd), Err(XmlRefused::DocType));
        assert!(matches!(
            check(b"<a><b></a></b>"),
            Err(XmlRefused::Malformed(_))
        ));
    }
}
