//! Persistent metadata store (placeholder until the store lands).
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct MetaError(pub String);
