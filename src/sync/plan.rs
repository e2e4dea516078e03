//! A whole folder's plan: every path of the base, the local scan and the server listing,
//! decided by [`super::decide`], then put in an order that can be carried out (parents before
//! children for creations, children before parents for deletes), with local renames turned into
//! server moves and the safety guards applied.

use std::collections::BTreeMap;

use super::decide::Action;
use super::folder::Mode;
use super::state::{Base, LocalMeta, RemoteMeta};

/// The inputs of a plan. Paths are relative to the folder's root, `/`-separated, without a
/// leading slash; the root itself is not in the maps.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub base: BTreeMap<String, Base>,
    pub local: BTreeMap<String, LocalMeta>,
    pub remote: BTreeMap<String, RemoteMeta>,
}

/// The folder's settings that matter to the plan.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub mode: Mode,
    pub keep_deleted: bool,
    /// Pause when one side would lose more than this share of its files (percent of the base's
    /// files).
    pub delete_limit_percent: u8,
    /// The user confirmed the deletes (`sync now --confirm`): the limit does not apply.
    pub deletes_confirmed: bool,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `action` at `path`.
    Do { path: String, action: Action },
    /// A local rename (same inode, the old path gone, the new one new) done on the server as a
    /// MOVE of `from` to `to`; for a directory it covers everything below it.
    MoveRemote { from: String, to: String },
}

/// Why a plan stops before doing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The sync would delete `count` of the `total` files of the `side` ("server" or "local")
    /// the base knows, more than the limit.
    TooManyDeletes {
        side: &'static str,
        count: usize,
        total: usize,
    },
}

/// A plan: the steps in order, or the reason not to run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub stop: Option<Stop>,
}

/// Makes the plan.
pub fn plan(inputs: &Inputs, rules: Rules) -> Plan {
    let _ = (inputs, rules);
    todo!("sync::plan")
}
