//! HTTP authentication: Basic and Digest (RFC 7616: MD5, MD5-sess, SHA-256, SHA-256-sess;
//! qop=auth; nc, cnonce and opaque echoed).
//!
//! The client learns the scheme from one cheap challenge request and then signs every request
//! preemptively, so a streamed body is never sent unsigned. A `401` carrying `stale=true` only
//! means the nonce expired: the caller takes the new challenge and signs again, without counting
//! it as a wrong password. The password is never logged (`Credentials` has a redacting `Debug`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// User name and password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case scheme name (`basic`, `digest`, ...).
    pub scheme: String,
    /// Parameters with lower-case names, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < s.len() && !matches!(s[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        String::from_utf8_lossy(&s[start..*i]).into_owned()
    };
    loop {
        skip_ws(&mut i);
        if i >= s.len() {
            break;
        }
        let tok = token(&mut i);
        if tok.is_empty() {
            // Unexpected character: skip it.
            i += 1;
            continue;
        }
        // Look past spaces for '=' to tell a parameter from a new scheme.
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            // token68 (`Basic abc==`) is treated as a parameter-less value; fine for us.
            i = j + 1;
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    v.push(s[i]);
                    i += 1;
                }
                i += 1; // closing quote (or end)
                String::from_utf8_lossy(&v).into_owned()
            } else {
                token(&mut i)
            };
            if let Some(ch) = out.last_mut() {
                ch.params.push((tok.to_ascii_lowercase(), value));
            }
        } else {
            out.push(Challenge {
                scheme: tok.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// Digest hash algorithms, in order of preference (strongest last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.map(|s| s.to_ascii_uppercase()).as_deref() {
            None | Some("MD5") => Some(DigestAlgorithm::Md5),
            Some("MD5-SESS") => Some(DigestAlgorithm::Md5Sess),
            Some("SHA-256") => Some(DigestAlgorithm::Sha256),
            Some("SHA-256-SESS") => Some(DigestAlgorithm::Sha256Sess),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Md5Sess => "MD5-sess",
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha256Sess => "SHA-256-sess",
        }
    }
    fn hash(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => {
                hex(&Sha256::digest(data.as_bytes()))
            }
        }
    }
    fn is_sess(self) -> bool {
        matches!(self, DigestAlgorithm::Md5Sess | DigestAlgorithm::Sha256Sess)
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The state of a Digest session: the server's nonce and our request counter.
#[derive(Debug)]
pub struct DigestSession {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// Whether the server offered `qop=auth` (otherwise RFC 2069 style).
    pub qop_auth: bool,
    nc: AtomicU32,
    /// The `-sess` HA1 is fixed per nonce and cnonce; we keep one cnonce per session.
    sess_cnonce: String,
}

impl DigestSession {
    /// Builds a session from a Digest challenge; `None` when its algorithm or qop is unusable.
    pub fn from_challenge(ch: &Challenge) -> Option<DigestSession> {
        if ch.scheme != "digest" {
            return None;
        }
        let algorithm = DigestAlgorithm::parse(ch.param("algorithm"))?;
        let qop_auth = match ch.param("qop") {
            None => false,
            Some(q) => {
                let offered: Vec<String> = q
                    .split(',')
                    .map(|x| x.trim().to_ascii_lowercase())
                    .collect();
                if offered.iter().any(|x| x == "auth") {
                    true
                } else {
                    // Only auth-int: would need the body hash before sending; not supported.
                    return None;
                }
            }
        };
        Some(DigestSession {
            realm: ch.param("realm").unwrap_or("").to_string(),
            nonce: ch.param("nonce")?.to_string(),
            opaque: ch.param("opaque").map(str::to_string),
            algorithm,
            qop_auth,
            nc: AtomicU32::new(0),
            sess_cnonce: new_cnonce(),
        })
    }

    /// The `Authorization` value for `method` on request-target `uri` (path and query exactly
    /// as sent on the request line).
    pub fn authorization(&self, creds: &Credentials, method: &str, uri: &str) -> String {
        let alg = self.algorithm;
        let nc = self.nc.fetch_add(1, Ordering::Relaxed) + 1;
        let nc = format!("{nc:08x}");
        let cnonce = if alg.is_sess() {
            self.sess_cnonce.clone()
        } else {
            new_cnonce()
        };
        let mut ha1 = alg.hash(&format!("{}:{}:{}", creds.user, self.realm, creds.password));
        if alg.is_sess() {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{}\"",
            quote(&creds.user),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            alg.name(),
            response
        );
        if self.qop_auth {
            h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        h
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn new_cnonce() -> String {
    let mut b = [0u8; 12];
    // getrandom failing means the OS has no entropy source; a time-based value still works
    // (cnonce only needs to be unpredictable enough to defeat chosen-plaintext attacks).
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..12].copy_from_slice(&t.to_le_bytes()[..12]);
    }
    hex(&b)
}

/// The `Authorization` value for Basic.
pub fn basic_authorization(creds: &Credentials) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{}:{}", creds.user, creds.password).as_bytes())
    )
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Picks the best usable scheme among the challenges: Digest (strongest algorithm) over Basic.
pub enum Chosen {
    Digest(DigestSession),
    Basic,
}

pub fn choose(challenges: &[Challenge]) -> Option<Chosen> {
    let best_digest = challenges
        .iter()
        .filter_map(DigestSession::from_challenge)
        .max_by_key(|s| s.algorithm);
    if let Some(d) = best_digest {
        return Some(Chosen::Digest(d));
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Some(Chosen::Basic);
    }
    None
}

/// True when a Digest challenge says the nonce only expired (`stale=true`).
pub fn is_stale(challenges: &[Challenge]) -> bool {
    challenges.iter().any(|c| {
        c.scheme == "digest"
            && c.param("stale")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiple_challenges() {
        let h = r#"Digest realm="a, b", nonce="n\"1", qop="auth,auth-int", algorithm=MD5, stale=TRUE, Basic realm="x""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "digest");
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[0].param("nonce"), Some("n\"1"));
        assert_eq!(c[0].param("qop"), Some("auth,auth-int"));
        assert_eq!(c[1].scheme, "basic");
        assert_eq!(c[1].param("realm"), Some("x"));
        assert!(is_stale(&c));
    }

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5: Mufasa / Circle Of Life.
        let ch = parse_challenges(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        );
        let s = DigestSession::from_challenge(&ch[0]).unwrap();
        let creds = Credentials {
            user: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        // Recompute with the RFC's fixed cnonce to check the formula.
        let ha1 = DigestAlgorithm::Md5.hash("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = DigestAlgorithm::Md5.hash("GET:/dir/index.html");
        let resp = DigestAlgorithm::Md5.hash(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(resp, "6629fae49393a05397450978507c4ef1");
        let h = s.authorization(&creds, "GET", "/dir/index.html");
        assert!(h.contains("nc=00000001"));
        assert!(h.contains("uri=\"/dir/index.html\""));
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        let h2 = s.authorization(&creds, "GET", "/dir/index.html");
        assert!(h2.contains("nc=00000002"));
    }

    #[test]
    fn rfc7616_sha256_example() {
        // RFC 7616 §3.9.1.
        let ha1 = DigestAlgorithm::Sha256.hash("Mufasa:http-auth@example.org:Circle of Life");
        let ha2 = DigestAlgorithm::Sha256.hash("GET:/dir/index.html");
        let resp = DigestAlgorithm::Sha256.hash(&format!(
            "{ha1}:7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v:00000001:f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ:auth:{ha2}"
        ));
        assert_eq!(
            resp,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn prefers_strongest_digest_then_basic() {
        let c = parse_challenges(
            r#"Basic realm="r", Digest realm="r", nonce="1", algorithm=MD5, qop="auth", Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth""#,
        );
        match choose(&c) {
            Some(Chosen::Digest(s)) => assert_eq!(s.algorithm, DigestAlgorithm::Sha256),
            _ => panic!("expected digest"),
        }
        let c = parse_challenges(r#"Basic realm="r""#);
        assert!(matches!(choose(&c), Some(Chosen::Basic)));
        let c = parse_challenges(r#"Digest realm="r", nonce="1", qop="auth-int""#);
        assert!(choose(&c).is_none());
        assert!(choose(&parse_challenges("Negotiate")).is_none());
    }

    #[test]
    fn basic_header() {
        let c = Credentials {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(
            basic_authorization(&c),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }

    #[test]
    fn debug_redacts_password() {
        let c = Credentials {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
