//! `cloudmount serve` driven by the real clients people use against it: rclone's WebDAV backend
//! and GNOME's gvfs (`gio`). (cloudmount's own mount runs against it in tests/mount.rs.)
//!
//! Each test starts the built `cloudmount serve` on a fresh temp dir, drives it with the
//! client's command line, and checks both what the client reports and what the server's
//! directory holds. The clients come from Debian packages the test command installs (rclone,
//! gvfs-backends, gvfs-daemons, libglib2.0-bin, dbus): a missing one fails the test.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{embedded_server, pattern, sha256, EmbeddedServer, EMBEDDED_PASSWORD};

const USER: &str = "cmtest";
/// No client command may take longer (a hung client fails the test instead of wedging it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` with `stdin` fed to it; its output, or a panic naming `what` on a timeout or a
/// missing program.
fn run(mut cmd: Command, stdin: &[u8], what: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e} (tests/run.sh installs the clients' packages)",
            cmd.get_program()
        )
    });
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: no answer within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// [`run`], which must succeed; its stdout.
fn ok(cmd: Command, stdin: &[u8], what: &str) -> String {
    let out = run(cmd, stdin, what);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Everything under `root`: relative path → content (`None` for a directory).
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                into.insert(rel, None);
                walk(root, &p, into);
            } else {
                assert!(meta.is_file(), "{rel}: neither file nor directory");
                into.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    let mut t = BTreeMap::new();
    walk(root, root, &mut t);
    t
}

/// Asserts two trees hold the same paths and contents (without printing megabytes).
fn assert_same_tree(
    got: &BTreeMap<String, Option<Vec<u8>>>,
    want: &BTreeMap<String, Option<Vec<u8>>>,
    what: &str,
) {
    let digest = |t: &BTreeMap<String, Option<Vec<u8>>>| -> Vec<(String, String)> {
        t.iter()
            .map(|(k, v)| {
                let d = match v {
                    None => "dir".to_owned(),
                    Some(c) => format!("{} bytes, sha256 {}", c.len(), sha256(c)),
                };
                (k.clone(), d)
            })
            .collect()
    };
    assert_eq!(digest(got), digest(want), "{what}");
}

/// The port of the embedded server (its URL is `http://127.0.0.1:PORT/`).
fn port(server: &EmbeddedServer) -> u16 {
    let hostport = server
        .url
        .strip_prefix("http://")
        .and_then(|s| s.strip_suffix('/'))
        .expect("http://HOST:PORT/");
    hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port")
}

// ---------------------------------------------------------------------------------------------
// rclone

/// rclone configured through environment variables only: remote `S:` is the server, with the
/// password obscured by `rclone obscure -` from stdin (never in argv, never in a file).
struct Rclone {
    env: Vec<(String, String)>,
}

impl Rclone {
    fn new(server: &EmbeddedServer, scratch: &Path) -> Rclone {
        let mut obscure = Command::new("rclone");
        obscure.args(["obscure", "-"]);
        let obscured = ok(
            obscure,
            format!("{EMBEDDED_PASSWORD}\n").as_bytes(),
            "rclone obscure",
        );
        let obscured = obscured.trim().to_owned();
        assert!(!obscured.is_empty() && obscured != EMBEDDED_PASSWORD);
        let env = [
            // A config file that does not exist: nothing of the machine's own rclone setup.
            (
                "RCLONE_CONFIG",
                scratch.join("absent.conf").display().to_string(),
            ),
            ("RCLONE_CONFIG_S_TYPE", "webdav".into()),
            ("RCLONE_CONFIG_S_URL", server.url.clone()),
            ("RCLONE_CONFIG_S_USER", USER.into()),
            ("RCLONE_CONFIG_S_PASS", obscured),
            ("RCLONE_CONFIG_S_VENDOR", "other".into()),
        ];
        Rclone {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("rclone");
        // One try each: a server error must show, not be retried away.
        c.args(["--retries", "1", "--low-level-retries", "1"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd(args), b"", &format!("rclone {}", args.join(" ")))
    }

    /// `rclone check --download` of `local` against `remote`: its exit status and report.
    fn check(&self, local: &Path, remote: &str) -> (bool, String) {
        let out = run(
            self.cmd(&["check", "--download", local.to_str().unwrap(), remote]),
            b"",
            "rclone check",
        );
        let report = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), report)
    }
}

