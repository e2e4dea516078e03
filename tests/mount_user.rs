//! Users mount their drive as themselves, not as root. This binary, like every real-mount test
//! binary, runs as the normal user the test command prepares (`CLOUDMOUNT_TEST_UNIX_USER`;
//! `.config/nextest.toml` runs it through `tests/as-user.sh`), with FUSE as Debian gives it to
//! users: `/dev/fuse` usable by all, `fusermount3` setuid root, `/etc/fuse.conf` as installed
//! (`user_allow_other` commented out). What such a user gets: the mount and unmount, the
//! control socket under their `XDG_RUNTIME_DIR`, the config, cache and logs under their home,
//! `--allow-other` refused with the reason, and a write in a read-only area refused by the
//! kernel's permission check (EACCES).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::mount::*;

/// The uid and gid of this process, which must be the test command's normal user.
fn the_user() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_ne!(
        uid, 0,
        "the mount tests run as a normal user, not root: run them with tests/run.sh \
         (.config/nextest.toml runs this binary through tests/as-user.sh)"
    );
    assert_eq!(
        common::sync::user().uid,
        uid,
        "the test runs as {}",
        common::env("CLOUDMOUNT_TEST_UNIX_USER")
    );
    (uid, gid)
}

/// The real, effective, saved and filesystem uids of process `pid`.
fn uids_of(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid: in /proc/PID/status")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// A normal user mounts, writes, and unmounts: the mount is theirs (`user_id=` in mountinfo,
/// not `allow_other`), the daemon runs as them, files show them as owner, and what they write
/// reaches the server.
#[test]
fn a_normal_user_mounts_writes_and_unmounts() {
    let (uid, gid) = the_user();
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "as-user");
    dav.put("there.txt", b"from the server");
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let info = mount_info(&m.dir).expect("mounted");
    let opts: Vec<&str> = info.super_options.split(',').collect();
    assert!(
        opts.contains(&format!("user_id={uid}").as_str())
            && opts.contains(&format!("group_id={gid}").as_str()),
        "the mount belongs to the user: {info:?}"
    );
    assert!(!opts.contains(&"allow_other"), "{info:?}");
    assert_eq!(uids_of(m.daemon_pid()), vec![uid; 4], "the daemon's uids");

    assert_eq!(read(&m.path("there.txt")), b"from the server");
    fs::write(m.path("mine.txt"), b"written by a normal user").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    for p in ["there.txt", "mine.txt", "dir"] {
        let md = fs::metadata(m.path(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid), "owner of {p}");
    }
    m.settle();
    assert_eq!(dav.get("mine.txt"), b"written by a normal user");
    assert!(dav.stat("dir").is_some_and(|e| e.is_dir()));

    let dir = m.dir.clone();
    m.unmount();
    assert!(mount_info(&dir).is_none(), "still mounted after unmount");
}

/// The daemon's state file and control socket are in the user's `XDG_RUNTIME_DIR`
/// (`cloudmount/`, private to the user), `status` talks to the daemon through it, and the
/// unmount removes them.
#[test]
fn the_control_socket_is_in_the_users_runtime_dir() {
    let (uid, _) = the_user();
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "as-user-socket");
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let dir = m.runtime_dir().join("cloudmount");
    let md = fs::metadata(&dir).unwrap();
    assert_eq!(md.uid(), uid, "owner of {}", dir.display());
    assert_eq!(md.mode() & 0o777, 0o700, "{} is private", dir.display());
    let mut sockets = Vec::new();
    let mut pids = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(md.uid(), uid, "owner of {}", e.path().display());
        if md.file_type().is_socket() {
            sockets.push(e.path());
        } else if e.path().extension().is_some_and(|x| x == "pid") {
            pids.push(e.path());
        }
    }
    assert_eq!(sockets.len(), 1, "one control socket in {}", dir.display());
    assert_eq!(pids.len(), 1, "one state file in {}", dir.display());
    // `status` reaches the daemon over that socket.
    fs::write(m.path("f"), b"x").unwrap();
    m.settle();
    assert_eq!(m.status().queue.files, 0);
    m.unmount();
    assert!(!sockets[0].exists(), "the control socket is removed");
    assert!(!pids[0].exists(), "the state file is removed");
}

