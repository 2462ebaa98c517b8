//! Following the store: keeps this replica's in-memory indexes in step with what every
//! replica commits (the store's index change log), and lets a request wait until an index
//! reflects a given sequence number (read-your-writes, `min_seq`).
//!
//! On a shared store one thread follows: it wakes on the store's notifications (PostgreSQL
//! `LISTEN`) and polls every knowledge base's sequence as a fallback, opening indexes of
//! knowledge bases other replicas created and dropping those they deleted. On SQLite nothing
//! follows: this process makes every change itself.
//!
//! It owns the follow loop and the waits; it must never commit to the store, and changes an
//! index only under the catalog's write order.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Core, Result, ServiceError};
use crate::index::{IndexError, KbIndex};
use crate::store::StoreError;

/// Longest wait for a notification before the sequences are compared anyway.
const POLL: Duration = Duration::from_millis(500);

/// Brings the index of `kb_id` up to `until` (everything committed when `None`): the logged
/// changes, else a rebuild from the store. Opens the index of a knowledge base this process
/// has not loaded yet (created by another replica).
pub(super) fn catch_up(core: &Core, kb_id: &str, until: Option<u64>) -> Result<Arc<KbIndex>> {
    let index = match core.indexes.get(kb_id) {
        Ok(index) => index,
        Err(IndexError::NotLoaded) => {
            let kb = core.store.kb_by_id(kb_id)?;
            if let Err(e) = core.models.for_kb(&kb) {
                tracing::warn!(kb = %kb.name, error = %e, "knowledge base model unavailable");
            }
            core.indexes.open(&kb, core.store.as_ref())?;
            tracing::info!(kb = %kb.name, "index of a knowledge base another replica created loaded");
            return Ok(core.indexes.get(kb_id)?);
        }
        Err(e) => return Err(e.into()),
    };
    let order = index.write_order();
    core.indexes
        .bring_up(kb_id, &index, &order, core.store.as_ref(), until)?;
    drop(order);
    Ok(index)
}

/// Waits until this replica's index of `kb_id` reflects sequence `seq`, catching up itself
/// rather than waiting for the follower; fails after `timeout`.
pub(super) fn wait_for(core: &Core, kb_id: &str, seq: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let index = catch_up(core, kb_id, Some(seq))?;
        let applied = index.applied_seq();
        if applied >= seq {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::IndexBehind {
                kb: kb_id.to_owned(),
                applied,
                wanted: seq,
            });
        }
        // Not committed yet (a number handed out by a publish still in flight, or one from
        // the future): look again shortly.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The follow loop of a replica on a shared store; returns when the service stops.
pub(super) fn run(core: Weak<Core>) {
    let mut last_poll = Instant::now() - POLL;
    loop {
        let Some(c) = core.upgrade() else { return };
        if c.stopping() {
            return;
        }
        let notified = match c.store.await_changes(POLL) {
            Ok(kbs) => kbs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for index changes; polling");
                std::thread::sleep(POLL);
                Vec::new()
            }
        };
        if c.stopping() {
            return;
        }
        for (kb, seq) in &notified {
            // The writer's own change (and one already caught up by a waiting search) is
            // there: nothing to read.
            let there = c
                .indexes
                .get(kb)
                .is_ok_and(|index| index.applied_seq() >= *seq);
            if !there {
                follow_one(&c, kb);
            }
        }
        if last_poll.elapsed() >= POLL {
            poll(&c);
            last_poll = Instant::now();
        }
    }
}

fn follow_one(core: &Core, kb_id: &str) {
    match catch_up(core, kb_id, None) {
        Ok(_) => {}
        // Deleted meanwhile: the poll drops its index.
        Err(ServiceError::Store(StoreError::NotFound { .. })) => {}
        Err(e) => tracing::warn!(kb = %kb_id, error = %e, "cannot follow the index"),
    }
}

/// Compares every knowledge base's sequence with this replica's indexes.
fn poll(core: &Core) {
    // Listed before the store is read: a knowledge base this process creates meanwhile is in
    // the store before it is in the catalog, so it is never taken for a deleted one.
    let loaded = core.indexes.kb_ids();
    let seqs = match core.store.index_seqs() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the index sequences");
            return;
        }
    };
    for kb_id in loaded {
        if !seqs.contains_key(&kb_id) {
            tracing::info!(kb = %kb_id, "knowledge base deleted by another replica; index dropped");
            core.indexes.remove(&kb_id);
        }
    }
    for (kb_id, seq) in &seqs {
        let behind = match core.indexes.get(kb_id) {
            Ok(index) => index.applied_seq() < *seq,
            Err(_) => true,
        };
        if behind {
            follow_one(core, kb_id);
        }
    }
}
