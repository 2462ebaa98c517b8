//! Model providers behind one enum: the local candle models, OpenAI (and any server speaking
//! its API), Anthropic and the rerank APIs (Cohere, Jina, Voyage, text-embeddings-inference). A provider turns one attempt into an answer, a stream of deltas or
//! vectors, and sorts every failure into a [`FailureKind`]; retries, fallback, timeouts,
//! budgets and logging are the gateway's, never a provider's.

pub mod anthropic;
pub mod local;
pub mod openai;
pub mod rerank;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use super::route::FailureKind;
use super::types::{ChatOutput, Delta, EmbeddingOutput, Message, RerankOutput};

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind:?}{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
pub struct ProviderError {
    /// What kind of failure (drives retry and fallback).
    pub kind: FailureKind,
    /// The provider's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What happened (never contains credentials).
    pub message: String,
}

impl ProviderError {
    /// An error of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
        }
    }

    /// Sorts an HTTP error status.
    pub fn from_status(status: u16, body: &str) -> Self {
        let kind = match status {
            429 => FailureKind::RateLimited,
            401 | 403 => FailureKind::Auth,
            500..=599 => FailureKind::Server,
            _ => FailureKind::BadRequest,
        };
        let mut message: String = body.chars().take(300).collect();
        if message.is_empty() {
            message = format!("status {status}");
        }
        Self {
            kind,
            status: Some(status),
            message,
        }
    }

    /// Sorts a transport error.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            FailureKind::Timeout
        } else if e.is_decode() {
            FailureKind::Malformed
        } else {
            FailureKind::Connection
        };
        // Without the URL: it may carry credentials in a query string.
        Self::new(kind, e.without_url_ref_string())
    }
}

trait WithoutUrl {
    fn without_url_ref_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref_string(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<url>");
        }
        s
    }
}

/// Result alias of providers.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// A streamed answer.
pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta>> + Send>>;

/// One attempt's parameters, provider-neutral.
#[derive(Debug, Clone)]
pub struct Call {
    /// The model as the provider names it.
    pub model: String,
    /// The conversation (after prompt guardrails).
    pub messages: Vec<Message>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Most completion tokens.
    pub max_tokens: u32,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed.
    pub seed: Option<u64>,
    /// Longest wait for response headers.
    pub first_byte: Duration,
}

/// A provider, dispatched by kind.
pub enum Provider {
    /// The local candle models.
    Local(local::Local),
    /// OpenAI or an OpenAI-compatible server.
    OpenAi(openai::OpenAi),
    /// Anthropic.
    Anthropic(anthropic::Anthropic),
    /// A rerank API.
    Rerank(rerank::RerankApi),
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(ProviderError::new(FailureKind::BadRequest, what.to_owned()))
}

impl Provider {
    /// A name for logs and metrics (`local`, `openai`, `anthropic`).
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Local(_) => "local",
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Rerank(_) => "rerank",
        }
    }

    /// Whether calls cost money by default (remote providers do).
    pub fn is_local(&self) -> bool {
        matches!(self, Provider::Local(_))
    }

    /// A whole answer.
    pub async fn complete(&self, call: &Call) -> Result<ChatOutput> {
        match self {
            Provider::Local(p) => p.complete(call).await,
            Provider::OpenAi(p) => p.complete(call).await,
            Provider::Anthropic(p) => p.complete(call).await,
            Provider::Rerank(_) => unsupported("a rerank provider has no chat API"),
        }
    }

    /// A streamed answer; returns once the provider started answering.
    pub async fn stream(&self, call: &Call) -> Result<DeltaStream> {
        match self {
            Provider::Local(p) => p.stream(call).await,
            Provider::OpenAi(p) => p.stream(call).await,
            Provider::Anthropic(p) => p.stream(call).await,
            Provider::Rerank(_) => unsupported("a rerank provider has no chat API"),
        }
    }

    /// Vectors for `inputs`.
    pub async fn embed(&self, model: &str, inputs: Vec<String>) -> Result<EmbeddingOutput> {
        match self {
            Provider::Local(p) => p.embed(model, inputs).await,
            Provider::OpenAi(p) => p.embed(model, inputs).await,
            Provider::Anthropic(_) => unsupported("Anthropic has no embeddings API"),
            Provider::Rerank(_) => unsupported("a rerank provider has no embeddings API"),
        }
    }

    /// The relevance of each of `documents` to `query`, most relevant first.
    pub async fn rerank(
        &self,
        model: &str,
        query: &str,
        documents: &[String],
    ) -> Result<RerankOutput> {
        let mut out = match self {
            Provider::Local(p) => p.rerank(model, query, documents).await?,
            Provider::Rerank(p) => p.rerank(model, query, documents).await?,
            Provider::OpenAi(_) | Provider::Anthropic(_) => {
                return unsupported("this provider has no rerank API")
            }
        };
        out.results.sort_by(|a, b| {
            b.relevance_score
                .total_cmp(&a.relevance_score)
                .then(a.index.cmp(&b.index))
        });
        Ok(out)
    }
}

/// Reads an error answer's body (bounded) for the error message.
pub(crate) async fn error_body(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    ProviderError::from_status(status, &body)
}

/// Waits for response headers at most `limit`.
pub(crate) async fn send_within(
    req: reqwest::RequestBuilder,
    limit: Duration,
) -> Result<reqwest::Response> {
    match tokio::time::timeout(limit, req.send()).await {
        Err(_) => Err(ProviderError::new(
            FailureKind::Timeout,
            format!("no answer within {} ms", limit.as_millis()),
        )),
        Ok(Err(e)) => Err(ProviderError::from_reqwest(&e)),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(resp),
        Ok(Ok(resp)) => Err(error_body(resp).await),
    }
}

/// Decodes a JSON answer body.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ProviderError::from_reqwest(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(FailureKind::Malformed, format!("answer is not valid: {e}"))
    })
}

/// Rough token count of text (for estimates when a provider reports none): ~4 bytes a token.
pub fn estimate_tokens(text: &str) -> u32 {
    (text.len() as u32).div_ceil(4)
}

/// Framing tokens a provider adds per message (role, separators) at most, and once for the
/// start of the reply. OpenAI documents 3 and 3; 8 leaves room for other chat formats.
const FRAMING_TOKENS: u32 = 8;

/// A prompt token count no provider's bill can exceed: a token of a byte-level (or
/// byte-fallback) tokenizer covers at least one byte of text, so the bytes of the contents and
/// roles plus the framing bound it. For budgets: a reservation made with it is a true worst case.
pub fn prompt_token_bound(messages: &[Message]) -> u32 {
    let bytes: usize = messages
        .iter()
        .map(|m| m.content.len() + m.role.as_str().len())
        .sum();
    (bytes as u32).saturating_add(FRAMING_TOKENS * (messages.len() as u32 + 1))
}

/// Completion tokens of `text` at most, when a provider reports none: one per byte, and never
/// more than were allowed.
pub fn completion_token_bound(text: &str, max_tokens: u32) -> u32 {
    (text.len() as u32).min(max_tokens)
}
