//! The control protocol's messages and their encoding: one line of JSON each way.
//!
//! A request is an object with the protocol version `v` and the verb in `request`, the verb's
//! fields beside it: `{"v":1,"request":"status"}` (later e.g. `{"v":1,"request":"pin",
//! "path":"…"}`). The answer is an object with `v` and one key naming what it holds:
//! `{"v":1,"status":{…}}` or `{"v":1,"error":{"message":"…"}}`.
//!
//! Versions: `v` is the version of the protocol a message is written in. A new verb, or a new
//! optional field, keeps the version (an older daemon answers an unknown verb with an error
//! naming it); only a change an older reader would misread raises it. A reader refuses a
//! message of a newer version than its own with an error that says which side is older.
//!
//! The legacy protocol (before the versioned one): the client writes the plain line `status`,
//! the daemon answers the bare [`VfsStatus`] object, or `{"error": "…"}` with a string. The
//! daemon still answers it (an older `cloudmount` may ask a newer daemon during an upgrade),
//! and the client falls back to it when a daemon does not know the versioned form (see
//! [`is_legacy_refusal`]). A request line is versioned when it starts with `{`, legacy
//! otherwise; each is answered in its own form.

use serde::{Deserialize, Serialize};

use crate::vfs::status::VfsStatus;

/// The version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The legacy request line (without its newline).
pub const LEGACY_STATUS: &str = "status";

/// What a client asks a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The mount's state: connection, upload queue, errors, conflicts, cache.
    Status,
    /// The sync folders of the profile, with their state (answered by the profile's daemon).
    SyncList,
    /// Adds a sync folder.
    SyncAdd(SyncAdd),
    /// Changes a folder's settings (the fields given).
    SyncSet(SyncSet),
    /// Syncs a folder (or all) now; `confirm` lets a sync paused for too many deletes go on.
    SyncNow {
        folder: Option<String>,
        #[serde(default)]
        confirm: bool,
    },
    SyncPause {
        folder: String,
    },
    SyncResume {
        folder: String,
    },
    /// Stops syncing a folder; deletes nothing, anywhere.
    SyncRemove {
        folder: String,
    },
    /// Conflicts kept as two versions, of one folder or all.
    SyncConflicts {
        folder: Option<String>,
    },
    /// The account's sync folders, as its registry says (read anew when the server answers).
    SyncAccount,
    /// The folders of the profile's other areas (followed and shared folders): the top-level
    /// folders of each, marked when synced here.
    SyncFollowing,
    /// Starts syncing a folder of the account here: `name` is its name, id or server path;
    /// `local` the local folder (absolute; default: the folder's name in the home).
    SyncActivate {
        name: String,
        local: Option<std::path::PathBuf>,
    },
    /// Removes a folder from the account's registry; deletes nothing, anywhere.
    SyncForget {
        name: String,
    },
    /// The settings; with `set`, changes one first.
    Settings {
        set: Option<(String, String)>,
    },
    /// Stops the daemon after the transfers in flight.
    Stop,
    /// Starts now the uploads that wait for the write-back delay (`unmount` asks it before it
    /// waits for the queue). Answered by a mount's daemon, with [`Response::Done`].
    SendNow,
    /// Keeps a file or folder of the mount on this device (`keep`), or stops keeping it.
    /// `path` is below the mount point, `/`-separated.
    Pin {
        path: String,
        keep: bool,
    },
    /// *Free up space*: unpins a file or folder of the mount and drops its cached copies.
    Free {
        path: String,
    },
    /// The state of each entry of a folder of the mount (`path` below the mount point,
    /// `/`-separated; empty for the root), in one answer: what `user.cloudmount.state` says of
    /// each, from what the daemon knows locally (never asking the server).
    States {
        path: String,
    },
    /// The daemon's bandwidth limits (bytes per second, 0: none); with a value, that limit is
    /// changed first, live. Answered by every daemon, with [`Response::Settings`]: the limits
    /// in effect as `upload_limit` and `download_limit`, in bytes per second.
    Bandwidth {
        #[serde(default)]
        upload: Option<u64>,
        #[serde(default)]
        download: Option<u64>,
    },
}

