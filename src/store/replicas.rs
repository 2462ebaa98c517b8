//! Replicas: the processes serving one store, each known by a row it refreshes (its
//! heartbeat), so any of them can list the others and tell the live from the gone.
//!
//! It owns those rows only; it must never decide what a replica does (claiming work,
//! holding agents) — that belongs to the parts that use the list.

use chrono::{DateTime, Utc};

use super::Result;

/// One process serving the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Random id chosen at start.
    pub id: String,
    /// The machine's host name.
    pub host: String,
    /// The process id on that machine.
    pub pid: u32,
    /// Base URL where other replicas reach its API (`http://host:port`); empty until it
    /// listens.
    pub address: String,
    /// Its data directory (with `host`, what a restart on the same directory shares).
    pub home: String,
    /// Groundwork's version.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    pub heartbeat_at: DateTime<Utc>,
}

/// Storage of replicas' heartbeats.
pub trait ReplicaStore: Send + Sync {
    /// Records (or refreshes) `replica`, and forgets replicas silent since before `forget_before`.
    fn heartbeat(&self, replica: &ReplicaRecord, forget_before: DateTime<Utc>) -> Result<()>;
    /// Every replica on record, latest heartbeat first.
    fn replicas(&self) -> Result<Vec<ReplicaRecord>>;
    /// Forgets a replica (its process stopping).
    fn remove_replica(&self, id: &str) -> Result<()>;
    /// Forgets the replicas that ran on `me`'s host and data directory before it: that
    /// directory's lock, which `me` holds, proves them gone (a `kill -9`ed process restarted
    /// need not wait for its own heartbeat to go stale). Returns how many.
    fn forget_predecessors(&self, me: &ReplicaRecord) -> Result<u64>;
}
