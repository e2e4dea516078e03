#!/bin/sh
# Runs one test binary (nextest's run-wrapper `as-user`, see .config/nextest.toml) as the normal
# user the test command prepared: CLOUDMOUNT_TEST_UNIX_USER (tests/servers/lib.sh,
# cm_prepare_user), with FUSE as Debian gives it to users. Users mount their drive as
# themselves: the test process, the `cloudmount` it starts and the daemon all run as that user.
#
#   as-user.sh TEST-BINARY ARGS...
#
# As root: switches to the user with setpriv (real and effective ids and the user's groups; the
# kernel drops root's capabilities with the uid, as for a login), keeping the environment (the servers' CLOUDMOUNT_TEST_* variables) but
# for HOME, USER and LOGNAME, which become the user's. Run by that user already (tests/run.sh
# started by a normal user): runs the binary as it is. Anyone else: fails, saying why.
set -eu

user=${CLOUDMOUNT_TEST_UNIX_USER:-}
if [ -z "$user" ]; then
    echo "as-user: CLOUDMOUNT_TEST_UNIX_USER is not set: run the tests with tests/run.sh" >&2
    exit 2
fi
if [ "$#" -eq 0 ]; then
    echo "as-user: no test binary given" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    if [ "$(id -un)" != "$user" ]; then
        echo "as-user: running as $(id -un), but the tests' normal user is $user" >&2
        exit 2
    fi
    exec "$@"
fi

uid=$(id -u "$user") || { echo "as-user: no user $user (tests/run.sh creates it)" >&2; exit 2; }
gid=$(id -g "$user")
[ "$uid" -ne 0 ] || { echo "as-user: $user is root" >&2; exit 2; }
home=$(getent passwd "$user" | cut -d: -f6)
# The binary must be reachable by the user (its build directory may not be).
if ! setpriv --reuid="$uid" --regid="$gid" --init-groups -- test -x "$1"; then
    echo "as-user: $user cannot run $1: make the build directory (CARGO_TARGET_DIR) readable and searchable by all" >&2
    exit 2
fi
HOME=$home USER=$user LOGNAME=$user exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
