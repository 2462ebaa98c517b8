//! Conversations, messages, tasks, schedules, agents, chat answers and agent events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::answer::Timings;
use crate::agent::cite::{Citation, Dropped, Source as Passage};
use crate::agent::verify::Claim;
use crate::agent::AnswerMode;
use crate::gateway::types::Usage;

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
    /// The client stopped the answer while it was generated
    /// (`POST /v1/agents/{id}/streams/{stream_id}/stop`): the text is what came before.
    pub stopped: bool,
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
            stopped: a.stopped,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::agents as store;

    /// Messages and tasks reach clients two ways: through these shapes (REST, WebSocket) and
    /// as the agent's stream events, which serialise the records themselves. Both must read
    /// the same.
    #[test]
    fn records_in_streams_and_in_responses_read_the_same() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        for role in [store::MessageRole::User, store::MessageRole::Assistant] {
            let m = store::MessageRecord {
                id: 7,
                conversation_id: "c1".into(),
                role,
                content: "The backup runs at 02:00 [1].".into(),
                citations: serde_json::json!([{"marker": 1, "chunk_id": 3}]),
                tokens_in: 120,
                tokens_out: 9,
                cost_usd: 0.25,
                meta: serde_json::json!({"stream_id": "s1"}),
                created_at: at,
            };
            let direct = serde_json::to_value(&m).expect("record");
            assert_eq!(
                serde_json::to_value(MessageRecord::from(m)).expect("shape"),
                direct
            );
        }
        for status in [
            store::TaskStatus::Pending,
            store::TaskStatus::Running,
            store::TaskStatus::Done,
            store::TaskStatus::Failed,
        ] {
            let t = store::TaskRecord {
                id: 4,
                agent_id: "bot".into(),
                kind: "http".into(),
                payload: serde_json::json!({"url": "http://127.0.0.1:1/"}),
                status,
                attempts: 2,
                max_attempts: 5,
                run_at: at,
                last_error: Some("HTTP 503".into()),
                result: None,
                schedule_id: Some("s".into()),
                created_at: at,
                updated_at: at,
                tenant_id: "never shown".into(),
            };
            let direct = serde_json::to_value(&t).expect("record");
            assert!(direct.get("tenant_id").is_none());
            assert_eq!(
                serde_json::to_value(TaskRecord::from(t)).expect("shape"),
                direct
            );
        }
    }
}
