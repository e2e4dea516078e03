//! Presets and default folders: expansion, overrides, validation, XDG folders.

use std::path::{Path, PathBuf};

use super::defaults::{resolve_defaults, xdg_user_dir, DefaultFolderEntry};
use super::preset::cloudme_url;
use super::*;
use crate::sync::folder::{Mode, Schedule};

fn dirs_in(home: &Path) -> Dirs {
    Dirs::from_lookup(|_| None, Some(home.into()), 1000, |_| false).unwrap()
}

/// A home with `config` as its config file; the profile daemon's settings of `name`, the
/// environment holding only the password.
fn daemon(
    home: &Path,
    config: &str,
    name: &str,
    env: &[(&str, &str)],
) -> Result<ProfileDaemonConfig, ConfigError> {
    let dirs = dirs_in(home);
    let cfg = dirs.config_file();
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, config).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([(PASSWORD_ENV.to_string(), "pw".to_string())])
        .collect();
    resolve_profile_daemon(name, None, &dirs, home, &|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn err(r: Result<ProfileDaemonConfig, ConfigError>) -> String {
    match r {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_cloudme_preset_is_one_line() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let c = daemon(
        h,
        "[profiles.cm]\npreset = \"cloudme\"\nuser = \"alice\"\n",
        "cm",
        &[],
    )
    .unwrap();
    assert_eq!(c.url, "https://webdav.cloudme.com/alice/CloudDrive/");
    assert_eq!(c.sync_root, "Documents");
    assert_eq!(c.credentials.as_ref().unwrap().user, "alice");
    let names: Vec<&str> = c.default_folders.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["CloudMe", "Pictures", "Music", "Movies"]);
    let blue = &c.default_folders[0];
    assert_eq!(blue.remote, "Documents/CloudMe");
    assert_eq!(blue.local, h.join("Documents/CloudMe"));
    assert!(blue.active);
    assert_eq!(
        (blue.mode, blue.schedule),
        (Mode::Bidirectional, Schedule::Immediate)
    );
    let media: Vec<(&str, PathBuf)> = c.default_folders[1..]
        .iter()
        .map(|d| {
            assert!(!d.active, "{d:?}");
            assert_eq!((d.mode, d.schedule), (Mode::UploadOnly, Schedule::Weekly));
            (d.remote.as_str(), d.local.clone())
        })
        .collect();
    assert_eq!(
        media,
        [
            ("Documents/Pictures", h.join("Pictures")),
            ("Documents/Music", h.join("Music")),
            ("Documents/Movies", h.join("Videos")),
        ]
    );
    // What the preset filled in is said.
    assert_eq!(c.preset_used.len(), 3, "{:?}", c.preset_used);
    assert!(c.preset_used[0].contains("https://webdav.cloudme.com/alice/CloudDrive/"));
    assert!(c.preset_used[0].contains("Digest"));
    assert!(c.preset_used[1].contains("sync_root = Documents"));
    assert!(c.preset_used[2].contains("default_folders"));
}

#[test]
fn the_profiles_own_values_win_over_the_presets() {
    let home = tempfile::tempdir().unwrap();
    let c = daemon(
        home.path(),
        r#"
[profiles.cm]
preset = "CloudMe"
user = "alice"
url = "https://webdav.cloudme.com/alice/"
sync_root = "/Sync/"
default_folders = []
"#,
        "cm",
        &[],
    )
    .unwrap();
    assert_eq!(c.url, "https://webdav.cloudme.com/alice/");
    assert_eq!(c.sync_root, "Sync");
    assert!(c.default_folders.is_empty());
    assert!(c.preset_used.is_empty(), "{:?}", c.preset_used);

    // Areas count as the profile's own URL too.
    let c = daemon(
        home.path(),
        r#"
[profiles.cm]
preset = "cloudme"
user = "alice"
[[profiles.cm.areas]]
name = "Drive"
url = "https://webdav.cloudme.com/alice/CloudDrive/"
"#,
        "cm",
        &[],
    )
    .unwrap();
    assert_eq!(c.url, "https://webdav.cloudme.com/alice/CloudDrive/");
    assert_eq!(c.default_folders.len(), 4);
    assert!(c.preset_used.iter().all(|l| !l.starts_with("url")));
}

#[test]
fn preset_errors_are_clear() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let e = err(daemon(
        h,
        "[profiles.cm]\npreset = \"cloudme\"\n",
        "cm",
        &[],
    ));
    assert!(e.contains("needs `user`"), "{e}");
    let e = err(daemon(
        h,
        "[profiles.cm]\npreset = \"dropbox\"\nuser = \"a\"\n",
        "cm",
        &[],
    ));
    assert!(
        e.contains("unknown preset \"dropbox\"") && e.contains("cloudme"),
        "{e}"
    );
    assert!(cloudme_url("a/b").is_err());
    assert!(cloudme_url("").is_err());
    assert_eq!(
        cloudme_url("a b").unwrap(),
        "https://webdav.cloudme.com/a%20b/CloudDrive/"
    );
}

