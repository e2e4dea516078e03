//! The remote contract: one suite of cases, run against every real server started by
//! `tests/run.sh` (Apache mod_dav with Basic and with Digest auth, `rclone serve webdav`, nginx
//! with its dav and dav-ext modules), the embedded `cloudmount serve`, and the in-memory fake. What passes here is what the layers above
//! may rely on.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::{ByteRange, ETag, PutBody, PutCondition, Remote, RemoteError, RemotePath};
use common::proxy::{target_of, FaultProxy};
use common::*;

/// A server under test and a fresh directory on it.
struct Backend {
    remote: Arc<dyn Remote>,
    root: RemotePath,
    /// Known deviations of this server from RFC 4918.
    quirks: Quirks,
    /// Keeps an embedded server alive for the test's duration.
    _server: Option<EmbeddedServer>,
}

impl Backend {
    fn p(&self, rel: &str) -> RemotePath {
        let mut p = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(seg).unwrap();
        }
        p
    }
    async fn put(&self, rel: &str, data: &[u8]) -> Option<ETag> {
        self.remote
            .put(
                &self.p(rel),
                PutBody::from(data.to_vec()),
                PutCondition::None,
            )
            .await
            .unwrap_or_else(|e| panic!("put {rel}: {e}"))
            .etag
    }
    async fn read(&self, rel: &str) -> Vec<u8> {
        self.read_range(rel, ByteRange::whole()).await
    }
    async fn read_range(&self, rel: &str, r: ByteRange) -> Vec<u8> {
        self.remote
            .read_range(&self.p(rel), r, None)
            .await
            .unwrap_or_else(|e| panic!("read {rel} {r:?}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("read body {rel} {r:?}: {e}"))
            .to_vec()
    }
}

/// Server behaviour that differs from RFC 4918 and that the client cannot correct.
#[derive(Default, Clone, Copy)]
struct Quirks {
    /// MKCOL on an existing collection answers 201 instead of 405 (rclone / x/net/webdav).
    mkcol_on_existing_succeeds: bool,
    /// PUT, MOVE and COPY create missing parent collections (nginx `create_full_put_path on`,
    /// as the test server is set up).
    creates_missing_parents: bool,
    /// Names starting with a dot are left out of PROPFIND listings (nginx dav-ext); they can
    /// still be read, written and stat'ed by name.
    lists_no_dot_names: bool,
}

async fn make_backend(
    remote: Arc<dyn Remote>,
    label: &str,
    server: Option<EmbeddedServer>,
) -> Backend {
    let root = fresh_dir(&remote, label).await;
    Backend {
        remote,
        root,
        quirks: Quirks::default(),
        _server: server,
    }
}

async fn apache_basic(label: &str) -> Backend {
    let r = webdav(
        &env("CLOUDMOUNT_TEST_APACHE_BASIC_URL"),
        &test_user(),
        &test_password(),
    );
    make_backend(Arc::new(r), label, None).await
}
async fn apache_digest(label: &str) -> Backend {
    let r = webdav(
        &env("CLOUDMOUNT_TEST_APACHE_DIGEST_URL"),
        &test_user(),
        &test_password(),
    );
    make_backend(Arc::new(r), label, None).await
}
async fn rclone(label: &str) -> Backend {
    let r = webdav(
        &env("CLOUDMOUNT_TEST_RCLONE_URL"),
        &test_user(),
        &test_password(),
    );
    let mut b = make_backend(Arc::new(r), label, None).await;
    b.quirks.mkcol_on_existing_succeeds = true;
    b
}
async fn nginx(label: &str) -> Backend {
    let r = webdav(
        &env("CLOUDMOUNT_TEST_NGINX_URL"),
        &test_user(),
        &test_password(),
    );
    let mut b = make_backend(Arc::new(r), label, None).await;
    b.quirks.creates_missing_parents = true;
    b.quirks.lists_no_dot_names = true;
    b
}
async fn embedded(label: &str) -> Backend {
    let s = embedded_server(Some("1G"));
    let r = webdav(&s.url, "cmtest", EMBEDDED_PASSWORD);
    make_backend(Arc::new(r), label, Some(s)).await
}
async fn mem(label: &str) -> Backend {
    make_backend(Arc::new(MemRemote::new()), label, None).await
}

/// Generates one test per (backend, case).
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        contract!(@backend apache_basic; $($case),*);
        contract!(@backend apache_digest; $($case),*);
        contract!(@backend rclone; $($case),*);
        contract!(@backend nginx; $($case),*);
        contract!(@backend embedded; $($case),*);
        contract!(@backend mem; $($case),*);
    };
    (@backend $b:ident; $($case:ident),*) => {
        mod $b {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = super::$b(stringify!($case)).await;
                    super::cases::$case(&b).await;
                }
            )*
        }
    };
}

