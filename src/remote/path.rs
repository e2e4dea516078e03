//! Remote paths, and the one place where they are percent-encoded and decoded.
//!
//! A [`RemotePath`] is a sequence of decoded names below the remote's base collection, kept as a
//! `/`-joined string without leading or trailing slash (`""` is the base itself). Names are
//! non-empty, not `.` or `..`, and contain neither `/` nor NUL; they are stored byte for byte
//! (no Unicode normalisation: NFC and NFD spellings are different names, as on Linux).
//!
//! [`RemotePath::to_url`] encodes every segment (all but RFC 3986 unreserved characters), and
//! [`href_to_path`] turns an href of a server reply back into a path, refusing anything outside
//! the base (another host, `..`, an encoded `/`).

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use super::RemoteError;

/// Everything but RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest name accepted, in bytes (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A validated path below the remote's base collection.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RemotePath(String);

/// Checks one name; returns the reason it is refused.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not names");
    }
    if name.contains('/') {
        return Err("name contains `/`");
    }
    if name.contains('\0') {
        return Err("name contains NUL");
    }
    if name.len() > NAME_MAX {
        return Err("name longer than 255 bytes");
    }
    Ok(())
}

impl RemotePath {
    /// The base collection itself.
    pub fn root() -> Self {
        RemotePath(String::new())
    }

    /// Parses `a/b/c` (leading, trailing and doubled slashes are ignored).
    pub fn new(path: &str) -> Result<Self, RemoteError> {
        RemotePath::root().join_path(path)
    }

