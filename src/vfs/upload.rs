//! Sending one dirty file of the mount to the server, without ever destroying the server's
//! copy: the decisions that are the write-back queue's own, over the shared upload path of
//! [`crate::transfer`] (temporary name and MOVE, or one conditional PUT; see there).
//!
//! Conflicts: when the server's copy is not the version the change was based on (or a file
//! appeared where ours is new), both are kept: the server's version keeps the name and ours
//! goes to a conflict copy on the server (named by [`crate::transfer::conflict`]). Versions are
//! compared by [`crate::remote::version::check`]: ETag with ETag, or (on servers that list no
//! ETag) size and last-modified time with size and last-modified time; when the check cannot
//! tell, the server's copy counts as changed. A file that is itself a conflict copy is never
//! copied again: the newer version wins. A false conflict (the server already has exactly our
//! bytes, e.g. our own upload whose confirmation was lost in a crash) is recognised by
//! comparing sizes and then the bytes, and counts as uploaded.

use std::path::Path;

use futures_util::future::BoxFuture;
use std::time::SystemTime;

use super::queue::UploadOptions;
use crate::meta::DirtyRecord;
use crate::remote::version::{self, Verdict};
use crate::remote::{
    ETag, Entry, PutBody, PutCondition, Remote, RemoteError, RemotePath, RemoteResult,
};
use crate::transfer::probe::{current, placed, same_content};
use crate::transfer::{self, conflict, Expect, Placed, UploadJob, Via};

/// How a dirty file reached the server.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Under its own name; what the server has there now, when it could be learnt (its ETag,
    /// size and mtime name the version the next change is based on).
    Uploaded(Option<Entry>),
    /// The server had another version: ours went to `copy`.
    Conflict {
        copy: RemotePath,
        copy_etag: Option<ETag>,
    },
}

/// What the caller follows of one upload attempt.
pub(crate) struct Watch<'a> {
    /// Whether the file is still the version being sent (nothing wrote to it since the upload
    /// began): checked once the temporary copy is on the server, before it is moved into place.
    pub unchanged: &'a (dyn Fn() -> bool + Send + Sync),
    /// Counts the bytes of the body as the HTTP client reads them (see
    /// `UploadQueue::sent_counter`).
    pub sent: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// Uploads `file` (`size` bytes) as the content of `rec.path`. `Ok(None)`: nothing was placed
