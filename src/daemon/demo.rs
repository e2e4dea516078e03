//! `cloudmount demo`: a local cloud (the embedded WebDAV server on 127.0.0.1 with a random
//! password kept in memory) over a data folder with three areas, seeded with sample files the
//! first time, mounted with the areas as folders (`Following` read-only); beside the mount, a
//! sync folder (`~/cloudmount-demo-sync` ⇄ `Cloud Drive/Sync Demo`), run by the same daemon as
//! a profile named `demo`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{AreaConfig, Dirs, Login, MountConfig, ProfileDaemonConfig};
use crate::remote::RemotePath;
use crate::server::{self, ServeConfig, ServeError, ServerHandle};

/// The demo's areas: name and read-only.
pub const AREAS: [(&str, bool); 3] = [
    ("Cloud Drive", false),
    ("Shared", false),
    ("Following", true),
];

/// The demo server's user name (the password is random, per run).
pub const USER: &str = "demo";
/// Quota of the demo cloud, so `df` has something to show.
pub const QUOTA: u64 = 2 << 30;
/// Cache budget of the demo mount.
pub const CACHE_SIZE: u64 = 1 << 30;
/// Directory listings are revalidated after this long (files dropped into the data folder show
/// up quickly).
pub const DIR_CACHE_TIME: Duration = Duration::from_secs(10);

/// The folder served by the demo: `$XDG_DATA_HOME/cloudmount/demo`.
pub fn data_dir(dirs: &Dirs) -> PathBuf {
    dirs.data.join("demo")
}

/// The default mount point: `~/cloudmount-demo`.
pub fn default_mountpoint(dirs: &Dirs) -> PathBuf {
    dirs.home.join("cloudmount-demo")
}

/// The profile name of the demo's daemon (`cloudmount sync --profile demo list`; the default
/// when there is no config file).
pub const PROFILE: &str = "demo";

/// The demo's sync folder on the server, below `Cloud Drive`.
pub const SYNC_REMOTE: &str = "Sync Demo";

/// The demo's local sync folder: `~/cloudmount-demo-sync`.
pub fn default_sync_dir(dirs: &Dirs) -> PathBuf {
    dirs.home.join("cloudmount-demo-sync")
}

/// The demo's daemon: the mount `mount`, and the sync folders of profile `demo` on the
/// `Cloud Drive` area, checked for server changes every 5 seconds.
pub fn profile_config(dirs: &Dirs, mount: MountConfig) -> ProfileDaemonConfig {
    let drive = mount
        .areas
        .first()
        .map(|a| a.url.clone())
        .unwrap_or_default();
    ProfileDaemonConfig {
        name: PROFILE.into(),
        url: drive,
        credentials: mount.credentials.clone(),
        areas: mount.areas.clone(),
        sync_root: String::new(),
        poll_interval: Duration::from_secs(5),
        journal: dirs.data.join("sync").join(format!("{PROFILE}.db")),
        socket: crate::config::socket_of(dirs, PROFILE),
        log: dirs.state.join("demo.log"),
        mount: Some(mount),
        default_folders: Vec::new(),
        preset_used: Vec::new(),
    }
}

/// Registers the demo's sync folder the first time (seeding the local folder with a note).
/// Returns the local folder of the demo's sync folder.
pub fn ensure_sync_folder(dirs: &Dirs, journal: &Path) -> io::Result<PathBuf> {
    use crate::sync::folder::{FolderId, FolderSpec, Mode, Schedule};
    let j = crate::sync::journal::Journal::open(journal).map_err(io::Error::other)?;
    let folders = j.folders().map_err(io::Error::other)?;
    if let Some(f) = folders.first() {
        return Ok(f.local.clone());
    }
    let local = default_sync_dir(dirs);
    if !local.exists() {
        std::fs::create_dir_all(&local)?;
        std::fs::write(
            local.join("hello from this computer.txt"),
            "This file is in a sync folder on this computer: ~/cloudmount-demo-sync.\n\
             cloudmount keeps it mirrored with 'Cloud Drive/Sync Demo' in the cloud.\n\
             Edit it, add files beside it, and watch them appear there (and the other way).\n",
        )?;
    }
    let spec = FolderSpec {
        id: FolderId::random()?,
        local: local.clone(),
        remote: SYNC_REMOTE.into(),
        mode: Mode::Bidirectional,
        schedule: Schedule::Immediate,
        keep_deleted: false,
        paused: false,
        delete_limit_percent: crate::sync::folder::DEFAULT_DELETE_LIMIT_PERCENT,
        added_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        area: String::new(),
        mode_reason: String::new(),
    };
    j.add_folder(&spec).map_err(io::Error::other)?;
    Ok(local)
}

