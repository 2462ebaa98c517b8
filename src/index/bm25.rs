//! BM25 over the collection's slots.
//!
//! Our own inverted index rather than tantivy: the collection already owns slots, tombstones,
//! filters and atomic on-disk generations, and SQLite will be the source of truth for texts;
//! tantivy would add a second storage engine with its own commit and merge life cycle to keep in
//! step, for a scorer that is a hundred lines here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::analyzer::Analyzer;
use super::points::{Filter, Points};
use super::top_k;

/// BM25 parameters. The defaults (k1 0.9, b 0.4) are Anserini's, tuned on MS MARCO and used by
/// BEIR's published BM25 baselines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation.
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self { k1: 0.9, b: 0.4 }
    }
}

/// The lexical index: postings per term, lengths per slot.
#[derive(Default, Serialize, Deserialize)]
pub struct Bm25Index {
    params: Bm25Params,
    vocab: HashMap<String, u32>,
    postings: Vec<Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    live_docs: u64,
    live_len: u64,
    #[serde(skip)]
    analyzer: Analyzer,
}

impl Bm25Index {
    /// An empty index scoring with `params`.
    pub fn new(params: Bm25Params) -> Self {
        Self {
            params,
            ..Default::default()
        }
    }

    /// Replaces the scoring parameters (they are not part of the saved postings).
    pub fn set_params(&mut self, params: Bm25Params) {
        self.params = params;
    }

    /// Indexes `text` under `slot`, which must be the next slot.
    pub fn add(&mut self, slot: u32, text: &str) {
        debug_assert_eq!(slot as usize, self.doc_len.len());
        let mut counts: HashMap<u32, u32> = HashMap::new();
        let mut len = 0u32;
        let vocab = &mut self.vocab;
        let postings = &mut self.postings;
        self.analyzer.for_each_term(text, |term| {
            let next = vocab.len() as u32;
            let id = *vocab.entry(term.to_owned()).or_insert_with(|| {
                postings.push(Vec::new());
                next
            });
            *counts.entry(id).or_default() += 1;
            len += 1;
        });
        for (term, tf) in counts {
            self.postings[term as usize].push((slot, tf));
        }
        self.doc_len.push(len);
        self.live_docs += 1;
        self.live_len += u64::from(len);
    }

    /// Removes `slot` from the collection statistics (its postings stay until compaction and
    /// are skipped at search time).
    pub fn remove(&mut self, slot: u32) {
        if let Some(&len) = self.doc_len.get(slot as usize) {
            self.live_docs = self.live_docs.saturating_sub(1);
            self.live_len = self.live_len.saturating_sub(u64::from(len));
        }
    }

    /// Keeps only the slots for which `new_slot` gives a number, renumbered.
    pub fn remap(&mut self, new_slot: &[Option<u32>]) {
        for list in &mut self.postings {
            list.retain_mut(|(slot, _)| match new_slot[*slot as usize] {
                Some(n) => {
                    *slot = n;
                    true
                }
                None => false,
            });
        }
        let mut lens = vec![0; new_slot.iter().flatten().count()];
        for (old, new) in new_slot.iter().enumerate() {
            if let Some(n) = new {
                lens[*n as usize] = self.doc_len[old];
            }
        }
        self.doc_len = lens;
    }

