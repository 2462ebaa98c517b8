//! The knowledge-base service: what the HTTP API and the CLI call.
//!
//! It owns the use cases — knowledge bases, uploads, documents, search, workflows (ingest,
//! reindex, folder sync), API keys — and wires the engines (embedders, indexes, the workflow
//! engine) to storage. Every call is checked
//! against the caller's tenant and scopes here, so no front end can forget to.
//!
//! One file per resource: `kbs`, `documents` (uploads), `search`, `suggest` (suggested
//! questions), `workflows` (runs, reindex,
//! sources), `auth` (keys); the workflow handlers are `ingest`, `reindex` and `sources`; the
//! per-KB indexes kept in step with the store are `indexes`. This file holds the service's
//! state (`Core`), opening, shutdown, status and rate-limit admission.
//!
//! It must never speak HTTP or parse command lines. Its methods block (storage, models);
//! async callers run them on blocking threads.

pub mod auth;
mod documents;
mod error;
mod follow;
pub mod ingest;
mod kbs;
pub mod models;
pub mod ratelimit;
pub mod reindex;
mod search;
pub mod sources;
mod suggest;
mod workflows;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use auth::{CreatedKey, Principal};
pub use error::{Result, ServiceError};

pub use documents::{display_name, Accepted, Receipt, Refused, Upload};
pub use kbs::{CreateKb, KbView};
pub use search::{Found, Rerank, RerankReport, SearchHit, SearchParams};
pub use suggest::Suggestion;
pub use workflows::{ReindexRequest, SourceView, WorkflowView};

use crate::clock::Clock;
use crate::config::Config;
use crate::embed::{EmbedOptions, Embedder};
use crate::gateway::Gateway;
use crate::index::CollectionOptions;
use crate::ingest::isolate::Isolation;
use crate::store::{
    BlobStore, Document, Kb, KbStats, NewWorkflow, ReplicaRecord, Scope, Section, Store,
};
use crate::supervisor::Supervisor;
use crate::workflow::{Engine, EngineOptions};
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

/// Finds out (and logs) which extraction tools run here: poppler's `pdftotext` (the second
/// PDF engine) and OCR (Tesseract with its languages, and `pdftoppm`). Returns OCR's status.
fn extraction_tools(ingest: &crate::config::IngestConfig) -> std::result::Result<String, String> {
    match crate::ingest::poppler::probe() {
        Ok(v) => tracing::info!(version = %v, "second PDF engine available: pdftotext"),
        Err(why) => tracing::warn!(%why, "second PDF engine unavailable; pdf-extract only"),
    }
    let ocr = crate::ingest::ocr::probe(&ingest.ocr);
    match &ocr {
        Ok(v) => tracing::info!(
            version = %v,
            languages = %ingest.ocr.languages,
            dpi = ingest.ocr.dpi,
            "OCR available: image uploads and PDF pages without text are recognised"
        ),
        Err(why) => tracing::warn!(
            %why,
            "OCR unavailable: image uploads are refused, PDF pages without text stay empty"
        ),
    }
    ocr
}

/// State shared by the service and its workflow handlers.
pub struct Core {
    config: Config,
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    models: Models,
    indexes: crate::index::Catalog,
    engine: Engine,
    isolation: Isolation,
    /// Whether OCR runs (Tesseract's version), or why not: image uploads are refused then.
    ocr: std::result::Result<String, String>,
    stats: Stats,
    /// This process as the other replicas see it.
    replica: ReplicaRecord,
    /// Where other replicas reach this one's API, once it listens.
    address: std::sync::OnceLock<String>,
    /// Requests and model tokens per minute, per key and tenant.
    limiter: ratelimit::RateLimiter,
    /// Whether its buckets are in the shared store.
    limits_shared: bool,
    /// Every model call (chat, embeddings) passes through it.
    gateway: Gateway,
    /// The demo tenant's id when no API key exists (every caller acts as it).
    demo: Option<String>,
    stopping: AtomicBool,
    /// Owns the service's threads (the workflow engine's, the gateway's).
    supervisor: Supervisor,
    /// Runs the service's housekeeping (and every other part's periodic work).
    clock: Clock,
    /// Held for the service's life: one process per data directory.
    _lock: std::fs::File,
}

impl Core {
    /// Whether other processes may change the store (then this one follows their changes).
    fn follows(&self) -> bool {
        self.config.store.is_postgres()
    }

    /// The index of a knowledge base; on a shared store, one another replica created is
    /// loaded on first use.
    fn index_of(&self, kb_id: &str) -> Result<Arc<crate::index::KbIndex>> {
        match self.indexes.get(kb_id) {
            Err(crate::index::IndexError::NotLoaded) if self.follows() => {
                follow::catch_up(self, kb_id, None)
            }
            other => Ok(other?),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Records this replica's heartbeat (and forgets replicas silent for a day: they died
    /// without saying so).
    fn beat(&self) {
        let now = chrono::Utc::now();
        let beat = ReplicaRecord {
            heartbeat_at: now,
            address: self.address.get().cloned().unwrap_or_default(),
            ..self.replica.clone()
        };
        if let Err(e) = self.store.heartbeat(&beat, now - chrono::Duration::days(1)) {
            tracing::warn!(error = %e, "replica heartbeat not recorded");
        }
    }

    fn remove_blobs(&self, shas: &[String]) {
        if shas.is_empty() {
            return;
        }
        let _blobs = match self.store.enter(Section::Blobs) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "stored bytes left for the next cleanup");
                return;
            }
        };
        for sha in shas {
            if let Err(e) = self.blobs.remove(sha) {
                tracing::warn!(error = %e, "could not remove stored bytes");
            }
        }
    }
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
    /// The processes serving this store (this one included), latest heartbeat first; for the
    /// same callers as `instance`.
    pub replicas: Option<Vec<ReplicaStatus>>,
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