#[test]
fn rclone_copies_lists_reads_moves_deletes_and_checks() {
    let server = embedded_server(None);
    let scratch = tempfile::tempdir().unwrap();
    let rclone = Rclone::new(&server, scratch.path());

    // The local tree: small, empty and 5 MiB files, names with spaces and non-ASCII letters.
    let local = scratch.path().join("local");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("hello.txt", b"hello, server\n".to_vec()),
        ("empty.txt", Vec::new()),
        ("big 5 MiB.bin", pattern(5 << 20, 7)),
        (
            "sub dir/ünïcödé ñame.txt",
            "grüße, 世界\n".as_bytes().to_vec(),
        ),
        ("sub dir/deeper/日本語 ファイル.dat", pattern(70_000, 3)),
        ("trash/a.txt", b"to be purged\n".to_vec()),
        ("trash/b/c.txt", b"purged too\n".to_vec()),
    ];
    for (name, content) in &files {
        let p = local.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    let up = server.dir.path().join("up");

    rclone.ok(&["mkdir", "S:up"]);
    assert!(up.is_dir(), "rclone mkdir made no directory on the server");
    assert!(tree(&up).is_empty());

    rclone.ok(&["copy", local.to_str().unwrap(), "S:up"]);
    assert_same_tree(
        &tree(&up),
        &tree(&local),
        "server directory after rclone copy",
    );

    // What rclone lists: every file and directory, with the local sizes.
    let listing: serde_json::Value =
        serde_json::from_str(&rclone.ok(&["lsjson", "-R", "S:up"])).expect("lsjson JSON");
    let listed: BTreeMap<String, Option<u64>> = listing
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            let path = e["Path"].as_str().expect("Path").to_owned();
            let size = if e["IsDir"].as_bool().expect("IsDir") {
                None
            } else {
                Some(e["Size"].as_u64().expect("Size"))
            };
            (path, size)
        })
        .collect();
    let want: BTreeMap<String, Option<u64>> = tree(&local)
        .into_iter()
        .map(|(k, v)| (k, v.map(|c| c.len() as u64)))
        .collect();
    assert_eq!(listed, want, "rclone lsjson -R");

    for name in ["sub dir/ünïcödé ñame.txt", "big 5 MiB.bin", "empty.txt"] {
        let out = run(
            rclone.cmd(&["cat", &format!("S:up/{name}")]),
            b"",
            "rclone cat",
        );
        assert!(out.status.success(), "rclone cat {name}: {}", out.status);
        let want = fs::read(local.join(name)).unwrap();
        assert_eq!(
            (out.stdout.len(), sha256(&out.stdout)),
            (want.len(), sha256(&want)),
            "rclone cat {name}"
        );
    }

    let (same, report) = rclone.check(&local, "S:up");
    assert!(
        same && report.contains("0 differences found"),
        "rclone check after copy:\n{report}"
    );
    // check compares contents: one changed byte on the server is found.
    let victim = up.join("sub dir/deeper/日本語 ファイル.dat");
    let original = fs::read(&victim).unwrap();
    let mut changed = original.clone();
    changed[40_000] ^= 0xff;
    fs::write(&victim, &changed).unwrap();
    let (same, report) = rclone.check(&local, "S:up");
    assert!(
        !same && report.contains("1 differences found"),
        "rclone check must see the changed byte:\n{report}"
    );
    fs::write(&victim, &original).unwrap();

    // moveto, deletefile, purge: the server's directory follows; the local tree is changed
    // the same way for the final check.
    rclone.ok(&["moveto", "S:up/hello.txt", "S:up/sub dir/hello moved é.txt"]);
    assert!(!up.join("hello.txt").exists(), "moveto left the source");
    assert_eq!(
        fs::read(up.join("sub dir/hello moved é.txt")).unwrap(),
        b"hello, server\n"
    );
    fs::rename(
        local.join("hello.txt"),
        local.join("sub dir/hello moved é.txt"),
    )
    .unwrap();

    rclone.ok(&["deletefile", "S:up/empty.txt"]);
    assert!(!up.join("empty.txt").exists(), "deletefile left the file");
    fs::remove_file(local.join("empty.txt")).unwrap();

    rclone.ok(&["purge", "S:up/trash"]);
    assert!(!up.join("trash").exists(), "purge left the directory");
    fs::remove_dir_all(local.join("trash")).unwrap();

    let (same, report) = rclone.check(&local, "S:up");
    assert!(
        same && report.contains("0 differences found"),
        "rclone check at the end:\n{report}"
    );
    assert_same_tree(&tree(&up), &tree(&local), "server directory at the end");
    // Nothing else on the server: no temp files of the uploads, nothing beside `up`.
    assert_eq!(
        tree(server.dir.path())
            .keys()
            .filter(|k| !k.starts_with("up"))
            .count(),
        0,
        "stray files on the server: {:?}",
        tree(server.dir.path()).keys().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// gio / gvfs

/// A private D-Bus session bus (`dbus-daemon --session`), on which gvfsd and its dav backend
/// are started by D-Bus activation. Killed on drop; gvfsd exits when its bus goes away.
struct SessionBus {
    child: std::process::Child,
    address: String,
    log: PathBuf,
}

impl SessionBus {
    fn start(dir: &Path) -> SessionBus {
        let socket = dir.join("bus");
        let log = dir.join("dbus.log");
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dbus-daemon: {e} (package dbus)"));
        // The address is printed once the bus listens. The services the bus starts inherit
        // its stdout: drained until the last of them exits.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut address = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut address).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed no address ({address:?}): {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        SessionBus {
            child,
            address,
            log,
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- dbus-daemon and gvfs log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `gio` against one server, on a private session bus with its own HOME and runtime dir.
struct Gio {
    bus: SessionBus,
    home: PathBuf,
    runtime: PathBuf,
    /// `dav://cmtest@127.0.0.1:PORT`
    base: String,
}

impl Gio {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gio");
        c.args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus.address)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("LC_ALL", "C.UTF-8")
            // No udisks, MTP, GOA... volume monitors: only the dav backend matters here.
            .env("GVFS_REMOTE_VOLUME_MONITOR_IGNORE", "1");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd(args), b"", &format!("gio {}", args.join(" ")))
    }

    /// The URI of `path` on the server: `name` segments percent-encoded as gio prints them.
    fn uri(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

#[test]
fn gio_mounts_lists_copies_moves_removes_and_unmounts() {
    let server = embedded_server(None);
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    let runtime = scratch.path().join("run");
    fs::create_dir(&home).unwrap();
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let gio = Gio {
        bus: SessionBus::start(scratch.path()),
        home,
        runtime,
        base: format!("dav://{USER}@127.0.0.1:{}", port(&server)),
    };
    let served = server.dir.path();
    fs::create_dir(served.join("docs")).unwrap();
    fs::write(
        served.join("from the server ü.txt"),
        b"made on the server\n",
    )
    .unwrap();

    // Not mounted yet: gio cannot list the location.
    let out = run(gio.cmd(&["list", &gio.uri("")]), b"", "gio list");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not mounted"),
        "gio list of an unmounted dav location: {out:?}"
    );

    // A wrong password is refused (gio prompts again, reads end of input, gives up).
    let out = run(
        gio.cmd(&["mount", &gio.uri("")]),
        b"not-the-password\n",
        "gio mount (wrong password)",
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "gio mount with a wrong password: {out:?}"
    );

    // gio asks for the password on stdin (the user is in the URI).
    ok(
        gio.cmd(&["mount", &gio.uri("")]),
        format!("{EMBEDDED_PASSWORD}\n").as_bytes(),
        "gio mount",
    );

    let listing = gio.ok(&["list", &gio.uri("")]);
    let names: Vec<&str> = listing.lines().collect();
    assert!(
        names.contains(&"docs") && names.contains(&"from the server ü.txt"),
        "gio list: {listing:?}"
    );

    // Up: a 3 MiB file with a space and non-ASCII letters in its name.
    let content = pattern(3 << 20, 11);
    let local_up = scratch.path().join("up.bin");
    fs::write(&local_up, &content).unwrap();
    gio.ok(&[
        "copy",
        local_up.to_str().unwrap(),
        &gio.uri("docs/état final.bin"),
    ]);
    let stored = fs::read(served.join("docs/état final.bin")).expect("gio copy stored the file");
    assert_eq!(
        sha256(&stored),
        sha256(&content),
        "content stored by gio copy"
    );

    let info = gio.ok(&[
        "info",
        "-a",
        "standard::size",
        &gio.uri("docs/état final.bin"),
    ]);
    assert!(
        info.lines()
            .any(|l| l.trim() == format!("standard::size: {}", content.len())),
        "gio info: {info}"
    );

    // Down: the server's file and the uploaded one.
    let local_down = scratch.path().join("down.txt");
    gio.ok(&[
        "copy",
        &gio.uri("from the server ü.txt"),
        local_down.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&local_down).unwrap(), b"made on the server\n");
    let local_down = scratch.path().join("down.bin");
    gio.ok(&[
        "copy",
        &gio.uri("docs/état final.bin"),
        local_down.to_str().unwrap(),
    ]);
    assert_eq!(sha256(&fs::read(&local_down).unwrap()), sha256(&content));

    gio.ok(&[
        "move",
        &gio.uri("docs/état final.bin"),
        &gio.uri("moved out.bin"),
    ]);
    assert!(
        !served.join("docs/état final.bin").exists(),
        "gio move left the source"
    );
    assert_eq!(
        sha256(&fs::read(served.join("moved out.bin")).unwrap()),
        sha256(&content)
    );

    gio.ok(&["remove", &gio.uri("moved out.bin")]);
    assert!(
        !served.join("moved out.bin").exists(),
        "gio remove left the file"
    );
    let listing = gio.ok(&["list", &gio.uri("")]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["docs", "from the server ü.txt"],
        "gio list at the end"
    );

    gio.ok(&["mount", "-u", &gio.uri("")]);
    let out = run(
        gio.cmd(&["list", &gio.uri("")]),
        b"",
        "gio list after unmount",
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not mounted"),
        "gio list after gio mount -u: {out:?}"
    );

    // What the server's directory holds: exactly that, no temp files left.
    let left: Vec<String> = tree(served).into_keys().collect();
    assert_eq!(left, ["docs", "from the server ü.txt"]);
}
