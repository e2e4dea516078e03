//! Bandwidth limits on a real mount of the embedded server: an upload through the mount at
//! 1 MiB/s takes about as long as its size says, and so does a read; `cloudmount settings set`
//! changes the limit of the running daemon live, in the middle of a transfer (lifting it
//! makes a slow transfer finish at once). Speeds are asserted loosely (these machines are
//! busy): the lower bounds are what prove a limit holds.
//!
//! File operations on a mount block in the kernel until the daemon answers: plain `#[test]`s.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::mount::*;
use common::pattern;

const MIB: usize = 1 << 20;

fn cli_ok(m: &Mounted, args: &[&str]) -> String {
    let out = m.cli(args);
    assert!(
        out.status.success(),
        "cloudmount {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `data` to `rel` on the mount and closes it; the upload starts at once
/// (write-back delay 0).
fn write_file(m: &Mounted, rel: &str, data: &[u8]) {
    let mut f = std::fs::File::create(m.path(rel)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().ok();
}

/// Polls until the upload queue is empty; the time it took, or `None` after `limit`.
fn uploaded_within(m: &Mounted, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if m.status().queue.files == 0 {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn upload_limit_holds_and_changes_live() {
    let server = common::embedded_server(None);
    let srv = Server::embedded(&server);
    let dav = Dav::fresh(&srv, "throttle-up");
    // The limit comes from the settings file, read when the daemon starts.
    let opts = MountOpts::for_server(&srv).home_file(
        "config/cloudmount/settings.toml",
        b"version = 1\nupload_limit = \"1M\"\n",
    );
    let m = Mounted::new(&dav.url, &opts);
    let status = m.status_text();
    assert!(
        status.contains("Bandwidth limits: upload 1 MiB/s, download 0 (no limit)"),
        "{status}"
    );

    // 5 MiB at 1 MiB/s: about 5 s (less a burst of 1/8 s).
    let a = pattern(5 * MIB, 1);
    let start = Instant::now();
    write_file(&m, "a.bin", &a);
    let took = uploaded_within(&m, Duration::from_secs(60))
        .map(|_| start.elapsed())
        .unwrap_or_else(|| panic!("a.bin not uploaded in 60 s\n{}", m.daemon_log()));
    eprintln!("5 MiB upload at 1 MiB/s: {took:?}");
    assert!(
        took >= Duration::from_millis(3500),
        "5 MiB went up in {took:?} under a 1 MiB/s limit"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(dav.get("a.bin"), a);

    // Slower, live (20 s for 5 MiB), then no limit in the middle of the upload.
    let out = cli_ok(&m, &["settings", "set", "upload_limit", "256K"]);
    assert!(out.contains("applied now to 1 running daemon"), "{out}");
    let b = pattern(5 * MIB, 2);
    write_file(&m, "b.bin", &b);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        m.status().queue.files,
        1,
        "b.bin is still going up at 256 KiB/s"
    );
    let lifted = Instant::now();
    cli_ok(&m, &["settings", "set", "upload_limit", "0"]);
    let rest = uploaded_within(&m, Duration::from_secs(60))
        .map(|_| lifted.elapsed())
        .unwrap_or_else(|| panic!("b.bin not uploaded in 60 s\n{}", m.daemon_log()));
    eprintln!("rest of the 5 MiB upload once the limit was lifted: {rest:?}");
    // At 256 KiB/s about 18 s were left.
    assert!(
        rest < Duration::from_secs(6),
        "the upload went on slowly after the limit was lifted: {rest:?}"
    );
    assert_eq!(dav.get("b.bin"), b);
    let status = m.status_text();
    assert!(!status.contains("Bandwidth limits"), "{status}");
    m.unmount();
}

#[test]
fn download_limit_holds_and_changes_live() {
    let server = common::embedded_server(None);
    let srv = Server::embedded(&server);
    let dav = Dav::fresh(&srv, "throttle-down");
    let a = pattern(5 * MIB, 3);
    let b = pattern(5 * MIB, 4);
    dav.put("a.bin", &a);
    dav.put("b.bin", &b);
    // The limit of this mount, from its flag.
    let opts = MountOpts::for_server(&srv)
        .arg("--download-limit")
        .arg("1M");
    let m = Mounted::new(&dav.url, &opts);
    let status = m.status_text();
    assert!(
        status.contains("Bandwidth limits: upload 0 (no limit), download 1 MiB/s"),
        "{status}"
    );

    let start = Instant::now();
    let got = std::fs::read(m.path("a.bin")).unwrap();
    let took = start.elapsed();
    eprintln!("5 MiB read at 1 MiB/s: {took:?}");
    assert!(got == a, "a.bin read back differs");
    assert!(
        took >= Duration::from_millis(3500),
        "5 MiB came down in {took:?} under a 1 MiB/s limit"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");

    // Slower, live, then no limit in the middle of the read.
    cli_ok(&m, &["settings", "set", "download_limit", "256K"]);
    let path = m.path("b.bin");
    let reader = std::thread::spawn(move || {
        let got = std::fs::read(path).unwrap();
        (got, Instant::now())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!reader.is_finished(), "b.bin is still coming at 256 KiB/s");
    let lifted = Instant::now();
    cli_ok(&m, &["settings", "set", "download_limit", "0"]);
    let (got, done) = reader.join().unwrap();
    let rest = done.duration_since(lifted);
    eprintln!("rest of the 5 MiB read once the limit was lifted: {rest:?}");
    assert!(got == b, "b.bin read back differs");
    assert!(
        rest < Duration::from_secs(6),
        "the read went on slowly after the limit was lifted: {rest:?}"
    );
    m.unmount();
}
