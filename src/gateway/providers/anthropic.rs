//! Anthropic's Messages API: plain answers and its streamed events (`message_start`,
//! `content_block_delta`, `message_delta`, `message_stop`, `error`).

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{json_body, send_within, Call, DeltaStream, ProviderError, Result};
use crate::gateway::route::FailureKind;
use crate::gateway::types::{ChatOutput, Delta, FinishReason, Role, Usage};

/// The API version this client speaks.
const VERSION: &str = "2023-06-01";

/// A client of Anthropic's API.
pub struct Anthropic {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

#[derive(Deserialize)]
struct MessageAnswer {
    #[serde(default)]
    model: Option<String>,
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockDelta {
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Error {
        error: ErrorBody,
    },
    /// `content_block_start`, `content_block_stop`, `ping` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("max_tokens") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

impl Anthropic {
    /// A client of `base` (e.g. `https://api.anthropic.com/v1`).
    pub fn new(http: reqwest::Client, base: &str, key: Option<String>) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        }
    }

    fn request(&self, call: &Call, stream: bool) -> reqwest::RequestBuilder {
        // System text goes in `system`; the rest must alternate user/assistant, so runs of one
        // role are joined and tool output is shown to the model as user text.
        let mut system = Vec::new();
        let mut turns: Vec<(&'static str, String)> = Vec::new();
        for m in &call.messages {
            let role = match m.role {
                Role::System | Role::Developer => {
                    system.push(m.content.as_str());
                    continue;
                }
                Role::Assistant => "assistant",
                Role::User | Role::Tool => "user",
            };
            match turns.last_mut() {
                Some((r, text)) if *r == role => {
                    text.push_str("\n\n");
                    text.push_str(&m.content);
                }
                _ => turns.push((role, m.content.clone())),
            }
        }
        let messages: Vec<_> = turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let mut body = json!({
            "model": call.model,
            "max_tokens": call.max_tokens,
            "messages": messages,
            "stream": stream,
        });
        let o = body.as_object_mut().expect("a JSON object");
        if !system.is_empty() {
            o.insert("system".into(), json!(system.join("\n\n")));
        }
        if let Some(t) = call.temperature {
            o.insert("temperature".into(), json!(t.min(1.0)));
        }
        if let Some(p) = call.top_p {
            o.insert("top_p".into(), json!(p));
        }
        if !call.stop.is_empty() {
            o.insert("stop_sequences".into(), json!(call.stop));
        }
        let req = self
            .http
            .post(format!("{}/messages", self.base))
            .header("anthropic-version", VERSION)
            .json(&body);
        match &self.key {
            Some(k) => req.header("x-api-key", k),
            None => req,
        }
    }

    /// A whole answer.
    pub async fn complete(&self, call: &Call) -> Result<ChatOutput> {
        let resp = send_within(self.request(call, false), call.first_byte).await?;
        let m: MessageAnswer = json_body(resp).await?;
        let text: String = m
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        Ok(ChatOutput {
            text,
            finish_reason: finish(m.stop_reason.as_deref()),
            usage: Usage::new(m.usage.input_tokens, m.usage.output_tokens),
            model: m.model.unwrap_or_else(|| call.model.clone()),
            cost_usd: 0.0,
        })
    }

    /// A streamed answer.
    pub async fn stream(&self, call: &Call) -> Result<DeltaStream> {
        let resp = send_within(self.request(call, true), call.first_byte).await?;
        let events = resp.bytes_stream().eventsource();
        let out = async_stream::stream! {
            let mut events = std::pin::pin!(events);
            let mut input = 0;
            let mut output = 0;
            let mut reason = None;
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        yield Err(ProviderError::new(FailureKind::Connection, format!("stream broke: {e}")));
                        return;
                    }
                };
                let parsed: Event = match serde_json::from_str(&ev.data) {
                    Ok(p) => p,
                    Err(e) => {
                        yield Err(ProviderError::new(FailureKind::Malformed, format!("bad stream event `{}`: {e}", ev.event)));
                        return;
                    }
                };
                match parsed {
                    Event::MessageStart { message } => input = message.usage.input_tokens,
                    Event::ContentBlockDelta { delta } => {
                        if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                            yield Ok(Delta::Text(t));
                        }
                    }
                    Event::MessageDelta { delta, usage } => {
                        reason = delta.stop_reason;
                        if let Some(u) = usage {
                            output = u.output_tokens;
                        }
                    }
                    Event::MessageStop {} => {
                        yield Ok(Delta::Finish {
                            reason: finish(reason.as_deref()),
                            usage: Some(Usage::new(input, output)),
                        });
                        return;
                    }
                    Event::Error { error } => {
                        let kind = match error.kind.as_str() {
                            "overloaded_error" | "api_error" => FailureKind::Server,
                            "rate_limit_error" => FailureKind::RateLimited,
                            _ => FailureKind::BadRequest,
                        };
                        yield Err(ProviderError::new(kind, format!("{}: {}", error.kind, error.message)));
                        return;
                    }
                    Event::Other => {}
                }
            }
            yield Err(ProviderError::new(FailureKind::Malformed, "the stream ended before message_stop"));
        };
        Ok(Box::pin(out))
    }
}
