//! Sending one dirty file to the server, without ever destroying the server's copy.
//!
//! - **Via a temporary name** (default): the content is PUT to
//!   `.cloudmount-upload-<cache id>-<record id>.part` beside the target and MOVEd over it. A
//!   PUT cut midway then leaves only a stray temporary file, never a truncated target
//!   (rclone's server truncates the target on an aborted PUT). `Overwrite: F` on the MOVE
//!   makes "the file is new" a server-side check.
//! - **Directly**: one conditional PUT (`If-Match` / `If-None-Match: *`), for servers whose PUT
//!   is atomic. Also the fallback when the server has no room for the temporary copy beside
//!   the old one (507 on the temporary PUT of a file that exists): then a PUT cut midway on a
//!   server whose PUT is not atomic could still damage the old copy — the price of fitting.
//!
//! Conflicts: when the server's copy is not the version the change was based on (or a file
//! appeared where ours is new), both are kept: the server's version keeps the name and ours
//! goes to a conflict copy (see [`super::conflict`]). Versions are compared by
//! [`crate::remote::version::check`]: ETag with ETag, or (on servers that list no ETag) size
//! and last-modified time with size and last-modified time; when the check cannot tell, the
//! server's copy counts as changed. A file that is itself a conflict copy is
//! never copied again: the newer version wins. A false conflict (the server already has exactly
//! our bytes, e.g. our own upload whose confirmation was lost in a crash) is recognised by
//! comparing sizes and then the bytes, and counts as uploaded.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use futures_util::StreamExt;

use super::conflict;
use super::queue::UploadOptions;
use crate::meta::DirtyRecord;
use crate::remote::version::{self, Verdict};
use crate::remote::{
    ByteRange, ETag, Entry, EntryKind, PutBody, PutCondition, PutOutcome, Remote, RemoteError,
    RemotePath, RemoteResult,
};

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

tokio::task_local! {
    /// The bytes the running upload has sent, counted by its body as the HTTP client reads it
    /// (set by the upload worker around one record's upload; see `UploadQueue::sent_counter`).
    pub(super) static SENT: std::sync::Arc<std::sync::atomic::AtomicU64>;
}

