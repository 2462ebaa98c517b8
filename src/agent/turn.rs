//! One chat turn, top to bottom: open (conversation, history, the stored question) → rewrite
//! (a follow-up becomes standalone) → retrieve (numbered passages) → ground (the passages'
//! units embedded; how well the best one answers the question) → compose (extractive) or
//! generate (model) → verify (each generated sentence against the passages) → store (the
//! answer with its citations and claims). Each stage is its own module; the data between them
//! are the named types below.

use std::time::Instant;

use serde_json::{json, Value};

use super::answer::{ChatAnswer, Sink, Timings, NOT_FOUND};
use super::cite::{self, Citation, Dropped, Source};
use super::config::AnswerMode;
use super::context::{Asked, Ctx, Draft, Query};
use super::evidence::Evidence;
use super::extract::{self, Composition};
use super::verify::{self, Claim};
use super::{blocking, generate, retrieve, rewrite, summary};
use super::{AgentConfig, Agents, Cmd, Key, Result};
use crate::gateway::types::Usage;
use crate::gateway::CallContext;
use crate::principal::Principal;
use crate::store::agents::{Conversation, MessageRecord, MessageRole, NewMessage};

/// Stage 4's output: the answer as stored, with what holds it up.
struct Checked {
    text: String,
    citations: Vec<Citation>,
    dropped: Vec<Dropped>,
    claims: Vec<Claim>,
    grounded_share: f32,
}

/// The mode a turn answers in: `auto` is extractive on a local main route.
fn resolve(mode: AnswerMode, agents: &Agents, config: &AgentConfig) -> AnswerMode {
    match mode {
        AnswerMode::Auto => {
            if agents.inner.gateway.route_is_local(&config.main_route) {
                AnswerMode::Extractive
            } else {
                AnswerMode::Generative
            }
        }
        m => m,
    }
}

/// Runs one turn under the agent's turn lock.
pub(super) async fn run(
    agents: &Agents,
    key: &Key,
    p: &Principal,
    asked: Asked,
    stream_id: &str,
    sink: &mut Sink,
) -> Result<ChatAnswer> {
    let Asked {
        message,
        mode,
        conversation,
    } = asked;
    let started = Instant::now();
    let handle = agents.handle(key).await?;
    let _turn = handle.turn.clone().lock_owned().await;
    let config = agents.call(key, Cmd::Get).await?.config;
    let spend_cap_usd = super::budget::check_budget(agents, key, &config).await?;
    let (conversation, history, question) =
        open(agents, key, &message, conversation, stream_id).await?;
    sink.emit(
        "meta",
        json!({"conversation_id": conversation.id, "stream_id": stream_id,
               "question_id": question.id, "agent_id": key.1}),
    );
    let mode = resolve(mode.unwrap_or(config.answer_mode), agents, &config);
    let mut ctx = Ctx {
        agents,
        key,
        p,
        call: call_context(key, p, spend_cap_usd),
        config,
        conversation,
        sink,
        stream_id,
        started,
        usage: Usage::default(),
        cost: 0.0,
    };

    let query = rewrite::run(&mut ctx, &history, &message).await;

    ctx.sink.emit("status", json!({"stage": "retrieving"}));
    let t_retrieval = Instant::now();
    let sources = retrieve::retrieve(agents, p, &ctx.config, &query.queries, &ctx.call).await?;
    let retrieval_ms = ms(t_retrieval);
    ctx.sink.emit(
        "sources",
        json!({"query": query.text, "sources": sources, "mode": mode}),
    );

    let t_ground = Instant::now();
    let (evidence, composition) = ground(&ctx, &sources, &query.text).await?;
    let found = !sources.is_empty() && f64::from(composition.support) >= ctx.config.min_support;
    let mut grounding_ms = ms(t_ground);

    // Stopped while searching: no answer is made (and no model is called).
    let draft = if ctx.sink.stop_token().is_cancelled() {
        Draft {
            stopped: true,
            first_token_ms: ctx.elapsed_ms(),
            ..Draft::default()
        }
    } else if !found {
        ctx.delta(NOT_FOUND.to_owned());
        Draft {
            text: NOT_FOUND.to_owned(),
            first_token_ms: ctx.elapsed_ms(),
            ..Draft::default()
        }
    } else if mode == AnswerMode::Extractive {
        compose(&mut ctx, &sources, &composition)
    } else {
        let live = !ctx.config.strict;
        generate::run(&mut ctx, &history, &sources, &message, live).await?
    };

    let t_verify = Instant::now();
    let checked = check(
        &mut ctx,
        &sources,
        evidence.as_ref().filter(|_| found),
        &draft,
    )
    .await?;
    grounding_ms += ms(t_verify);
    let timings = Timings {
        rewrite_ms: query.rewrite_ms,
        retrieval_ms,
        grounding_ms,
        first_token_ms: draft.first_token_ms,
        model_ttft_ms: draft.model_ttft_ms,
        tokens_per_s: draft.tokens_per_s,
        total_ms: ms(started),
    };
    let answer = Answered {
        query,
        found,
        mode,
        support: composition.support,
        features: composition.features,
        sources,
        checked,
        timings,
        stopped: draft.stopped,
    };
    store(ctx, &history, question, answer).await
}

