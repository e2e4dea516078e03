//! Command-line arguments: parsed into plain values, nothing else happens here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use cloudmount::config::{ConfigError, MountRequest};

/// The environment variable `serve --user` reads the password from.
pub const PASSWORD_ENV: &str = cloudmount::config::PASSWORD_ENV;

/// Mount a WebDAV cloud account (CloudMe, Nextcloud, ownCloud, any RFC 4918 server) as a local
/// folder tree, and keep local folders in sync with it.
#[derive(Debug, Parser)]
#[command(
    name = "cloudmount",
    version,
    propagate_version = true,
    after_help = "Try it without an account: cloudmount demo"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a WebDAV URL or a profile of the config file
    #[command(
        long_about = "Mount a WebDAV URL or a profile of the config file at MOUNTPOINT.\n\n\
            SOURCE is an http:// or https:// URL (its folder becomes the root of the mount) or \
            the name of a profile in the config file (~/.config/cloudmount/config.toml, or \
            --config FILE); a profile with several areas shows each as a folder at the root.\n\n\
            File contents are fetched on demand into a disk cache (CACHE_DIR, at most \
            CACHE_SIZE of clean data, least recently used evicted first); the metadata is kept \
            there too, so a mount can start offline when the server is unreachable. Directory \
            listings are trusted for DIR_CACHE_TIME, then checked with the server again.\n\n\
            Without --foreground the command returns once the mount is live (exit status 0), \
            and the daemon goes on in the background, logging to \
            ~/.local/state/cloudmount/NAME.log. It fails with one line on stderr and a \
            non-zero status when the mount point is missing, not a directory or already \
            mounted, FUSE is not installed, the credentials are refused, the URL is not a \
            WebDAV collection, or the server is unreachable and nothing is cached.\n\n\
            See what it is doing (upload queue, errors, cache) with: cloudmount status \
            MOUNTPOINT\n\
            Stop it with: cloudmount unmount MOUNTPOINT (it waits for the upload queue first)",
        after_help = "The password is never taken from the command line. It comes from \
            --password-file FILE, the profile (password_file, password_env or password), or \
            the environment variable CLOUDMOUNT_PASSWORD. A password file (or a config file \
            holding a password) must be readable by its owner only (chmod 600).\n\n\
            -o takes comma-separated fstab-style options: ro, rw, allow_other, nopassthrough, user=USER, \
            password_file=FILE, cache_dir=DIR, cache_size=SIZE, dir_cache_time=DURATION, write_back_delay=DURATION, \
            upload_limit=RATE, download_limit=RATE, config=FILE; options mount(8) passes (defaults, noauto, nofail, _netdev, x-*, \
            user, users, exec, suid, dev, ...) are ignored. A flag wins over the same -o \
            option.\n\n\
            Examples:\n  \
            CLOUDMOUNT_PASSWORD=secret cloudmount mount https://dav.example.com/alice/ ~/Cloud --user alice\n  \
            cloudmount mount work ~/Cloud --cache-size 20G\n  \
            cloudmount mount https://dav.example.com/alice/ /mnt/cloud -o user=alice,password_file=/etc/cloudmount/alice.pw,ro"
    )]
    Mount(MountArgs),

    /// Unmount a cloudmount mount, first waiting until its upload queue is empty
    #[command(
        visible_alias = "umount",
        long_about = "Unmount the cloudmount mount at MOUNTPOINT, first waiting until every \
            file written there has been uploaded.\n\n\
            While files are queued for upload it shows the progress on stderr: a progress bar \
            of the bytes uploaded, the files left, and why uploads are stuck if they are (the \
            server is out of space, or a file keeps failing); when stderr is not a terminal, \
            one line at the start and one every 5 seconds. Writes made meanwhile join the \
            queue and are waited for too. Ctrl-C stops waiting: nothing is unmounted, the \
            mount stays live and keeps uploading, and the exit status is non-zero.\n\n\
            With --no-wait it unmounts at once: the files not uploaded yet stay in the cache \
            directory and are uploaded when the same cache is mounted again. `cloudmount \
            status MOUNTPOINT` shows what is queued.\n\n\
            Then it unmounts and waits until the daemon has finished the uploads in flight \
            and exited.\n\n\
            With --lazy it detaches the mount and returns at once, even when the mount is busy \
            or files are queued: the daemon uploads the queue in the background, serves the \
            programs still using the mount, and exits when both are done (with --no-wait too, \
            it leaves the queue for the next mount). A daemon that does not answer status requests (an older version, or \
            one that died) is not waited for; it is unmounted as before.\n\n\
            Fails when MOUNTPOINT is not a cloudmount mount, or when it is busy (a file is \
            open there, or a shell's working directory is inside): close those, or use --lazy \
            to detach it at once (the kernel finishes the unmount when the last file is \
            closed)."
    )]
    Unmount(UnmountArgs),

    /// Show a mount's connection, upload queue, upload errors, conflicts, quota and cache
    #[command(
        long_about = "Show what the cloudmount mount at MOUNTPOINT is doing, asked from its \
            daemon:\n  \
            - whether the server answers (online / offline, and the last error);\n  \
            - the upload queue: files changed on the mount and not yet on the server, their \
            size, how many are uploading now, and whether uploads are paused (the server is \
            out of space);\n  \
            - folder and name changes (mkdir, rmdir, rm, mv) made while the server could not \
            be reached, waiting to be sent to it (in order, before the uploads they concern), \
            and what their replay had to decide so that nothing was lost (a file changed on \
            the server is not deleted, a folder with new content is not removed);\n  \
            - files whose upload failed, with the reason and the attempts so far (they stay \
            queued and are retried);\n  \
            - conflicts: files changed both here and on the server; the server's version \
            keeps the name, yours is kept beside it as a conflicted copy;\n  \
            - the quota on the server, when it tells;\n  \
            - pinned files and folders (kept on this device) and how complete each is;\n  \
            - the local cache: used out of its budget, what pins keep (outside the budget), \
            and the changes kept until uploaded.\n\n\
            With --json it prints the daemon's JSON object, on one line, instead. Fails with \
            one line on stderr and a non-zero status when MOUNTPOINT is not a cloudmount \
            mount or its daemon does not answer.\n\n\
            Without MOUNTPOINT it lists every cloudmount mount, one line each: the mount \
            point, what is mounted there (cloudmount:PROFILE or cloudmount:URL) and its state \
            in a few words; with --json, one array of {mountpoint, source, status} (or \
            {mountpoint, source, error} for a daemon that does not answer).",
        after_help = "JSON fields: connection (\"online\", \"offline\", \"unknown\"), \
            last_error, queue {files, bytes, in_flight, in_flight_bytes, in_flight_sent, paused, \
            waiting_for_server, namespace_ops}, \
            errors [{path, reason, attempts}], conflicts [{path, copy, at}], \
            notices [{path, what, at}], \
            quota {used, available} (either may be null when the server gives only one) or \
            null when the server has told nothing (yet: it is asked in the background), \
            cache {used_bytes, budget_bytes, dirty_bytes, pinned_bytes}, pins [{path, state \
            (listing, downloading, complete, waiting, error), files, files_done, bytes, \
            bytes_done, error, checked_at}]. \
            Sizes are bytes, `at` is seconds since the Unix epoch, paths are relative to the \
            mount point.\n\n\
            Examples:\n  \
            cloudmount status ~/Cloud\n  \
            cloudmount status ~/Cloud --json | jq .queue.files"
    )]
    Status(StatusArgs),

    /// Keep files or folders of a mount on this device (pin): downloaded now, kept offline
    #[command(
        long_about = "Keep files or folders of a cloudmount mount on this device (\"always keep \
            on this device\"): everything below a pinned folder is downloaded in the \
            background and kept complete, offline too. Files that appear under it on the \
            server later are pinned as well; a file changed on the server is downloaded again \
            (checked every few minutes, and whenever a listing shows the change).\n\n\
            Pinned files never count against --cache-size and are never evicted. A pin that \
            would leave the local disk with less than 5 % (at most 1 GiB) free is refused.\n\n\
            With --wait it shows the download's progress and exits once everything is here; \
            it fails with the reason when it cannot finish (the server does not answer, a \
            file cannot be read). Without it, `cloudmount status MOUNTPOINT` shows the \
            progress.\n\n\
            The same from any program: setfattr -n user.cloudmount.pin -v 1 PATH. A file's \
            state (getfattr -n user.cloudmount.state) is `pinned` once all of it is here, \
            `pinning` before.",
        after_help = "Examples:\n  \
            cloudmount pin ~/Cloud/Projects --wait\n  \
            cloudmount unpin ~/Cloud/Projects\n  \
            cloudmount free ~/Cloud/Videos"
    )]
    Pin(PinArgs),

    /// Stop keeping files or folders on this device (they stay cached until the room is needed)
    #[command(
        long_about = "Stop keeping files or folders of a cloudmount mount on this device. What \
            is cached stays, and is evicted like any cached file when the cache needs the \
            room. Unpinning something inside a pinned folder makes it an exception: the rest \
            of the folder stays pinned."
    )]
    Unpin(PathsArgs),

    /// Free up space: unpin and drop the cached copies (changes not uploaded yet are kept)
    #[command(
        long_about = "Free up space: unpin files or folders of a cloudmount mount and drop their \
            cached copies, so they take no room on this device (they stay in the cloud and \
            are downloaded again when read). Files with changes not uploaded yet are never \
            dropped, and files open now are left (their count is shown)."
    )]
    Free(PathsArgs),

    /// Show the state of every file of a folder of a mount (online, cached, pinned, dirty...)
    #[command(
        long_about = "Show the state of every entry of a folder of a cloudmount mount, asked \
            from its daemon in one request: the word `getfattr -n user.cloudmount.state` gives \
            for each, from what this device knows (the server is never asked; a folder must \
            have been listed once).\n\n\
            States: online (on the server only; every folder not pinned), partial (some of it \
            is here), cached (all of it is here, may be evicted), pinned (kept on this \
            device), pinning (kept, still downloading), dirty (changed here, waiting for its \
            upload), uploading, error (its upload failed, it is retried), conflict (our \
            version, kept beside the server's).\n\n\
            Prints one line per entry, the state then the name, sorted by name. For a file, \
            the one line of that file. With --json, one object: {path, state, entries} where \
            path is the folder below the mount point, state the folder's own and entries maps \
            each name to its state (for a file: its path and state, no entries). The \
            file-manager extensions (cloudmount integrate) ask the same way for the folder \
            they show.",
        after_help = "Examples:\n  \
            cloudmount state ~/Cloud/Projects\n  \
            cloudmount state ~/Cloud/Projects --json | jq -r '.entries | to_entries[] | \
            select(.value == \"dirty\") | .key'"
    )]
    State(StateArgs),

    /// Start a profile's daemon: its sync folders, and its mount when the profile has a mountpoint
    #[command(
        long_about = "Start the daemon of a profile (an account of the config file): it runs the \
            profile's sync folders, and mounts the profile when it has a `mountpoint`.\n\n\
            Without --foreground it returns once the daemon answers, which goes on in the \
            background and logs to ~/.local/state/cloudmount/PROFILE-daemon.log. The systemd \
            user unit runs `cloudmount start PROFILE --foreground`.\n\n\
            PROFILE may be left out when the config file has one profile.\n\n\
            A profile with `preset = \"cloudme\"` and `user` needs no `url`: the values \
            the preset fills in (URL, sync_root, default folders) are printed at start. The \
            first start of a profile on a computer sets up its default folders (see README).",
        after_help = "Examples:\n  \
            cloudmount start work\n  \
            cloudmount sync add ~/Documents/CloudMe\n  \
            cloudmount stop work"
    )]
    Start(StartArgs),

    /// Stop a profile's daemon, after the transfers in flight
    Stop(StopArgs),

    /// Sync folders: local folders kept mirrored with folders in the cloud
    #[command(
        long_about = "Sync folders: any local folder kept mirrored with a folder on the server, \
            bidirectionally (the default: changes on either side reach the other, deletes \
            included) or upload-only (a backup: the server follows the local folder, and \
            nothing that happens on the server ever changes the local folder). A folder syncs \
            immediately (local changes are seen at once, the server is checked every \
            sync_poll_interval) or daily or weekly at the time of the settings \
            (`cloudmount settings`).\n\n\
            Sync folders run in the profile's daemon: start it with `cloudmount start PROFILE` \
            (or the systemd user unit). These commands talk to it.\n\n\
            Nothing is ever lost: a file changed on both sides keeps both versions (the \
            server's under the name, ours as `NAME (conflicted copy HOST DATE).EXT`); files the \
            sync deletes locally go to the trash; a folder that is missing or lost its \
            .cloudmount-sync marker (a disk not mounted) stops instead of deleting; a sync \
            that would delete more than half of one side pauses until `sync now --confirm`.\n\n\
            Sync folders belong to the account: a folder added here is registered in it \
            (.cloudmount/sync-folders.json below the profile's URL) and shows as inactive on \
            the account's other computers until `sync activate` there.",
        after_help = "Examples:\n  \
            cloudmount sync add ~/Documents/CloudMe\n  \
            cloudmount sync add ~/Music --mode upload-only --schedule weekly\n  \
            cloudmount sync list\n  \
            cloudmount sync now ~/Music --wait\n  \
            cloudmount sync set ~/Music --schedule daily\n  \
            cloudmount sync pause ~/Music\n  \
            cloudmount sync conflicts\n  \
            cloudmount sync activate Projects ~/work/Projects   # added on another computer\n  \
            cloudmount sync forget Projects"
    )]
    Sync(SyncArgs),

    /// Show or change the settings: bandwidth limits, and the schedule of a profile's sync folders
    #[command(
        long_about = "Show or change the settings.\n\n\
            Bandwidth limits, for everything a daemon sends (upload_limit) or receives \
            (download_limit): the mount's uploads and reads, pins, sync folders. One limit \
            per direction for each daemon, shared by all its transfers. They are kept in \
            $XDG_CONFIG_HOME/cloudmount/settings.toml, read by each daemon when it starts, \
            and `set` also tells the running daemons, which apply the new limit at once, \
            to transfers under way too. A mount's --upload-limit / --download-limit win \
            over the file for that mount until the next `settings set` of that key.\n\n\
            Keys:\n  \
            upload_limit    bytes per second, e.g. 2M, 500K, 1.5M (binary units: K = 1024); \
            0 (or off) is no limit (default 0)\n  \
            download_limit  likewise, for what is received (default 0)\n  \
            schedule.time   when daily and weekly folders run, HH:MM local time (default \
            03:00); kept by the profile's daemon\n  \
            schedule.day    the day weekly folders run (default sunday); kept by the \
            profile's daemon",
        after_help = "Examples:\n  \
            cloudmount settings show\n  \
            cloudmount settings set upload_limit 2M download_limit 0\n  \
            cloudmount settings get upload_limit\n  \
            cloudmount settings set schedule.time 03:00"
    )]
    Settings(SettingsArgs),

    /// Run a local demo cloud, mount it (three areas) and sync a folder with it, in the foreground
    #[command(
        long_about = "Run a local demo cloud and mount it, in the foreground.\n\n\
            Starts the embedded WebDAV server on 127.0.0.1 (a random port and password) over \
            ~/.local/share/cloudmount/demo, seeds it with sample files the first time, and \
            mounts it at MOUNTPOINT (default ~/cloudmount-demo, created if missing) with three \
            areas as folders: Cloud Drive, Shared and Following (read-only). Beside the mount \
            it syncs ~/cloudmount-demo-sync with Cloud Drive/Sync Demo (bidirectional, \
            immediate; `cloudmount sync list` shows it). It prints what to try and stays in the \
            foreground; Ctrl-C unmounts and stops it.\n\n\
            Needs FUSE (apt install fuse3)."
    )]
    Demo(DemoArgs),

    /// Serve a local directory over WebDAV (a test server and the demo's backend)
    #[command(
        long_about = "Serve a local directory over WebDAV.\n\n\
            A small WebDAV server (RFC 4918) for trying cloudmount without a cloud account, for \
            tests, and for reaching a folder from other devices: range GETs, ETags (the same in \
            headers and PROPFIND), atomic uploads (a failed or refused PUT never leaves a partial \
            file and never damages the old one), Basic auth and an optional quota with RFC 4331 \
            quota properties and 507 Insufficient Storage.\n\n\
            What it guarantees:\n  \
            - nothing outside DIR is reachable: symlinks are never followed (a path naming or \
            passing through one is 403 for every method; they are not listed or copied), `..` \
            in any spelling cannot climb above DIR, and a hard link is never written through;\n  \
            - no request crashes or wedges it: XML bodies are limited to 64 KiB and 64 levels \
            of nesting, request heads must arrive within 30 s, a request body that stalls for \
            60 s is answered 408, and at most 512 connections are served at once (more wait);\n  \
            - PROPFIND needs Depth 0 or 1 (infinity is refused with 403, as Apache does).\n\
            Locks are real (exclusive and shared, a writer without the lock token gets 423), \
            held in memory, and expire after at most 10 minutes unless refreshed. Properties \
            set with PROPPATCH are stored in hidden .cloudmount-props-NAME files beside their \
            files and follow them through MOVE, COPY and DELETE.\n\n\
            Once listening it prints one line on stdout:\n  \
            cloudmount serve: serving DIR at http://ADDR:PORT/\n\
            Logs go to stderr (filter with RUST_LOG, default \"info\"). SIGINT or SIGTERM stops \
            it, letting requests in flight finish.",
        after_help = "The password for --user is read from the environment variable \
            CLOUDMOUNT_PASSWORD, never from the command line (where other users could see it):\n  \
            CLOUDMOUNT_PASSWORD=secret cloudmount serve ~/served --user alice --quota 1G\n\n\
            Exposing it beyond this machine: --user is required for any --listen address that \
            is not loopback. The server speaks plain HTTP, so Basic auth and the files cross \
            the network readable: put it behind a TLS reverse proxy (Caddy, nginx, Apache) \
            listening publicly while serve listens on 127.0.0.1, and have the proxy pass the \
            original Host header on (COPY and MOVE check their Destination against it)."
    )]
    Serve(ServeArgs),

    /// Add the drive to the file managers: menu entries, state emblems and a bookmark
    #[command(
        long_about = "Add the drive to the file managers of the current user.\n\n\
            Installs extensions for Nautilus, Nemo and Caja (they need python3-nautilus, \
            nemo-python or python3-caja) and a Dolphin service menu: each file of a mount shows \
            its state as an emblem (on this device, always on this device, syncing, error) \
            and its menu has Keep on this device, Don't keep on this device and Free up space; \
            a local folder's menu has Add as sync folder. Each mount point (of the profiles, \
            and those mounted now) becomes a bookmark in the sidebar.\n\n\
            Files go where the file managers read them ($XDG_DATA_HOME, default \
            ~/.local/share, and $XDG_CONFIG_HOME/gtk-3.0/bookmarks). Running it again brings \
            them up to date. Restart the file manager afterwards (nautilus -q).",
        after_help = "Examples:\n  \
            cloudmount integrate\n  \
            cloudmount integrate --remove"
    )]
    Integrate(IntegrateArgs),
}

