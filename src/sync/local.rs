//! The local side: a scan of the folder into [`LocalMeta`](super::state::LocalMeta) per path,
//! and the files that cannot be synced (symlinks, special files, unreadable, names that are not
//! UTF-8) with the reason.
