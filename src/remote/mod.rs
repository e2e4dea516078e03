//! The remote storage layer: everything cloudmount knows about a server goes through [`Remote`].
//!
//! Implementations:
//! - [`webdav::WebDavRemote`]: RFC 4918 over reqwest + quick-xml (Basic and Digest auth).
//! - [`mem::MemRemote`]: an in-memory fake with the same semantics, for unit tests.
//! - [`faulty::FaultyRemote`]: wraps any `Remote` and injects errors, latency and cut streams.
//!
//! Invariants every implementation keeps (the contract suite in `tests/contract.rs` checks them):
//! - Paths are [`RemotePath`]s: decoded names, never percent-encoded text. Encoding happens in
//!   exactly one place (`RemotePath::to_url`).
//! - `read_range` yields exactly the bytes of the asked range (fewer only at end of file), and only
//!   from the version named by `expect`, if given; otherwise it fails with
//!   [`RemoteError::VersionChanged`]. Two versions are never mixed in one read.
//! - `put` never leaves the server's previous copy deleted or truncated when it fails.
//! - Errors are typed ([`RemoteError`]); only [`RemoteError::is_transient`] errors may be retried.

pub mod etag;
pub mod faulty;
pub mod mem;
pub mod path;
pub mod throttle;
pub mod version;
pub mod watched;
pub mod webdav;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use etag::ETag;
pub use path::RemotePath;

/// A stream of body chunks, as read from or written to the server.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RemoteError>> + Send + 'static>>;

/// Whether a remote entry is a file or a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
}

/// Metadata of one remote entry, as reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full path of the entry below the remote's base.
    pub path: RemotePath,
    pub kind: EntryKind,
    /// Size in bytes (0 for collections).
    pub size: u64,
    /// Last modification time, when the server reports one.
    pub mtime: Option<SystemTime>,
    /// Version tag, normalised; `None` when the server reports none.
    pub etag: Option<ETag>,
    pub content_type: Option<String>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    /// The last path segment ("" for the root).
    pub fn name(&self) -> &str {
        self.path.name()
    }
}

/// A directory and its direct children.
#[derive(Debug, Clone)]
pub struct Listing {
    pub dir: Entry,
    pub children: Vec<Entry>,
}

/// A fingerprint of a collection's listing: the SHA-256 of the server's reply as it came (the
/// WebDAV client), or of the listed entries (the default). Two equal digests of the same path
/// are the same listing; a digest says nothing across implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListingDigest(pub [u8; 32]);

impl ListingDigest {
    /// The digest of a server's listing reply as it came from `url`.
    pub fn of_reply(url: &str, reply: &[u8]) -> ListingDigest {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(url.as_bytes());
        h.update([0]);
        h.update(reply);
        ListingDigest(h.finalize().into())
    }

