//! The embedded WebDAV server behind `cloudmount serve`, the demo and the test suites.
//!
//! A [`dav_server`] handler on hyper 1, serving one local directory, with:
//! - HTTP Basic auth ([`ServeConfig::auth`]; 401 with
//!   `WWW-Authenticate: Basic realm="cloudmount"` otherwise), required unless the server
//!   listens on a loopback address only ([`ServeError::AuthRequired`]),
//! - range GETs and ETags from dav-server's `LocalFs` (`"<inode>-<size>-<mtime µs>"` in hex),
//!   with the PROPFIND `getetag` quoted to equal the `ETag` header (see the `etagfix` module);
//!   a multi-range reply gets a random boundary of its own (see the `byteranges` module),
//! - atomic PUTs: the body goes to a hidden temp file renamed over the target only when complete
//!   (see the `fs` module); conditional requests (`If-Match`, `If-None-Match`) to one path are
//!   served one at a time, so two PUTs based on one version cannot both succeed (see
//!   `conditional`),
//! - an optional quota ([`ServeConfig::quota`]): RFC 4331 `quota-used-bytes` /
//!   `quota-available-bytes`, and 507 Insufficient Storage for a write that would exceed it,
//!   leaving no partial file and the old content intact.
//!
//! What it guarantees against hostile requests (each has a test in `tests/server.rs`):
//! - **Nothing outside the directory.** Symlinks are never followed, listed or copied: a path
//!   naming or passing through one is 403 for every method (see the `confine` module). `..` and
//!   its encodings cannot climb above the root; hard links are never written through (every
//!   write is a new file renamed into place).
//! - **No request crashes or wedges it.** XML bodies are bounded (64 KiB, 413) and checked
//!   without recursion before dav-server's recursive parser sees them (nesting past 64 levels,
//!   DTDs and malformed XML are 400; see `xmlguard`); request heads must arrive within 30 s;
//!   a body that makes no progress for [`ServeLimits::body_idle_timeout`] is 408; at most
//!   [`ServeLimits::max_connections`] connections are served at once.
//! - **RFC 4918 where dav-server is lax** (see `protocol`, `fragment`): PROPFIND of infinite or
//!   missing Depth is 403 `propfind-finite-depth`, a bad Depth 400; a COPY/MOVE `Destination`
//!   on another host is 502; a request target with a `#fragment` is 400.
//!
//! Locks are real (see `locks`): exclusive and shared, depth 0 and infinity, `If:` tokens
//! required to write a locked resource, timeouts of at most 10 minutes enforced; they live in
//! memory. Dead properties (PROPPATCH) are stored in a hidden file beside their resource and
//! follow it through MOVE, COPY and DELETE (see `props`); a PROPFIND naming properties the
//! resource lacks gets them in a 404 propstat (see `propstat`). litmus passes every suite,
//! without warnings.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloudmount::server::ServeError> {
//! use cloudmount::server::{start, ServeConfig};
//! let handle = start(ServeConfig {
//!     root: "/tmp/served".into(),
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     auth: Some(("alice".into(), "secret".into())),
//!     quota: Some(10 << 20),
//! })
//! .await?;
//! println!("serving at {}", handle.url());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod byteranges;
mod conditional;
mod confine;
mod etagfix;
mod fragment;
mod fs;
mod locks;
mod props;
mod propstat;
mod protocol;
mod quota;
mod rewrite;
mod xmlguard;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dav_server::DavHandler;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::size::FormatSize;

use self::auth::BasicAuth;
use self::body::SharedBody;
use self::fs::CloudFs;
use self::locks::LockKeeper;
use self::quota::Quota;

/// How long [`ServerHandle::shutdown`] lets requests in flight finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A connection that sends no complete request header within this time is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body accepted for methods other than PUT and PATCH (XML bodies: PROPFIND, PROPPATCH,
/// LOCK); dav-server's own limit.
const MAX_XML_BODY: usize = 64 << 10;

