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
//! - [`MemRemote::set_propagate_dir_etags`] makes a change anywhere below a collection renew
//!   its ETag, as Nextcloud and ownCloud do.
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
    /// Like Nextcloud and ownCloud: a change anywhere below a collection renews its ETag.
    propagate_dir_etags: bool,
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
            propagate_dir_etags: false,
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

    /// Renews the ETag and mtime of a collection whose members changed (and of every
    /// collection above it, when ETags propagate).
    fn touch_dir(&mut self, dir: &RemotePath) {
        let etag = self.new_etag();
        if let Some(node) = self.nodes.get_mut(dir.as_str()) {
            if node.is_dir() {
                node.etag = etag;
                node.mtime = now();
            }
        }
        if self.propagate_dir_etags {
            if let Some(parent) = dir.parent() {
                self.touch_dir(&parent);
            }
        }
    }

    /// After a file was written: its collection changed if the file is new, or (propagating
    /// ETags) in any case.
    fn written(&mut self, path: &RemotePath, existed: bool) {
        if !existed || self.propagate_dir_etags {
            self.touch_parent(path);
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

    /// Makes a change anywhere below a collection renew its ETag, as Nextcloud and ownCloud
    /// do (off: only adding or removing a member does, as Apache's directory ETags).
    pub fn set_propagate_dir_etags(&self, on: bool) {
        self.lock().propagate_dir_etags = on;
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
        s.written(&path, existed);
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
        s.written(path, existed);
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
mod tests;
