//! The gateway's section of the configuration: providers, routes, prices, budgets, guardrails
//! and the response cache. Parsing and validation only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::budget::BudgetConfig;
use super::guard::GuardrailsConfig;

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Remote providers by name (`[gateway.providers.openai]`); `local` is built in.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Route aliases clients put in `model` (`[gateway.routes.fast]`).
    pub routes: BTreeMap<String, RouteConfig>,
    /// Model names clients send unchanged (their libraries' defaults) and the route — or
    /// `provider/model` — that answers them: `text-embedding-3-small = "embed"`. Merged over
    /// [`DEFAULT_ALIASES`]; an empty value removes a default.
    pub aliases: BTreeMap<String, String>,
    /// Price per million tokens by model (`"gpt-4o-mini"` or `"openai/gpt-4o-mini"`); an
    /// unlisted remote model is priced by `default_price`, local models cost 0.
    pub prices: BTreeMap<String, Price>,
    /// Price of remote models missing from `prices`.
    pub default_price: Price,
    /// Spend limits.
    pub budgets: Vec<BudgetConfig>,
    /// Rules applied to prompts and answers.
    pub guardrails: GuardrailsConfig,
    /// Response cache.
    pub cache: CacheConfig,
    /// Whether prompts and answers are stored in the call log (a route or a request may turn
    /// it off).
    pub log_payloads: bool,
    /// The local chat model: a GGUF file or a folder holding one. Default:
    /// `models/SmolLM2-135M-Instruct`.
    pub local_chat_model: Option<PathBuf>,
    /// Local generations queued before new ones are refused.
    pub local_queue: usize,
    /// Longest local context (prompt + answer), tokens.
    pub local_context_tokens: usize,
    /// Penalty on tokens the local model generated recently (1: none).
    pub local_repeat_penalty: f32,
    /// The local chat model's forward pass (`native` by default; `candle` is the reference).
    pub local_engine: super::local::LocalEngine,
    /// Local rerankers: a name (the model of `local/<name>` targets) and a sentence-transformers
    /// `CrossEncoder` folder (BERT-family, one output), loaded at start.
    pub local_rerankers: BTreeMap<String, PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let mut routes = BTreeMap::new();
        routes.insert(
            "fast".to_owned(),
            RouteConfig {
                targets: vec![format!("local/{}", super::LOCAL_CHAT_MODEL)],
                ..RouteConfig::default()
            },
        );
        // Agents answer on `main`; point it at a frontier model in production.
        routes.insert(
            "main".to_owned(),
            RouteConfig {
                targets: vec![format!("local/{}", super::LOCAL_CHAT_MODEL)],
                ..RouteConfig::default()
            },
        );
        routes.insert(
            "embed".to_owned(),
            RouteConfig {
                targets: vec![format!("local/{}", super::LOCAL_EMBED_MODEL)],
                ..RouteConfig::default()
            },
        );
        Self {
            providers: BTreeMap::new(),
            routes,
            aliases: BTreeMap::new(),
            prices: BTreeMap::new(),
            default_price: Price {
                input: 0.0,
                output: 0.0,
            },
            budgets: Vec::new(),
            guardrails: GuardrailsConfig::default(),
            cache: CacheConfig::default(),
            log_payloads: true,
            local_chat_model: None,
            local_queue: 32,
            local_context_tokens: 4096,
            local_repeat_penalty: 1.15,
            local_engine: Default::default(),
            local_rerankers: BTreeMap::new(),
        }
    }
}

/// Which wire format a remote provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's Chat Completions and Embeddings APIs.
    Openai,
    /// Any server speaking OpenAI's API (vLLM, Ollama, llama.cpp server).
    OpenaiCompatible,
    /// Anthropic's Messages API.
    Anthropic,
    /// Cohere's rerank API (`/v2/rerank`).
    Cohere,
    /// Jina's rerank API.
    Jina,
    /// Voyage's rerank API.
    Voyage,
    /// text-embeddings-inference's `/rerank` (`base_url` required).
    Tei,
}

/// One remote provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`. Required for
    /// `openai_compatible` and `tei`; the vendor's public URL otherwise.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The key itself (prefer `api_key_env`). Never logged.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Environment variable holding the key (default `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Concurrent connections kept open to the provider.
    #[serde(default = "default_pool")]
    pub max_idle_connections: usize,
}

