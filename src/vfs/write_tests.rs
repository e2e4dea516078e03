//! The write path's copy of the cached version into staging (`Vfs::stage`), racing the cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::remote::mem::MemRemote;
use crate::remote::{
    ByteRange, Entry, Listing, PutBody, PutCondition, PutOutcome, ReadResponse, RemoteResult,
};

/// The in-memory server, whose reads wait until the test lets them go (and say that one did).
struct HeldReads {
    inner: Arc<MemRemote>,
    arrived: Notify,
    go: Semaphore,
}

#[async_trait]
impl Remote for HeldReads {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.inner.stat(path).await
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        self.inner.list(path).await
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        self.arrived.notify_one();
        let _go = self.go.acquire().await.expect("never closed");
        self.inner.read_range(path, range, expect).await
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        self.inner.put(path, body, cond).await
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.inner.mkdir(path).await
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.inner.delete(path).await
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.inner.rename(from, to, overwrite).await
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.inner.copy(from, to, overwrite).await
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.inner.quota().await
    }
}

fn open(remote: Arc<dyn Remote>, cache: &Path) -> Arc<Vfs> {
    Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "m".into(),
            url: "mem://m/".into(),
            remote,
            read_only: false,
        }],
        opts: VfsOptions {
            dir_ttl: Duration::from_secs(60),
            uid: 0,
            gid: 0,
            read_only: false,
            areas_as_folders: false,
            passthrough: false,
            upload: UploadOptions::immediate(),
        },
        cache_dir: cache.to_path_buf(),
        cache_size: 64 << 20,
    })
    .unwrap()
}

/// Found by the vfs model (`tests/model.rs`, seed 754caa62): a file written, the daemon killed
/// before its upload, then opened for writing after the restart gave EIO. The restart's upload
/// of the file ended without a node (`settle_unplaced`) while a listing showed the uploaded
/// version and the open copied that version from the cache into staging: the upload's end
/// moved its staging file into the cache as that same version, which dropped the object the
/// copy was filling and unlinked its file, and the copy, made by the object's path, found no
/// file (ENOENT). The copy now reads through the object's open descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_for_writing_survives_the_cache_replacing_the_version_it_copies() {
    let cache = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemRemote::new());
    // Several cache blocks.
    let content: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i * 7 + i / 9000) as u8)
        .collect();
    mem.insert_file("a", content.clone());
    let remote = Arc::new(HeldReads {
        inner: mem.clone(),
        arrived: Notify::new(),
        go: Semaphore::new(0),
    });
    let vfs = open(remote.clone(), cache.path());
    let a = vfs.lookup(ROOT_INO, "a").await.unwrap();
    let opening = {
        let vfs = vfs.clone();
        let mode = OpenMode {
            write: true,
            truncate: false,
            append: false,
        };
        tokio::spawn(async move { vfs.open(a.ino, mode).await })
    };
    // The open's download of the content has begun: its cache object exists.
    tokio::time::timeout(Duration::from_secs(10), remote.arrived.notified())
        .await
        .expect("the open downloads the file");
    // An upload's end moves the same version in from staging, as `settle_unplaced` does.
    let key = version_key(&vfs.tree(), a.ino).unwrap().0;
    let uploaded = vfs.staging_dir.join("uploaded");
    std::fs::write(&uploaded, &content).unwrap();
    vfs.cache.adopt(&key, &uploaded).unwrap();
    remote.go.add_permits(1024);
    let o = tokio::time::timeout(Duration::from_secs(10), opening)
        .await
        .expect("the open ends")
        .unwrap()
        .expect("the open for writing succeeds");
    let mut got = Vec::new();
    loop {
        let c = vfs
            .read(a.ino, o.fh, got.len() as u64, 1 << 20)
            .await
            .unwrap();
        if c.is_empty() {
            break;
        }
        got.extend_from_slice(&c);
    }
    assert!(got == content, "the staged copy is not the file's content");
    vfs.release(a.ino, o.fh).await.unwrap();
}
