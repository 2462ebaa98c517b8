//! Chat requests: `POST /v1/agents/{id}/chat` and queued `chat` tasks, answered whole or as a
//! resumable stream of events. The turn itself (its stages) is in `turn`; this module owns
//! what goes in and out of it, the agent's budget check, and the turn's detached task.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cite::{Citation, Dropped, Source};
use super::config::AnswerMode;
use super::stream::{Emitter, Reader};
use super::turn::Asked;
use super::verify::Claim;
use super::{blocking, AgentConfig, AgentError, Agents, Cmd, Key, Result};
use crate::gateway::types::Usage;
use crate::service::Principal;
use crate::store::agents::{Conversation, MessageRecord};
use crate::store::Scope;

/// What the agent answers when no passage is relevant enough.
pub const NOT_FOUND: &str =
    "I could not find anything about this in the knowledge base, so I cannot answer it from the documents.";

/// `POST /v1/agents/{id}/chat`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    /// The question (not blank).
    #[schema(pattern = r"\S")]
    pub message: String,
    /// Continue this conversation (a new one when absent).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// This answer's mode, instead of the agent's `answer_mode`.
    #[serde(default)]
    pub answer_mode: Option<AnswerMode>,
}

/// Where the time of a turn went, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// Rewriting the follow-up (0 for a first question).
    pub rewrite_ms: f64,
    /// Searching the knowledge bases.
    pub retrieval_ms: f64,
    /// Cutting the passages into units, embedding them, choosing the answer's units and
    /// checking a generated answer's sentences.
    pub grounding_ms: f64,
    /// From the start of the turn to the first answer text.
    pub first_token_ms: f64,
    /// From the answer call to its first text (the model's time to first token).
    pub model_ttft_ms: f64,
    /// Answer tokens per second after the first.
    pub tokens_per_s: Option<f64>,
    /// The whole turn.
    pub total_ms: f64,
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
    pub sources: Vec<Source>,
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
    /// The answerability features (for evaluation; not sent).
    #[serde(skip)]
    pub features: Vec<f32>,
}

/// How a chat request is answered.
pub enum ChatStart {
    /// Whole.
    Complete(Box<ChatAnswer>),
    /// As events (`meta`, `status`, `sources`, `delta`, `citations`, then `done` or `error`).
    Stream {
        /// Resume with `GET /v1/agents/{id}/streams/{stream_id}`.
        stream_id: String,
        /// The events.
        reader: Reader,
    },
}

fn system_principal(key: &Key) -> Principal {
    Principal {
        tenant_id: key.0.clone(),
        key_id: None,
        scopes: vec![Scope::Read, Scope::Write],
    }
}

pub(super) struct Sink {
    emitter: Option<Emitter>,
}

impl Sink {
    pub(super) fn emit(&mut self, name: &str, data: Value) {
        if let Some(e) = &mut self.emitter {
            e.emit(name, &data);
        }
    }
}

/// Refuses a turn once the agent's spend in the budget's window reached the limit. Checked
/// under the turn lock (turns of an agent run one at a time, each sees the cost of the one
/// before); `chat` also checks before it opens a stream, so that a spent agent answers HTTP
/// 429 rather than an error event.
/// Answers what is left of the budget (USD), `None` without one; each model call of the turn
/// is capped by it (its worst case must fit), so the limit is never exceeded.
pub(super) async fn check_budget(
    agents: &Agents,
    key: &Key,
    config: &AgentConfig,
) -> Result<Option<f64>> {
    let Some(b) = config.budget else {
        return Ok(None);
    };
    let (start, resets_at) = b.window.bounds(Utc::now());
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    let spent = blocking(move || store.agent_spend(&t, &a, start)).await?;
    if spent >= b.limit_usd {
        return Err(AgentError::BudgetExceeded {
            limit_usd: b.limit_usd,
            spent_usd: spent,
            resets_at,
        });
    }
    Ok(Some(b.limit_usd - spent))
}