    /// The digest of a listing's entries (the collection's own included).
    pub fn of_listing(l: &Listing) -> ListingDigest {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for e in std::iter::once(&l.dir).chain(&l.children) {
            let path = e.path.as_str();
            h.update((path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update([u8::from(e.is_dir())]);
            h.update(e.size.to_le_bytes());
            let mtime = e
                .mtime
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(-1, |d| d.as_nanos() as i128);
            h.update(mtime.to_le_bytes());
            let tag = e
                .etag
                .as_ref()
                .map(|t| t.header_value())
                .unwrap_or_default();
            h.update((tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            let ct = e.content_type.as_deref().unwrap_or("");
            h.update((ct.len() as u64).to_le_bytes());
            h.update(ct.as_bytes());
        }
        ListingDigest(h.finalize().into())
    }
}

/// The answer of [`Remote::list_unless`].
#[derive(Debug, Clone)]
pub enum MaybeListing {
    /// The listing has the digest the caller knew: not parsed again.
    Unchanged,
    /// A listing other than the one the caller knew, and its digest.
    Listed(Listing, ListingDigest),
}

/// Storage quota (RFC 4331). Either figure may be unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub used: Option<u64>,
    pub available: Option<u64>,
}

/// A byte range to read: `len == None` means "to the end of the file".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: Option<u64>,
}

impl ByteRange {
    pub fn new(start: u64, len: u64) -> Self {
        ByteRange {
            start,
            len: Some(len),
        }
    }
    pub fn from(start: u64) -> Self {
        ByteRange { start, len: None }
    }
    pub fn whole() -> Self {
        ByteRange {
            start: 0,
            len: None,
        }
    }
    /// Exclusive end, if bounded.
    pub fn end(&self) -> Option<u64> {
        self.len.map(|l| self.start.saturating_add(l))
    }
}

/// The answer to a ranged read: the version it came from and a stream of exactly the asked bytes
/// (shorter only at end of file).
pub struct ReadResponse {
    /// Version of the content; `None` when the server gives no ETag.
    pub etag: Option<ETag>,
    /// Total size of the file when the server said it (Content-Range or Content-Length of a 200).
    pub total_size: Option<u64>,
    pub body: ByteStream,
}

impl ReadResponse {
    /// Reads the whole body into memory. For tests and small files.
    pub async fn bytes(self) -> Result<Bytes, RemoteError> {
        use futures_util::StreamExt;
        let mut out = bytes::BytesMut::new();
        let mut body = self.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }
}

impl fmt::Debug for ReadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadResponse")
            .field("etag", &self.etag)
            .field("total_size", &self.total_size)
            .finish_non_exhaustive()
    }
}

/// A producer of a fresh body stream; called once per attempt, so bodies can be re-sent (after a
/// Digest `stale=true` challenge, for instance) without buffering them in memory.
pub type StreamFactory = Arc<dyn Fn() -> ByteStream + Send + Sync>;

/// The body of a PUT. Every variant can be replayed: a body is never sent twice from a consumed
/// stream.
#[derive(Clone)]
pub enum PutBody {
    /// In-memory content.
    Bytes(Bytes),
    /// A local file, streamed from disk; `len` is sent as Content-Length and checked.
    File { path: PathBuf, len: u64 },
    /// A stream of exactly `len` bytes made anew for each attempt.
    Stream { len: u64, make: StreamFactory },
}

impl PutBody {
    pub fn len(&self) -> u64 {
        match self {
            PutBody::Bytes(b) => b.len() as u64,
            PutBody::File { len, .. } | PutBody::Stream { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a fresh stream of the body's bytes.
    pub fn open(&self) -> ByteStream {
        use futures_util::StreamExt;
        match self {
            PutBody::Bytes(b) => {
                let b = b.clone();
                Box::pin(futures_util::stream::once(async move { Ok(b) }))
            }
            PutBody::File { path, len } => {
                let path = path.clone();
                let len = *len;
                let fut = async move {
                    let file = tokio::fs::File::open(&path)
                        .await
                        .map_err(RemoteError::Io)?;
                    Ok::<_, RemoteError>(file)
                };
                let s = futures_util::stream::once(fut).flat_map(move |res| match res {
                    Ok(file) => {
                        use tokio::io::AsyncReadExt;
                        let reader =
                            tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
                        reader.map(|r| r.map_err(RemoteError::Io)).boxed()
                    }
                    Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
                });
                Box::pin(s)
            }
            PutBody::Stream { make, .. } => make(),
        }
    }
}

impl fmt::Debug for PutBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutBody::Bytes(b) => write!(f, "PutBody::Bytes({} bytes)", b.len()),
            PutBody::File { path, len } => write!(f, "PutBody::File({}, {len})", path.display()),
            PutBody::Stream { len, .. } => write!(f, "PutBody::Stream({len})"),
        }
    }
}

