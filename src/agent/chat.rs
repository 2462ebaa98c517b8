//! One chat turn: rewrite a follow-up into a standalone question (fast route), retrieve
//! passages from the agent's knowledge bases (hybrid by default, cosine floor `min_score`),
//! number them into the prompt with the history that fits its token budget (older turns live
//! in a running summary), stream the answer from the main route, check its citations, store
//! both messages. With nothing relevant retrieved the agent says so without calling a model.

use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cite::{self, Citation, Dropped, Source};
use super::stream::{Emitter, Reader};
use super::{blocking, AgentConfig, AgentError, AgentEvent, Agents, Cmd, Key, Result};
use crate::gateway::types::{ChatRequest, Message, Role, Stop, Usage};
use crate::gateway::{CallContext, ChatReply, StreamEvent};
use crate::service::{Principal, SearchParams};
use crate::store::agents::{Conversation, MessageRecord, NewMessage, NewTask};
use crate::store::Scope;

/// What the agent answers when no passage is relevant enough.
pub const NOT_FOUND: &str =
    "I could not find anything about this in the knowledge base, so I cannot answer it from the documents.";

const RULES: &str = "Answer the question using only the numbered sources below. \
Cite the source of each statement with its number in brackets, like [1]. \
If the sources do not contain the answer, say you could not find it. Be brief.";

/// `POST /v1/agents/{id}/chat`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    /// The question.
    pub message: String,
    /// Continue this conversation (a new one when absent).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
}

/// Where the time of a turn went, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// Rewriting the follow-up (0 for a first question).
    pub rewrite_ms: f64,
    /// Searching the knowledge bases.
    pub retrieval_ms: f64,
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
    /// True when relevant passages were found.
    pub found: bool,
    /// The passages in the prompt.
    pub sources: Vec<Source>,
    /// Checked citations.
    pub citations: Vec<Citation>,
    /// Citations the answer made that failed their check.
    pub dropped_citations: Vec<Dropped>,
    /// Tokens of the turn's model calls.
    pub usage: Usage,
    /// Cost of the turn's model calls, USD.
    pub cost_usd: f64,
    /// Where the time went.
    pub timings: Timings,
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

struct Sink {
    emitter: Option<Emitter>,
}

impl Sink {
    fn emit(&mut self, name: &str, data: Value) {
        if let Some(e) = &mut self.emitter {
            e.emit(name, &data);
        }
    }
}