/// A folder to add (see `cloudmount sync add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAdd {
    /// Absolute local path.
    pub local: std::path::PathBuf,
    /// Server path below the profile's URL; default: the folder's name under `sync_root`.
    pub remote: Option<String>,
    pub mode: crate::sync::Mode,
    pub schedule: crate::sync::Schedule,
    #[serde(default)]
    pub keep_deleted: bool,
    /// The profile's area (by name; `None`: the main one). A read-only area's folder is
    /// download-only whatever `mode` says.
    #[serde(default)]
    pub area: Option<String>,
}

/// Changes to a folder's settings; `None` keeps a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSet {
    /// The folder: its local path or its id.
    pub folder: String,
    pub mode: Option<crate::sync::Mode>,
    pub schedule: Option<crate::sync::Schedule>,
    pub keep_deleted: Option<bool>,
    pub delete_limit_percent: Option<u8>,
}

impl Request {
    /// The verbs this build understands, as they are spelled on the wire.
    pub const VERBS: &'static [&'static str] = &[
        "status",
        "sync_list",
        "sync_add",
        "sync_set",
        "sync_now",
        "sync_pause",
        "sync_resume",
        "sync_remove",
        "sync_conflicts",
        "sync_account",
        "sync_following",
        "sync_activate",
        "sync_forget",
        "settings",
        "stop",
        "send_now",
        "pin",
        "free",
        "states",
        "bandwidth",
    ];

    /// The verb, as spelled on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::SyncList => "sync_list",
            Request::SyncAdd(_) => "sync_add",
            Request::SyncSet(_) => "sync_set",
            Request::SyncNow { .. } => "sync_now",
            Request::SyncPause { .. } => "sync_pause",
            Request::SyncResume { .. } => "sync_resume",
            Request::SyncRemove { .. } => "sync_remove",
            Request::SyncConflicts { .. } => "sync_conflicts",
            Request::SyncAccount => "sync_account",
            Request::SyncFollowing => "sync_following",
            Request::SyncActivate { .. } => "sync_activate",
            Request::SyncForget { .. } => "sync_forget",
            Request::Settings { .. } => "settings",
            Request::Stop => "stop",
            Request::SendNow => "send_now",
            Request::Pin { .. } => "pin",
            Request::Free { .. } => "free",
            Request::States { .. } => "states",
            Request::Bandwidth { .. } => "bandwidth",
        }
    }
}

/// What a daemon answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<VfsStatus>),
    /// The sync folders and their state.
    SyncFolders(Vec<crate::sync::report::FolderReport>),
    /// `sync now` was taken: per folder id, the number of the run that covers the request
    /// (wait until the folder's `runs` reaches it).
    SyncStarted(Vec<(String, u64)>),
    /// Conflicts kept by the sync folders.
    SyncConflicts(Vec<crate::sync::report::ConflictReport>),
    /// The account's sync folders.
    SyncAccount(Box<crate::sync::report::AccountReport>),
    /// The folders of the profile's followed and shared areas.
    SyncFollowing(Vec<crate::sync::report::FollowedFolder>),
    /// The settings, by key.
    Settings(std::collections::BTreeMap<String, String>),
    /// What `pin` or `free` did.
    Pinned(crate::vfs::pins::PinAnswer),
    /// The states of a folder's entries.
    States(FolderStates),
    /// Done; `message` says what, in one line.
    Done {
        message: String,
    },
    /// The request was not carried out; `message` says why, in one line for the user.
    Error {
        message: String,
    },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// The answer to [`Request::States`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStates {
    /// The folder, below the mount point.
    pub path: String,
    /// The folder's own state.
    pub state: String,
    /// Each entry's name and its state, the word of `user.cloudmount.state` (`online`,
    /// `cached`, `pinned`, ...). A word is a string, not a closed set: a newer daemon may say
    /// one this build does not know. An entry the daemon could not tell is left out (ask its
    /// extended attribute).
    pub entries: std::collections::BTreeMap<String, String>,
}

