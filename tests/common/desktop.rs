//! A desktop for the file-manager tests: an X server (Xvfb) to show windows on, a real
//! Nautilus in its own D-Bus session, both started for one test and killed on drop, and the
//! drive mounted as the normal test user in a [`SyncHome`]'s home.
//!
//! Nautilus runs as the test user with `CLOUDMOUNT_FM_LOG=1`: the extension logs what it
//! answered, one JSON object a line, in `~/.cache/cloudmount/file-manager.log` ([`fm_log`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mount::{eventually_with, run, Server};
use super::sync::{text, user_bin, user_command_in, SyncHome};

/// A command run as the test user in `home` (the environment [`SyncHome::command`] gives the
/// binary), with the system's PATH.
pub fn user_command(home: &Path, program: &str) -> Command {
    let mut cmd = user_command_in(home, program);
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    cmd
}

/// `getfattr -n user.cloudmount.state PATH` as the test user: the word, or None.
pub fn getfattr_state(home: &Path, path: &Path) -> Option<String> {
    let mut cmd = user_command(home, "getfattr");
    cmd.args(["--only-values", "-n", "user.cloudmount.state"])
        .arg(path);
    let out = run(cmd, "getfattr");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits until `f` gives a value, failing after `secs` with `what` and `context()`.
pub fn wait_for<T>(
    secs: u64,
    what: &str,
    context: impl Fn() -> String,
    f: impl FnMut() -> Option<T>,
) -> T {
    eventually_with(Duration::from_secs(secs), what, context, f)
}

// ---------------------------------------------------------------------------------------------
// The mount

/// The drive mounted by the test user at a folder of its home; unmounted on drop.
pub struct UserMount {
    home: PathBuf,
    pub mountpoint: PathBuf,
}

impl UserMount {
    /// `cloudmount mount URL MOUNTPOINT` as the user, with the home's password file.
    pub fn new(home: &SyncHome, server: &Server, mountpoint: &Path, args: &[&str]) -> UserMount {
        super::sync::mkdir(mountpoint);
        let pw = home.path().join(".config/cloudmount/password");
        let mut cmd = home.command();
        cmd.arg("mount")
            .arg(&server.url)
            .arg(mountpoint)
            .args(["--user", &server.user, "--password-file"])
            .arg(&pw)
            .args(args);
        let out = run(cmd, "cloudmount mount");
        assert!(out.status.success(), "cloudmount mount: {}", text(&out));
        UserMount {
            home: home.path().to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
        }
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        let mut cmd = user_command(&self.home, user_bin().to_str().unwrap());
        cmd.args(["unmount", "--no-wait"]).arg(&self.mountpoint);
        let out = run(cmd, "cloudmount unmount");
        if !out.status.success() {
            let mut cmd = user_command(&self.home, "fusermount3");
            cmd.args(["-u", "-z"]).arg(&self.mountpoint);
            let _ = cmd.status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// X and the file manager

/// An Xvfb server of 1280x800 on a free display number, killed on drop.
pub struct Display {
    child: Child,
    pub number: u32,
}

impl Display {
    pub fn start() -> Display {
        for _ in 0..20 {
            let mut b = [0u8; 2];
            getrandom::getrandom(&mut b).unwrap();
            let number = 200 + u32::from(u16::from_le_bytes(b)) % 700;
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
            if socket.exists() || Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            // -ac: a private display on a local socket only, open to the test user's programs.
            let mut child = Command::new("Xvfb")
                .arg(format!(":{number}"))
                .args(["-screen", "0", "1280x800x24", "-nolisten", "tcp", "-ac"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start Xvfb (package xvfb; tests/run.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !socket.exists() && Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if socket.exists() {
                return Display { child, number };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start Xvfb on a free display");
    }

    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }

    /// Runs `xdotool ARGS` on this display.
    pub fn xdotool(&self, args: &[&str]) -> String {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", self.name())
            .output()
            .expect("run xdotool (package xdotool)");
        assert!(
            out.status.success(),
            "xdotool {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first visible window of a class (`nautilus`), waiting for it.
    pub fn window(&self, class: &str, secs: u64) -> String {
        wait_for(secs, &format!("a {class} window"), String::new, || {
            let out = Command::new("xdotool")
                .args(["search", "--onlyvisible", "--class", class])
                .env("DISPLAY", self.name())
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout);
            s.lines().next().map(str::to_string)
        })
    }

    /// The visible windows: (id, width, height).
    pub fn windows(&self) -> Vec<(String, u32, u32)> {
        let list = Command::new("xdotool")
            .args(["search", "--onlyvisible", "--name", ""])
            .env("DISPLAY", self.name())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in list.lines() {
            let Ok(o) = Command::new("xdotool")
                .args(["getwindowgeometry", "--shell", id])
                .env("DISPLAY", self.name())
                .output()
            else {
                continue;
            };
            let geo = String::from_utf8_lossy(&o.stdout).into_owned();
            let num = |k: &str| {
                geo.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(0)
            };
            out.push((id.to_string(), num("WIDTH="), num("HEIGHT=")));
        }
        out
    }

    /// A popup menu open over `main` (a smaller window of its own), if one is.
    pub fn popup(&self, main: &str) -> Option<String> {
        self.windows()
            .into_iter()
            .find(|(id, w, h)| id != main && (100..700).contains(w) && *h > 100)
            .map(|(id, _, _)| id)
    }

    /// A screenshot of the whole screen as PNG.
    pub fn screenshot(&self, png: &Path) -> Output {
        Command::new("sh")
            .args(["-c", "xwd -root -silent | convert xwd:- \"png:$1\"", "sh"])
            .arg(png)
            .env("DISPLAY", self.name())
            .output()
            .expect("xwd and convert (x11-apps, imagemagick)")
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program and everything it started (its own process group), killed on drop.
pub struct Session {
    child: Child,
    pub log: PathBuf,
}

impl Session {
    /// The file manager's stderr and stdout (the last 60 lines).
    pub fn output(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill has no memory preconditions; the group is the one this child leads.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Nautilus showing `dir`, as the test user in `home`, in its own D-Bus session, with the
/// extension's log on.
pub fn nautilus(home: &Path, display: &Display, dir: &Path) -> Session {
    file_manager(home, display, &["nautilus", "--new-window"], dir)
}

/// A file manager (`argv` and `dir`) as the test user in `home`, in its own D-Bus session,
/// with the extension's log on.
pub fn file_manager(home: &Path, display: &Display, argv: &[&str], dir: &Path) -> Session {
    let log = home.join(format!("{}.out", argv[0]));
    let out = std::fs::File::create(&log).unwrap();
    super::sync::own(&log);
    let mut cmd = user_command(home, "dbus-run-session");
    cmd.arg("--")
        .args(argv)
        .arg(dir)
        .env("DISPLAY", display.name())
        .env("NO_AT_BRIDGE", "1")
        .env("CLOUDMOUNT_FM_LOG", "1")
        // GTK 4's default GL renderer runs on llvmpipe here: on a busy machine Nautilus then
        // takes minutes to show a folder. The cairo renderer draws in software at once.
        .env("GSK_RENDERER", "cairo")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (tests/run.sh installs it): {e}", argv[0]));
    Session { child, log }
}

/// What the extension logged: one JSON object a line.
pub fn fm_log(home: &Path) -> Vec<serde_json::Value> {
    let path = home.join(".cache/cloudmount/file-manager.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
