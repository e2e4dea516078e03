//! The control socket: how `cloudmount status` and `cloudmount unmount` talk to a running
//! daemon, and later pins and sync.
//!
//! The daemon listens on a Unix socket beside its state file ([`crate::instance`]), mode 0600
//! in the private (0700) runtime directory. One request per connection: the client writes one
//! line, the daemon answers one line of JSON and closes the connection.
//!
//! - [`protocol`]: the typed messages ([`Request`], [`Response`]), their versioned JSON form,
//!   and the legacy form (`status` and a bare status object) kept for mixed versions;
//! - [`server`]: listen, accept, read, answer; what a request does is the daemon's
//!   [`ControlHandler`], so a new verb is a new [`Request`] variant and a match arm in the
//!   handler, without touching the transport;
//! - [`client`]: ask a daemon ([`query`], [`call`]), falling back to the legacy form for a
//!   daemon older than the versioned protocol;
//! - [`report`]: the status as people read it.

pub mod client;
pub mod protocol;
pub mod report;
pub mod server;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::{
    call, folder_states, query, query_status, request_status, send_now, Answer, StatusAnswer,
};
pub use protocol::{FolderStates, Request, Response, PROTOCOL_VERSION};
pub use server::{serve, ControlHandler, ControlServer};

use crate::instance::MountLookupError;