    /// The `k` best allowed slots for `query` as `(score, slot)`, best first.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        points: &Points,
        filter: &Filter,
    ) -> Vec<(f32, u32)> {
        if k == 0 || self.live_docs == 0 {
            return Vec::new();
        }
        let mut query_terms: HashMap<u32, u32> = HashMap::new();
        self.analyzer.for_each_term(query, |t| {
            if let Some(&id) = self.vocab.get(t) {
                *query_terms.entry(id).or_default() += 1;
            }
        });
        let n = self.live_docs as f32;
        let avg_len = (self.live_len as f32 / n).max(1.0);
        let Bm25Params { k1, b } = self.params;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        // In term order: a float sum depends on its order, and a hash map's differs between
        // maps, which made the same query score a few ulps apart from one call to the next.
        let mut query_terms: Vec<(u32, u32)> = query_terms.into_iter().collect();
        query_terms.sort_unstable();
        for (term, qtf) in query_terms {
            let list = &self.postings[term as usize];
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln().max(0.0);
            for &(slot, tf) in list {
                let tf = tf as f32;
                let norm = k1 * (1.0 - b + b * self.doc_len[slot as usize] as f32 / avg_len);
                *scores.entry(slot).or_default() +=
                    qtf as f32 * idf * tf * (k1 + 1.0) / (tf + norm);
            }
        }
        let scored: Vec<(f32, u32)> = scores
            .into_iter()
            .filter(|(slot, _)| points.allowed(*slot, filter))
            .map(|(slot, s)| (s, slot))
            .collect();
        top_k(scored, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::points::PointMeta;

    fn build(texts: &[&str]) -> (Bm25Index, Points) {
        let mut idx = Bm25Index::default();
        let mut points = Points::default();
        for (i, t) in texts.iter().enumerate() {
            let slot = points.push(PointMeta {
                chunk_id: i as u64,
                document_id: format!("d{i}"),
                kb: "kb".into(),
                metadata: Default::default(),
            });
            idx.add(slot, t);
        }
        (idx, points)
    }

    #[test]
    fn a_query_scores_the_same_bits_every_time() {
        let texts = [
            "rust ownership borrowing lifetimes traits generics closures iterators",
            "cargo crates modules packages workspaces rust",
            "threads channels mutex arc ownership send sync",
            "traits generics lifetimes smart pointers box rc refcell",
        ];
        let (idx, points) = build(&texts);
        let query = "ownership lifetimes traits generics rust threads closures cargo box sync";
        let first: Vec<(u32, u32)> = idx
            .search(query, 4, &points, &Filter::default())
            .iter()
            .map(|(s, slot)| (s.to_bits(), *slot))
            .collect();
        for _ in 0..50 {
            let (again, points) = build(&texts);
            let scores: Vec<(u32, u32)> = again
                .search(query, 4, &points, &Filter::default())
                .iter()
                .map(|(s, slot)| (s.to_bits(), *slot))
                .collect();
            assert_eq!(scores, first);
        }
    }

    #[test]
    fn rarer_terms_weigh_more() {
        let (idx, points) = build(&["rust ownership borrowing", "rust cargo", "rust traits"]);
        let hits = idx.search("rust ownership", 3, &points, &Filter::default());
        assert_eq!(hits[0].1, 0);
        assert_eq!(hits.len(), 3);
    }

    #[test]
    fn tombstones_and_filters_exclude() {
        let (mut idx, mut points) = build(&["alpha beta", "alpha gamma", "alpha delta"]);
        points.kill(0);
        idx.remove(0);
        let f = Filter {
            document_ids: Some(vec!["d2".into()]),
            ..Default::default()
        };
        assert_eq!(idx.search("alpha", 5, &points, &Filter::default()).len(), 2);
        let hits = idx.search("alpha", 5, &points, &f);
        assert_eq!(hits.iter().map(|h| h.1).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn remap_renumbers_postings() {
        let (mut idx, mut points) = build(&["one", "two", "one two"]);
        points.kill(1);
        idx.remove(1);
        idx.remap(&[Some(0), None, Some(1)]);
        let mut p2 = Points::default();
        for id in [0u64, 2] {
            p2.push(PointMeta {
                chunk_id: id,
                document_id: format!("d{id}"),
                kb: "kb".into(),
                metadata: Default::default(),
            });
        }
        let hits = idx.search("two", 5, &p2, &Filter::default());
        assert_eq!(hits.iter().map(|h| h.1).collect::<Vec<_>>(), vec![1]);
    }
}