/// Creates the data folder and seeds each area that does not exist yet. Returns the areas
/// seeded now (empty on later runs: what the user changed is kept).
pub fn prepare(data: &Path) -> io::Result<Vec<&'static str>> {
    std::fs::create_dir_all(data)?;
    let mut seeded = Vec::new();
    for (name, _) in AREAS {
        let area = data.join(name);
        if area.exists() {
            continue;
        }
        // Seed beside, then rename: an interrupted seeding never leaves half an area.
        let tmp = data.join(format!(".seeding-{name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir(&tmp)?;
        for (path, content) in samples(name, data) {
            let p = tmp.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(p, content)?;
        }
        std::fs::rename(&tmp, &area)?;
        seeded.push(name);
    }
    Ok(seeded)
}

fn samples(area: &str, data: &Path) -> Vec<(&'static str, Vec<u8>)> {
    match area {
        "Cloud Drive" => vec![
            ("README.txt", readme(data).into_bytes()),
            ("Photos/sunset.bmp", sunset_bmp(96, 64)),
            (
                "Documents/notes.txt",
                b"Shopping: milk, eggs, flour.\n\
                  Edit me: changes are uploaded when the file is closed.\n"
                    .to_vec(),
            ),
            ("Samples/random-4MiB.bin", pseudo_random(4 << 20)),
        ],
        "Shared" => vec![(
            "Team plan/plan.md",
            b"# Team plan\n\n- [x] Set up the shared folder\n- [ ] Write the report\n".to_vec(),
        )],
        "Following" => vec![(
            "Recipes from Bob/pancakes.txt",
            b"Pancakes: 200 g flour, 2 eggs, 300 ml milk, a pinch of salt.\n\
              This folder is read-only: it belongs to someone else.\n"
                .to_vec(),
        )],
        _ => Vec::new(),
    }
}

fn readme(data: &Path) -> String {
    format!(
        "Welcome to the cloudmount demo!\n\
         \n\
         What you see is a WebDAV cloud mounted as a folder. The cloud is a small server that\n\
         `cloudmount demo` started on this machine (127.0.0.1), serving the files in\n\
         \n    {}\n\n\
         Its three areas are folders at the root of the mount:\n\
         - Cloud Drive: your own files (this one);\n\
         - Shared: folders you share with others;\n\
         - Following: folders others share with you (read-only: a write is refused,\n  \"Permission denied\").\n\
         \n\
         Files are fetched on demand into a local cache. Each file's state is in an extended\n\
         attribute:\n\
         \n    getfattr -n user.cloudmount.state README.txt\n\n\
         online (nothing local yet), partial, cached, dirty (changes not uploaded yet), ...\n\
         Try `head -c 100 Samples/random-4MiB.bin` and look at its state again.\n\
         \n\
         Copy files in, edit them, rename and delete them: the changes reach the server.\n\
         Stop the demo with Ctrl-C in its terminal; it unmounts cleanly.\n",
        data.display()
    )
}

/// A small uncompressed 24-bit BMP: a sunset gradient with a sun.
fn sunset_bmp(w: u32, h: u32) -> Vec<u8> {
    let row = (w * 3).div_ceil(4) * 4;
    let pixels = row * h;
    let mut out = Vec::with_capacity(54 + pixels as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(54 + pixels).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&pixels.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let (cx, cy, r) = (w as i64 / 2, h as i64 / 3, h as i64 / 5);
    // Rows are stored bottom-up, pixels as B, G, R.
    for y in 0..h {
        let t = y * 255 / h.max(1); // 0 at the bottom, 255 at the top
        for x in 0..w {
            let (dx, dy) = (x as i64 - cx, y as i64 - cy);
            let (b, g, rr) = if y < h / 4 {
                (90, 40 + (t / 4) as u8, 20) // sea
            } else if dx * dx + dy * dy <= r * r {
                (40, 220, 255) // sun
            } else {
                ((60 + t / 2) as u8, (80 + t / 3) as u8, (255 - t / 3) as u8)
            };
            out.extend_from_slice(&[b, g, rr]);
        }
        out.resize(out.len() + (row - w * 3) as usize, 0);
    }
    out
}

/// Deterministic bytes (xorshift), so every seeded demo has the same sample.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A random password for this run of the server (hex of 16 random bytes).
pub fn random_password() -> io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Starts the embedded server on 127.0.0.1 (free port) over `data`.
pub async fn start_server(data: &Path, password: &str) -> Result<ServerHandle, ServeError> {
    server::start(ServeConfig {
        root: data.to_path_buf(),
        listen: ([127, 0, 0, 1], 0).into(),
        auth: Some((USER.to_string(), password.to_string())),
        quota: Some(QUOTA),
    })
    .await
}

/// The mount of the demo: three areas of the server at `server_url`.
pub fn mount_config(
    dirs: &Dirs,
    server_url: &str,
    password: &str,
    mountpoint: PathBuf,
) -> io::Result<MountConfig> {
    let base = url::Url::parse(server_url).map_err(|e| io::Error::other(e.to_string()))?;
    let mut areas = Vec::new();
    for (name, read_only) in AREAS {
        let path = RemotePath::new(name).map_err(|e| io::Error::other(e.to_string()))?;
        areas.push(AreaConfig {
            name: name.to_string(),
            url: path.to_url(&base, true).to_string(),
            read_only,
        });
    }
    Ok(MountConfig {
        name: "demo".into(),
        profile: None,
        source: "demo".into(),
        mountpoint,
        areas,
        areas_as_folders: true,
        credentials: Some(Login {
            user: USER.into(),
            password: password.into(),
        }),
        cache_dir: dirs.cache.join("demo"),
        cache_size: CACHE_SIZE,
        dir_cache_time: DIR_CACHE_TIME,
        write_back_delay: crate::config::DEFAULT_WRITE_BACK_DELAY,
        space_retry: None,
        read_only: false,
        allow_other: false,
        passthrough: true,
        allow_non_empty: false,
        runtime_dir: dirs.runtime.clone(),
        upload_limit: None,
        download_limit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_each_area_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("demo");
        let seeded = prepare(&data).unwrap();
        assert_eq!(seeded, vec!["Cloud Drive", "Shared", "Following"]);
        assert!(data.join("Cloud Drive/README.txt").is_file());
        assert!(data.join("Cloud Drive/Documents/notes.txt").is_file());
        assert_eq!(
            std::fs::metadata(data.join("Cloud Drive/Samples/random-4MiB.bin"))
                .unwrap()
                .len(),
            4 << 20
        );
        assert!(data.join("Shared/Team plan/plan.md").is_file());
        assert!(data
            .join("Following/Recipes from Bob/pancakes.txt")
            .is_file());
        let readme = std::fs::read_to_string(data.join("Cloud Drive/README.txt")).unwrap();
        assert!(readme.contains(&data.display().to_string()));

        // The user's changes survive the next start; a deleted area is seeded again.
        std::fs::remove_file(data.join("Cloud Drive/README.txt")).unwrap();
        std::fs::remove_dir_all(data.join("Shared")).unwrap();
        assert_eq!(prepare(&data).unwrap(), vec!["Shared"]);
        assert!(!data.join("Cloud Drive/README.txt").exists());
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "no leftovers: {names:?}");
    }

    #[test]
    fn bmp_is_well_formed() {
        let b = sunset_bmp(96, 64);
        assert_eq!(&b[..2], b"BM");
        let size = u32::from_le_bytes(b[2..6].try_into().unwrap()) as usize;
        assert_eq!(size, b.len());
        assert_eq!(b.len(), 54 + 96 * 3 * 64);
        let odd = sunset_bmp(5, 3); // rows padded to 4 bytes
        assert_eq!(odd.len(), 54 + 16 * 3);
    }

    #[test]
    fn areas_get_encoded_urls() {
        let dirs = Dirs::from_lookup(|_| None, Some("/h".into()), 1, |_| false).unwrap();
        let c = mount_config(&dirs, "http://127.0.0.1:4918/", "pw", "/h/m".into()).unwrap();
        let urls: Vec<_> = c.areas.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:4918/Cloud%20Drive/",
                "http://127.0.0.1:4918/Shared/",
                "http://127.0.0.1:4918/Following/"
            ]
        );
        assert!(c.areas[2].read_only && !c.areas[0].read_only);
        assert!(c.areas_as_folders);
        assert_eq!(c.cache_dir, PathBuf::from("/h/.cache/cloudmount/demo"));
        let pw = random_password().unwrap();
        assert_eq!(pw.len(), 32);
        assert_ne!(pw, random_password().unwrap());
    }
}
