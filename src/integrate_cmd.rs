//! `cloudmount integrate [--remove]`: says what [`cloudmount::integrate`] did.

use crate::cli::IntegrateArgs;
use crate::{note, say, CmdResult};
use cloudmount::config::{ConfigFile, Dirs};
use cloudmount::integrate::{self, Change, Options, Places};

pub fn integrate(args: IntegrateArgs) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let places = Places::from_dirs(&dirs);
    if args.remove {
        let changes = integrate::remove(&places)?;
        if !changes.iter().any(|c| !matches!(c, Change::LeftAlone(_))) {
            say("nothing to remove: cloudmount integrate has not installed anything here");
        }
        tell(&changes);
        return Ok(());
    }
    let config_path = dirs.config_file_given(args.config.as_deref(), &std::env::current_dir()?);
    let config = if config_path.exists() {
        match ConfigFile::load(&config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                note(&format!(
                    "cloudmount: warning: {e}; its profiles' mount points get no bookmark"
                ));
                None
            }
        }
    } else {
        None
    };
    let config_dir = config_path
        .parent()
        .map_or_else(|| dirs.config.clone(), |p| p.to_path_buf());
    let opts = Options {
        binary: std::env::current_exe()?,
        mountpoints: integrate::mountpoints(config.as_ref(), &config_dir, &dirs),
    };
    let changes = integrate::install(&places, &opts)?;
    tell(&changes);
    if opts.mountpoints.is_empty() {
        say(
            "no bookmark: no profile has a mountpoint and nothing is mounted; run \
             `cloudmount integrate` again once a drive is mounted",
        );
    }
    say(
        "restart the file manager to load the extension: nautilus -q (or nemo -q, caja -q); \
         Dolphin reads its menu at once",
    );
    Ok(())
}

fn tell(changes: &[Change]) {
    for c in changes {
        say(&match c {
            Change::Wrote(p) => format!("installed {}", p.display()),
            Change::Removed(p) => format!("removed {}", p.display()),
            Change::Bookmarked { mountpoint, file } => {
                format!("bookmarked {} in {}", mountpoint.display(), file.display())
            }
            Change::Unbookmarked { mountpoint, file } => format!(
                "removed the bookmark of {} from {}",
                mountpoint.display(),
                file.display()
            ),
            Change::AlreadyBookmarked { mountpoint, file } => {
                format!("{} was already in {}", mountpoint.display(), file.display())
            }
            Change::LeftAlone(p) => format!(
                "left {} alone: cloudmount integrate did not write it",
                p.display()
            ),
        });
    }
}