fn entry(name: &str, remote: &str, local: &str) -> DefaultFolderEntry {
    DefaultFolderEntry {
        name: name.into(),
        remote: remote.into(),
        local: local.into(),
        mode: None,
        schedule: None,
        active: None,
    }
}

fn resolve(entries: &[DefaultFolderEntry]) -> Result<Vec<DefaultFolder>, String> {
    let dirs = dirs_in(Path::new("/home/u"));
    resolve_defaults(entries, &dirs, &|_| None, None)
}

#[test]
fn default_folders_resolved() {
    let mut pics = entry("Pictures", "/Docs/Pictures/", "xdg:pictures");
    pics.mode = Some("upload-only".into());
    pics.schedule = Some("weekly".into());
    pics.active = Some(false);
    let d = resolve(&[entry("Work", "Docs/Work", "~/Work"), pics]).unwrap();
    assert_eq!(d[0].local, PathBuf::from("/home/u/Work"));
    assert!(d[0].active, "active by default");
    assert_eq!(d[0].mode, Mode::Bidirectional);
    assert_eq!(d[1].remote, "Docs/Pictures");
    assert_eq!(d[1].local, PathBuf::from("/home/u/Pictures"));
    assert_eq!(
        (d[1].mode, d[1].schedule),
        (Mode::UploadOnly, Schedule::Weekly)
    );
}

#[test]
fn default_folder_errors_are_clear() {
    let bad = |e: DefaultFolderEntry, want: &str| {
        let msg = resolve(&[e]).unwrap_err();
        assert!(msg.contains(want), "{msg:?} should say {want:?}");
    };
    let mut e = entry("A", "Docs/A", "~/A");
    e.mode = Some("sideways".into());
    bad(
        e,
        "mode \"sideways\": use \"bidirectional\", \"upload-only\" or \"download-only\"",
    );
    let mut e = entry("A", "Docs/A", "~/A");
    e.schedule = Some("hourly".into());
    bad(e, "schedule \"hourly\"");
    bad(entry("A", "Docs/A", "A"), "is not absolute");
    bad(
        entry("A", "Docs/A", "xdg:FOTOS"),
        "unknown xdg folder \"FOTOS\"",
    );
    bad(entry("A", "/", "~/A"), "server's root folder");
    bad(entry("A", "Docs/../x", "~/A"), "remote");
    bad(entry("", "Docs/A", "~/A"), "name");
    bad(entry("a/b", "Docs/A", "~/A"), "name");

    let two = |a: DefaultFolderEntry, b: DefaultFolderEntry, want: &str| {
        let msg = resolve(&[a, b]).unwrap_err();
        assert!(msg.contains(want), "{msg:?} should say {want:?}");
    };
    two(
        entry("A", "Docs/A", "~/A"),
        entry("a", "Docs/B", "~/B"),
        "two default folders are named",
    );
    two(
        entry("A", "Docs", "~/A"),
        entry("B", "Docs/B", "~/B"),
        "overlap",
    );
    two(
        entry("A", "Docs/A", "~/A"),
        entry("B", "Docs/B", "~/A/B"),
        "local folders",
    );
    // An inactive one may share a local folder (it is only a suggestion for `sync activate`).
    let mut b = entry("B", "Docs/B", "~/A");
    b.active = Some(false);
    assert!(resolve(&[entry("A", "Docs/A", "~/A"), b]).is_ok());

    // An unknown key in the config file is refused by name.
    let home = tempfile::tempdir().unwrap();
    let e = err(daemon(
        home.path(),
        r#"
[profiles.p]
url = "https://example.com/dav/"
user = "u"
[[profiles.p.default_folders]]
name = "A"
remote = "A"
local = "~/A"
activ = true
"#,
        "p",
        &[],
    ));
    assert!(e.contains("activ"), "{e}");
    let e = err(daemon(
        home.path(),
        r#"
[profiles.p]
url = "https://example.com/dav/"
user = "u"
[[profiles.p.default_folders]]
name = "A"
remote = "A"
local = "A"
"#,
        "p",
        &[],
    ));
    assert!(
        e.contains("profile \"p\"") && e.contains("default folder \"A\": local"),
        "{e}"
    );
}

