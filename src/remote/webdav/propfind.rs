//! PROPFIND: the request body we send and the parser for `207 Multi-Status` replies.
//!
//! The parser is namespace-aware (only `DAV:` elements count; elements without a namespace are
//! accepted too, as some servers omit it), takes properties only from `propstat` blocks whose
//! status is 2xx, decodes entities, and never panics: malformed input gives [`ParseError`]. It
//! knows nothing of URLs; hrefs are returned raw and resolved by `path::href_to_path`.

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

/// Body of a PROPFIND for entry metadata.
pub const PROPFIND_ENTRY_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    r#"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/>"#,
    r#"</D:prop></D:propfind>"#
);

/// Body of a PROPFIND for RFC 4331 quota.
pub const PROPFIND_QUOTA_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    r#"<D:resourcetype/><D:quota-available-bytes/><D:quota-used-bytes/>"#,
    r#"</D:prop></D:propfind>"#
);

/// The properties we read, as found in 2xx propstats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub is_collection: bool,
    pub content_length: Option<u64>,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub quota_available: Option<u64>,
    pub quota_used: Option<u64>,
}

/// One `<response>` of a multistatus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResponse {
    pub href: String,
    /// Status of the response element itself (`<response><href/><status/></response>`).
    pub status: Option<u16>,
    pub props: Props,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed PROPFIND reply: {0}")]
pub struct ParseError(pub String);

const DAV_NS: &[u8] = b"DAV:";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum El {
    Multistatus,
    Response,
    Href,
    Propstat,
    Prop,
    Status,
    ResourceType,
    Collection,
    ContentLength,
    LastModified,
    ETag,
    ContentType,
    QuotaAvailable,
    QuotaUsed,
    Other,
}

fn classify(ns: &ResolveResult, local: &[u8]) -> El {
    let dav = match ns {
        ResolveResult::Bound(Namespace(n)) => *n == DAV_NS,
        ResolveResult::Unbound => true,
        ResolveResult::Unknown(_) => false,
    };
    if !dav {
        return El::Other;
    }
    match local {
        b"multistatus" => El::Multistatus,
        b"response" => El::Response,
        b"href" => El::Href,
        b"propstat" => El::Propstat,
        b"prop" => El::Prop,
        b"status" => El::Status,
        b"resourcetype" => El::ResourceType,
        b"collection" => El::Collection,
        b"getcontentlength" => El::ContentLength,
        b"getlastmodified" => El::LastModified,
        b"getetag" => El::ETag,
        b"getcontenttype" => El::ContentType,
        b"quota-available-bytes" => El::QuotaAvailable,
        b"quota-used-bytes" => El::QuotaUsed,
        _ => El::Other,
    }
}

