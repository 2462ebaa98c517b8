//! Workflow runs, their steps and events, folder sources.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Where the last sync run is (absent before the first sync, or once the run is pruned).
    pub last_sync_status: Option<WorkflowStatus>,
    /// Why the last sync run failed.
    pub last_sync_error: Option<String>,
    /// When the last sync run ended.
    pub last_sync_finished_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
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
            last_sync_status: None,
            last_sync_error: None,
            last_sync_finished_at: None,
            created_at: r.created_at,
        }
    }
}

impl From<crate::service::SourceView> for Source {
    fn from(v: crate::service::SourceView) -> Self {
        let mut out = Source::from(v.source);
        if let Some(wf) = v.last_sync {
            out.last_sync_status = Some(wf.status.into());
            out.last_sync_error = wf.error;
            out.last_sync_finished_at = wf.finished_at;
        }
        out
    }
}

impl From<crate::service::WorkflowView> for WorkflowView {
    fn from(v: crate::service::WorkflowView) -> Self {
        Self {
            workflow: v.workflow.into(),
            steps: v.steps.into_iter().map(Into::into).collect(),
        }
    }
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
