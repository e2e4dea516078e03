//! The bodies of uploads: a local file's bytes, counted as they are sent, and padded to the
//! length announced when the file was cut short meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;

use crate::remote::{ByteStream, PutBody};

/// The `len` bytes of `file` as a body; with `sent`, its bytes are counted as they are read
/// for sending (from 0 at each attempt).
pub fn file_body(file: &Path, len: u64, sent: Option<Arc<AtomicU64>>) -> PutBody {
    let plain = PutBody::File {
        path: file.to_path_buf(),
        len,
    };
    let Some(counter) = sent else {
        return plain;
    };
    let make = move || -> ByteStream {
        counter.store(0, Ordering::Relaxed);
        let counter = counter.clone();
        Box::pin(plain.open().map(move |piece| {
            if let Ok(b) = &piece {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            piece
        }))
    };
    PutBody::Stream {
        len,
        make: Arc::new(make),
    }
}

/// The `size` bytes of `file` as a replayable body; zeros where the file is shorter by the
/// time it is read. Only for temporary copies that are checked before they are used: a file
/// cut short meanwhile still gives a PUT that ends normally (an aborted PUT can leave a
/// partial file that a DELETE right after does not reach while the server is still writing
/// it), and the check then throws the copy away.
pub fn padded_body(file: &Path, size: u64, sent: Option<Arc<AtomicU64>>) -> PutBody {
    const PIECE: u64 = 256 * 1024;
    let content = file_body(file, size, sent);
    let make = move || -> ByteStream {
        // The file's own stream (at most `size` bytes), then zeros for what it lacked.
        let got = Arc::new(AtomicU64::new(0));
        let counted = {
            let got = got.clone();
            content.open().map(move |piece| {
                if let Ok(b) = &piece {
                    got.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                piece
            })
        };
        let zeros = futures_util::stream::once(async move { got.load(Ordering::Relaxed) })
            .flat_map(move |got| {
                let missing = size.saturating_sub(got);
                futures_util::stream::iter((0..missing.div_ceil(PIECE)).map(move |k| {
                    let n = (missing - k * PIECE).min(PIECE) as usize;
                    Ok(bytes::Bytes::from(vec![0u8; n]))
                }))
            });
        Box::pin(counted.chain(zeros))
    };
    PutBody::Stream {
        len: size,
        make: Arc::new(make),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    /// With a counter, a file body counts the bytes read from it for sending, from 0 at each
    /// attempt; without one it is a plain file body.
    #[tokio::test]
    async fn a_file_body_counts_what_it_sends() {
        let (_d, f) = local(&vec![7u8; 3 << 20]);
        assert!(matches!(file_body(&f, 3 << 20, None), PutBody::File { .. }));
        let sent = Arc::new(AtomicU64::new(0));
        let body = file_body(&f, 3 << 20, Some(sent.clone()));
        for attempt in 0..2 {
            let mut stream = body.open();
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(
                sent.load(Ordering::Relaxed),
                first.len() as u64,
                "attempt {attempt}"
            );
            let mut total = first.len() as u64;
            while let Some(piece) = stream.next().await {
                total += piece.unwrap().len() as u64;
            }
            assert_eq!(total, 3 << 20);
            assert_eq!(sent.load(Ordering::Relaxed), 3 << 20);
        }
    }

    #[tokio::test]
    async fn a_temporary_body_is_padded_to_its_length_when_the_file_is_cut_short() {
        let (_d, f) = local(b"new");
        let mut body = padded_body(&f, 11, None).open();
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"new\0\0\0\0\0\0\0\0");
        // Longer than `size`: only `size` bytes.
        let (_d2, f2) = local(&[5u8; 300_000]);
        let mut body = padded_body(&f2, 262_145, None).open();
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            let c = chunk.unwrap();
            assert!(c.iter().all(|&b| b == 5));
            n += c.len();
        }
        assert_eq!(n, 262_145);
    }
}
