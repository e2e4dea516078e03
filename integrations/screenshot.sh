#!/bin/sh
# Takes docs/images/file-manager.png: a real Nautilus, with the extension of
# `cloudmount integrate`, showing a cloudmount mount of the embedded server, with the files'
# states and the context menu of one file open. With SCREENSHOT_FM=dolphin, takes
# docs/images/dolphin.png: Dolphin showing the mount, with the service menu's "Cloud drive"
# submenu open on one file (Dolphin shows no states: a service menu only adds entries).
#
#   integrations/screenshot.sh [OUT.png]
#   SCREENSHOT_FM=dolphin integrations/screenshot.sh [OUT.png]   (needs dolphin)
#
# Needs a built binary (target/debug/cloudmount, or CLOUDMOUNT_BIN=…) and Debian's nautilus,
# python3-nautilus, xvfb, dbus-x11, xdotool, imagemagick and x11-apps (tests/run.sh installs
# them). Everything happens in a temporary home, on a private X display; nothing of the user's
# is touched. Run as root, it runs as SCREENSHOT_USER (default cloudmount-tester, the user
# tests/run.sh creates): Nautilus and the mount belong to a normal user.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FM=${SCREENSHOT_FM:-nautilus}
case "$FM" in
    nautilus) OUT=${1:-$ROOT/docs/images/file-manager.png} ;;
    dolphin) OUT=${1:-$ROOT/docs/images/dolphin.png} ;;
    *) echo "screenshot.sh: SCREENSHOT_FM is nautilus or dolphin" >&2; exit 2 ;;
esac
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
BIN=${CLOUDMOUNT_BIN:-$ROOT/target/debug/cloudmount}
[ -n "${CARGO_TARGET_DIR:-}" ] && [ -z "${CLOUDMOUNT_BIN:-}" ] && BIN=$CARGO_TARGET_DIR/debug/cloudmount
[ -x "$BIN" ] || { echo "screenshot.sh: no binary at $BIN (cargo build, or set CLOUDMOUNT_BIN)" >&2; exit 1; }
for tool in "$FM" Xvfb xdotool xwd convert dbus-run-session; do
    command -v $tool >/dev/null || { echo "screenshot.sh: $tool is missing (see the header)" >&2; exit 1; }
done

if [ "$(id -u)" -eq 0 ]; then
    user=${SCREENSHOT_USER:-cloudmount-tester}
    work=$(mktemp -d /tmp/cloudmount-shot.XXXXXX)
    chmod 755 "$work"
    cp "$BIN" "$work/cloudmount"
    cp "$0" "$work/screenshot.sh"
    chown -R "$user" "$work"
    runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin CLOUDMOUNT_BIN="$work/cloudmount" \
        SCREENSHOT_KEEP="${SCREENSHOT_KEEP:-}" SCREENSHOT_FM="$FM" \
        sh "$work/screenshot.sh" "$work/shot.png"
    mkdir -p "$(dirname "$OUT")"
    cp "$work/shot.png" "$OUT"
    rm -rf "$work"
    echo "screenshot.sh: wrote $OUT"
    exit 0
fi

TMP=$(mktemp -d /tmp/cloudmount-shot-home.XXXXXX)
export HOME=$TMP/home XDG_RUNTIME_DIR=$TMP/run
unset XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME XDG_STATE_HOME
mkdir -p "$HOME/Cloud" "$XDG_RUNTIME_DIR" "$TMP/served"
chmod 700 "$XDG_RUNTIME_DIR"
SERVE_PID="" XVFB_PID="" FM_PID=""
cleanup() {
    [ -n "$FM_PID" ] && kill -KILL -"$FM_PID" 2>/dev/null
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null
    "$BIN" unmount --no-wait "$HOME/Cloud" >/dev/null 2>&1 || fusermount3 -u -z "$HOME/Cloud" 2>/dev/null
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null
    if [ -n "${SCREENSHOT_KEEP:-}" ]; then echo "screenshot.sh: kept $TMP" >&2; else rm -rf "$TMP" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# The cloud: a few folders and files on the embedded server.
s=$TMP/served
mkdir -p "$s/Photos" "$s/Projects/Garden"
for f in "Archive 2025.zip" "Budget.ods" "Holiday video.mp4" "Report.pdf" "Projects/Garden/plan.txt"; do
    head -c 20000 /dev/urandom >"$s/$f"
done
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s' "$password" >"$TMP/password"
chmod 600 "$TMP/password"
CLOUDMOUNT_PASSWORD=$password "$BIN" serve "$s" --listen 127.0.0.1:0 --user demo >"$TMP/serve.out" 2>"$TMP/serve.log" &
SERVE_PID=$!
for _ in $(seq 50); do grep -q http "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$TMP/serve.out")

# The drive, with files in each state: read (cached), written (waiting to upload), online.
"$BIN" mount "$url" "$HOME/Cloud" --user demo --password-file "$TMP/password" --write-back-delay 10m
cat "$HOME/Cloud/Report.pdf" "$HOME/Cloud/Budget.ods" >/dev/null
echo "Ideas for the garden" >"$HOME/Cloud/Notes.txt"
# Keep a folder on this device, where this build has `cloudmount pin`.
if "$BIN" pin --help >/dev/null 2>&1; then "$BIN" pin "$HOME/Cloud/Projects" || true; fi
"$BIN" integrate >/dev/null

