//! Every background task and thread of the process, owned in one place.
//!
//! The composition root makes one [`Supervisor`] and hands a clone to each part that works in
//! the background (the gateway's model and log threads and its detached calls, the workflow
//! engine's workers, the clock, the agents' actors and turns).
//! Nothing else starts a task or a thread — a test reads the source to hold that. At shutdown
//! the root first has each part stop taking work, then [`Supervisor::stop_tasks`] cancels what
//! still waits and awaits every task within the grace period, and, once the parts have
//! stopped their threads, [`Supervisor::join_threads`] joins them.
//!
//! It owns no work of its own and must never decide what runs: it only starts, tracks and
//! stops what the parts give it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of the process's background work. Cheap to clone.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: TaskTracker,
    stop: CancellationToken,
    threads: Mutex<Vec<Thread>>,
}

/// A thread started by the supervisor. Its owner may join it (to know its work is done, e.g.
/// before saving what it wrote); otherwise the supervisor joins it at shutdown.
#[derive(Clone)]
pub struct Thread {
    name: String,
    handle: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Thread {
    /// Waits for the thread to end (at once if it was joined before). False if it panicked.
    pub fn join(&self) -> bool {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(std::thread::JoinHandle::join) {
            Some(Err(_)) => {
                tracing::error!(thread = %self.name, "a background thread panicked");
                false
            }
            _ => true,
        }
    }
}

impl Supervisor {
    /// A supervisor with nothing running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the current tokio runtime, tracked: shutdown awaits it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.tasks.spawn(task)
    }

    /// Starts a named thread (a model worker, a queue consumer), tracked: shutdown joins it.
    /// The thread must end on its own once its owner stops it (closes its queue, sets its
    /// flag); the supervisor does not interrupt threads.
    pub fn thread<F>(&self, name: impl Into<String>, f: F) -> std::io::Result<Thread>
    where
        F: FnOnce() + Send + 'static,
    {
        let name = name.into();
        let handle = std::thread::Builder::new().name(name.clone()).spawn(f)?;
        let thread = Thread {
            name,
            handle: Arc::new(Mutex::new(Some(handle))),
        };
        self.inner
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread.clone());
        Ok(thread)
    }

    /// Cancelled when shutdown begins: loops that wait (the clock, idle actors) select on it.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Cancels waiting loops and awaits every task for at most `grace`; answers how many
    /// were still running then. Call it once each part has stopped taking work.
    pub async fn stop_tasks(&self, grace: Duration) -> usize {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.inner.tasks.len(),
                "grace period over with background tasks still running"
            );
        }
        self.inner.tasks.len()
    }

    /// Joins every thread (off the async workers) for at most `grace`; answers how many there
    /// were. Call it once their owners have stopped them (queues closed, flags set).
    pub async fn join_threads(&self, grace: Duration) -> usize {
        let threads: Vec<Thread> =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let n = threads.len();
        let joined = tokio::task::spawn_blocking(move || {
            for t in &threads {
                t.join();
            }
        });
        if tokio::time::timeout(grace, joined).await.is_err() {
            tracing::warn!("grace period over with background threads still running");
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_awaits_tasks_and_joins_threads() {
        let s = Supervisor::new();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = done.clone();
        let stop = s.stopping();
        s.spawn(async move {
            stop.cancelled().await;
            d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let d = done.clone();
        s.thread("test-worker", move || {
            let _ = rx.recv();
            d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .expect("thread");
        drop(tx);
        assert_eq!(s.stop_tasks(Duration::from_secs(5)).await, 0);
        assert_eq!(s.join_threads(Duration::from_secs(5)).await, 1);
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_task_past_the_grace_period_is_reported() {
        let s = Supervisor::new();
        s.spawn(std::future::pending::<()>());
        assert_eq!(s.stop_tasks(Duration::from_millis(50)).await, 1);
    }
}
