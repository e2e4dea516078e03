//! `cloudmount serve` end to end: the real binary on a temp dir, spoken to over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret: with spaces & ünïcode";

/// Everything but RFC 3986 unreserved characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// A running `cloudmount serve`; killed (and its log shown, if the test failed) on drop.
struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

struct Opts {
    auth: bool,
    quota: Option<&'static str>,
}

impl Server {
    fn start(opts: Opts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, opts)
    }

    fn start_in(dir: tempfile::TempDir, opts: Opts) -> Server {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudmount"));
        cmd.arg("serve")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "debug")
            .env_remove("CLOUDMOUNT_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if opts.auth {
            cmd.args(["--user", USER])
                .env("CLOUDMOUNT_PASSWORD", PASSWORD);
        }
        if let Some(q) = opts.quota {
            cmd.args(["--quota", q]);
        }
        let mut child = cmd.spawn().expect("spawn cloudmount");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not announce itself; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let prefix = format!("cloudmount serve: serving {} at ", dir.path().display());
        let url = line
            .trim_end()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| {
                panic!(
                    "unexpected announcement {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
            "{url}"
        );
        Server {
            child,
            url,
            dir,
            log,
            _logdir: logdir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path.trim_start_matches('/'))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn client(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            auth: Some((USER.to_string(), PASSWORD.to_string())),
        }
    }

    /// Names of upload temp files anywhere under the served dir.
    fn temp_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(".cloudmount-put-")
                {
                    out.push(e.path());
                }
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- server log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

