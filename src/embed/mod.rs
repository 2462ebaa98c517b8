//! Text embeddings computed locally.
//!
//! Owns the [`Embedder`] trait, the loading of sentence-transformers model folders
//! ([`ModelDir`]) and the BERT-family embedder ([`BertEmbedder`]: weights read with candle,
//! forward pass on candle's GEMM kernels, see `encoder`), the cross-encoder that reranks
//! passages on the same encoder ([`CrossEncoder`]), and the query queue that batches
//! concurrent queries and puts them ahead of bulk work (`priority`). Vectors leave this module
//! L2-normalised, so callers may compare them with a dot product.
//!
//! Must never do I/O beyond reading a model folder, and never know about documents or indexes.

mod bert;
mod cross;
mod encoder;
mod model_dir;
mod priority;
mod tokenizer;

pub use crate::compute::qgemm::Kernel as Int8Kernel;
pub use bert::{BertEmbedder, EmbedOptions};
pub use cross::CrossEncoder;
pub use model_dir::{ModelDir, Pooling};
pub use priority::QueueOptions;
pub use tokenizer::TextTokenizer;

/// The arithmetic of the encoder's dense layers (90% of its work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// int8 where the CPU has integer dot products (AVX-512 VNNI or AVX-VNNI), else f32.
    #[default]
    Auto,
    /// f32 weights and activations: the same vectors as sentence-transformers.
    F32,
    /// int8 weights (per output row) and activations (per token, smoothed per channel), on
    /// the CPU's integer dot products: vectors within cosine 0.995 of f32 (tested), about twice
    /// as fast. Refused on a CPU without VNNI.
    Int8,
}

/// Errors raised while loading a model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model folder is missing a file or holds an unreadable one.
    #[error("model folder {path}: {reason}")]
    ModelFolder {
        /// The folder or file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer rejected the input or could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The tensor computation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// Too many queries are waiting for the embedder.
    #[error("too many queries are waiting for the embedder; retry shortly")]
    Overloaded,
    /// The batch a query was embedded in failed.
    #[error("embedding failed: {0}")]
    Batch(String),
}

/// Result alias for this module.
pub type Result<T, E = EmbedError> = std::result::Result<T, E>;

/// Anything that turns passages into fixed-size, L2-normalised vectors.
pub trait Embedder: Send + Sync {
    /// A stable identifier of the model and its weights; indexes are stamped with it.
    fn model_id(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dimension(&self) -> usize;
    /// Longest input, in tokens including special tokens; longer inputs are truncated.
    fn max_tokens(&self) -> usize;
    /// The tokenizer the model reads with, for token-aware chunking.
    fn tokenizer(&self) -> &TextTokenizer;
    /// Embeds `texts`, returning one vector per text in the same order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// The arithmetic in use (never `Auto`): vectors of both precisions of one model are
    /// interchangeable within the quality bound, so it is not part of [`Embedder::model_id`].
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// Embeds one search query, ahead of bulk work where the embedder can (see
    /// `priority`): concurrent queries may share one forward pass.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| EmbedError::Batch("the embedder returned no vector".into()))
    }
}

/// Scales `v` to unit length in place (a zero vector is left as is).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
