//! Whether the server still has the version a change was based on: the check before an upload.
//!
//! A version is named by the server's ETag when it gives one (in the listing, or on `HEAD`:
//! [`crate::remote::Remote::stat`] asks for it when PROPFIND lists no `getetag`), else by a
//! stand-in made of size and last-modified time ([`ETag::stand_in`]). A check compares like
//! with like: a base that is an ETag with the server's ETag, a stand-in with the server's size
//! and last-modified time. When the two cannot be compared (no base, or the server no longer
//! gives what the base was made of) the answer is [`Verdict::Unknown`], which callers must
//! treat as "changed": an unknown version is never taken for the base.

use super::{ETag, Entry};

/// The answer of [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server's copy is the base version.
    Same,
    /// The server's copy is another version.
    Changed,
    /// Cannot tell: nothing comparable on one side.
    Unknown,
}

/// The version of the server's copy `e`: its ETag, or a stand-in from size and mtime; `None`
/// when the server gives neither an ETag nor a last-modified time.
pub fn of(e: &Entry) -> Option<ETag> {
    e.etag.clone().or_else(|| stand_in(e))
}

/// The stand-in version of `e`, from its size and last-modified time.
pub fn stand_in(e: &Entry) -> Option<ETag> {
    e.mtime.map(|t| ETag::stand_in(e.size, t))
}

/// Whether `server` is still the version `base`.
pub fn check(base: Option<&ETag>, server: &Entry) -> Verdict {
    let Some(base) = base else {
        return Verdict::Unknown;
    };
    let now = if base.is_stand_in() {
        stand_in(server)
    } else {
        server.etag.clone()
    };
    match now {
        Some(v) if v == *base => Verdict::Same,
        Some(_) => Verdict::Changed,
        None => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{EntryKind, RemotePath};
    use std::time::{Duration, SystemTime};

    fn entry(size: u64, secs: Option<u64>, etag: Option<&str>) -> Entry {
        Entry {
            path: RemotePath::new("c.txt").unwrap(),
            kind: EntryKind::File,
            size,
            mtime: secs.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            etag: etag.and_then(ETag::parse),
            content_type: None,
        }
    }

    #[test]
    fn etags_compare_with_etags() {
        let base = ETag::parse("\"v1\"");
        assert_eq!(
            check(base.as_ref(), &entry(3, Some(9), Some("v1"))),
            Verdict::Same
        );
        assert_eq!(
            check(base.as_ref(), &entry(3, Some(9), Some("v2"))),
            Verdict::Changed
        );
        // The server stopped giving ETags: size and mtime say nothing about an ETag base.
        assert_eq!(
            check(base.as_ref(), &entry(3, Some(9), None)),
            Verdict::Unknown
        );
    }

    #[test]
    fn stand_ins_compare_with_size_and_mtime_even_when_the_server_has_an_etag() {
        let listed = entry(3, Some(100), None);
        let base = of(&listed);
        assert!(base.as_ref().is_some_and(ETag::is_stand_in));
        // HEAD gave the pre-upload check an ETag the listing had not: still comparable.
        let same = entry(3, Some(100), Some("6b-3"));
        assert_eq!(check(base.as_ref(), &same), Verdict::Same);
        assert_eq!(
            check(base.as_ref(), &entry(4, Some(100), Some("6b-4"))),
            Verdict::Changed
        );
        assert_eq!(
            check(base.as_ref(), &entry(3, Some(101), None)),
            Verdict::Changed
        );
        assert_eq!(
            check(base.as_ref(), &entry(3, None, Some("6b-3"))),
            Verdict::Unknown
        );
    }

    #[test]
    fn no_base_is_never_unchanged() {
        assert_eq!(check(None, &entry(3, Some(1), Some("x"))), Verdict::Unknown);
        assert_eq!(check(None, &entry(3, None, None)), Verdict::Unknown);
        assert_eq!(of(&entry(3, None, None)), None);
    }
}
