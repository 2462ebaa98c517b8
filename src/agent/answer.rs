//! What a chat turn takes and gives: the request, the finished answer with its timings, the
//! streamed form, and the sink a turn's events go to. Plain data shared by `chat` (which
//! answers requests) and `turn` (which runs the stages); it must never run anything.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cite::{Citation, Dropped, Source};
use super::config::AnswerMode;
use super::stream::{Emitter, Reader};
use super::verify::Claim;
use crate::gateway::types::Usage;
use crate::store::agents::MessageRecord;

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
#[derive(Debug, Clone, Serialize)]
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
    /// The client stopped the answer while it was generated: the text is what came before.
    pub stopped: bool,
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

/// Where a turn's events go: the stream being answered, or nowhere for a whole answer.
pub(super) struct Sink {
    pub(super) emitter: Option<Emitter>,
}

impl Sink {
    /// Cancelled when the client asks the answer to stop (never for a whole answer).
    pub(super) fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.emitter
            .as_ref()
            .map(Emitter::stop_token)
            .unwrap_or_default()
    }

    pub(super) fn emit(&mut self, name: &str, data: Value) {
        if let Some(e) = &mut self.emitter {
            e.emit(name, &data);
        }
    }
}
