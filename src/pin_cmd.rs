//! `cloudmount pin`, `unpin` and `free`: clients of the control socket of the mount that holds
//! each path.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::cli::{PathsArgs, PinArgs};
use crate::{note, say, CmdResult, Failure};
use cloudmount::config::Dirs;
use cloudmount::control::{self, Request, Response};
use cloudmount::fuse::mounts;
use cloudmount::instance::Instance;
use cloudmount::size::FormatSize;
use cloudmount::vfs::pins::PinAnswer;
use cloudmount::vfs::status::{PinPhase, PinStatus};

/// How long one request may take: a pin lists the whole tree first.
const TIMEOUT: Duration = Duration::from_secs(600);

/// What to do instead, when a pin is asked of a path outside any mount.
const PIN_HINT: &str =
    "pins are files and folders of a mount; a local folder is kept in the cloud with `cloudmount sync add`";

/// The cloudmount mount holding `path`, and `path` below its mount point (`/`-separated);
/// outside any mount, an error that ends with `hint`.
pub(crate) fn locate(dirs: &Dirs, path: &Path, hint: &str) -> Result<(Instance, String), Failure> {
    let abs = std::fs::canonicalize(path)
        .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
    let mount = mounts::mounts()?
        .into_iter()
        .filter(|m| m.is_cloudmount() && abs.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .ok_or_else(|| {
            Failure::Message(format!(
                "{}: not inside a cloudmount mount ({hint})",
                path.display()
            ))
        })?;
    let rel = abs
        .strip_prefix(&mount.mount_point)
        .unwrap_or(Path::new(""))
        .to_str()
        .ok_or_else(|| {
            Failure::Message(format!("{}: the name is not valid UTF-8", path.display()))
        })?
        .to_string();
    Ok((Instance::new(&dirs.runtime, &mount.mount_point), rel))
}

fn ask(rt: &Runtime, instance: &Instance, request: &Request) -> Result<PinAnswer, Failure> {
    let answer = rt.block_on(control::call(
        instance.socket(),
        Some(instance.mountpoint().to_path_buf()),
        request,
        TIMEOUT,
    ))?;
    match answer.response {
        Response::Pinned(a) => Ok(a),
        other => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
    }
}

/// Runs `each` on every path; reports each failure and fails at the end if one did.
fn for_each<T>(
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(T) -> Result<(), Failure>,
) -> CmdResult {
    let mut failed = false;
    for item in items {
        if let Err(e) = each(item) {
            match e {
                Failure::Message(m) => note(&format!("cloudmount: {m}")),
                Failure::Reported => {}
            }
            failed = true;
        }
    }
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

pub fn pin(args: PinArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let mut waits = Vec::new();
    for_each(args.paths.iter(), |p| {
        let (instance, rel) = locate(&dirs, p, PIN_HINT)?;
        let a = ask(
            rt,
            &instance,
            &Request::Pin {
                path: rel,
                keep: true,
            },
        )?;
        say(&format!(
            "pinned {}: {}, {}{}",
            p.display(),
            cloudmount::control::report::files(a.files),
            FormatSize(a.bytes),
            if a.missing_bytes > 0 {
                format!(", {} to download", FormatSize(a.missing_bytes))
            } else {
                ", all on this device".to_string()
            }
        ));
        waits.push((instance, a.path, a.round, p.to_path_buf()));
        Ok(())
    })?;
    if !args.wait {
        return Ok(());
    }
    for_each(waits, |(instance, shown, round, local)| {
        wait_for(rt, &instance, &shown, round).map_err(|e| match e {
            Failure::Message(m) => Failure::Message(format!("{}: {m}", local.display())),
            reported => reported,
        })?;
        say(&format!("{}: all on this device", local.display()));
        Ok(())
    })
}

pub fn unpin(args: PathsArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    for_each(args.paths.iter(), |p| {
        let (instance, rel) = locate(&dirs, p, PIN_HINT)?;
        ask(
            rt,
            &instance,
            &Request::Pin {
                path: rel,
                keep: false,
            },
        )?;
        say(&format!(
            "unpinned {} (what is cached stays until the room is needed)",
            p.display()
        ));
        Ok(())
    })
}

pub fn free(args: PathsArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    for_each(args.paths.iter(), |p| {
        let (instance, rel) = locate(&dirs, p, PIN_HINT)?;
        let a = ask(rt, &instance, &Request::Free { path: rel })?;
        let busy = if a.busy_files > 0 {
            format!(
                "; {} open {} left cached",
                a.busy_files,
                if a.busy_files == 1 { "file" } else { "files" }
            )
        } else {
            String::new()
        };
        say(&format!(
            "freed {}: {} dropped from this device{busy}",
            p.display(),
            FormatSize(a.freed_bytes)
        ));
        Ok(())
    })
}

/// The pin `shown` (its path below the mount point) as the daemon reports it.
fn pin_status(rt: &Runtime, instance: &Instance, shown: &str) -> Result<PinStatus, Failure> {
    let answer = rt.block_on(control::query(instance))?;
    answer
        .status
        .pins
        .into_iter()
        .find(|p| p.path == shown)
        .ok_or_else(|| Failure::Message("the pin was removed meanwhile".into()))
}

/// Shows the progress of the pin `shown` until the keeper's round `round` (or a later one)
/// has found it complete; fails with the reason when the keeper cannot finish.
fn wait_for(rt: &Runtime, instance: &Instance, shown: &str, round: u64) -> CmdResult {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta} {msg}",
        ) {
            b.set_style(style);
        }
        b
    });
    let began = Instant::now();
    let mut last_line: Option<Instant> = None;
    loop {
        let s = pin_status(rt, instance, shown)?;
        let done = s.state == PinPhase::Complete && s.round >= round;
        if done || matches!(s.state, PinPhase::Error | PinPhase::Waiting) {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
        }
        if done {
            return Ok(());
        }
        match s.state {
            PinPhase::Error => {
                return Err(Failure::Message(format!(
                    "not complete: {}",
                    s.error.as_deref().unwrap_or("a download failed")
                )))
            }
            PinPhase::Waiting => {
                return Err(Failure::Message(format!(
                    "not complete: {} (the pin resumes by itself when the server answers)",
                    s.error.as_deref().unwrap_or("the server does not answer")
                )))
            }
            _ => {}
        }
        let msg = match s.state {
            PinPhase::Listing => "listing".to_string(),
            _ => format!("{} of {} files", s.files_done, s.files),
        };
        match &bar {
            Some(b) => {
                b.set_length(s.bytes);
                b.set_position(s.bytes_done.min(s.bytes));
                b.set_message(msg);
            }
            None if last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                && began.elapsed() >= Duration::from_millis(500) =>
            {
                note(&format!(
                    "cloudmount: pinning {shown}: {msg}, {} of {}",
                    FormatSize(s.bytes_done),
                    FormatSize(s.bytes)
                ));
                last_line = Some(Instant::now());
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
