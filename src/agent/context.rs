//! What one chat turn carries from stage to stage: its context (who asks, the config, the
//! conversation, the spend so far, the stream), the search it makes and the answer it drafts.
//! Shared by `turn` and the stage modules (`rewrite`, `generate`); it must never run a stage.

use std::time::Instant;

use serde_json::json;

use super::answer::Sink;
use super::cite::Citation;
use super::config::AnswerMode;
use super::{AgentConfig, AgentEvent, Agents, Key};
use crate::gateway::types::Usage;
use crate::gateway::CallContext;
use crate::principal::Principal;
use crate::store::agents::Conversation;

/// What every stage of a turn may read, and the spend and stream it adds to.
pub(super) struct Ctx<'a> {
    pub agents: &'a Agents,
    pub key: &'a Key,
    pub p: &'a Principal,
    pub config: AgentConfig,
    pub conversation: Conversation,
    /// Identity of the turn's model calls (per-agent budgets and logs).
    pub call: CallContext,
    pub sink: &'a mut Sink,
    pub stream_id: &'a str,
    pub(super) started: Instant,
    pub(super) usage: Usage,
    pub(super) cost: f64,
}

impl Ctx<'_> {
    /// Adds a model call's tokens and cost to the turn's.
    pub fn spend(&mut self, u: Usage, cost: f64) {
        self.usage = self.usage + u;
        self.cost += cost;
        if let Some(cap) = &mut self.call.spend_cap_usd {
            *cap -= cost;
        }
    }

    /// Milliseconds since the turn started.
    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    /// Sends a piece of the answer to the stream and to the agent's subscribers.
    pub fn delta(&mut self, text: String) {
        self.sink.emit("delta", json!({"text": text}));
        self.agents.publish(
            self.key,
            AgentEvent::Delta {
                stream_id: self.stream_id.to_owned(),
                conversation_id: self.conversation.id.clone(),
                text,
            },
        );
    }
}

/// Stage 1's output: what is searched.
pub(super) struct Query {
    /// The question as searched and answered (the rewrite of a follow-up).
    pub text: String,
    /// Every query searched (the rewrite and the joined question for a follow-up).
    pub queries: Vec<String>,
    pub rewrite_ms: f64,
}

/// Stage 3's output: an answer before its check.
#[derive(Default)]
pub(super) struct Draft {
    pub text: String,
    /// Citations made while composing (extractive answers cite every unit exactly).
    pub citations: Option<Vec<Citation>>,
    pub first_token_ms: f64,
    pub model_ttft_ms: f64,
    pub tokens_per_s: Option<f64>,
    /// The client stopped the generation: `text` is what came before.
    pub stopped: bool,
}

/// What a turn is asked: the question, an answer mode overriding the agent's, and the
/// conversation it continues (`None`: a new one).
pub(super) struct Asked {
    pub message: String,
    pub mode: Option<AnswerMode>,
    pub conversation: Option<Conversation>,
}