#[derive(Debug, Args)]
pub struct IntegrateArgs {
    /// Take away what `integrate` installed (and nothing else)
    #[arg(long)]
    pub remove: bool,

    /// Config file whose profiles' mount points become bookmarks
    /// [default: ~/.config/cloudmount/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// An http(s):// URL of a WebDAV folder, or the name of a profile in the config file
    pub source: String,

    /// An existing empty directory; may be omitted when the profile sets `mountpoint`
    pub mountpoint: Option<PathBuf>,

    /// User name on the server (the password is never an argument: see below)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Read the password from FILE (first line; the file must be chmod 600)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Cache directory [default: ~/.cache/cloudmount/<profile, or user@host-path>]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Budget of cached file contents, e.g. 512M, 10G (binary units) [default: 10G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub cache_size: Option<u64>,

    /// How long a directory listing is trusted before it is checked with the server again,
    /// e.g. 30s, 5m, 1h, or seconds [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub dir_cache_time: Option<Duration>,

    /// How long a closed file waits before its upload starts, so that a file rewritten or
    /// deleted right away is uploaded once or not at all, e.g. 0, 500ms, 5s [default: 500ms]. The
    /// data is on local disk when close() returns either way.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub write_back_delay: Option<Duration>,

    /// Internal (tests): how often uploads paused by a full server (HTTP 507) are tried again
    /// [default: 30s]
    #[arg(long, hide = true, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub space_retry: Option<Duration>,

