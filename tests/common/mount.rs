//! Real FUSE mounts for the integration tests: [`Mounted`] runs the built `cloudmount mount`,
//! checks that the mount is live, and unmounts on drop; [`Dav`] is a WebDAV client on a fresh
//! folder of one test server, to check through the protocol what the mount did.
//!
//! File operations on a mount block in the kernel until the daemon answers: do them from plain
//! `#[test]` functions (or `spawn_blocking`), never from an async runtime thread. [`Dav`] runs
//! its own small runtime and blocks on it, so tests stay synchronous.
//!
//! Each mount's daemon logs to its own file (printed when the test fails); its level is
//! `CLOUDMOUNT_TEST_MOUNT_LOG` (a `RUST_LOG` filter, default `info`), e.g.
//! `CLOUDMOUNT_TEST_MOUNT_LOG=cloudmount=debug tests/run.sh mount::apache_basic`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudmount::remote::{ByteRange, Entry, PutBody, PutCondition, Quota, Remote, RemotePath};

use super::{sha256, test_password, test_user, unique, webdav};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cloudmount");

/// How long `cloudmount mount` / `unmount` may take before the test gives up on them.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Servers

/// One of the real servers started by `tests/run.sh`, or an embedded one.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: &'static str,
    /// Base URL, ending with `/`.
    pub url: String,
    pub user: String,
    pub password: String,
}

impl Server {
    pub fn apache_basic() -> Server {
        Server {
            name: "apache_basic",
            url: super::env("CLOUDMOUNT_TEST_APACHE_BASIC_URL"),
            user: test_user(),
            password: test_password(),
        }
    }

    pub fn apache_digest() -> Server {
        Server {
            name: "apache_digest",
            url: super::env("CLOUDMOUNT_TEST_APACHE_DIGEST_URL"),
            user: test_user(),
            password: test_password(),
        }
    }

    pub fn rclone() -> Server {
        Server {
            name: "rclone",
            url: super::env("CLOUDMOUNT_TEST_RCLONE_URL"),
            user: test_user(),
            password: test_password(),
        }
    }

    /// nginx with its dav and dav-ext modules: no ETag in listings (GET and HEAD have one),
    /// dot names left out of listings, no quota, no PROPPATCH (tests/servers/README.md).
    pub fn nginx() -> Server {
        Server {
            name: "nginx",
            url: super::env("CLOUDMOUNT_TEST_NGINX_URL"),
            user: test_user(),
            password: test_password(),
        }
    }

    /// Whether the server leaves names starting with a dot out of its listings (nginx
    /// dav-ext): such files exist, but a listing does not show them.
    pub fn lists_dot_names(&self) -> bool {
        self.name != "nginx"
    }

