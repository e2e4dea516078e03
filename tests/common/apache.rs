//! A private Apache httpd, for a test that stops and restarts its server (an outage) without
//! disturbing the shared one that `tests/run.sh` started for every test.
//!
//! It is a copy of the generated config (`CLOUDMOUNT_TEST_APACHE_CONF`, see
//! tests/servers/README.md) with its own ports, data dirs, logs, pid file, DAV lock database
//! and run dir, all in a temp dir of its own; the workers run as the config's `User`, which owns
//! the data dirs (as in tests/servers/lib.sh). The htpasswd/htdigest files are the shared ones
//! (read only), so the test credentials work. `apache2 -DFOREGROUND` is a child of the test; it
//! is stopped (SIGTERM, then SIGKILL) on drop, and gets SIGTERM if the test thread dies first
//! (`PR_SET_PDEATHSIG`).

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudmount::remote::{Remote, RemotePath};

use super::mount::Server;
use super::{env, test_password, test_user, webdav};

const APACHE: &str = "/usr/sbin/apache2";

pub struct PrivateApache {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// The config with `@PORT0@` / `@PORT1@` for the ports.
    template: String,
    /// Port of the Basic-auth virtual host.
    pub port: u16,
    /// `http://127.0.0.1:PORT/dav/` (Basic auth, the test credentials).
    pub url: String,
    /// Data dir behind `url`.
    pub data: PathBuf,
    /// Access log of the Basic virtual host.
    pub access_log: PathBuf,
    child: Option<Child>,
}

/// The value of the first line `<directive> <value>` (value unquoted).
fn directive(conf: &str, name: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .collect()
}

/// uid and gid of the config's `User` / `Group` (`None` when not root: Apache then keeps ours).
fn run_as(conf: &str) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = directive(conf, "User").into_iter().next()?;
    let group = directive(conf, "Group").into_iter().next()?;
    let u = CString::new(user.clone()).unwrap();
    let g = CString::new(group.clone()).unwrap();
    // SAFETY: valid C strings; the returned records are read at once, before any other call.
    let uid = unsafe { libc::getpwnam(u.as_ptr()).as_ref() }
        .unwrap_or_else(|| panic!("no user {user} (Apache's User)"))
        .pw_uid;
    let gid = unsafe { libc::getgrnam(g.as_ptr()).as_ref() }
        .unwrap_or_else(|| panic!("no group {group} (Apache's Group)"))
        .gr_gid;
    Some((uid, gid))
}

