#!/usr/bin/env bash
# cloudmount vs `rclone mount --vfs-cache-mode full`, on the same Apache mod_dav server on
# loopback, in one run. Prints each figure and the ratio cloudmount/rclone, and whether the
# goal of the read-speed issue is met. Speed is measured here, never asserted in tests.
#
#   benches/compare.sh            # everything (about 5 minutes; needs ~3 GiB of disk)
#   BENCH_BIG_MIB=256 benches/compare.sh   # smaller big file for a quick look
#
# Runs as root on Debian 12 (installs apache2-bin, rclone, fuse3 if missing, like tests/run.sh).
# Cold means: fresh cache dirs, fresh mounts, and the kernel's page cache dropped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/servers/lib.sh
. "$ROOT/tests/servers/lib.sh"

BIG_MIB=${BENCH_BIG_MIB:-1024}
TREE_DIRS=100
TREE_FILES=100        # per dir: 10,000 files of 512 B
RSS_ENTRIES=100000    # entries listed for the memory figure
RANDOM_READS=200

WORK=""
CM_MNT=""
RC_MNT=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for m in "$CM_MNT" "$RC_MNT"; do
        [ -n "$m" ] && mountpoint -q "$m" 2>/dev/null && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    pkill -f "rclone mount :webdav:" 2>/dev/null || true
    cm_stop_servers || true
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cm_ensure_packages
if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
    . "${HOME:-/root}/.cargo/env"
fi
cm_log "building cloudmount (release)"
(cd "$ROOT" && cargo build --release --quiet)
CM_BIN="$ROOT/target/release/cloudmount"

