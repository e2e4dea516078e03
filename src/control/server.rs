//! The daemon's side of the control socket: listen, accept, read one request line, answer one
//! line, close. What a request does is the [`ControlHandler`]'s business; this file only
//! carries requests and answers (see [`super::protocol`] for their form).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{self, DecodeError, Request, Response, LEGACY_STATUS, PROTOCOL_VERSION};
use super::{ControlError, IO_TIMEOUT};
use crate::instance::SUN_PATH_MAX;

/// Longest request line the server reads (room for a request naming a long path).
pub const MAX_REQUEST: usize = 64 << 10;

/// Carries out control requests. The daemon implements it; the transport calls
/// [`handle`](Self::handle) once per request, concurrently for concurrent connections.
#[async_trait]
pub trait ControlHandler: Send + Sync + 'static {
    /// The answer to `request`. A request that fails is answered with [`Response::Error`].
    async fn handle(&self, request: Request) -> Response;
}

/// Any `Fn(Request) -> Response` is a handler (tests, fakes). It runs on the async runtime's
/// threads, so it must not block.
#[async_trait]
impl<F> ControlHandler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    async fn handle(&self, request: Request) -> Response {
        self(request)
    }
}

/// The running control server. Dropping it stops it and removes its socket file (unless
/// another process has replaced the file since).
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    /// Device and inode of the socket file this server bound.
    id: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(error = %e, socket = %self.path.display(), "cannot remove the control socket");
                }
            }
            _ => {}
        }
    }
}

/// Starts answering requests on a Unix socket at `path` (mode 0600; its directory must exist
/// and should be private). A stale socket file there (no process answering) is replaced; one
/// that answers is left alone ([`ControlError::InUse`]). Must be called within a tokio
/// runtime.
pub fn serve<H: ControlHandler>(path: &Path, handler: H) -> Result<ControlServer, ControlError> {
    let listen_err = |source| ControlError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse(path.to_path_buf()));
    }
    // Bind under a temporary name, restrict it, then rename it into place: the socket is never
    // reachable with a wider mode, and a stale file is replaced atomically. When the temporary
    // name would not fit in a socket address, bind in place (the directory is private anyway).
    let tmp = path.with_file_name(format!(".ctl{}.tmp", std::process::id()));
    let bind_at = if tmp.as_os_str().len() <= SUN_PATH_MAX {
        tmp.as_path()
    } else {
        path
    };
    let _ = std::fs::remove_file(bind_at);
    let std_listener = std::os::unix::net::UnixListener::bind(bind_at).map_err(listen_err)?;
    let placed = std::fs::set_permissions(bind_at, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| {
            if bind_at == path {
                Ok(())
            } else {
                std::fs::rename(bind_at, path)
            }
        })
        .and_then(|()| std::fs::symlink_metadata(path))
        .and_then(|m| std_listener.set_nonblocking(true).map(|()| m));
    let meta = match placed {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(bind_at);
            return Err(listen_err(e));
        }
    };
    let listener = UnixListener::from_std(std_listener).map_err(listen_err)?;
    let task = tokio::spawn(accept_loop(listener, Arc::new(handler)));
    tracing::debug!(socket = %path.display(), "control socket listening");
    Ok(ControlServer {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        task,
    })
}