# A private X display and D-Bus session, Nautilus in list view with the "Cloud state" column.
n=$(( $$ % 500 + 300 ))
while [ -e /tmp/.X11-unix/X$n ] || [ -e /tmp/.X$n-lock ]; do n=$((n + 1)); done
Xvfb :$n -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
XVFB_PID=$!
# GTK 4 draws with the cairo renderer: its default GL one runs on llvmpipe here, which a
# busy machine slows until Nautilus never gets to show the folder.
export DISPLAY=:$n NO_AT_BRIDGE=1 CLOUDMOUNT_FM_LOG=1 GSK_RENDERER=cairo
for _ in $(seq 100); do [ -e /tmp/.X11-unix/X$n ] && break; sleep 0.1; done
log=$HOME/.cache/cloudmount/file-manager.log
if [ "$FM" = dolphin ]; then
    # Icons of a theme Debian has without KDE's own.
    mkdir -p "$HOME/.config"
    printf '[Icons]\nTheme=Adwaita\n' >"$HOME/.config/kdeglobals"
    setsid dbus-run-session -- dolphin --new-window "$HOME/Cloud" >"$TMP/dolphin.log" 2>&1 &
    FM_PID=$!
    for _ in $(seq 120); do win=$(xdotool search --onlyvisible --class dolphin | head -1); [ -n "$win" ] && break; sleep 0.5; done
    W=760 H=540
    xdotool windowsize "$win" $W $H windowfocus --sync "$win"
    sleep 3
    # Notes.txt selected by typing its name; its context menu from the keyboard, and the
    # "Cloud drive" submenu (4th from the menu's end on Debian 12's Dolphin).
    xdotool mousemove 600 480 click 1
    xdotool type --delay 150 "Notes"
    sleep 1
    xdotool key Menu
    sleep 2
    for _ in 1 2 3 4; do xdotool key Up; sleep 0.3; done
    xdotool key Right
    sleep 4
    xwd -root -silent | convert xwd:- png:"$TMP/screen.png"
    # The menus may reach past the window: the picture is as wide and high as they need.
    convert "$TMP/screen.png" -trim +repage -strip png:"$OUT"
    echo "screenshot.sh: wrote $OUT"
    exit 0
fi
cat >"$TMP/session.sh" <<'EOF'
gsettings set org.gnome.nautilus.preferences default-folder-viewer 'list-view'
gsettings set org.gnome.nautilus.list-view default-visible-columns "['name', 'size', 'CloudmountFM::state', 'date_modified']"
gsettings set org.gnome.nautilus.list-view default-zoom-level 'small'
exec nautilus --new-window "$HOME/Cloud"
EOF
setsid dbus-run-session -- sh "$TMP/session.sh" >"$TMP/nautilus.log" 2>&1 &
FM_PID=$!
for _ in $(seq 300); do [ "$(cat "$log" 2>/dev/null | grep -c '"state"')" -ge 7 ] && break; sleep 0.5; done
win=$(xdotool search --onlyvisible --class nautilus | head -1)
W=1100 H=720
xdotool windowsize "$win" $W $H windowfocus --sync "$win"
sleep 2

# Right-click Budget.ods (the rows, by name: Archive 2025.zip, Budget.ods, Holiday video.mp4,
# Notes.txt, Photos, Projects, Report.pdf), and take the screen and the menu.
row=1
xdotool mousemove 540 $((107 + row * 26)) click 1
sleep 1
xdotool click 3
# The menu: a smaller window of its own, once it is open.
pop=""
for _ in $(seq 60); do
    for w in $(xdotool search --onlyvisible --name ''); do
        [ "$w" = "$win" ] && continue
        eval "$(xdotool getwindowgeometry --shell "$w")"
        [ "$WIDTH" -gt 100 ] && [ "$HEIGHT" -gt 100 ] && [ "$WIDTH" -lt 600 ] && pop="$w $X $Y" && break
    done
    [ -n "$pop" ] && break
    sleep 0.5
done
sleep 1
xwd -root -silent | convert xwd:- png:"$TMP/screen.png"
if [ -n "$pop" ]; then
    set -- $pop
    # xwd reads the menu's own window (the root's image leaves out its translucent surface).
    # Its margin (a shadow where a compositor runs) comes out black: cut it off.
    xwd -id "$1" -silent | convert xwd:- png:"$TMP/menu-full.png"
    box=$(convert "$TMP/menu-full.png" -fuzz 20% -format '%@' info:)
    bx=${box#*+}; by=${bx#*+}; bx=${bx%+*}
    mw=${box%%x*}; mh=${box#*x}; mh=${mh%%+*}
    # The rounded corners' black, from each corner in (the text stays as it is).
    convert "$TMP/menu-full.png" -crop "$box" +repage -alpha set -fill none -fuzz 20% \
        -draw "color 0,0 floodfill" -draw "color $((mw - 1)),0 floodfill" \
        -draw "color 0,$((mh - 1)) floodfill" -draw "color $((mw - 1)),$((mh - 1)) floodfill" \
        png:"$TMP/menu.png"
    convert "$TMP/screen.png" "$TMP/menu.png" -geometry +$(($2 + bx))+$(($3 + by)) -composite "$TMP/screen.png"
else
    echo "screenshot.sh: the context menu did not open; the picture has none" >&2
fi
convert "$TMP/screen.png" -crop ${W}x${H}+0+0 +repage -strip png:"$OUT"
echo "screenshot.sh: wrote $OUT"
