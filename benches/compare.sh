#!/usr/bin/env bash
# cloudmount vs `rclone mount --vfs-cache-mode full`, on the same Apache mod_dav server on
# loopback, in one run. Prints each figure and the ratio cloudmount/rclone, and whether the
# goals of the read-speed and write-speed issues are met. Speed is measured here, never asserted
# in tests.
#
#   benches/compare.sh            # everything (about 8 minutes; needs ~3 GiB of disk)
#   BENCH_BIG_MIB=256 benches/compare.sh   # smaller big file for a quick look
#   BENCH_WORKLOADS=write benches/compare.sh   # only the write workloads (or "read", "browse")
#   BENCH_TOOLS=cm benches/compare.sh          # only cloudmount (ratios then read n/a)
#   BENCH_REPEAT=1 benches/compare.sh          # each read workload once (default 3 rounds,
#                                              # tools taking turns; the table shows medians)
#
# Write workloads: the time until the data is on the server, watched on Apache's document root
# (polled every 50 ms), from the first write; printed with the time the writes themselves took
# to return ("writes + upload after"), so it is right whether uploads happen at close or later.
# rclone runs with its defaults (--vfs-write-back 5s, --transfers 4).
#   - BENCH_WRITE_FILES (1000) files of 4 KiB written into a fresh directory
#   - one file of BENCH_WRITE_MIB (256) MiB of random data, `dd bs=1M` from a local file; its
#     sha256 on the server must match (hashed outside the timed part)
# BENCH_WRITE_TIMEOUT (300) seconds: how long to wait for the server to have everything.
#
# Browse workloads (a file manager, or `ls -l`, on a folder already listed): `ls -lR` of the
# 100,000 entries of wide/ (100 folders), listed once first, then timed warm on each mount and
# on the server's own disk (the Apache document root, in the page cache); and the state xattr
# of the 10,000 files of tree/ (`getfattr -R -n user.cloudmount.state`, cloudmount only: rclone
# has no such attribute), also after a first listing, with its floor: `getfattr` of an attribute
# no file has (answered at once: the round trips through the kernel alone, one per file where
# the state takes two). Goals: ls -lR <= 3 x the local disk and <= 0.3 x rclone; the 10,000
# states in <= 0.5 s. The same states as the file-manager extension reads them
# (timed by its python core): by folder, one request to the daemon's control socket per folder
# (100 requests), and by file, os.getxattr each (its fallback); and `cloudmount state DIR
# --json` run once per folder (a process each).
#
# The sequential reads are also run on a `--read-only` cloudmount mount (the warm re-read by FUSE
# passthrough, as root); their rclone column repeats rclone's default mount (its read path is the
# same read-only or not).
#
# Read workloads are timed around the command, except the random reads: the Python script
# times its own open, 200 preads and close (the interpreter's start is not the mount's time).
#
# Runs as root on Debian 12 (installs apache2-bin, rclone, fuse3 if missing, like tests/run.sh).
# Cold means: fresh cache dirs, fresh mounts, and the kernel's page cache dropped (the
# workload's own programs are loaded again right after).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/servers/lib.sh
. "$ROOT/tests/servers/lib.sh"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

