//! The HTTP shapes of stored things: what a client reads (and, for settings and filters,
//! sends), described in the OpenAPI document. The store's records convert into these at the
//! edge, so a storage change never changes the API by accident (and internal fields such as a
//! record's tenant never leave the process).
//!
//! Owns only shapes and conversions; must never hold behaviour.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::answer::Timings;
use crate::agent::cite::{Citation, Dropped, Source as Passage};
use crate::agent::verify::Claim;
use crate::agent::AnswerMode;
use crate::gateway::types::Usage;

/// What an API key may do (each scope includes the ones before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read knowledge bases, documents, jobs; search.
    Read,
    /// Everything `read` allows, plus model calls that spend: chat completions, embeddings,
    /// agent chat (a key for a chat front end).
    Infer,
    /// Everything `infer` allows, plus creating knowledge bases, uploading and deleting
    /// documents, configuring agents.
    Write,
    /// Delete knowledge bases.
    Admin,
}

/// Chunk size settings stored with a knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkingStamp {
    /// Most tokens per chunk (8 up to the model's limit: 254 for the default).
    #[schema(minimum = 8, maximum = 254)]
    pub max_tokens: u32,
    /// Tokens repeated between neighbouring chunks (at most half a chunk; more is cut to that).
    pub overlap_tokens: u32,
}

/// A knowledge base.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Kb {
    /// Stable id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique within the tenant.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Id of the embedding model its vectors come from.
    pub embedding_model: String,
    /// Vector length.
    pub dimension: u32,
    /// How its documents are chunked.
    pub chunking: ChunkingStamp,
    /// Bumped by every change to its searchable content.
    pub index_seq: u64,
    /// Index generation serving searches (a reindex builds the next one beside it).
    pub generation: u64,
    /// Local folder the embedding model was loaded from, when not the server's default.
    pub model_source: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Counters of one knowledge base.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KbStats {
    /// Documents waiting.
    pub queued: u64,
    /// Documents being processed.
    pub processing: u64,
    /// Searchable documents.
    pub ready: u64,
    /// Documents that could not be ingested.
    pub failed: u64,
    /// Searchable chunks.
    pub chunks: u64,
    /// Bytes of searchable documents.
    pub bytes: u64,
    /// Ready documents whose chunks were made with another model or chunking than the
    /// knowledge base's (a reindex brings them up to date).
    pub stale: u64,
}

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// Being extracted, chunked, embedded or indexed.
    Processing,
    /// Searchable.
    Ready,
    /// Could not be ingested; `error` says why.
    Failed,
}

/// A document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Document {
    /// Stable id.
    pub id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// The job it arrived with.
    pub job_id: String,
    /// Name given by the client.
    pub name: String,
    /// Detected media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Where it is in its life.
    pub status: DocumentStatus,
    /// Stable error code when failed.
    pub error_code: Option<String>,
    /// Human-readable reason when failed.
    pub error: Option<String>,
    /// Client metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Chunks once ready.
    pub chunk_count: u64,
    /// Pages (PDF) once ready.
    pub pages: Option<u32>,
    /// Problems that did not stop ingestion.
    pub warnings: Vec<String>,
    /// The document this one replaces when published.
    pub replaces: Option<String>,
    /// Embedding model of its chunks (once ready).
    pub embedding_model: Option<String>,
    /// Chunking of its chunks (once ready).
    pub chunking: Option<ChunkingStamp>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
}

/// A stored chunk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChunkRecord {
    /// Stable id (also the index's point id).
    #[serde(rename = "chunk_id")]
    pub id: u64,
    /// Its document.
    pub document_id: String,
    /// Its document's name.
    pub document_name: String,
    /// Position in the document.
    pub ordinal: u32,
    /// Byte range in the extracted text.
    pub start: u64,
    /// End of that range.
    pub end: u64,
    /// The text.
    pub text: String,
    /// Tokens.
    pub tokens: u32,
    /// First page (PDF).
    pub page_start: Option<u32>,
    /// Last page (PDF).
    pub page_end: Option<u32>,
    /// Enclosing headings, outermost first.
    pub heading_path: Vec<String>,
    /// SHA-256 of the text.
    pub hash: String,
}

