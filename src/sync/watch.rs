//! Local changes seen as they happen: inotify on every directory of a folder, debounced; a
//! queue overflow or running out of watches asks for a full scan.
//!
//! A reader thread owns the inotify descriptor: it waits in `poll(2)` (woken by an eventfd when
//! the [`Watcher`] is dropped), turns events into relative paths, drops excluded ones (our own
//! `.cloudmount-tmp-*` downloads, editors' swap files), watches a new directory at once (and
//! reports what is already in it, created before the watch), and hands the rest to a bounded
//! channel. When the consumer is slow the thread waits, the kernel queue fills and overflows,
//! and the overflow becomes a rescan: nothing is lost silently.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use super::exclude::Excludes;

/// What happened in the folder during one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Paths that changed (created, written, deleted, renamed from or to, attributes),
    /// relative to the root, `/`-separated. A new directory brings every path inside it.
    pub paths: BTreeSet<String>,
    /// Events were lost (queue overflow, no watch left for a directory, the root itself moved
    /// or deleted): only a full scan knows what changed.
    pub rescan: bool,
}

#[derive(Debug)]
enum Event {
    Path(String),
    Rescan,
}

/// Events on every directory, files' completed writes, and what names come and go.
const DIR_MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// Events waiting for the consumer; beyond that the kernel queue holds them.
const CHANNEL: usize = 4096;

/// How long `poll` waits before looking at the stop flag again (the eventfd wakes it sooner).
const POLL_MS: i32 = 500;

/// Watches a folder until dropped.
pub struct Watcher {
    rx: mpsc::Receiver<Event>,
    stop: Arc<AtomicBool>,
    limited: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    /// The batch being collected, and when it must end: kept here, not in the future of
    /// [`Watcher::next_batch`], so that a caller who stops waiting (another wake-up won a
    /// `select!`) loses no event.
    pending: Option<(Batch, tokio::time::Instant)>,
    #[cfg(test)]
    inotify_fd: std::os::fd::RawFd,
}

impl Watcher {
    /// Starts watching `root` and every directory below it that `excludes` does not exclude.
    /// Every watch is in place when this returns.
    pub fn start(root: &Path, excludes: Arc<Excludes>) -> io::Result<Watcher> {
        Self::start_with_budget(root, excludes, usize::MAX)
    }

    /// `start` with at most `budget` watches, as if the kernel's limit were reached after them.
    fn start_with_budget(
        root: &Path,
        excludes: Arc<Excludes>,
        budget: usize,
    ) -> io::Result<Watcher> {
        // SAFETY: plain syscalls; the results are checked and owned at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: as above.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `wake` is a new descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let (tx, rx) = mpsc::channel(CHANNEL);
        let limited = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let inotify_fd = fd.as_raw_fd();
        let mut reader = Reader {
            fd,
            root: root.to_path_buf(),
            excludes,
            dirs: HashMap::new(),
            tx,
            limited: limited.clone(),
            budget,
        };
        match reader.add_watch("") {
            Ok(true) => {}
            Ok(false) if reader.limited.load(Ordering::Relaxed) => {}
            Ok(false) => {
                return Err(fs::metadata(root).err().unwrap_or_else(|| {
                    io::Error::new(
                        ErrorKind::NotADirectory,
                        format!("{} is not a directory", root.display()),
                    )
                }))
            }
            Err(e) => return Err(e),
        }
        // The receiver is here: sending cannot fail.
        let _ = reader.add_below("", false);
        let thread = {
            let stop = stop.clone();
            let wake = wake.clone();
            std::thread::Builder::new()
                .name("sync-watch".into())
                .spawn(move || reader.run(&stop, &wake))?
        };
        Ok(Watcher {
            rx,
            stop,
            limited,
            wake,
            thread: Some(thread),
            pending: None,
            #[cfg(test)]
            inotify_fd,
        })
    }

