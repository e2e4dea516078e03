//! A user's home for the sync-folder tests: private XDG directories, a config file with one
//! profile on a test folder of a real server, and the profile's daemon (`cloudmount start
//! --foreground`, a child process so a test can kill it with SIGKILL). The daemon's log is
//! printed when a test fails.
//!
//! Users run cloudmount as themselves: every `cloudmount` here runs as the normal user the test
//! command names (`CLOUDMOUNT_TEST_UNIX_USER`), from a copy of the binary that user can reach,
//! and everything the test makes in the home ([`write`], [`mkdir`], [`own`]) belongs to that
//! user.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::sync::OnceLock;

use cloudmount::sync::report::{AccountReport, FolderReport, FolderState};

use super::mount::{eventually_with, local_tree, run, Server, Tree, BIN};

/// The normal user the tests run cloudmount as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// The user named by `CLOUDMOUNT_TEST_UNIX_USER` (set by `tests/run.sh`).
pub fn user() -> User {
    static USER: OnceLock<User> = OnceLock::new();
    *USER.get_or_init(|| {
        let name = super::env("CLOUDMOUNT_TEST_UNIX_USER");
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: getpwnam returns NULL or a pointer to a static passwd record, read at once.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        assert!(!pw.is_null(), "no user {name:?} (tests/run.sh creates it)");
        // SAFETY: pw is non-null and points to a valid passwd record.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        assert_ne!(uid, 0, "CLOUDMOUNT_TEST_UNIX_USER must not be root");
        User { uid, gid }
    })
}

/// Gives `path` (not following a symlink) to the test user.
pub fn own(path: &Path) {
    let u = user();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::lchown(c.as_ptr(), u.uid, u.gid) };
    assert_eq!(
        rc,
        0,
        "chown {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Gives `path` and everything below it to the test user.
pub fn own_tree(path: &Path) {
    own(path);
    if path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            own_tree(&e.path());
        }
    }
}

/// Creates a directory and its missing parents, owned by the test user.
pub fn mkdir(path: &Path) {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    for p in missing.iter().rev() {
        std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        own(p);
    }
}

/// A copy of the binary the test user can run (the build directory may be out of its reach),
/// shared by the test processes of one build.
pub fn user_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let meta = std::fs::metadata(BIN).expect("the cloudmount binary");
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("cloudmount-test-bin-{}-{mtime}", meta.len()));
        let path = dir.join("cloudmount");
        if !path.exists() {
            let _ = std::fs::create_dir(&dir);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let tmp = dir.join(format!(".cloudmount.{}", std::process::id()));
            std::fs::copy(BIN, &tmp).expect("copy the binary");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        path
    })
    .clone()
}

/// `program` run as the test user in `home`: its HOME, the XDG directories under it (the
/// defaults, and `run` for the runtime one), no stdin.
pub(super) fn user_command_in(home: &Path, program: impl AsRef<OsStr>) -> Command {
    let u = user();
    let mut cmd = Command::new(program);
    cmd.uid(u.uid)
        .gid(u.gid)
        .current_dir(home)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .stdin(Stdio::null());
    cmd
}

/// The local tree of a sync folder, without our marker file.
pub fn local(dir: &Path) -> Tree {
    let mut t = local_tree(dir);
    t.remove(".cloudmount-sync");
    t
}

/// The paths of `t`, in order.
pub fn names(t: &Tree) -> Vec<&str> {
    t.keys().map(String::as_str).collect()
}

/// The profile every test home has.
pub const PROFILE: &str = "t";

pub struct SyncHome {
    /// Shared by the profiles of one home ([`SyncHome::add_profile`]).
    pub home: std::sync::Arc<tempfile::TempDir>,
    daemon: Option<Child>,
    /// The profile this handle runs: `None`, the home's only one ([`PROFILE`], named by no
    /// option); else its name, given to every command (the config file has several).
    profile: Option<String>,
}

impl SyncHome {
    /// A home whose profile `t` has the URL `url` (a test folder of `server`), its password
    /// in a file, polling the server every second.
    pub fn new(server: &Server, url: &str) -> SyncHome {
        Self::with_profile_extra(server, url, "")
    }

    /// The same with more profile lines (`sync_root = "…"`, …).
    pub fn with_profile_extra(server: &Server, url: &str, extra: &str) -> SyncHome {
        let home = tempfile::Builder::new()
            .prefix("cm-sync-home.")
            .tempdir()
            .expect("tempdir");
        let h = home.path();
        own(h);
        for d in [".config/cloudmount", ".local/state", ".local/share", "run"] {
            mkdir(&h.join(d));
        }
        std::fs::set_permissions(h.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let pw = h.join(".config/cloudmount/password");
        write(&pw, server.password.as_bytes());
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = format!(
            "[profiles.{PROFILE}]\nurl = \"{url}\"\nuser = \"{}\"\npassword_file = \"{}\"\nsync_poll_interval = \"1s\"\n{extra}\n",
            server.user,
            pw.display()
        );
        write(&h.join(".config/cloudmount/config.toml"), config.as_bytes());
        SyncHome {
            home: std::sync::Arc::new(home),
            daemon: None,
            profile: None,
        }
    }

    /// Adds profile `name` to this home's config file (URL `url` of `server`, the same
    /// password file): another profile of the same HOME, so of the same computer (one data
    /// directory). Returns its handle (its own daemon; the home stays until both are gone);
    /// from now on both handles name their profile in every command.
    pub fn add_profile(&mut self, server: &Server, url: &str, name: &str) -> SyncHome {
        assert!(
            self.daemon.is_none(),
            "add the profile before starting the daemon"
        );
        let h = self.home.path();
        let config = h.join(".config/cloudmount/config.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "\n[profiles.{name}]\nurl = \"{url}\"\nuser = \"{}\"\npassword_file = \"{}\"\nsync_poll_interval = \"1s\"\n",
            server.user,
            h.join(".config/cloudmount/password").display()
        ));
        write(&config, text.as_bytes());
        self.profile = Some(PROFILE.to_string());
        SyncHome {
            home: self.home.clone(),
            daemon: None,
            profile: Some(name.to_string()),
        }
    }