/// How long either side waits for the other.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to a daemon, or starting the server. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The path given is not a cloudmount mount.
    #[error(transparent)]
    Mount(#[from] MountLookupError),
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
    #[error(
        "the daemon at {} answers in control protocol version {theirs}, newer than this \
         command's ({PROTOCOL_VERSION}): use the cloudmount command of the daemon's version",
        socket.display()
    )]
    Version { socket: PathBuf, theirs: u64 },
    #[error(
        "the daemon at {} is older than this command and does not know `{verb}`; unmount and \
         mount again to run the new version",
        socket.display()
    )]
    Outdated { socket: PathBuf, verb: &'static str },
    #[error("cannot listen on the control socket {}: {source}", path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error("another cloudmount daemon already answers on {}", .0.display())]
    InUse(PathBuf),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::status::{CacheStatus, Connection, FileProblem, QueueStatus, VfsStatus};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};

    fn fake_status(files: u64) -> VfsStatus {
        VfsStatus {
            connection: Connection::Online,
            last_error: None,
            queue: QueueStatus {
                files,
                bytes: files * 1000,
                in_flight: 1,
                in_flight_bytes: 1000,
                in_flight_sent: 0,
                paused: Some("server out of space".into()),
                waiting_for_server: 0,
                namespace_ops: 0,
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
                pinned_bytes: 0,
            },
            kept_aside: None,
            other_areas: Vec::new(),
            pins: Vec::new(),
            bandwidth: Default::default(),
            notices: Vec::new(),
        }
    }

    /// A handler answering `status` with `fake_status(files)`.
    fn fixed(files: u64) -> impl ControlHandler {
        move |req: Request| match req {
            Request::Status => Response::Status(Box::new(fake_status(files))),
            other => Response::error(format!("{} is not answered here", other.verb())),
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

    /// A daemon as it was before the versioned protocol: `status` gets the bare object,
    /// anything else `{"error": "unknown request …"}`. Counts the connections.
    fn legacy_daemon(path: &Path, files: u64) -> Arc<AtomicU64> {
        let listener = UnixListener::bind(path).unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let _ = BufReader::new(read).take(1024).read_line(&mut line).await;
                let reply = match line.trim() {
                    "status" => serde_json::to_string(&fake_status(files)).unwrap(),
                    other => serde_json::json!({
                        "error": format!(
                            "unknown request {:?}; this daemon understands: status",
                            protocol::truncate(other, 64)
                        )
                    })
                    .to_string(),
                };
                let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
        connections
    }

    #[tokio::test]
    async fn answers_status_as_one_json_line_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let server = serve(&path, move |req: Request| {
            assert_eq!(req, Request::Status);
            Response::Status(Box::new(fake_status(c.fetch_add(1, Ordering::SeqCst) + 3)))
        })
        .expect("serve");
        assert_eq!(server.path(), path);

        let got = request_status(&path).await.expect("status");
        assert_eq!(got, fake_status(3));
        // The snapshot is taken per request.
        let got = request_status(&path).await.expect("status");
        assert_eq!(got.queue.files, 4);

        // On the wire: exactly one line, the versioned answer, then the connection closes.
        let text = raw(&path, b"{\"v\":1,\"request\":\"status\"}\n").await;
        assert!(text.ends_with('\n'), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["v"], PROTOCOL_VERSION);
        assert_eq!(v["status"]["queue"]["files"], 5);
        assert_eq!(v["status"]["connection"], "online");
        assert_eq!(v["status"]["cache"]["budget_bytes"], 10u64 << 30);
        assert_eq!(v.as_object().unwrap().len(), 2, "{text}");
    }

    /// An older `cloudmount` asking a newer daemon: the plain line gets the bare object.
    #[tokio::test]
    async fn legacy_requests_get_legacy_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let _server = serve(&path, fixed(5)).unwrap();
        let text = raw(&path, b"status\n").await;
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert_eq!(
            serde_json::from_str::<VfsStatus>(&text).unwrap(),
            fake_status(5)
        );
        assert_eq!(
            text,
            format!("{}\n", serde_json::to_string(&fake_status(5)).unwrap())
        );
        // A request without the newline (client closed its side) is still understood.
        let text = raw(&path, b"status").await;
        assert_eq!(
            serde_json::from_str::<VfsStatus>(&text)
                .unwrap()
                .queue
                .files,
            5
        );
        // Legacy errors keep their legacy form: a string under "error", nothing else.
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
    }

    /// A newer `cloudmount` asking an older daemon: refused, then asked again the old way.
    #[tokio::test]
    async fn client_falls_back_for_a_legacy_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sock");
        let connections = legacy_daemon(&path, 7);
        let answer = client::status_at(&path, None, IO_TIMEOUT)
            .await
            .expect("status");
        assert_eq!(answer.status, fake_status(7));
        // `--json` shows the object as that daemon sent it.
        assert_eq!(answer.json, serde_json::to_string(&fake_status(7)).unwrap());
        assert_eq!(connections.load(Ordering::SeqCst), 2, "asked twice");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 7);
    }

    #[tokio::test]
    async fn versioned_refusals_are_errors_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let _server = serve(&path, move |_req: Request| {
            c.fetch_add(1, Ordering::SeqCst);
            Response::error("unknown request, from the handler")
        })
        .unwrap();
        let e = request_status(&path).await.unwrap_err();
        assert!(
            matches!(e, ControlError::Refused { ref message, .. } if message == "unknown request, from the handler"),
            "{e}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no legacy retry");
    }

    #[tokio::test]
    async fn unknown_verbs_and_newer_versions_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let _server = serve(&path, fixed(0)).unwrap();
        let error_of = |text: &str| -> String {
            assert_eq!(text.lines().count(), 1, "{text:?}");
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["v"], PROTOCOL_VERSION, "{text}");
            v["error"]["message"]
                .as_str()
                .expect("a message")
                .to_string()
        };
        // A verb of a later build (e.g. sharing links) to this daemon.
        let msg = error_of(&raw(&path, b"{\"v\":1,\"request\":\"share\",\"path\":\"/a\"}\n").await);
        assert!(
            msg.contains("unknown request \"share\"") && msg.contains("understands: status"),
            "{msg}"
        );
        // A request in a newer version of the protocol.
        let msg = error_of(&raw(&path, b"{\"v\":2,\"request\":\"status\"}\n").await);
        assert!(
            msg.contains("version 2") && msg.contains("daemon is older"),
            "{msg}"
        );
        // Garbage that looks like JSON.
        let msg = error_of(&raw(&path, b"{\"v\":1,\"request\":\n").await);
        assert!(msg.contains("bad request: not JSON"), "{msg}");
        let msg = error_of(&raw(&path, b"{\"request\":\"status\"}\n").await);
        assert!(msg.contains("no protocol version"), "{msg}");
    }

    /// A daemon answering in a newer protocol than this client's.
    #[tokio::test]
    async fn newer_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"{\"v\":2,\"status\":{\"new\":true}}\n").await;
            }
        });
        let e = request_status(&path).await.unwrap_err();
        assert!(matches!(e, ControlError::Version { theirs: 2, .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("version 2") && msg.contains("newer than this command's (1)"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn oversize_requests_are_refused_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let _server = serve(&path, fixed(0)).unwrap();
        // The server closes with part of it unread, so the read after the answer may see a
        // reset instead of the end.
        for first in [b'x', b'{'] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            let writer = tokio::spawn(async move {
                let mut big = vec![b'x'; 1 << 20];
                big[0] = first;
                let _ = s.write_all(&big).await;
                s
            });
            let s = writer.await.unwrap();
            let mut text = String::new();
            BufReader::new(s).read_line(&mut text).await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let msg = match first {
                b'{' => v["error"]["message"].as_str(),
                _ => v["error"].as_str(),
            }
            .unwrap_or_else(|| panic!("{text}"));
            assert!(msg.contains("longer than"), "{msg}");
            assert!(
                text.len() < 512,
                "the answer does not echo the request: {}",
                text.len()
            );
        }
        // The server still answers afterwards.
        assert_eq!(request_status(&path).await.unwrap().queue.files, 0);
    }

    #[tokio::test]
    async fn garbage_answers_are_protocol_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (i, answer) in [&b"garbage\n"[..], b"{\"v\":1,\"surprise\":1}\n", b"[]\n"]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("g{i}.sock"));
            let l = UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut b = [0u8; 64];
                    let _ = s.read(&mut b).await;
                    let _ = s.write_all(answer).await;
                }
            });
            let e = request_status(&path).await.unwrap_err();
            assert!(matches!(e, ControlError::Protocol { .. }), "{e}");
        }
    }

    #[tokio::test]
    async fn socket_is_private_and_removed_on_drop() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let server = serve(&path, fixed(0)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
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
        let first = serve(&path, fixed(1)).expect("stale socket replaced");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 1);

        // A second server while the first answers: refused, and the first still answers.
        let e = serve(&path, fixed(2)).unwrap_err();
        assert!(matches!(e, ControlError::InUse(_)), "{e}");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 1);

        // A file another process put there after us is not removed by our drop.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other").unwrap();
        drop(first);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other");
    }

    #[tokio::test]
    async fn silent_daemon_is_a_clear_error() {
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
        let e = client::status_at(&path, None, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("hung.sock"), "{e}");
    }

    #[tokio::test]
    async fn long_socket_paths_bind() {
        use crate::instance::SUN_PATH_MAX;
        // A directory deep enough that the temporary name would not fit, the final one does.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len();
        let pad = SUN_PATH_MAX - base - "/m.sock".len() - 1;
        let sub = dir.path().join("d".repeat(pad));
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("m.sock");
        assert!(path.as_os_str().len() <= SUN_PATH_MAX);
        let _server = serve(&path, fixed(7)).expect("serve");
        assert_eq!(request_status(&path).await.unwrap().queue.files, 7);
    }

    #[tokio::test]
    async fn not_mounted_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = query_status(dir.path(), dir.path()).await.unwrap_err();
        assert!(
            matches!(e, ControlError::Mount(MountLookupError::NotMounted(_))),
            "{e}"
        );
        assert!(e.to_string().contains("is not mounted"), "{e}");
    }
}