impl From<Bytes> for PutBody {
    fn from(b: Bytes) -> Self {
        PutBody::Bytes(b)
    }
}
impl From<Vec<u8>> for PutBody {
    fn from(b: Vec<u8>) -> Self {
        PutBody::Bytes(Bytes::from(b))
    }
}
impl From<&'static [u8]> for PutBody {
    fn from(b: &'static [u8]) -> Self {
        PutBody::Bytes(Bytes::from_static(b))
    }
}

/// Precondition of a PUT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PutCondition {
    /// Write whatever is there.
    #[default]
    None,
    /// Only if the current version is this one (`If-Match`).
    IfMatch(ETag),
    /// Only if nothing exists at the path (`If-None-Match: *`).
    IfNoneMatch,
}

/// The result of a successful PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The version the server now holds, when it could be learned.
    pub etag: Option<ETag>,
}

/// Typed errors of the remote layer. The errno mapping lives in the vfs layer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("authentication refused by {url} (HTTP {status}): check user and password")]
    Auth { url: String, status: u16 },
    #[error("permission denied by the server for {url} (HTTP 403)")]
    Forbidden { url: String },
    #[error("not found: {url}")]
    NotFound { url: String },
    #[error("parent collection missing for {url} (HTTP 409)")]
    MissingParent { url: String },
    #[error("already exists: {url}")]
    AlreadyExists { url: String },
    #[error("precondition failed for {url}: the server copy changed (HTTP 412)")]
    PreconditionFailed { url: String },
    #[error("{url} is locked (HTTP 423)")]
    Locked { url: String },
    #[error("insufficient storage on the server for {url} (HTTP 507)")]
    InsufficientStorage { url: String },
    #[error("{url} changed while reading: expected version {expected}, server has {actual}")]
    VersionChanged {
        url: String,
        expected: ETag,
        actual: String,
    },
    #[error("{url} is a collection, not a file")]
    IsADirectory { url: String },
    #[error("{url} is a file, not a collection")]
    NotADirectory { url: String },
    #[error("temporary failure for {method} {url}: {reason}")]
    Transient {
        method: String,
        url: String,
        reason: String,
    },
    #[error("unexpected HTTP {status} for {method} {url}")]
    Status {
        method: String,
        url: String,
        status: u16,
    },
    #[error("bad response to {method} {url}: {reason}")]
    BadResponse {
        method: String,
        url: String,
        reason: String,
    },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("local I/O error: {0}")]
    Io(#[source] std::io::Error),
}

impl RemoteError {
    /// The error for an HTTP status. The one mapping of statuses to errors, used by the WebDAV
    /// client and by the fault injector alike.
    pub fn from_status(method: &str, url: &str, status: u16) -> RemoteError {
        let url = url.to_string();
        match status {
            401 => RemoteError::Auth { url, status },
            403 => RemoteError::Forbidden { url },
            404 | 410 => RemoteError::NotFound { url },
            409 => RemoteError::MissingParent { url },
            412 => RemoteError::PreconditionFailed { url },
            423 => RemoteError::Locked { url },
            507 => RemoteError::InsufficientStorage { url },
            // 501 (method not implemented) and 505 (version not supported) say what the server
            // is, not how it is doing: asking again will not help.
            408 | 429 | 500 | 502..=504 | 506..=599 => RemoteError::Transient {
                method: method.to_string(),
                url,
                reason: format!("HTTP {status}"),
            },
            status => RemoteError::Status {
                method: method.to_string(),
                url,
                status,
            },
        }
    }

