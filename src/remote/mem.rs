//! In-memory fake remote.
//!
//! [`MemRemote`] keeps a tree of collections and files in memory and implements [`Remote`] with
//! the semantics a real WebDAV server (Apache mod_dav) shows, so that one contract suite passes
//! against both. It is cheap to clone: clones share the same tree (tests usually wrap one in an
//! `Arc` anyway).
//!
//! Behaviour worth knowing:
//! - Every write gives the written file a new strong ETag (`mem-<n>`, from a global counter);
//!   collections have ETags too, renewed when a child is added or removed (like a directory's
//!   mtime on disk). A move keeps the ETags of what it moves; a copy gives new ones.
//! - Modification times have whole-second resolution, as `getlastmodified` has.
//! - `put` reads the whole body before changing anything: a body of the wrong length or a body
//!   stream that fails leaves the previous content untouched. Preconditions and quota are checked
//!   before the body is read and again, atomically, when it is stored.
//! - A range starting at or past the end of the file gives an empty body.
//! - `rename`/`copy` where the destination is the source or inside it, or (with overwrite) where
//!   the destination contains the source, fail with [`RemoteError::InvalidPath`] (Apache answers
//!   403 to these). Deleting, moving or copying the root, or onto the root, fails the same way.
//! - Errors name the path as `mem:/a/b`.
//! - [`MemRemote::set_etag_report`] makes it answer like servers that list no ETags (nginx's
//!   PROPFIND: `stat` still has them, as a HEAD gives them) or give none at all.
//! - [`MemRemote::counters`] counts the calls of each operation (failed ones included) and the
//!   body bytes `read_range` served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{
    ByteRange, ETag, Entry, EntryKind, Listing, PutBody, PutCondition, PutOutcome, Quota,
    ReadResponse, Remote, RemoteError, RemotePath, RemoteResult,
};

/// Size of the chunks a `read_range` body is cut into.
const READ_CHUNK: usize = 64 * 1024;

/// Calls made to a [`MemRemote`], per operation, plus the body bytes `read_range` sent out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemCounters {
    pub stat: u64,
    pub list: u64,
    pub read_range: u64,
    pub put: u64,
    pub mkdir: u64,
    pub delete: u64,
    pub rename: u64,
    pub copy: u64,
    pub quota: u64,
    /// Body bytes of the `read_range` responses (counted when the response is made, as a server
    /// sends them, whether or not the caller reads the whole stream).
    pub bytes_read: u64,
}

/// Which answers of a [`MemRemote`] carry ETags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ETagReport {
    /// Every answer (as Apache and rclone give them).
    #[default]
    Everywhere,
    /// None in listings, as nginx's PROPFIND; `stat`, reads and PUTs have them (the WebDAV
    /// client's `stat` asks HEAD when PROPFIND has none).
    NotInListings,
    /// None anywhere: only size and mtime tell versions apart.
    Nowhere,
}

#[derive(Debug, Clone)]
enum Content {
    Dir,
    File(Bytes),
}

#[derive(Debug, Clone)]
struct Node {
    content: Content,
    mtime: SystemTime,
    etag: ETag,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir)
    }
    fn size(&self) -> u64 {
        match &self.content {
            Content::Dir => 0,
            Content::File(b) => b.len() as u64,
        }
    }
}

#[derive(Debug)]
struct State {
    /// Every entry by its path string (`""` is the root). Byte order keeps a subtree contiguous:
    /// everything below `a` sorts between `a/` and `a0`.
    nodes: BTreeMap<String, Node>,
    next_tag: u64,
    quota_limit: Option<u64>,
    counters: MemCounters,
    /// Like some real servers (rclone's): a PUT whose body breaks leaves the target empty.
    truncate_on_failed_put: bool,
    etags: ETagReport,
}

impl State {
    fn new(quota_limit: Option<u64>) -> Self {
        let mut s = State {
            nodes: BTreeMap::new(),
            next_tag: 1,
            quota_limit,
            counters: MemCounters::default(),
            truncate_on_failed_put: false,
            etags: ETagReport::Everywhere,
        };
        let root = s.new_node(Content::Dir);
        s.nodes.insert(String::new(), root);
        s
    }

    fn new_etag(&mut self) -> ETag {
        let n = self.next_tag;
        self.next_tag += 1;
        ETag::strong(format!("mem-{n}"))
    }

    fn new_node(&mut self, content: Content) -> Node {
        Node {
            content,
            mtime: now(),
            etag: self.new_etag(),
        }
    }

    fn get(&self, path: &RemotePath) -> Option<&Node> {
        self.nodes.get(path.as_str())
    }

    /// Renews the ETag and mtime of a collection whose members changed.
    fn touch_dir(&mut self, dir: &RemotePath) {
        let etag = self.new_etag();
        if let Some(node) = self.nodes.get_mut(dir.as_str()) {
            if node.is_dir() {
                node.etag = etag;
                node.mtime = now();
            }
        }
    }

    fn touch_parent(&mut self, path: &RemotePath) {
        if let Some(parent) = path.parent() {
            self.touch_dir(&parent);
        }
    }

    /// The keys of `path` and everything below it.
    fn subtree_keys(&self, path: &RemotePath) -> Vec<String> {
        if path.is_root() {
            return self.nodes.keys().cloned().collect();
        }
        let p = path.as_str();
        let mut keys = Vec::new();
        if self.nodes.contains_key(p) {
            keys.push(p.to_string());
        }
        let lo = format!("{p}/");
        let hi = format!("{p}0");
        keys.extend(self.nodes.range(lo..hi).map(|(k, _)| k.clone()));
        keys
    }

    /// Bytes held by the files at and below `path`.
    fn subtree_size(&self, path: &RemotePath) -> u64 {
        self.subtree_keys(path)
            .iter()
            .map(|k| self.nodes[k].size())
            .sum()
    }

    fn used(&self) -> u64 {
        self.nodes.values().map(Node::size).sum()
    }

    /// Fails when growing the stored bytes by `added` and shrinking them by `removed` would pass
    /// the quota.
    fn check_quota(&self, path: &RemotePath, added: u64, removed: u64) -> RemoteResult<()> {
        if let Some(limit) = self.quota_limit {
            let after = self.used().saturating_sub(removed).saturating_add(added);
            if after > limit {
                return Err(RemoteError::InsufficientStorage { url: url(path) });
            }
        }
        Ok(())
    }