    pub fn embedded(s: &super::EmbeddedServer) -> Server {
        Server {
            name: "embedded",
            url: s.url.clone(),
            user: "cmtest".into(),
            password: super::EMBEDDED_PASSWORD.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The WebDAV side

/// A file or directory of a tree, as seen through the mount or through WebDAV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { size: u64, sha256: String },
}

/// A whole tree: relative path (`a/b`) → node.
pub type Tree = BTreeMap<String, Node>;

/// A WebDAV client on a fresh folder of a server, blocking (it owns its runtime).
pub struct Dav {
    rt: tokio::runtime::Runtime,
    pub remote: Arc<dyn Remote>,
    /// The test's folder below the server's base.
    pub root: RemotePath,
    /// URL of that folder, ending with `/`: what a test mounts.
    pub url: String,
    pub server: Server,
}

impl Dav {
    /// Creates `t-<label>-<random>` on `server` and a client for it.
    pub fn fresh(server: &Server, label: &str) -> Dav {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let remote: Arc<dyn Remote> = Arc::new(webdav(&server.url, &server.user, &server.password));
        let name = format!("t-{label}-{}", unique());
        let root = RemotePath::new(&name).unwrap();
        rt.block_on(remote.mkdir(&root))
            .unwrap_or_else(|e| panic!("mkdir {name} on {}: {e}", server.name));
        let url = format!("{}{name}/", server.url);
        Dav {
            rt,
            remote,
            root,
            url,
            server: server.clone(),
        }
    }

    /// The remote path of `rel` (`a/b/c`, relative to the test's folder).
    pub fn p(&self, rel: &str) -> RemotePath {
        let mut p = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            p = p
                .join(seg)
                .unwrap_or_else(|e| panic!("bad name {seg:?}: {e}"));
        }
        p
    }

    /// The path of `rel` as the server's URL path (for matching the requests a test proxy saw).
    pub fn url_path(&self, rel: &str) -> String {
        let base = url::Url::parse(&self.server.url).unwrap();
        self.p(rel).to_url(&base, false).path().to_string()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn put(&self, rel: &str, data: &[u8]) {
        self.rt
            .block_on(self.remote.put(
                &self.p(rel),
                PutBody::from(data.to_vec()),
                PutCondition::None,
            ))
            .unwrap_or_else(|e| panic!("PUT {rel}: {e}"));
    }

    pub fn mkdir(&self, rel: &str) {
        self.rt
            .block_on(self.remote.mkdir(&self.p(rel)))
            .unwrap_or_else(|e| panic!("MKCOL {rel}: {e}"));
    }

    pub fn delete(&self, rel: &str) {
        self.rt
            .block_on(self.remote.delete(&self.p(rel)))
            .unwrap_or_else(|e| panic!("DELETE {rel}: {e}"));
    }

    /// The whole content of a file on the server.
    pub fn get(&self, rel: &str) -> Vec<u8> {
        self.rt.block_on(async {
            self.remote
                .read_range(&self.p(rel), ByteRange::whole(), None)
                .await
                .unwrap_or_else(|e| panic!("GET {rel}: {e}"))
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("GET body {rel}: {e}"))
                .to_vec()
        })
    }

    /// Metadata of `rel`, or `None` when the server says it does not exist.
    pub fn stat(&self, rel: &str) -> Option<Entry> {
        match self.rt.block_on(self.remote.stat(&self.p(rel))) {
            Ok(e) => Some(e),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("PROPFIND {rel}: {e}"),
        }
    }

    /// Names of the direct children of `rel`, sorted.
    pub fn names(&self, rel: &str) -> Vec<String> {
        let l = self
            .rt
            .block_on(self.remote.list(&self.p(rel)))
            .unwrap_or_else(|e| panic!("PROPFIND {rel}: {e}"));
        let mut v: Vec<String> = l.children.iter().map(|c| c.name().to_string()).collect();
        v.sort();
        v
    }

    pub fn quota(&self) -> Quota {
        self.rt
            .block_on(self.remote.quota())
            .unwrap_or_else(|e| panic!("quota: {e}"))
    }

    /// The server's tree below the test's folder: names, kinds, sizes, sha256 of the content
    /// fetched by GET. Also checks that each listed size equals the fetched length.
    pub fn tree(&self) -> Tree {
        self.tree_at("")
    }

    /// [`Dav::tree`] of the folder `base` (relative to the test's folder), its paths relative
    /// to `base`.
    pub fn tree_at(&self, base: &str) -> Tree {
        let mut out = Tree::new();
        let mut todo = vec![String::new()];
        let at = |rel: &str| match (base.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => base.to_string(),
            (false, false) => format!("{base}/{rel}"),
        };
        while let Some(rel) = todo.pop() {
            let l = self
                .rt
                .block_on(self.remote.list(&self.p(&at(&rel))))
                .unwrap_or_else(|e| panic!("PROPFIND {rel:?}: {e}"));
            for c in &l.children {
                let child = if rel.is_empty() {
                    c.name().to_string()
                } else {
                    format!("{rel}/{}", c.name())
                };
                if c.is_dir() {
                    out.insert(child.clone(), Node::Dir);
                    todo.push(child);
                } else {
                    let data = self.get(&at(&child));
                    assert_eq!(
                        data.len() as u64,
                        c.size,
                        "{}: listed size of {child:?} differs from its content",
                        self.server.name
                    );
                    out.insert(
                        child,
                        Node::File {
                            size: c.size,
                            sha256: sha256(&data),
                        },
                    );
                }
            }
        }
        out
    }
}

/// The tree below `root` as seen through the filesystem: names, kinds, sizes and the sha256 of
/// the content read with `std::fs::read`.
pub fn local_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {dir:?}: {e}")) {
            let e = e.unwrap_or_else(|e| panic!("readdir entry in {dir:?}: {e}"));
            let child = rel.join(e.file_name());
            let key = child
                .to_str()
                .unwrap_or_else(|| panic!("non-UTF-8 name {child:?}"))
                .to_string();
            let path = root.join(&child);
            let md =
                std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
            if md.is_dir() {
                out.insert(key, Node::Dir);
                todo.push(child);
            } else {
                assert!(md.is_file(), "{path:?} is neither a file nor a directory");
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
                assert_eq!(
                    data.len() as u64,
                    md.len(),
                    "{path:?}: st_size differs from the bytes read"
                );
                out.insert(
                    key,
                    Node::File {
                        size: md.len(),
                        sha256: sha256(&data),
                    },
                );
            }
        }
    }
    out
}