BIG_MIB=${BENCH_BIG_MIB:-1024}
TREE_DIRS=100
TREE_FILES=100        # per dir: 10,000 files of 512 B
RSS_ENTRIES=100000    # entries listed for the memory figure
RANDOM_READS=200
WORKLOADS=${BENCH_WORKLOADS:-read write browse}
WRITE_FILES=${BENCH_WRITE_FILES:-1000}
WRITE_MIB=${BENCH_WRITE_MIB:-256}
WRITE_TIMEOUT=${BENCH_WRITE_TIMEOUT:-300}
REPEAT=${BENCH_REPEAT:-3}
case "$REPEAT" in ''|*[!0-9]*|0) echo "BENCH_REPEAT must be a positive number" >&2; exit 2 ;; esac
want() { case " $WORKLOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
want read || want write || want browse || { echo "BENCH_WORKLOADS must name read, write and/or browse" >&2; exit 2; }

WORK=""
CM_MNT=""
RC_MNT=""
RC_PID=""   # the rclone mount of this run (run in the foreground, in the background of this shell)
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for m in "$CM_MNT" "$RC_MNT"; do
        [ -n "$m" ] && mountpoint -q "$m" 2>/dev/null && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    if [ -n "$RC_PID" ]; then kill "$RC_PID" 2>/dev/null || true; wait "$RC_PID" 2>/dev/null || true; fi
    cm_stop_servers || true
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_prepare
URL="$CLOUDMOUNT_TEST_APACHE_BASIC_URL"
DATA="$CLOUDMOUNT_TEST_APACHE_BASIC_DIR"
LOG="$CLOUDMOUNT_TEST_APACHE_ACCESS_LOG"
WORK=$(mktemp -d /tmp/cloudmount-bench.XXXXXX)
CM_MNT="$WORK/cm"; RC_MNT="$WORK/rc"
mkdir -p "$CM_MNT" "$RC_MNT"

log_lines() { wc -l <"$LOG"; }
# Bytes and requests the server sent since line $1 of the access log (status=$9, bytes=$10).
log_since() { tail -n +"$(( $1 + 1 ))" "$LOG" | awk -v m="${2:-}" '
    { if (m == "" || $6 == "\"" m) { n++; b += $10 } } END { printf "%d %d\n", n, b }'; }
# Requests per method since line $1 of the access log: "PUT 1000, PROPFIND 2000".
methods_since() { tail -n +"$(( $1 + 1 ))" "$LOG" | awk '
    { m = substr($6, 2); if (!(m in n)) order[k++] = m; n[m]++ }
    END { for (i = 0; i < k; i++) printf "%s%s %d", (i ? ", " : ""), order[i], n[order[i]] }'; }
# The page cache is dropped for the cold runs; the workload's own programs (python3, cat, find)
# are loaded again right after, so their start from disk is not counted as the mount's time.
drop_caches() {
    sync; echo 3 >/proc/sys/vm/drop_caches
    python3 -c 'import os, random, sys, time'; cat /dev/null; find /dev/null >/dev/null
}

if want read || want browse; then
cm_log "creating the data set on the server's disk"
if want read; then head -c $(( BIG_MIB << 20 )) /dev/urandom >"$DATA/big.bin"; fi
mkdir -p "$DATA/tree" "$DATA/wide"
python3 - "$DATA" "$TREE_DIRS" "$TREE_FILES" "$RSS_ENTRIES" <<'EOF'
import os, sys
data, dirs, files, wide = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
blob = os.urandom(512)
for d in range(dirs):
    p = os.path.join(data, "tree", "d%03d" % d)
    os.makedirs(p, exist_ok=True)
    for f in range(files):
        with open(os.path.join(p, "f%04d" % f), "wb") as fh:
            fh.write(blob)
per = wide // 100
for d in range(100):
    p = os.path.join(data, "wide", "w%03d" % d)
    os.makedirs(p, exist_ok=True)
    for f in range(per):
        open(os.path.join(p, "e%05d" % f), "wb").close()
EOF
chown -R www-data:www-data "$DATA"
fi

export CLOUDMOUNT_PASSWORD="$CLOUDMOUNT_TEST_PASSWORD"
export RCLONE_CONFIG="$WORK/rclone.conf"; : >"$RCLONE_CONFIG"
export RCLONE_WEBDAV_URL="$URL" RCLONE_WEBDAV_USER="$CLOUDMOUNT_TEST_USER" RCLONE_WEBDAV_VENDOR=other
RCLONE_WEBDAV_PASS=$(rclone obscure - <<<"$CLOUDMOUNT_TEST_PASSWORD"); export RCLONE_WEBDAV_PASS

mount_cm() { # extra mount options
    umount_cm
    rm -rf "$WORK/cm-cache"
    "$CM_BIN" mount "$URL" "$CM_MNT" --user "$CLOUDMOUNT_TEST_USER" --cache-dir "$WORK/cm-cache" \
        --cache-size 4G --dir-cache-time 5m "$@"
}
umount_cm() {
    if mountpoint -q "$CM_MNT"; then "$CM_BIN" unmount "$CM_MNT" >/dev/null 2>&1 || true; fi
}
mount_rc() {
    umount_rc
    rm -rf "$WORK/rc-cache"
    cm_spawn "$WORK/rclone-mount.log" rclone mount :webdav: "$RC_MNT" --vfs-cache-mode full \
        --cache-dir "$WORK/rc-cache" --dir-cache-time 5m
    RC_PID=$CM_SPAWNED_PID
    for _ in $(seq 100); do mountpoint -q "$RC_MNT" && return 0; sleep 0.1; done
    cm_die "rclone mount did not come up (log: $WORK/rclone-mount.log)"
}
umount_rc() {
    if mountpoint -q "$RC_MNT"; then fusermount3 -u "$RC_MNT" 2>/dev/null || umount -l "$RC_MNT"; fi
    [ -n "$RC_PID" ] || return 0
    for _ in $(seq 50); do kill -0 "$RC_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$RC_PID" 2>/dev/null || true
    wait "$RC_PID" 2>/dev/null || true
    RC_PID=""
}
mount_tool() { if [ "$1" = cm ]; then mount_cm; else mount_rc; fi; }
umount_tool() { if [ "$1" = cm ]; then umount_cm; else umount_rc; fi; }
mnt_of() { if [ "$1" = cm ]; then echo "$CM_MNT"; else echo "$RC_MNT"; fi; }

declare -A T B N S
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
run() { # tool workload command...: times it, records server bytes and requests. A command
    # whose name starts with "timed_" prints its own time in seconds (the interpreter's start
    # left out) and that is used instead. Repeated runs of a workload keep every sample (S);
    # its figure (T) is their median, its bytes (B) the most any run had the server send.
    local tool=$1 w=$2; shift 2
    local l0 t0 t1 own="" t
    l0=$(log_lines); t0=$(now)
    case "$1" in timed_*) own=$("$@") ;; *) "$@" >/dev/null ;; esac
    t1=$(now)
    sleep 0.2
    read -r n b < <(log_since "$l0")
    t=$(secs "$t0" "$t1")
    [ -z "$own" ] || t=$own
    S[$tool.$w]="${S[$tool.$w]:-}${S[$tool.$w]:+ }$t"
    T[$tool.$w]=$(median <<<"${S[$tool.$w]}")
    [ "${B[$tool.$w]:-0}" -ge "$b" ] || B[$tool.$w]=$b
    N[$tool.$w]=$n
    cm_log "$tool $w: $t s, $n requests, $b bytes from the server"
}

timed_random_reads() { python3 - "$1" "$RANDOM_READS" <<'EOF'
import os, random, sys, time
t0 = time.monotonic()
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
rnd = random.Random(42)
for _ in range(int(sys.argv[2])):
    os.pread(fd, 4096, rnd.randrange(0, size - 4096))
os.close(fd)
print("%.3f" % (time.monotonic() - t0))
EOF
}
cat_small() { # the first 10 dirs: 1,000 files of 512 B
    local m=$1
    for d in $(seq 0 9); do cat "$m"/tree/d00"$d"/* ; done
}

if want read; then
# Baselines: the wire (curl GET) and the disk (page-cache read of the server's own file).
l0=$(log_lines); t0=$(now)
curl -s -K "$CM_TMP/curl-basic.conf" -o /dev/null "${URL}big.bin"
T[curl.get]=$(secs "$t0" "$(now)")
cat "$DATA/big.bin" >/dev/null
t0=$(now); cat "$DATA/big.bin" >/dev/null; T[disk.warm]=$(secs "$t0" "$(now)")
cm_log "baselines: curl GET ${T[curl.get]} s, page-cache read ${T[disk.warm]} s"
# Floors of the cold workloads, where nothing is cached on either side: the server reading the
# file off its own disk, the same GET as above, and the random reads made by a bare HTTP client
# (keep-alive, one ranged GET of one 16 KiB cache block per read, as cloudmount asks).
drop_caches; t0=$(now); cat "$DATA/big.bin" >/dev/null; T[disk.cold]=$(secs "$t0" "$(now)")
# ... and in 8 parallel parts, as cloudmount's parallel ranged GETs make the server read it.
drop_caches; t0=$(now); parts=()
for i in 0 1 2 3 4 5 6 7; do
    dd if="$DATA/big.bin" of=/dev/null bs=1M skip=$(( i * BIG_MIB / 8 )) \
        count=$(( (i + 1) * BIG_MIB / 8 - i * BIG_MIB / 8 )) status=none &
    parts+=($!)
done
wait "${parts[@]}"
T[disk.cold8]=$(secs "$t0" "$(now)")
drop_caches; t0=$(now)
curl -s -K "$CM_TMP/curl-basic.conf" -o /dev/null "${URL}big.bin"
T[curl.cold]=$(secs "$t0" "$(now)")
drop_caches
T[raw.random]=$(BENCH_URL="${URL}big.bin" python3 - "$RANDOM_READS" <<'EOF'
import base64, http.client, os, random, sys, time, urllib.parse
url = urllib.parse.urlparse(os.environ["BENCH_URL"])
auth = "Basic " + base64.b64encode(("%s:%s" % (os.environ["CLOUDMOUNT_TEST_USER"],
                                    os.environ["CLOUDMOUNT_TEST_PASSWORD"])).encode()).decode()
c = http.client.HTTPConnection(url.hostname, url.port)
c.request("HEAD", url.path, headers={"Authorization": auth})
r = c.getresponse(); r.read()
size = int(r.getheader("Content-Length"))
rnd = random.Random(42)   # the offsets of timed_random_reads
block = 16384
t0 = time.monotonic()
for _ in range(int(sys.argv[1])):
    start = rnd.randrange(0, size - 4096) // block * block
    c.request("GET", url.path, headers={"Authorization": auth,
              "Range": "bytes=%d-%d" % (start, start + block - 1)})
    r = c.getresponse(); r.read()
    assert r.status == 206, r.status
print("%.3f" % (time.monotonic() - t0))
EOF
)
cm_log "floors, cold: the server's disk read ${T[disk.cold]} s (${T[disk.cold8]} s in 8 parallel parts), curl GET ${T[curl.cold]} s, $RANDOM_READS ranged GETs ${T[raw.random]} s"

# Each read workload runs REPEAT times, the tools taking turns, so that a slow moment of the
# machine falls on both; the table shows the medians.
for rep in $(seq "$REPEAT"); do
    cm_log "read workloads, round $rep of $REPEAT"
    for tool in ${BENCH_TOOLS:-cm rc}; do
        m=$(mnt_of "$tool")
        # Cold sequential read, then warm re-read.
        mount_tool "$tool"; drop_caches
        run $tool seqcold cat "$m/big.bin"
        run $tool seqwarm cat "$m/big.bin"
        # Random 4 KiB reads, cold.
        mount_tool "$tool"; drop_caches
        run $tool random timed_random_reads "$m/big.bin"
        # find over the tree, cold; then cat 1,000 small files.
        mount_tool "$tool"; drop_caches
        run $tool find find "$m/tree"
        run $tool cat1000 cat_small "$m"
        umount_tool "$tool"
        # The same sequential reads on a read-only mount, where cloudmount reads cached large
        # files by FUSE passthrough (as root).
        if [ "$tool" = cm ]; then
            mount_cm --read-only; drop_caches
            run cm roseqcold cat "$CM_MNT/big.bin"
            run cm roseqwarm cat "$CM_MNT/big.bin"
            umount_cm
        fi
    done
done

# Memory after listing 100,000 entries.
mount_cm; drop_caches
find "$CM_MNT/wide" | wc -l >/dev/null
# The daemon records itself in a state file: pid=... and mountpoint=...
pid=$( { grep -l "mountpoint=$CM_MNT\$" "${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"/cloudmount/*.pid \
          /tmp/cloudmount-"$(id -u)"/*.pid 2>/dev/null || true; } | head -1 | xargs -r sed -n 's/^pid=//p')
[ -n "$pid" ] || pid=$(pgrep -n -f "$CM_BIN") || true
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
umount_cm
fi

WRITE_HELPER='
import os, subprocess, sys, threading, time, hashlib
mode, src, dst, server, count, size, timeout = sys.argv[1:8]
count, size, timeout = int(count), int(size), float(timeout)

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

want_sha = sha256(src) if mode == "big" else None
blob = open(src, "rb").read() if mode == "files" else None
state = {"done": None, "seen": 0}

def on_server():  # files of the right size (and content, for the big one) on the server now
    if mode == "files":
        n = 0
        try:
            with os.scandir(server) as it:
                for e in it:  # Apache writes to .davfs.tmp* and renames: count our names only
                    if e.name.startswith("f") and e.is_file() and e.stat().st_size == size:
                        n += 1
        except FileNotFoundError:
            pass
        return n
    try:
        if os.stat(os.path.join(server, "big.bin")).st_size != size:
            return 0
    except FileNotFoundError:
        return 0
    return 1

t0 = time.monotonic()
def watch():
    while time.monotonic() - t0 < timeout:
        n = on_server()
        t = time.monotonic() - t0
        state["seen"] = n
        if n >= count:
            # The big file: full size seen at t; its content is checked now, outside the
            # measured time. A mismatch means another upload may still come: keep watching.
            if mode != "big" or sha256(os.path.join(server, "big.bin")) == want_sha:
                state["done"] = t
                return
        time.sleep(0.05)

w = threading.Thread(target=watch)
w.start()
err = ""
try:
    if mode == "files":
        for i in range(count):
            with open(os.path.join(dst, "f%04d" % i), "wb") as f:
                f.write(blob)
    else:
        subprocess.run(["dd", "if=" + src, "of=" + os.path.join(dst, "big.bin"), "bs=1M",
                        "status=none"], check=True)
except Exception as e:  # an error of the writes is a result too: report it, keep watching
    err = str(e).replace(" ", "_")
written = time.monotonic() - t0
w.join()
bad = 0
if state["done"] is not None and mode == "files":
    for i in range(count):
        with open(os.path.join(server, "f%04d" % i), "rb") as f:
            bad += f.read() != blob
done = "%.3f" % state["done"] if state["done"] is not None else "timeout"
print("%.3f %s %d %d %s" % (written, done, state["seen"], bad, err or "-"))
'

declare -A WSPLIT   # tool.workload -> "writes returned + upload after" text
# tool workload(files|big) src: writes into a fresh directory of the mount and watches the
# server's document root until everything is there.
write_run() {
    local tool=$1 w=$2 src=$3 m d count size l0 out written t_done seen bad err n methods
    m=$(mnt_of "$tool")
    d="bench-$w-$tool-$(date +%s)-$$"
    if [ "$w" = files ]; then count=$WRITE_FILES; size=4096; else count=1; size=$(( WRITE_MIB << 20 )); fi
    mount_tool "$tool"
    mkdir "$m/$d"
    l0=$(log_lines)
    out=$(python3 -c "$WRITE_HELPER" "$w" "$src" "$m/$d" "$DATA/$d" "$count" "$size" \
        "$WRITE_TIMEOUT") || out="0 error 0 0 helper_failed"
    read -r written t_done seen bad err <<<"$out"
    sleep 0.2
    read -r n _ < <(log_since "$l0")
    methods=$(methods_since "$l0")
    if [ "$t_done" = timeout ] || [ "$t_done" = error ]; then
        T[$tool.$w]=0
        WSPLIT[$tool.$w]="writes ${written} s; NOT on the server after ${WRITE_TIMEOUT} s ($seen/$count)"
    else
        T[$tool.$w]=$t_done
        WSPLIT[$tool.$w]="${written} s + $(awk -v a="$written" -v b="$t_done" \
            'BEGIN { d = b - a; printf "%.3f", (d > 0 ? d : 0) }') s"
    fi
    [ "$bad" -eq 0 ] || WSPLIT[$tool.$w]+=", $bad files with WRONG CONTENT"
    [ "$err" = - ] || WSPLIT[$tool.$w]+=", write error: ${err//_/ }"
    WSPLIT[$tool.$w]+=" ($n requests: $methods)"
    cm_log "$tool write $w: on the server after ${T[$tool.$w]} s; writes returned after $written s; $n requests: $methods"
    [ "$err" = - ] || cm_log "$tool write $w: write error: ${err//_/ }"
    umount_tool "$tool"
    rm -rf "${DATA:?}/$d"
}

ls_lr() { ls -lR "$1" >/dev/null; }
states() { getfattr -R --absolute-names -n user.cloudmount.state "$1" >/dev/null; }
# The floor of states(): an attribute no file has, answered at once without looking anything
# up (one round trip through the kernel per file where states() makes two: size, then value).
no_attr() { getfattr -R --absolute-names -n user.cloudmount.none "$1" >/dev/null 2>&1 || true; }
# The states of every file below $2 as the file-manager extension reads them (its python core,
# integrations/cloudmount_fm.py): $1 = folder (one request to the daemon per folder, the way
# it asks now) or xattr (os.getxattr per file, its fallback). The names are listed before the
# clock starts (the file manager has listed the folder already); prints its own time, and
# fails when a state is missing or, by folder, was not answered by the daemon.
timed_fm_states() { python3 - "$ROOT/integrations" "$@" <<'EOF'
import os, sys, time
sys.path.insert(0, sys.argv[1])
import cloudmount_fm as core
how, root = sys.argv[2], sys.argv[3]
paths = [os.path.join(root, d, f) for d in sorted(os.listdir(root))
         for f in sorted(os.listdir(os.path.join(root, d)))]
core.current_mounts()
t0 = time.monotonic()
if how == "folder":
    got = [core.folder_states.state(p) for p in paths]
else:
    got = [(core.read_state(p), "xattr") for p in paths]
t = time.monotonic() - t0
bad = [p for p, (state, by) in zip(paths, got) if not state or (how == "folder") != (by == "folder")]
if bad or not paths:
    sys.exit("%d of %d states missing or not by %s: %s" % (len(bad), len(paths), how, bad[:3]))
print("%.3f" % t)
EOF
}
# `cloudmount state DIR --json` for each folder below $1 (a process per folder).
cli_states() { local d; for d in "$1"/*/; do "$CM_BIN" state "$d" --json; done; }
if want browse; then
    command -v getfattr >/dev/null 2>&1 || {
        cm_log "installing attr (getfattr)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends attr </dev/null
    }
    cm_log "browse workloads: ls -lR of $RSS_ENTRIES entries, the state of $((TREE_DIRS * TREE_FILES)) files"
    ls_lr "$DATA/wide"
    for rep in $(seq "$REPEAT"); do
        run disk lslr ls_lr "$DATA/wide"
        for tool in ${BENCH_TOOLS:-cm rc}; do
            m=$(mnt_of "$tool")
            mount_tool "$tool"
            ls_lr "$m/wide"                 # listed once: what follows is warm
            run "$tool" lslr ls_lr "$m/wide"
            if [ "$tool" = cm ]; then
                ls_lr "$m/tree"
                run cm states states "$m/tree"
                run cm noattr no_attr "$m/tree"
                run cm fmxattr timed_fm_states xattr "$m/tree"
                run cm fmfolder timed_fm_states folder "$m/tree"
                run cm clistate cli_states "$m/tree"
            fi
            umount_tool "$tool"
        done
    done
fi

if want write; then
    cm_log "write workloads: $WRITE_FILES files of 4 KiB, one file of $WRITE_MIB MiB"
    head -c 4096 /dev/urandom >"$WORK/src-4k.bin"
    head -c $(( WRITE_MIB << 20 )) /dev/urandom >"$WORK/src-big.bin"
    for tool in ${BENCH_TOOLS:-cm rc}; do
        write_run "$tool" files "$WORK/src-4k.bin"
        cat "$WORK/src-big.bin" >/dev/null   # the source comes from the page cache
        write_run "$tool" big "$WORK/src-big.bin"
    done
    rm -f "$WORK/src-4k.bin" "$WORK/src-big.bin"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "n/a" && v <= g) ? "met" : "NOT met" }'; }