    /// Fails unless the parent of `path` is an existing collection.
    fn check_parent(&self, path: &RemotePath) -> RemoteResult<()> {
        let parent = path.parent().unwrap_or_else(RemotePath::root);
        match self.get(&parent) {
            Some(n) if n.is_dir() => Ok(()),
            _ => Err(RemoteError::MissingParent { url: url(path) }),
        }
    }

    fn entry(&self, path: &RemotePath) -> RemoteResult<Entry> {
        let node = self
            .get(path)
            .ok_or_else(|| RemoteError::NotFound { url: url(path) })?;
        Ok(entry_of(path.clone(), node))
    }

    /// Every check of a PUT of `len` bytes, against the current state.
    fn check_put(&self, path: &RemotePath, cond: &PutCondition, len: u64) -> RemoteResult<()> {
        let existing = self.get(path);
        match cond {
            PutCondition::None => {}
            PutCondition::IfMatch(want) => match existing {
                Some(n) if &n.etag == want => {}
                _ => return Err(RemoteError::PreconditionFailed { url: url(path) }),
            },
            PutCondition::IfNoneMatch => {
                if existing.is_some() {
                    return Err(RemoteError::PreconditionFailed { url: url(path) });
                }
            }
        }
        if path.is_root() || existing.is_some_and(Node::is_dir) {
            return Err(RemoteError::IsADirectory { url: url(path) });
        }
        self.check_parent(path)?;
        self.check_quota(path, len, existing.map_or(0, Node::size))
    }

    /// Removes `path` and everything below it; returns whether something was there.
    fn remove_subtree(&mut self, path: &RemotePath) -> bool {
        let keys = self.subtree_keys(path);
        for k in &keys {
            self.nodes.remove(k);
        }
        !keys.is_empty()
    }

    /// Checks common to MOVE and COPY; returns whether the destination exists.
    fn check_move_copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<bool> {
        if from.is_root() || to.is_root() {
            return Err(RemoteError::InvalidPath {
                path: url(if from.is_root() { from } else { to }),
                reason: "cannot move or copy the base collection".into(),
            });
        }
        if self.get(from).is_none() {
            return Err(RemoteError::NotFound { url: url(from) });
        }
        if to.starts_with(from) {
            return Err(RemoteError::InvalidPath {
                path: url(to),
                reason: format!("destination is the source {from} or inside it"),
            });
        }
        let to_exists = self.get(to).is_some();
        if to_exists && !overwrite {
            return Err(RemoteError::AlreadyExists { url: url(to) });
        }
        if to_exists && from.starts_with(to) {
            return Err(RemoteError::InvalidPath {
                path: url(to),
                reason: format!("destination contains the source {from}"),
            });
        }
        self.check_parent(to)?;
        Ok(to_exists)
    }

    /// Creates the missing collections down to `dir` (for the test helpers).
    fn mkdir_all(&mut self, dir: &RemotePath) {
        let mut cur = RemotePath::root();
        for seg in dir.segments() {
            cur = cur
                .join(seg)
                .expect("segments of a valid path are valid names");
            match self.get(&cur) {
                Some(n) if n.is_dir() => {}
                Some(_) => panic!("MemRemote: {cur} is a file, not a collection"),
                None => {
                    let node = self.new_node(Content::Dir);
                    self.nodes.insert(cur.as_str().to_string(), node);
                    self.touch_parent(&cur);
                }
            }
        }
    }
}

/// Current time with whole-second resolution, as WebDAV reports it.
fn now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn url(path: &RemotePath) -> String {
    format!("mem:{path}")
}

fn entry_of(path: RemotePath, node: &Node) -> Entry {
    Entry {
        path,
        kind: if node.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        size: node.size(),
        mtime: Some(node.mtime),
        etag: Some(node.etag.clone()),
        content_type: None,
    }
}

fn key_to_path(key: &str) -> RemotePath {
    RemotePath::new(key).expect("stored keys are valid paths")
}

fn parse(path: &str) -> RemotePath {
    RemotePath::new(path).unwrap_or_else(|e| panic!("MemRemote: bad path {path:?}: {e}"))
}

/// An in-memory WebDAV-like remote for tests. Clones share one tree.
#[derive(Clone)]
pub struct MemRemote {
    state: Arc<Mutex<State>>,
}

impl Default for MemRemote {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("MemRemote")
            .field("entries", &s.nodes.len())
            .field("quota_limit", &s.quota_limit)
            .finish_non_exhaustive()
    }
}

impl MemRemote {
    /// An empty tree (only the root collection), without a quota.
    pub fn new() -> Self {
        MemRemote {
            state: Arc::new(Mutex::new(State::new(None))),
        }
    }

    /// An empty tree whose files may hold at most `limit` bytes in all.
    pub fn with_quota(limit: u64) -> Self {
        MemRemote {
            state: Arc::new(Mutex::new(State::new(Some(limit)))),
        }
    }

    /// Makes a PUT whose body breaks midway truncate its target, as `rclone serve webdav` does:
    /// the server behaviour a careful client must survive.
    pub fn set_truncate_on_failed_put(&self, on: bool) {
        self.lock().truncate_on_failed_put = on;
    }

    /// Sets which answers carry ETags (the tree keeps them all the same: [`MemRemote::etag`]).
    pub fn set_etag_report(&self, report: ETagReport) {
        self.lock().etags = report;
    }

    /// Sets or removes the quota limit. Existing content is kept even above a new limit.
    pub fn set_quota(&self, limit: Option<u64>) {
        self.lock().quota_limit = limit;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a file (`a/b/c`), creating missing parent collections; returns its new ETag.
    /// Ignores the quota and does not count as a call. Panics on an invalid path or when a
    /// collection is in the way.
    pub fn insert_file(&self, path: &str, data: impl Into<Bytes>) -> ETag {
        let path = parse(path);
        assert!(!path.is_root(), "MemRemote: the root is a collection");
        let mut s = self.lock();
        if let Some(parent) = path.parent() {
            s.mkdir_all(&parent);
        }
        if s.get(&path).is_some_and(Node::is_dir) {
            panic!("MemRemote: {path} is a collection");
        }
        let existed = s.get(&path).is_some();
        let node = s.new_node(Content::File(data.into()));
        let etag = node.etag.clone();
        s.nodes.insert(path.as_str().to_string(), node);
        if !existed {
            s.touch_parent(&path);
        }
        etag
    }

    /// Creates a collection and its missing parents. Panics when a file is in the way.
    pub fn insert_dir(&self, path: &str) {
        self.lock().mkdir_all(&parse(path));
    }

    /// The content of a file, or `None` when there is no file there.
    pub fn file_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let path = parse(path);
        match &self.lock().get(&path)?.content {
            Content::File(b) => Some(b.to_vec()),
            Content::Dir => None,
        }
    }

