//! pjdfstest (the POSIX file system test suite, crates.io `pjdfstest`) on a real mount of
//! Apache (Basic auth), with the checked-in list of expected failures in
//! `tests/pjdfstest/pjdfstest.toml` — each one a POSIX behaviour WebDAV cannot carry, with its
//! reason there and in SEMANTICS.md.
//!
//! pjdfstest runs with that file minus its expected failures, so that each failure prints its
//! message. The test fails when any case fails that is not on the list; when a listed case
//! passes (the list is out of date), fails with another message than the one listed for it in
//! `[cloudmount.failure_messages]` (it broke for a new reason), or did not run at all (a typo or
//! a renamed case); and when the number of passed cases or the list of skipped ones differs
//! from `[cloudmount]` (a fix, or a regression, moves them: the numbers are updated on purpose).
//!
//! pjdfstest switches to other users (`nobody`, `daemon`) and needs root: the mount is made
//! with `--allow-other`. `tests/run.sh` installs pjdfstest (`cargo install --locked pjdfstest`)
//! when it is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::*;

/// pjdfstest's own wall clock is ~1 minute; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[derive(serde::Deserialize)]
struct Config {
    settings: Settings,
    cloudmount: Pinned,
}

/// What the run must show besides the expected failures (`[cloudmount]`).
#[derive(serde::Deserialize)]
struct Pinned {
    passed: usize,
    skipped: Vec<String>,
    /// Case → the message it fails with (`*` matches any text).
    failure_messages: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Settings {
    expected_failures: Vec<String>,
}

/// Results of one run, parsed from pjdfstest's output.
#[derive(Default, Debug)]
struct Results {
    passed: BTreeSet<String>,
    failed: Vec<(String, String)>,
    expected: BTreeSet<String>,
    unexpected_pass: BTreeSet<String>,
    skipped: BTreeSet<String>,
    summary: Option<String>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs of whitespace as one space, trimmed: how messages are compared.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` matches `pattern`, where `*` in the pattern matches any text.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split gives one part at least");
    let Some(mut left) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for part in middle {
        match left.find(part) {
            Some(i) => left = &left[i + part.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

/// The configuration file without its expected failures and without `[cloudmount]` (the
/// crate's toml has no serializer here: the text is cut, and the result checked).
fn run_configuration(config_path: &Path) -> String {
    let text = std::fs::read_to_string(config_path).unwrap();
    let text = match text.find("\n[cloudmount]") {
        Some(i) => &text[..i + 1],
        None => &text[..],
    };
    let start = text
        .find("\nexpected_failures = [")
        .expect("expected_failures = [ at the start of a line")
        + 1;
    let end = start
        + text[start..]
            .find("\n]\n")
            .expect("expected_failures ends with ] on its own line")
        + 3;
    let out = format!("{}expected_failures = []\n{}", &text[..start], &text[end..]);
    let v: toml::Table = toml::from_str(&out).expect("the run configuration parses");
    assert!(!v.contains_key("cloudmount"), "{out}");
    assert_eq!(
        v["settings"]["expected_failures"].as_array().map(Vec::len),
        Some(0),
        "{out}"
    );
    assert!(
        v.contains_key("features") && v.contains_key("dummy_auth"),
        "{out}"
    );
    out
}

#[test]
fn glob_matches_like_a_shell() {
    assert!(glob_match("a: EPERM", "a: EPERM"));
    assert!(!glob_match("a: EPERM", "a: EPERM2"));
    assert!(!glob_match("a: EPERM", "xa: EPERM"));
    assert!(glob_match("left: * right: 1", "left: 17.5 right: 1"));
    assert!(!glob_match("left: * right: 1", "left: 17.5 right: 2"));
    assert!(glob_match("x*y*z", "x1y2z"));
    assert!(!glob_match("ab*ba", "aba"));
}

fn parse(output: &str) -> Results {
    let mut r = Results::default();
    let mut current_failure: Option<(String, String)> = None;
    for line in output.lines().map(strip_ansi) {
        let status_of = |suffix: &str| -> Option<String> {
            let name = line.strip_suffix(suffix)?.trim_end();
            (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_string())
        };
        let status = [
            ("FAILED", " FAILED"),
            ("ok", " ok"),
            ("skipped", " skipped"),
            ("expected", " failed as expected"),
            ("unexpected", " PASSED UNEXPECTEDLY"),
        ]
        .iter()
        .find_map(|(k, suffix)| status_of(suffix).map(|n| (*k, n)));
        if let Some((kind, name)) = status {
            if let Some(f) = current_failure.take() {
                r.failed.push(f);
            }
            match kind {
                "FAILED" => current_failure = Some((name, String::new())),
                "ok" => {
                    r.passed.insert(name);
                }
                "skipped" => {
                    r.skipped.insert(name);
                }
                "expected" => {
                    r.expected.insert(name);
                }
                _ => {
                    r.unexpected_pass.insert(name);
                }
            }
        } else if line.starts_with("Summary") {
            if let Some(f) = current_failure.take() {
                r.failed.push(f);
            }
            r.summary = Some(line.trim().to_string());
        } else if let Some((_, msg)) = current_failure.as_mut() {
            if !line.trim().is_empty() && msg.len() < 2000 {
                msg.push_str(line.trim());
                msg.push(' ');
            }
        }
    }
    if let Some(f) = current_failure.take() {
        r.failed.push(f);
    }
    r
}

#[test]
fn pjdfstest_with_the_expected_failures_of_webdav() {
    let pjdfstest = find_tool("pjdfstest");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "pjdfstest must run as root (it switches to other users and tests root-only \
         behaviour); run the test command tests/run.sh as root"
    );
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest/pjdfstest.toml");
    let config: Config = toml::from_str(
        &std::fs::read_to_string(&config_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", config_path.display())),
    )
    .unwrap_or_else(|e| panic!("parse {}: {e}", config_path.display()));
    let listed: BTreeSet<String> = config.settings.expected_failures.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        config.settings.expected_failures.len(),
        "duplicate names in expected_failures"
    );
    let pinned = &config.cloudmount;
    let with_message: BTreeSet<String> = pinned.failure_messages.keys().cloned().collect();
    assert_eq!(
        listed,
        with_message,
        "expected_failures and [cloudmount.failure_messages] of {} name other cases",
        config_path.display()
    );

    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "pjdfstest");
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s).arg("--allow-other"));
    assert!(
        mount_info(&m.dir).is_some_and(|i| i.super_options.contains("allow_other")),
        "the mount is not allow_other: {:?}",
        mount_info(&m.dir)
    );
    // A directory on another file system, for the EXDEV cases.
    let secondary = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secondary.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out_file = out_dir.path().join("pjdfstest.out");
    // The configuration pjdfstest runs with: no expected failures (a case pjdfstest expects to
    // fail prints no message), and none of cloudmount's own keys.
    let run_config = out_dir.path().join("pjdfstest.toml");
    std::fs::write(&run_config, run_configuration(&config_path)).unwrap();
    println!(
        "pjdfstest -c {} -s {} -p {}",
        run_config.display(),
        secondary.path().display(),
        m.dir.display()
    );
    let mut child = Command::new(&pjdfstest)
        .arg("-c")
        .arg(&run_config)
        .arg("-s")
        .arg(secondary.path())
        .arg("-p")
        .arg(&m.dir)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(out_dir.path().join("stderr")).unwrap())
        .spawn()
        .expect("run pjdfstest");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = std::fs::read_to_string(&out_file).unwrap_or_default();
            panic!(
                "pjdfstest did not finish within {TIMEOUT:?}; its output so far:\n{out}\n\
                 daemon log:\n{}",
                m.daemon_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = String::from_utf8_lossy(&std::fs::read(&out_file).unwrap()).into_owned();
    let stderr = std::fs::read_to_string(out_dir.path().join("stderr")).unwrap_or_default();
    let r = parse(&output);
    let summary = r.summary.clone().unwrap_or_else(|| {
        panic!("pjdfstest printed no summary ({status}):\n{output}\nstderr:\n{stderr}")
    });
    println!("{summary}");

    let mut problems = String::new();
    let mut failed_listed = BTreeSet::new();
    for (name, msg) in &r.failed {
        let msg = collapse(msg);
        match pinned.failure_messages.get(name) {
            Some(want) if glob_match(&collapse(want), &msg) => {
                failed_listed.insert(name.clone());
            }
            Some(want) => problems.push_str(&format!(
                "  listed as an expected failure but failed for another reason: {name}\n      \
                 expected: {want}\n      got:      {msg}\n"
            )),
            None => problems.push_str(&format!("  unexpected failure: {name}\n      {msg}\n")),
        }
    }
    // No case is expected to fail in the run configuration: these mean the file was not
    // rewritten as meant.
    for name in r.expected.iter().chain(&r.unexpected_pass) {
        problems.push_str(&format!(
            "  pjdfstest ran {name} as an expected failure: the run configuration still lists it\n"
        ));
    }
    let failed_names: BTreeSet<&String> = r.failed.iter().map(|(n, _)| n).collect();
    for name in listed.difference(&failed_listed) {
        if failed_names.contains(name) {
            continue; // reported above, with its message
        }
        let how = if r.passed.contains(name) {
            "passed (remove it from the list and from SEMANTICS.md)"
        } else if r.skipped.contains(name) {
            "was skipped"
        } else {
            "did not run (no such test case?)"
        };
        problems.push_str(&format!(
            "  listed as an expected failure but {how}: {name}\n"
        ));
    }
    let pinned_skips: BTreeSet<String> = pinned.skipped.iter().cloned().collect();
    for name in r.skipped.difference(&pinned_skips) {
        problems.push_str(&format!("  skipped, not in [cloudmount] skipped: {name}\n"));
    }
    for name in pinned_skips.difference(&r.skipped) {
        let now = if r.passed.contains(name) {
            "passed"
        } else if failed_names.contains(name) {
            "failed"
        } else {
            "did not run"
        };
        problems.push_str(&format!("  in [cloudmount] skipped but {now}: {name}\n"));
    }
    if r.passed.len() != pinned.passed {
        problems.push_str(&format!(
            "  {} cases passed, [cloudmount] passed = {} ({:+}): update the number if the change \
             is meant (the lines above say which cases moved)\n",
            r.passed.len(),
            pinned.passed,
            r.passed.len() as i64 - pinned.passed as i64
        ));
    }
    let failing_run_is_expected = !r.failed.is_empty();
    if !problems.is_empty() || (status.success() == failing_run_is_expected) {
        panic!(
            "pjdfstest on cloudmount ({status}): {summary}\n{problems}\n\
             (expected failures, messages and counts: {})\nstderr: {stderr}",
            config_path.display()
        );
    }
    assert_eq!(
        failed_listed, listed,
        "every listed case failed as expected"
    );
    m.unmount();
}

/// SEMANTICS.md lists exactly the expected failures of the pjdfstest configuration.
#[test]
fn semantics_md_lists_every_expected_failure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config: Config = toml::from_str(
        &std::fs::read_to_string(root.join("tests/pjdfstest/pjdfstest.toml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = config.settings.expected_failures.into_iter().collect();
    let doc = std::fs::read_to_string(root.join("SEMANTICS.md")).unwrap();
    let section = doc
        .split_once("<!-- expected-failures:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- expected-failures:end -->"))
        .map(|(s, _)| s)
        .expect("SEMANTICS.md has the expected-failures section markers");
    // Every `a::b` in backticks in that section is a case name.
    let in_doc: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.contains("::") && !t.contains(char::is_whitespace))
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = listed.difference(&in_doc).collect();
    let extra: Vec<_> = in_doc.difference(&listed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "SEMANTICS.md and tests/pjdfstest/pjdfstest.toml disagree:\n  in the toml only: \
         {missing:?}\n  in SEMANTICS.md only: {extra:?}"
    );
}
