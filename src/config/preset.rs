//! Presets: a service's known settings filled into a profile, so that one line says which
//! service it is. A value the profile gives itself always wins over the preset's.
//!
//! ```toml
//! [profiles.cloudme]
//! preset = "cloudme"
//! user = "alice"
//! password_file = "~/.config/cloudmount/cloudme.password"
//! ```
//!
//! `cloudme` (see `sync-anchors.md` §1 for what is confirmed):
//! - `url`: `https://webdav.cloudme.com/<user>/CloudDrive/` (the drive; the account answers
//!   Digest only, which the WebDAV client negotiates from the server's challenge);
//! - `sync_root`: `Documents` (CloudMe's sync area, `CloudDrive/Documents/`);
//! - `default_folders`: the blue folder `Documents/CloudMe` active at `~/Documents/CloudMe`;
//!   `Pictures`, `Music` and `Movies` (below `Documents/`, the server paths are unverified)
//!   registered inactive, upload-only and weekly, to be activated onto the XDG folders.

use super::defaults::DefaultFolderEntry;
use super::Profile;

/// The presets known, for messages.
pub const PRESETS: &[&str] = &["cloudme"];

/// CloudMe's WebDAV server.
pub const CLOUDME_WEBDAV: &str = "https://webdav.cloudme.com/";

/// Fills the preset's values into `profile` where it gives none; what was filled, one line
/// each (`key = value (preset NAME)`), for `cloudmount start` to say. No preset: nothing.
pub fn apply(profile: &mut Profile) -> Result<Vec<String>, String> {
    let Some(preset) = profile.preset.clone() else {
        return Ok(Vec::new());
    };
    match preset.to_ascii_lowercase().as_str() {
        "cloudme" => cloudme(profile),
        _ => Err(format!(
            "unknown preset {preset:?} (known: {})",
            PRESETS.join(", ")
        )),
    }
}

/// The CloudMe drive's WebDAV URL of `user`.
pub fn cloudme_url(user: &str) -> Result<String, String> {
    if user.is_empty() || user.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "user {user:?} is not a CloudMe user name (no `/`, not empty)"
        ));
    }
    let mut url = url::Url::parse(CLOUDME_WEBDAV).map_err(|e| e.to_string())?;
    url.path_segments_mut()
        .map_err(|()| "CloudMe's URL has no path".to_string())?
        .pop_if_empty()
        .push(user)
        .push("CloudDrive")
        .push("");
    Ok(url.to_string())
}

fn entry(name: &str, remote: &str, local: &str, media: bool) -> DefaultFolderEntry {
    DefaultFolderEntry {
        name: name.into(),
        remote: remote.into(),
        local: local.into(),
        mode: media.then(|| "upload-only".into()),
        schedule: media.then(|| "weekly".into()),
        active: Some(!media),
    }
}

/// CloudMe's default folders: the blue folder, active; the media folders, inactive.
pub fn cloudme_default_folders() -> Vec<DefaultFolderEntry> {
    vec![
        entry("CloudMe", "Documents/CloudMe", "~/Documents/CloudMe", false),
        entry("Pictures", "Documents/Pictures", "xdg:PICTURES", true),
        entry("Music", "Documents/Music", "xdg:MUSIC", true),
        entry("Movies", "Documents/Movies", "xdg:VIDEOS", true),
    ]
}

fn cloudme(p: &mut Profile) -> Result<Vec<String>, String> {
    let user = p.user.clone().ok_or_else(|| {
        "preset \"cloudme\" needs `user` (the CloudMe user name): its WebDAV URL is \
         https://webdav.cloudme.com/USER/CloudDrive/"
            .to_string()
    })?;
    let mut used = Vec::new();
    if p.url.is_none() && p.areas.is_empty() {
        let url = cloudme_url(&user)?;
        used.push(format!(
            "url = {url} (preset cloudme; Digest authentication expected)"
        ));
        p.url = Some(url);
    }
    if p.sync_root.is_none() {
        p.sync_root = Some("Documents".into());
        used.push("sync_root = Documents (preset cloudme)".into());
    }
    if p.default_folders.is_none() {
        p.default_folders = Some(cloudme_default_folders());
        used.push(
            "default_folders = CloudMe (Documents/CloudMe ⇄ ~/Documents/CloudMe, active); \
             Pictures, Music, Movies (inactive, upload-only, weekly, for the XDG folders) \
             (preset cloudme)"
                .into(),
        );
    }
    Ok(used)
}