    /// Most this mount's daemon sends, per second: e.g. 2M, 500K (binary units, bytes per
    /// second); 0 is no limit [default: the `upload_limit` setting, see `cloudmount settings`]
    #[arg(long, value_name = "RATE", value_parser = parse_limit_arg)]
    pub upload_limit: Option<u64>,

    /// Most this mount's daemon receives, per second, as --upload-limit [default: the
    /// `download_limit` setting]
    #[arg(long, value_name = "RATE", value_parser = parse_limit_arg)]
    pub download_limit: Option<u64>,

    /// Mount read-only
    #[arg(long)]
    pub read_only: bool,

    /// Stay in the foreground (logs on stderr) instead of running as a background daemon
    #[arg(long, short = 'f')]
    pub foreground: bool,

    /// Let other users see the mount (without root, needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,

    /// Mount even over a directory that holds files (they are hidden until the unmount);
    /// without it such a mount point is refused
    #[arg(long)]
    pub allow_non_empty: bool,

    /// In read-only mounts and areas, never let the kernel read cached large files directly
    /// (FUSE passthrough, used when run as root on Linux 6.9 or later): every read then goes
    /// through the daemon and the kernel's page cache
    #[arg(long)]
    pub no_passthrough: bool,

    /// fstab-style options, comma-separated (see below); may be repeated
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,

