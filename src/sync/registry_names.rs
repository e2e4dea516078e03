//! How the participants of the account's registry are shown to people: `user@host` (the host
//! alone when the user is not known), and when two computers would still look the same (two
//! `HOME`s of one user on one machine) a short prefix of each one's id: `cmuser@vm #3f2a`. A
//! computer with more than one profile in the registry names the profile too:
//! `cmuser@vm (profile work)`. A computer whose records disagree (a host renamed) is shown as
//! its newest record says.

use std::collections::{BTreeMap, BTreeSet};

use super::{ComputerRef, Registry};

/// The shortest id prefix shown.
const SHORT_ID: usize = 4;

/// The names of a registry's participants.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// By computer id: how the computer is shown, and its profiles in the registry.
    computers: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// `user@host`, or the host.
fn plain(who: &ComputerRef) -> String {
    match who.user.as_deref() {
        Some(u) if !u.is_empty() => format!("{u}@{}", who.host),
        _ => who.host.clone(),
    }
}

impl Names {
    /// The names of `registry`'s participants and of `me` (whose own record wins for its
    /// computer: it is the newest).
    pub fn of(registry: &Registry, me: &ComputerRef) -> Names {
        // Every record, with when it was made.
        let mut records: Vec<(ComputerRef, i64)> = vec![(me.clone(), i64::MAX)];
        for e in &registry.folders {
            records.push((e.added_by.clone(), e.added_at));
            records.extend(e.active.iter().map(|a| (a.who(), a.since)));
        }
        let mut newest: BTreeMap<&str, (&ComputerRef, i64)> = BTreeMap::new();
        let mut profiles: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (who, at) in &records {
            let slot = newest.entry(&who.id).or_insert((who, *at));
            if *at > slot.1 {
                *slot = (who, *at);
            }
            let p = profiles.entry(&who.id).or_default();
            p.extend(who.profile.clone());
        }
        // Computers that would look the same, by how they look.
        let mut alike: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (id, (who, _)) in &newest {
            alike.entry(plain(who).to_lowercase()).or_default().push(id);
        }
        let mut computers = BTreeMap::new();
        for (id, (who, _)) in &newest {
            let base = plain(who);
            let same = &alike[&base.to_lowercase()];
            let shown = if same.len() > 1 {
                format!("{base} #{}", short(id, same))
            } else {
                base
            };
            let p = profiles.remove(id).unwrap_or_default();
            computers.insert(id.to_string(), (shown, p));
        }
        Names { computers }
    }

    /// How participant `who` is shown.
    pub fn name(&self, who: &ComputerRef) -> String {
        let Some((shown, profiles)) = self.computers.get(&who.id) else {
            return plain(who);
        };
        match &who.profile {
            Some(p) if profiles.len() > 1 => format!("{shown} (profile {p})"),
            _ => shown.clone(),
        }
    }
}

/// The shortest prefix of `id` (at least [`SHORT_ID`] characters) that no other id of `all`
/// starts with.
fn short<'a>(id: &'a str, all: &[&str]) -> &'a str {
    let mut n = SHORT_ID.min(id.len());
    while n < id.len() && all.iter().any(|o| *o != id && o.get(..n) == id.get(..n)) {
        n += 1;
    }
    id.get(..n).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::sync::folder::{FolderId, Mode, Schedule};
    use crate::sync::registry::{Change, FolderInfo};

    fn who(id: &str, host: &str, user: Option<&str>, profile: Option<&str>) -> ComputerRef {
        ComputerRef {
            id: id.into(),
            host: host.into(),
            user: user.map(str::to_string),
            profile: profile.map(str::to_string),
        }
    }

    fn active_on(r: &mut Registry, folder: &str, w: &ComputerRef, at: i64) {
        r.apply(&Change::Activate {
            folder: FolderInfo {
                id: FolderId(folder.into()),
                name: folder.into(),
                remote: folder.into(),
                mode: Mode::Bidirectional,
                schedule: Schedule::Immediate,
            },
            computer: w.clone(),
            local: PathBuf::from(format!("/h/{folder}")),
            at,
        });
    }

    #[test]
    fn a_computer_alone_on_its_host_is_user_at_host() {
        let me = who(&"a".repeat(32), "vm", Some("cmuser"), Some("t"));
        let laptop = who(&"b".repeat(32), "laptop", Some("ann"), Some("t"));
        let old = who(&"c".repeat(32), "desk", None, None);
        let mut r = Registry::default();
        active_on(&mut r, "P", &laptop, 1);
        active_on(&mut r, "Q", &old, 1);
        let n = Names::of(&r, &me);
        assert_eq!(n.name(&me), "cmuser@vm");
        assert_eq!(n.name(&laptop), "ann@laptop");
        assert_eq!(
            n.name(&old),
            "desk",
            "an older cloudmount's record: its host"
        );
        assert_eq!(n.name(&who("z", "elsewhere", None, None)), "elsewhere");
    }

    #[test]
    fn two_homes_of_one_user_on_one_host_get_an_id_suffix() {
        let me = who("3f2a0000aaaa", "vm", Some("cmuser"), Some("t"));
        let other = who("3f2b0000bbbb", "vm", Some("cmuser"), Some("t"));
        let other_user = who("9999", "vm", Some("bob"), Some("t"));
        let mut r = Registry::default();
        active_on(&mut r, "P", &other, 1);
        active_on(&mut r, "Q", &other_user, 1);
        let n = Names::of(&r, &me);
        assert_eq!(n.name(&me), "cmuser@vm #3f2a");
        assert_eq!(n.name(&other), "cmuser@vm #3f2b");
        assert_eq!(
            n.name(&other_user),
            "bob@vm",
            "another user is told apart already"
        );
        // Ids sharing a longer prefix get as much as tells them apart.
        let twin = who("3f2a0001cccc", "VM", Some("cmuser"), Some("t"));
        active_on(&mut r, "R", &twin, 1);
        let n = Names::of(&r, &me);
        assert_eq!(n.name(&me), "cmuser@vm #3f2a0000");
        assert_eq!(n.name(&twin), "cmuser@VM #3f2a0001");
        assert_eq!(n.name(&other), "cmuser@vm #3f2b");
    }

    #[test]
    fn profiles_are_named_only_when_a_computer_has_several() {
        let work = who("aaaa1111", "vm", Some("cmuser"), Some("work"));
        let home = who("aaaa1111", "vm", Some("cmuser"), Some("home"));
        let mut r = Registry::default();
        active_on(&mut r, "P", &work, 1);
        assert_eq!(Names::of(&r, &work).name(&work), "cmuser@vm");
        let n = Names::of(&r, &home);
        assert_eq!(n.name(&work), "cmuser@vm (profile work)");
        assert_eq!(n.name(&home), "cmuser@vm (profile home)");
    }

    #[test]
    fn a_computer_is_shown_as_its_newest_record_says() {
        let me = who("1", "new-name", Some("u"), Some("t"));
        let mut r = Registry::default();
        let other_old = who("2", "old", None, None);
        let other_new = who("2", "renamed", Some("v"), Some("t"));
        active_on(&mut r, "P", &other_old, 1);
        active_on(&mut r, "Q", &other_new, 5);
        let n = Names::of(&r, &me);
        assert_eq!(n.name(&other_old), "v@renamed");
        // Our own old record is shown as we are now.
        assert_eq!(n.name(&who("1", "old-name", None, Some("t"))), "u@new-name");
    }
}
