//! The control socket: how `cloudmount status` and `cloudmount unmount` talk to a running
//! daemon.
//!
//! The daemon listens on a Unix socket next to its state file
//! ([`crate::daemon::state::state_file`]), `<runtime>/<same stem>.sock`, mode 0600 in the
//! private (0700) runtime directory. The protocol is one request per connection: the client
//! writes one line (`status\n`), the daemon answers one line of JSON and closes the connection.
//! `status` answers the [`VfsStatus`] object; anything else answers `{"error": "..."}`.
//!
//! [`serve`] runs the server from any `Fn() -> VfsStatus` (the daemon passes `Vfs::status`, the
//! tests a fake); [`query_status`] is the client.

pub mod report;

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::daemon::state;
use crate::fuse::mounts;
use crate::vfs::status::VfsStatus;

/// The one request this daemon understands.
pub const STATUS_REQUEST: &str = "status";
/// Longest request line the server reads.
const MAX_REQUEST: u64 = 1024;
/// Longest answer line the client reads (a long error or conflict list stays far below).
const MAX_ANSWER: u64 = 64 << 20;
/// How long either side waits for the other.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// What went wrong talking to a daemon, or starting the server. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    #[error("{} is not a cloudmount mount (it is {fs_type})", path.display())]
    NotCloudmount { path: PathBuf, fs_type: String },
    #[error("cannot use {}: {source}", path.display())]
    MountPointAccess { path: PathBuf, source: io::Error },
    #[error("{}", no_daemon_message(mountpoint.as_deref(), socket, source))]
    NoDaemon {
        /// The mount point asked about, when the socket was found from one.
        mountpoint: Option<PathBuf>,
        socket: PathBuf,
        source: io::Error,
    },
    #[error("the daemon at {} did not answer within {} s", socket.display(), after.as_secs())]
    Timeout { socket: PathBuf, after: Duration },
    #[error("unreadable answer from the daemon at {}: {reason}", socket.display())]
    Protocol { socket: PathBuf, reason: String },
    #[error("the daemon at {} refused the request: {message}", socket.display())]
    Refused { socket: PathBuf, message: String },
    #[error("cannot listen on the control socket {}: {source}", path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error("another cloudmount daemon already answers on {}", .0.display())]
    InUse(PathBuf),
}

/// The control socket of the mount at `mountpoint` (absolute, canonical): the state file's
/// name with `.sock` instead of `.pid`. Its readable part is shortened when the whole path
/// would not fit in a socket address (the hash that ends the name keeps it unique).
pub fn socket_path(runtime_dir: &Path, mountpoint: &Path) -> PathBuf {
    let state = state::state_file(runtime_dir, mountpoint);
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let full = runtime_dir.join(format!("{stem}.sock"));
    let len = full.as_os_str().len();
    if len <= SUN_PATH_MAX {
        return full;
    }
    // `<readable>-<hash>`: drop characters from the end of `<readable>` (ASCII, see
    // `sanitize_name`), keeping at least the hash.
    let (readable, hash) = stem.rsplit_once('-').unwrap_or(("", stem.as_str()));
    let keep = readable.len().saturating_sub(len - SUN_PATH_MAX);
    let readable = readable.get(..keep).unwrap_or("").trim_end_matches('-');
    if readable.is_empty() {
        runtime_dir.join(format!("{hash}.sock"))
    } else {
        runtime_dir.join(format!("{readable}-{hash}.sock"))
    }
}

/// The canonical mount point of the cloudmount mount at `path`, the name its daemon's files
/// are keyed by. Fails when nothing, or something else, is mounted there. Like
/// `cloudmount unmount`, a dead mount (its daemon gone) keeps the name given.
pub fn resolve_mount(path: &Path) -> Result<PathBuf, ControlError> {
    let abs = mounts::absolute_mount_path(path)
        .map_err(|_| ControlError::NotMounted(path.to_path_buf()))?;
    let mp = abs.canonicalize().unwrap_or(abs);
    let entry = mounts::mount_at(&mp)
        .map_err(|source| ControlError::MountPointAccess {
            path: mp.clone(),
            source,
        })?
        .ok_or_else(|| ControlError::NotMounted(mp.clone()))?;
    if !entry.is_cloudmount() {
        return Err(ControlError::NotCloudmount {
            path: mp,
            fs_type: entry.fs_type,
        });
    }
    Ok(mp)
}