/// Parses `HTTP/1.1 200 OK` into 200.
pub fn parse_status_line(s: &str) -> Option<u16> {
    let mut it = s.split_whitespace();
    let proto = it.next()?;
    if !proto.to_ascii_uppercase().starts_with("HTTP/") {
        return None;
    }
    let code = it.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Parses a multistatus body into its responses, in document order.
pub fn parse_multistatus(body: &[u8]) -> Result<Vec<RawResponse>, ParseError> {
    let mut reader = NsReader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut stack: Vec<El> = Vec::new();
    let mut out = Vec::new();
    let mut saw_multistatus = false;

    let mut cur: Option<RawResponse> = None;
    // Props of the propstat being read, and its status.
    let mut ps_props = Props::default();
    let mut ps_status: Option<u16> = None;
    let mut text = String::new();

    loop {
        let pos = reader.buffer_position();
        let (ns, ev) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| ParseError(format!("near byte {pos}: {e}")))?;
        match ev {
            Event::Start(ref e) => {
                let el = classify(&ns, e.local_name().as_ref());
                if el == El::Multistatus {
                    saw_multistatus = true;
                }
                match (stack.last(), el) {
                    (_, El::Response) => {
                        if cur.is_some() {
                            return Err(ParseError("nested <response>".into()));
                        }
                        cur = Some(RawResponse::default());
                    }
                    (_, El::Propstat) => {
                        ps_props = Props::default();
                        ps_status = None;
                    }
                    (Some(El::ResourceType), El::Collection) => ps_props.is_collection = true,
                    _ => {}
                }
                text.clear();
                stack.push(el);
                if stack.len() > 64 {
                    return Err(ParseError("elements nested too deeply".into()));
                }
            }
            Event::Empty(ref e) => {
                let el = classify(&ns, e.local_name().as_ref());
                if stack.last() == Some(&El::ResourceType) && el == El::Collection {
                    ps_props.is_collection = true;
                }
                if el == El::Multistatus {
                    saw_multistatus = true;
                }
            }
            Event::Text(ref t) => {
                let s = t
                    .unescape()
                    .map_err(|e| ParseError(format!("bad text: {e}")))?;
                text.push_str(&s);
            }
            Event::CData(ref c) => {
                let s = std::str::from_utf8(c.as_ref())
                    .map_err(|_| ParseError("CDATA is not UTF-8".into()))?;
                text.push_str(s);
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| ParseError("unbalanced end tag".into()))?;
                let parent = stack.last().copied();
                let value = text.trim().to_string();
                match (parent, el) {
                    (Some(El::Response), El::Href) => {
                        if let Some(r) = cur.as_mut() {
                            r.href = value;
                        }
                    }
                    (Some(El::Response), El::Status) => {
                        if let Some(r) = cur.as_mut() {
                            r.status = parse_status_line(&value);
                        }
                    }
                    (Some(El::Propstat), El::Status) => ps_status = parse_status_line(&value),
                    (Some(El::Prop), El::ContentLength) => {
                        ps_props.content_length = parse_u64(&value)
                    }
                    (Some(El::Prop), El::LastModified) if !value.is_empty() => {
                        ps_props.last_modified = Some(value)
                    }
                    (Some(El::Prop), El::ETag) if !value.is_empty() => ps_props.etag = Some(value),
                    (Some(El::Prop), El::ContentType) if !value.is_empty() => {
                        ps_props.content_type = Some(value)
                    }
                    (Some(El::Prop), El::QuotaAvailable) => {
                        ps_props.quota_available = parse_u64(&value)
                    }
                    (Some(El::Prop), El::QuotaUsed) => ps_props.quota_used = parse_u64(&value),
                    (_, El::Propstat) => {
                        // A propstat without status is taken as 200 (lenient); others only when 2xx.
                        let ok = ps_status.is_none_or(|s| (200..300).contains(&s));
                        if let (true, Some(r)) = (ok, cur.as_mut()) {
                            merge(&mut r.props, std::mem::take(&mut ps_props));
                        }
                        ps_props = Props::default();
                    }
                    (_, El::Response) => {
                        let r = cur
                            .take()
                            .ok_or_else(|| ParseError("stray </response>".into()))?;
                        if r.href.is_empty() {
                            return Err(ParseError("<response> without <href>".into()));
                        }
                        out.push(r);
                    }
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(ParseError("document ends inside an element".into()));
    }
    if !saw_multistatus {
        return Err(ParseError("no <multistatus> element".into()));
    }
    Ok(out)
}

fn merge(into: &mut Props, from: Props) {
    into.is_collection |= from.is_collection;
    into.content_length = into.content_length.or(from.content_length);
    into.last_modified = into.last_modified.take().or(from.last_modified);
    into.etag = into.etag.take().or(from.etag);
    into.content_type = into.content_type.take().or(from.content_type);
    into.quota_available = into.quota_available.or(from.quota_available);
    into.quota_used = into.quota_used.or(from.quota_used);
}

#[cfg(test)]
mod tests {
    use super::*;

    const APACHE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Sat, 28 Nov 2026 03:00:00 GMT</lp1:getlastmodified>
<lp1:getetag>"1000-5f0"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<D:getcontentlength/>
<D:getcontenttype/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
<D:response xmlns:lp1="DAV:">
<D:href>/dav/a%20b&amp;c.txt</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype/>
<lp1:getcontentlength>12</lp1:getcontentlength>
<lp1:getetag>W/"c-5f1"</lp1:getetag>
<D:getcontenttype>text/plain</D:getcontenttype>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>"#;

    #[test]
    fn parses_apache_style_reply() {
        let r = parse_multistatus(APACHE.as_bytes()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].href, "/dav/");
        assert!(r[0].props.is_collection);
        assert_eq!(r[0].props.etag.as_deref(), Some("\"1000-5f0\""));
        assert_eq!(r[0].props.content_length, None);
        assert_eq!(r[1].href, "/dav/a%20b&c.txt");
        assert!(!r[1].props.is_collection);
        assert_eq!(r[1].props.content_length, Some(12));
        assert_eq!(r[1].props.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn default_namespace_and_other_prefixes() {
        let xml = r#"<multistatus xmlns="DAV:"><response><href>/x/</href><propstat><prop>
            <resourcetype><collection/></resourcetype><quota-available-bytes>100</quota-available-bytes>
            <quota-used-bytes>5</quota-used-bytes></prop><status>HTTP/1.1 200 OK</status></propstat>
            </response></multistatus>"#;
        let r = parse_multistatus(xml.as_bytes()).unwrap();
        assert_eq!(r[0].props.quota_available, Some(100));
        assert_eq!(r[0].props.quota_used, Some(5));
        assert!(r[0].props.is_collection);
    }

    #[test]
    fn foreign_namespace_elements_are_ignored() {
        let xml = r#"<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:response>
            <d:href>/f</d:href><d:propstat><d:prop><oc:getcontentlength>99</oc:getcontentlength>
            <d:getcontentlength>7</d:getcontentlength><oc:resourcetype><oc:collection/></oc:resourcetype>
            </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        let r = parse_multistatus(xml.as_bytes()).unwrap();
        assert_eq!(r[0].props.content_length, Some(7));
        assert!(!r[0].props.is_collection);
    }

    #[test]
    fn entities_and_cdata_are_decoded() {
        let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a&#x20;&lt;b&gt;&#233;</D:href>
            <D:propstat><D:prop><D:getetag><![CDATA["e"]]></D:getetag></D:prop>
            <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let r = parse_multistatus(xml.as_bytes()).unwrap();
        assert_eq!(r[0].href, "/a <b>é");
        assert_eq!(r[0].props.etag.as_deref(), Some("\"e\""));
    }

    #[test]
    fn response_level_status() {
        let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/gone</D:href>
            <D:status>HTTP/1.1 404 Not Found</D:status></D:response></D:multistatus>"#;
        let r = parse_multistatus(xml.as_bytes()).unwrap();
        assert_eq!(r[0].status, Some(404));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            "",
            "<not-xml",
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/x</D:href>",
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:propstat/></D:response></D:multistatus>",
            "<html><body>Login</body></html>",
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>&bogus;</D:href></D:response></D:multistatus>",
            "<D:multistatus xmlns:D=\"DAV:\"></D:response></D:multistatus>",
        ] {
            assert!(parse_multistatus(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.1 404"), Some(404));
        assert_eq!(parse_status_line("garbage"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20x OK"), None);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = parse_multistatus(&data);
            }

            #[test]
            fn mutated_valid_replies_never_panic(
                cut in 0usize..1200,
                pos in 0usize..1200,
                byte in any::<u8>(),
            ) {
                let mut data = super::APACHE.as_bytes().to_vec();
                let p = pos % data.len();
                data[p] = byte;
                data.truncate(cut.max(1).min(data.len()));
                let _ = parse_multistatus(&data);
            }

            #[test]
            fn xmlish_soup_never_panics(parts in proptest::collection::vec(
                prop_oneof![
                    Just("<D:multistatus xmlns:D=\"DAV:\">"), Just("</D:multistatus>"),
                    Just("<D:response>"), Just("</D:response>"), Just("<D:href>"), Just("</D:href>"),
                    Just("<D:propstat>"), Just("</D:propstat>"), Just("<D:prop>"), Just("</D:prop>"),
                    Just("<D:resourcetype>"), Just("</D:resourcetype>"), Just("<D:collection/>"),
                    Just("<D:getcontentlength>"), Just("</D:getcontentlength>"), Just("99999999999999999999999"),
                    Just("<D:status>HTTP/1.1 200 OK</D:status>"), Just("&amp;"), Just("&#xFFFFFF;"),
                    Just("/dav/x"), Just("<![CDATA[x]]>"), Just("<?pi?>"), Just("<!-- c -->"),
                ], 0..40)) {
                let s: String = parts.concat();
                let _ = parse_multistatus(s.as_bytes());
            }
        }
    }
}
