//! The one scheduler of periodic work: every part's "every N seconds" jobs, run in turn on one
//! thread.
//!
//! The service registers its housekeeping (saving changed indexes, starting due folder
//! syncs); the agents register theirs (firing due schedules, waking agents whose queued task
//! came due, dropping old stream events). Due times of the durable things themselves (folder
//! sources, agent schedules, retries) live in the store, so a restart loses none; the clock
//! only decides when to look.
//!
//! Owns the timing and the thread (started through the [`Supervisor`]); must never hold the
//! jobs' logic. A job must return quickly (it blocks the jobs behind it) and check its owner's
//! state itself; the clock stops at shutdown and [`Clock::stop`] waits for the job under way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::supervisor::{Supervisor, Thread};

/// Granularity of the clock: how long it sleeps at most between looks at its jobs.
const TICK: Duration = Duration::from_millis(100);

/// The scheduler of periodic jobs. Cheap to clone.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Supervisor,
    /// Jobs registered and not yet taken by the clock thread (which owns the rest, so that a
    /// registration never waits for a job under way).
    pending: Mutex<Vec<Job>>,
    /// Signalled when a job is added or the clock stops.
    changed: Condvar,
    stopped: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

struct Job {
    name: &'static str,
    period: Duration,
    next: Instant,
    run: Box<dyn FnMut() + Send>,
}

impl Clock {
    /// A clock whose thread the supervisor owns (started with the first job).
    pub fn new(supervisor: Supervisor) -> Self {
        Self {
            inner: Arc::new(Inner {
                supervisor,
                pending: Mutex::new(Vec::new()),
                changed: Condvar::new(),
                stopped: AtomicBool::new(false),
                thread: Mutex::new(None),
            }),
        }
    }

    /// Runs `job` every `period`, the first time at once.
    pub fn every(
        &self,
        name: &'static str,
        period: Duration,
        job: impl FnMut() + Send + 'static,
    ) -> std::io::Result<()> {
        self.pending().push(Job {
            name,
            period,
            next: Instant::now(),
            run: Box::new(job),
        });
        self.inner.changed.notify_all();
        let mut thread = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() && !self.is_stopped() {
            let inner = self.inner.clone();
            *thread = Some(
                self.inner
                    .supervisor
                    .thread("gw-clock", move || run(&inner))?,
            );
        }
        Ok(())
    }

    /// Stops the clock and waits for the job under way; no job runs after this returns.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.changed.notify_all();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(t) = thread {
            t.join();
        }
    }

    fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst) || self.inner.supervisor.is_stopping()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clock thread: runs each due job (registration order), then sleeps until the next is
/// due (at most a tick, so that a stop is seen soon).
fn run(inner: &Inner) {
    let stopped = || inner.stopped.load(Ordering::SeqCst) || inner.supervisor.is_stopping();
    let mut jobs: Vec<Job> = Vec::new();
    while !stopped() {
        jobs.append(&mut inner.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let now = Instant::now();
        for job in jobs.iter_mut().filter(|j| j.next <= now) {
            if stopped() {
                return;
            }
            let started = Instant::now();
            (job.run)();
            let took = started.elapsed();
            if took > job.period.max(Duration::from_secs(1)) {
                tracing::warn!(
                    job = job.name,
                    ms = took.as_millis() as u64,
                    "a periodic job ran long"
                );
            }
            job.next = Instant::now() + job.period;
        }
        let wait = jobs
            .iter()
            .map(|j| j.next.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(TICK)
            .min(TICK);
        let pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() && !stopped() {
            drop(
                inner
                    .changed
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn jobs_run_at_their_periods_until_the_clock_stops() {
        let clock = Clock::new(Supervisor::new());
        let (fast, slow) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let f = fast.clone();
        clock
            .every("fast", Duration::from_millis(20), move || {
                f.fetch_add(1, Ordering::SeqCst);
            })
            .expect("job");
        let s = slow.clone();
        clock
            .every("slow", Duration::from_secs(60), move || {
                s.fetch_add(1, Ordering::SeqCst);
            })
            .expect("job");
        std::thread::sleep(Duration::from_millis(300));
        clock.stop();
        let (f, s) = (fast.load(Ordering::SeqCst), slow.load(Ordering::SeqCst));
        assert!((5..=16).contains(&f), "fast ran {f} times");
        assert_eq!(s, 1, "the slow job runs at once, then waits its period");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fast.load(Ordering::SeqCst), f, "nothing runs after stop");
    }
}
