//! Ranking metrics as BEIR (pytrec_eval) computes them.

use serde::Serialize;

use super::beir::Qrels;

/// Mean metrics over the judged queries.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Scores {
    /// nDCG@10 (graded relevance).
    pub ndcg_at_10: f64,
    /// Share of the relevant documents in the top 10.
    pub recall_at_10: f64,
    /// Share of the relevant documents in the top 100.
    pub recall_at_100: f64,
    /// Mean reciprocal rank of the first relevant document in the top 10.
    pub mrr_at_10: f64,
}

/// nDCG@k of one ranking with graded relevance (linear gain, log2 discount).
pub fn ndcg_at(ranked: &[&str], rels: &std::collections::HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(rels.get(*d).copied().unwrap_or(0)) / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = rels.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| f64::from(g) / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

fn recall_at(ranked: &[&str], rels: &std::collections::HashMap<String, u32>, k: usize) -> f64 {
    let relevant = rels.values().filter(|&&g| g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| rels.get(**d).is_some_and(|&g| g > 0))
        .count();
    found as f64 / relevant as f64
}

fn mrr_at(ranked: &[&str], rels: &std::collections::HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| rels.get(*d).is_some_and(|&g| g > 0))
        .map_or(0.0, |p| 1.0 / (p as f64 + 1.0))
}

/// Mean scores of `runs` (query id, ranked document ids) against `qrels`.
pub fn evaluate(runs: &[(&str, Vec<&str>)], qrels: &Qrels) -> Scores {
    let mut sum = Scores::default();
    let mut n = 0.0;
    for (q, ranked) in runs {
        let Some(rels) = qrels.get(*q) else { continue };
        sum.ndcg_at_10 += ndcg_at(ranked, rels, 10);
        sum.recall_at_10 += recall_at(ranked, rels, 10);
        sum.recall_at_100 += recall_at(ranked, rels, 100);
        sum.mrr_at_10 += mrr_at(ranked, rels, 10);
        n += 1.0;
    }
    if n > 0.0 {
        sum.ndcg_at_10 /= n;
        sum.recall_at_10 /= n;
        sum.recall_at_100 /= n;
        sum.mrr_at_10 /= n;
    }
    sum
}

/// The `q` quantile (0..=1) of sorted values, nearest-rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rels(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    #[test]
    fn perfect_ranking_scores_one() {
        let r = rels(&[("a", 1), ("b", 1)]);
        assert!((ndcg_at(&["a", "b", "c"], &r, 10) - 1.0).abs() < 1e-12);
        assert_eq!(recall_at(&["a", "x", "b"], &r, 2), 0.5);
        assert_eq!(mrr_at(&["x", "b"], &r, 10), 0.5);
    }

    #[test]
    fn ndcg_matches_hand_computation() {
        // relevant doc at rank 2 of one relevant: 1/log2(3)
        let r = rels(&[("a", 1)]);
        let expected = 1.0 / 3f64.log2();
        assert!((ndcg_at(&["x", "a"], &r, 10) - expected).abs() < 1e-12);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.5), 50.0);
    }
}
