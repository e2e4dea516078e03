use super::*;
use std::collections::HashMap;

fn dirs_in(home: &Path) -> Dirs {
    Dirs::from_lookup(|_| None, Some(home.into()), 1000, |_| false).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn write_private(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn req(source: &str, mp: &str) -> MountRequest {
    MountRequest {
        source: source.into(),
        mountpoint: Some(mp.into()),
        ..Default::default()
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration(" 0 ").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    for bad in ["", "s", "10x", "-5s", "1.5s", "m5", "10 s"] {
        assert!(
            matches!(parse_duration(bad), Err(ConfigError::Duration(_))),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn xdg_defaults_and_overrides() {
    let d = Dirs::from_lookup(|_| None, Some("/home/a".into()), 1000, |_| false).unwrap();
    assert_eq!(d.config, PathBuf::from("/home/a/.config/cloudmount"));
    assert_eq!(d.cache, PathBuf::from("/home/a/.cache/cloudmount"));
    assert_eq!(d.state, PathBuf::from("/home/a/.local/state/cloudmount"));
    assert_eq!(d.data, PathBuf::from("/home/a/.local/share/cloudmount"));
    assert_eq!(d.runtime, PathBuf::from("/tmp/cloudmount-1000"));
    assert_eq!(
        d.config_file(),
        PathBuf::from("/home/a/.config/cloudmount/config.toml")
    );

    let d = Dirs::from_lookup(
        |_| None,
        Some("/home/a".into()),
        1000,
        |p| p == Path::new("/run/user/1000"),
    )
    .unwrap();
    assert_eq!(d.runtime, PathBuf::from("/run/user/1000/cloudmount"));

    let vars: HashMap<&str, &str> = [
        ("XDG_CONFIG_HOME", "/x/conf"),
        ("XDG_CACHE_HOME", "relative/ignored"),
        ("XDG_STATE_HOME", "/x/state"),
        ("XDG_DATA_HOME", "/x/data"),
        ("XDG_RUNTIME_DIR", "/x/run"),
    ]
    .into();
    let d = Dirs::from_lookup(
        |k| vars.get(k).map(OsString::from),
        Some("/home/a".into()),
        1000,
        |_| true,
    )
    .unwrap();
    assert_eq!(d.config, PathBuf::from("/x/conf/cloudmount"));
    assert_eq!(d.cache, PathBuf::from("/home/a/.cache/cloudmount"));
    assert_eq!(d.state, PathBuf::from("/x/state/cloudmount"));
    assert_eq!(d.data, PathBuf::from("/x/data/cloudmount"));
    assert_eq!(d.runtime, PathBuf::from("/x/run/cloudmount"));

    assert!(matches!(
        Dirs::from_lookup(|_| None, None, 0, |_| false),
        Err(ConfigError::NoHome)
    ));
    assert_eq!(d.expand(Path::new("~/x")), PathBuf::from("/home/a/x"));
    assert_eq!(d.expand(Path::new("~")), PathBuf::from("/home/a"));
    assert_eq!(d.expand(Path::new("/abs")), PathBuf::from("/abs"));
    assert_eq!(d.expand(Path::new("~other/x")), PathBuf::from("~other/x"));
}

#[test]
fn options_fill_unset_fields_and_ignore_mount8_noise() {
    let mut r = MountRequest {
        user: Some("flag-user".into()),
        ..Default::default()
    };
    r.apply_options(
        "defaults,noauto,nofail,_netdev,x-systemd.automount,x-gvfs-show,user,users,exec,\
         noexec,suid,nosuid,dev,nodev,auto,ro,allow_other,cache_size=5G,\
         cache_dir=/var/cache/cm,user=opt-user,password_file=/etc/cm.pw,\
         dir_cache_time=2m,config=/etc/cm.toml,comment=x",
    )
    .unwrap();
    assert_eq!(r.read_only, Some(true));
    assert_eq!(r.allow_other, Some(true));
    assert_eq!(r.cache_size, Some(5 << 30));
    assert_eq!(r.cache_dir, Some(PathBuf::from("/var/cache/cm")));
    assert_eq!(r.user.as_deref(), Some("flag-user"), "a flag wins over -o");
    assert_eq!(r.password_file, Some(PathBuf::from("/etc/cm.pw")));
    assert_eq!(r.dir_cache_time, Some(Duration::from_secs(120)));
    assert_eq!(r.config, Some(PathBuf::from("/etc/cm.toml")));

    let mut r = MountRequest::default();
    r.apply_options("rw,username=bob").unwrap();
    assert_eq!(r.read_only, Some(false));
    assert_eq!(r.user.as_deref(), Some("bob"));
    assert_eq!(
        r.passthrough, None,
        "passthrough is the profile's or the default"
    );
    r.apply_options("nopassthrough").unwrap();
    assert_eq!(r.passthrough, Some(false));

    let mut r = MountRequest {
        read_only: Some(true),
        ..Default::default()
    };
    r.apply_options("rw").unwrap();
    assert_eq!(r.read_only, Some(true), "--read-only wins over -o rw");
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    for (opts, needle) in [
        ("frobnicate", "frobnicate"),
        ("ro,colour=blue", "colour=blue"),
        ("password=secret", "password_file"),
    ] {
        let e = MountRequest::default().apply_options(opts).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownOption(_)), "{opts}: {e}");
        assert!(e.to_string().contains(needle), "{opts}: {e}");
    }
    let e = MountRequest::default()
        .apply_options("cache_size=lots")
        .unwrap_err();
    assert!(matches!(e, ConfigError::Size { .. }), "{e}");
    let e = MountRequest::default()
        .apply_options("cache_dir=")
        .unwrap_err();
    assert!(matches!(e, ConfigError::OptionNeedsValue(_)), "{e}");
    let e = MountRequest::default()
        .apply_options("dir_cache_time=soon")
        .unwrap_err();
    assert!(matches!(e, ConfigError::Duration(_)), "{e}");
}

#[test]
fn url_mount_defaults() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    let mut r = req(
        "https://dav.example.com/remote.php/dav/files/alice/",
        "Cloud",
    );
    r.user = Some("alice".into());
    let env = |k: &str| (k == PASSWORD_ENV).then(|| "s3cret".to_string());
    let c = resolve(&r, &dirs, Path::new("/work"), &env).unwrap();
    assert_eq!(c.mountpoint, PathBuf::from("/work/Cloud"));
    assert_eq!(c.name, "work-Cloud");
    assert_eq!(c.profile, None);
    assert_eq!(c.areas.len(), 1);
    assert_eq!(c.areas[0].url, r.source);
    assert!(!c.areas_as_folders);
    let creds = c.credentials.as_ref().unwrap();
    assert_eq!(
        (creds.user.as_str(), creds.password.as_str()),
        ("alice", "s3cret")
    );
    assert_eq!(
        c.cache_dir,
        dirs.cache
            .join("alice@dav.example.com-remote.php-dav-files-alice")
    );
    assert_eq!(c.cache_size, DEFAULT_CACHE_SIZE);
    assert_eq!(c.dir_cache_time, DEFAULT_DIR_CACHE_TIME);
    assert!(!c.read_only && !c.allow_other);
    assert!(c.passthrough, "passthrough is on unless switched off");
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not show it"
    );

    // A user without any password source is an error naming the ways to give one.
    let e = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap_err();
    assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
    // Anonymous: no user, no credentials.
    let anon = resolve(
        &req("http://127.0.0.1:8080/", "/mnt"),
        &dirs,
        Path::new("/"),
        &env,
    )
    .unwrap();
    assert!(anon.credentials.is_none());
    assert!(matches!(
        resolve(&req("http://", "/mnt"), &dirs, Path::new("/"), &no_env),
        Err(ConfigError::Url { .. })
    ));
}

#[test]
fn password_file_must_be_private() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    let pw = home.path().join("pw");
    write_private(&pw, "hunter2\n");
    let mut r = req("https://dav.example.com/", "/mnt");
    r.user = Some("alice".into());
    r.password_file = Some(pw.clone());
    let env = |_: &str| Some("from-env".to_string());
    let c = resolve(&r, &dirs, Path::new("/"), &env).unwrap();
    assert_eq!(c.credentials.unwrap().password, "hunter2", "file beats env");

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = resolve(&r, &dirs, Path::new("/"), &env).unwrap_err();
    assert!(
        matches!(e, ConfigError::Insecure { mode: 0o644, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&pw, "\n").unwrap();
    assert!(matches!(
        resolve(&r, &dirs, Path::new("/"), &env),
        Err(ConfigError::EmptyPassword(_))
    ));

    r.user = None;
    assert!(matches!(
        resolve(&r, &dirs, Path::new("/"), &env),
        Err(ConfigError::PasswordWithoutUser)
    ));
}

#[test]
fn profile_with_url_and_its_sources() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    write_private(
        &home.path().join(".config/cloudmount/work.password"),
        "pw-file\n",
    );
    let cfg = dirs.config_file();
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        r#"
[profiles.work]
url = "https://webdav.example.com/alice/"
user = "alice"
password_file = "~/.config/cloudmount/work.password"
cache_size = "2G"
dir_cache_time = "5m"
read_only = true
passthrough = false
mountpoint = "~/Cloud"

[profiles.env]
url = "https://webdav.example.com/bob/"
user = "bob"
password_env = "BOB_PW"
cache_dir = "/var/cache/bob"
cache_size = 1048576
dir_cache_time = 10
"#,
    )
    .unwrap();
    // World-readable is fine: the file holds no password.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();

    let r = MountRequest {
        source: "work".into(),
        ..Default::default()
    };
    let c = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap();
    assert_eq!(c.profile.as_deref(), Some("work"));
    assert_eq!(c.name, "work");
    assert_eq!(c.mountpoint, home.path().join("Cloud"));
    assert_eq!(c.credentials.unwrap().password, "pw-file");
    assert_eq!(c.cache_dir, dirs.cache.join("work"));
    assert_eq!(c.cache_size, 2 << 30);
    assert_eq!(c.dir_cache_time, Duration::from_secs(300));
    assert!(c.read_only);
    assert!(!c.passthrough);
    assert!(!c.areas_as_folders);

    // Command line over profile.
    let r = MountRequest {
        source: "work".into(),
        mountpoint: Some("/mnt/w".into()),
        cache_size: Some(512 << 20),
        read_only: Some(false),
        ..Default::default()
    };
    let c = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap();
    assert_eq!(c.mountpoint, PathBuf::from("/mnt/w"));
    assert_eq!(c.cache_size, 512 << 20);
    assert!(!c.read_only);
    assert!(!c.passthrough, "the profile's, no flag given");

    let r = req("env", "/mnt/b");
    let e = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap_err();
    assert!(
        matches!(e, ConfigError::PasswordEnvUnset(ref v) if v == "BOB_PW"),
        "{e}"
    );
    let env = |k: &str| (k == "BOB_PW").then(|| "bob-pw".to_string());
    let c = resolve(&r, &dirs, Path::new("/"), &env).unwrap();
    assert_eq!(c.credentials.unwrap().password, "bob-pw");
    assert_eq!(c.cache_dir, PathBuf::from("/var/cache/bob"));
    assert_eq!(c.cache_size, 1 << 20);
    assert_eq!(c.dir_cache_time, Duration::from_secs(10));

    let e = resolve(&req("nope", "/m"), &dirs, Path::new("/"), &no_env).unwrap_err();
    assert!(matches!(e, ConfigError::NoProfile { .. }), "{e}");
    assert!(e.to_string().contains("env, work"), "{e}");
}

#[test]
fn profile_with_areas() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    let cfg = home.path().join("custom.toml");
    write_private(
        &cfg,
        r#"
[profiles.cloudme]
user = "alice"
password = "inline-secret"
[[profiles.cloudme.areas]]
name = "Cloud Drive"
url = "https://webdav.cloudme.com/alice/xios/"
[[profiles.cloudme.areas]]
name = "Following"
url = "https://webdav.cloudme.com/alice/following/"
read_only = true
"#,
    );
    let mut r = req("cloudme", "/mnt/c");
    r.config = Some(cfg.clone());
    let c = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap();
    assert!(c.areas_as_folders);
    assert_eq!(
        c.areas,
        vec![
            AreaConfig {
                name: "Cloud Drive".into(),
                url: "https://webdav.cloudme.com/alice/xios/".into(),
                read_only: false
            },
            AreaConfig {
                name: "Following".into(),
                url: "https://webdav.cloudme.com/alice/following/".into(),
                read_only: true
            },
        ]
    );
    assert_eq!(c.credentials.unwrap().password, "inline-secret");

    // An inline password in a file others can read: refused.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap_err();
    assert!(matches!(e, ConfigError::Insecure { .. }), "{e}");
}