contract!(
    odd_names_round_trip,
    nfc_and_nfd_are_different_names,
    deep_paths,
    range_reads,
    large_file_streamed_from_disk,
    read_refuses_other_version,
    conditional_put,
    put_etag_matches_stat,
    move_and_copy,
    move_and_copy_directories,
    collection_semantics,
    concurrent_requests,
    quota_is_readable,
);

/// Names users really have. The 255-byte ones are the Linux limit.
fn odd_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "with space.txt",
        " leading and trailing ",
        "100%.txt",
        "%20literal",
        "hash#tag",
        "question?mark",
        "a&b+c=d",
        "it's",
        "\"quoted\"",
        "semi;colon,comma",
        "[brackets]{braces}",
        "tilde~dollar$at@",
        "caf\u{e9}",
        "emoji 😀🎉",
        "中文文件名",
        "日本語のファイル",
        "back\\slash",
        ".hidden",
        "..double-dot-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(255));
    // 127 two-byte characters + one byte = 255 bytes of UTF-8.
    v.push(format!("{}y", "é".repeat(127)));
    v
}

mod cases {
    use super::*;

    pub async fn odd_names_round_trip(b: &Backend) {
        let names = odd_names();
        for (i, name) in names.iter().enumerate() {
            let data = pattern(i * 7 + 1, i as u8);
            b.put(name, &data).await;
        }
        b.remote.mkdir(&b.p("dir with #?% chars")).await.unwrap();
        b.put("dir with #?% chars/inner 😀", b"inner").await;

        let listing = b.remote.list(&b.root).await.unwrap();
        let mut listed: Vec<(String, u64, bool)> = listing
            .children
            .iter()
            .map(|e| (e.name().to_string(), e.size, e.is_dir()))
            .collect();
        listed.sort();
        let mut want: Vec<(String, u64, bool)> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !(b.quirks.lists_no_dot_names && n.starts_with('.')))
            .map(|(i, n)| (n.clone(), (i * 7 + 1) as u64, false))
            .collect();
        want.push(("dir with #?% chars".into(), 0, true));
        want.sort();
        assert_eq!(listed, want);
        assert_eq!(listing.dir.path, b.root);
        assert!(listing.dir.is_dir());

