//! The agent runtime's errors, classified in the crate's one vocabulary
//! ([`crate::error::Classify`]); the HTTP mapping lives in `api`.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::error::{Classify, ErrorKind, Foreign};
use crate::gateway::GatewayError;
use crate::principal::Forbidden;
use crate::store::StoreError;

/// Errors of agents.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No such thing for this agent and tenant.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// The id given.
        id: String,
    },
    /// The request's content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A compare-and-set write named another version than the current one.
    #[error("the agent is at version {current}, not {expected}")]
    VersionMismatch {
        /// Version the client named.
        expected: u64,
        /// The agent's version.
        current: u64,
    },
    /// The agent's own spending limit is reached.
    #[error("the agent's budget of {limit_usd} USD is spent ({spent_usd:.6} USD in this window)")]
    BudgetExceeded {
        /// Limit, USD.
        limit_usd: f64,
        /// Spent in the window, USD.
        spent_usd: f64,
        /// When the window ends.
        resets_at: Option<DateTime<Utc>>,
    },
    /// The runtime is stopping.
    #[error("the agent runtime is {0}")]
    Unavailable(&'static str),
    /// Another replica holds the agent (its requests are forwarded there).
    #[error("the agent is active on replica {replica}; ask again (its requests go there)")]
    Elsewhere {
        /// That replica's id.
        replica: String,
        /// Where it answers.
        address: String,
    },
    /// The caller lacks a scope.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The knowledge bases failed (listing, search, embeddings): their own error, as is.
    #[error(transparent)]
    Knowledge(Foreign),
    /// A model call failed.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AgentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => AgentError::NotFound { kind, id },
            StoreError::Invalid(m) => AgentError::Invalid(m),
            other => AgentError::Store(other),
        }
    }
}

impl Classify for AgentError {
    fn kind(&self) -> ErrorKind {
        match self {
            AgentError::NotFound { .. } => ErrorKind::NotFound,
            AgentError::Invalid(_) => ErrorKind::Invalid,
            AgentError::VersionMismatch { .. } => ErrorKind::PreconditionFailed,
            AgentError::BudgetExceeded { .. } => ErrorKind::RateLimited,
            AgentError::Unavailable(_) | AgentError::Elsewhere { .. } => ErrorKind::Unavailable,
            AgentError::Forbidden(_) => ErrorKind::Forbidden,
            AgentError::Knowledge(e) => e.kind(),
            AgentError::Gateway(e) => e.kind(),
            AgentError::Store(e) if e.is_retryable() => ErrorKind::Unavailable,
            AgentError::Store(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AgentError::NotFound { .. } => "not_found",
            AgentError::Invalid(_) => "invalid_request",
            AgentError::VersionMismatch { .. } => "version_mismatch",
            AgentError::BudgetExceeded { .. } => "budget_exceeded",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::Elsewhere { .. } => "agent_elsewhere",
            AgentError::Forbidden(_) => "forbidden",
            AgentError::Knowledge(e) => e.code(),
            AgentError::Gateway(e) => e.code(),
            AgentError::Store(e) if e.is_retryable() => "store_busy",
            AgentError::Store(_) => "store_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AgentError::BudgetExceeded { resets_at, .. } => Some(
                resets_at
                    .map(|t| (t - Utc::now()).num_seconds().max(1) as u64)
                    .unwrap_or(3600),
            ),
            AgentError::Unavailable(_) | AgentError::Elsewhere { .. } => Some(1),
            AgentError::Store(e) if e.is_retryable() => Some(1),
            AgentError::Knowledge(e) => e.retry_after(),
            AgentError::Gateway(e) => e.retry_after(),
            _ => None,
        }
    }

    fn rate_limit(&self) -> Option<(u64, u64, u64)> {
        match self {
            AgentError::Knowledge(e) => e.rate_limit(),
            AgentError::Gateway(e) => e.rate_limit(),
            _ => None,
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            AgentError::VersionMismatch { current, .. } => {
                extra.insert("current_version".into(), json!(current));
            }
            AgentError::BudgetExceeded {
                limit_usd,
                spent_usd,
                resets_at,
            } => {
                extra.insert("limit_usd".into(), json!(limit_usd));
                extra.insert("spent_usd".into(), json!(spent_usd));
                extra.insert("resets_at".into(), json!(resets_at));
            }
            AgentError::Elsewhere { replica, .. } => {
                extra.insert("replica".into(), json!(replica));
            }
            AgentError::Knowledge(e) => extra = e.details(),
            AgentError::Gateway(e) => extra = e.details(),
            _ => {}
        }
        extra
    }
}

/// Result alias for this module.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