/// because the file changed meanwhile (see [`Watch::unchanged`]; its new content is committed,
/// or will be at its close, and uploaded then).
pub(crate) async fn send(
    remote: &dyn Remote,
    rec: &DirtyRecord,
    file: &Path,
    size: u64,
    opts: &UploadOptions,
    temp_tag: &str,
    watch: Watch<'_>,
) -> RemoteResult<Option<Sent>> {
    let Watch { unchanged, sent } = watch;
    let path = &rec.path;
    let is_copy = conflict::is_conflict_copy(path.name());
    // What the server must still hold when ours is placed.
    let mut expect = Expect::Absent;
    // The server's version when it is not the one the change was based on.
    let mut conflicting = None;
    // The record, rebased on the server's copy when that copy is our own earlier upload.
    let mut rebased: Option<DirtyRecord> = None;
    if rec.on_server {
        match current(remote, path).await? {
            Some(e) if e.is_dir() => {
                return Err(RemoteError::IsADirectory {
                    url: path.to_string(),
                })
            }
            Some(_) if is_copy => expect = Expect::Anything,
            Some(e) => {
                let verdict = version::check(rec.base_etag.as_ref(), &e);
                expect = Expect::Version(rec.base_etag.clone());
                if verdict != Verdict::Same {
                    if verdict == Verdict::Unknown {
                        tracing::info!(path = %path, base = ?rec.base_etag, "cannot tell whether the server's copy is the version this change was based on: treated as changed");
                    }
                    if ours_before(remote, rec, &e).await? {
                        let mut r = rec.clone();
                        r.base_etag = version::of(&e);
                        expect = Expect::Version(r.base_etag.clone());
                        rebased = Some(r);
                    } else {
                        conflicting = Some(e);
                    }
                }
            }
            // Deleted on the server meanwhile: the change wins, uploaded as a new file.
            None => {}
        }
    } else if is_copy {
        expect = Expect::Anything;
    } else if rec.prior_move.is_some() {
        // New here, but an earlier version's upload may have put it there before a crash.
        if let Some(e) = current(remote, path).await? {
            if !e.is_dir() && ours_before(remote, rec, &e).await? {
                expect = Expect::Anything;
            }
        }
    }
    let rec = rebased.as_ref().unwrap_or(rec);
    if let Some(server) = conflicting {
        return keep_both(remote, rec, file, size, opts, server, None)
            .await
            .map(Some);
    }
    let via = if opts.via_temp {
        Via::Temp(transfer::temp::for_record(path, temp_tag, rec.id)?)
    } else {
        Via::Direct
    };
    // In memory: answered at once.
    let unchanged = || -> BoxFuture<'static, bool> { Box::pin(std::future::ready(unchanged())) };
    let job = UploadJob {
        target: path,
        file,
        size,
        expect,
        via,
        make_parents: false,
        learn_version: true,
        sent,
        unchanged: &unchanged,
    };
    match transfer::upload(remote, &job).await? {
        Placed::Done(e) => Ok(Some(Sent::Uploaded(e))),
        Placed::SourceChanged => Ok(None),
        Placed::Refused { server, temp } => {
            keep_both(remote, rec, file, size, opts, server, temp.as_ref())
                .await
                .map(Some)
        }
    }
}

/// The server holds `server`, not the version `rec` was based on: equal bytes are no conflict;
/// else ours goes to a conflict copy (from `temp` when our content is already there).
async fn keep_both(
    remote: &dyn Remote,
    rec: &DirtyRecord,
    file: &Path,
    size: u64,
    opts: &UploadOptions,
    server: Entry,
    temp: Option<&RemotePath>,
) -> RemoteResult<Sent> {
    let same = same_content(remote, &rec.path, &server, file, size).await;
    if !matches!(same, Ok(false)) {
        // Our temporary copy is not needed (equal bytes), or must not be left behind (the
        // compare failed, e.g. the local file was cut meanwhile: a next version's upload would
        // take it for the proof that this upload's MOVE never happened (`ours_before`), and our
        // own earlier upload on the server for someone else's: a false conflict copy).
        if let Some(t) = temp {
            transfer::discard(remote, t).await;
        }
    }
    if same? {
        return Ok(Sent::Uploaded(Some(server)));
    }
    to_conflict_copy(remote, rec, file, size, opts, temp).await
}

/// Whether the server's `server` copy at `rec.path` is an earlier version of ours, put there
/// by an upload cut short by a crash before its record was updated (`rec.prior_move`): the
/// same size, and that upload's temporary file gone (its MOVE happened). Another client's
/// change of exactly that size in that moment would be taken for ours: the price of never
/// making a false conflict copy of our own file.
async fn ours_before(remote: &dyn Remote, rec: &DirtyRecord, server: &Entry) -> RemoteResult<bool> {
    let Some((temp, size)) = &rec.prior_move else {
        return Ok(false);
    };
    if server.size != *size {
        return Ok(false);
    }
    if temp.is_root() {
        // A PUT in place: nothing else to check.
        return Ok(true);
    }
    let gone = current(remote, temp).await?.is_none();
    if gone {
        tracing::info!(path = %rec.path, "the server has our own earlier upload (cut short by a restart): replacing it, no conflict");
    }
    Ok(gone)
}

