//! The `cloudmount` command as a user runs it: help texts, one-line errors, real background
//! and foreground mounts against the embedded WebDAV server (started in-process), status,
//! unmount (and its waiting for the upload queue), the mount(8) helper, and the demo.
//!
//! Every spawned command gets its own HOME and XDG directories in a temp dir, a timeout, and
//! every mount point a guard that unmounts it (`fusermount3 -u -z`) when the test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use cloudmount::control;
use cloudmount::fuse::mounts;
use cloudmount::instance;
use cloudmount::server::{self, ServeConfig, ServerHandle};

const BIN: &str = env!("CARGO_BIN_EXE_cloudmount");
const TIMEOUT: Duration = Duration::from_secs(60);

/// A HOME with its own XDG directories.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    fn runtime(&self) -> PathBuf {
        self.path().join("run")
    }
    fn state_dir(&self) -> PathBuf {
        self.home().join(".local/state/cloudmount")
    }
    fn config_file(&self) -> PathBuf {
        self.home().join(".config/cloudmount/config.toml")
    }
    /// A new directory under the sandbox.
    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.runtime())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("CLOUDMOUNT_PASSWORD")
            .stdin(Stdio::null());
        c
    }
    /// All daemon logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.state_dir()) {
            for e in rd.flatten() {
                out.push_str(&format!("--- {}\n", e.path().display()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

/// Runs `cmd` to completion within [`TIMEOUT`].
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cloudmount");
    wait_output(child, TIMEOUT)
}

fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let status = wait_status(&mut child, timeout);
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn wait_status(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("command still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with exactly one line on stderr that contains every needle.
fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let err = stderr_of(o);
    assert!(
        !o.status.success(),
        "expected a failure, got success; stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line expected, got: {err}");
    assert!(lines[0].starts_with("cloudmount: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from: {err}");
    }
}

/// The embedded WebDAV server, in this process, on its own runtime.
struct TestServer {
    handle: Option<ServerHandle>,
    rt: tokio::runtime::Runtime,
    root: tempfile::TempDir,
}

const USER: &str = "cmuser";
const PASSWORD: &str = "right-password";

impl TestServer {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let handle = rt
            .block_on(server::start(ServeConfig {
                root: root.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                auth: Some((USER.into(), PASSWORD.into())),
                quota: Some(1 << 30),
            }))
            .expect("embedded server");
        TestServer {
            handle: Some(handle),
            rt,
            root,
        }
    }
    fn url(&self) -> String {
        self.handle.as_ref().unwrap().url()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// Unmounts (lazily) on drop, whatever happened in the test.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn mount_entry(dir: &Path) -> Option<mounts::MountEntry> {
    let canonical = mounts::absolute_mount_path(dir).unwrap();
    mounts::mount_at(&canonical).unwrap()
}

fn is_mounted(dir: &Path) -> bool {
    mount_entry(dir).is_some()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(child: &Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

// ---------------------------------------------------------------------------------------------
// Help and argument errors

#[test]
fn help_of_each_command_names_its_key_options() {
    let sb = Sandbox::new();
    let top = run(&mut sb.cmd(&["--help"]));
    assert!(top.status.success());
    let top = stdout_of(&top);
    for cmd in ["mount", "unmount", "status", "demo", "serve"] {
        assert!(top.contains(cmd), "{cmd} missing from --help: {top}");
    }

    let mount = run(&mut sb.cmd(&["mount", "--help"]));
    assert!(mount.status.success());
    let mount = stdout_of(&mount);
    for needle in [
        "SOURCE",
        "MOUNTPOINT",
        "--user",
        "--password-file",
        "--cache-dir",
        "--cache-size",
        "--dir-cache-time",
        "--read-only",
        "--foreground",
        "--allow-other",
        "-o <OPTS>",
        "--config",
        "CLOUDMOUNT_PASSWORD",
        "chmod 600",
        "allow_other",
        "cache_size=SIZE",
        "cloudmount unmount",
    ] {
        assert!(
            mount.contains(needle),
            "{needle:?} missing from mount --help:\n{mount}"
        );
    }
    assert!(
        !mount.contains("daemon-child"),
        "the internal flag is hidden"
    );

    let unmount = stdout_of(&run(&mut sb.cmd(&["unmount", "--help"])));
    for needle in [
        "MOUNTPOINT",
        "--lazy",
        "uploads",
        "--no-wait",
        "upload queue",
        "Ctrl-C",
        "next mount",
    ] {
        assert!(unmount.contains(needle), "{needle:?} missing: {unmount}");
    }
    let status = stdout_of(&run(&mut sb.cmd(&["status", "--help"])));
    for needle in [
        "MOUNTPOINT",
        "--json",
        "upload queue",
        "conflict",
        "quota",
        "budget",
    ] {
        assert!(status.contains(needle), "{needle:?} missing: {status}");
    }
    let demo = stdout_of(&run(&mut sb.cmd(&["demo", "--help"])));
    for needle in [
        "Cloud Drive",
        "Shared",
        "Following",
        "Ctrl-C",
        "apt install fuse3",
    ] {
        assert!(demo.contains(needle), "{needle:?} missing: {demo}");
    }
}

#[test]
fn bad_size_and_duration_are_clear_errors() {
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let mp = mp.to_str().unwrap();
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", mp, "--cache-size", "10X"]));
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(err.contains("10X") && err.contains("unit"), "{err}");

    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", mp, "-o", "cache_size=lots"]));
    assert_one_line_error(&o, &["cache_size", "lots"]);

    // Zero (or a budget too small to keep anything) is refused, not taken silently.
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", mp, "--cache-size", "0"]));
    assert_one_line_error(&o, &["cache size 0 B is too small", "--cache-size 1G"]);

    let o = run(&mut sb.cmd(&[
        "mount",
        "http://127.0.0.1:1/",
        mp,
        "--dir-cache-time",
        "soon",
    ]));
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("30s"), "{}", stderr_of(&o));

    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", mp, "-o", "ro,frobnicate"]));
    assert_one_line_error(&o, &["unknown mount option", "frobnicate"]);
}

#[test]
fn mount_point_missing_or_not_a_directory() {
    let sb = Sandbox::new();
    let missing = sb.path().join("missing");
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", missing.to_str().unwrap()]));
    assert_one_line_error(&o, &["does not exist", "missing"]);

    let file = sb.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", file.to_str().unwrap()]));
    assert_one_line_error(&o, &["not a directory"]);

    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", "/proc"]));
    assert_one_line_error(&o, &["already a mount point", "proc"]);

    // A directory with files in it: refused before anything else (they would be hidden).
    let full = sb.mkdir("full");
    std::fs::write(full.join("mine.txt"), "x").unwrap();
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", full.to_str().unwrap()]));
    assert_one_line_error(&o, &["not empty", "--allow-non-empty"]);
    assert!(!is_mounted(&full));
    // Allowed, it goes on to the next check (here: the server cannot be reached).
    let o = run(&mut sb.cmd(&[
        "mount",
        "http://127.0.0.1:1/",
        full.to_str().unwrap(),
        "--allow-non-empty",
    ]));
    assert!(!o.status.success());
    assert!(!stderr_of(&o).contains("not empty"), "{}", stderr_of(&o));
    let o = run(&mut sb.cmd(&[
        "mount",
        "http://127.0.0.1:1/",
        full.to_str().unwrap(),
        "-o",
        "nonempty",
    ]));
    assert!(!stderr_of(&o).contains("not empty"), "{}", stderr_of(&o));
    assert_eq!(std::fs::read(full.join("mine.txt")).unwrap(), b"x");
}

#[test]
fn unknown_profile_and_missing_config_are_explained() {
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let o = run(&mut sb.cmd(&["mount", "work", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["\"work\"", "config.toml"]);

    std::fs::create_dir_all(sb.config_file().parent().unwrap()).unwrap();
    std::fs::write(
        sb.config_file(),
        "[profiles.home]\nurl = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    let o = run(&mut sb.cmd(&["mount", "work", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["\"work\"", "profiles: home"]);
}

// ---------------------------------------------------------------------------------------------
// Server checks

#[test]
fn wrong_password_is_refused_and_nothing_is_mounted() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let o = run(sb
        .cmd(&["mount", &srv.url(), mp.to_str().unwrap(), "--user", USER])
        .env("CLOUDMOUNT_PASSWORD", "wrong-password"));
    assert_one_line_error(&o, &["credentials refused", &srv.url()]);
    assert!(!is_mounted(&mp), "no mount left behind");
    assert!(
        !stderr_of(&o).contains("wrong-password"),
        "the password is never shown"
    );

    // Without a user, the error says how to give one.
    let o = run(&mut sb.cmd(&["mount", &srv.url(), mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["--user"]);
    // A user without a password.
    let o = run(&mut sb.cmd(&["mount", &srv.url(), mp.to_str().unwrap(), "--user", USER]));
    assert_one_line_error(
        &o,
        &["no password", "CLOUDMOUNT_PASSWORD", "--password-file"],
    );
    assert!(!is_mounted(&mp));
}

#[test]
fn not_a_collection_and_missing_url_are_refused() {
    let srv = TestServer::start();
    std::fs::write(srv.root.path().join("file.txt"), "hello").unwrap();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let url = format!("{}file.txt", srv.url());
    let o = run(sb
        .cmd(&["mount", &url, mp.to_str().unwrap(), "--user", USER])
        .env("CLOUDMOUNT_PASSWORD", PASSWORD));
    assert_one_line_error(&o, &["not a WebDAV collection"]);
    let url = format!("{}no-such-folder/", srv.url());
    let o = run(sb
        .cmd(&["mount", &url, mp.to_str().unwrap(), "--user", USER])
        .env("CLOUDMOUNT_PASSWORD", PASSWORD));
    assert_one_line_error(&o, &["does not exist"]);
    assert!(!is_mounted(&mp));
}

#[test]
fn unreachable_server_with_empty_cache_fails() {
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    // Port 1 on loopback: connection refused.
    let o = run(&mut sb.cmd(&["mount", "http://127.0.0.1:1/", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["cannot reach", "127.0.0.1:1", "nothing is cached"]);
    assert!(!is_mounted(&mp));
}

// ---------------------------------------------------------------------------------------------
// Secrets

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn password_readable_by_others_is_refused() {
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let pw = sb.home().join(".config/cloudmount/work.password");
    write_mode(&pw, "secret\n", 0o644);
    write_mode(
        &sb.config_file(),
        "[profiles.work]\nurl = \"http://127.0.0.1:1/\"\nuser = \"alice\"\n\
         password_file = \"~/.config/cloudmount/work.password\"\n",
        0o644,
    );
    let o = run(&mut sb.cmd(&["mount", "work", mp.to_str().unwrap()]));
    assert_one_line_error(
        &o,
        &["work.password", "other users can read it", "chmod 600"],
    );

    // The same through --password-file.
    let o = run(&mut sb.cmd(&[
        "mount",
        "http://127.0.0.1:1/",
        mp.to_str().unwrap(),
        "--user",
        "alice",
        "--password-file",
        pw.to_str().unwrap(),
    ]));
    assert_one_line_error(&o, &["chmod 600"]);

    // An inline password in a config file others can read.
    write_mode(
        &sb.config_file(),
        "[profiles.work]\nurl = \"http://127.0.0.1:1/\"\nuser = \"alice\"\npassword = \"x\"\n",
        0o640,
    );
    let o = run(&mut sb.cmd(&["mount", "work", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["config.toml", "chmod 600"]);
}

// ---------------------------------------------------------------------------------------------
// Real mounts

fn daemon_pid(sb: &Sandbox, mp: &Path) -> Option<u32> {
    let canonical = mounts::absolute_mount_path(mp).unwrap();
    instance::read_pid(&instance::state_file(
        &sb.runtime().join("cloudmount"),
        &canonical,
    ))
}

#[test]
fn background_mount_unmount_and_already_mounted() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let mount = |sb: &Sandbox| {
        run(sb
            .cmd(&["mount", &srv.url(), mp.to_str().unwrap(), "--user", USER])
            .env("CLOUDMOUNT_PASSWORD", PASSWORD))
    };

    let o = mount(&sb);
    assert!(
        o.status.success(),
        "mount failed: {}\n{}",
        stderr_of(&o),
        sb.logs()
    );
    assert!(stdout_of(&o).is_empty(), "silent on success");
    // Live as soon as the command returns.
    let entry = mount_entry(&mp).expect("mounted when `mount` returns");
    assert_eq!(entry.fs_type, "fuse.cloudmount", "{entry:?}");
    // `mount` and `df` tell mounts apart by what they were mounted from.
    assert_eq!(entry.source, format!("cloudmount:{}", srv.url()));
    let pid = daemon_pid(&sb, &mp).expect("state file with the daemon's pid");
    assert!(instance::is_cloudmount_alive(pid));
    let logs = sb.logs();
    assert!(logs.contains("mount is live"), "{logs}");
    assert!(!logs.contains(PASSWORD), "the password is never logged");

    // The same place again: refused, and the first mount is untouched.
    let o = mount(&sb);
    assert_one_line_error(&o, &["already mounted", "cloudmount unmount"]);
    assert!(is_mounted(&mp));

    // The same account elsewhere (so the same cache): refused, saying where it is mounted and
    // how to mount it twice.
    let mp2 = sb.mkdir("mnt2");
    let _guard2 = MountGuard(mp2.clone());
    let o = run(sb
        .cmd(&["mount", &srv.url(), mp2.to_str().unwrap(), "--user", USER])
        .env("CLOUDMOUNT_PASSWORD", PASSWORD));
    assert_one_line_error(
        &o,
        &[
            "in use",
            &format!("mounted at {}", mp.display()),
            "--cache-dir",
        ],
    );
    assert!(!is_mounted(&mp2));
    assert!(is_mounted(&mp));

    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert!(o.status.success(), "unmount failed: {}", stderr_of(&o));
    assert!(!is_mounted(&mp), "unmounted when `unmount` returns");
    assert!(
        !instance::is_cloudmount_alive(pid),
        "the daemon has exited when `unmount` returns"
    );
    assert_eq!(daemon_pid(&sb, &mp), None, "state file removed");

    // Nothing mounted any more: a clear error.
    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["not mounted"]);
}

#[test]
fn unmount_refuses_what_is_not_ours() {
    let sb = Sandbox::new();
    let o = run(&mut sb.cmd(&["unmount", "/proc"]));
    assert_one_line_error(&o, &["not a cloudmount mount", "proc"]);
    let dir = sb.mkdir("plain");
    let o = run(&mut sb.cmd(&["unmount", dir.to_str().unwrap()]));
    assert_one_line_error(&o, &["not mounted"]);
}

#[test]
fn profile_mount_with_options_is_read_only() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("cloud");
    let _guard = MountGuard(mp.clone());
    let pw = sb.home().join(".config/cloudmount/work.password");
    write_mode(&pw, &format!("{PASSWORD}\n"), 0o600);
    write_mode(
        &sb.config_file(),
        &format!(
            "[profiles.work]\nurl = \"{}\"\nuser = \"{USER}\"\n\
             password_file = \"~/.config/cloudmount/work.password\"\n\
             mountpoint = \"{}\"\n",
            srv.url(),
            mp.display()
        ),
        0o644,
    );
    // No MOUNTPOINT: the profile's. mount(8) noise and `ro` in -o.
    let o = run(&mut sb.cmd(&["mount", "work", "-o", "ro,noauto,_netdev,cache_size=64M"]));
    assert!(o.status.success(), "{}\n{}", stderr_of(&o), sb.logs());
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| {
            l.contains(&format!(
                " {} ",
                mounts::absolute_mount_path(&mp).unwrap().display()
            ))
        })
        .map(str::to_owned)
        .expect("mountinfo line");
    let mount_opts = line.split(' ').nth(5).unwrap();
    assert!(
        mount_opts.split(',').any(|o| o == "ro"),
        "read-only mount: {line}"
    );
    assert!(
        sb.state_dir().join("work.log").is_file(),
        "log named after the profile"
    );
    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(!is_mounted(&mp));
}

#[test]
fn foreground_mount_stops_cleanly_on_sigterm() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let mut child = sb
        .cmd(&[
            "mount",
            &srv.url(),
            mp.to_str().unwrap(),
            "--user",
            USER,
            "--foreground",
        ])
        .env("CLOUDMOUNT_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    // The daemon records itself (state file) just after the kernel shows the mount.
    wait_until("the foreground mount", Duration::from_secs(30), || {
        (is_mounted(&mp) && daemon_pid(&sb, &mp).is_some()) || child.try_wait().unwrap().is_some()
    });
    assert!(is_mounted(&mp), "not mounted; exit {:?}", child.try_wait());
    assert_eq!(daemon_pid(&sb, &mp), Some(child.id()));
    send_signal(&child, libc::SIGTERM);
    let status = wait_status(&mut child, Duration::from_secs(30));
    let log = log.join().unwrap();
    assert!(status.success(), "exit {status}: {log}");
    assert!(!is_mounted(&mp), "unmounted after SIGTERM: {log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert_eq!(daemon_pid(&sb, &mp), None, "state file removed");
}

/// `mount -t cloudmount SOURCE DIR -o OPTS` runs the helper with these arguments.
#[test]
fn mount_helper_mounts_like_mount8_calls_it() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let pw = sb.path().join("alice.pw");
    write_mode(&pw, PASSWORD, 0o600);
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-helpers/mount.cloudmount");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let opts = format!(
        "rw,user={USER},password_file={},_netdev,noauto",
        pw.display()
    );
    let helper_cmd = |extra: &[&str]| {
        let mut c = Command::new("sh");
        c.arg(&helper)
            .arg(srv.url())
            .arg(&mp)
            .args(extra)
            .args(["-o", &opts, "-t", "cloudmount"])
            .env("PATH", &path)
            .env("HOME", sb.home())
            .env("XDG_RUNTIME_DIR", sb.runtime())
            .env_remove("CLOUDMOUNT_PASSWORD")
            .stdin(Stdio::null());
        c
    };

    // -f (fake): everything but the mount.
    let o = run(&mut helper_cmd(&["-f", "-v"]));
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("cloudmount mount"),
        "{}",
        stderr_of(&o)
    );
    assert!(!is_mounted(&mp));

    let o = run(&mut helper_cmd(&["-n", "-s"]));
    assert!(o.status.success(), "{}\n{}", stderr_of(&o), sb.logs());
    let entry = mount_entry(&mp).expect("mounted by the helper");
    assert_eq!(entry.fs_type, "fuse.cloudmount");
    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr_of(&o));

    // Bad usage: one message, non-zero.
    let o = run(Command::new("sh").arg(&helper).arg("only-source"));
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("usage"), "{}", stderr_of(&o));
}

// ---------------------------------------------------------------------------------------------
// The demo (needs the filesystem logic of `vfs` to list the areas)

#[test]
fn demo_mounts_three_areas_and_ctrl_c_unmounts() {
    let sb = Sandbox::new();
    let mp = sb.path().join("demo-mount"); // created by the demo
    let _guard = MountGuard(mp.clone());
    let mut child = sb
        .cmd(&["demo", mp.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.contains("Ctrl-C") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    // Stop the demo however the test ends, so a failure never leaves it running.
    struct Stop(Option<Child>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(c) = &mut self.0 {
                if c.try_wait().ok().flatten().is_none() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
    let mut stop = Stop(Some(child));

    rx.recv_timeout(Duration::from_secs(60))
        .expect("the demo prints what to try once mounted");
    let entry = mount_entry(&mp).expect("demo mounted");
    assert_eq!(entry.fs_type, "fuse.cloudmount");

    let mut names = Vec::new();
    let start = Instant::now();
    let mut last_err = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        match std::fs::read_dir(&mp) {
            Ok(rd) => {
                names = rd
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                if names.len() == 3 {
                    break;
                }
            }
            Err(e) => last_err = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        names,
        ["Cloud Drive", "Following", "Shared"],
        "the three areas at the root (last error: {last_err})"
    );
    let readme = std::fs::read_to_string(mp.join("Cloud Drive/README.txt")).unwrap();
    assert!(readme.contains("cloudmount demo"), "{readme}");
    // A file written just before Ctrl-C reaches the demo's server: the stop waits for it.
    std::fs::write(mp.join("Cloud Drive/written at the end.txt"), b"kept").unwrap();

    let child = stop.0.as_mut().unwrap();
    send_signal(child, libc::SIGINT);
    let status = wait_status(child, Duration::from_secs(30));
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    assert!(!is_mounted(&mp), "unmounted after Ctrl-C");
    assert!(out.contains("unmounted and stopped"), "{out}");
    // The seeded data stays for the next run.
    assert!(sb
        .home()
        .join(".local/share/cloudmount/demo/Cloud Drive/README.txt")
        .is_file());
    assert_eq!(
        std::fs::read(
            sb.home()
                .join(".local/share/cloudmount/demo/Cloud Drive/written at the end.txt")
        )
        .unwrap(),
        b"kept"
    );
}

// ---------------------------------------------------------------------------------------------
// Status and the unmount's waiting for the upload queue

/// Mounts the test server at `mp` in the background with a 64 MiB cache budget.
fn mount_bg(sb: &Sandbox, srv: &TestServer, mp: &Path) {
    mount_bg_with(sb, srv, mp, &[]);
}

fn mount_bg_with(sb: &Sandbox, srv: &TestServer, mp: &Path, extra: &[&str]) {
    let url = srv.url();
    let mut args = vec![
        "mount",
        &url,
        mp.to_str().unwrap(),
        "--user",
        USER,
        "--cache-size",
        "64M",
    ];
    args.extend_from_slice(extra);
    let o = run(sb.cmd(&args).env("CLOUDMOUNT_PASSWORD", PASSWORD));
    assert!(
        o.status.success(),
        "mount failed: {}\n{}",
        stderr_of(&o),
        sb.logs()
    );
}

fn socket_of(sb: &Sandbox, mp: &Path) -> PathBuf {
    instance::socket_path(
        &sb.runtime().join("cloudmount"),
        &mounts::absolute_mount_path(mp).unwrap(),
    )
}

#[test]
fn status_of_a_live_mount_and_unmount_no_wait() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    let canonical = mounts::absolute_mount_path(&mp).unwrap();
    let socket = socket_of(&sb, &mp);
    let meta = std::fs::symlink_metadata(&socket).expect("control socket beside the state file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Something went through the mount, so the status has something to count. The upload
    // may run after close() returns; once it is on the server the queue empties.
    std::fs::write(mp.join("hello.txt"), b"hello status").unwrap();
    let on_server = srv.root.path().join("hello.txt");
    wait_until("the upload", Duration::from_secs(30), || {
        std::fs::read(&on_server).is_ok_and(|b| b == b"hello status")
    });
    // Without a mount point: a line for each cloudmount mount, this one among them.
    let o = run(&mut sb.cmd(&["status"]));
    assert!(o.status.success(), "{}", stderr_of(&o));
    let listed = stdout_of(&o);
    let ours = listed
        .lines()
        .find(|l| l.starts_with(&format!("{}  ", canonical.display())))
        .unwrap_or_else(|| panic!("{} not listed:\n{listed}", canonical.display()));
    assert!(
        ours.contains(&format!("cloudmount:{}", srv.url())) && ours.contains("online"),
        "{ours}"
    );
    let o = run(&mut sb.cmd(&["status", "--json"]));
    let all: serde_json::Value = serde_json::from_str(&stdout_of(&o)).expect("a JSON array");
    let mine = all
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["mountpoint"] == canonical.to_str().unwrap())
        .expect("this mount in the JSON list");
    assert_eq!(mine["status"]["connection"], "online", "{mine}");
    let status_json = || {
        let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap(), "--json"]));
        assert!(o.status.success(), "{}\n{}", stderr_of(&o), sb.logs());
        stdout_of(&o)
    };
    let queued = |out: &str| {
        serde_json::from_str::<serde_json::Value>(out).expect("JSON")["queue"]["files"].as_u64()
    };
    let mut out = status_json();
    let start = Instant::now();
    while queued(&out) != Some(0) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        out = status_json();
    }
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["queue"]["files"], 0, "{out}");
    assert_eq!(v["cache"]["budget_bytes"], 64u64 << 20, "{out}");
    let typed: cloudmount::vfs::status::VfsStatus = serde_json::from_str(&out).unwrap();
    assert_eq!(typed.queue.files, 0);
    // The quota: null until the server has told it (it is asked in the background), then
    // the object of the help, never {"used":null,"available":null}.
    let deadline = Instant::now() + Duration::from_secs(10);
    let quota = loop {
        let v: serde_json::Value = serde_json::from_str(&status_json()).unwrap();
        let q = v["quota"].clone();
        assert!(
            q.is_null() || q["used"].is_u64() || q["available"].is_u64(),
            "{q}"
        );
        if !q.is_null() || Instant::now() > deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (used, available) = (quota["used"].as_u64(), quota["available"].as_u64());
    assert_eq!(
        used.zip(available).map(|(u, a)| u + a),
        Some(1 << 30),
        "the embedded server's quota of 1 GiB: {quota}"
    );
    assert!(!out.contains(PASSWORD), "no secrets in the status");

    let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr_of(&o));
    let out = stdout_of(&o);
    assert!(
        out.starts_with(&format!("{}: ", canonical.display())),
        "{out}"
    );
    assert!(out.contains("upload queue: empty"), "{out}");
    assert!(
        out.contains("cache: ") && out.contains("of 64 MiB used"),
        "{out}"
    );
    assert!(stderr_of(&o).is_empty(), "{}", stderr_of(&o));

    let pid = daemon_pid(&sb, &mp).expect("daemon pid");
    let o = run(&mut sb.cmd(&["unmount", "--no-wait", mp.to_str().unwrap()]));
    assert!(o.status.success(), "{}\n{}", stderr_of(&o), sb.logs());
    assert!(
        !is_mounted(&mp),
        "unmounted when `unmount --no-wait` returns"
    );
    assert!(!instance::is_cloudmount_alive(pid), "the daemon has exited");
    assert!(!socket.exists(), "control socket removed at shutdown");

    // Not mounted any more: one clear line.
    let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["not mounted", &canonical.display().to_string()]);
    let o = run(&mut sb.cmd(&["status", "--json", "/proc"]));
    assert_one_line_error(&o, &["not a cloudmount mount", "proc"]);
    assert!(stdout_of(&o).is_empty());
}

