//! [`ChangeStore`] on SQLite. One process owns the file, so nobody else follows its log; the
//! log is kept all the same (a store copied to PostgreSQL starts from it, and the same code
//! reads it on both).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{json_err, SqliteStore};
use crate::store::changes::{contiguous, ChangeKind, ChangeStore, IndexChange};
use crate::store::{flatten_metadata, Result, StoreError, StoredPoint};

impl ChangeStore for SqliteStore {
    fn index_changes(
        &self,
        kb_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<IndexChange>>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, document_id, removed, created_at FROM index_changes
                 WHERE kb_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![kb_id, after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, DateTime<Utc>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, kind, document_id, removed, at) = row?;
                out.push(IndexChange {
                    seq: seq as u64,
                    kind: ChangeKind::parse(&kind)
                        .ok_or_else(|| StoreError::Database(format!("unknown change {kind}")))?,
                    document_id,
                    removed: serde_json::from_str(&removed).map_err(json_err)?,
                    at,
                });
            }
            Ok(contiguous(after, out))
        })
    }

    fn index_seqs(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT id, index_seq FROM kbs")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn document_points(&self, document_id: &str) -> Result<Vec<StoredPoint>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.id,
                        CASE WHEN c.context = '' THEN c.text
                             ELSE c.context || char(10) || c.text END,
                        c.vector, d.metadata
                 FROM chunks c JOIN documents d ON d.id = c.document_id
                 JOIN kbs k ON k.id = d.kb_id
                 WHERE d.id = ?1 AND d.status = 'ready' AND c.generation = k.generation
                 ORDER BY c.id",
            )?;
            let mut rows = stmt.query([document_id])?;
            let mut out = Vec::new();
            let mut metadata = None;
            while let Some(r) = rows.next()? {
                let metadata = match &metadata {
                    Some(m) => m,
                    None => {
                        let raw: String = r.get(3)?;
                        let map: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(&raw).map_err(json_err)?;
                        metadata.insert(flatten_metadata(&map))
                    }
                };
                out.push(StoredPoint {
                    chunk_id: r.get::<_, i64>(0)? as u64,
                    document_id: document_id.to_owned(),
                    text: r.get(1)?,
                    vector: crate::util::f32s_from_le(
                        r.get_ref(2)?
                            .as_blob()
                            .map_err(|e| StoreError::Database(e.to_string()))?,
                    ),
                    metadata: metadata.clone(),
                });
            }
            Ok(out)
        })
    }

    fn await_changes(&self, timeout: Duration) -> Result<Vec<(String, u64)>> {
        // Only this process writes the file: there is nothing to hear about.
        std::thread::sleep(timeout);
        Ok(Vec::new())
    }

    fn forget_changes(&self, before: DateTime<Utc>) -> Result<usize> {
        self.write_checkpoint(|tx| {
            Ok(tx.execute(
                "DELETE FROM index_changes WHERE created_at < ?1
                   AND seq < (SELECT index_seq FROM kbs WHERE kbs.id = index_changes.kb_id)",
                [before],
            )?)
        })
    }
}
