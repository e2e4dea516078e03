//! The drive in the file manager (`cloudmount integrate`): the extensions' logic, and a real
//! Nautilus under Xvfb showing a real mount, both run as the normal test user.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudmount::integrate::file_uri;
use common::desktop::{
    file_manager, fm_log, getfattr_state, nautilus, user_command, wait_for, Display, Session,
    UserMount,
};
use common::mount::{run, Server};
use common::sync::{read_as_user, text, user_bin, SyncHome};

fn integrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations")
}

/// The unit tests of the python core the extensions share (integrations/test_cloudmount_fm.py),
/// with Debian's python (the one with the file managers' bindings).
#[test]
fn python_core_unit_tests() {
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(integrations())
        .args(["-p", "test_*.py"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("CLOUDMOUNT_FM_LOG")
        .output()
        .expect("run /usr/bin/python3");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python unit tests failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
    assert!(!report.contains("Ran 0 tests"), "{report}");
}

/// Runs `sh -c SCRIPT sh ARGS…` as the user; asserts it succeeds.
fn user_sh(home: &Path, script: &str, args: &[&Path]) -> String {
    let mut cmd = user_command(home, "sh");
    cmd.args(["-c", script, "sh"]).args(args);
    let out = run(cmd, script);
    assert!(out.status.success(), "{script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mount of the embedded server by the test user, with a file in each state a mount can
/// show without pins (online, cached, dirty), and `cloudmount integrate` run.
struct Drive {
    // Dropped in this order: the mount before the home and the server.
    _mount: UserMount,
    home: SyncHome,
    _server: common::EmbeddedServer,
    mp: PathBuf,
    /// Path → the state getfattr gave.
    expected: BTreeMap<String, &'static str>,
    /// The Nautilus extension file.
    ext: PathBuf,
    bookmarks: PathBuf,
}

impl Drive {
    fn h(&self) -> &Path {
        self.home.path()
    }
}

fn drive() -> Drive {
    let server = common::embedded_server(None);
    let served = server.dir.path();
    std::fs::create_dir(served.join("Projects")).unwrap();
    std::fs::write(served.join("Projects/plan.txt"), b"plan").unwrap();
    std::fs::write(served.join("read.txt"), b"read through the mount").unwrap();
    std::fs::write(served.join("online.txt"), b"never read").unwrap();
    std::fs::write(served.join("keep.txt"), b"kept on this device").unwrap();
    std::fs::create_dir(served.join("Kept")).unwrap();
    std::fs::write(served.join("Kept/a.txt"), b"a").unwrap();
    std::fs::write(served.join("Kept/b.txt"), b"bb").unwrap();
    let srv = Server::embedded(&server);
    let home = SyncHome::new(&srv, &srv.url);
    let h = home.path().to_path_buf();
    let mp = h.join("Cloud");
    // A long write-back delay keeps a written file waiting for its upload (dirty).
    let mount = UserMount::new(&home, &srv, &mp, &["--write-back-delay", "10m"]);
    assert_eq!(
        read_as_user(&mp.join("read.txt")),
        b"read through the mount"
    );
    user_sh(&h, "printf new > \"$1\"", &[&mp.join("new.txt")]);
    home.ok(&[
        "pin",
        "--wait",
        mp.join("keep.txt").to_str().unwrap(),
        mp.join("Kept").to_str().unwrap(),
    ]);

    // The states the drive answers, as any program sees them.
    let mut expected = BTreeMap::new();
    for (name, state) in [
        ("Projects", "online"),
        ("read.txt", "cached"),
        ("online.txt", "online"),
        ("new.txt", "dirty"),
        ("keep.txt", "pinned"),
        ("Kept", "pinned"),
    ] {
        let p = mp.join(name);
        assert_eq!(getfattr_state(&h, &p).as_deref(), Some(state), "{name}");
        expected.insert(p.to_str().unwrap().to_string(), state);
    }

    // cloudmount integrate, as the user.
    let out = home.ok(&["integrate"]);
    let ext = h.join(".local/share/nautilus-python/extensions/cloudmount-nautilus.py");
    assert!(
        out.contains(&format!("installed {}", ext.display())),
        "{out}"
    );
    let bookmarks = h.join(".config/gtk-3.0/bookmarks");
    assert!(
        out.contains(&format!(
            "bookmarked {} in {}",
            mp.display(),
            bookmarks.display()
        )),
        "{out}"
    );
    assert!(out.contains("nautilus -q"), "{out}");
    let marks = std::fs::read_to_string(&bookmarks).unwrap();
    assert!(
        marks.contains(&format!("{} Cloud\n", file_uri(&mp))),
        "{marks}"
    );
    let places = std::fs::read_to_string(h.join(".local/share/user-places.xbel")).unwrap();
    assert!(
        places.contains(&format!("<bookmark href=\"{}\">", file_uri(&mp))),
        "{places}"
    );
    // Each python extension loads with its file manager's real bindings.
    for (fm, module) in [("nautilus", "Nautilus"), ("nemo", "Nemo"), ("caja", "Caja")] {
        let file = h.join(format!(
            ".local/share/{fm}-python/extensions/cloudmount-{fm}.py"
        ));
        let check = format!(
            "import importlib.util\n\
             spec = importlib.util.spec_from_file_location('cloudmount_{fm}', {:?})\n\
             m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n\
             from gi.repository import {module}\n\
             assert issubclass(m.CloudmountMenu, {module}.MenuProvider)\n\
             assert issubclass(m.CloudmountInfo, {module}.InfoProvider)\nprint('loaded')",
            file.to_str().unwrap()
        );
        let mut cmd = user_command(&h, "/usr/bin/python3");
        cmd.args(["-c", &check]).env("PYTHONDONTWRITEBYTECODE", "1");
        let out = run(cmd, "python3");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("loaded"),
            "the {fm} extension does not load: {}",
            text(&out)
        );
    }

    Drive {
        _mount: mount,
        home,
        _server: server,
        mp,
        expected,
        ext,
        bookmarks,
    }
}

/// Waits until `fm` has asked the extension for the state of every file of `d.expected`, and
/// checks the answers against getfattr on the same files.
fn check_states(d: &Drive, fm: &str, session: &Session) {
    let h = d.h();
    let context = || {
        format!(
            "extension log: {:#?}\n{fm}:\n{}",
            fm_log(h),
            session.output()
        )
    };
    type Told = (Option<String>, Option<String>, Option<String>);
    let told: BTreeMap<String, Told> = wait_for(
        180,
        &format!("{fm} asking the extension for the state of every file shown"),
        context,
        || {
            let mut told = BTreeMap::new();
            for e in fm_log(h)
                .iter()
                .filter(|e| e["event"] == "state" && e["fm"] == fm)
            {
                let path = e["path"].as_str().unwrap_or_default().to_string();
                let s = |k: &str| e[k].as_str().map(str::to_string);
                told.insert(path, (s("state"), s("emblem"), s("via")));
            }
            d.expected
                .keys()
                .all(|p| told.contains_key(p))
                .then_some(told)
        },
    );
    for (path, state) in &d.expected {
        let (answered, emblem, via) = &told[path];
        // Answered from the daemon's one answer for the folder, not file by file.
        assert_eq!(via.as_deref(), Some("folder"), "{fm}: how {path} was asked");
        // What the extension answered is what getfattr says of the same file.
        assert_eq!(
            answered.as_deref(),
            getfattr_state(h, Path::new(path)).as_deref(),
            "{fm}: {path}"
        );
        assert_eq!(answered.as_deref(), Some(*state), "{fm}: {path}");
        let want = match *state {
            "cached" => Some("emblem-ok-symbolic"),
            "dirty" => Some("emblem-synchronizing"),
            "pinned" => Some("emblem-default"),
            _ => None,
        };
        assert_eq!(emblem.as_deref(), want, "{fm}: the emblem of {path}");
    }
    let mp = d.mp.to_str().unwrap();
    let outside: Vec<_> = fm_log(h)
        .into_iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| !p.starts_with(mp)))
        .collect();
    assert!(
        outside.is_empty(),
        "{fm}: the extension answered for files outside the mount: {outside:#?}"
    );
}

#[test]
fn nautilus_shows_the_states_and_menu_of_a_real_mount() {
    let d = drive();
    let (h, mp) = (d.h(), &d.mp);
    // A real Nautilus shows the mount.
    let display = Display::start();
    let fm = nautilus(h, &display, mp);
    check_states(&d, "nautilus", &fm);
    let context = || {
        format!(
            "extension log: {:#?}\nnautilus:\n{}",
            fm_log(h),
            fm.output()
        )
    };

    // Select read.txt (typing its name finds it) and open its context menu: Nautilus asks
    // the extension for the items of the selection.
    let win = display.window("nautilus", 60);
    display.xdotool(&["windowsize", &win, "1000", "640"]);
    display.xdotool(&["windowfocus", "--sync", &win]);
    display.xdotool(&["type", "--delay", "150", "read.t"]);
    let read = mp.join("read.txt");
    let menu = wait_for(60, "the menu of read.txt", context, || {
        fm_log(h)
            .into_iter()
            .find(|e| e["event"] == "menu" && e["paths"] == serde_json::json!([read]))
    });
    assert_eq!(menu["items"], serde_json::json!(["pin", "free"]), "{menu}");
    assert_eq!(menu["states"], serde_json::json!(["cached"]), "{menu}");
    // The search result's row, right-clicked: the menu ends with our entries, then
    // Properties; going up three from the end reaches "Keep on this device". Keys go to the
    // menu once it is open (a busy machine takes a while): tried up to three times.
    let mut ran = None;
    for _attempt in 0..3 {
        display.xdotool(&["mousemove", "330", "120", "click", "3"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while display.popup(&win).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
        }
        std::thread::sleep(Duration::from_millis(500));
        if display.popup(&win).is_some() {
            for _ in 0..3 {
                display.xdotool(&["key", "Up"]);
                std::thread::sleep(Duration::from_millis(400));
            }
            display.xdotool(&["key", "Return"]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while ran.is_none() && Instant::now() < deadline {
                ran = fm_log(h).into_iter().find(|e| e["event"] == "run");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        if ran.is_some() {
            break;
        }
        // Close the menu (only the menu: Escape in the view would end the search).
        if display.popup(&win).is_some() {
            display.xdotool(&["key", "Escape"]);
        }
    }
    let ran = ran.unwrap_or_else(|| panic!("Keep on this device did not run\n{}", context()));
    assert_eq!(
        ran["argv"],
        serde_json::json!([user_bin(), "pin", read]),
        "{ran}"
    );
    drop(fm);

    // --remove takes it all away again.
    let out = d.home.ok(&["integrate", "--remove"]);
    assert!(
        out.contains(&format!("removed {}", d.ext.display())),
        "{out}"
    );
    assert!(!d.ext.exists());
    assert!(!h.join(".local/share/cloudmount/file-manager").exists());
    let marks = std::fs::read_to_string(&d.bookmarks).unwrap();
    assert!(!marks.contains(&file_uri(mp)), "{marks}");
}

/// Nemo and Caja load their extensions from the same install and show the same states.
#[test]
fn nemo_and_caja_show_the_states_of_a_real_mount() {
    let d = drive();
    for (fm, argv) in [
        ("nemo", ["nemo", "--no-desktop"]),
        ("caja", ["caja", "--no-desktop"]),
    ] {
        let display = Display::start();
        let session = file_manager(d.h(), &display, &argv, &d.mp);
        check_states(&d, fm, &session);
    }
}

/// The python core finds a daemon's control socket where the daemon listens
/// (`instance::socket_path`), also for mount points too long for a socket address as they are.
#[test]
fn python_core_finds_the_daemons_socket() {
    let runtime = Path::new("/run/user/1000/cloudmount");
    let long = format!("/home/alice/{}", "deep folder/".repeat(12));
    let mounts = [
        "/home/alice/Cloud",
        "/home/alice/My Cloud (work)",
        "/mnt/été/drive",
        "/",
        long.as_str(),
    ];
    let script =
        "import json, sys\nsys.path.insert(0, sys.argv[1])\nimport cloudmount_fm as core\n\
                  print(json.dumps([core.socket_path(sys.argv[2], m) for m in sys.argv[3:]]))";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(integrations())
        .arg(runtime)
        .args(mounts)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run /usr/bin/python3");
    assert!(out.status.success(), "{}", text(&out));
    let got: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for (m, got) in mounts.iter().zip(got) {
        let want = cloudmount::instance::socket_path(runtime, Path::new(m));
        assert_eq!(Path::new(&got), want, "{m}");
    }
}

/// `cloudmount state DIR` (one request to the daemon for the whole folder) answers for each
/// entry what its `user.cloudmount.state` says, in every state the drive shows here (online,
/// cached, dirty, pinned; folders too); the python core asking the real socket gets the same.
#[test]
fn folder_states_equal_each_files_attribute() {
    let d = drive();
    let (h, mp) = (d.h(), &d.mp);
    let mut seen = std::collections::BTreeSet::new();
    let mut all = BTreeMap::new();
    for folder in [mp.clone(), mp.join("Kept"), mp.join("Projects")] {
        let f = folder.to_str().unwrap();
        let out = d.home.ok(&["state", f, "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let entries: BTreeMap<String, String> =
            serde_json::from_value(v["entries"].clone()).unwrap();
        // The entries are the folder's, as listed through the kernel.
        let listed = user_sh(h, "ls -A \"$1\"", &[&folder]);
        let names: Vec<&str> = listed.lines().collect();
        assert_eq!(
            entries.keys().map(String::as_str).collect::<Vec<_>>(),
            names,
            "{f}: {out}"
        );
        // The folder's own state, and each entry's, as getfattr reads them.
        assert_eq!(
            v["state"].as_str(),
            getfattr_state(h, &folder).as_deref(),
            "{f}"
        );
        for (name, state) in &entries {
            let p = folder.join(name);
            assert_eq!(
                Some(state.as_str()),
                getfattr_state(h, &p).as_deref(),
                "{}",
                p.display()
            );
            seen.insert(state.clone());
            all.insert(p.to_str().unwrap().to_string(), state.clone());
        }
    }
    for state in ["online", "cached", "dirty", "pinned"] {
        assert!(seen.contains(state), "no entry {state}: {all:#?}");
    }
    assert_eq!(all[mp.join("Kept/a.txt").to_str().unwrap()], "pinned");

    // The text form: one line per entry; a file gives its own line.
    let out = d.home.ok(&["state", mp.to_str().unwrap()]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["dirty", "new.txt"])),
        "{out}"
    );
    let new = mp.join("new.txt");
    let out = d.home.ok(&["state", new.to_str().unwrap()]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["dirty", new.to_str().unwrap()],
        "{out}"
    );
    // A folder outside the mounts is refused, saying so.
    let out = d.home.fails(&["state", h.to_str().unwrap()]);
    assert!(out.contains("not inside a cloudmount mount"), "{out}");

    // The installed python core, asking the daemon's real socket as the file manager does.
    let core_dir = h.join(".local/share/cloudmount/file-manager");
    let script =
        "import json, sys\nsys.path.insert(0, sys.argv[1])\nimport cloudmount_fm as core\n\
                  print(json.dumps({p: core.folder_states.state(p) for p in sys.argv[2:]}))";
    let mut cmd = user_command(h, "/usr/bin/python3");
    cmd.args(["-c", script])
        .arg(&core_dir)
        .args(all.keys())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run(cmd, "python3");
    assert!(out.status.success(), "{}", text(&out));
    let got: BTreeMap<String, (String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    for (p, state) in &all {
        assert_eq!(got[p], (state.clone(), "folder".to_string()), "{p}");
    }
}

/// Dolphin (KDE's real KIO machinery) loads the service menu `cloudmount integrate` installs:
/// the context menu of a file of the mount has the "Cloud drive" submenu with its three
/// entries, and choosing "Keep on this device" pins the file.
#[test]
fn dolphin_runs_the_service_menu_on_a_real_mount() {
    use std::os::unix::fs::PermissionsExt;
    let d = drive();
    let (h, mp) = (d.h(), &d.mp);
    // KIO reads service menus from here, and runs only executable ones.
    for f in ["cloudmount.desktop", "cloudmount-sync-folder.desktop"] {
        let p = h.join(".local/share/kio/servicemenus").join(f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", p.display());
    }
    let display = Display::start();
    let fm = file_manager(h, &display, &["dolphin", "--new-window"], mp);
    let context = || format!("extension log: {:#?}\ndolphin:\n{}", fm_log(h), fm.output());
    let win = display.window("dolphin", 120);
    display.xdotool(&["windowsize", &win, "1000", "640"]);
    display.xdotool(&["windowfocus", "--sync", &win]);
    std::thread::sleep(Duration::from_secs(2));
    let read = mp.join("read.txt");
    // The context menu from the keyboard. Counted from its end (Properties, Assign Tags,
    // Activities, then ours on Debian 12's Dolphin 22.12), "Cloud drive" is the submenu of
    // three entries (sorted: Free up space, Keep on this device, Don't keep on this device).
    // Other distances are tried when it is not there; Return is pressed only in that submenu.
    let mut ran = None;
    'tries: for up in [4, 3, 5, 2, 6, 1] {
        // Menus left open by a try are closed (Escape only then: in the view it would
        // clear the selection).
        for _ in 0..3 {
            if display.popup(&win).is_some() {
                display.xdotool(&["key", "Escape"]);
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        // An empty place of the view, then read.txt selected by typing its name.
        display.xdotool(&["mousemove", "700", "560", "click", "1"]);
        display.xdotool(&["type", "--delay", "150", "read.t"]);
        std::thread::sleep(Duration::from_secs(1));
        display.xdotool(&["key", "Menu"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while display.popup(&win).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
        }
        let Some(menu) = display.popup(&win) else {
            continue;
        };
        for _ in 0..up {
            display.xdotool(&["key", "Up"]);
            std::thread::sleep(Duration::from_millis(300));
        }
        display.xdotool(&["key", "Right"]);
        std::thread::sleep(Duration::from_millis(1500));
        // The submenu: another window beside the menu, three rows high.
        let sub = display
            .windows()
            .into_iter()
            .find(|(id, w, h)| *id != win && *id != menu && (100..700).contains(w) && *h < 120);
        let Some((_, _, height)) = sub else {
            continue;
        };
        if !(60..=100).contains(&height) {
            continue;
        }
        display.xdotool(&["key", "Down"]);
        std::thread::sleep(Duration::from_millis(300));
        display.xdotool(&["key", "Return"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            ran = fm_log(h)
                .into_iter()
                .find(|e| e["event"] == "run" && e["fm"] == "dolphin");
            if ran.is_some() {
                break 'tries;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let ran = ran.unwrap_or_else(|| {
        let shot = h.join("dolphin.png");
        let _ = display.screenshot(&shot);
        panic!(
            "Keep on this device did not run from Dolphin's menu (screen: {})\n{}",
            shot.display(),
            context()
        )
    });
    assert_eq!(
        ran["argv"],
        serde_json::json!([user_bin(), "pin", read]),
        "{ran}"
    );
    // The command it started pinned the file.
    wait_for(60, "read.txt pinned", context, || {
        (getfattr_state(h, &read).as_deref() == Some("pinned")).then_some(())
    });
}
