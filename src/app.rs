//! The composition root: the one place that puts the parts together.
//!
//! Owns the construction of every part from the configuration — the data directory's lock,
//! the store, the workflow engine, the gateway, the service, the agents, and the
//! [`Supervisor`] that owns their background work — and the wiring between modules that must
//! not know each other (the agent runtime reaches the knowledge-base service through its
//! [`Knowledge`] port). It must
//! never hold logic of its own beyond translating between ports: a use case belongs to its
//! service, a rule to its engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentError, Agents, Knowledge, KnowledgeBase, Passage};
use crate::clock::Clock;
use crate::config::Config;
use crate::embed::Embedder;
use crate::error::Foreign;
use crate::gateway::Gateway;
use crate::index::SearchMode;
use crate::ingest::isolate::Isolation;
use crate::principal::Principal;
use crate::service::{self, Parts, SearchParams, Service, ServiceError};
use crate::store::{
    BlobStore, FsBlobStore, PgBlobStore, PgOptions, PgStore, RateStore, SqliteStore, Store,
    TlsOptions,
};
use crate::supervisor::Supervisor;
use crate::workflow::Engine;

/// The agent runtime over `service`: its knowledge bases, its gateway, its store and the
/// `[agents]` configuration. Start it with [`Agents::start`] inside a tokio runtime.
pub fn agents(service: &Service) -> Agents {
    Agents::new(
        Arc::new(ServiceKnowledge(service.clone())),
        service.gateway().clone(),
        service.agent_store(),
        service.config().agents.clone(),
        service.supervisor().clone(),
        service.clock().clone(),
        service.replica_id().to_owned(),
    )
}

/// Opens the knowledge-base service on `config`: takes the data directory's lock, opens its
/// store and blob store, builds the workflow engine and the gateway with a new [`Supervisor`]
/// owning their background work, and hands them to the service (stopped by
/// [`Service::shutdown`] and the supervisor's own shutdown).
pub fn open(
    config: Config,
    embedder: Arc<dyn Embedder>,
    isolation: Isolation,
) -> Result<Service, ServiceError> {
    let supervisor = Supervisor::new();
    let data_dir = config.data_dir.clone();
    fs_err::create_dir_all(&data_dir).map_err(ServiceError::io("the data directory"))?;
    let lock = lock_data_dir(&data_dir)?;
    let Stores {
        store,
        blobs,
        rates,
    } = open_stores(&config)?;
    let replica = service::this_replica(&data_dir);
    let engine = Engine::new(
        store.clone(),
        service::engine_options(&config.workflow, &replica.id),
        supervisor.clone(),
    );
    let root = std::env::current_dir().map_err(ServiceError::io("the working directory"))?;
    let gateway = Gateway::new(
        config.gateway.clone(),
        store.clone(),
        embedder.clone(),
        &root,
        supervisor.clone(),
        config.store.is_postgres().then_some(replica.id.as_str()),
    )
    .map_err(|e| ServiceError::Invalid(format!("gateway: {e}")))?;
    if let Some(model) = config.search.rerank.as_deref() {
        if !gateway.knows_model(model) {
            return Err(ServiceError::Invalid(format!(
                "search.rerank: `{model}` is no gateway route, alias or provider/model"
            )));
        }
    }
    let parts = Parts {
        store,
        blobs,
        engine,
        gateway,
        clock: Clock::new(supervisor.clone()),
        supervisor,
        lock,
        replica,
        rates,
    };
    Service::open(config, parts, embedder, isolation)
}

/// Where records and uploaded bytes live.
pub struct Stores {
    /// Every record.
    pub store: Arc<dyn Store>,
    /// Uploaded bytes by content hash.
    pub blobs: Arc<dyn BlobStore>,
    /// Rate-limit buckets every replica shares (PostgreSQL only: SQLite has one process).
    pub rates: Option<Arc<dyn RateStore>>,
}

/// The configured store without the data directory's lock: for what may run beside a server
/// (API keys). SQLite under the data directory with blobs beside it, or PostgreSQL holding
/// both (`[store] url`).
pub fn open_stores(config: &Config) -> Result<Stores, ServiceError> {
    if config.store.is_postgres() {
        let pg = open_pg(config)?;
        return Ok(Stores {
            blobs: Arc::new(PgBlobStore::new(pg.clone())),
            rates: Some(pg.clone()),
            store: pg,
        });
    }
    let data_dir = &config.data_dir;
    Ok(Stores {
        store: Arc::new(SqliteStore::open(&data_dir.join("groundwork.sqlite3"))?),
        blobs: Arc::new(FsBlobStore::new(&data_dir.join("blobs"))),
        rates: None,
    })
}