/// Refuses a turn once the agent's spend in the budget's window reached the limit. Checked
/// under the turn lock (turns of an agent run one at a time, each sees the cost of the one
/// before, so the limit is exceeded by at most one turn); `chat` also checks before it opens
/// a stream, so that a spent agent answers HTTP 429 rather than an error event.
async fn check_budget(agents: &Agents, key: &Key, config: &AgentConfig) -> Result<()> {
    let Some(b) = config.budget else {
        return Ok(());
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
    Ok(())
}

impl Agents {
    /// Answers a question (whole, or streamed as resumable events).
    pub async fn chat(&self, p: &Principal, id: &str, input: ChatInput) -> Result<ChatStart> {
        p.require(Scope::Write)?;
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
        if !input.stream {
            let answer = turn(self, &key, p, message, conversation, &stream_id, None).await?;
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
            let _ = turn(
                &agents,
                &key,
                &p,
                message,
                conversation,
                &sid,
                Some(emitter),
            )
            .await;
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
    let a = turn(agents, key, &p, message, conversation, &sid, None).await?;
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
    message: String,
    conversation: Option<Conversation>,
    stream_id: &str,
    emitter: Option<Emitter>,
) -> Result<ChatAnswer> {
    let mut sink = Sink { emitter };
    let r = run_turn(agents, key, p, message, conversation, stream_id, &mut sink).await;
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

async fn run_turn(
    agents: &Agents,
    key: &Key,
    p: &Principal,
    message: String,
    conversation: Option<Conversation>,
    stream_id: &str,
    sink: &mut Sink,
) -> Result<ChatAnswer> {
    let started = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let handle = agents.handle(key)?;
    let _turn = handle.turn.clone().lock_owned().await;
    let config = agents.call(key, Cmd::Get).await?.config;
    check_budget(agents, key, &config).await?;
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    let conversation = match conversation {
        Some(c) => c,
        None => {
            let title: String = message.chars().take(80).collect();
            let store = store.clone();
            let (t, a) = (t.clone(), a.clone());
            blocking(move || store.create_conversation(&t, &a, &title)).await?
        }
    };
    let history = {
        let (store, t, a, c, after) = (
            store.clone(),
            t.clone(),
            a.clone(),
            conversation.id.clone(),
            conversation.summary_upto,
        );
        blocking(move || store.messages(&t, &a, &c, after, 1000)).await?
    };
    let question = agents
        .append(
            key,
            NewMessage {
                conversation_id: conversation.id.clone(),
                role: "user".into(),
                content: message.clone(),
                meta: json!({"stream_id": stream_id}),
                ..NewMessage::default()
            },
        )
        .await?;
    sink.emit(
        "meta",
        json!({"conversation_id": conversation.id, "stream_id": stream_id,
               "question_id": question.id, "agent_id": key.1}),
    );
    let ctx = CallContext {
        request_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: t.clone(),
        key_id: p.key_id.clone().unwrap_or_else(|| "demo".into()),
        user: None,
        agent: Some(a.clone()),
        ..CallContext::default()
    };
    let mut usage = Usage::default();
    let mut cost = 0.0;

    // (a) A follow-up becomes a standalone question. It is also searched as the last question
    // joined with this one (b), so a weak or failed rewrite cannot lose the context.
    let t_rewrite = Instant::now();
    let joined = history
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|last| format!("{} {message}", last.content));
    let mut queries = vec![message.clone()];
    let mut rewrite_ms = 0.0;
    if let Some(joined) = joined {
        sink.emit("status", json!({"stage": "rewriting"}));
        let rewritten = match rewrite(agents, &ctx, &config, &conversation, &history, &message)
            .await
        {
            Ok((q, u, c)) => {
                usage = add(usage, u);
                cost += c;
                q
            }
            Err(e) => {
                tracing::warn!(agent = %a, error = %e, "follow-up not rewritten; using the history");
                None
            }
        };
        rewrite_ms = ms(t_rewrite);
        queries = match rewritten {
            Some(q) => vec![q, joined],
            None => vec![joined],
        };
    }
    let query = queries[0].clone();

    // (b) Retrieval over every query, results merged.
    sink.emit("status", json!({"stage": "retrieving"}));
    let t_retrieval = Instant::now();
    let sources = retrieve(agents, p, &config, &queries).await?;
    let retrieval_ms = ms(t_retrieval);
    sink.emit("sources", json!({"query": query, "sources": sources}));

    // (c, d) The answer.
    let mut answer = String::new();
    let (mut first_token_ms, mut model_ttft_ms, mut tokens_per_s) = (0.0, 0.0, None);
    let found = !sources.is_empty();
    if !found {
        answer.push_str(NOT_FOUND);
        first_token_ms = ms(started);
        sink.emit("delta", json!({"text": answer}));
        agents.publish(
            key,
            AgentEvent::Delta {
                stream_id: stream_id.to_owned(),
                conversation_id: conversation.id.clone(),
                text: answer.clone(),
            },
        );
    } else {
        sink.emit("status", json!({"stage": "generating"}));
        let messages = prompt(&config, &conversation, &history, &sources, &message);
        let req = ChatRequest {
            model: config.main_route.clone(),
            messages,
            temperature: Some(config.temperature),
            top_p: None,
            max_tokens: Some(config.max_answer_tokens),
            max_completion_tokens: None,
            stop: None,
            seed: None,
            stream: true,
            stream_options: None,
            user: None,
            n: None,
        };
        let t_call = Instant::now();
        let mut first_at: Option<Instant> = None;
        // Tokens in the first piece (a guardrail window releases several at once).
        let mut first_tokens = 0u32;
        let (mut events, _) = agents
            .inner
            .service
            .gateway()
            .chat(ctx.clone(), req)
            .await?
            .into_events();
        while let Some(ev) = events.next().await {
            match ev {
                StreamEvent::Text(text) => {
                    if first_at.is_none() {
                        first_at = Some(Instant::now());
                        first_tokens = cite::estimate_tokens(&text) as u32;
                        first_token_ms = ms(started);
                        model_ttft_ms = ms(t_call);
                    }
                    answer.push_str(&text);
                    sink.emit("delta", json!({"text": text}));
                    agents.publish(
                        key,
                        AgentEvent::Delta {
                            stream_id: stream_id.to_owned(),
                            conversation_id: conversation.id.clone(),
                            text,
                        },
                    );
                }
                StreamEvent::Done {
                    usage: u, cost_usd, ..
                } => {
                    usage = add(usage, u);
                    cost += cost_usd;
                    if let Some(f) = first_at {
                        let secs = f.elapsed().as_secs_f64();
                        let after_first = u.completion_tokens.saturating_sub(first_tokens.max(1));
                        if after_first > 0 && secs > 0.0 {
                            tokens_per_s = Some(after_first as f64 / secs);
                        }
                    }
                }
                StreamEvent::Error(e) => return Err(e.into()),
            }
        }
    }

    // (e) Citations, checked.
    let (citations, dropped) = if found {
        cite::verify(&answer, &sources)
    } else {
        (Vec::new(), Vec::new())
    };
    sink.emit(
        "citations",
        json!({"citations": citations, "dropped": dropped}),
    );
    let timings = Timings {
        rewrite_ms,
        retrieval_ms,
        first_token_ms,
        model_ttft_ms,
        tokens_per_s,
        total_ms: ms(started),
    };
    let compact: Vec<Value> = sources
        .iter()
        .map(|s| {
            json!({"n": s.n, "chunk_id": s.chunk_id, "document_id": s.document_id,
                   "document_name": s.document_name, "page": s.page, "similarity": s.similarity})
        })
        .collect();
    let stored = agents
        .append(
            key,
            NewMessage {
                conversation_id: conversation.id.clone(),
                role: "assistant".into(),
                content: answer.trim().to_owned(),
                citations: serde_json::to_value(&citations).unwrap_or_default(),
                tokens_in: usage.prompt_tokens,
                tokens_out: usage.completion_tokens,
                cost_usd: cost,
                meta: json!({"stream_id": stream_id, "query": query, "found": found,
                             "sources": compact, "dropped_citations": dropped,
                             "timings": timings}),
            },
        )
        .await?;
    tracing::info!(agent = %a, conversation = %conversation.id, found, sources = sources.len(),
        citations = citations.len(), dropped = dropped.len(), rewrite_ms, retrieval_ms,
        first_token_ms, total_ms = timings.total_ms, "chat turn");
    maybe_summarize(
        agents,
        key,
        &config,
        &conversation,
        &history,
        &question,
        &stored,
    )
    .await;
    Ok(ChatAnswer {
        conversation_id: conversation.id,
        stream_id: stream_id.to_owned(),
        question,
        message: stored,
        query,
        found,
        sources,
        citations,
        dropped_citations: dropped,
        usage,
        cost_usd: cost,
        timings,
    })
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage::new(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
    )
}

/// One short call on a route; returns the text, usage and cost.
async fn quick_call(
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
    match agents.inner.service.gateway().chat(ctx, req).await? {
        ChatReply::Complete { output, .. } => Ok((output.text, output.usage, output.cost_usd)),
        ChatReply::Stream { .. } => Err(AgentError::Unavailable("unexpected streamed answer")),
    }
}

fn msg(role: Role, content: String) -> Message {
    Message {
        role,
        content,
        name: None,
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// The fast route's standalone version of a follow-up question, if it gave a usable one.
async fn rewrite(
    agents: &Agents,
    ctx: &CallContext,
    config: &AgentConfig,
    conversation: &Conversation,
    history: &[MessageRecord],
    message: &str,
) -> Result<(Option<String>, Usage, f64)> {
    let mut transcript = String::new();
    if !conversation.summary.is_empty() {
        transcript.push_str(&format!("Summary: {}\n", clip(&conversation.summary, 600)));
    }
    // The last exchange is what a follow-up refers to; a short prompt keeps a local model fast.
    for m in history.iter().rev().take(2).rev() {
        let who = if m.role == "user" {
            "User"
        } else {
            "Assistant"
        };
        transcript.push_str(&format!("{who}: {}\n", clip(&m.content, 240)));
    }
    let messages = vec![
        msg(
            Role::System,
            "Rewrite the user's last question so that it can be understood without the conversation. \
             Keep every name and detail it refers to. Reply with the rewritten question only."
                .into(),
        ),
        msg(
            Role::User,
            format!("Conversation:\n{transcript}\nLast question: {message}\n\nStandalone question:"),
        ),
    ];
    // One line is a question; stopping there saves decoding a model's rambling.
    let stop = Some(Stop::One("\n".into()));
    let (text, usage, cost) =
        quick_call(agents, ctx, &config.fast_route, messages, 48, stop).await?;
    // A model that answered instead of rewriting (small ones do) gives no question: `None`.
    Ok((clean_rewrite(&text), usage, cost))
}

/// The first line of a rewrite without labels or quotes; `None` when unusable.
fn clean_rewrite(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut q = line;
    for prefix in ["Standalone question:", "Rewritten question:", "Question:"] {
        if let Some(rest) = q.strip_prefix(prefix) {
            q = rest.trim();
        }
    }
    let q = q.trim_matches(|c| c == '"' || c == '\'' || c == '`').trim();
    (q.len() >= 3 && q.len() <= 400 && q.ends_with('?')).then(|| q.to_owned())
}

/// Searches every knowledge base of the agent with each query, keeps passages at or above
/// `min_score` (best similarity over the queries), best first, trims them to the context
/// budget, and drops any carrying injected instructions.
async fn retrieve(
    agents: &Agents,
    p: &Principal,
    config: &AgentConfig,
    queries: &[String],
) -> Result<Vec<Source>> {
    use crate::service::SearchHit;
    let service = agents.inner.service.clone();
    let (p2, cfg, qs) = (p.clone(), config.clone(), queries.to_vec());
    let hits = tokio::task::spawn_blocking(move || -> Result<Vec<(String, SearchHit)>> {
        let kbs: Vec<String> = if cfg.knowledge_bases.is_empty() {
            service
                .list_kbs(&p2)?
                .into_iter()
                .map(|k| k.kb.id)
                .collect()
        } else {
            cfg.knowledge_bases.clone()
        };
        let mut all = Vec::new();
        for kb in &kbs {
            for q in &qs {
                let params = SearchParams {
                    query: q.clone(),
                    top_k: Some(cfg.top_k * 2),
                    mode: cfg.mode,
                    ..SearchParams::default()
                };
                let (kb_id, hits) = service.search(&p2, kb, &params)?;
                all.extend(hits.into_iter().map(|h| (kb_id.clone(), h)));
            }
        }
        Ok(all)
    })
    .await
    .map_err(|_| AgentError::Unavailable("stopping"))??;
    let rank = |h: &SearchHit| h.similarity.unwrap_or(h.score);
    // One entry per chunk, with its best similarity over the queries.
    let mut best: std::collections::HashMap<u64, (String, SearchHit)> =
        std::collections::HashMap::new();
    for (kb_id, h) in hits {
        if h.similarity.is_some_and(|s| s < config.min_score) {
            continue;
        }
        match best.get(&h.chunk.id) {
            Some((_, b)) if rank(b) >= rank(&h) => {}
            _ => {
                best.insert(h.chunk.id, (kb_id, h));
            }
        }
    }
    let mut hits: Vec<(String, SearchHit)> = best.into_values().collect();
    hits.sort_by(|a, b| {
        rank(&b.1)
            .total_cmp(&rank(&a.1))
            .then(a.1.chunk.id.cmp(&b.1.chunk.id))
    });
    let guard = agents.inner.service.gateway().guardrails();
    let mut picked = Vec::new();
    for (kb_id, h) in hits {
        let injected = guard.injection_phrases(&h.chunk.text);
        if !injected.is_empty() {
            tracing::warn!(chunk = h.chunk.id, document = %h.chunk.document_name, phrases = ?injected,
                "passage with instruction-like text left out of the prompt");
            metrics::counter!("groundwork_agent_passages_dropped_total", "reason" => "injection")
                .increment(1);
            continue;
        }
        picked.push((kb_id, h));
        if picked.len() == config.top_k {
            break;
        }
    }
    let per = (config.context_tokens / picked.len().max(1)).max(24);
    let query = queries.join(" ");
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(i, (kb_id, h))| Source {
            n: i + 1,
            chunk_id: h.chunk.id,
            document_id: h.chunk.document_id.clone(),
            document_name: h.chunk.document_name.clone(),
            kb_id,
            page: h.chunk.page_start,
            page_end: h.chunk.page_end,
            heading_path: h.chunk.heading_path.clone(),
            similarity: h.similarity,
            excerpt: cite::excerpt(&h.chunk.text, &query, per),
            text: h.chunk.text,
        })
        .collect())
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
        let role = if m.role == "user" {
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

/// Queues a summary when the unsummarised history outgrew its budget.
async fn maybe_summarize(
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
        let who = if m.role == "user" {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_are_cleaned() {
        assert_eq!(
            clean_rewrite("\n Standalone question: \"When does the backup run?\"\nextra")
                .as_deref(),
            Some("When does the backup run?")
        );
        assert_eq!(clean_rewrite("  "), None);
        assert_eq!(clean_rewrite("ok"), None);
        assert_eq!(clean_rewrite("You can upload a file."), None);
    }

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
            role: role.into(),
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
