//! The WebDAV implementation of [`Remote`], over reqwest (one keep-alive connection pool) and
//! quick-xml.
//!
//! Request flow (`WebDavRemote::send`): learn the auth scheme once from a cheap unauthenticated
//! `OPTIONS` (the challenge), then sign every request preemptively; a `401 stale=true` re-signs
//! with the new nonce and re-sends (bodies are replayable, see [`PutBody`]); any other `401` after
//! a signed request is a wrong password and fails at once. Transient failures (connection errors,
//! timeouts, 5xx) are retried with exponential back-off for safe methods only (GET, PROPFIND,
//! OPTIONS); PUT, MOVE, COPY, DELETE and MKCOL are never re-sent by this layer.
//!
//! Reads: a ranged GET is validated against the asked range (`Content-Range`), a `200` with the
//! whole body is cut down to the range, and a version other than the expected one is refused
//! (`If-Match` for strong ETags, and the response's `ETag` checked in all cases).
//!
//! Conditional PUT: the condition is sent as `If-Match` / `If-None-Match: *`, and, unless
//! disabled, checked first with a Depth 0 PROPFIND as well, because some servers (Go's
//! x/net/webdav, nginx) ignore those headers on PUT. On servers that honour them the check is
//! redundant; on the others it narrows the race to the time between the two requests.

pub mod auth;
mod body;
mod ops;
pub mod propfind;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use self::auth::{Chosen, Credentials, DigestSession};
use self::body::{empty_stream, Progress, ProgressBody, RangeBody};
use self::propfind::{parse_multistatus, RawResponse, PROPFIND_ENTRY_BODY, PROPFIND_QUOTA_BODY};
use super::path::{href_to_path, normalize_base};
use super::throttle::Bandwidth;
use super::{
    ByteRange, ByteStream, ETag, Entry, EntryKind, Listing, ListingDigest, MaybeListing, PutBody,
    PutCondition, PutOutcome, Quota, ReadResponse, Remote, RemoteError, RemotePath, RemoteResult,
};

/// Default of [`WebDavConfig::max_requests`]: the read-ahead's parallel GETs (its budget allows
/// 16), the upload workers and the demand reads of a few busy programs, with room left.
pub const MAX_REQUESTS: usize = 32;

/// Settings of a WebDAV connection.
#[derive(Debug, Clone)]
pub struct WebDavConfig {
    /// URL of the base collection.
    pub url: String,
    pub credentials: Option<Credentials>,
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed: while reading a response, and while uploading a body (no body
    /// bytes taken by the connection, or no answer after the last one).
    pub read_timeout: Duration,
    /// How many times a safe request is retried after a transient failure.
    pub retries: u32,
    /// First back-off delay; doubled on each retry, capped at 10 s.
    pub retry_base_delay: Duration,
    /// Check PUT preconditions with a PROPFIND first (for servers that ignore `If-Match`).
    pub verify_conditions: bool,
    /// Largest PROPFIND reply accepted, in bytes.
    pub max_propfind_bytes: usize,
    /// Most requests in flight at once. A request holds its slot until its response has
    /// come; a download's until its body is read or dropped. Others wait for a slot: many
    /// readers at once make a queue here, not hundreds of connections. Idle connections kept
    /// are as many; a request that starts as another ends may open one more while the ended
    /// one goes back to the pool (the pool then closes the extra).
    pub max_requests: usize,
    /// The bandwidth limits every body of this client goes through: by default the
    /// process's ([`Bandwidth::process`]), shared by all clients of a daemon.
    pub bandwidth: Arc<Bandwidth>,
}

impl WebDavConfig {
    pub fn new(url: impl Into<String>) -> Self {
        WebDavConfig {
            url: url.into(),
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retries: 4,
            retry_base_delay: Duration::from_millis(250),
            verify_conditions: true,
            max_propfind_bytes: 512 << 20,
            max_requests: MAX_REQUESTS,
            bandwidth: Bandwidth::process(),
        }
    }

    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            user: user.into(),
            password: password.into(),
        });
        self
    }
}

