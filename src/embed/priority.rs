//! Query embeddings ahead of bulk ones.
//!
//! Concurrent queries are gathered into one encoder call (micro-batching): the first query to
//! find no batch running leads — it waits up to `max_wait` for others (or until `max_batch`
//! have come; not at all when it is alone and the last batch was a single query, so a lone
//! client pays no wait), runs them all at once and hands each caller its vector — while later
//! arrivals form the next batch behind it. The queue is bounded: past `capacity` waiting queries a new
//! one is refused (the caller answers 503) rather than queued without end.
//!
//! Bulk work (ingest, reindex) calls [`QueryQueue::yield_to_queries`] between encoder
//! operations and waits there while queries are waiting or running, so a search never waits
//! behind a whole ingest batch.
//!
//! Owns only the queue and its hand-off: no threads of its own (the callers' threads run the
//! batches) and no knowledge of the model.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{EmbedError, Result};

/// Tuning of the query queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Most queries in one encoder call.
    pub max_batch: usize,
    /// Longest a query waits for others to join its batch.
    pub max_wait: Duration,
    /// Most queries waiting; more are refused.
    pub capacity: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(2),
            capacity: 1024,
        }
    }
}

#[derive(Default)]
struct State {
    /// Waiting queries: (ticket, text).
    pending: Vec<(u64, String)>,
    /// When the oldest waiting query arrived.
    oldest: Option<Instant>,
    /// A leader is gathering or running a batch.
    busy: bool,
    /// Queries in the last batch: a lone query after a lone query does not wait for company
    /// (no load, nobody to batch with).
    last_batch: usize,
    next_ticket: u64,
    done: HashMap<u64, Result<Vec<f32>, String>>,
}

/// The query queue of one embedder.
pub(crate) struct QueryQueue {
    options: QueueOptions,
    state: Mutex<State>,
    changed: Condvar,
}

impl QueryQueue {
    pub(crate) fn new(options: QueueOptions) -> Self {
        Self {
            options: QueueOptions {
                max_batch: options.max_batch.max(1),
                ..options
            },
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Embeds one query, batched with the queries that arrive with it; `run` embeds a batch
    /// (one vector per text, in order).
    pub(crate) fn submit(
        &self,
        text: &str,
        run: impl Fn(&[&str]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<f32>> {
        let mut st = self.lock();
        if st.pending.len() >= self.options.capacity {
            return Err(EmbedError::Overloaded);
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push((ticket, text.to_owned()));
        st.oldest.get_or_insert_with(Instant::now);
        self.changed.notify_all();
        loop {
            if let Some(result) = st.done.remove(&ticket) {
                return result.map_err(EmbedError::Batch);
            }
            if st.busy || st.pending.is_empty() {
                st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead the next batch: gather until it is full or its oldest query has waited
            // long enough.
            st.busy = true;
            let wait = if st.last_batch <= 1 && st.pending.len() == 1 {
                Duration::ZERO
            } else {
                self.options.max_wait
            };
            let deadline = st.oldest.unwrap_or_else(Instant::now) + wait;
            while st.pending.len() < self.options.max_batch {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = self
                    .changed
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let take = st.pending.len().min(self.options.max_batch);
            st.last_batch = take;
            let batch: Vec<(u64, String)> = st.pending.drain(..take).collect();
            st.oldest = (!st.pending.is_empty()).then(Instant::now);
            drop(st);
            let texts: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
            let result = run(&texts);
            metrics::histogram!("groundwork_query_batch_size").record(batch.len() as f64);
            st = self.lock();
            match result {
                Ok(vectors) if vectors.len() == batch.len() => {
                    for ((t, _), v) in batch.iter().zip(vectors) {
                        st.done.insert(*t, Ok(v));
                    }
                }
                Ok(_) => {
                    for (t, _) in &batch {
                        st.done
                            .insert(*t, Err("the embedder returned a wrong count".into()));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    for (t, _) in &batch {
                        st.done.insert(*t, Err(e.clone()));
                    }
                }
            }
            st.busy = false;
            self.changed.notify_all();
        }
    }

    /// Waits while queries are waiting or being embedded (bulk work calls this between
    /// encoder operations).
    pub(crate) fn yield_to_queries(&self) {
        let mut st = self.lock();
        while st.busy || !st.pending.is_empty() {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn fake(texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
    }

    #[test]
    fn concurrent_queries_share_encoder_calls_and_get_their_own_vectors() {
        let queue = Arc::new(QueryQueue::new(QueueOptions::default()));
        let calls = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (queue, calls) = (queue.clone(), calls.clone());
                std::thread::spawn(move || {
                    let text = "x".repeat(i + 1);
                    let v = queue
                        .submit(&text, |t| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            fake(t)
                        })
                        .expect("embedded");
                    assert_eq!(v, vec![(i + 1) as f32]);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!(
            calls < 16,
            "32 concurrent queries took {calls} encoder calls"
        );
    }

    #[test]
    fn a_full_queue_refuses_and_an_error_reaches_every_member() {
        let queue = Arc::new(QueryQueue::new(QueueOptions {
            capacity: 0,
            ..QueueOptions::default()
        }));
        assert!(matches!(
            queue.submit("q", fake),
            Err(EmbedError::Overloaded)
        ));
        let queue = QueryQueue::new(QueueOptions::default());
        let err = queue
            .submit("q", |_| Err(EmbedError::Tokenizer("bad".into())))
            .expect_err("fails");
        assert!(err.to_string().contains("bad"));
    }

    #[test]
    fn bulk_work_waits_while_a_query_batch_runs() {
        let queue = Arc::new(QueryQueue::new(QueueOptions::default()));
        let started = Arc::new(std::sync::Barrier::new(2));
        let q = queue.clone();
        let s = started.clone();
        let query = std::thread::spawn(move || {
            q.submit("q", |t| {
                s.wait();
                std::thread::sleep(Duration::from_millis(100));
                fake(t)
            })
        });
        started.wait();
        let t = Instant::now();
        queue.yield_to_queries();
        assert!(t.elapsed() >= Duration::from_millis(80));
        query.join().expect("thread").expect("embedded");
        let t = Instant::now();
        queue.yield_to_queries();
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