    /// Transient errors (5xx, timeouts, connection failures) may succeed when tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Transient { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }
}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// A remote file tree. All paths are relative to the remote's base collection.
///
/// Collection semantics follow WebDAV: `delete` of a collection removes it with its contents;
/// `mkdir` needs the parent to exist ([`RemoteError::MissingParent`] otherwise) and fails with
/// [`RemoteError::AlreadyExists`] when something is there.
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// Metadata of one entry (file or collection).
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry>;

    /// A collection and its direct children. Fails with `NotADirectory` on a file.
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing>;

    /// [`list`](Self::list), unless the listing's digest is `known`: then
    /// [`MaybeListing::Unchanged`], and the reply is not parsed (the WebDAV client compares
    /// the digest of the reply's bytes first). For a poller that asks the same collections
    /// again and again, most of them unchanged. Errors as `list`.
    async fn list_unless(
        &self,
        path: &RemotePath,
        known: Option<&ListingDigest>,
    ) -> RemoteResult<MaybeListing> {
        let listing = self.list(path).await?;
        let digest = ListingDigest::of_listing(&listing);
        Ok(if known == Some(&digest) {
            MaybeListing::Unchanged
        } else {
            MaybeListing::Listed(listing, digest)
        })
    }

    /// Reads `range` of a file; with `expect`, only from that version.
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse>;

    /// Writes a whole file, under `cond`.
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome>;

    /// Writes a whole file whose version the caller will not use — a temporary upload that is
    /// moved into place next. Like an unconditional [`put`](Self::put), without learning the
    /// version afterwards (a server whose PUT answer has no ETag is not asked for it: one
    /// request less per file).
    async fn put_unversioned(&self, path: &RemotePath, body: PutBody) -> RemoteResult<()> {
        self.put(path, body, PutCondition::None).await.map(|_| ())
    }

    /// Creates a collection.
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()>;

    /// Deletes a file, or a collection with everything below it.
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()>;

    /// Moves `from` to `to`; with `overwrite == false` an existing `to` gives `AlreadyExists`.
    async fn rename(&self, from: &RemotePath, to: &RemotePath, overwrite: bool)
        -> RemoteResult<()>;

    /// Copies `from` to `to`; with `overwrite == false` an existing `to` gives `AlreadyExists`.
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()>;

    /// Storage quota of the account (or of the base collection).
    async fn quota(&self) -> RemoteResult<Quota>;
}

#[async_trait]
impl<R: Remote + ?Sized> Remote for Arc<R> {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        (**self).stat(path).await
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        (**self).list(path).await
    }
    async fn list_unless(
        &self,
        path: &RemotePath,
        known: Option<&ListingDigest>,
    ) -> RemoteResult<MaybeListing> {
        (**self).list_unless(path, known).await
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        (**self).read_range(path, range, expect).await
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        (**self).put(path, body, cond).await
    }
    async fn put_unversioned(&self, path: &RemotePath, body: PutBody) -> RemoteResult<()> {
        (**self).put_unversioned(path, body).await
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        (**self).mkdir(path).await
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        (**self).delete(path).await
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        (**self).rename(from, to, overwrite).await
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        (**self).copy(from, to, overwrite).await
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        (**self).quota().await
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteError;

    #[test]
    fn every_status_maps_to_its_typed_error() {
        let e = |s| RemoteError::from_status("PUT", "http://h/x", s);
        assert!(matches!(e(401), RemoteError::Auth { status: 401, .. }));
        assert!(matches!(e(403), RemoteError::Forbidden { .. }));
        assert!(matches!(e(404), RemoteError::NotFound { .. }));
        assert!(matches!(e(410), RemoteError::NotFound { .. }));
        assert!(matches!(e(409), RemoteError::MissingParent { .. }));
        assert!(matches!(e(412), RemoteError::PreconditionFailed { .. }));
        assert!(matches!(e(423), RemoteError::Locked { .. }));
        assert!(matches!(e(507), RemoteError::InsufficientStorage { .. }));
        assert!(e(507).to_string().contains("507"));
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(e(s).is_transient(), "{s}");
        }
        // A server that does not implement the method was reached: not a passing failure.
        assert!(matches!(e(501), RemoteError::Status { status: 501, .. }));
        assert!(!e(505).is_transient());
        let other = e(418);
        assert!(matches!(other, RemoteError::Status { status: 418, .. }));
        assert!(other.to_string().contains("http://h/x"));
    }
}
