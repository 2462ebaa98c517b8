//! The built-in `local` provider: the GGUF chat model, the retrieval engine's embedder and the
//! configured cross-encoders (rerankers).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::{Call, DeltaStream, ProviderError, Result};
use crate::embed::{CrossEncoder, Embedder};
use crate::gateway::local::{Generate, LocalChat, LocalError};
use crate::gateway::route::FailureKind;
use crate::gateway::types::{
    ChatOutput, Delta, EmbeddingOutput, FinishReason, RerankOutput, RerankResult, Usage,
};

/// The local models.
pub struct Local {
    chat: Arc<LocalChat>,
    chat_model: String,
    embedder: Arc<dyn Embedder>,
    embed_model: String,
    rerankers: BTreeMap<String, Arc<CrossEncoder>>,
}

impl From<LocalError> for ProviderError {
    fn from(e: LocalError) -> Self {
        let kind = match e {
            LocalError::Overloaded => FailureKind::Overloaded,
            LocalError::Invalid(_) => FailureKind::BadRequest,
            LocalError::Model(_) | LocalError::Compute(_) => FailureKind::Server,
        };
        ProviderError::new(kind, e.to_string())
    }
}

impl Local {
    /// The provider over a started chat model and an embedder.
    pub fn new(
        chat: Arc<LocalChat>,
        chat_model: &str,
        embedder: Arc<dyn Embedder>,
        embed_model: &str,
    ) -> Self {
        Self {
            chat,
            chat_model: chat_model.to_owned(),
            embedder,
            embed_model: embed_model.to_owned(),
            rerankers: BTreeMap::new(),
        }
    }

    /// With these cross-encoders, by the model name routes give them.
    pub fn with_rerankers(mut self, rerankers: BTreeMap<String, Arc<CrossEncoder>>) -> Self {
        self.rerankers = rerankers;
        self
    }

    /// Scores with a local cross-encoder, off the async threads.
    pub async fn rerank(
        &self,
        model: &str,
        query: &str,
        documents: &[String],
    ) -> Result<RerankOutput> {
        let Some(ce) = self.rerankers.get(model).cloned() else {
            let known: Vec<&str> = self.rerankers.keys().map(String::as_str).collect();
            return Err(ProviderError::new(
                FailureKind::BadRequest,
                format!(
                    "no local reranker `{model}` (gateway.local_rerankers has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let (query, docs, name) = (query.to_owned(), documents.to_vec(), model.to_owned());
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let server = |e: crate::embed::EmbedError| {
                ProviderError::new(FailureKind::Server, e.to_string())
            };
            let scores = ce.score(&query, &refs).map_err(server)?;
            let tokens = ce.count_tokens(&query, &refs).map_err(server)?;
            Ok(RerankOutput {
                results: scores
                    .into_iter()
                    .enumerate()
                    .map(|(index, relevance_score)| RerankResult {
                        index,
                        relevance_score,
                    })
                    .collect(),
                tokens: tokens as u32,
                model: name,
            })
        })
        .await
        .map_err(|e| ProviderError::new(FailureKind::Server, e.to_string()))?
    }

    fn check_chat(&self, model: &str) -> Result<()> {
        if model == self.chat_model {
            Ok(())
        } else {
            Err(ProviderError::new(
                FailureKind::BadRequest,
                format!(
                    "the local chat model is `{}`, not `{model}`",
                    self.chat_model
                ),
            ))
        }
    }

    /// A streamed answer.
    pub async fn stream(&self, call: &Call) -> Result<DeltaStream> {
        self.check_chat(&call.model)?;
        let mut rx = self.chat.generate(Generate {
            messages: call.messages.clone(),
            temperature: call.temperature,
            top_p: call.top_p,
            max_tokens: call.max_tokens,
            stop: call.stop.clone(),
            seed: call.seed,
        })?;
        Ok(Box::pin(async_stream::stream! {
            while let Some(r) = rx.recv().await {
                yield r.map_err(ProviderError::from);
            }
        }))
    }

    /// A whole answer.
    pub async fn complete(&self, call: &Call) -> Result<ChatOutput> {
        let mut stream = self.stream(call).await?;
        let mut text = String::new();
        while let Some(d) = stream.next().await {
            match d? {
                Delta::Text(t) => text.push_str(&t),
                Delta::Finish { reason, usage } => {
                    return Ok(ChatOutput {
                        text,
                        finish_reason: reason,
                        usage: usage.unwrap_or_default(),
                        model: self.chat_model.clone(),
                        cost_usd: 0.0,
                    })
                }
            }
        }
        Ok(ChatOutput {
            text,
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            model: self.chat_model.clone(),
            cost_usd: 0.0,
        })
    }

    /// Vectors from the embedder, computed off the async threads.
    pub async fn embed(&self, model: &str, inputs: Vec<String>) -> Result<EmbeddingOutput> {
        let short = self
            .embedder
            .model_id()
            .split('@')
            .next()
            .unwrap_or_default();
        if model != self.embed_model && model != short && model != self.embedder.model_id() {
            return Err(ProviderError::new(
                FailureKind::BadRequest,
                format!(
                    "the local embedding model is `{}`, not `{model}`",
                    self.embed_model
                ),
            ));
        }
        let embedder = self.embedder.clone();
        let name = self.embed_model.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let tokens: usize = refs
                .iter()
                .map(|t| embedder.tokenizer().count(t).unwrap_or(0))
                .sum();
            let vectors = embedder
                .embed(&refs)
                .map_err(|e| ProviderError::new(FailureKind::Server, e.to_string()))?;
            Ok(EmbeddingOutput {
                vectors,
                prompt_tokens: tokens as u32,
                model: name,
            })
        })
        .await
        .map_err(|e| ProviderError::new(FailureKind::Server, e.to_string()))?
    }
}
