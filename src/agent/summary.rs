//! Conversation summaries: when the unsummarised history outgrows its budget a `summarize`
//! task folds the older turns into a running summary (fast route), which prompts carry instead.

use chrono::Utc;
use serde_json::{json, Value};

use super::cite;
use super::generate::{msg, quick_call};
use super::{blocking, AgentConfig, Agents, Cmd, Key, Result};
use crate::gateway::types::Role;
use crate::gateway::CallContext;
use crate::store::agents::{Conversation, MessageRecord, MessageRole, NewTask};

pub(super) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// Queues a summary when the unsummarised history outgrew its budget.
pub(super) async fn maybe_summarize(
    agents: &Agents,
    key: &Key,
    config: &AgentConfig,
    conversation: &Conversation,
    history: &[MessageRecord],
    question: &MessageRecord,
    answer: &MessageRecord,
) {
    let tokens: usize = history
        .iter()
        .chain([question, answer])
        .map(|m| cite::estimate_tokens(&m.content) + 4)
        .sum();
    if tokens <= config.history_tokens {
        return;
    }
    let task = NewTask {
        tenant_id: key.0.clone(),
        agent_id: key.1.clone(),
        kind: "summarize".into(),
        payload: json!({"conversation_id": conversation.id}),
        max_attempts: agents.inner.config.task_max_attempts,
        run_at: Utc::now(),
        schedule_id: None,
    };
    let store = agents.inner.store.clone();
    match blocking(move || store.enqueue_task(&task)).await {
        Ok(_) => agents.wake(key).await,
        Err(e) => tracing::warn!(agent = %key.1, error = %e, "could not queue a summary"),
    }
}

/// Folds all but the last four messages after the summary into the summary (fast route).
pub(super) async fn summarize(agents: &Agents, key: &Key, conversation_id: &str) -> Result<Value> {
    let store = agents.inner.store.clone();
    let (t, a, c) = (key.0.clone(), key.1.clone(), conversation_id.to_owned());
    let (conv, msgs) = blocking(move || {
        let conv = store.conversation(&t, &a, &c)?;
        let msgs = store.messages(&t, &a, &c, conv.summary_upto, 1000)?;
        Ok((conv, msgs))
    })
    .await?;
    if msgs.len() <= 4 {
        return Ok(json!({"folded": 0}));
    }
    let fold = &msgs[..msgs.len() - 4];
    let config = agents.call(key, Cmd::Get).await?.config;
    let mut text = String::new();
    if !conv.summary.is_empty() {
        text.push_str(&format!("Summary so far: {}\n", conv.summary));
    }
    for m in fold {
        let who = if m.role == MessageRole::User {
            "User"
        } else {
            "Assistant"
        };
        text.push_str(&format!("{who}: {}\n", clip(&m.content, 800)));
    }
    let ctx = CallContext {
        request_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: key.0.clone(),
        key_id: "agent".into(),
        agent: Some(key.1.clone()),
        ..CallContext::default()
    };
    let messages = vec![
        msg(
            Role::System,
            "Summarize the conversation in at most 80 words. Keep the facts, names and numbers \
             the user may refer to later."
                .into(),
        ),
        msg(Role::User, text),
    ];
    let (summary, _, _) = quick_call(agents, &ctx, &config.fast_route, messages, 160, None).await?;
    let summary = clip(summary.trim(), 2000);
    let upto = fold[fold.len() - 1].id;
    let store = agents.inner.store.clone();
    let (t, a, c, s) = (
        key.0.clone(),
        key.1.clone(),
        conversation_id.to_owned(),
        summary.clone(),
    );
    blocking(move || store.set_summary(&t, &a, &c, &s, upto)).await?;
    Ok(json!({"folded": fold.len(), "summary_upto": upto, "summary": summary}))
}