/// A daemon's answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    pub status: VfsStatus,
    /// The JSON object as the daemon sent it (one line, without the newline).
    pub json: String,
}

/// Asks the daemon of the cloudmount mount at `mountpoint` for its status.
pub async fn query_status(
    runtime_dir: &Path,
    mountpoint: &Path,
) -> Result<VfsStatus, ControlError> {
    query(runtime_dir, mountpoint).await.map(|a| a.status)
}

/// Like [`query_status`], with the JSON text as the daemon sent it.
pub async fn query(runtime_dir: &Path, mountpoint: &Path) -> Result<StatusAnswer, ControlError> {
    let mp = resolve_mount(mountpoint)?;
    let socket = socket_path(runtime_dir, &mp);
    request(&socket, Some(mp), IO_TIMEOUT).await
}

/// Asks the daemon listening at `socket` for its status.
pub async fn request_status(socket: &Path) -> Result<VfsStatus, ControlError> {
    request(socket, None, IO_TIMEOUT).await.map(|a| a.status)
}

async fn request(
    socket: &Path,
    mountpoint: Option<PathBuf>,
    timeout: Duration,
) -> Result<StatusAnswer, ControlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::NoDaemon {
            mountpoint,
            socket: socket.to_path_buf(),
            source,
        })?;
    let line = tokio::time::timeout(timeout, exchange(stream, STATUS_REQUEST))
        .await
        .map_err(|_| ControlError::Timeout {
            socket: socket.to_path_buf(),
            after: timeout,
        })?
        .map_err(|e| ControlError::Protocol {
            socket: socket.to_path_buf(),
            reason: e.to_string(),
        })?;
    let status = parse_answer(&line, socket)?;
    Ok(StatusAnswer {
        status,
        json: line.trim_end().to_string(),
    })
}

fn no_daemon_message(mountpoint: Option<&Path>, socket: &Path, source: &io::Error) -> String {
    let reason = match source.kind() {
        io::ErrorKind::NotFound => "no socket there".to_string(),
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => source.to_string(),
    };
    let whose = mountpoint.map_or_else(String::new, |m| format!(" for {}", m.display()));
    format!(
        "no cloudmount daemon answers{whose} at {} ({reason}): it has stopped, or it is an \
         older version without a status socket",
        socket.display()
    )
}

/// Sends one request line and reads the one answer line.
async fn exchange(mut stream: UnixStream, request: &str) -> io::Result<String> {
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    stream.flush().await?;
    let mut line = String::new();
    BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_line(&mut line)
        .await?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        ));
    }
    if !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer is cut short",
        ));
    }
    Ok(line)
}

