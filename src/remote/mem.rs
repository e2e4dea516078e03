//! In-memory fake remote.
