//! HTTP Basic authentication for the embedded server (RFC 7617).
//!
//! The expected credentials are kept only as the SHA-256 of their `Authorization` token
//! (`base64(user:password)`); a request's token is hashed the same way and the two digests are
//! compared in constant time, so neither the password's content nor its length leaks through
//! timing. Nothing here logs a credential.

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// The value of `WWW-Authenticate` on a 401.
pub(crate) const CHALLENGE: &str = "Basic realm=\"cloudmount\"";

/// Checks `Authorization: Basic …` headers against one user and password.
pub(crate) struct BasicAuth {
    expected: [u8; 32],
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth { .. }")
    }
}

impl BasicAuth {
    pub fn new(user: &str, password: &str) -> BasicAuth {
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        BasicAuth {
            expected: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// True when the header carries the right credentials.
    pub fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, token) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let token = token.trim_ascii();
        let given: [u8; 32] = Sha256::digest(token).into();
        constant_time_eq(&given, &self.expected)
    }
}

/// Compares two equal-length byte strings without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into a short-circuiting compare.
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648 §4), as Basic auth uses.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
        }
        // RFC 7617 §2 example.
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn checks_credentials() {
        let auth = BasicAuth::new("Aladdin", "open sesame");
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(auth.check(Some(&hv("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="))));
        assert!(auth.check(Some(&hv("basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ=="))));
        assert!(!auth.check(None));
        assert!(!auth.check(Some(&hv("Basic QWxhZGRpbjpvcGVuIHNlc2FtZR=="))));
        assert!(!auth.check(Some(&hv("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ=="))));
        assert!(!auth.check(Some(&hv("Basic"))));
        assert!(!auth.check(Some(&hv("Basic "))));
        assert!(!auth.check(Some(&hv(&format!(
            "Basic {}",
            base64_encode(b"Aladdin:open sesamE")
        )))));
        assert!(!auth.check(Some(&hv(&format!(
            "Basic {}",
            base64_encode(b"aladdin:open sesame")
        )))));
    }

    #[test]
    fn debug_hides_secret() {
        let auth = BasicAuth::new("u", "hunter2");
        assert_eq!(format!("{auth:?}"), "BasicAuth { .. }");
    }
}
