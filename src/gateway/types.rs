//! Request and answer shapes of the gateway, in OpenAI's wire format (what clients send and
//! receive), plus the provider-neutral pieces the providers produce.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    /// The person asking.
    User,
    /// The model.
    Assistant,
    /// A tool's output (e.g. retrieved passages).
    Tool,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message (text content; an array of text parts is joined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    #[serde(deserialize_with = "content_text")]
    pub content: String,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
        Null(()),
    }
    match Content::deserialize(d)? {
        Content::Text(t) => Ok(t),
        Content::Null(()) => Ok(String::new()),
        Content::Parts(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(serde::de::Error::custom(format!(
                        "content part type `{}` is not supported (text only)",
                        p.kind
                    )));
                }
                out.push_str(p.text.as_deref().unwrap_or_default());
            }
            Ok(out)
        }
    }
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatRequest {
    /// A route alias (`fast`, `frontier`) or `provider/model`.
    pub model: String,
    /// The conversation.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Message>,
    /// Sampling temperature (0 = greedy, deterministic, cacheable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1.0e-30, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Most completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Newer name of `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences (up to 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stop: Option<Stop>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub stream_options: Option<StreamOptions>,
    /// End-user id (budgets and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Number of choices; only 1 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
}

impl ChatRequest {
    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Greedy decoding: the same request gives the same answer.
    pub fn deterministic(&self) -> bool {
        self.temperature == Some(0.0)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of turn or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// A guardrail ended the answer.
    ContentFilter,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Sum of both.
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(prompt: u32, completion: u32) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    /// The tokens of two calls together.
    fn add(self, other: Usage) -> Usage {
        Usage::new(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )
    }
}

/// A finished answer, as a provider or the cache gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatOutput {
    /// The text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// What the call cost, USD (0 for a cache hit or a free model).
    #[serde(default, skip_serializing)]
    pub cost_usd: f64,
}

/// One piece of a streamed answer from a provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// More text.
    Text(String),
    /// The end, with usage when the provider reports it.
    Finish {
        /// Why it ended.
        reason: FinishReason,
        /// Token counts.
        usage: Option<Usage>,
    },
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingRequest {
    /// Route alias, model alias or `provider/model`.
    pub model: String,
    /// One text, several, or token ids (one array or several) of a tiktoken encoding.
    #[schema(value_type = Object)]
    pub input: EmbeddingInput,
    /// `float` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(float|base64)$")]
    pub encoding_format: Option<String>,
    /// Length of the vectors returned: at most the model's own; shorter vectors are its first
    /// components renormalised to unit length (Matryoshka-style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub dimensions: Option<u32>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Input of an embedding request, as OpenAI's API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// One text as token ids.
    Tokens(Vec<u32>),
    /// Several texts as token ids.
    ManyTokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// How many inputs the request holds.
    pub fn count(&self) -> usize {
        match self {
            EmbeddingInput::One(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Many(v) => v.len(),
            EmbeddingInput::ManyTokens(v) => v.len(),
        }
    }

    /// An upper bound on the tokens the inputs hold (a text's bytes, or its ids), each plus
    /// the model's two markers.
    pub fn token_bound(&self) -> u64 {
        match self {
            EmbeddingInput::One(t) => t.len() as u64 + 2,
            EmbeddingInput::Many(v) => v.iter().map(|t| t.len() as u64 + 2).sum(),
            EmbeddingInput::Tokens(ids) => ids.len() as u64 + 2,
            EmbeddingInput::ManyTokens(v) => v.iter().map(|ids| ids.len() as u64 + 2).sum(),
        }
    }
}

/// Vectors from a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingOutput {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Prompt tokens counted.
    pub prompt_tokens: u32,
    /// The model that answered.
    pub model: String,
}

