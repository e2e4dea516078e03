//! The in-memory inode tree.
//!
//! Each node knows its parent and name, so a path is found by walking up to its area root and a
//! rename moves one node, whatever lies below it. Directories hold a name → inode map of their
//! children and when that map was last confirmed by the server (`listed_at`).
//!
//! Invariants:
//! - Inode numbers are never reused within a mount; 1 is the root.
//! - A node is *linked* while its parent's map names it. An unlinked node lives on only while
//!   the kernel still holds lookups on it (or a handle keeps it open), then it is dropped.
//! - Nodes with local state (a staged write, or created here and not yet uploaded) are kept by a
//!   listing refresh even when the server does not list them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::meta::AreaId;
use crate::remote::{ETag, RemotePath};

use super::io_mode::NodeIo;
use super::types::{FileKind, Ino, ROOT_INO};
use super::write::Staged;

/// Children of a directory and how fresh they are.
#[derive(Debug, Default)]
pub(crate) struct DirState {
    pub children: HashMap<Box<str>, Ino>,
    /// When the server last confirmed the listing; `None` while only local knowledge exists.
    pub listed_at: Option<Instant>,
    /// The small file last opened for reading here, and the name up to which small files were
    /// fetched ahead of a walk (see `Vfs::files_ahead`).
    pub last_open: Option<Box<str>>,
    pub ahead_to: Option<Box<str>>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub parent: Ino,
    pub name: Box<str>,
    /// The area the node belongs to; `None` only for the virtual root above several areas.
    pub area: Option<AreaId>,
    /// True for the root of an area (its path is the remote's base).
    pub is_area_root: bool,
    pub kind: FileKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<ETag>,
    /// mtime set by the user (utimens); WebDAV cannot store it, we keep it.
    pub local_mtime: Option<SystemTime>,
    /// Permission bits set by the user (chmod, `mode & 0o777`); `None`: the default (0644
    /// files, 0755 directories). WebDAV cannot store them: kept in `meta.db`, on this machine.
    pub perm: Option<u16>,
    pub dir: Option<DirState>,
    pub lookups: u64,
    pub linked: bool,
    /// Created on the mount and not yet on the server.
    pub pending_create: bool,
    /// Open for writing or with changes not uploaded.
    pub staged: Option<Arc<Staged>>,
    /// Open handles, by how the kernel serves them.
    pub io: NodeIo,
    /// The version the kernel's page cache holds for this inode (what the last open showed).
    pub kernel_etag: Option<ETag>,
    /// When this mount last uploaded the file: a listing asked for before then does not know
    /// the new version (or the file at all) and must not undo it.
    pub uploaded_at: Option<Instant>,
    /// For a directory: when an upload of this mount last landed in it. A server mtime up to
    /// then is explained by our own change and does not replace the time shown.
    pub own_change_at: Option<SystemTime>,
    /// A file deleted or replaced while read, whose server copy was moved to a hidden name
    /// for its readers (its id and that name, see `set_aside.rs`).
    pub set_aside: Option<(i64, crate::remote::RemotePath)>,
}

impl Node {
    pub fn new(parent: Ino, name: &str, area: Option<AreaId>, kind: FileKind) -> Node {
        Node {
            parent,
            name: name.into(),
            area,
            is_area_root: false,
            kind,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            local_mtime: None,
            perm: None,
            dir: (kind == FileKind::Dir).then(DirState::default),
            lookups: 0,
            linked: true,
            pending_create: false,
            staged: None,
            io: NodeIo::default(),
            kernel_etag: None,
            uploaded_at: None,
            own_change_at: None,
            set_aside: None,
        }
    }

    /// Whether a refresh from the server must not drop or overwrite this node.
    pub fn has_local_state(&self) -> bool {
        self.pending_create || self.staged.is_some()
    }
}

pub(crate) struct Tree {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
}

