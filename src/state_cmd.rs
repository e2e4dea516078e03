//! `cloudmount state`: the states of a folder's entries, in one request to the daemon of the
//! mount that holds it.

use tokio::runtime::Runtime;

use crate::cli::StateArgs;
use crate::pin_cmd::locate;
use crate::{say, CmdResult, Failure};
use cloudmount::config::Dirs;
use cloudmount::control::{self, FolderStates};

pub fn state(args: StateArgs, rt: &Runtime) -> CmdResult {
    let dirs = Dirs::from_env()?;
    let (instance, rel) = locate(
        &dirs,
        &args.path,
        "states are those of a mount's files; a sync folder's are in `cloudmount sync list`",
    )?;
    let is_dir = std::fs::metadata(&args.path)
        .map_err(|e| Failure::Message(format!("{}: {e}", args.path.display())))?
        .is_dir();
    // A file: the line of its folder's answer that names it.
    let (folder, only) = match (is_dir, rel.rsplit_once('/')) {
        (true, _) => (rel.as_str(), None),
        (false, Some((parent, name))) => (parent, Some(name)),
        (false, None) => ("", Some(rel.as_str())),
    };
    let mut answer = rt.block_on(control::folder_states(&instance, folder))?;
    if let Some(name) = only {
        let state = answer.entries.remove(name).ok_or_else(|| {
            Failure::Message(format!(
                "{}: the daemon does not know this file (yet)",
                args.path.display()
            ))
        })?;
        answer = FolderStates {
            path: rel.clone(),
            state,
            entries: Default::default(),
        };
    }
    if args.json {
        say(&serde_json::to_string(&answer)?);
        return Ok(());
    }
    if only.is_some() {
        say(&format!("{:<10} {}", answer.state, args.path.display()));
        return Ok(());
    }
    for (name, state) in &answer.entries {
        say(&format!("{state:<10} {name}"));
    }
    Ok(())
}
