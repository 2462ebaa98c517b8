//! Errors of the gateway, sorted the way callers need them: bad input, refusals (guardrail,
//! budget), upstream failures after retries and fallback, and our own faults.

use serde_json::{json, Map, Value};

use super::budget::Exceeded;
use super::route::FailureKind;
use crate::error::{Classify, ErrorKind, INTERNAL_DETAIL};
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
    Store(StoreError),
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => GatewayError::Invalid(m),
            other => GatewayError::Store(other),
        }
    }
}

impl Classify for GatewayError {
    fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::Invalid(_) => ErrorKind::Invalid,
            GatewayError::UnknownModel(_) => ErrorKind::NotFound,
            GatewayError::Blocked(_) => ErrorKind::Refused,
            GatewayError::BudgetExceeded(_) => ErrorKind::RateLimited,
            GatewayError::Upstream { kind, .. } => match kind {
                FailureKind::Timeout => ErrorKind::UpstreamTimeout,
                FailureKind::RateLimited => ErrorKind::RateLimited,
                FailureKind::BadRequest => ErrorKind::Refused,
                FailureKind::Overloaded => ErrorKind::Unavailable,
                _ => ErrorKind::Upstream,
            },
            GatewayError::Interrupted(_) => ErrorKind::Upstream,
            GatewayError::Store(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
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

    fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::BudgetExceeded(x) => x
                .resets_at
                .map(|r| (r - chrono::Utc::now()).num_seconds().max(1) as u64),
            _ => None,
        }
    }

    /// An OpenAI-style `error` object (what OpenAI clients read), and a budget's figures.
    fn details(&self) -> Map<String, Value> {
        let code = self.code();
        let message = match self.kind() {
            ErrorKind::Internal => INTERNAL_DETAIL.to_owned(),
            _ => self.to_string(),
        };
        let mut extra = Map::new();
        extra.insert(
            "error".into(),
            json!({"message": message, "type": code, "code": code}),
        );
        if let GatewayError::BudgetExceeded(x) = self {
            extra.insert("limit_usd".into(), json!(x.limit_usd));
            extra.insert("spent_usd".into(), json!(x.spent_usd));
            extra.insert("budget_scope".into(), json!(x.scope));
            extra.insert("budget_subject".into(), json!(x.subject));
            extra.insert("resets_at".into(), json!(x.resets_at));
        }
        extra
    }
}

/// Result alias of the gateway.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
