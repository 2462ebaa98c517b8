//! Records of the model gateway: the call log (which also carries settled spend) and the
//! response cache.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Page, Result};

/// One gateway call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallLog {
    /// Request id.
    pub id: String,
    /// Tenant.
    #[serde(skip)]
    pub tenant_id: String,
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
    pub guardrails: serde_json::Value,
    /// Streamed answer.
    pub stream: bool,
    /// The request body, if payload logging was on.
    pub request: Option<serde_json::Value>,
    /// The answer text, if payload logging was on.
    pub response: Option<String>,
}

/// Filters of the call log.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Tenant (required).
    pub tenant_id: String,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only calls since.
    pub since: Option<DateTime<Utc>>,
    /// Only calls before.
    pub until: Option<DateTime<Utc>>,
    /// Skip.
    pub offset: u64,
    /// Page size.
    pub limit: u64,
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// UTC day.
    Day,
    /// Model.
    Model,
    /// API key.
    Key,
    /// End user.
    User,
    /// Agent.
    Agent,
    /// Route.
    Route,
}

/// One aggregate row.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// Values of the grouping columns, by name.
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

/// A cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// Hash of the canonical request.
    pub key: String,
    /// Route it was cached for.
    pub route: String,
    /// The answer (JSON of the gateway's output type).
    pub value: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

/// Storage of the gateway.
pub trait GatewayStore: Send + Sync {
    /// Appends calls to the log (one transaction).
    fn insert_calls(&self, calls: &[CallLog]) -> Result<()>;
    /// A page of the log, newest first.
    fn calls(&self, q: &LogQuery) -> Result<Page<CallLog>>;
    /// Aggregates over the log.
    fn usage(
        &self,
        tenant_id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageRow>>;
    /// Settled spend since `since` where `column` (a log column) equals `subject` (all calls
    /// when `column` is `None`).
    fn spend_since(
        &self,
        column: Option<&'static str>,
        subject: &str,
        since: DateTime<Utc>,
    ) -> Result<f64>;
    /// A valid cache entry, marking it used.
    fn cache_get(&self, key: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>>;
    /// Stores an entry, then evicts least recently used ones until at most `max_bytes`.
    fn cache_put(&self, entry: &CacheEntry, max_bytes: u64) -> Result<()>;
}
