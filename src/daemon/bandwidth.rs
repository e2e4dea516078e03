//! A daemon's bandwidth limits: taken from the user's settings file when it starts (a mount's
//! `--upload-limit` / `--download-limit` win over the file), changed live by the `bandwidth`
//! control request that `cloudmount settings set` sends to every running daemon. They apply
//! to the process's buckets ([`Bandwidth::process`]), which every WebDAV client of the daemon
//! uses: all areas of the mount, its pins and its sync folders share them.

use std::collections::BTreeMap;

use crate::config::settings::{settings_file, UserSettings};
use crate::config::Dirs;
use crate::control::Response;
use crate::remote::throttle::{Bandwidth, Limits};

/// Sets the process's limits from the settings file, then from `upload` and `download` when
/// given. A settings file that cannot be read is logged and counts as no limit: it must not
/// keep the daemon from starting. Returns the limits in effect.
pub fn apply_at_start(upload: Option<u64>, download: Option<u64>) -> Limits {
    let from_file = Dirs::from_env()
        .map_err(|e| e.to_string())
        .and_then(|d| UserSettings::load(&settings_file(&d)).map_err(|e| e.to_string()));
    let mut limits = match from_file {
        Ok(s) => s.limits,
        Err(e) => {
            tracing::warn!(error = %e, "settings not read: no bandwidth limits");
            Limits::default()
        }
    };
    if let Some(u) = upload {
        limits.upload = u;
    }
    if let Some(d) = download {
        limits.download = d;
    }
    let bw = Bandwidth::process();
    if bw.limits() != limits {
        bw.set(limits);
    }
    limits
}

/// The answer to the `bandwidth` request: changes the limits given, live, then tells the
/// limits in effect, and the process's `pid` (one process may answer on two sockets: a
/// profile's daemon and its mount).
pub(crate) fn answer(upload: Option<u64>, download: Option<u64>) -> Response {
    let bw = Bandwidth::process();
    if upload.is_some() || download.is_some() {
        let now = bw.limits();
        bw.set(Limits {
            upload: upload.unwrap_or(now.upload),
            download: download.unwrap_or(now.download),
        });
    }
    let mut m = to_map(bw.limits());
    m.insert("pid".to_string(), std::process::id().to_string());
    Response::Settings(m)
}

/// The limits as the `bandwidth` request's answer holds them.
pub fn to_map(l: Limits) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("upload_limit".to_string(), l.upload.to_string()),
        ("download_limit".to_string(), l.download.to_string()),
    ])
}

/// The limits out of the `bandwidth` request's answer (`None`: not an answer of that form).
pub fn from_map(m: &BTreeMap<String, String>) -> Option<Limits> {
    Some(Limits {
        upload: m.get("upload_limit")?.parse().ok()?,
        download: m.get("download_limit")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_reads_back() {
        let l = Limits {
            upload: 5,
            download: 0,
        };
        assert_eq!(from_map(&to_map(l)), Some(l));
        assert_eq!(from_map(&BTreeMap::new()), None);
    }
}
