# shellcheck shell=bash
# Starts and stops the real WebDAV servers the cloudmount tests run against.
# Sourced by tests/run.sh (which sets -euo pipefail); see tests/servers/README.md.
#
#   cm_ensure_packages   install missing Debian packages (apt-get, once)
#   cm_ensure_test_tools install the external test suites fsx and pjdfstest (cargo, once)
#   cm_start_servers     start Apache (Basic + Digest vhosts), rclone and nginx, wait for them,
#                        export CLOUDMOUNT_TEST_* variables
#   cm_stop_servers      stop everything started here and remove the temp dir (idempotent)

CM_SERVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CM_TEST_USER=cmtest
CM_REALM=cloudmount-test
CM_READY_TIMEOUT=${CM_READY_TIMEOUT:-20}   # seconds each server gets to answer

CM_TMP=""
CM_APACHE_PID=""
CM_RCLONE_PID=""
CM_NGINX_PID=""
CM_PICKED_PORTS=" "

cm_log() { printf '[test-servers] %s\n' "$*" >&2; }
cm_die() { printf '[test-servers] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Packages

# apache2-bin, not apache2: it has /usr/sbin/apache2 and every module we load, but no system
# service and no /etc/apache2, so installing it starts nothing on port 80.
# nginx (the core binary, with the built-in dav module) and the dav-ext module (PROPFIND,
# OPTIONS) do come with a system service: cm_ensure_packages keeps apt from starting it.
# litmus: the WebDAV compliance suite tests/server.rs runs against `cloudmount serve`.
# gvfs-backends (the dav backend), gvfs-daemons (gvfsd), libglib2.0-bin (`gio`) and dbus
# (`dbus-run-session`): the GNOME client tests/serve_clients.rs drives `cloudmount serve` with.
# nautilus, nemo, caja and their python3-nautilus, nemo-python, python3-caja, xvfb, dbus-x11,
# xdotool, imagemagick, x11-apps (xwd) and attr (getfattr): tests/file_manager.rs runs the real
# file managers under Xvfb with the extensions of `cloudmount integrate` and checks their
# answers against getfattr; tests/mount.rs runs getfattr on a mount as users read the
# file states. dolphin (about 30 s to install here): tests/file_manager.rs opens the service
# menu of `cloudmount integrate` in the real Dolphin and runs it. attr (setfattr) and libgdk-pixbuf2.0-bin (GNOME's real
# gdk-pixbuf-thumbnailer): tests/mount_pins.rs.
CM_PACKAGES=(apache2-bin apache2-utils rclone fuse3 curl media-types util-linux
    nginx libnginx-mod-http-dav-ext litmus rsync
    gvfs-backends gvfs-daemons libglib2.0-bin dbus
    nautilus python3-nautilus nemo nemo-python caja python3-caja dolphin xvfb dbus-x11 xdotool
    imagemagick x11-apps attr libgdk-pixbuf2.0-bin)
CM_NGINX_DAV_EXT=/usr/lib/nginx/modules/ngx_http_dav_ext_module.so

cm_pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

cm_ensure_packages() {
    local missing=() p
    for p in "${CM_PACKAGES[@]}"; do
        cm_pkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    cm_log "installing missing packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || cm_die "not root and no sudo: cannot install ${missing[*]}"
        sudo=(sudo)
    fi
    # A policy-rc.d that says "no" (exit 101) keeps the maintainer scripts from starting (or
    # restarting) a system service, nginx's on port 80 in particular. Ours only if there was none.
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# cloudmount tests/servers/lib.sh: no service starts during install\nexit 101\n' \
            | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
        own_policy=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || rc=$?
    if [ $rc -eq 0 ]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" </dev/null || rc=$?
    fi
    [ $own_policy -eq 1 ] && "${sudo[@]}" rm -f "$policy"
    [ $rc -eq 0 ] || cm_die "apt-get failed (exit $rc) installing ${missing[*]}"
}

# ---------------------------------------------------------------------------------------------
# A normal user

# Users run cloudmount as themselves: the tests of what they run start it as a normal user,
# with FUSE as Debian gives it to users (/dev/fuse usable by all, fusermount3 setuid root,
# /etc/fuse.conf left as it is). The sync tests run cloudmount as that user; the real-mount test
# binaries run wholly as that user (.config/nextest.toml, tests/as-user.sh). As root, a system
# user is made for that once; run as a normal user already, the tests use that user.
CM_UNIX_USER=cloudmount-tester

cm_prepare_user() {
    if [ "$(id -u)" -ne 0 ]; then
        export CLOUDMOUNT_TEST_UNIX_USER="$(id -un)"
        return 0
    fi
    if ! id -u "$CM_UNIX_USER" >/dev/null 2>&1; then
        cm_log "creating the system user $CM_UNIX_USER (the tests run cloudmount as a normal user)"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            "$CM_UNIX_USER" || cm_die "useradd $CM_UNIX_USER failed"
    fi
    if [ -e /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
        chmod 0666 /dev/fuse || cm_die "cannot make /dev/fuse usable by all (as Debian has it)"
    fi
    local fm
    fm=$(command -v fusermount3 || true)
    [ -n "$fm" ] || cm_die "fusermount3 not found (fuse3 not installed?)"
    [ -u "$fm" ] || chmod u+s "$fm" || cm_die "cannot make $fm setuid root (as Debian has it)"
    export CLOUDMOUNT_TEST_UNIX_USER="$CM_UNIX_USER"
}

# ---------------------------------------------------------------------------------------------
# External test suites

# Run on a real mount by tests/mount_fsx.rs and tests/mount_pjdfstest.rs; from crates.io,
# installed with `cargo install --locked` into $CARGO_HOME/bin (~/.cargo/bin) when missing or of
# another version. Versions are pinned: tests/pjdfstest/pjdfstest.toml names pjdfstest's cases,
# tests/fsx/fsx.toml uses fsx's config keys. At run time they need nothing beyond Debian's
# essential packages (pjdfstest switches to the users nobody and daemon of base-passwd; on
# Linux it does not link libacl).
CM_CARGO_TOOLS=(fsx@0.3.2 pjdfstest@0.2.2)

cm_ensure_test_tools() {
    local bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin" spec name version have
    case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
    for spec in "${CM_CARGO_TOOLS[@]}"; do
        name=${spec%@*}
        version=${spec#*@}
        have=$("$name" --version 2>/dev/null || true)
        [ "$have" = "$name $version" ] && continue
        cm_log "installing $name $version: cargo install --locked $name@$version (once; a minute or two)"
        cargo install --locked --quiet --force "$name@$version" </dev/null \
            || cm_die "cargo install $name@$version failed"
        have=$("$name" --version 2>/dev/null || true)
        [ "$have" = "$name $version" ] \
            || cm_die "$name $version was installed but \`$name --version\` says \"$have\" (is $bin first on PATH?)"
    done
}

# The suites where the normal user the mount tests run as can run them too (root's
# ~/.cargo/bin is private): copies in $CM_TMP/bin (made by cm_start_servers), named by
# CLOUDMOUNT_TEST_TOOLS_DIR (tests/common/mount.rs `find_tool` looks there first) and first on
# PATH. A tool not installed is left out (`tests/run.sh --serve` installs none).
cm_share_test_tools() {
    local dir="$CM_TMP/bin" spec name src
    mkdir -p "$dir"
    chmod 0755 "$dir"
    for spec in "${CM_CARGO_TOOLS[@]}"; do
        name=${spec%@*}
        src=$(command -v "$name" || true)
        [ -n "$src" ] || continue
        install -m 0755 "$src" "$dir/$name" || cm_die "cannot copy $src to $dir"
    done
    export CLOUDMOUNT_TEST_TOOLS_DIR="$dir"
    export PATH="$dir:$PATH"
}

# ---------------------------------------------------------------------------------------------
# Ports

# Every local TCP port in use (any state), from /proc: needs neither ss nor python.
cm_used_ports() {
    local f sl local_addr
    for f in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$f" ] || continue
        while read -r sl local_addr _; do
            [ "$sl" = "sl" ] && continue
            printf '%d\n' "$((16#${local_addr##*:}))"
        done <"$f"
    done
}

# A port that nothing uses now, below the ephemeral range (32768+) so outgoing connections do not
# take it between the check and the bind. A lost race shows as a bind error; callers retry.
# Sets CM_PORT (not echoed: a $(...) subshell would lose CM_PICKED_PORTS).
cm_pick_port() {
    local used port i
    used=" $(cm_used_ports | tr '\n' ' ') "
    for i in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        case "$used$CM_PICKED_PORTS" in *" $port "*) continue ;; esac
        CM_PICKED_PORTS+="$port "
        CM_PORT=$port
        return 0
    done
    cm_die "no free port found"
}

# ---------------------------------------------------------------------------------------------
# Processes

# Run a server in the background, tied to this shell: with setpriv --pdeathsig it gets SIGTERM
# even if this script is SIGKILLed. Its stdin is /dev/null (CI has no stdin).
cm_spawn() { # logfile cmd...
    local log=$1; shift
    if [ -z "${CM_HAVE_PDEATHSIG:-}" ]; then
        CM_HAVE_PDEATHSIG=no
        case "$(setpriv --help 2>/dev/null || true)" in *--pdeathsig*) CM_HAVE_PDEATHSIG=yes ;; esac
    fi
    if [ "$CM_HAVE_PDEATHSIG" = yes ]; then
        setpriv --pdeathsig TERM -- "$@" </dev/null >>"$log" 2>&1 &
    else
        "$@" </dev/null >>"$log" 2>&1 &
    fi
    CM_SPAWNED_PID=$!
}

cm_children_of() { # pid -> its direct children's pids (from /proc; no procps needed)
    local parent=$1 p stat rest
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }  # after "pid (comm) ": state ppid ...
        # shellcheck disable=SC2086
        set -- $rest
        if [ "${2:-}" = "$parent" ]; then echo "${p#/proc/}"; fi
    done
    return 0
}

