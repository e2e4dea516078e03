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

/// The rate of the running upload over `over`, from the bytes sent that `status` reports.
fn sent_rate(m: &Mounted, over: Duration) -> f64 {
    let (t0, s0) = (Instant::now(), m.status().queue.in_flight_sent);
    std::thread::sleep(over);
    let (t1, s1) = (Instant::now(), m.status().queue.in_flight_sent);
    s1.saturating_sub(s0) as f64 / t1.duration_since(t0).as_secs_f64()
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
        status.contains("bandwidth limits: upload 1 MiB/s, download 0 (no limit)"),
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

    // Mid-upload: slower, live, then no limit.
    let b = pattern(6 * MIB, 2);
    write_file(&m, "b.bin", &b);
    std::thread::sleep(Duration::from_millis(500));
    let before = sent_rate(&m, Duration::from_secs(1));
    let out = m.cli_ok(&["settings", "set", "upload_limit", "256K"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("applied now to 1 running daemon"), "{said}");
    // Within a second the new rate holds.
    std::thread::sleep(Duration::from_millis(700));
    let after = sent_rate(&m, Duration::from_secs(2));
    eprintln!("upload rate before the change {before:.0} B/s, after {after:.0} B/s");
    assert!(before > 600_000.0, "at 1 MiB/s: {before:.0} B/s");
    assert!(after < 400_000.0, "at 256 KiB/s: {after:.0} B/s");
    assert_eq!(m.status().queue.files, 1, "b.bin is still going up");
    let lifted = Instant::now();
    m.cli_ok(&["settings", "set", "upload_limit", "0"]);
    let rest = uploaded_within(&m, Duration::from_secs(60))
        .map(|_| lifted.elapsed())
        .unwrap_or_else(|| panic!("b.bin not uploaded in 60 s\n{}", m.daemon_log()));
    eprintln!("rest of the 6 MiB upload once the limit was lifted: {rest:?}");
    // At 256 KiB/s more than 10 s were left.
    assert!(
        rest < Duration::from_secs(6),
        "the upload went on slowly after the limit was lifted: {rest:?}"
    );
    assert_eq!(dav.get("b.bin"), b);
    let status = m.status_text();
    assert!(!status.contains("bandwidth limits"), "{status}");
    m.unmount();
}

/// Reads the file at `path` in 64 KiB reads; its bytes, and when each read returned with the
/// total read by then (the first mark is the start).
fn read_timed(path: &std::path::Path) -> (Vec<u8>, Vec<(Instant, u64)>) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    let mut marks = vec![(Instant::now(), 0)];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return (out, marks);
        }
        out.extend_from_slice(&buf[..n]);
        marks.push((Instant::now(), out.len() as u64));
    }
}

/// The bytes read by `t`, from [`read_timed`]'s marks.
fn bytes_by(marks: &[(Instant, u64)], t: Instant) -> u64 {
    marks
        .iter()
        .take_while(|(when, _)| *when <= t)
        .last()
        .map_or(0, |(_, n)| *n)
}

#[test]
fn download_limit_holds_and_changes_live() {
    let server = common::embedded_server(None);
    let srv = Server::embedded(&server);
    let dav = Dav::fresh(&srv, "throttle-down");
    let a = pattern(5 * MIB, 3);
    let b = pattern(6 * MIB, 4);
    dav.put("a.bin", &a);
    dav.put("b.bin", &b);
    // The limit of this mount, from its flag.
    let opts = MountOpts::for_server(&srv)
        .arg("--download-limit")
        .arg("1M");
    let m = Mounted::new(&dav.url, &opts);
    let status = m.status_text();
    assert!(
        status.contains("bandwidth limits: upload 0 (no limit), download 1 MiB/s"),
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

    // Mid-read: slower, live, then no limit. Reads see the data a block (1 MiB) at a time,
    // after the read-ahead's share: what shows the change is when the read ends. At 1 MiB/s
    // throughout, 6 MiB are read in about 6 s; slowed to 256 KiB/s after 1.5 s, only about
    // 3 MiB have come by 7.5 s.
    let path = m.path("b.bin");
    let began = Instant::now();
    let reader = std::thread::spawn(move || read_timed(&path));
    std::thread::sleep(Duration::from_millis(1500));
    m.cli_ok(&["settings", "set", "download_limit", "256K"]);
    std::thread::sleep(Duration::from_millis(7500).saturating_sub(began.elapsed()));
    assert!(
        !reader.is_finished(),
        "b.bin was read as fast as at 1 MiB/s: the lower limit did not hold"
    );
    let lifted = Instant::now();
    m.cli_ok(&["settings", "set", "download_limit", "0"]);
    let (got, marks) = reader.join().unwrap();
    assert!(got == b, "b.bin read back differs");
    let by_lift = bytes_by(&marks, lifted);
    let rest = marks.last().unwrap().0.duration_since(lifted);
    eprintln!(
        "read when the limit was lifted ({:.1} s after the start): {by_lift} B; rest once \
         lifted {rest:?}",
        lifted.duration_since(began).as_secs_f64()
    );
    // At 256 KiB/s about 12 s were left.
    assert!(
        rest < Duration::from_secs(6),
        "the read went on slowly after the limit was lifted: {rest:?}"
    );
    m.unmount();
}
