//! The knowledge-base service: what the HTTP API and the CLI call.
//!
//! It owns the use cases — knowledge bases, uploads, documents, search, workflows (ingest,
//! reindex, folder sync), API keys — and wires the engines (embedders, indexes, the workflow
//! engine) to storage. Every call is checked
//! against the caller's tenant and scopes here, so no front end can forget to.
//!
//! It must never speak HTTP or parse command lines. Its methods block (storage, models);
//! async callers run them on blocking threads.

pub mod auth;
mod error;
pub mod indexes;
pub mod ingest;
pub mod models;
pub mod ratelimit;
pub mod reindex;
pub mod sources;
mod workflows;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use auth::{CreatedKey, Principal};
pub use error::{Result, ServiceError};

pub use workflows::{ReindexRequest, WorkflowView};

use crate::config::Config;
use crate::embed::Embedder;
use crate::error::Classify;
use crate::gateway::Gateway;
use crate::index::{CollectionOptions, Filter, SearchMode, SearchRequest};
use crate::ingest::detect::detect;
use crate::ingest::isolate::Isolation;
use crate::store::{
    BlobStore, ChunkRecord, ChunkingStamp, Document, DocumentQuery, Job, Kb, KbStats, NewDocument,
    NewKb, NewWorkflow, Page, Scope, Store,
};
use crate::supervisor::{Supervisor, Thread};
use crate::util::sha256_hex;
use crate::workflow::{Engine, EngineOptions};
use indexes::Indexes;
use models::Models;

/// Counters of work done by this process, in all and per tenant.
#[derive(Debug, Default)]
pub struct Stats {
    /// Chunks embedded by ingest and reindex workflows.
    pub chunks_embedded: AtomicU64,
    /// Search queries embedded.
    pub queries_embedded: AtomicU64,
    /// Per tenant id: (chunks embedded, queries embedded).
    per_tenant: Mutex<HashMap<String, (u64, u64)>>,
}

impl Stats {
    /// Counts `n` chunks embedded for `tenant_id`.
    pub fn add_chunks(&self, tenant_id: &str, n: u64) {
        self.chunks_embedded.fetch_add(n, Ordering::Relaxed);
        self.tenant(tenant_id, |c| c.0 += n);
    }

    /// Counts one query embedded for `tenant_id`.
    pub fn add_query(&self, tenant_id: &str) {
        self.queries_embedded.fetch_add(1, Ordering::Relaxed);
        self.tenant(tenant_id, |c| c.1 += 1);
    }

    /// (chunks, queries) embedded for `tenant_id` since start.
    pub fn of_tenant(&self, tenant_id: &str) -> (u64, u64) {
        let map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tenant_id).copied().unwrap_or_default()
    }

    fn tenant(&self, tenant_id: &str, f: impl FnOnce(&mut (u64, u64))) {
        let mut map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(tenant_id.to_owned()).or_default());
    }
}

/// State shared by the service and its workflow handlers.
pub struct Core {
    config: Config,
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    models: Models,
    indexes: Indexes,
    engine: Engine,
    /// Serialises upload admission (count unfinished documents, then register).
    admission: Mutex<()>,
    isolation: Isolation,
    /// Serialises "make sure the bytes exist + register the document" against "delete a
    /// document + drop bytes nobody references".
    blob_lock: Mutex<()>,
    stats: Stats,
    /// Requests and model tokens per minute, per key and tenant.
    limiter: ratelimit::RateLimiter,
    /// Every model call (chat, embeddings) passes through it.
    gateway: Gateway,
    /// The demo tenant's id when no API key exists (every caller acts as it).
    demo: Option<String>,
    stopping: AtomicBool,
    /// Owns the service's threads (housekeeping, the workflow engine's, the gateway's).
    supervisor: Supervisor,
    /// Held for the service's life: one process per data directory.
    _lock: std::fs::File,
}

impl Core {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn remove_blobs(&self, shas: &[String]) {
        if shas.is_empty() {
            return;
        }
        let _g = self.blob_lock.lock().unwrap_or_else(|p| p.into_inner());
        for sha in shas {
            if let Err(e) = self.blobs.remove(sha) {
                tracing::warn!(error = %e, "could not remove stored bytes");
            }
        }
    }
}

/// One file (or text) offered for ingestion.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Client-supplied name (display only).
    pub name: String,
    /// The bytes.
    pub bytes: bytes::Bytes,
    /// Client metadata (a JSON object).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What happened to one uploaded file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Position of the file in the request, from 0.
    pub index: usize,
    /// The document (new, or the existing one with identical bytes).
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Its status now.
    pub status: crate::store::DocumentStatus,
    /// True when identical bytes were already in the knowledge base (nothing re-embedded).
    pub existing: bool,
    /// The document this one replaces once ready.
    pub replaces: Option<String>,
}

