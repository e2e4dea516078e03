//! Moves the object files of a cache written by an older release into today's layout.
//!
//! Releases up to commit 2ebaeb0 kept object files at `<cache>/objects/objects/<h2>/…` (the
//! vfs passed `<cache>/objects` as the cache directory and the cache added `objects` again).
//! Today's layout is `<cache>/objects/<h2>/…`. Rows of `meta.db` name files by name only, so
//! moving the directory is the whole migration. Three steps, each one rename or removal whose
//! result the next open recognises, so a crash or power cut between any two is finished by the
//! next open:
//!
//! 1. `objects` → `objects.migrating` (only if `objects/objects` exists and
//!    `objects.migrating` does not);
//! 2. `objects.migrating/objects` → `objects` (only if `objects` does not exist yet);
//! 3. remove `objects.migrating` and whatever a crash of the old release left in it beside
//!    `objects` (no row names anything there).
//!
//! The cache directory is fsynced after each rename, so the steps reach the disk in order.
//! A directory in an unexpected state (both `objects.migrating/objects` and a new `objects`,
//! which none of the steps makes) keeps `objects` and drops the other: object files whose rows
//! then name nothing are dropped by the start-up check, costing a download, never wrong bytes.

use std::fs;
use std::io;
use std::path::Path;

use super::error::{io_err, CacheError};
use super::io::sync_dir;
use super::layout::CacheLayout;

/// Brings `layout`'s object files into today's layout; true when there was something to do.
/// Run before anything else touches `objects/` (the daemon's lock keeps others out).
pub(super) fn migrate_nested_objects(layout: &CacheLayout) -> Result<bool, CacheError> {
    let root = layout.root();
    let objects = layout.objects_dir();
    let migrating = layout.migrating_dir();
    if !exists(&migrating)? {
        if !layout.nested_objects_dir().is_dir() {
            return Ok(false);
        }
        tracing::info!(cache = %root.display(), "moving cached files out of objects/objects/");
        // Step 1.
        fs::rename(&objects, &migrating).map_err(io_err("rename", &objects))?;
        sync_dir(root)?;
    }
    let inner = migrating.join(objects.file_name().expect("objects has a name"));
    if exists(&inner)? {
        if exists(&objects)? {
            tracing::warn!(
                cache = %root.display(),
                "both objects/ and objects.migrating/objects/ exist: keeping objects/"
            );
        } else {
            // Step 2.
            fs::rename(&inner, &objects).map_err(io_err("rename", &inner))?;
            sync_dir(&migrating)?;
            sync_dir(root)?;
        }
    }
    // Step 3.
    match fs::remove_dir_all(&migrating) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &migrating)(e)),
    }
    sync_dir(root)?;
    Ok(true)
}

fn exists(p: &Path) -> Result<bool, CacheError> {
    p.try_exists().map_err(io_err("stat", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "17f8d580a05df566425b7e07e059042d";

    /// An old cache: `objects/objects/17/NAME` and an empty fan-out directory.
    fn old_cache() -> (tempfile::TempDir, CacheLayout) {
        let d = tempfile::tempdir().unwrap();
        let l = CacheLayout::new(d.path());
        let nested = l.nested_objects_dir();
        fs::create_dir_all(nested.join("17")).unwrap();
        fs::create_dir_all(nested.join("00")).unwrap();
        fs::write(nested.join("17").join(NAME), b"cached").unwrap();
        (d, l)
    }

    fn assert_migrated(l: &CacheLayout) {
        assert_eq!(fs::read(l.object_file(NAME)).unwrap(), b"cached");
        assert!(l.fanout_dir(0).is_dir());
        assert!(!l.nested_objects_dir().exists());
        assert!(!l.migrating_dir().exists());
    }

    #[test]
    fn an_old_layout_is_moved_and_a_new_one_left_alone() {
        let (_d, l) = old_cache();
        assert!(migrate_nested_objects(&l).unwrap());
        assert_migrated(&l);
        assert!(!migrate_nested_objects(&l).unwrap(), "nothing left to do");
        assert_migrated(&l);

        let fresh = tempfile::tempdir().unwrap();
        let f = CacheLayout::new(fresh.path());
        assert!(!migrate_nested_objects(&f).unwrap(), "no objects/ at all");
        assert!(!f.objects_dir().exists());
    }

    #[test]
    fn a_crash_after_any_step_is_finished_by_the_next_open() {
        // After step 1: objects/ renamed, nothing else.
        let (_d, l) = old_cache();
        fs::rename(l.objects_dir(), l.migrating_dir()).unwrap();
        assert!(migrate_nested_objects(&l).unwrap());
        assert_migrated(&l);

        // After step 2: objects/ in place, the empty objects.migrating/ left.
        let (_d, l) = old_cache();
        fs::rename(l.objects_dir(), l.migrating_dir()).unwrap();
        fs::rename(l.migrating_dir().join("objects"), l.objects_dir()).unwrap();
        assert!(migrate_nested_objects(&l).unwrap());
        assert_migrated(&l);

        // During step 3: objects.migrating/ partly removed (a stray file of the old release).
        let (_d, l) = old_cache();
        fs::write(l.objects_dir().join("junk.tmp"), b"x").unwrap();
        fs::rename(l.objects_dir(), l.migrating_dir()).unwrap();
        fs::rename(l.migrating_dir().join("objects"), l.objects_dir()).unwrap();
        assert!(migrate_nested_objects(&l).unwrap());
        assert_migrated(&l);
    }

    #[test]
    fn an_unexpected_state_keeps_objects_and_drops_the_other() {
        let (_d, l) = old_cache();
        fs::rename(l.objects_dir(), l.migrating_dir()).unwrap();
        fs::create_dir_all(l.fanout_dir(0x17)).unwrap();
        fs::write(l.object_file(NAME), b"newer").unwrap();
        assert!(migrate_nested_objects(&l).unwrap());
        assert_eq!(fs::read(l.object_file(NAME)).unwrap(), b"newer");
        assert!(!l.migrating_dir().exists());
    }
}
