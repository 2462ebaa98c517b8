//! Background ingestion: a bounded queue of accepted documents and three stages on dedicated
//! threads — extract+chunk (several workers), embed (one thread batching chunks across
//! documents so both cores stay busy), publish (store commit, then index apply).
//!
//! Each stage is a plain function ([`extract_stage`], [`chunk_stage`], [`embed_stage`],
//! [`publish_stage`]) so that the workflow engine can run them as durable steps later. A
//! document that fails is marked `failed` with its reason; its siblings carry on. On shutdown
//! unfinished documents stay `queued`/`processing` in the store and are resumed at start-up.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Core, Result, ServiceError};
use crate::index::{NewPoint, PointMeta};
use crate::ingest::{
    extract, Chunk, Chunker, ChunkingOptions, ExtractOptions, Extracted, IngestError,
};
use crate::store::{ChunkRow, Kb, Publish};

/// A document waiting to be processed.
#[derive(Debug, Clone)]
pub struct Task {
    /// The document.
    pub document_id: String,
    /// Its name (for type detection of text formats).
    pub name: String,
    /// Its content hash (key of the stored bytes).
    pub sha256: String,
    /// Its filterable metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Its knowledge base.
    pub kb: Kb,
}

struct QueueState {
    items: VecDeque<Task>,
    /// Admitted documents not yet finished (queued or in a stage).
    in_flight: usize,
    closed: bool,
}

/// The bounded queue between the upload endpoint and the extract workers.
pub struct WorkQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

impl WorkQueue {
    /// A queue admitting at most `capacity` unfinished documents.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                in_flight: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves room for `n` documents, or says how many are waiting.
    pub fn admit(&self, n: usize) -> Result<(), usize> {
        let mut s = self.lock();
        if s.closed {
            return Err(s.in_flight);
        }
        if s.in_flight + n > self.capacity {
            return Err(s.in_flight);
        }
        s.in_flight += n;
        Ok(())
    }

    /// Queues an admitted document.
    pub fn push(&self, task: Task) {
        self.lock().items.push_back(task);
        self.ready.notify_one();
    }

    /// Queues a document found unfinished at start-up (admitted beyond capacity if need be).
    pub fn resume(&self, task: Task) {
        let mut s = self.lock();
        s.in_flight += 1;
        s.items.push_back(task);
        drop(s);
        self.ready.notify_one();
    }

    /// Releases `n` reservations (documents finished or not created after all).
    pub fn release(&self, n: usize) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(n);
    }

    /// Next task; `None` once closed.
    fn pop(&self) -> Option<Task> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some(t) = s.items.pop_front() {
                return Some(t);
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stops handing out tasks (those left stay unfinished in the store).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Admitted documents not yet finished.
    pub fn depth(&self) -> usize {
        self.lock().in_flight
    }
}

/// A document cut into chunks, waiting for vectors.
pub struct Chunked {
    task: Task,
    extracted_pages: Option<u32>,
    warnings: Vec<String>,
    chunks: Vec<Chunk>,
}

/// A document with every vector, ready to publish.
pub struct Embedded {
    chunked: Chunked,
    vectors: Vec<Vec<f32>>,
}

/// Reads the stored bytes and extracts text (PDFs in an isolated process).
pub fn extract_stage(core: &Core, task: &Task) -> Result<Extracted, IngestError> {
    let bytes = core
        .blobs
        .get(&task.sha256)
        .map_err(|e| IngestError::Worker(format!("stored upload unreadable: {e}")))?;
    let options = ExtractOptions {
        isolation: core.isolation.clone(),
        password: None,
    };
    extract(&bytes, Some(&task.name), &options)
}

/// Cuts extracted text into chunks with the knowledge base's settings.
pub fn chunk_stage(core: &Core, task: &Task, extracted: &Extracted) -> Vec<Chunk> {
    let options = ChunkingOptions {
        max_tokens: task.kb.chunking.max_tokens as usize,
        overlap_tokens: task.kb.chunking.overlap_tokens as usize,
    };
    Chunker::new(core.embedder.tokenizer(), options).chunk(&task.document_id, extracted)
}

/// Embeds texts with the local model.
pub fn embed_stage(core: &Core, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let started = Instant::now();
    let vectors = core.embedder.embed(texts)?;
    core.stats
        .chunks_embedded
        .fetch_add(texts.len() as u64, Ordering::Relaxed);
    metrics::counter!("groundwork_embedded_texts_total", "kind" => "chunk")
        .increment(texts.len() as u64);
    metrics::histogram!("groundwork_embed_batch_seconds").record(started.elapsed().as_secs_f64());
    Ok(vectors)
}

