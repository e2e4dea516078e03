# Installed by `cloudmount integrate`; `cloudmount integrate --remove` removes it.
"""cloudmount in the file manager: the logic shared by the Nautilus, Nemo and Caja extensions
and the Dolphin service menu.

Plain functions, free of any file manager's bindings, so that unit tests can call them
(integrations/test_cloudmount_fm.py). The extensions pass their binding module (``Nautilus``,
``Nemo`` or ``Caja``) where menu items are built.

Where the answers come from: the states of a folder's files are asked of the mount's daemon
in one request on its control socket (``{"v":1,"request":"states","path":...}``), once per
folder shown and kept for a few seconds (FolderStates); the daemon answers from what it knows
locally, never the network. When the daemon cannot be reached (an older version, or it is
gone), or does not know a file, the file's ``user.cloudmount.state`` extended attribute is read
instead (also answered locally). Files outside a cloudmount mount are never asked (no extended
attribute read on a slow network filesystem). Actions run the ``cloudmount`` command in the
background and are never waited for.

Setting ``CLOUDMOUNT_FM_LOG`` in the file manager's environment logs what the extension
answered, one JSON object a line, to ``$XDG_CACHE_HOME/cloudmount/file-manager.log``.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

STATE_XATTR = "user.cloudmount.state"
FS_TYPE = "fuse.cloudmount"
FS_NAME = "cloudmount"
SYNC_MARKER = ".cloudmount-sync"
LOG_ENV = "CLOUDMOUNT_FM_LOG"
# The binary that installed this file (`cloudmount integrate` writes it here); `cloudmount` on
# PATH when it is gone.
CLOUDMOUNT_BIN = "@CLOUDMOUNT_BIN@"

# Every word the drive answers, and how a person reads it (the "Cloud state" column).
STATE_LABELS = {
    "online": "Online only",
    "partial": "Partly on this device",
    "cached": "On this device",
    "pinned": "Always on this device",
    "pinning": "Downloading to keep on this device",
    "dirty": "Changed, waiting to upload",
    "uploading": "Uploading",
    "error": "Upload failed, retrying",
    "conflict": "Conflict copy",
}

# Stock emblems of the Adwaita and hicolor themes. Online and partly cached files get none:
# most files of a drive are online, and an emblem on each would say nothing.
EMBLEMS = {
    "cached": "emblem-ok-symbolic",
    "pinned": "emblem-default",
    "pinning": "emblem-synchronizing",
    "dirty": "emblem-synchronizing",
    "uploading": "emblem-synchronizing",
    "error": "emblem-important",
    "conflict": "emblem-important",
}

# States that change by themselves: a file shown in one is read again every few seconds.
TRANSITIONAL = ("pinning", "dirty", "uploading", "error")

PINNED = ("pinned", "pinning")
# What "Free up space" can drop: cached contents. Changes not yet uploaded are never dropped.
FREEABLE = ("partial", "cached", "pinned", "pinning")

# The menu: action -> (label, tip).
ACTIONS = {
    "pin": (
        "Keep on this device",
        "Download it and keep it here, also offline; files added later are kept too",
    ),
    "unpin": (
        "Don't keep on this device",
        "Stop keeping it here; it stays cached until the space is needed",
    ),
    "free": (
        "Free up space",
        "Drop the downloaded copies (never unsaved changes); it stays online",
    ),
    "sync-add": (
        "Add as sync folder",
        "Keep this folder mirrored with a folder of the same name in the cloud",
    ),
}


def emblem_for(state):
    """The emblem of a state, or None."""
    return EMBLEMS.get(state)


def label_for(state):
    """What the "Cloud state" column says for a state ("" outside the mounts)."""
    if state is None:
        return ""
    return STATE_LABELS.get(state, state)


# ---------------------------------------------------------------------------------------------
# Mounts


def _unescape(field):
    """Undoes the octal escapes (\\040 for a space) of /proc/self/mountinfo."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        chunk = raw[i + 1:i + 4]
        if raw[i:i + 1] == b"\\" and len(chunk) == 3 and all(48 <= c <= 55 for c in chunk):
            out.append(int(chunk, 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def parse_mounts(mountinfo):
    """The mount points of cloudmount mounts in the text of /proc/self/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        fstype, source = fields[sep + 1], _unescape(fields[sep + 2])
        ours = fstype == FS_TYPE or (
            fstype == "fuse" and (source == FS_NAME or source.startswith(FS_NAME + ":"))
        )
        if ours:
            found.append(_unescape(fields[4]))
    return found


_mounts_cache = {"at": -1e9, "mounts": []}
MOUNTS_TTL = 2.0


def current_mounts():
    """The cloudmount mounts now (read again at most every MOUNTS_TTL seconds)."""
    now = time.monotonic()
    if now - _mounts_cache["at"] >= MOUNTS_TTL:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                _mounts_cache["mounts"] = parse_mounts(f.read())
        except OSError:
            _mounts_cache["mounts"] = []
        _mounts_cache["at"] = now
    return _mounts_cache["mounts"]


def mount_of(path, mounts):
    """The mount point (of `mounts`) that holds `path`, the deepest one, or None."""
    best = None
    for m in mounts:
        if path == m or path.startswith(m.rstrip("/") + "/"):
            if best is None or len(m) > len(best):
                best = m
    return best


def read_state(path):
    """The state word of a file of a mount, or None when it has none (or cannot be read)."""
    try:
        value = os.getxattr(path, STATE_XATTR, follow_symlinks=False)
    except OSError:
        return None
    word = value.decode("utf-8", "replace").strip()
    return word or None


# ---------------------------------------------------------------------------------------------
# The states of a whole folder, from the mount's daemon


def runtime_dir(environ=None, uid=None, isdir=os.path.isdir):
    """The daemons' runtime directory, as `cloudmount` finds it (config::Dirs): under
    $XDG_RUNTIME_DIR, else /run/user/UID, else /tmp/cloudmount-UID."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    xdg = env.get("XDG_RUNTIME_DIR") or ""
    if os.path.isabs(xdg):
        return os.path.join(xdg, "cloudmount")
    run_user = "/run/user/%d" % uid
    if isdir(run_user):
        return os.path.join(run_user, "cloudmount")
    return "/tmp/cloudmount-%d" % uid


def sanitize_name(s):
    """A name made of ASCII letters, digits, `.`, `_` and `@`, a `-` for each run of other
    characters (config::sanitize_name)."""
    out = []
    for c in s:
        if (c.isascii() and c.isalnum()) or c in "._@":
            out.append(c)
        elif not out or out[-1] != "-":
            out.append("-")
    name = "".join(out).strip("-.")
    return name or "root"


SUN_PATH_MAX = 107


def socket_path(runtime, mountpoint):
    """The control socket of the daemon of the mount at `mountpoint` (instance::socket_path)."""
    digest = hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:12]
    readable = sanitize_name(mountpoint)[:100]
    full = os.path.join(runtime, "%s-%s.sock" % (readable, digest))
    over = len(os.fsencode(full)) - SUN_PATH_MAX
    if over <= 0:
        return full
    readable = readable[:max(0, len(readable) - over)].rstrip("-")
    if not readable:
        return os.path.join(runtime, digest + ".sock")
    return os.path.join(runtime, "%s-%s.sock" % (readable, digest))


class DaemonError(Exception):
    """The daemon could not be asked, or refused."""


DAEMON_TIMEOUT_S = 1.0


def ask_daemon(sock_path, request, timeout=DAEMON_TIMEOUT_S):
    """Sends one request (a dict, without "v") and returns the answer's object; DaemonError
    when the daemon is not there, too slow, or refuses."""
    line = json.dumps(dict(request, v=1)).encode("utf-8") + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(line)
            chunks = []
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
    except OSError as e:  # not there, refused, timed out
        raise DaemonError(str(e)) from e
    try:
        answer = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError as e:
        raise DaemonError("unreadable answer: %s" % e) from e
    if not isinstance(answer, dict):
        raise DaemonError("unreadable answer")
    error = answer.get("error")
    if error is not None:
        raise DaemonError(error.get("message", str(error)) if isinstance(error, dict) else str(error))
    return answer


class FolderStates:
    """The states of the files of the folders shown, asked of each mount's daemon one folder
    at a time and kept for TTL_S seconds. A mount whose daemon cannot be asked is not asked
    again for RETRY_S seconds; its files' states are read one by one meanwhile (read_state)."""

    TTL_S = 3.0
    RETRY_S = 10.0
    MAX_FOLDERS = 64

    def __init__(self, ask=ask_daemon, read=None, clock=time.monotonic, runtime=None):
        self.ask = ask
        self.read = read
        self.clock = clock
        self.runtime = runtime
        self.folders = {}  # folder -> (clock time, {name: state})
        self.down = {}  # mount point -> clock time of the failure

    def forget(self, path=None):
        """Drops what is known of the folder holding `path` (all folders without it)."""
        if path is None:
            self.folders.clear()
        else:
            self.folders.pop(os.path.dirname(path), None)
            self.folders.pop(path, None)

    def _entries(self, mount, folder):
        now = self.clock()
        known = self.folders.get(folder)
        if known is not None and now - known[0] < self.TTL_S:
            return known[1]
        failed = self.down.get(mount)
        if failed is not None and now - failed < self.RETRY_S:
            return None
        rel = os.path.relpath(folder, mount)
        rel = "" if rel == "." else rel
        runtime = self.runtime if self.runtime is not None else runtime_dir()
        try:
            answer = self.ask(socket_path(runtime, mount), {"request": "states", "path": rel})
            entries = answer["states"]["entries"]
            if not isinstance(entries, dict):
                raise DaemonError("unreadable answer")
        except (DaemonError, KeyError, TypeError) as e:
            log("daemon-unreachable", mount=mount, folder=folder, error=str(e))
            self.down[mount] = now
            return None
        self.down.pop(mount, None)
        if len(self.folders) >= self.MAX_FOLDERS:
            self.folders.clear()
        self.folders[folder] = (now, entries)
        return entries

    def state(self, path, mounts=None):
        """(state, how): the state word of a file of a mount, or None; how it was found:
        "folder" (the daemon's answer for its folder), "xattr" (its extended attribute), or
        None outside the mounts."""
        mount = mount_of(path, current_mounts() if mounts is None else mounts)
        if mount is None:
            return None, None
        folder, name = os.path.split(path)
        if path != mount and name:
            entries = self._entries(mount, folder)
            if entries is not None and name in entries:
                return entries[name], "folder"
        read = self.read or read_state
        return read(path), "xattr"


folder_states = FolderStates()


class Selected:
    """One selected file: its local path, whether it is a folder, whether it is inside a
    cloudmount mount, and its state there."""

    __slots__ = ("path", "is_dir", "in_mount", "state")

    def __init__(self, path, is_dir, in_mount, state):
        self.path = path
        self.is_dir = is_dir
        self.in_mount = in_mount
        self.state = state

    def __repr__(self):
        return "Selected(%r, is_dir=%r, in_mount=%r, state=%r)" % (
            self.path, self.is_dir, self.in_mount, self.state)


def describe(path, is_dir, mounts=None):
    """A Selected for `path`: its state is read only inside a mount."""
    if mounts is None:
        mounts = current_mounts()
    in_mount = mount_of(path, mounts) is not None
    return Selected(path, is_dir, in_mount, read_state(path) if in_mount else None)


def is_sync_folder(path):
    return os.path.exists(os.path.join(path, SYNC_MARKER))


def menu_entries(selection, is_sync_folder=is_sync_folder):
    """The actions the menu offers for a selection of Selected: a list of action names (keys of
    ACTIONS), in menu order.

    Inside the mounts: keep on this device (unless all are kept already), don't keep (when
    some are kept), free up space (when something could be freed: a folder, or a file with
    downloaded contents). One local folder outside the mounts that is not a sync folder yet:
    add as sync folder. Nothing for a selection across both, or elsewhere.
    """
    if not selection:
        return []
    if all(s.in_mount for s in selection):
        known = [s for s in selection if s.state is not None]
        if not known:
            return []
        entries = []
        if any(s.state not in PINNED for s in known):
            entries.append("pin")
        if any(s.state in PINNED for s in known):
            entries.append("unpin")
        if any(s.is_dir or s.state in FREEABLE for s in known):
            entries.append("free")
        return entries
    if any(s.in_mount for s in selection):
        return []
    if len(selection) == 1 and selection[0].is_dir and not is_sync_folder(selection[0].path):
        return ["sync-add"]
    return []


# ---------------------------------------------------------------------------------------------
# Running the command


def binary(which=shutil.which, configured=None):
    """The cloudmount binary: the one that installed the extension, else the one on PATH."""
    path = CLOUDMOUNT_BIN if configured is None else configured
    if path and not path.startswith("@") and os.access(path, os.X_OK):
        return path
    return which("cloudmount") or "cloudmount"


def commands(action, paths, bin_path):
    """The command lines of an action on paths: one command a path."""
    if action == "sync-add":
        return [[bin_path, "sync", "add", p] for p in paths]
    if action in ("pin", "unpin", "free"):
        return [[bin_path, action, p] for p in paths]
    raise ValueError("unknown action %r" % (action,))


def spawn(argv):
    """Starts a command in the background, never waiting for it (its own session, no
    terminal). Returns whether it could be started."""
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        return True
    except OSError as e:
        log("spawn-failed", argv=argv, error=str(e))
        return False


def run_action(action, paths, fm, start=spawn):
    for argv in commands(action, paths, binary()):
        log("run", fm=fm, action=action, argv=argv)
        start(argv)
    for p in paths:
        folder_states.forget(p)


# ---------------------------------------------------------------------------------------------
# The log of answers (tests, and finding out what an extension did)


def log_path(environ=None):
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(cache):
        cache = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "cloudmount", "file-manager.log")


