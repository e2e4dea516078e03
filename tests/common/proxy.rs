//! A TCP fault proxy for the integration tests: it sits between the WebDAV client (or a mounted
//! daemon) and a real server and injects real network faults — refused connections, stalls,
//! resets, uploads cut midway.
//!
//! ```ignore
//! let base = env("CLOUDMOUNT_TEST_APACHE_BASIC_URL");
//! let proxy = FaultProxy::start(target_of(&base)).await;   // or start_blocking, from sync tests
//! let client = webdav(&proxy.url_for(&base), &test_user(), &test_password());
//! proxy.set_mode(ProxyMode::Stall);                          // everything stops moving
//! ```
//!
//! [`FaultProxy::start`] runs the proxy's tasks on the caller's tokio runtime (for
//! `#[tokio::test]`); [`FaultProxy::start_blocking`] runs them on a thread of their own with its
//! own runtime, so plain `#[test]` functions (real mounts, whose file operations block) can use
//! it too. Dropping the proxy stops it and closes every connection still open.
//!
//! Faults:
//! - [`ProxyMode::Refuse`]: new connections are accepted and reset at once (the client sees a
//!   connection reset, not a refused connect: the kernel completes the handshake before
//!   `accept`). Connections already open keep working; add [`FaultProxy::reset_all`] for a
//!   full outage.
//! - [`ProxyMode::Stall`]: new connections are accepted and get nothing; open connections stop
//!   moving bytes in both directions. Back in `Pass`, everything held moves on.
//! - [`FaultProxy::reset_all`]: every open connection is reset (RST to both peers) now.
//! - [`FaultProxy::reset_after_bytes`]: the next connection that sends client→server data is
//!   reset once it has forwarded that many bytes (counted from its first chunk after the call;
//!   an upload is cut midway).
//!
//! Requests: [`FaultProxy::requests`] is every HTTP request forwarded so far (method and target
//! from its request line, and its response's status), so tests count requests on any server —
//! e.g. "a file read twice is fetched once" — without a server's access log
//! (`tests/common/http_log.rs` follows the HTTP/1.1 framing).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::http_log::Request;
use super::http_log::{Exchange, RequestLog};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Accept new connections and reset them at once; open ones are left alone.
    Refuse,
    /// Accept new connections but forward nothing; open connections stop moving bytes too.
    Stall,
}

/// The address of the server a URL names (`http://127.0.0.1:8080/dav/` → `127.0.0.1:8080`).
pub fn target_of(server_url: &str) -> SocketAddr {
    let u = url::Url::parse(server_url).unwrap_or_else(|e| panic!("bad URL {server_url}: {e}"));
    u.socket_addrs(|| None)
        .unwrap_or_else(|e| panic!("cannot resolve {server_url}: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{server_url} resolves to no address"))
}

/// A pending "reset after n bytes" for the next `left` connections.
struct ResetPlan {
    after: u64,
    left: u32,
}

struct Shared {
    target: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    /// Cancelled by `reset_all`, then replaced: connections hold the token current when they
    /// were accepted. Children of `shutdown`.
    epoch: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    plan: Mutex<Option<ResetPlan>>,
    connections: AtomicU64,
    live: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    resets: AtomicU64,
    requests: Arc<RequestLog>,
}

impl Shared {
    fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// Claims the pending reset plan for one connection: its byte budget.
    fn claim_plan(&self) -> Option<u64> {
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let p = plan.as_mut()?;
        let after = p.after;
        p.left -= 1;
        if p.left == 0 {
            *plan = None;
        }
        Some(after)
    }
}

