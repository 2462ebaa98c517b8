//! Records of durable workflows: runs, their steps with outputs and attempt errors, and the
//! events sent to them. The engine that interprets them lives in [`crate::workflow`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::collections::HashMap;
use std::time::Duration;

use super::{Page, Result, StoreError};

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

/// A run as claimed by one process: writes made under it land only while no later claim of
/// the run exists (a process whose lease expired while it was still executing — stalled, or
/// cut off from the database — must not overwrite the work of the process that took over).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The run.
    pub workflow_id: &'a str,
    /// Its `runs` counter as the claim left it: each claim advances it, so it names the claim.
    pub run: u32,
}

impl<'a> Claim<'a> {
    /// The claim a claimed run carries.
    pub fn of(wf: &'a WorkflowRecord) -> Self {
        Self {
            workflow_id: &wf.id,
            run: wf.runs,
        }
    }
}

/// What [`WorkflowStore::claim_workflows`] may take.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The claiming process (its replica id).
    pub holder: &'a str,
    /// How long the claim holds without renewal.
    pub lease: Duration,
    /// Wake times up to this have passed.
    pub now: DateTime<Utc>,
    /// Most runs to claim.
    pub free: usize,
    /// Most runs of a kind executing at once over every process (kinds not listed: 1).
    pub limits: &'a HashMap<String, usize>,
    /// Runs this process is executing (never claimed again while it does).
    pub exclude: &'a [String],
}

impl ClaimRequest<'_> {
    /// The cluster-wide limit of a kind.
    pub fn limit(&self, kind: &str) -> usize {
        self.limits.get(kind).copied().unwrap_or(1).max(1)
    }

    /// Picks from `candidates` (oldest first) what may be claimed, given `live` runs per kind
    /// whose leases hold.
    pub fn pick(
        &self,
        candidates: Vec<WorkflowRecord>,
        mut live: HashMap<String, usize>,
    ) -> Vec<WorkflowRecord> {
        let mut picked = Vec::new();
        for wf in candidates {
            if picked.len() >= self.free {
                break;
            }
            if self.exclude.contains(&wf.id) {
                continue;
            }
            let n = live.entry(wf.kind.clone()).or_default();
            if *n >= self.limit(&wf.kind) {
                continue;
            }
            *n += 1;
            picked.push(wf);
        }
        picked
    }
}

/// A renewed (or lost) lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The run.
    pub workflow_id: String,
    /// Still held by the renewing process under the same claim.
    pub held: bool,
    /// Cancellation was asked for (by any process).
    pub cancel_requested: bool,
}

/// What a fenced write fails with when the run was claimed again since.
pub const CLAIM_LOST: &str = "workflow claim";

/// Whether `e` says that a fenced write found its claim superseded.
pub fn claim_lost(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict { kind, .. } if *kind == CLAIM_LOST)
}

/// The error of a fenced write whose claim was superseded.
pub fn superseded(workflow_id: &str) -> StoreError {
    StoreError::Conflict {
        kind: CLAIM_LOST,
        name: workflow_id.to_owned(),
    }
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
    /// Claims runs for `req.holder`, oldest first, and returns them `running` with their
    /// `runs` counter advanced (the claim's token, see [`Claim`]): queued runs, sleeping or
    /// waiting ones whose wake time has passed or whose cancellation was asked for, and
    /// running ones whose lease expired (their holder stopped renewing: it died or lost the
    /// database). At most `req.free` runs, and per kind at most its limit minus the runs of
    /// that kind whose leases are live on any process. Claims never interleave: two
    /// processes claiming at once see each other's claims.
    fn claim_workflows(&self, req: &ClaimRequest<'_>) -> Result<Vec<WorkflowRecord>>;
    /// Extends the leases of runs `holder` still holds by `lease`. Returns, per run asked
    /// for, whether it is still held and whether its cancellation was asked for.
    fn renew_leases(
        &self,
        holder: &str,
        claims: &[Claim<'_>],
        lease: Duration,
    ) -> Result<Vec<LeaseState>>;
    /// Runs left `running` by an earlier process that no other process can be executing; they
    /// become `queued`. On a store one process owns (SQLite) that is every running run; on a
    /// shared store none (a dead holder's leases expire instead). Returns how many.
    fn requeue_interrupted(&self) -> Result<usize>;
    /// Saves the state a claimed run ended its turn in (status, wake time, awaited event,
    /// output, error, start and end), and releases its claim. Fenced by `wf.runs`: a run
    /// claimed again since is left alone ([`claim_lost`]). `cancel_requested` is never
    /// overwritten (see [`WorkflowStore::request_cancel`]).
    fn save_workflow(&self, wf: &WorkflowRecord) -> Result<()>;
    /// Saves a claimed run's progress (fenced, see [`Claim`]).
    fn save_progress(&self, claim: &Claim<'_>, progress: &Value) -> Result<()>;
    /// Inserts or replaces a claimed run's step (fenced, see [`Claim`]).
    fn save_step(&self, claim: &Claim<'_>, step: &StepRecord) -> Result<()>;
    /// Drops the outputs of completed steps whose names start with `prefix` (except `keep`).
    fn forget_outputs(&self, claim: &Claim<'_>, prefix: &str, keep: &str) -> Result<()>;
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
    /// Fenced, see [`Claim`].
    fn take_event(&self, claim: &Claim<'_>, name: &str, step: &StepRecord)
        -> Result<Option<Value>>;
}
