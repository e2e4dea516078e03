//! Command-line arguments: parsed into plain values, nothing else happens here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The environment variable `serve --user` reads the password from.
pub const PASSWORD_ENV: &str = "CLOUDMOUNT_PASSWORD";

/// Mount a WebDAV cloud account (CloudMe, Nextcloud, ownCloud, any RFC 4918 server) as a local
/// folder tree.
#[derive(Debug, Parser)]
#[command(name = "cloudmount", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a local directory over WebDAV (a test server and the demo's backend)
    #[command(
        long_about = "Serve a local directory over WebDAV.\n\n\
            A small WebDAV server (RFC 4918) for trying cloudmount without a cloud account and \
            for tests: range GETs, ETags (the same in headers and PROPFIND), atomic uploads (a \
            failed or refused PUT never leaves a partial file and never damages the old one), \
            optional Basic auth and an optional quota with RFC 4331 quota properties and \
            507 Insufficient Storage.\n\n\
            Once listening it prints one line on stdout:\n  \
            cloudmount serve: serving DIR at http://ADDR:PORT/\n\
            Logs go to stderr (filter with RUST_LOG, default \"info\"). SIGINT or SIGTERM stops \
            it, letting requests in flight finish.",
        after_help = "The password for --user is read from the environment variable \
            CLOUDMOUNT_PASSWORD, never from the command line (where other users could see it):\n  \
            CLOUDMOUNT_PASSWORD=secret cloudmount serve ~/served --user alice --quota 1G"
    )]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory to serve (must exist)
    pub dir: PathBuf,

    /// Address to listen on; port 0 picks a free port (printed on stdout)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:4918")]
    pub listen: SocketAddr,

    /// Require HTTP Basic auth as USER; the password comes from $CLOUDMOUNT_PASSWORD
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Quota for everything under DIR, e.g. 512M, 10G, 1.5GiB, 100000 (bytes); units are
    /// binary, 1K = 1024 bytes, with or without a B/iB suffix
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub quota: Option<u64>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    cloudmount::size::parse_size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_serve() {
        let cli = Cli::try_parse_from([
            "cloudmount",
            "serve",
            "/srv/x",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "alice",
            "--quota",
            "1.5G",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        assert_eq!(args.dir, PathBuf::from("/srv/x"));
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.user.as_deref(), Some("alice"));
        assert_eq!(args.quota, Some(3 << 29));
    }

    #[test]
    fn rejects_bad_quota_and_password_flag() {
        assert!(Cli::try_parse_from(["cloudmount", "serve", "/x", "--quota", "10X"]).is_err());
        // There is deliberately no way to pass the password as an argument.
        assert!(Cli::try_parse_from(["cloudmount", "serve", "/x", "--password", "p"]).is_err());
    }
}
