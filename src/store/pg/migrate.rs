//! Versioned schema of the PostgreSQL store. Migrations only ever get appended; a shipped one
//! is never edited (the SQL lives in `sql/postgres/`). Each applies in its own transaction under
//! an advisory lock, so processes starting together migrate once.

use postgres::Client;

use crate::store::{Result, StoreError};

/// Every migration, oldest first: one SQL file each under `sql/postgres/`, numbered.
const MIGRATIONS: &[&str] = &[
    include_str!("../sql/postgres/0001_schema.sql"),
    include_str!("../sql/postgres/0002_replicas.sql"),
    include_str!("../sql/postgres/0003_claims.sql"),
    include_str!("../sql/postgres/0004_index_changes.sql"),
    include_str!("../sql/postgres/0005_budgets.sql"),
    include_str!("../sql/postgres/0006_task_claims.sql"),
    include_str!("../sql/postgres/0007_agent_leases.sql"),
    include_str!("../sql/postgres/0008_rate_buckets.sql"),
    include_str!("../sql/postgres/0009_kb_rerank.sql"),
];

/// Key of the advisory lock held while migrating ("groundwk" in ASCII).
const LOCK: i64 = 0x67726f756e64776b;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Migration(e.to_string())
}

/// Brings the schema to the latest version; refuses a database migrated by a newer binary.
pub(super) fn to_latest(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .map_err(failed)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .map_err(failed)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(failed)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {current}, newer than this binary's {known}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql)
            .map_err(|e| StoreError::Migration(format!("migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(failed)
}