    /// This path with a relative `a/b/c` path below it (each name checked).
    pub fn join_path(&self, rel: &str) -> Result<Self, RemoteError> {
        let mut out = self.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            out = out.join(seg)?;
        }
        Ok(out)
    }

    /// This path with one more name.
    pub fn join(&self, name: &str) -> Result<Self, RemoteError> {
        check_name(name).map_err(|reason| RemoteError::InvalidPath {
            path: format!("{}/{}", self.0, name),
            reason: reason.to_string(),
        })?;
        if self.0.is_empty() {
            Ok(RemotePath(name.to_string()))
        } else {
            Ok(RemotePath(format!("{}/{}", self.0, name)))
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last name, or "" for the root.
    pub fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The parent path; `None` for the root.
    pub fn parent(&self) -> Option<RemotePath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.rfind('/') {
            Some(i) => Some(RemotePath(self.0[..i].to_string())),
            None => Some(RemotePath::root()),
        }
    }

    /// The parent path; the root for the root.
    pub fn parent_or_root(&self) -> RemotePath {
        self.parent().unwrap_or_default()
    }

    /// This path moved along with `from` to `to`: the same place below `to` as it has below
    /// `from` (`to` itself for `from`); `None` when it is not at or below `from`.
    pub fn rebase(&self, from: &RemotePath, to: &RemotePath) -> Option<RemotePath> {
        if !self.starts_with(from) {
            return None;
        }
        let rest = self.0[from.0.len()..].trim_start_matches('/');
        Some(match (to.0.is_empty(), rest.is_empty()) {
            (_, true) => to.clone(),
            (true, false) => RemotePath(rest.to_string()),
            (false, false) => RemotePath(format!("{}/{rest}", to.0)),
        })
    }

    /// The decoded names, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The path as `a/b/c` (decoded).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `other` or below it.
    pub fn starts_with(&self, other: &RemotePath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The URL of this path below `base` (whose path must end with `/`). Collections get a
    /// trailing slash when `collection` is true. This is the only place paths are encoded.
    pub fn to_url(&self, base: &Url, collection: bool) -> Url {
        let mut s = String::with_capacity(base.as_str().len() + self.0.len() * 2 + 1);
        s.push_str(base.as_str());
        debug_assert!(s.ends_with('/'), "base URL must end with /");
        let mut first = true;
        for seg in self.segments() {
            if !first {
                s.push('/');
            }
            first = false;
            s.extend(utf8_percent_encode(seg, SEGMENT));
        }
        if collection && !self.0.is_empty() {
            s.push('/');
        }
        // The input is a valid URL followed by unreserved characters and %XX escapes only.
        Url::parse(&s).expect("encoded remote path is a valid URL")
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({:?})", self.0)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Normalises a base URL: http(s) only, no query or fragment, path ending with `/`.
pub fn normalize_base(url: &str) -> Result<Url, RemoteError> {
    let mut u =
        Url::parse(url).map_err(|e| RemoteError::Config(format!("bad URL {url:?}: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(RemoteError::Config(format!(
            "URL {url:?} must start with http:// or https://"
        )));
    }
    if u.host_str().is_none() {
        return Err(RemoteError::Config(format!("URL {url:?} has no host")));
    }
    u.set_query(None);
    u.set_fragment(None);
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

/// Decoded path segments of an encoded URL path; refuses `..`, encoded `/` and invalid UTF-8.
fn decode_segments(encoded_path: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    for seg in encoded_path.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        if seg == ".." {
            return Err("href contains `..`");
        }
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| "href is not UTF-8 once decoded")?;
        if decoded == ".." || decoded == "." {
            return Err("href contains an encoded `.` or `..` segment");
        }
        if decoded.contains('/') {
            return Err("href contains an encoded `/` inside a name");
        }
        if decoded.contains('\0') {
            return Err("href contains NUL");
        }
        out.push(decoded.into_owned());
    }
    Ok(out)
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Turns an href from a server reply into a path below `base`.
///
/// Accepts absolute URLs on the same origin, absolute paths, and paths relative to `request`
/// (the URL the reply answers). Raw `?` and `#` are taken as part of names (some servers do not
/// encode them). Anything outside `base` is an error, never followed.
pub fn href_to_path(base: &Url, request: &Url, href: &str) -> Result<RemotePath, String> {
    let href = href.trim();
    if href.is_empty() {
        return Err("empty href".into());
    }
    let lower = href.get(..8).unwrap_or(href).to_ascii_lowercase();
    let path_part: String = if lower.starts_with("http://") || lower.starts_with("https://") {
        let scheme_end = href.find("://").expect("checked above");
        let scheme = href[..scheme_end].to_ascii_lowercase();
        let rest = &href[scheme_end + 3..];
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // Compare origin: scheme, host, port.
        let parsed = Url::parse(&format!("{scheme}://{authority}/"))
            .map_err(|e| format!("href {href:?} has a bad authority: {e}"))?;
        let same = parsed.scheme() == base.scheme()
            && parsed.host_str().map(|h| h.to_ascii_lowercase())
                == base.host_str().map(|h| h.to_ascii_lowercase())
            && parsed.port().or(default_port(parsed.scheme()))
                == base.port().or(default_port(base.scheme()));
        if !same {
            return Err(format!("href {href:?} points to another server"));
        }
        path.to_string()
    } else if href.starts_with('/') {
        href.to_string()
    } else {
        let req = request.path();
        let dir = &req[..req.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{dir}{href}")
    };
    let segs = decode_segments(&path_part).map_err(|r| format!("{r}: {href:?}"))?;
    let base_segs =
        decode_segments(base.path()).map_err(|r| format!("base URL is unusable: {r}"))?;
    if segs.len() < base_segs.len() || segs[..base_segs.len()] != base_segs[..] {
        return Err(format!("href {href:?} is outside the base {}", base.path()));
    }
    let mut out = RemotePath::root();
    for s in &segs[base_segs.len()..] {
        out = out.join(s).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        normalize_base("http://127.0.0.1:8080/dav/my%20files").unwrap()
    }

    #[test]
    fn encode_decode_round_trip_for_odd_names() {
        let b = base();
        for name in [
            "a b",
            "100%",
            "#hash",
            "what?",
            "a&b+c",
            "it's",
            "\"q\"",
            "é",
            "e\u{301}",
            "😀",
            "中文",
            "semi;colon",
            "x=y",
            "[br]",
            "@at",
            "~t",
            "a,b",
        ] {
            let p = RemotePath::root().join("dir").unwrap().join(name).unwrap();
            let url = p.to_url(&b, false);
            let got = href_to_path(&b, &b, url.as_str()).unwrap();
            assert_eq!(got, p, "absolute URL for {name:?}");
            let got = href_to_path(&b, &b, url.path()).unwrap();
            assert_eq!(got, p, "absolute path for {name:?}");
        }
    }

    #[test]
    fn long_name() {
        let name = "x".repeat(255);
        let p = RemotePath::new(&name).unwrap();
        let b = base();
        assert_eq!(href_to_path(&b, &b, p.to_url(&b, false).path()).unwrap(), p);
        assert!(RemotePath::new(&"x".repeat(256)).is_err());
    }

    #[test]
    fn collections_get_trailing_slash() {
        let b = base();
        let p = RemotePath::new("a/b").unwrap();
        assert_eq!(p.to_url(&b, true).path(), "/dav/my%20files/a/b/");
        assert_eq!(
            RemotePath::root().to_url(&b, true).path(),
            "/dav/my%20files/"
        );
    }

    #[test]
    fn base_spelled_differently_still_matches() {
        let b = base();
        // Server returns the base path unencoded-where-possible or with different escapes.
        assert_eq!(
            href_to_path(&b, &b, "/dav/my files/x").unwrap(),
            RemotePath::new("x").unwrap()
        );
        assert_eq!(
            href_to_path(&b, &b, "/%64av/my%20files/x/").unwrap(),
            RemotePath::new("x").unwrap()
        );
        assert_eq!(
            href_to_path(&b, &b, "HTTP://127.0.0.1:8080/dav/my%20files/").unwrap(),
            RemotePath::root()
        );
    }

    #[test]
    fn relative_hrefs_resolve_against_request() {
        let b = base();
        let req = RemotePath::new("sub").unwrap().to_url(&b, true);
        assert_eq!(
            href_to_path(&b, &req, "child%20x").unwrap(),
            RemotePath::new("sub/child x").unwrap()
        );
    }

    #[test]
    fn hrefs_outside_base_are_refused() {
        let b = base();
        for bad in [
            "http://evil.example/dav/my%20files/x",
            "http://127.0.0.1:8081/dav/my%20files/x",
            "https://127.0.0.1:8080/dav/my%20files/x",
            "/dav/other/x",
            "/dav/",
            "/dav/my%20files/../../etc/passwd",
            "/dav/my%20files/%2e%2e/x",
            "/dav/my%20files/a%2Fb",
            "/dav/my%20files/%ff",
            "",
        ] {
            assert!(href_to_path(&b, &b, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn raw_query_and_hash_chars_are_names() {
        let b = base();
        assert_eq!(
            href_to_path(&b, &b, "/dav/my%20files/a?b#c").unwrap(),
            RemotePath::new("a?b#c").unwrap()
        );
    }

    #[test]
    fn path_helpers() {
        let p = RemotePath::new("/a//b/c/").unwrap();
        assert_eq!(p.as_str(), "a/b/c");
        assert_eq!(p.name(), "c");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert!(p.starts_with(&RemotePath::new("a/b").unwrap()));
        assert!(!p.starts_with(&RemotePath::new("a/bc").unwrap()));
        assert!(RemotePath::new("a/../b").is_err());
        assert!(RemotePath::root().parent().is_none());
        assert_eq!(p.parent_or_root().as_str(), "a/b");
        assert!(RemotePath::new("a").unwrap().parent_or_root().is_root());
        assert!(RemotePath::root().parent_or_root().is_root());
    }

    #[test]
    fn rebase_moves_paths_at_or_below_only() {
        let p = |s: &str| RemotePath::new(s).unwrap();
        let r = |path: &str, from: &str, to: &str| {
            p(path)
                .rebase(&p(from), &p(to))
                .map(|x| x.as_str().to_string())
        };
        assert_eq!(r("a/b/c", "a/b", "x").as_deref(), Some("x/c"));
        assert_eq!(r("a/b", "a/b", "x/y").as_deref(), Some("x/y"));
        assert_eq!(r("a/b/c", "a", "").as_deref(), Some("b/c"));
        assert_eq!(r("a/b", "", "x").as_deref(), Some("x/a/b"));
        assert_eq!(r("a/bc", "a/b", "x"), None);
        assert_eq!(r("a", "a/b", "x"), None);
    }
}
