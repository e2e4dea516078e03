//! A [`Remote`] that reports the outcome of every request to the account's [`Health`]: the
//! one place where "the server answered" and "the server cannot be reached" are learned, so the
//! listing, read, upload (and later pin and sync) code need not each say it.
//!
//! A read's body streams after its request answered: an error in the middle of a body is the
//! reader's to handle and is not reported here.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ByteRange, ETag, Entry, Listing, ListingDigest, MaybeListing, PutBody, PutCondition,
    PutOutcome, Quota, ReadResponse, Remote, RemotePath, RemoteResult,
};
use crate::health::Health;

/// `inner`, with every answer reported to `health`.
pub struct Watched {
    inner: Arc<dyn Remote>,
    health: Arc<Health>,
}

impl Watched {
    pub fn new(inner: Arc<dyn Remote>, health: Arc<Health>) -> Watched {
        Watched { inner, health }
    }

    fn seen<T>(&self, r: RemoteResult<T>) -> RemoteResult<T> {
        self.health.observe(&r);
        r
    }
}

#[async_trait]
impl Remote for Watched {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.seen(self.inner.stat(path).await)
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        self.seen(self.inner.list(path).await)
    }
    async fn list_unless(
        &self,
        path: &RemotePath,
        known: Option<&ListingDigest>,
    ) -> RemoteResult<MaybeListing> {
        self.seen(self.inner.list_unless(path, known).await)
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        self.seen(self.inner.read_range(path, range, expect).await)
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        self.seen(self.inner.put(path, body, cond).await)
    }
    async fn put_unversioned(&self, path: &RemotePath, body: PutBody) -> RemoteResult<()> {
        self.seen(self.inner.put_unversioned(path, body).await)
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.seen(self.inner.mkdir(path).await)
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.seen(self.inner.delete(path).await)
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.seen(self.inner.rename(from, to, overwrite).await)
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.seen(self.inner.copy(from, to, overwrite).await)
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.seen(self.inner.quota().await)
    }
}
