//! [`SourceStore`] on SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::{doc_row, RawDoc, SqliteStore, DOC_COLS};
use crate::store::sources::{Source, SourceStore};
use crate::store::{Document, Result, StoreError};

const COLS: &str =
    "id, tenant_id, kb_id, path, schedule, next_sync_at, last_sync_at, last_workflow_id, created_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Source> {
    Ok(Source {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        kb_id: r.get(2)?,
        path: r.get(3)?,
        schedule: r.get(4)?,
        next_sync_at: r.get(5)?,
        last_sync_at: r.get(6)?,
        last_workflow_id: r.get(7)?,
        created_at: r.get(8)?,
    })
}

impl SourceStore for SqliteStore {
    fn create_source(&self, s: &Source) -> Result<Source> {
        self.write(|tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sources WHERE kb_id = ?1 AND path = ?2)",
                params![s.kb_id, s.path],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict {
                    kind: "source",
                    name: s.path.clone(),
                });
            }
            tx.execute(
                &format!(
                    "INSERT INTO sources ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    s.id,
                    s.tenant_id,
                    s.kb_id,
                    s.path,
                    s.schedule,
                    s.next_sync_at,
                    s.last_sync_at,
                    s.last_workflow_id,
                    s.created_at
                ],
            )?;
            Ok(s.clone())
        })
    }

    fn list_sources(&self, kb_id: &str) -> Result<Vec<Source>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLS} FROM sources WHERE kb_id = ?1 ORDER BY created_at"
            ))?;
            let rows = stmt
                .query_map([kb_id], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn get_source(&self, kb_id: &str, id: &str) -> Result<Source> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {COLS} FROM sources WHERE kb_id = ?1 AND id = ?2"),
                params![kb_id, id],
                row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "source",
                id: id.to_owned(),
            })
        })
    }

    fn delete_source(&self, kb_id: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "DELETE FROM sources WHERE kb_id = ?1 AND id = ?2",
                params![kb_id, id],
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
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLS} FROM sources WHERE next_sync_at IS NOT NULL AND next_sync_at <= ?1
                 ORDER BY next_sync_at"
            ))?;
            let rows = stmt
                .query_map([now], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
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
                "UPDATE sources SET last_sync_at = ?2, last_workflow_id = ?3, next_sync_at = ?4
                 WHERE id = ?1",
                params![id, at, workflow_id, next],
            )?;
            Ok(())
        })
    }

    fn source_documents(&self, kb_id: &str, source_id: &str) -> Result<Vec<Document>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DOC_COLS} FROM documents
                 WHERE kb_id = ?1 AND json_extract(metadata, '$.source_id') = ?2
                 ORDER BY created_at"
            ))?;
            let items = stmt
                .query_map(params![kb_id, source_id], doc_row)?
                .map(|r| r.map_err(StoreError::from).and_then(RawDoc::finish))
                .collect::<Result<Vec<_>>>()?;
            Ok(items)
        })
    }
}
