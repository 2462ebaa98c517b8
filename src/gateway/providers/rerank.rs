//! Remote rerank APIs, one wire format each: Cohere (`POST /rerank`, `top_n`, `results`),
//! Jina (Cohere's shape, token usage), Voyage (`top_k`, `data`) and Hugging Face's
//! text-embeddings-inference (`POST /rerank` with `texts`, a bare array of `{index, score}`).

use serde_json::{json, Value};

use super::{ProviderError, Result};
use crate::gateway::route::FailureKind;
use crate::gateway::types::{RerankOutput, RerankResult};

/// Which API a rerank provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Cohere's `/v2/rerank` (and servers copying it).
    Cohere,
    /// Jina's `/v1/rerank`.
    Jina,
    /// Voyage's `/v1/rerank`.
    Voyage,
    /// text-embeddings-inference's `/rerank`.
    Tei,
}

/// A remote reranker.
pub struct RerankApi {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    flavor: Flavor,
}

impl RerankApi {
    /// A client for `base` (the URL `/rerank` is appended to).
    pub fn new(http: reqwest::Client, base: &str, key: Option<String>, flavor: Flavor) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            flavor,
        }
    }

    /// The request body for this API.
    fn body(&self, model: &str, query: &str, documents: &[String]) -> Value {
        match self.flavor {
            Flavor::Cohere | Flavor::Jina => json!({
                "model": model, "query": query, "documents": documents,
                "top_n": documents.len(), "return_documents": false,
            }),
            Flavor::Voyage => json!({
                "model": model, "query": query, "documents": documents,
                "top_k": documents.len(), "return_documents": false,
            }),
            Flavor::Tei => json!({"query": query, "texts": documents, "raw_scores": false}),
        }
    }

    /// Relevance of every document, and the tokens the provider counted (if it says).
    pub async fn rerank(
        &self,
        model: &str,
        query: &str,
        documents: &[String],
    ) -> Result<RerankOutput> {
        let mut req = self
            .http
            .post(format!("{}/rerank", self.base))
            .json(&self.body(model, query, documents));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let res = req
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest(&e))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| ProviderError::from_reqwest(&e))?;
        if !status.is_success() {
            return Err(ProviderError::from_status(status.as_u16(), &text));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            ProviderError::new(FailureKind::Malformed, format!("rerank answer: {e}"))
        })?;
        let mut out = parse(self.flavor, model, &v, documents.len())?;
        if out.tokens == 0 {
            // Not every API counts tokens (Cohere bills search units): an estimate of what
            // it read, so that the call is priced.
            let bytes: usize = documents.iter().map(|d| d.len() + query.len()).sum();
            out.tokens = bytes.div_ceil(4) as u32;
        }
        Ok(out)
    }
}

/// Reads an answer of `flavor` for `n` documents.
pub fn parse(flavor: Flavor, model: &str, v: &Value, n: usize) -> Result<RerankOutput> {
    let (items, score_field) = match flavor {
        Flavor::Cohere | Flavor::Jina => (&v["results"], "relevance_score"),
        Flavor::Voyage => (&v["data"], "relevance_score"),
        Flavor::Tei => (v, "score"),
    };
    let malformed = |why: &str| ProviderError::new(FailureKind::Malformed, why.to_owned());
    let items = items
        .as_array()
        .ok_or_else(|| malformed("rerank answer holds no list of results"))?;
    let mut results = Vec::with_capacity(items.len());
    for it in items {
        let index = it["index"]
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < n)
            .ok_or_else(|| malformed("a rerank result has no valid index"))?;
        let score = it[score_field]
            .as_f64()
            .ok_or_else(|| malformed("a rerank result has no score"))?;
        results.push(RerankResult {
            index,
            relevance_score: score as f32,
        });
    }
    let tokens = v["usage"]["total_tokens"]
        .as_u64()
        .or_else(|| v["meta"]["billed_units"]["input_tokens"].as_u64())
        .unwrap_or(0) as u32;
    let answered = v["model"].as_str().unwrap_or(model).to_owned();
    Ok(RerankOutput {
        results,
        tokens,
        model: answered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wire_format_reads_to_the_same_results() {
        let cohere = json!({"id": "x", "results": [{"index": 1, "relevance_score": 0.9},
            {"index": 0, "relevance_score": 0.2}], "meta": {"billed_units": {"search_units": 1}}});
        let jina = json!({"model": "jina-reranker-v2", "usage": {"total_tokens": 42},
            "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}]});
        let voyage = json!({"object": "list", "model": "rerank-2", "usage": {"total_tokens": 40},
            "data": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}]});
        let tei = json!([{"index": 1, "score": 0.9}, {"index": 0, "score": 0.2}]);
        for (flavor, v, tokens) in [
            (Flavor::Cohere, cohere, 0),
            (Flavor::Jina, jina, 42),
            (Flavor::Voyage, voyage, 40),
            (Flavor::Tei, tei, 0),
        ] {
            let out = parse(flavor, "m", &v, 2).expect("parses");
            let got: Vec<(usize, f32)> = out
                .results
                .iter()
                .map(|r| (r.index, r.relevance_score))
                .collect();
            assert_eq!(got, [(1, 0.9), (0, 0.2)], "{flavor:?}");
            assert_eq!(out.tokens, tokens, "{flavor:?}");
        }
        let bad = parse(Flavor::Tei, "m", &json!([{"index": 7, "score": 1.0}]), 2);
        assert_eq!(bad.expect_err("refused").kind, FailureKind::Malformed);
    }
}
