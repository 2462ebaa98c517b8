//! [`ChangeStore`] on PostgreSQL: the log replicas follow, and `LISTEN groundwork_index` on a
//! connection of its own to hear of new entries as they commit.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::fallible_iterator::FallibleIterator;

use super::{json_err, off_runtime, u, Client, PgStore};
use crate::store::changes::{contiguous, ChangeKind, ChangeStore, IndexChange};
use crate::store::{flatten_metadata, Result, StoreError, StoredPoint};

/// The channel `bump_seq` notifies (payload: the knowledge base's id).
const CHANNEL: &str = "groundwork_index";

impl ChangeStore for PgStore {
    fn index_changes(
        &self,
        kb_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<IndexChange>>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT seq, kind, document_id, removed, created_at FROM index_changes
                 WHERE kb_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&kb_id, &(after as i64), &(limit as i64)],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let kind: &str = r.get(1);
                out.push(IndexChange {
                    seq: u(r, 0),
                    kind: ChangeKind::parse(kind)
                        .ok_or_else(|| StoreError::Database(format!("unknown change {kind}")))?,
                    document_id: r.get(2),
                    removed: serde_json::from_str(r.get(3)).map_err(json_err)?,
                    at: r.get(4),
                });
            }
            Ok(contiguous(after, out))
        })
    }

    fn index_seqs(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|c| {
            Ok(c.query("SELECT id, index_seq FROM kbs", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), u(r, 1)))
                .collect())
        })
    }

    fn document_points(&self, document_id: &str) -> Result<Vec<StoredPoint>> {
        self.read(|c| {
            let rows = c.query(
                "SELECT c.id,
                        CASE WHEN c.context = '' THEN c.text ELSE c.context || E'\\n' || c.text END,
                        c.vector, d.metadata
                 FROM chunks c JOIN documents d ON d.id = c.document_id
                 JOIN kbs k ON k.id = d.kb_id
                 WHERE d.id = $1 AND d.status = 'ready' AND c.generation = k.generation
                 ORDER BY c.id",
                &[&document_id],
            )?;
            let Some(first) = rows.first() else {
                return Ok(Vec::new());
            };
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(first.get(3)).map_err(json_err)?;
            let metadata = flatten_metadata(&map);
            Ok(rows
                .iter()
                .map(|r| StoredPoint {
                    chunk_id: u(r, 0),
                    document_id: document_id.to_owned(),
                    text: r.get(1),
                    vector: crate::util::f32s_from_le(r.get(2)),
                    metadata: metadata.clone(),
                })
                .collect())
        })
    }

    fn await_changes(&self, timeout: Duration) -> Result<Vec<(String, u64)>> {
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        let out = off_runtime(|| -> Result<Vec<String>> {
            if listener.as_ref().is_none_or(|c| c.is_closed()) {
                let mut client = Client::new(self.tls.connect(&self.config)?);
                client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                *listener = Some(client);
            }
            let client = listener.as_mut().expect("connected above");
            let mut notes = client.notifications();
            let mut payloads = Vec::new();
            let first = notes.timeout_iter(timeout).next()?;
            if let Some(n) = first {
                payloads.push(n.payload().to_owned());
                // Whatever else already arrived, without waiting again.
                let mut more = notes.iter();
                while let Some(n) = more.next()? {
                    payloads.push(n.payload().to_owned());
                }
            }
            Ok(payloads)
        });
        if out.is_err() {
            // Opened again on the next wait.
            *listener = None;
        }
        Ok(latest_per_kb(&out?))
    }

    fn forget_changes(&self, before: DateTime<Utc>) -> Result<usize> {
        self.write_checkpoint(|tx| {
            Ok(tx.execute(
                "DELETE FROM index_changes c USING kbs k
                 WHERE k.id = c.kb_id AND c.created_at < $1 AND c.seq < k.index_seq",
                &[&before],
            )? as usize)
        })
    }
}

/// `SEQ:KB` payloads as each knowledge base's latest announced number (unreadable ones are
/// dropped: the poll finds those changes).
fn latest_per_kb(payloads: &[String]) -> Vec<(String, u64)> {
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    for p in payloads {
        if let Some((seq, kb)) = p.split_once(':') {
            if let Ok(seq) = seq.parse::<u64>() {
                let n = latest.entry(kb.to_owned()).or_default();
                *n = (*n).max(seq);
            }
        }
    }
    latest.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn notifications_keep_each_knowledge_bases_latest_number() {
        let got = super::latest_per_kb(&[
            "3:kb-a".into(),
            "5:kb-b".into(),
            "4:kb-a".into(),
            "garbage".into(),
        ]);
        assert_eq!(got, vec![("kb-a".into(), 4), ("kb-b".into(), 5)]);
    }
}
