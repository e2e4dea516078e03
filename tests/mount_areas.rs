//! Areas keep their identity across changes of the profile: files queued for upload in one
//! area go to that area's folder whatever the order of the areas, and the files of an area taken
//! out of the profile wait, reported by `status`, until it is back. Real mounts of a profile
//! with two areas on Apache and rclone; the daemon is killed with uploads queued, the profile
//! edited, and the same cache mounted again.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::mount::*;

macro_rules! area_tests {
    ($($case:ident),* $(,)?) => {
        area_tests!(@server apache_basic; $($case),*);
        area_tests!(@server rclone; $($case),*);
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

area_tests!(
    reordered_areas_upload_queued_files_to_their_own_folders,
    a_removed_area_keeps_its_queued_files_until_it_is_back,
    a_cache_mounted_with_another_url_sends_nothing_there,
);

/// A profile `areatest` with the given (name, URL) areas, written to `dir/config.toml`.
fn write_profile(dir: &Path, s: &Server, areas: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("password");
    fs::write(&pw, format!("{}\n", s.password)).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = format!(
        "[profiles.areatest]\nuser = {:?}\npassword_file = {:?}\n",
        s.user,
        pw.to_str().unwrap()
    );
    for (name, url) in areas {
        text.push_str(&format!(
            "\n[[profiles.areatest.areas]]\nname = {name:?}\nurl = {url:?}\n"
        ));
    }
    let cfg = dir.join("config.toml");
    fs::write(&cfg, text).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    cfg
}

fn mount(s: &Server, cfg: &Path, cache: &Path, delay: &str) -> Mounted {
    let mut opts = MountOpts::for_server(s)
        .arg("--config")
        .arg(cfg)
        .cache_dir(cache)
        .write_back_delay(delay);
    opts.user = None;
    opts.password = None;
    Mounted::new("areatest", &opts)
}

/// Writes files into both areas of a mount whose uploads wait an hour, then kills its daemon:
/// three files stay queued (two in area B, one in area A).
fn queue_and_crash(s: &Server, cfg: &Path, cache: &Path) {
    let mut m = mount(s, cfg, cache, "1h");
    fs::write(m.path("B/one.txt"), b"one, for B").unwrap();
    fs::write(m.path("B/two.txt"), b"two, for B").unwrap();
    fs::write(m.path("A/alpha.txt"), b"alpha, for A").unwrap();
    assert_eq!(m.status().queue.files, 3, "{}: three files queued", s.name);
    m.kill9();
}

fn files_of(d: &Dav) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = d
        .names("")
        .into_iter()
        .map(|n| {
            let data = d.get(&n);
            (n, data)
        })
        .collect();
    v.sort();
    v
}

fn pairs(v: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    v.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect()
}

fn reordered_areas_upload_queued_files_to_their_own_folders(s: &Server) {
    let (a, b) = (Dav::fresh(s, "area-a"), Dav::fresh(s, "area-b"));
    let conf = tempfile::tempdir().unwrap();
    let cache = conf.path().join("cache");
    let cfg = write_profile(conf.path(), s, &[("A", &a.url), ("B", &b.url)]);
    queue_and_crash(s, &cfg, &cache);

    // The areas swapped in the profile (and one renamed): each URL keeps its files.
    write_profile(conf.path(), s, &[("B", &b.url), ("Renamed A", &a.url)]);
    let m = mount(s, &cfg, &cache, "0");
    m.settle();
    assert_eq!(
        files_of(&b),
        pairs(&[("one.txt", b"one, for B"), ("two.txt", b"two, for B")]),
        "{}: B's queued files are in B's folder",
        s.name
    );
    assert_eq!(
        files_of(&a),
        pairs(&[("alpha.txt", b"alpha, for A")]),
        "{}: A's queued file is in A's folder, and only it",
        s.name
    );
    assert_eq!(
        fs::read(m.path("Renamed A/alpha.txt")).unwrap(),
        b"alpha, for A"
    );
    assert!(m.status().other_areas.is_empty());
    m.unmount();
}

fn a_removed_area_keeps_its_queued_files_until_it_is_back(s: &Server) {
    let (a, b) = (Dav::fresh(s, "area-a"), Dav::fresh(s, "area-b"));
    let conf = tempfile::tempdir().unwrap();
    let cache = conf.path().join("cache");
    let cfg = write_profile(conf.path(), s, &[("A", &a.url), ("B", &b.url)]);
    queue_and_crash(s, &cfg, &cache);

    // B taken out of the profile: the mount starts, A's file goes out, B's files wait.
    write_profile(conf.path(), s, &[("A", &a.url)]);
    let m = mount(s, &cfg, &cache, "0");
    m.settle();
    assert_eq!(files_of(&a), pairs(&[("alpha.txt", b"alpha, for A")]));
    assert!(files_of(&b).is_empty(), "{}: nothing reached B", s.name);
    // New files of the remaining area are uploaded as usual.
    fs::write(m.path("A/later.txt"), b"later").unwrap();
    m.settle();
    assert_eq!(a.get("later.txt"), b"later");
    let st = m.status();
    assert_eq!(st.other_areas.len(), 1, "{}: {st:?}", s.name);
    let w = &st.other_areas[0];
    assert_eq!((w.files, w.bytes), (2, 20), "{}: {w:?}", s.name);
    assert_eq!(w.url.as_deref(), Some(b.url.as_str()), "{}: {w:?}", s.name);
    // The human status names the area and what to do.
    let text = m.status_text();
    assert!(
        text.contains(&b.url) && text.contains("2 files"),
        "{}: status does not name the waiting area:\n{text}",
        s.name
    );
    // A plain unmount does not wait for them.
    m.unmount();

    // B back (under another name): its files go out.
    write_profile(conf.path(), s, &[("A", &a.url), ("Back", &b.url)]);
    let m = mount(s, &cfg, &cache, "0");
    m.settle();
    assert_eq!(
        files_of(&b),
        pairs(&[("one.txt", b"one, for B"), ("two.txt", b"two, for B")]),
        "{}: B's files uploaded once it is back",
        s.name
    );
    assert!(m.status().other_areas.is_empty());
    m.unmount();
}

/// One cache mounted with a URL, then (files queued, daemon killed) with another: the queued
/// file is not sent to the other URL; `status` names the first; mounted with it again, the file
/// goes there.
fn a_cache_mounted_with_another_url_sends_nothing_there(s: &Server) {
    let (first, other) = (Dav::fresh(s, "url-first"), Dav::fresh(s, "url-other"));
    let conf = tempfile::tempdir().unwrap();
    let cache = conf.path().join("cache");
    let opts = |delay: &str| {
        MountOpts::for_server(s)
            .cache_dir(&cache)
            .write_back_delay(delay)
    };
    let mut m = Mounted::new(&first.url, &opts("1h"));
    fs::write(m.path("queued.txt"), b"queued for the first URL").unwrap();
    m.kill9();

    let m = Mounted::new(&other.url, &opts("0"));
    m.settle();
    assert!(
        files_of(&other).is_empty(),
        "{}: nothing sent to the other URL",
        s.name
    );
    let st = m.status();
    assert_eq!(st.other_areas.len(), 1, "{}: {st:?}", s.name);
    assert_eq!(st.other_areas[0].url.as_deref(), Some(first.url.as_str()));
    m.unmount();

    let m = Mounted::new(&first.url, &opts("0"));
    m.settle();
    assert_eq!(
        files_of(&first),
        pairs(&[("queued.txt", b"queued for the first URL")])
    );
    m.unmount();
}