/// What to serve and how.
#[derive(Clone)]
pub struct ServeConfig {
    /// The directory served as the WebDAV root. Must exist.
    pub root: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`ServerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Basic auth user and password; `None` serves without authentication.
    pub auth: Option<(String, String)>,
    /// Quota in bytes for everything under `root`; `None` for no quota (and no quota properties).
    pub quota: Option<u64>,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .field("quota", &self.quota)
            .finish()
    }
}

/// Bounds on what clients can make the server hold; [`Default`] suits a real deployment.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// A request body that sends nothing for this long while it is read fails: 408 Request
    /// Timeout, the connection closed, a partial upload dropped. Default 60 s.
    pub body_idle_timeout: Duration,
    /// Connections served at once. Further connections wait (in the listen backlog) until one
    /// closes. Default 512.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            body_idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{}: no such directory", .0.display())]
    RootMissing(PathBuf),
    #[error("{}: not a directory", .0.display())]
    RootNotDirectory(PathBuf),
    #[error("cannot access {}: {source}", path.display())]
    RootAccess { path: PathBuf, source: io::Error },
    #[error(
        "invalid user name {0:?}: it must be non-empty and contain no ':' or control characters"
    )]
    InvalidUser(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error(
        "refusing to serve without authentication on {0}, which is not a loopback address: \
         set a user and password (and put TLS in front: see `cloudmount serve --help`)"
    )]
    AuthRequired(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot measure the space used under {} for the quota: {source}", path.display())]
    QuotaScan { path: PathBuf, source: io::Error },
}

/// A running server. Dropping it stops accepting connections (without waiting); prefer
/// [`shutdown`](Self::shutdown).
pub struct ServerHandle {
    local_addr: SocketAddr,
    root: PathBuf,
    quota: Option<Arc<Quota>>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address actually listened on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL of the served root, e.g. `http://127.0.0.1:4918/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// The served directory (absolute).
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Bytes counted against the quota, when a quota is set.
    pub fn quota_used(&self) -> Option<u64> {
        self.quota.as_ref().map(|q| q.used())
    }

    /// Stops accepting connections, lets requests in flight finish (idle keep-alive connections
    /// are closed at once; busy ones get up to 10 s) and returns when all are closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts serving `cfg.root` on `cfg.listen` with the default [`ServeLimits`]. Returns once the
/// socket is bound.
pub async fn start(cfg: ServeConfig) -> Result<ServerHandle, ServeError> {
    start_with_limits(cfg, ServeLimits::default()).await
}

/// [`start`] with explicit [`ServeLimits`].
pub async fn start_with_limits(
    cfg: ServeConfig,
    limits: ServeLimits,
) -> Result<ServerHandle, ServeError> {
    let root = check_root(&cfg.root)?;

    let auth = match &cfg.auth {
        Some((user, password)) => {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return Err(ServeError::InvalidUser(user.clone()));
            }
            if password.is_empty() {
                return Err(ServeError::EmptyPassword);
            }
            Some(BasicAuth::new(user, password))
        }
        None => None,
    };

    if auth.is_none() && !cfg.listen.ip().is_loopback() {
        return Err(ServeError::AuthRequired(cfg.listen));
    }

    let quota = match cfg.quota {
        Some(limit) => {
            let scan_root = root.clone();
            let started = Instant::now();
            let used = tokio::task::spawn_blocking(move || quota::scan(&scan_root))
                .await
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|source| ServeError::QuotaScan {
                    path: root.clone(),
                    source,
                })?;
            tracing::info!(
                used = %FormatSize(used),
                limit = %FormatSize(limit),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "quota: measured the served directory"
            );
            if used > limit {
                tracing::warn!(
                    used,
                    limit,
                    "the served directory already exceeds the quota: every upload will be refused"
                );
            }
            Some(Arc::new(Quota::new(limit, used)))
        }
        None => None,
    };

    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;

    // Real locks (macOS Finder and Windows also refuse to write without lock support).
    let (locks, ls) = LockKeeper::new();
    let dav = DavHandler::builder()
        .filesystem(Box::new(CloudFs::new(root.clone(), quota.clone())))
        .locksystem(ls)
        // GET on a collection: an HTML listing, so the demo can be browsed in a web browser.
        .autoindex(true)
        .build_handler();
    let state = Arc::new(State {
        dav,
        root: root.clone(),
        locks,
        conditional: Default::default(),
        auth,
        body_idle_timeout: limits.body_idle_timeout,
    });

    tracing::info!(root = %root.display(), %local_addr, auth = state.auth.is_some(),
        quota = ?cfg.quota, "WebDAV server listening");

    let (stop, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let task = tokio::spawn(accept_loop(listener, state, slots, stop_rx));
    Ok(ServerHandle {
        local_addr,
        root,
        quota,
        stop,
        task: Some(task),
    })
}

