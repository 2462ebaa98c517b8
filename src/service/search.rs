//! Search: a query embedded with the knowledge base's model and matched dense, BM25 or hybrid,
//! with metadata and document filters, then optionally reranked (a cross-encoder or rerank API
//! through the gateway orders the fused candidates); embeddings for callers that rank passages
//! themselves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::index::{Filter, SearchMode, SearchRequest};
use crate::store::{ChunkRecord, Kb, Scope};

use super::{follow, Principal, Result, Service, ServiceError};

/// One search.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// The question.
    pub query: String,
    /// Results wanted (configured default when absent).
    pub top_k: Option<usize>,
    /// Matching mode.
    pub mode: SearchMode,
    /// Only these documents.
    pub document_ids: Option<Vec<String>>,
    /// Only documents whose metadata has these values.
    pub metadata: BTreeMap<String, String>,
    /// Answer from an index that reflects at least this sequence number of the knowledge
    /// base (read-your-writes across replicas: the number a publish returned).
    pub min_seq: Option<u64>,
    /// Whether and how the candidates are reranked.
    pub rerank: Rerank,
}

/// A search's rerank stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Rerank {
    /// As `search.rerank` configures (off when it is not set).
    #[default]
    Default,
    /// Not reranked.
    Off,
    /// With this gateway route (or `provider/model`) over this many candidates (the
    /// configured number when absent).
    With {
        /// The route.
        model: String,
        /// Candidates handed to the reranker.
        candidates: Option<usize>,
    },
}

/// What the rerank stage of a search did.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankReport {
    /// The route asked.
    pub model: String,
    /// Candidates it was given.
    pub candidates: usize,
    /// Whether the results are in its order (else the fused order: it failed).
    pub applied: bool,
    /// Why it failed (`budget_exceeded`, `upstream_error`…).
    pub error: Option<String>,
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The knowledge base searched.
    pub kb_id: String,
    /// The results, best first.
    pub hits: Vec<SearchHit>,
    /// The knowledge base's sequence number the index searched reflected.
    pub index_seq: u64,
    /// The rerank stage, when there was one.
    pub rerank: Option<RerankReport>,
}

/// Longest a search waits for this replica's index to reach its `min_seq`.
const MIN_SEQ_WAIT: Duration = Duration::from_secs(10);

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Score of the mode (cosine for dense, BM25, or fused RRF).
    pub score: f32,
    /// Cosine similarity of the chunk to the query (dense and hybrid searches).
    pub similarity: Option<f32>,
    /// The reranker's relevance (reranked searches).
    pub rerank_score: Option<f32>,
    /// The chunk.
    pub chunk: ChunkRecord,
}

impl Service {
    /// Searches a knowledge base; returns its id and the results, best first.
    pub fn search(&self, p: &Principal, kb: &str, params: &SearchParams) -> Result<Found> {
        p.require(Scope::Read)?;
        let limits = &self.core.config.search;
        let query = params.query.trim();
        if query.is_empty() {
            return Err(ServiceError::Invalid("query must not be empty".into()));
        }
        if query.len() > limits.max_query_bytes {
            return Err(ServiceError::Invalid(format!(
                "query is {} bytes; the limit is {}",
                query.len(),
                limits.max_query_bytes
            )));
        }
        let top_k = params.top_k.unwrap_or(limits.default_top_k);
        if top_k == 0 || top_k > limits.max_top_k {
            return Err(ServiceError::Invalid(format!(
                "top_k must be within 1..={}",
                limits.max_top_k
            )));
        }
        let mut kb = self.kb(p, kb)?;
        // The request's stage, else the knowledge base's, else the configured one.
        let stage = match &params.rerank {
            Rerank::Off => None,
            Rerank::Default => kb
                .rerank
                .as_ref()
                .map(|r| (r.model.clone(), r.candidates.map(|c| c as usize)))
                .or_else(|| limits.rerank.clone().map(|m| (m, None))),
            Rerank::With { model, candidates } => Some((model.clone(), *candidates)),
        };
        if let Some((model, n)) = &stage {
            self.validate_rerank(model, *n)?;
        }
        let stage = stage.map(|(m, n)| (m, n.unwrap_or(limits.rerank_candidates)));
        // The index hands the reranker its candidates, of which the best `top_k` are kept.
        let fetch = stage.as_ref().map_or(top_k, |(_, n)| (*n).max(top_k));
        if let Some(seq) = params.min_seq {
            // Numbers are handed out after their commit: one above the committed sequence
            // was never returned by this deployment, and waiting for it would be in vain.
            if seq > kb.index_seq {
                return Err(ServiceError::Invalid(format!(
                    "min_seq {seq} is ahead of knowledge base `{}`, whose latest sequence \
                     number is {}; pass a number a publish or search returned",
                    kb.name, kb.index_seq
                )));
            }
            follow::wait_for(&self.core, &kb.id, seq, MIN_SEQ_WAIT)?;
        }
        let filter = Filter {
            kb: None,
            document_ids: params.document_ids.clone(),
            metadata: params.metadata.clone(),
        };
        // A reindex may switch the model between embedding the query and reading the index:
        // then the query is embedded again with the new one (once is enough; switches are rare).
        let mut attempts = 0;
        let (hits, mut chunks, index_seq) = loop {
            attempts += 1;
            let vector = if params.mode == SearchMode::Bm25 {
                None
            } else {
                Some(self.embed_query(&kb, query)?)
            };
            let index = self.core.index_of(&kb.id)?;
            // The index guard is held until the chunks are read, so a reindex switching
            // generations (which takes the index's write lock around its store commit) can
            // never delete the rows behind ids this search got from the old generation.
            let guard = index.reader();
            if guard.stamp().model_id != kb.embedding_model && vector.is_some() && attempts < 3 {
                drop(guard);
                kb = self.core.store.kb_by_id(&kb.id)?;
                if self.core.follows() {
                    // Another replica switched the generation: this one's index follows.
                    follow::wait_for(&self.core, &kb.id, kb.index_seq, MIN_SEQ_WAIT)?;
                }
                continue;
            }
            let index_seq = index.applied_seq();
            let hits = guard.search(&SearchRequest {
                vector: vector.as_deref(),
                text: query,
                k: fetch,
                mode: params.mode,
                filter: &filter,
            })?;
            let ids: Vec<u64> = hits.iter().map(|h| h.chunk_id).collect();
            let chunks: BTreeMap<u64, ChunkRecord> = self
                .core
                .store
                .chunks_by_id(&ids)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
            break (hits, chunks, index_seq);
        };
        let mut hits: Vec<SearchHit> = hits
            .into_iter()
            .filter_map(|h| {
                chunks.remove(&h.chunk_id).map(|chunk| SearchHit {
                    score: h.score,
                    similarity: h.similarity,
                    rerank_score: None,
                    chunk,
                })
            })
            .collect();
        let rerank = stage.map(|(model, _)| self.rerank_hits(p, &model, query, &mut hits));
        hits.truncate(top_k);
        Ok(Found {
            kb_id: kb.id,
            hits,
            index_seq,
            rerank,
        })
    }

