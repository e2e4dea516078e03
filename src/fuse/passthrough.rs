//! The kernel's side of passthrough opens: a backing id per backing file, registered with the
//! kernel (`FUSE_DEV_IOC_BACKING_OPEN`) at its first open and closed after its last release.
//! The vfs decides which opens are passthrough and guarantees that all passthrough opens of an
//! inode use one file while any is open (`vfs/io_mode.rs`); files are told apart here by the
//! identity of their `Arc` (kept alive by the map, so an address is never reused while known).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use fuser::{BackingId, ReplyOpen};

/// Whether this process may register backing files (`CAP_SYS_ADMIN` in its effective set).
pub fn allowed() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    const CAP_SYS_ADMIN: u32 = 21;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

struct Registered {
    _file: Arc<File>,
    id: Arc<BackingId>,
    opens: u32,
}

/// Backing ids in use, and which open file handles use which.
#[derive(Default)]
pub struct Backings {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_file: HashMap<usize, Registered>,
    by_fh: HashMap<u64, usize>,
}

impl Backings {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backing id of `file` for the open `fh` (registered now if it is the file's first
    /// open). An error means the kernel refused the file.
    pub fn open(
        &self,
        reply: &ReplyOpen,
        fh: u64,
        file: &Arc<File>,
    ) -> std::io::Result<Arc<BackingId>> {
        let key = Arc::as_ptr(file) as usize;
        let mut s = self.state();
        let id = match s.by_file.get_mut(&key) {
            Some(r) => {
                r.opens += 1;
                r.id.clone()
            }
            None => {
                let id = Arc::new(reply.open_backing(&**file)?);
                s.by_file.insert(
                    key,
                    Registered {
                        _file: file.clone(),
                        id: id.clone(),
                        opens: 1,
                    },
                );
                id
            }
        };
        s.by_fh.insert(fh, key);
        Ok(id)
    }

    /// The open `fh` was released: its file's backing id is closed after its last open.
    pub fn release(&self, fh: u64) {
        let mut s = self.state();
        let Some(key) = s.by_fh.remove(&fh) else {
            return;
        };
        if let Some(r) = s.by_file.get_mut(&key) {
            r.opens -= 1;
            if r.opens == 0 {
                s.by_file.remove(&key);
            }
        }
    }
}
