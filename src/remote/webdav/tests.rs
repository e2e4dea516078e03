use super::*;

#[test]
fn content_range_parsing() {
    assert_eq!(
        parse_content_range("bytes 0-99/1000"),
        Some((0, 99, Some(1000)))
    );
    assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
    assert_eq!(parse_content_range("bytes 9-5/10"), None);
    assert_eq!(parse_content_range("items 0-1/2"), None);
    assert_eq!(parse_unsatisfied_range("bytes */1234"), Some(1234));
    assert_eq!(parse_unsatisfied_range("bytes 0-1/2"), None);
}

#[test]
fn statuses_become_errors_naming_method_and_url() {
    let u = Url::parse("http://h/x").unwrap();
    let e = status_error(&Method::PUT, &u, StatusCode::from_u16(418).unwrap());
    assert!(matches!(e, RemoteError::Status { status: 418, ref method, .. } if method == "PUT"));
    assert!(e.to_string().contains("http://h/x"), "{e}");
    assert!(status_error(&Method::GET, &u, StatusCode::SERVICE_UNAVAILABLE).is_transient());
}

#[test]
fn request_target_keeps_encoding() {
    let u = Url::parse("http://h/dav/a%20b/%23x?q=1").unwrap();
    assert_eq!(request_target(&u), "/dav/a%20b/%23x?q=1");
}

/// What the test server does with a request body.
#[derive(Clone, Copy)]
enum Sink {
    /// Reads at most 32 KiB every 10 ms (about 3 MB/s), then answers 201.
    Slow,
    /// Reads the head and nothing more.
    Stalled,
    /// Reads the whole body and never answers.
    Mute,
    /// Answers a GET with headers and part of the body, then goes silent.
    HalfGet,
}

/// A one-thread-per-connection HTTP/1.1 server with small receive buffers.
fn sink(kind: Sink) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let size: libc::c_int = 32 * 1024;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUF");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let hold = || std::thread::sleep(Duration::from_secs(60));
                let mut buf = vec![0u8; 32 * 1024];
                match kind {
                    Sink::Stalled => return hold(),
                    Sink::HalfGet => {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
                        let _ = w.write_all(head.as_bytes());
                        let _ = w.write_all(&[7u8; 1000]);
                        return hold();
                    }
                    Sink::Slow | Sink::Mute => {}
                }
                while len > 0 {
                    let n = r.read(&mut buf[..len.min(32 * 1024)]).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    len -= n;
                    if matches!(kind, Sink::Slow) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                if matches!(kind, Sink::Mute) {
                    return hold();
                }
                let reply = "HTTP/1.1 201 Created\r\nETag: \"1\"\r\nContent-Length: 0\r\n\r\n";
                let _ = w.write_all(reply.as_bytes());
                hold();
            });
        }
    });
    addr
}

const TIMEOUT: Duration = Duration::from_millis(800);

fn remote_at(addr: std::net::SocketAddr, timeout: Duration) -> WebDavRemote {
    let mut cfg = WebDavConfig::new(format!("http://{addr}/"));
    cfg.read_timeout = timeout;
    cfg.retries = 0;
    WebDavRemote::new(cfg).unwrap()
}

async fn put_bytes(
    kind: Sink,
    len: usize,
    timeout: Duration,
) -> (RemoteResult<PutOutcome>, Duration) {
    let remote = remote_at(sink(kind), timeout);
    let started = Instant::now();
    let res = remote
        .put(
            &RemotePath::new("up.bin").unwrap(),
            PutBody::Bytes(Bytes::from(vec![5u8; len])),
            PutCondition::None,
        )
        .await;
    (res, started.elapsed())
}

#[tokio::test]
async fn an_upload_that_keeps_moving_outlives_the_read_timeout() {
    // About 4 s at 3 MB/s, against a 1.5 s timeout. The body must be much larger than the
    // socket buffers (up to 4 MiB send buffer on Linux): what they hold when the body has
    // been handed over drains unseen, and must do so within the timeout (see `execute`).
    let timeout = Duration::from_millis(1500);
    let (res, took) = put_bytes(Sink::Slow, 12 << 20, timeout).await;
    assert!(
        res.is_ok(),
        "slow upload cut after {took:?}: {:?}",
        res.err()
    );
    assert!(
        took > 2 * timeout,
        "the upload took only {took:?}: not slower than the read timeout"
    );
}

