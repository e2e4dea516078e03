//! Real WebDAV locks: dav-server's in-memory [`MemLs`] (exclusive and shared, depth 0 and
//! infinity, `If:` tokens checked on PUT, DELETE, MOVE, COPY, PROPPATCH, MKCOL and LOCK), plus
//! what it lacks for a server others can reach, kept by [`LockKeeper`]: **locks expire**.
//!
//! `MemLs` records a lock's timeout but never acts on it, and takes a LOCK without `Timeout`
//! (or `Timeout: Infinite`) as a lock forever: a client that crashed holding a lock would block
//! the file until the server restarts, and LOCKs on ever new names would grow memory without
//! bound. So, around dav-server:
//! - every LOCK (new or refresh) is made to ask for at most [`MAX_TIMEOUT`] (its `Timeout`
//!   header is rewritten), which is what the answer reports;
//! - the keeper notes each lock granted (its `Lock-Token`), refreshed or released, and releases
//!   the expired ones before each request;
//! - at most [`MAX_LOCKS`] locks are held at once; a new LOCK beyond that is 503.
//!
//! Locks live in memory: a restart releases them all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dav_server::davpath::DavPath;
use dav_server::ls::DavLockSystem;
use dav_server::memls::MemLs;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Longest lock timeout granted (a client refreshes a lock it needs longer). dav-server's own
/// cap for exclusive locks.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Most locks held at once.
pub(crate) const MAX_LOCKS: usize = 10_000;

/// Keeps the locks of a [`MemLs`] from outliving their timeout.
pub(crate) struct LockKeeper {
    ls: Box<MemLs>,
    live: Mutex<Vec<Live>>,
}

/// A lock granted and not known to be released.
#[derive(Debug, Clone)]
struct Live {
    path: DavPath,
    token: String,
    expires: Instant,
}

/// What [`LockKeeper::prepare`] noted of a request, for [`LockKeeper::record`].
#[derive(Debug, Default)]
pub(crate) struct LockRequest {
    path: Option<DavPath>,
    /// Tokens named in `If` (a refresh) or `Lock-Token` (an UNLOCK).
    tokens: Vec<String>,
    timeout: Duration,
    kind: Kind,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Other,
    Lock,
    Unlock,
}

impl LockKeeper {
    /// A keeper and the lock system to give dav-server (they share the locks).
    pub(crate) fn new() -> (LockKeeper, Box<MemLs>) {
        let ls = MemLs::new();
        let keeper = LockKeeper {
            ls: ls.clone(),
            live: Mutex::new(Vec::new()),
        };
        (keeper, ls)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the locks whose timeout has passed.
    pub(crate) async fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<Live> = {
            let mut live = self.live();
            if !live.iter().any(|l| l.expires <= now) {
                return;
            }
            let (gone, kept) = live.drain(..).partition(|l| l.expires <= now);
            *live = kept;
            gone
        };
        for l in expired {
            tracing::debug!(path = %l.path, token = l.token, "lock expired");
            // Already gone when its resource was deleted or moved: nothing to do then.
            let _ = self.ls.unlock(&l.path, &l.token).await;
        }
    }

