//! `cloudmount settings`: the user's settings (the bandwidth limits, in the settings file, told
//! to every running daemon on `set`) and a profile's sync settings (`schedule.*`, kept by the
//! profile's daemon). Also the bandwidth line of `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::cli::{ProfileArgs, SettingsArgs, SettingsCommand};
use crate::sync_cmd::{ask, target};
use crate::{note, say, CmdResult, Failure};
use cloudmount::config::settings::{self, settings_file, UserSettings};
use cloudmount::config::Dirs;
use cloudmount::control::{self, ControlError, Request, Response};
use cloudmount::sync::store::SETTING_KEYS as SYNC_KEYS;

/// How long one daemon may take to answer a change of limits.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);

pub fn settings(args: SettingsArgs, rt: &Runtime) -> CmdResult {
    match args.command {
        None => show(&args.profile, &[], rt),
        Some(SettingsCommand::Show { keys }) => show(&args.profile, &keys, rt),
        Some(SettingsCommand::Set { pairs }) => set(&args.profile, &pairs, rt),
    }
}

fn unknown(key: &str) -> Failure {
    let known: Vec<&str> = settings::KEYS.iter().chain(SYNC_KEYS).copied().collect();
    Failure::Message(format!(
        "unknown setting {key:?}; known settings: {}",
        known.join(", ")
    ))
}

fn show(profile: &ProfileArgs, keys: &[String], rt: &Runtime) -> CmdResult {
    if let Some(k) = keys
        .iter()
        .find(|k| !settings::KEYS.contains(&k.as_str()) && !SYNC_KEYS.contains(&k.as_str()))
    {
        return Err(unknown(k));
    }
    let wanted = |k: &str| keys.is_empty() || keys.iter().any(|w| w == k);
    let dirs = Dirs::from_env()?;
    let user = UserSettings::load(&settings_file(&dirs))?;
    for (k, v) in user.entries() {
        if wanted(k) {
            say(&format!("{k} = {v}"));
        }
    }
    if !SYNC_KEYS.iter().any(|k| wanted(k)) {
        return Ok(());
    }
    // The sync settings live in the profile's daemon: asked when there is a profile.
    let explicit = profile.profile.is_some();
    let (_, name, socket) = match target(profile.profile.as_deref(), profile.config.as_deref()) {
        Ok(t) => t,
        Err(e) if explicit || !keys.is_empty() => return Err(e),
        Err(_) => return Ok(()),
    };
    match ask(rt, &name, &socket, &Request::Settings { set: None }) {
        Ok(Response::Settings(all)) => {
            for (k, v) in all.into_iter().filter(|(k, _)| wanted(k)) {
                say(&format!("{k} = {v}"));
            }
            Ok(())
        }
        Ok(other) => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
        Err(e) if explicit || !keys.is_empty() => Err(e),
        Err(Failure::Message(m)) => {
            note(&format!("cloudmount: sync settings not shown: {m}"));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn set(profile: &ProfileArgs, pairs: &[String], rt: &Runtime) -> CmdResult {
    if pairs.len() % 2 != 0 {
        return Err(Failure::Message(format!(
            "settings set takes KEY VALUE pairs; {:?} has no value",
            pairs[pairs.len() - 1]
        )));
    }
    let pairs: Vec<(&str, &str)> = pairs
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    // Every key and value is checked before anything changes.
    let dirs = Dirs::from_env()?;
    let path = settings_file(&dirs);
    let mut user = UserSettings::load(&path)?;
    let mut told = (None, None);
    let mut sync = Vec::new();
    for (k, v) in &pairs {
        if settings::KEYS.contains(k) {
            user.set(k, v)?;
            let l = user.limits;
            match *k {
                "upload_limit" => told.0 = Some(l.upload),
                _ => told.1 = Some(l.download),
            }
        } else if SYNC_KEYS.contains(k) {
            sync.push((k.to_string(), v.to_string()));
        } else {
            return Err(unknown(k));
        }
    }
    if told != (None, None) {
        user.save(&path)?;
        for (k, v) in user.entries() {
            say(&format!("{k} = {v}"));
        }
        tell_daemons(&dirs.runtime, told.0, told.1, rt);
    }
    if !sync.is_empty() {
        let (_, name, socket) = target(profile.profile.as_deref(), profile.config.as_deref())?;
        let mut last = None;
        for (k, v) in sync {
            last = Some(ask(
                rt,
                &name,
                &socket,
                &Request::Settings { set: Some((k, v)) },
            )?);
        }
        match last {
            Some(Response::Settings(all)) => {
                for (k, v) in all {
                    say(&format!("{k} = {v}"));
                }
            }
            Some(other) => return Err(Failure::Message(format!("unexpected answer: {other:?}"))),
            None => {}
        }
    }
    Ok(())
}

/// The control sockets of this user's daemons (mounts and profiles): the runtime directory's
/// `*.sock`.
fn sockets(runtime: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(runtime) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    out.sort();
    out
}

/// Tells every running daemon the new limits; says how many took them and which did not.
fn tell_daemons(runtime: &Path, upload: Option<u64>, download: Option<u64>, rt: &Runtime) {
    let request = Request::Bandwidth { upload, download };
    let mut pids = std::collections::BTreeSet::new();
    for socket in sockets(runtime) {
        match rt.block_on(control::call(&socket, None, &request, TELL_TIMEOUT)) {
            Ok(a) => {
                // A profile's daemon answers on its socket and its mount's: one daemon.
                let pid = match a.response {
                    Response::Settings(m) => m.get("pid").cloned(),
                    _ => None,
                };
                pids.insert(pid.unwrap_or_else(|| socket.display().to_string()));
            }
            // A socket left by a daemon that is gone.
            Err(ControlError::NoDaemon { .. }) => {}
            Err(e) => note(&format!(
                "cloudmount: warning: a daemon did not take the new limits ({e}); they apply \
                 to it from its next start"
            )),
        }
    }
    match pids.len() {
        0 => note("cloudmount: no daemon running; the limits apply from the next start"),
        1 => note("cloudmount: applied now to 1 running daemon"),
        n => note(&format!("cloudmount: applied now to {n} running daemons")),
    }
}
