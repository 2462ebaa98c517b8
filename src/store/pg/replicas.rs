//! [`ReplicaStore`] on PostgreSQL.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::store::replicas::{ReplicaRecord, ReplicaStore};
use crate::store::Result;

impl ReplicaStore for PgStore {
    fn heartbeat(&self, r: &ReplicaRecord, forget_before: DateTime<Utc>) -> Result<()> {
        self.write_checkpoint(|tx| {
            tx.execute(
                "INSERT INTO replicas (id, host, pid, version, started_at, heartbeat_at, address, home)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
                     -- A beat that raced the replica's announcement keeps its address.
                     , address = CASE WHEN excluded.address = '' THEN replicas.address
                                      ELSE excluded.address END",
                &[
                    &r.id,
                    &r.host,
                    &i64::from(r.pid),
                    &r.version,
                    &r.started_at,
                    &r.heartbeat_at,
                    &r.address,
                    &r.home,
                ],
            )?;
            tx.execute(
                "DELETE FROM replicas WHERE heartbeat_at < $1",
                &[&forget_before],
            )?;
            Ok(())
        })
    }

    fn replicas(&self) -> Result<Vec<ReplicaRecord>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT id, host, pid, version, started_at, heartbeat_at, address, home FROM replicas
                 ORDER BY heartbeat_at DESC",
                &[],
            )?
            .iter()
            .map(|r| ReplicaRecord {
                id: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i64>(2) as u32,
                version: r.get(3),
                started_at: r.get(4),
                heartbeat_at: r.get(5),
                address: r.get(6),
                home: r.get(7),
            })
            .collect())
        })
    }

    fn remove_replica(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM replicas WHERE id = $1", &[&id])?;
            Ok(())
        })
    }

    fn forget_predecessors(&self, me: &ReplicaRecord) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM replicas
                  WHERE host = $1 AND home = $2 AND home <> '' AND id <> $3",
                &[&me.host, &me.home, &me.id],
            )?)
        })
    }
}
