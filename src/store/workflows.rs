//! Records of durable workflows: runs, their steps with outputs and attempt errors, and the
//! events sent to them. The engine that interprets them lives in [`crate::workflow`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, Result};

/// Where a workflow run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl WorkflowStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "sleeping" => Self::Sleeping,
            "waiting" => Self::Waiting,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A workflow about to be created.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    /// Its id (chosen by the caller so that related records can name it first).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Workflow type (`ingest`, `reindex`, `sync`...).
    pub kind: String,
    /// What it works on (a knowledge base id), for filtering.
    pub subject: Option<String>,
    /// Same tenant + kind + key → the same workflow.
    pub idempotency_key: Option<String>,
    /// Its input.
    pub input: Value,
}

/// A workflow run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    /// Stable id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

impl StepStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One failed attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Unique within the run.
    pub name: String,
    /// Order of first execution.
    pub position: u32,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Output of a completed step (dropped once no later step needs it).
    pub output: Option<Value>,
    /// Every failed attempt.
    pub errors: Vec<AttemptError>,
    /// Retry time, sleep end or event deadline.
    pub wake_at: Option<DateTime<Utc>>,
    /// First attempt's start.
    pub started_at: DateTime<Utc>,
    /// Completion or final failure.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters of a workflow listing.
#[derive(Debug, Clone, Default)]
pub struct WorkflowQuery {
    /// Only this tenant's.
    pub tenant_id: String,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<WorkflowStatus>,
    /// Only about this subject (knowledge base id).
    pub subject: Option<String>,
    /// Skip this many (newest first).
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
}

/// Storage of workflow runs.
///
/// Durability: every write survives a process crash once it returns. Step records, progress
/// and dropped outputs ([`save_step`](Self::save_step), [`save_progress`](Self::save_progress),
/// [`forget_outputs`](Self::forget_outputs)) are the engine's own bookkeeping and need not
/// wait for the disk: a power loss may drop the latest of them, never an earlier one without
/// the later ones, and a dropped step runs again (steps are written to be re-run, as after a
/// crash between a step's effect and its record). Every other write is on disk when it
/// returns.
pub trait WorkflowStore: Send + Sync {
    /// Creates a run, or returns the existing one with the same tenant, kind and idempotency
    /// key (`false`).
    fn create_workflow(&self, new: &NewWorkflow) -> Result<(WorkflowRecord, bool)>;
    /// The run created with this tenant, kind and idempotency key, if any.
    fn workflow_by_key(
        &self,
        tenant_id: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<WorkflowRecord>>;
    /// One run (any tenant; callers check ownership).
    fn workflow(&self, id: &str) -> Result<WorkflowRecord>;
    /// A page of runs, newest first.
    fn list_workflows(&self, query: &WorkflowQuery) -> Result<Page<WorkflowRecord>>;
    /// A run's steps in order, outputs included.
    fn steps(&self, workflow_id: &str) -> Result<Vec<StepRecord>>;
    /// Runs a worker may pick up now, oldest first: queued ones and sleeping or waiting ones
    /// whose wake time has passed.
    fn runnable_workflows(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<WorkflowRecord>>;
    /// Runs left `running` by a process that stopped; they become `queued`. Returns how many.
    fn requeue_interrupted(&self) -> Result<usize>;
    /// Saves a run's status, wake time, awaited event, output, error and run counter.
    /// `cancel_requested` is never overwritten (see [`WorkflowStore::request_cancel`]).
    fn save_workflow(&self, wf: &WorkflowRecord) -> Result<()>;
    /// Saves a run's progress.
    fn save_progress(&self, workflow_id: &str, progress: &Value) -> Result<()>;
    /// Inserts or replaces a step.
    fn save_step(&self, workflow_id: &str, step: &StepRecord) -> Result<()>;
    /// Drops the outputs of completed steps whose names start with `prefix` (except `keep`).
    fn forget_outputs(&self, workflow_id: &str, prefix: &str, keep: &str) -> Result<()>;
    /// Asks a run to stop; a run not executing stops at once. Returns the run after.
    fn request_cancel(&self, id: &str) -> Result<WorkflowRecord>;
    /// Makes a failed or cancelled run runnable again: its failed steps start over (their
    /// errors are kept). Returns the run after.
    fn retry_workflow(&self, id: &str) -> Result<WorkflowRecord>;
    /// Records an event for a run; a run waiting for it becomes runnable.
    fn send_event(&self, workflow_id: &str, name: &str, payload: &Value) -> Result<()>;
    /// Consumes the oldest unconsumed event with this name and, in the same transaction,
    /// saves `step` completed with the event's payload as output (so an event is never lost
    /// nor consumed twice). `None` when no such event is waiting.
    fn take_event(&self, workflow_id: &str, name: &str, step: &StepRecord)
        -> Result<Option<Value>>;
}