/// A transient "timed out" error, after the read timeout and well before 20 s.
fn assert_timed_out(err: &RemoteError, took: Duration) {
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(took >= TIMEOUT, "failed after {took:?}, before the timeout");
    assert!(took < Duration::from_secs(20), "failed only after {took:?}");
}

#[tokio::test]
async fn an_upload_the_server_stops_reading_times_out() {
    // Much more than the socket buffers can hold.
    let (res, took) = put_bytes(Sink::Stalled, 64 << 20, TIMEOUT).await;
    let err = res.expect_err("a stalled upload succeeded");
    assert_timed_out(&err, took);
}

#[tokio::test]
async fn an_upload_with_no_answer_times_out() {
    let (res, took) = put_bytes(Sink::Mute, 100_000, TIMEOUT).await;
    let err = res.expect_err("an unanswered upload succeeded");
    assert_timed_out(&err, took);
}

#[tokio::test]
async fn a_request_with_no_answer_still_times_out() {
    let remote = remote_at(sink(Sink::Mute), TIMEOUT);
    let started = Instant::now();
    let err = remote
        .stat(&RemotePath::new("f").unwrap())
        .await
        .expect_err("an unanswered PROPFIND succeeded");
    let took = started.elapsed();
    assert_timed_out(&err, took);
}

#[test]
fn after_the_whole_body_the_send_buffer_gets_time_to_drain() {
    let p = Progress::new(10 << 20);
    assert_eq!(p.allowed_idle(TIMEOUT), TIMEOUT, "body not handed over yet");
    p.bytes.store(10 << 20, Ordering::Relaxed);
    p.done_ms.store(5_000 + 1, Ordering::Relaxed);
    // 10 MiB took 5 s: the 4 MiB a send buffer may hold need 2 s more at that rate.
    assert_eq!(p.allowed_idle(TIMEOUT), TIMEOUT + Duration::from_secs(2));
}

#[tokio::test]
async fn a_hanging_server_is_waited_for_once_not_once_per_retry() {
    let mut cfg = WebDavConfig::new(format!("http://{}/", sink(Sink::Mute)));
    cfg.read_timeout = TIMEOUT;
    cfg.retries = 4;
    let remote = WebDavRemote::new(cfg).unwrap();
    let started = Instant::now();
    let err = remote
        .stat(&RemotePath::new("f").unwrap())
        .await
        .expect_err("an unanswered PROPFIND succeeded");
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    // Five attempts would take five timeouts and their back-offs.
    assert!(took < 3 * TIMEOUT, "gave up only after {took:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_not_four_times() {
    // A port nobody listens on: bound, its number kept, closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = WebDavConfig::new(format!("http://{addr}/"));
    cfg.retries = 4;
    cfg.retry_base_delay = Duration::from_millis(400);
    let remote = WebDavRemote::new(cfg).unwrap();
    let started = Instant::now();
    let err = remote
        .stat(&RemotePath::new("f").unwrap())
        .await
        .expect_err("nobody listens there");
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    // The PROPFIND retried once, after 0.4–0.5 s. Four retries would take
    // 0.4 + 0.8 + 1.6 + 3.2 = 6 s.
    assert!(
        took >= Duration::from_millis(400),
        "not retried at all: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "retried more than once: {took:?}"
    );
}

#[tokio::test]
async fn a_get_body_that_goes_silent_still_times_out() {
    use futures_util::StreamExt;
    let remote = remote_at(sink(Sink::HalfGet), TIMEOUT);
    let started = Instant::now();
    let resp = remote
        .read_range(&RemotePath::new("f").unwrap(), ByteRange::whole(), None)
        .await;
    let mut body = match resp {
        Ok(r) => r.body,
        Err(e) => panic!("GET failed before the body: {e}"),
    };
    let mut err = None;
    while let Some(chunk) = body.next().await {
        if let Err(e) = chunk {
            err = Some(e);
            break;
        }
    }
    let took = started.elapsed();
    let err = err.expect("a silent GET body ended without error");
    assert!(err.is_transient(), "{err}");
    assert!(took < Duration::from_secs(20), "failed only after {took:?}");
}
