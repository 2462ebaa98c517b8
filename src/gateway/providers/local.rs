//! The built-in `local` provider: the GGUF chat model and the retrieval engine's embedder.

use std::sync::Arc;

use futures_util::StreamExt;

use super::{Call, DeltaStream, ProviderError, Result};
use crate::embed::Embedder;
use crate::gateway::local::{Generate, LocalChat, LocalError};
use crate::gateway::route::FailureKind;
use crate::gateway::types::{ChatOutput, Delta, EmbeddingOutput, FinishReason, Usage};

/// The local models.
pub struct Local {
    chat: Arc<LocalChat>,
    chat_model: String,
    embedder: Arc<dyn Embedder>,
    embed_model: String,
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
        }
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