fn default_pool() -> usize {
    256
}

/// A string that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

/// One route: an ordered list of targets and how failures move between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// `provider/model` in order of preference; later ones are fallbacks.
    pub targets: Vec<String>,
    /// Further attempts on the same target after a retryable failure.
    pub retries: u32,
    /// First retry delay, milliseconds; doubles per retry (with jitter).
    pub backoff_ms: u64,
    /// Longest wait for the first byte of an answer, milliseconds.
    pub first_byte_timeout_ms: u64,
    /// Longest time one attempt may take in all, milliseconds.
    pub total_timeout_ms: u64,
    /// Failures retried on the same target.
    pub retry_on: Vec<FailureKind>,
    /// Failures that move on to the next target (after retries).
    pub fallback_on: Vec<FailureKind>,
    /// Target used when a budget refuses the route's targets (typically a local model).
    pub budget_fallback: Option<String>,
    /// Seconds a cached answer stays valid; 0 disables caching on this route.
    pub cache_ttl_secs: u64,
    /// Cache answers of sampled (temperature > 0) requests too.
    pub cache_nondeterministic: bool,
    /// Overrides `gateway.log_payloads`.
    pub log_payloads: Option<bool>,
    /// Completion tokens assumed (and asked for) when a request sets no `max_tokens`.
    pub default_max_tokens: u32,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            retries: 2,
            backoff_ms: 200,
            first_byte_timeout_ms: 30_000,
            total_timeout_ms: 300_000,
            retry_on: FailureKind::TRANSIENT.to_vec(),
            fallback_on: FailureKind::TRANSIENT.to_vec(),
            budget_fallback: None,
            cache_ttl_secs: 3600,
            cache_nondeterministic: false,
            log_payloads: None,
            default_max_tokens: 1024,
        }
    }
}

/// `[gateway.cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether answers are cached at all.
    pub enabled: bool,
    /// Largest total size of cached answers, bytes; the least recently used go first.
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 256 << 20,
        }
    }
}

/// The model names OpenAI clients send by default, answered by the embedded routes: embedding
/// models by `embed`, chat models by `main`.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("text-embedding-3-small", "embed"),
    ("text-embedding-3-large", "embed"),
    ("text-embedding-ada-002", "embed"),
    ("gpt-3.5-turbo", "main"),
    ("gpt-4", "main"),
    ("gpt-4-turbo", "main"),
    ("gpt-4o", "main"),
    ("gpt-4o-mini", "main"),
    ("gpt-4.1", "main"),
    ("gpt-4.1-mini", "main"),
    ("gpt-4.1-nano", "main"),
    ("gpt-5", "main"),
    ("gpt-5-mini", "main"),
    ("gpt-5-nano", "main"),
];

impl GatewayConfig {
    /// Every model alias in force: the defaults whose route exists, overlaid by
    /// `gateway.aliases` (an empty value removes one).
    pub fn aliases(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = DEFAULT_ALIASES
            .iter()
            .filter(|(_, to)| self.routes.contains_key(*to))
            .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
            .collect();
        for (from, to) in &self.aliases {
            if to.is_empty() {
                out.remove(from);
            } else {
                out.insert(from.clone(), to.clone());
            }
        }
        out.retain(|from, _| !self.routes.contains_key(from));
        out
    }