/// The root must exist and be a directory; returns it absolute.
fn check_root(root: &std::path::Path) -> Result<PathBuf, ServeError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ServeError::RootNotDirectory(root.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ServeError::RootMissing(root.to_path_buf()))
        }
        Err(source) => {
            return Err(ServeError::RootAccess {
                path: root.to_path_buf(),
                source,
            })
        }
    }
    std::fs::canonicalize(root).map_err(|source| ServeError::RootAccess {
        path: root.to_path_buf(),
        source,
    })
}

struct State {
    dav: DavHandler,
    /// The served directory (for what dav-server does not do itself: a copied collection's
    /// own properties).
    root: PathBuf,
    locks: LockKeeper,
    /// Conditional requests to one path, one at a time (see `conditional`).
    conditional: conditional::ConditionalWrites,
    auth: Option<BasicAuth>,
    body_idle_timeout: Duration,
}

type RespBody = UnsyncBoxBody<Bytes, io::Error>;

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    // A connection is accepted only with a slot in hand: past the cap, connections wait in the
    // kernel's listen backlog until one closes.
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut at_cap_logged = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            permit = slots.clone().acquire_owned(), if slot.is_none() => {
                // The semaphore is never closed.
                slot = permit.ok();
            }
            accepted = listener.accept(), if slot.is_some() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let permit = slot.take();
                    if slots.available_permits() == 0 && !at_cap_logged {
                        tracing::warn!(open = conns.len() + 1,
                            "connection limit reached: further connections wait");
                        at_cap_logged = true;
                    } else if slots.available_permits() > 0 {
                        at_cap_logged = false;
                    }
                    let conn = serve_connection(stream, peer, state.clone(), stop.clone());
                    conns.spawn(async move {
                        conn.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(open_connections = open, "WebDAV server stopping");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "requests still running after the grace period: cut"
        );
        conns.shutdown().await;
    }
    tracing::info!("WebDAV server stopped");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let (stream, fragments) = fragment::Sniffer::new(stream);
    let svc = service_fn(move |req| {
        let has_fragment = fragments.next_has_fragment();
        handle_request(state.clone(), req, has_fragment)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn handle_request(
    state: Arc<State>,
    req: Request<Incoming>,
    has_fragment: bool,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let expect_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    let body = SharedBody::new(body, state.body_idle_timeout);

    let mut response = if has_fragment {
        // Acting on the URI without its fragment could hit another resource (DELETE /dir/#x
        // would delete /dir/): refused, as Apache does.
        plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: a request target must not have a #fragment\n",
        )
    } else {
        answer(&state, parts, body.clone()).await
    };
    if body.timed_out() {
        tracing::info!(%method, path, "request body timed out");
        response = plain(
            StatusCode::REQUEST_TIMEOUT,
            "408 Request Timeout: the request body stopped arriving\n",
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        body.drain(expect_continue).await;
    }

    let elapsed_ms = started.elapsed().as_millis() as u64;
    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
        tracing::warn!(%method, path, status = status.as_u16(), elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), elapsed_ms, "request");
    }
    Ok(response)
}