    /// The current ETag of an entry.
    pub fn etag(&self, path: &str) -> Option<ETag> {
        let path = parse(path);
        self.lock().get(&path).map(|n| n.etag.clone())
    }

    /// Whether anything exists at `path`.
    pub fn exists(&self, path: &str) -> bool {
        let path = parse(path);
        self.lock().get(&path).is_some()
    }

    /// Sets the modification time of an entry (the ETag stays); returns false when absent.
    pub fn set_mtime(&self, path: &str, mtime: SystemTime) -> bool {
        let path = parse(path);
        match self.lock().nodes.get_mut(path.as_str()) {
            Some(n) => {
                n.mtime = mtime;
                true
            }
            None => false,
        }
    }

    /// Every path in the tree but the root, sorted, collections with a trailing `/`.
    pub fn paths(&self) -> Vec<String> {
        self.lock()
            .nodes
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, n)| {
                if n.is_dir() {
                    format!("{k}/")
                } else {
                    k.clone()
                }
            })
            .collect()
    }

    /// A snapshot of the call counters.
    pub fn counters(&self) -> MemCounters {
        self.lock().counters
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.lock().counters = MemCounters::default();
    }

    /// Reads a PUT body: exactly `len` bytes, or an error.
    async fn read_body(path: &RemotePath, body: &PutBody) -> RemoteResult<Bytes> {
        let len = body.len();
        let mut stream = body.open();
        let mut buf = BytesMut::with_capacity(usize::try_from(len.min(1 << 20)).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if buf.len() as u64 + chunk.len() as u64 > len {
                return Err(body_len_error(path, len, "more"));
            }
            buf.extend_from_slice(&chunk);
        }
        if (buf.len() as u64) < len {
            return Err(body_len_error(path, len, "fewer"));
        }
        Ok(buf.freeze())
    }
}

fn body_len_error(path: &RemotePath, len: u64, what: &str) -> RemoteError {
    RemoteError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("PUT body for mem:{path} has {what} bytes than its declared length {len}"),
    ))
}

