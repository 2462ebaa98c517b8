//! The one error vocabulary: every module's error says what kind of failure it is, and the API
//! turns kinds into HTTP in one place (`api::error`).
//!
//! Owns the kinds and the [`Classify`] trait only. It must never know a module's error type or
//! anything of HTTP: modules implement the trait, the API reads it.

use serde_json::{Map, Value};

/// What a client reads of an internal failure (the cause goes to the log).
pub const INTERNAL_DETAIL: &str =
    "the server failed to process the request; the cause is in its log";

/// What kind of failure an error is, as a caller must treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing named does not exist (or is another tenant's).
    NotFound,
    /// A name is taken, or the state does not allow the change.
    Conflict,
    /// A compare-and-set named another version than the current one.
    PreconditionFailed,
    /// Well-formed input with unacceptable content.
    Invalid,
    /// Input refused by a policy (a guardrail), or rejected by a model provider.
    Refused,
    /// Input larger than allowed.
    TooLarge,
    /// Input of a type that cannot be read.
    UnsupportedMedia,
    /// Missing or unknown credentials.
    Unauthenticated,
    /// The caller lacks a scope.
    Forbidden,
    /// A rate limit, queue or budget is reached; retry later.
    RateLimited,
    /// Starting, stopping, busy or overloaded; retry soon.
    Unavailable,
    /// A model provider did not answer in time.
    UpstreamTimeout,
    /// A model provider failed.
    Upstream,
    /// Our own fault; the cause is in the log.
    Internal,
}

impl ErrorKind {
    /// Whether the same request may succeed later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Unavailable
                | ErrorKind::UpstreamTimeout
                | ErrorKind::Upstream
        )
    }
}

/// An error that knows its kind, its stable code and what a client may read of it.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
    /// Stable machine-readable code (`not_found`, `budget_exceeded`…).
    fn code(&self) -> &'static str;
    /// Seconds a client should wait before retrying, where known.
    fn retry_after(&self) -> Option<u64> {
        None
    }
    /// Members particular to the failure (a budget's limit, the refused files…).
    fn details(&self) -> Map<String, Value> {
        Map::new()
    }
    /// The request limit that refused it: (limit, remaining, seconds to reset).
    fn rate_limit(&self) -> Option<(u64, u64, u64)> {
        None
    }
    /// Whether the same request may succeed later.
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// An error of another module carried without knowing its type (a port's implementation
/// failed): its kind, code and details pass through unchanged.
#[derive(Debug)]
pub struct Foreign(pub Box<dyn Classify>);

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Foreign {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Classify for Foreign {
    fn kind(&self) -> ErrorKind {
        self.0.kind()
    }
    fn code(&self) -> &'static str {
        self.0.code()
    }
    fn retry_after(&self) -> Option<u64> {
        self.0.retry_after()
    }
    fn details(&self) -> Map<String, Value> {
        self.0.details()
    }
    fn rate_limit(&self) -> Option<(u64, u64, u64)> {
        self.0.rate_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the inner message")]
    struct Inner;

    impl Classify for Inner {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Conflict
        }
        fn code(&self) -> &'static str {
            "inner"
        }
    }

    /// A carried error reads exactly as the original: message, kind and code.
    #[test]
    fn a_foreign_error_passes_through_whole() {
        let e = Foreign(Box::new(Inner));
        assert_eq!(e.to_string(), "the inner message");
        assert_eq!((e.kind(), e.code()), (ErrorKind::Conflict, "inner"));
    }
}