/// What the client knows about the server's authentication.
enum AuthState {
    /// No request made yet.
    Unprimed,
    /// The server did not ask for credentials (or we have none).
    Anonymous,
    Basic,
    Digest(Arc<DigestSession>),
}

/// A WebDAV server, as a [`Remote`].
pub struct WebDavRemote {
    /// Built without reqwest's `read_timeout`: reqwest 0.12 starts that timer when a request is
    /// sent and does not reset it while the body is still going out (seanmonstar/reqwest#2784),
    /// so an upload slower than the timeout could never finish. `read_timeout` is enforced here
    /// instead: see [`WebDavRemote::execute`] and [`RangeBody`].
    client: reqwest::Client,
    base: Url,
    creds: Option<Credentials>,
    auth: RwLock<AuthState>,
    prime_lock: tokio::sync::Mutex<()>,
    /// One permit per request in flight ([`WebDavConfig::max_requests`]).
    slots: Arc<tokio::sync::Semaphore>,
    cfg: WebDavConfig,
}

/// A request's place among [`WebDavConfig::max_requests`], carried in its response's
/// extensions (and moved into a download's body, which holds the connection until it ends).
/// Extensions must be `Clone`: hence the shared permit.
#[derive(Clone)]
struct Slot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

fn method(name: &'static str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("valid method name")
}

/// The body of a request.
#[derive(Clone)]
enum ReqBody {
    None,
    Xml(&'static str),
    Put(PutBody),
}

/// One request, kept so it can be re-sent (new nonce, slash redirect, transient retry).
struct Req {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: ReqBody,
    /// MOVE/COPY target, encoded when the request is built.
    destination: Option<RemotePath>,
    /// Safe to re-send after a transient failure.
    retry_safe: bool,
}

impl Req {
    fn new(method: Method, url: Url) -> Self {
        let retry_safe = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "PROPFIND");
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::None,
            destination: None,
            retry_safe,
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }
}

fn transient(method: &Method, url: &Url, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transient {
        method: method.to_string(),
        url: url.to_string(),
        reason: e.to_string(),
    }
}

/// Why a request got no response.
#[derive(Debug)]
struct Failed {
    reason: String,
    /// The connection was refused (or could not be made at all).
    refused: bool,
}

impl Failed {
    fn of(e: &reqwest::Error) -> Failed {
        Failed {
            reason: reqwest_reason(e),
            refused: e.is_connect(),
        }
    }

