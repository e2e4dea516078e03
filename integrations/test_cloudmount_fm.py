"""Unit tests of cloudmount_fm, the logic of the file-manager extensions.

Run by tests/file_manager.rs (the test command), or by hand:
    /usr/bin/python3 -m unittest discover -s integrations -p 'test_*.py' -v
"""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cloudmount_fm as core  # noqa: E402


def sel(path, state, is_dir=False, in_mount=True):
    return core.Selected(path, is_dir, in_mount, state)


def no_sync_folder(_path):
    return False


class Emblems(unittest.TestCase):
    def test_every_state_has_a_label_and_known_emblem(self):
        for state in core.STATE_LABELS:
            self.assertTrue(core.label_for(state))
        self.assertEqual(core.emblem_for("pinned"), "emblem-default")
        self.assertEqual(core.emblem_for("pinning"), "emblem-synchronizing")
        self.assertEqual(core.emblem_for("uploading"), "emblem-synchronizing")
        self.assertEqual(core.emblem_for("dirty"), "emblem-synchronizing")
        self.assertEqual(core.emblem_for("error"), "emblem-important")
        self.assertEqual(core.emblem_for("conflict"), "emblem-important")
        self.assertEqual(core.emblem_for("cached"), "emblem-ok-symbolic")
        # Most files are online: no emblem on them, nor on unknown words or outside mounts.
        self.assertIsNone(core.emblem_for("online"))
        self.assertIsNone(core.emblem_for("partial"))
        self.assertIsNone(core.emblem_for("something-new"))
        self.assertIsNone(core.emblem_for(None))
        self.assertEqual(core.label_for(None), "")
        self.assertEqual(core.label_for("something-new"), "something-new")

    def test_emblems_are_stock_icons(self):
        themes = ["/usr/share/icons/Adwaita", "/usr/share/icons/hicolor"]
        names = set()
        for theme in themes:
            for _root, _dirs, files in os.walk(theme):
                names.update(os.path.splitext(f)[0] for f in files)
        names = {n[:-len(".symbolic")] if n.endswith(".symbolic") else n for n in names}
        for state, emblem in core.EMBLEMS.items():
            self.assertIn(emblem, names, "the emblem of %s is in no stock theme" % state)


