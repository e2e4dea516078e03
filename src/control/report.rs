//! Words for a [`VfsStatus`]: the human summary of `cloudmount status`, and the progress of
//! `cloudmount unmount` waiting for the upload queue. Plain strings; the command prints them.

use std::fmt::Write as _;
use std::path::Path;

use crate::size::FormatSize;
use crate::vfs::status::{Connection, VfsStatus};

/// At most this many errors and conflicts are listed; the rest are counted.
const LIST_MAX: usize = 10;

/// `1 file`, `3 files`.
pub fn files(n: u64) -> String {
    count(n, "file", "files")
}

/// `n` and the noun, `one` or `many`: `1 change`, `3 changes`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The human summary of `cloudmount status`, several lines, each ending with a newline.
pub fn summary(mountpoint: &Path, s: &VfsStatus) -> String {
    let mut out = String::new();
    let mp = mountpoint.display();
    let _ = match (s.connection, &s.last_error) {
        (Connection::Online, _) => writeln!(out, "{mp}: online"),
        (Connection::Offline, Some(e)) => writeln!(out, "{mp}: offline ({e})"),
        (Connection::Offline, None) => writeln!(out, "{mp}: offline"),
        (Connection::Unknown, _) => writeln!(out, "{mp}: mounted (server not contacted yet)"),
    };

    let q = &s.queue;
    if q.files == 0 {
        let _ = writeln!(out, "upload queue: empty");
    } else {
        let _ = write!(
            out,
            "upload queue: {}, {}",
            files(q.files),
            FormatSize(q.bytes)
        );
        let _ = match (q.in_flight, q.waiting_for_server) {
            (0, 0) => writeln!(out),
            (n, 0) => writeln!(out, " ({n} uploading)"),
            (0, w) => writeln!(out, " ({} waiting for the server)", files(w)),
            (n, w) => writeln!(out, " ({n} uploading, {} waiting for the server)", files(w)),
        };
    }
    if let Some(reason) = &q.paused {
        let _ = writeln!(out, "paused: {reason}");
    }
    if q.namespace_ops > 0 {
        let _ = writeln!(
            out,
            "waiting: {} (mkdir, rmdir, rm, mv) made offline, sent when the server is back",
            count(
                q.namespace_ops,
                "folder or name change",
                "folder or name changes"
            )
        );
    }

    if !s.errors.is_empty() {
        let _ = writeln!(out, "errors:");
        for e in s.errors.iter().take(LIST_MAX) {
            let _ = match e.attempts {
                // Not an upload attempt (a file that could not be made durable, say).
                0 => writeln!(out, "  {}: {}", e.path, e.reason),
                1 => writeln!(out, "  {}: {} (1 attempt)", e.path, e.reason),
                n => writeln!(out, "  {}: {} ({n} attempts)", e.path, e.reason),
            };
        }
        more(&mut out, s.errors.len());
    }
    if !s.conflicts.is_empty() {
        let _ = writeln!(out, "conflicts:");
        for c in s.conflicts.iter().take(LIST_MAX) {
            let _ = writeln!(out, "  {} -> {}", c.path, c.copy);
        }
        more(&mut out, s.conflicts.len());
    }
    if !s.notices.is_empty() {
        let _ = writeln!(out, "changes made offline, as sent:");
        for n in s.notices.iter().take(LIST_MAX) {
            let _ = writeln!(out, "  {}: {}", n.path, n.what);
        }
        more(&mut out, s.notices.len());
    }

    if let Some(quota) = &s.quota {
        let _ = match (quota.used, quota.available) {
            (Some(u), Some(a)) => writeln!(
                out,
                "quota: {} used, {} available",
                FormatSize(u),
                FormatSize(a)
            ),
            (Some(u), None) => writeln!(out, "quota: {} used", FormatSize(u)),
            (None, Some(a)) => writeln!(out, "quota: {} available", FormatSize(a)),
            (None, None) => Ok(()),
        };
    }

    if let Some(k) = &s.kept_aside {
        let _ = writeln!(
            out,
            "kept aside: {} being written when cloudmount last stopped unexpectedly (never \
             closed, so not uploaded), in {}",
            files(k.files),
            k.dir
        );
    }

    for a in &s.other_areas {
        let area = match (&a.name, &a.url) {
            (Some(n), Some(u)) => format!("area {n:?} ({u})"),
            (None, Some(u)) => format!("area {u}"),
            _ => "an area removed from the profile before this version of cloudmount".into(),
        };
        let _ = writeln!(
            out,
            "waiting: {} ({}) queued for {area}, which this mount does not show; they are \
             kept and uploaded when that area is in the profile again",
            files(a.files),
            FormatSize(a.bytes)
        );
    }

    pins(&mut out, &s.pins);

    let c = &s.cache;
    let _ = write!(
        out,
        "cache: {} of {} used",
        FormatSize(c.used_bytes.saturating_sub(c.pinned_bytes)),
        FormatSize(c.budget_bytes)
    );
    if c.pinned_bytes > 0 {
        let _ = write!(out, "; {} kept by pins", FormatSize(c.pinned_bytes));
    }
    let _ = match c.dirty_bytes {
        0 => writeln!(out),
        d => writeln!(out, "; {} not yet uploaded", FormatSize(d)),
    };
    if let Some(l) = limits(s) {
        let _ = writeln!(out, "bandwidth limits: {l}");
    }
    out
}