/// A file of an upload refused on its own (its siblings are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Refused {
    /// Position of the file in the request, from 0.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Why, as a stable code: `payload_too_large`, `unsupported_media_type` or
    /// `invalid_request` (an empty file).
    pub code: String,
    /// Why, for people.
    pub detail: String,
}

/// Answer to an upload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The job tracking the new documents.
    pub job_id: String,
    /// One entry per admitted file (queued, or `existing` for identical bytes), in request order.
    pub documents: Vec<Accepted>,
    /// One entry per refused file, in request order.
    pub refused: Vec<Refused>,
}

/// Settings of a new knowledge base.
#[derive(Debug, Clone, Default)]
pub struct CreateKb {
    /// Unique within the tenant: letters, digits, `-`, `_`, `.`; not a UUID.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Model name or id; must be the loaded embedder.
    pub embedding_model: Option<String>,
    /// Chunking; the configured default when absent.
    pub chunking: Option<ChunkingStamp>,
}

/// A knowledge base with its counters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KbView {
    /// The knowledge base.
    #[serde(flatten)]
    pub kb: Kb,
    /// Its counters.
    pub stats: KbStats,
}

/// One search.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// The question.
    pub query: String,
    /// Results wanted (configured default when absent).
    pub top_k: Option<usize>,
    /// Matching mode.
    pub mode: SearchMode,
    /// Only these documents.
    pub document_ids: Option<Vec<String>>,
    /// Only documents whose metadata has these values.
    pub metadata: BTreeMap<String, String>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SearchHit {
    /// Score of the mode (cosine for dense, BM25, or fused RRF).
    pub score: f32,
    /// Cosine similarity of the chunk to the query (dense and hybrid searches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// The chunk.
    #[serde(flatten)]
    pub chunk: ChunkRecord,
}

/// The caller's tenant as the service sees it (`GET /v1/status`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The tenant's knowledge bases.
    pub knowledge_bases: usize,
    /// The tenant's documents accepted and not finished.
    pub queue_depth: u64,
    /// The tenant's searchable documents.
    pub documents_ready: u64,
    /// The tenant's documents that failed.
    pub documents_failed: u64,
    /// The tenant's searchable chunks.
    pub indexed_chunks: u64,
    /// The tenant's chunks embedded by this process since it started.
    pub chunks_embedded: u64,
    /// The tenant's search queries embedded by this process since it started.
    pub queries_embedded: u64,
    /// The default embedding model.
    pub embedding_model: String,
    /// True when no API key exists (single tenant, loopback only).
    pub demo_mode: bool,
    /// Instance-wide counters: only for an `admin` key of the default tenant (and in demo
    /// mode), `null` for everyone else; `/metrics` has them too.
    pub instance: Option<InstanceStatus>,
}

/// Counters of the whole instance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    /// Documents accepted and not finished, all tenants.
    pub queue_depth: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Searchable chunks over all knowledge bases.
    pub indexed_chunks: usize,
    /// Chunks embedded by this process since it started.
    pub chunks_embedded: u64,
    /// Queries embedded by this process since it started.
    pub queries_embedded: u64,
}

/// The knowledge-base service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    core: Arc<Core>,
    background: Arc<Mutex<Option<Background>>>,
}

struct Background {
    housekeeping: Thread,
}

/// What the service runs on, built by the composition root (`crate::app`) from the
/// configuration: storage, the workflow engine, the gateway, and the owner of background work.
pub struct Parts {
    /// The source of truth.
    pub store: Arc<dyn Store>,
    /// Uploaded bytes by content hash.
    pub blobs: Arc<dyn BlobStore>,
    /// Runs ingest, reindex and sync workflows (handlers registered by the service).
    pub engine: Engine,
    /// Every model call.
    pub gateway: Gateway,
    /// Owns the service's threads.
    pub supervisor: Supervisor,
    /// The data directory's lock, held for the service's life (one process per directory).
    pub lock: std::fs::File,
}

/// The kinds of workflow the service runs (the engine itself stores any kind as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowKind {
    /// Extract, chunk, embed and publish uploaded documents.
    Ingest,
    /// Re-embed a knowledge base into a new generation and switch to it.
    Reindex,
    /// Bring a knowledge base in step with a folder.
    Sync,
}