/// Commits a document's chunks and vectors, then makes them searchable in one step (the
/// document it replaces leaves the index in the same step).
pub fn publish_stage(core: &Core, doc: &mut Embedded) -> Result<()> {
    let c = &doc.chunked;
    let index = core.indexes.get(&c.task.kb.id)?;
    let rows = c
        .chunks
        .iter()
        .zip(&doc.vectors)
        .map(|(chunk, vector)| ChunkRow {
            ordinal: chunk.ordinal,
            start: chunk.start as u64,
            end: chunk.end as u64,
            text: &chunk.text,
            tokens: chunk.tokens as u32,
            pages: chunk.pages,
            heading_path: &chunk.heading_path,
            hash: &chunk.hash,
            vector,
        })
        .collect();
    let _order = index.write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let published = core.store.publish(&Publish {
        document_id: &c.task.document_id,
        pages: c.extracted_pages,
        warnings: &c.warnings,
        chunks: rows,
    })?;
    let points = c
        .chunks
        .iter()
        .zip(std::mem::take(&mut doc.vectors))
        .zip(&published.chunk_ids)
        .map(|((chunk, vector), &id)| NewPoint {
            meta: PointMeta {
                chunk_id: id,
                document_id: c.task.document_id.clone(),
                kb: c.task.kb.id.clone(),
                metadata: c.task.metadata.clone(),
            },
            vector,
            text: &chunk.text,
        })
        .collect();
    let removed = published
        .replaced
        .as_ref()
        .map(|(_, ids)| ids.as_slice())
        .unwrap_or(&[]);
    index.apply(
        &c.task.kb.embedding_model,
        removed,
        points,
        published.index_seq,
    )?;
    drop(_order);
    core.remove_blobs(&published.orphaned);
    Ok(())
}

/// The running stage threads.
pub struct Pipeline {
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the stage threads on `core`'s queue.
    pub fn start(core: Arc<Core>) -> std::io::Result<Self> {
        let workers = core.config.ingest.extract_workers;
        let (chunked_tx, chunked_rx) = sync_channel::<Chunked>(workers * 2);
        let (embedded_tx, embedded_rx) = sync_channel::<Embedded>(4);
        let mut threads = Vec::new();
        for i in 0..workers {
            let core = core.clone();
            let tx = chunked_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gw-extract-{i}"))
                    .spawn(move || extract_loop(&core, &tx))?,
            );
        }
        drop(chunked_tx);
        {
            let core = core.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("gw-embed".into())
                    .spawn(move || embed_loop(&core, &chunked_rx, &embedded_tx))?,
            );
        }
        threads.push(
            std::thread::Builder::new()
                .name("gw-publish".into())
                .spawn(move || publish_loop(&core, &embedded_rx))?,
        );
        Ok(Self { threads })
    }

    /// Waits for the stage threads after the queue was closed.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("an ingest thread panicked");
            }
        }
    }
}

fn fail(core: &Core, task: &Task, code: &str, message: &str) {
    tracing::warn!(document = %task.document_id, name = %task.name, code, message, "document failed");
    metrics::counter!("groundwork_ingest_documents_total", "status" => "failed").increment(1);
    if let Err(e) = core.store.mark_failed(&task.document_id, code, message) {
        tracing::error!(error = %e, "could not record a failed document");
    }
    core.queue.release(1);
}

fn extract_loop(core: &Core, tx: &SyncSender<Chunked>) {
    while let Some(task) = core.queue.pop() {
        match core.store.mark_processing(&task.document_id) {
            Ok(()) => {}
            Err(crate::store::StoreError::NotFound { .. }) => {
                // Deleted or superseded while waiting.
                core.queue.release(1);
                continue;
            }
            Err(e) => {
                fail(core, &task, "store_error", &e.to_string());
                continue;
            }
        }
        let extracted = match extract_stage(core, &task) {
            Ok(x) => x,
            Err(e) => {
                fail(core, &task, e.code(), &e.to_string());
                continue;
            }
        };
        let chunks = chunk_stage(core, &task, &extracted);
        if chunks.is_empty() {
            fail(
                core,
                &task,
                "no_text",
                "the document holds no text to index",
            );
            continue;
        }
        let pages = (extracted.page_count() > 0).then_some(extracted.page_count() as u32);
        let chunked = Chunked {
            task,
            extracted_pages: pages,
            warnings: extracted.warnings,
            chunks,
        };
        if tx.send(chunked).is_err() {
            return;
        }
    }
}