echo
if want read; then sizes="${BIG_MIB} MiB file"; else sizes="no read workloads"; fi
echo "cloudmount vs rclone mount --vfs-cache-mode full — Apache mod_dav on loopback, $sizes"
printf '%-44s %10s %10s %8s  %-28s %s\n' workload cloudmount rclone ratio goal verdict
fmt_s() { if [ "$1" = 0 ]; then echo n/a; else echo "${1}s"; fi; }   # 0: not run or timed out
row() { # label key goal-ratio
    local c=${T[cm.$2]:-0} o=${T[rc.$2]:-0} r
    r=$(ratio "$c" "$o")
    [ "$c" != 0 ] || r=n/a
    printf '%-44s %10s %10s %8s  %-28s %s\n' "$1" "$(fmt_s "$c")" "$(fmt_s "$o")" "$r" "<= $3 x rclone" \
        "$(verdict "$r" "$3")"
}
split() { # key: writes returned + upload after, per tool
    printf '%-44s cloudmount %s\n' "  = writes returned + upload after" "${WSPLIT[cm.$1]:-not run}"
    printf '%-44s rclone     %s\n' "" "${WSPLIT[rc.$1]:-not run}"
}
if want write; then
    row "$WRITE_FILES files of 4 KiB, until on the server" files 0.15
    split files
    row "$WRITE_MIB MiB file, until on the server" big 0.3
    split big