#[test]
fn profile_paths_are_relative_to_the_config_file() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    let etc = home.path().join("etc/cm");
    write_private(&etc.join("alice.pw"), "pw\n");
    write_private(
        &etc.join("config.toml"),
        "[profiles.p]\nurl = \"https://h/\"\nuser = \"alice\"\n\
         password_file = \"alice.pw\"\ncache_dir = \"cache\"\nmountpoint = \"mnt\"\n",
    );
    // --config relative to the working directory; the file's paths relative to the file.
    let r = MountRequest {
        source: "p".into(),
        config: Some("etc/cm/config.toml".into()),
        ..Default::default()
    };
    let c = resolve(&r, &dirs, home.path(), &no_env).unwrap();
    assert_eq!(c.credentials.unwrap().password, "pw");
    assert_eq!(c.cache_dir, etc.join("cache"));
    assert_eq!(c.mountpoint, etc.join("mnt"));
    // The command line's own paths stay relative to the working directory.
    let r = MountRequest {
        mountpoint: Some("here".into()),
        cache_dir: Some("c2".into()),
        ..r
    };
    let c = resolve(&r, &dirs, Path::new("/w"), &no_env);
    assert!(
        matches!(c, Err(ConfigError::NoConfigFile { .. })),
        "config is cwd-relative"
    );
    let r = MountRequest {
        config: Some(etc.join("config.toml")),
        ..r
    };
    let c = resolve(&r, &dirs, Path::new("/w"), &no_env).unwrap();
    assert_eq!(c.mountpoint, PathBuf::from("/w/here"));
    assert_eq!(c.cache_dir, PathBuf::from("/w/c2"));
}