/// `POST /v1/rerank` (Cohere's shape, which Jina's and most clients' follow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// Route alias or `provider/model` (a cross-encoder or a rerank API).
    pub model: String,
    /// The query.
    #[schema(pattern = r"\S")]
    pub query: String,
    /// The passages to order: texts, or objects with a `text`.
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 1000)]
    pub documents: Vec<RerankDocument>,
    /// Results returned (default: all).
    #[serde(default, alias = "top_k")]
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
    /// Echo each result's text.
    #[serde(default)]
    pub return_documents: bool,
    /// End-user id (call log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One passage to rerank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RerankDocument {
    /// The text itself.
    Text(String),
    /// `{"text": ...}`.
    Object {
        /// The text.
        text: String,
    },
}

impl RerankDocument {
    /// The passage's text.
    pub fn into_text(self) -> String {
        match self {
            RerankDocument::Text(t) | RerankDocument::Object { text: t } => t,
        }
    }
}

/// One passage's relevance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    /// Its position in the request.
    pub index: usize,
    /// Higher is more relevant (a cross-encoder's is in (0, 1)).
    pub relevance_score: f32,
}

/// What a reranker answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankOutput {
    /// Most relevant first.
    pub results: Vec<RerankResult>,
    /// Tokens counted (0 when the provider does not say).
    pub tokens: u32,
    /// The model that answered.
    pub model: String,
}

impl RerankOutput {
    /// `items` (the passages in the order they were sent) in this answer's order, each with
    /// its relevance; any the answer left out follow in their own order, without one.
    pub fn order<T>(&self, items: Vec<T>) -> Vec<(T, Option<f32>)> {
        let mut taken: Vec<Option<T>> = items.into_iter().map(Some).collect();
        let mut out: Vec<(T, Option<f32>)> = self
            .results
            .iter()
            .filter_map(|r| {
                let item = taken.get_mut(r.index)?.take()?;
                Some((item, Some(r.relevance_score)))
            })
            .collect();
        out.extend(taken.into_iter().flatten().map(|t| (t, None)));
        out
    }
}

impl EmbeddingOutput {
    /// Keeps each vector's first `dims` components, rescaled to unit length (how
    /// Matryoshka-trained models are shortened; OpenAI's `dimensions` does the same).
    pub fn shorten(&mut self, dims: u32) -> Result<(), String> {
        let dims = dims as usize;
        let have = self.vectors.first().map_or(0, Vec::len);
        if dims == 0 || dims > have {
            return Err(format!(
                "dimensions {dims}: {} gives {have}-dimensional vectors; ask for 1 to {have}",
                self.model
            ));
        }
        for v in &mut self.vectors {
            v.truncate(dims);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerank_order_puts_items_in_the_answers_order_and_keeps_the_rest() {
        let out = RerankOutput {
            results: vec![
                RerankResult {
                    index: 2,
                    relevance_score: 0.9,
                },
                RerankResult {
                    index: 0,
                    relevance_score: 0.5,
                },
                RerankResult {
                    index: 0,
                    relevance_score: 0.4,
                },
                RerankResult {
                    index: 7,
                    relevance_score: 0.3,
                },
            ],
            tokens: 0,
            model: "m".into(),
        };
        let got = out.order(vec!["a", "b", "c", "d"]);
        assert_eq!(
            got,
            [("c", Some(0.9)), ("a", Some(0.5)), ("b", None), ("d", None)]
        );
    }

    #[test]
    fn shortened_vectors_are_prefixes_at_unit_length() {
        let mut out = EmbeddingOutput {
            vectors: vec![vec![0.6, 0.0, 0.8, 0.0], vec![0.0, 0.0, 0.0, 1.0]],
            prompt_tokens: 2,
            model: "m".into(),
        };
        assert!(out
            .clone()
            .shorten(5)
            .expect_err("refused")
            .contains("1 to 4"));
        assert!(out.clone().shorten(0).is_err());
        out.shorten(2).expect("accepted");
        assert_eq!(out.vectors[0], [1.0, 0.0]);
        // A prefix that is all zeros stays zeros rather than dividing by zero.
        assert_eq!(out.vectors[1], [0.0, 0.0]);
    }
}