fn parse_answer(line: &str, socket: &Path) -> Result<VfsStatus, ControlError> {
    let protocol = |reason: String| ControlError::Protocol {
        socket: socket.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| protocol(format!("not JSON: {e}")))?;
    if let Some(err) = value.get("error") {
        return Err(ControlError::Refused {
            socket: socket.to_path_buf(),
            message: err.as_str().map_or_else(|| err.to_string(), str::to_owned),
        });
    }
    serde_json::from_value(value).map_err(|e| protocol(format!("not a status: {e}")))
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

/// Starts serving `status` on a Unix socket at `path` (mode 0600; its directory must exist
/// and should be private). A stale socket file there (no process answering) is replaced; one
/// that answers is left alone ([`ControlError::InUse`]). Must be called within a tokio
/// runtime. `status` runs on the blocking thread pool, once per `status` request.
pub fn serve<F>(path: &Path, status: F) -> Result<ControlServer, ControlError>
where
    F: Fn() -> VfsStatus + Send + Sync + 'static,
{
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
    let status: StatusFn = Arc::new(status);
    let task = tokio::spawn(accept_loop(listener, status));
    tracing::debug!(socket = %path.display(), "control socket listening");
    Ok(ControlServer {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        task,
    })
}

type StatusFn = Arc<dyn Fn() -> VfsStatus + Send + Sync>;

async fn accept_loop(listener: UnixListener, status: StatusFn) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let status = status.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(IO_TIMEOUT, answer(stream, status)).await {
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
async fn answer(stream: UnixStream, status: StatusFn) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read)
        .take(MAX_REQUEST)
        .read_line(&mut line)
        .await;
    let reply = match n {
        Ok(_) => match line.trim() {
            STATUS_REQUEST => {
                let snapshot = tokio::task::spawn_blocking(move || status())
                    .await
                    .map_err(io::Error::other)?;
                serde_json::to_string(&snapshot).map_err(io::Error::other)?
            }
            "" => error_line("empty request; this daemon understands: status"),
            other => error_line(&format!(
                "unknown request {:?}; this daemon understands: status",
                truncate(other, 64)
            )),
        },
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            error_line("the request is not UTF-8; this daemon understands: status")
        }
        Err(e) => return Err(e),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

fn error_line(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::status::{CacheStatus, Connection, FileProblem, QueueStatus};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn fake_status(files: u64) -> VfsStatus {
        VfsStatus {
            connection: Connection::Online,
            last_error: None,
            queue: QueueStatus {
                files,
                bytes: files * 1000,
                in_flight: 1,
                in_flight_bytes: 1000,
                paused: Some("server out of space".into()),
            },
            errors: vec![FileProblem {
                path: "Cloud Drive/a.txt".into(),
                reason: "connection refused".into(),
                attempts: 4,
            }],
            conflicts: Vec::new(),
            quota: None,
            cache: CacheStatus {
                used_bytes: 5,
                budget_bytes: 10 << 30,
                dirty_bytes: files * 1000,
            },
            kept_aside: None,
            other_areas: Vec::new(),
        }
    }

    /// Sends `request` raw and returns the raw answer.
    async fn raw(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_status_as_one_json_line_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let server = serve(&path, move || {
            fake_status(c.fetch_add(1, Ordering::SeqCst) + 3)
        })
        .expect("serve");
        assert_eq!(server.path(), path);

        let got = request_status(&path).await.expect("status");
        assert_eq!(got, fake_status(3));
        // The snapshot is taken per request.
        let got = request_status(&path).await.expect("status");
        assert_eq!(got.queue.files, 4);

        // On the wire: exactly one line, the JSON object, then the connection closes.
        let text = raw(&path, b"status\n").await;
        assert!(text.ends_with('\n'), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["queue"]["files"], 5);
        assert_eq!(v["connection"], "online");
        assert_eq!(v["cache"]["budget_bytes"], 10u64 << 30);
        // A request without the newline (client closed its side) is still understood.
        let text = raw(&path, b"status").await;
        assert_eq!(
            serde_json::from_str::<VfsStatus>(&text)
                .unwrap()
                .queue
                .files,
            6
        );
    }

    #[tokio::test]
    async fn unknown_request_gets_a_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let _server = serve(&path, || fake_status(0)).unwrap();
        for (request, needle) in [
            (&b"reboot\n"[..], "unknown request \\\"reboot\\\""),
            (b"\n", "empty request"),
            (b"\xff\xfe\n", "not UTF-8"),
        ] {
            let text = raw(&path, request).await;
            assert_eq!(text.lines().count(), 1, "{text:?}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let msg = v["error"].as_str().expect("an error string");
            assert!(text.contains(needle), "{needle} in {text}");
            assert!(msg.contains("understands: status"), "{msg}");
            assert_eq!(v.as_object().unwrap().len(), 1, "{text}");
        }
        // A very long request is cut, and answered. (The server closes with part of it unread,
        // so the read after the answer may see a reset instead of the end.)
        let mut s = UnixStream::connect(&path).await.unwrap();
        let writer = tokio::spawn(async move {
            let _ = s.write_all(&[b'x'; 100_000]).await;
            s
        });
        let s = writer.await.unwrap();
        let mut text = String::new();
        BufReader::new(s).read_line(&mut text).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"].as_str().unwrap().contains("unknown request"));
        assert!(text.len() < 300, "{}", text.len());
    }

    #[tokio::test]
    async fn error_answers_become_refused_errors() {
        let line = r#"{"error": "nope"}"#;
        let e = parse_answer(line, Path::new("/s")).unwrap_err();
        assert!(matches!(e, ControlError::Refused { ref message, .. } if message == "nope"));
        let e = parse_answer("{\"queue\": 1}\n", Path::new("/s")).unwrap_err();
        assert!(matches!(e, ControlError::Protocol { .. }), "{e}");
        let e = parse_answer("garbage\n", Path::new("/s")).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
    }

    #[tokio::test]
    async fn socket_is_private_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let server = serve(&path, || fake_status(0)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No temporary file left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["m.sock"]);
        server.shutdown();
        assert!(!path.exists(), "socket removed");
        let e = request_status(&path).await.unwrap_err();
        assert!(matches!(e, ControlError::NoDaemon { .. }), "{e}");
        assert!(e.to_string().contains("m.sock"), "{e}");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        // A socket file nobody listens on, as a killed daemon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let e = request_status(&path).await.unwrap_err();
        assert!(matches!(e, ControlError::NoDaemon { .. }), "{e}");
        let first = serve(&path, || fake_status(1)).expect("stale socket replaced");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 1);

        // A second server while the first answers: refused, and the first still answers.
        let e = serve(&path, || fake_status(2)).unwrap_err();
        assert!(matches!(e, ControlError::InUse(_)), "{e}");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 1);

        // A file another process put there after us is not removed by our drop.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other").unwrap();
        drop(first);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other");
    }

    #[tokio::test]
    async fn silent_or_hung_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // Closes without answering.
        let path = dir.path().join("quiet.sock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 16];
                let _ = s.read(&mut b).await;
            }
        });
        let e = request_status(&path).await.unwrap_err();
        assert!(e.to_string().contains("without answering"), "{e}");
    }

    #[tokio::test]
    async fn hung_daemon_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hung.sock");
        let l = UnixListener::bind(&path).unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let e = request(&path, None, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("hung.sock"), "{e}");
    }

    #[test]
    fn socket_sits_beside_the_state_file() {
        let rt = Path::new("/run/user/1000/cloudmount");
        let mp = Path::new("/home/alice/Cloud");
        let state = state::state_file(rt, mp);
        let sock = socket_path(rt, mp);
        assert_eq!(sock, state.with_extension("sock"));

        // A long mount point still gives an address that fits, unique by its hash.
        let long_a = PathBuf::from(format!("/home/alice/{}/a", "x".repeat(200)));
        let long_b = PathBuf::from(format!("/home/alice/{}/b", "x".repeat(200)));
        let (a, b) = (socket_path(rt, &long_a), socket_path(rt, &long_b));
        assert!(a.as_os_str().len() <= SUN_PATH_MAX, "{}", a.display());
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(rt));
        let hash_a = state::state_file(rt, &long_a)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .rsplit_once('-')
            .unwrap()
            .1
            .to_string();
        assert!(
            a.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&format!("-{hash_a}.sock")),
            "{}",
            a.display()
        );
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("home-alice-xxx"));
    }

    #[tokio::test]
    async fn long_socket_paths_bind() {
        // A directory deep enough that the temporary name would not fit, the final one does.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len();
        let pad = SUN_PATH_MAX - base - "/m.sock".len() - 1;
        let sub = dir.path().join("d".repeat(pad));
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("m.sock");
        assert!(path.as_os_str().len() <= SUN_PATH_MAX);
        let _server = serve(&path, || fake_status(7)).expect("serve");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 7);
    }

    #[test]
    fn not_mounted_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve_mount(dir.path()).unwrap_err();
        assert!(matches!(e, ControlError::NotMounted(_)), "{e}");
        assert!(e.to_string().contains("is not mounted"), "{e}");
        let e = resolve_mount(Path::new("/proc")).unwrap_err();
        assert!(
            matches!(e, ControlError::NotCloudmount { ref fs_type, .. } if fs_type == "proc"),
            "{e}"
        );
    }
}