struct Client {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Client {
    fn req(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    async fn put(&self, url: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.req("PUT", url).body(body).send().await.unwrap()
    }

    async fn get(&self, url: &str) -> (StatusCode, Bytes) {
        let r = self.req("GET", url).send().await.unwrap();
        let st = r.status();
        (st, r.bytes().await.unwrap())
    }

    async fn propfind(&self, url: &str, depth: &str, props: &[&str]) -> (StatusCode, String) {
        let body = if props.is_empty() {
            String::new()
        } else {
            let p: String = props.iter().map(|p| format!("<D:{p}/>")).collect();
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>{p}</D:prop></D:propfind>"#
            )
        };
        let r = self
            .req("PROPFIND", url)
            .header("Depth", depth)
            .header("Content-Type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status();
        (st, r.text().await.unwrap())
    }

    /// (quota-used-bytes, quota-available-bytes) of the root.
    async fn quota(&self, url: &str) -> (u64, u64) {
        let (st, xml) = self
            .propfind(url, "0", &["quota-used-bytes", "quota-available-bytes"])
            .await;
        assert_eq!(st, StatusCode::MULTI_STATUS, "{xml}");
        let used = elements(&xml, "D:quota-used-bytes");
        let avail = elements(&xml, "D:quota-available-bytes");
        assert_eq!((used.len(), avail.len()), (1, 1), "{xml}");
        (used[0].parse().unwrap(), avail[0].parse().unwrap())
    }
}

/// Texts of every `<tag>…</tag>` in `xml` (entity-decoded; enough for dav-server's output).
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let j = rest.find(&close).expect("unclosed element");
        out.push(
            rest[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &rest[j + close.len()..];
    }
    out
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// A body of unknown length (sent chunked), in pieces of `piece` bytes.
fn chunked(content: Vec<u8>, piece: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = content
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let srv = Server::start(Opts {
        auth: true,
        quota: None,
    });
    std::fs::write(srv.path("f.txt"), b"secret data").unwrap();
    let good = srv.client();
    let anonymous = Client {
        http: good.http.clone(),
        auth: None,
    };
    let wrong = Client {
        http: good.http.clone(),
        auth: Some((USER.into(), "not the password".into())),
    };
    let wrong_user = Client {
        http: good.http.clone(),
        auth: Some(("bob".into(), PASSWORD.into())),
    };

    for client in [&anonymous, &wrong, &wrong_user] {
        for method in ["GET", "PROPFIND", "OPTIONS", "DELETE"] {
            let r = client.req(method, &srv.url("f.txt")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method}");
            assert_eq!(
                r.headers().get("www-authenticate").unwrap(),
                r#"Basic realm="cloudmount""#
            );
            assert!(!r.text().await.unwrap().contains("secret data"));
        }
        let r = client.put(&srv.url("new.txt"), vec![7u8; 100_000]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(!srv.path("new.txt").exists());
    assert!(srv.path("f.txt").exists());

    let (st, body) = good.get(&srv.url("f.txt")).await;
    assert_eq!((st, &body[..]), (StatusCode::OK, &b"secret data"[..]));
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(!log.contains(PASSWORD), "password in the log");
}

#[test]
fn user_without_password_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for env in [None, Some("")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudmount"));
        cmd.arg("serve")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--user", USER])
            .env_remove("CLOUDMOUNT_PASSWORD");
        if let Some(v) = env {
            cmd.env("CLOUDMOUNT_PASSWORD", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        assert!(out.stdout.is_empty(), "must not announce an address");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CLOUDMOUNT_PASSWORD"), "{err}");
    }
}

#[test]
fn missing_or_non_directory_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for (root, want) in [
        (dir.path().join("missing"), "no such directory"),
        (file, "not a directory"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cloudmount"))
            .arg("serve")
            .arg(&root)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(!root.is_dir());
    }
}

#[tokio::test]
async fn put_get_round_trip_and_etags_agree() {
    let srv = Server::start(Opts {
        auth: true,
        quota: None,
    });
    let c = srv.client();
    let content = data(300_000, 1);
    let r = c.put(&srv.url("dir-less.bin"), content.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let put_etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        put_etag.starts_with('"') && put_etag.ends_with('"'),
        "{put_etag}"
    );
    assert_eq!(std::fs::read(srv.path("dir-less.bin")).unwrap(), content);

    let r = c.req("GET", &srv.url("dir-less.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let get_etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.bytes().await.unwrap(), content);
    let r = c
        .req("HEAD", &srv.url("dir-less.bin"))
        .send()
        .await
        .unwrap();
    let head_etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let (st, xml) = c
        .propfind(&srv.url("dir-less.bin"), "0", &["getetag"])
        .await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    let prop_etag = elements(&xml, "D:getetag");
    assert_eq!(prop_etag, vec![put_etag.clone()], "{xml}");
    assert_eq!(get_etag, put_etag);
    assert_eq!(head_etag, put_etag);
    // Also in an allprop listing of the parent.
    let (_, xml) = c.propfind(&srv.url(""), "1", &[]).await;
    assert!(elements(&xml, "D:getetag").contains(&put_etag), "{xml}");

    // Overwrite: 204, new ETag, new content.
    let r = c.put(&srv.url("dir-less.bin"), b"short".to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let new_etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(new_etag, put_etag);
    let (st, body) = c.get(&srv.url("dir-less.bin")).await;
    assert_eq!((st, &body[..]), (StatusCode::OK, &b"short"[..]));

    // A body of unknown length (chunked) works too.
    let content = data(1_000_000, 2);
    let r = c
        .req("PUT", &srv.url("chunked.bin"))
        .body(chunked(content.clone(), 65_536))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(srv.path("chunked.bin")).unwrap(), content);

    // Empty file.
    let r = c.put(&srv.url("empty"), Vec::new()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(srv.path("empty")).unwrap(), b"");
    assert!(srv.temp_files().is_empty());
}

#[tokio::test]
async fn range_get_gives_206_with_exact_bytes() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let content = data(200_000, 3);
    std::fs::write(srv.path("r.bin"), &content).unwrap();
    let c = srv.client();
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=0-65535", 0, 65_535),
        ("bytes=65536-131071", 65_536, 131_071),
        ("bytes=199990-199999", 199_990, 199_999),
        ("bytes=199990-", 199_990, 199_999),
        ("bytes=199990-250000", 199_990, 199_999),
        ("bytes=-10", 199_990, 199_999),
    ] {
        let r = c
            .req("GET", &srv.url("r.bin"))
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers().get("content-range").unwrap(),
            &format!("bytes {start}-{end}/200000"),
            "{range}"
        );
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &content[start..=end],
            "{range}"
        );
    }
    let r = c
        .req("GET", &srv.url("r.bin"))
        .header("Range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers().get("content-range").unwrap(), "bytes */200000");
}

#[tokio::test]
async fn propfind_shows_quota_and_delete_lowers_usage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("x"), vec![1u8; 1000]).unwrap();
    std::fs::write(dir.path().join("a/b/y"), vec![1u8; 3000]).unwrap();
    // A temp file left by a crash: removed at start, never counted.
    let stale = dir.path().join("a/.cloudmount-put-feedfacefeedface.tmp");
    std::fs::write(&stale, vec![1u8; 5000]).unwrap();
    let srv = Server::start_in(
        dir,
        Opts {
            auth: true,
            quota: Some("1M"),
        },
    );
    assert!(!stale.exists());
    let c = srv.client();
    assert_eq!(c.quota(&srv.url("")).await, (4000, 1_048_576 - 4000));
    // Every collection reports the account's numbers.
    assert_eq!(c.quota(&srv.url("a/b/")).await, (4000, 1_048_576 - 4000));

    assert_eq!(
        c.put(&srv.url("a/new"), vec![2u8; 10_000]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(c.quota(&srv.url("")).await.0, 14_000);
    // Overwrite with a smaller file.
    assert_eq!(
        c.put(&srv.url("a/new"), vec![2u8; 500]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.quota(&srv.url("")).await.0, 4_500);

    let r = c.req("DELETE", &srv.url("a/b/y")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.quota(&srv.url("")).await, (1_500, 1_048_576 - 1_500));

    // COPY adds, MOVE over a file frees the replaced one, DELETE of a tree frees it all.
    let r = c
        .req("COPY", &srv.url("x"))
        .header("Destination", srv.url("a/x2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(c.quota(&srv.url("")).await.0, 2_500);
    let r = c
        .req("MOVE", &srv.url("a/x2"))
        .header("Destination", srv.url("a/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.quota(&srv.url("")).await.0, 2_000);
    let r = c.req("DELETE", &srv.url("a/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.quota(&srv.url("")).await, (1_000, 1_048_576 - 1_000));

    // Without --quota there are no quota properties.
    drop(srv);
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let (st, xml) = srv
        .client()
        .propfind(&srv.url(""), "0", &["quota-used-bytes"])
        .await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    assert!(elements(&xml, "D:quota-used-bytes").is_empty(), "{xml}");
}

#[tokio::test]
async fn put_over_quota_is_507_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let old = data(40_000, 4);
    std::fs::write(dir.path().join("old.bin"), &old).unwrap();
    let srv = Server::start_in(
        dir,
        Opts {
            auth: true,
            quota: Some("100K"),
        },
    );
    let c = srv.client();
    let too_big = data(80_000, 5); // 40_000 + 80_000 > 102_400

    // New file, with Content-Length: refused before the body is read.
    let r = c.put(&srv.url("new.bin"), too_big.clone()).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(!srv.path("new.bin").exists());

    // New file, chunked: refused while streaming.
    let r = c
        .req("PUT", &srv.url("new.bin"))
        .body(chunked(too_big.clone(), 8192))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(!srv.path("new.bin").exists());

    // Overwrite that would exceed the quota (net growth 100_000 - 40_000 > 62_400 free):
    // the old content stays, both ways.
    let bigger = data(110_000, 6);
    let r = c.put(&srv.url("old.bin"), bigger.clone()).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(std::fs::read(srv.path("old.bin")).unwrap(), old);
    let r = c
        .req("PUT", &srv.url("old.bin"))
        .body(chunked(bigger, 8192))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(std::fs::read(srv.path("old.bin")).unwrap(), old);

    assert!(srv.temp_files().is_empty(), "{:?}", srv.temp_files());
    assert_eq!(c.quota(&srv.url("")).await, (40_000, 102_400 - 40_000));

    // An overwrite counts only its growth: replacing 40_000 bytes by 100_000 fits.
    let fits = data(100_000, 7);
    let r = c.put(&srv.url("old.bin"), fits.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(srv.path("old.bin")).unwrap(), fits);
    assert_eq!(c.quota(&srv.url("")).await, (100_000, 2_400));

    // Exactly filling the quota is allowed; one byte more is not.
    let r = c.put(&srv.url("fill"), vec![0u8; 2_400]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.put(&srv.url("one-more"), vec![0u8; 1]).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    // COPY is held to the quota too.
    let r = c
        .req("COPY", &srv.url("fill"))
        .header("Destination", srv.url("fill2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(!srv.path("fill2").exists());
    assert!(srv.temp_files().is_empty(), "{:?}", srv.temp_files());
    assert_eq!(c.quota(&srv.url("")).await, (102_400, 0));
}

#[tokio::test]
async fn put_is_atomic_for_readers_and_aborted_uploads_leave_nothing() {
    let srv = Server::start(Opts {
        auth: false,
        quota: Some("10M"),
    });
    let c = srv.client();
    let old = data(50_000, 8);
    std::fs::write(srv.path("f.bin"), &old).unwrap();

    // A slow upload over f.bin: while it is in flight, readers see the old file and no temp.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let put = tokio::spawn(c.req("PUT", &srv.url("f.bin")).body(body).send());
    let new = data(120_000, 9);
    tx.send(Ok(Bytes::copy_from_slice(&new[..60_000])))
        .await
        .unwrap();
    // Wait until the server has the first half on disk.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let temps = srv.temp_files();
        if temps.len() == 1 && std::fs::metadata(&temps[0]).unwrap().len() >= 60_000 {
            break;
        }
        assert!(Instant::now() < deadline, "upload never reached the disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, body) = c.get(&srv.url("f.bin")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], &old[..], "a reader saw a half-written file");
    let (_, xml) = c.propfind(&srv.url(""), "1", &[]).await;
    assert!(!xml.contains(".cloudmount-put-"), "{xml}");
    tx.send(Ok(Bytes::copy_from_slice(&new[60_000..])))
        .await
        .unwrap();
    drop(tx);
    let r = put.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, body) = c.get(&srv.url("f.bin")).await;
    assert_eq!(&body[..], &new[..]);

    // A client that dies mid-body: the target keeps its content, the temp file goes away.
    let addr = srv
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        sock,
        "PUT /f.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    sock.write_all(&[0u8; 30_000]).unwrap();
    sock.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.temp_files().is_empty() {
        assert!(Instant::now() < deadline, "temp file left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(srv.path("f.bin")).unwrap(), new);
    assert_eq!(c.quota(&srv.url("")).await.0, 120_000);
}

#[tokio::test]
async fn odd_names_round_trip() {
    let srv = Server::start(Opts {
        auth: true,
        quota: None,
    });
    let c = srv.client();
    let names = [
        "with space.txt",
        "100% sure.txt",
        "hash#tag.txt",
        "what?.txt",
        "a&b+c=d;e,f'g\"h.txt",
        "ünïcödé–ñ.txt",
        "日本語のファイル.txt",
        "emoji 🎉.txt",
        "e\u{301}.txt", // NFD
        "é.txt",        // NFC
    ];
    let r = c
        .req("MKCOL", &srv.url(&format!("{}/", enc("dir # % ü"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for (i, name) in names.iter().enumerate() {
        let url = srv.url(&format!("{}/{}", enc("dir # % ü"), enc(name)));
        let body = format!("content {i} of {name}");
        let r = c.put(&url, body.clone()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{name}");
        assert_eq!(
            std::fs::read_to_string(srv.path("dir # % ü").join(name)).unwrap(),
            body,
            "{name}"
        );
        let (st, got) = c.get(&url).await;
        assert_eq!((st, &got[..]), (StatusCode::OK, body.as_bytes()), "{name}");
    }
    let (st, xml) = c
        .propfind(
            &srv.url(&format!("{}/", enc("dir # % ü"))),
            "1",
            &["resourcetype"],
        )
        .await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    let mut listed: Vec<String> = elements(&xml, "D:href")
        .iter()
        .map(|h| {
            percent_encoding::percent_decode_str(h)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("/dir # % ü/{n}")).collect();
    want.push("/dir # % ü/".to_string());
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn temp_file_names_are_refused() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    let hidden = ".cloudmount-put-0000000000000000.tmp";
    std::fs::write(srv.path(hidden), b"in flight").unwrap();
    std::fs::write(srv.path("visible"), b"x").unwrap();
    let (st, _) = c.get(&srv.url(hidden)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = c.get(&srv.url(&enc(hidden).replace('.', "%2E"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = c.propfind(&srv.url(hidden), "0", &[]).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, xml) = c.propfind(&srv.url(""), "1", &[]).await;
    assert!(
        xml.contains("visible") && !xml.contains(".cloudmount-put-"),
        "{xml}"
    );
    // Nor in the HTML index a browser gets.
    let (st, html) = c.get(&srv.url("")).await;
    let html = String::from_utf8_lossy(&html);
    assert_eq!(st, StatusCode::OK);
    assert!(
        html.contains("visible") && !html.contains(".cloudmount-put-"),
        "{html}"
    );
    assert_eq!(
        c.put(&srv.url(".cloudmount-put-new"), b"x".to_vec())
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let st = c
        .req("DELETE", &srv.url(hidden))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NOT_FOUND);
    let st = c
        .req("MOVE", &srv.url("visible"))
        .header("Destination", srv.url(".cloudmount-put-x"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::FORBIDDEN);
    let st = c
        .req("MKCOL", &srv.url(".cloudmount-put-dir/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read(srv.path(hidden)).unwrap(), b"in flight");
    assert!(srv.path("visible").exists());
}

#[tokio::test]
async fn conditional_put_and_overwrite_header() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    let r = c.put(&srv.url("f"), b"one".to_vec()).await;
    let etag1 = r.headers().get("etag").unwrap().clone();
    let r = c
        .req("PUT", &srv.url("f"))
        .header("If-Match", etag1.clone())
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Stale If-Match.
    let r = c
        .req("PUT", &srv.url("f"))
        .header("If-Match", etag1)
        .body("three")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // If-None-Match: * on an existing file, and on a new one.
    let r = c
        .req("PUT", &srv.url("f"))
        .header("If-None-Match", "*")
        .body("four")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(std::fs::read(srv.path("f")).unwrap(), b"two");
    let r = c
        .req("PUT", &srv.url("g"))
        .header("If-None-Match", "*")
        .body("five")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(srv.path("g")).unwrap(), b"five");

    // PUT into a missing collection: 409.
    let r = c.put(&srv.url("no/such/dir/f"), b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    for method in ["COPY", "MOVE"] {
        let r = c
            .req(method, &srv.url("f"))
            .header("Destination", srv.url("g"))
            .header("Overwrite", "F")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "{method}");
        assert_eq!(std::fs::read(srv.path("g")).unwrap(), b"five");
    }
    let r = c
        .req("COPY", &srv.url("f"))
        .header("Destination", srv.url("g"))
        .header("Overwrite", "T")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(srv.path("g")).unwrap(), b"two");
}

/// Conditional PUTs based on one version, sent at the same moment with slow bodies: exactly
/// one is taken, the others get 412 (dav-server checks `If-Match` before the body; the server
/// serves conditional requests to one path one at a time).
#[tokio::test]
async fn conditional_puts_of_one_version_in_flight_at_once_take_one() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    let r = c.put(&srv.url("reg.json"), b"v0".to_vec()).await;
    let etag = r.headers().get("etag").unwrap().clone();
    let mut puts = Vec::new();
    for i in 0..4u8 {
        let req = c
            .req("PUT", &srv.url("reg.json"))
            .header("If-Match", etag.clone())
            .body(slow_body(vec![b'a' + i; 64 * 1024], 8 * 1024));
        puts.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    let mut statuses = Vec::new();
    for p in puts {
        statuses.push(p.await.unwrap());
    }
    let taken = statuses.iter().filter(|s| s.is_success()).count();
    assert_eq!(taken, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.is_success() || *s == StatusCode::PRECONDITION_FAILED),
        "{statuses:?}"
    );
    let body = std::fs::read(srv.path("reg.json")).unwrap();
    assert_eq!(body.len(), 64 * 1024);
    assert!(body.iter().all(|b| *b == body[0]), "one whole body");
}

/// MOVEs with `Overwrite: F` of different files to one destination, sent at the same moment,
/// many times over: each time exactly one is taken, the others get 412, and the destination
/// holds one whole file (dav-server checks the destination before it moves, and the rename
/// replaces it: the server serves them one at a time).
#[tokio::test]
async fn moves_without_overwrite_to_one_destination_take_one() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    const MOVERS: u8 = 8;
    for round in 0..25 {
        for i in 0..MOVERS {
            let r = c
                .put(&srv.url(&format!("src{round}-{i}")), vec![b'a' + i; 4096])
                .await;
            assert!(r.status().is_success(), "{}", r.status());
        }
        let dest = srv.url(&format!("dest{round}"));
        let mut moves = Vec::new();
        for i in 0..MOVERS {
            let req = c
                .req("MOVE", &srv.url(&format!("src{round}-{i}")))
                .header("Destination", dest.as_str())
                .header("Overwrite", "F");
            moves.push(tokio::spawn(
                async move { req.send().await.unwrap().status() },
            ));
        }
        let mut statuses = Vec::new();
        for m in moves {
            statuses.push(m.await.unwrap());
        }
        let taken = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(taken, 1, "round {round}: {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| s.is_success() || *s == StatusCode::PRECONDITION_FAILED),
            "round {round}: {statuses:?}"
        );
        let body = std::fs::read(srv.path(&format!("dest{round}"))).unwrap();
        assert_eq!(body.len(), 4096);
        assert!(body.iter().all(|b| *b == body[0]), "one whole file");
        let left = (0..MOVERS)
            .filter(|i| srv.path(&format!("src{round}-{i}")).exists())
            .count();
        assert_eq!(left, usize::from(MOVERS) - 1, "round {round}");
    }
}

/// A body that arrives in pieces of `piece` bytes, 20 ms apart (sent chunked).
fn slow_body(content: Vec<u8>, piece: usize) -> reqwest::Body {
    let chunks: Vec<Bytes> = content.chunks(piece).map(Bytes::copy_from_slice).collect();
    use futures_util::StreamExt;
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(c)
    }))
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let st = Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = srv
        .wait_exit(Duration::from_secs(15))
        .expect("still running");
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::fs::File::open(&srv.log)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("SIGTERM"), "{log}");
}

#[tokio::test]
async fn every_version_gets_its_own_etag() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    let mut seen = std::collections::HashSet::new();
    // Same size, same file, as fast as possible: inode reuse and coarse clocks must not make
    // two versions share an ETag.
    for i in 0..30u8 {
        let r = c.put(&srv.url("f"), vec![b'a' + i % 2; 16]).await;
        assert!(r.status().is_success());
        let etag = r
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            seen.insert(etag.clone()),
            "ETag {etag} reused at version {i}"
        );
        let r = c
            .req("COPY", &srv.url("f"))
            .header("Destination", srv.url("g"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let r = c.req("HEAD", &srv.url("g")).send().await.unwrap();
        let etag = r
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(seen.insert(etag.clone()), "ETag {etag} reused by a copy");
    }
}

/// The library API on its own: port 0, url(), quota_used(), graceful shutdown.
#[tokio::test]
async fn library_start_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), b"12345").unwrap();
    let handle = cloudmount::server::start(cloudmount::server::ServeConfig {
        root: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: Some(("u".into(), "p".into())),
        quota: Some(1000),
    })
    .await
    .unwrap();
    let addr = handle.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(handle.url(), format!("http://127.0.0.1:{}/", addr.port()));
    assert_eq!(handle.quota_used(), Some(5));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .put(format!("{}y", handle.url()))
        .basic_auth("u", Some("p"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(handle.quota_used(), Some(8));
    handle.shutdown().await;
    assert!(http.get(format!("http://{addr}/x")).send().await.is_err());

    // Start-up errors are typed.
    use cloudmount::server::{start, ServeConfig, ServeError};
    let cfg = |root: PathBuf, auth: Option<(&str, &str)>| ServeConfig {
        root,
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        quota: None,
    };
    let missing = dir.path().join("missing");
    assert!(matches!(
        start(cfg(missing, None)).await,
        Err(ServeError::RootMissing(_))
    ));
    assert!(matches!(
        start(cfg(dir.path().join("x"), None)).await,
        Err(ServeError::RootNotDirectory(_))
    ));
    assert!(matches!(
        start(cfg(dir.path().into(), Some(("u", "")))).await,
        Err(ServeError::EmptyPassword)
    ));
    assert!(matches!(
        start(cfg(dir.path().into(), Some(("a:b", "p")))).await,
        Err(ServeError::InvalidUser(_))
    ));
    let dbg = format!("{:?}", cfg(dir.path().into(), Some(("u", "hunter2"))));
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

/// One HTTP/1.1 exchange on a fresh connection, with the request bytes exactly as given (for
/// request targets an HTTP library would normalize): (status, head and body as text).
fn raw(base_url: &str, request: &str) -> (u16, String) {
    let addr = base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// A request head for [`raw`]: `Connection: close`, no body.
fn raw_head(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n")
}

fn nested_xml(root: &str, inner: &str, levels: usize) -> String {
    format!(
        r#"<?xml version="1.0"?><D:{root} xmlns:D="DAV:">{}{}</D:{root}>"#,
        format!("<D:{inner}>").repeat(levels),
        format!("</D:{inner}>").repeat(levels)
    )
}

#[tokio::test]
async fn deeply_nested_xml_is_refused_and_the_server_lives_on() {
    let srv = Server::start(Opts {
        auth: true,
        quota: None,
    });
    let c = srv.client();
    std::fs::write(srv.path("f"), b"x").unwrap();
    for (method, root, inner) in [
        ("PROPFIND", "propfind", "prop"),
        ("PROPPATCH", "propertyupdate", "set"),
        ("LOCK", "lockinfo", "owner"),
    ] {
        // ~30 KB: enough nesting to overflow a worker's stack in a recursive parser.
        let body = nested_xml(root, inner, 2_000);
        let r = c
            .req(method, &srv.url("f"))
            .header("Depth", "0")
            .header("Content-Type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{method}");
        let text = r.text().await.unwrap();
        assert!(text.contains("nested"), "{method}: {text}");
        // Still alive, and normal bodies still work.
        let (st, xml) = c.propfind(&srv.url("f"), "0", &["getetag"]).await;
        assert_eq!(st, StatusCode::MULTI_STATUS, "after {method}: {xml}");
    }
    // A DTD (entity expansion) is refused too, and a body over 64 KiB is 413.
    let r = c
        .req("PROPFIND", &srv.url("f"))
        .header("Depth", "0")
        .body(r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaa">]><D:propfind xmlns:D="DAV:"><D:prop>&a;</D:prop></D:propfind>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let big = format!(
        r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{}</D:prop></D:propfind>"#,
        "<D:getetag/>".repeat(10_000)
    );
    let r = c
        .req("PROPFIND", &srv.url("f"))
        .header("Depth", "0")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (st, _) = c.get(&srv.url("f")).await;
    assert_eq!(st, StatusCode::OK);
}

/// Sends `method` to `url` with optional Destination, returns the status.
async fn status_of(c: &Client, method: &str, url: &str, dest: Option<&str>) -> StatusCode {
    let mut rb = c.req(method, url);
    if let Some(d) = dest {
        rb = rb.header("Destination", d);
    }
    if method == "PROPFIND" {
        rb = rb.header("Depth", "1");
    }
    if method == "PROPPATCH" {
        rb = rb.body(
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:p>v</Z:p></D:prop></D:set></D:propertyupdate>"#,
        );
    }
    if method == "LOCK" {
        rb = rb.body(
            r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#,
        );
    }
    if method == "PUT" {
        rb = rb.body("written through a link");
    }
    rb.send().await.unwrap().status()
}

#[tokio::test]
async fn symlinks_lead_nowhere_for_any_method() {
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path();
    std::fs::write(o.join("secret"), b"outside secret").unwrap();
    std::fs::create_dir(o.join("sub")).unwrap();
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    std::fs::write(srv.path("real"), b"real file").unwrap();
    std::fs::create_dir(srv.path("dir")).unwrap();
    std::os::unix::fs::symlink(o.join("secret"), srv.path("lfile")).unwrap();
    std::os::unix::fs::symlink(o, srv.path("ldir")).unwrap();
    // A link that stays inside is not followed either (one simple rule).
    std::os::unix::fs::symlink("real", srv.path("dir/inner")).unwrap();

    for (method, path, dest) in [
        ("GET", "lfile", None),
        ("HEAD", "lfile", None),
        ("GET", "ldir/secret", None),
        ("GET", "ldir/", None),
        ("GET", "dir/inner", None),
        ("PROPFIND", "lfile", None),
        ("PROPFIND", "ldir/", None),
        ("PROPFIND", "ldir/secret", None),
        ("PROPPATCH", "lfile", None),
        ("PUT", "lfile", None),
        ("PUT", "ldir/secret", None),
        ("PUT", "ldir/new", None),
        ("PUT", "ldir/sub/new", None),
        ("MKCOL", "ldir/newdir/", None),
        ("DELETE", "ldir/secret", None),
        ("DELETE", "lfile", None),
        ("LOCK", "ldir/locked", None),
        ("COPY", "ldir/secret", Some("stolen")),
        ("COPY", "lfile", Some("stolen")),
        ("MOVE", "ldir/secret", Some("stolen")),
        ("COPY", "real", Some("ldir/copied")),
        ("MOVE", "real", Some("ldir/moved")),
        ("COPY", "real", Some("lfile")),
        ("MOVE", "dir/", Some("ldir/sub/moved/")),
    ] {
        let dest = dest.map(|d| srv.url(d));
        let st = status_of(&c, method, &srv.url(path), dest.as_deref()).await;
        // A Destination whose parent is behind a link gets 409 (no such parent collection).
        let conflict_ok = dest.is_some() && st == StatusCode::CONFLICT;
        assert!(
            st == StatusCode::FORBIDDEN || conflict_ok,
            "{method} {path} {dest:?}: {st}"
        );
    }
    // Nothing outside changed, nothing was created there or stolen from there.
    let mut names: Vec<String> = std::fs::read_dir(o)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["secret", "sub"]);
    assert_eq!(std::fs::read_dir(o.join("sub")).unwrap().count(), 0);
    assert_eq!(std::fs::read(o.join("secret")).unwrap(), b"outside secret");
    assert!(!srv.path("stolen").exists());
    assert_eq!(std::fs::read(srv.path("real")).unwrap(), b"real file");
    assert!(srv.path("lfile").is_symlink() && srv.path("ldir").is_symlink());

    // Symlinks are not listed, neither in PROPFIND nor in the HTML index.
    let (st, xml) = c.propfind(&srv.url(""), "1", &[]).await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    assert!(
        xml.contains("real") && !xml.contains("lfile") && !xml.contains("ldir"),
        "{xml}"
    );
    let (_, html) = c.get(&srv.url("")).await;
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains("real") && !html.contains("lfile") && !html.contains("ldir"),
        "{html}"
    );

    // Deleting a collection unlinks the symlinks in it, never what they point to.
    std::os::unix::fs::symlink(o, srv.path("dir/out")).unwrap();
    let st = c
        .req("DELETE", &srv.url("dir/"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!srv.path("dir").exists());
    assert_eq!(std::fs::read(o.join("secret")).unwrap(), b"outside secret");
    assert_eq!(std::fs::read(srv.path("real")).unwrap(), b"real file");
}

#[tokio::test]
async fn hard_links_are_never_written_through() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"outside secret").unwrap();
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    std::fs::hard_link(&secret, srv.path("hl")).unwrap();
    // PUT replaces the name, not the shared inode.
    let r = c.put(&srv.url("hl"), b"new".to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(srv.path("hl")).unwrap(), b"new");
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside secret");
    // So do partial updates and COPY onto it.
    std::fs::remove_file(srv.path("hl")).unwrap();
    std::fs::hard_link(&secret, srv.path("hl")).unwrap();
    let r = c
        .req("PUT", &srv.url("hl"))
        .header("Content-Range", "bytes 0-2/*")
        .body("NEW")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(std::fs::read(srv.path("hl")).unwrap(), b"NEWside secret");
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside secret");
    std::fs::write(srv.path("src"), b"copied").unwrap();
    std::fs::remove_file(srv.path("hl")).unwrap();
    std::fs::hard_link(&secret, srv.path("hl")).unwrap();
    let st = status_of(&c, "COPY", &srv.url("src"), Some(&srv.url("hl"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(srv.path("hl")).unwrap(), b"copied");
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside secret");
    // DELETE removes the name only.
    let st = c
        .req("DELETE", &srv.url("hl"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside secret");
}

#[tokio::test]
async fn no_path_spelling_leaves_the_served_directory() {
    // The served dir and a secret beside it: `..` from the root would reach it.
    let parent = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir_in(parent.path()).unwrap();
    std::fs::write(parent.path().join("secret"), b"outside secret").unwrap();
    std::fs::create_dir(served.path().join("sub")).unwrap();
    let srv = Server::start_in(
        served,
        Opts {
            auth: false,
            quota: None,
        },
    );
    for target in [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/sub/%2e%2e/%2e%2e/secret",
        "/sub/..%2f..%2fsecret",
        "/..%2fsecret",
        "//../secret",
        "/.%2e/secret",
        "/..\\secret",
        "/sub/..%5c..%5csecret",
        "/%2e%2e%5csecret",
        "/sub/%00/../../secret",
        "/sub/.../secret",
    ] {
        for method in ["GET", "PROPFIND", "DELETE"] {
            let extra = if method == "PROPFIND" {
                "Depth: 0\r\n"
            } else {
                ""
            };
            let (_, text) = raw(&srv.url, &raw_head(method, target, extra));
            assert!(
                !text.contains("outside secret"),
                "{method} {target}: {text}"
            );
        }
        // Writes may create an oddly named file *inside* (`..\secret` is a plain name on
        // Unix); they must never touch anything outside.
        let put = format!(
            "PUT {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nowned"
        );
        raw(&srv.url, &put);
        raw(
            &srv.url,
            &raw_head(
                "COPY",
                "/sub/",
                &format!("Destination: http://x{target}\r\n"),
            ),
        );
        assert_eq!(
            std::fs::read(parent.path().join("secret")).unwrap(),
            b"outside secret",
            "{target}"
        );
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            2,
            "{target}"
        );
    }
    // The plain `..` spellings are refused outright.
    for target in ["/../secret", "/%2e%2e/secret", "/sub/../../secret"] {
        let (st, text) = raw(&srv.url, &raw_head("GET", target, ""));
        assert!(st == 403 || st == 400, "GET {target}: {st}\n{text}");
    }
    assert!(srv.path("sub").is_dir());
}

#[tokio::test]
async fn propfind_depth_must_be_finite_and_valid() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    std::fs::create_dir(srv.path("dir")).unwrap();
    std::fs::write(srv.path("dir/f"), b"x").unwrap();
    for url in [srv.url("dir/"), srv.url("dir/f")] {
        for depth in [None, Some("infinity"), Some("Infinity")] {
            let mut rb = c.req("PROPFIND", &url);
            if let Some(d) = depth {
                rb = rb.header("Depth", d);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url} {depth:?}");
            let xml = r.text().await.unwrap();
            assert!(
                xml.contains("<D:error") && xml.contains("propfind-finite-depth"),
                "{xml}"
            );
        }
        for bad in ["2", "one", "", "-1"] {
            let r = c
                .req("PROPFIND", &url)
                .header("Depth", bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url} {bad:?}");
        }
    }
    // Depth 0 and 1 still work, on a file and on a collection.
    for depth in ["0", "1"] {
        let (st, xml) = c.propfind(&srv.url("dir/f"), depth, &[]).await;
        assert_eq!(st, StatusCode::MULTI_STATUS, "{xml}");
        assert_eq!(elements(&xml, "D:href"), ["/dir/f"], "{xml}");
    }
    let (_, xml) = c.propfind(&srv.url("dir/"), "0", &[]).await;
    assert_eq!(elements(&xml, "D:href"), ["/dir/"], "{xml}");
    let (_, xml) = c.propfind(&srv.url("dir/"), "1", &[]).await;
    assert_eq!(elements(&xml, "D:href"), ["/dir/", "/dir/f"], "{xml}");
}

#[tokio::test]
async fn destination_on_another_server_is_502_and_allow_is_complete() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    std::fs::write(srv.path("f"), b"x").unwrap();
    std::fs::create_dir(srv.path("dir")).unwrap();
    let port: u16 = srv
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    for method in ["COPY", "MOVE"] {
        for dest in [
            "http://other.example/g".to_string(),
            format!("http://127.0.0.1:{}/g", port.wrapping_add(1)),
            format!("http://localhost:{port}/g"),
        ] {
            let st = status_of(&c, method, &srv.url("f"), Some(&dest)).await;
            assert_eq!(st, StatusCode::BAD_GATEWAY, "{method} {dest}");
        }
    }
    assert!(srv.path("f").exists() && !srv.path("g").exists());
    // The same server, spelled as the request's Host, works.
    let st = status_of(&c, "COPY", &srv.url("f"), Some(&srv.url("g"))).await;
    assert_eq!(st, StatusCode::CREATED);

    let allow = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get("allow")
            .unwrap()
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .collect()
    };
    let r = c.req("OPTIONS", &srv.url("dir/")).send().await.unwrap();
    let methods = allow(&r);
    for m in [
        "OPTIONS",
        "GET",
        "HEAD",
        "PROPFIND",
        "PROPPATCH",
        "COPY",
        "MOVE",
        "DELETE",
    ] {
        assert!(methods.iter().any(|x| x == m), "{m} not in {methods:?}");
    }
    let r = c.req("OPTIONS", &srv.url("f")).send().await.unwrap();
    let methods = allow(&r);
    for m in ["GET", "HEAD", "PUT", "PROPFIND", "PROPPATCH", "DELETE"] {
        assert!(methods.iter().any(|x| x == m), "{m} not in {methods:?}");
    }
    let r = c.req("OPTIONS", &srv.url("missing/")).send().await.unwrap();
    let methods = allow(&r);
    for m in ["PUT", "MKCOL"] {
        assert!(methods.iter().any(|x| x == m), "{m} not in {methods:?}");
    }
}

/// The library server with small limits, for the timing tests.
async fn limited_server(
    limits: cloudmount::server::ServeLimits,
) -> (tempfile::TempDir, cloudmount::server::ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let handle = cloudmount::server::start_with_limits(
        cloudmount::server::ServeConfig {
            root: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: None,
            quota: None,
        },
        limits,
    )
    .await
    .unwrap();
    (dir, handle)
}

/// Reads what the server sends until it closes or `limit` passes.
async fn read_reply(sock: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_body_times_out_and_a_slow_one_does_not() {
    use tokio::io::AsyncWriteExt;
    let (dir, srv) = limited_server(cloudmount::server::ServeLimits {
        body_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let addr = srv.local_addr();

    // 10 bytes of 100, then nothing: 408 and the connection closed, no file, no temp file.
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"PUT /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut sock, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The same for a stalled XML body.
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\nContent-Length: 100\r\n\r\n<?xml",
    )
    .await
    .unwrap();
    let reply = read_reply(&mut sock, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");

    // A body that keeps arriving, slower in total than the timeout, is fine.
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        b"PUT /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 8\r\n\r\n",
    )
    .await
    .unwrap();
    for b in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sock.write_all(&[*b]).await.unwrap();
    }
    let reply = read_reply(&mut sock, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply:?}");
    assert_eq!(std::fs::read(dir.path().join("slow")).unwrap(), b"abcdefgh");
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    use tokio::io::AsyncWriteExt;
    let (dir, srv) = limited_server(cloudmount::server::ServeLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    std::fs::write(dir.path().join("f"), b"hello").unwrap();
    let addr = srv.local_addr();
    let get = b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // Two idle connections take both slots.
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(get).await.unwrap();
    let reply = read_reply(&mut third, Duration::from_secs(1)).await;
    assert_eq!(reply, "", "served beyond the cap");

    // One closes: the waiting connection is served.
    drop(idle1);
    let reply = read_reply(&mut third, Duration::from_secs(10)).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello"),
        "{reply:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_request_target_with_a_fragment_is_refused() {
    use tokio::io::AsyncWriteExt;
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    std::fs::create_dir(srv.path("frag")).unwrap();
    std::fs::write(srv.path("frag/f"), b"x").unwrap();
    let (st, text) = raw(&srv.url, &raw_head("DELETE", "/frag/#ment", ""));
    assert_eq!(st, 400, "{text}");
    assert!(srv.path("frag/f").exists());

    // Also later on a kept-alive connection, after a request with a body.
    let mut sock =
        tokio::net::TcpStream::connect(srv.url.trim_start_matches("http://").trim_end_matches('/'))
            .await
            .unwrap();
    sock.write_all(
        b"PUT /frag/g HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\nDELETE /frag/#x HTTP/1.1\r\n\
          DELETE /frag/#ment HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let reply = read_reply(&mut sock, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert!(srv.path("frag/f").exists());
    assert_eq!(
        std::fs::read(srv.path("frag/g")).unwrap(),
        b"DELETE /frag/#x HTTP/1.1\r\n"
    );
    // Without the fragment, DELETE works.
    let (st, text) = raw(&srv.url, &raw_head("DELETE", "/frag/", ""));
    assert_eq!(st, 204, "{text}");
    assert!(!srv.path("frag").exists());
}

#[test]
fn serving_beyond_loopback_requires_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudmount"))
        .arg("serve")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("CLOUDMOUNT_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serving on 0.0.0.0 without authentication");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "must not announce an address");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
}

const LOCKINFO_EXCLUSIVE: &str = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#;
const LOCKINFO_SHARED: &str = r#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#;

/// LOCK `url`: (status, Lock-Token without brackets, body).
async fn lock(
    c: &Client,
    url: &str,
    info: &str,
    depth: &str,
    timeout: &str,
) -> (StatusCode, String, String) {
    let r = c
        .req("LOCK", url)
        .header("Depth", depth)
        .header("Timeout", timeout)
        .header("Content-Type", "application/xml")
        .body(info.to_string())
        .send()
        .await
        .unwrap();
    let st = r.status();
    let token = r
        .headers()
        .get("lock-token")
        .map(|v| {
            v.to_str()
                .unwrap()
                .trim_matches(|c| c == '<' || c == '>')
                .to_string()
        })
        .unwrap_or_default();
    (st, token, r.text().await.unwrap())
}

#[tokio::test]
async fn locks_are_real() {
    let srv = Server::start(Opts {
        auth: true,
        quota: None,
    });
    let c = srv.client();
    std::fs::write(srv.path("f"), b"v1").unwrap();
    let f = srv.url("f");

    let (st, token, body) = lock(&c, &f, LOCKINFO_EXCLUSIVE, "0", "Second-100").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(token.starts_with("urn:uuid:"), "{token}");
    let (_, xml) = c.propfind(&f, "0", &["lockdiscovery"]).await;
    assert!(xml.contains(&token), "{xml}");

    // Another exclusive lock, and writes without the token, are refused.
    let (st, _, _) = lock(&c, &f, LOCKINFO_EXCLUSIVE, "0", "Second-100").await;
    assert_eq!(st, StatusCode::LOCKED);
    let (st, _, _) = lock(&c, &f, LOCKINFO_SHARED, "0", "Second-100").await;
    assert_eq!(st, StatusCode::LOCKED);
    assert_eq!(c.put(&f, b"v2".to_vec()).await.status(), StatusCode::LOCKED);
    for (method, dest) in [("DELETE", None), ("MOVE", Some(srv.url("g")))] {
        let st = status_of(&c, method, &f, dest.as_deref()).await;
        assert_eq!(st, StatusCode::LOCKED, "{method}");
    }
    assert_eq!(std::fs::read(srv.path("f")).unwrap(), b"v1");
    // With the token, the holder writes.
    let r = c
        .req("PUT", &f)
        .header("If", format!("(<{token}>)"))
        .body("v3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(srv.path("f")).unwrap(), b"v3");
    // UNLOCK needs the real token.
    let st = c
        .req("UNLOCK", &f)
        .header(
            "Lock-Token",
            "<urn:uuid:00000000-0000-0000-0000-000000000000>",
        )
        .send()
        .await
        .unwrap()
        .status();
    assert!(!st.is_success(), "{st}");
    let st = c
        .req("UNLOCK", &f)
        .header("Lock-Token", format!("<{token}>"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        c.put(&f, b"v4".to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );

    // Shared locks coexist, and still keep out writers without a token.
    let (st1, t1, _) = lock(&c, &f, LOCKINFO_SHARED, "0", "Second-100").await;
    let (st2, t2, _) = lock(&c, &f, LOCKINFO_SHARED, "0", "Second-100").await;
    assert_eq!((st1, st2), (StatusCode::OK, StatusCode::OK));
    assert_ne!(t1, t2);
    let (st, _, _) = lock(&c, &f, LOCKINFO_EXCLUSIVE, "0", "Second-100").await;
    assert_eq!(st, StatusCode::LOCKED);
    assert_eq!(c.put(&f, b"v5".to_vec()).await.status(), StatusCode::LOCKED);

    // A depth-infinity lock on a collection covers new members.
    std::fs::create_dir(srv.path("dir")).unwrap();
    let (st, dt, _) = lock(
        &c,
        &srv.url("dir/"),
        LOCKINFO_EXCLUSIVE,
        "infinity",
        "Second-100",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        c.put(&srv.url("dir/x"), b"x".to_vec()).await.status(),
        StatusCode::LOCKED
    );
    let r = c
        .req("PUT", &srv.url("dir/x"))
        .header("If", format!("(<{dt}>)"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Locks expire; an infinite one is granted the server's maximum.
    let (st, _, body) = lock(&c, &srv.url("h"), LOCKINFO_EXCLUSIVE, "0", "Infinite").await;
    assert!(st.is_success(), "{st}");
    assert!(body.contains("Second-600"), "{body}");
    let (st, _, _) = lock(&c, &srv.url("short"), LOCKINFO_EXCLUSIVE, "0", "Second-1").await;
    assert!(st.is_success(), "{st}");
    assert_eq!(
        c.put(&srv.url("short"), b"s".to_vec()).await.status(),
        StatusCode::LOCKED
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(c
        .put(&srv.url("short"), b"s".to_vec())
        .await
        .status()
        .is_success());
}

#[tokio::test]
async fn dead_properties_are_stored_and_follow_their_resource() {
    let srv = Server::start(Opts {
        auth: false,
        quota: None,
    });
    let c = srv.client();
    std::fs::write(srv.path("f"), b"x").unwrap();
    std::fs::create_dir(srv.path("d")).unwrap();
    let proppatch = |url: String, body: String| {
        let c = &c;
        async move {
            let r = c
                .req("PROPPATCH", &url)
                .header("Content-Type", "application/xml")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let set = |name: &str, value: &str| {
        format!(
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:cm-test"><D:set><D:prop><Z:{name}>{value}</Z:{name}></D:prop></D:set></D:propertyupdate>"#
        )
    };
    let get = |url: String, name: &'static str| {
        let c = &c;
        async move {
            let body = format!(
                r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:cm-test"><D:prop><Z:{name}/></D:prop></D:propfind>"#
            );
            let r = c
                .req("PROPFIND", &url)
                .header("Depth", "0")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::MULTI_STATUS);
            r.text().await.unwrap()
        }
    };

    let (st, xml) = proppatch(srv.url("f"), set("color", "blue ü")).await;
    assert_eq!(st, StatusCode::MULTI_STATUS, "{xml}");
    assert!(xml.contains("200 OK"), "{xml}");
    assert!(get(srv.url("f"), "color").await.contains("blue ü"));
    let (st, _) = proppatch(srv.url("d/"), set("shape", "round")).await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    let (st, _) = proppatch(srv.url(""), set("root", "yes")).await;
    assert_eq!(st, StatusCode::MULTI_STATUS);
    // A property the resource does not have is answered 404 (and one it has, 200).
    let xml = get(srv.url("f"), "nosuch").await;
    assert!(
        xml.contains("nosuch") && xml.contains("404 Not Found"),
        "{xml}"
    );
    // A missing resource has no properties to set.
    let (st, _) = proppatch(srv.url("missing"), set("color", "red")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Kept across an overwrite and a restart (stored on disk), never listed or served.
    assert_eq!(
        c.put(&srv.url("f"), b"y".to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let (_, xml) = c.propfind(&srv.url(""), "1", &[]).await;
    assert!(!xml.contains(".cloudmount-props-"), "{xml}");
    let (st, _) = c.get(&srv.url(".cloudmount-props-f")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Restart on the same directory (taken out of the first server before it is dropped).
    let mut srv = srv;
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    drop(srv);
    let srv = Server::start_in(
        dir,
        Opts {
            auth: false,
            quota: None,
        },
    );
    let c = srv.client();
    let get = |url: String, name: &'static str| {
        let c = &c;
        async move {
            let body = format!(
                r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:cm-test"><D:prop><Z:{name}/></D:prop></D:propfind>"#
            );
            let r = c
                .req("PROPFIND", &url)
                .header("Depth", "0")
                .body(body)
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }
    };
    assert!(get(srv.url("f"), "color").await.contains("blue ü"));
    assert!(get(srv.url("d/"), "shape").await.contains("round"));
    assert!(get(srv.url(""), "root").await.contains("yes"));

    // COPY copies them, MOVE takes them along, DELETE removes them.
    assert_eq!(
        status_of(&c, "COPY", &srv.url("f"), Some(&srv.url("g"))).await,
        StatusCode::CREATED
    );
    assert!(get(srv.url("g"), "color").await.contains("blue ü"));
    // A copied collection takes its own properties along too.
    assert_eq!(
        status_of(&c, "COPY", &srv.url("d/"), Some(&srv.url("d2/"))).await,
        StatusCode::CREATED
    );
    assert!(get(srv.url("d2/"), "shape").await.contains("round"));
    assert_eq!(
        status_of(&c, "DELETE", &srv.url("d2/"), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(&c, "MOVE", &srv.url("f"), Some(&srv.url("d/h"))).await,
        StatusCode::CREATED
    );
    assert!(get(srv.url("d/h"), "color").await.contains("blue ü"));
    assert_eq!(
        status_of(&c, "MOVE", &srv.url("d/"), Some(&srv.url("e/"))).await,
        StatusCode::CREATED
    );
    assert!(get(srv.url("e/"), "shape").await.contains("round"));
    assert!(get(srv.url("e/h"), "color").await.contains("blue ü"));
    // A new file under an old name starts without properties.
    assert_eq!(
        c.put(&srv.url("f"), b"new".to_vec()).await.status(),
        StatusCode::CREATED
    );
    assert!(!get(srv.url("f"), "color").await.contains("blue"));
    assert_eq!(
        status_of(&c, "DELETE", &srv.url("e/"), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(&c, "DELETE", &srv.url("g"), None).await,
        StatusCode::NO_CONTENT
    );
    let mut left: Vec<String> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [".cloudmount-props-", "f"],
        "only the root's properties and f remain"
    );
}

#[test]
fn litmus_passes_every_suite() {
    let srv = Server::start(Opts {
        auth: true,
        quota: Some("1G"),
    });
    // litmus writes debug.log and child.log into its working directory.
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("litmus")
        .args(["-k", &srv.url, USER, PASSWORD])
        .current_dir(work.path())
        .env("HOME", work.path())
        .output()
        .expect("litmus is not installed: run the tests with tests/run.sh (it installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summaries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("<- summary for"))
        .collect();
    assert_eq!(summaries.len(), 5, "{text}");
    for s in &summaries {
        assert!(
            s.contains(" 0 failed") && s.ends_with("100.0%"),
            "{s}\n\n{text}"
        );
    }
    assert!(
        !text.contains("SKIPPED") && !text.contains("WARNING"),
        "{text}"
    );
    assert!(out.status.success(), "{text}");
}

/// Runs rclone (installed by the test command) against the server; returns stdout.
fn rclone(srv: &Server, conf_dir: &Path, args: &[&str]) -> String {
    use std::io::Write as _;
    // The password goes through stdin and the environment, never argv.
    let mut obscure = Command::new("rclone")
        .args(["obscure", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("rclone is not installed: run the tests with tests/run.sh (it installs it)");
    obscure
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let obscured = obscure.wait_with_output().unwrap();
    let obscured = String::from_utf8(obscured.stdout).unwrap();
    let out = Command::new("rclone")
        .args(args)
        .args([
            "--webdav-url",
            &srv.url,
            "--webdav-user",
            USER,
            "--retries",
            "1",
        ])
        .env("RCLONE_WEBDAV_PASS", obscured.trim())
        .env("RCLONE_CONFIG", conf_dir.join("rclone.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rclone {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rclone_as_a_client() {
    let srv = Server::start(Opts {
        auth: true,
        quota: Some("1G"),
    });
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    std::fs::write(src.join("sub/b.bin"), data(300_000, 3)).unwrap();
    std::fs::write(src.join("ü # name.txt"), b"odd").unwrap();
    let src_s = src.to_str().unwrap();

    rclone(&srv, local.path(), &["copy", src_s, ":webdav:dst"]);
    assert_eq!(
        std::fs::read(srv.path("dst/sub/b.bin")).unwrap(),
        data(300_000, 3)
    );
    assert_eq!(std::fs::read(srv.path("dst/ü # name.txt")).unwrap(), b"odd");
    rclone(&srv, local.path(), &["check", src_s, ":webdav:dst"]);
    let mut listed: Vec<String> = rclone(&srv, local.path(), &["lsf", "-R", ":webdav:dst"])
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, ["a.txt", "sub/", "sub/b.bin", "ü # name.txt"]);

    rclone(
        &srv,
        local.path(),
        &["moveto", ":webdav:dst/a.txt", ":webdav:dst/sub/moved.txt"],
    );
    assert_eq!(
        std::fs::read(srv.path("dst/sub/moved.txt")).unwrap(),
        b"hello"
    );
    assert!(!srv.path("dst/a.txt").exists());
    rclone(&srv, local.path(), &["purge", ":webdav:dst/sub"]);
    assert!(!srv.path("dst/sub").exists());
    let about = rclone(&srv, local.path(), &["about", ":webdav:"]);
    assert!(about.contains("Used:"), "{about}");
}
