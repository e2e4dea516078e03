use super::*;
use crate::remote::MaybeListing;
use std::sync::Arc;

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

async fn read(r: &MemRemote, path: &str, range: ByteRange) -> RemoteResult<Vec<u8>> {
    let resp = r.read_range(&p(path), range, None).await?;
    Ok(resp.bytes().await?.to_vec())
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A streamed body that yields `chunks`, then fails when `fail` is set.
fn stream_body(len: u64, chunks: Vec<&'static [u8]>, fail: bool) -> PutBody {
    PutBody::Stream {
        len,
        make: Arc::new(move || {
            let mut items: Vec<RemoteResult<Bytes>> =
                chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
            if fail {
                items.push(Err(RemoteError::Transient {
                    method: "PUT".into(),
                    url: "test".into(),
                    reason: "body broke".into(),
                }));
            }
            Box::pin(futures_util::stream::iter(items))
        }),
    }
}

#[tokio::test]
async fn root_exists_and_is_empty() {
    let r = MemRemote::new();
    let e = r.stat(&RemotePath::root()).await.unwrap();
    assert!(e.is_dir());
    assert_eq!(e.size, 0);
    assert!(e.etag.is_some());
    let l = r.list(&RemotePath::root()).await.unwrap();
    assert!(l.dir.path.is_root());
    assert!(l.children.is_empty());
}

#[tokio::test]
async fn stat_file_dir_and_missing() {
    let r = MemRemote::new();
    let tag = r.insert_file("a/b.txt", "hello");
    let e = r.stat(&p("a/b.txt")).await.unwrap();
    assert_eq!(e.kind, EntryKind::File);
    assert_eq!(e.size, 5);
    assert_eq!(e.etag, Some(tag));
    assert_eq!(e.name(), "b.txt");
    assert!(e.mtime.is_some());
    assert!(r.stat(&p("a")).await.unwrap().is_dir());
    assert!(r.stat(&p("nope")).await.unwrap_err().is_not_found());
    // Below a file there is nothing.
    assert!(r.stat(&p("a/b.txt/x")).await.unwrap_err().is_not_found());
    let err = r.stat(&p("nope")).await.unwrap_err();
    assert!(err.to_string().contains("mem:/nope"), "{err}");
}

#[tokio::test]
async fn mtime_has_whole_seconds() {
    let r = MemRemote::new();
    r.insert_file("f", "x");
    let m = r.stat(&p("f")).await.unwrap().mtime.unwrap();
    assert_eq!(m.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 0);
    let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert!(r.set_mtime("f", t));
    assert_eq!(r.stat(&p("f")).await.unwrap().mtime, Some(t));
    assert!(!r.set_mtime("g", t));
}

#[tokio::test]
async fn list_gives_direct_children_only() {
    let r = MemRemote::new();
    r.insert_file("d/one", "1");
    r.insert_file("d/two", "22");
    r.insert_file("d/sub/deep", "333");
    r.insert_file("d-sibling", "x");
    r.insert_file("d0", "x");
    let l = r.list(&p("d")).await.unwrap();
    assert_eq!(l.dir.path, p("d"));
    let mut names: Vec<(String, EntryKind, u64)> = l
        .children
        .iter()
        .map(|e| (e.name().to_string(), e.kind, e.size))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        vec![
            ("one".to_string(), EntryKind::File, 1),
            ("sub".to_string(), EntryKind::Dir, 0),
            ("two".to_string(), EntryKind::File, 2),
        ]
    );
    for c in &l.children {
        assert_eq!(c.path.parent().unwrap(), p("d"));
        assert!(c.etag.is_some());
    }
    let root: Vec<String> = r
        .list(&RemotePath::root())
        .await
        .unwrap()
        .children
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(root.len(), 3, "{root:?}");
    assert!(matches!(
        r.list(&p("d/one")).await,
        Err(RemoteError::NotADirectory { .. })
    ));
    assert!(r.list(&p("missing")).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn odd_names_are_kept_byte_for_byte() {
    let r = MemRemote::new();
    let names = [
        "a b", "100%", "#hash", "what?", "a&b+c", "it's", "\"q\"", "é", "e\u{301}", "😀", "中文",
    ];
    for n in names {
        let path = RemotePath::root().join("dir").unwrap().join(n).unwrap();
        r.mkdir(&RemotePath::new("dir").unwrap()).await.ok();
        r.put(
            &path,
            PutBody::from(n.as_bytes().to_vec()),
            PutCondition::None,
        )
        .await
        .unwrap();
    }
    let l = r.list(&p("dir")).await.unwrap();
    assert_eq!(l.children.len(), names.len());
    for n in names {
        let path = RemotePath::root().join("dir").unwrap().join(n).unwrap();
        let got = r.read_range(&path, ByteRange::whole(), None).await.unwrap();
        assert_eq!(got.bytes().await.unwrap(), n.as_bytes());
    }
}

#[tokio::test]
async fn read_range_gives_exactly_the_range() {
    let r = MemRemote::new();
    let d = data(200_000);
    r.insert_file("f", d.clone());
    let cases: &[(u64, Option<u64>)] = &[
        (0, Some(1)),
        (0, Some(4096)),
        (4095, Some(2)),
        (65_536, Some(65_536)),
        (1000, Some(150_000)),
        (199_990, Some(100)),
        (199_999, Some(1)),
        (0, None),
        (123_456, None),
        (0, Some(0)),
    ];
    for &(start, len) in cases {
        let range = ByteRange { start, len };
        let got = read(&r, "f", range).await.unwrap();
        let end = range.end().map_or(d.len(), |e| (e as usize).min(d.len()));
        assert_eq!(got, &d[start as usize..end], "range {range:?}");
    }
    // At and past EOF: empty.
    assert!(read(&r, "f", ByteRange::new(200_000, 10))
        .await
        .unwrap()
        .is_empty());
    assert!(read(&r, "f", ByteRange::from(300_000))
        .await
        .unwrap()
        .is_empty());
    let resp = r
        .read_range(&p("f"), ByteRange::new(10, 10), None)
        .await
        .unwrap();
    assert_eq!(resp.total_size, Some(200_000));
    assert_eq!(resp.etag, r.etag("f"));
}

#[tokio::test]
async fn read_range_of_an_empty_file() {
    let r = MemRemote::new();
    r.insert_file("empty", Vec::new());
    assert!(read(&r, "empty", ByteRange::whole())
        .await
        .unwrap()
        .is_empty());
    assert!(read(&r, "empty", ByteRange::new(0, 10))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn read_range_checks_the_version() {
    let r = MemRemote::new();
    let old = r.insert_file("f", "version one");
    let resp = r
        .read_range(&p("f"), ByteRange::new(0, 7), Some(&old))
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "version");
    let new = r.insert_file("f", "version two");
    assert_ne!(old, new);
    match r.read_range(&p("f"), ByteRange::whole(), Some(&old)).await {
        Err(RemoteError::VersionChanged {
            expected, actual, ..
        }) => {
            assert_eq!(expected, old);
            assert_eq!(actual, new.value());
        }
        other => panic!("expected VersionChanged, got {other:?}"),
    }
    // A weak spelling of the same version is the same version.
    let weak = ETag::parse(&format!("W/\"{}\"", new.value())).unwrap();
    assert!(r
        .read_range(&p("f"), ByteRange::whole(), Some(&weak))
        .await
        .is_ok());
}

#[tokio::test]
async fn read_range_errors() {
    let r = MemRemote::new();
    r.insert_dir("d");
    assert!(matches!(
        r.read_range(&p("d"), ByteRange::whole(), None).await,
        Err(RemoteError::IsADirectory { .. })
    ));
    assert!(r
        .read_range(&p("x"), ByteRange::whole(), None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn put_creates_and_replaces_with_new_etags() {
    let r = MemRemote::new();
    let out = r
        .put(&p("f"), PutBody::from(&b"one"[..]), PutCondition::None)
        .await
        .unwrap();
    let e1 = out.etag.unwrap();
    assert_eq!(r.stat(&p("f")).await.unwrap().etag.as_ref(), Some(&e1));
    assert_eq!(r.file_bytes("f").unwrap(), b"one");
    let e2 = r
        .put(&p("f"), PutBody::from(&b"second"[..]), PutCondition::None)
        .await
        .unwrap()
        .etag
        .unwrap();
    assert_ne!(e1, e2);
    // Same content, new write: still a new version.
    let e3 = r
        .put(&p("f"), PutBody::from(&b"second"[..]), PutCondition::None)
        .await
        .unwrap()
        .etag
        .unwrap();
    assert_ne!(e2, e3);
    assert_eq!(r.file_bytes("f").unwrap(), b"second");
    assert_eq!(r.stat(&p("f")).await.unwrap().size, 6);
    // Empty body.
    r.put(&p("f"), PutBody::from(Vec::new()), PutCondition::None)
        .await
        .unwrap();
    assert_eq!(r.file_bytes("f").unwrap(), b"");
}

#[tokio::test]
async fn put_from_file_and_stream_bodies() {
    let r = MemRemote::new();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("src.bin");
    let d = data(700_000);
    std::fs::write(&local, &d).unwrap();
    r.put(
        &p("big"),
        PutBody::File {
            path: local,
            len: d.len() as u64,
        },
        PutCondition::None,
    )
    .await
    .unwrap();
    assert_eq!(r.file_bytes("big").unwrap(), d);
    r.put(
        &p("s"),
        stream_body(6, vec![b"ab", b"", b"cdef"], false),
        PutCondition::None,
    )
    .await
    .unwrap();
    assert_eq!(r.file_bytes("s").unwrap(), b"abcdef");
}

#[tokio::test]
async fn put_needs_a_parent_collection() {
    let r = MemRemote::new();
    assert!(matches!(
        r.put(&p("no/f"), PutBody::from(&b"x"[..]), PutCondition::None)
            .await,
        Err(RemoteError::MissingParent { .. })
    ));
    r.insert_file("file", "x");
    assert!(matches!(
        r.put(&p("file/f"), PutBody::from(&b"x"[..]), PutCondition::None)
            .await,
        Err(RemoteError::MissingParent { .. })
    ));
    assert!(!r.exists("no/f"));
    assert!(!r.exists("no"));
}

#[tokio::test]
async fn put_onto_a_collection_fails() {
    let r = MemRemote::new();
    r.insert_file("d/child", "x");
    for path in ["d", ""] {
        assert!(matches!(
            r.put(&p(path), PutBody::from(&b"x"[..]), PutCondition::None)
                .await,
            Err(RemoteError::IsADirectory { .. })
        ));
    }
    assert!(r.stat(&p("d")).await.unwrap().is_dir());
    assert_eq!(r.file_bytes("d/child").unwrap(), b"x");
}

#[tokio::test]
async fn conditional_put() {
    let r = MemRemote::new();
    let v1 = r.insert_file("f", "v1");
    let v2 = r
        .put(
            &p("f"),
            PutBody::from(&b"v2"[..]),
            PutCondition::IfMatch(v1.clone()),
        )
        .await
        .unwrap()
        .etag
        .unwrap();
    // Stale If-Match.
    assert!(matches!(
        r.put(
            &p("f"),
            PutBody::from(&b"v3"[..]),
            PutCondition::IfMatch(v1)
        )
        .await,
        Err(RemoteError::PreconditionFailed { .. })
    ));
    assert_eq!(r.file_bytes("f").unwrap(), b"v2");
    assert_eq!(r.etag("f"), Some(v2.clone()));
    // If-Match on a missing file.
    assert!(matches!(
        r.put(
            &p("g"),
            PutBody::from(&b"x"[..]),
            PutCondition::IfMatch(v2.clone())
        )
        .await,
        Err(RemoteError::PreconditionFailed { .. })
    ));
    assert!(!r.exists("g"));
    // If-None-Match: * on an existing file, and on a collection.
    assert!(matches!(
        r.put(&p("f"), PutBody::from(&b"x"[..]), PutCondition::IfNoneMatch)
            .await,
        Err(RemoteError::PreconditionFailed { .. })
    ));
    r.insert_dir("d");
    assert!(matches!(
        r.put(&p("d"), PutBody::from(&b"x"[..]), PutCondition::IfNoneMatch)
            .await,
        Err(RemoteError::PreconditionFailed { .. })
    ));
    assert_eq!(r.file_bytes("f").unwrap(), b"v2");
    // If-None-Match: * on a new file.
    r.put(
        &p("g"),
        PutBody::from(&b"new"[..]),
        PutCondition::IfNoneMatch,
    )
    .await
    .unwrap();
    assert_eq!(r.file_bytes("g").unwrap(), b"new");
    // If-Match with the current version.
    r.put(
        &p("f"),
        PutBody::from(&b"v3"[..]),
        PutCondition::IfMatch(v2),
    )
    .await
    .unwrap();
    assert_eq!(r.file_bytes("f").unwrap(), b"v3");
}

#[tokio::test]
async fn put_with_a_wrong_length_changes_nothing() {
    let r = MemRemote::new();
    let v1 = r.insert_file("f", "original");
    let short = stream_body(10, vec![b"abc"], false);
    let err = r.put(&p("f"), short, PutCondition::None).await.unwrap_err();
    assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
    let long = stream_body(2, vec![b"abc"], false);
    let err = r.put(&p("f"), long, PutCondition::None).await.unwrap_err();
    assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
    let err = r
        .put(&p("new"), stream_body(1, vec![], false), PutCondition::None)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
    assert_eq!(r.file_bytes("f").unwrap(), b"original");
    assert_eq!(r.etag("f"), Some(v1));
    assert!(!r.exists("new"));
}

#[tokio::test]
async fn put_whose_body_fails_changes_nothing() {
    let r = MemRemote::new();
    let v1 = r.insert_file("f", "original");
    let dir_tag = r.etag("").unwrap();
    let body = stream_body(10, vec![b"abc", b"def"], true);
    let err = r.put(&p("f"), body, PutCondition::None).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("body broke"));
    assert_eq!(r.file_bytes("f").unwrap(), b"original");
    assert_eq!(r.etag("f"), Some(v1));
    let body = stream_body(10, vec![b"abc"], true);
    assert!(r.put(&p("g"), body, PutCondition::None).await.is_err());
    assert!(!r.exists("g"));
    assert_eq!(r.etag("").unwrap(), dir_tag);
    // A missing local file.
    let err = r
        .put(
            &p("f"),
            PutBody::File {
                path: "/nonexistent/cloudmount-test".into(),
                len: 3,
            },
            PutCondition::None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
    assert_eq!(r.file_bytes("f").unwrap(), b"original");
}

#[tokio::test]
async fn mkdir_semantics() {
    let r = MemRemote::new();
    r.mkdir(&p("d")).await.unwrap();
    assert!(r.stat(&p("d")).await.unwrap().is_dir());
    r.mkdir(&p("d/e")).await.unwrap();
    assert!(matches!(
        r.mkdir(&p("d")).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    assert!(matches!(
        r.mkdir(&RemotePath::root()).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    r.insert_file("f", "x");
    assert!(matches!(
        r.mkdir(&p("f")).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    assert!(matches!(
        r.mkdir(&p("x/y")).await,
        Err(RemoteError::MissingParent { .. })
    ));
    assert!(matches!(
        r.mkdir(&p("f/y")).await,
        Err(RemoteError::MissingParent { .. })
    ));
    assert_eq!(r.paths(), vec!["d/", "d/e/", "f"]);
}

#[tokio::test]
async fn delete_semantics() {
    let r = MemRemote::new();
    r.insert_file("d/a", "1");
    r.insert_file("d/sub/b", "2");
    r.insert_file("d-keep", "3");
    r.insert_file("f", "4");
    r.delete(&p("f")).await.unwrap();
    assert!(!r.exists("f"));
    r.delete(&p("d")).await.unwrap();
    assert_eq!(r.paths(), vec!["d-keep"]);
    assert!(r.delete(&p("d")).await.unwrap_err().is_not_found());
    assert!(r.delete(&p("d/a")).await.unwrap_err().is_not_found());
    assert!(matches!(
        r.delete(&RemotePath::root()).await,
        Err(RemoteError::InvalidPath { .. })
    ));
}

#[tokio::test]
async fn dir_etag_changes_with_its_members() {
    let r = MemRemote::new();
    r.insert_dir("d");
    let t0 = r.etag("d").unwrap();
    r.put(&p("d/f"), PutBody::from(&b"x"[..]), PutCondition::None)
        .await
        .unwrap();
    let t1 = r.etag("d").unwrap();
    assert_ne!(t0, t1);
    r.delete(&p("d/f")).await.unwrap();
    assert_ne!(r.etag("d").unwrap(), t1);
}

#[tokio::test]
async fn rename_file() {
    let r = MemRemote::new();
    let tag = r.insert_file("a/f", "content");
    r.insert_dir("b");
    r.rename(&p("a/f"), &p("b/g"), false).await.unwrap();
    assert!(!r.exists("a/f"));
    assert_eq!(r.file_bytes("b/g").unwrap(), b"content");
    // A move keeps the version.
    assert_eq!(r.etag("b/g"), Some(tag));
    assert!(r
        .rename(&p("a/f"), &p("b/h"), false)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(matches!(
        r.rename(&p("b/g"), &p("nope/g"), false).await,
        Err(RemoteError::MissingParent { .. })
    ));
    assert!(r.exists("b/g"));
}

#[tokio::test]
async fn rename_dir_moves_its_subtree() {
    let r = MemRemote::new();
    r.insert_file("a/x", "1");
    r.insert_file("a/s/y", "2");
    r.insert_file("a b", "not moved");
    r.insert_file("a-c", "not moved");
    r.insert_file("a0", "not moved");
    let ty = r.etag("a/s/y");
    r.rename(&p("a"), &p("z"), false).await.unwrap();
    assert_eq!(
        r.paths(),
        vec!["a b", "a-c", "a0", "z/", "z/s/", "z/s/y", "z/x"]
    );
    assert_eq!(r.etag("z/s/y"), ty);
    assert_eq!(r.file_bytes("z/s/y").unwrap(), b"2");
    let l = r.list(&p("z")).await.unwrap();
    assert_eq!(l.children.len(), 2);
}

#[tokio::test]
async fn rename_overwrite_rules() {
    let r = MemRemote::new();
    r.insert_file("f", "source");
    r.insert_file("g", "target");
    assert!(matches!(
        r.rename(&p("f"), &p("g"), false).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    assert_eq!(r.file_bytes("f").unwrap(), b"source");
    assert_eq!(r.file_bytes("g").unwrap(), b"target");
    r.rename(&p("f"), &p("g"), true).await.unwrap();
    assert!(!r.exists("f"));
    assert_eq!(r.file_bytes("g").unwrap(), b"source");

    // A collection replaces a file wholly, and a file replaces a collection wholly.
    r.insert_file("d/inner", "i");
    r.rename(&p("d"), &p("g"), true).await.unwrap();
    assert_eq!(r.paths(), vec!["g/", "g/inner"]);
    r.insert_file("h", "file");
    r.rename(&p("h"), &p("g"), true).await.unwrap();
    assert_eq!(r.paths(), vec!["g"]);
    assert_eq!(r.file_bytes("g").unwrap(), b"file");

    // A collection replacing a collection does not merge.
    r.insert_file("m/one", "1");
    r.insert_file("n/two", "2");
    r.rename(&p("m"), &p("n"), true).await.unwrap();
    assert!(r.exists("n/one"));
    assert!(!r.exists("n/two"));
}

#[tokio::test]
async fn move_or_copy_into_itself_fails() {
    let r = MemRemote::new();
    r.insert_file("d/e/f", "x");
    let before = r.paths();
    for (from, to) in [
        ("d", "d"),
        ("d", "d/e/new"),
        ("d", "d/new"),
        ("d/e/f", "d/e/f"),
    ] {
        for overwrite in [false, true] {
            assert!(
                matches!(
                    r.rename(&p(from), &p(to), overwrite).await,
                    Err(RemoteError::InvalidPath { .. })
                ),
                "rename {from} {to}"
            );
            assert!(
                matches!(
                    r.copy(&p(from), &p(to), overwrite).await,
                    Err(RemoteError::InvalidPath { .. })
                ),
                "copy {from} {to}"
            );
        }
    }
    // Onto its own ancestor: exists (no overwrite) or contains the source (overwrite).
    assert!(matches!(
        r.rename(&p("d/e"), &p("d"), false).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    assert!(matches!(
        r.rename(&p("d/e"), &p("d"), true).await,
        Err(RemoteError::InvalidPath { .. })
    ));
    for overwrite in [false, true] {
        assert!(matches!(
            r.rename(&RemotePath::root(), &p("x"), overwrite).await,
            Err(RemoteError::InvalidPath { .. })
        ));
        assert!(matches!(
            r.copy(&p("d/e"), &RemotePath::root(), overwrite).await,
            Err(RemoteError::InvalidPath { .. })
        ));
    }
    assert_eq!(r.paths(), before);
}

#[tokio::test]
async fn copy_file_and_dir() {
    let r = MemRemote::new();
    let tf = r.insert_file("d/f", "one");
    r.insert_file("d/s/g", "two");
    r.copy(&p("d/f"), &p("f2"), false).await.unwrap();
    assert_eq!(r.file_bytes("f2").unwrap(), b"one");
    assert_eq!(r.file_bytes("d/f").unwrap(), b"one");
    assert_ne!(r.etag("f2"), Some(tf.clone()));
    assert_eq!(r.etag("d/f"), Some(tf));

    r.copy(&p("d"), &p("e"), false).await.unwrap();
    assert_eq!(
        r.paths(),
        vec!["d/", "d/f", "d/s/", "d/s/g", "e/", "e/f", "e/s/", "e/s/g", "f2"]
    );
    assert_eq!(r.file_bytes("e/s/g").unwrap(), b"two");
    assert_ne!(r.etag("e/s/g"), r.etag("d/s/g"));
    assert_ne!(r.etag("e"), r.etag("d"));
    // The copy is independent of the source.
    r.insert_file("e/f", "changed");
    assert_eq!(r.file_bytes("d/f").unwrap(), b"one");
}

#[tokio::test]
async fn copy_errors_and_overwrite() {
    let r = MemRemote::new();
    r.insert_file("f", "src");
    r.insert_file("g", "dst");
    assert!(r
        .copy(&p("x"), &p("y"), false)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(matches!(
        r.copy(&p("f"), &p("no/f"), false).await,
        Err(RemoteError::MissingParent { .. })
    ));
    assert!(matches!(
        r.copy(&p("f"), &p("g"), false).await,
        Err(RemoteError::AlreadyExists { .. })
    ));
    assert_eq!(r.file_bytes("g").unwrap(), b"dst");
    r.copy(&p("f"), &p("g"), true).await.unwrap();
    assert_eq!(r.file_bytes("g").unwrap(), b"src");
    // A collection replaces a collection wholly.
    r.insert_file("a/one", "1");
    r.insert_file("b/two", "2");
    r.copy(&p("a"), &p("b"), true).await.unwrap();
    assert!(r.exists("b/one"));
    assert!(!r.exists("b/two"));
    assert!(r.exists("a/one"));
}

#[tokio::test]
async fn quota_without_limit() {
    let r = MemRemote::new();
    r.insert_file("a", vec![0u8; 100]);
    r.insert_file("d/b", vec![0u8; 50]);
    let q = r.quota().await.unwrap();
    assert_eq!(q.used, Some(150));
    assert_eq!(q.available, None);
}

#[tokio::test]
async fn quota_limit_refuses_puts_and_copies() {
    let r = MemRemote::with_quota(100);
    r.put(&p("a"), PutBody::from(vec![1u8; 60]), PutCondition::None)
        .await
        .unwrap();
    assert_eq!(
        r.quota().await.unwrap(),
        Quota {
            used: Some(60),
            available: Some(40)
        }
    );
    assert!(matches!(
        r.put(&p("b"), PutBody::from(vec![2u8; 41]), PutCondition::None)
            .await,
        Err(RemoteError::InsufficientStorage { .. })
    ));
    assert!(!r.exists("b"));
    // Replacing a file only needs room for the difference.
    r.put(&p("a"), PutBody::from(vec![3u8; 100]), PutCondition::None)
        .await
        .unwrap();
    assert!(matches!(
        r.put(&p("a"), PutBody::from(vec![4u8; 101]), PutCondition::None)
            .await,
        Err(RemoteError::InsufficientStorage { .. })
    ));
    assert_eq!(r.file_bytes("a").unwrap(), vec![3u8; 100]);
    assert!(matches!(
        r.copy(&p("a"), &p("c"), false).await,
        Err(RemoteError::InsufficientStorage { .. })
    ));
    assert!(!r.exists("c"));
    // A move takes no extra room.
    r.rename(&p("a"), &p("c"), false).await.unwrap();
    assert_eq!(r.quota().await.unwrap().available, Some(0));
    r.delete(&p("c")).await.unwrap();
    assert_eq!(r.quota().await.unwrap().available, Some(100));
    r.set_quota(None);
    assert_eq!(r.quota().await.unwrap().available, None);
}

#[tokio::test]
async fn etags_can_be_left_out_of_listings_or_everywhere() {
    let r = MemRemote::new();
    let tag = r.insert_file("d/f", &b"abc"[..]);
    r.set_etag_report(ETagReport::NotInListings);
    let l = r.list(&p("d")).await.unwrap();
    assert_eq!(l.dir.etag, None);
    assert_eq!(l.children[0].etag, None);
    assert_eq!(l.children[0].size, 3);
    assert!(l.children[0].mtime.is_some());
    assert_eq!(r.stat(&p("d/f")).await.unwrap().etag, Some(tag.clone()));
    let got = r
        .read_range(&p("d/f"), ByteRange::whole(), None)
        .await
        .unwrap();
    assert_eq!(got.etag, Some(tag.clone()));
    r.set_etag_report(ETagReport::Nowhere);
    assert_eq!(r.stat(&p("d/f")).await.unwrap().etag, None);
    let got = r
        .read_range(&p("d/f"), ByteRange::whole(), None)
        .await
        .unwrap();
    assert_eq!(got.etag, None);
    let out = r
        .put(&p("d/f"), b"x".to_vec().into(), PutCondition::None)
        .await;
    assert_eq!(out.unwrap().etag, None);
    assert!(r.list(&p("d")).await.unwrap().children[0].etag.is_none());
    // The tree keeps its versions all the same.
    assert_ne!(r.etag("d/f"), Some(tag));
    r.set_etag_report(ETagReport::Everywhere);
    assert_eq!(
        r.list(&p("d")).await.unwrap().children[0].etag,
        r.etag("d/f")
    );
}

#[tokio::test]
async fn counters_count_calls_and_bytes() {
    let r = MemRemote::new();
    r.insert_file("f", data(1000));
    assert_eq!(r.counters(), MemCounters::default());
    r.stat(&p("f")).await.unwrap();
    r.stat(&p("missing")).await.unwrap_err();
    r.list(&RemotePath::root()).await.unwrap();
    read(&r, "f", ByteRange::new(100, 300)).await.unwrap();
    read(&r, "f", ByteRange::new(900, 300)).await.unwrap();
    r.put(&p("g"), PutBody::from(&b"x"[..]), PutCondition::None)
        .await
        .unwrap();
    r.mkdir(&p("d")).await.unwrap();
    r.copy(&p("g"), &p("h"), false).await.unwrap();
    r.rename(&p("h"), &p("i"), false).await.unwrap();
    r.delete(&p("i")).await.unwrap();
    r.quota().await.unwrap();
    let c = r.counters();
    assert_eq!(
        c,
        MemCounters {
            stat: 2,
            list: 1,
            read_range: 2,
            put: 1,
            mkdir: 1,
            delete: 1,
            rename: 1,
            copy: 1,
            quota: 1,
            bytes_read: 400,
        }
    );
    r.reset_counters();
    assert_eq!(r.counters(), MemCounters::default());
}

#[tokio::test]
async fn clones_share_the_tree_and_work_as_dyn_remote() {
    let r = MemRemote::new();
    let shared: Arc<dyn Remote> = Arc::new(r.clone());
    shared
        .put(&p("f"), PutBody::from(&b"via dyn"[..]), PutCondition::None)
        .await
        .unwrap();
    assert_eq!(r.file_bytes("f").unwrap(), b"via dyn");
    assert_eq!(r.counters().put, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_get_distinct_versions() {
    let r = Arc::new(MemRemote::new());
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            r.put(
                &RemotePath::new(&format!("f{}", i % 5)).unwrap(),
                PutBody::from(vec![i; 10]),
                PutCondition::None,
            )
            .await
            .unwrap()
            .etag
            .unwrap()
        }));
    }
    let mut tags = std::collections::HashSet::new();
    for t in tasks {
        assert!(tags.insert(t.await.unwrap()));
    }
    assert_eq!(r.paths().len(), 5);
    assert_eq!(r.quota().await.unwrap().used, Some(50));
}

proptest::proptest! {
    #[test]
    fn any_range_reads_the_matching_slice(
        size in 0usize..300_000,
        start in 0u64..320_000,
        len in proptest::option::of(0u64..200_000),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = MemRemote::new();
        let d = data(size);
        r.insert_file("f", d.clone());
        let range = ByteRange { start, len };
        let got = rt.block_on(read(&r, "f", range)).unwrap();
        let s = (start as usize).min(size);
        let e = range.end().map_or(size, |e| (e as usize).min(size)).max(s);
        proptest::prop_assert_eq!(&got[..], &d[s..e]);
        proptest::prop_assert_eq!(r.counters().bytes_read, (e - s) as u64);
    }
}

#[tokio::test]
async fn directory_etags_propagate_up_the_tree_only_when_set_to() {
    let r = MemRemote::new();
    r.insert_file("a/b/c/f", "1");
    let tags = |r: &MemRemote| ["", "a", "a/b", "a/b/c"].map(|d| r.etag(d).unwrap());
    // Off (Apache): an in-place write renews only the file's ETag, a new file its directory's.
    let before = tags(&r);
    r.insert_file("a/b/c/f", "2");
    assert_eq!(tags(&r), before);
    r.insert_file("a/b/c/g", "new");
    let after = tags(&r);
    assert_eq!(after[..3], before[..3]);
    assert_ne!(after[3], before[3]);
    // On (Nextcloud): any change renews every collection above it.
    r.set_propagate_dir_etags(true);
    let before = tags(&r);
    r.put(&p("a/b/c/f"), b"3".as_slice().into(), PutCondition::None)
        .await
        .unwrap();
    let after = tags(&r);
    for i in 0..4 {
        assert_ne!(after[i], before[i], "collection {i} renewed");
    }
}

#[tokio::test]
async fn list_unless_answers_unchanged_for_the_known_digest_only() {
    let r = MemRemote::new();
    r.insert_file("d/f", "1");
    let MaybeListing::Listed(l, digest) = r.list_unless(&p("d"), None).await.unwrap() else {
        panic!("nothing known: listed");
    };
    assert_eq!(l.children.len(), 1);
    assert!(matches!(
        r.list_unless(&p("d"), Some(&digest)).await.unwrap(),
        MaybeListing::Unchanged
    ));
    r.insert_file("d/f", "2");
    match r.list_unless(&p("d"), Some(&digest)).await.unwrap() {
        MaybeListing::Listed(_, d) => assert_ne!(d, digest),
        MaybeListing::Unchanged => panic!("an edited file changes the listing"),
    }
}
