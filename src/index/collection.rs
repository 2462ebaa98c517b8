//! A searchable collection: points, dense vectors and BM25 kept in step under one slot space,
//! stamped with the embedding model, persisted as atomic generations.
//!
//! On disk a collection is a folder holding `CURRENT` (the name of the live generation) and
//! `gen-NNNNNN/` folders. A save writes a complete new generation, syncs it, then replaces
//! `CURRENT` atomically; a crash at any point leaves the previous generation intact.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bm25::{Bm25Index, Bm25Params};
use super::dense::{DenseIndex, HnswParams};
use super::hybrid::{rrf, HybridParams};
use super::points::{Filter, PointMeta, Points};
use super::{io_err, Hit, IndexError, Result};
use crate::util::write_atomic;

/// Which embedding model produced a collection's vectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStamp {
    /// The embedder's model id (name and fingerprint).
    pub model_id: String,
    /// Vector length.
    pub dimension: usize,
}

/// Tuning of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct CollectionOptions {
    /// Graph and exact-scan settings.
    pub hnsw: HnswParams,
    /// Lexical scoring.
    pub bm25: Bm25Params,
    /// Rank fusion.
    pub hybrid: HybridParams,
    /// Compact when tombstones exceed this share of slots (0 means the default, 0.2).
    pub compact_ratio: f32,
}

/// How a query is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest vectors only.
    Dense,
    /// BM25 only.
    Bm25,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// The query's embedding (needed for dense and hybrid).
    pub vector: Option<&'a [f32]>,
    /// The query's text (needed for BM25 and hybrid).
    pub text: &'a str,
    /// Results wanted.
    pub k: usize,
    /// Matching mode.
    pub mode: SearchMode,
    /// Restrictions on which chunks may match.
    pub filter: &'a Filter,
}

/// A chunk offered to the index.
pub struct NewPoint<'a> {
    /// Identity and metadata.
    pub meta: PointMeta,
    /// Its embedding, by the collection's model.
    pub vector: Vec<f32>,
    /// Its text, for BM25.
    pub text: &'a str,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    stamp: IndexStamp,
    options: CollectionOptions,
    slots: usize,
    live: usize,
    graph: Option<String>,
}

const FORMAT: u32 = 1;

/// Points, vectors and BM25 under one slot space.
pub struct Collection {
    stamp: IndexStamp,
    options: CollectionOptions,
    points: Points,
    dense: DenseIndex,
    bm25: Bm25Index,
}

impl Collection {
    /// An empty collection for vectors of `stamp`'s model.
    pub fn new(stamp: IndexStamp, options: CollectionOptions) -> Self {
        Self {
            dense: DenseIndex::new(stamp.dimension, options.hnsw),
            bm25: Bm25Index::new(options.bm25),
            points: Points::default(),
            stamp,
            options,
        }
    }

    /// The model stamp.
    pub fn stamp(&self) -> &IndexStamp {
        &self.stamp
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        self.points.live_count()
    }

    /// Whether no chunk is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tombstoned slots awaiting compaction.
    pub fn tombstones(&self) -> usize {
        self.points.dead_count()
    }

    /// Whether the graph is in use (otherwise searches scan exactly).
    pub fn has_graph(&self) -> bool {
        self.dense.has_graph()
    }

    /// The catalogue, for callers resolving slots to metadata.
    pub fn meta(&self, chunk_id: u64) -> Option<&PointMeta> {
        self.points.slot_of(chunk_id).map(|s| self.points.meta(s))
    }