def log(event, **fields):
    if not os.environ.get(LOG_ENV):
        return
    fields["event"] = event
    fields["time"] = round(time.time(), 3)
    try:
        path = log_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(fields, sort_keys=True) + "\n")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Glue the three python extensions share (they pass their file manager's module as `fm_module`)


def path_of(item):
    """The local path of a file manager's file, or None (trash://, network places...)."""
    try:
        if item.get_uri_scheme() != "file":
            return None
        return item.get_location().get_path()
    except Exception:  # a file manager's object without these: not a local file
        return None


def selection_of(items, mounts=None):
    selected = []
    for item in items:
        path = path_of(item)
        if path is None:
            return None
        selected.append(describe(path, item.is_directory(), mounts))
    return selected


def menu_items(fm_module, fm, items, refresher=None):
    """The menu items of a file manager for its selected files."""
    selected = selection_of(items)
    if not selected:
        return []
    entries = menu_entries(selected)
    paths = [s.path for s in selected]
    log("menu", fm=fm, paths=paths, states=[s.state for s in selected], items=entries)
    built = []
    for action in entries:
        label, tip = ACTIONS[action]
        item = fm_module.MenuItem(name="CloudmountFM::" + action, label=label, tip=tip)
        item.connect("activate", _activate, action, paths, fm, items, refresher)
        built.append(item)
    return built


def _activate(_menu_item, action, paths, fm, items, refresher):
    run_action(action, paths, fm)
    if refresher is not None:
        for item, path in zip(items, paths):
            refresher.watch_after_action(path, item)


def update_info(item, fm, refresher=None):
    """What an InfoProvider tells about one file: its emblem and "Cloud state" column."""
    path = path_of(item)
    if path is None or mount_of(path, current_mounts()) is None:
        return
    state, how = folder_states.state(path)
    emblem = emblem_for(state)
    log("state", fm=fm, path=path, state=state, emblem=emblem, via=how)
    if emblem:
        item.add_emblem(emblem)
    item.add_string_attribute("cloudmount_state", label_for(state))
    if refresher is not None:
        refresher.watch(path, item, state)


def column(fm_module):
    return fm_module.Column(name="CloudmountFM::state", attribute="cloudmount_state",
                            label="Cloud state",
                            description="Whether the file is online, on this device or "
                                        "being synced (cloudmount)")


class Refresher:
    """Reads again, every few seconds, the state of files shown in a state that changes by
    itself (pinning, uploading...) or just acted on, and asks the file manager to ask again
    (invalidate_extension_info) when it changed. Runs on the file manager's main loop."""

    INTERVAL_S = 2
    AFTER_ACTION_S = 60
    MAX_WATCHED = 2000

    def __init__(self, read=None, clock=time.monotonic):
        # By default through the folders' answers, asked again at each tick.
        self.read = read or (lambda p: folder_states.state(p)[0])
        self.clock = clock
        self.watched = {}  # path -> (item, state last told, until: clock time or None)
        self.timer = None

    def watch(self, path, item, state):
        if state in TRANSITIONAL:
            self._add(path, item, state, None)
        else:
            self.watched.pop(path, None)

    def watch_after_action(self, path, item):
        state = self.read(path)
        self._add(path, item, state, self.clock() + self.AFTER_ACTION_S)

    def _add(self, path, item, state, until):
        if path not in self.watched and len(self.watched) >= self.MAX_WATCHED:
            return
        self.watched[path] = (item, state, until)
        if self.timer is None:
            from gi.repository import GLib  # only inside a file manager
            self.timer = GLib.timeout_add_seconds(self.INTERVAL_S, self.tick)

    def changed(self):
        """The watched files whose state changed, dropped from the watch (told ones are
        watched again by update_info when still transitional); expired watches dropped."""
        now = self.clock()
        out = []
        for path, (item, state, until) in list(self.watched.items()):
            if self.read(path) != state:
                del self.watched[path]
                out.append(item)
            elif until is not None and now > until:
                del self.watched[path]
        return out

    def tick(self):
        folder_states.forget()
        for item in self.changed():
            item.invalidate_extension_info()
        if not self.watched:
            self.timer = None
            return False
        return True


# ---------------------------------------------------------------------------------------------
# The Dolphin service menu runs this file: python3 cloudmount_fm.py ACTION PATH...


def main(argv):
    if len(argv) < 2 or argv[0] not in ACTIONS:
        sys.stderr.write("usage: cloudmount_fm.py {%s} PATH...\n" % ",".join(ACTIONS))
        return 2
    action, paths = argv[0], [os.path.abspath(p) for p in argv[1:]]
    mounts = current_mounts()
    selected = [describe(p, os.path.isdir(p), mounts) for p in paths]
    # The service menu shows every action on every file: do only what the menu of the
    # other file managers would have offered for this selection.
    if action not in menu_entries(selected):
        log("refused", fm="dolphin", action=action, paths=paths)
        return 1
    run_action(action, paths, "dolphin")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
