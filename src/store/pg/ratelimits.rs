//! [`RateStore`] on PostgreSQL: one row per bucket, locked in key order.

use super::PgStore;
use crate::store::ratelimits::{RateStore, StoredBucket};
use crate::store::Result;

impl RateStore for PgStore {
    fn with_buckets(
        &self,
        keys: &[String],
        f: &mut dyn FnMut(f64, &mut [Option<StoredBucket>]) -> bool,
    ) -> Result<()> {
        let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        // READ COMMITTED: a take that waited on the row lock reads the row its predecessor
        // left. Not flushed before answering (like the workflow claims): a database crash may
        // forget the latest takes, which only ever gives back a little allowance.
        self.write_claims(|tx| {
            tx.execute(
                "INSERT INTO rate_buckets (key) SELECT unnest($1::TEXT[]) ORDER BY 1
                 ON CONFLICT (key) DO NOTHING",
                &[&sorted],
            )?;
            let rows = tx.query(
                "SELECT key, level, at, EXTRACT(EPOCH FROM clock_timestamp())::FLOAT8
                   FROM rate_buckets WHERE key = ANY($1) ORDER BY key FOR UPDATE",
                &[&sorted],
            )?;
            let now: f64 = rows.first().map(|r| r.get(3)).unwrap_or_default();
            let mut buckets: Vec<Option<StoredBucket>> = keys
                .iter()
                .map(|k| {
                    rows.iter()
                        .find(|r| r.get::<_, &str>(0) == k)
                        .and_then(|r| {
                            r.get::<_, Option<f64>>(1).map(|level| StoredBucket {
                                level,
                                at: r.get(2),
                            })
                        })
                })
                .collect();
            if !f(now, &mut buckets) {
                return Ok(());
            }
            let (mut names, mut levels, mut ats) = (Vec::new(), Vec::new(), Vec::new());
            for (k, b) in keys.iter().zip(&buckets) {
                if let Some(b) = b {
                    names.push(k.as_str());
                    levels.push(b.level);
                    ats.push(b.at);
                }
            }
            tx.execute(
                "UPDATE rate_buckets b SET level = u.level, at = u.at
                   FROM unnest($1::TEXT[], $2::FLOAT8[], $3::FLOAT8[]) AS u(key, level, at)
                  WHERE b.key = u.key",
                &[&names, &levels, &ats],
            )?;
            Ok(())
        })
    }
}