#[test]
fn xdg_folders_from_the_environment_user_dirs_or_the_default() {
    let home = Path::new("/home/u");
    let none = |_: &str| None;
    let text = "# comment\nXDG_MUSIC_DIR=\"$HOME/Musik\"\nXDG_VIDEOS_DIR=\"/data/Filme\"\n\
                XDG_PICTURES_DIR=\"$HOME/\"\nXDG_DOCUMENTS_DIR=\"relative\"\n";
    let x = |kind: &str, var: &dyn Fn(&str) -> Option<String>| {
        xdg_user_dir(kind, home, var, Some(text)).unwrap()
    };
    assert_eq!(x("MUSIC", &none), PathBuf::from("/home/u/Musik"));
    assert_eq!(x("videos", &none), PathBuf::from("/data/Filme"));
    // `$HOME` alone (the folder disabled) and relative values fall back to the default.
    assert_eq!(x("PICTURES", &none), PathBuf::from("/home/u/Pictures"));
    assert_eq!(x("DOCUMENTS", &none), PathBuf::from("/home/u/Documents"));
    assert_eq!(x("DOWNLOAD", &none), PathBuf::from("/home/u/Downloads"));
    // The environment comes first, when absolute.
    let env = |k: &str| (k == "XDG_MUSIC_DIR").then(|| "/mnt/music".to_string());
    assert_eq!(x("MUSIC", &env), PathBuf::from("/mnt/music"));
    let rel = |k: &str| (k == "XDG_MUSIC_DIR").then(|| "music".to_string());
    assert_eq!(x("MUSIC", &rel), PathBuf::from("/home/u/Musik"));
    // No user-dirs.dirs at all.
    assert_eq!(
        xdg_user_dir("PICTURES", home, &none, None).unwrap(),
        PathBuf::from("/home/u/Pictures")
    );

    // Through the profile: `user-dirs.dirs` of the user's config directory.
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path();
    std::fs::create_dir_all(h.join(".config")).unwrap();
    std::fs::write(
        h.join(".config/user-dirs.dirs"),
        "XDG_PICTURES_DIR=\"$HOME/Bilder\"\n",
    )
    .unwrap();
    let c = daemon(
        h,
        "[profiles.cm]\npreset = \"cloudme\"\nuser = \"alice\"\n",
        "cm",
        &[("XDG_MUSIC_DIR", "/srv/music")],
    )
    .unwrap();
    let locals: Vec<PathBuf> = c.default_folders.iter().map(|d| d.local.clone()).collect();
    assert_eq!(
        locals,
        [
            h.join("Documents/CloudMe"),
            h.join("Bilder"),
            PathBuf::from("/srv/music"),
            h.join("Videos"),
        ]
    );
}