class Menus(unittest.TestCase):
    def entries(self, *selection):
        return core.menu_entries(list(selection), is_sync_folder=no_sync_folder)

    def test_files_of_a_mount(self):
        self.assertEqual(self.entries(sel("/m/a", "online")), ["pin"])
        self.assertEqual(self.entries(sel("/m/a", "cached")), ["pin", "free"])
        self.assertEqual(self.entries(sel("/m/a", "partial")), ["pin", "free"])
        self.assertEqual(self.entries(sel("/m/a", "pinned")), ["unpin", "free"])
        self.assertEqual(self.entries(sel("/m/a", "pinning")), ["unpin", "free"])
        # Changes not uploaded yet are never dropped: nothing to free.
        self.assertEqual(self.entries(sel("/m/a", "dirty")), ["pin"])
        self.assertEqual(self.entries(sel("/m/a", "uploading")), ["pin"])

    def test_folders_of_a_mount_can_always_be_freed(self):
        self.assertEqual(self.entries(sel("/m/d", "online", is_dir=True)), ["pin", "free"])
        self.assertEqual(self.entries(sel("/m/d", "pinned", is_dir=True)), ["unpin", "free"])

    def test_several_files(self):
        self.assertEqual(self.entries(sel("/m/a", "pinned"), sel("/m/b", "online")),
                         ["pin", "unpin", "free"])
        self.assertEqual(self.entries(sel("/m/a", "pinned"), sel("/m/b", "pinning")),
                         ["unpin", "free"])
        self.assertEqual(self.entries(sel("/m/a", "online"), sel("/m/b", "dirty")), ["pin"])

    def test_a_file_whose_state_cannot_be_read_gets_nothing(self):
        self.assertEqual(self.entries(sel("/m/a", None)), [])

    def test_local_folders(self):
        self.assertEqual(self.entries(sel("/home/u/Music", None, True, False)), ["sync-add"])
        # Not a file, not two folders, not a folder that syncs already, not across both.
        self.assertEqual(self.entries(sel("/home/u/a.txt", None, False, False)), [])
        self.assertEqual(self.entries(sel("/home/u/A", None, True, False),
                                      sel("/home/u/B", None, True, False)), [])
        self.assertEqual(core.menu_entries([sel("/home/u/S", None, True, False)],
                                           is_sync_folder=lambda p: p == "/home/u/S"), [])
        self.assertEqual(self.entries(sel("/home/u/A", None, True, False),
                                      sel("/m/a", "online")), [])
        self.assertEqual(self.entries(), [])

    def test_a_real_sync_folder_is_recognised_by_its_marker(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertFalse(core.is_sync_folder(d))
            open(os.path.join(d, core.SYNC_MARKER), "w").close()
            self.assertTrue(core.is_sync_folder(d))

    def test_every_entry_has_a_label(self):
        for action in ("pin", "unpin", "free", "sync-add"):
            label, tip = core.ACTIONS[action]
            self.assertTrue(label and tip)
        self.assertEqual(core.ACTIONS["pin"][0], "Keep on this device")
        self.assertEqual(core.ACTIONS["free"][0], "Free up space")
        self.assertEqual(core.ACTIONS["sync-add"][0], "Add as sync folder")


class Mounts(unittest.TestCase):
    MOUNTINFO = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "36 22 0:30 / /home/alice/My\\040Cloud rw,nosuid,nodev shared:5 - fuse.cloudmount "
        "cloudmount:work rw,user_id=1000,group_id=1000\n"
        "37 22 0:31 / /mnt/old rw,nosuid master:3 - fuse cloudmount rw,user_id=0\n"
        "38 22 0:32 / /mnt/other rw - fuse.sshfs host:/ rw\n"
        "39 22 0:33 / /mnt/fuse rw - fuse something rw\n"
        "garbage line\n"
    )

    def test_parse(self):
        self.assertEqual(core.parse_mounts(self.MOUNTINFO),
                         ["/home/alice/My Cloud", "/mnt/old"])

    def test_mount_of(self):
        mounts = ["/home/a/Cloud", "/home/a/Cloud/inner", "/"]
        self.assertEqual(core.mount_of("/home/a/Cloud", mounts), "/home/a/Cloud")
        self.assertEqual(core.mount_of("/home/a/Cloud/x/y", mounts), "/home/a/Cloud")
        self.assertEqual(core.mount_of("/home/a/Cloud/inner/z", mounts), "/home/a/Cloud/inner")
        self.assertIsNone(core.mount_of("/home/a/Cloudy", mounts[:2]))
        self.assertEqual(core.mount_of("/etc", mounts), "/")

    def test_outside_a_mount_no_state_is_read(self):
        read = []
        saved = core.read_state
        core.read_state = lambda p: read.append(p) or "online"
        try:
            s = core.describe("/home/u/x", False, mounts=["/m"])
            self.assertEqual((s.in_mount, s.state), (False, None))
            s = core.describe("/m/x", False, mounts=["/m"])
            self.assertEqual((s.in_mount, s.state), (True, "online"))
        finally:
            core.read_state = saved
        self.assertEqual(read, ["/m/x"])

    def test_read_state_of_a_file_without_it(self):
        with tempfile.NamedTemporaryFile() as f:
            self.assertIsNone(core.read_state(f.name))
        self.assertIsNone(core.read_state("/nonexistent/x"))


class SocketPaths(unittest.TestCase):
    """Where the daemon of a mount listens (the same as instance::socket_path in Rust; checked
    against it by tests/file_manager.rs)."""

    def test_runtime_dir(self):
        self.assertEqual(core.runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}, 7),
                         "/run/user/7/cloudmount")
        self.assertEqual(core.runtime_dir({"XDG_RUNTIME_DIR": "rel"}, 7, isdir=lambda p: True),
                         "/run/user/7/cloudmount")
        self.assertEqual(core.runtime_dir({}, 7, isdir=lambda p: False), "/tmp/cloudmount-7")

    def test_sanitize_name(self):
        self.assertEqual(core.sanitize_name("/home/alice/My Cloud"), "home-alice-My-Cloud")
        self.assertEqual(core.sanitize_name("/"), "root")
        self.assertEqual(core.sanitize_name("/mnt/a.b_c@d/é-x"), "mnt-a.b_c@d-x")

    def test_socket_path(self):
        import hashlib
        mp = "/home/alice/Cloud"
        digest = hashlib.sha256(mp.encode()).hexdigest()[:12]
        self.assertEqual(core.socket_path("/run/user/1000/cloudmount", mp),
                         "/run/user/1000/cloudmount/home-alice-Cloud-%s.sock" % digest)
        # Too long for a socket address: the readable part is cut, the hash stays.
        long_mp = "/home/alice/" + "x" * 200
        p = core.socket_path("/run/user/1000/cloudmount", long_mp)
        self.assertEqual(len(p.encode()), core.SUN_PATH_MAX)
        self.assertTrue(p.endswith("-%s.sock" % hashlib.sha256(long_mp.encode()).hexdigest()[:12]))