/// One process serving the store, as its heartbeat row says.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicaStatus {
    /// Random id chosen at its start.
    pub id: String,
    /// Its machine's host name.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its Groundwork version.
    pub version: String,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Its latest heartbeat.
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    /// Where other replicas reach it.
    pub address: String,
    /// Whether that heartbeat is recent (within three periods).
    pub alive: bool,
    /// Whether it is the process that answered.
    pub this: bool,
}

/// How often a replica refreshes its row.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The identity this process announces, keeping its data in `data_dir`.
pub fn this_replica(data_dir: &std::path::Path) -> ReplicaRecord {
    let now = chrono::Utc::now();
    ReplicaRecord {
        id: uuid::Uuid::new_v4().to_string(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        pid: std::process::id(),
        address: String::new(),
        home: std::fs::canonicalize(data_dir)
            .unwrap_or_else(|_| data_dir.to_owned())
            .display()
            .to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: now,
        heartbeat_at: now,
    }
}

/// The knowledge-base service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    core: Arc<Core>,
    background: Arc<Mutex<Option<Background>>>,
}

struct Background {
    clock: Clock,
    /// Keeps the indexes in step with other replicas (shared stores only).
    follower: Option<crate::supervisor::Thread>,
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
    /// Runs the periodic work of every part.
    pub clock: Clock,
    /// The data directory's lock, held for the service's life (one process per directory).
    pub lock: std::fs::File,
    /// This process among the store's replicas (its id also names its workflow claims).
    pub replica: ReplicaRecord,
    /// Rate-limit buckets shared with the other replicas (none: counted in this process).
    pub rates: Option<Arc<dyn crate::store::RateStore>>,
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

/// The workflow engine's settings for the service's workflow kinds, claiming runs as `holder`
/// (the replica's id).
pub fn engine_options(w: &crate::config::WorkflowConfig, holder: &str) -> EngineOptions {
    EngineOptions {
        holder: holder.to_owned(),
        lease: Duration::from_secs_f64(w.lease_secs.max(0.5)),
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

impl Service {
    /// Opens the service on its parts: loads or rebuilds every index, starts the workflow
    /// engine (which resumes every unfinished workflow) and registers its housekeeping on the
    /// clock.
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
            clock,
            lock,
            replica,
            rates,
        } = parts;
        let demo = if store.has_keys()? {
            None
        } else {
            Some(store.ensure_tenant(auth::DEMO_TENANT)?.id)
        };
        let models = Models::new(
            embedder,
            config.embed.models.clone(),
            EmbedOptions {
                batch_size: config.embed.batch_size,
                precision: config.embed.precision,
                ..EmbedOptions::default()
            },
        );
        let indexes = crate::index::Catalog::new(
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
        let ocr = extraction_tools(&config.ingest);
        isolation.pdf = crate::ingest::pdf::PdfSettings {
            ocr: crate::ingest::ocr::OcrSettings {
                enabled: ocr.is_ok(),
                ..config.ingest.ocr.clone()
            },
            poppler_timeout_secs: config.ingest.pdf_timeout_secs,
        };
        let limits_shared = rates.is_some();
        let limiter = match rates {
            Some(store) => ratelimit::RateLimiter::shared(config.rate_limits, store),
            None => ratelimit::RateLimiter::new(config.rate_limits),
        };
        let core = Arc::new(Core {
            gateway,
            config,
            store,
            blobs,
            models,
            indexes,
            engine,
            isolation,
            ocr,
            stats: Stats::default(),
            replica,
            address: std::sync::OnceLock::new(),
            limiter,
            limits_shared,
            demo,
            stopping: AtomicBool::new(false),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
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
        // Housekeeping: changed indexes saved every 2 s, due folder syncs started every 1 s.
        let c = core.clone();
        clock
            .every("save-indexes", Duration::from_secs(2), move || {
                if !c.stopping() {
                    c.indexes.save_dirty();
                }
            })
            .map_err(ServiceError::io("the clock thread"))?;
        // A process that ran on this data directory before is gone (this one holds the
        // directory's lock): its agents and tasks are free at once, not once it looks silent.
        match core.store.forget_predecessors(&core.replica) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                replicas = n,
                "the previous process on this data directory is forgotten"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the previous process on this data directory is left to fall silent")
            }
        }
        // The first beat before the service is handed out: a replica that answers is listed.
        core.beat();
        let c = core.clone();
        clock
            .every("replica-heartbeat", HEARTBEAT, move || {
                if !c.stopping() {
                    c.beat();
                }
            })
            .map_err(ServiceError::io("the clock thread"))?;
        let c = core.clone();
        clock
            .every(
                "forget-index-changes",
                Duration::from_secs(3600),
                move || {
                    // A replica behind by more than a day rebuilds from the stored vectors instead.
                    let before = chrono::Utc::now() - chrono::Duration::days(1);
                    if let Err(e) = c.store.forget_changes(before) {
                        tracing::warn!(error = %e, "old index changes not forgotten");
                    }
                },
            )
            .map_err(ServiceError::io("the clock thread"))?;
        let c = core.clone();
        clock
            .every("start-due-syncs", Duration::from_secs(1), move || {
                if !c.stopping() {
                    sources::start_due(&c);
                }
            })
            .map_err(ServiceError::io("the clock thread"))?;
        let follower = if core.follows() {
            let weak = Arc::downgrade(&core);
            Some(
                core.supervisor
                    .thread("gw-index-follow", move || follow::run(weak))
                    .map_err(ServiceError::io("the index follower thread"))?,
            )
        } else {
            None
        };
        *service.background.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Background { clock, follower });
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
            input: serde_json::to_value(crate::ingest::pipeline::IngestInput {
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
            bg.clock.stop();
            if let Some(follower) = bg.follower {
                follower.join();
            }
            if let Err(e) = self.core.store.remove_replica(&self.core.replica.id) {
                tracing::warn!(error = %e, "replica row left for the others to expire");
            }
        }
        self.core.gateway.shutdown();
        let saved = self.core.indexes.save_dirty();
        tracing::info!(indexes_saved = saved, "service stopped");
    }

    /// This process's id among the store's replicas.
    pub fn replica_id(&self) -> &str {
        &self.core.replica.id
    }

    /// Announces where this replica answers, once it listens on `local`: `server.advertise`
    /// when set, else `http://` and the address listened on (the host name when that is a
    /// wildcard address). Other replicas forward the requests of agents it holds there.
    pub fn advertise(&self, local: std::net::SocketAddr) {
        let url = match &self.core.config.server.advertise {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if local.ip().is_unspecified() => {
                format!("http://{}:{}", self.core.replica.host, local.port())
            }
            None => format!("http://{local}"),
        };
        if self.core.address.set(url).is_ok() {
            self.core.beat();
        }
    }

    /// The model gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.core.gateway
    }

    /// The owner of the process's background work this service was opened with.
    pub fn supervisor(&self) -> &Supervisor {
        &self.core.supervisor
    }

    /// The scheduler of periodic work this service was opened with.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
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
    /// Whether the service takes work: not stopping, and its store answers (`Err`: why not).
    /// Blocking (one round trip to the database).
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if self.core.stopping() {
            return Err("stopping".into());
        }
        self.core
            .store
            .ping()
            .map_err(|e| format!("store unavailable: {e}"))
    }