/// The answer to one request: refusals by auth and by the checks done before dav-server, else
/// dav-server's answer (fixed up).
async fn answer(
    state: &State,
    parts: http::request::Parts,
    body: SharedBody,
) -> Response<RespBody> {
    if state
        .auth
        .as_ref()
        .is_some_and(|a| !a.check(parts.headers.get(header::AUTHORIZATION)))
    {
        return unauthorized();
    }
    if let Err(refusal) = protocol::check(&parts.method, &parts.headers) {
        tracing::debug!(method = %parts.method, reason = refusal.reason, "request refused");
        return match refusal.body {
            Some(xml) => with_body(
                refusal.status,
                "application/xml; charset=utf-8",
                Bytes::from_static(xml.as_bytes()),
            ),
            None => plain(refusal.status, refusal.reason),
        };
    }
    // A conditional request waits for the one before it to the same path: its check then sees
    // what the other made (dav-server checks before it takes the body, or moves).
    let _one_at_a_time = state
        .conditional
        .acquire_all(&conditional::lock_paths(
            &parts.method,
            &parts.uri,
            &parts.headers,
        ))
        .await;
    // PUT and PATCH bodies stream to a file; every other body is XML that dav-server parses
    // into a tree, recursively: it is read and checked here first.
    if parts.method == Method::PUT || parts.method.as_str() == "PATCH" {
        return dav_answer(state, parts, body, None).await;
    }
    let xml =
        match body.read_to_bytes(MAX_XML_BODY).await {
            Ok(Some(xml)) => xml,
            Ok(None) => return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Payload Too Large: request bodies other than uploads are limited to 64 KiB\n",
            ),
            // A timeout is answered by the caller; anything else is a broken request.
            Err(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: incomplete body\n",
                )
            }
        };
    if let Err(e) = xmlguard::check(&xml) {
        tracing::info!(method = %parts.method, reason = %e, "XML body refused");
        return plain(
            StatusCode::BAD_REQUEST,
            &format!("400 Bad Request: XML body refused: {e}\n"),
        );
    }
    let wanted = match parts.method.as_str() {
        "PROPFIND" => propstat::requested(&xml),
        _ => None,
    };
    dav_answer(state, parts, Full::new(xml), wanted).await
}

/// dav-server's answer, with the PROPFIND ETags quoted, the properties named in `wanted` (a
/// PROPFIND `<D:prop>` request) and not found answered 404, and `Allow` completed.
async fn dav_answer<B>(
    state: &State,
    mut parts: http::request::Parts,
    body: B,
    wanted: Option<Vec<propstat::PropName>>,
) -> Response<RespBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let is_propfind = parts.method.as_str() == "PROPFIND";
    let is_options = parts.method == Method::OPTIONS;
    let is_get = parts.method == Method::GET;
    let is_head = parts.method == Method::HEAD;
    // COPY of a collection: dav-server copies the members (with their properties, through the
    // filesystem's copy) but makes the collection itself with MKCOL semantics.
    let copied = (parts.method.as_str() == "COPY")
        .then(|| props::copy_target(&parts.uri, &parts.headers))
        .flatten();
    state.locks.expire().await;
    let lock_req = match state
        .locks
        .prepare(&parts.method, parts.uri.path(), &mut parts.headers)
    {
        Ok(r) => r,
        Err(status) => return plain(status, "too many locks held; try again later"),
    };
    let resp = state.dav.handle(Request::from_parts(parts, body)).await;
    let (mut head, dav_body) = resp.into_parts();
    state.locks.record(lock_req, head.status, &head.headers);
    if let Some((from, to)) = copied {
        if head.status.is_success() {
            let root = state.root.clone();
            let done = tokio::task::spawn_blocking(move || {
                props::copy_collection_props(&root, &from, &to)
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "the copied collection's own properties were not copied");
            }
        }
    }
    if is_options {
        protocol::fix_allow(&mut head.headers);
    }
    // A multi-range reply gets a random boundary of its own (dav-server's is fixed).
    let mut boundary = None;
    if (is_get || is_head)
        && head.status == StatusCode::PARTIAL_CONTENT
        && byteranges::is_dav_multipart(&head.headers)
    {
        match byteranges::new_boundary() {
            Ok(b) => {
                byteranges::set_boundary(&mut head.headers, &b);
                boundary = Some(b);
            }
            Err(e) => tracing::warn!(error = %e, "no random boundary: dav-server's fixed one kept"),
        }
    }
    let body = if is_propfind && head.status == StatusCode::MULTI_STATUS {
        head.headers.remove(header::CONTENT_LENGTH);
        let quoted = etagfix::quoted(dav_body);
        match wanted {
            Some(wanted) => propstat::fixed(quoted, wanted).boxed_unsync(),
            None => quoted.boxed_unsync(),
        }
    } else if let (true, Some(boundary)) = (is_get, boundary) {
        byteranges::reframed(dav_body, boundary).boxed_unsync()
    } else {
        dav_body.boxed_unsync()
    };
    Response::from_parts(head, body)
}

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut text = text.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    with_body(status, "text/plain; charset=utf-8", Bytes::from(text))
}

fn unauthorized() -> Response<RespBody> {
    let mut resp = plain(
        StatusCode::UNAUTHORIZED,
        "401 Unauthorized: credentials required\n",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(auth::CHALLENGE),
    );
    resp
}