/// A document whose chunks are partly embedded.
struct Pending {
    chunked: Chunked,
    vectors: Vec<Vec<f32>>,
    failed: Option<String>,
}

fn embed_loop(core: &Core, rx: &Receiver<Chunked>, tx: &SyncSender<Embedded>) {
    let target = core.config.ingest.embed_batch_chunks;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        if core.stopping() {
            return;
        }
        // Gather documents until a batch is full or nothing more is waiting.
        let waiting = |p: &VecDeque<Pending>| -> usize {
            p.iter()
                .map(|d| d.chunked.chunks.len() - d.vectors.len())
                .sum()
        };
        while open && waiting(&pending) < target {
            let next = if pending.is_empty() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            };
            if let Some(chunked) = next {
                pending.push_back(Pending {
                    vectors: Vec::with_capacity(chunked.chunks.len()),
                    chunked,
                    failed: None,
                });
            }
        }
        if pending.is_empty() {
            if open {
                continue;
            }
            return;
        }
        // Take up to `target` chunks from the front documents.
        let mut slices: Vec<(usize, usize, usize)> = Vec::new();
        let mut taken = 0;
        for (i, d) in pending.iter().enumerate() {
            if taken >= target {
                break;
            }
            let from = d.vectors.len();
            let n = (d.chunked.chunks.len() - from).min(target - taken);
            slices.push((i, from, from + n));
            taken += n;
        }
        let texts: Vec<&str> = slices
            .iter()
            .flat_map(|&(i, a, b)| {
                pending[i].chunked.chunks[a..b]
                    .iter()
                    .map(|c| c.text.as_str())
            })
            .collect();
        match embed_stage(core, &texts) {
            Ok(vectors) => {
                let mut it = vectors.into_iter();
                for &(i, a, b) in &slices {
                    pending[i].vectors.extend(it.by_ref().take(b - a));
                }
            }
            Err(_) => {
                // Isolate the failure: embed each document's slice alone.
                for &(i, a, b) in &slices {
                    let texts: Vec<&str> = pending[i].chunked.chunks[a..b]
                        .iter()
                        .map(|c| c.text.as_str())
                        .collect();
                    match embed_stage(core, &texts) {
                        Ok(v) => pending[i].vectors.extend(v),
                        Err(e) => pending[i].failed = Some(e.to_string()),
                    }
                }
            }
        }
        while let Some(front) = pending.front() {
            let complete = front.vectors.len() == front.chunked.chunks.len();
            if front.failed.is_none() && !complete {
                break;
            }
            let Some(done) = pending.pop_front() else {
                break;
            };
            if let Some(err) = done.failed {
                fail(core, &done.chunked.task, "embedding_error", &err);
                continue;
            }
            let embedded = Embedded {
                chunked: done.chunked,
                vectors: done.vectors,
            };
            if tx.send(embedded).is_err() {
                return;
            }
        }
        // Failed documents behind the front one need no more work either.
        let mut i = 0;
        while i < pending.len() {
            if pending[i].failed.is_some() {
                if let Some(p) = pending.remove(i) {
                    fail(
                        core,
                        &p.chunked.task,
                        "embedding_error",
                        p.failed.as_deref().unwrap_or(""),
                    );
                }
            } else {
                i += 1;
            }
        }
    }
}

fn publish_loop(core: &Core, rx: &Receiver<Embedded>) {
    while let Ok(mut doc) = rx.recv() {
        let outcome = publish_stage(core, &mut doc);
        let task = &doc.chunked.task;
        match outcome {
            Ok(()) => {
                core.queue.release(1);
                metrics::counter!("groundwork_ingest_documents_total", "status" => "ready")
                    .increment(1);
                metrics::counter!("groundwork_ingest_chunks_total")
                    .increment(doc.chunked.chunks.len() as u64);
                tracing::debug!(document = %task.document_id, chunks = doc.chunked.chunks.len(), "published");
            }
            Err(ServiceError::NotFound { .. }) => {
                // Deleted or superseded while processing: nothing to publish.
                core.queue.release(1);
            }
            Err(e) => fail(core, task, e.code(), &e.to_string()),
        }
    }
}
