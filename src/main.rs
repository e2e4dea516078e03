//! The `cloudmount` command.
//!
//! Parses the command line and dispatches; the work is in the library. `mount` without
//! `--foreground` runs the daemon in the background by re-executing itself with a hidden
//! `--daemon-child` flag ([`cloudmount::daemon::background`]).
//!
//! `status` and the waiting of `unmount` ask the daemon over its control socket
//! ([`cloudmount::control`]).

mod cli;
mod integrate_cmd;
mod pin_cmd;
mod settings_cmd;
mod state_cmd;
mod sync_cmd;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, DemoArgs, MountArgs, ServeArgs, StatusArgs, UnmountArgs, PASSWORD_ENV};
use cloudmount::config::{self, Dirs};
use cloudmount::control::{self, report, ControlError};
use cloudmount::daemon::{self, background, demo, profile, UnmountOptions, WebDavFactory};
use cloudmount::fuse::mounts;
use cloudmount::instance::Instance;
use cloudmount::server::{self, ServeConfig};
use cloudmount::size::FormatSize;
use cloudmount::vfs::status::VfsStatus;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Mount(m) = &cli.command {
        if m.daemon_child {
            background::new_session();
        }
    }
    init_tracing(match &cli.command {
        Command::Demo(_)
        | Command::Unmount(_)
        | Command::Status(_)
        | Command::Sync(_)
        | Command::Settings(_)
        | Command::Stop(_)
        | Command::Pin(_)
        | Command::Unpin(_)
        | Command::Free(_)
        | Command::State(_)
        | Command::Integrate(_) => "warn",
        Command::Mount(_) | Command::Serve(_) | Command::Start(_) => "info",
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloudmount: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Mount(args) => mount(args, &runtime),
        Command::Unmount(args) => unmount(args, &runtime),
        Command::Status(args) => status(args, &runtime),
        Command::Demo(args) => demo(args, &runtime),
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Start(args) => sync_cmd::start(args, &runtime),
        Command::Stop(args) => sync_cmd::stop(args, &runtime),
        Command::Sync(args) => sync_cmd::sync(args, &runtime),
        Command::Settings(args) => settings_cmd::settings(args, &runtime),
        Command::Pin(args) => pin_cmd::pin(args, &runtime),
        Command::Unpin(args) => pin_cmd::unpin(args, &runtime),
        Command::Free(args) => pin_cmd::free(args, &runtime),
        Command::State(args) => state_cmd::state(args, &runtime),
        Command::Integrate(args) => integrate_cmd::integrate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::FAILURE,
        Err(Failure::Message(msg)) => {
            eprintln!("cloudmount: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// A failed command: a message for stderr, or one already reported elsewhere.
enum Failure {
    Message(String),
    Reported,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Message(e.to_string())
    }
}

type CmdResult = Result<(), Failure>;

/// A command's answer, one line on stdout. Command modules speak through these three; only
/// this file prints.
fn say(line: &str) {
    println!("{line}");
}

/// A command's answer as it is (the text holds its own line ends).
fn say_raw(text: &str) {
    print!("{text}");
}

/// What a command tells on the way (progress, warnings), one line on stderr.
fn note(line: &str) {
    eprintln!("{line}");
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`).
fn init_tracing(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn mount(args: MountArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let req = args.request()?;
    let cwd = std::env::current_dir()?;
    let cfg = config::resolve(&req, &dirs, &cwd, &|k| std::env::var(k).ok())?;
    if args.daemon_child {
        // Errors are logged, and reported to the parent, by the child itself.
        background::run_child(&cfg, rt).map_err(|_| Failure::Reported)
    } else if args.foreground {
        rt.block_on(async {
            let stop = daemon::stop_signals()?;
            let running = daemon::start(&cfg, &WebDavFactory).await?;
            for w in running.warnings() {
                eprintln!("cloudmount: warning: {w}");
            }
            running.serve(stop).await?;
            Ok(())
        })
    } else {
        background::spawn(&cfg, &dirs, daemon_child_args(), &mut |w| {
            eprintln!("cloudmount: warning: {w}")
        })?;
        Ok(())
    }
}

/// The arguments of the background daemon: this command line with `--daemon-child` after
/// `mount`.
fn daemon_child_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let at = args
        .iter()
        .position(|a| a == "mount")
        .map_or(args.len(), |p| p + 1);
    args.insert(at, "--daemon-child".into());
    args
}

fn unmount(args: UnmountArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    // --lazy detaches at once: the daemon uploads what is queued in the background.
    let finish_uploads = args.lazy && !args.no_wait;
    let queued = if finish_uploads {
        rt.block_on(control::query_status(&dirs.runtime, &args.mountpoint))
            .map(|s| s.queue.files)
            .ok()
    } else {
        if !args.no_wait {
            // What waits for the write-back delay is sent now, not after it.
            if let Err(e) = rt.block_on(control::send_now(&dirs.runtime, &args.mountpoint)) {
                tracing::debug!(error = %e, "the daemon did not take send_now (an older one?)");
            }
            rt.block_on(wait_for_uploads(&dirs.runtime, &args.mountpoint))?;
        }
        None
    };
    let done = daemon::unmount(
        &dirs.runtime,
        &args.mountpoint,
        UnmountOptions {
            lazy: args.lazy,
            finish_uploads,
        },
        &mut |pid| {
            eprintln!(
                "cloudmount: waiting for the daemon (pid {pid}) to finish its uploads and exit..."
            )
        },
    )?;
    if let Some(pid) = done
        .daemon_pid
        .filter(|p| args.lazy && cloudmount::instance::is_cloudmount_alive(*p))
    {
        let queue = match queued {
            Some(0) => None,
            Some(n) => Some(format!("the {} still queued", report::files(n))),
            None => finish_uploads.then(|| "what is still queued".to_string()),
        };
        let mp = done.mountpoint.display();
        match queue {
            Some(queue) => eprintln!(
                "cloudmount: detached {mp}; the daemon (pid {pid}) uploads {queue} in the \
                 background and serves the programs still using the mount; it exits when both \
                 are done (kill {pid} stops it sooner: what is left is uploaded at the next mount)"
            ),
            None => eprintln!(
                "cloudmount: detached {mp}; the daemon (pid {pid}) goes on serving the programs \
                 still using it and exits when the last one lets go"
            ),
        }
    }
    Ok(())
}

/// How often `unmount` asks for the queue while waiting.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often it writes a line when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Waits until the upload queue of the mount at `mountpoint` is empty, showing progress.
/// Returns at once when no daemon answers (an older or a dead one: unmount as before) or when
/// `mountpoint` is not a mount (`daemon::unmount` says so). Ctrl-C (or SIGTERM) fails.
async fn wait_for_uploads(runtime_dir: &Path, mountpoint: &Path) -> CmdResult {
    let mut status = match control::query_status(runtime_dir, mountpoint).await {
        Ok(s) => s,
        Err(e) => return not_waiting(e),
    };
    if nothing_waits(&status) {
        return Ok(());
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut progress = report::WaitProgress::new(&status);
    let mut display = WaitDisplay::new(&status);
    loop {
        let next = tokio::select! {
            _ = interrupt.recv() => None,
            _ = terminate.recv() => None,
            r = async {
                tokio::time::sleep(POLL_EVERY).await;
                control::query_status(runtime_dir, mountpoint).await
            } => Some(r),
        };
        let Some(next) = next else {
            display.clear();
            return Err(Failure::Message(format!(
                "interrupted: not unmounted; {} is still mounted and uploading ({} queued). \
                 Run cloudmount unmount again to wait, or add --no-wait to leave them for the \
                 next mount",
                mountpoint.display(),
                report::files(status.queue.files)
            )));
        };
        match next {
            Ok(s) => status = s,
            Err(e) => {
                display.clear();
                return not_waiting(e);
            }
        }
        progress.update(&status);
        if nothing_waits(&status) {
            display.finish();
            return Ok(());
        }
        display.update(&progress, &status);
    }
}

/// Whether nothing waits to reach the server: no file to upload, and no folder made, file
/// deleted or name moved offline still to replay.
fn nothing_waits(s: &VfsStatus) -> bool {
    s.queue.files == 0 && s.queue.namespace_ops == 0
}

/// When the queue cannot be read: unmount without waiting, warning if the daemon answered
/// badly (not when it is simply not there).
fn not_waiting(e: ControlError) -> CmdResult {
    match e {
        ControlError::NoDaemon { .. } | ControlError::Mount(_) => {
            tracing::debug!("not waiting for uploads: {e}")
        }
        e => eprintln!(
            "cloudmount: warning: cannot read the upload queue ({e}); unmounting without \
             waiting for it"
        ),
    }
    Ok(())
}

/// The progress of [`wait_for_uploads`]: a bar on a terminal, else a line now and then.
enum WaitDisplay {
    Bar(indicatif::ProgressBar),
    Lines { last: Instant },
}

impl WaitDisplay {
    fn new(s: &VfsStatus) -> Self {
        use std::io::IsTerminal;
        let ops = match s.queue.namespace_ops {
            0 => String::new(),
            n => format!(
                ", and {} made offline (mkdir, rm, mv) to send",
                report::count(n, "change", "changes")
            ),
        };
        eprintln!(
            "cloudmount: waiting for {} ({}) to upload{ops}; --no-wait to leave them for the \
             next mount, Ctrl-C to stop waiting{}",
            report::files(s.queue.files),
            FormatSize(s.queue.bytes),
            blocker_suffix(s)
        );
        if !std::io::stderr().is_terminal() {
            return WaitDisplay::Lines {
                last: Instant::now(),
            };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(s.queue.bytes),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "uploading [{bar:25}] {bytes}/{total_bytes} {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(report::waiting_message(s));
        bar.enable_steady_tick(Duration::from_millis(500));
        WaitDisplay::Bar(bar)
    }

    fn update(&mut self, p: &report::WaitProgress, s: &VfsStatus) {
        match self {
            WaitDisplay::Bar(bar) => {
                bar.set_length(p.total());
                bar.set_position(p.done());
                bar.set_message(report::waiting_message(s));
            }
            WaitDisplay::Lines { last } => {
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!(
                        "cloudmount: still waiting: {} ({}) left, {} uploaded{}",
                        report::files(s.queue.files),
                        FormatSize(s.queue.bytes),
                        FormatSize(p.done()),
                        blocker_suffix(s)
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        self.clear();
        eprintln!("cloudmount: all files uploaded; unmounting");
    }

    fn clear(&mut self) {
        if let WaitDisplay::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn blocker_suffix(s: &VfsStatus) -> String {
    report::blocker(s).map_or_else(String::new, |b| format!(" ({b})"))
}

/// `cloudmount status`: the daemon's status, as a summary or as its JSON.
fn status(args: StatusArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let Some(mountpoint) = &args.mountpoint else {
        return status_of_all(&dirs, args.json, rt);
    };
    let instance = Instance::find(&dirs.runtime, mountpoint)?;
    let answer = rt.block_on(control::query(&instance))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", answer.json)?;
    } else {
        write!(
            out,
            "{}",
            report::summary(instance.mountpoint(), &answer.status)
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `cloudmount status` with no mount point: one line for each cloudmount mount (or one JSON
/// array), asking each daemon this user can reach.
fn status_of_all(dirs: &Dirs, json: bool, rt: &Runtime) -> CmdResult {
    let entries: Vec<mounts::MountEntry> = mounts::mounts()?
        .into_iter()
        .filter(|e| e.is_cloudmount())
        .collect();
    let mut out = std::io::stdout().lock();
    let mut list = Vec::new();
    for e in &entries {
        let answer = Instance::find(&dirs.runtime, &e.mount_point)
            .map_err(|e| e.to_string())
            .and_then(|i| rt.block_on(control::query(&i)).map_err(|e| e.to_string()));
        if json {
            let mut v = serde_json::json!({
                "mountpoint": e.mount_point,
                "source": e.source,
            });
            match &answer {
                Ok(a) => v["status"] = serde_json::to_value(&a.status)?,
                Err(msg) => v["error"] = msg.clone().into(),
            }
            list.push(v);
            continue;
        }
        let line = match &answer {
            Ok(a) => report::one_line(&a.status),
            Err(msg) => format!("no answer: {msg}"),
        };
        writeln!(out, "{}  {}  {line}", e.mount_point.display(), e.source)?;
    }
    if json {
        writeln!(out, "{}", serde_json::Value::Array(list))?;
    } else if entries.is_empty() {
        writeln!(
            out,
            "no cloudmount mount; mount one with: cloudmount mount SOURCE MOUNTPOINT"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Quotes a path for a shell command line shown to the user.
fn sh_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn demo(args: DemoArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    mounts::check_fuse_available()?;
    let data = demo::data_dir(&dirs);
    let seeded = demo::prepare(&data)
        .map_err(|e| format!("cannot prepare the demo files in {}: {e}", data.display()))?;
    let mountpoint = match args.mountpoint {
        Some(p) => std::env::current_dir()?.join(p),
        None => demo::default_mountpoint(&dirs),
    };
    if !mountpoint.exists() {
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| format!("cannot create {}: {e}", mountpoint.display()))?;
    }
    rt.block_on(async {
        let password = demo::random_password()?;
        let server = demo::start_server(&data, &password).await?;
        let cfg = demo::mount_config(&dirs, &server.url(), &password, mountpoint)?;
        let pcfg = demo::profile_config(&dirs, cfg);
        let sync_dir = demo::ensure_sync_folder(&dirs, &pcfg.journal)
            .map_err(|e| format!("cannot set up the demo's sync folder: {e}"))?;
        let running = match profile::start(&pcfg).await {
            Ok(r) => r,
            Err(e) => {
                server.shutdown().await;
                return Err(Failure::from(e));
            }
        };
        let mp = pcfg
            .mount
            .as_ref()
            .map(|m| m.mountpoint.clone())
            .unwrap_or_default();
        print_demo_intro(&mp, &sync_dir, &data, &server.url(), !seeded.is_empty());
        for w in running.warnings() {
            eprintln!("cloudmount: warning: {w}");
        }
        let served = running.serve().await;
        server.shutdown().await;
        served?;
        println!("cloudmount demo: unmounted and stopped.");
        Ok(())
    })
}

fn print_demo_intro(mp: &Path, sync_dir: &Path, data: &Path, url: &str, fresh: bool) {
    let q = |rel: &str| sh_quote(&mp.join(rel));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "cloudmount demo: a local cloud is mounted at {mp}\n\
         \n  Cloud Drive/   your files\n  \
         Shared/        folders you share with others\n  \
         Following/     folders others share with you (read-only)\n\
         \n\
         The cloud is the embedded WebDAV server at {url}, serving {data}{seeded}.\n\
         \n\
         Try, in another terminal:\n  \
         ls -l {root}\n  \
         cat {readme}\n  \
         cp /etc/hostname {drive}\n  \
         getfattr -n user.cloudmount.state {readme}\n  \
         df -h {root}\n\
         \n\
         A sync folder, mirrored both ways as you change it:\n  \
         {sync} <-> {drive_sync}\n\
         \n\
         Try:\n  \
         cloudmount sync list\n  \
         echo hello > {sync}/new.txt; sleep 2; ls {drive_sync}\n  \
         echo edited > {drive_sync}/from-the-cloud.txt; sleep 8; ls {sync}\n\
         \n\
         Keep a folder on this device (it then reads with the server stopped too):\n  \
         cloudmount pin {docs} --wait\n  \
         getfattr -n user.cloudmount.state {notes}\n  \
         cloudmount status {root}\n\
         \n\
         File-manager menus, emblems and a bookmark: cloudmount integrate\n\
         \n\
         Press Ctrl-C here to unmount and stop.",
        mp = mp.display(),
        url = url,
        data = data.display(),
        seeded = if fresh { " (sample files added)" } else { "" },
        root = sh_quote(mp),
        readme = q("Cloud Drive/README.txt"),
        drive = q("Cloud Drive/"),
        sync = sh_quote(sync_dir),
        drive_sync = q("Cloud Drive/Sync Demo"),
        docs = q("Cloud Drive/Documents"),
        notes = q("Cloud Drive/Documents/notes.txt"),
    );
    let _ = out.flush();
}

async fn serve(args: ServeArgs) -> CmdResult {
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let auth = match (&args.user, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (Some(_), None) => {
            return Err(format!(
                "--user was given but {PASSWORD_ENV} is not set or empty; \
                 set the password in that environment variable (it is never taken from the \
                 command line)"
            )
            .into())
        }
        (None, Some(_)) => {
            tracing::warn!(
                "{PASSWORD_ENV} is set but --user is not: serving without authentication"
            );
            None
        }
        (None, None) => None,
    };

    // Install the handlers before announcing the address, so a signal sent right after the
    // announcement is never lost.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let handle = server::start(ServeConfig {
        root: args.dir.clone(),
        listen: args.listen,
        auth,
        quota: args.quota,
    })
    .await?;

    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "cloudmount serve: serving {} at {}",
        args.dir.display(),
        handle.url()
    );
    let _ = stdout.flush();
    drop(stdout);

    let name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{name} received, shutting down (send it again to stop at once)");
    tokio::select! {
        _ = handle.shutdown() => Ok(()),
        _ = sigterm.recv() => Err("stopped by a second signal".into()),
        _ = sigint.recv() => Err("stopped by a second signal".into()),
    }
}