/// The pins: one line of totals, then one per pin that is not complete.
fn pins(out: &mut String, pins: &[crate::vfs::status::PinStatus]) {
    use crate::vfs::status::PinPhase;
    if pins.is_empty() {
        return;
    }
    let bytes: u64 = pins.iter().map(|p| p.bytes).sum();
    let count = |f: fn(PinPhase) -> bool| pins.iter().filter(|p| f(p.state)).count();
    let busy = count(|s| matches!(s, PinPhase::Listing | PinPhase::Downloading));
    let stuck = count(|s| matches!(s, PinPhase::Waiting | PinPhase::Error));
    let _ = write!(
        out,
        "pins: {}, {}",
        match pins.len() {
            1 => "1 pinned item".to_string(),
            n => format!("{n} pinned items"),
        },
        FormatSize(bytes)
    );
    let _ = match (busy, stuck) {
        (0, 0) => writeln!(out, ", all on this device"),
        (n, 0) => writeln!(out, ", {n} being downloaded"),
        (0, n) => writeln!(out, ", {n} not complete (below)"),
        (n, m) => writeln!(out, ", {n} being downloaded, {m} not complete (below)"),
    };
    for p in pins {
        let pct = (p.bytes_done * 100).checked_div(p.bytes).unwrap_or(100);
        let _ = match (p.state, &p.error) {
            (PinPhase::Complete, _) => Ok(()),
            (PinPhase::Listing, _) => writeln!(out, "  {}: listing", p.path),
            (PinPhase::Downloading, _) => writeln!(
                out,
                "  {}: downloading, {} of {} files, {} of {} ({pct} %)",
                p.path,
                p.files_done,
                p.files,
                FormatSize(p.bytes_done),
                FormatSize(p.bytes)
            ),
            (_, Some(e)) => writeln!(out, "  {}: {} ({pct} % here)", p.path, e),
            (_, None) => writeln!(out, "  {}: {}", p.path, p.state.as_str()),
        };
    }
}

/// One line for a list of mounts: the connection, the upload queue, problems if any.
pub fn one_line(s: &VfsStatus) -> String {
    let mut parts = vec![match s.connection {
        Connection::Online => "online".to_string(),
        Connection::Offline => "offline".to_string(),
        Connection::Unknown => "not contacted yet".to_string(),
    }];
    let q = &s.queue;
    parts.push(if q.files == 0 {
        "nothing to upload".to_string()
    } else {
        format!("{} ({}) to upload", files(q.files), FormatSize(q.bytes))
    });
    if q.paused.is_some() {
        parts.push("uploads paused".into());
    }
    if !s.errors.is_empty() {
        parts.push(format!("{} with errors", files(s.errors.len() as u64)));
    }
    if !s.conflicts.is_empty() {
        parts.push(format!("{} conflicts", s.conflicts.len()));
    }
    if let Some(l) = limits(s) {
        parts.push(format!("limits: {l}"));
    }
    parts.join(", ")
}

/// The bandwidth limits in words, when one is set.
pub fn limits(s: &VfsStatus) -> Option<String> {
    use crate::config::settings::format_limit;
    let l = s.bandwidth;
    (l != crate::remote::throttle::Limits::default()).then(|| {
        format!(
            "upload {}, download {}",
            format_limit(l.upload),
            format_limit(l.download)
        )
    })
}

