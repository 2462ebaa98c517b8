//! Stage 3, generative: the main route's model writes the answer from the numbered passages,
//! the conversation summary and the recent history that fits its budget. Also the one way
//! the agent makes a short model call (rewrites, summaries).

use std::time::Instant;

use serde_json::json;

use super::cite::{self, Source};
use super::context::{Ctx, Draft};
use super::{AgentConfig, AgentError, Agents, Result};
use crate::gateway::types::{ChatRequest, Message, Role, Stop, Usage};
use crate::gateway::{CallContext, ChatReply, StreamEvent};
use crate::store::agents::{Conversation, MessageRecord, MessageRole};

const RULES: &str = "Answer the question using only the numbered sources below. \
Cite the source of each statement with its number in brackets, like [1]. \
If the sources do not contain the answer, say you could not find it. Be brief.";

/// Streams the answer from the main route. With `live`, each piece goes to the client as it
/// comes; without (strict answers, checked before they are shown), nothing is sent here.
pub(super) async fn run(
    ctx: &mut Ctx<'_>,
    history: &[MessageRecord],
    sources: &[Source],
    message: &str,
    live: bool,
) -> Result<Draft> {
    ctx.sink.emit("status", json!({"stage": "generating"}));
    let messages = prompt(&ctx.config, &ctx.conversation, history, sources, message);
    let req = ChatRequest {
        model: ctx.config.main_route.clone(),
        messages,
        temperature: Some(ctx.config.temperature as f32),
        top_p: None,
        max_tokens: Some(ctx.config.max_answer_tokens),
        max_completion_tokens: None,
        stop: None,
        seed: None,
        stream: true,
        stream_options: None,
        user: None,
        n: None,
    };
    let mut draft = Draft::default();
    let t_call = Instant::now();
    let mut first_at: Option<Instant> = None;
    // Tokens in the first piece (a guardrail window releases several at once).
    let mut first_tokens = 0u32;
    let (mut events, _) = ctx
        .agents
        .inner
        .gateway
        .chat(ctx.call.clone(), req)
        .await?
        .into_events();
    let stop = ctx.sink.stop_token();
    loop {
        // Stopping drops the upstream stream (its connection closes: the model stops).
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = stop.cancelled() => {
                draft.stopped = true;
                break;
            }
        };
        let Some(ev) = ev else { break };
        match ev {
            StreamEvent::Text(text) => {
                if first_at.is_none() {
                    first_at = Some(Instant::now());
                    first_tokens = cite::estimate_tokens(&text) as u32;
                    draft.first_token_ms = ctx.elapsed_ms();
                    draft.model_ttft_ms = t_call.elapsed().as_secs_f64() * 1e3;
                }
                draft.text.push_str(&text);
                if live {
                    ctx.delta(text);
                }
            }
            StreamEvent::Done {
                usage: u, cost_usd, ..
            } => {
                ctx.spend(u, cost_usd);
                if let Some(f) = first_at {
                    let secs = f.elapsed().as_secs_f64();
                    let after_first = u.completion_tokens.saturating_sub(first_tokens.max(1));
                    if after_first > 0 && secs > 0.0 {
                        draft.tokens_per_s = Some(after_first as f64 / secs);
                    }
                }
            }
            StreamEvent::Error(e) => return Err(e.into()),
        }
    }
    Ok(draft)
}

/// One short call on a route; returns the text, usage and cost.
pub(super) async fn quick_call(
    agents: &Agents,
    ctx: &CallContext,
    route: &str,
    messages: Vec<Message>,
    max_tokens: u32,
    stop: Option<Stop>,
) -> Result<(String, Usage, f64)> {
    let req = ChatRequest {
        model: route.to_owned(),
        messages,
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(max_tokens),
        max_completion_tokens: None,
        stop,
        seed: None,
        stream: false,
        stream_options: None,
        user: None,
        n: None,
    };
    let mut ctx = ctx.clone();
    ctx.request_id = uuid::Uuid::now_v7().to_string();
    match agents.inner.gateway.chat(ctx, req).await? {
        ChatReply::Complete { output, .. } => Ok((output.text, output.usage, output.cost_usd)),
        ChatReply::Stream { .. } => Err(AgentError::Unavailable("unexpected streamed answer")),
    }
}

pub(super) fn msg(role: Role, content: String) -> Message {
    Message {
        role,
        content,
        name: None,
    }
}

/// The answer prompt: instructions and numbered sources, the summary, the recent history
/// within its budget, the question.
fn prompt(
    config: &AgentConfig,
    conversation: &Conversation,
    history: &[MessageRecord],
    sources: &[Source],
    message: &str,
) -> Vec<Message> {
    // The sources sit next to the question: small local models lose track of a long
    // system message.
    let mut system = format!("{}\n{}", config.system_prompt.trim(), RULES);
    if !conversation.summary.is_empty() {
        system.push_str(&format!(
            "\n\nEarlier in this conversation: {}",
            conversation.summary
        ));
    }
    let mut recent: Vec<Message> = Vec::new();
    let mut budget = config.history_tokens;
    for m in history.iter().rev() {
        let tokens = cite::estimate_tokens(&m.content) + 4;
        if tokens > budget {
            break;
        }
        budget -= tokens;
        let role = if m.role == MessageRole::User {
            Role::User
        } else {
            Role::Assistant
        };
        recent.push(msg(role, m.content.clone()));
    }
    recent.reverse();
    // The history must start with a question.
    while recent.first().is_some_and(|m| m.role != Role::User) {
        recent.remove(0);
    }
    let mut out = vec![msg(Role::System, system)];
    out.extend(recent);
    out.push(msg(
        Role::User,
        format!(
            "Sources:\n{}\n\nQuestion: {message}",
            cite::sources_block(sources)
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::Value;

    #[test]
    fn prompts_keep_recent_history_within_budget() {
        let conv = Conversation {
            id: "c".into(),
            agent_id: "a".into(),
            title: "t".into(),
            summary: "The user asked about backups.".into(),
            summary_upto: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let m = |id: i64, role: &str, text: &str| MessageRecord {
            id,
            conversation_id: "c".into(),
            role: MessageRole::parse(role).expect("a role"),
            content: text.into(),
            citations: Value::Null,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            meta: Value::Null,
            created_at: Utc::now(),
        };
        let history = vec![
            m(1, "user", &"old question ".repeat(50)),
            m(2, "assistant", "old answer"),
            m(3, "user", "When is the backup?"),
            m(4, "assistant", "At 02:00 [1]."),
        ];
        let config = AgentConfig {
            history_tokens: 40,
            ..AgentConfig::default()
        };
        let out = prompt(&config, &conv, &history, &[], "Where is it stored?");
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0]
            .content
            .contains("Earlier in this conversation: The user asked"));
        assert_eq!(out[1].content, "When is the backup?");
        assert!(out[3].content.ends_with("Question: Where is it stored?"));
    }
}