/// Asserts two trees are equal, listing the differences readably.
pub fn assert_trees_equal(what: &str, mount: &Tree, server: &Tree) {
    assert_trees_match(what, ("the mount", mount), ("the server", server));
}

/// Asserts two named trees are equal, listing the differences readably.
pub fn assert_trees_match(what: &str, left: (&str, &Tree), right: (&str, &Tree)) {
    let ((lname, l), (rname, r)) = (left, right);
    if l == r {
        return;
    }
    let mut diff = String::new();
    for (k, v) in l {
        match r.get(k) {
            None => diff.push_str(&format!("  only in {lname}: {k:?} {v:?}\n")),
            Some(s) if s != v => diff.push_str(&format!(
                "  differs: {k:?}\n    {lname}: {v:?}\n    {rname}: {s:?}\n"
            )),
            _ => {}
        }
    }
    for (k, v) in r {
        if !l.contains_key(k) {
            diff.push_str(&format!("  only in {rname}: {k:?} {v:?}\n"));
        }
    }
    panic!("{what}: {lname} and {rname} differ:\n{diff}");
}

// ---------------------------------------------------------------------------------------------
// Mounts

/// Options of one `cloudmount mount`.
#[derive(Clone, Debug)]
pub struct MountOpts {
    /// `--user`; `None` leaves it out (a profile gives it).
    pub user: Option<String>,
    /// Put in `CLOUDMOUNT_PASSWORD` (never on the command line).
    pub password: Option<String>,
    /// `--cache-dir`; `None`: a fresh directory owned by the [`Mounted`].
    pub cache_dir: Option<PathBuf>,
    pub cache_size: String,
    pub dir_cache_time: String,
    /// `--write-back-delay`: 0 here, so tests need not wait for it.
    pub write_back_delay: String,
    /// More arguments (`--allow-other`, `--config FILE`, ...).
    pub extra: Vec<OsString>,
    /// Where a user's session puts things: no `--cache-dir`, and only `HOME` and
    /// `XDG_RUNTIME_DIR` set (no other `XDG_*`), so the config, cache and logs are found in
    /// their default places under the home.
    pub home_defaults: bool,
    /// Files written into the home (path relative to it, content; mode 0600) before mounting,
    /// e.g. `.config/cloudmount/config.toml`.
    pub home_files: Vec<(String, Vec<u8>)>,
}