/// Puts our version under a free conflict-copy name (from `temp` when it is already on the
/// server).
async fn to_conflict_copy(
    remote: &dyn Remote,
    rec: &DirtyRecord,
    file: &Path,
    size: u64,
    opts: &UploadOptions,
    temp: Option<&RemotePath>,
) -> RemoteResult<Sent> {
    let parent = rec.path.parent_or_root();
    let stamp = conflict::timestamp(SystemTime::now());
    for n in 1..=20 {
        let name = conflict::conflict_name(rec.path.name(), &opts.device, &stamp, n);
        let copy = parent.join(&name)?;
        let done = match temp {
            Some(t) => remote.rename(t, &copy, false).await,
            None => remote
                .put(
                    &copy,
                    PutBody::File {
                        path: file.to_path_buf(),
                        len: size,
                    },
                    PutCondition::IfNoneMatch,
                )
                .await
                .map(|_| ()),
        };
        match done {
            Ok(()) => {
                tracing::warn!(path = %rec.path, copy = %copy, "conflict: the server's version keeps the name, ours was uploaded as a conflict copy");
                return Ok(Sent::Conflict {
                    copy_etag: placed(remote, &copy).await.and_then(|e| e.etag),
                    copy,
                });
            }
            Err(RemoteError::AlreadyExists { .. })
            | Err(RemoteError::PreconditionFailed { .. }) => continue,
            Err(e) => {
                if let Some(t) = temp {
                    transfer::discard(remote, t).await;
                }
                return Err(e);
            }
        }
    }
    if let Some(t) = temp {
        transfer::discard(remote, t).await;
    }
    Err(RemoteError::BadResponse {
        method: "MOVE".into(),
        url: rec.path.to_string(),
        reason: "no free conflict-copy name".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DirtyState;
    use crate::remote::mem::MemRemote;
    use std::time::Duration;

    /// [`send`] of a file nothing writes to meanwhile: it is always placed.
    async fn send_now(
        remote: &dyn Remote,
        rec: &DirtyRecord,
        file: &Path,
        size: u64,
        opts: &UploadOptions,
    ) -> RemoteResult<Sent> {
        send(
            remote,
            rec,
            file,
            size,
            opts,
            "0123456789abcdef",
            Watch {
                unchanged: &|| true,
                sent: None,
            },
        )
        .await
        .map(|s| s.expect("an unchanged file is placed"))
    }

    fn opts(via_temp: bool) -> UploadOptions {
        UploadOptions {
            workers: 1,
            delay: Duration::ZERO,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(10),
            space_retry: Duration::from_millis(10),
            via_temp,
            device: "box".into(),
            space: None,
        }
    }

    fn rec(path: &str, base: Option<ETag>, on_server: bool) -> DirtyRecord {
        DirtyRecord {
            id: 7,
            area: 0,
            path: RemotePath::new(path).unwrap(),
            staging: "staging/x".into(),
            base_etag: base,
            on_server,
            size: 0,
            state: DirtyState::Pending,
            updated_at: SystemTime::now(),
            prior_move: None,
        }
    }

    fn local(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    #[tokio::test]
    async fn a_file_changed_while_it_is_sent_is_not_placed_and_leaves_nothing() {
        let m = MemRemote::new();
        let p = RemotePath::new("doc").unwrap();
        m.insert_file(p.as_str(), &b"old"[..]);
        let base = m.stat(&p).await.unwrap().etag;
        // 11 bytes when the upload began; cut to 3 since.
        let (_d, f) = local(b"new");
        let sent = send(
            &m,
            &rec("doc", base, true),
            &f,
            11,
            &opts(true),
            "00",
            Watch {
                unchanged: &|| false,
                sent: None,
            },
        )
        .await
        .unwrap();
        assert!(sent.is_none(), "nothing placed");
        assert_eq!(m.file_bytes(p.as_str()).unwrap(), b"old");
        let left = m
            .paths()
            .iter()
            .filter(|x| x.contains(transfer::temp::TEMP_PREFIX))
            .count();
        assert_eq!(left, 0, "the temporary copy is removed");
    }

    #[tokio::test]
    async fn new_and_changed_files_land_under_their_name_both_ways() {
        for via_temp in [true, false] {
            let m = MemRemote::new();
            let (_d, f) = local(b"hello");
            let r = rec("a.txt", None, false);
            let Sent::Uploaded(placed) = send_now(&m, &r, &f, 5, &opts(via_temp)).await.unwrap()
            else {
                panic!("conflict")
            };
            let etag = placed.as_ref().and_then(version::of);
            assert_eq!(m.file_bytes(r.path.as_str()).unwrap(), b"hello");
            std::fs::write(&f, b"world!").unwrap();
            let r2 = rec("a.txt", etag, true);
            assert!(matches!(
                send_now(&m, &r2, &f, 6, &opts(via_temp)).await.unwrap(),
                Sent::Uploaded(_)
            ));
            assert_eq!(m.file_bytes(r.path.as_str()).unwrap(), b"world!");
            let names = m.paths();
            assert!(
                !names
                    .iter()
                    .any(|n| n.contains(transfer::temp::TEMP_PREFIX)),
                "no temporary file left: {names:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_changed_server_copy_keeps_its_name_and_ours_becomes_a_copy() {
        for via_temp in [true, false] {
            let m = MemRemote::new();
            let p = RemotePath::new("notes.txt").unwrap();
            m.insert_file(p.as_str(), &b"base"[..]);
            let base = m.stat(&p).await.unwrap().etag;
            m.insert_file(p.as_str(), &b"theirs"[..]);
            let (_d, f) = local(b"ours");
            let sent = send_now(&m, &rec("notes.txt", base, true), &f, 4, &opts(via_temp))
                .await
                .unwrap();
            let Sent::Conflict { copy, .. } = sent else {
                panic!("expected a conflict")
            };
            assert!(copy.name().starts_with("notes (conflicted copy box "));
            assert!(copy.name().ends_with(").txt"));
            assert_eq!(m.file_bytes(p.as_str()).unwrap(), b"theirs");
            assert_eq!(m.file_bytes(copy.as_str()).unwrap(), b"ours");
        }
    }

    #[tokio::test]
    async fn a_file_created_elsewhere_meanwhile_is_a_conflict_unless_identical() {
        for via_temp in [true, false] {
            let m = MemRemote::new();
            let p = RemotePath::new("n").unwrap();
            m.insert_file(p.as_str(), &b"same"[..]);
            let (_d, f) = local(b"same");
            assert!(matches!(
                send_now(&m, &rec("n", None, false), &f, 4, &opts(via_temp))
                    .await
                    .unwrap(),
                Sent::Uploaded(_)
            ));
            m.insert_file(p.as_str(), &b"else"[..]);
            let sent = send_now(&m, &rec("n", None, false), &f, 4, &opts(via_temp))
                .await
                .unwrap();
            let Sent::Conflict { copy, .. } = sent else {
                panic!("expected a conflict")
            };
            assert_eq!(m.file_bytes(p.as_str()).unwrap(), b"else");
            assert_eq!(m.file_bytes(copy.as_str()).unwrap(), b"same");
            let left = m
                .paths()
                .iter()
                .filter(|x| x.contains(transfer::temp::TEMP_PREFIX))
                .count();
            assert_eq!(left, 0);
        }
    }

    #[tokio::test]
    async fn a_file_that_fits_once_but_not_twice_is_replaced_in_place() {
        let m = MemRemote::with_quota(1000);
        let p = RemotePath::new("big").unwrap();
        m.insert_file(p.as_str(), vec![1u8; 700]);
        let base = m.stat(&p).await.unwrap().etag;
        let (_d, f) = local(&[2u8; 700]);
        let sent = send_now(&m, &rec("big", base, true), &f, 700, &opts(true))
            .await
            .unwrap();
        assert!(matches!(sent, Sent::Uploaded(_)));
        assert_eq!(m.file_bytes("big").unwrap(), vec![2u8; 700]);
        assert_eq!(m.paths(), vec!["big".to_string()]);
        // A file that does not fit at all still gets the 507.
        let (_d, f) = local(&[3u8; 1200]);
        let base = m.stat(&p).await.unwrap().etag;
        let err = send_now(&m, &rec("big", base, true), &f, 1200, &opts(true))
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::InsufficientStorage { .. }));
        assert_eq!(m.file_bytes("big").unwrap(), vec![2u8; 700]);
    }

    /// Found by the vfs model (seed 754caa62, after its EIO was fixed): the server already had
    /// the file (our own upload, landed just before a crash), the restart's upload of it was
    /// refused and compared with it while a truncate cut the local file, and the failed compare
    /// left the temporary copy on the server. The truncated version's upload then took that
    /// copy for proof that the earlier upload had not landed, and made a false conflict copy.
    #[tokio::test]
    async fn a_compare_that_fails_leaves_no_temporary_copy() {
        let m = MemRemote::new();
        m.insert_file("a", vec![7u8; 3000]);
        // Sent as 3000 bytes; cut to 1000 once on the server (after the check before the MOVE).
        let (_d, f) = local(&[7u8; 1000]);
        let err = send_now(&m, &rec("a", None, false), &f, 3000, &opts(true))
            .await
            .expect_err("the compare cannot read 3000 bytes");
        assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
        assert_eq!(m.paths(), vec!["a".to_string()], "no temporary copy left");
        assert_eq!(m.file_bytes("a").unwrap(), vec![7u8; 3000]);
    }

    #[tokio::test]
    async fn a_conflict_copy_is_never_copied_again() {
        let m = MemRemote::new();
        let p = RemotePath::new("a (conflicted copy x 2026-01-01 000000).txt").unwrap();
        m.insert_file(p.as_str(), &b"v1"[..]);
        let base = m.stat(&p).await.unwrap().etag;
        m.insert_file(p.as_str(), &b"v2 elsewhere"[..]);
        let (_d, f) = local(b"mine");
        let r = rec(p.as_str(), base, true);
        assert!(matches!(
            send_now(&m, &r, &f, 4, &opts(true)).await.unwrap(),
            Sent::Uploaded(_)
        ));
        assert_eq!(m.file_bytes(p.as_str()).unwrap(), b"mine");
        assert_eq!(m.paths().len(), 1);
    }

    /// The base a file staged from a listing without ETags gets: a stand-in (size, mtime).
    async fn listed_base(m: &MemRemote, path: &str) -> Option<ETag> {
        let p = RemotePath::new(path).unwrap();
        let parent = p.parent_or_root();
        let l = m.list(&parent).await.unwrap();
        let e = l.children.iter().find(|e| e.path == p).unwrap();
        assert_eq!(e.etag, None, "the listing has no ETag");
        version::of(e)
    }

    #[tokio::test]
    async fn a_server_that_lists_no_etags_keeps_changes_made_elsewhere() {
        use crate::remote::mem::ETagReport;
        for report in [ETagReport::NotInListings, ETagReport::Nowhere] {
            for via_temp in [true, false] {
                let m = MemRemote::new();
                m.set_etag_report(report);
                m.insert_file("d/c.txt", &b"base"[..]);
                let base = listed_base(&m, "d/c.txt").await;
                assert!(base.as_ref().is_some_and(ETag::is_stand_in));
                // Another client's edit (the pre-upload stat may well have an ETag now).
                m.insert_file("d/c.txt", &b"theirs"[..]);
                let (_d, f) = local(b"base+ours");
                let r = rec("d/c.txt", base, true);
                let sent = send_now(&m, &r, &f, 9, &opts(via_temp)).await.unwrap();
                let Sent::Conflict { copy, .. } = sent else {
                    panic!("{report:?} via_temp={via_temp}: the other edit was overwritten")
                };
                assert_eq!(m.file_bytes("d/c.txt").unwrap(), b"theirs");
                assert_eq!(m.file_bytes(copy.as_str()).unwrap(), b"base+ours");
            }
        }
    }

    #[tokio::test]
    async fn a_same_size_edit_is_seen_by_its_mtime_when_there_are_no_etags() {
        use crate::remote::mem::ETagReport;
        let m = MemRemote::new();
        m.set_etag_report(ETagReport::Nowhere);
        m.insert_file("c.txt", &b"base"[..]);
        let old = SystemTime::now() - Duration::from_secs(10);
        m.set_mtime("c.txt", old);
        let base = listed_base(&m, "c.txt").await;
        m.insert_file("c.txt", &b"BASE"[..]);
        let (_d, f) = local(b"mine");
        let sent = send_now(&m, &rec("c.txt", base, true), &f, 4, &opts(true))
            .await
            .unwrap();
        assert!(matches!(sent, Sent::Conflict { .. }), "{sent:?}");
        assert_eq!(m.file_bytes("c.txt").unwrap(), b"BASE");
    }

    #[tokio::test]
    async fn an_unchanged_file_without_listed_etags_is_replaced_without_a_conflict() {
        use crate::remote::mem::ETagReport;
        for report in [ETagReport::NotInListings, ETagReport::Nowhere] {
            for via_temp in [true, false] {
                let m = MemRemote::new();
                m.set_etag_report(report);
                m.insert_file("c.txt", &b"base"[..]);
                let base = listed_base(&m, "c.txt").await;
                let (_d, f) = local(b"base+ours");
                let r = rec("c.txt", base, true);
                let Sent::Uploaded(placed) =
                    send_now(&m, &r, &f, 9, &opts(via_temp)).await.unwrap()
                else {
                    panic!("{report:?} via_temp={via_temp}: a false conflict")
                };
                assert_eq!(m.file_bytes("c.txt").unwrap(), b"base+ours");
                assert_eq!(m.paths(), vec!["c.txt".to_string()]);
                // The next change is based on a version the next check can compare.
                let next = placed.as_ref().and_then(version::of);
                let now = m.stat(&r.path).await.unwrap();
                assert_eq!(version::check(next.as_ref(), &now), Verdict::Same);
            }
        }
    }

    #[tokio::test]
    async fn a_base_that_cannot_be_compared_is_a_conflict_never_an_overwrite() {
        for via_temp in [true, false] {
            let m = MemRemote::new();
            m.insert_file("c.txt", &b"theirs"[..]);
            let (_d, f) = local(b"ours");
            let sent = send_now(&m, &rec("c.txt", None, true), &f, 4, &opts(via_temp))
                .await
                .unwrap();
            let Sent::Conflict { copy, .. } = sent else {
                panic!("unknown base taken for unchanged")
            };
            assert_eq!(m.file_bytes("c.txt").unwrap(), b"theirs");
            assert_eq!(m.file_bytes(copy.as_str()).unwrap(), b"ours");
            // Unless the server has exactly our bytes already.
            let m = MemRemote::new();
            m.insert_file("c.txt", &b"ours"[..]);
            let sent = send_now(&m, &rec("c.txt", None, true), &f, 4, &opts(via_temp))
                .await
                .unwrap();
            assert!(matches!(sent, Sent::Uploaded(_)));
            assert_eq!(m.paths(), vec!["c.txt".to_string()]);
        }
    }

    #[tokio::test]
    async fn deleted_on_the_server_meanwhile_is_uploaded_again() {
        let m = MemRemote::new();
        let (_d, f) = local(b"kept");
        let r = rec("gone.txt", ETag::parse("\"old\""), true);
        assert!(matches!(
            send_now(&m, &r, &f, 4, &opts(true)).await.unwrap(),
            Sent::Uploaded(_)
        ));
        assert_eq!(m.file_bytes(r.path.as_str()).unwrap(), b"kept");
    }
}
