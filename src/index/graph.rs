//! The HNSW graph over a dense index's slots, built by our own code.
//!
//! hnsw_rs built it before (and still reads graphs saved in its format): its insertion pays for
//! a hash map of visited points and an `Arc` per candidate on every step, which made building
//! 100k vectors 2.6× slower than hnswlib. This builder follows hnswlib's algorithm — levels
//! drawn with `mL = 1/ln M`, a greedy descent through the upper layers, a beam of
//! `ef_construction` on each layer the node lives in, the neighbour-selection heuristic, links
//! shrunk with the same heuristic when full — with a reusable visited set per thread, one lock
//! per neighbour list, and nodes inserted in parallel on the rayon pool.
//!
//! Owns the mutable graph, its insertion and its file; searching is [`super::snapshot`]'s, on a
//! flat copy. Must never know about filters, tombstones or documents.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::distance::{dot, prefetch, Visited};
use super::{io_err, IndexError, Result};

/// Highest layer a node may be drawn on.
const MAX_LEVEL: usize = 16;

/// Distance between unit vectors (`1 - cosine`, clamped at 0) as an orderable key.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
struct Dist(f32);
impl Eq for Dist {}
#[allow(clippy::derive_ord_xor_partial_ord)]
impl Ord for Dist {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One node's neighbour lists, layer 0 first.
struct Node {
    links: Vec<Mutex<Vec<u32>>>,
}

/// A mutable HNSW graph whose node ids are slots `0..len`.
pub struct Graph {
    m: usize,
    m0: usize,
    ef_construction: usize,
    nodes: Vec<Node>,
    /// Entry point and its level.
    entry: Mutex<Option<(u32, usize)>>,
}

/// Per-thread construction state, reused across insertions.
#[derive(Default)]
struct Scratch {
    visited: Visited,
    links: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn lock(m: &Mutex<Vec<u32>>) -> MutexGuard<'_, Vec<u32>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The level of `slot`: deterministic (a hash of the slot), geometric with ratio 1/M.
fn level_of(slot: usize, m: usize) -> usize {
    // SplitMix64 of the slot gives a uniform u in (0, 1].
    let mut z = (slot as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let ml = 1.0 / (m.max(2) as f64).ln();
    ((-u.ln() * ml) as usize).min(MAX_LEVEL)
}

/// What a graph file holds.
#[derive(Serialize, Deserialize)]
struct GraphFile {
    m: usize,
    m0: usize,
    ef_construction: usize,
    entry: Option<(u32, usize)>,
    /// Layers per node (level + 1).
    layers: Vec<u8>,
    /// Lengths of every (node, layer) list in order, then their links.
    lengths: Vec<u8>,
    links: Vec<u32>,
}

impl Graph {
    /// An empty graph with `m` links per node (`2m` on layer 0).
    pub fn new(m: usize, ef_construction: usize) -> Self {
        let m = m.max(2);
        Self {
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            nodes: Vec::new(),
            entry: Mutex::new(None),
        }
    }

    /// A graph with the given links: `layers[slot]` lists per layer, layer 0 first (a graph
    /// read from another builder's file).
    pub fn from_links(
        m: usize,
        ef_construction: usize,
        layers: Vec<Vec<Vec<u32>>>,
        entry: Option<(u32, usize)>,
    ) -> Self {
        let mut g = Self::new(m, ef_construction);
        g.nodes = layers
            .into_iter()
            .map(|ls| Node {
                links: ls.into_iter().map(Mutex::new).collect(),
            })
            .collect();
        *g.entry.get_mut().unwrap_or_else(|p| p.into_inner()) = entry;
        g
    }

    /// Nodes in the graph.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The entry point and the top layer.
    pub fn entry(&self) -> Option<(u32, usize)> {
        *self.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Layers `slot` lives in (its level + 1).
    pub fn layers(&self, slot: u32) -> usize {
        self.nodes[slot as usize].links.len()
    }

    /// A copy of `slot`'s links on `layer` (none above its level).
    pub fn links(&self, slot: u32, layer: usize) -> Vec<u32> {
        let mut out = Vec::new();
        self.copy_links(slot, layer, &mut out);
        out
    }

    /// Adds slots `self.len()..to` (rows of `vectors`, `dim` floats each), in parallel.
    pub fn insert_up_to(&mut self, vectors: &[f32], dim: usize, to: usize) {
        let from = self.nodes.len();
        if to <= from {
            return;
        }
        self.nodes.extend((from..to).map(|s| {
            Node {
                links: (0..=level_of(s, self.m))
                    .map(|_| Mutex::new(Vec::new()))
                    .collect(),
            }
        }));
        let graph = &*self;
        // The first node alone, so every other insertion has an entry point.
        let mut next = from;
        if graph.entry().is_none() {
            graph.insert(next as u32, vectors, dim);
            next += 1;
        }
        (next..to)
            .into_par_iter()
            .with_min_len(64)
            .for_each(|s| graph.insert(s as u32, vectors, dim));
    }

    fn insert(&self, slot: u32, vectors: &[f32], dim: usize) {
        let row = |s: u32| &vectors[s as usize * dim..(s as usize + 1) * dim];
        let q = row(slot);
        let dist = |s: u32| Dist((1.0 - dot(q, row(s))).max(0.0));
        let level = self.layers(slot) - 1;
        let Some((mut ep, top)) = self.entry() else {
            *self.entry.lock().unwrap_or_else(|p| p.into_inner()) = Some((slot, level));
            return;
        };
        let mut ep_dist = dist(ep);
        SCRATCH.with_borrow_mut(|scratch| {
            for layer in (level + 1..=top).rev() {
                loop {
                    let mut moved = false;
                    self.copy_links(ep, layer, &mut scratch.links);
                    for &n in &scratch.links {
                        let d = dist(n);
                        if d < ep_dist {
                            (ep, ep_dist, moved) = (n, d, true);
                        }
                    }
                    if !moved {
                        break;
                    }
                }
            }
            for layer in (0..=level.min(top)).rev() {
                let found = self.search_layer(scratch, &row, &dist, (ep_dist, ep), layer);
                let max = if layer == 0 { self.m0 } else { self.m };
                let chosen = self.select(&found, self.m, &row);
                *lock(&self.nodes[slot as usize].links[layer]) =
                    chosen.iter().map(|(_, n)| *n).collect();
                for &(_, n) in &chosen {
                    self.connect(n, slot, layer, max, &row);
                }
                if let Some(&(d, n)) = found.first() {
                    (ep_dist, ep) = (d, n);
                }
            }
        });
        if level > top {
            let mut entry = self.entry.lock().unwrap_or_else(|p| p.into_inner());
            if entry.is_none_or(|(_, t)| level > t) {
                *entry = Some((slot, level));
            }
        }
    }

    /// `node`'s links on `layer` into `out` (none where the node does not reach that layer,
    /// which a graph read from hnsw_rs may link to).
    fn copy_links(&self, node: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        if let Some(list) = self.nodes[node as usize].links.get(layer) {
            out.extend_from_slice(&lock(list));
        }
    }

    /// The `ef_construction` nearest nodes to the query on `layer`, nearest first.
    fn search_layer<'v>(
        &self,
        scratch: &mut Scratch,
        row: &impl Fn(u32) -> &'v [f32],
        dist: &impl Fn(u32) -> Dist,
        (ep_dist, ep): (Dist, u32),
        layer: usize,
    ) -> Vec<(Dist, u32)> {
        let ef = self.ef_construction;
        scratch.visited.start(self.nodes.len());
        let mut candidates = BinaryHeap::with_capacity(ef * 2);
        let mut nearest = BinaryHeap::with_capacity(ef + 1);
        scratch.visited.visit(ep);
        candidates.push(Reverse((ep_dist, ep)));
        nearest.push((ep_dist, ep));
        while let Some(Reverse((d, node))) = candidates.pop() {
            if nearest.len() >= ef && nearest.peek().is_some_and(|(far, _)| d > *far) {
                break;
            }
            self.copy_links(node, layer, &mut scratch.links);
            for &n in &scratch.links {
                if !scratch.visited.seen(n) {
                    prefetch(row(n));
                }
            }
            for i in 0..scratch.links.len() {
                let n = scratch.links[i];
                if !scratch.visited.visit(n) {
                    continue;
                }
                let dn = dist(n);
                if nearest.len() < ef || nearest.peek().is_some_and(|(far, _)| dn < *far) {
                    candidates.push(Reverse((dn, n)));
                    nearest.push((dn, n));
                    if nearest.len() > ef {
                        nearest.pop();
                    }
                }
            }
        }
        let mut out = nearest.into_vec();
        out.sort_unstable();
        out
    }

    /// hnswlib's heuristic: from candidates nearest first, keep one only if it is nearer to
    /// the query than to every node kept so far; at most `max`.
    fn select<'v>(
        &self,
        candidates: &[(Dist, u32)],
        max: usize,
        row: &impl Fn(u32) -> &'v [f32],
    ) -> Vec<(Dist, u32)> {
        if candidates.len() <= max {
            return candidates.to_vec();
        }
        let mut kept: Vec<(Dist, u32)> = Vec::with_capacity(max);
        for &(d, c) in candidates {
            if kept.len() >= max {
                break;
            }
            let v = row(c);
            if kept
                .iter()
                .all(|&(_, k)| Dist((1.0 - dot(v, row(k))).max(0.0)) > d)
            {
                kept.push((d, c));
            }
        }
        kept
    }

    /// Adds a link `from → to` on `layer`, shrinking `from`'s list by the heuristic when it
    /// holds more than `max`.
    fn connect<'v>(
        &self,
        from: u32,
        to: u32,
        layer: usize,
        max: usize,
        row: &impl Fn(u32) -> &'v [f32],
    ) {
        let Some(list) = self.nodes[from as usize].links.get(layer) else {
            return;
        };
        let mut list = lock(list);
        if list.contains(&to) {
            return;
        }
        if list.len() < max {
            list.push(to);
            return;
        }
        let base = row(from);
        let mut candidates: Vec<(Dist, u32)> = list
            .iter()
            .chain(std::iter::once(&to))
            .map(|&n| (Dist((1.0 - dot(base, row(n))).max(0.0)), n))
            .collect();
        candidates.sort_unstable();
        *list = self
            .select(&candidates, max, row)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
    }