impl MountOpts {
    /// Credentials of `server`, a 256 MiB cache, listings trusted for 1 s.
    pub fn for_server(server: &Server) -> MountOpts {
        MountOpts {
            user: Some(server.user.clone()),
            password: Some(server.password.clone()),
            cache_dir: None,
            cache_size: "256M".into(),
            dir_cache_time: "1s".into(),
            write_back_delay: "0".into(),
            extra: vec![],
            home_defaults: false,
            home_files: vec![],
        }
    }

    /// See [`MountOpts::home_defaults`].
    pub fn home_defaults(mut self) -> Self {
        self.home_defaults = true;
        self
    }

    /// See [`MountOpts::home_files`].
    pub fn home_file(mut self, rel: &str, content: &[u8]) -> Self {
        self.home_files.push((rel.to_string(), content.to_vec()));
        self
    }

    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = Some(dir.to_path_buf());
        self
    }

    pub fn cache_size(mut self, s: &str) -> Self {
        self.cache_size = s.into();
        self
    }

    pub fn dir_cache_time(mut self, s: &str) -> Self {
        self.dir_cache_time = s.into();
        self
    }

    pub fn write_back_delay(mut self, s: &str) -> Self {
        self.write_back_delay = s.into();
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.extra.push(a.into());
        self
    }
}

