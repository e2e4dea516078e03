//! Criterion benchmarks of the hot code: PROPFIND parsing of a 10,000-entry listing (and the
//! href resolution that follows), block-index lookups and updates, read-ahead decisions, and
//! what the bandwidth limit costs a body stream (none set, and one too high to wait).
//!
//!   cargo bench --bench hot
//!
//! End-to-end speed against rclone is measured by `benches/compare.sh`.

use std::hint::black_box;
use std::sync::Arc;

use cloudmount::cache::{BlockCache, CacheLayout, ObjectKey};
use cloudmount::meta::MetaStore;
use cloudmount::remote::path::{href_to_path, normalize_base};
use cloudmount::remote::throttle::{Bandwidth, Limits};
use cloudmount::remote::webdav::propfind::parse_multistatus;
use cloudmount::remote::{ETag, RemotePath};
use cloudmount::vfs::download::ReadAhead;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn listing(n: usize) -> String {
    let mut s = String::with_capacity(n * 420);
    s.push_str(r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#);
    s.push_str(r#"<D:response><D:href>/dav/dir/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"#);
    for i in 0..n {
        s.push_str(&format!(
            "<D:response><D:href>/dav/dir/file%20{i:05}.txt</D:href><D:propstat><D:prop>\
             <D:resourcetype/><D:getcontentlength>{}</D:getcontentlength>\
             <D:getlastmodified>Sat, 28 Nov 2026 03:00:00 GMT</D:getlastmodified>\
             <D:getetag>\"{i:x}-5f0a1b2c3d\"</D:getetag><D:getcontenttype>text/plain</D:getcontenttype>\
             </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
            i * 7
        ));
    }
    s.push_str("</D:multistatus>");
    s
}

fn propfind(c: &mut Criterion) {
    let xml = listing(10_000);
    let base = normalize_base("http://127.0.0.1:8080/dav/").unwrap();
    let mut g = c.benchmark_group("propfind");
    g.throughput(Throughput::Elements(10_001));
    g.bench_function("parse 10k entries", |b| {
        b.iter(|| parse_multistatus(black_box(xml.as_bytes())).unwrap())
    });
    let parsed = parse_multistatus(xml.as_bytes()).unwrap();
    g.bench_function("resolve 10k hrefs", |b| {
        b.iter(|| {
            for r in &parsed {
                black_box(href_to_path(&base, &base, &r.href).unwrap());
            }
        })
    });
    g.finish();
}

fn block_index(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let layout = CacheLayout::new(dir.path());
    let meta = Arc::new(MetaStore::open(&layout.meta_db()).unwrap());
    let bs = 4096u64;
    let cache = BlockCache::open(&layout, 1 << 40, bs, meta).unwrap();
    // A 64 MiB object (16,384 blocks), every other 16th block present.
    let size = 64u64 << 20;
    let key = ObjectKey {
        area: 0,
        path: RemotePath::new("big.bin").unwrap(),
        etag: ETag::strong("v1"),
        size,
    };
    let obj = cache.object(&key).unwrap();
    let _guard = obj.open_guard();
    let block = vec![7u8; bs as usize];
    for i in (0..size / bs).step_by(16) {
        obj.write_blocks(i * bs, &block).unwrap();
    }
    let mut g = c.benchmark_group("block index");
    g.bench_function("missing() over 128 KiB", |b| {
        let mut off = 0u64;
        b.iter(|| {
            off = (off + 1_234_567) % (size - (128 << 10));
            black_box(obj.missing(off, 128 << 10))
        })
    });
    g.bench_function("missing() over the whole object", |b| {
        b.iter(|| black_box(obj.missing(0, size)))
    });
    g.bench_function("write_blocks() of a block already present", |b| {
        let mut i = 1u64;
        b.iter(|| {
            i = (i + 16) % (size / bs);
            obj.write_blocks(i * bs, &block).unwrap()
        })
    });
    g.finish();
}

fn readahead(c: &mut Criterion) {
    c.bench_function("read-ahead: 8192 sequential 128 KiB reads", |b| {
        b.iter(|| {
            let mut ra = ReadAhead::default();
            let mut pos = 0u64;
            let mut scheduled = 0u64;
            for _ in 0..8192 {
                let end = pos + (128 << 10);
                if let Some(r) = ra.on_read(pos, end, 1 << 30) {
                    scheduled += r.end - r.start;
                }
                pos = end;
            }
            black_box(scheduled)
        })
    });
}

/// 4096 chunks of 64 KiB (256 MiB, no copies) through a bare stream, through the download
/// bucket with no limit (the pass-through), and with a limit too high to ever wait.
fn throttle(c: &mut Criterion) {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chunk = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let body = || -> cloudmount::remote::ByteStream {
        let c = chunk.clone();
        Box::pin(futures_util::stream::iter(
            (0..4096).map(move |_| Ok(c.clone())),
        ))
    };
    let mut g = c.benchmark_group("bandwidth limit: 256 MiB in 64 KiB chunks");
    g.throughput(Throughput::Bytes(256 << 20));
    g.bench_function("bare stream", |b| b.iter(|| rt.block_on(body().count())));
    let none = Bandwidth::new(Limits::default());
    g.bench_function("no limit", |b| {
        b.iter(|| rt.block_on(none.download(body()).count()))
    });
    let high = Bandwidth::new(Limits {
        upload: 0,
        download: 1 << 40,
    });
    g.bench_function("1 TiB/s limit", |b| {
        b.iter(|| rt.block_on(high.download(body()).count()))
    });
    g.finish();
}

criterion_group!(benches, propfind, block_index, readahead, throttle);
criterion_main!(benches);