fi
if want browse; then
    row "ls -lR of $RSS_ENTRIES entries, warm" lslr 0.3
    lslr_disk=$(ratio "${T[cm.lslr]:-0}" "${T[disk.lslr]:-0}")
    printf '%-44s %s (the disk %ss; goal <= 3: %s)\n' "  cloudmount / the server's own disk" "$lslr_disk" \
        "${T[disk.lslr]:-n/a}" "$(verdict "$lslr_disk" 3)"
    printf '%-44s %10s %21s  %-28s %s\n' "state xattr of $((TREE_DIRS * TREE_FILES)) files, warm" \
        "$(fmt_s "${T[cm.states]:-0}")" "" "<= 0.5 s" "$(verdict "${T[cm.states]:-n/a}" 0.5)"
    printf '%-44s %10s\n' "  floor: an attribute no file has" "$(fmt_s "${T[cm.noattr]:-0}")"
    printf '%-44s %10s %21s  %-28s %s\n' "  by folder: extension, 1 request a folder" \
        "$(fmt_s "${T[cm.fmfolder]:-0}")" "" "<= 0.5 s" "$(verdict "${T[cm.fmfolder]:-n/a}" 0.5)"
    printf '%-44s %10s\n' "  by file: extension, os.getxattr each" "$(fmt_s "${T[cm.fmxattr]:-0}")"
    printf '%-44s %10s\n' "  cloudmount state DIR --json, each folder" "$(fmt_s "${T[cm.clistate]:-0}")"
    for w in lslr states noattr fmfolder fmxattr clistate; do
        for tool in disk cm rc; do
            [ -n "${S[$tool.$w]:-}" ] || continue
            printf '  %-10s %-4s %s\n' "$w" "$tool" "${S[$tool.$w]}"
        done
    done