#[test]
fn bad_profiles_are_explained() {
    let home = tempfile::tempdir().unwrap();
    let dirs = dirs_in(home.path());
    let cases = [
        (
            "[profiles.p]\nurl = \"https://a/\"\n[[profiles.p.areas]]\nname = \"A\"\nurl = \"https://b/\"\n",
            "not both",
        ),
        ("[profiles.p]\nuser = \"x\"\n", "no `url`"),
        (
            "[profiles.p]\n[[profiles.p.areas]]\nname = \"A\"\nurl = \"https://a/\"\n[[profiles.p.areas]]\nname = \"A\"\nurl = \"https://b/\"\n",
            "two areas",
        ),
        (
            "[profiles.p]\n[[profiles.p.areas]]\nname = \"a/b\"\nurl = \"https://a/\"\n",
            "area name",
        ),
        ("[profiles.p]\nurl = \"https://a/\"\ncolour = 1\n", "colour"),
        ("[profiles.p]\nurl = \"ftp://a/\"\n", "http"),
    ];
    for (text, needle) in cases {
        let cfg = home.path().join("c.toml");
        write_private(&cfg, text);
        let mut r = req("p", "/m");
        r.config = Some(cfg);
        let e = resolve(&r, &dirs, Path::new("/"), &no_env).unwrap_err();
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
    // No config file at all for a profile name.
    let e = resolve(&req("p", "/m"), &dirs, Path::new("/"), &no_env).unwrap_err();
    assert!(matches!(e, ConfigError::NoConfigFile { .. }), "{e}");
    // No mount point anywhere.
    let e = resolve(
        &MountRequest {
            source: "http://h/".into(),
            ..Default::default()
        },
        &dirs,
        Path::new("/"),
        &no_env,
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::NoMountPoint), "{e}");
}

