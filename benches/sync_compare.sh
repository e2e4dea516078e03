#!/usr/bin/env bash
# cloudmount's sync folders vs `rclone bisync`, on the same Apache mod_dav server on loopback
# (the one tests/run.sh and benches/compare.sh start), in one run. Prints each figure, the ratio
# cloudmount/rclone and the goal of the sync-folders issue next to it (goals are printed, never
# asserted). Speed is measured here, never in tests.
#
#   benches/sync_compare.sh                        # everything (about 7 minutes here)
#   BENCH_TREE_DIRS=50 benches/sync_compare.sh     # a larger tree (dirs of 100 files; >= 20)
#   BENCH_IDLE_FILES=20000 benches/sync_compare.sh # a smaller folder for the idle figures
#   BENCH_REPEAT=1 benches/sync_compare.sh         # no-change and 10-change syncs once each
#                                                  # (default 3 rounds; the table shows medians)
#   BENCH_SKIP_IDLE=1 benches/sync_compare.sh      # leave out the idle figures (part 5)
#   BENCH_ONLY_IDLE=1 benches/sync_compare.sh      # only the idle figures (part 5; no rclone)
#   BENCH_BIN=/path/cloudmount benches/sync_compare.sh  # measure that binary (e.g. an older
#                                                  # build) instead of this tree's release build
#   BENCH_KEEP=1 benches/sync_compare.sh           # keep the work dir (daemon log, trees) and
#                                                  # the servers' logs (Apache's access log)
#
# What is measured:
#  1. first sync of a tree of BENCH_TREE_DIRS (20) directories of 100 files, sizes 100 B to
#     200 KB (log-uniform; deterministic content): cloudmount `sync add` + `sync now --wait`
#     (the daemon already running) against `rclone bisync LOCAL REMOTE --resync`;
#  2. a sync with nothing changed: `sync now --wait` against `rclone bisync`; the requests each
#     makes are counted in Apache's access log;
#  3. a sync with 10 files changed on each side (10 local files rewritten, 10 others PUT on the
#     server with curl), same commands.
#     For 2 and 3 the table also shows when cloudmount's run itself ended (the daemon asked every
#     10 ms): `sync now --wait` looks every 50 ms;
#  4. immediate mode: from a local save (write + close) in the same tree until the new content
#     is on the server (HEAD every 20 ms), median of 10 saves; the daemon's default debounce
#     (400 ms of quiet) is kept. rclone has no equivalent;
#  5. the daemon's RSS and idle CPU (utime + stime over 30 s) while it watches a folder of
#     BENCH_IDLE_FILES (100,000) small files (first synced once, that sync's time is printed
#     too), with the default sync_poll_interval (30 s): the 30 s window starts when the daemon
#     next looks at the server after that sync, so it holds exactly one look (and no sync).
#     Then 3 saves in that folder, timed as in 4.
# The tree folder is added with `--schedule daily` for 1-3 (the watcher would otherwise start a
# sync of its own as soon as the files are edited, racing the timed one; a daily folder syncs on
# `sync now` only) and switched to immediate for 4.
#
# rclone is Debian's (1.60): it refuses a plain WebDAV server for bisync ("modification time
# support is missing on path2"), and runs with the owncloud vendor (configured by environment
# variables, its defaults otherwise: 4 transfers, 8 checkers). The password never appears in an
# argument: cloudmount reads its profile's password_file, rclone its obscured environment value.
#
# Runs as root on Debian 12 (installs apache2-bin, rclone, ... if missing, like tests/run.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/servers/lib.sh
. "$ROOT/tests/servers/lib.sh"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

TREE_DIRS=${BENCH_TREE_DIRS:-20}
TREE_FILES=100
IDLE_FILES=${BENCH_IDLE_FILES:-100000}
REPEAT=${BENCH_REPEAT:-3}
SAVES=10
CHANGES=10
IDLE_WINDOW=30
for v in TREE_DIRS IDLE_FILES REPEAT; do
    case "${!v}" in ''|*[!0-9]*|0) echo "$v must be a positive number" >&2; exit 2 ;; esac
done
[ "$TREE_DIRS" -ge $(( 2 * CHANGES )) ] || { echo "BENCH_TREE_DIRS must be at least $(( 2 * CHANGES ))" >&2; exit 2; }
[ "$REPEAT" -le 99 ] || { echo "BENCH_REPEAT must be at most 99" >&2; exit 2; }

