//! OpenAI's Chat Completions and Embeddings APIs (also vLLM, Ollama, llama.cpp server and any
//! other server speaking them): plain and streamed (SSE) answers.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{
    completion_token_bound, estimate_tokens, json_body, prompt_token_bound, send_within, Call,
    DeltaStream, ProviderError, Result,
};
use crate::gateway::route::FailureKind;
use crate::gateway::types::{ChatOutput, Delta, EmbeddingOutput, FinishReason, Usage};

/// A client of one OpenAI-style base URL.
pub struct OpenAi {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    /// OpenAI itself: `max_completion_tokens` (its newer models refuse `max_tokens`, which
    /// compatible servers still expect).
    official: bool,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChoiceMessage>,
    #[serde(default)]
    delta: Option<ChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Embeddings {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// Maps OpenAI's finish reasons.
pub(crate) fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

impl OpenAi {
    /// A client of `base` (e.g. `https://api.openai.com/v1`); `official` for OpenAI itself.
    pub fn new(http: reqwest::Client, base: &str, key: Option<String>, official: bool) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            official,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    fn body(&self, call: &Call, stream: bool) -> serde_json::Value {
        let mut body = json!({
            "model": call.model,
            "messages": call.messages,
            "stream": stream,
        });
        let o = body.as_object_mut().expect("a JSON object");
        let limit = if self.official {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        o.insert(limit.into(), json!(call.max_tokens));
        if let Some(t) = call.temperature {
            o.insert("temperature".into(), json!(t));
        }
        if let Some(p) = call.top_p {
            o.insert("top_p".into(), json!(p));
        }
        if !call.stop.is_empty() {
            o.insert("stop".into(), json!(call.stop));
        }
        if let Some(s) = call.seed {
            o.insert("seed".into(), json!(s));
        }
        if stream {
            o.insert("stream_options".into(), json!({"include_usage": true}));
        }
        body
    }

    /// A whole answer.
    pub async fn complete(&self, call: &Call) -> Result<ChatOutput> {
        let resp = send_within(
            self.post("/chat/completions").json(&self.body(call, false)),
            call.first_byte,
        )
        .await?;
        let c: Completion = json_body(resp).await?;
        let choice = c.choices.into_iter().next().ok_or_else(|| {
            ProviderError::new(FailureKind::Malformed, "the answer has no choices")
        })?;
        let text = choice.message.and_then(|m| m.content).unwrap_or_default();
        let usage = c.usage.unwrap_or_else(|| {
            Usage::new(
                prompt_token_bound(&call.messages),
                completion_token_bound(&text, call.max_tokens),
            )
        });
        Ok(ChatOutput {
            finish_reason: finish(choice.finish_reason.as_deref()),
            text,
            usage,
            model: c.model.unwrap_or_else(|| call.model.clone()),
            cost_usd: 0.0,
        })
    }

    /// A streamed answer.
    pub async fn stream(&self, call: &Call) -> Result<DeltaStream> {
        let resp = send_within(
            self.post("/chat/completions").json(&self.body(call, true)),
            call.first_byte,
        )
        .await?;
        let events = resp.bytes_stream().eventsource();
        let out = async_stream::stream! {
            let mut events = std::pin::pin!(events);
            let mut finish_reason: Option<FinishReason> = None;
            let mut usage: Option<Usage> = None;
            let mut done = false;
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        yield Err(ProviderError::new(FailureKind::Connection, format!("stream broke: {e}")));
                        return;
                    }
                };
                if ev.data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                let chunk: StreamChunk = match serde_json::from_str(&ev.data) {
                    Ok(c) => c,
                    Err(e) => {
                        yield Err(ProviderError::new(FailureKind::Malformed, format!("bad stream chunk: {e}")));
                        return;
                    }
                };
                if chunk.usage.is_some() {
                    usage = chunk.usage;
                }
                for choice in chunk.choices {
                    if let Some(text) = choice.delta.and_then(|d| d.content) {
                        if !text.is_empty() {
                            yield Ok(Delta::Text(text));
                        }
                    }
                    if let Some(r) = choice.finish_reason.as_deref() {
                        finish_reason = Some(finish(Some(r)));
                    }
                }
            }
            if done || finish_reason.is_some() {
                yield Ok(Delta::Finish { reason: finish_reason.unwrap_or(FinishReason::Stop), usage });
            } else {
                yield Err(ProviderError::new(FailureKind::Malformed, "the stream ended before its end"));
            }
        };
        Ok(Box::pin(out))
    }

    /// Vectors for `inputs`.
    pub async fn embed(&self, model: &str, inputs: Vec<String>) -> Result<EmbeddingOutput> {
        let resp = send_within(
            self.post("/embeddings")
                .json(&json!({"model": model, "input": inputs})),
            std::time::Duration::from_secs(60),
        )
        .await?;
        let mut e: Embeddings = json_body(resp).await?;
        e.data.sort_by_key(|d| d.index);
        if e.data.len() != inputs.len() {
            return Err(ProviderError::new(
                FailureKind::Malformed,
                "the answer has the wrong number of vectors",
            ));
        }
        Ok(EmbeddingOutput {
            vectors: e.data.into_iter().map(|d| d.embedding).collect(),
            prompt_tokens: e
                .usage
                .map(|u| u.prompt_tokens)
                .unwrap_or_else(|| inputs.iter().map(|t| estimate_tokens(t)).sum()),
            model: e.model.unwrap_or_else(|| model.to_owned()),
        })
    }
}