    /// Before dav-server: bounds a LOCK's timeout (rewriting `Timeout`), refuses a new lock
    /// beyond [`MAX_LOCKS`], and notes what [`record`](Self::record) needs.
    pub(crate) fn prepare(
        &self,
        method: &Method,
        path: &str,
        headers: &mut HeaderMap,
    ) -> Result<LockRequest, StatusCode> {
        let kind = match method.as_str() {
            "LOCK" => Kind::Lock,
            "UNLOCK" => Kind::Unlock,
            _ => return Ok(LockRequest::default()),
        };
        let mut req = LockRequest {
            path: DavPath::new(path).ok(),
            kind,
            ..LockRequest::default()
        };
        if req.kind == Kind::Unlock {
            req.tokens = tokens_in(headers.get("lock-token"));
            return Ok(req);
        }
        req.tokens = tokens_in(headers.get("if"));
        let is_refresh = !req.tokens.is_empty();
        if !is_refresh && self.live().len() >= MAX_LOCKS {
            tracing::warn!(max = MAX_LOCKS, "too many locks held: LOCK refused");
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        req.timeout = requested_timeout(headers.get("timeout")).min(MAX_TIMEOUT);
        let value = format!("Second-{}", req.timeout.as_secs());
        headers.insert(
            "timeout",
            HeaderValue::from_str(&value).expect("ASCII header value"),
        );
        Ok(req)
    }

    /// After dav-server answered: notes a lock granted, refreshed or released.
    pub(crate) fn record(&self, req: LockRequest, status: StatusCode, headers: &HeaderMap) {
        let Some(path) = req.path else {
            return;
        };
        match req.kind {
            Kind::Other => {}
            Kind::Unlock if status.is_success() => {
                self.live().retain(|l| !req.tokens.contains(&l.token));
            }
            Kind::Lock if status.is_success() => {
                let expires = Instant::now() + req.timeout;
                match tokens_in(headers.get("lock-token")).pop() {
                    Some(token) => self.live().push(Live {
                        path,
                        token,
                        expires,
                    }),
                    // A refresh: the token was in `If`.
                    None => {
                        for l in self
                            .live()
                            .iter_mut()
                            .filter(|l| req.tokens.contains(&l.token))
                        {
                            l.expires = expires;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The timeout a LOCK asks for: the first of `Timeout: Second-N, Infinite, …` (RFC 4918
/// §10.7); none, `Infinite` or anything unreadable is "as long as allowed".
fn requested_timeout(value: Option<&HeaderValue>) -> Duration {
    let first = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .unwrap_or("");
    first
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("second-"))
        .and_then(|_| first[7..].parse::<u64>().ok())
        .map_or(MAX_TIMEOUT, Duration::from_secs)
}

/// The lock tokens (`<urn:uuid:…>` or `<opaquelocktoken:…>`) in a header.
fn tokens_in(value: Option<&HeaderValue>) -> Vec<String> {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    v.split('<')
        .skip(1)
        .filter_map(|rest| rest.split_once('>').map(|(t, _)| t.trim()))
        .filter(|t| t.starts_with("urn:uuid:") || t.starts_with("opaquelocktoken:"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn timeouts_and_tokens_are_read() {
        assert_eq!(requested_timeout(None), MAX_TIMEOUT);
        assert_eq!(requested_timeout(Some(&hv("Infinite"))), MAX_TIMEOUT);
        assert_eq!(
            requested_timeout(Some(&hv("Second-5, Infinite"))),
            Duration::from_secs(5)
        );
        assert_eq!(
            requested_timeout(Some(&hv("second-99999999"))),
            Duration::from_secs(99_999_999)
        );
        assert_eq!(requested_timeout(Some(&hv("Second-x"))), MAX_TIMEOUT);
        assert_eq!(
            tokens_in(Some(&hv(
                "</f> (<urn:uuid:1-2> [\"etag\"]) (Not <opaquelocktoken:x>) (<DAV:no-lock>)"
            ))),
            ["urn:uuid:1-2", "opaquelocktoken:x"]
        );
    }

    #[tokio::test]
    async fn expired_locks_are_released() {
        let (keeper, ls) = LockKeeper::new();
        let path = DavPath::new("/f").unwrap();
        let mut h = HeaderMap::new();
        h.insert("timeout", hv("Second-99999"));
        let req = keeper.prepare(&Method::from_bytes(b"LOCK").unwrap(), "/f", &mut h);
        let req = req.unwrap();
        assert_eq!(h.get("timeout").unwrap(), "Second-600");
        let lock = ls
            .lock(&path, None, None, Some(req.timeout), false, false)
            .await
            .unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("lock-token", hv(&format!("<{}>", lock.token)));
        keeper.record(req, StatusCode::OK, &resp);
        assert!(ls.check(&path, None, false, false, &[]).await.is_err());
        keeper.expire().await;
        assert!(ls.check(&path, None, false, false, &[]).await.is_err());
        // Time passes.
        keeper.live()[0].expires = Instant::now();
        keeper.expire().await;
        assert!(ls.check(&path, None, false, false, &[]).await.is_ok());
        assert!(keeper.live().is_empty());
    }
}
