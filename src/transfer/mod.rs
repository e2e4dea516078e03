//! Sending files to the server, shared by the mount's write-back queue and the sync folders.
//!
//! The callers decide *what* to send and what a refusal means for them (the mount keeps its
//! version as a conflict copy on the server; a sync folder keeps both versions locally); this
//! module does the sending the same tested way for both:
//! - [`upload`]: one upload job — to a temporary name and MOVEd into place, or one conditional
//!   PUT — checked against the version it replaces, never placed when the local file changed
//!   meanwhile, falling back to a PUT in place when the server is too full for two copies;
//! - [`temp`]: the hidden names of uploads in progress, and whose they are;
//! - [`body`]: request bodies that count what they send;
//! - [`probe`]: what the server holds now, whether it is exactly our bytes, and folders made
//!   with their parents;
//! - [`conflict`]: the names of conflict copies, for both;
//! - [`space`]: one pause of the whole account's uploads while the server is full, probed and
//!   resumed by itself.
//!
//! Retries and back-off stay with the callers, which know what waits: the write-back queue
//! retries a record with back-off kept in `meta.db`, a sync run is retried by its schedule.

pub mod body;
pub mod conflict;
pub mod probe;
pub mod space;
pub mod temp;
pub mod upload;

pub use upload::{discard, upload, Expect, Placed, Unchanged, UploadJob, Via};