    /// Orders `hits` by the reranker's relevance; on failure leaves them in fused order (a
    /// search still answers when its reranker is down or over budget) and says why.
    fn rerank_hits(
        &self,
        p: &Principal,
        model: &str,
        query: &str,
        hits: &mut Vec<SearchHit>,
    ) -> RerankReport {
        let mut report = RerankReport {
            model: model.to_owned(),
            candidates: hits.len(),
            applied: false,
            error: None,
        };
        if hits.is_empty() {
            report.applied = true;
            return report;
        }
        let ctx = crate::gateway::CallContext {
            request_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: p.tenant_id.clone(),
            key_id: p.key_id.clone().unwrap_or_else(|| "demo".into()),
            ..Default::default()
        };
        let texts: Vec<String> = hits.iter().map(|h| h.chunk.text.clone()).collect();
        let gateway = self.core.gateway.clone();
        let call = gateway.rerank(ctx, model, query, texts, None);
        // Searches run on blocking threads (or the CLI's own): wait for the call there.
        let answered = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(call),
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(call),
                Err(e) => Err(crate::gateway::GatewayError::Invalid(e.to_string())),
            },
        };
        match answered {
            Ok(out) => {
                *hits = out
                    .order(std::mem::take(hits))
                    .into_iter()
                    .map(|(h, score)| SearchHit {
                        rerank_score: score,
                        ..h
                    })
                    .collect();
                report.applied = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, model, "rerank failed; the fused order is kept");
                metrics::counter!("groundwork_rerank_failures_total").increment(1);
                report.error = Some(crate::error::Classify::code(&e).to_owned());
            }
        }
        report
    }

    /// Embeds `texts` with the model of knowledge base `kb` (an id or name of the caller's
    /// tenant), so they compare with its passages and queries: L2-normalised vectors, in order.
    pub fn embed_for_kb(
        &self,
        p: &Principal,
        kb: &str,
        purpose: &'static str,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let embedder = self.core.models.for_kb(&kb)?;
        Ok(self
            .core
            .gateway
            .embed_internal(&kb.tenant_id, purpose, embedder.as_ref(), texts)?)
    }

    pub(super) fn embed_query(&self, kb: &Kb, query: &str) -> Result<Vec<f32>> {
        let embedder = self.core.models.for_kb(kb)?;
        let started = Instant::now();
        let v = self.core.gateway.embed_query_internal(
            &kb.tenant_id,
            "search",
            embedder.as_ref(),
            query,
        )?;
        self.core.stats.add_query(&kb.tenant_id);
        metrics::counter!("groundwork_embedded_texts_total", "kind" => "query").increment(1);
        metrics::histogram!("groundwork_query_embed_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(v)
    }
}
