//! The `cloudmount` command.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, ServeArgs, PASSWORD_ENV};
use cloudmount::server::{self, ServeConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("cloudmount: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let auth = match (&args.user, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (Some(_), None) => {
            return Err(format!(
                "--user was given but {PASSWORD_ENV} is not set or empty; \
                 set the password in that environment variable (it is never taken from the \
                 command line)"
            ))
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
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;

    let handle = server::start(ServeConfig {
        root: args.dir.clone(),
        listen: args.listen,
        auth,
        quota: args.quota,
    })
    .await
    .map_err(|e| e.to_string())?;

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
        _ = sigterm.recv() => Err("stopped by a second signal".to_string()),
        _ = sigint.recv() => Err("stopped by a second signal".to_string()),
    }
}
