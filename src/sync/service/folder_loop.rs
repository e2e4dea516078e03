//! A sync folder's task: when it runs (its schedule, local changes, the server's, the
//! account's room on the server), each run, and what `sync list` then says of it. See the
//! parent module for the rules.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::super::engine::{self, Env, Outcome};
use super::super::exclude::Excludes;
use super::super::folder::FolderSpec;
use super::super::journal::RunRecord;
use super::super::poll::PollState;
use super::super::report::FolderState;
use super::super::schedule;
use super::super::watch::Watcher;
use super::{lock, FolderTask, Inner};
use crate::transfer::space::Space;

/// What woke a task up.
enum Wake {
    Asked,
    LocalChange,
    Poll,
    Rescan,
    /// The account's uploads resumed, or it is time to probe whether they can.
    Space,
}

/// Waits until a folder whose uploads wait for space should run again: the account's pause
/// ended, or its next probe is due. Never, when nothing of the folder waits for space.
async fn space_wake(space: &Space, waiting: bool) {
    if !waiting {
        return std::future::pending().await;
    }
    loop {
        let Some(at) = space.next_probe() else {
            return;
        };
        tokio::select! {
            _ = space.resumed() => return,
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        // Another folder may have taken this probe: then wait for the next one.
        if space
            .next_probe()
            .is_none_or(|t| t <= std::time::Instant::now())
        {
            return;
        }
    }
}

pub(super) async fn folder_loop(inner: Arc<Inner>, task: Arc<FolderTask>) {
    let mut watcher: Option<Watcher> = None;
    let mut first = true;
    let mut last_full = tokio::time::Instant::now();
    let mut need_run = true;
    // Whether the last run ended in sync.
    let mut last_synced = true;
    // When a scheduled folder last tried (a run that did not sync is retried, not at once).
    let mut last_attempt: Option<tokio::time::Instant> = None;
    // What the polls know of the server folder between runs.
    let mut polls = PollState::default();
    // The last run left uploads waiting for space on the server (see `space_wake`).
    let mut waiting_space = false;
    // A scheduled folder runs outside its schedule to send what waited for space.
    let mut space_now = false;
    loop {
        if task.stopped.load(Ordering::SeqCst) {
            return;
        }
        let spec = task.spec();
        if spec.paused {
            watcher = None;
            task.set(FolderState::Paused, None, None);
            task.wake.notified().await;
            need_run = true;
            continue;
        }
        let asked = task.now.swap(false, Ordering::SeqCst);
        match spec.schedule {
            super::super::folder::Schedule::Immediate => {
                if watcher.is_none() && spec.local.is_dir() {
                    let (ex, _) = Excludes::load(&spec.local);
                    match Watcher::start(&spec.local, Arc::new(ex)) {
                        Ok(w) => watcher = Some(w),
                        Err(e) => {
                            tracing::warn!(folder = %spec.local.display(), error = %e, "cannot watch the folder: it is scanned every poll interval instead")
                        }
                    }
                }
                if need_run || asked || first {
                    // What the watcher collected so far is seen by this run's scan.
                    if let Some(w) = watcher.as_mut() {
                        w.discard_pending();
                    }
                    let ran = run_once(&inner, &task, &spec).await;
                    (last_synced, waiting_space) = (ran.synced, ran.waiting_space);
                    polls.after_run(ran.seen);
                    last_full = tokio::time::Instant::now();
                    first = false;
                    need_run = false;
                    continue;
                }
                let wake =
                    wait_immediate(&inner, &task, &mut watcher, last_full, waiting_space).await;
                match wake {
                    Wake::Asked | Wake::LocalChange | Wake::Rescan | Wake::Space => need_run = true,
                    Wake::Poll => {
                        // After a run that did not sync (the server was away), local changes
                        // made meanwhile were seen and dropped: run whatever the server says.
                        let watched = watcher.as_ref().is_some_and(|w| !w.limited());
                        // Local changes being collected when the poll came go too.
                        let local = watcher.as_ref().is_some_and(Watcher::has_pending);
                        need_run = !watched
                            || !last_synced
                            || local
                            || server_changed(&inner, &spec, &mut polls).await;
                    }
                }
            }
            super::super::folder::Schedule::Daily | super::super::folder::Schedule::Weekly => {
                watcher = None;
                let (time, day, last) = {
                    let j = lock(&inner.journal);
                    let s = j.settings().ok();
                    (
                        s.as_ref().map_or((3, 0), |s| s.schedule_time()),
                        s.as_ref()
                            .map_or(schedule::Weekday::Sun, |s| s.schedule_day()),
                        j.last_run_at(&spec.id).ok().flatten(),
                    )
                };
                let now = crate::localtime::unix_now();
                let next = schedule::next_run(spec.schedule, time, day, last, spec.added_at, now);
                // Never run here yet: the first sync happens at once, then the schedule.
                let due = last.is_none() || next.is_some_and(|n| n <= now);
                let retry_ok = last_attempt.is_none_or(|t| t.elapsed() >= inner.cfg.poll_interval);
                if asked || space_now || (due && retry_ok) {
                    last_attempt = Some(tokio::time::Instant::now());
                    space_now = false;
                    let ran = run_once(&inner, &task, &spec).await;
                    waiting_space = ran.waiting_space;
                    polls.after_run(ran.seen);
                    continue;
                }
                // What the last run found (a stop, files not synced) stays visible.
                let reason = lock(&task.live).reason.clone();
                let next_run = next;
                task.set(FolderState::Waiting, reason, next_run);
                let sleep = if due {
                    inner.cfg.poll_interval
                } else {
                    next.map(|n| Duration::from_secs((n - now).clamp(1, 3600) as u64))
                        .unwrap_or(Duration::from_secs(3600))
                };
                tokio::select! {
                    _ = task.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                    _ = space_wake(&inner.cfg.space, waiting_space) => space_now = true,
                }
            }
        }
    }
}

async fn wait_immediate(
    inner: &Inner,
    task: &FolderTask,
    watcher: &mut Option<Watcher>,
    last_full: tokio::time::Instant,
    waiting_space: bool,
) -> Wake {
    let poll = tokio::time::sleep(inner.cfg.poll_interval);
    let rescan = tokio::time::sleep_until(last_full + inner.cfg.rescan_interval);
    let (quiet, max) = (inner.cfg.quiet, inner.cfg.max_delay);
    let local = async {
        match watcher.as_mut() {
            Some(w) => match w.next_batch(quiet, max).await {
                Some(_) => Wake::LocalChange,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = task.wake.notified() => Wake::Asked,
        w = local => w,
        _ = poll => Wake::Poll,
        _ = rescan => Wake::Rescan,
        _ = space_wake(&inner.cfg.space, waiting_space) => Wake::Space,
    }
}

/// Whether the server folder differs from what the journal says was synced (no local scan;
/// see [`super::poll`] for what is listed and compared). An error counts as "changed": the run
/// that follows reports it.
async fn server_changed(inner: &Inner, spec: &FolderSpec, polls: &mut PollState) -> bool {
    let Ok(root) = engine::remote_root(spec) else {
        return true;
    };
    let Ok(remote) = inner.remote_of(spec) else {
        return true;
    };
    let (ex, _) = Excludes::load(&spec.local);
    let started = std::time::Instant::now();
    let polled = polls
        .poll(
            &*remote,
            &root,
            &|p, d| ex.is_excluded(p, d),
            spec.mode,
            || lock(&inner.journal).bases(&spec.id),
        )
        .await;
    tracing::debug!(
        folder = %spec.local.display(),
        changed = polled.changed,
        parsed = polled.parsed,
        requests = polled.requests,
        propagation = ?polls.propagation(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "polled the server"
    );
    if polled.parsed {
        // Parsed listings of a large folder are a burst of memory: given back.
        release_freed_memory();
    }
    polled.changed
}

/// Hands the memory a run freed back to the system: a run holds every path of the folder several
/// times over (base, scans, plan), and the allocator would otherwise keep that peak for the
/// daemon's whole life (216 MiB after a 100,000-file folder's first sync, 21 MiB at 2,000).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What a folder whose uploads wait for space says: since when, and that nothing needs doing
/// (what the run did is its `last sync` line).
fn no_space_reason(space: &Space) -> String {
    let since = space
        .paused()
        .and_then(|p| p.since.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| {
            format!(
                " since {}",
                super::super::report::local_time(d.as_secs() as i64)
            )
        })
        .unwrap_or_default();
    format!(
        "{}{since}; edits stay here and are sent by themselves once space is freed \
         (checked every {}s)",
        crate::transfer::space::OUT_OF_SPACE,
        space.retry().as_secs().max(1)
    )
}

/// How a run of [`run_once`] ended, for the folder's loop.
struct Ran {
    /// It ended in sync (uploads waiting for space aside).
    synced: bool,
    /// What it saw of the server at its end.
    seen: Option<super::super::poll::Seen>,
    /// Uploads wait for space on the server.
    waiting_space: bool,
}

/// Runs one sync.
async fn run_once(inner: &Inner, task: &FolderTask, spec: &FolderSpec) -> Ran {
    task.started.fetch_add(1, Ordering::SeqCst);
    task.set(FolderState::Syncing, None, None);
    let confirm = task.confirm.swap(false, Ordering::SeqCst);
    task.progress.refused_writes.store(false, Ordering::Relaxed);
    let (outcome, seen) = match inner.remote_of(spec) {
        Ok(remote) => {
            let env = Env {
                remote: &*remote,
                journal: &inner.journal,
                trash: &inner.trash,
                device: inner.cfg.device.clone(),
                progress: &task.progress,
                space: &inner.cfg.space,
            };
            engine::run_seen(&env, spec, confirm).await
        }
        Err(e) => (Outcome::Failed(e), None),
    };
    // What the polls keep is copied out first: left where the run made it, among the memory
    // the run freed, it would keep those pages resident.
    let seen = seen.map(|s| {
        let copy = s.clone();
        drop(s);
        copy
    });
    release_freed_memory();
    tracing::info!(folder = %spec.local.display(), outcome = outcome.word(), "{}", outcome.message());
    let record = RunRecord {
        at: crate::localtime::unix_now(),
        outcome: outcome.word().to_string(),
        message: outcome.message(),
    };
    {
        let j = lock(&inner.journal);
        let counted = matches!(outcome, Outcome::Synced { .. });
        let r = j.set_last_run(&spec.id, &record).and_then(|()| {
            if counted {
                // A scheduled folder's next run counts from the last run that synced.
                j.set_last_run_at(&spec.id, record.at)
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record the run");
        }
    }
    let (state, reason) = match &outcome {
        Outcome::Synced {
            problems: 0,
            full: None,
            ..
        } => (FolderState::UpToDate, None),
        Outcome::Synced { full: Some(_), .. } => (
            FolderState::NoSpace,
            Some(no_space_reason(&inner.cfg.space)),
        ),
        Outcome::Synced { .. } => (FolderState::UpToDate, Some(outcome.message())),
        Outcome::Stopped(r) => (FolderState::Stopped, Some(r.clone())),
        Outcome::Offline(r) => (FolderState::Offline, Some(r.clone())),
        Outcome::Failed(r) => (FolderState::Error, Some(r.clone())),
    };
    task.set(state, reason, None);
    if task.progress.refused_writes.load(Ordering::Relaxed) {
        inner.refused_writes(task, spec);
    }
    task.runs.fetch_add(1, Ordering::SeqCst);
    if matches!(outcome, Outcome::Offline(_)) {
        // Back off a little before the next try; `sync now` cuts it short.
        tokio::select! {
            _ = task.wake.notified() => { task.now.store(true, Ordering::SeqCst); }
            _ = tokio::time::sleep(inner.cfg.poll_interval.min(Duration::from_secs(30))) => {}
        }
    }
    Ran {
        synced: matches!(outcome, Outcome::Synced { .. }),
        seen,
        waiting_space: matches!(outcome, Outcome::Synced { full: Some(_), .. }),
    }
}