cm_stop_pid() { # name pid: TERM, wait up to 10 s, then KILL it and any children left
    local name=$1 pid=$2 kids i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(cm_children_of "$pid" | tr '\n' ' ')
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        cm_log "$name (pid $pid) did not stop on SIGTERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in $kids; do
        kill -KILL "$i" 2>/dev/null || true
    done
}

# Wait until url answers PROPFIND Depth 0 with 207. Returns 0 ready, 2 process died, 1 timeout.
cm_wait_ready() { # pid url curl-auth-args...
    local pid=$1 url=$2 code="" deadline
    shift 2
    deadline=$((SECONDS + CM_READY_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$pid" 2>/dev/null || return 2
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 -X PROPFIND -H 'Depth: 0' \
            "$@" "$url" 2>/dev/null || true)
        [ "$code" = "207" ] && return 0
        sleep 0.2
    done
    CM_LAST_CODE=$code
    return 1
}

cm_show_log() { # title file
    printf '%s\n' "----- $1 ($2) -----" >&2
    tail -n 60 "$2" >&2 2>/dev/null || true
    printf '%s\n' "----- end of $1 -----" >&2
}

# ---------------------------------------------------------------------------------------------
# Setup

cm_make_tmp() {
    local base=${CLOUDMOUNT_TEST_SERVERS_TMP:-/tmp} d
    CM_TMP=$(mktemp -d "$base/cloudmount-servers.XXXXXX")
    # Apache's workers run as www-data: they must be able to walk down to the data dirs.
    chmod 0711 "$CM_TMP"
    d=$CM_TMP
    while [ "$d" != "/" ]; do
        d=$(dirname "$d")
        [ "$(stat -c '%A' "$d" | cut -c10)" = "x" ] || [ "$(stat -c '%A' "$d" | cut -c10)" = "t" ] \
            || cm_die "$d is not world-searchable: www-data cannot reach $CM_TMP (set CLOUDMOUNT_TEST_SERVERS_TMP)"
    done
    mkdir -p "$CM_TMP"/{apache/run,apache/davlock,apache/empty,data/apache-basic,data/apache-digest,data/rclone,rclone-cache}
    # nginx serves /dav/ from its root: the data dir is <root>/dav. Its temp dir (request
    # bodies of PUTs) must be on the same file system as the data dir (nginx renames into place).
    mkdir -p "$CM_TMP"/{nginx/www/dav,nginx/tmp/body,nginx/tmp/proxy,nginx/tmp/fastcgi,nginx/tmp/uwsgi,nginx/tmp/scgi}
    : >"$CM_TMP/rclone.conf"
}

cm_make_credentials() {
    local ha1
    # 24 characters from [A-Za-z0-9]: no ':' (htdigest separator) and nothing to escape.
    CM_PASSWORD=$(head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
    CM_PASSWORD=${CM_PASSWORD:0:24}
    [ ${#CM_PASSWORD} -ge 16 ] || cm_die "could not generate a password"
    # Basic (Apache and rclone). Default htpasswd hash is apr1-MD5, which both understand.
    htpasswd -c -i "$CM_TMP/htpasswd" "$CM_TEST_USER" <<<"$CM_PASSWORD" 2>/dev/null \
        || cm_die "htpasswd failed"
    # Digest: user:realm:md5(user:realm:password); htdigest has no batch mode.
    ha1=$(printf '%s:%s:%s' "$CM_TEST_USER" "$CM_REALM" "$CM_PASSWORD" | md5sum | cut -d' ' -f1)
    printf '%s:%s:%s\n' "$CM_TEST_USER" "$CM_REALM" "$ha1" >"$CM_TMP/htdigest"
    # curl config files, so the password never appears on a command line.
    (umask 077
     printf 'user = "%s:%s"\n' "$CM_TEST_USER" "$CM_PASSWORD" >"$CM_TMP/curl-basic.conf"
     printf 'user = "%s:%s"\ndigest\n' "$CM_TEST_USER" "$CM_PASSWORD" >"$CM_TMP/curl-digest.conf")
    if [ "$(id -u)" -eq 0 ]; then
        # Readable by all: the workers (www-data) and the private Apache a mount test starts
        # (tests/common/apache.rs), which runs as the normal user the mount tests run as. They
        # hold a hash of this run's random password, which every test has in its environment.
        chown root:www-data "$CM_TMP/htpasswd" "$CM_TMP/htdigest"
        chmod 0644 "$CM_TMP/htpasswd" "$CM_TMP/htdigest"
        chown -R www-data:www-data "$CM_TMP/data/apache-basic" "$CM_TMP/data/apache-digest" \
            "$CM_TMP/apache/davlock" "$CM_TMP/nginx/www/dav" "$CM_TMP/nginx/tmp"
    fi
}

cm_start_apache() {
    local attempt types=/dev/null rc
    [ -r /etc/mime.types ] && types=/etc/mime.types
    for attempt in 1 2 3 4 5; do
        cm_pick_port; CM_PORT_BASIC=$CM_PORT
        cm_pick_port; CM_PORT_DIGEST=$CM_PORT
        CM_APACHE_CONF="$CM_TMP/apache/httpd.conf"
        sed -e "s|@APACHE_DIR@|$CM_TMP/apache|g" \
            -e "s|@PORT_BASIC@|$CM_PORT_BASIC|g" \
            -e "s|@PORT_DIGEST@|$CM_PORT_DIGEST|g" \
            -e "s|@DATA_BASIC@|$CM_TMP/data/apache-basic|g" \
            -e "s|@DATA_DIGEST@|$CM_TMP/data/apache-digest|g" \
            -e "s|@HTPASSWD@|$CM_TMP/htpasswd|g" \
            -e "s|@HTDIGEST@|$CM_TMP/htdigest|g" \
            -e "s|@BASIC_ACCESS_LOG@|$CM_TMP/apache/basic-access.log|g" \
            -e "s|@DIGEST_ACCESS_LOG@|$CM_TMP/apache/digest-access.log|g" \
            -e "s|@TYPES_CONFIG@|$types|g" \
            "$CM_SERVERS_DIR/apache-dav.conf.in" >"$CM_APACHE_CONF"
        grep -q '@[A-Z_]*@' "$CM_APACHE_CONF" && cm_die "unfilled placeholder in $CM_APACHE_CONF"
        /usr/sbin/apache2 -t -f "$CM_APACHE_CONF" >"$CM_TMP/apache/configtest.log" 2>&1 \
            || { cm_show_log "apache2 -t" "$CM_TMP/apache/configtest.log"; cm_die "apache config invalid"; }
        : >"$CM_TMP/apache/error.log"
        cm_spawn "$CM_TMP/apache/stderr.log" /usr/sbin/apache2 -f "$CM_APACHE_CONF" -DFOREGROUND
        CM_APACHE_PID=$CM_SPAWNED_PID
        rc=0
        cm_wait_ready "$CM_APACHE_PID" "http://127.0.0.1:$CM_PORT_BASIC/dav/" \
            -K "$CM_TMP/curl-basic.conf" || rc=$?
        if [ $rc -eq 0 ]; then
            rc=0
            cm_wait_ready "$CM_APACHE_PID" "http://127.0.0.1:$CM_PORT_DIGEST/dav/" \
                -K "$CM_TMP/curl-digest.conf" || rc=$?
        fi
        [ $rc -eq 0 ] && return 0
        if [ $rc -eq 2 ] && grep -qi 'address already in use' \
            "$CM_TMP/apache/error.log" "$CM_TMP/apache/stderr.log" 2>/dev/null; then
            cm_log "apache: port taken meanwhile, retrying with other ports"
            wait "$CM_APACHE_PID" 2>/dev/null || true
            CM_APACHE_PID=""
            continue
        fi
        cm_show_log "apache error log" "$CM_TMP/apache/error.log"
        cm_show_log "apache stderr" "$CM_TMP/apache/stderr.log"
        if [ $rc -eq 2 ]; then
            cm_die "apache exited during start-up"
        fi
        cm_die "apache did not answer PROPFIND with 207 within ${CM_READY_TIMEOUT}s (last HTTP status: ${CM_LAST_CODE:-none})"
    done
    cm_die "apache: could not bind free ports after 5 attempts"
}

cm_start_rclone() {
    local attempt rc
    for attempt in 1 2 3 4 5; do
        cm_pick_port; CM_PORT_RCLONE=$CM_PORT
        : >"$CM_TMP/rclone.log"
        # --dir-cache-time 0s: rclone's VFS must not hide changes a test makes directly in the
        # data dir. --config/--cache-dir: never look at or write to ~/.config, ~/.cache.
        cm_spawn "$CM_TMP/rclone.log" rclone serve webdav "$CM_TMP/data/rclone" \
            --addr "127.0.0.1:$CM_PORT_RCLONE" \
            --htpasswd "$CM_TMP/htpasswd" \
            --realm "$CM_REALM" \
            --config "$CM_TMP/rclone.conf" \
            --cache-dir "$CM_TMP/rclone-cache" \
            --dir-cache-time 0s \
            --log-level NOTICE
        CM_RCLONE_PID=$CM_SPAWNED_PID
        rc=0
        cm_wait_ready "$CM_RCLONE_PID" "http://127.0.0.1:$CM_PORT_RCLONE/" \
            -K "$CM_TMP/curl-basic.conf" || rc=$?
        [ $rc -eq 0 ] && return 0
        if [ $rc -eq 2 ] && grep -qi 'address already in use' "$CM_TMP/rclone.log"; then
            cm_log "rclone: port taken meanwhile, retrying with another port"
            wait "$CM_RCLONE_PID" 2>/dev/null || true
            CM_RCLONE_PID=""
            continue
        fi
        cm_show_log "rclone log" "$CM_TMP/rclone.log"
        if [ $rc -eq 2 ]; then
            cm_die "rclone exited during start-up"
        fi
        cm_die "rclone did not answer PROPFIND with 207 within ${CM_READY_TIMEOUT}s (last HTTP status: ${CM_LAST_CODE:-none})"
    done
    cm_die "rclone: could not bind a free port after 5 attempts"
}

cm_start_nginx() {
    local attempt rc types=/dev/null user=""
    [ -r /etc/nginx/mime.types ] && types=/etc/nginx/mime.types
    [ -r "$CM_NGINX_DAV_EXT" ] || cm_die "$CM_NGINX_DAV_EXT missing (package libnginx-mod-http-dav-ext)"
    # As root, the workers run as www-data (like Apache's); otherwise as whoever runs this.
    [ "$(id -u)" -eq 0 ] && user="user www-data www-data;"
    for attempt in 1 2 3 4 5; do
        cm_pick_port; CM_PORT_NGINX=$CM_PORT
        CM_NGINX_CONF="$CM_TMP/nginx/nginx.conf"
        sed -e "s|@NGINX_DIR@|$CM_TMP/nginx|g" \
            -e "s|@PORT@|$CM_PORT_NGINX|g" \
            -e "s|@USER@|$user|g" \
            -e "s|@DAV_EXT@|$CM_NGINX_DAV_EXT|g" \
            -e "s|@HTPASSWD@|$CM_TMP/htpasswd|g" \
            -e "s|@REALM@|$CM_REALM|g" \
            -e "s|@TYPES_CONFIG@|$types|g" \
            "$CM_SERVERS_DIR/nginx-dav.conf.in" >"$CM_NGINX_CONF"
        grep -q '@[A-Z_]*@' "$CM_NGINX_CONF" && cm_die "unfilled placeholder in $CM_NGINX_CONF"
        /usr/sbin/nginx -t -q -p "$CM_TMP/nginx" -e "$CM_TMP/nginx/error.log" -c "$CM_NGINX_CONF" \
            >"$CM_TMP/nginx/configtest.log" 2>&1 \
            || { cm_show_log "nginx -t" "$CM_TMP/nginx/configtest.log"; cm_die "nginx config invalid"; }
        : >"$CM_TMP/nginx/error.log"
        cm_spawn "$CM_TMP/nginx/stderr.log" /usr/sbin/nginx -p "$CM_TMP/nginx" \
            -e "$CM_TMP/nginx/error.log" -c "$CM_NGINX_CONF"
        CM_NGINX_PID=$CM_SPAWNED_PID
        rc=0
        cm_wait_ready "$CM_NGINX_PID" "http://127.0.0.1:$CM_PORT_NGINX/dav/" \
            -K "$CM_TMP/curl-basic.conf" || rc=$?
        [ $rc -eq 0 ] && return 0
        if [ $rc -eq 2 ] && grep -qi 'address already in use' \
            "$CM_TMP/nginx/error.log" "$CM_TMP/nginx/stderr.log" 2>/dev/null; then
            cm_log "nginx: port taken meanwhile, retrying with another port"
            wait "$CM_NGINX_PID" 2>/dev/null || true
            CM_NGINX_PID=""
            continue
        fi
        cm_show_log "nginx error log" "$CM_TMP/nginx/error.log"
        cm_show_log "nginx stderr" "$CM_TMP/nginx/stderr.log"
        if [ $rc -eq 2 ]; then
            cm_die "nginx exited during start-up"
        fi
        cm_die "nginx did not answer PROPFIND with 207 within ${CM_READY_TIMEOUT}s (last HTTP status: ${CM_LAST_CODE:-none})"
    done
    cm_die "nginx: could not bind a free port after 5 attempts"
}

cm_start_servers() {
    local p
    for p in /usr/sbin/apache2 /usr/sbin/nginx htpasswd rclone curl md5sum; do
        command -v "$p" >/dev/null || cm_die "$p not found (did package installation fail?)"
    done
    cm_make_tmp
    cm_make_credentials
    cm_start_apache
    cm_start_rclone
    cm_start_nginx

    export CLOUDMOUNT_TEST_SERVERS=1
    export CLOUDMOUNT_TEST_USER="$CM_TEST_USER"
    export CLOUDMOUNT_TEST_PASSWORD="$CM_PASSWORD"
    export CLOUDMOUNT_TEST_APACHE_BASIC_URL="http://127.0.0.1:$CM_PORT_BASIC/dav/"
    export CLOUDMOUNT_TEST_APACHE_DIGEST_URL="http://127.0.0.1:$CM_PORT_DIGEST/dav/"
    export CLOUDMOUNT_TEST_RCLONE_URL="http://127.0.0.1:$CM_PORT_RCLONE/"
    export CLOUDMOUNT_TEST_NGINX_URL="http://127.0.0.1:$CM_PORT_NGINX/dav/"
    export CLOUDMOUNT_TEST_APACHE_ACCESS_LOG="$CM_TMP/apache/basic-access.log"
    export CLOUDMOUNT_TEST_APACHE_DIGEST_ACCESS_LOG="$CM_TMP/apache/digest-access.log"
    export CLOUDMOUNT_TEST_APACHE_BASIC_DIR="$CM_TMP/data/apache-basic"
    export CLOUDMOUNT_TEST_APACHE_DIGEST_DIR="$CM_TMP/data/apache-digest"
    export CLOUDMOUNT_TEST_RCLONE_DIR="$CM_TMP/data/rclone"
    export CLOUDMOUNT_TEST_NGINX_DIR="$CM_TMP/nginx/www/dav"
    export CLOUDMOUNT_TEST_APACHE_CONF="$CM_APACHE_CONF"
    export CLOUDMOUNT_TEST_DIGEST_REALM="$CM_REALM"

    cm_log "Apache mod_dav, Basic auth : $CLOUDMOUNT_TEST_APACHE_BASIC_URL (pid $CM_APACHE_PID)"
    cm_log "Apache mod_dav, Digest auth: $CLOUDMOUNT_TEST_APACHE_DIGEST_URL (same httpd, realm $CM_REALM, nonce lifetime 2 s)"
    cm_log "rclone serve webdav, Basic : $CLOUDMOUNT_TEST_RCLONE_URL (pid $CM_RCLONE_PID)"
    cm_log "nginx dav + dav-ext, Basic  : $CLOUDMOUNT_TEST_NGINX_URL (pid $CM_NGINX_PID)"
    cm_log "user $CM_TEST_USER, random password in \$CLOUDMOUNT_TEST_PASSWORD; logs under $CM_TMP"
}

cm_write_env_file() { # file: shell-sourceable exports (contains the password; mode 0600)
    (umask 077
     for v in $(compgen -e | grep '^CLOUDMOUNT_TEST_'); do
         printf 'export %s=%q\n' "$v" "${!v}"
     done >"$1")
}

cm_stop_servers() {
    cm_stop_pid nginx "$CM_NGINX_PID"
    CM_NGINX_PID=""
    cm_stop_pid rclone "$CM_RCLONE_PID"
    CM_RCLONE_PID=""
    cm_stop_pid apache "$CM_APACHE_PID"
    CM_APACHE_PID=""
    if [ -n "$CM_TMP" ] && [ -d "$CM_TMP" ]; then
        if [ -n "${CLOUDMOUNT_TEST_KEEP_LOGS:-}" ]; then
            cm_log "keeping $CM_TMP (CLOUDMOUNT_TEST_KEEP_LOGS set)"
        else
            rm -rf "$CM_TMP"
        fi
    fi
    CM_TMP=""
}
