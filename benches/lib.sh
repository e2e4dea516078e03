# Shared by the benchmark scripts (sourced after tests/servers/lib.sh): what they need before
# they measure anything.

# Installs what the scripts use (the test servers' packages, python3 for the helpers), builds
# the release binary and sets CM_BIN to it; then starts the test servers (their variables:
# tests/servers/lib.sh).
bench_prepare() {
    cm_ensure_packages
    # The workloads' helpers are Python.
    if ! command -v python3 >/dev/null 2>&1; then
        cm_log "installing python3"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 </dev/null
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "${HOME:-/root}/.cargo/env"
    fi
    cm_log "building cloudmount (release)"
    (cd "$ROOT" && cargo build --release --quiet)
    local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
    CM_BIN="$target_dir/release/cloudmount"
    cm_start_servers
}

# The time now (seconds, with nanoseconds), and the seconds from `now` $1 to `now` $2.
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
