//! Rate limits per API key and per tenant: requests per minute on every authenticated route,
//! and model tokens per minute on the routes that call models.
//!
//! Each limit is a token bucket holding at most the per-minute figure and refilled
//! continuously. Every bucket that applies to a request is checked and taken at once, all or
//! none, under one lock — a mutex in this process, or, when replicas share a PostgreSQL store,
//! the buckets' rows ([`RateStore`]) — so N concurrent requests against a limit of L admit
//! exactly L however many replicas they reach. It owns the bucket arithmetic and must never
//! know about HTTP; its only I/O is through the [`RateStore`] port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use crate::config::RateLimitConfig;
use crate::store::{RateStore, StoreError, StoredBucket};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests.
    Requests,
    /// Model tokens.
    Tokens,
}

impl Unit {
    const fn as_str(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
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

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// A limit is reached.
    Limited(Limited),
    /// The shared buckets could not be read: refused rather than let through uncounted.
    Store(StoreError),
}

/// Where the buckets live.
enum Buckets {
    /// In this process; times are seconds since `epoch`.
    Local {
        epoch: Instant,
        map: Mutex<HashMap<String, StoredBucket>>,
    },
    /// In the store all replicas share; times are the database's.
    Shared(Arc<dyn RateStore>),
}

/// The buckets.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Buckets,
}

/// A limit that applies: its scope, its per-minute figure and its bucket's name.
struct Applies {
    scope: &'static str,
    limit: u64,
    key: String,
}

impl RateLimiter {
    /// Limits from `config`, counted in this process.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Buckets::Local {
                epoch: Instant::now(),
                map: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Limits from `config`, counted in `store` together with every other replica.
    pub fn shared(config: RateLimitConfig, store: Arc<dyn RateStore>) -> Self {
        Self {
            config,
            buckets: Buckets::Shared(store),
        }
    }

    fn applies(&self, key: &str, tenant: &str, unit: Unit) -> Vec<Applies> {
        let limits = match unit {
            Unit::Requests => [
                ("key", self.config.key_rpm),
                ("tenant", self.config.tenant_rpm),
            ],
            Unit::Tokens => [
                ("key", self.config.key_tpm),
                ("tenant", self.config.tenant_tpm),
            ],
        };
        limits
            .into_iter()
            .filter(|(_, limit)| *limit > 0)
            .map(|(scope, limit)| Applies {
                scope,
                limit,
                key: format!(
                    "{}/{scope}/{}",
                    unit.as_str(),
                    if scope == "key" { key } else { tenant }
                ),
            })
            .collect()
    }

    /// Runs `f` on the named buckets under their lock; keeps what it left when it says so.
    /// `now` is the time of a local count (the shared buckets go by the database's clock).
    fn with_buckets(
        &self,
        applies: &[Applies],
        now: Instant,
        f: &mut dyn FnMut(f64, &mut [Option<StoredBucket>]) -> bool,
    ) -> Result<(), StoreError> {
        match &self.buckets {
            Buckets::Local { epoch, map } => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                let mut buckets: Vec<Option<StoredBucket>> =
                    applies.iter().map(|a| map.get(&a.key).copied()).collect();
                let t = now.saturating_duration_since(*epoch).as_secs_f64();
                if f(t, &mut buckets) {
                    for (a, b) in applies.iter().zip(buckets) {
                        if let Some(b) = b {
                            map.insert(a.key.clone(), b);
                        }
                    }
                }
                Ok(())
            }
            Buckets::Shared(store) => {
                let keys: Vec<String> = applies.iter().map(|a| a.key.clone()).collect();
                store.with_buckets(&keys, f)
            }
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
    ) -> Result<Option<Quota>, Refused> {
        let applies = self.applies(key, tenant, unit);
        if applies.is_empty() {
            return Ok(None);
        }
        let mut outcome = Ok(None);
        self.with_buckets(&applies, now, &mut |t, buckets| {
            outcome = take(&applies, buckets, unit, amount, t);
            outcome.is_ok()
        })
        .map_err(Refused::Store)?;
        outcome.map_err(Refused::Limited)
    }

    /// Gives back `amount` taken by [`RateLimiter::admit`] (a call that used less).
    pub fn refund(
        &self,
        key: &str,
        tenant: &str,
        unit: Unit,
        amount: u64,
    ) -> Result<(), StoreError> {
        let applies = self.applies(key, tenant, unit);
        if amount == 0 || applies.is_empty() {
            return Ok(());
        }
        self.with_buckets(&applies, Instant::now(), &mut |t, buckets| {
            for (a, b) in applies.iter().zip(buckets.iter_mut()) {
                if let Some(b) = b {
                    let refilled = refill(Some(*b), a.limit, t);
                    b.level = (refilled.level + amount as f64).min(a.limit as f64);
                    b.at = refilled.at;
                }
            }
            true
        })
    }
}

/// Takes `amount` from every bucket of `applies` at time `now`, all or none; returns the
/// tightest quota left, or the first limit that refuses.
fn take(
    applies: &[Applies],
    buckets: &mut [Option<StoredBucket>],
    unit: Unit,
    amount: u64,
    now: f64,
) -> Result<Option<Quota>, Limited> {
    let mut refilled = Vec::with_capacity(applies.len());
    for (a, b) in applies.iter().zip(buckets.iter()) {
        let b = refill(*b, a.limit, now);
        // A request larger than the whole bucket waits for a full one, then passes.
        let need = (amount as f64).min(a.limit as f64);
        if b.level < need {
            let per_sec = a.limit as f64 / 60.0;
            return Err(Limited {
                scope: a.scope,
                unit,
                limit: a.limit,
                retry_after_secs: ((need - b.level) / per_sec).ceil().max(1.0) as u64,
            });
        }
        refilled.push(b);
    }
    let mut tightest: Option<Quota> = None;
    for ((a, slot), mut b) in applies.iter().zip(buckets.iter_mut()).zip(refilled) {
        b.level = (b.level - amount as f64).max(0.0);
        *slot = Some(b);
        let q = Quota {
            limit: a.limit,
            remaining: b.level.floor() as u64,
            reset_secs: ((a.limit as f64 - b.level) / (a.limit as f64 / 60.0)).ceil() as u64,
        };
        if tightest.is_none_or(|t| q.remaining < t.remaining) {
            tightest = Some(q);
        }
    }
    Ok(tightest)
}

/// The bucket at `now`: full when never used, else refilled at `limit` a minute.
fn refill(b: Option<StoredBucket>, limit: u64, now: f64) -> StoredBucket {
    match b {
        None => StoredBucket {
            level: limit as f64,
            at: now,
        },
        Some(b) => StoredBucket {
            level: (b.level + (now - b.at).max(0.0) * limit as f64 / 60.0).min(limit as f64),
            at: now.max(b.at),
        },
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
        let Refused::Limited(e) = e else {
            panic!("{e:?}")
        };
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
        let Refused::Limited(e) = e else {
            panic!("{e:?}")
        };
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
        l.refund("k", "t", Unit::Tokens, 500).expect("refund");
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
