//! Entity tags, normalised so the same version always compares equal.
//!
//! Servers quote ETags or not, and mark them weak (`W/`) at whim (Apache marks a file changed in
//! the last second as weak and the same version as strong a second later). The opaque value is
//! what identifies a version; `weak` only decides whether the tag may be sent in `If-Match` /
//! `If-Range`, which require strong comparison.
//!
//! A server that gives no ETag for a file still has versions: a *stand-in* tag made of the
//! file's size and last-modified time ([`ETag::stand_in`]) names them. Stand-ins key cache
//! objects and record the base of a change; they are never sent to a server.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

/// What every stand-in tag starts with.
const STAND_IN_PREFIX: &str = "cloudmount-size";

/// A normalised entity tag. Equality and hashing use the opaque value only.
#[derive(Clone, Eq)]
pub struct ETag {
    value: String,
    weak: bool,
}

impl ETag {
    /// Parses a header or property value: `"abc"`, `W/"abc"`, `abc`, with surrounding spaces.
    /// Returns `None` for an empty tag.
    pub fn parse(raw: &str) -> Option<ETag> {
        let mut s = raw.trim();
        let mut weak = false;
        if let Some(rest) = s.strip_prefix("W/").or_else(|| s.strip_prefix("w/")) {
            weak = true;
            s = rest.trim_start();
        }
        let s = s
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(s);
        if s.is_empty() {
            return None;
        }
        Some(ETag {
            value: s.to_string(),
            weak,
        })
    }

    /// A strong tag with this opaque value.
    pub fn strong(value: impl Into<String>) -> ETag {
        ETag {
            value: value.into(),
            weak: false,
        }
    }

    /// The stand-in version of a file whose server gives no ETag: its size and last-modified
    /// time in whole seconds (what `getlastmodified` and `Last-Modified` carry). Two changes of
    /// the same size within one second of the server's clock share it.
    pub fn stand_in(size: u64, mtime: SystemTime) -> ETag {
        let secs = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        ETag::strong(format!("{STAND_IN_PREFIX}{size}-mtime{secs}"))
    }

    /// Whether this is a [`ETag::stand_in`] rather than a tag the server gave.
    pub fn is_stand_in(&self) -> bool {
        self.value.starts_with(STAND_IN_PREFIX)
    }

    /// The opaque value, without quotes or weakness marker.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The tag as sent in `If-Match` / `If-Range`: always quoted.
    pub fn header_value(&self) -> String {
        if self.weak {
            format!("W/\"{}\"", self.value)
        } else {
            format!("\"{}\"", self.value)
        }
    }
}

impl PartialEq for ETag {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Hash for ETag {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.header_value())
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_compares_equal_in_every_spelling() {
        let a = ETag::parse("\"5e-63a1\"").unwrap();
        for raw in ["5e-63a1", "W/\"5e-63a1\"", "  \"5e-63a1\" ", "w/5e-63a1"] {
            assert_eq!(ETag::parse(raw).unwrap(), a, "{raw}");
        }
        assert_ne!(ETag::parse("\"5e-63a2\"").unwrap(), a);
        assert!(ETag::parse("W/\"x\"").unwrap().is_weak());
        assert!(!ETag::parse("\"x\"").unwrap().is_weak());
    }

    #[test]
    fn stand_ins_name_size_and_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_900);
        let a = ETag::stand_in(5, t);
        assert_eq!(a.value(), "cloudmount-size5-mtime1700000000");
        assert!(a.is_stand_in());
        // Stored as its header value and read back, it is still one.
        assert!(ETag::parse(&a.header_value()).unwrap().is_stand_in());
        assert_eq!(
            ETag::stand_in(5, t - std::time::Duration::from_millis(800)),
            a
        );
        assert_ne!(ETag::stand_in(6, t), a);
        assert_ne!(ETag::stand_in(5, t + std::time::Duration::from_secs(1)), a);
        assert!(!ETag::parse("\"6b15c759-3\"").unwrap().is_stand_in());
    }

    #[test]
    fn empty_tags_are_none() {
        assert!(ETag::parse("").is_none());
        assert!(ETag::parse("\"\"").is_none());
        assert!(ETag::parse("W/\"\"").is_none());
    }

    #[test]
    fn header_value_is_quoted() {
        assert_eq!(ETag::parse("abc").unwrap().header_value(), "\"abc\"");
        assert_eq!(ETag::parse("W/abc").unwrap().header_value(), "W/\"abc\"");
    }
}
