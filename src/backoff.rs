//! How long to wait before the next attempt: the one retry delay policy of the codebase
//! (workflow steps, agent tasks, gateway attempts).
//!
//! Owns the policy and its jittered delays only; it must never sleep or retry anything itself.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backoff {
    /// The same delay every time.
    Constant {
        /// Delay.
        delay_ms: u64,
    },
    /// `delay × attempt`.
    Linear {
        /// Delay per failed attempt.
        delay_ms: u64,
    },
    /// `base × 2^(attempt-1)`, at most `max`.
    Exponential {
        /// First delay.
        base_ms: u64,
        /// Ceiling.
        max_ms: u64,
    },
}

impl Backoff {
    /// Delay after failed attempt `attempt` (1-based), with "equal jitter": half fixed, half
    /// random, so that retries of many runs do not fall on the same instant.
    pub fn delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let ms = match *self {
            Backoff::Constant { delay_ms } => delay_ms,
            Backoff::Linear { delay_ms } => delay_ms.saturating_mul(n as u64),
            Backoff::Exponential { base_ms, max_ms } => {
                base_ms.saturating_mul(1u64 << (n - 1).min(30)).min(max_ms)
            }
        };
        let half = ms / 2;
        let jitter = if half > 0 {
            rand::rng().random_range(0..=half)
        } else {
            0
        };
        Duration::from_millis(ms - half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_their_jitter_and_cap() {
        let b = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1_000,
        };
        for attempt in 1..=8u32 {
            let full = (100u64 << (attempt - 1)).min(1_000);
            let d = b.delay(attempt).as_millis() as u64;
            assert!(
                (full - full / 2..=full).contains(&d),
                "attempt {attempt}: {d} ms"
            );
        }
        assert_eq!(Backoff::Constant { delay_ms: 0 }.delay(3), Duration::ZERO);
        let linear = Backoff::Linear { delay_ms: 10 }.delay(3).as_millis();
        assert!((15..=30).contains(&linear), "{linear}");
    }
}
