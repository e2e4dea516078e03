//! WebDAV client.
