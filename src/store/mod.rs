//! The durable record of everything the service knows: tenants, API keys, knowledge bases,
//! documents, chunks with their vectors (by index generation), ingest jobs, workflow runs with
//! their steps and events, folder sources, the gateway's call log and cache, and agents (state,
//! conversations, task queues, schedules, buffered stream events).
//!
//! This module owns the schema, its migrations and the repositories behind narrow traits
//! ([`TenantStore`], [`KbStore`], [`DocumentStore`], [`JobStore`], [`GenerationStore`],
//! [`WorkflowStore`], [`SourceStore`], [`GatewayStore`], [`AgentStore`]); the embedded default is
//! SQLite in WAL mode ([`SqliteStore`]). The store is the source of truth: search indexes are
//! caches rebuilt from it (vectors included, so never by re-embedding).
//!
//! It must never call models, parse documents or know about HTTP. Every method is blocking;
//! async callers run them on blocking threads.

pub mod agents;
mod blobs;
pub mod changes;
mod codec;
pub mod copy;
pub mod gateway;
mod migrations;
mod pg;
pub mod ratelimits;
pub mod replicas;
mod sections;
pub mod sources;
mod sqlite;
mod types;
pub mod workflows;

pub use agents::AgentStore;
pub use blobs::{BlobStore, FsBlobStore};
pub use changes::{ChangeKind, ChangeStore, IndexChange};
pub use gateway::GatewayStore;
pub use pg::{PgBlobStore, PgOptions, PgStore, TlsOptions};
pub use ratelimits::{RateStore, StoredBucket};
pub use replicas::{ReplicaRecord, ReplicaStore};
pub use sections::{Held, Section, SectionStore};
pub use sources::{Source, SourceStore};
pub use sqlite::SqliteStore;
pub use types::*;
pub use workflows::{
    claim_lost, AttemptError, Claim, ClaimRequest, LeaseState, NewWorkflow, StepRecord, StepStatus,
    WorkflowQuery, WorkflowRecord, WorkflowStatus, WorkflowStore,
};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist (or belongs to another tenant).
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked up ("knowledge base", "document", ...).
        kind: &'static str,
        /// The id or name given.
        id: String,
    },
    /// A unique name is taken.
    #[error("{kind} `{name}` already exists")]
    Conflict {
        /// What collided.
        kind: &'static str,
        /// The taken name.
        name: String,
    },
    /// A value the database cannot hold (PostgreSQL text refuses the NUL character); the
    /// request, not the database, is at fault.
    #[error("{0}")]
    Invalid(String),
    /// The database is busy or locked for longer than the busy timeout; retrying may succeed.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database failed or holds something this version cannot read.
    #[error("database error: {0}")]
    Database(String),
    /// The schema is newer than this binary or a migration failed.
    #[error("schema migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Busy(e.to_string())
            }
            // A write referring to a row deleted meanwhile (a chat racing its agent's DELETE).
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
            {
                StoreError::NotFound {
                    kind: "record this change refers to",
                    id: "deleted meanwhile".into(),
                }
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Tenants and their API keys.
pub trait TenantStore: Send + Sync {
    /// The tenant called `name`, created if missing.
    fn ensure_tenant(&self, name: &str) -> Result<Tenant>;
    /// Records a key (only its hash is stored).
    fn insert_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord>;
    /// The live (not revoked) key with this public id.
    fn key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>>;
    /// Whether any live key exists (otherwise the server runs in demo mode).
    fn has_keys(&self) -> Result<bool>;
    /// Every key, revoked ones included, without secrets.
    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key; returns whether it was live.
    fn revoke_key(&self, key_id: &str) -> Result<bool>;
}

/// Knowledge bases, always scoped to a tenant.
pub trait KbStore: Send + Sync {
    /// Creates a knowledge base; a taken name within the tenant is a [`StoreError::Conflict`].
    fn create_kb(&self, kb: &NewKb) -> Result<Kb>;
    /// The tenant's knowledge bases, by name.
    fn list_kbs(&self, tenant_id: &str) -> Result<Vec<Kb>>;
    /// Every knowledge base of every tenant (start-up index loading).
    fn all_kbs(&self) -> Result<Vec<Kb>>;
    /// A knowledge base by id or name, within the tenant.
    fn get_kb(&self, tenant_id: &str, id_or_name: &str) -> Result<Kb>;
    /// A knowledge base by id, whatever its tenant (background work).
    fn kb_by_id(&self, id: &str) -> Result<Kb>;
    /// Deletes a knowledge base with its documents, chunks and jobs; returns the content
    /// hashes no longer referenced by any document (their stored bytes may go).
    fn delete_kb(&self, kb_id: &str) -> Result<Vec<String>>;
    /// Counters of one knowledge base.
    fn kb_stats(&self, kb_id: &str) -> Result<KbStats>;
    /// Sets (or clears) a knowledge base's own rerank stage; returns the knowledge base.
    fn set_kb_rerank(&self, kb_id: &str, rerank: Option<&KbRerank>) -> Result<Kb>;
}

/// Documents, chunks and vectors.
pub trait DocumentStore: Send + Sync {
    /// Registers an upload. Identical bytes already in the KB (not failed) return the existing
    /// document with `created = false`; a live document with the same name and other bytes is
    /// marked as replaced by the new one (it leaves the index when the new one is published).
    fn insert_document(&self, doc: &NewDocument) -> Result<Inserted>;
    /// One document of a knowledge base.
    fn get_document(&self, kb_id: &str, id: &str) -> Result<Document>;
    /// A page of a knowledge base's documents, newest first.
    fn list_documents(&self, kb_id: &str, query: &DocumentQuery) -> Result<Page<Document>>;
    /// Documents waiting or interrupted in processing, oldest first (resumed at start-up).
    fn unfinished_documents(&self) -> Result<Vec<Document>>;
    /// Documents accepted and not finished (queued or processing), over every KB.
    fn count_unfinished(&self) -> Result<u64>;
    /// Moves a document to `processing`.
    fn mark_processing(&self, id: &str) -> Result<()>;
    /// Puts a failed document back to `queued` (a retried ingest); others are left alone.
    fn requeue_failed(&self, id: &str) -> Result<()>;
    /// Marks a document `failed` with a stable code and message.
    fn mark_failed(&self, id: &str, code: &str, message: &str) -> Result<()>;
    /// In one transaction: stores the chunks and vectors, marks the document `ready`, removes
    /// the document it replaces (chunks included) and bumps the KB's index sequence. Returns
    /// the new chunk ids (in order), the removed document's chunk ids and the new sequence.
    fn publish(&self, publish: &Publish<'_>) -> Result<Published>;
    /// Deletes a document and its chunks; returns its chunk ids, the new index sequence and
    /// whether its content hash is still referenced.
    fn delete_document(&self, kb_id: &str, id: &str) -> Result<Deleted>;
    /// The sections (distinct heading paths) of the KB's 50 most recently updated ready
    /// documents in the serving generation, in document order, at most `limit` (bounded
    /// work on a KB of any size).
    fn kb_headings(&self, kb_id: &str, limit: u64) -> Result<Vec<Heading>>;
    /// A page of one document's chunks in order.
    fn list_chunks(&self, document_id: &str, offset: u64, limit: u64) -> Result<Vec<ChunkRecord>>;
    /// Chunks by id, with their document's name (missing ids are skipped).
    fn chunks_by_id(&self, ids: &[u64]) -> Result<Vec<ChunkRecord>>;
    /// Streams every ready chunk of a KB with its vector, to rebuild an index without
    /// re-embedding. Returns the KB's index sequence the rows correspond to.
    fn for_each_vector(
        &self,
        kb_id: &str,
        generation: Option<u64>,
        f: &mut dyn FnMut(StoredPoint) -> Result<()>,
    ) -> Result<u64>;
}

/// Index generations of a knowledge base, for reindexing while the serving one answers.
pub trait GenerationStore: Send + Sync {
    /// Starts the generation after the serving one: drops chunks left by an abandoned
    /// reindex and returns the new generation's number.
    fn begin_generation(&self, kb_id: &str) -> Result<u64>;
    /// Ready documents without chunks in `generation`, oldest first.
    fn documents_missing_generation(&self, kb_id: &str, generation: u64) -> Result<Vec<Document>>;
    /// Stores a ready document's chunks for `generation` (not yet serving). Idempotent: chunks
    /// already staged are kept and their ids returned. `None` when the document is gone.
    fn stage_chunks(
        &self,
        document_id: &str,
        generation: u64,
        chunks: &[ChunkRow<'_>],
    ) -> Result<Option<Vec<u64>>>;
    /// Ids of every ready document's chunks in `generation`.
    fn generation_chunk_ids(&self, kb_id: &str, generation: u64) -> Result<Vec<u64>>;
    /// In one transaction: makes `switch.generation` the serving one with its settings,
    /// deletes every other generation's chunks and bumps the index sequence (returned).
    /// `None` when the knowledge base already serves that generation or a later one.
    fn switch_generation(&self, kb_id: &str, switch: &GenerationSwitch) -> Result<Option<u64>>;
    /// Deletes a generation's chunks unless it is serving (an abandoned reindex).
    fn drop_generation(&self, kb_id: &str, generation: u64) -> Result<()>;
}

/// Ingest jobs (one per upload request).
pub trait JobStore: Send + Sync {
    /// Records a job (its id is its workflow's) for documents about to be inserted.
    fn create_job(&self, id: &str, tenant_id: &str, kb_id: &str) -> Result<()>;
    /// A job's progress, within the tenant.
    fn job(&self, tenant_id: &str, id: &str) -> Result<Job>;
}

/// What operators watch: whether the database answers, and how its connections are used.
pub trait HealthStore: Send + Sync {
    /// One round trip to the database.
    fn ping(&self) -> Result<()>;
    /// The connection pool's use, where there is a pool.
    fn pool_use(&self) -> Option<PoolUse>;
}

/// Everything the service needs from storage.
pub trait Store:
    TenantStore
    + ChangeStore
    + KbStore
    + DocumentStore
    + JobStore
    + GenerationStore
    + WorkflowStore
    + SourceStore
    + GatewayStore
    + AgentStore
    + SectionStore
    + HealthStore
    + ReplicaStore
{
}

impl<T> Store for T where
    T: TenantStore
        + ChangeStore
        + KbStore
        + DocumentStore
        + JobStore
        + GenerationStore
        + WorkflowStore
        + SourceStore
        + GatewayStore
        + AgentStore
        + SectionStore
        + HealthStore
        + ReplicaStore
{
}

/// A `LIKE` pattern matching `text` anywhere, with `\` as the escape character.
pub fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}