class FakeDaemon:
    """Answers ask_daemon's requests from a table of folders; counts the requests."""

    def __init__(self, folders, fail=False):
        self.folders, self.fail, self.asked = folders, fail, []

    def __call__(self, sock, request):
        self.asked.append((sock, request))
        if self.fail:
            raise core.DaemonError("no daemon")
        if request["path"] not in self.folders:
            raise core.DaemonError("no such folder")
        return {"v": 1, "states": {"path": request["path"], "state": "online",
                                   "entries": self.folders[request["path"]]}}


class FolderStatesTests(unittest.TestCase):
    def setUp(self):
        self.clock = [0.0]
        self.read = []

    def states(self, daemon):
        def read(p):
            self.read.append(p)
            return "xattr-" + os.path.basename(p)
        return core.FolderStates(ask=daemon, read=read, clock=lambda: self.clock[0],
                                 runtime="/run/cm")

    def test_one_request_per_folder(self):
        daemon = FakeDaemon({"": {"a": "cached", "d": "online"},
                             "d": {"x": "pinned", "y": "dirty"}})
        fs = self.states(daemon)
        m = ["/m"]
        self.assertEqual(fs.state("/m/a", m), ("cached", "folder"))
        self.assertEqual(fs.state("/m/d", m), ("online", "folder"))
        self.assertEqual(fs.state("/m/d/x", m), ("pinned", "folder"))
        self.assertEqual(fs.state("/m/d/y", m), ("dirty", "folder"))
        self.assertEqual([r["path"] for _s, r in daemon.asked], ["", "d"])
        self.assertEqual(daemon.asked[0][0], core.socket_path("/run/cm", "/m"))
        self.assertEqual(daemon.asked[0][1]["request"], "states")
        self.assertEqual(self.read, [])
        # Asked again once the answer is old, or forgotten.
        self.clock[0] = core.FolderStates.TTL_S + 1
        fs.state("/m/a", m)
        fs.forget("/m/d/x")
        fs.state("/m/d/x", m)
        self.assertEqual([r["path"] for _s, r in daemon.asked], ["", "d", "", "d"])

    def test_what_the_daemon_does_not_know_is_read_from_the_file(self):
        fs = self.states(FakeDaemon({"": {"a": "cached"}}))
        self.assertEqual(fs.state("/m/new", ["/m"]), ("xattr-new", "xattr"))
        # The mount point itself: its folder is outside the mount.
        self.assertEqual(fs.state("/m", ["/m"]), ("xattr-m", "xattr"))
        self.assertEqual(fs.state("/elsewhere/a", ["/m"]), (None, None))
        self.assertEqual(self.read, ["/m/new", "/m"])

    def test_without_a_daemon_each_file_is_read_and_the_daemon_retried_later(self):
        daemon = FakeDaemon({"": {"a": "cached"}}, fail=True)
        fs = self.states(daemon)
        self.assertEqual(fs.state("/m/a", ["/m"]), ("xattr-a", "xattr"))
        self.assertEqual(fs.state("/m/b", ["/m"]), ("xattr-b", "xattr"))
        self.assertEqual(len(daemon.asked), 1)
        daemon.fail = False
        self.clock[0] = core.FolderStates.RETRY_S + 1
        self.assertEqual(fs.state("/m/a", ["/m"]), ("cached", "folder"))

    def test_a_real_socket(self):
        import socket
        import threading
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.sock")
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(path)
            srv.listen(4)
            answers = [b'{"v":1,"states":{"path":"","state":"online","entries":{"a":"pinned"}}}\n',
                       b'{"v":1,"error":{"message":"no such folder"}}\n',
                       b'{"error":"unknown request \\"states\\""}\n',
                       b"garbage\n",
                       None]  # never answers
            got = []

            def serve():
                for a in answers:
                    c, _ = srv.accept()
                    got.append(c.recv(1 << 16))
                    if a is None:
                        threading.Event().wait(2)
                    else:
                        c.sendall(a)
                    c.close()

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            ans = core.ask_daemon(path, {"request": "states", "path": ""})
            self.assertEqual(ans["states"]["entries"], {"a": "pinned"})
            self.assertEqual(json.loads(got[0]), {"v": 1, "request": "states", "path": ""})
            for needle in ("no such folder", "unknown request", "unreadable"):
                with self.assertRaises(core.DaemonError) as e:
                    core.ask_daemon(path, {"request": "states", "path": ""})
                self.assertIn(needle, str(e.exception))
            import time
            began = time.monotonic()
            with self.assertRaises(core.DaemonError):
                core.ask_daemon(path, {"request": "states", "path": ""}, timeout=0.3)
            self.assertLess(time.monotonic() - began, 1.5)
            srv.close()
            with self.assertRaises(core.DaemonError):
                core.ask_daemon(os.path.join(d, "none.sock"), {"request": "states"})


