//! `cloudmount integrate`: the drive in the user's file managers.
//!
//! Installs, for the current user, into the XDG places the file managers read:
//! - the python extensions of Nautilus, Nemo and Caja (`$XDG_DATA_HOME/<fm>-python/extensions/`)
//!   and the logic they share (`$XDG_DATA_HOME/cloudmount/file-manager/cloudmount_fm.py`):
//!   each file's state as an emblem and a column, and the menu entries *Keep on this device*,
//!   *Don't keep on this device*, *Free up space* and *Add as sync folder*;
//! - Dolphin's service menus with the same actions (`$XDG_DATA_HOME/kio/servicemenus/`);
//! - each mount point as a favourite: a GTK bookmark (`$XDG_CONFIG_HOME/gtk-3.0/bookmarks`) and
//!   a Dolphin place (`$XDG_DATA_HOME/user-places.xbel`).
//!
//! The sources are in the repository's `integrations/` directory, embedded at build time.
//! Every file written starts with [`MARKER`]; bookmarks and places added are listed in a
//! manifest. [`remove`] takes away exactly that: a file without the marker, or a bookmark the
//! user had already, is left alone.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The first line of every file `integrate` writes (a comment in each format).
pub const MARKER: &str = "Installed by `cloudmount integrate`";

const CORE: &str = include_str!("../integrations/cloudmount_fm.py");
const NAUTILUS: &str = include_str!("../integrations/nautilus/cloudmount-nautilus.py");
const NEMO: &str = include_str!("../integrations/nemo/cloudmount-nemo.py");
const CAJA: &str = include_str!("../integrations/caja/cloudmount-caja.py");
const DOLPHIN_MENU: &str = include_str!("../integrations/dolphin/cloudmount.desktop");
const DOLPHIN_SYNC: &str = include_str!("../integrations/dolphin/cloudmount-sync-folder.desktop");

/// The core module's name (the extensions import it by this name).
const CORE_FILE: &str = "cloudmount_fm.py";
/// The list of the bookmarks and places `integrate` added, beside the core module.
const MANIFEST: &str = "installed";

/// Where the file managers look: the XDG base directories of the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// `$XDG_DATA_HOME` (default `~/.local/share`).
    pub data_home: PathBuf,
    /// `$XDG_CONFIG_HOME` (default `~/.config`).
    pub config_home: PathBuf,
    /// The home directory (Dolphin's default places name it).
    pub home: PathBuf,
}

impl Places {
    /// From cloudmount's own directories (`$XDG_DATA_HOME/cloudmount`, …).
    pub fn from_dirs(dirs: &crate::config::Dirs) -> Places {
        let parent = |p: &Path| {
            p.parent()
                .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
        };
        Places {
            data_home: parent(&dirs.data),
            config_home: parent(&dirs.config),
            home: dirs.home.clone(),
        }
    }

    fn own_dir(&self) -> PathBuf {
        self.data_home.join("cloudmount").join("file-manager")
    }

    fn gtk_bookmarks(&self) -> PathBuf {
        self.config_home.join("gtk-3.0").join("bookmarks")
    }

    fn dolphin_places(&self) -> PathBuf {
        self.data_home.join("user-places.xbel")
    }

    /// The files `integrate` writes: (path, content template, executable).
    fn files(&self) -> Vec<(PathBuf, &'static str, bool)> {
        let d = &self.data_home;
        let menus = d.join("kio").join("servicemenus");
        vec![
            (self.own_dir().join(CORE_FILE), CORE, false),
            (
                d.join("nautilus-python/extensions/cloudmount-nautilus.py"),
                NAUTILUS,
                false,
            ),
            (
                d.join("nemo-python/extensions/cloudmount-nemo.py"),
                NEMO,
                false,
            ),
            (
                d.join("caja-python/extensions/cloudmount-caja.py"),
                CAJA,
                false,
            ),
            // KIO runs only service menus that are executable.
            (menus.join("cloudmount.desktop"), DOLPHIN_MENU, true),
            (
                menus.join("cloudmount-sync-folder.desktop"),
                DOLPHIN_SYNC,
                true,
            ),
        ]
    }
}

/// What to install.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `cloudmount` binary the menu entries run.
    pub binary: PathBuf,
    /// The mount points to show as favourites.
    pub mountpoints: Vec<PathBuf>,
}