impl WorkflowKind {
    /// The name the engine and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkflowKind::Ingest => "ingest",
            WorkflowKind::Reindex => "reindex",
            WorkflowKind::Sync => "sync",
        }
    }
}

/// The workflow engine's settings for the service's workflow kinds.
pub fn engine_options(w: &crate::config::WorkflowConfig) -> EngineOptions {
    EngineOptions {
        workers: w.workers,
        concurrency: [
            (WorkflowKind::Ingest, w.ingest_concurrency),
            (WorkflowKind::Reindex, w.reindex_concurrency),
            (WorkflowKind::Sync, w.sync_concurrency),
        ]
        .into_iter()
        .map(|(k, n)| (k.as_str().to_owned(), n))
        .collect(),
        poll: Duration::from_millis(500),
    }
}

fn valid_kb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && uuid::Uuid::parse_str(name).is_err()
}

/// A client name reduced to something safe to display: the last path component, trimmed,
/// control characters removed, at most 255 bytes.
pub fn display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    name = name.trim().to_owned();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." {
        "document".to_owned()
    } else {
        name
    }
}

impl Service {
    /// Opens the service on its parts: loads or rebuilds every index, starts the workflow
    /// engine (which resumes every unfinished workflow) and the housekeeping thread.
    pub fn open(
        config: Config,
        parts: Parts,
        embedder: Arc<dyn Embedder>,
        isolation: Isolation,
    ) -> Result<Self> {
        let Parts {
            store,
            blobs,
            engine,
            gateway,
            supervisor,
            lock,
        } = parts;
        let demo = if store.has_keys()? {
            None
        } else {
            Some(store.ensure_tenant(auth::DEMO_TENANT)?.id)
        };
        let models = Models::new(
            embedder,
            config.embed.models.clone(),
            config.embed.batch_size,
        );
        let indexes = Indexes::new(
            &config.data_dir.join("indexes"),
            CollectionOptions::default(),
        );
        for kb in &store.all_kbs()? {
            if let Err(e) = models.for_kb(kb) {
                tracing::warn!(kb = %kb.name, error = %e, "knowledge base model unavailable");
            }
            indexes.open(kb, store.as_ref())?;
        }
        let mut isolation = isolation;
        isolation.timeout = Duration::from_secs(config.ingest.pdf_timeout_secs);
        isolation.memory_limit = config.ingest.pdf_memory_mib * 1024 * 1024;
        let limiter = ratelimit::RateLimiter::new(config.rate_limits);
        let core = Arc::new(Core {
            gateway,
            config,
            store,
            blobs,
            models,
            indexes,
            engine,
            admission: Mutex::new(()),
            isolation,
            blob_lock: Mutex::new(()),
            stats: Stats::default(),
            limiter,
            demo,
            stopping: AtomicBool::new(false),
            supervisor: supervisor.clone(),
            _lock: lock,
        });
        let weak = Arc::downgrade(&core);
        core.engine
            .register(Arc::new(ingest::IngestFlow(weak.clone())));
        core.engine
            .register(Arc::new(reindex::ReindexFlow(weak.clone())));
        core.engine.register(Arc::new(sources::SyncFlow(weak)));
        let service = Self {
            core: core.clone(),
            background: Arc::new(Mutex::new(None)),
        };
        service.adopt_orphans()?;
        core.engine.start()?;
        let housekeeping = {
            let core = core.clone();
            supervisor
                .thread("gw-housekeeping", move || {
                    let mut saved = Instant::now();
                    let mut scheduled = Instant::now() - Duration::from_secs(60);
                    while !core.stopping() {
                        std::thread::sleep(Duration::from_millis(100));
                        if saved.elapsed() >= Duration::from_secs(2) {
                            core.indexes.save_dirty();
                            saved = Instant::now();
                        }
                        if scheduled.elapsed() >= Duration::from_secs(1) {
                            sources::start_due(&core);
                            scheduled = Instant::now();
                        }
                    }
                })
                .map_err(ServiceError::io("the housekeeping thread"))?
        };
        *service.background.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Background { housekeeping });
        Ok(service)
    }

    /// A handle on the core for workflow handlers (never shut down through it).
    fn from_core(core: Arc<Core>) -> Self {
        Self {
            core,
            background: Arc::new(Mutex::new(None)),
        }
    }

    /// Documents registered by an upload whose ingest workflow was never created (the
    /// process died in between) get one now, with the upload's job id.
    fn adopt_orphans(&self) -> Result<()> {
        let mut by_job: BTreeMap<String, Vec<Document>> = BTreeMap::new();
        for doc in self.core.store.unfinished_documents()? {
            by_job.entry(doc.job_id.clone()).or_default().push(doc);
        }
        for (job, docs) in by_job {
            match self.core.store.workflow(&job) {
                Ok(_) => continue,
                Err(crate::store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let kb = self.core.store.kb_by_id(&docs[0].kb_id)?;
            tracing::info!(job = %job, documents = docs.len(), "adopting documents without a workflow");
            self.start_ingest(&job, &kb, docs.iter().map(|d| d.id.clone()).collect(), None)?;
        }
        Ok(())
    }

    fn start_ingest(
        &self,
        id: &str,
        kb: &Kb,
        documents: Vec<String>,
        key: Option<String>,
    ) -> Result<crate::store::WorkflowRecord> {
        let (wf, _) = self.core.engine.create(NewWorkflow {
            id: id.to_owned(),
            tenant_id: kb.tenant_id.clone(),
            kind: WorkflowKind::Ingest.as_str().into(),
            subject: Some(kb.id.clone()),
            idempotency_key: key,
            input: serde_json::to_value(ingest::IngestInput {
                kb_id: kb.id.clone(),
                documents,
            })?,
        })?;
        Ok(wf)
    }

    /// Stops the workflow workers after their current step (unfinished workflows resume at
    /// the next start) and saves every changed index. Idempotent.
    pub fn shutdown(&self) {
        self.core.stopping.store(true, Ordering::SeqCst);
        let background = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(bg) = background {
            self.core.engine.shutdown();
            bg.housekeeping.join();
        }
        self.core.gateway.shutdown();
        let saved = self.core.indexes.save_dirty();
        tracing::info!(indexes_saved = saved, "service stopped");
    }

    /// The model gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.core.gateway
    }

    /// The owner of the process's background work this service was opened with.
    pub fn supervisor(&self) -> &Supervisor {
        &self.core.supervisor
    }

    /// Agents' storage (the agent runtime keeps its own records there).
    pub fn agent_store(&self) -> Arc<dyn crate::store::AgentStore> {
        self.core.store.clone()
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Whether the service runs without API keys.
    pub fn demo_mode(&self) -> bool {
        self.core.demo.is_some()
    }

    /// Whether the service accepts work.
    pub fn is_ready(&self) -> bool {
        !self.core.stopping()
    }

    /// The caller behind an `Authorization: Bearer` token (any caller in demo mode).
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Principal> {
        if let Some(tenant_id) = &self.core.demo {
            return Ok(Principal {
                tenant_id: tenant_id.clone(),
                key_id: None,
                scopes: vec![Scope::Read, Scope::Write, Scope::Admin],
            });
        }
        auth::verify(
            self.core.store.as_ref(),
            bearer.ok_or(ServiceError::Unauthenticated)?,
        )
    }

    /// Full rights over one tenant, for local tools that own the data directory.
    pub fn local_principal(&self, tenant: &str) -> Result<Principal> {
        let tenant = self.core.store.ensure_tenant(tenant)?;
        Ok(Principal {
            tenant_id: tenant.id,
            key_id: None,
            scopes: vec![Scope::Read, Scope::Write, Scope::Admin],
        })
    }

    /// Process counters.
    pub fn instance_status(&self) -> InstanceStatus {
        InstanceStatus {
            queue_depth: self.core.store.count_unfinished().unwrap_or(0) as usize,
            queue_capacity: self.core.config.ingest.queue_capacity,
            indexed_chunks: self.core.indexes.total_chunks(),
            chunks_embedded: self.core.stats.chunks_embedded.load(Ordering::Relaxed),
            queries_embedded: self.core.stats.queries_embedded.load(Ordering::Relaxed),
        }
    }

    /// Counts one request (or `amount` model tokens) against the caller's key and tenant
    /// limits; refused with [`ServiceError::RateLimited`] when either is reached.
    pub fn admit(
        &self,
        p: &Principal,
        unit: ratelimit::Unit,
        amount: u64,
    ) -> Result<Option<ratelimit::Quota>> {
        let key = p.key_id.as_deref().unwrap_or("demo");
        self.core
            .limiter
            .admit(key, &p.tenant_id, unit, amount, Instant::now())
            .map_err(|l| {
                let unit = match l.unit {
                    ratelimit::Unit::Requests => "requests",
                    ratelimit::Unit::Tokens => "tokens",
                };
                metrics::counter!("groundwork_rate_limited_total", "scope" => l.scope, "unit" => unit)
                    .increment(1);
                ServiceError::RateLimited(l)
            })
    }

    /// Gives back model tokens admitted but not used.
    pub fn refund_tokens(&self, p: &Principal, amount: u64) {
        let key = p.key_id.as_deref().unwrap_or("demo");
        self.core
            .limiter
            .refund(key, &p.tenant_id, ratelimit::Unit::Tokens, amount);
    }

    /// The caller's tenant's figures; the instance's only for an admin of the default tenant.
    pub fn status(&self, p: &Principal) -> Result<Status> {
        p.require(Scope::Read)?;
        let kbs = self.core.store.list_kbs(&p.tenant_id)?;
        let mut total = KbStats::default();
        for kb in &kbs {
            let s = self.core.store.kb_stats(&kb.id)?;
            total.queued += s.queued + s.processing;
            total.ready += s.ready;
            total.failed += s.failed;
            total.chunks += s.chunks;
        }
        let (chunks_embedded, queries_embedded) = self.core.stats.of_tenant(&p.tenant_id);
        let operator = p.require(Scope::Admin).is_ok()
            && self.core.store.ensure_tenant(auth::DEMO_TENANT)?.id == p.tenant_id;
        Ok(Status {
            knowledge_bases: kbs.len(),
            queue_depth: total.queued,
            documents_ready: total.ready,
            documents_failed: total.failed,
            indexed_chunks: total.chunks,
            chunks_embedded,
            queries_embedded,
            embedding_model: self.core.models.default_model().model_id().to_owned(),
            demo_mode: self.core.demo.is_some(),
            instance: operator.then(|| self.instance_status()),
        })
    }

    fn kb(&self, p: &Principal, kb: &str) -> Result<Kb> {
        Ok(self.core.store.get_kb(&p.tenant_id, kb)?)
    }

    /// Creates a knowledge base.
    pub fn create_kb(&self, p: &Principal, req: CreateKb) -> Result<KbView> {
        p.require(Scope::Write)?;
        if !valid_kb_name(&req.name) {
            return Err(ServiceError::Invalid(format!(
                "knowledge base name `{}` must be 1-64 letters, digits, `-`, `_` or `.` (and not a UUID)",
                req.name
            )));
        }
        let (embedder, model_source) = match &req.embedding_model {
            Some(spec) => {
                let r = self.core.models.resolve(spec)?;
                (r.embedder, r.source)
            }
            None => (self.core.models.default_model().clone(), None),
        };
        let defaults = self.core.config.chunking;
        let chunking = req.chunking.unwrap_or(ChunkingStamp {
            max_tokens: defaults.max_tokens as u32,
            overlap_tokens: defaults.overlap_tokens as u32,
        });
        let chunking = workflows::validate_chunking(chunking, embedder.as_ref())?;
        let kb = self.core.store.create_kb(&NewKb {
            tenant_id: p.tenant_id.clone(),
            name: req.name,
            description: req.description,
            embedding_model: embedder.model_id().to_owned(),
            model_source,
            dimension: embedder.dimension() as u32,
            chunking,
        })?;
        self.core.indexes.open(&kb, self.core.store.as_ref())?;
        Ok(KbView {
            kb,
            stats: KbStats::default(),
        })
    }

    /// The caller's knowledge bases.
    pub fn list_kbs(&self, p: &Principal) -> Result<Vec<KbView>> {
        p.require(Scope::Read)?;
        self.core
            .store
            .list_kbs(&p.tenant_id)?
            .into_iter()
            .map(|kb| {
                let stats = self.core.store.kb_stats(&kb.id)?;
                Ok(KbView { kb, stats })
            })
            .collect()
    }

    /// Ids of the caller's knowledge bases (no counters: cheap enough for every chat turn).
    pub fn kb_ids(&self, p: &Principal) -> Result<Vec<String>> {
        p.require(Scope::Read)?;
        Ok(self
            .core
            .store
            .list_kbs(&p.tenant_id)?
            .into_iter()
            .map(|kb| kb.id)
            .collect())
    }

    /// One knowledge base by id or name.
    pub fn get_kb(&self, p: &Principal, kb: &str) -> Result<KbView> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let stats = self.core.store.kb_stats(&kb.id)?;
        Ok(KbView { kb, stats })
    }

    /// Deletes a knowledge base with everything in it.
    pub fn delete_kb(&self, p: &Principal, kb: &str) -> Result<()> {
        p.require(Scope::Admin)?;
        let kb = self.kb(p, kb)?;
        let index = self.core.indexes.get(&kb.id).ok();
        let _order = index
            .as_ref()
            .map(|i| i.write_lock.lock().unwrap_or_else(|p| p.into_inner()));
        let orphaned = {
            let _g = self
                .core
                .blob_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let orphaned = self.core.store.delete_kb(&kb.id)?;
            for sha in &orphaned {
                let _ = self.core.blobs.remove(sha);
            }
            orphaned
        };
        self.core.indexes.remove(&kb.id);
        tracing::info!(kb = %kb.name, blobs_removed = orphaned.len(), "knowledge base deleted");
        Ok(())
    }

    /// Accepts files for ingestion: stores their bytes durably, registers them and starts
    /// one ingest workflow for them. Identical bytes already in the KB are answered with the
    /// existing document. With an idempotency key, a repeated request returns the first
    /// one's receipt.
    pub fn upload(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        self.upload_as(p, kb, uploads, Vec::new(), idempotency_key, false)
    }

    /// [`Service::upload`] where some files of the request were already refused by the caller
    /// (`refused` holds their positions; `uploads` are the others, in request order). Each file
    /// is admitted or refused on its own; only when none is admitted is the whole request
    /// refused ([`ServiceError::AllRefused`]).
    pub fn upload_some(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        refused: Vec<Refused>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        self.upload_as(p, kb, uploads, refused, idempotency_key, false)
    }

    fn upload_as(
        &self,
        p: &Principal,
        kb: &str,
        uploads: Vec<Upload>,
        mut refused: Vec<Refused>,
        idempotency_key: Option<String>,
        keep_names: bool,
    ) -> Result<Receipt> {
        p.require(Scope::Write)?;
        if self.core.stopping() {
            return Err(ServiceError::Unavailable("shutting down"));
        }
        let kb = self.kb(p, kb)?;
        if let Some(key) = &idempotency_key {
            if let Some(receipt) = self.receipt_for_key(p, &kb, key)? {
                return Ok(receipt);
            }
        }
        let limits = &self.core.config.ingest;
        let total = uploads.len() + refused.len();
        if total == 0 {
            return Err(ServiceError::Invalid("the request holds no file".into()));
        }
        if total > limits.max_files_per_request {
            return Err(ServiceError::TooLarge(format!(
                "{total} files in one request; the limit is {}",
                limits.max_files_per_request
            )));
        }
        self.core.models.for_kb(&kb)?;
        // Each file is checked on its own; the refused ones are listed, the others go on.
        let taken: std::collections::HashSet<usize> = refused.iter().map(|r| r.index).collect();
        let mut positions = (0..).filter(|i| !taken.contains(i));
        let mut prepared = Vec::with_capacity(uploads.len());
        for u in uploads {
            let index = positions.next().unwrap_or_default();
            let name = if keep_names {
                u.name.clone()
            } else {
                display_name(&u.name)
            };
            let refuse = |e: ServiceError| Refused {
                index,
                name: name.clone(),
                code: e.code().to_owned(),
                detail: e.to_string(),
            };
            if u.bytes.len() as u64 > limits.max_file_bytes {
                refused.push(refuse(ServiceError::TooLarge(format!(
                    "`{name}` is {} bytes; the limit is {} bytes per file",
                    u.bytes.len(),
                    limits.max_file_bytes
                ))));
                continue;
            }
            if u.bytes.is_empty() {
                refused.push(refuse(ServiceError::Invalid(format!("`{name}` is empty"))));
                continue;
            }
            match detect(&u.bytes, Some(&name)) {
                Ok(media) => {
                    let sha = sha256_hex(&u.bytes);
                    prepared.push((index, name, media, sha, u));
                }
                Err(e) => refused.push(refuse(ServiceError::UnsupportedMediaType(format!(
                    "`{name}`: {e}"
                )))),
            }
        }
        refused.sort_by_key(|r| r.index);
        for r in &refused {
            metrics::counter!("groundwork_uploads_refused_total", "code" => r.code.clone())
                .increment(1);
        }
        if prepared.is_empty() {
            return Err(ServiceError::AllRefused(refused));
        }
        for (_, _, _, sha, u) in &prepared {
            self.core
                .blobs
                .put(sha, &u.bytes)
                .map_err(ServiceError::io("storing an upload"))?;
        }
        let _admission = self
            .core
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let queued = self.core.store.count_unfinished()? as usize;
        if queued + prepared.len() > limits.queue_capacity {
            return Err(ServiceError::QueueFull {
                queued,
                retry_after: (queued as u64 / 4).clamp(1, 60),
            });
        }
        let mut receipt = self.register(&kb, prepared, idempotency_key)?;
        receipt.refused = refused;
        Ok(receipt)
    }

    fn receipt_for_key(&self, p: &Principal, kb: &Kb, key: &str) -> Result<Option<Receipt>> {
        let page = self
            .core
            .store
            .list_workflows(&crate::store::WorkflowQuery {
                tenant_id: p.tenant_id.clone(),
                kind: Some(WorkflowKind::Ingest.as_str().into()),
                subject: Some(kb.id.clone()),
                limit: 1_000,
                ..Default::default()
            })?;
        let Some(wf) = page
            .items
            .into_iter()
            .find(|w| w.idempotency_key.as_deref() == Some(key))
        else {
            return Ok(None);
        };
        let input: ingest::IngestInput = serde_json::from_value(wf.input.clone())?;
        let mut documents = Vec::new();
        for (index, id) in input.documents.into_iter().enumerate() {
            if let Ok(doc) = self.core.store.get_document(&kb.id, &id) {
                documents.push(Accepted {
                    index,
                    document_id: doc.id,
                    name: doc.name,
                    status: doc.status,
                    existing: true,
                    replaces: doc.replaces,
                });
            }
        }
        Ok(Some(Receipt {
            job_id: wf.id,
            documents,
            refused: Vec::new(),
        }))
    }

    fn register(
        &self,
        kb: &Kb,
        prepared: Vec<(usize, String, crate::ingest::MediaType, String, Upload)>,
        idempotency_key: Option<String>,
    ) -> Result<Receipt> {
        let job_id = uuid::Uuid::now_v7().to_string();
        self.core.store.create_job(&job_id, &kb.tenant_id, &kb.id)?;
        let mut documents = Vec::with_capacity(prepared.len());
        let mut created = Vec::new();
        for (index, name, media, sha, u) in prepared {
            let inserted = {
                let _g = self
                    .core
                    .blob_lock
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if !self.core.blobs.contains(&sha) {
                    self.core
                        .blobs
                        .put(&sha, &u.bytes)
                        .map_err(ServiceError::io("storing an upload"))?;
                }
                self.core.store.insert_document(&NewDocument {
                    kb_id: kb.id.clone(),
                    job_id: job_id.clone(),
                    name,
                    media_type: media.mime().to_owned(),
                    size: u.bytes.len() as u64,
                    sha256: sha,
                    metadata: u.metadata,
                })?
            };
            let doc = inserted.document;
            metrics::counter!("groundwork_ingest_bytes_total").increment(doc.size);
            if inserted.created {
                created.push(doc.id.clone());
            }
            documents.push(Accepted {
                index,
                document_id: doc.id,
                name: doc.name,
                status: doc.status,
                existing: !inserted.created,
                replaces: doc.replaces,
            });
        }
        // A crash before this line leaves documents without a workflow: adopted at start.
        self.start_ingest(&job_id, kb, created, idempotency_key)?;
        Ok(Receipt {
            job_id,
            documents,
            refused: Vec::new(),
        })
    }

    /// A page of a knowledge base's documents.
    pub fn list_documents(
        &self,
        p: &Principal,
        kb: &str,
        query: &DocumentQuery,
    ) -> Result<Page<Document>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        Ok(self.core.store.list_documents(&kb.id, query)?)
    }

    /// One document.
    pub fn get_document(&self, p: &Principal, kb: &str, id: &str) -> Result<Document> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        Ok(self.core.store.get_document(&kb.id, id)?)
    }

    /// A page of a document's chunks.
    pub fn list_chunks(
        &self,
        p: &Principal,
        kb: &str,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<ChunkRecord>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let doc = self.core.store.get_document(&kb.id, id)?;
        Ok(self.core.store.list_chunks(&doc.id, offset, limit)?)
    }

    /// Deletes a document; its chunks leave the index at once.
    pub fn delete_document(&self, p: &Principal, kb: &str, id: &str) -> Result<()> {
        p.require(Scope::Write)?;
        let kb = self.kb(p, kb)?;
        let index = self.core.indexes.get(&kb.id)?;
        let _order = index.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let deleted = {
            let _g = self
                .core
                .blob_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let deleted = self.core.store.delete_document(&kb.id, id)?;
            for sha in &deleted.orphaned {
                let _ = self.core.blobs.remove(sha);
            }
            deleted
        };
        index.apply(
            &kb.embedding_model,
            &deleted.chunk_ids,
            Vec::new(),
            deleted.index_seq,
        )?;
        Ok(())
    }

    /// Searches a knowledge base; returns its id and the results, best first.
    pub fn search(
        &self,
        p: &Principal,
        kb: &str,
        params: &SearchParams,
    ) -> Result<(String, Vec<SearchHit>)> {
        p.require(Scope::Read)?;
        let limits = self.core.config.search;
        let query = params.query.trim();
        if query.is_empty() {
            return Err(ServiceError::Invalid("query must not be empty".into()));
        }
        if query.len() > limits.max_query_bytes {
            return Err(ServiceError::Invalid(format!(
                "query is {} bytes; the limit is {}",
                query.len(),
                limits.max_query_bytes
            )));
        }
        let top_k = params.top_k.unwrap_or(limits.default_top_k);
        if top_k == 0 || top_k > limits.max_top_k {
            return Err(ServiceError::Invalid(format!(
                "top_k must be within 1..={}",
                limits.max_top_k
            )));
        }
        let mut kb = self.kb(p, kb)?;
        let filter = Filter {
            kb: None,
            document_ids: params.document_ids.clone(),
            metadata: params.metadata.clone(),
        };
        // A reindex may switch the model between embedding the query and reading the index:
        // then the query is embedded again with the new one (once is enough; switches are rare).
        let mut attempts = 0;
        let (hits, mut chunks) = loop {
            attempts += 1;
            let vector = if params.mode == SearchMode::Bm25 {
                None
            } else {
                Some(self.embed_query(&kb, query)?)
            };
            let index = self.core.indexes.get(&kb.id)?;
            // The index guard is held until the chunks are read, so a reindex switching
            // generations (which takes the index's write lock around its store commit) can
            // never delete the rows behind ids this search got from the old generation.
            let guard = index.collection.read().unwrap_or_else(|p| p.into_inner());
            if guard.stamp().model_id != kb.embedding_model && vector.is_some() && attempts < 3 {
                drop(guard);
                kb = self.core.store.kb_by_id(&kb.id)?;
                continue;
            }
            let hits = guard.search(&SearchRequest {
                vector: vector.as_deref(),
                text: query,
                k: top_k,
                mode: params.mode,
                filter: &filter,
            })?;
            let ids: Vec<u64> = hits.iter().map(|h| h.chunk_id).collect();
            let chunks: BTreeMap<u64, ChunkRecord> = self
                .core
                .store
                .chunks_by_id(&ids)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
            break (hits, chunks);
        };
        let hits = hits
            .into_iter()
            .filter_map(|h| {
                chunks.remove(&h.chunk_id).map(|chunk| SearchHit {
                    score: h.score,
                    similarity: h.similarity,
                    chunk,
                })
            })
            .collect();
        Ok((kb.id, hits))
    }

    /// Embeds `texts` with the model of knowledge base `kb` (an id or name of the caller's
    /// tenant), so they compare with its passages and queries: L2-normalised vectors, in order.
    pub fn embed_for_kb(
        &self,
        p: &Principal,
        kb: &str,
        purpose: &'static str,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let embedder = self.core.models.for_kb(&kb)?;
        Ok(self
            .core
            .gateway
            .embed_internal(&kb.tenant_id, purpose, embedder.as_ref(), texts)?)
    }

    fn embed_query(&self, kb: &Kb, query: &str) -> Result<Vec<f32>> {
        let embedder = self.core.models.for_kb(kb)?;
        let started = Instant::now();
        let mut v = self.core.gateway.embed_internal(
            &kb.tenant_id,
            "search",
            embedder.as_ref(),
            &[query],
        )?;
        self.core.stats.add_query(&kb.tenant_id);
        metrics::counter!("groundwork_embedded_texts_total", "kind" => "query").increment(1);
        metrics::histogram!("groundwork_query_embed_seconds")
            .record(started.elapsed().as_secs_f64());
        v.pop()
            .ok_or_else(|| ServiceError::Internal("the embedder returned no vector".into()))
    }

    /// An ingest job's progress.
    pub fn job(&self, p: &Principal, id: &str) -> Result<Job> {
        p.require(Scope::Read)?;
        Ok(self.core.store.job(&p.tenant_id, id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_never_carry_paths() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(display_name(".."), "document");
        assert_eq!(display_name("  \u{7}bell.md "), "bell.md");
        assert_eq!(display_name(&"a".repeat(400)).len(), 255);
    }

    #[test]
    fn kb_names_are_restricted() {
        assert!(valid_kb_name("guide-v2.1_x"));
        assert!(!valid_kb_name("has space"));
        assert!(!valid_kb_name(""));
        assert!(!valid_kb_name(&uuid::Uuid::now_v7().to_string()));
    }
}