fn more(out: &mut String, total: usize) {
    if total > LIST_MAX {
        let _ = writeln!(out, "  ... and {} more", total - LIST_MAX);
    }
}

/// Why the queue is not moving, if it says: the pause reason, else the first file error.
pub fn blocker(s: &VfsStatus) -> Option<String> {
    if let Some(p) = &s.queue.paused {
        return Some(format!("paused: {p}"));
    }
    s.errors
        .first()
        .map(|e| format!("{}: {}", e.path, e.reason))
}

/// `3 files left`, with the [`blocker`] if any: the progress message while waiting.
pub fn waiting_message(s: &VfsStatus) -> String {
    let left = format!("{} left", files(s.queue.files));
    match blocker(s) {
        Some(b) => format!("{left}; {b}"),
        None => left,
    }
}

/// Bytes uploaded since waiting began, out of the bytes queued then plus whatever was queued
/// since. The queue may grow while waiting (a program still writing); then the total grows by
/// as much, and the uploaded count never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitProgress {
    total: u64,
    done: u64,
}

impl WaitProgress {
    /// Starts from the queue of `s`: nothing uploaded yet.
    pub fn new(s: &VfsStatus) -> Self {
        WaitProgress {
            total: s.queue.bytes,
            done: 0,
        }
    }

    /// Takes in a newer status. What the running uploads have sent counts as done.
    pub fn update(&mut self, s: &VfsStatus) {
        let remaining = s.queue.bytes.saturating_sub(s.queue.in_flight_sent);
        let expected = self.total - self.done;
        if remaining > expected {
            self.total += remaining - expected;
        }
        self.done = self.total - remaining;
    }

