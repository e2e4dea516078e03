//! cloudmount: mount a WebDAV cloud account as a local drive.
//!
//! Layering (each module uses only those below it): `remote` (the server protocol, behind the
//! [`remote::Remote`] trait) and `server` (the embedded WebDAV server for `serve`, the demo and
//! tests); `meta` (the persistent metadata store, SQLite) and `cache` (the on-demand block cache,
//! whose index lives in the metadata store). See `DESIGN.md`-style notes in each module's docs.

pub mod cache;
pub mod meta;
pub mod remote;
