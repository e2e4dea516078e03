//! The commands of a profile's daemon: `start`, `stop` and `sync …`. Each but
//! `start --foreground` is a client of the daemon's control socket.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::cli::{ModeArg, ProfileArgs, ScheduleArg, StartArgs, StopArgs, SyncArgs, SyncCommand};
use crate::{note, say, say_raw, CmdResult, Failure};
use cloudmount::config::{self, Dirs, ProfileDaemonConfig};
use cloudmount::control::protocol::{SyncAdd, SyncSet};
use cloudmount::control::{self, ControlError, Request, Response};
use cloudmount::daemon::profile;
use cloudmount::size::FormatSize;
use cloudmount::sync::report::{self, AccountReport, FolderReport, FolderState};
use cloudmount::sync::{Mode, Schedule};

/// How long a control request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long `start` waits for the background daemon to answer.
const START_WAIT: Duration = Duration::from_secs(20);

fn mode(m: ModeArg) -> Mode {
    match m {
        ModeArg::Bidirectional => Mode::Bidirectional,
        ModeArg::UploadOnly => Mode::UploadOnly,
        ModeArg::DownloadOnly => Mode::DownloadOnly,
        ModeArg::NewFilesOnly => Mode::NewFilesOnly,
    }
}

fn schedule(s: ScheduleArg) -> Schedule {
    match s {
        ScheduleArg::Immediate => Schedule::Immediate,
        ScheduleArg::Daily => Schedule::Daily,
        ScheduleArg::Weekly => Schedule::Weekly,
    }
}

/// The profile's name and the socket of its daemon.
pub(crate) fn target(
    profile: Option<&str>,
    config: Option<&Path>,
) -> Result<(Dirs, String, PathBuf), Failure> {
    let dirs = Dirs::from_env()?;
    let cwd = std::env::current_dir()?;
    let name = config::pick_profile(profile, config, &dirs, &cwd)?;
    let socket = config::socket_of(&dirs, &name);
    Ok((dirs, name, socket))
}

/// Asks the daemon; a daemon that is not running gets the message that says how to start it.
pub(crate) fn ask(
    rt: &Runtime,
    name: &str,
    socket: &Path,
    request: &Request,
) -> Result<Response, Failure> {
    match rt.block_on(control::call(socket, None, request, TIMEOUT)) {
        Ok(a) => Ok(a.response),
        Err(ControlError::NoDaemon { .. }) => Err(Failure::Message(format!(
            "the daemon of profile {name} is not running; start it with: cloudmount start {name}"
        ))),
        Err(ControlError::Refused { message, .. }) => Err(Failure::Message(message)),
        Err(e) => Err(e.into()),
    }
}

fn answers(rt: &Runtime, socket: &Path) -> bool {
    rt.block_on(control::call(
        socket,
        None,
        &Request::SyncList,
        Duration::from_secs(2),
    ))
    .is_ok()
}

pub fn start(args: StartArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let cwd = std::env::current_dir()?;
    let name = config::pick_profile(args.profile.as_deref(), args.config.as_deref(), &dirs, &cwd)?;
    let cfg = config::resolve_profile_daemon(&name, args.config.as_deref(), &dirs, &cwd, &|k| {
        std::env::var(k).ok()
    })?;
    if answers(rt, &cfg.socket) {
        return Err(Failure::Message(format!(
            "the daemon of profile {name} is already running (stop it with: cloudmount stop {name})"
        )));
    }
    for line in &cfg.preset_used {
        note(&format!("cloudmount: {line}"));
    }
    if args.foreground {
        return run_foreground(&cfg, rt);
    }
    spawn_background(&cfg, &args, rt)?;
    note(&format!(
        "cloudmount: started the daemon of profile {name}{} (log: {})",
        cfg.mount
            .as_ref()
            .map(|m| format!(", mounted at {}", m.mountpoint.display()))
            .unwrap_or_default(),
        cfg.log.display()
    ));
    Ok(())
}