cm_start_servers
URL="$CLOUDMOUNT_TEST_APACHE_BASIC_URL"
DATA="$CLOUDMOUNT_TEST_APACHE_BASIC_DIR"
LOG="$CLOUDMOUNT_TEST_APACHE_ACCESS_LOG"
WORK=$(mktemp -d /tmp/cloudmount-bench.XXXXXX)
CM_MNT="$WORK/cm"; RC_MNT="$WORK/rc"
mkdir -p "$CM_MNT" "$RC_MNT"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log_lines() { wc -l <"$LOG"; }
# Bytes and requests the server sent since line $1 of the access log (status=$9, bytes=$10).
log_since() { tail -n +"$(( $1 + 1 ))" "$LOG" | awk -v m="${2:-}" '
    { if (m == "" || $6 == "\"" m) { n++; b += $10 } } END { printf "%d %d\n", n, b }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

cm_log "creating the data set on the server's disk"
head -c $(( BIG_MIB << 20 )) /dev/urandom >"$DATA/big.bin"
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

export CLOUDMOUNT_PASSWORD="$CLOUDMOUNT_TEST_PASSWORD"
export RCLONE_CONFIG="$WORK/rclone.conf"; : >"$RCLONE_CONFIG"
export RCLONE_WEBDAV_URL="$URL" RCLONE_WEBDAV_USER="$CLOUDMOUNT_TEST_USER" RCLONE_WEBDAV_VENDOR=other
RCLONE_WEBDAV_PASS=$(rclone obscure - <<<"$CLOUDMOUNT_TEST_PASSWORD"); export RCLONE_WEBDAV_PASS

mount_cm() {
    umount_cm
    rm -rf "$WORK/cm-cache"
    "$CM_BIN" mount "$URL" "$CM_MNT" --user "$CLOUDMOUNT_TEST_USER" --cache-dir "$WORK/cm-cache" \
        --cache-size 4G --dir-cache-time 5m
}
umount_cm() { mountpoint -q "$CM_MNT" && "$CM_BIN" unmount "$CM_MNT" >/dev/null 2>&1 || true; }
mount_rc() {
    umount_rc
    rm -rf "$WORK/rc-cache"
    rclone mount :webdav: "$RC_MNT" --vfs-cache-mode full --cache-dir "$WORK/rc-cache" \
        --dir-cache-time 5m --log-file "$WORK/rclone-mount.log" --daemon
    for _ in $(seq 100); do mountpoint -q "$RC_MNT" && return 0; sleep 0.1; done
    cm_die "rclone mount did not come up"
}
umount_rc() {
    if mountpoint -q "$RC_MNT"; then fusermount3 -u "$RC_MNT" 2>/dev/null || umount -l "$RC_MNT"; fi
    for _ in $(seq 50); do pgrep -f "rclone mount :webdav:" >/dev/null || break; sleep 0.1; done
}
mount_tool() { if [ "$1" = cm ]; then mount_cm; else mount_rc; fi; }
mnt_of() { if [ "$1" = cm ]; then echo "$CM_MNT"; else echo "$RC_MNT"; fi; }

declare -A T B N
run() { # tool workload command...: times it, records server bytes and requests
    local tool=$1 w=$2; shift 2
    local l0 t0 t1
    l0=$(log_lines); t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    sleep 0.2
    read -r n b < <(log_since "$l0")
    T[$tool.$w]=$(secs "$t0" "$t1"); B[$tool.$w]=$b; N[$tool.$w]=$n
    cm_log "$tool $w: ${T[$tool.$w]} s, $n requests, $b bytes from the server"
}

random_reads() { python3 - "$1" "$RANDOM_READS" <<'EOF'
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
rnd = random.Random(42)
for _ in range(int(sys.argv[2])):
    os.pread(fd, 4096, rnd.randrange(0, size - 4096))
os.close(fd)
EOF
}
cat_small() { # the first 10 dirs: 1,000 files of 512 B
    local m=$1
    for d in $(seq 0 9); do cat "$m"/tree/d00"$d"/* ; done
}

# Baselines: the wire (curl GET) and the disk (page-cache read of the server's own file).
l0=$(log_lines); t0=$(now)
curl -s -K "$CM_TMP/curl-basic.conf" -o /dev/null "${URL}big.bin"
T[curl.get]=$(secs "$t0" "$(now)")
cat "$DATA/big.bin" >/dev/null
t0=$(now); cat "$DATA/big.bin" >/dev/null; T[disk.warm]=$(secs "$t0" "$(now)")
cm_log "baselines: curl GET ${T[curl.get]} s, page-cache read ${T[disk.warm]} s"

for tool in ${BENCH_TOOLS:-cm rc}; do
    m=$(mnt_of $tool)
    # Cold sequential read, then warm re-read.
    mount_tool $tool; drop_caches
    run $tool seqcold cat "$m/big.bin"
    run $tool seqwarm cat "$m/big.bin"
    # Random 4 KiB reads, cold.
    mount_tool $tool; drop_caches
    run $tool random random_reads "$m/big.bin"
    # find over the tree, cold; then cat 1,000 small files.
    mount_tool $tool; drop_caches
    run $tool find find "$m/tree"
    run $tool cat1000 cat_small "$m"
done
umount_rc

# Memory after listing 100,000 entries.
mount_cm; drop_caches
find "$CM_MNT/wide" | wc -l >/dev/null
# The daemon records itself in a state file: pid=... and mountpoint=...
pid=$( { grep -l "mountpoint=$CM_MNT\$" "${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"/cloudmount/*.pid \
          /tmp/cloudmount-"$(id -u)"/*.pid 2>/dev/null || true; } | head -1 | xargs -r sed -n 's/^pid=//p')
[ -n "$pid" ] || pid=$(pgrep -n -f "$CM_BIN") || true
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
umount_cm

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "n/a" && v <= g) ? "met" : "NOT met" }'; }

echo
echo "cloudmount vs rclone mount --vfs-cache-mode full — Apache mod_dav on loopback, ${BIG_MIB} MiB file"
printf '%-44s %10s %10s %8s  %-28s %s\n' workload cloudmount rclone ratio goal verdict
row() { # label key goal-ratio
    local c=${T[cm.$2]:-0} o=${T[rc.$2]:-0} r
    r=$(ratio "$c" "$o")
    printf '%-44s %9ss %9ss %8s  %-28s %s\n' "$1" "$c" "$o" "$r" "<= $3 x rclone" "$(verdict "$r" "$3")"
}
row "cold sequential read (cat)" seqcold 0.25
row "warm re-read" seqwarm 999
row "$RANDOM_READS random 4 KiB preads, cold" random 0.1
row "find over $((TREE_DIRS * TREE_FILES)) files, cold" find 0.5
row "cat of 1,000 files of 512 B after find" cat1000 0.1
echo
thr_cm=$(ratio "${T[curl.get]}" "${T[cm.seqcold]}")
printf '%-44s %s (goal >= 0.5: %s)\n' "cold read throughput / curl GET throughput" "$thr_cm" \
    "$(awk -v v="$thr_cm" 'BEGIN { print (v >= 0.5) ? "met" : "NOT met" }')"
warm=$(ratio "${T[cm.seqwarm]}" "${T[disk.warm]}")
printf '%-44s %s (goal <= 2: %s)\n' "warm re-read / page-cache read of the file" "$warm" "$(verdict "$warm" 2)"
printf '%-44s %s cloudmount, %s rclone (goal cloudmount <= 64 MiB)\n' "server bytes for the random reads" \
    "$(mib "${B[cm.random]:-0}")" "$(mib "${B[rc.random]:-0}")"
printf '%-44s %s cloudmount, %s rclone\n' "requests for the cold find" "${N[cm.find]:-0}" "${N[rc.find]:-0}"
printf '%-44s %s MiB (goal <= 150 MiB)\n' "daemon RSS after listing $RSS_ENTRIES entries" "$((RSS_KB / 1024))"
printf '%-44s curl GET %ss, page-cache read %ss\n' "baselines" "${T[curl.get]}" "${T[disk.warm]}"
