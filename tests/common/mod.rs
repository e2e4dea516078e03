//! Shared helpers of the integration tests: the real servers started by `tests/run.sh`, the
//! embedded server spawned per test, and small utilities.
//!
//! A test that needs a server the test command did not start fails loudly: it never skips.

#![allow(dead_code)]

pub mod apache;
pub mod desktop;
pub mod http_log;
pub mod mount;
pub mod ops;
pub mod proxy;
pub mod sync;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use cloudmount::remote::webdav::{WebDavConfig, WebDavRemote};
use cloudmount::remote::{Remote, RemotePath};

/// Reads a variable set by `tests/run.sh`, or fails the test with instructions.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs the real WebDAV servers. Run the test command \
             `tests/run.sh` (it installs and starts Apache Basic/Digest, rclone serve webdav and nginx)."
        ),
    }
}

pub fn test_user() -> String {
    env("CLOUDMOUNT_TEST_USER")
}

pub fn test_password() -> String {
    env("CLOUDMOUNT_TEST_PASSWORD")
}

/// A random hex string, for unique names.
pub fn unique() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("random");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A WebDAV client for `url` with the test credentials, fast retries.
pub fn webdav(url: &str, user: &str, password: &str) -> WebDavRemote {
    let mut cfg = WebDavConfig::new(url).with_credentials(user, password);
    cfg.retry_base_delay = std::time::Duration::from_millis(20);
    cfg.retries = 2;
    WebDavRemote::new(cfg).expect("client")
}

/// A `cloudmount serve` child process, killed on drop.
pub struct EmbeddedServer {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const EMBEDDED_PASSWORD: &str = "embedded-test-secret";

/// Starts `cloudmount serve` on a fresh directory and a free port.
pub fn embedded_server(quota: Option<&str>) -> EmbeddedServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudmount"));
    cmd.arg("serve")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--user", "cmtest"])
        .env("CLOUDMOUNT_PASSWORD", EMBEDDED_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(q) = quota {
        cmd.args(["--quota", q]);
    }
    let mut child = cmd.spawn().expect("spawn cloudmount serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read serve banner");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("cloudmount serve printed no URL: {line:?}"))
        .to_string();
    EmbeddedServer { child, url, dir }
}

/// Files on the local disk of a server directory (for checking what the server stored).
pub fn local_path(dir: &tempfile::TempDir, rel: &str) -> PathBuf {
    dir.path().join(rel)
}

/// Creates a fresh, uniquely named directory for one test on `remote`.
pub async fn fresh_dir(remote: &Arc<dyn Remote>, label: &str) -> RemotePath {
    let p = RemotePath::new(&format!("t-{label}-{}", unique())).unwrap();
    remote.mkdir(&p).await.expect("mkdir test dir");
    p
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic test content: `n` bytes that differ at every offset of a block.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}
