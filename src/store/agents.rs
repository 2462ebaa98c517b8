//! Records of agents, each in its own namespace (tenant, agent id): its state and config with
//! a version, its conversations and messages, its task queue, its schedules, and the buffered
//! events of its streamed answers (so an interrupted stream can resume).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Page, Result};

/// An agent's durable record.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// Tenant.
    pub tenant_id: String,
    /// Agent id (chosen by the client).
    pub id: String,
    /// Its configuration (JSON object).
    pub config: serde_json::Value,
    /// Its state (any JSON).
    pub state: serde_json::Value,
    /// Bumped by every state or config change.
    pub version: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Which replica holds an agent (runs its actor) after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// The claimer does, under the token it gave.
    Held,
    /// Another replica does, alive by its heartbeat.
    Elsewhere {
        /// Its replica id.
        replica: String,
        /// Where it answers (`http://host:port`; empty if it never said).
        address: String,
    },
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The person asking.
    #[default]
    User,
    /// The agent answering.
    Assistant,
}

impl MessageRole {
    /// As stored and sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(MessageRole::User),
            "assistant" => Some(MessageRole::Assistant),
            _ => None,
        }
    }
}

/// A message about to be stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewMessage {
    /// Its conversation.
    pub conversation_id: String,
    /// Who wrote it.
    pub role: MessageRole,
    /// The text.
    pub content: String,
    /// Verified citations (assistant).
    pub citations: serde_json::Value,
    /// Prompt tokens of the answer's model calls.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Cost of the model calls, USD.
    pub cost_usd: f64,
    /// Anything else (timings, rewritten query, dropped citations, stream id).
    pub meta: serde_json::Value,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    pub citations: serde_json::Value,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Cost, USD.
    pub cost_usd: f64,
    /// Timings, rewritten query, dropped citations, stream id.
    pub meta: serde_json::Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// A task about to be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Tenant.
    pub tenant_id: String,
    /// Agent.
    pub agent_id: String,
    /// What to do (`state.patch`, `chat`, `http`, `summarize`).
    pub kind: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// Attempts before it fails for good.
    pub max_attempts: u32,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// The schedule that queued it.
    pub schedule_id: Option<String>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

impl TaskStatus {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
        }
    }

    /// From the column value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "done" => TaskStatus::Done,
            "failed" => TaskStatus::Failed,
            _ => return None,
        })
    }
}

/// A queued task.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TaskRecord {
    /// Increasing id (the queue order).
    pub id: i64,
    /// Agent.
    pub agent_id: String,
    /// What to do.
    pub kind: String,
    /// Its input.
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
    pub result: Option<serde_json::Value>,
    /// The schedule that queued it.
    pub schedule_id: Option<String>,
    /// Queue time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Tenant.
    #[serde(skip)]
    pub tenant_id: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Finished with this output.
    Done(serde_json::Value),
    /// Failed; try again at this time.
    Retry {
        /// The error.
        error: String,
        /// Next attempt.
        at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed(String),
}

/// A schedule about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// Tenant.
    pub tenant_id: String,
    /// Agent.
    pub agent_id: String,
    /// `at`, `after` or `cron`.
    pub kind: String,
    /// The time, delay or expression as given.
    pub spec: String,
    /// The task it queues.
    pub task_kind: String,
    /// The task's input.
    pub payload: serde_json::Value,
    /// First due time.
    pub next_run: DateTime<Utc>,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub payload: serde_json::Value,
    /// Next due time; none once a one-off schedule fired.
    pub next_run: Option<DateTime<Utc>>,
    /// When it last fired.
    pub last_run: Option<DateTime<Utc>>,
    /// Times it fired.
    pub runs: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Tenant.
    #[serde(skip)]
    pub tenant_id: String,
}

/// One buffered event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The stream.
    pub stream_id: String,
    /// 1, 2, … within the stream (the SSE id).
    pub seq: u64,
    /// Tenant.
    pub tenant_id: String,
    /// Agent.
    pub agent_id: String,
    /// SSE event name.
    pub event: String,
    /// SSE data (JSON).
    pub data: String,
}

