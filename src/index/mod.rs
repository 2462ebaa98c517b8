//! Retrieval over chunks: dense vectors, BM25, and their fusion.
//!
//! Owns the in-memory search structures and their on-disk generations:
//! - [`points`]: the catalogue of indexed chunks (slots, tombstones, metadata filters);
//! - [`dense`]: vectors in a flat array (exact scan) plus an hnsw_rs graph once large enough;
//! - [`bm25`] with its [`analyzer`]: the lexical index;
//! - [`snapshot`]: a flat copy of the graph's links, searched by our own loop;
//! - [`hybrid`]: reciprocal rank fusion;
//! - [`collection`]: the three kept in step under one slot space, stamped with the embedding
//!   model, saved and loaded as atomic generations;
//! - [`catalog`]: every KB's collection, kept in commit order with the store, saved in the
//!   background, rebuilt from stored vectors.
//!
//! Must never compute embeddings or read documents: vectors and texts come in from callers
//! (or, for a rebuild, from the vectors the store holds).

pub mod analyzer;
pub mod bm25;
pub mod catalog;
pub mod collection;
pub mod dense;
pub mod distance;
pub mod graph;
pub mod hybrid;
pub mod points;
pub mod snapshot;

pub use catalog::{Catalog, Followed, KbIndex, WriteOrder};
pub use collection::{
    Collection, CollectionOptions, IndexStamp, NewPoint, SearchMode, SearchRequest,
};
pub use points::{Filter, PointMeta};

/// Errors of the index layer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Vectors from another embedding model (or dimension) were offered to this index.
    #[error("index holds vectors of model {expected}, not {found}")]
    ModelMismatch {
        /// The index's model.
        expected: String,
        /// The vectors' model.
        found: String,
    },
    /// A vector's length differs from the index's dimension.
    #[error("vector has dimension {found}, the index expects {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        found: usize,
    },
    /// A file of the index could not be read or written.
    #[error("index file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The files on disk are inconsistent or damaged.
    #[error("index data is corrupt: {0}")]
    Corrupt(String),
    /// The knowledge base's index is not loaded (yet: it is opened at start-up).
    #[error("this knowledge base's index is still loading")]
    NotLoaded,
    /// Reading the stored vectors for a rebuild failed.
    #[error(transparent)]
    Store(crate::store::StoreError),
}

/// Result alias for this module.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// One search result: which chunk, how well it matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The chunk's id as given at insertion.
    pub chunk_id: u64,
    /// Cosine similarity (dense), BM25 score (lexical) or fused RRF score (hybrid).
    pub score: f32,
    /// Cosine similarity to the query vector, when the search had one.
    pub similarity: Option<f32>,
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Keeps the `k` best `(score, slot)` pairs, best first (ties broken by slot for determinism).
pub(crate) fn top_k(mut scored: Vec<(f32, u32)>, k: usize) -> Vec<(f32, u32)> {
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
    scored.truncate(k);
    scored
}