    /// Whether some directory could not be watched (the inotify watch limit): changes there are
    /// only found by periodic full scans, which the caller must then run.
    pub fn limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// Waits for the next change, then collects until nothing happened for `quiet` (so an
    /// editor's save — write a temporary file, rename it over — is one batch) or `max_wait`
    /// passed since the first event. `None` when the watcher stopped.
    ///
    /// Cancel-safe: dropped before it returns, it keeps what it collected for the next call
    /// (and [`Watcher::has_pending`] says so).
    pub async fn next_batch(&mut self, quiet: Duration, max_wait: Duration) -> Option<Batch> {
        loop {
            if self.pending.is_none() {
                let first = self.rx.recv().await?;
                let mut batch = Batch::default();
                add(&mut batch, first);
                self.pending = Some((batch, tokio::time::Instant::now() + max_wait));
            }
            while let Some((_, deadline)) = self.pending.as_ref() {
                let now = tokio::time::Instant::now();
                if now >= *deadline {
                    break;
                }
                let left = *deadline - now;
                match tokio::time::timeout(quiet.min(left), self.rx.recv()).await {
                    Ok(Some(ev)) => {
                        if let Some((batch, _)) = self.pending.as_mut() {
                            add(batch, ev);
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let Some((batch, _)) = self.pending.take() else {
                continue;
            };
            if batch.rescan || !batch.paths.is_empty() {
                return Some(batch);
            }
        }
    }

    /// Whether changes were seen that no batch returned yet.
    pub fn has_pending(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|(b, _)| b.rescan || !b.paths.is_empty())
    }

    /// Forgets the changes collected so far (a full scan is about to see them anyway).
    pub fn discard_pending(&mut self) {
        self.pending = None;
    }
}

fn add(batch: &mut Batch, ev: Event) {
    match ev {
        Event::Path(p) => {
            batch.paths.insert(p);
        }
        Event::Rescan => batch.rescan = true,
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A sender waiting for room gets an error and returns.
        self.rx.close();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread's state.
struct Reader {
    fd: OwnedFd,
    root: PathBuf,
    excludes: Arc<Excludes>,
    /// Watch descriptor → the directory's relative path (`""`: the root).
    dirs: HashMap<i32, String>,
    tx: mpsc::Sender<Event>,
    limited: Arc<AtomicBool>,
    /// Watches still allowed (tests stand in for the kernel's limit with it).
    budget: usize,
}

impl Reader {
    fn run(mut self, stop: &AtomicBool, wake: &OwnedFd) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_MS) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!(error = %e, "sync watcher: poll failed, watching stops");
                let _ = self.tx.blocking_send(Event::Rescan);
                return;
            }
            if fds[0].revents & libc::POLLIN == 0 {
                continue;
            }
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) {
                    continue;
                }
                tracing::warn!(error = %e, "sync watcher: reading inotify failed, watching stops");
                let _ = self.tx.blocking_send(Event::Rescan);
                return;
            }
            if self.handle_all(&buf[..n as usize]).is_err() {
                // The watcher was dropped.
                return;
            }
        }
    }

    /// Handles every event of one `read`. `Err` when the receiver is gone.
    fn handle_all(&mut self, mut buf: &[u8]) -> Result<(), Closed> {
        const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
        while buf.len() >= HEAD {
            let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = u32::from_ne_bytes(word(12)) as usize;
            let end = (HEAD + len).min(buf.len());
            let raw = &buf[HEAD..end];
            let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
            self.handle(wd, mask, name)?;
            buf = &buf[end..];
        }
        Ok(())
    }

    fn handle(&mut self, wd: i32, mask: u32, name: &[u8]) -> Result<(), Closed> {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            tracing::debug!("sync watcher: the inotify queue overflowed");
            // Directories made or moved during the loss have no watch (or a stale path):
            // walk the tree again (a watched directory keeps its descriptor).
            self.send(Event::Rescan)?;
            return self.add_below("", false);
        }
        if mask & libc::IN_IGNORED != 0 {
            self.dirs.remove(&wd);
            return Ok(());
        }
        let Some(dir) = self.dirs.get(&wd).cloned() else {
            return Ok(());
        };
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
            // A directory below the root: its parent reports it. The root: nothing is known
            // any more.
            if dir.is_empty() {
                return self.send(Event::Rescan);
            }
            return Ok(());
        }
        if name.is_empty() {
            // The watched directory itself (its attributes).
            return if dir.is_empty() {
                Ok(())
            } else {
                self.send(Event::Path(dir))
            };
        }
        let path = join(&dir, &String::from_utf8_lossy(name));
        let is_dir = mask & libc::IN_ISDIR != 0;
        if self.excludes.is_excluded(&path, is_dir) {
            return Ok(());
        }
        if is_dir && mask & libc::IN_MOVED_FROM != 0 {
            self.forget_tree(&path);
        }
        self.send(Event::Path(path.clone()))?;
        if is_dir && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            if let Ok(true) = self.add_watch(&path) {
                self.add_below(&path, true)?;
            }
        }
        Ok(())
    }

    fn send(&self, ev: Event) -> Result<(), Closed> {
        self.tx.blocking_send(ev).map_err(|_| Closed)
    }

    /// Watches every directory below `rel` (already watched itself) that is not excluded;
    /// with `report`, every path found is sent as changed (it came before its watch).
    fn add_below(&mut self, rel: &str, report: bool) -> Result<(), Closed> {
        let mut stack = vec![rel.to_string()];
        while let Some(dir) = stack.pop() {
            let Ok(listing) = fs::read_dir(self.abs(&dir)) else {
                continue;
            };
            for item in listing.flatten() {
                let path = join(&dir, &item.file_name().to_string_lossy());
                let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
                if self.excludes.is_excluded(&path, is_dir) {
                    continue;
                }
                if report {
                    self.send(Event::Path(path.clone()))?;
                }
                if is_dir {
                    match self.add_watch(&path) {
                        Ok(true) => stack.push(path),
                        Ok(false) => {}
                        Err(e) => tracing::debug!(path, error = %e, "sync watcher: not watched"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Watches one directory. `Ok(false)`: not watched, and not an error (gone, not a
    /// directory, not readable, or no watch left — then a rescan is asked for).
    fn add_watch(&mut self, rel: &str) -> io::Result<bool> {
        let c = CString::new(self.abs(rel).as_os_str().as_bytes())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a NUL in a path"))?;
        let wd = if self.budget == 0 {
            -libc::ENOSPC
        } else {
            // SAFETY: `c` is a valid NUL-terminated path; the fd is ours.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), DIR_MASK) };
            if wd < 0 {
                -io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
            } else {
                wd
            }
        };
        if wd >= 0 {
            if self.dirs.insert(wd, rel.to_string()).is_none() {
                self.budget -= 1;
            }
            return Ok(true);
        }
        match -wd {
            libc::ENOSPC | libc::ENOMEM => {
                if !self.limited.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        folder = %self.root.display(),
                        "sync watcher: the inotify watch limit is reached (sysctl \
                         fs.inotify.max_user_watches); changes in some folders are only found \
                         by periodic full scans"
                    );
                }
                // The channel is full only when the consumer is far behind; then a rescan
                // follows anyway (the kernel queue overflows).
                let _ = self.tx.try_send(Event::Rescan);
                Ok(false)
            }
            libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ELOOP => Ok(false),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Stops watching `rel` and every directory below it (moved away: their paths are stale).
    fn forget_tree(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        let stale: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, p)| *p == rel || p.starts_with(&prefix))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in stale {
            self.dirs.remove(&wd);
            // SAFETY: plain syscall on our fd.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        }
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// The consumer is gone.
struct Closed;

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
