#!/usr/bin/env bash
# Pins and large reads, against the wire's floor and rclone, on the same Apache mod_dav server
# on loopback (the one tests/run.sh starts), in one run. Prints each time, the ratios and the
# goals of the pins issue next to them (goals are printed, never asserted).
#
#   benches/pin_compare.sh                    # everything (a few minutes here)
#   BENCH_PIN_FILES=200 benches/pin_compare.sh # a smaller folder to pin (default 1,000 files)
#   BENCH_KEEP=1 benches/pin_compare.sh       # keep the work dir (daemon log)
#
# What is measured, each with the page cache dropped first (the server reads from its disk; the
# data is read once before, so the VM host's own cache holds it alike for every tool):
#  1. pinning a folder of BENCH_PIN_FILES (1,000) files of 1 GiB in all (sizes 64 KiB to 2 MiB,
#     log-uniform, deterministic): `cloudmount pin DIR --wait` on a fresh mount (cache size
#     64M: pins are outside it), against the floor — one `curl` fetching the same files one
#     after the other on one keep-alive connection into local files — and against
#     `rclone copy` of the folder to local disk (its defaults: 4 transfers);
#  2. reading a file of 30 x the cache's budget (64 MiB budget, 1.9 GiB file) once, cold, with
#     `cat` through the mount, against `curl` GETting it to /dev/null. The file does not fit
#     the cache: it is read as a stream, and the cache's size after the read is printed too.
#
# Runs as root on Debian 12 (installs apache2-bin, rclone, ... if missing, like tests/run.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/servers/lib.sh
. "$ROOT/tests/servers/lib.sh"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

PIN_FILES=${BENCH_PIN_FILES:-1000}
case "$PIN_FILES" in ''|*[!0-9]*|0) echo "BENCH_PIN_FILES must be a positive number" >&2; exit 2 ;; esac
BUDGET_MIB=64
HUGE_MIB=$(( 30 * BUDGET_MIB ))

WORK=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$WORK" ] && mountpoint -q "$WORK/mnt" 2>/dev/null; then
        "$CM_BIN" unmount "$WORK/mnt" --no-wait >/dev/null 2>&1 || fusermount3 -u -z "$WORK/mnt" || true
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then
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
URL="$CLOUDMOUNT_TEST_APACHE_BASIC_URL"
DATA="$CLOUDMOUNT_TEST_APACHE_BASIC_DIR"
WORK=$(mktemp -d /tmp/cloudmount-pinbench.XXXXXX)
export HOME="$WORK/home" XDG_RUNTIME_DIR="$WORK/run"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" "$WORK/mnt"
chmod 0700 "$XDG_RUNTIME_DIR"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
drop_caches() {
    sync; echo 3 >/proc/sys/vm/drop_caches
    cat /dev/null; curl --version >/dev/null; rclone version >/dev/null 2>&1 || true
}

cm_log "creating the data set on the server's disk ($PIN_FILES files, 1 GiB; a ${HUGE_MIB} MiB file)"
mkdir -p "$DATA/pinbench/folder"
python3 - "$DATA/pinbench/folder" "$PIN_FILES" <<'EOF'
import math, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
lo, hi = math.log(64 << 10), math.log(2 << 20)
sizes = [int(math.exp(rng.uniform(lo, hi))) for _ in range(n)]
scale = (1 << 30) / sum(sizes)
block = os.urandom(1 << 20)
for i, s in enumerate(sizes):
    s = max(1, int(s * scale))
    d = os.path.join(root, "d%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
        left = s
        while left:
            k = min(left, len(block))
            f.write(block[:k])
            left -= k
EOF
dd if=/dev/urandom of="$DATA/pinbench/huge.bin" bs=1M count="$HUGE_MIB" status=none
chown -R www-data:www-data "$DATA/pinbench"
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ t += $1 } END { print t + 0 }'; }
FOLDER_BYTES=$(file_bytes "$DATA/pinbench/folder")

