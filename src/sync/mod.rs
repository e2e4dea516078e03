//! Sync folders: a local folder kept mirrored with a folder on the server, bidirectionally or
//! upload-only, immediately or on a schedule. It lives beside the vfs and never goes through
//! FUSE: it talks to the server through [`crate::remote::Remote`] and to the local disk directly.
//!
//! One sync of one folder (see [`engine`]):
//! 1. [`local`] scans the local folder (skipping what [`exclude`] says), [`remote_scan`] lists
//!    the server folder;
//! 2. [`plan`] compares each side with its own last synced state from the [`journal`] and
//!    asks [`decide`] — a pure function of (base, local, remote, mode) — what to do per path,
//!    then detects local renames and applies the safety guards (a missing root, mass deletes);
//! 3. [`apply`] carries the actions out: conditional uploads, atomic downloads, deletes to the
//!    [`trash`], conflict copies, and records each done action in the journal at once, so an
//!    interrupted sync resumes without false conflicts.
//!
//! Around it: [`folder`] (a folder's stable identity and settings), [`store`] (the folders
//! and settings of a profile, on disk), [`schedule`] (when scheduled folders run), [`watch`]
//! (inotify, debounced), [`poll`] (the cheap look at the server between runs: unchanged
//! listings left unparsed, the folder's ETag alone where the server propagates directory
//! ETags) and [`service`] (the per-profile loop the daemon runs and the control requests it
//! answers).

pub mod account;
pub mod apply;
pub mod computer;
pub mod decide;
pub mod engine;
pub mod exclude;
pub mod folder;
pub mod journal;
pub mod local;
pub mod plan;
pub mod poll;
pub mod registry;
pub mod remote_scan;
pub mod report;
pub mod schedule;
pub mod service;
pub mod state;
pub mod store;
pub mod trash;
pub mod watch;

pub use folder::{FolderId, FolderSpec, Mode, Schedule};
pub use state::{Base, Kind, LocalMeta, RemoteMeta};