/// A control server in this process standing in for the daemon's, with a queue the test sets.
struct FakeControl {
    rt: tokio::runtime::Runtime,
    server: Option<control::ControlServer>,
    queue: std::sync::Arc<std::sync::Mutex<(u64, u64)>>,
}

impl FakeControl {
    /// Takes the place of the daemon's socket of the mount at `mp`.
    fn replace(sb: &Sandbox, mp: &Path, files: u64, bytes: u64) -> Self {
        let socket = socket_of(sb, mp);
        std::fs::remove_file(&socket).expect("the daemon's socket");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let template = cloudmount::vfs::status::VfsStatus {
            connection: cloudmount::vfs::status::Connection::Online,
            last_error: None,
            queue: Default::default(),
            errors: Vec::new(),
            conflicts: Vec::new(),
            quota: None,
            cache: Default::default(),
            kept_aside: None,
            other_areas: Vec::new(),
            pins: Vec::new(),
            bandwidth: Default::default(),
            notices: Vec::new(),
        };
        let queue = std::sync::Arc::new(std::sync::Mutex::new((files, bytes)));
        let q = queue.clone();
        let server = {
            let _g = rt.enter();
            control::serve(&socket, move |_request: control::Request| {
                let (files, bytes) = *q.lock().unwrap();
                let mut s = template.clone();
                s.queue.files = files;
                s.queue.bytes = bytes;
                s.queue.paused = (files > 0).then(|| "server out of space (test)".to_string());
                control::Response::Status(Box::new(s))
            })
            .expect("fake control server")
        };
        FakeControl {
            rt,
            server: Some(server),
            queue,
        }
    }

