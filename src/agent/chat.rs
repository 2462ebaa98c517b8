//! Chat requests: `POST /v1/agents/{id}/chat` and queued `chat` tasks, answered whole or as a
//! resumable stream of events. The turn itself (its stages) is in `turn`; this module owns
//! what goes in and out of it, the agent's budget check, and the turn's detached task.

use serde_json::{json, Value};

use super::answer::{ChatAnswer, ChatInput, ChatStart, Sink};
use super::budget::check_budget;
use super::context::Asked;
use super::stream::Emitter;
use super::{blocking, AgentError, Agents, Cmd, Key, Result};
use crate::error::Classify;
use crate::principal::Principal;
use crate::store::agents::Conversation;
use crate::store::Scope;

fn system_principal(key: &Key) -> Principal {
    Principal {
        tenant_id: key.0.clone(),
        key_id: None,
        scopes: vec![Scope::Read, Scope::Write],
    }
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
        self.inner.supervisor.spawn(async move {
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
