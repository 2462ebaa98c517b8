//! Streamed answers as resumable event streams.
//!
//! Every event of a streamed answer gets a sequence number (its SSE `id`), is kept in memory
//! while the answer is generated (and a minute after) and is written to the store in small
//! batches by a background task, where it stays for the configured retention. A client that
//! lost its connection asks again with `Last-Event-ID` and gets what it missed, then the rest
//! live; after a restart the buffered events are replayed from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::agents::StoredEvent;
use crate::store::AgentStore;
use crate::supervisor::Supervisor;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 1, 2, … (the SSE id).
    pub seq: u64,
    /// SSE event name.
    pub name: String,
    /// JSON data.
    pub data: String,
}

/// The terminal event names: a stream ends after one of them.
pub const TERMINAL: [&str; 2] = ["done", "error"];

struct Live {
    /// (tenant, agent) the stream belongs to.
    owner: (String, String),
    events: Mutex<Vec<Event>>,
    /// Latest sequence number; `u64::MAX` once finished.
    seq: watch::Sender<u64>,
    /// Cancelled when a client asks the answer to stop.
    stop: CancellationToken,
}

/// Streams being generated (or recently finished) in this process.
#[derive(Clone, Default)]
pub struct Hub {
    live: Arc<Mutex<HashMap<String, Arc<Live>>>>,
    /// Runs each stream's event writer.
    supervisor: Supervisor,
}

/// The writing end of one stream.
pub struct Emitter {
    id: String,
    live: Arc<Live>,
    next: u64,
    hub: Hub,
}

/// A reader of a stream from some position.
pub enum Reader {
    /// Following a stream of this process.
    Live {
        /// Events after this sequence number are still to be read.
        cursor: u64,
        /// The stream.
        live: LiveHandle,
    },
    /// Replaying what the store holds.
    Stored(Vec<Event>),
}

/// Opaque handle on a live stream.
pub struct LiveHandle(Arc<Live>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// No stream yet; writers run under `supervisor`.
    pub fn new(supervisor: Supervisor) -> Self {
        Self {
            live: Arc::default(),
            supervisor,
        }
    }

    /// Starts a stream; its events are persisted through `store`.
    pub fn open(
        &self,
        store: Arc<dyn AgentStore>,
        id: &str,
        tenant_id: &str,
        agent_id: &str,
    ) -> Emitter {
        let (seq, _) = watch::channel(0);
        let live = Arc::new(Live {
            owner: (tenant_id.to_owned(), agent_id.to_owned()),
            events: Mutex::new(Vec::new()),
            seq,
            stop: CancellationToken::new(),
        });
        lock(&self.live).insert(id.to_owned(), live.clone());
        // The writer persists what the live buffer holds beyond what it wrote, a batch at a
        // time (a token every ~30 ms: waiting 100 ms between writes lets a few gather), until
        // the stream has ended and everything is written. No queue: the buffer is the queue.
        let (writer_live, mut seq_rx) = (live.clone(), live.seq.subscribe());
        let (sid, tid, aid) = (id.to_owned(), tenant_id.to_owned(), agent_id.to_owned());
        self.supervisor.spawn(async move {
            let mut written = 0u64;
            loop {
                let ended = *seq_rx.borrow_and_update() == u64::MAX;
                let batch: Vec<StoredEvent> = {
                    let events = lock(&writer_live.events);
                    let start = events.partition_point(|e| e.seq <= written);
                    events[start..]
                        .iter()
                        .map(|e| StoredEvent {
                            stream_id: sid.clone(),
                            seq: e.seq,
                            tenant_id: tid.clone(),
                            agent_id: aid.clone(),
                            event: e.name.clone(),
                            data: e.data.clone(),
                        })
                        .collect()
                };
                if let Some(last) = batch.last() {
                    written = last.seq;
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || store.append_events(&batch)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "could not buffer stream events"),
                        Err(e) => tracing::warn!(error = %e, "stream event writer failed"),
                    }
                } else if ended {
                    return;
                }
                if !ended {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if seq_rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        Emitter {
            id: id.to_owned(),
            live,
            next: 1,
            hub: self.clone(),
        }
    }

    /// Asks stream `id` of `owner` to stop; `false` when this process is not generating it
    /// (finished, unknown, or another agent's).
    pub fn stop(&self, id: &str, owner: (&str, &str)) -> bool {
        let Some(live) = lock(&self.live).get(id).cloned() else {
            return false;
        };
        if (live.owner.0.as_str(), live.owner.1.as_str()) != owner || *live.seq.borrow() == u64::MAX
        {
            return false;
        }
        live.stop.cancel();
        true
    }

    /// A reader of stream `id` of `owner` (tenant, agent) after `after`: live when this
    /// process has it, else `None` (the caller then replays from the store).
    pub fn follow(&self, id: &str, owner: (&str, &str), after: u64) -> Option<Reader> {
        let live = lock(&self.live).get(id).cloned()?;
        if (live.owner.0.as_str(), live.owner.1.as_str()) != owner {
            return None;
        }
        Some(Reader::Live {
            cursor: after,
            live: LiveHandle(live),
        })
    }
}

impl Emitter {
    /// Cancelled when a client asks this answer to stop.
    pub fn stop_token(&self) -> CancellationToken {
        self.live.stop.clone()
    }

    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends an event; returns its sequence number.
    pub fn emit(&mut self, name: &str, data: &serde_json::Value) -> u64 {
        let seq = self.next;
        self.next += 1;
        let data = data.to_string();
        lock(&self.live.events).push(Event {
            seq,
            name: name.to_owned(),
            data,
        });
        let terminal = TERMINAL.contains(&name);
        self.live
            .seq
            .send_replace(if terminal { u64::MAX } else { seq });
        seq
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        if *self.live.seq.borrow() != u64::MAX {
            // Ended without a terminal event (a panic or a bug): say so rather than hang readers.
            let last = interrupted(self.next);
            self.emit(
                &last.name,
                &serde_json::from_str(&last.data).unwrap_or_default(),
            );
        }
        // Live readers may reconnect for a minute; after that the store answers.
        let (hub, id) = (self.hub.clone(), self.id.clone());
        let stop = hub.supervisor.stopping();
        if tokio::runtime::Handle::try_current().is_ok() {
            hub.supervisor.clone().spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.cancelled() => {}
                }
                lock(&hub.live).remove(&id);
            });
        }
    }
}

impl LiveHandle {
    /// Events after `cursor`, waiting for at least one unless the stream has ended; empty
    /// when it ended and everything was read.
    pub async fn next_after(&self, cursor: u64) -> Vec<Event> {
        let mut rx = self.0.seq.subscribe();
        loop {
            {
                let events = lock(&self.0.events);
                let start = events.partition_point(|e| e.seq <= cursor);
                if start < events.len() {
                    return events[start..].to_vec();
                }
            }
            if *rx.borrow() == u64::MAX {
                return Vec::new();
            }
            if rx.changed().await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// The last event of a stream whose answer stopped unfinished (a panic, or the process
/// generating it stopped), numbered `seq`.
pub fn interrupted(seq: u64) -> Event {
    Event {
        seq,
        name: "error".into(),
        data: serde_json::json!({"code": "interrupted", "message": "the answer stopped before it was finished"})
            .to_string(),
    }
}

/// Stored events as stream events.
pub fn from_stored(events: Vec<StoredEvent>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| Event {
            seq: e.seq,
            name: e.event,
            data: e.data,
        })
        .collect()
}