fi
want read || exit 0
row "cold sequential read (cat)" seqcold 0.25
row "warm re-read" seqwarm 999
T[rc.roseqcold]=${T[rc.seqcold]:-0}; T[rc.roseqwarm]=${T[rc.seqwarm]:-0}
row "  the same, cloudmount --read-only: cold" roseqcold 0.25
row "  the same, cloudmount --read-only: warm" roseqwarm 999
row "$RANDOM_READS random 4 KiB preads, cold" random 0.1
row "find over $((TREE_DIRS * TREE_FILES)) files, cold" find 0.5
row "cat of 1,000 files of 512 B after find" cat1000 0.1
echo
thr_cm=$(ratio "${T[curl.get]}" "${T[cm.seqcold]}")
printf '%-44s %s (goal >= 0.5: %s)\n' "cold read throughput / curl GET throughput" "$thr_cm" \
    "$(awk -v v="$thr_cm" 'BEGIN { print (v >= 0.5) ? "met" : "NOT met" }')"
warm=$(ratio "${T[cm.seqwarm]}" "${T[disk.warm]}")
printf '%-44s %s (goal <= 2: %s)\n' "warm re-read / page-cache read of the file" "$warm" "$(verdict "$warm" 2)"
warm_ro=$(ratio "${T[cm.roseqwarm]:-0}" "${T[disk.warm]}")
printf '%-44s %s\n' "  the same, cloudmount --read-only" "$warm_ro"
printf '%-44s %s cloudmount, %s rclone (goal cloudmount <= 64 MiB)\n' "server bytes for the random reads" \
    "$(mib "${B[cm.random]:-0}")" "$(mib "${B[rc.random]:-0}")"