    /// Config file [default: $XDG_CONFIG_HOME/cloudmount/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Internal: run as the background daemon started by `mount`, report readiness on stdout
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

impl MountArgs {
    /// The request of these arguments: flags first, then `-o` options for what is still unset.
    pub fn request(&self) -> Result<MountRequest, ConfigError> {
        let mut req = MountRequest {
            source: self.source.clone(),
            mountpoint: self.mountpoint.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            cache_dir: self.cache_dir.clone(),
            cache_size: self.cache_size,
            dir_cache_time: self.dir_cache_time,
            write_back_delay: self.write_back_delay,
            space_retry: self.space_retry,
            read_only: self.read_only.then_some(true),
            allow_other: self.allow_other.then_some(true),
            passthrough: self.no_passthrough.then_some(false),
            allow_non_empty: self.allow_non_empty.then_some(true),
            config: self.config.clone(),
            upload_limit: self.upload_limit,
            download_limit: self.download_limit,
        };
        for opts in &self.options {
            req.apply_options(opts)?;
        }
        Ok(req)
    }
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// Where the cloudmount mount is
    pub mountpoint: PathBuf,

    /// Detach and return at once, even if busy or files are queued: the daemon uploads them in
    /// the background and exits when that is done and the last file is closed
    #[arg(long, short = 'z')]
    pub lazy: bool,

