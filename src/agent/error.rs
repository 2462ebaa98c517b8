//! The agent runtime's errors. The HTTP mapping lives in `api`.

use chrono::{DateTime, Utc};

use crate::gateway::GatewayError;
use crate::service::ServiceError;
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
    /// The knowledge-base service failed (search, scopes).
    #[error(transparent)]
    Service(#[from] ServiceError),
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
            other => AgentError::Store(other),
        }
    }
}

impl AgentError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NotFound { .. } => "not_found",
            AgentError::Invalid(_) => "invalid_request",
            AgentError::VersionMismatch { .. } => "version_mismatch",
            AgentError::BudgetExceeded { .. } => "budget_exceeded",
            AgentError::Unavailable(_) => "unavailable",
            AgentError::Service(e) => e.code(),
            AgentError::Gateway(e) => e.code(),
            AgentError::Store(e) if e.is_retryable() => "store_busy",
            AgentError::Store(_) => "store_error",
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