printf '%-44s %s cloudmount, %s rclone\n' "requests for the cold find" "${N[cm.find]:-0}" "${N[rc.find]:-0}"
printf '%-44s %s MiB (goal <= 150 MiB)\n' "daemon RSS after listing $RSS_ENTRIES entries" "$((RSS_KB / 1024))"
printf '%-44s curl GET %ss, page-cache read %ss\n' "baselines" "${T[curl.get]}" "${T[disk.warm]}"
echo
echo "Floors of the cold workloads (nothing cached on the server's side either):"
printf '%-44s %ss, %ss in 8 parallel parts; curl GET %ss (goal 0.25 x rclone = %ss)\n' \
    "  the server reads the file off its disk" "${T[disk.cold]}" "${T[disk.cold8]}" "${T[curl.cold]}" \
    "$(awk -v r="${T[rc.seqcold]:-0}" 'BEGIN { if (r > 0) printf "%.3f", 0.25 * r; else print "n/a" }')"
printf '%-44s %ss (goal 0.1 x rclone = %ss)\n' "  $RANDOM_READS ranged GETs by a bare HTTP client" \
    "${T[raw.random]}" "$(awk -v r="${T[rc.random]:-0}" 'BEGIN { if (r > 0) printf "%.3f", 0.1 * r; else print "n/a" }')"
echo
echo "Every run of the read workloads (the table shows the median of each row):"
for w in seqcold seqwarm roseqcold roseqwarm random find cat1000; do
    for tool in cm rc; do
        [ -n "${S[$tool.$w]:-}" ] || continue
        printf '  %-10s %-3s %s\n' "$w" "$tool" "${S[$tool.$w]}"
    done
done