/// A live `cloudmount` mount, unmounted on drop (`cloudmount unmount`, then `fusermount3 -u -z`
/// if that fails). Its home and XDG directories are private, so tests mount in parallel and each
/// one's daemon log is its own (printed when the test fails).
///
/// Everything runs as whoever runs the test: the real-mount tests run as a normal user
/// (`.config/nextest.toml` runs their binaries through `tests/as-user.sh`), so the mount, its
/// daemon, its control socket, cache and logs are that user's, as for anyone mounting their drive.
pub struct Mounted {
    /// The mount point.
    pub dir: PathBuf,
    /// The cache dir given with `--cache-dir`; with [`MountOpts::home_defaults`], the default
    /// cache root `HOME/.cache/cloudmount` (the mount's own folder is below it).
    pub cache_dir: PathBuf,
    /// The home (`HOME`) of the mount's commands; the XDG directories are below it.
    xdg: PathBuf,
    home_defaults: bool,
    mounted: bool,
    // Dropped after the unmount in `Drop::drop`.
    _mount_parent: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl Mounted {
    /// Mounts `source` (a URL or a profile name) and asserts that `cloudmount mount` exits 0
    /// and that the mount is live.
    pub fn new(source: &str, opts: &MountOpts) -> Mounted {
        Self::try_new(source, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts `source`; a `cloudmount mount` that fails is `Err` with what it printed (and the
    /// daemon log, if any); one that exits 0 must leave a live mount.
    pub fn try_new(source: &str, opts: &MountOpts) -> Result<Mounted, MountFailed> {
        let home = tempfile::Builder::new()
            .prefix("cm-mount-home.")
            .tempdir()
            .expect("tempdir");
        let xdg = home.path().to_path_buf();
        for d in ["state", "run", "config", "cache"] {
            std::fs::create_dir_all(xdg.join(d)).unwrap();
        }
        std::fs::set_permissions(xdg.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        for (rel, content) in &opts.home_files {
            let path = xdg.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // The parent of the mount point is world-searchable: other users (pjdfstest switches
        // users) must be able to reach an --allow-other mount.
        let mount_parent = tempfile::Builder::new()
            .prefix("cm-mnt.")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(mount_parent.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let dir = mount_parent.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let cache_dir = match (&opts.cache_dir, opts.home_defaults) {
            (Some(d), _) => d.clone(),
            (None, false) => xdg.join("cache").join("blocks"),
            (None, true) => xdg.join(".cache").join("cloudmount"),
        };

        let mut m = Mounted {
            dir: dir.clone(),
            cache_dir: cache_dir.clone(),
            xdg,
            home_defaults: opts.home_defaults,
            mounted: false,
            _mount_parent: mount_parent,
            _home: home,
        };
        let mut cmd = m.command();
        cmd.arg("mount").arg(source).arg(&dir);
        if let Some(u) = &opts.user {
            cmd.arg("--user").arg(u);
        }
        if !opts.home_defaults {
            cmd.arg("--cache-dir").arg(&cache_dir);
        }
        cmd.arg("--cache-size")
            .arg(&opts.cache_size)
            .arg("--dir-cache-time")
            .arg(&opts.dir_cache_time)
            .arg("--write-back-delay")
            .arg(&opts.write_back_delay)
            .args(&opts.extra);
        if let Some(p) = &opts.password {
            cmd.env("CLOUDMOUNT_PASSWORD", p);
        }
        let out = run(cmd, "cloudmount mount");
        if !out.status.success() {
            return Err(MountFailed {
                what: format!("cloudmount mount {source} {}", dir.display()),
                daemon_log: m.daemon_log(),
                output: out,
            });
        }
        m.mounted = true;
        let info = mount_info(&dir).unwrap_or_else(|| {
            panic!(
                "cloudmount mount exited 0 but {} is not in /proc/self/mountinfo",
                dir.display()
            )
        });
        assert_eq!(
            info.fs_type,
            "fuse.cloudmount",
            "{} is mounted, but as {info:?}",
            dir.display()
        );
        Ok(m)
    }

    /// The home (`HOME`) of this mount's commands.
    pub fn home(&self) -> &Path {
        &self.xdg
    }

    /// The `XDG_RUNTIME_DIR` of this mount's commands (the daemon's state file and control
    /// socket are in its `cloudmount` folder).
    pub fn runtime_dir(&self) -> PathBuf {
        self.xdg.join("run")
    }

    /// Where the daemon logs: `XDG_STATE_HOME/cloudmount`.
    fn state_dir(&self) -> PathBuf {
        if self.home_defaults {
            self.xdg.join(".local").join("state").join("cloudmount")
        } else {
            self.xdg.join("state").join("cloudmount")
        }
    }

    /// A command of the binary with this mount's environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CLOUDMOUNT_PASSWORD")
            .env("HOME", &self.xdg)
            .env("XDG_RUNTIME_DIR", self.runtime_dir());
        for (var, dir) in [
            ("XDG_STATE_HOME", "state"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_CACHE_HOME", "cache"),
        ] {
            if self.home_defaults {
                cmd.env_remove(var);
            } else {
                cmd.env(var, self.xdg.join(dir));
            }
        }
        cmd.env_remove("XDG_DATA_HOME")
            .env(
                "RUST_LOG",
                std::env::var("CLOUDMOUNT_TEST_MOUNT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cloudmount ARGS` with this mount's environment (its XDG directories), and
    /// returns what it did.
    pub fn cli<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, "cloudmount")
    }

    /// [`Mounted::cli`], asserting that the command succeeds.
    pub fn cli_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let out = self.cli(args);
        let shown: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        assert!(
            out.status.success(),
            "cloudmount {shown:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `cloudmount status --json` of this mount.
    pub fn status(&self) -> cloudmount::vfs::status::VfsStatus {
        let mut cmd = self.command();
        cmd.arg("status").arg(&self.dir).arg("--json");
        let out = run(cmd, "cloudmount status");
        assert!(
            out.status.success(),
            "cloudmount status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not a status ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Waits until `cloudmount status` satisfies `ok` (failing after `limit` with `what`, the
    /// status and the daemon log), and returns that status.
    pub fn status_until(
        &self,
        limit: Duration,
        what: &str,
        ok: impl Fn(&cloudmount::vfs::status::VfsStatus) -> bool,
    ) -> cloudmount::vfs::status::VfsStatus {
        let context = || {
            format!(
                "status: {:#?}\ndaemon log:\n{}",
                self.status(),
                self.daemon_log()
            )
        };
        eventually_with(limit, what, context, || Some(self.status()).filter(&ok))
    }

    /// `cloudmount status` of this mount, as a person reads it.
    pub fn status_text(&self) -> String {
        let mut cmd = self.command();
        cmd.arg("status").arg(&self.dir);
        let out = run(cmd, "cloudmount status");
        assert!(
            out.status.success(),
            "cloudmount status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every closed file is on the server (the upload queue is empty) and every
    /// folder or name change made offline was sent.
    pub fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.status();
            if st.queue.files == 0 && st.queue.namespace_ops == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "uploads did not finish within 60 s: {st:?}\ndaemon log:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's pid, from its state file (`$XDG_RUNTIME_DIR/cloudmount/*.pid`, line
    /// `pid=`; see src/daemon/state.rs). Each mount has its own runtime dir: exactly one file.
    pub fn daemon_pid(&self) -> u32 {
        let dir = self.runtime_dir().join("cloudmount");
        let pids: Vec<u32> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("pid="))
                    .and_then(|p| p.trim().parse().ok())
            })
            .collect();
        assert_eq!(
            pids.len(),
            1,
            "expected one daemon state file with a pid under {}",
            dir.display()
        );
        pids[0]
    }

    /// A crash: SIGKILLs the daemon (no unmount, no final upload, nothing flushed), waits
    /// until it is dead, then detaches the dead mount with `fusermount3 -u -z`. The mount is
    /// then gone; its cache dir and daemon log stay until `self` is dropped.
    pub fn kill9(&mut self) {
        let pid = self.daemon_pid();
        // SAFETY: kill has no memory-safety preconditions.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        // Not our child (the `mount` command that started it has exited): dead once /proc
        // shows it gone, or a zombie whose other threads have exited too (the leader turns
        // zombie first; the process's files, its cache lock among them, go with the last
        // thread, which may still be finishing a disk write).
        eventually(Duration::from_secs(10), "the killed daemon is dead", || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let state = stat.as_deref().and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
            });
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.count())
                .unwrap_or(0);
            match state.as_deref() {
                None => Some(()),
                Some("Z") | Some("X") => (threads <= 1).then_some(()),
                _ => None,
            }
        });
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .status()
            .expect("run fusermount3");
        assert!(
            st.success(),
            "fusermount3 -u -z {}: {st}",
            self.dir.display()
        );
        assert!(
            mount_info(&self.dir).is_none(),
            "{} is still mounted after the crash and fusermount3 -u -z",
            self.dir.display()
        );
        self.mounted = false;
    }

    /// `self.dir.join(rel)`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Runs `cloudmount unmount` and asserts that it succeeds and the mount is gone.
    pub fn unmount(self) {
        self.unmount_and_check(false);
    }

    /// [`Mounted::unmount`] with `--no-wait`: queued uploads stay in the cache for the next
    /// mount.
    pub fn unmount_no_wait(self) {
        self.unmount_and_check(true);
    }

    fn unmount_and_check(mut self, no_wait: bool) {
        let out = self.run_unmount(no_wait);
        assert!(
            out.status.success(),
            "cloudmount unmount {} failed ({}): {}\ndaemon log:\n{}",
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        assert!(
            mount_info(&self.dir).is_none(),
            "{} is still mounted after cloudmount unmount",
            self.dir.display()
        );
        self.mounted = false;
    }

    fn run_unmount(&self, no_wait: bool) -> Output {
        let mut cmd = self.command();
        cmd.arg("unmount").arg(&self.dir);
        // A failing test may leave uploads that will never finish (a server that is gone or
        // full): do not wait for them (a timeout here would panic inside the panic, and abort
        // every test of the binary).
        if no_wait || std::thread::panicking() {
            cmd.arg("--no-wait");
        }
        run(cmd, "cloudmount unmount")
    }

    /// The daemon's log files (last 200 lines of each).
    pub fn daemon_log(&self) -> String {
        let mut s = String::new();
        let dir = self.state_dir();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(200);
                s.push_str(&format!("--- {} ---\n", e.path().display()));
                for l in &lines[from..] {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        if s.is_empty() {
            s = format!("(no log under {})", dir.display());
        }
        s
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "daemon log of the mount at {}:\n{}",
                self.dir.display(),
                self.daemon_log()
            );
        }
        let out = self.run_unmount(false);
        if out.status.success() && mount_info(&self.dir).is_none() {
            return;
        }
        eprintln!(
            "cloudmount unmount {} failed ({}): {}; detaching with fusermount3 -u -z",
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .status();
        if !std::thread::panicking() {
            panic!(
                "cloudmount unmount {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// A `cloudmount mount` that failed ([`Mounted::try_new`]).
pub struct MountFailed {
    pub what: String,
    pub output: Output,
    pub daemon_log: String,
}

impl MountFailed {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

impl std::fmt::Display for MountFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            self.what,
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            self.stderr(),
            self.daemon_log
        )
    }
}

impl std::fmt::Debug for MountFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Runs `cmd` to completion with a timeout; its output goes through files (a daemon that
/// inherited a pipe would keep it open forever).
pub fn run(cmd: Command, what: &str) -> Output {
    run_within(cmd, what, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run`] with a limit of the caller's; past it the command is killed and the error says so
/// (with its stderr).
pub fn run_within(mut cmd: Command, what: &str, limit: Duration) -> Result<Output, String> {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let stdout = out_dir.path().join("stdout");
    let stderr = out_dir.path().join("stderr");
    cmd.stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} did not finish within {limit:?}; stderr: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    })
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// `major:minor` of the mounted filesystem.
    pub device: String,
    pub fs_type: String,
    pub source: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// Per-superblock options (`rw,user_id=0,...`).
    pub super_options: String,
}

/// The mount at exactly `path`, from `/proc/self/mountinfo` (the last one, if stacked).
pub fn mount_info(path: &Path) -> Option<MountInfo> {
    let want = path.as_os_str().as_bytes();
    let text = std::fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut found = None;
    for line in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || sep < 6 {
            continue;
        }
        if unescape_mountinfo(fields[4]) != want {
            continue;
        }
        found = Some(MountInfo {
            device: fields[2].to_string(),
            fs_type: fields[sep + 1].to_string(),
            source: fields[sep + 2].to_string(),
            options: fields[5].to_string(),
            super_options: fields[sep + 3].to_string(),
        });
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_with(limit, what, String::new, f)
}

/// [`eventually`], the panic message followed by `context()` (a status, a daemon log).
pub fn eventually_with<T>(
    limit: Duration,
    what: &str,
    context: impl FnOnce() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not the case after {limit:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of extended attribute `name` of `path` (follows symlinks), or the errno.
pub fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `user.cloudmount.state` of `path` on a mount (`pinned`, `cached`, `online`, ...).
pub fn state_of(path: &Path) -> Result<String, String> {
    let v = getxattr(path, "user.cloudmount.state").map_err(|e| {
        format!(
            "getxattr user.cloudmount.state of {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(e)
        )
    })?;
    String::from_utf8(v).map_err(|e| format!("state of {}: {e}", path.display()))
}

/// `statvfs(2)` of `path`.
pub fn statvfs(path: &Path) -> libc::statvfs {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed is a valid statvfs; the pointer is valid for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
    assert_eq!(
        r,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    st
}

/// An external test tool (fsx, pjdfstest): in `CLOUDMOUNT_TEST_TOOLS_DIR` (the copies
/// `tests/run.sh` makes for the normal user the mount tests run as), on PATH, or in
/// ~/.cargo/bin; fails loudly otherwise.
pub fn find_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CLOUDMOUNT_TEST_TOOLS_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.extend(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (not on PATH nor in ~/.cargo/bin). The test command \
                 tests/run.sh installs it; by hand: cargo install --locked {name}"
            )
        })
}

/// Reads a whole file through the mount.
pub fn read(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut v = Vec::new();
    f.read_to_end(&mut v)
        .unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    v
}

/// The errno of an I/O result that must have failed.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}) but must fail"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// `OsStr` of raw bytes (for names that are not UTF-8).
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
