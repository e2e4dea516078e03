//! The cache directory's on-disk format across releases: a cache written by an earlier release
//! opens with this build, its cached blocks are served without a new download, and its queued
//! uploads go out.
//!
//! The cache under test is `tests/fixtures/cache-v5.tar.gz`, made by the release at commit
//! 2ebaeb0 (`meta.db` schema v5, objects at `<cache>/objects/objects/<h2>/`) with a real mount
//! killed by SIGKILL; `tests/fixtures/README.md` says how. It holds `a.bin` (300,000 bytes, every
//! block cached) and `b.txt` (closed, queued for upload, never sent).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use cloudmount::remote::mem::MemRemote;
use cloudmount::remote::{
    ByteRange, ETag, Entry, Listing, PutBody, PutCondition, PutOutcome, Quota, ReadResponse,
    Remote, RemotePath, RemoteResult,
};
use cloudmount::vfs::{AreaSpec, UploadOptions, Vfs, VfsOptions, VfsSetup, ROOT_INO};

#[path = "common/vfs.rs"]
#[allow(dead_code)]
mod vfs_util;
use vfs_util::{read_all, settle};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cache-v5.tar.gz"
);
/// The version of `a.bin` the fixture's server reported (`cloudmount serve`: inode-size-mtime).
const A_ETAG: &str = "\"99410a-493e0-6475ef64cf340\"";
/// The mtime of `a.bin` on the fixture's server: 2026-01-02 03:04:05 UTC.
const A_MTIME: u64 = 1_767_323_045;
const A_SIZE: usize = 300_000;
/// The cached object of `a.bin` in the fixture: `objects/objects/<h2>/<name>` there.
const A_OBJECT: &str = "17f8d580a05df566425b7e07e059042d";
const B_CONTENT: &[u8] = b"queued by the old release\n";

/// The bytes of `a.bin`, as the fixture's script made them.
fn a_bytes() -> Vec<u8> {
    (0..A_SIZE).map(|i| ((i * 31 + 7) % 256) as u8).collect()
}

/// The fixture's cache directory, unpacked into `dir` (returns `dir/cache`).
fn unpack(dir: &Path) -> std::path::PathBuf {
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-xzf")
        .arg(FIXTURE)
        .status()
        .expect("run tar");
    assert!(st.success(), "tar -xzf {FIXTURE}: {st}");
    let cache = dir.join("cache");
    assert!(
        cache
            .join("objects/objects")
            .join(&A_OBJECT[..2])
            .join(A_OBJECT)
            .is_file(),
        "the fixture holds a cache in the old layout"
    );
    cache
}

/// The server the fixture was made against, still holding the same version of `a.bin`: an
/// in-memory server (which counts its calls) that reports `a.bin` with the fixture's ETag and
/// mtime, as `cloudmount serve` did. Everything else passes through unchanged.
struct FixtureServer {
    mem: Arc<MemRemote>,
    a: RemotePath,
}

impl FixtureServer {
    fn a_etag() -> ETag {
        ETag::parse(A_ETAG).expect("a valid ETag")
    }

    fn mem_a_etag(&self) -> ETag {
        self.mem.etag("a.bin").expect("a.bin is on the server")
    }

    fn fix(&self, mut e: Entry) -> Entry {
        if e.path == self.a {
            e.etag = Some(Self::a_etag());
            e.mtime = Some(UNIX_EPOCH + Duration::from_secs(A_MTIME));
        }
        e
    }

    /// The in-memory server's ETag for the one the fixture knows.
    fn unfix(&self, path: &RemotePath, tag: &ETag) -> ETag {
        if *path == self.a && *tag == Self::a_etag() {
            self.mem_a_etag()
        } else {
            tag.clone()
        }
    }
}