    /// Checks what the types cannot: targets name known providers, limits are positive.
    pub fn validate(&self) -> Result<(), String> {
        for (from, to) in &self.aliases {
            if self.routes.contains_key(from) {
                return Err(format!(
                    "gateway.aliases.\"{from}\": a route of that name exists; rename one"
                ));
            }
            let known = to.is_empty()
                || self.routes.contains_key(to)
                || to.split_once('/').is_some_and(|(p, m)| {
                    !m.is_empty() && (p == "local" || self.providers.contains_key(p))
                });
            if !known {
                return Err(format!(
                    "gateway.aliases.\"{from}\" = \"{to}\": name a route or provider/model"
                ));
            }
        }
        for (name, route) in &self.routes {
            if route.targets.is_empty() {
                return Err(format!("gateway.routes.{name}: targets must not be empty"));
            }
            for t in route.targets.iter().chain(route.budget_fallback.iter()) {
                let (provider, model) = t.split_once('/').ok_or_else(|| {
                    format!("gateway.routes.{name}: target `{t}` must read provider/model")
                })?;
                if provider != "local" && !self.providers.contains_key(provider) {
                    return Err(format!(
                        "gateway.routes.{name}: target `{t}` names an unknown provider"
                    ));
                }
                if model.is_empty() {
                    return Err(format!("gateway.routes.{name}: target `{t}` has no model"));
                }
            }
            if route.first_byte_timeout_ms == 0 || route.total_timeout_ms == 0 {
                return Err(format!("gateway.routes.{name}: timeouts must be positive"));
            }
        }
        for (name, p) in &self.providers {
            if name == "local" {
                return Err("gateway.providers.local is built in".to_owned());
            }
            if matches!(p.kind, ProviderKind::OpenaiCompatible | ProviderKind::Tei)
                && p.base_url.is_none()
            {
                return Err(format!("gateway.providers.{name}: base_url is required"));
            }
        }
        for b in &self.budgets {
            if b.limit_usd.is_nan() || b.limit_usd < 0.0 {
                return Err("gateway.budgets: limit_usd must be a non-negative number".into());
            }
        }
        if !(1.0..=2.0).contains(&self.local_repeat_penalty) {
            return Err("gateway.local_repeat_penalty must be within 1 and 2".into());
        }
        if self.local_queue == 0 || self.local_context_tokens < 64 {
            return Err("gateway.local_queue must be positive, local_context_tokens ≥ 64".into());
        }
        self.guardrails.compile().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    /// Every TOML block of the gateway guide parses and validates.
    #[test]
    fn the_guides_examples_are_valid_configuration() {
        crate::config::assert_guide_blocks_are_valid("data/guide/model-gateway.md");
    }

    #[test]
    fn aliases_merge_over_the_defaults_and_must_name_a_route() {
        let mut c = super::GatewayConfig::default();
        let a = c.aliases();
        assert_eq!(a["text-embedding-3-small"], "embed");
        assert_eq!(a["gpt-4o-mini"], "main");
        c.aliases.insert("gpt-4o-mini".into(), "fast".into());
        c.aliases.insert("gpt-4o".into(), String::new());
        c.aliases
            .insert("nomic-embed-text".into(), "local/all-minilm-l6-v2".into());
        c.validate().expect("valid");
        let a = c.aliases();
        assert_eq!(a["gpt-4o-mini"], "fast");
        assert!(!a.contains_key("gpt-4o"));
        assert_eq!(a["nomic-embed-text"], "local/all-minilm-l6-v2");
        c.aliases.insert("x".into(), "nowhere".into());
        assert!(c.validate().expect_err("refused").contains("name a route"));
        c.aliases.remove("x");
        c.aliases.insert("main".into(), "fast".into());
        assert!(c
            .validate()
            .expect_err("refused")
            .contains("route of that name"));
    }

    #[test]
    fn routes_must_name_known_providers() {
        let mut c = super::GatewayConfig::default();
        c.routes.insert(
            "x".into(),
            super::RouteConfig {
                targets: vec!["nowhere/model".into()],
                ..super::RouteConfig::default()
            },
        );
        assert!(c
            .validate()
            .expect_err("refused")
            .contains("unknown provider"));
        let secret = super::Secret("sk-live-123".into());
        assert_eq!(format!("{secret:?}"), "\"***\"");
    }
}

/// Why an attempt failed, as routes name it in `retry_on` / `fallback_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No first byte, or no end, within the route's timeouts.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// 429 from the provider.
    RateLimited,
    /// 5xx from the provider.
    Server,
    /// The provider's answer could not be read (malformed JSON, a cut stream).
    Malformed,
    /// The provider refused the request (4xx other than 429): retrying will not help.
    BadRequest,
    /// The provider refused the credentials.
    Auth,
    /// The local model's queue is full.
    Overloaded,
}

impl FailureKind {
    /// The failures worth another attempt by default.
    pub const TRANSIENT: [FailureKind; 6] = [
        FailureKind::Timeout,
        FailureKind::Connection,
        FailureKind::RateLimited,
        FailureKind::Server,
        FailureKind::Malformed,
        FailureKind::Overloaded,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connection => "connection",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Server => "server",
            FailureKind::Malformed => "malformed",
            FailureKind::BadRequest => "bad_request",
            FailureKind::Auth => "auth",
            FailureKind::Overloaded => "overloaded",
        }
    }
}
