//! Versioned schema. Migrations only ever get appended; a shipped one is never edited (the
//! SQL lives in `sql/sqlite/`, so that a schema reads as SQL).

use rusqlite_migration::{Migrations, M};

/// Every migration, oldest first: one SQL file each under `sql/sqlite/`, numbered.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("sql/sqlite/0001_schema.sql")),
        M::up(include_str!("sql/sqlite/0002_workflows.sql")),
        M::up(include_str!("sql/sqlite/0003_gateway.sql")),
        M::up(include_str!("sql/sqlite/0004_agents.sql")),
        M::up(include_str!("sql/sqlite/0005_extraction.sql")),
        M::up(include_str!("sql/sqlite/0006_replicas.sql")),
        M::up(include_str!("sql/sqlite/0007_claims.sql")),
        M::up(include_str!("sql/sqlite/0008_index_changes.sql")),
        M::up(include_str!("sql/sqlite/0009_budgets.sql")),
        M::up(include_str!("sql/sqlite/0010_task_claims.sql")),
        M::up(include_str!("sql/sqlite/0011_replica_address.sql")),
        M::up(include_str!("sql/sqlite/0012_kb_rerank.sql")),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