/// A message with its protocol version.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// Why a line could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no protocol version (\"v\")")]
    NoVersion,
    /// Written in a newer version of the protocol than this build's.
    #[error("protocol version {0} is newer than this program's ({PROTOCOL_VERSION})")]
    Newer(u64),
    #[error("unknown request {0:?}")]
    UnknownVerb(String),
    #[error("no request verb (\"request\")")]
    NoVerb,
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
}

/// Encodes a request as its line (with the newline).
pub fn encode_request(request: &Request) -> String {
    encode(request)
}

/// Encodes an answer as its line (with the newline).
pub fn encode_response(response: &Response) -> String {
    encode(response)
}

fn encode<T: Serialize>(body: &T) -> String {
    let envelope = Envelope {
        v: PROTOCOL_VERSION,
        body,
    };
    // Serialising these types cannot fail: no maps with non-string keys, no foreign
    // Serialize impls that refuse.
    let mut line = serde_json::to_string(&envelope).unwrap_or_else(|e| {
        serde_json::json!({ "v": PROTOCOL_VERSION, "error": { "message": e.to_string() } })
            .to_string()
    });
    line.push('\n');
    line
}

/// Reads a versioned request line (the daemon's side).
pub fn decode_request(line: &str) -> Result<Request, DecodeError> {
    let value = versioned_object(line)?;
    serde_json::from_value::<Envelope<Request>>(value.clone())
        .map(|e| e.body)
        .map_err(|e| match value.get("request") {
            None => DecodeError::NoVerb,
            Some(serde_json::Value::String(verb)) if !Request::VERBS.contains(&verb.as_str()) => {
                DecodeError::UnknownVerb(truncate(verb, 64))
            }
            Some(verb) => DecodeError::Malformed {
                what: format!("{} request", truncate(&verb.to_string(), 64)),
                reason: e.to_string(),
            },
        })
}

/// Reads a versioned answer line (the client's side).
pub fn decode_response(line: &str) -> Result<Response, DecodeError> {
    let value = versioned_object(line)?;
    serde_json::from_value::<Envelope<Response>>(value)
        .map(|e| e.body)
        .map_err(|e| DecodeError::Malformed {
            what: "answer".into(),
            reason: e.to_string(),
        })
}

/// Parses a line as a JSON object with a version this build can read.
fn versioned_object(line: &str) -> Result<serde_json::Value, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::NotObject);
    }
    match value.get("v").and_then(serde_json::Value::as_u64) {
        None => Err(DecodeError::NoVersion),
        Some(v) if v > u64::from(PROTOCOL_VERSION) => Err(DecodeError::Newer(v)),
        Some(_) => Ok(value),
    }
}

/// The legacy answer to a line (a [`VfsStatus`] object, or `{"error": "…"}`).
pub fn encode_legacy(response: &Response) -> String {
    let mut line = match response {
        Response::Status(s) => serde_json::to_string(s)
            .unwrap_or_else(|e| legacy_error_object(&format!("status not encodable: {e}"))),
        Response::Error { message } => legacy_error_object(message),
        _ => legacy_error_object("not a status"),
    };
    line.push('\n');
    line
}

fn legacy_error_object(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Reads a legacy answer: a [`VfsStatus`], or `{"error": "…"}` as [`Response::Error`].
pub fn decode_legacy(line: &str) -> Result<Response, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if let Some(err) = value.get("error") {
        let message = err.as_str().map_or_else(|| err.to_string(), str::to_owned);
        return Ok(Response::Error { message });
    }
    serde_json::from_value(value)
        .map(|s| Response::Status(Box::new(s)))
        .map_err(|e| DecodeError::Malformed {
            what: "status".into(),
            reason: e.to_string(),
        })
}