/// A TCP proxy on `127.0.0.1:<free port>` forwarding to one target, with faults on demand.
/// Stops on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The proxy's own runtime thread (`start_blocking`).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        Self::launch(target, &tokio::runtime::Handle::current(), None)
    }

    /// Starts a proxy to `target` on a thread of its own running its own runtime: for sync
    /// tests (and usable from async ones as well).
    pub fn start_blocking(target: SocketAddr) -> FaultProxy {
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                tx.send(rt.handle().clone()).expect("send runtime handle");
                // Tasks spawned on the handle run while this blocks; dropping the runtime on the
                // way out drops whatever is left.
                rt.block_on(thread_stop.cancelled());
            })
            .expect("spawn proxy thread");
        let handle = rx.recv().expect("proxy runtime started");
        let mut p = Self::launch(target, &handle, Some(stop));
        p.thread = Some(thread);
        p
    }

    fn launch(
        target: SocketAddr,
        handle: &tokio::runtime::Handle,
        shutdown: Option<CancellationToken>,
    ) -> FaultProxy {
        let std_listener = StdListener::bind("127.0.0.1:0").expect("bind proxy listener");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let shutdown = shutdown.unwrap_or_default();
        let shared = Arc::new(Shared {
            target,
            mode: watch::Sender::new(ProxyMode::Pass),
            epoch: Mutex::new(shutdown.child_token()),
            shutdown,
            plan: Mutex::new(None),
            connections: AtomicU64::new(0),
            live: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            requests: Arc::default(),
        });
        let listener = {
            let _guard = handle.enter();
            TcpListener::from_std(std_listener).expect("register proxy listener")
        };
        handle.spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            thread: None,
        }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// `server_url` with its host and port replaced by the proxy's (path and query kept).
    pub fn url_for(&self, server_url: &str) -> String {
        let mut u =
            url::Url::parse(server_url).unwrap_or_else(|e| panic!("bad URL {server_url}: {e}"));
        u.set_ip_host(self.addr.ip()).expect("URL takes a host");
        u.set_port(Some(self.addr.port()))
            .expect("URL takes a port");
        u.to_string()
    }

    /// Switches mode. `Pass` also cancels a pending [`reset_after_bytes`](Self::reset_after_bytes)
    /// that no connection has claimed yet.
    pub fn set_mode(&self, mode: ProxyMode) {
        if mode == ProxyMode::Pass {
            *self.shared.plan.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.shared.mode.send_replace(mode);
    }

    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Resets every connection open now (SO_LINGER 0, then close: an RST to both peers).
    /// Connections accepted afterwards are not affected.
    pub fn reset_all(&self) {
        let mut epoch = self.shared.epoch.lock().unwrap_or_else(|e| e.into_inner());
        epoch.cancel();
        *epoch = self.shared.shutdown.child_token();
    }

    /// The server unreachable from now on: new connections refused, open ones reset.
    pub fn go_offline(&self) {
        self.set_mode(ProxyMode::Refuse);
        self.reset_all();
    }

    /// The next connection to send client→server data is reset once it has forwarded `n` such
    /// bytes (counted from its first chunk after this call). One-shot.
    pub fn reset_after_bytes(&self, n: u64) {
        self.reset_after_bytes_times(n, 1);
    }

    /// Like [`reset_after_bytes`](Self::reset_after_bytes), for the next `times` connections.
    pub fn reset_after_bytes_times(&self, n: u64, times: u32) {
        let plan = (times > 0).then_some(ResetPlan {
            after: n,
            left: times,
        });
        *self.shared.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn live(&self) -> u64 {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Client→server bytes forwarded so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::SeqCst)
    }

    /// Server→client bytes forwarded so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::SeqCst)
    }

    /// Connections the proxy reset (Refuse, `reset_all`, `reset_after_bytes`, failed connects).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Every request forwarded so far, in the order their request lines went through.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.snapshot()
    }

    /// The requests forwarded so far whose path starts with `prefix` (a percent-encoded URL
    /// path, e.g. [`Dav::url_path`](super::mount::Dav::url_path)).
    pub fn requests_under(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path().starts_with(prefix))
            .collect()
    }

    /// How many `method` requests below `prefix` were forwarded so far.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.requests_under(prefix)
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// The requests below `prefix` once no new one has come for `quiet` (work the client
    /// does in the background, such as reading ahead, is counted on the right side).
    pub fn requests_when_quiet(&self, prefix: &str, quiet: Duration) -> Vec<Request> {
        let mut last = self.requests_under(prefix);
        loop {
            std::thread::sleep(quiet);
            let now = self.requests_under(prefix);
            let answered = now.iter().all(|r| r.status.is_some());
            if now.len() == last.len() && answered {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let client = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("fault proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let kill = shared
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio::spawn(connection(client, shared.clone(), kill));
    }
}

/// Closes a socket with an RST instead of a FIN.
fn reset(shared: &Shared, s: TcpStream) {
    let _ = s.set_zero_linger();
    shared.resets.fetch_add(1, Ordering::SeqCst);
    drop(s);
}

/// Waits while the mode is `Stall`.
async fn unstalled(mode: &mut watch::Receiver<ProxyMode>) {
    let _ = mode.wait_for(|m| *m != ProxyMode::Stall).await;
}

/// Why a relay ended early.
struct Abort;

async fn connection(client: TcpStream, shared: Arc<Shared>, kill: CancellationToken) {
    shared.live.fetch_add(1, Ordering::SeqCst);
    struct Live<'a>(&'a Shared);
    impl Drop for Live<'_> {
        fn drop(&mut self) {
            self.0.live.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _live = Live(&shared);

    if shared.mode() == ProxyMode::Refuse {
        return reset(&shared, client);
    }
    let mut mode = shared.mode.subscribe();
    // A stalled new connection gets nothing, not even an upstream connection, until the stall
    // ends; if the mode is then Refuse, it is refused.
    let upstream = tokio::select! {
        biased;
        _ = kill.cancelled() => None,
        u = async {
            unstalled(&mut mode).await;
            if *mode.borrow() == ProxyMode::Refuse {
                return None;
            }
            TcpStream::connect(shared.target).await.ok()
        } => u,
    };
    let Some(mut upstream) = upstream else {
        return reset(&shared, client);
    };
    let mut client = client;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let exchange = Exchange::new(shared.requests.clone());
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let mut mode_up = mode.clone();
        let mut mode_down = mode;
        let up = pump(&mut cr, &mut uw, &shared, &exchange, &mut mode_up, true);
        let down = pump(&mut ur, &mut cw, &shared, &exchange, &mut mode_down, false);
        // Biased: a reset_all is acted on at the next wake-up, before more bytes are forwarded.
        tokio::select! {
            biased;
            _ = kill.cancelled() => Err(Abort),
            r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        }
    };
    if outcome.is_err() {
        reset(&shared, upstream);
        reset(&shared, client);
    }
}

/// Copies one direction until EOF (then half-closes the other side). `Err` means: reset both.
async fn pump(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    shared: &Shared,
    exchange: &Exchange,
    mode: &mut watch::Receiver<ProxyMode>,
    up: bool,
) -> Result<(), Abort> {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes this connection may still send up before it is reset, once it claimed a plan.
    let mut budget: Option<u64> = None;
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Abort)?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        // Held, not forwarded, while stalled.
        unstalled(mode).await;
        let mut chunk = &buf[..n];
        let mut cut = false;
        if up {
            if budget.is_none() {
                budget = shared.claim_plan();
            }
            if let Some(left) = budget.as_mut() {
                let allowed = (*left).min(chunk.len() as u64);
                chunk = &chunk[..allowed as usize];
                *left -= allowed;
                cut = *left == 0;
            }
        }
        if !chunk.is_empty() {
            // Counted first: once the peer has the bytes, the counter already shows them.
            let counter = if up {
                &shared.bytes_up
            } else {
                &shared.bytes_down
            };
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if up {
                exchange.client_sent(chunk);
            } else {
                exchange.server_sent(chunk);
            }
            to.write_all(chunk).await.map_err(|_| Abort)?;
        }
        if cut {
            return Err(Abort);
        }
    }
}