/// An agent as listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// Agents' storage. Every method is scoped by tenant and agent id.
pub trait AgentStore: Send + Sync {
    /// The agent, created with `config` and `null` state when missing.
    fn load_agent(
        &self,
        tenant_id: &str,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<AgentRecord>;
    /// The tenant's agents, by id.
    fn list_agents(&self, tenant_id: &str, offset: u64, limit: u64) -> Result<Page<AgentSummary>>;
    /// Writes state, config and version (the caller is the agent's only writer).
    fn save_agent(
        &self,
        tenant_id: &str,
        id: &str,
        state: &serde_json::Value,
        config: &serde_json::Value,
        version: u64,
    ) -> Result<DateTime<Utc>>;
    /// Deletes the agent and everything it owns; returns whether it existed.
    fn delete_agent(&self, tenant_id: &str, id: &str) -> Result<bool>;

    /// A new conversation.
    fn create_conversation(
        &self,
        tenant_id: &str,
        agent_id: &str,
        title: &str,
    ) -> Result<Conversation>;
    /// One conversation of the agent.
    fn conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<Conversation>;
    /// The agent's conversations, most recent first; with `query`, those whose title or a
    /// message contains it (case-insensitive for ASCII letters; `%`, `_` and `\\` taken
    /// literally).
    fn list_conversations(
        &self,
        tenant_id: &str,
        agent_id: &str,
        query: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Conversation>>;
    /// Renames a conversation; its messages stay.
    fn rename_conversation(
        &self,
        tenant_id: &str,
        agent_id: &str,
        id: &str,
        title: &str,
    ) -> Result<Conversation>;
    /// Deletes a conversation and its messages; returns whether it existed.
    fn delete_conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool>;
    /// Appends a message (the conversation must belong to the agent).
    fn append_message(
        &self,
        tenant_id: &str,
        agent_id: &str,
        m: &NewMessage,
    ) -> Result<MessageRecord>;
    /// Messages of a conversation with id greater than `after`, oldest first.
    fn messages(
        &self,
        tenant_id: &str,
        agent_id: &str,
        conversation_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<MessageRecord>>;
    /// Replaces the running summary.
    fn set_summary(
        &self,
        tenant_id: &str,
        agent_id: &str,
        conversation_id: &str,
        summary: &str,
        upto: i64,
    ) -> Result<()>;
    /// Spend of the agent's messages since `since`, USD.
    fn agent_spend(&self, tenant_id: &str, agent_id: &str, since: DateTime<Utc>) -> Result<f64>;

    /// Queues a task.
    fn enqueue_task(&self, t: &NewTask) -> Result<TaskRecord>;
    /// The head of the agent's queue (lowest id not finished) if it is due: marked running
    /// with one more attempt, claimed by `holder` (the replica's id). A head waiting for its
    /// retry time blocks the queue (FIFO).
    fn claim_task(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        holder: &str,
    ) -> Result<Option<TaskRecord>>;
    /// When the head of the agent's queue is due, if it has one.
    fn next_task_time(&self, tenant_id: &str, agent_id: &str) -> Result<Option<DateTime<Utc>>>;
    /// Records an attempt's end.
    fn finish_task(&self, id: i64, outcome: &TaskOutcome) -> Result<TaskRecord>;
    /// One task of the agent.
    fn task(&self, tenant_id: &str, agent_id: &str, id: i64) -> Result<TaskRecord>;
    /// The agent's tasks, newest first.
    fn list_tasks(&self, tenant_id: &str, agent_id: &str, limit: u64) -> Result<Vec<TaskRecord>>;
    /// Puts back in their queues the tasks left running by processes that are gone: claimed
    /// by none, or by a replica other than `holder` whose heartbeat is older than
    /// `alive_since` or absent (a replica that stopped removes its row; one killed stops
    /// beating). On a store one process owns (SQLite) that is every task not claimed by
    /// `holder`. Returns how many.
    fn requeue_running_tasks(&self, holder: &str, alive_since: DateTime<Utc>) -> Result<u64>;
    /// Agents with a pending task due at `now`.
    fn agents_with_due_tasks(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>>;

    /// Stores a schedule.
    fn add_schedule(&self, s: &NewSchedule) -> Result<ScheduleRecord>;
    /// The agent's schedules.
    fn list_schedules(&self, tenant_id: &str, agent_id: &str) -> Result<Vec<ScheduleRecord>>;
    /// Deletes a schedule; returns whether it existed.
    fn delete_schedule(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool>;
    /// In one transaction: every schedule due at `now` queues its task and moves to the next
    /// time `next` gives (none: done). Returns the tasks queued.
    fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        max_attempts: u32,
        next: &dyn Fn(&ScheduleRecord) -> Option<DateTime<Utc>>,
    ) -> Result<Vec<TaskRecord>>;

    /// Buffers events of a stream.
    fn append_events(&self, events: &[StoredEvent]) -> Result<()>;
    /// A stream's events after `after`, in order.
    fn events_after(
        &self,
        tenant_id: &str,
        agent_id: &str,
        stream_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>>;
    /// Drops events buffered before `before`; returns how many.
    fn purge_events(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Takes agent `(tenant_id, id)` for replica `holder` under `token` (one activation) when
    /// no live replica holds it — no lease, or its holder's heartbeat older than
    /// `alive_since` or gone — or `holder` already does; else names the replica that does.
    /// On a store one process owns (SQLite) that process holds every agent.
    fn claim_agent(
        &self,
        tenant_id: &str,
        id: &str,
        holder: &str,
        token: &str,
        alive_since: DateTime<Utc>,
    ) -> Result<Holding>;
    /// Gives up the lease taken under `token` (its agent left memory); a later activation's
    /// lease stays.
    fn release_agent(&self, tenant_id: &str, id: &str, token: &str) -> Result<()>;
    /// Gives up every lease of `holder` (a replica stopping); returns how many.
    fn release_agents(&self, holder: &str) -> Result<u64>;
}
