#!/usr/bin/env bash
# cloudmount's test command.
#
#   tests/run.sh [ARGS...]   install missing Debian packages and the external suites fsx and
#                            pjdfstest (cargo install), start the real WebDAV test servers
#                            on 127.0.0.1 (Apache mod_dav with Basic and with Digest auth, rclone
#                            serve webdav, nginx dav + dav-ext), run the Rust tests against them,
#                            stop the servers.
#                            ARGS go to `cargo nextest run` (if installed) or `cargo test`,
#                            e.g. `tests/run.sh contract` runs only tests matching "contract".
#                            CLOUDMOUNT_TEST_RUNNER=cargo-test forces `cargo test`.
#   tests/run.sh --serve     only start the servers, write their CLOUDMOUNT_TEST_* variables to
#                            an env file (printed), and keep them up until Ctrl-C.
#
# Runs from any directory; meant for root on Debian 12. Exits with the tests' exit code.
# The real-mount tests run as a normal user (cloudmount-tester, made once; see
# .config/nextest.toml): as root, the build directory must be readable by all (it is by default).
# Run by a normal user, everything runs as that user, and the tests that need root (pjdfstest,
# passthrough, a tmpfs cache) fail saying so.
# Servers, ports and variables: tests/servers/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/servers/lib.sh
. "$ROOT/tests/servers/lib.sh"

SERVE_ONLY=0
SLEEP_PID=""
if [ "${1:-}" = "--serve" ]; then
    SERVE_ONLY=1
    shift
fi

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$SLEEP_PID" ]; then kill "$SLEEP_PID" 2>/dev/null || true; fi
    cm_stop_servers || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cm_ensure_packages
cm_prepare_user

# cargo: rustup's env file if PATH lacks it (CI shells, sudo).
if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-/root}/.cargo/env"
fi
if [ "$SERVE_ONLY" -eq 0 ] && ! command -v cargo >/dev/null 2>&1; then
    cm_die "cargo not found on PATH (install a Rust toolchain >= the crate's rust-version via rustup)"
fi
if [ "$SERVE_ONLY" -eq 0 ]; then
    cm_ensure_test_tools
fi

cm_start_servers
cm_share_test_tools

if [ "$SERVE_ONLY" -eq 1 ]; then
    cm_write_env_file "$CM_TMP/env"
    cm_log "servers up. In another shell:  . $CM_TMP/env   (Ctrl-C here stops them)"
    # Sleep in the background and `wait`: a trapped signal interrupts `wait` at once.
    while :; do
        cm_spawn /dev/null sleep 3600
        SLEEP_PID=$CM_SPAWNED_PID
        wait "$SLEEP_PID" || true
    done
fi

cd "$ROOT"
[ -t 1 ] || export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Formatting and lints first: either one failing fails the test command.
if command -v rustup >/dev/null 2>&1; then
    for comp in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$comp" ||
            rustup component add "$comp" >/dev/null 2>&1 ||
            cm_die "rustup could not install the $comp component"
    done
fi
cm_log "checking: cargo fmt --check"
cargo fmt --check || cm_die "cargo fmt --check failed: run 'cargo fmt'"
cm_log "checking: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings ||
    cm_die "cargo clippy found warnings (see above)"

rc=0
runner=${CLOUDMOUNT_TEST_RUNNER:-auto}   # auto | nextest | cargo-test
if [ "$runner" = auto ]; then
    runner=cargo-test
    if cargo nextest --version >/dev/null 2>&1; then runner=nextest; fi
fi
if [ "$runner" = nextest ]; then
    cm_log "running: cargo nextest run --no-fail-fast $*"
    # With a filter, matching no test is a warning; a full run with no test fails.
    no_tests=()
    if [ $# -gt 0 ]; then
        case "$(cargo nextest run --help 2>/dev/null || true)" in *--no-tests*) no_tests=(--no-tests=warn) ;; esac
    fi
    cargo nextest run --no-fail-fast "${no_tests[@]}" "$@" || rc=$?
    # nextest does not run doctests; do so on a full (unfiltered) run.
    if [ $# -eq 0 ]; then
        cm_log "running: cargo test --doc --no-fail-fast"
        cargo test --doc --no-fail-fast || { drc=$?; [ "$rc" -ne 0 ] || rc=$drc; }
    fi
else
    cm_log "running: cargo test --no-fail-fast $*"
    cargo test --no-fail-fast "$@" || rc=$?
fi

if [ "$rc" -eq 0 ]; then
    cm_log "tests passed"
else
    cm_log "tests FAILED (exit $rc)"
fi
exit "$rc"
