//! The gateway's call log and usage report.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One gateway call.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallLog {
    /// Request id.
    pub id: String,
    /// When the call started.
    pub ts: DateTime<Utc>,
    /// `chat` or `embeddings`.
    pub kind: String,
    /// API key id (`demo` without keys).
    pub key_id: String,
    /// End user.
    pub user_id: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// Route asked for.
    pub route: String,
    /// Provider that answered last.
    pub provider: Option<String>,
    /// Model that answered last.
    pub model: Option<String>,
    /// `ok`, `error`, `blocked`, `budget_exceeded`, `cancelled`.
    pub status: String,
    /// Error code when not ok.
    pub error: Option<String>,
    /// Every attempt: target, outcome, error, milliseconds.
    #[schema(value_type = Vec<Object>)]
    pub attempts: serde_json::Value,
    /// Whole call, milliseconds.
    pub latency_ms: f64,
    /// Time to first token (streams) or to the answer, milliseconds.
    pub ttft_ms: Option<f64>,
    /// Prompt tokens.
    pub tokens_in: u32,
    /// Completion tokens.
    pub tokens_out: u32,
    /// Settled cost, USD.
    pub cost_usd: f64,
    /// `hit`, `miss`, `bypass`, `refresh` or `off`.
    pub cache: String,
    /// Guardrail decisions.
    #[schema(value_type = Vec<Object>)]
    pub guardrails: serde_json::Value,
    /// Streamed answer.
    pub stream: bool,
    /// The request body, if payload logging was on.
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
    /// The answer text, if payload logging was on.
    pub response: Option<String>,
}

/// One aggregate row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// Values of the grouping columns, by name.
    #[schema(value_type = Object)]
    pub group: serde_json::Map<String, serde_json::Value>,
    /// Calls.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// USD.
    pub cost_usd: f64,
}

impl From<crate::store::gateway::CallLog> for CallLog {
    fn from(r: crate::store::gateway::CallLog) -> Self {
        Self {
            id: r.id,
            ts: r.ts,
            kind: r.kind,
            key_id: r.key_id,
            user_id: r.user_id,
            agent_id: r.agent_id,
            route: r.route,
            provider: r.provider,
            model: r.model,
            status: r.status,
            error: r.error,
            attempts: r.attempts,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
            cache: r.cache,
            guardrails: r.guardrails,
            stream: r.stream,
            request: r.request,
            response: r.response,
        }
    }
}

impl From<crate::store::gateway::UsageRow> for UsageRow {
    fn from(r: crate::store::gateway::UsageRow) -> Self {
        Self {
            group: r.group,
            requests: r.requests,
            errors: r.errors,
            cache_hits: r.cache_hits,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_usd: r.cost_usd,
        }
    }
}
