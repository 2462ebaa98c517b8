//! Reciprocal rank fusion of ranked lists.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How hybrid search fuses dense and lexical rankings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HybridParams {
    /// RRF's rank constant: `score = Σ weight / (rrf_k + rank)`, rank from 1.
    pub rrf_k: f32,
    /// Weight of the dense ranking.
    pub dense_weight: f32,
    /// Weight of the BM25 ranking.
    pub bm25_weight: f32,
    /// Candidates taken from each ranking before fusion (at least `k`).
    pub candidates: usize,
}

impl Default for HybridParams {
    fn default() -> Self {
        Self {
            rrf_k: 60.0,
            dense_weight: 1.0,
            bm25_weight: 1.0,
            candidates: 100,
        }
    }
}

/// Fuses ranked lists of `(score, slot)` (best first) with their weights into the top `k`
/// `(rrf_score, slot)`, best first. Ties are broken by slot so results are deterministic.
pub fn rrf(lists: &[(&[(f32, u32)], f32)], rrf_k: f32, k: usize) -> Vec<(f32, u32)> {
    let mut fused: HashMap<u32, f32> = HashMap::new();
    for (list, weight) in lists {
        for (rank, &(_, slot)) in list.iter().enumerate() {
            *fused.entry(slot).or_default() += weight / (rrf_k + rank as f32 + 1.0);
        }
    }
    super::top_k(fused.into_iter().map(|(s, v)| (v, s)).collect(), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_wins_and_weights_matter() {
        let dense = [(0.9, 1), (0.8, 2), (0.7, 3)];
        let lexical = [(12.0, 2), (11.0, 4)];
        let fused = rrf(&[(&dense, 1.0), (&lexical, 1.0)], 60.0, 3);
        assert_eq!(fused[0].1, 2, "in both lists beats first in one");
        let fused = rrf(&[(&dense, 0.0), (&lexical, 1.0)], 60.0, 2);
        assert_eq!(fused.iter().map(|f| f.1).collect::<Vec<_>>(), vec![2, 4]);
    }
}
