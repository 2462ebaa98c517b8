//! Rate limits per API key and per tenant: requests per minute on every authenticated route,
//! and model tokens per minute on the routes that call models.
//!
//! Each limit is a token bucket holding at most the per-minute figure and refilled
//! continuously. Every bucket that applies to a request is checked and taken under one lock,
//! so N concurrent requests against a limit of L admit exactly L. Pure bookkeeping: it owns
//! the buckets and must never do I/O or know about HTTP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub use crate::config::RateLimitConfig;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests.
    Requests,
    /// Model tokens.
    Tokens,
}

/// The tightest limit that applied to an admitted request (for `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The per-minute limit.
    pub limit: u64,
    /// What is left of it now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `key` or `tenant`.
    pub scope: &'static str,
    /// What was counted.
    pub unit: Unit,
    /// The per-minute limit.
    pub limit: u64,
    /// Seconds until the request could pass.
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

type BucketKey = (Unit, &'static str, String);

/// The buckets.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

impl RateLimiter {
    /// Limits from `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn limits(&self, unit: Unit) -> [(&'static str, u64); 2] {
        match unit {
            Unit::Requests => [
                ("key", self.config.key_rpm),
                ("tenant", self.config.tenant_rpm),
            ],
            Unit::Tokens => [
                ("key", self.config.key_tpm),
                ("tenant", self.config.tenant_tpm),
            ],
        }
    }

    /// Takes `amount` from the key's and the tenant's buckets, both or neither.
    pub fn admit(
        &self,
        key: &str,
        tenant: &str,
        unit: Unit,
        amount: u64,
        now: Instant,
    ) -> Result<Option<Quota>, Limited> {
        let limits = self.limits(unit);
        if limits.iter().all(|(_, l)| *l == 0) {
            return Ok(None);
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken: Vec<(BucketKey, u64)> = Vec::new();
        for (scope, limit) in limits {
            if limit == 0 {
                continue;
            }
            let subject = if scope == "key" { key } else { tenant };
            let k = (unit, scope, subject.to_owned());
            let b = refill(buckets.get(&k).copied(), limit, now);
            // A request larger than the whole bucket waits for a full one, then passes.
            let need = (amount as f64).min(limit as f64);
            if b.level < need {
                let per_sec = limit as f64 / 60.0;
                return Err(Limited {
                    scope,
                    unit,
                    limit,
                    retry_after_secs: ((need - b.level) / per_sec).ceil().max(1.0) as u64,
                });
            }
            buckets.insert(k.clone(), b);
            taken.push((k, limit));
        }
        let mut tightest: Option<Quota> = None;
        for (k, limit) in taken {
            if let Some(b) = buckets.get_mut(&k) {
                b.level = (b.level - amount as f64).max(0.0);
                let q = Quota {
                    limit,
                    remaining: b.level.floor() as u64,
                    reset_secs: ((limit as f64 - b.level) / (limit as f64 / 60.0)).ceil() as u64,
                };
                if tightest.is_none_or(|t| q.remaining < t.remaining) {
                    tightest = Some(q);
                }
            }
        }
        Ok(tightest)
    }

    /// Gives back `amount` taken by [`RateLimiter::admit`] (a call that used less).
    pub fn refund(&self, key: &str, tenant: &str, unit: Unit, amount: u64) {
        if amount == 0 {
            return;
        }
        let limits = self.limits(unit);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (scope, limit) in limits {
            let subject = if scope == "key" { key } else { tenant };
            if let Some(b) = buckets.get_mut(&(unit, scope, subject.to_owned())) {
                b.level = (b.level + amount as f64).min(limit as f64);
            }
        }
    }
}

fn refill(b: Option<Bucket>, limit: u64, now: Instant) -> Bucket {
    match b {
        None => Bucket {
            level: limit as f64,
            at: now,
        },
        Some(b) => {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            Bucket {
                level: (b.level + secs * limit as f64 / 60.0).min(limit as f64),
                at: now.max(b.at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn limiter(key_rpm: u64, tenant_rpm: u64) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            key_rpm,
            tenant_rpm,
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn concurrent_requests_admit_exactly_the_limit() {
        let l = Arc::new(limiter(37, 0));
        let now = Instant::now();
        let admitted: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| l.admit("k", "t", Unit::Requests, 1, now).is_ok())
                        .count()
                })
            })
            .map(|t| t.join().expect("thread"))
            .sum();
        assert_eq!(admitted, 37);
        let e = l
            .admit("k", "t", Unit::Requests, 1, now)
            .expect_err("empty");
        assert_eq!((e.scope, e.limit, e.retry_after_secs), ("key", 37, 2));
        // Another key is not affected; the bucket refills at 37 a minute (2.5 in 4 s).
        assert!(l.admit("k2", "t", Unit::Requests, 1, now).is_ok());
        let later = now + Duration::from_secs(4);
        assert!(l.admit("k", "t", Unit::Requests, 1, later).is_ok());
        assert!(l.admit("k", "t", Unit::Requests, 1, later).is_ok());
        assert!(l.admit("k", "t", Unit::Requests, 1, later).is_err());
    }

    #[test]
    fn the_tenant_limit_binds_all_its_keys_and_refusals_take_nothing() {
        let l = limiter(10, 15);
        let now = Instant::now();
        let ok = (0..40)
            .filter(|i| {
                l.admit(&format!("k{}", i % 4), "t", Unit::Requests, 1, now)
                    .is_ok()
            })
            .count();
        assert_eq!(ok, 15);
        let e = l
            .admit("k9", "t", Unit::Requests, 1, now)
            .expect_err("tenant");
        assert_eq!(e.scope, "tenant");
        // The refused request took nothing from the key's bucket.
        let q = l
            .admit("k9", "other", Unit::Requests, 1, now)
            .expect("ok")
            .expect("quota");
        assert_eq!((q.limit, q.remaining), (10, 9));
    }

    #[test]
    fn tokens_are_reserved_and_refunded() {
        let l = RateLimiter::new(RateLimitConfig {
            key_tpm: 1000,
            ..RateLimitConfig::default()
        });
        let now = Instant::now();
        assert!(l.admit("k", "t", Unit::Tokens, 600, now).is_ok());
        assert!(l.admit("k", "t", Unit::Tokens, 600, now).is_err());
        l.refund("k", "t", Unit::Tokens, 500);
        let q = l
            .admit("k", "t", Unit::Tokens, 600, now)
            .expect("ok")
            .expect("quota");
        assert_eq!(q.remaining, 300);
        assert!(l
            .admit("k", "t", Unit::Requests, 1, now)
            .expect("off")
            .is_none());
    }
}