class Commands(unittest.TestCase):
    def test_one_command_a_path(self):
        self.assertEqual(core.commands("pin", ["/m/a", "/m/b"], "/bin/cm"),
                         [["/bin/cm", "pin", "/m/a"], ["/bin/cm", "pin", "/m/b"]])
        self.assertEqual(core.commands("free", ["/m/a"], "cm"), [["cm", "free", "/m/a"]])
        self.assertEqual(core.commands("unpin", ["/m/a"], "cm"), [["cm", "unpin", "/m/a"]])
        self.assertEqual(core.commands("sync-add", ["/h/M"], "cm"),
                         [["cm", "sync", "add", "/h/M"]])
        with self.assertRaises(ValueError):
            core.commands("rm", ["/m/a"], "cm")

    def test_binary(self):
        which = lambda name: "/usr/local/bin/" + name  # noqa: E731
        self.assertEqual(core.binary(which, configured="@CLOUDMOUNT_BIN@"),
                         "/usr/local/bin/cloudmount")
        self.assertEqual(core.binary(which, configured="/nonexistent/cloudmount"),
                         "/usr/local/bin/cloudmount")
        self.assertEqual(core.binary(which, configured=sys.executable), sys.executable)
        self.assertEqual(core.binary(lambda _n: None, configured=""), "cloudmount")

    def test_actions_are_started_not_waited_for(self):
        started = []
        with tempfile.TemporaryDirectory() as d:
            os.environ[core.LOG_ENV] = "1"
            os.environ["XDG_CACHE_HOME"] = d
            try:
                core.run_action("pin", ["/m/a"], "test", start=started.append)
                with open(core.log_path()) as f:
                    logged = [json.loads(line) for line in f]
            finally:
                del os.environ[core.LOG_ENV]
                del os.environ["XDG_CACHE_HOME"]
        self.assertEqual(len(started), 1)
        self.assertEqual(started[0][1:], ["pin", "/m/a"])
        self.assertEqual(logged[0]["event"], "run")
        self.assertEqual(logged[0]["argv"], started[0])

    def test_spawn_returns_at_once(self):
        import time
        t = time.monotonic()
        self.assertTrue(core.spawn(["sleep", "5"]))
        self.assertLess(time.monotonic() - t, 2)
        self.assertFalse(core.spawn(["/nonexistent/cloudmount"]))

    def test_no_log_without_the_variable(self):
        with tempfile.TemporaryDirectory() as d:
            os.environ.pop(core.LOG_ENV, None)
            os.environ["XDG_CACHE_HOME"] = d
            try:
                core.log("state", path="/m/a")
            finally:
                del os.environ["XDG_CACHE_HOME"]
            self.assertEqual(os.listdir(d), [])

    def test_log_path(self):
        self.assertEqual(core.log_path({"XDG_CACHE_HOME": "/c", "HOME": "/h"}),
                         "/c/cloudmount/file-manager.log")
        self.assertEqual(core.log_path({"XDG_CACHE_HOME": "rel", "HOME": "/h"}),
                         "/h/.cache/cloudmount/file-manager.log")


