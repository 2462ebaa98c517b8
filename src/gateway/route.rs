//! Routes: what a request's `model` resolves to (an alias's ordered targets, or one
//! `provider/model`), and the attempt policy (retries, backoff) of its config. The failure
//! kinds routes name live with the configuration (`config::FailureKind`).

use std::time::Duration;

pub use super::config::FailureKind;
use super::config::RouteConfig;
use crate::backoff::Backoff;

/// One `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Provider name (`local` or a configured one).
    pub provider: String,
    /// Model name as the provider knows it.
    pub model: String,
}

impl Target {
    /// Splits `provider/model` (the model may itself contain `/`).
    pub fn parse(s: &str) -> Option<Self> {
        let (provider, model) = s.split_once('/')?;
        (!provider.is_empty() && !model.is_empty()).then(|| Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
        })
    }

    /// `provider/model`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// The step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same target again (the backoff was waited).
    Retry,
    /// Go on to the route's next target.
    NextTarget,
    /// Give up: the failure is not one the route moves on from.
    Stop,
}

/// A resolved route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The alias, or the `provider/model` asked for directly.
    pub name: String,
    /// Targets in order.
    pub targets: Vec<Target>,
    /// The budget fallback target.
    pub budget_fallback: Option<Target>,
    /// The policy.
    pub policy: RouteConfig,
}

impl Route {
    /// A route from its configuration (targets already validated).
    pub fn from_config(name: &str, c: &RouteConfig) -> Self {
        Self {
            name: name.to_owned(),
            targets: c.targets.iter().filter_map(|t| Target::parse(t)).collect(),
            budget_fallback: c.budget_fallback.as_deref().and_then(Target::parse),
            policy: c.clone(),
        }
    }

    /// Delay before retry number `retry` (1-based) on the same target.
    pub fn backoff(&self, retry: u32) -> Duration {
        Backoff::Exponential {
            base_ms: self.policy.backoff_ms,
            max_ms: self.policy.backoff_ms.saturating_mul(16),
        }
        .delay(retry)
    }

    /// What to do after attempt `attempt` (0-based) on `target` failed with `kind`: waits the
    /// backoff and says [`Next::Retry`], or moves on, or stops.
    pub async fn after_failure(&self, target: &Target, kind: FailureKind, attempt: u32) -> Next {
        metrics::counter!("groundwork_gateway_attempt_failures_total",
            "provider" => target.provider.clone(), "kind" => kind.as_str())
        .increment(1);
        if self.retries(kind) && attempt < self.policy.retries {
            tokio::time::sleep(self.backoff(attempt + 1)).await;
            Next::Retry
        } else if self.falls_back(kind) {
            Next::NextTarget
        } else {
            Next::Stop
        }
    }

    /// Whether `kind` gets another attempt on the same target.
    pub fn retries(&self, kind: FailureKind) -> bool {
        self.policy.retry_on.contains(&kind)
    }

    /// Whether `kind` moves on to the next target.
    pub fn falls_back(&self, kind: FailureKind) -> bool {
        self.policy.fallback_on.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_slashes_in_model_names() {
        let t = Target::parse("vllm/meta-llama/Llama-3-8B").expect("parses");
        assert_eq!(t.provider, "vllm");
        assert_eq!(t.model, "meta-llama/Llama-3-8B");
        assert!(Target::parse("nomodel").is_none());
        assert!(Target::parse("/x").is_none());
    }
}