/// Whether `line` is how a daemon that only knows the legacy protocol refuses a versioned
/// request: `{"error": "unknown request …"}`, with no version.
pub fn is_legacy_refusal(line: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    value.get("v").is_none()
        && value
            .get("error")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|m| m.starts_with("unknown request"))
}

/// `s` cut to `max_chars` characters, with `...` when cut.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::status::{CacheStatus, Connection, QueueStatus};

    fn status() -> VfsStatus {
        VfsStatus {
            connection: Connection::Online,
            last_error: None,
            queue: QueueStatus {
                files: 2,
                ..QueueStatus::default()
            },
            errors: Vec::new(),
            conflicts: Vec::new(),
            quota: None,
            cache: CacheStatus::default(),
            kept_aside: None,
            other_areas: Vec::new(),
            pins: Vec::new(),
            bandwidth: Default::default(),
            notices: Vec::new(),
        }
    }

    #[test]
    fn requests_on_the_wire() {
        let line = encode_request(&Request::Status);
        assert_eq!(line, "{\"v\":1,\"request\":\"status\"}\n");
        assert_eq!(decode_request(&line), Ok(Request::Status));
        // Field order and unknown fields do not matter (a newer client may add optional ones).
        assert_eq!(
            decode_request(r#"{"request":"status","v":1,"since":"later"}"#),
            Ok(Request::Status)
        );
        // Every verb goes through the wire and back, and VERBS names exactly the verbs.
        let samples = [
            Request::Status,
            Request::SyncList,
            Request::SyncAdd(SyncAdd {
                local: "/home/u/Music".into(),
                remote: None,
                mode: crate::sync::Mode::UploadOnly,
                schedule: crate::sync::Schedule::Weekly,
                keep_deleted: true,
                area: Some("Following".into()),
            }),
            Request::SyncSet(SyncSet {
                folder: "/home/u/Music".into(),
                mode: None,
                schedule: Some(crate::sync::Schedule::Daily),
                keep_deleted: None,
                delete_limit_percent: Some(30),
            }),
            Request::SyncNow {
                folder: None,
                confirm: true,
            },
            Request::SyncPause { folder: "a".into() },
            Request::SyncResume { folder: "a".into() },
            Request::SyncRemove { folder: "a".into() },
            Request::SyncConflicts { folder: None },
            Request::SyncAccount,
            Request::SyncFollowing,
            Request::SyncActivate {
                name: "Projects".into(),
                local: Some("/home/u/Projects".into()),
            },
            Request::SyncForget {
                name: "Projects".into(),
            },
            Request::Settings {
                set: Some(("schedule.time".into(), "03:00".into())),
            },
            Request::Stop,
            Request::SendNow,
            Request::Pin {
                path: "Cloud Drive/Projects".into(),
                keep: true,
            },
            Request::Free {
                path: "Cloud Drive/Videos".into(),
            },
            Request::States {
                path: "Cloud Drive/Photos".into(),
            },
            Request::Bandwidth {
                upload: Some(1 << 20),
                download: None,
            },
        ];
        let verbs: Vec<&str> = samples.iter().map(Request::verb).collect();
        assert_eq!(verbs, Request::VERBS);
        for r in samples {
            let line = encode_request(&r);
            assert!(
                line.contains(&format!("\"request\":\"{}\"", r.verb())),
                "{line}"
            );
            assert_eq!(decode_request(&line), Ok(r));
        }
        // A verb without its fields is malformed, not unknown.
        assert!(matches!(
            decode_request(r#"{"v":1,"request":"sync_add"}"#),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn answers_on_the_wire() {
        let line = encode_response(&Response::Status(Box::new(status())));
        assert!(line.starts_with("{\"v\":1,\"status\":{"), "{line}");
        assert!(line.ends_with("}\n") && line.lines().count() == 1, "{line}");
        assert_eq!(
            decode_response(&line),
            Ok(Response::Status(Box::new(status())))
        );
        let line = encode_response(&Response::error("no such thing"));
        assert_eq!(
            line,
            "{\"v\":1,\"error\":{\"message\":\"no such thing\"}}\n"
        );
        assert_eq!(decode_response(&line), Ok(Response::error("no such thing")));
        // The folder's states: the form the file-manager extensions read
        // (integrations/cloudmount_fm.py).
        let states = Response::States(FolderStates {
            path: "Cloud Drive/Photos".into(),
            state: "pinned".into(),
            entries: [("b.jpg", "pinning"), ("a.jpg", "pinned")]
                .into_iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
        });
        let line = encode_response(&states);
        assert_eq!(
            line,
            "{\"v\":1,\"states\":{\"path\":\"Cloud Drive/Photos\",\"state\":\"pinned\",\
             \"entries\":{\"a.jpg\":\"pinned\",\"b.jpg\":\"pinning\"}}}\n"
        );
        assert_eq!(decode_response(&line), Ok(states));
    }

    #[test]
    fn bad_requests_are_told_apart() {
        let cases: [(&str, DecodeError); 8] = [
            ("status", DecodeError::NotJson(String::new())),
            ("[1,2]", DecodeError::NotObject),
            (r#"{"request":"status"}"#, DecodeError::NoVersion),
            (r#"{"v":"1","request":"status"}"#, DecodeError::NoVersion),
            (r#"{"v":2,"request":"status"}"#, DecodeError::Newer(2)),
            (
                r#"{"v":1,"request":"reboot"}"#,
                DecodeError::UnknownVerb("reboot".into()),
            ),
            (r#"{"v":1}"#, DecodeError::NoVerb),
            (
                r#"{"v":1,"request":7}"#,
                DecodeError::Malformed {
                    what: String::new(),
                    reason: String::new(),
                },
            ),
        ];
        for (line, want) in cases {
            let got = decode_request(line).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{line}: {got}"
            );
            if matches!(want, DecodeError::Newer(_) | DecodeError::UnknownVerb(_)) {
                assert_eq!(got, want);
            }
        }
        assert!(DecodeError::Newer(2)
            .to_string()
            .contains("version 2 is newer than this program's (1)"));
        // A very long unknown verb is cut in the message.
        let long = format!("{{\"v\":1,\"request\":\"{}\"}}", "x".repeat(10_000));
        let e = decode_request(&long).unwrap_err();
        assert!(e.to_string().len() < 100, "{e}");
    }

    #[test]
    fn newer_answers_are_refused() {
        let line = r#"{"v":9,"status":{"whatever":"new"}}"#;
        assert_eq!(decode_response(line), Err(DecodeError::Newer(9)));
        let e = decode_response(r#"{"v":1,"surprise":{}}"#).unwrap_err();
        assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
    }

    #[test]
    fn legacy_form() {
        let line = encode_legacy(&Response::Status(Box::new(status())));
        assert_eq!(
            line,
            format!("{}\n", serde_json::to_string(&status()).unwrap())
        );
        assert_eq!(
            decode_legacy(&line),
            Ok(Response::Status(Box::new(status())))
        );
        let line = encode_legacy(&Response::error("unknown request \"x\""));
        assert_eq!(line, "{\"error\":\"unknown request \\\"x\\\"\"}\n");
        assert_eq!(
            decode_legacy(&line),
            Ok(Response::error("unknown request \"x\""))
        );
        assert!(is_legacy_refusal(&line));
        // A versioned error is not a legacy refusal, nor is another legacy error.
        assert!(!is_legacy_refusal(&encode_response(&Response::error(
            "unknown request \"x\""
        ))));
        assert!(!is_legacy_refusal(&encode_legacy(&Response::error("busy"))));
        assert!(!is_legacy_refusal("garbage"));
        assert!(matches!(
            decode_legacy("{\"queue\": 1}"),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            decode_legacy("nope"),
            Err(DecodeError::NotJson(_))
        ));
    }
}
