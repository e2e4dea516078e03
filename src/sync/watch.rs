//! Local changes seen as they happen: inotify on every directory of a folder, debounced; a
//! queue overflow or running out of watches asks for a full scan.
