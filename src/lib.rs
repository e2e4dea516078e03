//! cloudmount: mount a WebDAV cloud account as a local drive.
//!
//! Layering (each module uses only those below it):
//! - `daemon` — wires config, remotes, vfs and the mount together (`mount`, `unmount`, `demo`);
//! - `control` — the daemon's control socket: typed requests and answers, server, client;
//! - `instance` — one mount's runtime files (state file, control socket) and whether its
//!   daemon lives; how a path is found to be a cloudmount mount;
//! - `config` — TOML profiles, XDG paths, passwords: plain data;
//! - `fuse` — the fuser adapter over `vfs` (the only module that imports fuser) and kernel
//!   mount mechanics;
//! - `vfs` — the filesystem logic (inodes, areas, handles, read and write paths), free of fuser;
//! - `cache` (block cache of file contents) and `meta` (persistent metadata, SQLite);
//! - `health` — whether the server answers, fed by every request (`remote::watched`), read
//!   by everything that talks to the server;
//! - `remote` — the server protocol behind the [`remote::Remote`] trait (WebDAV, a fake, a
//!   fault injector);
//! - `server` — the embedded WebDAV server behind `cloudmount serve`, the demo and tests;
//! - `size` — human sizes (`512M`, `10G`); `localtime` — the local clock (C library);
//! - `sync` — sync folders: local folders mirrored with the server, beside the vfs;
//! - `transfer` — sending a file to the server without destroying its copy, and conflict
//!   names: one upload path for the vfs's write-back and the sync folders;
//! - `integrate` — the file managers' extensions, menus and bookmarks (`cloudmount integrate`).

pub mod atomic_file;
pub mod cache;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fuse;
pub mod health;
pub mod instance;
pub mod integrate;
pub mod localtime;
pub mod meta;
pub mod remote;
pub mod server;
pub mod size;
pub mod sync;
pub mod transfer;
pub mod vfs;