impl Agents {
    /// Answers a question (whole, or streamed as resumable events).
    pub async fn chat(&self, p: &Principal, id: &str, input: ChatInput) -> Result<ChatStart> {
        p.require(Scope::Infer)?;
        let key = Self::key(p, id)?;
        let message = input.message.trim().to_owned();
        if message.is_empty() {
            return Err(AgentError::Invalid("message must not be empty".into()));
        }
        if message.len() > self.inner.config.max_message_bytes {
            return Err(AgentError::Invalid(format!(
                "message is {} bytes; the limit is {}",
                message.len(),
                self.inner.config.max_message_bytes
            )));
        }
        let config = self.call(&key, Cmd::Get).await?.config;
        check_budget(self, &key, &config).await?;
        let conversation = conversation(self, &key, input.conversation_id).await?;
        let stream_id = uuid::Uuid::now_v7().to_string();
        let asked = Asked {
            message,
            mode: input.answer_mode,
            conversation,
        };
        if !input.stream {
            let answer = turn(self, &key, p, asked, &stream_id, None).await?;
            return Ok(ChatStart::Complete(Box::new(answer)));
        }
        let emitter = self
            .inner
            .hub
            .open(self.inner.store.clone(), &stream_id, &key.0, &key.1);
        let reader = self
            .inner
            .hub
            .follow(&stream_id, (&key.0, &key.1), 0)
            .ok_or(AgentError::Unavailable("unable to open the stream"))?;
        let (agents, p, sid) = (self.clone(), p.clone(), stream_id.clone());
        // The turn runs on its own: a client that goes away can resume it.
        tokio::spawn(async move {
            let _ = turn(&agents, &key, &p, asked, &sid, Some(emitter)).await;
        });
        Ok(ChatStart::Stream { stream_id, reader })
    }
}

/// The agent's conversation `id`, if one is named (else a new one is started by the turn).
async fn conversation(
    agents: &Agents,
    key: &Key,
    id: Option<String>,
) -> Result<Option<Conversation>> {
    let Some(c) = id else { return Ok(None) };
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    Ok(Some(
        blocking(move || store.conversation(&t, &a, &c)).await?,
    ))
}

/// A queued `chat` task: one turn, whole.
pub(super) async fn run_task(
    agents: &Agents,
    key: &Key,
    message: String,
    conversation_id: Option<String>,
) -> Result<Value> {
    let conversation = conversation(agents, key, conversation_id).await?;
    let sid = uuid::Uuid::now_v7().to_string();
    let p = system_principal(key);
    let asked = Asked {
        message,
        mode: None,
        conversation,
    };
    let a = turn(agents, key, &p, asked, &sid, None).await?;
    Ok(json!({
        "conversation_id": a.conversation_id,
        "message_id": a.message.id,
        "answer": a.message.content,
        "citations": a.citations.len(),
    }))
}

/// One turn, its errors reported on the stream too.
async fn turn(
    agents: &Agents,
    key: &Key,
    p: &Principal,
    asked: Asked,
    stream_id: &str,
    emitter: Option<Emitter>,
) -> Result<ChatAnswer> {
    let mut sink = Sink { emitter };
    let r = super::turn::run(agents, key, p, asked, stream_id, &mut sink).await;
    match &r {
        Ok(a) => {
            metrics::counter!("groundwork_agent_turns_total", "status" => "ok").increment(1);
            metrics::histogram!("groundwork_agent_turn_seconds").record(a.timings.total_ms / 1e3);
            sink.emit("done", serde_json::to_value(a).unwrap_or_default());
        }
        Err(e) => {
            metrics::counter!("groundwork_agent_turns_total", "status" => "error").increment(1);
            tracing::warn!(agent = %key.1, error = %e, "chat turn failed");
            sink.emit("error", json!({"code": e.code(), "message": e.to_string()}));
        }
    }
    r
}
