//! fsx (the File System eXerciser, crates.io `fsx`) on a real mount of Apache (Basic auth):
//! random reads, writes, mmap reads and writes, truncates, fsyncs and close/reopen cycles on one
//! file of up to 4 MiB, with a block cache of only 1 MiB, every read checked by fsx against its
//! own copy. Configuration: `tests/fsx/fsx.toml`.
//!
//! `tests/run.sh` installs fsx (`cargo install --locked fsx`) when it is missing. The seed is
//! fixed (printed); `CLOUDMOUNT_TEST_FSX_SEED` and `CLOUDMOUNT_TEST_FSX_OPS` override the seed
//! and the number of operations (default 20,000) to reproduce or extend a run.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::*;

const DEFAULT_SEED: u64 = 20261128;
const DEFAULT_OPS: u64 = 20_000;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

#[test]
fn fsx_on_a_file_larger_than_the_cache() {
    let fsx = find_tool("fsx");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fsx/fsx.toml");
    let seed = env_u64("CLOUDMOUNT_TEST_FSX_SEED", DEFAULT_SEED);
    let ops = env_u64("CLOUDMOUNT_TEST_FSX_OPS", DEFAULT_OPS);

    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "fsx");
    // The cache budget (1 MiB, one block) is a quarter of fsx's largest file (flen, 4 MiB).
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).cache_size("1M"));
    let artifacts = tempfile::tempdir().unwrap();
    let file = m.path("fsx.data");

    println!(
        "fsx: seed {seed}, {ops} operations, config {}, file {}",
        config.display(),
        file.display()
    );
    let out = Command::new(&fsx)
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-f")
        .arg(&config)
        .arg("-P")
        .arg(artifacts.path())
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fsx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        panic!(
            "fsx failed ({}) with seed {seed} after at most {ops} operations; reproduce with \
             CLOUDMOUNT_TEST_FSX_SEED={seed} tests/run.sh mount_fsx\n\
             --- fsx stdout ---\n{stdout}\n--- fsx stderr (its operation log) ---\n{stderr}\n\
             daemon log:\n{}",
            out.status,
            m.daemon_log()
        );
    }
    assert!(
        stdout.contains("All operations completed A-OK!"),
        "fsx exited 0 without its success line:\n{stdout}\n{stderr}"
    );
    println!("{}", stdout.trim());

    // What fsx left behind is on the server, byte for byte (once its last close is uploaded:
    // without waiting, a loaded machine could GET before the upload and find nothing).
    m.settle();
    let local = read(&file);
    let remote = dav.get("fsx.data");
    assert_eq!(
        local.len(),
        remote.len(),
        "size of fsx's file on the server"
    );
    assert!(
        local == remote,
        "fsx's file differs on the server at byte {:?}",
        local.iter().zip(remote.iter()).position(|(a, b)| a != b)
    );
    m.unmount();
}
