//! Stage 2 of a turn: search every knowledge base of the agent with each query and keep the
//! best passages — by similarity, or in the order of the agent's reranker — numbered as the
//! answer will cite them.

use super::cite::{self, Source};
use super::knowledge::Passage;
use super::{AgentConfig, AgentError, Agents, Result};
use crate::gateway::CallContext;
use crate::principal::Principal;

/// Searches every knowledge base of the agent with each query, keeps passages at or above
/// `min_score` (best similarity over the queries), best first (or as the agent's reranker
/// orders them for `queries[0]`, called as `call`), trims them to the context budget, and
/// drops any carrying injected instructions.
pub(super) async fn retrieve(
    agents: &Agents,
    p: &Principal,
    config: &AgentConfig,
    queries: &[String],
    call: &CallContext,
) -> Result<Vec<Source>> {
    let knowledge = agents.inner.knowledge.clone();
    let (p2, cfg, qs) = (p.clone(), config.clone(), queries.to_vec());
    let hits = tokio::task::spawn_blocking(move || -> Result<Vec<Passage>> {
        let kbs: Vec<String> = if cfg.knowledge_bases.is_empty() {
            knowledge
                .knowledge_bases(&p2)?
                .into_iter()
                .map(|k| k.id)
                .collect()
        } else {
            cfg.knowledge_bases.clone()
        };
        let per = if cfg.rerank.is_some() {
            (cfg.top_k * 2).max(cfg.rerank_candidates)
        } else {
            cfg.top_k * 2
        };
        let mut all = Vec::new();
        for kb in &kbs {
            for q in &qs {
                all.extend(knowledge.search(&p2, kb, q, per, cfg.mode)?);
            }
        }
        Ok(all)
    })
    .await
    .map_err(|_| AgentError::Unavailable("stopping"))??;
    let rank = |h: &Passage| h.similarity.unwrap_or(h.score);
    // One entry per chunk, with its best similarity over the queries.
    let mut best: std::collections::HashMap<u64, Passage> = std::collections::HashMap::new();
    for h in hits {
        if h.similarity
            .is_some_and(|s| f64::from(s) < config.min_score)
        {
            continue;
        }
        match best.get(&h.chunk.id) {
            Some(b) if rank(b) >= rank(&h) => {}
            _ => {
                best.insert(h.chunk.id, h);
            }
        }
    }
    let mut hits: Vec<Passage> = best.into_values().collect();
    hits.sort_by(|a, b| {
        rank(b)
            .total_cmp(&rank(a))
            .then(a.chunk.id.cmp(&b.chunk.id))
    });
    if let (Some(model), Some(question)) = (&config.rerank, queries.first()) {
        hits.truncate(config.rerank_candidates);
        hits = rerank(agents, call, model, question, hits).await;
    }
    let guard = agents.inner.gateway.guardrails();
    let mut picked = Vec::new();
    for h in hits {
        let injected = guard.injection_phrases(&h.chunk.text);
        if !injected.is_empty() {
            tracing::warn!(chunk = h.chunk.id, document = %h.chunk.document_name, phrases = ?injected,
                "passage with instruction-like text left out of the prompt");
            metrics::counter!("groundwork_agent_passages_dropped_total", "reason" => "injection")
                .increment(1);
            continue;
        }
        picked.push(h);
        if picked.len() == config.top_k {
            break;
        }
    }
    let per = (config.context_tokens / picked.len().max(1)).max(24);
    let query = queries.join(" ");
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(i, h)| Source {
            n: i + 1,
            chunk_id: h.chunk.id,
            document_id: h.chunk.document_id.clone(),
            document_name: h.chunk.document_name.clone(),
            kb_id: h.kb_id,
            page: h.chunk.page_start,
            page_end: h.chunk.page_end,
            heading_path: h.chunk.heading_path.clone(),
            similarity: h.similarity,
            excerpt: cite::excerpt(&h.chunk.text, &query, per),
            text: h.chunk.text,
            table_header: h.chunk.context,
        })
        .collect())
}

/// `hits` in the reranker's order; in their own order if it fails (the turn goes on).
async fn rerank(
    agents: &Agents,
    call: &CallContext,
    model: &str,
    question: &str,
    hits: Vec<Passage>,
) -> Vec<Passage> {
    if hits.is_empty() {
        return hits;
    }
    let texts = hits.iter().map(|h| h.chunk.text.clone()).collect();
    let ctx = CallContext {
        request_id: uuid::Uuid::now_v7().to_string(),
        ..call.clone()
    };
    match agents
        .inner
        .gateway
        .rerank(ctx, model, question, texts, None)
        .await
    {
        Ok(out) => out.order(hits).into_iter().map(|(h, _)| h).collect(),
        Err(e) => {
            tracing::warn!(error = %e, model, "rerank failed; passages keep their similarity order");
            metrics::counter!("groundwork_rerank_failures_total").increment(1);
            hits
        }
    }
}