async fn accept_loop(listener: UnixListener, handler: Arc<dyn ControlHandler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(IO_TIMEOUT, answer(stream, &*handler)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "control connection failed"),
                        Err(_) => tracing::debug!("control connection timed out"),
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request line and writes one answer line.
async fn answer(stream: UnixStream, handler: &dyn ControlHandler) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    BufReader::new(read)
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    let reply = match Incoming::parse(&line) {
        Incoming::Versioned(Ok(request)) => {
            protocol::encode_response(&handler.handle(request).await)
        }
        Incoming::Versioned(Err(refusal)) => protocol::encode_response(&refusal),
        Incoming::Legacy(Ok(request)) => protocol::encode_legacy(&handler.handle(request).await),
        Incoming::Legacy(Err(refusal)) => protocol::encode_legacy(&refusal),
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

/// A request line, read: in which form to answer, and the request or the refusal.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Versioned(Result<Request, Response>),
    Legacy(Result<Request, Response>),
}

impl Incoming {
    fn parse(raw: &[u8]) -> Incoming {
        let versioned = raw.trim_ascii_start().starts_with(b"{");
        let wrap = |r| {
            if versioned {
                Incoming::Versioned(r)
            } else {
                Incoming::Legacy(r)
            }
        };
        let understood = understood();
        if raw.strip_suffix(b"\n").unwrap_or(raw).len() > MAX_REQUEST {
            return wrap(Err(Response::error(format!(
                "request longer than {MAX_REQUEST} bytes; this daemon understands: {understood}"
            ))));
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return wrap(Err(Response::error(format!(
                "the request is not UTF-8; this daemon understands: {understood}"
            ))));
        };
        let text = text.trim();
        if !versioned {
            return wrap(match text {
                LEGACY_STATUS => Ok(Request::Status),
                "" => Err(Response::error(format!(
                    "empty request; this daemon understands: {understood}"
                ))),
                other => Err(Response::error(format!(
                    "unknown request {:?}; this daemon understands: {understood}",
                    protocol::truncate(other, 64)
                ))),
            });
        }
        wrap(protocol::decode_request(text).map_err(|e| {
            Response::error(match e {
                DecodeError::Newer(v) => format!(
                    "the request is in control protocol version {v}, and this daemon speaks \
                     version {PROTOCOL_VERSION}: the daemon is older than the cloudmount command \
                     asking; unmount and mount again to run the new version"
                ),
                DecodeError::UnknownVerb(verb) => {
                    format!("unknown request {verb:?}; this daemon understands: {understood}")
                }
                other => format!("bad request: {other}; this daemon understands: {understood}"),
            })
        }))
    }
}

fn understood() -> String {
    Request::VERBS.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(i: &Incoming) -> &str {
        match i {
            Incoming::Versioned(Err(Response::Error { message }))
            | Incoming::Legacy(Err(Response::Error { message })) => message,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn lines_are_read_in_their_form() {
        assert_eq!(
            Incoming::parse(b"status\n"),
            Incoming::Legacy(Ok(Request::Status))
        );
        assert_eq!(
            Incoming::parse(b"status"),
            Incoming::Legacy(Ok(Request::Status))
        );
        assert_eq!(
            Incoming::parse(b" {\"v\":1,\"request\":\"status\"}\n"),
            Incoming::Versioned(Ok(Request::Status))
        );
        for (raw, versioned, needle) in [
            (&b"reboot\n"[..], false, "unknown request \"reboot\""),
            (b"\n", false, "empty request"),
            (b"\xff\xfe\n", false, "not UTF-8"),
            (b"{\xff}\n", true, "not UTF-8"),
            (
                b"{\"v\":1,\"request\":\"share\"}",
                true,
                "unknown request \"share\"",
            ),
            (
                b"{\"v\":7,\"request\":\"status\"}",
                true,
                "protocol version 7",
            ),
            (
                b"{\"request\":\"status\"}",
                true,
                "bad request: no protocol version",
            ),
            (b"{garbage", true, "bad request: not JSON"),
        ] {
            let got = Incoming::parse(raw);
            assert_eq!(matches!(got, Incoming::Versioned(_)), versioned, "{got:?}");
            let msg = refusal(&got);
            assert!(msg.contains(needle), "{needle} in {msg}");
            if !needle.contains("version 7") {
                assert!(msg.contains("understands: status"), "{msg}");
            } else {
                assert!(msg.contains("daemon is older"), "{msg}");
            }
        }
        let mut longest = vec![b' '; MAX_REQUEST];
        longest[..6].copy_from_slice(b"status");
        longest.push(b'\n');
        assert_eq!(
            Incoming::parse(&longest),
            Incoming::Legacy(Ok(Request::Status))
        );
        let too_long = vec![b'x'; MAX_REQUEST + 1];
        assert!(refusal(&Incoming::parse(&too_long)).contains("longer than"));
    }
}
