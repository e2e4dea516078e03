//! Helpers of the tests that drive the vfs directly (no FUSE, no servers): open modes, reading a
//! whole file through a handle, waiting for the upload queue.

use std::time::Duration;

use cloudmount::vfs::{Ino, OpenMode, Vfs};

pub const W: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};
pub const R: OpenMode = OpenMode {
    write: false,
    truncate: false,
    append: false,
};

/// The whole content of `ino`, read through a handle in 128 KiB reads.
pub async fn read_all(vfs: &Vfs, ino: Ino) -> Vec<u8> {
    let o = vfs.open(ino, R).await.unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = vfs
            .read(ino, o.fh, out.len() as u64, 128 * 1024)
            .await
            .unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    vfs.release(ino, o.fh).await.unwrap();
    out
}

/// Waits until the upload queue is empty (every closed file is on the server).
pub async fn settle(vfs: &Vfs) {
    tokio::time::timeout(Duration::from_secs(30), vfs.wait_idle())
        .await
        .unwrap_or_else(|_| panic!("uploads did not finish: {:?}", vfs.status()));
}

/// The names `readdir` gives for directory `ino` (with `.` and `..`), through one handle.
pub async fn names_in(vfs: &Vfs, ino: Ino) -> Vec<String> {
    let fh = vfs.opendir(ino).await.unwrap();
    let names = vfs
        .readdir(ino, fh, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    vfs.releasedir(fh);
    names
}