    /// The replicas on record, alive or not (empty if the store cannot say).
    fn replicas(&self) -> Vec<ReplicaStatus> {
        let now = chrono::Utc::now();
        let recent = chrono::Duration::from_std(HEARTBEAT * 3).unwrap_or_default();
        match self.core.store.replicas() {
            Ok(rows) => rows
                .into_iter()
                .map(|r| ReplicaStatus {
                    alive: now - r.heartbeat_at <= recent,
                    this: r.id == self.core.replica.id,
                    id: r.id,
                    host: r.host,
                    pid: r.pid,
                    address: r.address,
                    version: r.version,
                    started_at: r.started_at,
                    heartbeat_at: r.heartbeat_at,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "replicas unavailable");
                Vec::new()
            }
        }
    }

    /// The store's connection pool, for the metrics (none for SQLite).
    pub fn store_pool(&self) -> Option<crate::store::PoolUse> {
        self.core.store.pool_use()
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
            .map_err(|refused| match refused {
                ratelimit::Refused::Limited(l) => {
                    let unit = match l.unit {
                        ratelimit::Unit::Requests => "requests",
                        ratelimit::Unit::Tokens => "tokens",
                    };
                    metrics::counter!("groundwork_rate_limited_total", "scope" => l.scope, "unit" => unit)
                        .increment(1);
                    ServiceError::RateLimited(l)
                }
                ratelimit::Refused::Store(e) => ServiceError::from(e),
            })
    }

    /// Whether rate limits are counted in the shared store (a call to [`Service::admit`] then
    /// waits on it: keep it off the async workers).
    pub fn rate_limits_shared(&self) -> bool {
        self.core.limits_shared
    }

    /// Gives back model tokens admitted but not used.
    pub fn refund_tokens(&self, p: &Principal, amount: u64) {
        let key = p.key_id.as_deref().unwrap_or("demo");
        if let Err(e) = self
            .core
            .limiter
            .refund(key, &p.tenant_id, ratelimit::Unit::Tokens, amount)
        {
            tracing::warn!(error = %e, "unused model tokens not given back to the rate limit");
        }
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
            replicas: operator.then(|| self.replicas()),
        })
    }
}