/// A document that failed inside a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobError {
    /// The document.
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Stable error code.
    pub code: String,
    /// Reason.
    pub message: String,
}

/// Progress of an ingest job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Stable id.
    pub id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// Documents in the job.
    pub total: u64,
    /// Documents waiting.
    pub queued: u64,
    /// Documents in work.
    pub processing: u64,
    /// Documents searchable.
    pub ready: u64,
    /// Documents failed.
    pub failed: u64,
    /// Chunks embedded and stored so far.
    pub chunks_embedded: u64,
    /// Every failure.
    pub errors: Vec<JobError>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Where a workflow run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is executing it.
    Running,
    /// Waiting until `wake_at` (a sleep or a retry backoff).
    Sleeping,
    /// Waiting for an event (or its timeout at `wake_at`).
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// A workflow run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowRecord {
    /// Stable id.
    pub id: String,
    /// Workflow type.
    pub kind: String,
    /// What it works on (a knowledge base id).
    pub subject: Option<String>,
    /// The idempotency key it was created with.
    pub idempotency_key: Option<String>,
    /// Its input.
    pub input: Value,
    /// Where it is.
    pub status: WorkflowStatus,
    /// Cancellation was asked for and not yet acted on.
    pub cancel_requested: bool,
    /// When a sleeping or waiting run wakes up.
    pub wake_at: Option<DateTime<Utc>>,
    /// The event a waiting run waits for.
    pub waiting_for: Option<String>,
    /// Output of a completed run.
    pub output: Option<Value>,
    /// Error of a failed run.
    pub error: Option<String>,
    /// Progress reported by the run (shape depends on the kind).
    pub progress: Value,
    /// Times a worker picked it up (1 + resumptions).
    pub runs: u32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First pick-up.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// An attempt is executing (or was, when the process died).
    Running,
    /// An attempt failed; the next waits until `wake_at`.
    Retrying,
    /// Done; its output is kept.
    Completed,
    /// Out of attempts, or failed with an error not worth retrying.
    Failed,
}

/// One failed attempt of a step.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptError {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Stable error code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// A step of a workflow run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    /// Unique within the run.
    pub name: String,
    /// Order of first execution.
    pub position: u32,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Every failed attempt.
    pub errors: Vec<AttemptError>,
    /// Retry time, sleep end or event deadline.
    pub wake_at: Option<DateTime<Utc>>,
    /// First attempt's start.
    pub started_at: DateTime<Utc>,
    /// Completion or final failure.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A conversation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    /// Id.
    pub id: String,
    /// Its agent.
    pub agent_id: String,
    /// Title (the first question, shortened).
    pub title: String,
    /// Running summary of the messages up to `summary_upto`.
    pub summary: String,
    /// Last message id folded into the summary (0: none).
    pub summary_upto: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last message time.
    pub updated_at: DateTime<Utc>,
}

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The person asking.
    User,
    /// The agent answering.
    Assistant,
}

/// A stored message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageRecord {
    /// Increasing id.
    pub id: i64,
    /// Its conversation.
    pub conversation_id: String,
    /// Who wrote it.
    pub role: MessageRole,
    /// The text.
    pub content: String,
    /// Verified citations.
    #[schema(value_type = Vec<Object>)]
    pub citations: serde_json::Value,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Cost, USD.
    pub cost_usd: f64,
    /// Timings, rewritten query, dropped citations, stream id.
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting (possibly for its retry time).
    Pending,
    /// An attempt is under way.
    Running,
    /// Finished.
    Done,
    /// Failed on its last attempt.
    Failed,
}

