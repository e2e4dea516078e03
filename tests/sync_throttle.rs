//! Bandwidth limits in a profile's daemon: `cloudmount settings set` reaches it live, and its
//! sync folders' uploads keep the limit (the mount's side: `mount_throttle.rs`).

mod common;

use std::time::{Duration, Instant};

use common::mount::{Dav, Server};
use common::sync::{text, write, SyncHome};

const MIB: usize = 1 << 20;

#[test]
fn a_sync_folder_uploads_within_the_limit_set_live() {
    let server = common::embedded_server(None);
    let srv = Server::embedded(&server);
    let dav = Dav::fresh(&srv, "throttle-sync");
    let mut home = SyncHome::new(&srv, &dav.url);
    home.start();
    let out = home.run(&["settings", "set", "upload_limit", "1M"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("applied now to 1 running daemon"),
        "{}",
        text(&out)
    );
    let shown = home.ok(&["settings", "get", "upload_limit"]);
    assert_eq!(shown.trim(), "upload_limit = 1 MiB/s");

    // 3 MiB at 1 MiB/s: about 3 s.
    let dir = home.dir("Up");
    let data = common::pattern(3 * MIB, 7);
    write(&dir.join("big.bin"), &data);
    let start = Instant::now();
    home.add(&dir, &["--mode", "upload-only"]);
    home.sync_now(&dir);
    let took = start.elapsed();
    eprintln!("3 MiB synced at 1 MiB/s: {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "3 MiB went up in {took:?} under a 1 MiB/s limit"
    );
    assert_eq!(dav.get("Up/big.bin"), data);
    home.stop();
}