    /// Ids of the live chunks.
    pub fn chunk_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.points.live_metas().map(|(_, m)| m.chunk_id)
    }

    /// Adds chunks (replacing live chunks with the same ids). Vectors must come from the
    /// collection's model: `model_id` is checked against the stamp.
    pub fn upsert(&mut self, model_id: &str, items: Vec<NewPoint<'_>>) -> Result<()> {
        if model_id != self.stamp.model_id {
            return Err(IndexError::ModelMismatch {
                expected: self.stamp.model_id.clone(),
                found: model_id.to_owned(),
            });
        }
        if let Some(bad) = items
            .iter()
            .find(|p| p.vector.len() != self.stamp.dimension)
        {
            return Err(IndexError::Dimension {
                expected: self.stamp.dimension,
                found: bad.vector.len(),
            });
        }
        let mut vectors = Vec::with_capacity(items.len());
        for item in items {
            if let Some(old) = self.points.slot_of(item.meta.chunk_id) {
                self.bm25.remove(old);
            }
            let slot = self.points.push(item.meta);
            self.bm25.add(slot, item.text);
            vectors.push(item.vector);
        }
        self.dense.append(&vectors, self.points.live_count())?;
        self.maybe_compact();
        Ok(())
    }

    /// Removes chunks by id; returns how many were live.
    pub fn delete_chunks(&mut self, chunk_ids: &[u64]) -> usize {
        let mut removed = 0;
        for id in chunk_ids {
            if let Some(slot) = self.points.slot_of(*id) {
                self.points.kill(slot);
                self.bm25.remove(slot);
                removed += 1;
            }
        }
        self.maybe_compact();
        removed
    }

    /// Removes every chunk of a document; returns how many there were.
    pub fn delete_document(&mut self, document_id: &str) -> usize {
        let slots = self.points.document_slots(document_id);
        for &slot in &slots {
            self.points.kill(slot);
            self.bm25.remove(slot);
        }
        self.maybe_compact();
        slots.len()
    }

    /// Runs one search.
    pub fn search(&self, req: &SearchRequest<'_>) -> Result<Vec<Hit>> {
        let dense = |k: usize| -> Result<Vec<(f32, u32)>> {
            let v = req.vector.ok_or_else(|| {
                IndexError::Corrupt("dense search needs the query's vector".into())
            })?;
            if v.len() != self.stamp.dimension {
                return Err(IndexError::Dimension {
                    expected: self.stamp.dimension,
                    found: v.len(),
                });
            }
            Ok(self.dense.search(v, k, &self.points, req.filter))
        };
        let lexical = |k: usize| self.bm25.search(req.text, k, &self.points, req.filter);
        let ranked = match req.mode {
            SearchMode::Dense => dense(req.k)?,
            SearchMode::Bm25 => lexical(req.k),
            SearchMode::Hybrid => {
                let h = self.options.hybrid;
                let n = h.candidates.max(req.k);
                let d = dense(n)?;
                let l = lexical(n);
                rrf(&[(&d, h.dense_weight), (&l, h.bm25_weight)], h.rrf_k, req.k)
            }
        };
        // Cosine similarity to the query whatever the mode (when it has a vector): an absolute
        // relevance measure next to rank-based fused scores.
        let similarity = |slot: u32| {
            req.vector
                .map(|v| super::distance::dot(self.dense.vector(slot), v))
        };
        Ok(ranked
            .into_iter()
            .map(|(score, slot)| Hit {
                chunk_id: self.points.meta(slot).chunk_id,
                score,
                similarity: similarity(slot),
            })
            .collect())
    }

    /// Compacts when tombstones exceed the configured share. Returns whether it did.
    pub fn maybe_compact(&mut self) -> bool {
        let ratio = if self.options.compact_ratio > 0.0 {
            self.options.compact_ratio
        } else {
            0.2
        };
        let dead = self.points.dead_count();
        if dead >= 64 && dead as f32 > ratio * self.points.slots() as f32 {
            self.compact();
            return true;
        }
        false
    }

    /// Drops tombstones: live chunks get new consecutive slots, the graph is rebuilt.
    pub fn compact(&mut self) {
        let mut new_slot = vec![None; self.points.slots()];
        let mut points = Points::default();
        let mut vectors = Vec::with_capacity(self.points.live_count());
        for (old, meta) in self.points.live_metas() {
            new_slot[old as usize] = Some(points.push(meta.clone()));
            vectors.push(self.dense.vector(old).to_vec());
        }
        let mut dense = DenseIndex::new(self.stamp.dimension, self.options.hnsw);
        // append() builds the graph itself when the live count is above the threshold.
        if let Err(e) = dense.append(&vectors, points.live_count()) {
            tracing::error!(error = %e, "compaction failed; keeping tombstones");
            return;
        }
        self.bm25.remap(&new_slot);
        self.points = points;
        self.dense = dense;
        tracing::debug!(live = self.points.live_count(), "collection compacted");
    }

    /// Writes a new generation under `dir` and makes it current.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs_err::create_dir_all(dir).map_err(io_err(dir))?;
        let next = current_generation(dir)?.map_or(1, |(n, _)| n + 1);
        let gen_dir = dir.join(format!("gen-{next:06}"));
        if gen_dir.exists() {
            fs_err::remove_dir_all(&gen_dir).map_err(io_err(&gen_dir))?;
        }
        fs_err::create_dir_all(&gen_dir).map_err(io_err(&gen_dir))?;
        let graph = self.dense.save(&gen_dir)?;
        write_postcard(&gen_dir.join("points.bin"), &self.points)?;
        write_postcard(&gen_dir.join("bm25.bin"), &self.bm25)?;
        let manifest = Manifest {
            format: FORMAT,
            stamp: self.stamp.clone(),
            options: self.options,
            slots: self.points.slots(),
            live: self.points.live_count(),
            graph,
        };
        let path = gen_dir.join("manifest.json");
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| IndexError::Corrupt(e.to_string()))?;
        write_atomic(&path, &json).map_err(io_err(&path))?;
        sync_dir_files(&gen_dir)?;
        let current = dir.join("CURRENT");
        write_atomic(&current, format!("gen-{next:06}\n").as_bytes()).map_err(io_err(&current))?;
        // Older generations are garbage now; failing to remove one is harmless.
        if let Ok(entries) = fs_err::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("gen-") && name != format!("gen-{next:06}") {
                    let _ = fs_err::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Whether `dir` holds a saved collection.
    pub fn exists(dir: &Path) -> bool {
        dir.join("CURRENT").is_file()
    }

    /// Loads the current generation under `dir`. With `expected`, a collection of another model
    /// or dimension is refused with [`IndexError::ModelMismatch`].
    pub fn load(dir: &Path, expected: Option<&IndexStamp>) -> Result<Self> {
        let (_, gen_dir) = current_generation(dir)?
            .ok_or_else(|| IndexError::Corrupt(format!("{} holds no index", dir.display())))?;
        let path = gen_dir.join("manifest.json");
        let bytes = fs_err::read(&path).map_err(io_err(&path))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| IndexError::Corrupt(format!("{}: {e}", path.display())))?;
        if manifest.format != FORMAT {
            return Err(IndexError::Corrupt(format!(
                "unknown index format {}",
                manifest.format
            )));
        }
        if let Some(want) = expected {
            if *want != manifest.stamp {
                return Err(IndexError::ModelMismatch {
                    expected: format!(
                        "{} ({}d)",
                        manifest.stamp.model_id, manifest.stamp.dimension
                    ),
                    found: format!("{} ({}d)", want.model_id, want.dimension),
                });
            }
        }
        let mut points: Points = read_postcard(&gen_dir.join("points.bin"))?;
        points.reindex();
        let mut bm25: Bm25Index = read_postcard(&gen_dir.join("bm25.bin"))?;
        bm25.set_params(manifest.options.bm25);
        if points.slots() != manifest.slots || points.live_count() != manifest.live {
            return Err(IndexError::Corrupt(
                "point catalogue does not match the manifest".into(),
            ));
        }
        let dense = DenseIndex::load(
            &gen_dir,
            manifest.stamp.dimension,
            manifest.options.hnsw,
            manifest.slots,
            manifest.graph.as_deref(),
        )?;
        Ok(Self {
            stamp: manifest.stamp,
            options: manifest.options,
            points,
            dense,
            bm25,
        })
    }
}

fn current_generation(dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let current = dir.join("CURRENT");
    let name = match fs_err::read_to_string(&current) {
        Ok(s) => s.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&current)(e)),
    };
    let number = name
        .strip_prefix("gen-")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| IndexError::Corrupt(format!("CURRENT names {name:?}")))?;
    Ok(Some((number, dir.join(name))))
}

fn write_postcard<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = postcard::to_stdvec(value).map_err(|e| IndexError::Corrupt(e.to_string()))?;
    fs_err::write(path, bytes).map_err(io_err(path))
}

fn read_postcard<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs_err::read(path).map_err(io_err(path))?;
    postcard::from_bytes(&bytes)
        .map_err(|e| IndexError::Corrupt(format!("{}: {e}", path.display())))
}

fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in fs_err::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let file = std::fs::File::open(entry.path()).map_err(io_err(&entry.path()))?;
        file.sync_all().map_err(io_err(&entry.path()))?;
    }
    Ok(())
}
