//! The index change log: what changed each knowledge base's search index at each of its
//! sequence numbers (`kbs.index_seq`), written in the transaction that bumps the number, so
//! that a process which did not make a change can apply it to its own in-memory index.
//!
//! It owns the log and the notifications of new entries; it must never apply a change (that is
//! the follower's business, in the service) nor decide how long an index may lag.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Result, StoredPoint};

/// How a change altered the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A document's chunks became searchable (and those of the document it replaced left).
    Publish,
    /// A document's chunks left.
    Delete,
    /// The knowledge base switched to another generation: the whole index is replaced.
    Switch,
}

impl ChangeKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Delete => "delete",
            Self::Switch => "switch",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "publish" => Self::Publish,
            "delete" => Self::Delete,
            "switch" => Self::Switch,
            _ => return None,
        })
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChange {
    /// The knowledge base's sequence number after the change.
    pub seq: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The document published or deleted.
    pub document_id: Option<String>,
    /// Chunk ids that left the index.
    pub removed: Vec<u64>,
    /// When it was committed (by the writer's clock).
    pub at: DateTime<Utc>,
}

/// Storage of the change log.
pub trait ChangeStore: Send + Sync {
    /// The changes of `kb_id` after sequence `after`, oldest first, at most `limit`. `None`
    /// when some of them are no longer kept (the reader must rebuild from the stored vectors).
    fn index_changes(
        &self,
        kb_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<IndexChange>>>;
    /// Every knowledge base's id and current sequence number.
    fn index_seqs(&self) -> Result<BTreeMap<String, u64>>;
    /// The searchable points of one ready document in its knowledge base's serving generation.
    fn document_points(&self, document_id: &str) -> Result<Vec<StoredPoint>>;
    /// Waits at most `timeout` for notice of new changes; returns the knowledge bases named,
    /// each with the latest sequence number announced (empty: nothing arrived in time, or this
    /// store does not notify — readers then poll).
    fn await_changes(&self, timeout: Duration) -> Result<Vec<(String, u64)>>;
    /// Drops entries older than `before`, keeping each knowledge base's latest. Returns how
    /// many went.
    fn forget_changes(&self, before: DateTime<Utc>) -> Result<usize>;
}

/// `changes` (after `after`, in order) when they start right after it, else `None` (the ones
/// in between were forgotten).
pub(crate) fn contiguous(after: u64, changes: Vec<IndexChange>) -> Option<Vec<IndexChange>> {
    match changes.first() {
        Some(first) if first.seq != after + 1 => None,
        _ => Some(changes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> IndexChange {
        IndexChange {
            seq,
            kind: ChangeKind::Delete,
            document_id: None,
            removed: vec![seq],
            at: Utc::now(),
        }
    }

    #[test]
    fn a_log_with_forgotten_entries_is_refused() {
        assert_eq!(
            contiguous(4, vec![change(5), change(6)]).map(|v| v.len()),
            Some(2)
        );
        assert_eq!(contiguous(4, vec![]).map(|v| v.len()), Some(0));
        assert!(
            contiguous(4, vec![change(6)]).is_none(),
            "entry 5 is missing"
        );
        for kind in [ChangeKind::Publish, ChangeKind::Delete, ChangeKind::Switch] {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
    }
}