/// The PostgreSQL store of `[store]` (connected, its schema migrated).
fn open_pg(config: &Config) -> Result<Arc<PgStore>, ServiceError> {
    let options = PgOptions {
        url: config.store.url.clone(),
        pool_size: config.store.pool_size,
        statement_timeout: Duration::from_millis(config.store.statement_timeout_ms),
        connect_timeout: Duration::from_millis(config.store.connect_timeout_ms),
        tls: TlsOptions {
            ca_file: config.store.tls_ca_file.clone(),
            client_cert: config.store.tls_client_cert.clone(),
            client_key: config.store.tls_client_key.clone(),
        },
    };
    Ok(Arc::new(PgStore::connect(&options)?))
}

/// Copies the SQLite deployment in `from` (its database and uploaded bytes) into the
/// PostgreSQL store of `to` (`[store]`), verifying every table (see [`crate::store::copy`]).
/// Takes `from`'s lock, so never beside a server running on it; brings the source's schema
/// up to date first, as starting this version's server on it would.
pub fn migrate(
    from: &Path,
    to: &Config,
    progress: &mut dyn FnMut(crate::store::copy::Progress),
) -> Result<Vec<crate::store::copy::TableReport>, ServiceError> {
    let database = from.join("groundwork.sqlite3");
    if !database.is_file() {
        return Err(ServiceError::Invalid(format!(
            "{} holds no Groundwork database (groundwork.sqlite3)",
            from.display()
        )));
    }
    if !to.store.is_postgres() {
        return Err(ServiceError::Invalid(
            "the target must be a PostgreSQL URL (postgres://...)".into(),
        ));
    }
    let _lock = lock_data_dir(from)?;
    let source = SqliteStore::open(&database)?;
    let source_blobs = FsBlobStore::new(&from.join("blobs"));
    let target = open_pg(to)?;
    let target_blobs = PgBlobStore::new(target.clone());
    Ok(crate::store::copy::sqlite_to_postgres(
        &source,
        &source_blobs,
        &target,
        &target_blobs,
        progress,
    )?)
}

/// Takes the data directory's lock, so that two processes never write the same indexes.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, ServiceError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(ServiceError::io(path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServiceError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(ServiceError::io(path.display())(e)),
    }
}

/// The knowledge-base service seen through the agent's port. Its errors pass through whole
/// (kind, code, details), so an agent's caller sees exactly what a direct caller would.
struct ServiceKnowledge(Service);

fn foreign(e: ServiceError) -> AgentError {
    AgentError::Knowledge(Foreign(Box::new(e)))
}

impl Knowledge for ServiceKnowledge {
    fn knowledge_bases(&self, p: &Principal) -> Result<Vec<KnowledgeBase>, AgentError> {
        Ok(self
            .0
            .list_kbs(p)
            .map_err(foreign)?
            .into_iter()
            .map(|v| KnowledgeBase {
                id: v.kb.id,
                name: v.kb.name,
            })
            .collect())
    }

    fn search(
        &self,
        p: &Principal,
        kb: &str,
        query: &str,
        top_k: usize,
        mode: SearchMode,
    ) -> Result<Vec<Passage>, AgentError> {
        // An agent reranks the passages of all its knowledge bases together (its `rerank`).
        let params = SearchParams {
            query: query.to_owned(),
            top_k: Some(top_k),
            mode,
            rerank: crate::service::Rerank::Off,
            ..SearchParams::default()
        };
        let crate::service::Found { kb_id, hits, .. } =
            self.0.search(p, kb, &params).map_err(foreign)?;
        Ok(hits
            .into_iter()
            .map(|h| Passage {
                kb_id: kb_id.clone(),
                score: h.score,
                similarity: h.similarity,
                chunk: h.chunk,
            })
            .collect())
    }

    fn embed(&self, p: &Principal, kb: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, AgentError> {
        self.0.embed_for_kb(p, kb, "agent", texts).map_err(foreign)
    }
}