#[async_trait]
impl Remote for FixtureServer {
    async fn stat(&self, path: &RemotePath) -> RemoteResult<Entry> {
        self.mem.stat(path).await.map(|e| self.fix(e))
    }
    async fn list(&self, path: &RemotePath) -> RemoteResult<Listing> {
        let l = self.mem.list(path).await?;
        Ok(Listing {
            dir: self.fix(l.dir),
            children: l.children.into_iter().map(|e| self.fix(e)).collect(),
        })
    }
    async fn read_range(
        &self,
        path: &RemotePath,
        range: ByteRange,
        expect: Option<&ETag>,
    ) -> RemoteResult<ReadResponse> {
        let expect = expect.map(|t| self.unfix(path, t));
        let mut r = self.mem.read_range(path, range, expect.as_ref()).await?;
        if *path == self.a {
            r.etag = Some(Self::a_etag());
        }
        Ok(r)
    }
    async fn put(
        &self,
        path: &RemotePath,
        body: PutBody,
        cond: PutCondition,
    ) -> RemoteResult<PutOutcome> {
        let cond = match cond {
            PutCondition::IfMatch(t) => PutCondition::IfMatch(self.unfix(path, &t)),
            c => c,
        };
        self.mem.put(path, body, cond).await
    }
    async fn mkdir(&self, path: &RemotePath) -> RemoteResult<()> {
        self.mem.mkdir(path).await
    }
    async fn delete(&self, path: &RemotePath) -> RemoteResult<()> {
        self.mem.delete(path).await
    }
    async fn rename(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        overwrite: bool,
    ) -> RemoteResult<()> {
        self.mem.rename(from, to, overwrite).await
    }
    async fn copy(&self, from: &RemotePath, to: &RemotePath, overwrite: bool) -> RemoteResult<()> {
        self.mem.copy(from, to, overwrite).await
    }
    async fn quota(&self) -> RemoteResult<Quota> {
        self.mem.quota().await
    }
}

fn open_vfs(remote: Arc<dyn Remote>, cache: &Path) -> Arc<Vfs> {
    Vfs::new(VfsSetup {
        areas: vec![AreaSpec {
            name: "fixture".into(),
            // Any URL: the v5 store knows its area by position, adopted once for this URL.
            url: "mem://fixture/".into(),
            remote,
            read_only: false,
        }],
        opts: VfsOptions {
            // Short: the listing is checked with the server, as after any restart.
            dir_ttl: Duration::from_millis(1),
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
    .expect("the new build opens a cache written by the old release")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_written_by_the_last_release_opens_serves_its_blocks_and_uploads_its_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = unpack(tmp.path());
    let mem = Arc::new(MemRemote::new());
    mem.insert_file("a.bin", a_bytes());
    let server = Arc::new(FixtureServer {
        mem: mem.clone(),
        a: RemotePath::new("a.bin").unwrap(),
    });
    mem.reset_counters();

    let vfs = open_vfs(server.clone(), &cache);

    // The object files moved to today's layout, and nothing is left of the old one.
    let object = cache.join("objects").join(&A_OBJECT[..2]).join(A_OBJECT);
    assert_eq!(
        std::fs::metadata(&object).map(|m| m.len()).ok(),
        Some(A_SIZE as u64)
    );
    assert!(
        !cache.join("objects/objects").exists(),
        "objects/objects/ is gone"
    );
    assert!(
        !cache.join("objects.migrating").exists(),
        "the migration finished"
    );

    // The queued upload goes out, with the content written through the old release's mount.
    settle(&vfs).await;
    assert_eq!(
        mem.file_bytes("b.txt").as_deref(),
        Some(B_CONTENT),
        "b.txt, queued by the old release, is uploaded: server has {:?}",
        mem.paths()
    );

    // The cached blocks are served from the cache: the right bytes, no GET.
    let a = vfs.lookup(ROOT_INO, "a.bin").await.unwrap();
    assert_eq!(a.size, A_SIZE as u64);
    let got = read_all(&vfs, a.ino).await;
    assert!(
        got == a_bytes(),
        "a.bin read back differs from the server's"
    );
    let c = mem.counters();
    assert_eq!(
        (c.read_range, c.bytes_read),
        (0, 0),
        "a.bin was downloaded again although the old cache held it: {c:?}"
    );
    assert!(c.list > 0, "the listing was checked with the server: {c:?}");
    vfs.shutdown().await;
}
