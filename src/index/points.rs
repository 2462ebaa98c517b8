//! The catalogue of indexed chunks: slot numbers, tombstones and metadata for filtering.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What the index knows about one chunk besides its vector and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointMeta {
    /// Caller-chosen unique id of the chunk.
    pub chunk_id: u64,
    /// The document the chunk belongs to.
    pub document_id: String,
    /// The knowledge base the document belongs to.
    pub kb: String,
    /// Free key=value metadata (from the document's metadata).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Restricts a search to chunks whose metadata match every given condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only this knowledge base.
    #[serde(default)]
    pub kb: Option<String>,
    /// Only these documents.
    #[serde(default)]
    pub document_ids: Option<Vec<String>>,
    /// Every pair must be present with exactly this value.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Filter {
    /// True when the filter lets every chunk through.
    pub fn is_empty(&self) -> bool {
        self.kb.is_none() && self.document_ids.is_none() && self.metadata.is_empty()
    }

    /// Whether `meta` satisfies the filter.
    pub fn matches(&self, meta: &PointMeta) -> bool {
        self.kb.as_ref().is_none_or(|kb| *kb == meta.kb)
            && self
                .document_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&meta.document_id))
            && self
                .metadata
                .iter()
                .all(|(k, v)| meta.metadata.get(k) == Some(v))
    }
}

/// Slot-indexed chunk catalogue. Slots are never reused; deleted slots become tombstones until
/// the collection is compacted.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Points {
    metas: Vec<PointMeta>,
    live: Vec<bool>,
    #[serde(skip)]
    slot_of: HashMap<u64, u32>,
    #[serde(skip)]
    by_document: HashMap<String, Vec<u32>>,
    #[serde(skip)]
    live_count: usize,
}

impl Points {
    /// Rebuilds the lookup maps after deserialisation.
    pub fn reindex(&mut self) {
        self.slot_of.clear();
        self.by_document.clear();
        self.live_count = 0;
        for (slot, meta) in self.metas.iter().enumerate() {
            if self.live[slot] {
                self.slot_of.insert(meta.chunk_id, slot as u32);
                self.by_document
                    .entry(meta.document_id.clone())
                    .or_default()
                    .push(slot as u32);
                self.live_count += 1;
            }
        }
    }

    /// Slots ever allocated (live and tombstoned).
    pub fn slots(&self) -> usize {
        self.metas.len()
    }

    /// Live chunks.
    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// Tombstoned slots.
    pub fn dead_count(&self) -> usize {
        self.metas.len() - self.live_count
    }

    /// Whether `slot` holds a live chunk.
    pub fn is_live(&self, slot: u32) -> bool {
        self.live.get(slot as usize).copied().unwrap_or(false)
    }

    /// Metadata of `slot`.
    pub fn meta(&self, slot: u32) -> &PointMeta {
        &self.metas[slot as usize]
    }

    /// The live slot of `chunk_id`.
    pub fn slot_of(&self, chunk_id: u64) -> Option<u32> {
        self.slot_of.get(&chunk_id).copied()
    }

    /// Appends a chunk; an existing live chunk with the same id is tombstoned first.
    /// Returns the new slot.
    pub fn push(&mut self, meta: PointMeta) -> u32 {
        if let Some(old) = self.slot_of.get(&meta.chunk_id).copied() {
            self.kill(old);
        }
        let slot = self.metas.len() as u32;
        self.slot_of.insert(meta.chunk_id, slot);
        self.by_document
            .entry(meta.document_id.clone())
            .or_default()
            .push(slot);
        self.metas.push(meta);
        self.live.push(true);
        self.live_count += 1;
        slot
    }

    /// Tombstones `slot`. Returns whether it was live.
    pub fn kill(&mut self, slot: u32) -> bool {
        let Some(flag) = self.live.get_mut(slot as usize) else {
            return false;
        };
        if !*flag {
            return false;
        }
        *flag = false;
        self.live_count -= 1;
        let meta = &self.metas[slot as usize];
        self.slot_of.remove(&meta.chunk_id);
        if let Some(slots) = self.by_document.get_mut(&meta.document_id) {
            slots.retain(|&s| s != slot);
            if slots.is_empty() {
                self.by_document.remove(&meta.document_id);
            }
        }
        true
    }

    /// Live slots of a document.
    pub fn document_slots(&self, document_id: &str) -> Vec<u32> {
        self.by_document
            .get(document_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `slot` is live and passes `filter`.
    pub fn allowed(&self, slot: u32, filter: &Filter) -> bool {
        self.is_live(slot) && (filter.is_empty() || filter.matches(self.meta(slot)))
    }

    /// Every live slot passing `filter`, in slot order. Uses the per-document map when the
    /// filter names documents, so selective filters cost little.
    pub fn matching(&self, filter: &Filter) -> Vec<u32> {
        if let Some(ids) = &filter.document_ids {
            let mut slots: Vec<u32> = ids
                .iter()
                .flat_map(|d| self.by_document.get(d).into_iter().flatten().copied())
                .filter(|&s| filter.matches(self.meta(s)))
                .collect();
            slots.sort_unstable();
            slots.dedup();
            return slots;
        }
        (0..self.metas.len() as u32)
            .filter(|&s| self.allowed(s, filter))
            .collect()
    }

    /// Live metadata in slot order (for compaction).
    pub fn live_metas(&self) -> impl Iterator<Item = (u32, &PointMeta)> {
        self.metas
            .iter()
            .enumerate()
            .filter(|(s, _)| self.live[*s])
            .map(|(s, m)| (s as u32, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, doc: &str, kb: &str, lang: &str) -> PointMeta {
        PointMeta {
            chunk_id: id,
            document_id: doc.into(),
            kb: kb.into(),
            metadata: [("lang".to_owned(), lang.to_owned())].into(),
        }
    }

    #[test]
    fn upsert_tombstones_the_old_slot() {
        let mut p = Points::default();
        let a = p.push(meta(1, "d1", "kb", "en"));
        let b = p.push(meta(1, "d1", "kb", "en"));
        assert!(!p.is_live(a) && p.is_live(b));
        assert_eq!((p.live_count(), p.dead_count()), (1, 1));
        assert_eq!(p.document_slots("d1"), vec![b]);
    }

    #[test]
    fn filters_combine_all_conditions() {
        let mut p = Points::default();
        p.push(meta(1, "d1", "a", "en"));
        p.push(meta(2, "d2", "a", "fr"));
        p.push(meta(3, "d3", "b", "en"));
        let f = Filter {
            kb: Some("a".into()),
            metadata: [("lang".to_owned(), "en".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(p.matching(&f), vec![0]);
        let f = Filter {
            document_ids: Some(vec!["d3".into(), "d2".into()]),
            ..Default::default()
        };
        assert_eq!(p.matching(&f), vec![1, 2]);
    }

    #[test]
    fn reindex_restores_lookups_after_serde() {
        let mut p = Points::default();
        p.push(meta(7, "d", "kb", "en"));
        p.push(meta(8, "d", "kb", "en"));
        p.kill(0);
        let mut back: Points =
            serde_json::from_str(&serde_json::to_string(&p).expect("ser")).expect("de");
        back.reindex();
        assert_eq!(back.slot_of(8), Some(1));
        assert_eq!(back.slot_of(7), None);
        assert_eq!(back.live_count(), 1);
    }
}