        for (i, name) in names.iter().enumerate() {
            let st = b.remote.stat(&b.p(name)).await.unwrap();
            assert_eq!(st.name(), name);
            assert_eq!(st.size, (i * 7 + 1) as u64);
            assert_eq!(b.read(name).await, pattern(i * 7 + 1, i as u8), "{name:?}");
        }
        let inner = b.remote.list(&b.p("dir with #?% chars")).await.unwrap();
        assert_eq!(inner.children.len(), 1);
        assert_eq!(inner.children[0].name(), "inner 😀");
        assert_eq!(b.read("dir with #?% chars/inner 😀").await, b"inner");
    }

    pub async fn nfc_and_nfd_are_different_names(b: &Backend) {
        b.put("caf\u{e9}", b"nfc").await;
        b.put("cafe\u{301}", b"nfd").await;
        let names: Vec<String> = b
            .remote
            .list(&b.root)
            .await
            .unwrap()
            .children
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(b.read("caf\u{e9}").await, b"nfc");
        assert_eq!(b.read("cafe\u{301}").await, b"nfd");
    }

    pub async fn deep_paths(b: &Backend) {
        let mut rel = String::new();
        for i in 0..24 {
            rel.push_str(&format!("level {i}/"));
            b.remote.mkdir(&b.p(&rel)).await.unwrap();
        }
        let file = format!("{rel}deep file.bin");
        b.put(&file, &pattern(1000, 3)).await;
        assert_eq!(b.read(&file).await, pattern(1000, 3));
        let l = b.remote.list(&b.p(&rel)).await.unwrap();
        assert_eq!(l.children.len(), 1);
        assert_eq!(l.children[0].path, b.p(&file));
    }

    pub async fn range_reads(b: &Backend) {
        const BS: usize = 4096;
        let size = 3 * BS + 17;
        let data = pattern(size, 9);
        b.put("ranges.bin", &data).await;
        let cases: Vec<(u64, Option<u64>)> = vec![
            (0, Some(1)),
            (0, Some(BS as u64)),
            (BS as u64 - 1, Some(2)),
            (BS as u64, Some(BS as u64)),
            (2 * BS as u64 - 3, Some(BS as u64 + 6)),
            (size as u64 - 1, Some(1)),
            (size as u64 - 10, Some(100)),
            (100, None),
            (0, None),
            (5, Some(0)),
        ];
        for (start, len) in cases {
            let got = b.read_range("ranges.bin", ByteRange { start, len }).await;
            let s = start as usize;
            let e = len.map_or(size, |l| (s + l as usize).min(size));
            assert_eq!(got.len(), e - s, "range {start} {len:?}");
            assert!(got == data[s..e], "range {start} {len:?} content");
        }
        // At and past EOF: empty, not an error.
        for start in [size as u64, size as u64 + 1, size as u64 + 100_000] {
            let got = b.read_range("ranges.bin", ByteRange::new(start, 10)).await;
            assert!(got.is_empty(), "past EOF at {start}");
            let got = b.read_range("ranges.bin", ByteRange::from(start)).await;
            assert!(got.is_empty(), "past EOF at {start} to end");
        }
        // Empty file.
        b.put("empty", b"").await;
        assert!(b.read("empty").await.is_empty());
        assert_eq!(b.remote.stat(&b.p("empty")).await.unwrap().size, 0);
        // Missing file.
        let err = b
            .remote
            .read_range(&b.p("missing"), ByteRange::new(0, 1), None)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    pub async fn large_file_streamed_from_disk(b: &Backend) {
        let data = pattern(5 * 1024 * 1024 + 3, 1);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("big");
        std::fs::write(&local, &data).unwrap();
        let out = b
            .remote
            .put(
                &b.p("big.bin"),
                PutBody::File {
                    path: local,
                    len: data.len() as u64,
                },
                PutCondition::IfNoneMatch,
            )
            .await
            .unwrap();
        let st = b.remote.stat(&b.p("big.bin")).await.unwrap();
        assert_eq!(st.size, data.len() as u64);
        if let (Some(a), Some(s)) = (&out.etag, &st.etag) {
            assert_eq!(a, s);
        }
        assert_eq!(sha256(&b.read("big.bin").await), sha256(&data));
        let mid = b
            .read_range("big.bin", ByteRange::new(3_000_000, 1_000_000))
            .await;
        assert!(mid == data[3_000_000..4_000_000]);
    }

    pub async fn read_refuses_other_version(b: &Backend) {
        b.put("v.txt", b"version one").await;
        let v1 = b.remote.stat(&b.p("v.txt")).await.unwrap().etag;
        let Some(v1) = v1 else {
            panic!("server gave no ETag for a file");
        };
        let r = b
            .remote
            .read_range(&b.p("v.txt"), ByteRange::new(0, 7), Some(&v1))
            .await
            .unwrap();
        assert_eq!(r.etag.as_ref(), Some(&v1));
        assert_eq!(r.bytes().await.unwrap(), Bytes::from_static(b"version"));
        b.put("v.txt", b"version two, longer").await;
        let err = b
            .remote
            .read_range(&b.p("v.txt"), ByteRange::new(0, 7), Some(&v1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RemoteError::VersionChanged { .. }),
            "old version served: {err}"
        );
    }

    pub async fn conditional_put(b: &Backend) {
        let p = b.p("cond.txt");
        let r = &b.remote;
        let first = r
            .put(
                &p,
                PutBody::from(b"one".to_vec()),
                PutCondition::IfNoneMatch,
            )
            .await
            .unwrap();
        let err = r
            .put(
                &p,
                PutBody::from(b"two".to_vec()),
                PutCondition::IfNoneMatch,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, RemoteError::PreconditionFailed { .. }),
            "{err}"
        );
        assert_eq!(b.read("cond.txt").await, b"one");

        let v1 = r.stat(&p).await.unwrap().etag.expect("etag");
        if let Some(e) = &first.etag {
            assert_eq!(e, &v1);
        }
        let second = r
            .put(
                &p,
                PutBody::from(b"three!".to_vec()),
                PutCondition::IfMatch(v1.clone()),
            )
            .await
            .unwrap();
        assert_eq!(b.read("cond.txt").await, b"three!");
        let v2 = r.stat(&p).await.unwrap().etag.expect("etag");
        assert_ne!(v1, v2);
        if let Some(e) = &second.etag {
            assert_eq!(e, &v2);
        }
        // Stale If-Match: refused, content unchanged.
        let err = r
            .put(
                &p,
                PutBody::from(b"four".to_vec()),
                PutCondition::IfMatch(v1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, RemoteError::PreconditionFailed { .. }),
            "{err}"
        );
        assert_eq!(b.read("cond.txt").await, b"three!");
        // If-Match on a missing file.
        let err = r
            .put(
                &b.p("nothing-here"),
                PutBody::from(b"x".to_vec()),
                PutCondition::IfMatch(v2),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, RemoteError::PreconditionFailed { .. }),
            "{err}"
        );
        assert!(r
            .stat(&b.p("nothing-here"))
            .await
            .unwrap_err()
            .is_not_found());
        // PUT into a missing parent.
        let put = r
            .put(
                &b.p("no/such/dir/f"),
                PutBody::from(b"x".to_vec()),
                PutCondition::None,
            )
            .await;
        if b.quirks.creates_missing_parents {
            put.unwrap();
            assert_eq!(b.read("no/such/dir/f").await, b"x");
            return;
        }
        let err = put.unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::MissingParent { .. } | RemoteError::NotFound { .. }
            ),
            "{err}"
        );
    }

    pub async fn put_etag_matches_stat(b: &Backend) {
        for (i, size) in [0usize, 1, 4095, 4096, 65537].into_iter().enumerate() {
            let name = format!("e{i}");
            let etag = b.put(&name, &pattern(size, i as u8)).await;
            let st = b.remote.stat(&b.p(&name)).await.unwrap();
            assert_eq!(st.size, size as u64);
            assert!(st.etag.is_some(), "no etag from stat");
            if let Some(e) = etag {
                assert_eq!(Some(e), st.etag, "size {size}");
            }
        }
    }

    pub async fn move_and_copy(b: &Backend) {
        let r = &b.remote;
        b.put("a.txt", b"AAA").await;
        b.put("b.txt", b"BBBB").await;
        // Rename to a new name.
        r.rename(&b.p("a.txt"), &b.p("a renamed #1.txt"), false)
            .await
            .unwrap();
        assert!(r.stat(&b.p("a.txt")).await.unwrap_err().is_not_found());
        assert_eq!(b.read("a renamed #1.txt").await, b"AAA");
        // Copy.
        r.copy(&b.p("b.txt"), &b.p("b copy?.txt"), false)
            .await
            .unwrap();
        assert_eq!(b.read("b copy?.txt").await, b"BBBB");
        assert_eq!(b.read("b.txt").await, b"BBBB");
        // Without overwrite onto an existing name: refused, both unchanged.
        let err = r
            .rename(&b.p("a renamed #1.txt"), &b.p("b.txt"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::AlreadyExists { .. }), "{err}");
        let err = r
            .copy(&b.p("a renamed #1.txt"), &b.p("b.txt"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::AlreadyExists { .. }), "{err}");
        assert_eq!(b.read("b.txt").await, b"BBBB");
        assert_eq!(b.read("a renamed #1.txt").await, b"AAA");
        // With overwrite: replaced.
        r.copy(&b.p("a renamed #1.txt"), &b.p("b copy?.txt"), true)
            .await
            .unwrap();
        assert_eq!(b.read("b copy?.txt").await, b"AAA");
        r.rename(&b.p("a renamed #1.txt"), &b.p("b.txt"), true)
            .await
            .unwrap();
        assert_eq!(b.read("b.txt").await, b"AAA");
        assert!(r
            .stat(&b.p("a renamed #1.txt"))
            .await
            .unwrap_err()
            .is_not_found());
        // Missing source; missing destination parent.
        let err = r
            .rename(&b.p("ghost"), &b.p("g2"), false)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let moved = r
            .rename(&b.p("b.txt"), &b.p("no such dir/b.txt"), false)
            .await;
        if b.quirks.creates_missing_parents {
            moved.unwrap();
            assert_eq!(b.read("no such dir/b.txt").await, b"AAA");
            return;
        }
        let err = moved.unwrap_err();
        assert!(
            matches!(
                err,
                RemoteError::MissingParent { .. } | RemoteError::NotFound { .. }
            ),
            "{err}"
        );
        assert_eq!(b.read("b.txt").await, b"AAA");
    }

    pub async fn move_and_copy_directories(b: &Backend) {
        let r = &b.remote;
        r.mkdir(&b.p("src dir")).await.unwrap();
        r.mkdir(&b.p("src dir/sub")).await.unwrap();
        b.put("src dir/f1", b"one").await;
        b.put("src dir/sub/f2", b"two").await;
        r.copy(&b.p("src dir"), &b.p("copy dir"), false)
            .await
            .unwrap();
        r.rename(&b.p("src dir"), &b.p("moved dir%"), false)
            .await
            .unwrap();
        assert!(r.stat(&b.p("src dir")).await.unwrap_err().is_not_found());
        for top in ["copy dir", "moved dir%"] {
            assert_eq!(b.read(&format!("{top}/f1")).await, b"one");
            assert_eq!(b.read(&format!("{top}/sub/f2")).await, b"two");
            let st = r.stat(&b.p(top)).await.unwrap();
            assert!(st.is_dir());
        }
        // Overwrite a directory with another.
        r.mkdir(&b.p("other")).await.unwrap();
        b.put("other/only", b"x").await;
        let err = r
            .rename(&b.p("other"), &b.p("copy dir"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::AlreadyExists { .. }), "{err}");
        r.rename(&b.p("other"), &b.p("copy dir"), true)
            .await
            .unwrap();
        let names: Vec<String> = r
            .list(&b.p("copy dir"))
            .await
            .unwrap()
            .children
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(names, vec!["only".to_string()]);
    }

    pub async fn collection_semantics(b: &Backend) {
        let r = &b.remote;
        r.mkdir(&b.p("d")).await.unwrap();
        match r.mkdir(&b.p("d")).await {
            Err(RemoteError::AlreadyExists { .. }) => {}
            Ok(()) if b.quirks.mkcol_on_existing_succeeds => {}
            other => panic!("mkdir of an existing collection: {other:?}"),
        }
        let err = r.mkdir(&b.p("missing/child")).await.unwrap_err();
        assert!(matches!(err, RemoteError::MissingParent { .. }), "{err}");
        b.put("d/file", b"f").await;
        let err = r.list(&b.p("d/file")).await.unwrap_err();
        assert!(matches!(err, RemoteError::NotADirectory { .. }), "{err}");
        let err = r.list(&b.p("nope")).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let err = r.stat(&b.p("nope")).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let err = r.delete(&b.p("nope")).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let st = r.stat(&b.p("d")).await.unwrap();
        assert!(st.is_dir());
        assert_eq!(st.name(), "d");
        let st = r.stat(&b.p("d/file")).await.unwrap();
        assert!(!st.is_dir());
        assert!(st.mtime.is_some(), "no mtime");
        // Delete of a collection removes everything below.
        r.delete(&b.p("d")).await.unwrap();
        assert!(r.stat(&b.p("d/file")).await.unwrap_err().is_not_found());
        assert!(r.list(&b.root).await.unwrap().children.is_empty());
    }

    pub async fn concurrent_requests(b: &Backend) {
        let mut tasks = Vec::new();
        for i in 0..24u8 {
            let remote = b.remote.clone();
            let p = b.p(&format!("c{i}"));
            tasks.push(tokio::spawn(async move {
                let data = pattern(10_000 + i as usize, i);
                remote
                    .put(&p, PutBody::from(data.clone()), PutCondition::IfNoneMatch)
                    .await
                    .unwrap();
                let got = remote
                    .read_range(&p, ByteRange::whole(), None)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert!(got == data);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(b.remote.list(&b.root).await.unwrap().children.len(), 24);
    }

    pub async fn quota_is_readable(b: &Backend) {
        // Every server answers a quota PROPFIND; the figures may be absent (Apache, rclone).
        let q = b.remote.quota().await.unwrap();
        if let (Some(u), Some(a)) = (q.used, q.available) {
            assert!(u.checked_add(a).is_some());
        }
    }
}

// ---- Server-specific contract cases ----------------------------------------------------------

/// The embedded server reports RFC 4331 quota and refuses a PUT over it with 507, keeping the
/// old content; the fake does the same.
async fn quota_and_507(remote: Arc<dyn Remote>, root: RemotePath) {
    let p = |s: &str| root.join(s).unwrap();
    let q0 = remote.quota().await.unwrap();
    let used0 = q0.used.expect("quota-used-bytes");
    let avail0 = q0.available.expect("quota-available-bytes");
    remote
        .put(
            &p("keep"),
            PutBody::from(vec![7u8; 100_000]),
            PutCondition::None,
        )
        .await
        .unwrap();
    let q1 = remote.quota().await.unwrap();
    assert_eq!(q1.used.unwrap(), used0 + 100_000);
    assert_eq!(q1.available.unwrap(), avail0 - 100_000);
    let too_big = vec![1u8; (avail0 as usize) + 1];
    let err = remote
        .put(
            &p("too big"),
            PutBody::from(too_big.clone()),
            PutCondition::None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::InsufficientStorage { .. }),
        "{err}"
    );
    assert!(remote.stat(&p("too big")).await.unwrap_err().is_not_found());
    // Overwriting an existing file beyond the quota keeps the old content.
    let err = remote
        .put(&p("keep"), PutBody::from(too_big), PutCondition::None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::InsufficientStorage { .. }),
        "{err}"
    );
    let got = remote
        .read_range(&p("keep"), ByteRange::whole(), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got.len() == 100_000 && got.iter().all(|&b| b == 7));
    // Freeing space lets writes through again.
    remote.delete(&p("keep")).await.unwrap();
    let q2 = remote.quota().await.unwrap();
    assert_eq!(q2.used.unwrap(), used0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_quota_and_507() {
    let s = embedded_server(Some("1M"));
    let r: Arc<dyn Remote> = Arc::new(webdav(&s.url, "cmtest", EMBEDDED_PASSWORD));
    quota_and_507(r, RemotePath::root()).await;
    // Nothing partial left on the server's disk.
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

#[tokio::test]
async fn mem_quota_and_507() {
    let r: Arc<dyn Remote> = Arc::new(MemRemote::with_quota(1 << 20));
    quota_and_507(r, RemotePath::root()).await;
}

/// Digest: requests keep working across nonce expiry (the server's nonce lifetime is 2 s), for
/// PROPFIND, GET and a streamed PUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_digest_survives_nonce_expiry() {
    let b = apache_digest("nonce").await;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u8 {
        let data = pattern(300_000 + round as usize, round);
        let local = dir.path().join(format!("f{round}"));
        std::fs::write(&local, &data).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        b.remote
            .put(
                &b.p(&format!("f{round}")),
                PutBody::File {
                    path: local,
                    len: data.len() as u64,
                },
                PutCondition::None,
            )
            .await
            .unwrap_or_else(|e| panic!("PUT after nonce expiry, round {round}: {e}"));
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        assert_eq!(b.read(&format!("f{round}")).await, data);
        tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
        assert_eq!(
            b.remote.list(&b.root).await.unwrap().children.len(),
            round as usize + 1
        );
    }
    // The nonce really went stale: the server refused a PUT with it, and the re-signed one passed.
    let log = std::fs::read_to_string(env("CLOUDMOUNT_TEST_APACHE_DIGEST_ACCESS_LOG")).unwrap();
    let puts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("PUT /dav/{}/", b.root.as_str())))
        .map(|l| {
            if l.contains("\" 401 ") {
                "401"
            } else if l.contains("\" 201 ") {
                "201"
            } else {
                "other"
            }
        })
        .collect();
    assert!(
        puts.windows(2).any(|w| w == ["401", "201"]),
        "no stale-nonce round trip seen in the access log: {puts:?}"
    );
}

/// A wrong password is a clear auth error, after one signed attempt: no retry storm. The
/// requests are counted through the test proxy, whatever the server: `expected` lists all of
/// them (method, whether it was for the base URL or the asked path, signed, status). The client
/// learns the auth scheme with one unauthenticated OPTIONS of the base URL; a server that
/// answers it without a challenge (rclone) gives it at the first 401 instead. Then one signed
/// request, refused with 401, and nothing more.
async fn wrong_password(url: &str, user: &str, expected: &[(&str, Target, bool, u16)]) {
    let proxy = FaultProxy::start(target_of(url)).await;
    let r = webdav(&proxy.url_for(url), user, "definitely-not-the-password");
    let marker = format!("wrongpw-{}", unique());
    let err = r
        .stat(&RemotePath::new(&marker).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("check user and password"), "{err}");
    // A retry would come after the error: give it time to show.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let base = url::Url::parse(url).unwrap().path().to_string();
    let asked = format!("{base}{marker}");
    let got: Vec<(String, String, bool, Option<u16>)> = proxy
        .requests()
        .into_iter()
        .map(|q| (q.method.clone(), q.path().to_string(), q.signed, q.status))
        .collect();
    let want: Vec<(String, String, bool, Option<u16>)> = expected
        .iter()
        .map(|(m, t, signed, st)| {
            let path = match t {
                Target::Base => base.clone(),
                Target::Asked => asked.clone(),
            };
            (m.to_string(), path, *signed, Some(*st))
        })
        .collect();
    assert_eq!(
        got, want,
        "the requests a wrong password made (method, path, signed, status)"
    );
    assert_eq!(got.iter().filter(|q| q.2).count(), 1, "one signed attempt");
}

/// What a request of [`wrong_password`] was for.
#[derive(Clone, Copy)]
enum Target {
    Base,
    Asked,
}

/// OPTIONS answered with a challenge, then one signed PROPFIND.
const CHALLENGED_OPTIONS: &[(&str, Target, bool, u16)] = &[
    ("OPTIONS", Target::Base, false, 401),
    ("PROPFIND", Target::Asked, true, 401),
];

#[tokio::test]
async fn apache_basic_wrong_password() {
    wrong_password(
        &env("CLOUDMOUNT_TEST_APACHE_BASIC_URL"),
        &test_user(),
        CHALLENGED_OPTIONS,
    )
    .await;
}

#[tokio::test]
async fn apache_digest_wrong_password() {
    wrong_password(
        &env("CLOUDMOUNT_TEST_APACHE_DIGEST_URL"),
        &test_user(),
        CHALLENGED_OPTIONS,
    )
    .await;
}

/// rclone answers OPTIONS without credentials: the first PROPFIND brings the challenge.
#[tokio::test]
async fn rclone_wrong_password() {
    wrong_password(
        &env("CLOUDMOUNT_TEST_RCLONE_URL"),
        &test_user(),
        &[
            ("OPTIONS", Target::Base, false, 200),
            ("PROPFIND", Target::Asked, false, 401),
            ("PROPFIND", Target::Asked, true, 401),
        ],
    )
    .await;
}

#[tokio::test]
async fn nginx_wrong_password() {
    wrong_password(
        &env("CLOUDMOUNT_TEST_NGINX_URL"),
        &test_user(),
        CHALLENGED_OPTIONS,
    )
    .await;
}

#[tokio::test]
async fn embedded_wrong_password() {
    let s = embedded_server(None);
    wrong_password(&s.url, "cmtest", CHALLENGED_OPTIONS).await;
}

/// Without credentials, a server that wants them gives an auth error, not a hang or a panic.
#[tokio::test]
async fn apache_basic_no_credentials() {
    let cfg =
        cloudmount::remote::webdav::WebDavConfig::new(env("CLOUDMOUNT_TEST_APACHE_BASIC_URL"));
    let r = cloudmount::remote::webdav::WebDavRemote::new(cfg).unwrap();
    let err = r.stat(&RemotePath::root()).await.unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
}

/// `check()` tells a WebDAV collection from a file and from a non-DAV URL.
#[tokio::test]
async fn check_tells_collections_from_files() {
    let b = apache_basic("check").await;
    b.put("plain.txt", b"x").await;
    let url = env("CLOUDMOUNT_TEST_APACHE_BASIC_URL");
    let base_ok = webdav(&url, &test_user(), &test_password());
    base_ok.check().await.unwrap();
    let file_url = format!("{url}{}/plain.txt", b.root.as_str());
    let err = webdav(&file_url, &test_user(), &test_password())
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::NotADirectory { .. }), "{err}");
}