    fn set(&self, files: u64, bytes: u64) {
        *self.queue.lock().unwrap() = (files, bytes);
    }
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        let _g = self.rt.enter();
        self.server.take();
    }
}

/// Spawns `cloudmount unmount MP` with stderr read line by line into a channel.
fn spawn_unmount(
    sb: &Sandbox,
    mp: &Path,
) -> (
    Child,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let mut child = sb
        .cmd(&["unmount", mp.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    (child, rx, reader)
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no stderr line: expected {what}"))
}

#[test]
fn unmount_waits_for_the_upload_queue_and_ctrl_c_keeps_the_mount() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    let fake = FakeControl::replace(&sb, &mp, 3, 3 << 20);

    // Ctrl-C while waiting: not unmounted, non-zero, and it says so.
    let (mut child, rx, reader) = spawn_unmount(&sb, &mp);
    let first = next_line(&rx, "the waiting line");
    assert!(
        first.contains("waiting for 3 files (3 MiB) to upload")
            && first.contains("--no-wait")
            && first.contains("server out of space (test)"),
        "{first}"
    );
    // The queue grows; a line every ~5 s says where it stands.
    fake.set(4, 5 << 20);
    let second = next_line(&rx, "a progress line after ~5 s");
    assert!(
        second.contains("still waiting: 4 files (5 MiB) left"),
        "{second}"
    );
    send_signal(&child, libc::SIGINT);
    let status = wait_status(&mut child, Duration::from_secs(20));
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    let msg = rest.join("\n");
    assert!(
        msg.contains("interrupted") && msg.contains("still mounted"),
        "{msg}"
    );
    assert!(is_mounted(&mp), "Ctrl-C leaves the mount live");
    let pid = daemon_pid(&sb, &mp).expect("daemon still running");
    assert!(instance::is_cloudmount_alive(pid));

    // Waiting ends when the queue is empty, then it unmounts.
    let (mut child, rx, reader) = spawn_unmount(&sb, &mp);
    let first = next_line(&rx, "the waiting line");
    assert!(first.contains("waiting for 4 files"), "{first}");
    assert!(
        is_mounted(&mp),
        "still mounted while the queue is not empty"
    );
    fake.set(0, 0);
    let status = wait_status(&mut child, Duration::from_secs(30));
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{rest:?}\n{}", sb.logs());
    assert!(
        rest.iter().any(|l| l.contains("all files uploaded")),
        "{rest:?}"
    );
    assert!(!is_mounted(&mp));
    assert!(!instance::is_cloudmount_alive(pid), "the daemon has exited");
    drop(fake);
    assert!(!socket_of(&sb, &mp).exists());
}

#[test]
fn unmount_without_a_daemon_answering_unmounts_as_before() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    // As with an older daemon: no socket at all.
    std::fs::remove_file(socket_of(&sb, &mp)).unwrap();
    let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap()]));
    assert_one_line_error(&o, &["no cloudmount daemon answers", ".sock"]);
    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert!(o.status.success(), "{}\n{}", stderr_of(&o), sb.logs());
    // No waiting for a queue and no warning (a slow daemon exit may still be mentioned).
    let err = stderr_of(&o);
    assert!(
        !err.contains("to upload") && !err.contains("warning"),
        "{err}"
    );
    assert!(!is_mounted(&mp));
}