/// One thing `integrate` did (or chose not to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file written (created or brought up to date).
    Wrote(PathBuf),
    /// A file of ours deleted.
    Removed(PathBuf),
    /// A mount point added as a favourite to a bookmarks file.
    Bookmarked { mountpoint: PathBuf, file: PathBuf },
    /// A favourite of ours taken out of a bookmarks file.
    Unbookmarked { mountpoint: PathBuf, file: PathBuf },
    /// The bookmarks file already had that mount point (it stays the user's).
    AlreadyBookmarked { mountpoint: PathBuf, file: PathBuf },
    /// A file at one of our names that `integrate` did not write: left alone.
    LeftAlone(PathBuf),
}

/// Why `integrate` failed.
#[derive(Debug, thiserror::Error)]
pub enum IntegrateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: only paths in UTF-8 can be written into the extensions", .0.display())]
    NotUtf8(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IntegrateError + '_ {
    move |source| IntegrateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Installs everything (again: it is idempotent) and returns what it did.
pub fn install(places: &Places, opts: &Options) -> Result<Vec<Change>, IntegrateError> {
    let bin = utf8(&opts.binary)?;
    let core_dir = places.own_dir();
    let core_dir_s = utf8(&core_dir)?;
    let core_path = core_dir.join(CORE_FILE);
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut changes = Vec::new();
    for (path, template, executable) in places.files() {
        let text = template
            .replace("\"@CLOUDMOUNT_BIN@\"", &py_str(bin))
            .replace("\"@CORE_DIR@\"", &py_str(core_dir_s))
            .replace(
                "@CORE_EXEC@",
                &format!("{} {}", exec_arg(python), exec_arg(utf8(&core_path)?)),
            );
        write_file(&path, &text, executable)?;
        changes.push(Change::Wrote(path));
    }
    let mut manifest = Manifest::read(&places.own_dir().join(MANIFEST))?;
    for mp in &opts.mountpoints {
        let uri = file_uri(mp);
        let gtk = places.gtk_bookmarks();
        changes.push(if add_gtk_bookmark(&gtk, &uri, &label(mp))? {
            manifest.add("gtk-bookmark", &uri);
            Change::Bookmarked {
                mountpoint: mp.clone(),
                file: gtk,
            }
        } else {
            Change::AlreadyBookmarked {
                mountpoint: mp.clone(),
                file: gtk,
            }
        });
        let xbel = places.dolphin_places();
        changes.push(
            if add_dolphin_place(&xbel, &uri, &label(mp), &places.home)? {
                manifest.add("dolphin-place", &uri);
                Change::Bookmarked {
                    mountpoint: mp.clone(),
                    file: xbel,
                }
            } else {
                Change::AlreadyBookmarked {
                    mountpoint: mp.clone(),
                    file: xbel,
                }
            },
        );
    }
    manifest.write()?;
    Ok(changes)
}

/// Takes away everything [`install`] put in place, and nothing else.
pub fn remove(places: &Places) -> Result<Vec<Change>, IntegrateError> {
    let mut changes = Vec::new();
    let manifest = Manifest::read(&places.own_dir().join(MANIFEST))?;
    for (kind, uri) in &manifest.entries {
        let mountpoint = path_of_uri(uri);
        let file = match kind.as_str() {
            "gtk-bookmark" => {
                let f = places.gtk_bookmarks();
                remove_gtk_bookmark(&f, uri)?.then_some(f)
            }
            "dolphin-place" => {
                let f = places.dolphin_places();
                remove_dolphin_place(&f, uri)?.then_some(f)
            }
            _ => None,
        };
        if let Some(file) = file {
            changes.push(Change::Unbookmarked { mountpoint, file });
        }
    }
    remove_ours(&manifest.path, &mut changes)?;
    for (path, _, _) in places.files() {
        remove_ours(&path, &mut changes)?;
        if let Some(dir) = path.parent() {
            remove_bytecode(dir, &path)?;
            remove_empty_dirs(dir, &places.data_home);
        }
    }
    Ok(changes)
}

/// The mount points to show as favourites: those of the config file's profiles, and the
/// cloudmount mounts of this user now.
pub fn mountpoints(
    config: Option<&crate::config::ConfigFile>,
    config_dir: &Path,
    dirs: &crate::config::Dirs,
) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<PathBuf> = Vec::new();
    for p in config.into_iter().flat_map(|c| c.profiles.values()) {
        if let Some(m) = &p.mountpoint {
            out.push(config_dir.join(dirs.expand(m)));
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    for e in crate::fuse::mounts::mounts().unwrap_or_default() {
        // Another user's FUSE mount cannot even be looked at (root included).
        let mine = std::fs::metadata(&e.mount_point).is_ok_and(|m| m.uid() == uid);
        if e.is_cloudmount() && mine {
            out.push(e.mount_point);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

// ---------------------------------------------------------------------------------------------
// Files

fn utf8(p: &Path) -> Result<&str, IntegrateError> {
    p.to_str()
        .ok_or_else(|| IntegrateError::NotUtf8(p.to_path_buf()))
}

/// A Python string literal.
fn py_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One argument of a desktop entry's `Exec` key: quoted as the Desktop Entry Specification
/// says, then escaped as a string value (`\` doubled, `%` as `%%`).
fn exec_arg(s: &str) -> String {
    let mut quoted = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted.replace('\\', "\\\\").replace('%', "%%")
}

/// Writes `path` whole (a temporary file renamed over it), creating its directory.
fn write_file(path: &Path, text: &str, executable: bool) -> Result<(), IntegrateError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mode = if executable { 0o755 } else { 0o644 };
    crate::atomic_file::write(path, text.as_bytes(), Some(mode)).map_err(io_err(path))
}

/// Whether `path` is a file `integrate` wrote (its first line has the marker).
fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| t.lines().next().is_some_and(|l| l.contains(MARKER)))
        .unwrap_or(false)
}

fn remove_ours(path: &Path, changes: &mut Vec<Change>) -> Result<(), IntegrateError> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    if !is_ours(path) {
        changes.push(Change::LeftAlone(path.to_path_buf()));
        return Ok(());
    }
    std::fs::remove_file(path).map_err(io_err(path))?;
    changes.push(Change::Removed(path.to_path_buf()));
    Ok(())
}

/// Removes what Python compiled from `source` (`__pycache__/NAME.*.pyc`).
fn remove_bytecode(dir: &Path, source: &Path) -> Result<(), IntegrateError> {
    let Some(stem) = source.file_stem().and_then(|s| s.to_str()) else {
        return Ok(());
    };
    let cache = dir.join("__pycache__");
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{stem}.")) && name.ends_with(".pyc") {
            std::fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
        }
    }
    let _ = std::fs::remove_dir(&cache);
    Ok(())
}