    fn other(reason: String) -> Failed {
        Failed {
            reason,
            refused: false,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn reqwest_reason(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn body_timed_out(limit: Duration) -> String {
    format!(
        "operation timed out: no body bytes for {:.1} s",
        limit.as_secs_f64()
    )
}

fn status_error(method: &Method, url: &Url, status: StatusCode) -> RemoteError {
    RemoteError::from_status(method.as_str(), url.as_str(), status.as_u16())
}

fn is_transient_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Request target as it appears on the request line (what Digest's `uri=` must equal).
fn request_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

fn header_str(h: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Parses `bytes a-b/total` (total may be `*`) into (a, b, total).
fn parse_content_range(s: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = s.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let (a, b) = range.trim().split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if b < a {
        return None;
    }
    Some((a, b, total))
}

/// Parses `bytes */total` of a 416.
fn parse_unsatisfied_range(s: &str) -> Option<u64> {
    s.trim()
        .strip_prefix("bytes")?
        .trim_start()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}

impl WebDavRemote {
    /// Builds a client. Makes no request: the first one learns the auth scheme.
    pub fn new(cfg: WebDavConfig) -> RemoteResult<Self> {
        let base = normalize_base(&cfg.url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(cfg.max_requests.max(1))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cloudmount/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Config(format!("HTTP client: {}", reqwest_reason(&e))))?;
        Ok(WebDavRemote {
            client,
            base,
            creds: cfg.credentials.clone(),
            auth: RwLock::new(AuthState::Unprimed),
            prime_lock: tokio::sync::Mutex::new(()),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_requests.max(1))),
            cfg,
        })
    }

    /// The normalised base URL (ends with `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Checks that the base URL is a reachable WebDAV collection with working credentials.
    pub async fn check(&self) -> RemoteResult<()> {
        let root = match self.stat(&RemotePath::root()).await {
            Err(
                RemoteError::NotFound { url }
                | RemoteError::Status {
                    url, status: 400, ..
                },
            ) => {
                // `file/` is 404 on most servers; ask for `file` to say what the URL names.
                let mut bare = self.base.clone();
                bare.set_path(self.base.path().trim_end_matches('/'));
                match self.propfind(bare, "0", PROPFIND_ENTRY_BODY).await {
                    Ok((u, raws)) if raws.len() == 1 => self.entry_from(&u, &raws[0])?,
                    _ => return Err(RemoteError::NotFound { url }),
                }
            }
            other => other?,
        };
        if !root.is_dir() {
            return Err(RemoteError::NotADirectory {
                url: self.base.to_string(),
            });
        }
        Ok(())
    }

    fn url(&self, path: &RemotePath, collection: bool) -> Url {
        path.to_url(&self.base, collection || path.is_root())
    }

    fn is_primed(&self) -> bool {
        !matches!(
            *self.auth.read().unwrap_or_else(|e| e.into_inner()),
            AuthState::Unprimed
        )
    }

    fn set_auth(&self, state: AuthState) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Adopts the scheme offered by a 401. Returns false when none is usable.
    fn adopt_challenge(&self, headers: &HeaderMap) -> RemoteResult<()> {
        let mut challenges = Vec::new();
        for v in headers.get_all(reqwest::header::WWW_AUTHENTICATE) {
            if let Ok(s) = v.to_str() {
                challenges.extend(auth::parse_challenges(s));
            }
        }
        match auth::choose(&challenges) {
            Some(Chosen::Digest(s)) => {
                tracing::debug!(algorithm = ?s.algorithm, realm = %s.realm, "using Digest auth");
                self.set_auth(AuthState::Digest(Arc::new(s)));
                Ok(())
            }
            Some(Chosen::Basic) => {
                let loopback = match self.base.host() {
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    None => false,
                };
                if self.base.scheme() == "http" && !loopback {
                    tracing::warn!(url = %self.base, "server wants Basic auth over plain http: the password crosses the network readable");
                }
                self.set_auth(AuthState::Basic);
                Ok(())
            }
            None => {
                let offered: Vec<String> = challenges.iter().map(|c| c.scheme.clone()).collect();
                Err(RemoteError::Config(format!(
                    "{} asks for authentication with no scheme cloudmount supports (offered: {}); Basic and Digest are supported",
                    self.base,
                    if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                )))
            }
        }
    }

    /// Learns the auth scheme with one unauthenticated OPTIONS, once.
    async fn prime(&self) -> RemoteResult<()> {
        if self.is_primed() {
            return Ok(());
        }
        let _g = self.prime_lock.lock().await;
        if self.is_primed() {
            return Ok(());
        }
        if self.creds.is_none() {
            self.set_auth(AuthState::Anonymous);
            return Ok(());
        }
        let m = Method::OPTIONS;
        let mut attempt = 0;
        loop {
            let res = self
                .execute(self.client.request(m.clone(), self.base.clone()), None)
                .await;
            match res {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    return self.adopt_challenge(resp.headers());
                }
                Ok(resp) if is_transient_status(resp.status()) && attempt < self.cfg.retries => {}
                Ok(_) => {
                    // Open to anonymous OPTIONS; a later 401 will teach us the scheme.
                    self.set_auth(AuthState::Anonymous);
                    return Ok(());
                }
                Err(e) if attempt >= self.retries_for(&e) => {
                    return Err(transient(&m, &self.base, e));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "OPTIONS failed, retrying");
                }
            }
            self.backoff(attempt).await;
            attempt += 1;
        }
    }

    async fn backoff(&self, attempt: u32) {
        let base = self.cfg.retry_base_delay.as_millis() as u64;
        let ms = base.saturating_mul(1u64 << attempt.min(16)).min(10_000);
        // Up to 25 % jitter so many clients do not retry in lock step.
        let mut b = [0u8; 2];
        let jitter = if getrandom::getrandom(&mut b).is_ok() {
            ms * u64::from(u16::from_le_bytes(b)) / (4 * 65535)
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(ms + jitter)).await;
    }

    /// The Authorization value for this request, per the current state.
    fn authorization(&self, method: &Method, url: &Url) -> Option<String> {
        let creds = self.creds.as_ref()?;
        match &*self.auth.read().unwrap_or_else(|e| e.into_inner()) {
            AuthState::Basic => Some(auth::basic_authorization(creds)),
            AuthState::Digest(s) => {
                Some(s.authorization(creds, method.as_str(), &request_target(url)))
            }
            AuthState::Unprimed | AuthState::Anonymous => None,
        }
    }

    /// Builds one attempt of `req`. A body to upload is wrapped to record progress, which is
    /// returned for [`WebDavRemote::execute`].
    fn build(&self, req: &Req) -> (reqwest::RequestBuilder, Option<Arc<Progress>>) {
        let mut rb = self
            .client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(a) = self.authorization(&req.method, &req.url) {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(dest) = &req.destination {
            let dest_url = dest.to_url(&self.base, req.url.path().ends_with('/'));
            rb = rb.header("Destination", dest_url.as_str());
        }
        match &req.body {
            ReqBody::None => (rb, None),
            ReqBody::Xml(x) => (
                rb.header(
                    reqwest::header::CONTENT_TYPE,
                    "application/xml; charset=utf-8",
                )
                .body(*x),
                None,
            ),
            ReqBody::Put(body) => {
                let progress = Arc::new(Progress::new(body.len()));
                let rb = rb.header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
                let rb = match body {
                    // Content-Length: 0 said out loud: without it nginx's dav module finds no
                    // body and answers 500 ("PUT request body must be in a file").
                    PutBody::Bytes(b) if b.is_empty() => rb
                        .header(reqwest::header::CONTENT_LENGTH, 0)
                        .body(b.clone()),
                    _ => rb.header(reqwest::header::CONTENT_LENGTH, body.len()).body(
                        reqwest::Body::wrap_stream(ProgressBody {
                            inner: self.cfg.bandwidth.upload(body.open()),
                            rest: Bytes::new(),
                            progress: progress.clone(),
                        }),
                    ),
                };
                (rb, Some(progress))
            }
        }
    }

    /// Runs one attempt until the response head, with the read timeout. Without `progress`, the
    /// response must come within `read_timeout` of sending (what reqwest's `read_timeout` did).
    /// An upload (`progress` given) is cut only when it makes no progress for `read_timeout`: no
    /// body bytes taken by the connection, or no response since the last one. Errors are
    /// returned as a reason.
    ///
    /// "Taken by the connection" is seen from above the socket: the body is asked for its next
    /// piece only when hyper has room for it. What the kernel's send buffer still holds once the
    /// last piece is handed over drains unseen, so it must drain within `read_timeout`. Linux
    /// sizes that buffer from the congestion window (about a few round trips of data) on real
    /// links; only a peer that reads far slower than the network (send buffer grown to its
    /// 4 MiB cap) with a very short timeout can be cut by it.
    async fn execute(
        &self,
        rb: reqwest::RequestBuilder,
        progress: Option<Arc<Progress>>,
    ) -> Result<reqwest::Response, Failed> {
        let fut = rb.send();
        let limit = self.cfg.read_timeout;
        let Some(progress) = progress else {
            return match tokio::time::timeout(limit, fut).await {
                Ok(res) => res.map_err(|e| Failed::of(&e)),
                Err(_) => Err(Failed::other(format!(
                    "operation timed out: no response within {:.1} s",
                    limit.as_secs_f64()
                ))),
            };
        };
        let period = (limit / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                res = &mut fut => return res.map_err(|e| Failed::of(&e)),
                _ = tick.tick() => {
                    let idle = progress.idle();
                    if idle > progress.allowed_idle(limit) {
                        return Err(Failed::other(format!(
                            "operation timed out: upload made no progress for {:.1} s (read timeout {:.1} s)",
                            idle.as_secs_f64(),
                            limit.as_secs_f64()
                        )));
                    }
                }
            }
        }
    }

    /// Sends a request: signs it, re-signs on a stale nonce, follows a redirect that only adds a
    /// trailing slash, and retries transient failures of safe methods. Non-401 statuses are
    /// returned to the caller for mapping.
    async fn send(&self, mut req: Req) -> RemoteResult<reqwest::Response> {
        self.prime().await?;
        // Retries stop once a read timeout's worth of time has gone by: a hanging network is
        // waited for once, not once per retry (callers serve what they know meanwhile).
        let first_sent = Instant::now();
        let mut attempt = 0u32;
        let mut auth_rounds = 0u32;
        let mut slash_redirected = false;
        loop {
            let signed = self.creds.is_some()
                && matches!(
                    *self.auth.read().unwrap_or_else(|e| e.into_inner()),
                    AuthState::Basic | AuthState::Digest(_)
                );
            let started = std::time::Instant::now();
            let (rb, progress) = self.build(&req);
            let slot = Slot {
                _permit: Arc::new(
                    self.slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the request slots are never closed"),
                ),
            };
            let res = self.execute(rb, progress).await.map(|mut resp| {
                resp.extensions_mut().insert(slot);
                resp
            });
            match res {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenges: Vec<auth::Challenge> = resp
                        .headers()
                        .get_all(reqwest::header::WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(auth::parse_challenges)
                        .collect();
                    let stale = auth::is_stale(&challenges);
                    let can_retry = self.creds.is_some() && auth_rounds < 3 && (stale || !signed);
                    if !can_retry {
                        tracing::warn!(method = %req.method, url = %req.url, "credentials refused");
                        return Err(RemoteError::Auth {
                            url: req.url.to_string(),
                            status: 401,
                        });
                    }
                    tracing::debug!(stale, "401: adopting new challenge");
                    self.adopt_challenge(resp.headers())?;
                    auth_rounds += 1;
                    continue;
                }
                Ok(resp)
                    if resp.status().is_redirection()
                        && !slash_redirected
                        && !req.url.path().ends_with('/') =>
                {
                    let with_slash = {
                        let mut u = req.url.clone();
                        u.set_path(&format!("{}/", req.url.path()));
                        u
                    };
                    let loc = header_str(resp.headers(), reqwest::header::LOCATION)
                        .and_then(|l| req.url.join(l).ok());
                    if loc.as_ref().map(|l| l.path()) == Some(with_slash.path()) {
                        slash_redirected = true;
                        req.url = with_slash;
                        continue;
                    }
                    return Ok(resp);
                }
                Ok(resp)
                    if is_transient_status(resp.status())
                        && req.retry_safe
                        && attempt < self.cfg.retries
                        && first_sent.elapsed() < self.cfg.read_timeout =>
                {
                    tracing::debug!(method = %req.method, url = %req.url, status = %resp.status(), attempt, "transient status, retrying");
                }
                Ok(resp) => {
                    tracing::trace!(method = %req.method, url = %req.url, status = %resp.status(), elapsed_ms = started.elapsed().as_millis() as u64, "response");
                    return Ok(resp);
                }
                Err(reason) => {
                    if !(req.retry_safe
                        && attempt < self.retries_for(&reason)
                        && first_sent.elapsed() < self.cfg.read_timeout)
                    {
                        return Err(transient(&req.method, &req.url, reason));
                    }
                    tracing::debug!(method = %req.method, url = %req.url, error = %reason, attempt, "request failed, retrying");
                }
            }
            self.backoff(attempt).await;
            attempt += 1;
        }
    }

    /// How many times a request that failed with `f` is retried: a refused connection (nobody
    /// listens there) once, for a server that restarts; others as configured. Retrying a
    /// refused connection four times made a read of an uncached file offline take 8 s to fail.
    fn retries_for(&self, f: &Failed) -> u32 {
        if f.refused {
            self.cfg.retries.min(1)
        } else {
            self.cfg.retries
        }
    }

    /// Reads a whole (XML) body, refusing more than `max` bytes; it counts against the download
    /// limit like any body.
    async fn read_limited(
        &self,
        m: &Method,
        url: &Url,
        mut resp: reqwest::Response,
        max: usize,
    ) -> RemoteResult<Vec<u8>> {
        let mut out = Vec::new();
        let limit = self.cfg.read_timeout;
        while let Some(chunk) = tokio::time::timeout(limit, resp.chunk())
            .await
            .map_err(|_| transient(m, url, body_timed_out(limit)))?
            .map_err(|e| transient(m, url, reqwest_reason(&e)))?
        {
            if out.len() + chunk.len() > max {
                return Err(RemoteError::BadResponse {
                    method: m.to_string(),
                    url: url.to_string(),
                    reason: format!("reply larger than {max} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
            self.cfg.bandwidth.received(chunk.len() as u64).await;
        }
        Ok(out)
    }

    /// PROPFIND with `depth` and `body`; returns the parsed responses and the URL asked.
    async fn propfind(
        &self,
        url: Url,
        depth: &str,
        body: &'static str,
    ) -> RemoteResult<(Url, Vec<RawResponse>)> {
        let (url, bytes) = self.propfind_bytes(url, depth, body).await?;
        let parsed = Self::parse_propfind(&url, &bytes)?;
        Ok((url, parsed))
    }

    /// PROPFIND with `depth` and `body`; returns the reply's body as it came, unparsed, and
    /// the URL that answered.
    async fn propfind_bytes(
        &self,
        url: Url,
        depth: &str,
        body: &'static str,
    ) -> RemoteResult<(Url, Vec<u8>)> {
        let m = method("PROPFIND");
        let mut req = Req::new(m.clone(), url).header("depth", depth);
        req.body = ReqBody::Xml(body);
        let resp = self.send(req).await?;
        let url = resp.url().clone();
        let status = resp.status();
        if status != StatusCode::MULTI_STATUS && status != StatusCode::OK {
            return Err(status_error(&m, &url, status));
        }
        let bytes = self
            .read_limited(&m, &url, resp, self.cfg.max_propfind_bytes)
            .await?;
        Ok((url, bytes))
    }

    fn parse_propfind(url: &Url, bytes: &[u8]) -> RemoteResult<Vec<RawResponse>> {
        parse_multistatus(bytes).map_err(|e| RemoteError::BadResponse {
            method: "PROPFIND".to_string(),
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    fn bad(&self, m: &str, url: &Url, reason: impl Into<String>) -> RemoteError {
        RemoteError::BadResponse {
            method: m.to_string(),
            url: url.to_string(),
            reason: reason.into(),
        }
    }

    fn entry_from(&self, request: &Url, raw: &RawResponse) -> RemoteResult<Entry> {
        let path = href_to_path(&self.base, request, &raw.href)
            .map_err(|r| self.bad("PROPFIND", request, r))?;
        let p = &raw.props;
        let kind = if p.is_collection {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        Ok(Entry {
            path,
            kind,
            size: if kind == EntryKind::Dir {
                0
            } else {
                p.content_length.unwrap_or(0)
            },
            mtime: p
                .last_modified
                .as_deref()
                .and_then(|s| httpdate::parse_http_date(s.trim()).ok()),
            etag: p.etag.as_deref().and_then(ETag::parse),
            content_type: p.content_type.clone(),
        })
    }

    /// Whether `path` is a collection (false when that cannot be learnt).
    async fn is_collection(&self, path: &RemotePath) -> bool {
        matches!(self.stat(path).await, Ok(e) if e.is_dir())
    }

    /// ETag from a HEAD, for servers whose PROPFIND has no getetag.
    async fn head_etag(&self, path: &RemotePath) -> RemoteResult<Option<ETag>> {
        let url = self.url(path, false);
        let resp = self.send(Req::new(Method::HEAD, url.clone())).await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::HEAD, &url, resp.status()));
        }
        Ok(header_str(resp.headers(), reqwest::header::ETAG).and_then(ETag::parse))
    }

    fn ok_or_status(m: &Method, url: &Url, status: StatusCode) -> RemoteResult<()> {
        if status.is_success() && status != StatusCode::MULTI_STATUS {
            Ok(())
        } else if status == StatusCode::MULTI_STATUS {
            // A 207 to DELETE/MOVE/COPY reports a partial failure inside the tree.
            Err(RemoteError::Status {
                method: m.to_string(),
                url: url.to_string(),
                status: 207,
            })
        } else {
            Err(status_error(m, url, status))
        }
    }

    async fn move_or_copy(
        &self,
        name: &'static str,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        if from.is_root() || to.is_root() {
            return Err(RemoteError::InvalidPath {
                path: if from.is_root() { from } else { to }.to_string(),
                reason: format!("cannot {name} the base collection"),
            });
        }
        let m = method(name);
        let attempt = |collection: bool| {
            let url = self.url(from, collection);
            let mut req =
                Req::new(m.clone(), url).header("overwrite", if overwrite { "T" } else { "F" });
            // The destination gets a trailing slash when the source has one (see `build`).
            req.destination = Some(to.clone());
            self.send(req)
        };
        let mut resp = attempt(false).await?;
        if matches!(
            resp.status(),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT
        ) && self.is_collection(from).await
        {
            // nginx moves or copies a collection only when both URLs end with a slash
            // (400 "is collection" otherwise).
            resp = attempt(true).await?;
        }
        let url = resp.url().clone();
        let err = match resp.status() {
            StatusCode::PRECONDITION_FAILED if !overwrite => {
                return Err(RemoteError::AlreadyExists {
                    url: self.url(to, false).to_string(),
                })
            }
            s if s.is_success() && s != StatusCode::MULTI_STATUS => return Ok(()),
            s => Self::ok_or_status(&m, &url, s).unwrap_err(),
        };
        // Servers disagree on the status for a missing source or target parent (Apache: 500,
        // x/net/webdav: 403); find out which it is, so callers get NotFound / MissingParent.
        if matches!(
            err,
            RemoteError::Forbidden { .. }
                | RemoteError::Transient { .. }
                | RemoteError::Status { .. }
                | RemoteError::MissingParent { .. }
        ) {
            if let Err(RemoteError::NotFound { url }) = self.stat(from).await {
                return Err(RemoteError::NotFound { url });
            }
            if let Some(parent) = to.parent().filter(|p| !p.is_root()) {
                if let Err(RemoteError::NotFound { .. }) = self.stat(&parent).await {
                    return Err(RemoteError::MissingParent {
                        url: self.url(to, false).to_string(),
                    });
                }
            }
        }
        Err(err)
    }
}

#[cfg(test)]
mod tests;
