//! RFC 4918 rules dav-server does not enforce: checked on a request before dav-server sees it,
//! or fixed on its answer.
//!
//! - PROPFIND `Depth`: missing or `infinity` is refused with 403 and a
//!   `<D:propfind-finite-depth/>` precondition (RFC 4918 §9.1, as Apache does: a listing of a
//!   whole tree is a cheap way to make a server work without bound); anything but `0`, `1` or
//!   `infinity` is 400.
//! - COPY/MOVE `Destination` on another server (host or port not the request's `Host`): 502
//!   Bad Gateway (§9.8.4, §9.9.4). Behind a reverse proxy, the proxy must pass the original
//!   `Host` on.
//! - `Allow` of a collection lists GET and HEAD (dav-server answers those with an HTML index but
//!   leaves them out), and that of any existing resource PROPPATCH.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// A request refused before dav-server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// An RFC 4918 `DAV:error` body, when the refusal has a named precondition.
    pub body: Option<&'static str>,
    pub reason: &'static str,
}

const FINITE_DEPTH: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
    <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n";

/// Checks the method and headers of a request.
pub(crate) fn check(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    match method.as_str() {
        "PROPFIND" => check_propfind_depth(headers),
        "COPY" | "MOVE" => check_destination_host(headers),
        _ => Ok(()),
    }
}

fn check_propfind_depth(headers: &HeaderMap) -> Result<(), Refusal> {
    let infinite = Refusal {
        status: StatusCode::FORBIDDEN,
        body: Some(FINITE_DEPTH),
        reason: "PROPFIND of infinite depth",
    };
    let mut values = headers.get_all("depth").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key("depth") {
            Err(bad_depth())
        } else {
            // No Depth header means infinity (RFC 4918 §9.1).
            Err(infinite)
        };
    };
    match value.as_bytes().trim_ascii() {
        b"0" | b"1" => Ok(()),
        v if v.eq_ignore_ascii_case(b"infinity") => Err(infinite),
        _ => Err(bad_depth()),
    }
}

fn bad_depth() -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: None,
        reason: "invalid Depth header",
    }
}

fn check_destination_host(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(dest) = headers
        .get("destination")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return Ok(()); // dav-server answers 400
    };
    if dest.starts_with('/') {
        return Ok(()); // a path on this server
    }
    let Ok(url) = url::Url::parse(dest) else {
        return Ok(()); // dav-server answers 400
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Ok(()); // nothing to compare with (HTTP/1.0)
    };
    let Ok(ours) = host.parse::<http::uri::Authority>() else {
        return Ok(());
    };
    let same_host = url
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(ours.host()));
    let same_port = match ours.port_u16() {
        Some(port) => url.port_or_known_default() == Some(port),
        // Host without a port: the scheme's default port, whichever the scheme.
        None => url.port().is_none(),
    };
    if same_host && same_port && matches!(url.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(Refusal {
            status: StatusCode::BAD_GATEWAY,
            body: None,
            reason: "Destination on another server",
        })
    }
}

/// Fixes the `Allow` header of an OPTIONS answer on an existing resource (dav-server lists
/// PROPFIND for it): a collection also allows GET and HEAD (an HTML index), and every resource
/// PROPPATCH, which dav-server leaves out.
pub(crate) fn fix_allow(headers: &mut HeaderMap) {
    let Some(allow) = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    if !methods.contains(&"PROPFIND") {
        return;
    }
    let mut fixed = vec!["OPTIONS"];
    if !methods.contains(&"GET") {
        fixed.extend(["GET", "HEAD"]);
    }
    for m in methods
        .iter()
        .filter(|m| **m != "OPTIONS" && **m != "PROPPATCH")
    {
        fixed.push(m);
        if *m == "PROPFIND" {
            fixed.push("PROPPATCH");
        }
    }
    if let Ok(v) = HeaderValue::from_str(&fixed.join(",")) {
        headers.insert(header::ALLOW, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn propfind(pairs: &[(&'static str, &str)]) -> Option<StatusCode> {
        check(&Method::from_bytes(b"PROPFIND").unwrap(), &headers(pairs))
            .err()
            .map(|r| r.status)
    }

    #[test]
    fn propfind_depth() {
        assert_eq!(propfind(&[("depth", "0")]), None);
        assert_eq!(propfind(&[("depth", "1")]), None);
        assert_eq!(propfind(&[("depth", " 1 ")]), None);
        assert_eq!(propfind(&[]), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            propfind(&[("depth", "Infinity")]),
            Some(StatusCode::FORBIDDEN)
        );
        for bad in ["2", "-1", "", "one", "0,1"] {
            assert_eq!(
                propfind(&[("depth", bad)]),
                Some(StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        assert_eq!(
            propfind(&[("depth", "0"), ("depth", "1")]),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    fn copy(host: &str, dest: &str) -> Option<StatusCode> {
        check(
            &Method::from_bytes(b"COPY").unwrap(),
            &headers(&[("host", host), ("destination", dest)]),
        )
        .err()
        .map(|r| r.status)
    }

    #[test]
    fn destination_on_another_server_is_502() {
        let gw = Some(StatusCode::BAD_GATEWAY);
        assert_eq!(copy("127.0.0.1:8080", "http://127.0.0.1:8080/b"), None);
        assert_eq!(copy("127.0.0.1:8080", "/b"), None);
        assert_eq!(copy("Example.com", "https://example.com/b"), None);
        assert_eq!(copy("example.com", "http://example.com:80/b"), None);
        assert_eq!(copy("example.com:80", "http://example.com/b"), None);
        assert_eq!(copy("127.0.0.1:8080", "http://127.0.0.1:8081/b"), gw);
        assert_eq!(copy("127.0.0.1:8080", "http://evil.example:8080/b"), gw);
        assert_eq!(copy("example.com", "http://example.com:8080/b"), gw);
        assert_eq!(copy("example.com", "ftp://example.com/b"), gw);
    }

    #[test]
    fn allow_of_a_collection_lists_get() {
        let mut h = headers(&[("allow", "OPTIONS,PROPFIND,COPY,MOVE,DELETE,LOCK,UNLOCK")]);
        fix_allow(&mut h);
        assert_eq!(
            h.get("allow").unwrap(),
            "OPTIONS,GET,HEAD,PROPFIND,PROPPATCH,COPY,MOVE,DELETE,LOCK,UNLOCK"
        );
        let file = "HEAD,GET,PATCH,PUT,OPTIONS,PROPFIND,COPY,MOVE,DELETE,LOCK,UNLOCK";
        let mut h = headers(&[("allow", file)]);
        fix_allow(&mut h);
        assert_eq!(
            h.get("allow").unwrap(),
            "OPTIONS,HEAD,GET,PATCH,PUT,PROPFIND,PROPPATCH,COPY,MOVE,DELETE,LOCK,UNLOCK"
        );
        let unmapped = "OPTIONS,MKCOL,PUT,LOCK";
        let mut h = headers(&[("allow", unmapped)]);
        fix_allow(&mut h);
        assert_eq!(h.get("allow").unwrap(), unmapped);
    }
}
