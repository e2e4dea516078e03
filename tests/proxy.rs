//! The TCP fault proxy of `tests/common/proxy.rs`, checked against the Apache server started by
//! `tests/run.sh`: what each fault looks like to the WebDAV client.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudmount::remote::webdav::{WebDavConfig, WebDavRemote};
use cloudmount::remote::{PutBody, PutCondition, Remote, RemoteError, RemotePath};
use common::proxy::{target_of, FaultProxy, ProxyMode};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn apache_url() -> String {
    env("CLOUDMOUNT_TEST_APACHE_BASIC_URL")
}

/// A client of `url` that retries safe requests `retries` times, 20 ms apart, and gives up on a
/// silent server after `read_timeout`.
fn client(url: &str, read_timeout: Duration, retries: u32) -> Arc<dyn Remote> {
    let mut cfg = WebDavConfig::new(url).with_credentials(test_user(), test_password());
    cfg.retries = retries;
    cfg.retry_base_delay = Duration::from_millis(20);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.read_timeout = read_timeout;
    Arc::new(WebDavRemote::new(cfg).expect("client"))
}

/// A client through `proxy` with a fresh test folder (made through the proxy, so the client is
/// primed and holds a pooled connection).
async fn through(
    proxy: &FaultProxy,
    label: &str,
    read_timeout: Duration,
    retries: u32,
) -> (Arc<dyn Remote>, RemotePath) {
    let r = client(&proxy.url_for(&apache_url()), read_timeout, retries);
    let dir = fresh_dir(&r, label).await;
    (r, dir)
}