/// A queued task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskRecord {
    /// Increasing id (the queue order).
    pub id: i64,
    /// Agent.
    pub agent_id: String,
    /// What to do.
    pub kind: String,
    /// Its input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Where it is.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Not before (the next retry when pending after a failure).
    pub run_at: DateTime<Utc>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Output when done.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The schedule that queued it.
    pub schedule_id: Option<String>,
    /// Queue time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleRecord {
    /// Id.
    pub id: String,
    /// Agent.
    pub agent_id: String,
    /// `at`, `after` or `cron`.
    pub kind: String,
    /// As given.
    pub spec: String,
    /// The task it queues.
    pub task_kind: String,
    /// The task's input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Next due time; none once a one-off schedule fired.
    pub next_run: Option<DateTime<Utc>>,
    /// When it last fired.
    pub last_run: Option<DateTime<Utc>>,
    /// Times it fired.
    pub runs: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// An agent as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentSummary {
    /// Agent id.
    pub id: String,
    /// Its config's display name, if any.
    pub name: Option<String>,
    /// State/config version.
    pub version: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One gateway call.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallLog {
    /// Request id.
    pub id: String,
    /// When the call started.
    pub ts: DateTime<Utc>,
    /// `chat` or `embeddings`.
    pub kind: String,
    /// API key id (`demo` without keys).
    pub key_id: String,
    /// End user.
    pub user_id: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// Route asked for.
    pub route: String,
    /// Provider that answered last.
    pub provider: Option<String>,
    /// Model that answered last.
    pub model: Option<String>,
    /// `ok`, `error`, `blocked`, `budget_exceeded`, `cancelled`.
    pub status: String,
    /// Error code when not ok.
    pub error: Option<String>,
    /// Every attempt: target, outcome, error, milliseconds.
    #[schema(value_type = Vec<Object>)]
    pub attempts: serde_json::Value,
    /// Whole call, milliseconds.
    pub latency_ms: f64,
    /// Time to first token (streams) or to the answer, milliseconds.
    pub ttft_ms: Option<f64>,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Settled cost, USD.
    pub cost_usd: f64,
    /// `hit`, `miss`, `bypass`, `refresh` or `off`.
    pub cache: String,
    /// Guardrail decisions.
    #[schema(value_type = Vec<Object>)]
    pub guardrails: serde_json::Value,
    /// Streamed answer.
    pub stream: bool,
    /// The request body, if payload logging was on.
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
    /// The answer text, if payload logging was on.
    pub response: Option<String>,
}

/// One aggregate row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// Values of the grouping columns, by name.
    #[schema(value_type = Object)]
    pub group: serde_json::Map<String, serde_json::Value>,
    /// Calls.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// USD.
    pub cost_usd: f64,
}

/// A folder synced into a knowledge base.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Source {
    /// Stable id.
    pub id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// Absolute directory on the server.
    pub path: String,
    /// Cron expression or `every <duration>`; `None` syncs on demand only.
    pub schedule: Option<String>,
    /// Next scheduled sync.
    pub next_sync_at: Option<DateTime<Utc>>,
    /// Last sync started.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Workflow of the last sync.
    pub last_workflow_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<crate::store::ChunkingStamp> for ChunkingStamp {
    fn from(r: crate::store::ChunkingStamp) -> Self {
        Self {
            max_tokens: r.max_tokens,
            overlap_tokens: r.overlap_tokens,
        }
    }
}

impl From<ChunkingStamp> for crate::store::ChunkingStamp {
    fn from(r: ChunkingStamp) -> Self {
        Self {
            max_tokens: r.max_tokens,
            overlap_tokens: r.overlap_tokens,
        }
    }
}