fn chown(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A port nothing listens on now, below the ephemeral range (as lib.sh picks them), so that
/// no outgoing connection takes it while the server is stopped.
fn free_port() -> u16 {
    loop {
        let mut b = [0u8; 2];
        getrandom::getrandom(&mut b).unwrap();
        let port = 20000 + u16::from_le_bytes(b) % 12000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl PrivateApache {
    /// Writes the private config and starts Apache; returns once it answers PROPFIND.
    pub fn start() -> PrivateApache {
        let shared = PathBuf::from(env("CLOUDMOUNT_TEST_APACHE_CONF"));
        let orig = std::fs::read_to_string(&shared)
            .unwrap_or_else(|e| panic!("read {}: {e}", shared.display()));
        let shared_dir = shared.parent().expect("config dir").to_path_buf();
        let ids = run_as(&orig);

        let dir = tempfile::Builder::new()
            .prefix("cm-private-apache.")
            .tempdir()
            .expect("tempdir");
        // The workers must be able to walk down to the data dirs.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        for d in ["run", "davlock", "empty", "data-basic", "data-digest"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        for d in ["davlock", "data-basic", "data-digest"] {
            chown(&dir.path().join(d), ids);
        }

        // The shared instance's data dirs (Basic first, as in apache-dav.conf.in), then its
        // own dir (logs, pid, run, lock db, ServerRoot), then its ports.
        let aliases = directive(&orig, "Alias /dav");
        assert_eq!(
            aliases.len(),
            2,
            "two `Alias /dav` lines in {}",
            shared.display()
        );
        let listens: Vec<u16> = directive(&orig, "Listen")
            .iter()
            .map(|l| {
                l.rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("bad Listen {l:?}"))
            })
            .collect();
        assert_eq!(listens.len(), 2, "two Listen lines in {}", shared.display());
        let mut base = orig
            .replace(
                &aliases[0],
                &dir.path().join("data-basic").to_string_lossy(),
            )
            .replace(
                &aliases[1],
                &dir.path().join("data-digest").to_string_lossy(),
            )
            .replace(
                shared_dir.to_string_lossy().as_ref(),
                &dir.path().to_string_lossy(),
            );
        assert!(
            !base.contains(shared_dir.to_string_lossy().as_ref()),
            "the private config still names the shared dir"
        );
        // Placeholders for the ports, filled per start attempt.
        for (i, p) in listens.iter().enumerate() {
            base = base.replace(&format!("127.0.0.1:{p}"), &format!("127.0.0.1:@PORT{i}@"));
        }

        let mut a = PrivateApache {
            conf: dir.path().join("httpd.conf"),
            data: dir.path().join("data-basic"),
            dir,
            template: base,
            port: 0,
            url: String::new(),
            access_log: PathBuf::new(),
            child: None,
        };
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let (p0, p1) = (free_port(), free_port());
            if p0 == p1 {
                continue;
            }
            a.configure(p0, p1);
            match a.try_start() {
                Ok(()) => return a,
                // Taken meanwhile: other ports.
                Err(e) if e.contains("Address already in use") => last_err = e,
                Err(e) => panic!("private Apache did not start: {e}"),
            }
        }
        panic!("private Apache: no free ports after 5 attempts: {last_err}");
    }

    /// Writes the config for these ports (Basic vhost, Digest vhost).
    fn configure(&mut self, basic: u16, digest: u16) {
        let text = self
            .template
            .replace("@PORT0@", &basic.to_string())
            .replace("@PORT1@", &digest.to_string());
        let vhost = text
            .find(&format!("<VirtualHost 127.0.0.1:{basic}>"))
            .expect("Basic VirtualHost");
        let access_log = directive(&text[vhost..], "CustomLog")
            .into_iter()
            .next()
            .expect("CustomLog of the Basic vhost");
        // `CustomLog "<file>" cloudmount`: the file, without the format name.
        let access_log = access_log
            .split('"')
            .next()
            .unwrap_or(&access_log)
            .to_string();
        std::fs::write(&self.conf, &text).unwrap();
        self.port = basic;
        self.url = format!("http://127.0.0.1:{basic}/dav/");
        self.access_log = PathBuf::from(access_log);
    }

    /// The server, for `Dav` and `MountOpts`.
    pub fn server(&self) -> Server {
        Server {
            name: "private_apache",
            url: self.url.clone(),
            user: test_user(),
            password: test_password(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        for f in ["error.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- {f} ---\n"));
            for l in &lines[lines.len().saturating_sub(40)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "private Apache is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        let mut cmd = Command::new(APACHE);
        cmd.arg("-f")
            .arg(&self.conf)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {APACHE}: {e}"));
        self.child = Some(child);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("apache2 exited ({st}):\n{}", self.log_tail()));
            }
            // A fresh client each time: it must not keep a connection for later.
            let remote = webdav(&self.url, &test_user(), &test_password());
            if rt.block_on(remote.stat(&RemotePath::root())).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no answer to PROPFIND within 20 s:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again, on the same ports and data.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("private Apache did not start again: {e}");
        }
    }

    /// Stops it: SIGTERM, and SIGKILL if it is still there after 10 s. Waits for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

impl Drop for PrivateApache {
    fn drop(&mut self) {
        self.stop();
    }
}
