//! Dense vectors: a flat slot-major array for exact scans, plus an HNSW graph over the same
//! slots ([`super::graph`]) once the collection is large enough for the graph to pay off.
//!
//! Filters and tombstones are applied during the graph search and every result is re-checked;
//! when the graph cannot produce `k` allowed results (a very selective filter, many tombstones)
//! the search widens and finally falls back to an exact scan of the allowed slots, so a search
//! returns `min(k, allowed)` results whatever hnsw_rs's filtered search does.

use std::path::Path;

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::Hnsw;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::distance::{dot, UnitDot};
use super::graph::Graph;
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

/// File of the graph in a generation directory.
const GRAPH_FILE: &str = "graph.links";

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
        let slots = self.slots();
        match &mut self.graph {
            Some(graph) => {
                debug_assert_eq!(graph.len(), first);
                graph.insert_up_to(&self.vectors, self.dim, slots);
                let covered = self.snapshot.as_ref().map_or(0, Snapshot::slots);
                let tail = slots - covered;
                if tail > TAIL_LIMIT.max(slots / 50) {
                    self.snapshot = Snapshot::from_graph(graph, slots);
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
        let mut graph = Graph::new(self.params.m, self.params.ef_construction);
        graph.insert_up_to(&self.vectors, self.dim, slots);
        self.snapshot = Snapshot::from_graph(&graph, slots);
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

    /// Writes `vectors.f32` and, when a graph is in use, `graph.links` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<Option<String>> {
        let path = dir.join("vectors.f32");
        fs_err::write(&path, bytemuck::cast_slice::<f32, u8>(&self.vectors))
            .map_err(io_err(&path))?;
        match &self.graph {
            Some(graph) => {
                graph.save(&dir.join(GRAPH_FILE))?;
                Ok(Some(GRAPH_FILE.to_owned()))
            }
            None => Ok(None),
        }
    }

    /// Reads what [`save`](Self::save) wrote (or an hnsw_rs dump `graph.hnsw.*` saved before
    /// the graph had its own file). A graph that cannot be read is rebuilt from the vectors
    /// (slower start, same results) rather than failing the load.
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
            let loaded = if name == GRAPH_FILE {
                Graph::load(&dir.join(name), slots)
                    .map_err(|e| tracing::warn!(error = %e, "graph unreadable"))
                    .ok()
            } else {
                load_hnsw_rs(dir, name, slots).map(|snapshot| {
                    let (layers, entry) = snapshot.into_layers();
                    Graph::from_links(params.m, params.ef_construction, layers, Some(entry))
                })
            };
            match loaded {
                Some(g) => {
                    index.snapshot = Snapshot::from_graph(&g, slots);
                    index.graph = Some(g);
                }
                None => {
                    tracing::warn!(dir = %dir.display(), "graph unreadable; rebuilding from vectors");
                    index.build_graph();
                }
            }
        }
        Ok(index)
    }
}

/// The links of a graph hnsw_rs saved (`name.hnsw.*`) over exactly `slots` points.
fn load_hnsw_rs(dir: &Path, name: &str, slots: usize) -> Option<Snapshot> {
    // hnsw_rs ties a reloaded graph's lifetime to its loader and asserts on malformed files.
    // The loader is a few hundred bytes, created once per index generation: it is leaked so the
    // graph can be 'static, and a panic while reading counts as an unreadable graph.
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    std::panic::catch_unwind(move || {
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, &name)));
        let graph: Hnsw<'static, f32, UnitDot> = loader.load_hnsw::<f32, UnitDot>().ok()?;
        if graph.get_nb_point() != slots {
            return None;
        }
        Snapshot::of(&graph, slots)
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

    /// Indexes saved before the graph had its own file hold an hnsw_rs dump: they still load,
    /// with their links, and are searched and appended to like new ones.
    #[test]
    fn a_graph_saved_by_hnsw_rs_still_loads() {
        use hnsw_rs::api::AnnT;
        let mut rng = StdRng::seed_from_u64(11);
        let dim = 16;
        let n = 2_000;
        let rows: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, dim)).collect();
        let flat: Vec<f32> = rows.concat();
        let dir = tempfile::tempdir().expect("dir");
        fs_err::write(
            dir.path().join("vectors.f32"),
            bytemuck::cast_slice::<f32, u8>(&flat),
        )
        .expect("vectors");
        let old: Hnsw<'static, f32, UnitDot> = Hnsw::new(16, n, 16, 100, UnitDot);
        let batch: Vec<(&[f32], usize)> =
            rows.iter().enumerate().map(|(i, v)| (&v[..], i)).collect();
        old.parallel_insert_slice(&batch);
        let name = old.file_dump(dir.path(), "graph").expect("dump");
        let params = HnswParams {
            exact_threshold: 100,
            ..HnswParams::default()
        };
        let mut index = DenseIndex::load(dir.path(), dim, params, n, Some(&name)).expect("load");
        assert!(index.has_graph());
        let mut points = Points::default();
        for i in 0..=n {
            points.push(PointMeta {
                chunk_id: i as u64,
                document_id: "d".into(),
                kb: "k".into(),
                metadata: Default::default(),
            });
        }
        let extra = unit(&mut rng, dim);
        index
            .append(std::slice::from_ref(&extra), n + 1)
            .expect("append");
        for (q, slot) in [(&rows[7], 7u32), (&extra, n as u32)] {
            let hits = index.search(q, 5, &points, &Filter::default());
            assert_eq!(hits[0].1, slot);
        }
        index.save(dir.path()).expect("save");
        assert!(dir.path().join(GRAPH_FILE).is_file());
    }
}
