//! Reranking through the gateway: a query and its candidate passages to a route's rerank
//! targets (a local cross-encoder or a rerank API), answered from the response cache when it
//! may be, budgeted, retried, moved to the next target and logged like every model call.

use std::sync::Arc;
use std::time::Instant;

use super::types::RerankOutput;
use super::{cache, CacheMode, CallContext, Gateway, GatewayError, Result};

/// Most passages one rerank orders.
pub const MAX_DOCUMENTS: usize = 1000;

impl Gateway {
    /// Orders `documents` by relevance to `query` with route (or `provider/model`) `model`;
    /// the `top_n` most relevant first (all when absent).
    pub async fn rerank(
        &self,
        ctx: CallContext,
        model: &str,
        query: &str,
        documents: Vec<String>,
        top_n: Option<usize>,
    ) -> Result<RerankOutput> {
        let started = Instant::now();
        let route = self.route(model)?;
        if query.trim().is_empty() {
            return Err(GatewayError::Invalid("query must not be empty".into()));
        }
        if documents.is_empty() || documents.len() > MAX_DOCUMENTS {
            return Err(GatewayError::Invalid(format!(
                "documents must hold 1 to {MAX_DOCUMENTS} passages"
            )));
        }
        if top_n == Some(0) {
            return Err(GatewayError::Invalid("top_n must be at least 1".into()));
        }
        let cacheable = self.inner.config.cache.enabled
            && route.policy.cache_ttl_secs > 0
            && ctx.cache != CacheMode::Bypass;
        let key = cacheable.then(|| cache::rerank_key(&route.name, query, &documents));
        if let (Some(key), false) = (&key, ctx.cache == CacheMode::Refresh) {
            let hit: Option<RerankOutput> = self.cache_lookup(key).await;
            self.count_cache(hit.is_some());
            if let Some(mut out) = hit {
                let mut log = self.call_log(&ctx, &route.name, "rerank", started);
                log.model = Some(out.model.clone());
                log.tokens_in = out.tokens;
                log.cache = "hit".into();
                self.inner.log.record(log).await;
                out.results.truncate(top_n.unwrap_or(usize::MAX));
                return Ok(out);
            }
        }
        // Most APIs read the query once per passage.
        let bytes: usize = documents.iter().map(|d| d.len() + query.len() + 4).sum();
        let docs = Arc::new(documents);
        let mut out: RerankOutput = self
            .one_shot(&ctx, &route, "rerank", bytes, started, |p, m| {
                let (docs, query) = (docs.clone(), query.to_owned());
                async move { p.rerank(&m, &query, &docs).await }
            })
            .await?;
        if let Some(key) = &key {
            self.cache_store(key, &route, &out).await;
        }
        out.results.truncate(top_n.unwrap_or(usize::MAX));
        Ok(out)
    }
}