fn run_foreground(cfg: &ProfileDaemonConfig, rt: &Runtime) -> CmdResult {
    rt.block_on(async {
        let d = profile::start(cfg).await?;
        for w in d.warnings() {
            note(&format!("cloudmount: warning: {w}"));
        }
        d.serve().await?;
        Ok::<_, Failure>(())
    })
}

fn spawn_background(cfg: &ProfileDaemonConfig, args: &StartArgs, rt: &Runtime) -> CmdResult {
    if let Some(dir) = cfg.log.parent() {
        cloudmount::instance::ensure_private_dir(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("start").arg(&cfg.name).arg("--foreground");
    if let Some(c) = &args.config {
        cmd.arg("--config").arg(std::env::current_dir()?.join(c));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe and has no memory-safety preconditions.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let began = Instant::now();
    loop {
        if answers(rt, &cfg.socket) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(Failure::Message(format!(
                "the daemon stopped at once ({status}); its log says:\n{}",
                tail(&cfg.log, 5)
            )));
        }
        if began.elapsed() > START_WAIT {
            return Err(Failure::Message(format!(
                "the daemon did not answer within {START_WAIT:?}; see {}",
                cfg.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn stop(args: StopArgs, rt: &Runtime) -> CmdResult {
    let (_, name, socket) = target(args.profile.as_deref(), args.config.as_deref())?;
    ask(rt, &name, &socket, &Request::Stop)?;
    // Wait until it is gone (its transfers in flight end first).
    let began = Instant::now();
    while answers(rt, &socket) {
        if began.elapsed() > Duration::from_secs(60) {
            return Err(Failure::Message(format!(
                "the daemon of profile {name} is still running after 60 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    note(&format!("cloudmount: stopped the daemon of profile {name}"));
    Ok(())
}

/// A folder argument as the daemon knows it: an absolute path.
fn folder_key(p: &Path) -> Result<String, Failure> {
    let abs = std::env::current_dir()?.join(p);
    let abs = abs.canonicalize().unwrap_or(abs);
    Ok(abs.to_string_lossy().into_owned())
}

fn done(r: Response) -> CmdResult {
    match r {
        Response::Done { message } => {
            say(&message);
            Ok(())
        }
        other => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
    }
}

fn folders(rt: &Runtime, name: &str, socket: &Path) -> Result<Vec<FolderReport>, Failure> {
    match ask(rt, name, socket, &Request::SyncList)? {
        Response::SyncFolders(f) => Ok(f),
        other => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
    }
}

pub fn sync(args: SyncArgs, rt: &Runtime) -> CmdResult {
    let ProfileArgs { profile, config } = &args.profile;
    let (_, name, socket) = target(profile.as_deref(), config.as_deref())?;
    match args.command {
        SyncCommand::Add {
            dir,
            remote,
            area,
            mode: m,
            schedule: s,
            keep_deleted,
        } => {
            if keep_deleted && m != ModeArg::UploadOnly {
                return Err(Failure::Message(
                    "--keep-deleted is for upload-only folders (--mode upload-only)".into(),
                ));
            }
            let local = PathBuf::from(folder_key(&dir)?);
            done(ask(
                rt,
                &name,
                &socket,
                &Request::SyncAdd(SyncAdd {
                    local,
                    remote,
                    mode: mode(m),
                    schedule: schedule(s),
                    keep_deleted,
                    area,
                }),
            )?)
        }
        SyncCommand::List {
            json,
            following: true,
            ..
        } => list_following(rt, &name, &socket, json),
        SyncCommand::List { json, inactive, .. } => list(rt, &name, &socket, json, inactive),
        SyncCommand::Activate { name: folder, dir } => {
            let local = dir
                .as_deref()
                .map(folder_key)
                .transpose()?
                .map(PathBuf::from);
            done(ask(
                rt,
                &name,
                &socket,
                &Request::SyncActivate {
                    name: folder,
                    local,
                },
            )?)
        }
        SyncCommand::Forget { name: folder, yes } => {
            if !yes {
                confirm_forget(rt, &name, &socket, &folder)?;
            }
            done(ask(
                rt,
                &name,
                &socket,
                &Request::SyncForget { name: folder },
            )?)
        }
        SyncCommand::Now { dir, wait, confirm } => {
            let folder = dir.as_deref().map(folder_key).transpose()?;
            let r = ask(rt, &name, &socket, &Request::SyncNow { folder, confirm })?;
            let Response::SyncStarted(tickets) = r else {
                return Err(Failure::Message(format!("unexpected answer: {r:?}")));
            };
            if !wait {
                match tickets.len() {
                    1 => say("syncing 1 folder"),
                    n => say(&format!("syncing {n} folders")),
                }
                return Ok(());
            }
            wait_for(rt, &name, &socket, &tickets)
        }
        SyncCommand::Set {
            dir,
            mode: m,
            schedule: s,
            keep_deleted,
            delete_limit,
        } => {
            if m.is_none() && s.is_none() && keep_deleted.is_none() && delete_limit.is_none() {
                return Err(Failure::Message(
                    "nothing to change: give --mode, --schedule, --keep-deleted or --delete-limit"
                        .into(),
                ));
            }
            done(ask(
                rt,
                &name,
                &socket,
                &Request::SyncSet(SyncSet {
                    folder: folder_key(&dir)?,
                    mode: m.map(mode),
                    schedule: s.map(schedule),
                    keep_deleted,
                    delete_limit_percent: delete_limit,
                }),
            )?)
        }
        SyncCommand::Pause { dir } => done(ask(
            rt,
            &name,
            &socket,
            &Request::SyncPause {
                folder: folder_key(&dir)?,
            },
        )?),
        SyncCommand::Resume { dir } => done(ask(
            rt,
            &name,
            &socket,
            &Request::SyncResume {
                folder: folder_key(&dir)?,
            },
        )?),
        SyncCommand::Remove { dir } => {
            // A path that is not there may be the folder's name (`sync remove Projects`).
            let folder = if dir.exists() || dir.components().count() > 1 {
                folder_key(&dir)?
            } else {
                dir.to_string_lossy().into_owned()
            };
            done(ask(rt, &name, &socket, &Request::SyncRemove { folder })?)
        }
        SyncCommand::Conflicts { dir, json } => {
            let folder = dir.as_deref().map(folder_key).transpose()?;
            match ask(rt, &name, &socket, &Request::SyncConflicts { folder })? {
                Response::SyncConflicts(c) => {
                    if json {
                        say(&serde_json::to_string(&c)?);
                    } else if c.is_empty() {
                        say("No conflicts.");
                    } else {
                        for x in &c {
                            say(&format!(
                                "{}  {}\n    the server's version: {}\n    the other version:    {}",
                                report::local_time(x.at),
                                x.folder.join(&x.path).display(),
                                x.folder.join(&x.path).display(),
                                x.folder.join(&x.copy).display()
                            ));
                        }
                    }
                    Ok(())
                }
                other => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
            }
        }
    }
}

fn account(rt: &Runtime, name: &str, socket: &Path) -> Result<AccountReport, Failure> {
    match ask(rt, name, socket, &Request::SyncAccount)? {
        Response::SyncAccount(a) => Ok(*a),
        other => Err(Failure::Message(format!("unexpected answer: {other:?}"))),
    }
}

/// `sync list --following`: the folders of the profile's followed and shared areas.
fn list_following(rt: &Runtime, name: &str, socket: &Path, json: bool) -> CmdResult {
    let f = match ask(rt, name, socket, &Request::SyncFollowing)? {
        Response::SyncFollowing(f) => f,
        other => return Err(Failure::Message(format!("unexpected answer: {other:?}"))),
    };
    if json {
        say(&serde_json::to_string(&f)?);
    } else {
        say_raw(&report::format_following(&f));
    }
    Ok(())
}

/// `sync list`: this computer's folders, then the account's folders inactive here.
fn list(rt: &Runtime, name: &str, socket: &Path, json: bool, inactive: bool) -> CmdResult {
    if inactive {
        let mut a = account(rt, name, socket)?;
        if json {
            a.folders.retain(|f| !f.active_here);
            say(&serde_json::to_string(&a)?);
        } else {
            let text = report::inactive(&a, cloudmount::localtime::unix_now());
            if text.is_empty() {
                say("No folders of the account are inactive on this computer.");
            } else {
                say_raw(&text);
            }
        }
        return Ok(());
    }
    let f = folders(rt, name, socket)?;
    if json {
        say(&serde_json::to_string(&f)?);
        return Ok(());
    }
    // A daemon that keeps no registry still lists its own folders.
    let a = account(rt, name, socket).ok();
    let others = a
        .as_ref()
        .map_or(0, |a| a.folders.iter().filter(|f| !f.active_here).count());
    if f.is_empty() && others > 0 {
        say("No sync folders on this computer.");
    } else {
        say_raw(&report::list(&f));
    }
    if let Some(a) = &a {
        let text = report::inactive(a, cloudmount::localtime::unix_now());
        if !text.is_empty() {
            say("");
            say_raw(&text);
        }
    }
    Ok(())
}

/// Asks before `sync forget`, saying where the folder is active; refuses without a terminal.
fn confirm_forget(rt: &Runtime, name: &str, socket: &Path, folder: &str) -> CmdResult {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Message(format!(
            "sync forget removes {folder} from the account's sync folders on every computer; \
             confirm with --yes (no file is deleted)"
        )));
    }
    let a = account(rt, name, socket)?;
    let found = a
        .folders
        .iter()
        .find(|f| f.id == folder || f.name == folder || f.remote == folder.trim_matches('/'));
    let active = found
        .map(|f| {
            f.active
                .iter()
                .map(|o| format!("{} ({})", o.name(), o.local.display()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    note(&format!(
        "Forget {folder}? Every computer stops syncing it{}. No file is deleted, anywhere. [y/N] ",
        if active.is_empty() {
            String::new()
        } else {
            format!(" (active on: {})", active.join(", "))
        }
    ));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        Err(Failure::Message("nothing forgotten".into()))
    }
}

/// Waits until every folder of `tickets` has ended the run that covers the request, showing
/// progress; fails when one did not end in sync.
fn wait_for(rt: &Runtime, name: &str, socket: &Path, tickets: &[(String, u64)]) -> CmdResult {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
        {
            b.set_style(style);
        }
        b
    });
    let mut last_line = Instant::now();
    let began = Instant::now();
    loop {
        let all = folders(rt, name, socket)?;
        let mine: Vec<&FolderReport> = all
            .iter()
            .filter(|f| tickets.iter().any(|(id, _)| *id == f.id))
            .collect();
        let pending: Vec<&FolderReport> = mine
            .iter()
            .copied()
            .filter(|f| {
                // The run that covers the request has ended, and no later one is going on
                // (a change seen meanwhile starts another: wait for it too).
                tickets.iter().any(|(id, t)| *id == f.id && f.runs < *t)
                    || matches!(f.state, FolderState::Syncing | FolderState::Starting)
            })
            .collect();
        if pending.is_empty() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let mut failed = Vec::new();
            for f in &mine {
                let ok = matches!(f.state, FolderState::UpToDate | FolderState::Waiting)
                    && f.reason.is_none();
                let line = format!("{}: {}", f.local.display(), report::state_line(f));
                if ok {
                    say(&format!(
                        "{}: up to date ({})",
                        f.local.display(),
                        f.last_outcome.as_deref().unwrap_or("synced")
                    ));
                } else {
                    failed.push(line);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            return Err(Failure::Message(failed.join("\n")));
        }
        let (files, done_files, bytes, done_bytes) = pending.iter().fold((0, 0, 0, 0), |a, f| {
            (
                a.0 + f.files_total,
                a.1 + f.files_done,
                a.2 + f.bytes_total,
                a.3 + f.bytes_done,
            )
        });
        let msg = format!("{done_files} of {files} files");
        match &bar {
            Some(b) => {
                b.set_length(bytes);
                b.set_position(done_bytes.min(bytes));
                b.set_message(msg);
            }
            None if last_line.elapsed() >= Duration::from_secs(5)
                || began.elapsed() < Duration::from_millis(300) =>
            {
                note(&format!(
                    "cloudmount: syncing: {msg}, {} of {}",
                    FormatSize(done_bytes),
                    FormatSize(bytes)
                ));
                last_line = Instant::now();
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