# Read once, so every measurement below finds the data in the same place: the VM host's cache
# (dropping this guest's page cache before each does not empty it; the first reader would pay
# alone for the host's disk).
cat "$DATA"/pinbench/folder/*/* "$DATA/pinbench/huge.bin" >/dev/null

export CLOUDMOUNT_PASSWORD="$CLOUDMOUNT_TEST_PASSWORD"
export RCLONE_CONFIG="$WORK/rclone.conf"; : >"$RCLONE_CONFIG"
export RCLONE_WEBDAV_URL="$URL" RCLONE_WEBDAV_USER="$CLOUDMOUNT_TEST_USER" RCLONE_WEBDAV_VENDOR=other
RCLONE_WEBDAV_PASS=$(rclone obscure - <<<"$CLOUDMOUNT_TEST_PASSWORD"); export RCLONE_WEBDAV_PASS

mount_cm() {
    rm -rf "$WORK/cache"
    "$CM_BIN" mount "$URL" "$WORK/mnt" --user "$CLOUDMOUNT_TEST_USER" --cache-dir "$WORK/cache" \
        --cache-size "${BUDGET_MIB}M"
}
umount_cm() { "$CM_BIN" unmount "$WORK/mnt" >/dev/null; }

# 1. Pinning a folder.
cm_log "1. the floor: curl, one keep-alive connection, the files into local files"
(cd "$DATA/pinbench/folder" && find . -type f | sort) >"$WORK/files"
rm -rf "$WORK/curl-out"; mkdir -p "$WORK/curl-out"
while read -r f; do
    f=${f#./}
    printf 'url = "%spinbench/folder/%s"\noutput = "%s/curl-out/%s"\n' "$URL" "$f" "$WORK" "${f//\//_}"
done <"$WORK/files" >"$WORK/curl-urls.conf"
drop_caches; t0=$(now)
curl -s -K "$CM_TMP/curl-basic.conf" -K "$WORK/curl-urls.conf"
T_CURL=$(secs "$t0" "$(now)")
GOT=$(file_bytes "$WORK/curl-out")
[ "$GOT" -ge "$FOLDER_BYTES" ] || cm_die "curl fetched $GOT of $FOLDER_BYTES bytes"
rm -rf "$WORK/curl-out"

cm_log "1. rclone copy of the folder to local disk"
drop_caches; t0=$(now)
rclone copy :webdav:pinbench/folder "$WORK/rclone-out"
T_RCLONE=$(secs "$t0" "$(now)")
rm -rf "$WORK/rclone-out"

cm_log "1. cloudmount pin --wait (a fresh mount and cache)"
mount_cm
ls "$WORK/mnt" >/dev/null
drop_caches; t0=$(now)
"$CM_BIN" pin "$WORK/mnt/pinbench/folder" --wait </dev/null
T_PIN=$(secs "$t0" "$(now)")
PINNED=$("$CM_BIN" status "$WORK/mnt" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"]["pinned_bytes"])')
[ "$PINNED" -ge "$FOLDER_BYTES" ] || cm_die "the pin keeps $PINNED of $FOLDER_BYTES bytes"
umount_cm

# 2. A file of 30 x the budget.
cm_log "2. a ${HUGE_MIB} MiB file, cold: curl GET"
drop_caches; t0=$(now)
curl -s -K "$CM_TMP/curl-basic.conf" -o /dev/null "${URL}pinbench/huge.bin"
T_CURL_HUGE=$(secs "$t0" "$(now)")
cm_log "2. the same through the mount (cache ${BUDGET_MIB} MiB)"
mount_cm
ls "$WORK/mnt/pinbench" >/dev/null
drop_caches; t0=$(now)
cat "$WORK/mnt/pinbench/huge.bin" >/dev/null
T_CAT_HUGE=$(secs "$t0" "$(now)")
CACHE_USED=$("$CM_BIN" status "$WORK/mnt" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"]["used_bytes"])')
umount_cm

MIB_S() { awk -v b="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.0f MiB/s", b / t / 1048576; else print "n/a" }'; }
echo
echo "pinning $PIN_FILES files, $(( FOLDER_BYTES >> 20 )) MiB (Apache on loopback, page cache dropped before each)"
printf '%-40s %8ss  %s\n' "curl, one keep-alive connection" "$T_CURL" "$(MIB_S "$FOLDER_BYTES" "$T_CURL")"
printf '%-40s %8ss  %s\n' "rclone copy" "$T_RCLONE" "$(MIB_S "$FOLDER_BYTES" "$T_RCLONE")"
printf '%-40s %8ss  %s\n' "cloudmount pin --wait" "$T_PIN" "$(MIB_S "$FOLDER_BYTES" "$T_PIN")"
printf '%-40s %8s   (goal <= 1.5)\n' "  pin / curl" "$(ratio "$T_PIN" "$T_CURL")"
printf '%-40s %8s   (goal <= 0.5)\n' "  pin / rclone copy" "$(ratio "$T_PIN" "$T_RCLONE")"
echo
echo "reading a ${HUGE_MIB} MiB file once, cold, with a ${BUDGET_MIB} MiB cache"
printf '%-40s %8ss  %s\n' "curl GET" "$T_CURL_HUGE" "$(MIB_S $(( HUGE_MIB << 20 )) "$T_CURL_HUGE")"
printf '%-40s %8ss  %s\n' "cat through the mount" "$T_CAT_HUGE" "$(MIB_S $(( HUGE_MIB << 20 )) "$T_CAT_HUGE")"
printf '%-40s %8s   (goal <= 2)\n' "  cat / curl" "$(ratio "$T_CAT_HUGE" "$T_CURL_HUGE")"
printf '%-40s %8s MiB (budget %s MiB)\n' "  cache used after the read" "$(( CACHE_USED >> 20 ))" "$BUDGET_MIB"
