//! [`ReplicaStore`] on SQLite (one process owns the file: the list holds that process).

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::SqliteStore;
use crate::store::replicas::{ReplicaRecord, ReplicaStore};
use crate::store::Result;

impl ReplicaStore for SqliteStore {
    fn heartbeat(&self, r: &ReplicaRecord, forget_before: DateTime<Utc>) -> Result<()> {
        self.write_checkpoint(|tx| {
            tx.execute(
                "INSERT INTO replicas (id, host, pid, version, started_at, heartbeat_at, address, home)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
                     -- A beat that raced the replica's announcement keeps its address.
                     , address = CASE WHEN excluded.address = '' THEN replicas.address
                                      ELSE excluded.address END",
                params![
                    r.id,
                    r.host,
                    r.pid,
                    r.version,
                    r.started_at,
                    r.heartbeat_at,
                    r.address,
                    r.home
                ],
            )?;
            tx.execute(
                "DELETE FROM replicas WHERE heartbeat_at < ?1",
                params![forget_before],
            )?;
            Ok(())
        })
    }

    fn replicas(&self) -> Result<Vec<ReplicaRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, host, pid, version, started_at, heartbeat_at, address, home FROM replicas
                 ORDER BY heartbeat_at DESC",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ReplicaRecord {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    version: r.get(3)?,
                    started_at: r.get(4)?,
                    heartbeat_at: r.get(5)?,
                    address: r.get(6)?,
                    home: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn remove_replica(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM replicas WHERE id = ?1", params![id])?;
            Ok(())
        })
    }

    fn forget_predecessors(&self, me: &ReplicaRecord) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM replicas
                  WHERE host = ?1 AND home = ?2 AND home <> '' AND id <> ?3",
                params![me.host, me.home, me.id],
            )? as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, home: &str) -> ReplicaRecord {
        let now = Utc::now();
        ReplicaRecord {
            id: id.into(),
            host: "h".into(),
            pid: 7,
            address: String::new(),
            home: home.into(),
            version: "v".into(),
            started_at: now,
            heartbeat_at: now,
        }
    }

    #[test]
    fn beats_keep_the_address_and_a_restart_forgets_its_predecessor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store");
        let old = Utc::now() - chrono::Duration::days(1);
        let mut dead = record("dead", "/data/a");
        dead.address = "http://127.0.0.1:1".into();
        store.heartbeat(&dead, old).expect("beat");
        store
            .heartbeat(&record("other", "/data/b"), old)
            .expect("beat");
        // A beat that raced the announcement (no address yet) keeps the one on record.
        store
            .heartbeat(&record("dead", "/data/a"), old)
            .expect("beat");
        let listed = store.replicas().expect("list");
        assert_eq!(listed.len(), 2);
        let row = listed.iter().find(|r| r.id == "dead").expect("listed");
        assert_eq!(
            (row.address.as_str(), row.home.as_str()),
            ("http://127.0.0.1:1", "/data/a")
        );
        // A new process on /data/a forgets only the one that ran there before it.
        let next = record("next", "/data/a");
        assert_eq!(store.forget_predecessors(&next).expect("forget"), 1);
        store.heartbeat(&next, old).expect("beat");
        let mut ids: Vec<String> = store
            .replicas()
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["next", "other"]);
    }
}
