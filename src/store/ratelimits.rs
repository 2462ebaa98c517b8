//! Rate-limit buckets kept in the store, so that every replica takes from the same ones.
//!
//! It owns the rows and their locking only; the arithmetic of a bucket (refill, take, refuse)
//! belongs to `service::ratelimit`, which hands it in as a function. A store one process owns
//! keeps no buckets (that process counts in memory).

use super::Result;

/// One bucket as stored: what is left, as of when (seconds since the Unix epoch, on the
/// database's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredBucket {
    /// What is left.
    pub level: f64,
    /// As of this time.
    pub at: f64,
}

/// Buckets shared by replicas.
pub trait RateStore: Send + Sync {
    /// Locks the buckets named `keys` (unused ones are `None`: full) and calls `f` with the
    /// database's time and them; when `f` returns true, stores what it left in them. Callers
    /// on any replica queue on the same rows, so `f` always sees every earlier take.
    fn with_buckets(
        &self,
        keys: &[String],
        f: &mut dyn FnMut(f64, &mut [Option<StoredBucket>]) -> bool,
    ) -> Result<()>;
}
