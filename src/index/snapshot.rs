//! A frozen, flat copy of the HNSW graph ([`super::graph`], or an hnsw_rs graph read from an
//! index saved before it), searched by our own loop.
//!
//! The mutable graph pays for its mutability on every query (a lock per visited neighbour
//! list). After each change of the graph we copy its links into compressed arrays (layer 0 as CSR, the few
//! upper-layer nodes in a map) and search those with a reusable, generation-stamped visited set
//! and the vectors of [`super::dense`]'s flat array.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use hnsw_rs::prelude::Hnsw;

use super::distance::{dot, prefetch, UnitDot, Visited};
use super::graph::Graph;

/// Distance as an orderable key (`1 - cosine`, never NaN for finite vectors).
#[derive(Clone, Copy, PartialEq)]
struct Dist(f32);
impl Eq for Dist {}
impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Dist {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The graph's links by slot.
pub struct Snapshot {
    offsets: Vec<u32>,
    links: Vec<u32>,
    upper: HashMap<u32, Vec<Vec<u32>>>,
    entry: u32,
    top_layer: usize,
}

/// Per-thread search state, reused across queries so a search allocates nothing.
#[derive(Default)]
struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<(Dist, u32)>>,
    nearest: BinaryHeap<(Dist, u32)>,
    results: BinaryHeap<(Dist, u32)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Snapshot {
    /// Copies the links of `graph` over slots `0..slots`.
    pub fn from_graph(graph: &Graph, slots: usize) -> Option<Self> {
        let (entry, top_layer) = graph.entry()?;
        if slots > graph.len() || entry as usize >= slots {
            return None;
        }
        let mut offsets = Vec::with_capacity(slots + 1);
        let mut links = Vec::with_capacity(slots * 24);
        let mut upper = HashMap::new();
        offsets.push(0);
        for slot in 0..slots as u32 {
            // Links to nodes added after `slots` stay out: the tail is searched exactly.
            links.extend(
                graph
                    .links(slot, 0)
                    .into_iter()
                    .filter(|&n| (n as usize) < slots),
            );
            offsets.push(links.len() as u32);
            let layers = graph.layers(slot);
            if layers > 1 {
                let ups = (0..layers)
                    .map(|l| {
                        graph
                            .links(slot, l)
                            .into_iter()
                            .filter(|&n| (n as usize) < slots)
                            .collect()
                    })
                    .collect();
                upper.insert(slot, ups);
            }
        }
        Some(Self {
            offsets,
            links,
            upper,
            entry,
            top_layer,
        })
    }

    /// The links per slot and layer (layer 0 first) and the entry point: what a [`Graph`] is
    /// rebuilt from when an index saved by hnsw_rs is loaded.
    pub fn into_layers(self) -> (Vec<Vec<Vec<u32>>>, (u32, usize)) {
        let slots = self.slots();
        let mut upper = self.upper;
        let layers = (0..slots)
            .map(|s| {
                let zero =
                    self.links[self.offsets[s] as usize..self.offsets[s + 1] as usize].to_vec();
                match upper.remove(&(s as u32)) {
                    Some(mut ups) if !ups.is_empty() => {
                        ups[0] = zero;
                        ups
                    }
                    _ => vec![zero],
                }
            })
            .collect();
        (layers, (self.entry, self.top_layer))
    }

    /// Copies the links of an hnsw_rs graph (whose data ids are slots `0..slots`).
    pub fn of(graph: &Hnsw<'static, f32, UnitDot>, slots: usize) -> Option<Self> {
        let mut per_slot: Vec<Vec<u32>> = vec![Vec::new(); slots];
        let mut upper = HashMap::new();
        let mut entry = None;
        let top_layer = graph.get_max_level_observed() as usize;
        for point in graph.get_point_indexation() {
            let slot = point.get_origin_id();
            if slot >= slots {
                return None;
            }
            let layers = point.get_neighborhood_id();
            if let Some(first) = layers.first() {
                per_slot[slot] = first.iter().map(|n| n.d_id as u32).collect();
            }
            let level = point.get_point_id().0 as usize;
            if level > 0 {
                let ups = layers
                    .iter()
                    .take(level + 1)
                    .map(|l| l.iter().map(|n| n.d_id as u32).collect())
                    .collect();
                upper.insert(slot as u32, ups);
            }
            if level == top_layer && entry.is_none() {
                entry = Some(slot as u32);
            }
        }
        let mut offsets = Vec::with_capacity(slots + 1);
        let mut links = Vec::with_capacity(per_slot.iter().map(Vec::len).sum());
        offsets.push(0);
        for l in per_slot {
            links.extend(l);
            offsets.push(links.len() as u32);
        }
        Some(Self {
            offsets,
            links,
            upper,
            entry: entry?,
            top_layer,
        })
    }

    fn layer0(&self, slot: u32) -> &[u32] {
        &self.links[self.offsets[slot as usize] as usize..self.offsets[slot as usize + 1] as usize]
    }

    /// Slots the snapshot covers (`0..slots`).
    pub fn slots(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Up to `k` nearest slots passing `allowed`, as `(cosine, slot)` best first, exploring
    /// with a candidate list of `ef`. `vectors` is the slot-major array of `dim`-sized rows.
    /// Traversal goes through excluded nodes; only results are filtered.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        (vectors, dim): (&[f32], usize),
        allowed: impl Fn(u32) -> bool,
    ) -> Vec<(f32, u32)> {
        let dist = |slot: u32| {
            let start = slot as usize * dim;
            Dist((1.0 - dot(query, &vectors[start..start + dim])).max(0.0))
        };
        // Greedy descent through the upper layers.
        let mut ep = self.entry;
        let mut ep_dist = dist(ep);
        for layer in (1..=self.top_layer).rev() {
            loop {
                let mut moved = false;
                let links = self.upper.get(&ep).and_then(|l| l.get(layer));
                for &n in links.into_iter().flatten() {
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
        // Beam search on layer 0.
        let ef = ef.max(k);
        let slots = self.offsets.len() - 1;
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                visited,
                candidates,
                nearest,
                results,
            } = scratch;
            visited.start(slots);
            candidates.clear();
            nearest.clear();
            results.clear();
            visited.visit(ep);
            candidates.push(Reverse((ep_dist, ep)));
            nearest.push((ep_dist, ep));
            if allowed(ep) {
                results.push((ep_dist, ep));
            }
            while let Some(Reverse((d, node))) = candidates.pop() {
                if nearest.len() >= ef && nearest.peek().is_some_and(|(far, _)| d > *far) {
                    break;
                }
                let links = self.layer0(node);
                for &n in links {
                    let start = n as usize * dim;
                    prefetch(&vectors[start..start + dim]);
                }
                for &n in links {
                    if !visited.visit(n) {
                        continue;
                    }
                    let dn = dist(n);
                    if nearest.len() < ef || nearest.peek().is_some_and(|(far, _)| dn < *far) {
                        candidates.push(Reverse((dn, n)));
                        nearest.push((dn, n));
                        if nearest.len() > ef {
                            nearest.pop();
                        }
                        if allowed(n) {
                            results.push((dn, n));
                            if results.len() > k {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<(f32, u32)> = results.drain().map(|(d, s)| (1.0 - d.0, s)).collect();
            out.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            out
        })
    }
}