class DolphinEntryPoint(unittest.TestCase):
    """The service menu runs `python3 cloudmount_fm.py ACTION PATH...` on any selection."""

    def setUp(self):
        self.saved = (core.current_mounts, core.read_state, core.run_action)
        self.ran = []
        core.current_mounts = lambda: ["/m"]
        core.read_state = lambda p: {"/m/a": "cached", "/m/p": "pinned"}.get(p)
        core.run_action = lambda action, paths, fm: self.ran.append((action, paths, fm))

    def tearDown(self):
        core.current_mounts, core.read_state, core.run_action = self.saved

    def test_does_what_the_menu_would_offer(self):
        self.assertEqual(core.main(["pin", "/m/a"]), 0)
        self.assertEqual(core.main(["unpin", "/m/p"]), 0)
        self.assertEqual(self.ran, [("pin", ["/m/a"], "dolphin"),
                                    ("unpin", ["/m/p"], "dolphin")])

    def test_refuses_the_rest(self):
        self.assertEqual(core.main(["unpin", "/m/a"]), 1)  # not kept
        self.assertEqual(core.main(["pin", "/etc/hostname"]), 1)  # outside the mounts
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(core.main(["pin", d]), 1)
            self.assertEqual(core.main(["sync-add", d]), 0)
            self.assertEqual(self.ran, [("sync-add", [d], "dolphin")])
        self.assertEqual(core.main(["bogus", "/m/a"]), 2)
        self.assertEqual(core.main([]), 2)


class FakeItem:
    """What the extensions use of a file manager's file."""

    def __init__(self, path, is_dir=False, scheme="file"):
        self.path, self.dir, self.scheme = path, is_dir, scheme
        self.emblems, self.attributes, self.invalidated = [], {}, 0

    def get_uri_scheme(self):
        return self.scheme

    def get_location(self):
        return self

    def get_path(self):
        return self.path

    def is_directory(self):
        return self.dir

    def add_emblem(self, e):
        self.emblems.append(e)

    def add_string_attribute(self, k, v):
        self.attributes[k] = v

    def invalidate_extension_info(self):
        self.invalidated += 1


class FakeMenuItem:
    def __init__(self, name, label, tip):
        self.name, self.label, self.tip, self.handlers = name, label, tip, []

    def connect(self, signal, callback, *data):
        self.handlers.append((signal, callback, data))


class FakeFM:
    MenuItem = FakeMenuItem


class Glue(unittest.TestCase):
    def setUp(self):
        self.saved = (core.current_mounts, core.read_state)
        core.current_mounts = lambda: ["/m"]
        self.states = {"/m/a": "cached", "/m/b": "online", "/m/d": "pinning"}
        core.read_state = lambda p: self.states.get(p)

    def tearDown(self):
        core.current_mounts, core.read_state = self.saved

    def test_update_info(self):
        a = FakeItem("/m/a")
        core.update_info(a, "test")
        self.assertEqual(a.emblems, ["emblem-ok-symbolic"])
        self.assertEqual(a.attributes, {"cloudmount_state": "On this device"})
        b = FakeItem("/m/b")
        core.update_info(b, "test")
        self.assertEqual(b.emblems, [])
        self.assertEqual(b.attributes, {"cloudmount_state": "Online only"})
        out = FakeItem("/home/x")
        core.update_info(out, "test")
        self.assertEqual((out.emblems, out.attributes), ([], {}))
        trash = FakeItem(None, scheme="trash")
        core.update_info(trash, "test")
        self.assertEqual(trash.attributes, {})

    def test_menu_items(self):
        items = core.menu_items(FakeFM, "test", [FakeItem("/m/a"), FakeItem("/m/b")])
        self.assertEqual([i.name for i in items], ["CloudmountFM::pin", "CloudmountFM::free"])
        self.assertEqual([i.label for i in items], ["Keep on this device", "Free up space"])
        self.assertEqual(items[0].handlers[0][0], "activate")
        self.assertEqual(items[0].handlers[0][2][:2], ("pin", ["/m/a", "/m/b"]))
        self.assertEqual(core.menu_items(FakeFM, "test", [FakeItem(None, scheme="trash")]), [])

    def test_refresher_tells_the_file_manager_when_a_state_changed(self):
        clock = [0.0]
        r = core.Refresher(read=lambda p: self.states.get(p), clock=lambda: clock[0])
        r.timer = "running"  # no main loop here
        d, a = FakeItem("/m/d", True), FakeItem("/m/a")
        r.watch("/m/d", d, "pinning")
        r.watch("/m/a", a, "cached")  # not transitional: not watched
        self.assertEqual(list(r.watched), ["/m/d"])
        self.assertEqual(r.changed(), [])
        self.states["/m/d"] = "pinned"
        self.assertEqual(r.changed(), [d])
        self.assertEqual(r.watched, {})
        # After an action, watched for a while even in a lasting state.
        r.watch_after_action("/m/a", a)
        clock[0] = 30
        self.assertEqual(r.changed(), [])
        clock[0] = 61
        self.assertEqual(r.changed(), [])
        self.assertEqual(r.watched, {})
        self.assertFalse(r.tick())


if __name__ == "__main__":
    unittest.main()
