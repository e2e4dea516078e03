//! remote_scan
