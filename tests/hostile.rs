//! The WebDAV client against a scripted HTTP server that answers badly on purpose: malformed
//! XML, hrefs escaping the base, huge listings, lying Content-Range, servers that ignore Range
//! or If-Match, bodies cut short, 5xx bursts, endless 401s. Every case must give a typed error
//! or the right bytes, never a panic, a hang, or a retry storm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudmount::remote::webdav::{WebDavConfig, WebDavRemote};
use cloudmount::remote::{ByteRange, ETag, PutBody, PutCondition, Remote, RemoteError, RemotePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler answers: raw bytes written as the response, and whether to close after.
struct Reply {
    raw: Vec<u8>,
    close: bool,
}

fn reply(status: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
    let mut raw = format!("HTTP/1.1 {status}\r\n").into_bytes();
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") {
            has_len = true;
        }
        raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has_len {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    Reply { raw, close: false }
}

fn multistatus(body: &str) -> Reply {
    reply(
        "207 Multi-Status",
        &[("Content-Type", "application/xml; charset=utf-8".into())],
        body.as_bytes(),
    )
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

struct Scripted {
    url: String,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    fn client(&self) -> WebDavRemote {
        let mut cfg = WebDavConfig::new(format!("{}dav/", self.url));
        cfg.retry_base_delay = Duration::from_millis(5);
        cfg.retries = 3;
        cfg.read_timeout = Duration::from_secs(5);
        WebDavRemote::new(cfg).unwrap()
    }
}

async fn scripted(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Scripted {
    let handler: Handler = Arc::new(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c2, s2) = (count.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (handler, count, seen) = (handler.clone(), c2.clone(), s2.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request head.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        let mut tmp = [0u8; 8192];
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    buf.drain(..head_end + 4);
                    let mut lines = head.split("\r\n");
                    let first = lines.next().unwrap_or("");
                    let mut parts = first.split(' ');
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < len {
                        let mut tmp = [0u8; 65536];
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    buf.drain(..len);
                    let req = Seen {
                        method,
                        path,
                        headers,
                        body_len: len,
                    };
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push(req.clone());
                    let r = handler(&req, n);
                    if sock.write_all(&r.raw).await.is_err() || r.close {
                        let _ = sock.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        url: format!("http://{addr}/"),
        count,
        seen,
    }
}

fn p(s: &str) -> RemotePath {
    RemotePath::new(s).unwrap()
}

fn listing_xml(base: &str, children: &[&str]) -> String {
    let mut s = String::from(r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">"#);
    s.push_str(&format!(
        "<D:response><D:href>{base}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    ));
    for c in children {
        s.push_str(&format!(
            "<D:response><D:href>{c}</D:href><D:propstat><D:prop><D:resourcetype/><D:getcontentlength>3</D:getcontentlength><D:getetag>\"e\"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        ));
    }
    s.push_str("</D:multistatus>");
    s
}

#[tokio::test]
async fn malformed_xml_is_a_clear_error() {
    let s =
        scripted(|_, _| multistatus("<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/dav/x"))
            .await;
    let err = s.client().list(&RemotePath::root()).await.unwrap_err();
    assert!(matches!(err, RemoteError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[tokio::test]
async fn html_instead_of_multistatus_is_an_error() {
    let s = scripted(|_, _| {
        reply(
            "200 OK",
            &[("Content-Type", "text/html".into())],
            b"<html><body>Please log in</body></html>",
        )
    })
    .await;
    let err = s.client().stat(&RemotePath::root()).await.unwrap_err();
    assert!(matches!(err, RemoteError::BadResponse { .. }), "{err}");
}

#[tokio::test]
async fn hrefs_escaping_the_base_are_refused() {
    for evil in [
        "http://evil.example/dav/x",
        "/etc/passwd",
        "/dav/../etc/passwd",
        "/dav/%2e%2e/x",
        "/dav/sub/deeper/x",
        "/other/",
    ] {
        let body = listing_xml("/dav/", &["/dav/ok", evil]);
        let s = scripted(move |_, _| multistatus(&body)).await;
        let err = s.client().list(&RemotePath::root()).await.unwrap_err();
        assert!(
            matches!(err, RemoteError::BadResponse { .. }),
            "{evil}: {err}"
        );
    }
}

#[tokio::test]
async fn huge_listing_parses_and_oversized_reply_is_refused() {
    let names: Vec<String> = (0..20_000).map(|i| format!("/dav/file-{i:05}")).collect();
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let body = Arc::new(listing_xml("/dav/", &refs));
    let b2 = body.clone();
    let s = scripted(move |_, _| multistatus(&b2)).await;
    let l = s.client().list(&RemotePath::root()).await.unwrap();
    assert_eq!(l.children.len(), 20_000);
    assert_eq!(l.children[12_345].name(), "file-12345");

    let mut cfg = WebDavConfig::new(format!("{}dav/", s.url));
    cfg.max_propfind_bytes = 100_000;
    let small = WebDavRemote::new(cfg).unwrap();
    let err = small.list(&RemotePath::root()).await.unwrap_err();
    assert!(matches!(err, RemoteError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn missing_props_give_defaults_and_head_supplies_the_etag() {
    let s = scripted(|req, _| match req.method.as_str() {
        "PROPFIND" => multistatus(
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/dav/f</D:href>
               <D:propstat><D:prop/><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
               </D:response></D:multistatus>"#,
        ),
        "HEAD" => reply(
            "200 OK",
            &[
                ("ETag", "\"from-head\"".into()),
                ("Content-Length", "0".into()),
            ],
            b"",
        ),
        _ => reply("500 Internal Server Error", &[], b""),
    })
    .await;
    let e = s.client().stat(&p("f")).await.unwrap();
    assert!(!e.is_dir());
    assert_eq!(e.size, 0);
    assert_eq!(e.mtime, None);
    assert_eq!(e.etag, Some(ETag::strong("from-head")));
}

#[tokio::test]
async fn lying_content_range_is_refused() {
    let s = scripted(|_, _| {
        reply(
            "206 Partial Content",
            &[
                ("Content-Range", "bytes 10-19/100".into()),
                ("ETag", "\"v\"".into()),
            ],
            b"0123456789",
        )
    })
    .await;
    let err = s
        .client()
        .read_range(&p("f"), ByteRange::new(0, 10), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::BadResponse { .. }), "{err}");
}

#[tokio::test]
async fn server_ignoring_range_still_gives_exact_bytes() {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let d2 = data.clone();
    let s = scripted(move |_, _| reply("200 OK", &[("ETag", "\"v1\"".into())], &d2)).await;
    let c = s.client();
    for (start, len) in [
        (0u64, Some(10u64)),
        (4095, Some(2)),
        (9_990, Some(100)),
        (5_000, None),
        (20_000, Some(5)),
    ] {
        let got = c
            .read_range(&p("f"), ByteRange { start, len }, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let s0 = (start as usize).min(data.len());
        let e = len.map_or(data.len(), |l| (s0 + l as usize).min(data.len()));
        assert_eq!(&got[..], &data[s0..e], "range {start} {len:?}");
    }
}

#[tokio::test]
async fn other_version_is_refused_even_when_the_server_ignores_if_match() {
    let s = scripted(|req, _| {
        assert_eq!(req.header("if-match"), Some("\"v1\""));
        reply(
            "206 Partial Content",
            &[
                ("Content-Range", "bytes 0-3/10".into()),
                ("ETag", "\"v2\"".into()),
            ],
            b"abcd",
        )
    })
    .await;
    let err = s
        .client()
        .read_range(&p("f"), ByteRange::new(0, 4), Some(&ETag::strong("v1")))
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::VersionChanged { .. }), "{err}");
}

#[tokio::test]
async fn body_cut_short_is_a_transient_error() {
    let s = scripted(|_, _| {
        let mut r = reply(
            "206 Partial Content",
            &[
                ("Content-Range", "bytes 0-99/1000".into()),
                ("Content-Length", "100".into()),
            ],
            &[b'x'; 40],
        );
        r.close = true;
        r
    })
    .await;
    let resp = s
        .client()
        .read_range(&p("f"), ByteRange::new(0, 100), None)
        .await
        .unwrap();
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn transient_5xx_is_retried_for_safe_methods_only() {
    let s = scripted(|req, n| match req.method.as_str() {
        "PROPFIND" if n < 2 => reply("503 Service Unavailable", &[], b"busy"),
        "PROPFIND" => multistatus(&listing_xml("/dav/", &["/dav/a"])),
        _ => reply("503 Service Unavailable", &[], b"busy"),
    })
    .await;
    let c = s.client();
    let l = c.list(&RemotePath::root()).await.unwrap();
    assert_eq!(l.children.len(), 1);
    assert_eq!(s.count(), 3);
    let err = c
        .put(&p("x"), PutBody::from(b"data".to_vec()), PutCondition::None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let puts = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 1, "PUT must not be re-sent by the protocol layer");
}

#[tokio::test]
async fn retries_give_up_with_a_transient_error() {
    let s = scripted(|_, _| reply("502 Bad Gateway", &[], b"")).await;
    let err = s.client().stat(&RemotePath::root()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(s.count(), 4, "1 try + 3 retries");
}

#[tokio::test]
async fn endless_401_is_an_auth_error_without_a_storm() {
    let s = scripted(|_, _| {
        reply(
            "401 Unauthorized",
            &[(
                "WWW-Authenticate",
                r#"Digest realm="r", nonce="abc", qop="auth", algorithm=MD5"#.into(),
            )],
            b"",
        )
    })
    .await;
    let mut cfg = WebDavConfig::new(format!("{}dav/", s.url)).with_credentials("u", "wrong");
    cfg.retries = 3;
    let c = WebDavRemote::new(cfg).unwrap();
    let err = c.stat(&RemotePath::root()).await.unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err}");
    // One challenge request and one signed request.
    assert_eq!(s.count(), 2);
    let seen = s.seen.lock().unwrap();
    assert!(seen[0].header("authorization").is_none());
    let auth = seen[1].header("authorization").unwrap();
    assert!(auth.starts_with("Digest "), "{auth}");
    assert!(auth.contains("uri=\"/dav/\""), "{auth}");
}

#[tokio::test]
async fn unsupported_auth_scheme_is_explained() {
    let s = scripted(|_, _| {
        reply(
            "401 Unauthorized",
            &[("WWW-Authenticate", "Negotiate".into())],
            b"",
        )
    })
    .await;
    let cfg = WebDavConfig::new(format!("{}dav/", s.url)).with_credentials("u", "p");
    let err = WebDavRemote::new(cfg)
        .unwrap()
        .stat(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Negotiate") || err.to_string().contains("negotiate"),
        "{err}"
    );
}

#[tokio::test]
async fn streamed_put_is_never_sent_unsigned() {
    let s = scripted(|req, _| {
        if req.header("authorization").is_none() {
            return reply(
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="r""#.into())],
                b"",
            );
        }
        reply("201 Created", &[("ETag", "\"new\"".into())], b"")
    })
    .await;
    let cfg = WebDavConfig::new(format!("{}dav/", s.url)).with_credentials("u", "p");
    let c = WebDavRemote::new(cfg).unwrap();
    let out = c
        .put(
            &p("f"),
            PutBody::from(vec![1u8; 100_000]),
            PutCondition::None,
        )
        .await
        .unwrap();
    assert_eq!(out.etag, Some(ETag::strong("new")));
    let seen = s.seen.lock().unwrap();
    assert_eq!(seen[0].method, "OPTIONS");
    let puts: Vec<&Seen> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 1);
    assert!(puts[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(puts[0].body_len, 100_000);
}

#[tokio::test]
async fn redirect_that_adds_a_slash_is_followed_once() {
    let s = scripted(|req, _| {
        if req.path == "/dav/dir" {
            return reply(
                "301 Moved Permanently",
                &[("Location", "/dav/dir/".into())],
                b"",
            );
        }
        multistatus(&listing_xml("/dav/dir/", &[]))
    })
    .await;
    let e = s.client().stat(&p("dir")).await.unwrap();
    assert!(e.is_dir());
    assert_eq!(s.count(), 2);
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut cfg = WebDavConfig::new(format!("http://127.0.0.1:{port}/dav/"));
    cfg.retries = 1;
    cfg.retry_base_delay = Duration::from_millis(1);
    let err = WebDavRemote::new(cfg)
        .unwrap()
        .stat(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    for bad in ["ftp://h/x", "not a url", "http://"] {
        let r = WebDavRemote::new(WebDavConfig::new(bad));
        assert!(matches!(r, Err(RemoteError::Config(_))), "{bad}");
    }
}