impl Tree {
    pub fn new(root: Node) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, root);
        Tree {
            nodes,
            next_ino: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// Nodes with a staged (being written or not yet uploaded) file.
    pub fn staged_nodes(&self) -> Vec<(Ino, Arc<Staged>)> {
        self.nodes
            .iter()
            .filter_map(|(&ino, n)| n.staged.clone().map(|s| (ino, s)))
            .collect()
    }

    /// The area and remote path of a node; `None` for the virtual root, a missing node, or an
    /// unlinked one (deleted, or replaced by a rename: its old path may be another file's now,
    /// and nothing done to it may reach the server there).
    pub fn path(&self, ino: Ino) -> Option<(AreaId, RemotePath)> {
        let mut names = Vec::new();
        let mut cur = self.nodes.get(&ino).filter(|n| n.linked)?;
        while !cur.is_area_root {
            names.push(&*cur.name);
            cur = self.nodes.get(&cur.parent)?;
        }
        let area = cur.area?;
        let mut p = RemotePath::root();
        for n in names.iter().rev() {
            p = p.join(n).ok()?;
        }
        Some((area, p))
    }

    pub fn child(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.nodes
            .get(&parent)?
            .dir
            .as_ref()?
            .children
            .get(name)
            .copied()
    }

    /// Adds a node under `parent` (which must be a directory) and returns its inode.
    pub fn insert(&mut self, mut node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        node.linked = true;
        let parent = node.parent;
        let name = node.name.clone();
        self.nodes.insert(ino, node);
        if let Some(d) = self.nodes.get_mut(&parent).and_then(|p| p.dir.as_mut()) {
            if let Some(old) = d.children.insert(name, ino) {
                self.detach(old);
            }
        }
        ino
    }

    /// Adds a node with a fixed inode (area roots).
    pub fn insert_at(&mut self, ino: Ino, node: Node) {
        let parent = node.parent;
        let name = node.name.clone();
        self.nodes.insert(ino, node);
        self.next_ino = self.next_ino.max(ino + 1);
        if parent != ino {
            if let Some(d) = self.nodes.get_mut(&parent).and_then(|p| p.dir.as_mut()) {
                d.children.insert(name, ino);
            }
        }
    }

    /// Removes `name` from `parent`'s children. The node (and its subtree) is dropped unless the
    /// kernel or a handle still refers to it.
    pub fn unlink(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let ino = self
            .nodes
            .get_mut(&parent)?
            .dir
            .as_mut()?
            .children
            .remove(name)?;
        self.detach(ino);
        Some(ino)
    }

    /// Marks a node (already out of its parent's map) unlinked, dropping what nobody holds.
    fn detach(&mut self, ino: Ino) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        n.linked = false;
        let children: Vec<Ino> = n
            .dir
            .as_mut()
            .map(|d| d.children.drain().map(|(_, c)| c).collect())
            .unwrap_or_default();
        for c in children {
            self.detach(c);
        }
        self.maybe_drop(ino);
    }

    /// Drops an unlinked node that nobody refers to any more.
    pub fn maybe_drop(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get(&ino) {
            if !n.linked && n.lookups == 0 && n.io.opens() == 0 && n.staged.is_none() {
                self.nodes.remove(&ino);
            }
        }
    }

    /// Moves a linked node to `new_parent`/`new_name`, replacing (unlinking) what was there.
    pub fn rename(&mut self, ino: Ino, new_parent: Ino, new_name: &str) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        let (old_parent, old_name) = (n.parent, n.name.clone());
        if let Some(d) = self.nodes.get_mut(&old_parent).and_then(|p| p.dir.as_mut()) {
            if d.children.get(&old_name) == Some(&ino) {
                d.children.remove(&old_name);
            }
        }
        if let Some(old) = self.child(new_parent, new_name) {
            if old != ino {
                self.unlink(new_parent, new_name);
            }
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = new_parent;
            n.name = new_name.into();
        }
        if let Some(d) = self.nodes.get_mut(&new_parent).and_then(|p| p.dir.as_mut()) {
            d.children.insert(new_name.into(), ino);
        }
    }

    /// True when `ino` is `ancestor` or below it.
    pub fn is_within(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino) {
                Some(n) if n.parent != ino => ino = n.parent,
                _ => return false,
            }
        }
    }
}