    /// Writes the graph to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut file = GraphFile {
            m: self.m,
            m0: self.m0,
            ef_construction: self.ef_construction,
            entry: self.entry(),
            layers: Vec::with_capacity(self.nodes.len()),
            lengths: Vec::new(),
            links: Vec::new(),
        };
        for node in &self.nodes {
            file.layers.push(node.links.len() as u8);
            for l in &node.links {
                let l = lock(l);
                file.lengths.push(l.len().min(u8::MAX as usize) as u8);
                file.links.extend(l.iter().take(u8::MAX as usize));
            }
        }
        let bytes = postcard::to_allocvec(&file)
            .map_err(|e| IndexError::Corrupt(format!("encoding the graph: {e}")))?;
        fs_err::write(path, bytes).map_err(io_err(path))
    }

    /// Reads what [`Graph::save`] wrote; `slots` is how many nodes it must hold.
    pub fn load(path: &Path, slots: usize) -> Result<Self> {
        let bytes = fs_err::read(path).map_err(io_err(path))?;
        let corrupt = |why: &str| IndexError::Corrupt(format!("{}: {why}", path.display()));
        let file: GraphFile = postcard::from_bytes(&bytes).map_err(|e| corrupt(&e.to_string()))?;
        if file.layers.len() != slots {
            return Err(corrupt("node count differs from the vectors"));
        }
        let mut lengths = file.lengths.iter();
        let mut links = file.links.iter();
        let mut nodes = Vec::with_capacity(slots);
        for &layers in &file.layers {
            let mut lists = Vec::with_capacity(layers as usize);
            for _ in 0..layers {
                let n = *lengths.next().ok_or_else(|| corrupt("truncated"))? as usize;
                let list: Vec<u32> = links.by_ref().take(n).copied().collect();
                if list.len() != n || list.iter().any(|&s| s as usize >= slots) {
                    return Err(corrupt("bad links"));
                }
                lists.push(Mutex::new(list));
            }
            nodes.push(Node { links: lists });
        }
        if file
            .entry
            .is_some_and(|(e, l)| e as usize >= slots || l + 1 != file.layers[e as usize] as usize)
        {
            return Err(corrupt("bad entry point"));
        }
        Ok(Self {
            m: file.m,
            m0: file.m0,
            ef_construction: file.ef_construction,
            nodes,
            entry: Mutex::new(file.entry),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::snapshot::Snapshot;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            crate::embed::l2_normalize(&mut v);
            out.extend(v);
        }
        out
    }

    fn recall(graph: &Graph, data: &[f32], queries: &[f32], dim: usize) -> f64 {
        let snapshot = Snapshot::from_graph(graph, graph.len()).expect("snapshot");
        let n = data.len() / dim;
        let mut hits = 0;
        let mut total = 0;
        for q in queries.chunks(dim) {
            let mut exact: Vec<(f32, u32)> = (0..n as u32)
                .map(|s| (dot(q, &data[s as usize * dim..(s as usize + 1) * dim]), s))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: Vec<u32> = exact[..10].iter().map(|x| x.1).collect();
            let found = snapshot.search(q, 10, 64, (data, dim), |_| true);
            hits += found.iter().filter(|(_, s)| truth.contains(s)).count();
            total += 10;
        }
        hits as f64 / total as f64
    }

    #[test]
    fn parallel_build_finds_true_neighbours_and_appends_keep_recall() {
        let dim = 32;
        let data = vectors(6_000, dim, 1);
        let queries = vectors(200, dim, 2);
        let mut graph = Graph::new(16, 200);
        graph.insert_up_to(&data, dim, 4_000);
        let first = recall(&graph, &data[..4_000 * dim], &queries, dim);
        assert!(first >= 0.95, "recall@10 {first}");
        // Appended in small batches, as documents arrive.
        for to in (4_100..=6_000).step_by(100) {
            graph.insert_up_to(&data, dim, to);
        }
        let after = recall(&graph, &data, &queries, dim);
        assert!(after >= 0.95, "recall@10 after appends {after}");
        for s in 0..graph.len() as u32 {
            assert!(graph.links(s, 0).len() <= 32);
        }
    }

    #[test]
    fn a_saved_graph_loads_identical_and_bad_files_are_refused() {
        let dim = 16;
        let data = vectors(1_500, dim, 3);
        let mut graph = Graph::new(8, 64);
        graph.insert_up_to(&data, dim, 1_500);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("graph.links");
        graph.save(&path).expect("save");
        let loaded = Graph::load(&path, 1_500).expect("load");
        assert_eq!(loaded.entry(), graph.entry());
        for s in 0..1_500u32 {
            assert_eq!(loaded.layers(s), graph.layers(s));
            for l in 0..graph.layers(s) {
                assert_eq!(loaded.links(s, l), graph.links(s, l));
            }
        }
        assert!(Graph::load(&path, 1_499).is_err());
        std::fs::write(&path, b"not a graph").expect("write");
        assert!(Graph::load(&path, 1_500).is_err());
    }
}