/// Removes `dir` and its parents while they are empty, stopping at `top`.
fn remove_empty_dirs(dir: &Path, top: &Path) {
    let mut at = Some(dir);
    while let Some(d) = at {
        if d == top || !d.starts_with(top) || std::fs::remove_dir(d).is_err() {
            break;
        }
        at = d.parent();
    }
}

// ---------------------------------------------------------------------------------------------
// Bookmarks

/// The bookmarks and places `install` added (so `remove` takes away only those).
struct Manifest {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl Manifest {
    fn read(path: &Path) -> Result<Manifest, IntegrateError> {
        let text = read_or_empty(path)?.unwrap_or_default();
        let entries = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Manifest {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn add(&mut self, kind: &str, uri: &str) {
        let e = (kind.to_string(), uri.to_string());
        if !self.entries.contains(&e) {
            self.entries.push(e);
        }
    }

    fn write(&self) -> Result<(), IntegrateError> {
        let mut text = format!(
            "# {MARKER}: the bookmarks it added, which `cloudmount integrate --remove` removes\n"
        );
        for (k, v) in &self.entries {
            text.push_str(&format!("{k} {v}\n"));
        }
        write_file(&self.path, &text, false)
    }
}

/// `file://` and the path, escaped as GLib escapes it.
pub fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_of_uri(uri: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let rest = uri.strip_prefix("file://").unwrap_or(uri);
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// The name a favourite shows: the mount point's folder name.
fn label(mountpoint: &Path) -> String {
    let name = mountpoint
        .file_name()
        .map_or_else(|| "cloudmount".into(), |n| n.to_string_lossy());
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn read_or_empty(path: &Path) -> Result<Option<String>, IntegrateError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Adds `URI LABEL` to GTK's bookmarks unless a line has that URI. Returns whether it added.
fn add_gtk_bookmark(file: &Path, uri: &str, label: &str) -> Result<bool, IntegrateError> {
    let text = read_or_empty(file)?.unwrap_or_default();
    if text.lines().any(|l| l.split(' ').next() == Some(uri)) {
        return Ok(false);
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{uri} {label}\n"));
    write_plain(file, &text)?;
    Ok(true)
}

fn remove_gtk_bookmark(file: &Path, uri: &str) -> Result<bool, IntegrateError> {
    let Some(text) = read_or_empty(file)? else {
        return Ok(false);
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| l.split(' ').next() != Some(uri))
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(false);
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_plain(file, &out)?;
    Ok(true)
}

/// Writes a file of the user's (keeping its permissions when it exists, and writing through a
/// symlink to it: dotfiles are often links into a repository).
fn write_plain(path: &Path, text: &str) -> Result<(), IntegrateError> {
    let resolved = std::fs::canonicalize(path);
    let path = resolved.as_deref().unwrap_or(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    crate::atomic_file::write(path, text.as_bytes(), Some(mode)).map_err(io_err(path))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn place_block(uri: &str, label: &str, icon: &str, system: bool) -> String {
    format!(
        " <bookmark href=\"{href}\">\n  <title>{title}</title>\n  <info>\n   \
         <metadata owner=\"http://freedesktop.org\">\n    <bookmark:icon name=\"{icon}\"/>\n   \
         </metadata>\n   <metadata owner=\"http://www.kde.org\">\n    <isSystemItem>{system}</isSystemItem>\n   \
         </metadata>\n  </info>\n </bookmark>\n",
        href = xml_escape(uri),
        title = xml_escape(label),
    )
}

/// Adds a place to Dolphin's places unless one has that URI. A places file that does not exist
/// yet is created with the places Dolphin starts with (it adds them only to an empty file).
fn add_dolphin_place(
    file: &Path,
    uri: &str,
    label: &str,
    home: &Path,
) -> Result<bool, IntegrateError> {
    let ours = place_block(uri, label, "folder-cloud", false);
    let text = match read_or_empty(file)? {
        Some(t) => {
            if t.contains(&format!("href=\"{}\"", xml_escape(uri))) {
                return Ok(false);
            }
            match t.rfind("</xbel>") {
                Some(at) => format!("{}{ours}{}", &t[..at], &t[at..]),
                // Not a places file we understand: leave it to Dolphin.
                None => return Ok(false),
            }
        }
        None => {
            let mut t = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE xbel>\n<xbel \
                 xmlns:bookmark=\"http://www.freedesktop.org/standards/desktop-bookmarks\" \
                 xmlns:mime=\"http://www.freedesktop.org/standards/shared-mime-info\" \
                 xmlns:kdepriv=\"http://www.kde.org/kdepriv\">\n",
            );
            t.push_str(&place_block(&file_uri(home), "Home", "user-home", true));
            t.push_str(&place_block("remote:/", "Network", "folder-network", true));
            t.push_str(&place_block("file:///", "Root", "folder-red", true));
            t.push_str(&place_block("trash:/", "Trash", "user-trash", true));
            t.push_str(&ours);
            t.push_str("</xbel>\n");
            t
        }
    };
    write_plain(file, &text)?;
    Ok(true)
}

fn remove_dolphin_place(file: &Path, uri: &str) -> Result<bool, IntegrateError> {
    let Some(text) = read_or_empty(file)? else {
        return Ok(false);
    };
    let open = format!("<bookmark href=\"{}\"", xml_escape(uri));
    let Some(start) = text.find(&open) else {
        return Ok(false);
    };
    let Some(len) = text[start..].find("</bookmark>") else {
        return Ok(false);
    };
    // From the start of the opening tag's line to the end of the closing tag's line.
    let from = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut to = start + len + "</bookmark>".len();
    if text[to..].starts_with('\n') {
        to += 1;
    }
    let out = format!("{}{}", &text[..from], &text[to..]);
    write_plain(file, &out)?;
    Ok(true)
}

#[cfg(test)]
#[path = "integrate_tests.rs"]
mod tests;
