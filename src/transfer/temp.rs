//! Names of uploads in progress: every upload goes to a temporary name beside its target
//! first, `.cloudmount-upload-…part`, hidden from listings and sync scans.
//!
//! Two kinds, told apart by their form so that a start-up sweep deletes only its own:
//! - the mount's write-back: `.cloudmount-upload-<cache id>-<record id>.part` ([`for_record`]),
//!   stable per queued record, so that an upload cut short by a crash is found again;
//! - a sync folder's: `.cloudmount-upload-sync-<folder id>-<random>.part`
//!   ([`sync_prefix`] + [`random_hex`]).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::remote::{RemotePath, RemoteResult};

/// Names starting with this are our uploads in progress: hidden from listings.
pub const TEMP_PREFIX: &str = ".cloudmount-upload-";

/// Whether a server name is an upload in progress (ours or another computer's).
pub fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// The temporary name an upload of record `id` of the cache `tag` (its `cache_id`) uses
/// beside `path`: `.cloudmount-upload-<tag>-<id>.part`.
pub fn for_record(path: &RemotePath, tag: &str, id: i64) -> RemoteResult<RemotePath> {
    let parent = path.parent().unwrap_or_else(RemotePath::root);
    parent.join(&format!("{TEMP_PREFIX}{tag}-{id}.part"))
}

/// Whose temporary upload file `name` is.
#[derive(Debug, PartialEq, Eq)]
pub enum TempOwner {
    /// Not a temporary upload name.
    NotTemp,
    /// Of the cache `tag` (compare with ours), record `id`.
    Cache { tag: String, id: i64 },
    /// A temporary name of another form (a sync folder's, or an older version's `<id>.part`).
    Unknown,
}

/// Parses a name made by [`for_record`].
pub fn owner(name: &str) -> TempOwner {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return TempOwner::NotTemp;
    };
    let parsed = rest.strip_suffix(".part").and_then(|r| r.split_once('-'));
    match parsed {
        Some((tag, id)) if crate::meta::is_cache_id(tag) => match id.parse() {
            Ok(id) => TempOwner::Cache {
                tag: tag.to_string(),
                id,
            },
            Err(_) => TempOwner::Unknown,
        },
        _ => TempOwner::Unknown,
    }
}

/// The start of the names of one sync folder's temporary uploads (`folder` is its stable id):
/// a temporary file of this prefix found by a scan is left from a run cut short and is deleted.
/// Other computers' have other prefixes.
pub fn sync_prefix(folder: &str) -> String {
    let id: String = folder.chars().take(12).collect();
    format!("{TEMP_PREFIX}sync-{id}-")
}

/// A temporary name for one upload of a sync folder beside `target`.
pub fn for_sync(target: &RemotePath, folder: &str) -> RemoteResult<RemotePath> {
    let name = format!("{}{}.part", sync_prefix(folder), random_hex());
    match target.parent() {
        Some(p) => p.join(&name),
        None => RemotePath::new(&name),
    }
}

/// 16 random hex digits (the clock's nanoseconds if the system has no randomness to give).
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_say_whose_upload_they_are() {
        let p = for_record(&RemotePath::new("d/f.txt").unwrap(), "0123456789abcdef", 42).unwrap();
        assert_eq!(p.as_str(), "d/.cloudmount-upload-0123456789abcdef-42.part");
        assert_eq!(
            owner(p.name()),
            TempOwner::Cache {
                tag: "0123456789abcdef".into(),
                id: 42
            }
        );
        assert_eq!(owner("f.txt"), TempOwner::NotTemp);
        for other in [
            ".cloudmount-upload-42.part",
            ".cloudmount-upload-0123456789abcdef-x.part",
            ".cloudmount-upload-0123-42.part",
            ".cloudmount-upload-0123456789abcdef-42",
        ] {
            assert_eq!(owner(other), TempOwner::Unknown, "{other}");
        }
    }

    #[test]
    fn a_sync_folders_temporary_names_carry_its_id_and_differ_each_time() {
        let target = RemotePath::new("Docs/a.txt").unwrap();
        let a = for_sync(&target, "f00dfeedcafebeef0011").unwrap();
        let b = for_sync(&target, "f00dfeedcafebeef0011").unwrap();
        assert!(
            a.as_str()
                .starts_with("Docs/.cloudmount-upload-sync-f00dfeedcafe-"),
            "{a}"
        );
        assert!(is_temp(a.name()) && a.name().ends_with(".part"));
        assert_ne!(a, b);
        assert_eq!(owner(a.name()), TempOwner::Unknown);
        let top = for_sync(&RemotePath::new("a.txt").unwrap(), "x").unwrap();
        assert!(
            top.as_str().starts_with(".cloudmount-upload-sync-x-"),
            "{top}"
        );
    }
}
