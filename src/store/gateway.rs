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

/// One budget's account in one window, as a reservation draws on it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAccount {
    /// The budget (its place in the configuration, scope and window).
    pub budget: String,
    /// Whose spend (a key, user, agent or route; empty for the global budget).
    pub subject: String,
    /// Start of the window.
    pub window_start: DateTime<Utc>,
    /// Most USD settled + reserved in the window.
    pub limit_usd: f64,
    /// The call-log column the account's past spend is summed from when it is opened
    /// (`None`: every call).
    pub column: Option<&'static str>,
}

impl BudgetAccount {
    /// The account's key as a reservation records it.
    pub fn key(&self) -> (String, String, DateTime<Utc>) {
        (self.budget.clone(), self.subject.clone(), self.window_start)
    }
}

/// The accounts of a reservation as it is recorded (budget, subject, window start).
pub fn hold_accounts(accounts: &[BudgetAccount]) -> Result<String> {
    let keys: Vec<_> = accounts.iter().map(BudgetAccount::key).collect();
    serde_json::to_string(&keys).map_err(super::codec::json_err)
}

/// The accounts of a recorded reservation.
pub fn parse_hold_accounts(raw: &str) -> Result<Vec<(String, String, DateTime<Utc>)>> {
    serde_json::from_str(raw).map_err(super::codec::json_err)
}

/// A reservation to record.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetHold {
    /// Its id (settled by it).
    pub id: String,
    /// The reserving process (replica id).
    pub holder: String,
    /// USD reserved on every account.
    pub amount: f64,
    /// When it is released if never settled (its process died).
    pub expires_at: DateTime<Utc>,
    /// The accounts, all or none.
    pub accounts: Vec<BudgetAccount>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    /// The account (index into the hold's) whose limit the amount would pass.
    pub account: usize,
    /// Its settled spend in the window.
    pub settled_usd: f64,
}

/// Storage of the gateway.
pub trait GatewayStore: Send + Sync {
    /// Adds `hold.amount` to the reserved sum of every account of `hold`, or to none when one
    /// of them would then pass its limit (a free call always passes); accounts not yet open
    /// open with the window's spend in the call log. Exact under any concurrency, over every
    /// process sharing the store.
    fn reserve_budget(&self, hold: &BudgetHold) -> Result<std::result::Result<(), BudgetRefusal>>;
    /// Replaces reservation `id` on `accounts` by the real `cost` (the reserved amount is
    /// released unless the reservation had expired; the cost is settled either way).
    fn settle_budget(&self, id: &str, accounts: &[BudgetAccount], cost: f64) -> Result<()>;
    /// Releases reservations that expired (their process died before settling); returns how
    /// many.
    fn expire_budget_holds(&self, now: DateTime<Utc>) -> Result<usize>;
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