#[async_trait]
impl Remote for MemRemote {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        let mut s = self.lock();
        s.counters.stat += 1;
        let mut e = s.entry(path)?;
        if s.etags == ETagReport::Nowhere {
            e.etag = None;
        }
        Ok(e)
    }

    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        let mut s = self.lock();
        s.counters.list += 1;
        let mut dir = s.entry(path)?;
        if !dir.is_dir() {
            return Err(RemoteError::NotADirectory { url: url(path) });
        }
        let listed = s.etags == ETagReport::Everywhere;
        if !listed {
            dir.etag = None;
        }
        let children = s
            .subtree_keys(path)
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(|k| key_to_path(&k))
            .filter(|p| p.parent().as_ref() == Some(path))
            .map(|p| {
                let node = &s.nodes[p.as_str()];
                let mut e = entry_of(p, node);
                if !listed {
                    e.etag = None;
                }
                e
            })
            .collect();
        Ok(Listing { dir, children })
    }

    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        let mut s = self.lock();
        s.counters.read_range += 1;
        let node = s
            .get(path)
            .ok_or_else(|| RemoteError::NotFound { url: url(path) })?;
        let data = match &node.content {
            Content::Dir => return Err(RemoteError::IsADirectory { url: url(path) }),
            Content::File(b) => b.clone(),
        };
        let etag = node.etag.clone();
        if let Some(want) = expect {
            if want != &etag {
                return Err(RemoteError::VersionChanged {
                    url: url(path),
                    expected: want.clone(),
                    actual: etag.value().to_string(),
                });
            }
        }
        let etag = (s.etags != ETagReport::Nowhere).then_some(etag);
        let total = data.len() as u64;
        let start = range.start.min(total);
        let end = range.end().map_or(total, |e| e.min(total)).max(start);
        let slice = data.slice(start as usize..end as usize);
        s.counters.bytes_read += slice.len() as u64;
        drop(s);
        let chunks: Vec<RemoteResult<Bytes>> = (0..slice.len())
            .step_by(READ_CHUNK)
            .map(|i| Ok(slice.slice(i..(i + READ_CHUNK).min(slice.len()))))
            .collect();
        Ok(ReadResponse {
            etag,
            total_size: Some(total),
            body: Box::pin(futures_util::stream::iter(chunks)),
        })
    }

    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        let len = body.len();
        {
            let mut s = self.lock();
            s.counters.put += 1;
            s.check_put(path, &cond, len)?;
        }
        let data = match Self::read_body(path, &body).await {
            Ok(d) => d,
            Err(e) => {
                let mut s = self.lock();
                if s.truncate_on_failed_put && s.check_put(path, &PutCondition::None, 0).is_ok() {
                    let node = s.new_node(Content::File(Bytes::new()));
                    s.nodes.insert(path.as_str().to_string(), node);
                }
                return Err(e);
            }
        };
        let mut s = self.lock();
        // The tree may have changed while the body was read: check again, then store at once.
        s.check_put(path, &cond, len)?;
        let existed = s.get(path).is_some();
        let node = s.new_node(Content::File(data));
        let etag = node.etag.clone();
        s.nodes.insert(path.as_str().to_string(), node);
        if !existed {
            s.touch_parent(path);
        }
        let etag = (s.etags != ETagReport::Nowhere).then_some(etag);
        Ok(PutOutcome { etag })
    }

    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        let mut s = self.lock();
        s.counters.mkdir += 1;
        if s.get(path).is_some() {
            return Err(RemoteError::AlreadyExists { url: url(path) });
        }
        s.check_parent(path)?;
        let node = s.new_node(Content::Dir);
        s.nodes.insert(path.as_str().to_string(), node);
        s.touch_parent(path);
        Ok(())
    }

    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        let mut s = self.lock();
        s.counters.delete += 1;
        if path.is_root() {
            return Err(RemoteError::InvalidPath {
                path: url(path),
                reason: "the root collection cannot be deleted".into(),
            });
        }
        if !s.remove_subtree(path) {
            return Err(RemoteError::NotFound { url: url(path) });
        }
        s.touch_parent(path);
        Ok(())
    }

    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        let mut s = self.lock();
        s.counters.rename += 1;
        s.check_move_copy(from, to, overwrite)?;
        s.remove_subtree(to);
        let moved: Vec<(String, Node)> = s
            .subtree_keys(from)
            .into_iter()
            .map(|k| {
                let node = s.nodes.remove(&k).expect("key listed above");
                (k, node)
            })
            .collect();
        let from_len = from.as_str().len();
        for (k, node) in moved {
            // `k` is `from` or `from/...`: swap the prefix.
            let new_key = format!("{}{}", to.as_str(), &k[from_len..]);
            s.nodes.insert(new_key, node);
        }
        s.touch_parent(from);
        s.touch_parent(to);
        Ok(())
    }

    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        let mut s = self.lock();
        s.counters.copy += 1;
        let to_exists = s.check_move_copy(from, to, overwrite)?;
        let removed = if to_exists { s.subtree_size(to) } else { 0 };
        s.check_quota(to, s.subtree_size(from), removed)?;
        let copied: Vec<(String, Content)> = s
            .subtree_keys(from)
            .into_iter()
            .map(|k| {
                let content = s.nodes[&k].content.clone();
                (k, content)
            })
            .collect();
        s.remove_subtree(to);
        let from_len = from.as_str().len();
        for (k, content) in copied {
            let new_key = format!("{}{}", to.as_str(), &k[from_len..]);
            let node = s.new_node(content);
            s.nodes.insert(new_key, node);
        }
        s.touch_parent(to);
        Ok(())
    }

    async fn quota(&self) -> RemoteResult<Quota> {
        let mut s = self.lock();
        s.counters.quota += 1;
        let used = s.used();
        Ok(Quota {
            used: Some(used),
            available: s.quota_limit.map(|l| l.saturating_sub(used)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn p(s: &str) -> RemotePath {
        RemotePath::new(s).unwrap()
    }

    async fn read(r: &MemRemote, path: &str, range: ByteRange) -> RemoteResult<Vec<u8>> {
        let resp = r.read_range(&p(path), range, None).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A streamed body that yields `chunks`, then fails when `fail` is set.
    fn stream_body(len: u64, chunks: Vec<&'static [u8]>, fail: bool) -> PutBody {
        PutBody::Stream {
            len,
            make: Arc::new(move || {
                let mut items: Vec<RemoteResult<Bytes>> =
                    chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
                if fail {
                    items.push(Err(RemoteError::Transient {
                        method: "PUT".into(),
                        url: "test".into(),
                        reason: "body broke".into(),
                    }));
                }
                Box::pin(futures_util::stream::iter(items))
            }),
        }
    }

    #[tokio::test]
    async fn root_exists_and_is_empty() {
        let r = MemRemote::new();
        let e = r.stat(&RemotePath::root()).await.unwrap();
        assert!(e.is_dir());
        assert_eq!(e.size, 0);
        assert!(e.etag.is_some());
        let l = r.list(&RemotePath::root()).await.unwrap();
        assert!(l.dir.path.is_root());
        assert!(l.children.is_empty());
    }

    #[tokio::test]
    async fn stat_file_dir_and_missing() {
        let r = MemRemote::new();
        let tag = r.insert_file("a/b.txt", "hello");
        let e = r.stat(&p("a/b.txt")).await.unwrap();
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, 5);
        assert_eq!(e.etag, Some(tag));
        assert_eq!(e.name(), "b.txt");
        assert!(e.mtime.is_some());
        assert!(r.stat(&p("a")).await.unwrap().is_dir());
        assert!(r.stat(&p("nope")).await.unwrap_err().is_not_found());
        // Below a file there is nothing.
        assert!(r.stat(&p("a/b.txt/x")).await.unwrap_err().is_not_found());
        let err = r.stat(&p("nope")).await.unwrap_err();
        assert!(err.to_string().contains("mem:/nope"), "{err}");
    }

    #[tokio::test]
    async fn mtime_has_whole_seconds() {
        let r = MemRemote::new();
        r.insert_file("f", "x");
        let m = r.stat(&p("f")).await.unwrap().mtime.unwrap();
        assert_eq!(m.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 0);
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(r.set_mtime("f", t));
        assert_eq!(r.stat(&p("f")).await.unwrap().mtime, Some(t));
        assert!(!r.set_mtime("g", t));
    }

    #[tokio::test]
    async fn list_gives_direct_children_only() {
        let r = MemRemote::new();
        r.insert_file("d/one", "1");
        r.insert_file("d/two", "22");
        r.insert_file("d/sub/deep", "333");
        r.insert_file("d-sibling", "x");
        r.insert_file("d0", "x");
        let l = r.list(&p("d")).await.unwrap();
        assert_eq!(l.dir.path, p("d"));
        let mut names: Vec<(String, EntryKind, u64)> = l
            .children
            .iter()
            .map(|e| (e.name().to_string(), e.kind, e.size))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            names,
            vec![
                ("one".to_string(), EntryKind::File, 1),
                ("sub".to_string(), EntryKind::Dir, 0),
                ("two".to_string(), EntryKind::File, 2),
            ]
        );
        for c in &l.children {
            assert_eq!(c.path.parent().unwrap(), p("d"));
            assert!(c.etag.is_some());
        }
        let root: Vec<String> = r
            .list(&RemotePath::root())
            .await
            .unwrap()
            .children
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(root.len(), 3, "{root:?}");
        assert!(matches!(
            r.list(&p("d/one")).await,
            Err(RemoteError::NotADirectory { .. })
        ));
        assert!(r.list(&p("missing")).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn odd_names_are_kept_byte_for_byte() {
        let r = MemRemote::new();
        let names = [
            "a b", "100%", "#hash", "what?", "a&b+c", "it's", "\"q\"", "é", "e\u{301}", "😀",
            "中文",
        ];
        for n in names {
            let path = RemotePath::root().join("dir").unwrap().join(n).unwrap();
            r.mkdir(&RemotePath::new("dir").unwrap()).await.ok();
            r.put(
                &path,
                PutBody::from(n.as_bytes().to_vec()),
                PutCondition::None,
            )
            .await
            .unwrap();
        }
        let l = r.list(&p("dir")).await.unwrap();
        assert_eq!(l.children.len(), names.len());
        for n in names {
            let path = RemotePath::root().join("dir").unwrap().join(n).unwrap();
            let got = r.read_range(&path, ByteRange::whole(), None).await.unwrap();
            assert_eq!(got.bytes().await.unwrap(), n.as_bytes());
        }
    }

    #[tokio::test]
    async fn read_range_gives_exactly_the_range() {
        let r = MemRemote::new();
        let d = data(200_000);
        r.insert_file("f", d.clone());
        let cases: &[(u64, Option<u64>)] = &[
            (0, Some(1)),
            (0, Some(4096)),
            (4095, Some(2)),
            (65_536, Some(65_536)),
            (1000, Some(150_000)),
            (199_990, Some(100)),
            (199_999, Some(1)),
            (0, None),
            (123_456, None),
            (0, Some(0)),
        ];
        for &(start, len) in cases {
            let range = ByteRange { start, len };
            let got = read(&r, "f", range).await.unwrap();
            let end = range.end().map_or(d.len(), |e| (e as usize).min(d.len()));
            assert_eq!(got, &d[start as usize..end], "range {range:?}");
        }
        // At and past EOF: empty.
        assert!(read(&r, "f", ByteRange::new(200_000, 10))
            .await
            .unwrap()
            .is_empty());
        assert!(read(&r, "f", ByteRange::from(300_000))
            .await
            .unwrap()
            .is_empty());
        let resp = r
            .read_range(&p("f"), ByteRange::new(10, 10), None)
            .await
            .unwrap();
        assert_eq!(resp.total_size, Some(200_000));
        assert_eq!(resp.etag, r.etag("f"));
    }

    #[tokio::test]
    async fn read_range_of_an_empty_file() {
        let r = MemRemote::new();
        r.insert_file("empty", Vec::new());
        assert!(read(&r, "empty", ByteRange::whole())
            .await
            .unwrap()
            .is_empty());
        assert!(read(&r, "empty", ByteRange::new(0, 10))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn read_range_checks_the_version() {
        let r = MemRemote::new();
        let old = r.insert_file("f", "version one");
        let resp = r
            .read_range(&p("f"), ByteRange::new(0, 7), Some(&old))
            .await
            .unwrap();
        assert_eq!(resp.bytes().await.unwrap(), "version");
        let new = r.insert_file("f", "version two");
        assert_ne!(old, new);
        match r.read_range(&p("f"), ByteRange::whole(), Some(&old)).await {
            Err(RemoteError::VersionChanged {
                expected, actual, ..
            }) => {
                assert_eq!(expected, old);
                assert_eq!(actual, new.value());
            }
            other => panic!("expected VersionChanged, got {other:?}"),
        }
        // A weak spelling of the same version is the same version.
        let weak = ETag::parse(&format!("W/\"{}\"", new.value())).unwrap();
        assert!(r
            .read_range(&p("f"), ByteRange::whole(), Some(&weak))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn read_range_errors() {
        let r = MemRemote::new();
        r.insert_dir("d");
        assert!(matches!(
            r.read_range(&p("d"), ByteRange::whole(), None).await,
            Err(RemoteError::IsADirectory { .. })
        ));
        assert!(r
            .read_range(&p("x"), ByteRange::whole(), None)
            .await
            .unwrap_err()
            .is_not_found());
    }

    #[tokio::test]
    async fn put_creates_and_replaces_with_new_etags() {
        let r = MemRemote::new();
        let out = r
            .put(&p("f"), PutBody::from(&b"one"[..]), PutCondition::None)
            .await
            .unwrap();
        let e1 = out.etag.unwrap();
        assert_eq!(r.stat(&p("f")).await.unwrap().etag.as_ref(), Some(&e1));
        assert_eq!(r.file_bytes("f").unwrap(), b"one");
        let e2 = r
            .put(&p("f"), PutBody::from(&b"second"[..]), PutCondition::None)
            .await
            .unwrap()
            .etag
            .unwrap();
        assert_ne!(e1, e2);
        // Same content, new write: still a new version.
        let e3 = r
            .put(&p("f"), PutBody::from(&b"second"[..]), PutCondition::None)
            .await
            .unwrap()
            .etag
            .unwrap();
        assert_ne!(e2, e3);
        assert_eq!(r.file_bytes("f").unwrap(), b"second");
        assert_eq!(r.stat(&p("f")).await.unwrap().size, 6);
        // Empty body.
        r.put(&p("f"), PutBody::from(Vec::new()), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(r.file_bytes("f").unwrap(), b"");
    }

    #[tokio::test]
    async fn put_from_file_and_stream_bodies() {
        let r = MemRemote::new();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("src.bin");
        let d = data(700_000);
        std::fs::write(&local, &d).unwrap();
        r.put(
            &p("big"),
            PutBody::File {
                path: local,
                len: d.len() as u64,
            },
            PutCondition::None,
        )
        .await
        .unwrap();
        assert_eq!(r.file_bytes("big").unwrap(), d);
        r.put(
            &p("s"),
            stream_body(6, vec![b"ab", b"", b"cdef"], false),
            PutCondition::None,
        )
        .await
        .unwrap();
        assert_eq!(r.file_bytes("s").unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn put_needs_a_parent_collection() {
        let r = MemRemote::new();
        assert!(matches!(
            r.put(&p("no/f"), PutBody::from(&b"x"[..]), PutCondition::None)
                .await,
            Err(RemoteError::MissingParent { .. })
        ));
        r.insert_file("file", "x");
        assert!(matches!(
            r.put(&p("file/f"), PutBody::from(&b"x"[..]), PutCondition::None)
                .await,
            Err(RemoteError::MissingParent { .. })
        ));
        assert!(!r.exists("no/f"));
        assert!(!r.exists("no"));
    }

    #[tokio::test]
    async fn put_onto_a_collection_fails() {
        let r = MemRemote::new();
        r.insert_file("d/child", "x");
        for path in ["d", ""] {
            assert!(matches!(
                r.put(&p(path), PutBody::from(&b"x"[..]), PutCondition::None)
                    .await,
                Err(RemoteError::IsADirectory { .. })
            ));
        }
        assert!(r.stat(&p("d")).await.unwrap().is_dir());
        assert_eq!(r.file_bytes("d/child").unwrap(), b"x");
    }

    #[tokio::test]
    async fn conditional_put() {
        let r = MemRemote::new();
        let v1 = r.insert_file("f", "v1");
        let v2 = r
            .put(
                &p("f"),
                PutBody::from(&b"v2"[..]),
                PutCondition::IfMatch(v1.clone()),
            )
            .await
            .unwrap()
            .etag
            .unwrap();
        // Stale If-Match.
        assert!(matches!(
            r.put(
                &p("f"),
                PutBody::from(&b"v3"[..]),
                PutCondition::IfMatch(v1)
            )
            .await,
            Err(RemoteError::PreconditionFailed { .. })
        ));
        assert_eq!(r.file_bytes("f").unwrap(), b"v2");
        assert_eq!(r.etag("f"), Some(v2.clone()));
        // If-Match on a missing file.
        assert!(matches!(
            r.put(
                &p("g"),
                PutBody::from(&b"x"[..]),
                PutCondition::IfMatch(v2.clone())
            )
            .await,
            Err(RemoteError::PreconditionFailed { .. })
        ));
        assert!(!r.exists("g"));
        // If-None-Match: * on an existing file, and on a collection.
        assert!(matches!(
            r.put(&p("f"), PutBody::from(&b"x"[..]), PutCondition::IfNoneMatch)
                .await,
            Err(RemoteError::PreconditionFailed { .. })
        ));
        r.insert_dir("d");
        assert!(matches!(
            r.put(&p("d"), PutBody::from(&b"x"[..]), PutCondition::IfNoneMatch)
                .await,
            Err(RemoteError::PreconditionFailed { .. })
        ));
        assert_eq!(r.file_bytes("f").unwrap(), b"v2");
        // If-None-Match: * on a new file.
        r.put(
            &p("g"),
            PutBody::from(&b"new"[..]),
            PutCondition::IfNoneMatch,
        )
        .await
        .unwrap();
        assert_eq!(r.file_bytes("g").unwrap(), b"new");
        // If-Match with the current version.
        r.put(
            &p("f"),
            PutBody::from(&b"v3"[..]),
            PutCondition::IfMatch(v2),
        )
        .await
        .unwrap();
        assert_eq!(r.file_bytes("f").unwrap(), b"v3");
    }

    #[tokio::test]
    async fn put_with_a_wrong_length_changes_nothing() {
        let r = MemRemote::new();
        let v1 = r.insert_file("f", "original");
        let short = stream_body(10, vec![b"abc"], false);
        let err = r.put(&p("f"), short, PutCondition::None).await.unwrap_err();
        assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
        let long = stream_body(2, vec![b"abc"], false);
        let err = r.put(&p("f"), long, PutCondition::None).await.unwrap_err();
        assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
        let err = r
            .put(&p("new"), stream_body(1, vec![], false), PutCondition::None)
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
        assert_eq!(r.file_bytes("f").unwrap(), b"original");
        assert_eq!(r.etag("f"), Some(v1));
        assert!(!r.exists("new"));
    }

    #[tokio::test]
    async fn put_whose_body_fails_changes_nothing() {
        let r = MemRemote::new();
        let v1 = r.insert_file("f", "original");
        let dir_tag = r.etag("").unwrap();
        let body = stream_body(10, vec![b"abc", b"def"], true);
        let err = r.put(&p("f"), body, PutCondition::None).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("body broke"));
        assert_eq!(r.file_bytes("f").unwrap(), b"original");
        assert_eq!(r.etag("f"), Some(v1));
        let body = stream_body(10, vec![b"abc"], true);
        assert!(r.put(&p("g"), body, PutCondition::None).await.is_err());
        assert!(!r.exists("g"));
        assert_eq!(r.etag("").unwrap(), dir_tag);
        // A missing local file.
        let err = r
            .put(
                &p("f"),
                PutBody::File {
                    path: "/nonexistent/cloudmount-test".into(),
                    len: 3,
                },
                PutCondition::None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::Io(_)), "{err:?}");
        assert_eq!(r.file_bytes("f").unwrap(), b"original");
    }

    #[tokio::test]
    async fn mkdir_semantics() {
        let r = MemRemote::new();
        r.mkdir(&p("d")).await.unwrap();
        assert!(r.stat(&p("d")).await.unwrap().is_dir());
        r.mkdir(&p("d/e")).await.unwrap();
        assert!(matches!(
            r.mkdir(&p("d")).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        assert!(matches!(
            r.mkdir(&RemotePath::root()).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        r.insert_file("f", "x");
        assert!(matches!(
            r.mkdir(&p("f")).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        assert!(matches!(
            r.mkdir(&p("x/y")).await,
            Err(RemoteError::MissingParent { .. })
        ));
        assert!(matches!(
            r.mkdir(&p("f/y")).await,
            Err(RemoteError::MissingParent { .. })
        ));
        assert_eq!(r.paths(), vec!["d/", "d/e/", "f"]);
    }

    #[tokio::test]
    async fn delete_semantics() {
        let r = MemRemote::new();
        r.insert_file("d/a", "1");
        r.insert_file("d/sub/b", "2");
        r.insert_file("d-keep", "3");
        r.insert_file("f", "4");
        r.delete(&p("f")).await.unwrap();
        assert!(!r.exists("f"));
        r.delete(&p("d")).await.unwrap();
        assert_eq!(r.paths(), vec!["d-keep"]);
        assert!(r.delete(&p("d")).await.unwrap_err().is_not_found());
        assert!(r.delete(&p("d/a")).await.unwrap_err().is_not_found());
        assert!(matches!(
            r.delete(&RemotePath::root()).await,
            Err(RemoteError::InvalidPath { .. })
        ));
    }

    #[tokio::test]
    async fn dir_etag_changes_with_its_members() {
        let r = MemRemote::new();
        r.insert_dir("d");
        let t0 = r.etag("d").unwrap();
        r.put(&p("d/f"), PutBody::from(&b"x"[..]), PutCondition::None)
            .await
            .unwrap();
        let t1 = r.etag("d").unwrap();
        assert_ne!(t0, t1);
        r.delete(&p("d/f")).await.unwrap();
        assert_ne!(r.etag("d").unwrap(), t1);
    }

    #[tokio::test]
    async fn rename_file() {
        let r = MemRemote::new();
        let tag = r.insert_file("a/f", "content");
        r.insert_dir("b");
        r.rename(&p("a/f"), &p("b/g"), false).await.unwrap();
        assert!(!r.exists("a/f"));
        assert_eq!(r.file_bytes("b/g").unwrap(), b"content");
        // A move keeps the version.
        assert_eq!(r.etag("b/g"), Some(tag));
        assert!(r
            .rename(&p("a/f"), &p("b/h"), false)
            .await
            .unwrap_err()
            .is_not_found());
        assert!(matches!(
            r.rename(&p("b/g"), &p("nope/g"), false).await,
            Err(RemoteError::MissingParent { .. })
        ));
        assert!(r.exists("b/g"));
    }

    #[tokio::test]
    async fn rename_dir_moves_its_subtree() {
        let r = MemRemote::new();
        r.insert_file("a/x", "1");
        r.insert_file("a/s/y", "2");
        r.insert_file("a b", "not moved");
        r.insert_file("a-c", "not moved");
        r.insert_file("a0", "not moved");
        let ty = r.etag("a/s/y");
        r.rename(&p("a"), &p("z"), false).await.unwrap();
        assert_eq!(
            r.paths(),
            vec!["a b", "a-c", "a0", "z/", "z/s/", "z/s/y", "z/x"]
        );
        assert_eq!(r.etag("z/s/y"), ty);
        assert_eq!(r.file_bytes("z/s/y").unwrap(), b"2");
        let l = r.list(&p("z")).await.unwrap();
        assert_eq!(l.children.len(), 2);
    }

    #[tokio::test]
    async fn rename_overwrite_rules() {
        let r = MemRemote::new();
        r.insert_file("f", "source");
        r.insert_file("g", "target");
        assert!(matches!(
            r.rename(&p("f"), &p("g"), false).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        assert_eq!(r.file_bytes("f").unwrap(), b"source");
        assert_eq!(r.file_bytes("g").unwrap(), b"target");
        r.rename(&p("f"), &p("g"), true).await.unwrap();
        assert!(!r.exists("f"));
        assert_eq!(r.file_bytes("g").unwrap(), b"source");

        // A collection replaces a file wholly, and a file replaces a collection wholly.
        r.insert_file("d/inner", "i");
        r.rename(&p("d"), &p("g"), true).await.unwrap();
        assert_eq!(r.paths(), vec!["g/", "g/inner"]);
        r.insert_file("h", "file");
        r.rename(&p("h"), &p("g"), true).await.unwrap();
        assert_eq!(r.paths(), vec!["g"]);
        assert_eq!(r.file_bytes("g").unwrap(), b"file");

        // A collection replacing a collection does not merge.
        r.insert_file("m/one", "1");
        r.insert_file("n/two", "2");
        r.rename(&p("m"), &p("n"), true).await.unwrap();
        assert!(r.exists("n/one"));
        assert!(!r.exists("n/two"));
    }

    #[tokio::test]
    async fn move_or_copy_into_itself_fails() {
        let r = MemRemote::new();
        r.insert_file("d/e/f", "x");
        let before = r.paths();
        for (from, to) in [
            ("d", "d"),
            ("d", "d/e/new"),
            ("d", "d/new"),
            ("d/e/f", "d/e/f"),
        ] {
            for overwrite in [false, true] {
                assert!(
                    matches!(
                        r.rename(&p(from), &p(to), overwrite).await,
                        Err(RemoteError::InvalidPath { .. })
                    ),
                    "rename {from} {to}"
                );
                assert!(
                    matches!(
                        r.copy(&p(from), &p(to), overwrite).await,
                        Err(RemoteError::InvalidPath { .. })
                    ),
                    "copy {from} {to}"
                );
            }
        }
        // Onto its own ancestor: exists (no overwrite) or contains the source (overwrite).
        assert!(matches!(
            r.rename(&p("d/e"), &p("d"), false).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        assert!(matches!(
            r.rename(&p("d/e"), &p("d"), true).await,
            Err(RemoteError::InvalidPath { .. })
        ));
        for overwrite in [false, true] {
            assert!(matches!(
                r.rename(&RemotePath::root(), &p("x"), overwrite).await,
                Err(RemoteError::InvalidPath { .. })
            ));
            assert!(matches!(
                r.copy(&p("d/e"), &RemotePath::root(), overwrite).await,
                Err(RemoteError::InvalidPath { .. })
            ));
        }
        assert_eq!(r.paths(), before);
    }

    #[tokio::test]
    async fn copy_file_and_dir() {
        let r = MemRemote::new();
        let tf = r.insert_file("d/f", "one");
        r.insert_file("d/s/g", "two");
        r.copy(&p("d/f"), &p("f2"), false).await.unwrap();
        assert_eq!(r.file_bytes("f2").unwrap(), b"one");
        assert_eq!(r.file_bytes("d/f").unwrap(), b"one");
        assert_ne!(r.etag("f2"), Some(tf.clone()));
        assert_eq!(r.etag("d/f"), Some(tf));

        r.copy(&p("d"), &p("e"), false).await.unwrap();
        assert_eq!(
            r.paths(),
            vec!["d/", "d/f", "d/s/", "d/s/g", "e/", "e/f", "e/s/", "e/s/g", "f2"]
        );
        assert_eq!(r.file_bytes("e/s/g").unwrap(), b"two");
        assert_ne!(r.etag("e/s/g"), r.etag("d/s/g"));
        assert_ne!(r.etag("e"), r.etag("d"));
        // The copy is independent of the source.
        r.insert_file("e/f", "changed");
        assert_eq!(r.file_bytes("d/f").unwrap(), b"one");
    }

    #[tokio::test]
    async fn copy_errors_and_overwrite() {
        let r = MemRemote::new();
        r.insert_file("f", "src");
        r.insert_file("g", "dst");
        assert!(r
            .copy(&p("x"), &p("y"), false)
            .await
            .unwrap_err()
            .is_not_found());
        assert!(matches!(
            r.copy(&p("f"), &p("no/f"), false).await,
            Err(RemoteError::MissingParent { .. })
        ));
        assert!(matches!(
            r.copy(&p("f"), &p("g"), false).await,
            Err(RemoteError::AlreadyExists { .. })
        ));
        assert_eq!(r.file_bytes("g").unwrap(), b"dst");
        r.copy(&p("f"), &p("g"), true).await.unwrap();
        assert_eq!(r.file_bytes("g").unwrap(), b"src");
        // A collection replaces a collection wholly.
        r.insert_file("a/one", "1");
        r.insert_file("b/two", "2");
        r.copy(&p("a"), &p("b"), true).await.unwrap();
        assert!(r.exists("b/one"));
        assert!(!r.exists("b/two"));
        assert!(r.exists("a/one"));
    }

    #[tokio::test]
    async fn quota_without_limit() {
        let r = MemRemote::new();
        r.insert_file("a", vec![0u8; 100]);
        r.insert_file("d/b", vec![0u8; 50]);
        let q = r.quota().await.unwrap();
        assert_eq!(q.used, Some(150));
        assert_eq!(q.available, None);
    }

    #[tokio::test]
    async fn quota_limit_refuses_puts_and_copies() {
        let r = MemRemote::with_quota(100);
        r.put(&p("a"), PutBody::from(vec![1u8; 60]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(
            r.quota().await.unwrap(),
            Quota {
                used: Some(60),
                available: Some(40)
            }
        );
        assert!(matches!(
            r.put(&p("b"), PutBody::from(vec![2u8; 41]), PutCondition::None)
                .await,
            Err(RemoteError::InsufficientStorage { .. })
        ));
        assert!(!r.exists("b"));
        // Replacing a file only needs room for the difference.
        r.put(&p("a"), PutBody::from(vec![3u8; 100]), PutCondition::None)
            .await
            .unwrap();
        assert!(matches!(
            r.put(&p("a"), PutBody::from(vec![4u8; 101]), PutCondition::None)
                .await,
            Err(RemoteError::InsufficientStorage { .. })
        ));
        assert_eq!(r.file_bytes("a").unwrap(), vec![3u8; 100]);
        assert!(matches!(
            r.copy(&p("a"), &p("c"), false).await,
            Err(RemoteError::InsufficientStorage { .. })
        ));
        assert!(!r.exists("c"));
        // A move takes no extra room.
        r.rename(&p("a"), &p("c"), false).await.unwrap();
        assert_eq!(r.quota().await.unwrap().available, Some(0));
        r.delete(&p("c")).await.unwrap();
        assert_eq!(r.quota().await.unwrap().available, Some(100));
        r.set_quota(None);
        assert_eq!(r.quota().await.unwrap().available, None);
    }

    #[tokio::test]
    async fn etags_can_be_left_out_of_listings_or_everywhere() {
        let r = MemRemote::new();
        let tag = r.insert_file("d/f", &b"abc"[..]);
        r.set_etag_report(ETagReport::NotInListings);
        let l = r.list(&p("d")).await.unwrap();
        assert_eq!(l.dir.etag, None);
        assert_eq!(l.children[0].etag, None);
        assert_eq!(l.children[0].size, 3);
        assert!(l.children[0].mtime.is_some());
        assert_eq!(r.stat(&p("d/f")).await.unwrap().etag, Some(tag.clone()));
        let got = r
            .read_range(&p("d/f"), ByteRange::whole(), None)
            .await
            .unwrap();
        assert_eq!(got.etag, Some(tag.clone()));
        r.set_etag_report(ETagReport::Nowhere);
        assert_eq!(r.stat(&p("d/f")).await.unwrap().etag, None);
        let got = r
            .read_range(&p("d/f"), ByteRange::whole(), None)
            .await
            .unwrap();
        assert_eq!(got.etag, None);
        let out = r
            .put(&p("d/f"), b"x".to_vec().into(), PutCondition::None)
            .await;
        assert_eq!(out.unwrap().etag, None);
        assert!(r.list(&p("d")).await.unwrap().children[0].etag.is_none());
        // The tree keeps its versions all the same.
        assert_ne!(r.etag("d/f"), Some(tag));
        r.set_etag_report(ETagReport::Everywhere);
        assert_eq!(
            r.list(&p("d")).await.unwrap().children[0].etag,
            r.etag("d/f")
        );
    }

    #[tokio::test]
    async fn counters_count_calls_and_bytes() {
        let r = MemRemote::new();
        r.insert_file("f", data(1000));
        assert_eq!(r.counters(), MemCounters::default());
        r.stat(&p("f")).await.unwrap();
        r.stat(&p("missing")).await.unwrap_err();
        r.list(&RemotePath::root()).await.unwrap();
        read(&r, "f", ByteRange::new(100, 300)).await.unwrap();
        read(&r, "f", ByteRange::new(900, 300)).await.unwrap();
        r.put(&p("g"), PutBody::from(&b"x"[..]), PutCondition::None)
            .await
            .unwrap();
        r.mkdir(&p("d")).await.unwrap();
        r.copy(&p("g"), &p("h"), false).await.unwrap();
        r.rename(&p("h"), &p("i"), false).await.unwrap();
        r.delete(&p("i")).await.unwrap();
        r.quota().await.unwrap();
        let c = r.counters();
        assert_eq!(
            c,
            MemCounters {
                stat: 2,
                list: 1,
                read_range: 2,
                put: 1,
                mkdir: 1,
                delete: 1,
                rename: 1,
                copy: 1,
                quota: 1,
                bytes_read: 400,
            }
        );
        r.reset_counters();
        assert_eq!(r.counters(), MemCounters::default());
    }

    #[tokio::test]
    async fn clones_share_the_tree_and_work_as_dyn_remote() {
        let r = MemRemote::new();
        let shared: Arc<dyn Remote> = Arc::new(r.clone());
        shared
            .put(&p("f"), PutBody::from(&b"via dyn"[..]), PutCondition::None)
            .await
            .unwrap();
        assert_eq!(r.file_bytes("f").unwrap(), b"via dyn");
        assert_eq!(r.counters().put, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_get_distinct_versions() {
        let r = Arc::new(MemRemote::new());
        let mut tasks = Vec::new();
        for i in 0..50u8 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                r.put(
                    &RemotePath::new(&format!("f{}", i % 5)).unwrap(),
                    PutBody::from(vec![i; 10]),
                    PutCondition::None,
                )
                .await
                .unwrap()
                .etag
                .unwrap()
            }));
        }
        let mut tags = std::collections::HashSet::new();
        for t in tasks {
            assert!(tags.insert(t.await.unwrap()));
        }
        assert_eq!(r.paths().len(), 5);
        assert_eq!(r.quota().await.unwrap().used, Some(50));
    }

    proptest::proptest! {
        #[test]
        fn any_range_reads_the_matching_slice(
            size in 0usize..300_000,
            start in 0u64..320_000,
            len in proptest::option::of(0u64..200_000),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let r = MemRemote::new();
            let d = data(size);
            r.insert_file("f", d.clone());
            let range = ByteRange { start, len };
            let got = rt.block_on(read(&r, "f", range)).unwrap();
            let s = (start as usize).min(size);
            let e = range.end().map_or(size, |e| (e as usize).min(size)).max(s);
            proptest::prop_assert_eq!(&got[..], &d[s..e]);
            proptest::prop_assert_eq!(r.counters().bytes_read, (e - s) as u64);
        }
    }
}
