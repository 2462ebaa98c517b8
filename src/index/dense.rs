//! Dense vectors: a flat slot-major array for exact scans, plus an hnsw_rs graph over the same
//! slots once the collection is large enough for the graph to pay off.
//!
//! Filters and tombstones are applied during the graph search and every result is re-checked;
//! when the graph cannot produce `k` allowed results (a very selective filter, many tombstones)
//! the search widens and finally falls back to an exact scan of the allowed slots, so a search
//! returns `min(k, allowed)` results whatever hnsw_rs's filtered search does.

use std::path::Path;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::Hnsw;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::distance::{dot, UnitDot};
use super::points::{Filter, Points};
use super::snapshot::Snapshot;
use super::{io_err, top_k, IndexError, Result};

/// Graph and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (hnswlib's `M`).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to `k` when smaller).
    pub ef_search: usize,
    /// Below this many live vectors no graph is kept: an exact scan is as fast and always exact.
    pub exact_threshold: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            exact_threshold: 10_000,
        }
    }
}

type Graph = Hnsw<'static, f32, UnitDot>;

/// Appended slots searched exactly before the snapshot is refreshed (or 2% of the slots).
const TAIL_LIMIT: usize = 1024;

/// Vectors by slot, optionally with a graph over them.
pub struct DenseIndex {
    dim: usize,
    params: HnswParams,
    vectors: Vec<f32>,
    graph: Option<Graph>,
    /// Flat copy of `graph`'s links over slots `0..snapshot.slots()`. Slots appended since
    /// (the tail) are in the graph but searched exactly until the tail is worth a refresh, so
    /// appending document by document does not copy the whole graph each time.
    snapshot: Option<Snapshot>,
}