WORK=""
CM_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CM_PID" ]; then
        cm stop bench >/dev/null 2>&1 || true
        cm_stop_pid cloudmount "$CM_PID" || true
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then
        export CLOUDMOUNT_TEST_KEEP_LOGS=1
        [ -z "$WORK" ] || cm_log "keeping $WORK"
        WORK=""
    fi
    cm_stop_servers || true
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_prepare
CM_BIN=${BENCH_BIN:-$CM_BIN}
[ -x "$CM_BIN" ] || { echo "no binary at $CM_BIN" >&2; exit 2; }
[ -z "${BENCH_ONLY_IDLE:-}" ] || [ -z "${BENCH_SKIP_IDLE:-}" ] \
    || { echo "BENCH_ONLY_IDLE and BENCH_SKIP_IDLE exclude each other" >&2; exit 2; }
URL="$CLOUDMOUNT_TEST_APACHE_BASIC_URL"
DATA="$CLOUDMOUNT_TEST_APACHE_BASIC_DIR"
LOG="$CLOUDMOUNT_TEST_APACHE_ACCESS_LOG"
WORK=$(mktemp -d /tmp/cloudmount-syncbench.XXXXXX)
CURL=(curl -s -K "$CM_TMP/curl-basic.conf")

log_lines() { wc -l <"$LOG"; }
# Requests since line $1 of the access log: "42 (PROPFIND 21, PUT 20, MOVE 1)".
requests_since() { sleep 0.3; tail -n +"$(( $1 + 1 ))" "$LOG" | awk '
    { m = substr($6, 2); if (!(m in n)) order[k++] = m; n[m]++; t++ }
    END { printf "%d (", t; for (i = 0; i < k; i++) printf "%s%s %d", (i ? ", " : ""), order[i], n[order[i]]; printf ")" }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- cloudmount: a private home with one profile on the Apache server, its daemon ------------
H="$WORK/home"
mkdir -p "$H/.config/cloudmount" "$H/.local/state" "$H/.local/share" "$H/run"
chmod 0700 "$H/run"
(umask 077; printf '%s' "$CLOUDMOUNT_TEST_PASSWORD" >"$H/.config/cloudmount/password")
# No sync_poll_interval: the default (30 s) is what the idle figures are about.
cat >"$H/.config/cloudmount/config.toml" <<EOF
[profiles.bench]
url = "$URL"
user = "$CLOUDMOUNT_TEST_USER"
password_file = "$H/.config/cloudmount/password"
EOF
# The binary with the private home's environment, as a script (the Python helpers run it too).
cat >"$WORK/cm" <<EOF
#!/bin/sh
exec env -u CLOUDMOUNT_PASSWORD -u XDG_CONFIG_HOME -u XDG_DATA_HOME -u XDG_STATE_HOME \\
    -u XDG_CACHE_HOME -u CLOUDMOUNT_SYNC_QUIET_MS HOME="$H" XDG_RUNTIME_DIR="$H/run" \\
    "$CM_BIN" "\$@"
EOF
chmod +x "$WORK/cm"
cm() { "$WORK/cm" "$@" </dev/null; }
start_daemon() {
    cm_spawn "$WORK/daemon.log" "$WORK/cm" start bench --foreground
    CM_PID=$CM_SPAWNED_PID
    for _ in $(seq 300); do
        cm sync list --json >/dev/null 2>&1 && break
        kill -0 "$CM_PID" 2>/dev/null || { cm_show_log "daemon log" "$WORK/daemon.log"; cm_die "the daemon exited"; }
        sleep 0.1
    done
    cm sync list --json >/dev/null 2>&1 || cm_die "the daemon did not answer within 30 s"
    # cm_spawn runs `setpriv ... sh ... env ... cloudmount`, each exec'ing the next: one process.
    cm_log "cloudmount daemon: pid $CM_PID ($(tr '\0' ' ' <"/proc/$CM_PID/cmdline" | cut -c1-60)...)"
}
stop_daemon() {
    cm stop bench >/dev/null || true
    cm_stop_pid cloudmount "$CM_PID"
    CM_PID=""
}
sync_now() { # dir: sync now --wait, failing loudly
    cm sync now "$1" --wait >"$WORK/sync-now.out" 2>&1 \
        || { cat "$WORK/sync-now.out" >&2; cm_show_log "daemon log" "$WORK/daemon.log"; cm_die "sync now $1 failed"; }
}
# dir: the first sync of a folder just added: `sync now DIR --wait` (it waits for the add's
# own run too, and for any run begun meanwhile).
first_sync_now() {
    sync_now "$1"
}
# dir: runs `sync now DIR --wait` and prints two times: until the command returned, and until
# the run had ended, seen by asking the daemon (its control socket, one JSON line each way)
# every 10 ms. The command looks every 50 ms, so it returns up to 50 ms after the run ended.
# Only for a folder that nothing else makes run (a daily one).
timed_sync_now() {
    python3 - "$WORK/cm" "$H/run/cloudmount/sync-bench.sock" "$1" <<'EOF' || cm_die "sync now $1 failed"
import json, socket, subprocess, sys, time
cm, sock, folder = sys.argv[1:4]

def ask(req):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall((json.dumps(dict(v=1, **req)) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        b = s.recv(1 << 16)
        if not b:
            break
        data += b
    s.close()
    return json.loads(data)

def mine():
    for f in ask({"request": "sync_list"})["sync_folders"]:
        if f["local"] == folder:
            return f
    sys.exit("%s is not a sync folder" % folder)

runs0 = mine()["runs"]
t0 = time.monotonic()
p = subprocess.Popen([cm, "sync", "now", folder, "--wait"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
t_run = None
while t_run is None:
    if mine()["runs"] > runs0:
        t_run = time.monotonic() - t0
    elif p.poll() is not None:
        break
    else:
        time.sleep(0.01)
out = p.communicate()[0]
t_cli = time.monotonic() - t0
if p.returncode != 0 or t_run is None:
    sys.exit("sync now --wait: exit %s: %s" % (p.returncode, out.decode(errors="replace")))
print("%.3f %.3f" % (t_cli, t_run))
EOF
}
folder_json() { # dir field: a field of the folder's `sync list --json` entry
    cm sync list --json | python3 -c '
import json, sys
for f in json.load(sys.stdin):
    if f["local"] == sys.argv[1]:
        print(f[sys.argv[2]])' "$1" "$2"
}

# Used by parts 4 and 5.
# dir remote-path count pattern: saves `pattern % i` (write + close, a new size each time) for i
# in 0..count, each once the previous one is on the server and its run ended; prints how long
# after each close the new content was on the server (HEAD every 20 ms).
measure_saves() {
    BENCH_URL="${URL}$2" python3 - "$1" "$3" "$4" "$WORK/cm" <<'EOF'
import base64, http.client, json, os, subprocess, sys, time, urllib.parse
root, saves, pattern, cm = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
url = urllib.parse.urlparse(os.environ["BENCH_URL"])
auth = "Basic " + base64.b64encode(("%s:%s" % (os.environ["CLOUDMOUNT_TEST_USER"],
                                    os.environ["CLOUDMOUNT_TEST_PASSWORD"])).encode()).decode()

def state():
    out = subprocess.run([cm, "sync", "list", "--json"], capture_output=True, check=True,
                         stdin=subprocess.DEVNULL).stdout
    for f in json.loads(out):
        if f["local"] == root:
            return f["state"]

def head(path):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    c.request("HEAD", url.path + "/" + path, headers={"Authorization": auth})
    r = c.getresponse(); r.read(); c.close()
    return r.status, int(r.getheader("Content-Length") or -1)

times = []
for i in range(saves):
    rel = pattern % i
    data = ("save %d\n" % i).encode() * (700 + i)   # a size no earlier version had
    t0 = time.monotonic()
    with open(os.path.join(root, rel), "wb") as f:
        f.write(data)
    t_closed = time.monotonic()
    while True:
        st, ln = head(rel)
        if st == 200 and ln == len(data):
            break
        if time.monotonic() - t0 > 120:
            sys.exit("save %d of %s: not on the server after 120 s" % (i, rel))
        time.sleep(0.02)
    times.append(time.monotonic() - t_closed)
    # The run that sent it ends (it learns the new version) before the next save.
    deadline = time.monotonic() + 120
    while state() != "up-to-date" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
print(" ".join("%.3f" % t for t in times))
EOF
}
SAVE_MEDIAN=0; SAVE_TIMES=""; SAVE_REQ=""; DIFFERS=""
# Parts 1-4 (the tree, and rclone's setup) unless only the idle figures are asked for.
if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
# --- rclone: an on-the-fly remote "bench" from environment variables -------------------------
export RCLONE_CONFIG="$WORK/rclone.conf"; : >"$RCLONE_CONFIG"
export RCLONE_CACHE_DIR="$WORK/rclone-cache"
export RCLONE_CONFIG_BENCH_TYPE=webdav RCLONE_CONFIG_BENCH_URL="$URL" \
    RCLONE_CONFIG_BENCH_USER="$CLOUDMOUNT_TEST_USER" RCLONE_CONFIG_BENCH_VENDOR=owncloud
RCLONE_CONFIG_BENCH_PASS=$(rclone obscure - <<<"$CLOUDMOUNT_TEST_PASSWORD"); export RCLONE_CONFIG_BENCH_PASS
BISYNC_WORKDIR="$WORK/bisync"
bisync() { # extra args: rclone bisync of the rclone tree, failing loudly
    rclone bisync "$RC_DIR" bench:bench-rc/tree --workdir "$BISYNC_WORKDIR" "$@" \
        >"$WORK/bisync.out" 2>&1 || { cat "$WORK/bisync.out" >&2; cm_die "rclone bisync $* failed"; }
}

# --- the tree --------------------------------------------------------------------------------
CM_DIR="$WORK/cm-tree"
RC_DIR="$WORK/rc-tree"
cm_log "creating the tree: $TREE_DIRS directories of $TREE_FILES files"
python3 - "$CM_DIR" "$TREE_DIRS" "$TREE_FILES" <<'EOF'
import math, os, random, sys
root, dirs, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(2026)
total = 0
for d in range(dirs):
    p = os.path.join(root, "d%03d" % d)
    os.makedirs(p, exist_ok=True)
    for f in range(files):
        # log-uniform from 100 B to 200 KB: many small files, some large ones
        size = int(math.exp(rnd.uniform(math.log(100), math.log(200 * 1024))))
        with open(os.path.join(p, "f%04d" % f), "wb") as fh:
            fh.write(rnd.randbytes(size))
        total += size
print("%d files, %.1f MiB" % (dirs * files, total / 1048576), file=sys.stderr)
EOF
cp -a "$CM_DIR" "$RC_DIR"
TREE_FILES_N=$(( TREE_DIRS * TREE_FILES ))
TREE_MIB=$(du -sm --apparent-size "$CM_DIR" | cut -f1)
# rclone bisync wants both roots to exist.
"${CURL[@]}" -o /dev/null -X MKCOL "${URL}bench-rc/"
"${CURL[@]}" -o /dev/null -X MKCOL "${URL}bench-rc/tree/"

verify() { # local-dir server-dir label: the two trees hold the same files
    if diff -r -q -x .cloudmount-sync "$1" "$2" >"$WORK/diff.out" 2>&1; then
        cm_log "$3: local and server trees are identical"
    else
        cm_log "$3: local and server trees DIFFER:"; head -20 "$WORK/diff.out" >&2
        DIFFERS+=" $3"
    fi
}
DIFFERS=""

declare -A T N S
record() { # key seconds requests
    S[$1]="${S[$1]:-}${S[$1]:+ }$2"
    T[$1]=$(median <<<"${S[$1]}")
    N[$1]=$3
}

fi

start_daemon

if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
# 1. First sync.
cm_log "1. first sync of $TREE_FILES_N files ($TREE_MIB MiB): cloudmount"
sync 2>/dev/null || true
l0=$(log_lines); t0=$(now)
cm sync add "$CM_DIR" --remote bench-cm/tree --schedule daily >/dev/null
first_sync_now "$CM_DIR"
t=$(secs "$t0" "$(now)"); n=$(requests_since "$l0")
record cm.first "$t" "$n"
cm_log "cloudmount first sync: $t s, $n requests"
verify "$CM_DIR" "$DATA/bench-cm/tree" "cloudmount first sync"

cm_log "1. first sync: rclone bisync --resync"
l0=$(log_lines); t0=$(now)
bisync --resync
t=$(secs "$t0" "$(now)"); n=$(requests_since "$l0")
record rc.first "$t" "$n"
cm_log "rclone first sync: $t s, $n requests"
verify "$RC_DIR" "$DATA/bench-rc/tree" "rclone first sync"

# 2 and 3 alternate: no change, then 10 changes on each side, REPEAT rounds.
edit_local() { # dir round: rewrites file f00RR of d000..d009 (new content, new size)
    python3 - "$1" "$2" "$CHANGES" <<'EOF'
import os, sys
root, r, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(n):
    with open(os.path.join(root, "d%03d" % d, "f%04d" % r), "wb") as f:
        f.write(("local edit, round %d, dir %d\n" % (r, d)).encode() * (50 + r))
EOF
}
edit_server() { # remote-path round: PUTs file f00RR of d010..d019
    local d f="$WORK/put.bin"
    for d in $(seq "$CHANGES" $(( 2 * CHANGES - 1 ))); do
        printf 'server edit, round %d, dir %d\n' "$2" "$d" | awk -v n=$(( 40 + $2 )) '{ for (i = 0; i < n; i++) print }' >"$f"
        "${CURL[@]}" -o /dev/null -f -T "$f" "${URL}$1/d$(printf %03d "$d")/f$(printf %04d "$2")" \
            || cm_die "curl PUT failed"
    done
}
cm_timed() { # key: a timed `sync now --wait` of the tree (cm.KEY: the command, cmrun.KEY: the run)
    local l0 t_cli t_run n
    l0=$(log_lines)
    read -r t_cli t_run < <(timed_sync_now "$CM_DIR")
    n=$(requests_since "$l0")
    record "cm.$1" "$t_cli" "$n"; record "cmrun.$1" "$t_run" "$n"
    cm_log "cloudmount: $t_cli s (the run ended after $t_run s), $n requests"
}
for rep in $(seq "$REPEAT"); do
    cm_log "2. no change, round $rep of $REPEAT"
    cm_timed none
    l0=$(log_lines); t0=$(now); bisync; t=$(secs "$t0" "$(now)"); n=$(requests_since "$l0")
    record rc.none "$t" "$n"; cm_log "rclone: $t s, $n requests"

    cm_log "3. $CHANGES files changed on each side, round $rep of $REPEAT"
    edit_local "$CM_DIR" "$rep"; edit_server bench-cm/tree "$rep"
    edit_local "$RC_DIR" "$rep"; edit_server bench-rc/tree "$rep"
    sleep 1   # both tools see the same "old enough" changes
    cm_timed changed
    l0=$(log_lines); t0=$(now); bisync; t=$(secs "$t0" "$(now)"); n=$(requests_since "$l0")
    record rc.changed "$t" "$n"; cm_log "rclone: $t s, $n requests"
done
verify "$CM_DIR" "$DATA/bench-cm/tree" "cloudmount after the changes"
verify "$RC_DIR" "$DATA/bench-rc/tree" "rclone after the changes"

# 4. Immediate mode: local save -> on the server.
cm_log "4. immediate mode: $SAVES saves in the tree"
cm sync set "$CM_DIR" --schedule immediate >/dev/null
for _ in $(seq 600); do
    [ "$(folder_json "$CM_DIR" state)" = up-to-date ] && break
    sleep 0.1
done
[ "$(folder_json "$CM_DIR" state)" = up-to-date ] || cm_die "the folder is not up to date after switching to immediate"
l0=$(log_lines)
# d000..d009/f0050: files the edits of parts 2 and 3 never touched.
SAVE_TIMES=$(measure_saves "$CM_DIR" bench-cm/tree "$SAVES" "d%03d/f0050") \
    || cm_die "the immediate-mode measurement failed"
n=$(requests_since "$l0")
SAVE_MEDIAN=$(median <<<"$SAVE_TIMES")
cm_log "saves on the server after: $SAVE_TIMES s (median $SAVE_MEDIAN s); $n requests for the $SAVES saves (HEAD polls included)"
SAVE_REQ=$n

fi

# 5. Idle figures with a large watched folder.
RSS_KB=0; HWM_KB=0; CPU_PCT=n/a; IDLE_SYNC=0; IDLE_REQ=""; IDLE_SYNC_REQ=""; RSS2_KB=0
BIG_SAVES=3; BIG_SAVE_TIMES=""; BIG_SAVE_MEDIAN=0; BIG_SAVE_REQ=""
if [ -z "${BENCH_SKIP_IDLE:-}" ]; then
    IDLE_DIR="$WORK/idle"
    cm_log "5. idle: creating $IDLE_FILES small files"
    python3 - "$IDLE_DIR" "$IDLE_FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%03d" % (i % 100)), "wb") as f:
        f.write(("small file %d\n" % i).encode() * (1 + i % 7))
EOF
    # A fresh daemon that has only this folder (its memory is not the tree's leftovers).
    if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
        cm sync remove "$CM_DIR" >/dev/null
        stop_daemon
        start_daemon
    fi
    cm_log "5. idle: first sync of $IDLE_FILES files (immediate folder)"
    l0=$(log_lines); t0=$(now)
    cm sync add "$IDLE_DIR" --remote bench-cm/idle >/dev/null
    first_sync_now "$IDLE_DIR"
    IDLE_SYNC=$(secs "$t0" "$(now)"); IDLE_SYNC_REQ=$(requests_since "$l0")
    cm_log "first sync of $IDLE_FILES files: $IDLE_SYNC s, $IDLE_SYNC_REQ requests"
    HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$CM_PID/status")
    # The window starts when the daemon next looks at the server (its listing of the folder's
    # root in the access log), once the server has had no request for 3 s (runs still asked
    # for have ended): it holds that look, and no other (they come every 30 s).
    quiet=0; last=$(log_lines)
    for _ in $(seq 1200); do
        sleep 0.1
        n=$(log_lines)
        if [ "$n" = "$last" ]; then quiet=$(( quiet + 1 )); else quiet=0; last=$n; fi
        [ "$quiet" -lt 30 ] || break
    done
    [ "$quiet" -ge 30 ] || cm_die "the server never went quiet after the first sync"
    # (grep -c reads all its input: with -q, tail would die of SIGPIPE and fail the pipe)
    looked() { [ "$(tail -n +"$(( last + 1 ))" "$LOG" | grep -c '"PROPFIND /dav/bench-cm/idle/ ')" -gt 0 ]; }
    for _ in $(seq 600); do
        looked && break
        sleep 0.1
    done
    looked || cm_die "the daemon did not look at the server within 60 s"
    RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$CM_PID/status")
    ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$CM_PID/stat"; }   # utime + stime
    l0=$last; c0=$(ticks); t0=$(now)
    sleep "$IDLE_WINDOW"
    c1=$(ticks); t1=$(now)
    IDLE_REQ=$(requests_since "$l0")
    RSS2_KB=$(awk '/VmRSS/ {print $2}' "/proc/$CM_PID/status")
    CPU_PCT=$(awk -v c=$(( c1 - c0 )) -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" \
        'BEGIN { printf "%.2f", 100 * c / hz / (b - a) }')
    cm_log "idle over $IDLE_WINDOW s: CPU $CPU_PCT % ($(( c1 - c0 )) ticks), RSS $(( RSS_KB / 1024 )) -> $(( RSS2_KB / 1024 )) MiB; requests: $IDLE_REQ"
    # Every local change is a full run (both sides listed): a save in this folder costs more.
    cm_log "5. $BIG_SAVES saves in the folder of $IDLE_FILES files"
    l0=$(log_lines)
    BIG_SAVE_TIMES=$(measure_saves "$IDLE_DIR" bench-cm/idle "$BIG_SAVES" "d%04d/f050") \
        || cm_die "the saves in the idle folder failed"
    BIG_SAVE_REQ=$(requests_since "$l0")
    BIG_SAVE_MEDIAN=$(median <<<"$BIG_SAVE_TIMES")
    cm_log "saves on the server after: $BIG_SAVE_TIMES s (median $BIG_SAVE_MEDIAN s); $BIG_SAVE_REQ requests"
fi

# --- the table -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b; else print "n/a" }'; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "n/a" && v <= g) ? "met" : "NOT met" }'; }
echo
echo "cloudmount sync folders vs rclone bisync (--webdav-vendor owncloud) — Apache mod_dav on loopback"
[ -n "${BENCH_ONLY_IDLE:-}" ] \
    || echo "tree: $TREE_FILES_N files in $TREE_DIRS directories, $TREE_MIB MiB; medians of $REPEAT rounds for the no-change and changed syncs"
printf '%-44s %10s %10s %7s  %-18s %s\n' workload cloudmount rclone ratio goal verdict
if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
row() { # label key goal-ratio [tool-key]: cloudmount's figure is T[tool-key.key] (cm)
    local c=${T[${4:-cm}.$2]:-0} o=${T[rc.$2]:-0} r
    r=$(ratio "$c" "$o")
    printf '%-44s %10s %10s %7s  %-18s %s\n' "$1" "${c}s" "${o}s" "$r" "<= $3 x rclone" "$(verdict "$r" "$3")"
}
row "first sync ($TREE_FILES_N files)" first 0.1
row "no change: sync now --wait" none 0.2
row "  the run itself (daemon asked / 10 ms)" none 0.2 cmrun
row "$CHANGES + $CHANGES files changed: sync now --wait" changed 0.2
row "  the run itself (daemon asked / 10 ms)" changed 0.2 cmrun
printf '%-44s %10s %10s %7s  %-18s %s\n' "local save -> on the server (median)" "${SAVE_MEDIAN}s" n/a n/a "<= 2 s" \
    "$(verdict "$SAVE_MEDIAN" 2)"
fi
if [ -z "${BENCH_SKIP_IDLE:-}" ]; then
    printf '%-44s %10s %10s %7s  %-18s %s\n' "daemon RSS, watching $IDLE_FILES files" "$(( RSS_KB / 1024 ))MiB" \
        n/a n/a "<= 100 MiB" "$(verdict $(( RSS_KB / 1024 )) 100)"
    printf '%-44s %10s %10s %7s  %-18s %s\n' "idle CPU over ${IDLE_WINDOW} s (one server poll)" "${CPU_PCT}%" \
        n/a n/a "< 1 %" "$(awk -v v="$CPU_PCT" 'BEGIN { print (v < 1) ? "met" : "NOT met" }')"
fi
if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
echo
echo "Requests (Apache access log; the last round's):"
printf '  %-22s cloudmount %s\n  %-22s rclone     %s\n' "first sync" "${N[cm.first]}" "" "${N[rc.first]}"
printf '  %-22s cloudmount %s\n  %-22s rclone     %s\n' "no change" "${N[cm.none]}" "" "${N[rc.none]}"
printf '  %-22s cloudmount %s\n  %-22s rclone     %s\n' "$CHANGES + $CHANGES changed" "${N[cm.changed]}" "" "${N[rc.changed]}"
printf '  %-22s cloudmount %s (the HEAD polls of the measurement included)\n' "$SAVES saves" "$SAVE_REQ"
echo
echo "Every run:"
for k in first none changed; do
    printf '  %-8s cloudmount %s; rclone %s\n' "$k" "${S[cm.$k]}" "${S[rc.$k]}"
    [ -z "${S[cmrun.$k]:-}" ] || printf '  %-8s   the runs themselves %s\n' "" "${S[cmrun.$k]}"
done
printf '  %-8s cloudmount %s\n' saves "$SAVE_TIMES"
fi
if [ -z "${BENCH_SKIP_IDLE:-}" ]; then
    echo
    echo "Idle folder of $IDLE_FILES files (dirs of 100), sync_poll_interval 30 s (default):"
    printf '  %-40s %ss, %s requests\n' "its first sync (sync add + now --wait)" "$IDLE_SYNC" "$IDLE_SYNC_REQ"
    printf '  %-40s %s MiB\n' "peak RSS (VmHWM) after that sync" "$(( HWM_KB / 1024 ))"
    printf '  %-40s %s MiB at the start, %s MiB at the end\n' "RSS (VmRSS) of the ${IDLE_WINDOW} s window" \
        "$(( RSS_KB / 1024 ))" "$(( RSS2_KB / 1024 ))"
    printf '  %-40s %s\n' "requests in the ${IDLE_WINDOW} s window" "$IDLE_REQ"
    printf '  %-40s %s s (median %s s), %s requests\n' "$BIG_SAVES saves, on the server after" \
        "$BIG_SAVE_TIMES" "$BIG_SAVE_MEDIAN" "$BIG_SAVE_REQ"
fi
[ -z "$DIFFERS" ] || { echo; echo "WARNING: the trees differed after:$DIFFERS"; }
