//! cloudmount: mount a WebDAV cloud account as a local drive.
//!
//! Layering (each module uses only those below it):
//! - `vfs` — the filesystem logic (inodes, areas, handles, read and write paths), free of fuser;
//! - `cache` (block cache of file contents) and `meta` (persistent metadata, SQLite);
//! - `remote` — the server protocol behind the [`remote::Remote`] trait (WebDAV, a fake, a
//!   fault injector);
//! - `server` — the embedded WebDAV server behind `cloudmount serve`, the demo and tests;
//! - `size` — human sizes (`512M`, `10G`).

pub mod cache;
pub mod meta;
pub mod remote;
pub mod server;
pub mod size;
pub mod vfs;