fn raw_request(url: &str) -> String {
    let path = url::Url::parse(url).unwrap().path().to_string();
    format!("OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

fn assert_transient(e: &RemoteError, what: &str) {
    assert!(
        e.is_transient(),
        "{what}: expected a transient error, got {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_forwards_http_and_webdav() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    assert_eq!(proxy.mode(), ProxyMode::Pass);
    let url = proxy.url_for(&base);
    assert!(
        url.starts_with(&format!("http://{}/", proxy.addr())),
        "{url}"
    );
    assert_eq!(
        url::Url::parse(&url).unwrap().path(),
        url::Url::parse(&base).unwrap().path()
    );

    // Plain HTTP: Apache answers through the proxy, and the proxy closes when Apache does.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(raw_request(&base).as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .expect("reply within 5 s")
        .unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(proxy.connections(), 1);

    // WebDAV: PROPFIND, PUT, GET, MOVE (its Destination names the proxy: Apache takes it).
    let (r, dir) = through(&proxy, "proxy-pass", Duration::from_secs(10), 0).await;
    let a = dir.join("a.bin").unwrap();
    let b = dir.join("b.bin").unwrap();
    let data = pattern(300_000, 7);
    r.put(&a, PutBody::from(data.clone()), PutCondition::IfNoneMatch)
        .await
        .unwrap();
    let listing = r.list(&dir).await.unwrap();
    assert_eq!(listing.children.len(), 1);
    assert_eq!(listing.children[0].size, data.len() as u64);
    r.rename(&a, &b, false).await.unwrap();
    let got = r
        .read_range(&b, cloudmount::remote::ByteRange::whole(), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), sha256(&data));
    assert!(proxy.bytes_up() > data.len() as u64);
    assert!(proxy.bytes_down() > data.len() as u64);
    assert_eq!(proxy.resets(), 0);
    r.delete(&dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_fails_requests_transiently() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    // One retry, as the daemon's clients have (more): hyper may hold in its pool a connection it
    // opened while the proxy refused, not yet known dead when the outage ends, and hand it to the
    // first request after. While refusing, both attempts fail.
    let (r, dir) = through(&proxy, "proxy-refuse", Duration::from_secs(10), 1).await;

    // A new client has to connect: refused.
    proxy.set_mode(ProxyMode::Refuse);
    let (conns, resets) = (proxy.connections(), proxy.resets());
    let fresh = client(&proxy.url_for(&base), Duration::from_secs(10), 1);
    let e = fresh.list(&dir).await.unwrap_err();
    assert_transient(&e, "new connection while refusing");
    assert!(proxy.connections() > conns);
    assert!(proxy.resets() > resets);

    // The open connections reset too: the primed client fails as well.
    proxy.reset_all();
    let e = r.list(&dir).await.unwrap_err();
    assert_transient(&e, "after reset_all while refusing");

    proxy.set_mode(ProxyMode::Pass);
    // The proxy passes the very first request of a client made now, without a retry.
    let after = client(&proxy.url_for(&base), Duration::from_secs(10), 0);
    after
        .list(&dir)
        .await
        .expect("first request of a new client after Pass");
    r.list(&dir).await.expect("request after Pass");
    fresh
        .list(&dir)
        .await
        .expect("client made while refusing, after Pass");
    r.delete(&dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_makes_requests_time_out() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    let timeout = Duration::from_millis(400);
    let (r, dir) = through(&proxy, "proxy-stall", timeout, 0).await;

    proxy.set_mode(ProxyMode::Stall);
    // On the pooled connection, already open.
    let t0 = Instant::now();
    let e = r.list(&dir).await.unwrap_err();
    assert_transient(&e, "stalled open connection");
    assert!(t0.elapsed() >= timeout, "failed before the timeout: {e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // On a new connection.
    let t0 = Instant::now();
    let fresh = client(&proxy.url_for(&base), timeout, 0);
    let e = fresh.stat(&dir).await.unwrap_err();
    assert_transient(&e, "stalled new connection");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    proxy.set_mode(ProxyMode::Pass);
    r.list(&dir).await.expect("request after Pass");
    fresh.stat(&dir).await.expect("new client after Pass");
    r.delete(&dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_bytes_cuts_an_upload() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    let (r, dir) = through(&proxy, "proxy-cut", Duration::from_secs(10), 0).await;
    let path = dir.join("big.bin").unwrap();
    let data = pattern(4 << 20, 3);

    proxy.reset_after_bytes(1 << 20);
    let up0 = proxy.bytes_up();
    let e = r
        .put(&path, PutBody::from(data.clone()), PutCondition::None)
        .await
        .unwrap_err();
    assert_transient(&e, "PUT cut after 1 MiB");
    assert_eq!(proxy.bytes_up() - up0, 1 << 20, "exactly 1 MiB went up");
    // Apache dropped the partial upload.
    assert!(matches!(
        r.stat(&path).await,
        Err(RemoteError::NotFound { .. })
    ));

    // One-shot: the next upload goes through whole.
    proxy.set_mode(ProxyMode::Pass);
    r.put(&path, PutBody::from(data.clone()), PutCondition::None)
        .await
        .expect("PUT after the cut");
    assert_eq!(r.stat(&path).await.unwrap().size, data.len() as u64);
    r.delete(&dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_bytes_times_counts_connections() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    let (r, dir) = through(&proxy, "proxy-cut2", Duration::from_secs(10), 0).await;
    let path = dir.join("f.bin").unwrap();
    let data = pattern(1 << 20, 5);

    proxy.reset_after_bytes_times(64 << 10, 2);
    for i in 0..2 {
        let e = r
            .put(&path, PutBody::from(data.clone()), PutCondition::None)
            .await
            .unwrap_err();
        assert_transient(&e, &format!("cut PUT {i}"));
    }
    // Without set_mode(Pass): the plan is used up.
    r.put(&path, PutBody::from(data.clone()), PutCondition::None)
        .await
        .expect("third PUT");
    assert_eq!(r.stat(&path).await.unwrap().size, data.len() as u64);
    r.delete(&dir).await.unwrap();
}

/// From a plain `#[test]`, with the proxy on its own thread: reset_all resets an open
/// connection; a stalled one moves on when the stall ends.
#[test]
fn blocking_proxy_resets_and_resumes() {
    let base = apache_url();
    let proxy = FaultProxy::start_blocking(target_of(&base));

    // An open connection with a request half sent: reset_all gives the client an RST.
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(b"OPTIONS / HTTP/1.1\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.live() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.reset_all();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let e = s.read(&mut buf).expect_err("read after reset_all");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");

    // Stalled: the request gets no answer; after Pass, the held bytes move on.
    proxy.set_mode(ProxyMode::Stall);
    let mut s = std::net::TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(raw_request(&base).as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let e = s.read(&mut buf).expect_err("no reply while stalled");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    proxy.set_mode(ProxyMode::Pass);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Dropping stops it: nothing listens any more.
    let addr = proxy.addr();
    drop(proxy);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// However many reads run at once, the client keeps at most `max_requests` requests in flight:
/// the others wait for a place and open no connection. Seen from the proxy while the server
/// is stalled (nothing ends, so no place is freed): no more new connections than that. Once
/// the server answers, every read gets its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped() {
    let base = apache_url();
    let proxy = FaultProxy::start(target_of(&base)).await;
    let mut cfg =
        WebDavConfig::new(proxy.url_for(&base)).with_credentials(test_user(), test_password());
    cfg.max_requests = 3;
    let r: Arc<dyn Remote> = Arc::new(WebDavRemote::new(cfg).expect("client"));
    let dir = fresh_dir(&r, "proxy-cap").await;
    let f = dir.join("f.bin").unwrap();
    let data = pattern(1 << 20, 5);
    r.put(&f, PutBody::from(data.clone()), PutCondition::None)
        .await
        .unwrap();
    let before = proxy.connections();
    proxy.set_mode(ProxyMode::Stall);
    let piece = 64 << 10;
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let (r, f, dir) = (r.clone(), f.clone(), dir.clone());
        tasks.push(tokio::spawn(async move {
            if i % 4 == 3 {
                // Listings take their turn too.
                assert_eq!(r.list(&dir).await.unwrap().children.len(), 1);
            }
            let got = r
                .read_range(
                    &f,
                    cloudmount::remote::ByteRange::new(i * piece, piece),
                    None,
                )
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            (i, got)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = proxy.connections() - before;
    proxy.set_mode(ProxyMode::Pass);
    for t in tasks {
        let (i, got) = t.await.unwrap();
        let s = (i * piece) as usize;
        assert_eq!(got, data[s..s + piece as usize], "piece {i}");
    }
    assert!(
        opened <= 3,
        "{opened} connections were opened for twelve requests at once (cap 3)"
    );
    r.delete(&dir).await.unwrap();
}

/// The request log tells requests apart across bodies (chunked and sized), interim responses
/// and bodiless HEAD answers, whatever the chunking of the bytes on the wire.
#[test]
fn the_request_log_follows_http_framing() {
    let log = Arc::new(common::http_log::RequestLog::default());
    let x = common::http_log::Exchange::new(log.clone());
    // A PUT with a chunked body split at awkward places, then a GET, then a HEAD.
    let up = b"PUT /a%20b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
               3\r\nabc\r\n0\r\n\r\nGET /c?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
               HEAD /d HTTP/1.1\r\n\r\nPROPFIND /e HTTP/1.1\r\ncontent-length: 4\r\n\r\nGET ";
    for chunk in up.chunks(5) {
        x.client_sent(chunk);
    }
    let down = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok\
                 HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
                 HTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n";
    for chunk in down.chunks(7) {
        x.server_sent(chunk);
    }
    let got: Vec<(String, String, Option<u16>)> = log
        .snapshot()
        .into_iter()
        .map(|r| (r.method, r.target, r.status))
        .collect();
    assert_eq!(
        got,
        [
            ("PUT".into(), "/a%20b".into(), Some(201)),
            ("GET".into(), "/c?x=1".into(), Some(200)),
            ("HEAD".into(), "/d".into(), Some(200)),
            ("PROPFIND".into(), "/e".into(), Some(401)),
        ]
    );
    assert_eq!(log.snapshot()[1].path(), "/c");
}

/// Through a real server, the proxy logs each request with its method, path and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_logs_every_request_with_its_status() {
    let proxy = FaultProxy::start(target_of(&apache_url())).await;
    let (r, dir) = through(&proxy, "reqlog", Duration::from_secs(10), 0).await;
    let prefix = url::Url::parse(&apache_url())
        .unwrap()
        .join(&format!("{}/", dir.as_str()))
        .unwrap()
        .path()
        .to_string();
    let f = dir.join("f x").unwrap();
    r.put(&f, PutBody::from(vec![7u8; 100_000]), PutCondition::None)
        .await
        .unwrap();
    for _ in 0..2 {
        let got = r
            .read_range(&f, cloudmount::remote::ByteRange::whole(), None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), 100_000);
    }
    assert!(r.stat(&dir.join("missing").unwrap()).await.is_err());
    // The client may check a PUT with a PROPFIND (its ETag): only the others are listed here.
    let log: Vec<(String, String, bool)> = proxy
        .requests_under(&prefix)
        .into_iter()
        .filter(|q| q.method != "PROPFIND" || q.path().ends_with("missing"))
        .map(|q| (q.method.clone(), q.path().to_string(), q.succeeded()))
        .collect();
    let file = format!("{prefix}f%20x");
    assert_eq!(
        log,
        [
            ("MKCOL".to_string(), prefix.clone(), true),
            ("PUT".to_string(), file.clone(), true),
            ("GET".to_string(), file.clone(), true),
            ("GET".to_string(), file, true),
            ("PROPFIND".to_string(), format!("{prefix}missing"), false),
        ],
        "{:#?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.requests_under(&prefix).last().unwrap().status,
        Some(404)
    );
    assert_eq!(proxy.count("GET", &prefix), 2);
    r.delete(&dir).await.unwrap();
}