/// The `len` bytes of `file` as a body; within an upload worker's record (see [`SENT`]), its
/// bytes are counted as they are read for sending (from 0 at each attempt).
fn file_body(file: &Path, len: u64) -> PutBody {
    use std::sync::atomic::Ordering;
    let plain = PutBody::File {
        path: file.to_path_buf(),
        len,
    };
    let Ok(counter) = SENT.try_with(|c| c.clone()) else {
        return plain;
    };
    let make = move || -> crate::remote::ByteStream {
        counter.store(0, Ordering::Relaxed);
        let counter = counter.clone();
        Box::pin(plain.open().map(move |piece| {
            if let Ok(b) = &piece {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            piece
        }))
    };
    PutBody::Stream {
        len,
        make: std::sync::Arc::new(make),
    }
}

/// The `size` bytes of `file` as a replayable body; zeros where the file is shorter by the
/// time it is read. Only for temporary copies that are checked before they are used.
fn padded_body(file: &Path, size: u64) -> PutBody {
    use std::sync::atomic::{AtomicU64, Ordering};
    const PIECE: u64 = 256 * 1024;
    let content = file_body(file, size);
    let make = move || -> crate::remote::ByteStream {
        // The file's own stream (at most `size` bytes), then zeros for what it lacked.
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let counted = {
            let sent = sent.clone();
            content.open().map(move |piece| {
                if let Ok(b) = &piece {
                    sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                piece
            })
        };
        let zeros = futures_util::stream::once(async move { sent.load(Ordering::Relaxed) })
            .flat_map(move |got| {
                let missing = size.saturating_sub(got);
                futures_util::stream::iter((0..missing.div_ceil(PIECE)).map(move |k| {
                    let n = (missing - k * PIECE).min(PIECE) as usize;
                    Ok(bytes::Bytes::from(vec![0u8; n]))
                }))
            });
        Box::pin(counted.chain(zeros))
    };
    PutBody::Stream {
        len: size,
        make: std::sync::Arc::new(make),
    }
}

/// The temporary name an upload of record `id` of the cache `tag` (its `cache_id`) uses
/// beside `path`: `.cloudmount-upload-<tag>-<id>.part`.
pub(crate) fn temp_path(path: &RemotePath, tag: &str, id: i64) -> RemoteResult<RemotePath> {
    let parent = path.parent().unwrap_or_else(RemotePath::root);
    parent.join(&format!("{TEMP_PREFIX}{tag}-{id}.part"))
}

/// Whose temporary upload file `name` is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TempOwner {
    /// Not a temporary upload name.
    NotTemp,
    /// Of the cache `tag` (compare with ours), record `id`.
    Cache { tag: String, id: i64 },
    /// A temporary name of another form (an older version's `<id>.part`).
    Unknown,
}

/// Parses a name made by [`temp_path`].
pub(crate) fn temp_owner(name: &str) -> TempOwner {
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

/// Names starting with this are our uploads in progress: hidden from listings.
pub(crate) const TEMP_PREFIX: &str = ".cloudmount-upload-";

/// Uploads `file` (`size` bytes) as the content of `rec.path`. `unchanged` says whether the
/// file is still the version being sent (nothing wrote to it since the upload began): checked
/// once the temporary copy is on the server, before it is moved into place. `Ok(None)`: nothing
/// was placed because the file changed meanwhile (its new content is committed, or will be at
/// its close, and uploaded then).
pub(crate) async fn send(
    remote: &dyn Remote,
    rec: &DirtyRecord,
    file: &Path,
    size: u64,
    opts: &UploadOptions,
    temp_tag: &str,
    unchanged: &(dyn Fn() -> bool + Send + Sync),
) -> RemoteResult<Option<Sent>> {
    let path = &rec.path;
    let is_copy = conflict::is_conflict_copy(path.name());
    // Whether the target may be replaced, and whether we already know it conflicts.
    let mut overwrite = false;
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
            Some(e) => {
                overwrite = true;
                let verdict = version::check(rec.base_etag.as_ref(), &e);
                if verdict != Verdict::Same && !is_copy {
                    if verdict == Verdict::Unknown {
                        tracing::info!(path = %path, base = ?rec.base_etag, "cannot tell whether the server's copy is the version this change was based on: treated as changed");
                    }
                    if ours_before(remote, rec, &e).await? {
                        let mut r = rec.clone();
                        r.base_etag = version::of(&e);
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
        overwrite = true;
    } else if rec.prior_move.is_some() {
        // New here, but an earlier version's upload may have put it there before a crash.
        if let Some(e) = current(remote, path).await? {
            if !e.is_dir() && ours_before(remote, rec, &e).await? {
                overwrite = true;
            }
        }
    }
    let rec = rebased.as_ref().unwrap_or(rec);
    if let Some(server) = conflicting {
        if same_content(remote, path, &server, file, size).await? {
            return Ok(Some(Sent::Uploaded(Some(server))));
        }
        return to_conflict_copy(remote, rec, file, size, opts, None)
            .await
            .map(Some);
    }
    if opts.via_temp {
        let temp = temp_path(path, temp_tag, rec.id)?;
        // A file cut short meanwhile is padded to `size`, so that the PUT ends normally (an
        // aborted PUT can leave a partial file that a DELETE right after does not reach while
        // the server is still writing it); the check below then throws the copy away.
        match remote.put_unversioned(&temp, padded_body(file, size)).await {
            Ok(_) if !unchanged() => {
                if let Err(e) = remote.delete(&temp).await {
                    tracing::debug!(error = %e, temp = %temp, "could not remove the temporary upload");
                }
                return Ok(None);
            }
            Ok(_) => {}
            Err(RemoteError::InsufficientStorage { .. }) if overwrite => {
                // Not room for two copies at once: replace the file in place instead, with a
                // conditional PUT (atomic on most servers; see the module docs).
                let _ = remote.delete(&temp).await;
                tracing::info!(path = %path, "not enough space on the server for a temporary copy; uploading in place");
                return put_in_place(remote, rec, file, size, opts, overwrite, is_copy)
                    .await
                    .map(Some);
            }
            Err(e) => {
                // A broken PUT may leave a partial temporary file; the retry overwrites it,
                // but do not leave it if we can help it.
                let _ = remote.delete(&temp).await;
                return Err(e);
            }
        }
        match remote.rename(&temp, path, overwrite).await {
            Ok(()) => Ok(Some(Sent::Uploaded(stat_placed(remote, path).await))),
            Err(
                e @ (RemoteError::AlreadyExists { .. } | RemoteError::PreconditionFailed { .. }),
            ) => {
                let Some(server) = current(remote, path).await? else {
                    // Refused, yet nothing is there: not a conflict; retried later.
                    let _ = remote.delete(&temp).await;
                    return Err(e);
                };
                // A file appeared where ours is new (or changed since the check).
                if same_content(remote, path, &server, file, size).await? {
                    let _ = remote.delete(&temp).await;
                    return Ok(Some(Sent::Uploaded(Some(server))));
                }
                to_conflict_copy(remote, rec, file, size, opts, Some(&temp))
                    .await
                    .map(Some)
            }
            Err(e) => {
                if let Err(d) = remote.delete(&temp).await {
                    tracing::debug!(error = %d, temp = %temp, "could not remove the temporary upload");
                }
                Err(e)
            }
        }
    } else {
        put_in_place(remote, rec, file, size, opts, overwrite, is_copy)
            .await
            .map(Some)
    }
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

/// One conditional PUT straight onto the target.
async fn put_in_place(
    remote: &dyn Remote,
    rec: &DirtyRecord,
    file: &Path,
    size: u64,
    opts: &UploadOptions,
    overwrite: bool,
    is_copy: bool,
) -> RemoteResult<Sent> {
    let path = &rec.path;
    let cond = if overwrite {
        match (&rec.base_etag, rec.on_server && !is_copy) {
            // A stand-in is no tag of the server's: checked by `send` only.
            (Some(b), true) if !b.is_stand_in() => PutCondition::IfMatch(b.clone()),
            _ => PutCondition::None,
        }
    } else {
        PutCondition::IfNoneMatch
    };
    let body = file_body(file, size);
    match remote.put(path, body, cond).await {
        Ok(PutOutcome { etag: Some(etag) }) => Ok(Sent::Uploaded(Some(Entry {
            path: path.clone(),
            kind: EntryKind::File,
            size,
            mtime: None,
            etag: Some(etag),
            content_type: None,
        }))),
        Ok(PutOutcome { etag: None }) => Ok(Sent::Uploaded(stat_placed(remote, path).await)),
        Err(RemoteError::PreconditionFailed { .. }) => {
            if let Some(server) = current(remote, path).await? {
                if same_content(remote, path, &server, file, size).await? {
                    return Ok(Sent::Uploaded(Some(server)));
                }
            }
            to_conflict_copy(remote, rec, file, size, opts, None).await
        }
        Err(e) => Err(e),
    }
}

/// What the server has at `path` after we placed a file there (`None`: could not be learnt).
async fn stat_placed(remote: &dyn Remote, path: &RemotePath) -> Option<Entry> {
    match remote.stat(path).await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!(error = %e, path = %path, "no version after upload");
            None
        }
    }
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
    let parent = rec.path.parent().unwrap_or_else(RemotePath::root);
    let stamp = conflict::timestamp(SystemTime::now());
    for n in 1..=20 {
        let name = conflict::conflict_name(rec.path.name(), &opts.device, &stamp, n);
        let copy = parent.join(&name)?;
        let placed = match temp {
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
        match placed {
            Ok(()) => {
                tracing::warn!(path = %rec.path, copy = %copy, "conflict: the server's version keeps the name, ours was uploaded as a conflict copy");
                return Ok(Sent::Conflict {
                    copy_etag: stat_placed(remote, &copy).await.and_then(|e| e.etag),
                    copy,
                });
            }
            Err(RemoteError::AlreadyExists { .. })
            | Err(RemoteError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RemoteError::BadResponse {
        method: "MOVE".into(),
        url: rec.path.to_string(),
        reason: "no free conflict-copy name".into(),
    })
}

/// What the server has at `path` now (`None`: nothing).
async fn current(remote: &dyn Remote, path: &RemotePath) -> RemoteResult<Option<Entry>> {
    match remote.stat(path).await {
        Ok(e) => Ok(Some(e)),
        Err(RemoteError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the server's `path`, found as `server`, holds exactly the `size` bytes of `file`.
async fn same_content(
    remote: &dyn Remote,
    path: &RemotePath,
    server: &Entry,
    file: &Path,
    size: u64,
) -> RemoteResult<bool> {
    if server.is_dir() || server.size != size {
        return Ok(false);
    }
    if size == 0 {
        return Ok(true);
    }
    let f = std::fs::File::open(file).map_err(RemoteError::Io)?;
    let resp = remote
        .read_range(path, ByteRange::from(0), server.etag.as_ref())
        .await?;
    let mut body = resp.body;
    let mut pos = 0u64;
    let mut local = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if pos + chunk.len() as u64 > size {
            return Ok(false);
        }
        local.resize(chunk.len(), 0);
        f.read_exact_at(&mut local, pos).map_err(RemoteError::Io)?;
        if local != chunk {
            return Ok(false);
        }
        pos += chunk.len() as u64;
    }
    Ok(pos == size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DirtyState;
    use crate::remote::mem::MemRemote;
    use std::time::Duration;

    /// Within an upload worker's record, a file body counts the bytes read from it for sending,
    /// from 0 at each attempt; outside one it is a plain file body.
    #[tokio::test]
    async fn a_file_body_counts_what_it_sends() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        assert!(matches!(file_body(&f, 3 << 20), PutBody::File { .. }));
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        SENT.scope(sent.clone(), async {
            let body = file_body(&f, 3 << 20);
            for attempt in 0..2 {
                let mut stream = body.open();
                let first = stream.next().await.unwrap().unwrap();
                assert_eq!(
                    sent.load(Ordering::Relaxed),
                    first.len() as u64,
                    "attempt {attempt}"
                );
                let mut total = first.len() as u64;
                while let Some(piece) = stream.next().await {
                    total += piece.unwrap().len() as u64;
                }
                assert_eq!(total, 3 << 20);
                assert_eq!(sent.load(Ordering::Relaxed), 3 << 20);
            }
        })
        .await;
    }

    /// [`send`] of a file nothing writes to meanwhile: it is always placed.
    async fn send_now(
        remote: &dyn Remote,
        rec: &DirtyRecord,
        file: &Path,
        size: u64,
        opts: &UploadOptions,
    ) -> RemoteResult<Sent> {
        send(remote, rec, file, size, opts, "0123456789abcdef", &|| true)
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

    #[test]
    fn temporary_names_say_whose_upload_they_are() {
        let p = temp_path(&RemotePath::new("d/f.txt").unwrap(), "0123456789abcdef", 42).unwrap();
        assert_eq!(p.as_str(), "d/.cloudmount-upload-0123456789abcdef-42.part");
        assert_eq!(
            temp_owner(p.name()),
            TempOwner::Cache {
                tag: "0123456789abcdef".into(),
                id: 42
            }
        );
        assert_eq!(temp_owner("f.txt"), TempOwner::NotTemp);
        for other in [
            ".cloudmount-upload-42.part",
            ".cloudmount-upload-0123456789abcdef-x.part",
            ".cloudmount-upload-0123-42.part",
            ".cloudmount-upload-0123456789abcdef-42",
        ] {
            assert_eq!(temp_owner(other), TempOwner::Unknown, "{other}");
        }
    }

    #[tokio::test]
    async fn a_temporary_body_is_padded_to_its_length_when_the_file_is_cut_short() {
        let (_d, f) = local(b"new");
        let mut body = padded_body(&f, 11).open();
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"new\0\0\0\0\0\0\0\0");
        // Longer than `size`: only `size` bytes.
        let (_d2, f2) = local(&[5u8; 300_000]);
        let mut body = padded_body(&f2, 262_145).open();
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            let c = chunk.unwrap();
            assert!(c.iter().all(|&b| b == 5));
            n += c.len();
        }
        assert_eq!(n, 262_145);
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
            &|| false,
        )
        .await
        .unwrap();
        assert!(sent.is_none(), "nothing placed");
        assert_eq!(m.file_bytes(p.as_str()).unwrap(), b"old");
        let left = m.paths().iter().filter(|x| x.contains(TEMP_PREFIX)).count();
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
                !names.iter().any(|n| n.contains(TEMP_PREFIX)),
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
            let left = m.paths().iter().filter(|x| x.contains(TEMP_PREFIX)).count();
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
        let parent = p.parent().unwrap_or_else(RemotePath::root);
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