/// With a session's environment (`HOME`, `XDG_RUNTIME_DIR`, no other `XDG_*`, no
/// `--cache-dir`), the profile is read from `~/.config/cloudmount/config.toml`, the cache is
/// `~/.cache/cloudmount/PROFILE` and the log is under `~/.local/state/cloudmount`: all in the
/// user's home, all the user's.
#[test]
fn the_config_cache_and_logs_are_in_the_users_home() {
    let (uid, _) = the_user();
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "as-user-home");
    dav.put("cached.txt", b"read once, then from the cache");
    let config = format!(
        "[profiles.mine]\nurl = {:?}\nuser = {:?}\n",
        dav.url, s.user
    );
    let mut opts = MountOpts::for_server(&s)
        .home_defaults()
        .home_file(".config/cloudmount/config.toml", config.as_bytes());
    opts.user = None; // from the profile; the password from CLOUDMOUNT_PASSWORD
    let m = Mounted::new("mine", &opts);
    assert_eq!(
        read(&m.path("cached.txt")),
        b"read once, then from the cache"
    );
    fs::write(m.path("new.txt"), b"new").unwrap();
    m.settle();
    assert_eq!(dav.get("new.txt"), b"new");

    let home = m.home().to_path_buf();
    let cache = home.join(".cache/cloudmount/mine");
    assert!(
        cache.join("meta.db").is_file(),
        "the profile's cache is {}: {:?}",
        cache.display(),
        fs::read_dir(home.join(".cache/cloudmount"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let logs = home.join(".local/state/cloudmount");
    let log_files: Vec<_> = fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("the daemon's logs are in {}: {e}", logs.display()))
        .flatten()
        .collect();
    assert!(!log_files.is_empty(), "a daemon log in {}", logs.display());
    for p in [cache.clone(), cache.join("meta.db"), logs.clone()] {
        assert_eq!(
            fs::metadata(&p).unwrap().uid(),
            uid,
            "owner of {}",
            p.display()
        );
    }
    m.unmount();
}

/// `--allow-other` needs `user_allow_other` in /etc/fuse.conf for a normal user (Debian ships
/// it commented out): the mount is refused, saying so and how to change it, and nothing is left
/// mounted or running. (Where the machine's fuse.conf does enable it, the mount works and is
/// `allow_other`.)
#[test]
fn allow_other_needs_user_allow_other_in_fuse_conf() {
    the_user();
    let enabled = fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other");
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "as-user-allow-other");
    let opts = MountOpts::for_server(&s).arg("--allow-other");
    match Mounted::try_new(&dav.url, &opts) {
        Ok(m) => {
            assert!(
                enabled,
                "--allow-other was accepted, but /etc/fuse.conf does not enable user_allow_other"
            );
            let info = mount_info(&m.dir).expect("mounted");
            assert!(info.super_options.contains("allow_other"), "{info:?}");
            m.unmount();
        }
        Err(e) => {
            assert!(
                !enabled,
                "/etc/fuse.conf enables user_allow_other, yet --allow-other failed: {e}"
            );
            let err = e.stderr();
            assert!(
                err.contains("user_allow_other")
                    && err.contains("/etc/fuse.conf")
                    && err.contains("--allow-other"),
                "the refusal says why and what to change: {err}"
            );
            assert_eq!(
                err.trim().lines().count(),
                1,
                "one message, not a cascade: {err}"
            );
        }
    }
}

/// The demo's `Following` area is read-only. As a normal user, its files show without write
/// bits (0444, folders 0555), so `access(W_OK)`, file managers and `test -w` see it read-only,
/// and the kernel's permission check refuses a write with **EACCES** before it reaches
/// cloudmount (only root, who passes that check, gets the vfs's EROFS). A chmod, which the
/// owner may do whatever the mode bits, reaches cloudmount and is EROFS.
#[test]
fn a_write_in_the_demos_read_only_area_is_eacces() {
    the_user();
    let home = tempfile::Builder::new()
        .prefix("cm-demo-home.")
        .tempdir()
        .unwrap();
    let run = home.path().join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
    let mp = home.path().join("demo");
    let child = Command::new(BIN)
        .arg("demo")
        .arg(&mp)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("CLOUDMOUNT_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run cloudmount demo");
    // Stopped with Ctrl-C (SIGINT) however the test ends; detached if it will not stop.
    struct Demo(Child, std::path::PathBuf);
    impl Drop for Demo {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
                for _ in 0..300 {
                    if self.0.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = self.0.kill();
                let _ = self.0.wait();
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.1)
                    .status();
            }
        }
    }
    let mut demo = Demo(child, mp.clone());
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("Ctrl-C") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .expect("the demo says it is mounted");
    assert!(mount_info(&mp).is_some(), "the demo is mounted");

    let following = mp.join("Following");
    let dir = following.join("Recipes from Bob");
    let file = dir.join("pancakes.txt");
    assert!(String::from_utf8(read(&file))
        .unwrap()
        .contains("read-only"));
    assert_eq!(
        fs::metadata(&file).unwrap().mode() & 0o777,
        0o444,
        "mode of a file"
    );
    assert_eq!(
        fs::metadata(&dir).unwrap().mode() & 0o777,
        0o555,
        "mode of a folder"
    );
    let eacces = |r: std::io::Result<()>, what: &str| {
        assert_eq!(errno_of(r, what), libc::EACCES, "{what} in Following");
    };
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let res = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: valid paths.
    eacces(
        res(unsafe { libc::access(c(&file).as_ptr(), libc::W_OK) }),
        "access(W_OK)",
    );
    eacces(
        OpenOptions::new().write(true).open(&file).map(drop),
        "open for writing",
    );
    eacces(
        OpenOptions::new().append(true).open(&file).map(drop),
        "open for appending",
    );
    // SAFETY: a valid path.
    eacces(
        res(unsafe { libc::truncate(c(&file).as_ptr(), 0) }),
        "truncate",
    );
    eacces(File::create(dir.join("new.txt")).map(drop), "create");
    eacces(fs::create_dir(dir.join("new")), "mkdir");
    eacces(fs::remove_file(&file), "unlink");
    eacces(fs::rename(&file, dir.join("moved.txt")), "rename");
    eacces(fs::remove_dir(&dir), "rmdir");
    // A chmod by the owner passes the kernel's check and is refused by cloudmount.
    let chmod = fs::set_permissions(&file, fs::Permissions::from_mode(0o644));
    assert_eq!(errno_of(chmod, "chmod"), libc::EROFS, "chmod in Following");
    assert!(String::from_utf8(read(&file))
        .unwrap()
        .contains("read-only"));

    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(demo.0.id() as libc::pid_t, libc::SIGINT) };
    let status = eventually(Duration::from_secs(60), "the demo stops on Ctrl-C", || {
        demo.0.try_wait().unwrap()
    });
    assert!(status.success(), "the demo exits 0 on Ctrl-C: {status}");
    assert!(mount_info(&mp).is_none(), "the demo unmounted");
}