impl From<crate::store::Kb> for Kb {
    fn from(r: crate::store::Kb) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            description: r.description,
            embedding_model: r.embedding_model,
            dimension: r.dimension,
            chunking: r.chunking.into(),
            index_seq: r.index_seq,
            generation: r.generation,
            model_source: r.model_source,
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::KbStats> for KbStats {
    fn from(r: crate::store::KbStats) -> Self {
        Self {
            queued: r.queued,
            processing: r.processing,
            ready: r.ready,
            failed: r.failed,
            chunks: r.chunks,
            bytes: r.bytes,
            stale: r.stale,
        }
    }
}

impl From<crate::store::DocumentStatus> for DocumentStatus {
    fn from(r: crate::store::DocumentStatus) -> Self {
        match r {
            crate::store::DocumentStatus::Queued => DocumentStatus::Queued,
            crate::store::DocumentStatus::Processing => DocumentStatus::Processing,
            crate::store::DocumentStatus::Ready => DocumentStatus::Ready,
            crate::store::DocumentStatus::Failed => DocumentStatus::Failed,
        }
    }
}

impl From<DocumentStatus> for crate::store::DocumentStatus {
    fn from(r: DocumentStatus) -> Self {
        match r {
            DocumentStatus::Queued => crate::store::DocumentStatus::Queued,
            DocumentStatus::Processing => crate::store::DocumentStatus::Processing,
            DocumentStatus::Ready => crate::store::DocumentStatus::Ready,
            DocumentStatus::Failed => crate::store::DocumentStatus::Failed,
        }
    }
}

impl From<crate::store::Document> for Document {
    fn from(r: crate::store::Document) -> Self {
        Self {
            id: r.id,
            kb_id: r.kb_id,
            job_id: r.job_id,
            name: r.name,
            media_type: r.media_type,
            size: r.size,
            sha256: r.sha256,
            status: r.status.into(),
            error_code: r.error_code,
            error: r.error,
            metadata: r.metadata,
            chunk_count: r.chunk_count,
            pages: r.pages,
            warnings: r.warnings,
            replaces: r.replaces,
            embedding_model: r.embedding_model,
            chunking: r.chunking.map(Into::into),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<crate::store::ChunkRecord> for ChunkRecord {
    fn from(r: crate::store::ChunkRecord) -> Self {
        Self {
            id: r.id,
            document_id: r.document_id,
            document_name: r.document_name,
            ordinal: r.ordinal,
            start: r.start,
            end: r.end,
            text: r.text,
            tokens: r.tokens,
            page_start: r.page_start,
            page_end: r.page_end,
            heading_path: r.heading_path,
            hash: r.hash,
        }
    }
}

impl From<crate::store::JobError> for JobError {
    fn from(r: crate::store::JobError) -> Self {
        Self {
            document_id: r.document_id,
            name: r.name,
            code: r.code,
            message: r.message,
        }
    }
}

impl From<crate::store::Job> for Job {
    fn from(r: crate::store::Job) -> Self {
        Self {
            id: r.id,
            kb_id: r.kb_id,
            total: r.total,
            queued: r.queued,
            processing: r.processing,
            ready: r.ready,
            failed: r.failed,
            chunks_embedded: r.chunks_embedded,
            errors: r.errors.into_iter().map(Into::into).collect(),
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::WorkflowStatus> for WorkflowStatus {
    fn from(r: crate::store::WorkflowStatus) -> Self {
        match r {
            crate::store::WorkflowStatus::Queued => WorkflowStatus::Queued,
            crate::store::WorkflowStatus::Running => WorkflowStatus::Running,
            crate::store::WorkflowStatus::Sleeping => WorkflowStatus::Sleeping,
            crate::store::WorkflowStatus::Waiting => WorkflowStatus::Waiting,
            crate::store::WorkflowStatus::Completed => WorkflowStatus::Completed,
            crate::store::WorkflowStatus::Failed => WorkflowStatus::Failed,
            crate::store::WorkflowStatus::Cancelled => WorkflowStatus::Cancelled,
        }
    }
}

impl From<WorkflowStatus> for crate::store::WorkflowStatus {
    fn from(r: WorkflowStatus) -> Self {
        match r {
            WorkflowStatus::Queued => crate::store::WorkflowStatus::Queued,
            WorkflowStatus::Running => crate::store::WorkflowStatus::Running,
            WorkflowStatus::Sleeping => crate::store::WorkflowStatus::Sleeping,
            WorkflowStatus::Waiting => crate::store::WorkflowStatus::Waiting,
            WorkflowStatus::Completed => crate::store::WorkflowStatus::Completed,
            WorkflowStatus::Failed => crate::store::WorkflowStatus::Failed,
            WorkflowStatus::Cancelled => crate::store::WorkflowStatus::Cancelled,
        }
    }
}

impl From<crate::store::WorkflowRecord> for WorkflowRecord {
    fn from(r: crate::store::WorkflowRecord) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            subject: r.subject,
            idempotency_key: r.idempotency_key,
            input: r.input,
            status: r.status.into(),
            cancel_requested: r.cancel_requested,
            wake_at: r.wake_at,
            waiting_for: r.waiting_for,
            output: r.output,
            error: r.error,
            progress: r.progress,
            runs: r.runs,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

impl From<crate::store::StepStatus> for StepStatus {
    fn from(r: crate::store::StepStatus) -> Self {
        match r {
            crate::store::StepStatus::Running => StepStatus::Running,
            crate::store::StepStatus::Retrying => StepStatus::Retrying,
            crate::store::StepStatus::Completed => StepStatus::Completed,
            crate::store::StepStatus::Failed => StepStatus::Failed,
        }
    }
}

impl From<StepStatus> for crate::store::StepStatus {
    fn from(r: StepStatus) -> Self {
        match r {
            StepStatus::Running => crate::store::StepStatus::Running,
            StepStatus::Retrying => crate::store::StepStatus::Retrying,
            StepStatus::Completed => crate::store::StepStatus::Completed,
            StepStatus::Failed => crate::store::StepStatus::Failed,
        }
    }
}

impl From<crate::store::AttemptError> for AttemptError {
    fn from(r: crate::store::AttemptError) -> Self {
        Self {
            attempt: r.attempt,
            code: r.code,
            message: r.message,
            retryable: r.retryable,
            at: r.at,
        }
    }
}

impl From<crate::store::StepRecord> for StepRecord {
    fn from(r: crate::store::StepRecord) -> Self {
        Self {
            name: r.name,
            position: r.position,
            status: r.status.into(),
            attempts: r.attempts,
            errors: r.errors.into_iter().map(Into::into).collect(),
            wake_at: r.wake_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

impl From<crate::store::agents::Conversation> for Conversation {
    fn from(r: crate::store::agents::Conversation) -> Self {
        Self {
            id: r.id,
            agent_id: r.agent_id,
            title: r.title,
            summary: r.summary,
            summary_upto: r.summary_upto,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<crate::store::agents::MessageRole> for MessageRole {
    fn from(r: crate::store::agents::MessageRole) -> Self {
        match r {
            crate::store::agents::MessageRole::User => MessageRole::User,
            crate::store::agents::MessageRole::Assistant => MessageRole::Assistant,
        }
    }
}

impl From<MessageRole> for crate::store::agents::MessageRole {
    fn from(r: MessageRole) -> Self {
        match r {
            MessageRole::User => crate::store::agents::MessageRole::User,
            MessageRole::Assistant => crate::store::agents::MessageRole::Assistant,
        }
    }
}

impl From<crate::store::agents::MessageRecord> for MessageRecord {
    fn from(r: crate::store::agents::MessageRecord) -> Self {
        Self {
            id: r.id,
            conversation_id: r.conversation_id,
            role: r.role.into(),
            content: r.content,
            citations: r.citations,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
            meta: r.meta,
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::agents::TaskStatus> for TaskStatus {
    fn from(r: crate::store::agents::TaskStatus) -> Self {
        match r {
            crate::store::agents::TaskStatus::Pending => TaskStatus::Pending,
            crate::store::agents::TaskStatus::Running => TaskStatus::Running,
            crate::store::agents::TaskStatus::Done => TaskStatus::Done,
            crate::store::agents::TaskStatus::Failed => TaskStatus::Failed,
        }
    }
}

impl From<TaskStatus> for crate::store::agents::TaskStatus {
    fn from(r: TaskStatus) -> Self {
        match r {
            TaskStatus::Pending => crate::store::agents::TaskStatus::Pending,
            TaskStatus::Running => crate::store::agents::TaskStatus::Running,
            TaskStatus::Done => crate::store::agents::TaskStatus::Done,
            TaskStatus::Failed => crate::store::agents::TaskStatus::Failed,
        }
    }
}

impl From<crate::store::agents::TaskRecord> for TaskRecord {
    fn from(r: crate::store::agents::TaskRecord) -> Self {
        Self {
            id: r.id,
            agent_id: r.agent_id,
            kind: r.kind,
            payload: r.payload,
            status: r.status.into(),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            last_error: r.last_error,
            result: r.result,
            schedule_id: r.schedule_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<crate::store::agents::ScheduleRecord> for ScheduleRecord {
    fn from(r: crate::store::agents::ScheduleRecord) -> Self {
        Self {
            id: r.id,
            agent_id: r.agent_id,
            kind: r.kind,
            spec: r.spec,
            task_kind: r.task_kind,
            payload: r.payload,
            next_run: r.next_run,
            last_run: r.last_run,
            runs: r.runs,
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::agents::AgentSummary> for AgentSummary {
    fn from(r: crate::store::agents::AgentSummary) -> Self {
        Self {
            id: r.id,
            name: r.name,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<crate::store::gateway::CallLog> for CallLog {
    fn from(r: crate::store::gateway::CallLog) -> Self {
        Self {
            id: r.id,
            ts: r.ts,
            kind: r.kind,
            key_id: r.key_id,
            user_id: r.user_id,
            agent_id: r.agent_id,
            route: r.route,
            provider: r.provider,
            model: r.model,
            status: r.status,
            error: r.error,
            attempts: r.attempts,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
            cache: r.cache,
            guardrails: r.guardrails,
            stream: r.stream,
            request: r.request,
            response: r.response,
        }
    }
}

impl From<crate::store::gateway::UsageRow> for UsageRow {
    fn from(r: crate::store::gateway::UsageRow) -> Self {
        Self {
            group: r.group,
            requests: r.requests,
            errors: r.errors,
            cache_hits: r.cache_hits,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
        }
    }
}

impl From<crate::store::Source> for Source {
    fn from(r: crate::store::Source) -> Self {
        Self {
            id: r.id,
            kb_id: r.kb_id,
            path: r.path,
            schedule: r.schedule,
            next_sync_at: r.next_sync_at,
            last_sync_at: r.last_sync_at,
            last_workflow_id: r.last_workflow_id,
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::Scope> for Scope {
    fn from(r: crate::store::Scope) -> Self {
        match r {
            crate::store::Scope::Read => Scope::Read,
            crate::store::Scope::Infer => Scope::Infer,
            crate::store::Scope::Write => Scope::Write,
            crate::store::Scope::Admin => Scope::Admin,
        }
    }
}

impl From<Scope> for crate::store::Scope {
    fn from(r: Scope) -> Self {
        match r {
            Scope::Read => crate::store::Scope::Read,
            Scope::Infer => crate::store::Scope::Infer,
            Scope::Write => crate::store::Scope::Write,
            Scope::Admin => crate::store::Scope::Admin,
        }
    }
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

impl From<crate::service::KbView> for KbView {
    fn from(v: crate::service::KbView) -> Self {
        Self {
            kb: v.kb.into(),
            stats: v.stats.into(),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

impl From<crate::service::SearchHit> for SearchHit {
    fn from(h: crate::service::SearchHit) -> Self {
        Self {
            score: h.score,
            similarity: h.similarity,
            chunk: h.chunk.into(),
        }
    }
}

/// A run with its steps.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowView {
    /// The run.
    #[serde(flatten)]
    pub workflow: WorkflowRecord,
    /// Its steps in order (attempts, errors, timings).
    pub steps: Vec<StepRecord>,
}

impl From<crate::service::WorkflowView> for WorkflowView {
    fn from(v: crate::service::WorkflowView) -> Self {
        Self {
            workflow: v.workflow.into(),
            steps: v.steps.into_iter().map(Into::into).collect(),
        }
    }
}

/// A change of a workflow run, as its event stream sends it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowEvent {
    /// The workflow.
    pub workflow_id: String,
    /// `status`, `step` or `progress`.
    pub event: &'static str,
    /// The run's status after the change.
    pub status: WorkflowStatus,
    /// The step concerned (`step` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepRecord>,
    /// Progress (`progress` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    /// Error of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<crate::workflow::Event> for WorkflowEvent {
    fn from(e: crate::workflow::Event) -> Self {
        Self {
            workflow_id: e.workflow_id,
            event: e.event,
            status: e.status.into(),
            step: e.step.map(Into::into),
            progress: e.progress,
            error: e.error,
        }
    }
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
    pub status: DocumentStatus,
    /// True when identical bytes were already in the knowledge base (nothing re-embedded).
    pub existing: bool,
    /// The document this one replaces once ready.
    pub replaces: Option<String>,
}

impl From<crate::service::Accepted> for Accepted {
    fn from(a: crate::service::Accepted) -> Self {
        Self {
            index: a.index,
            document_id: a.document_id,
            name: a.name,
            status: a.status.into(),
            existing: a.existing,
            replaces: a.replaces,
        }
    }
}

/// Answer to an upload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The job tracking the new documents.
    pub job_id: String,
    /// One entry per admitted file (queued, or `existing` for identical bytes), in request order.
    pub documents: Vec<Accepted>,
    /// One entry per refused file, in request order.
    pub refused: Vec<crate::service::Refused>,
}

impl From<crate::service::Receipt> for Receipt {
    fn from(r: crate::service::Receipt) -> Self {
        Self {
            job_id: r.job_id,
            documents: r.documents.into_iter().map(Into::into).collect(),
            refused: r.refused,
        }
    }
}

/// A finished turn.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChatAnswer {
    /// The conversation.
    pub conversation_id: String,
    /// The stream id of the answer (resumable with `Last-Event-ID` when streamed).
    pub stream_id: String,
    /// The stored question.
    pub question: MessageRecord,
    /// The stored answer (with citations, tokens and cost).
    pub message: MessageRecord,
    /// The query the passages were retrieved with.
    pub query: String,
    /// True when the passages were judged to answer the question.
    pub found: bool,
    /// How the answer was made: `extractive` or `generative`.
    pub mode: AnswerMode,
    /// Calibrated answerability of the best passage unit (0..1); below the agent's
    /// `min_support` the answer is "not found".
    pub support: f32,
    /// Share of the answer's sentences a passage supports.
    pub grounded_share: f32,
    /// The passages in the prompt.
    pub sources: Vec<Passage>,
    /// Checked citations.
    pub citations: Vec<Citation>,
    /// Citations the answer made that failed their check.
    pub dropped_citations: Vec<Dropped>,
    /// Each sentence of the answer with its support (or what the passages lack).
    pub claims: Vec<Claim>,
    /// Tokens of the turn's model calls.
    pub usage: Usage,
    /// Cost of the turn's model calls, USD.
    pub cost_usd: f64,
    /// Where the time went.
    pub timings: Timings,
}

impl From<crate::agent::answer::ChatAnswer> for ChatAnswer {
    fn from(a: crate::agent::answer::ChatAnswer) -> Self {
        Self {
            conversation_id: a.conversation_id,
            stream_id: a.stream_id,
            question: a.question.into(),
            message: a.message.into(),
            query: a.query,
            found: a.found,
            mode: a.mode,
            support: a.support,
            grounded_share: a.grounded_share,
            sources: a.sources,
            citations: a.citations,
            dropped_citations: a.dropped_citations,
            claims: a.claims,
            usage: a.usage,
            cost_usd: a.cost_usd,
            timings: a.timings,
        }
    }
}

/// What every subscriber (WebSocket) of an agent sees.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The state changed.
    State {
        /// New version.
        version: u64,
        /// New state.
        #[schema(value_type = Object)]
        state: Value,
    },
    /// The config changed.
    Config {
        /// New version.
        version: u64,
        /// New config.
        config: crate::agent::AgentConfig,
    },
    /// A message was stored (a question or an answer).
    Message {
        /// The message.
        message: MessageRecord,
    },
    /// A piece of an answer being streamed.
    Delta {
        /// The answer's stream.
        stream_id: String,
        /// Its conversation.
        conversation_id: String,
        /// Text to append.
        text: String,
    },
    /// A task changed.
    Task {
        /// The task.
        task: TaskRecord,
    },
}

impl From<crate::agent::AgentEvent> for AgentEvent {
    fn from(e: crate::agent::AgentEvent) -> Self {
        use crate::agent::AgentEvent as A;
        match e {
            A::State { version, state } => AgentEvent::State { version, state },
            A::Config { version, config } => AgentEvent::Config { version, config },
            A::Message { message } => AgentEvent::Message {
                message: message.into(),
            },
            A::Delta {
                stream_id,
                conversation_id,
                text,
            } => AgentEvent::Delta {
                stream_id,
                conversation_id,
                text,
            },
            A::Task { task } => AgentEvent::Task { task: task.into() },
        }
    }
}

/// Converts every item of a list.
pub fn all<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}