#[test]
fn sanitized_names() {
    assert_eq!(sanitize_name("/home/alice/My Cloud"), "home-alice-My-Cloud");
    assert_eq!(sanitize_name("work"), "work");
    assert_eq!(sanitize_name("/"), "root");
    assert_eq!(sanitize_name("../.."), "root");
    assert_eq!(sanitize_name("a//b"), "a-b");
    assert_eq!(
        url_cache_name("https://h.example:8443/dav/", Some("bob")),
        "bob@h.example-8443-dav"
    );
}

#[test]
fn bandwidth_limit_options() {
    let mut r = MountRequest {
        upload_limit: Some(1024),
        ..MountRequest::default()
    };
    r.apply_options("upload_limit=2M,download_limit=500K/s")
        .unwrap();
    assert_eq!(r.upload_limit, Some(1024), "the flag wins");
    assert_eq!(r.download_limit, Some(500 * 1024));
    let mut r = MountRequest::default();
    r.apply_options("download_limit=off").unwrap();
    assert_eq!(r.download_limit, Some(0));
    let e = MountRequest::default()
        .apply_options("upload_limit=12")
        .unwrap_err();
    assert!(matches!(e, ConfigError::Limit { .. }), "{e}");
    assert!(MountRequest::default()
        .apply_options("upload_limit")
        .is_err());
}