impl DenseIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, params: HnswParams) -> Self {
        Self {
            dim,
            params,
            vectors: Vec::new(),
            graph: None,
            snapshot: None,
        }
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Parameters in force.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the search-time candidate list size.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
    }

    /// Slots stored (live or not).
    pub fn slots(&self) -> usize {
        self.vectors.len() / self.dim.max(1)
    }

    /// Whether a graph is in use.
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The vector of `slot`.
    pub fn vector(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    /// Appends vectors for the next slots, and adds them to the graph when one is in use (or
    /// builds it when `live` crosses the threshold).
    pub fn append(&mut self, vectors: &[Vec<f32>], live: usize) -> Result<()> {
        let first = self.slots();
        for v in vectors {
            if v.len() != self.dim {
                return Err(IndexError::Dimension {
                    expected: self.dim,
                    found: v.len(),
                });
            }
        }
        self.vectors.reserve(vectors.len() * self.dim);
        vectors
            .iter()
            .for_each(|v| self.vectors.extend_from_slice(v));
        match &self.graph {
            Some(graph) => {
                insert_range(graph, &self.vectors, self.dim, first, self.slots());
                let covered = self.snapshot.as_ref().map_or(0, Snapshot::slots);
                let tail = self.slots() - covered;
                if tail > TAIL_LIMIT.max(self.slots() / 50) {
                    self.snapshot = Snapshot::of(graph, self.slots());
                }
            }
            None if live >= self.params.exact_threshold => self.build_graph(),
            None => {}
        }
        Ok(())
    }

    /// (Re)builds the graph over every stored slot, in parallel.
    pub fn build_graph(&mut self) {
        let slots = self.slots();
        let graph = Graph::new(
            self.params.m,
            slots.max(1024),
            16,
            self.params.ef_construction,
            UnitDot,
        );
        insert_range(&graph, &self.vectors, self.dim, 0, slots);
        self.snapshot = Snapshot::of(&graph, slots);
        self.graph = Some(graph);
    }

    /// Drops the graph (small collections).
    pub fn drop_graph(&mut self) {
        self.graph = None;
        self.snapshot = None;
    }

    /// The `k` allowed slots nearest to `query` as `(cosine, slot)`, best first.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        points: &Points,
        filter: &Filter,
    ) -> Vec<(f32, u32)> {
        if k == 0 || points.live_count() == 0 {
            return Vec::new();
        }
        // The snapshot is rebuilt wherever the graph is built or loaded, and when its tail grows.
        let Some(snapshot) = &self.snapshot else {
            return self.exact(query, k, points.matching(filter));
        };
        let restricted = !filter.is_empty();
        let allowed_count = if restricted {
            let matching = points.matching(filter);
            if matching.len() <= self.params.exact_threshold {
                return self.exact(query, k, matching);
            }
            matching.len()
        } else {
            points.live_count()
        };
        let want = k.min(allowed_count);
        let total = snapshot.slots();
        let tail: Vec<u32> = (total as u32..self.slots() as u32)
            .filter(|&s| points.allowed(s, filter))
            .collect();
        let tail_hits = self.exact(query, k, tail);
        let mut ef = self.params.ef_search.max(k);
        let needs_filter = restricted || points.dead_count() > 0;
        loop {
            let mut hits = snapshot.search(query, k, ef, (&self.vectors, self.dim), |s| {
                !needs_filter || points.allowed(s, filter)
            });
            if !tail_hits.is_empty() {
                hits.extend_from_slice(&tail_hits);
                hits = top_k(hits, k);
            }
            if hits.len() >= want {
                return hits;
            }
            if ef >= total {
                break;
            }
            ef = (ef * 4).min(total);
        }
        self.exact(query, k, points.matching(filter))
    }

    /// Exact top-k over `candidates`.
    pub fn exact(&self, query: &[f32], k: usize, candidates: Vec<u32>) -> Vec<(f32, u32)> {
        let scored: Vec<(f32, u32)> = if candidates.len() > 20_000 {
            candidates
                .par_iter()
                .map(|&s| (dot(query, self.vector(s)), s))
                .collect()
        } else {
            candidates
                .iter()
                .map(|&s| (dot(query, self.vector(s)), s))
                .collect()
        };
        top_k(scored, k)
    }

    /// Writes `vectors.f32` and, when a graph is in use, `graph.hnsw.*` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<Option<String>> {
        let path = dir.join("vectors.f32");
        fs_err::write(&path, bytemuck::cast_slice::<f32, u8>(&self.vectors))
            .map_err(io_err(&path))?;
        match &self.graph {
            Some(graph) => {
                let name = graph
                    .file_dump(dir, "graph")
                    .map_err(|e| IndexError::Corrupt(format!("writing graph: {e}")))?;
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    /// Reads what [`save`](Self::save) wrote. A graph that cannot be read is rebuilt from the
    /// vectors (slower start, same results) rather than failing the load.
    pub fn load(
        dir: &Path,
        dim: usize,
        params: HnswParams,
        slots: usize,
        graph: Option<&str>,
    ) -> Result<Self> {
        let path = dir.join("vectors.f32");
        let bytes = fs_err::read(&path).map_err(io_err(&path))?;
        if bytes.len() != slots * dim * 4 {
            return Err(IndexError::Corrupt(format!(
                "{} holds {} bytes, expected {} vectors of {dim} floats",
                path.display(),
                bytes.len(),
                slots
            )));
        }
        let vectors: Vec<f32> = crate::util::f32s_from_le(&bytes);
        let mut index = Self {
            dim,
            params,
            vectors,
            graph: None,
            snapshot: None,
        };
        if let Some(name) = graph {
            match load_graph(dir, name) {
                Some(g) if g.get_nb_point() == slots => {
                    index.snapshot = Snapshot::of(&g, slots);
                    index.graph = Some(g);
                }
                _ => {
                    tracing::warn!(dir = %dir.display(), "graph unreadable; rebuilding from vectors");
                    index.build_graph();
                }
            }
        }
        Ok(index)
    }
}

fn insert_range(graph: &Graph, vectors: &[f32], dim: usize, from: usize, to: usize) {
    let batch: Vec<(&[f32], usize)> = (from..to)
        .map(|s| (&vectors[s * dim..(s + 1) * dim], s))
        .collect();
    graph.parallel_insert_slice(&batch);
}

fn load_graph(dir: &Path, name: &str) -> Option<Graph> {
    // hnsw_rs ties a reloaded graph's lifetime to its loader and asserts on malformed files.
    // The loader is a few hundred bytes, created once per index generation: it is leaked so the
    // graph can be 'static, and a panic while reading counts as an unreadable graph.
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    std::panic::catch_unwind(move || {
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, &name)));
        loader.load_hnsw::<f32, UnitDot>().ok()
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::points::PointMeta;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        crate::embed::l2_normalize(&mut v);
        v
    }

    #[test]
    fn vectors_appended_after_the_snapshot_are_found() {
        let mut rng = StdRng::seed_from_u64(7);
        let dim = 16;
        let params = HnswParams {
            exact_threshold: 200,
            ..HnswParams::default()
        };
        let mut index = DenseIndex::new(dim, params);
        let mut points = Points::default();
        let push = |index: &mut DenseIndex, points: &mut Points, v: Vec<f32>| {
            let slot = points.push(PointMeta {
                chunk_id: points.slots() as u64,
                document_id: "d".into(),
                kb: "k".into(),
                metadata: Default::default(),
            });
            index.append(&[v], points.live_count()).expect("append");
            slot
        };
        for _ in 0..300 {
            let v = unit(&mut rng, dim);
            push(&mut index, &mut points, v);
        }
        assert!(index.has_graph());
        let covered = index.snapshot.as_ref().map_or(0, Snapshot::slots);
        // One by one, as documents arrive: each new vector is its own nearest neighbour at
        // once, although the snapshot is not refreshed for every append.
        for _ in 0..50 {
            let v = unit(&mut rng, dim);
            let slot = push(&mut index, &mut points, v.clone());
            let hits = index.search(&v, 3, &points, &Filter::default());
            assert_eq!(hits[0].1, slot);
        }
        assert_eq!(index.snapshot.as_ref().map_or(0, Snapshot::slots), covered);
    }
}
