//! Errors of the gateway, sorted the way callers need them: bad input, refusals (guardrail,
//! budget), upstream failures after retries and fallback, and our own faults.

use super::budget::Exceeded;
use super::route::FailureKind;
use crate::store::StoreError;

/// Why a gateway call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// `model` names no route and no `provider/model`.
    #[error("unknown model `{0}`: use a route alias or provider/model (GET /v1/models)")]
    UnknownModel(String),
    /// A guardrail refused the prompt.
    #[error("the prompt was blocked by guardrail `{0}`")]
    Blocked(String),
    /// A budget would be exceeded.
    #[error("budget exceeded: {scope} `{subject}` has spent {spent:.6} of {limit:.6} USD", scope = .0.scope.column().unwrap_or("global"), subject = .0.subject, spent = .0.spent_usd, limit = .0.limit_usd)]
    BudgetExceeded(Exceeded),
    /// Every attempt failed; `kind` is the last failure's.
    #[error("the model provider failed after {attempts} attempt(s): {message}")]
    Upstream {
        /// Last failure's kind.
        kind: FailureKind,
        /// Last failure's message.
        message: String,
        /// Attempts made.
        attempts: usize,
    },
    /// A stream broke after text was sent and could not be resumed without repeating it.
    #[error("the answer stream was interrupted: {0}")]
    Interrupted(String),
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GatewayError {
    /// Stable code for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Invalid(_) => "invalid_request",
            GatewayError::UnknownModel(_) => "model_not_found",
            GatewayError::Blocked(_) => "guardrail_blocked",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::Upstream { kind, .. } => match kind {
                FailureKind::Timeout => "upstream_timeout",
                FailureKind::RateLimited => "upstream_rate_limited",
                FailureKind::BadRequest => "upstream_rejected",
                FailureKind::Overloaded => "overloaded",
                _ => "upstream_error",
            },
            GatewayError::Interrupted(_) => "stream_interrupted",
            GatewayError::Store(_) => "internal",
        }
    }
}

/// Result alias of the gateway.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
