//! [`SourceStore`] on PostgreSQL.

use chrono::{DateTime, Utc};
use postgres::Row;

use super::{docs, PgStore, DOC_COLS};
use crate::store::sources::{Source, SourceStore};
use crate::store::{Document, Result, StoreError};

const COLS: &str =
    "id, tenant_id, kb_id, path, schedule, next_sync_at, last_sync_at, last_workflow_id, created_at";

fn row(r: &Row) -> Source {
    Source {
        id: r.get(0),
        tenant_id: r.get(1),
        kb_id: r.get(2),
        path: r.get(3),
        schedule: r.get(4),
        next_sync_at: r.get(5),
        last_sync_at: r.get(6),
        last_workflow_id: r.get(7),
        created_at: r.get(8),
    }
}

impl SourceStore for PgStore {
    fn create_source(&self, s: &Source) -> Result<Source> {
        self.write(|tx| {
            // The unique (kb, path) constraint decides between two processes at once.
            let n = tx.execute(
                &format!(
                    "INSERT INTO sources ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (kb_id, path) DO NOTHING"
                ),
                &[
                    &s.id,
                    &s.tenant_id,
                    &s.kb_id,
                    &s.path,
                    &s.schedule,
                    &s.next_sync_at,
                    &s.last_sync_at,
                    &s.last_workflow_id,
                    &s.created_at,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict {
                    kind: "source",
                    name: s.path.clone(),
                });
            }
            Ok(s.clone())
        })
    }

    fn list_sources(&self, kb_id: &str) -> Result<Vec<Source>> {
        self.read(|c| {
            Ok(c.query(
                &format!("SELECT {COLS} FROM sources WHERE kb_id = $1 ORDER BY created_at"),
                &[&kb_id],
            )?
            .iter()
            .map(row)
            .collect())
        })
    }

    fn get_source(&self, kb_id: &str, id: &str) -> Result<Source> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {COLS} FROM sources WHERE kb_id = $1 AND id = $2"),
                &[&kb_id, &id],
            )?
            .as_ref()
            .map(row)
            .ok_or_else(|| StoreError::NotFound {
                kind: "source",
                id: id.to_owned(),
            })
        })
    }

    fn delete_source(&self, kb_id: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "DELETE FROM sources WHERE kb_id = $1 AND id = $2",
                &[&kb_id, &id],
            )? == 0
            {
                return Err(StoreError::NotFound {
                    kind: "source",
                    id: id.to_owned(),
                });
            }
            Ok(())
        })
    }

    fn due_sources(&self, now: DateTime<Utc>) -> Result<Vec<Source>> {
        self.read(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {COLS} FROM sources
                     WHERE next_sync_at IS NOT NULL AND next_sync_at <= $1
                     ORDER BY next_sync_at"
                ),
                &[&now],
            )?
            .iter()
            .map(row)
            .collect())
        })
    }

    fn mark_source_synced(
        &self,
        id: &str,
        workflow_id: &str,
        at: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE sources SET last_sync_at = $2, last_workflow_id = $3, next_sync_at = $4
                 WHERE id = $1",
                &[&id, &at, &workflow_id, &next],
            )?;
            Ok(())
        })
    }

    fn source_documents(&self, kb_id: &str, source_id: &str) -> Result<Vec<Document>> {
        // Candidates by text, the field checked on the parsed metadata: `::jsonb` in SQL
        // would fail the whole query on any document whose metadata holds `\u0000`.
        let pattern = crate::store::contains_pattern(source_id);
        let candidates = self.read(|c| {
            docs(c.query(
                &format!(
                    "SELECT {DOC_COLS} FROM documents
                     WHERE kb_id = $1 AND metadata LIKE $2 ESCAPE '\\'
                     ORDER BY created_at"
                ),
                &[&kb_id, &pattern],
            )?)
        })?;
        Ok(candidates
            .into_iter()
            .filter(|d| d.metadata.get("source_id").and_then(|v| v.as_str()) == Some(source_id))
            .collect())
    }
}
