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
/// keep the daemon from starting.
pub fn apply_at_start(upload: Option<u64>, download: Option<u64>) {
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
fn to_map(l: Limits) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("upload_limit".to_string(), l.upload.to_string()),
        ("download_limit".to_string(), l.download.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_both_limits() {
        let l = Limits {
            upload: 5,
            download: 0,
        };
        let m = to_map(l);
        assert_eq!(m.get("upload_limit").map(String::as_str), Some("5"));
        assert_eq!(m.get("download_limit").map(String::as_str), Some("0"));
    }
}
