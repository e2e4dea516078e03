//! The command's side of the control socket: connect, send one request, read one answer.
//!
//! A daemon older than the versioned protocol refuses a versioned request with
//! `{"error": "unknown request …"}`; [`call`] then asks again in the legacy form, which such a
//! daemon understands for `status` (see [`super::protocol`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{self, DecodeError, FolderStates, Request, Response, LEGACY_STATUS};
use super::{ControlError, IO_TIMEOUT};
use crate::instance::Instance;
use crate::vfs::status::VfsStatus;

/// Longest answer line the client reads (a long error or conflict list stays far below).
const MAX_ANSWER: u64 = 64 << 20;

/// A daemon's answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    pub status: VfsStatus,
    /// The status as one line of JSON, without the newline: the object as a legacy daemon
    /// sent it, or as this build writes the status a versioned daemon sent.
    pub json: String,
}

/// Asks the daemon of `instance` for its status.
pub async fn query(instance: &Instance) -> Result<StatusAnswer, ControlError> {
    status_at(
        instance.socket(),
        Some(instance.mountpoint().to_path_buf()),
        IO_TIMEOUT,
    )
    .await
}

/// Asks the daemon of the cloudmount mount at `path` to start now the uploads that wait for the
/// write-back delay ([`Request::SendNow`]).
pub async fn send_now(runtime_dir: &Path, path: &Path) -> Result<(), ControlError> {
    let instance = Instance::find(runtime_dir, path)?;
    call(
        instance.socket(),
        Some(instance.mountpoint().to_path_buf()),
        &Request::SendNow,
        IO_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// Asks the daemon of the cloudmount mount at `path` for its status.
pub async fn query_status(runtime_dir: &Path, path: &Path) -> Result<VfsStatus, ControlError> {
    let instance = Instance::find(runtime_dir, path)?;
    query(&instance).await.map(|a| a.status)
}

/// Asks the daemon listening at `socket` for its status.
pub async fn request_status(socket: &Path) -> Result<VfsStatus, ControlError> {
    status_at(socket, None, IO_TIMEOUT).await.map(|a| a.status)
}

pub(crate) async fn status_at(
    socket: &Path,
    mountpoint: Option<PathBuf>,
    timeout: Duration,
) -> Result<StatusAnswer, ControlError> {
    let answer = call(socket, mountpoint, &Request::Status, timeout).await?;
    match answer.response {
        Response::Status(status) => {
            let json = match answer.legacy_line {
                Some(line) => line.trim_end().to_string(),
                None => serde_json::to_string(&status).map_err(|e| ControlError::Protocol {
                    socket: socket.to_path_buf(),
                    reason: e.to_string(),
                })?,
            };
            Ok(StatusAnswer {
                status: *status,
                json,
            })
        }
        other => Err(unexpected(socket, &other)),
    }
}

/// Asks the daemon of `instance` for the states of the entries of the folder `rel` (below the
/// mount point, `/`-separated).
pub async fn folder_states(instance: &Instance, rel: &str) -> Result<FolderStates, ControlError> {
    let socket = instance.socket();
    let request = Request::States {
        path: rel.to_string(),
    };
    let answer = call(
        socket,
        Some(instance.mountpoint().to_path_buf()),
        &request,
        IO_TIMEOUT,
    )
    .await?;
    match answer.response {
        Response::States(states) => Ok(states),
        other => Err(unexpected(socket, &other)),
    }
}

/// A daemon's answer, other than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub response: Response,
    /// The line as sent, when the daemon answered in the legacy form.
    pub legacy_line: Option<String>,
}

/// Sends `request` to the daemon listening at `socket` and reads its answer; an error answer
/// is [`ControlError::Refused`]. `mountpoint` names the mount in errors. Falls back to the
/// legacy form for a daemon that does not know the versioned one.
pub async fn call(
    socket: &Path,
    mountpoint: Option<PathBuf>,
    request: &Request,
    timeout: Duration,
) -> Result<Answer, ControlError> {
    let connect = || async {
        UnixStream::connect(socket)
            .await
            .map_err(|source| ControlError::NoDaemon {
                mountpoint: mountpoint.clone(),
                socket: socket.to_path_buf(),
                source,
            })
    };
    let io_err = |e: io::Error| ControlError::Protocol {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
    };
    let conversation = async {
        let line = exchange(connect().await?, &protocol::encode_request(request))
            .await
            .map_err(io_err)?;
        if !protocol::is_legacy_refusal(&line) {
            let response = protocol::decode_response(&line).map_err(|e| match e {
                DecodeError::Newer(v) => ControlError::Version {
                    socket: socket.to_path_buf(),
                    theirs: v,
                },
                e => ControlError::Protocol {
                    socket: socket.to_path_buf(),
                    reason: e.to_string(),
                },
            })?;
            return refused_or(socket, response, None);
        }
        tracing::debug!(socket = %socket.display(), "daemon without the versioned protocol: asking in the legacy form");
        if *request != Request::Status {
            return Err(ControlError::Outdated {
                socket: socket.to_path_buf(),
                verb: request.verb(),
            });
        }
        let line = exchange(connect().await?, &format!("{LEGACY_STATUS}\n"))
            .await
            .map_err(io_err)?;
        let response = protocol::decode_legacy(&line).map_err(|e| ControlError::Protocol {
            socket: socket.to_path_buf(),
            reason: e.to_string(),
        })?;
        refused_or(socket, response, Some(line))
    };
    tokio::time::timeout(timeout, conversation)
        .await
        .map_err(|_| ControlError::Timeout {
            socket: socket.to_path_buf(),
            after: timeout,
        })?
}

fn refused_or(
    socket: &Path,
    response: Response,
    legacy_line: Option<String>,
) -> Result<Answer, ControlError> {
    match response {
        Response::Error { message } => Err(ControlError::Refused {
            socket: socket.to_path_buf(),
            message,
        }),
        response => Ok(Answer {
            response,
            legacy_line,
        }),
    }
}

fn unexpected(socket: &Path, response: &Response) -> ControlError {
    let what = match response {
        Response::Status(_) => "status",
        Response::SyncFolders(_) => "sync folders",
        Response::SyncStarted(_) => "sync started",
        Response::SyncConflicts(_) => "sync conflicts",
        Response::SyncAccount(_) => "sync account",
        Response::SyncFollowing(_) => "sync following",
        Response::Settings(_) => "settings",
        Response::Pinned(_) => "pinned",
        Response::States(_) => "states",
        Response::Done { .. } => "done",
        Response::Error { .. } => "error",
    };
    ControlError::Protocol {
        socket: socket.to_path_buf(),
        reason: format!("unexpected answer: {what}"),
    }
}

/// Sends one request line (with its newline) and reads the one answer line.
async fn exchange(mut stream: UnixStream, request: &str) -> io::Result<String> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut line = String::new();
    let read = BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_line(&mut line)
        .await;
    // A daemon that closes with part of the request unread resets the connection.
    match read {
        Err(e) if !(e.kind() == io::ErrorKind::ConnectionReset && line.is_empty()) => {
            return Err(e)
        }
        _ => {}
    }
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