    /// The profile this handle runs.
    pub fn profile(&self) -> &str {
        self.profile.as_deref().unwrap_or(PROFILE)
    }

    /// `args` naming this handle's profile when the home has several (`sync -p NAME …`).
    fn with_profile<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        if let Some(p) = &self.profile {
            if matches!(v.first(), Some(&"sync") | Some(&"settings")) {
                v.splice(1..1, ["--profile", p.as_str()]);
            }
        }
        v
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// A folder of this home (not created).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// The binary with this home's environment.
    pub fn command(&self) -> Command {
        let mut cmd = user_command_in(self.home.path(), user_bin());
        cmd.env_remove("CLOUDMOUNT_PASSWORD")
            .env("CLOUDMOUNT_SYNC_QUIET_MS", "200")
            .env("RUST_LOG", "info,cloudmount=debug");
        cmd
    }

    /// Starts the daemon in the foreground (a child of the test) and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        own(&self.log_path());
        let mut cmd = self.command();
        cmd.args(["start", self.profile(), "--foreground"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.daemon = Some(cmd.spawn().expect("spawn cloudmount start"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run(&["sync", "list", "--json"]);
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(|c| c.try_wait()) {
                panic!("the daemon exited at once ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `cloudmount stop`, and waits for the daemon to exit.
    pub fn stop(&mut self) {
        let out = self.run(&["stop", self.profile()]);
        assert!(out.status.success(), "cloudmount stop: {}", text(&out));
        if let Some(mut c) = self.daemon.take() {
            let _ = c.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        match &self.profile {
            Some(p) if p != PROFILE => self.home.path().join(format!("daemon-{p}.log")),
            _ => self.home.path().join("daemon.log"),
        }
    }

    /// The daemon's log (last 300 lines).
    pub fn log(&self) -> String {
        let t = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(300)..].join("\n")
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        let args = self.with_profile(args);
        let mut cmd = self.command();
        cmd.args(&args);
        run(cmd, &format!("cloudmount {}", args.join(" ")))
    }

    /// Runs `args` and asserts it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cloudmount {} failed: {}\ndaemon log:\n{}",
            args.join(" "),
            text(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args` and asserts it fails; returns stdout and stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "cloudmount {} succeeded but should not have: {}",
            args.join(" "),
            text(&out)
        );
        text(&out)
    }

    /// `sync add DIR ARGS…`.
    pub fn add(&self, dir: &Path, args: &[&str]) {
        let d = dir.to_str().unwrap();
        let mut a = vec!["sync", "add", d];
        a.extend_from_slice(args);
        self.ok(&a);
    }

    /// `sync now DIR --wait`, asserting it ends in sync.
    pub fn sync_now(&self, dir: &Path) -> String {
        self.ok(&["sync", "now", dir.to_str().unwrap(), "--wait"])
    }

    /// `sync list --json`.
    pub fn list(&self) -> Vec<FolderReport> {
        let out = self.ok(&["sync", "list", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("sync list --json ({e}): {out}"))
    }

    /// `sync list --inactive --json`.
    pub fn account(&self) -> AccountReport {
        let out = self.ok(&["sync", "list", "--inactive", "--json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("sync list --inactive --json ({e}): {out}"))
    }

    /// The report of the folder at `dir`.
    pub fn folder(&self, dir: &Path) -> FolderReport {
        self.list()
            .into_iter()
            .find(|f| f.local == dir)
            .unwrap_or_else(|| panic!("{} is not in sync list", dir.display()))
    }

    /// Waits until `cond` holds (checked every 100 ms), failing after `secs` with `what`.
    pub fn wait_until(&self, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
        let log = || format!("daemon log:\n{}", self.log());
        eventually_with(Duration::from_secs(secs), what, log, || {
            cond().then_some(())
        });
    }

    /// Waits until the folder has ended a run and is not syncing.
    pub fn wait_state(&self, dir: &Path, state: FolderState) -> FolderReport {
        let mut last = None;
        self.wait_until(60, &format!("{} to be {state:?}", dir.display()), || {
            let f = self.folder(dir);
            let done = f.state == state && f.runs > 0;
            last = Some(f);
            done
        });
        last.unwrap()
    }

    /// Files in this home's trash (names in `Trash/files`).
    pub fn trash(&self) -> Vec<String> {
        let dir = self.home.path().join(".local/share/Trash/files");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for SyncHome {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
        self.kill9();
    }
}

/// Writes `data` to `path` (creating parents), as the test user's file.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        mkdir(p);
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    own(path);
}

/// stdout and stderr of a command, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads a file as the test user (a FUSE mount without `allow_other` is closed to everyone
/// else, root included).
pub fn read_as_user(path: &Path) -> Vec<u8> {
    let u = user();
    let out = Command::new("cat")
        .arg(path)
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .expect("run cat");
    assert!(
        out.status.success(),
        "cat {} as the user: {}",
        path.display(),
        text(&out)
    );
    out.stdout
}

impl SyncHome {
    /// The process id of the running daemon (for its memory use in /proc).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}