    /// Bytes queued when waiting began plus bytes queued since.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes uploaded (no longer queued) since waiting began.
    pub fn done(&self) -> u64 {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::status::{
        CacheStatus, ConflictInfo, FileProblem, KeptAside, OtherArea, QueueStatus, QuotaStatus,
        VfsStatus,
    };
    use std::path::Path;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn idle() -> VfsStatus {
        VfsStatus {
            connection: Connection::Online,
            last_error: None,
            queue: QueueStatus::default(),
            errors: Vec::new(),
            conflicts: Vec::new(),
            quota: None,
            cache: CacheStatus {
                used_bytes: 0,
                budget_bytes: 10 * GIB,
                dirty_bytes: 0,
                pinned_bytes: 0,
            },
            kept_aside: None,
            other_areas: Vec::new(),
            pins: Vec::new(),
            bandwidth: Default::default(),
            notices: Vec::new(),
        }
    }

    fn queued(files: u64, bytes: u64) -> VfsStatus {
        let mut s = idle();
        s.queue.files = files;
        s.queue.bytes = bytes;
        s
    }

    #[test]
    fn summary_of_a_busy_mount() {
        let s = VfsStatus {
            connection: Connection::Online,
            last_error: None,
            queue: QueueStatus {
                files: 3,
                bytes: 12 * MIB,
                in_flight: 1,
                in_flight_bytes: 4 * MIB,
                in_flight_sent: 0,
                paused: Some("server out of space (507 Insufficient Storage)".into()),
                waiting_for_server: 0,
                namespace_ops: 0,
            },
            errors: vec![FileProblem {
                path: "Cloud Drive/a.txt".into(),
                reason: "connection refused".into(),
                attempts: 4,
            }],
            conflicts: vec![ConflictInfo {
                path: "Cloud Drive/b.txt".into(),
                copy: "Cloud Drive/b (conflicted copy host 2026-11-28 101500).txt".into(),
                at: 0,
            }],
            quota: Some(QuotaStatus {
                used: Some(GIB + GIB / 5),
                available: Some(3 * GIB),
            }),
            cache: CacheStatus {
                used_bytes: 512 * MIB,
                budget_bytes: 10 * GIB,
                dirty_bytes: 12 * MIB,
                pinned_bytes: 0,
            },
            kept_aside: Some(KeptAside {
                dir: "/home/u/.cache/cloudmount/x/recovered".into(),
                files: 2,
            }),
            other_areas: vec![OtherArea {
                url: Some("https://h/dav/b/".into()),
                name: Some("B".into()),
                files: 2,
                bytes: 2048,
            }],
            pins: Vec::new(),
            bandwidth: Default::default(),
            notices: Vec::new(),
        };
        assert_eq!(
            summary(Path::new("/home/u/Cloud"), &s),
            "/home/u/Cloud: online\n\
             upload queue: 3 files, 12 MiB (1 uploading)\n\
             paused: server out of space (507 Insufficient Storage)\n\
             errors:\n  \
             Cloud Drive/a.txt: connection refused (4 attempts)\n\
             conflicts:\n  \
             Cloud Drive/b.txt -> Cloud Drive/b (conflicted copy host 2026-11-28 101500).txt\n\
             quota: 1.2 GiB used, 3 GiB available\n\
             kept aside: 2 files being written when cloudmount last stopped unexpectedly \
             (never closed, so not uploaded), in /home/u/.cache/cloudmount/x/recovered\n\
             waiting: 2 files (2 KiB) queued for area \"B\" (https://h/dav/b/), which this mount \
             does not show; they are kept and uploaded when that area is in the profile again\n\
             cache: 512 MiB of 10 GiB used; 12 MiB not yet uploaded\n"
        );
    }

    #[test]
    fn summary_of_an_idle_or_offline_mount() {
        let text = summary(Path::new("/m"), &idle());
        assert_eq!(
            text,
            "/m: online\nupload queue: empty\ncache: 0 B of 10 GiB used\n"
        );
        let mut s = queued(1, 100);
        s.connection = Connection::Offline;
        s.last_error = Some("connection refused".into());
        s.queue.waiting_for_server = 1;
        s.quota = Some(QuotaStatus {
            used: None,
            available: Some(GIB),
        });
        let text = summary(Path::new("/m"), &s);
        assert!(
            text.starts_with("/m: offline (connection refused)\n"),
            "{text}"
        );
        assert!(
            text.contains("upload queue: 1 file, 100 B (1 file waiting for the server)\n"),
            "the reason once, the waiting files counted: {text}"
        );
        assert!(!text.contains("errors:"), "{text}");
        assert!(text.contains("quota: 1 GiB available\n"), "{text}");
        assert!(!text.contains("paused"), "{text}");
        s.connection = Connection::Unknown;
        assert!(summary(Path::new("/m"), &s).contains("not contacted yet"));
    }

    #[test]
    fn namespace_changes_made_offline_and_their_replay_are_said() {
        use crate::vfs::status::Notice;
        let mut s = idle();
        s.connection = Connection::Offline;
        s.queue.namespace_ops = 3;
        s.notices = vec![Notice {
            path: "c.txt".into(),
            what: "not deleted: changed on the server".into(),
            at: 0,
        }];
        let text = summary(Path::new("/m"), &s);
        assert!(
            text.contains("waiting: 3 folder or name changes (mkdir, rmdir, rm, mv) made offline"),
            "{text}"
        );
        assert!(
            text.contains(
                "changes made offline, as sent:\n  c.txt: not deleted: changed on the server\n"
            ),
            "{text}"
        );
        s.queue.namespace_ops = 1;
        assert!(summary(Path::new("/m"), &s).contains("waiting: 1 folder or name change "));
        s.queue.namespace_ops = 0;
        s.notices.clear();
        assert!(!summary(Path::new("/m"), &s).contains("made offline"));
    }

    #[test]
    fn long_lists_are_cut() {
        let mut s = idle();
        s.errors = (0..25)
            .map(|i| FileProblem {
                path: format!("f{i}"),
                reason: "x".into(),
                attempts: 1,
            })
            .collect();
        s.errors[1].attempts = 0;
        let text = summary(Path::new("/m"), &s);
        assert!(text.contains("  f0: x (1 attempt)\n"), "{text}");
        assert!(
            text.contains("  f1: x\n"),
            "no attempt count when 0: {text}"
        );
        assert!(text.contains("  f9: x (1 attempt)\n"), "{text}");
        assert!(!text.contains("f10:"), "{text}");
        assert!(text.contains("... and 15 more"), "{text}");
    }

    #[test]
    fn waiting_message_names_the_blocker() {
        assert_eq!(waiting_message(&queued(2, 10)), "2 files left");
        let mut s = queued(1, 10);
        s.errors.push(FileProblem {
            path: "a".into(),
            reason: "HTTP 500".into(),
            attempts: 2,
        });
        assert_eq!(waiting_message(&s), "1 file left; a: HTTP 500");
        s.queue.paused = Some("server out of space".into());
        assert_eq!(
            waiting_message(&s),
            "1 file left; paused: server out of space"
        );
    }

    #[test]
    fn progress_counts_uploads_and_growth() {
        let mut p = WaitProgress::new(&queued(3, 300));
        assert_eq!((p.done(), p.total()), (0, 300));
        p.update(&queued(2, 200));
        assert_eq!((p.done(), p.total()), (100, 300));
        // A new 500-byte file is queued while one of 100 is uploaded.
        p.update(&queued(2, 600));
        assert_eq!((p.done(), p.total()), (100, 700));
        // Growth without any upload.
        p.update(&queued(3, 650));
        assert_eq!((p.done(), p.total()), (100, 750));
        p.update(&queued(0, 0));
        assert_eq!((p.done(), p.total()), (750, 750));
        // Never backwards, never past the total.
        let mut p = WaitProgress::new(&queued(0, 0));
        p.update(&queued(1, 10));
        assert_eq!((p.done(), p.total()), (0, 10));
        p.update(&queued(0, 0));
        assert_eq!((p.done(), p.total()), (10, 10));
    }

    /// Bandwidth limits are named in the summary and the one-line status only when one is set.
    #[test]
    fn bandwidth_limits_are_shown_when_set() {
        let mut s = idle();
        let mp = Path::new("/home/u/Cloud");
        assert!(!summary(mp, &s).contains("limits"));
        assert!(!one_line(&s).contains("limits"));
        s.bandwidth.upload = 2 << 20;
        assert!(
            summary(mp, &s).contains("bandwidth limits: upload 2 MiB/s, download 0 (no limit)\n"),
            "{}",
            summary(mp, &s)
        );
        assert!(one_line(&s).ends_with(", limits: upload 2 MiB/s, download 0 (no limit)"));
    }

    /// The pins' line says "all on this device" only when every pin is complete; a pin
    /// waiting for the server is named below it with the reason.
    #[test]
    fn pins_waiting_for_the_server_are_not_all_on_this_device() {
        use crate::vfs::status::{PinPhase, PinStatus};
        let mut s = idle();
        let pin = |path: &str, state, error: Option<&str>| PinStatus {
            path: path.into(),
            state,
            files: 2,
            bytes: 4 * MIB,
            bytes_done: if state == PinPhase::Complete {
                4 * MIB
            } else {
                MIB
            },
            error: error.map(str::to_string),
            ..Default::default()
        };
        s.pins = vec![pin("Projects", PinPhase::Complete, None)];
        let text = summary(Path::new("/home/u/Cloud"), &s);
        assert!(
            text.contains("pins: 1 pinned item, 4 MiB, all on this device\n"),
            "{text}"
        );
        s.pins.push(pin(
            "Videos",
            PinPhase::Waiting,
            Some("waiting for the server: refused"),
        ));
        let text = summary(Path::new("/home/u/Cloud"), &s);
        assert!(
            text.contains("pins: 2 pinned items, 8 MiB, 1 not complete (below)\n")
                && text.contains("  Videos: waiting for the server: refused (25 % here)\n"),
            "{text}"
        );
    }

    /// One large file uploading: the bytes its body has sent count as done (a 2 GiB upload
    /// used to show "0 B uploaded" until its end), and a retry that starts again from 0
    /// does not make the count go back.
    #[test]
    fn progress_counts_the_bytes_a_running_upload_sent() {
        let sending = |sent: u64| {
            let mut s = queued(1, 2 * GIB);
            s.queue.in_flight = 1;
            s.queue.in_flight_bytes = 2 * GIB;
            s.queue.in_flight_sent = sent;
            s
        };
        let mut p = WaitProgress::new(&sending(0));
        p.update(&sending(GIB / 2));
        assert_eq!((p.done(), p.total()), (GIB / 2, 2 * GIB));
        p.update(&sending(GIB));
        assert_eq!(p.done(), GIB);
        // The connection broke: the next attempt sends from 0 again.
        p.update(&sending(0));
        assert_eq!(p.done(), GIB);
        p.update(&queued(0, 0));
        assert_eq!(p.done(), p.total());
    }
}