impl TestServer {
    /// Stops serving (connections are refused) until [`TestServer::restart`].
    fn stop(&mut self) -> std::net::SocketAddr {
        let h = self.handle.take().expect("running");
        let addr: std::net::SocketAddr = h
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        self.rt.block_on(h.shutdown());
        addr
    }
    fn restart(&mut self, addr: std::net::SocketAddr) {
        let handle = self
            .rt
            .block_on(server::start(ServeConfig {
                root: self.root.path().to_path_buf(),
                listen: addr,
                auth: Some((USER.into(), PASSWORD.into())),
                quota: Some(1 << 30),
            }))
            .expect("embedded server again");
        self.handle = Some(handle);
    }
}

/// With the real upload queue: a file written while the server is down stays queued; status
/// shows it, unmount waits for it, and unmounts once the server is back and it is uploaded.
#[test]
fn unmount_waits_for_a_real_queued_upload() {
    let mut srv = TestServer::start();
    let url = srv.url();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    // Created while the server is up, written and closed while it is down.
    let mut f = std::fs::File::create(mp.join("late.txt")).unwrap();
    let addr = srv.stop();
    std::io::Write::write_all(&mut f, b"uploaded after all").unwrap();
    drop(f);

    let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap(), "--json"]));
    assert!(o.status.success(), "{}", stderr_of(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["queue"]["files"], 1, "{v}");
    assert_eq!(v["queue"]["bytes"], 18, "{v}");

    let (mut child, rx, reader) = spawn_unmount(&sb, &mp);
    let first = next_line(&rx, "the waiting line");
    assert!(
        first.contains("waiting for 1 file (18 B) to upload"),
        "{first}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(is_mounted(&mp), "waiting, not unmounted");
    srv.restart(addr);
    assert_eq!(srv.url(), url);
    let status = wait_status(&mut child, Duration::from_secs(90));
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{rest:?}\n{}", sb.logs());
    assert!(!is_mounted(&mp));
    assert_eq!(
        std::fs::read(srv.root.path().join("late.txt")).unwrap(),
        b"uploaded after all"
    );
}

/// A long write-back delay is not waited out by `unmount`: what waits for it is sent at once.
#[test]
fn unmount_sends_what_waits_for_the_write_back_delay_at_once() {
    let srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg_with(&sb, &srv, &mp, &["--write-back-delay", "1h"]);
    std::fs::write(mp.join("saved.txt"), b"sent at unmount").unwrap();
    let o = run(&mut sb.cmd(&["status", mp.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&o)).unwrap();
    assert_eq!(v["queue"]["files"], 1, "queued, waiting for its delay: {v}");
    assert!(!srv.root.path().join("saved.txt").exists());
    let (mut child, rx, reader) = spawn_unmount(&sb, &mp);
    // Limit far below the hour the delay would take.
    let status = wait_status(&mut child, Duration::from_secs(90));
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{rest:?}\n{}", sb.logs());
    assert!(!is_mounted(&mp));
    assert_eq!(
        std::fs::read(srv.root.path().join("saved.txt")).unwrap(),
        b"sent at unmount"
    );
}

/// A plain HTTP server that answers every request with `status` (as Python's http.server
/// answers PROPFIND with 501), on a free loopback port; returns its URL.
fn plain_http_server(status: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(32) {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            // The request head, up to its blank line (bodies are not read: the answer closes).
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = "<html>not here</html>";
            let _ = write!(
                &conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_server_that_is_not_webdav_is_named_so_not_unreachable() {
    let url = plain_http_server("501 Not Implemented");
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    let o = run(sb
        .cmd(&["mount", &url, mp.to_str().unwrap(), "--user", USER])
        .env("CLOUDMOUNT_PASSWORD", PASSWORD));
    assert_one_line_error(&o, &["not a WebDAV collection", "501"]);
    assert!(!stderr_of(&o).contains("cannot reach"), "{}", stderr_of(&o));
    assert!(!is_mounted(&mp));
}

/// `unmount --lazy` on a busy mount returns once the mount is detached (it waited for the last
/// user before); the daemon goes on serving the open file and exits when it is closed.
#[test]
fn lazy_unmount_returns_at_once_and_the_daemon_exits_with_the_last_user() {
    let srv = TestServer::start();
    std::fs::write(srv.root.path().join("held.txt"), "held open").unwrap();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    let pid = daemon_pid(&sb, &mp).expect("the daemon's pid");
    let mut held = std::fs::File::open(mp.join("held.txt")).expect("open in the mount");

    // A plain unmount refuses a busy mount.
    let o = run(&mut sb.cmd(&["unmount", mp.to_str().unwrap()]));
    assert!(!o.status.success(), "a busy mount was unmounted");
    assert!(is_mounted(&mp));

    let child = sb
        .cmd(&["unmount", "--lazy", mp.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(20));
    assert!(o.status.success(), "unmount --lazy: {}", stderr_of(&o));
    assert!(!is_mounted(&mp), "detached when unmount --lazy returns");
    assert!(
        stderr_of(&o).contains("exits when the last one lets go"),
        "{}",
        stderr_of(&o)
    );
    // The open file still reads, served by the daemon, which is still there.
    assert!(instance::is_cloudmount_alive(pid));
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "held open");
    drop(held);
    wait_until(
        "the daemon exits once the last user is gone",
        Duration::from_secs(30),
        || !instance::is_cloudmount_alive(pid),
    );
}

/// `unmount --lazy` with a file queued (the server is down): detached and back at once; the
/// daemon uploads the file once the server is back, then exits.
#[test]
fn lazy_unmount_leaves_the_queue_to_the_daemon() {
    let mut srv = TestServer::start();
    let sb = Sandbox::new();
    let mp = sb.mkdir("mnt");
    let _guard = MountGuard(mp.clone());
    mount_bg(&sb, &srv, &mp);
    let pid = daemon_pid(&sb, &mp).expect("the daemon's pid");
    let mut f = std::fs::File::create(mp.join("late.txt")).unwrap();
    let addr = srv.stop();
    f.write_all(b"uploaded in the background").unwrap();
    drop(f);

    let started = Instant::now();
    let child = sb
        .cmd(&["unmount", "--lazy", mp.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(20));
    assert!(o.status.success(), "unmount --lazy: {}", stderr_of(&o));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "unmount --lazy waited"
    );
    assert!(!is_mounted(&mp), "detached when unmount --lazy returns");
    let err = stderr_of(&o);
    assert!(
        err.contains("uploads the 1 file still queued in the background"),
        "{err}"
    );
    assert!(!err.contains("waiting for"), "{err}");
    assert!(
        instance::is_cloudmount_alive(pid),
        "the daemon stays for the queue"
    );

    srv.restart(addr);
    wait_until(
        "the upload after the lazy unmount",
        Duration::from_secs(90),
        || {
            std::fs::read(srv.root.path().join("late.txt"))
                .is_ok_and(|b| b == b"uploaded in the background")
        },
    );
    wait_until(
        "the daemon exits once the queue is empty",
        Duration::from_secs(30),
        || !instance::is_cloudmount_alive(pid),
    );
    assert_eq!(daemon_pid(&sb, &mp), None, "state file removed");
    let logs = sb.logs();
    assert!(logs.contains("every queued file is uploaded"), "{logs}");
}