/// The gateway call context of a turn: the agent's tenant, the caller's key, the agent's
/// remaining budget as a cap.
fn call_context(key: &Key, p: &Principal, spend_cap_usd: Option<f64>) -> CallContext {
    CallContext {
        request_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: key.0.clone(),
        key_id: p.key_id.clone().unwrap_or_else(|| "demo".into()),
        user: None,
        agent: Some(key.1.clone()),
        spend_cap_usd,
        ..CallContext::default()
    }
}

/// Verifies the draft against the evidence (an answer that was found), and sends the
/// `citations` event.
async fn check(
    ctx: &mut Ctx<'_>,
    sources: &[Source],
    evidence: Option<&Evidence>,
    draft: &Draft,
) -> Result<Checked> {
    let checked = match evidence {
        Some(ev) => verify_draft(ctx, sources, ev, draft).await?,
        None => Checked {
            text: draft.text.clone(),
            citations: Vec::new(),
            dropped: Vec::new(),
            claims: Vec::new(),
            grounded_share: 1.0,
        },
    };
    ctx.sink.emit(
        "citations",
        json!({"citations": checked.citations, "dropped": checked.dropped,
               "claims": checked.claims, "grounded_share": checked.grounded_share}),
    );
    Ok(checked)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Opens the turn: the conversation (a new one for a first question), its unsummarised
/// history, and the question stored.
async fn open(
    agents: &Agents,
    key: &Key,
    message: &str,
    conversation: Option<Conversation>,
    stream_id: &str,
) -> Result<(Conversation, Vec<MessageRecord>, MessageRecord)> {
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    let conversation = match conversation {
        Some(c) => c,
        None => {
            let title: String = message.chars().take(80).collect();
            let (store, t, a) = (store.clone(), t.clone(), a.clone());
            blocking(move || store.create_conversation(&t, &a, &title)).await?
        }
    };
    let (c, after) = (conversation.id.clone(), conversation.summary_upto);
    let history = blocking(move || store.messages(&t, &a, &c, after, 1000)).await?;
    let question = agents
        .append(
            key,
            NewMessage {
                conversation_id: conversation.id.clone(),
                role: MessageRole::User,
                content: message.to_owned(),
                meta: json!({"stream_id": stream_id}),
                ..NewMessage::default()
            },
        )
        .await?;
    Ok((conversation, history, question))
}

/// Stage "ground": the passages' units embedded with the question, the best ones chosen and
/// how well they answer it.
async fn ground(
    ctx: &Ctx<'_>,
    sources: &[Source],
    question: &str,
) -> Result<(Option<Evidence>, Composition)> {
    if sources.is_empty() {
        return Ok((None, Composition::default()));
    }
    let ev = Evidence::gather(ctx.agents, ctx.p, sources, question).await?;
    let comp = extract::compose(
        question,
        sources,
        &ev.cands,
        &ev.dense,
        &ev.vectors,
        &ctx.agents.inner.config.grounding,
        ctx.config.answer_words,
    );
    Ok((Some(ev), comp))
}

/// Stage "compose": the extractive answer, streamed a unit at a time.
fn compose(ctx: &mut Ctx<'_>, sources: &[Source], comp: &Composition) -> Draft {
    let (text, citations) = extract::render(sources, &comp.picked);
    for (i, part) in text.split("\n\n").enumerate() {
        ctx.delta(if i == 0 {
            part.to_owned()
        } else {
            format!("\n\n{part}")
        });
    }
    Draft {
        text,
        citations: Some(citations),
        first_token_ms: ctx.elapsed_ms(),
        ..Draft::default()
    }
}

/// Stage "verify": extractive answers are their sources' own words; each sentence of a
/// generated answer is checked, and under `strict` the unsupported ones are removed (then
/// the checked answer is sent now, as it was held back while generated).
async fn verify_draft(
    ctx: &mut Ctx<'_>,
    sources: &[Source],
    ev: &Evidence,
    draft: &Draft,
) -> Result<Checked> {
    let text = draft.text.clone();
    if let Some(citations) = &draft.citations {
        let claims: Vec<Claim> = citations
            .iter()
            .map(|c| Claim {
                text: c.quote.clone(),
                start: 0,
                end: 0,
                supported: true,
                n: Some(c.n),
                chunk_id: Some(c.chunk_id),
                support_start: Some(c.quote_start),
                support_end: Some(c.quote_end),
                similarity: 1.0,
                missing: Vec::new(),
            })
            .collect();
        return Ok(Checked {
            text,
            citations: citations.clone(),
            dropped: Vec::new(),
            claims,
            grounded_share: 1.0,
        });
    }
    let sentences = verify::claim_sentences(&text);
    let claim_texts: Vec<String> = sentences.iter().map(|(_, _, t)| t.clone()).collect();
    let sims = ev.similarities(ctx.agents, ctx.p, &claim_texts).await?;
    let threshold = ctx.agents.inner.config.grounding.claim_similarity;
    let claims = verify::check(&sentences, sources, &ev.cands, |j, i| sims[j][i], threshold);
    let grounded_share = verify::grounded_share(&claims);
    let supported_text = verify::without_unsupported(&text, &claims);
    // Citations are made only for supported sentences. Each failed marker keeps its own
    // reason; a marker that would hold but sits on an unsupported sentence is dropped too.
    let (_, mut dropped) = cite::verify(&text, sources);
    let (citations, _) = cite::verify(&supported_text, sources);
    for c in claims.iter().filter(|c| !c.supported) {
        let (held, _) = cite::verify(&text[c.start..c.end], sources);
        for n in held.iter().filter(|h| !h.inferred).map(|h| h.n) {
            dropped.push(Dropped {
                n,
                reason: "claim_unsupported".into(),
            });
        }
    }
    let text = if ctx.config.strict {
        let kept = if supported_text.trim().is_empty() {
            NOT_FOUND.to_owned()
        } else {
            supported_text
        };
        ctx.delta(kept.clone());
        kept
    } else {
        text
    };
    for c in &claims {
        metrics::counter!("groundwork_agent_claims_total",
            "supported" => if c.supported { "true" } else { "false" })
        .increment(1);
    }
    Ok(Checked {
        text,
        citations,
        dropped,
        claims,
        grounded_share,
    })
}

/// Everything a finished turn stores and returns.
struct Answered {
    query: Query,
    found: bool,
    mode: AnswerMode,
    support: f32,
    features: Vec<f32>,
    sources: Vec<Source>,
    checked: Checked,
    timings: Timings,
    stopped: bool,
}

/// Stage "store": the answer message with its citations, claims and timings; a summary
/// queued when the history outgrew its budget.
async fn store(
    ctx: Ctx<'_>,
    history: &[MessageRecord],
    question: MessageRecord,
    a: Answered,
) -> Result<ChatAnswer> {
    let compact: Vec<Value> = a
        .sources
        .iter()
        .map(|s| {
            json!({"n": s.n, "chunk_id": s.chunk_id, "document_id": s.document_id,
                   "document_name": s.document_name, "page": s.page, "similarity": s.similarity})
        })
        .collect();
    let c = &a.checked;
    let stored = ctx
        .agents
        .append(
            ctx.key,
            NewMessage {
                conversation_id: ctx.conversation.id.clone(),
                role: MessageRole::Assistant,
                content: c.text.trim().to_owned(),
                citations: serde_json::to_value(&c.citations).unwrap_or_default(),
                tokens_in: ctx.usage.prompt_tokens,
                tokens_out: ctx.usage.completion_tokens,
                cost_usd: ctx.cost,
                meta: json!({"stream_id": ctx.stream_id, "query": a.query.text, "found": a.found,
                             "mode": a.mode, "support": a.support,
                             "grounded_share": c.grounded_share, "claims": c.claims,
                             "sources": compact, "dropped_citations": c.dropped,
                             "timings": a.timings, "stopped": a.stopped}),
            },
        )
        .await?;
    tracing::info!(agent = %ctx.key.1, conversation = %ctx.conversation.id, found = a.found,
        mode = ?a.mode, support = a.support, sources = a.sources.len(),
        citations = c.citations.len(), dropped = c.dropped.len(),
        grounded_share = c.grounded_share, total_ms = a.timings.total_ms, "chat turn");
    summary::maybe_summarize(
        ctx.agents,
        ctx.key,
        &ctx.config,
        &ctx.conversation,
        history,
        &question,
        &stored,
    )
    .await;
    Ok(ChatAnswer {
        conversation_id: ctx.conversation.id,
        stream_id: ctx.stream_id.to_owned(),
        question,
        message: stored,
        query: a.query.text,
        found: a.found,
        mode: a.mode,
        support: a.support,
        grounded_share: c.grounded_share,
        sources: a.sources,
        citations: a.checked.citations,
        dropped_citations: a.checked.dropped,
        claims: a.checked.claims,
        usage: ctx.usage,
        cost_usd: ctx.cost,
        timings: a.timings,
        stopped: a.stopped,
        features: a.features,
    })
}