    /// Do not wait for the upload queue: files not uploaded yet stay in the cache and are
    /// uploaded at the next mount
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the cloudmount mount is; without it, one line for each cloudmount mount
    pub mountpoint: Option<PathBuf>,

    /// Print the status as one JSON object instead of a summary
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Files or folders inside a cloudmount mount
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    /// Show the download's progress and wait until everything is on this device
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// A folder (or a file) inside a cloudmount mount
    pub path: PathBuf,

    /// Print one JSON object instead of a line per entry
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PathsArgs {
    /// Files or folders inside a cloudmount mount
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Which profile, and which config file.
#[derive(Debug, Args, Clone)]
pub struct ProfileArgs {
    /// The profile (may be left out when the config file has one)
    #[arg(long, short = 'p', value_name = "NAME")]
    pub profile: Option<String>,

    /// Config file [default: ~/.config/cloudmount/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The profile (may be left out when the config file has one)
    pub profile: Option<String>,

    /// Config file [default: ~/.config/cloudmount/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Stay in the foreground (logs on stderr)
    #[arg(long, short = 'f')]
    pub foreground: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The profile (may be left out when the config file has one)
    pub profile: Option<String>,

    /// Config file [default: ~/.config/cloudmount/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,

    #[command(subcommand)]
    pub command: SyncCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Changes on either side reach the other, deletes included
    Bidirectional,
    /// A backup: the server follows the local folder; the local folder is never changed
    UploadOnly,
    /// A mirror: the local folder follows the server, nothing is ever sent (the mode of every
    /// folder of a read-only area)
    DownloadOnly,
    /// A drop box of a followed or shared area (CloudMe's WebShare+): only new files and
    /// folders are sent; a local edit goes up as a conflict copy, a local delete is undone;
    /// server changes come down
    #[value(alias = "new-files")]
    NewFilesOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// As soon as something changes
    Immediate,
    /// Once a day at schedule.time
    Daily,
    /// Once a week on schedule.day at schedule.time
    Weekly,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Add a local folder (created if missing) and start syncing it
    #[command(
        after_help = "The server folder is, by default, one of the same name under the profile's \
            sync_root (a path below its URL); --remote PATH chooses another (below the URL). \
            A first sync of two folders that both hold files overwrites nothing: equal files \
            are adopted, different ones kept as conflict copies.\n\n\
            Followed and shared folders: --area NAME syncs a folder of another area of the \
            profile (`sync list --following` lists them), e.g. \
            `cloudmount sync add ~/Bob --area Following --remote 'Bob/Photos'`. A folder of a \
            read-only area is download-only: nothing is ever sent; a local edit is kept as a \
            conflict copy here and the server's version comes back under the name, a local \
            delete brings the server's file back, a new local file stays here only (reported). \
            A drop box that takes new files but no changes (CloudMe's WebShare+) syncs with \
            --mode new-files-only: new files and folders go up, a local edit goes up as a \
            conflict copy while the server's version comes back, a local delete is undone; a \
            followed folder whose server refuses a change but took a new file switches to it \
            by itself (to download-only when it takes nothing)."
    )]
    Add {
        dir: PathBuf,
        /// Server folder, a path below the profile's URL (or below the area's, with --area)
        #[arg(long, value_name = "PATH")]
        remote: Option<String>,
        /// The profile's area the server folder is in (default: the main one)
        #[arg(long, value_name = "NAME")]
        area: Option<String>,
        #[arg(long, value_enum, default_value = "bidirectional")]
        mode: ModeArg,
        #[arg(long, value_enum, default_value = "immediate")]
        schedule: ScheduleArg,
        /// Upload-only: a file deleted here stays on the server
        #[arg(long)]
        keep_deleted: bool,
    },
    /// List the sync folders with their state, and the account's folders inactive here
    #[command(
        after_help = "The sync folders of this computer, then those of the account (added on \
            other computers) that are inactive here, with where and when they were added.\n\n\
            JSON (--json): an array of this computer's folders {id, local, remote, mode, \
            schedule, keep_deleted, delete_limit_percent, state, reason, next_run, last_sync, \
            last_outcome, runs, files_total, files_done, bytes_total, bytes_done, problems \
            [{path, reason, attempts}], conflicts}; with --inactive, the account's folders \
            instead: {computer, host, folders [{id, name, remote, mode, schedule, added_by, \
            added_at, active_here, active [{computer, host, local, since}]}], pending, read_at, \
            error}; with --following, the followed and shared folders: [{area, remote, \
            read_only, synced [{remote, local}]}]; times in seconds since the epoch."
    )]
    List {
        #[arg(long)]
        json: bool,
        /// Only the account's folders that are inactive on this computer
        #[arg(long)]
        inactive: bool,
        /// The folders of the profile's followed and shared areas (each area's top-level
        /// folders), marking those synced here
        #[arg(long, conflicts_with = "inactive")]
        following: bool,
    },
    /// Start syncing here a folder of the account added on another computer
    #[command(
        after_help = "NAME is the folder's name as `sync list` shows it (or its server path, or \
            its id). LOCAL_DIR defaults to ~/NAME; it is created when missing. Files already in \
            LOCAL_DIR are kept: the first sync merges both sides and overwrites nothing (files \
            that differ are kept as conflict copies)."
    )]
    Activate {
        name: String,
        #[arg(value_name = "LOCAL_DIR")]
        dir: Option<PathBuf>,
    },
    /// Remove a folder from the account's sync folders, on every computer; deletes nothing
    #[command(
        after_help = "Every computer stops syncing the folder (this one at once, the others when \
            they next read the account's list); no file is deleted, here, there or on the \
            server. Asks for confirmation unless --yes."
    )]
    Forget {
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Sync a folder (or all) now
    #[command(
        after_help = "Exit status with --wait: 0 when the folder is in sync, 1 when the sync \
            failed, stopped (see the message) or left files unsynced."
    )]
    Now {
        dir: Option<PathBuf>,
        /// Wait until it is done, with progress
        #[arg(long)]
        wait: bool,
        /// Let a sync paused for deleting too much go ahead
        #[arg(long)]
        confirm: bool,
    },
    /// Change a folder's mode, schedule or delete limit
    Set {
        dir: PathBuf,
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[arg(long, value_enum)]
        schedule: Option<ScheduleArg>,
        /// Upload-only: keep files deleted here on the server (true/false)
        #[arg(long, value_name = "BOOL")]
        keep_deleted: Option<bool>,
        /// Pause for confirmation when a sync would delete more than this share of one side
        #[arg(long, value_name = "PERCENT")]
        delete_limit: Option<u8>,
    },
    /// Pause a folder
    Pause { dir: PathBuf },
    /// Resume a paused folder
    Resume { dir: PathBuf },
    /// Stop syncing a folder on this computer; deletes nothing, anywhere (the other computers
    /// where it is active keep syncing it)
    Remove {
        /// The local folder, or the folder's name as `sync list` shows it
        #[arg(value_name = "DIR|NAME")]
        dir: PathBuf,
    },
    /// List the conflicts kept as two versions
    Conflicts {
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,

    #[command(subcommand)]
    pub command: Option<SettingsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the settings (all, or the KEYs given)
    #[command(visible_alias = "get")]
    Show { keys: Vec<String> },
    /// Change settings: KEY VALUE, as many pairs as wanted
    Set {
        #[arg(value_name = "KEY VALUE", num_args = 2.., required = true)]
        pairs: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to mount the demo [default: ~/cloudmount-demo]
    pub mountpoint: Option<PathBuf>,
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

fn parse_limit_arg(s: &str) -> Result<u64, String> {
    cloudmount::config::settings::parse_limit(s)
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    cloudmount::config::parse_duration(s).map_err(|e| e.to_string())
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
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
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
        assert!(
            Cli::try_parse_from(["cloudmount", "mount", "w", "/m", "--password", "p"]).is_err()
        );
    }

    fn mount_args(argv: &[&str]) -> MountArgs {
        let mut full = vec!["cloudmount", "mount"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Mount(m) => m,
            other => panic!("not mount: {other:?}"),
        }
    }

    #[test]
    fn parses_mount_flags_and_options() {
        let m = mount_args(&[
            "https://h/dav/",
            "/mnt/c",
            "--user",
            "alice",
            "--cache-size",
            "512M",
            "--dir-cache-time",
            "5m",
            "-f",
            "-o",
            "ro,cache_dir=/var/c,user=ignored",
            "-o",
            "allow_other",
        ]);
        assert!(m.foreground);
        let r = m.request().unwrap();
        assert_eq!(r.source, "https://h/dav/");
        assert_eq!(r.mountpoint, Some(PathBuf::from("/mnt/c")));
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.cache_size, Some(512 << 20));
        assert_eq!(r.dir_cache_time, Some(Duration::from_secs(300)));
        assert_eq!(r.read_only, Some(true));
        assert_eq!(r.allow_other, Some(true));
        assert_eq!(r.cache_dir, Some(PathBuf::from("/var/c")));

        // mount(8) order: SOURCE DIR -o OPTS, with its own options mixed in.
        let m = mount_args(&[
            "work",
            "/mnt/w",
            "-o",
            "rw,noauto,_netdev,x-systemd.automount",
        ]);
        let r = m.request().unwrap();
        assert_eq!(r.read_only, Some(false));
        assert_eq!(r.passthrough, None);
        assert!(!m.daemon_child);
        let m = mount_args(&["work", "/mnt/w", "--no-passthrough"]);
        assert_eq!(m.request().unwrap().passthrough, Some(false));

        let m = mount_args(&["work"]);
        assert_eq!(m.mountpoint, None);
        assert!(mount_args(&["w", "/m", "-o", "bogus"]).request().is_err());
        assert_eq!(m.request().unwrap().space_retry, None);

        // Hidden, for tests: how often a mount paused by a full server probes it.
        let m = mount_args(&["w", "/m", "--space-retry", "1s"]);
        assert_eq!(
            m.request().unwrap().space_retry,
            Some(Duration::from_secs(1))
        );
        let help = Cli::command()
            .find_subcommand_mut("mount")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!help.contains("space-retry"), "{help}");
    }

    #[test]
    fn mount_rejects_bad_size_and_duration() {
        for argv in [
            ["cloudmount", "mount", "w", "/m", "--cache-size", "10X"],
            ["cloudmount", "mount", "w", "/m", "--dir-cache-time", "soon"],
        ] {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        }
    }

    #[test]
    fn unmount_and_demo() {
        let cli = Cli::try_parse_from(["cloudmount", "umount", "-z", "/mnt/c"]).unwrap();
        let Command::Unmount(u) = cli.command else {
            panic!("not unmount")
        };
        assert!(u.lazy);
        assert!(!u.no_wait);
        assert_eq!(u.mountpoint, PathBuf::from("/mnt/c"));
        let cli = Cli::try_parse_from(["cloudmount", "unmount", "--no-wait", "/mnt/c"]).unwrap();
        let Command::Unmount(u) = cli.command else {
            panic!("not unmount")
        };
        assert!(u.no_wait && !u.lazy);
        let cli = Cli::try_parse_from(["cloudmount", "status", "/mnt/c", "--json"]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        assert!(st.json);
        assert_eq!(st.mountpoint, Some(PathBuf::from("/mnt/c")));
        // No mount point: every mount.
        let cli = Cli::try_parse_from(["cloudmount", "status"]).unwrap();
        let Command::Status(st) = cli.command else {
            panic!("not status")
        };
        assert_eq!(st.mountpoint, None);
        let cli = Cli::try_parse_from(["cloudmount", "demo"]).unwrap();
        let Command::Demo(d) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(d.mountpoint, None);
    }
}
