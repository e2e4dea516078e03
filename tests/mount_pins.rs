//! Files and folders kept on this device (pins), on real mounts: `cloudmount pin --wait`
//! downloads a whole tree, which then lists and reads with the server unreachable; files
//! new or changed on the server under a pin are fetched; pinned bytes are outside the cache
//! budget; an exception inside a pinned folder; `free` never drops unsaved changes; pins
//! survive a remount; a pin that would not fit on the disk is refused; `setfattr` pins too.
//! Apache (ETags in listings) and nginx (none: versions from size and mtime).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mount::*;
use common::pattern;
use common::proxy::{target_of, FaultProxy, ProxyMode};

const MIB: usize = 1 << 20;

macro_rules! pin_tests {
    ($($case:ident),* $(,)?) => {
        pin_tests!(@server apache_basic; $($case),*);
        pin_tests!(@server nginx; $($case),*);
    };
    (@server $s:ident; $($case:ident),*) => {
        mod $s {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::Server::$s());
                }
            )*
        }
    };
}

pin_tests!(
    a_pinned_tree_is_downloaded_and_reads_and_lists_offline,
    files_new_or_changed_on_the_server_under_a_pin_are_fetched,
    pinned_bytes_are_outside_the_budget_and_never_evicted,
    an_exception_inside_a_pinned_folder_is_not_kept,
    free_drops_cached_copies_but_never_unsaved_changes,
    pins_survive_a_remount,
    setfattr_pins_and_unpins,
);

fn state(p: &Path) -> String {
    state_of(p).unwrap_or_else(|e| panic!("{e}"))
}

/// A tree of `files` (relative path → content) on the server, below `dir`.
fn seed(dav: &Dav) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("Proj/a.txt".to_string(), b"hello\n".to_vec()),
        ("Proj/empty".to_string(), Vec::new()),
        ("Proj/sub/big.bin".to_string(), pattern(3 * MIB + 17, 3)),
        ("Proj/sub/deeper/x".to_string(), pattern(40_000, 4)),
        ("Proj/sub/deeper/y z #1".to_string(), pattern(100, 5)),
        ("Other/not pinned".to_string(), pattern(5000, 6)),
    ];
    for d in ["Proj", "Proj/sub", "Proj/sub/deeper", "Other"] {
        dav.mkdir(d);
    }
    for (p, data) in &files {
        dav.put(p, data);
    }
    files
}

