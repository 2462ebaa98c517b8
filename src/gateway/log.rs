//! The call log's writer: records go through a bounded queue to one thread that writes them in
//! batches, so no request waits on SQLite. At shutdown the queue is drained.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::gateway::{CallLog, GatewayStore};
use crate::supervisor::{Supervisor, Thread};

/// Most records per transaction.
const BATCH: usize = 256;

/// Handle to the writer thread.
pub struct LogWriter {
    tx: Mutex<Option<SyncSender<CallLog>>>,
    thread: Option<Thread>,
}

fn run(store: Arc<dyn GatewayStore>, rx: Receiver<CallLog>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
        loop {
            match store.insert_calls(&batch) {
                Ok(()) => break,
                Err(e) if e.is_retryable() && delay < Duration::from_secs(5) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(error = %e, calls = batch.len(), "gateway calls were not logged");
                    break;
                }
            }
        }
    }
}

impl LogWriter {
    /// Starts the writer.
    pub fn start(store: Arc<dyn GatewayStore>, capacity: usize, supervisor: &Supervisor) -> Self {
        let (tx, rx) = sync_channel(capacity);
        let thread = supervisor
            .thread("groundwork-gateway-log", move || run(store, rx))
            .ok();
        Self {
            tx: Mutex::new(Some(tx)),
            thread,
        }
    }

    /// Queues a record; when the queue is full the caller's blocking thread waits for room
    /// (records carry spend, so they are never dropped).
    pub async fn record(&self, call: CallLog) {
        let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            tracing::warn!(id = %call.id, "gateway call after shutdown not logged");
            return;
        };
        match tx.try_send(call) {
            Ok(()) => {}
            Err(TrySendError::Full(call)) => {
                metrics::counter!("groundwork_gateway_log_backpressure_total").increment(1);
                let _ = tokio::task::spawn_blocking(move || tx.send(call).is_ok()).await;
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Queues a record from a thread that may block (never an async worker).
    pub fn record_blocking(&self, call: CallLog) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => {
                let _ = tx.send(call);
            }
            None => tracing::warn!(id = %call.id, "gateway call after shutdown not logged"),
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = &self.thread {
            t.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