fn pin_wait(m: &Mounted, rel: &str) -> String {
    let out = m.cli_ok(&["pin".as_ref(), m.path(rel).as_os_str(), "--wait".as_ref()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the pin at `shown` reports complete.
fn wait_complete(m: &Mounted, shown: &str) {
    eventually(Duration::from_secs(60), "the pin is complete", || {
        let st = m.status();
        st.pins
            .iter()
            .find(|p| p.path == shown)
            .filter(|p| p.state == cloudmount::vfs::status::PinPhase::Complete)
            .map(|_| ())
    });
}

fn a_pinned_tree_is_downloaded_and_reads_and_lists_offline(s: &Server) {
    let dav = Dav::fresh(s, "pin");
    let files = seed(&dav);
    let proxy = FaultProxy::start_blocking(target_of(&dav.url));
    let m = Mounted::new(&proxy.url_for(&dav.url), &MountOpts::for_server(s));

    let out = pin_wait(&m, "Proj");
    assert!(out.contains("pinned") && out.contains("5 files"), "{out}");
    assert!(out.contains("all on this device"), "{out}");
    // Every file and folder of the tree says pinned; the folder outside does not.
    for (p, _) in files.iter().filter(|(p, _)| p.starts_with("Proj/")) {
        assert_eq!(state(&m.path(p)), "pinned", "{}: {p}", s.name);
    }
    assert_eq!(state(&m.path("Proj/sub/deeper")), "pinned");
    assert_eq!(state(&m.path("Other/not pinned")), "online");
    let st = m.status();
    assert_eq!(st.pins.len(), 1, "{st:?}");
    assert_eq!(st.pins[0].path, "Proj");
    assert_eq!(st.pins[0].files, 5);
    assert!(st.cache.pinned_bytes >= (3 * MIB + 17) as u64, "{st:?}");
    let text = m.status_text();
    assert!(text.contains("pins: 1 pinned item"), "{text}");

    // The server is gone: the whole pinned tree lists and reads; a file never read says so.
    proxy.go_offline();
    let tree = local_tree(&m.path("Proj"));
    let names: Vec<&String> = tree.keys().collect();
    assert_eq!(
        names.len(),
        7,
        "{}: offline listing of the pinned tree: {names:?}",
        s.name
    );
    for (p, data) in files.iter().filter(|(p, _)| p.starts_with("Proj/")) {
        assert_eq!(&read(&m.path(p)), data, "{}: {p} offline", s.name);
    }
    let err = fs::read(m.path("Other/not pinned")).expect_err("an uncached file read offline");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    proxy.set_mode(ProxyMode::Pass);
    m.unmount();
}

fn files_new_or_changed_on_the_server_under_a_pin_are_fetched(s: &Server) {
    let dav = Dav::fresh(s, "pinsrv");
    seed(&dav);
    let proxy = FaultProxy::start_blocking(target_of(&dav.url));
    let m = Mounted::new(&proxy.url_for(&dav.url), &MountOpts::for_server(s));
    pin_wait(&m, "Proj");

    // Another client adds a file in a pinned subfolder and changes one (a new size, so the
    // version differs on servers without ETags too).
    std::thread::sleep(Duration::from_millis(1100));
    let new = pattern(70_000, 9);
    let changed = pattern(50_000, 10);
    dav.put("Proj/sub/deeper/new.bin", &new);
    dav.put("Proj/sub/deeper/x", &changed);
    // A listing (after the 1 s TTL) shows the change: the keeper fetches both.
    std::thread::sleep(Duration::from_millis(1100));
    let _ = fs::read_dir(m.path("Proj/sub/deeper")).unwrap().count();
    eventually(
        Duration::from_secs(30),
        "the new and changed files are pinned",
        || {
            let (a, b) = (
                state(&m.path("Proj/sub/deeper/new.bin")),
                state(&m.path("Proj/sub/deeper/x")),
            );
            (a == "pinned" && b == "pinned").then_some(())
        },
    );
    proxy.go_offline();
    assert_eq!(read(&m.path("Proj/sub/deeper/new.bin")), new, "{}", s.name);
    assert_eq!(read(&m.path("Proj/sub/deeper/x")), changed, "{}", s.name);
    proxy.set_mode(ProxyMode::Pass);
    m.unmount();
}

fn pinned_bytes_are_outside_the_budget_and_never_evicted(s: &Server) {
    let dav = Dav::fresh(s, "pinbudget");
    dav.mkdir("keep");
    dav.mkdir("stream");
    let mut kept = Vec::new();
    for i in 0..3 {
        let data = pattern(2 * MIB + i, i as u8);
        dav.put(&format!("keep/k{i}"), &data);
        kept.push(data);
        dav.put(&format!("stream/s{i}"), &pattern(2 * MIB, 20 + i as u8));
    }
    let proxy = FaultProxy::start_blocking(target_of(&dav.url));
    // A budget of 1 MiB: smaller than any pinned file.
    let m = Mounted::new(
        &proxy.url_for(&dav.url),
        &MountOpts::for_server(s).cache_size("1M"),
    );
    pin_wait(&m, "keep");
    // Reading 6 MiB of unpinned files makes the cache evict: never the pinned ones.
    for i in 0..3 {
        let _ = read(&m.path(&format!("stream/s{i}")));
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = m.status();
    assert!(
        st.cache.pinned_bytes >= (6 * MIB) as u64,
        "{}: pinned bytes {st:?}",
        s.name
    );
    assert!(
        st.cache.used_bytes - st.cache.pinned_bytes <= st.cache.budget_bytes + (2 * MIB) as u64,
        "{}: unpinned bytes kept within the budget (one file open at a time may exceed it): {st:?}",
        s.name
    );
    for i in 0..3 {
        assert_eq!(state(&m.path(&format!("keep/k{i}"))), "pinned");
    }
    proxy.go_offline();
    for (i, data) in kept.iter().enumerate() {
        assert_eq!(&read(&m.path(&format!("keep/k{i}"))), data, "{}", s.name);
    }
    proxy.set_mode(ProxyMode::Pass);
    m.unmount();
}

fn an_exception_inside_a_pinned_folder_is_not_kept(s: &Server) {
    let dav = Dav::fresh(s, "pinexc");
    seed(&dav);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(s));
    pin_wait(&m, "Proj");
    m.cli_ok(&["unpin".as_ref(), m.path("Proj/sub/big.bin").as_os_str()]);
    // Cached still, no longer kept; the rest of the folder stays pinned.
    assert_eq!(state(&m.path("Proj/sub/big.bin")), "cached");
    assert_eq!(state(&m.path("Proj/sub/deeper/x")), "pinned");
    assert_eq!(state(&m.path("Proj/a.txt")), "pinned");
    // Pinning the folder again takes the exception away.
    pin_wait(&m, "Proj");
    assert_eq!(state(&m.path("Proj/sub/big.bin")), "pinned");
    // Unpinning the folder unpins everything in it.
    m.cli_ok(&["unpin".as_ref(), m.path("Proj").as_os_str()]);
    assert_eq!(state(&m.path("Proj/a.txt")), "cached");
    assert_eq!(state(&m.path("Proj")), "online");
    assert!(m.status().pins.is_empty());
    m.unmount();
}

fn free_drops_cached_copies_but_never_unsaved_changes(s: &Server) {
    let dav = Dav::fresh(s, "pinfree");
    seed(&dav);
    // Changes wait 1 h before their upload: a file written now stays unsaved on the server.
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(
        &dav.url,
        &MountOpts::for_server(s)
            .write_back_delay("1h")
            .cache_dir(cache.path()),
    );
    pin_wait(&m, "Proj");
    let mine = pattern(12_345, 42);
    fs::write(m.path("Proj/sub/mine.txt"), &mine).unwrap();
    let out = m.cli_ok(&["free".as_ref(), m.path("Proj").as_os_str()]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("freed"), "{out}");
    assert_eq!(state(&m.path("Proj/sub/big.bin")), "online", "{}", s.name);
    assert_eq!(state(&m.path("Proj/a.txt")), "online");
    assert_eq!(state(&m.path("Proj/sub/mine.txt")), "dirty");
    assert_eq!(read(&m.path("Proj/sub/mine.txt")), mine);
    let st = m.status();
    assert!(st.pins.is_empty(), "{st:?}");
    assert_eq!(st.cache.pinned_bytes, 0);
    assert_eq!(st.queue.files, 1, "{st:?}");
    // Left queued (the delay is an hour), then uploaded by the next mount of the cache.
    m.unmount_no_wait();
    let m = Mounted::new(&dav.url, &MountOpts::for_server(s).cache_dir(cache.path()));
    m.settle();
    assert_eq!(
        dav.get("Proj/sub/mine.txt"),
        mine,
        "uploaded by the next mount"
    );
    m.unmount();
}

fn pins_survive_a_remount(s: &Server) {
    let dav = Dav::fresh(s, "pinremount");
    let files = seed(&dav);
    let cache = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start_blocking(target_of(&dav.url));
    let url = proxy.url_for(&dav.url);
    let opts = MountOpts::for_server(s).cache_dir(cache.path());
    let m = Mounted::new(&url, &opts);
    pin_wait(&m, "Proj/sub");
    m.unmount();

    let m = Mounted::new(&url, &opts);
    wait_complete(&m, "Proj/sub");
    assert_eq!(state(&m.path("Proj/sub/big.bin")), "pinned");
    assert_eq!(state(&m.path("Proj/a.txt")), "online");
    m.unmount();

    // And a mount that starts with the server unreachable reads them from its cache.
    proxy.go_offline();
    let m = Mounted::new(&url, &opts);
    for (p, data) in files.iter().filter(|(p, _)| p.starts_with("Proj/sub/")) {
        assert_eq!(
            &read(&m.path(p)),
            data,
            "{}: {p} offline after a remount",
            s.name
        );
    }
    proxy.set_mode(ProxyMode::Pass);
    m.unmount();
}

fn setfattr_pins_and_unpins(s: &Server) {
    let dav = Dav::fresh(s, "pinxattr");
    seed(&dav);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(s));
    let f = m.path("Proj/sub/big.bin");
    let st = Command::new("setfattr")
        .args(["-n", "user.cloudmount.pin", "-v", "1"])
        .arg(&f)
        .status()
        .expect("setfattr");
    assert!(st.success(), "setfattr pin: {st}");
    eventually(Duration::from_secs(30), "the file is pinned", || {
        (state(&f) == "pinned").then_some(())
    });
    // A value other than 0 or 1 is refused with EINVAL; other names are not supported.
    let bad = Command::new("setfattr")
        .args(["-n", "user.cloudmount.pin", "-v", "yes"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Invalid argument"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let other = Command::new("setfattr")
        .args(["-n", "user.other", "-v", "1"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("not supported"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let st = Command::new("setfattr")
        .args(["-n", "user.cloudmount.pin", "-v", "0"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(state(&f), "cached");
    m.unmount();
}

/// A pin whose download would leave the cache's disk with less than 5 % free is refused with
/// the reason, and nothing is pinned. The cache is on a 24 MiB tmpfs (mounted by the test:
/// root only).
#[test]
fn a_pin_that_would_not_fit_on_the_disk_is_refused() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "pinfull");
    dav.mkdir("big");
    for i in 0..4 {
        dav.put(&format!("big/f{i}"), &pattern(6 * MIB, i as u8));
    }
    let small = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(small.path())
        .status()
        .expect("mount tmpfs");
    assert!(
        st.success(),
        "mount -t tmpfs (this test needs root: .config/nextest.toml keeps it root): {st}"
    );
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _umount = Umount(small.path().to_path_buf());
    let m = Mounted::new(
        &dav.url,
        &MountOpts::for_server(&s).cache_dir(&small.path().join("cache")),
    );
    let out = m.cli(&["pin".as_ref(), m.path("big").as_os_str()]);
    assert!(!out.status.success(), "a 24 MiB pin fit on a 24 MiB disk");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs") && err.contains("free"),
        "the refusal says why: {err}"
    );
    assert!(m.status().pins.is_empty());
    assert_eq!(state(&m.path("big/f0")), "online");
    // Half of it fits.
    m.cli_ok(&[
        "pin".as_ref(),
        m.path("big/f1").as_os_str(),
        "--wait".as_ref(),
    ]);
    assert_eq!(state(&m.path("big/f1")), "pinned");
    // The cache itself keeps to the floor: with the disk filled by something else to below
    // 5 % free, a file read through the mount reads whole and exact, and nothing of it is kept.
    let free = || {
        let st = statvfs(small.path());
        st.f_frsize as u64 * st.f_bavail as u64
    };
    let filler = small.path().join("filler");
    let room = free().saturating_sub(512 * 1024);
    fs::write(&filler, vec![0u8; room as usize]).expect("fill the disk");
    let before = free();
    assert!(
        before < (24 * MIB / 20) as u64,
        "the disk is below the floor: {before} free"
    );
    // The cache looks at the free space at most once a second.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(fs::read(m.path("big/f2")).unwrap(), pattern(6 * MIB, 2));
    assert_eq!(state(&m.path("big/f2")), "online", "nothing of it is kept");
    assert!(
        free() + 64 * 1024 >= before,
        "the cache grew: {} → {} free",
        before,
        free()
    );
    m.unmount();
}

/// A path outside any mount gets a clear error, and the command fails.
#[test]
fn pinning_a_path_outside_a_mount_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloudmount"))
        .arg("pin")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not inside a cloudmount mount"), "{err}");
}

/// A file larger than the cache's budget is read from the server as a stream while it is
/// open, never through the cache: sequential and random reads return its bytes, and the cache
/// stays within its budget with the file open (it used to grow to the file's size until the
/// file was closed).
#[test]
fn a_file_larger_than_the_cache_is_read_within_the_budget() {
    use std::os::unix::fs::FileExt;
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "stream");
    let data = pattern(24 * MIB + 5, 77);
    dav.put("huge.bin", &data);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_size("2M"));
    let f = fs::File::open(m.path("huge.bin")).unwrap();
    // Sequentially, in 1 MiB reads.
    let mut at = 0;
    let mut buf = vec![0u8; MIB];
    while at < data.len() {
        let n = f.read_at(&mut buf, at as u64).unwrap();
        assert!(n > 0, "short read at {at}");
        assert_eq!(&buf[..n], &data[at..at + n], "bytes at {at}");
        at += n;
    }
    // Jumping around, backwards too, across the GETs' spans.
    let mut x: u64 = 12345;
    for _ in 0..40 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 16) as usize % (data.len() - 1);
        let len = 1 + (x >> 40) as usize % (3 * MIB);
        let mut b = vec![0u8; len];
        let n = f.read_at(&mut b, off as u64).unwrap();
        let want = &data[off..(off + len).min(data.len())];
        assert_eq!(&b[..n], want, "{len} bytes at {off}");
    }
    let st = m.status();
    assert!(
        st.cache.used_bytes <= st.cache.budget_bytes,
        "the cache grew past its budget with the file open: {st:?}"
    );
    drop(f);
    assert_eq!(state(&m.path("huge.bin")), "online");
    // Pinned, it is kept whole (pins are outside the budget) and read from the cache.
    pin_wait(&m, "huge.bin");
    assert_eq!(read(&m.path("huge.bin")), data);
    m.unmount();
}

/// A PNG of `w` x `h` pixels of noise (so it does not compress): a real image a thumbnailer
/// can read.
fn noise_png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    fn crc32(b: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &x in b {
            crc ^= u32::from(x);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn adler(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for &x in b {
            a = (a + u32::from(x)) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }
    let noise = pattern((w * h * 3) as usize, seed);
    let mut raw = Vec::with_capacity(noise.len() + h as usize);
    for row in noise.chunks(w as usize * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    // zlib with stored (uncompressed) blocks.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A file manager's thumbnailer (GNOME's `gdk-pixbuf-thumbnailer`, as Nautilus runs it)
/// looking at a folder does not fill the cache: a small picture not on this device is read
/// from the server and its thumbnail made, but it stays `online`; a picture larger than 8 MiB
/// is not downloaded for a thumbnail at all (the thumbnailer fails). Once the file is on this
/// device, its thumbnail is made from the cache.
#[test]
fn thumbnailers_do_not_download_folders_into_the_cache() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "thumbs");
    dav.put("small.png", &noise_png(64, 48, 1));
    let big = noise_png(1800, 1600, 2);
    assert!(big.len() > 8 * MIB, "{}", big.len());
    dav.put("big.png", &big);
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let out = tempfile::tempdir().unwrap();
    let thumb = |name: &str| {
        Command::new("gdk-pixbuf-thumbnailer")
            .args(["-s", "64"])
            .arg(m.path(name))
            .arg(out.path().join(format!("{name}.thumb.png")))
            .output()
            .expect("gdk-pixbuf-thumbnailer (Debian package libgdk-pixbuf2.0-bin)")
    };
    let small = thumb("small.png");
    assert!(
        small.status.success(),
        "thumbnail of a small picture: {}",
        String::from_utf8_lossy(&small.stderr)
    );
    assert!(out.path().join("small.png.thumb.png").exists());
    assert_eq!(
        state(&m.path("small.png")),
        "online",
        "a thumbnail cached it"
    );
    let refused = thumb("big.png");
    assert!(
        !refused.status.success(),
        "a thumbnailer downloaded a {} byte picture",
        big.len()
    );
    assert_eq!(state(&m.path("big.png")), "online");
    assert_eq!(m.status().cache.used_bytes, 0, "{:?}", m.status());
    // Opened by anyone else, it is read and cached; then the thumbnail is made from the cache.
    assert_eq!(read(&m.path("big.png")), big);
    assert_eq!(state(&m.path("big.png")), "cached");
    let made = thumb("big.png");
    assert!(
        made.status.success(),
        "thumbnail of a cached picture: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    m.unmount();
}
