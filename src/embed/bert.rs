//! The local BERT-family embedder: tokenise, batch by length, encode, pool, normalise.

use std::path::Path;

use rayon::prelude::*;

use super::encoder::{BertConfig, Encoder};
use super::model_dir::{ModelDir, Pooling};
use super::priority::{QueryQueue, QueueOptions};
use super::tokenizer::TextTokenizer;
use super::{EmbedError, Embedder, Result};
use crate::util::sha256_hex;

/// Tuning knobs of the local embedder.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Passages per forward pass.
    pub batch_size: usize,
    /// Overrides the folder's max sequence length (clamped to the model's position limit).
    pub max_seq_length: Option<usize>,
    /// Forward passes run at once on the rayon pool. 1 lets the matrix kernels use every core;
    /// more runs whole batches side by side, which keeps cores busy in the ops that are not
    /// matrix products (softmax, GELU, layer norm).
    pub concurrent_batches: usize,
    /// How queries are batched and queued.
    pub queries: QueueOptions,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_seq_length: None,
            concurrent_batches: 2,
            queries: QueueOptions::default(),
        }
    }
}

/// A BERT-family sentence encoder on the CPU.
pub struct BertEmbedder {
    encoder: Encoder,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    dimension: usize,
    model_id: String,
    options: EmbedOptions,
    /// Runs `concurrent_batches` forward passes side by side (absent when 1).
    pool: Option<rayon::ThreadPool>,
    /// Queries waiting, batched, ahead of bulk work.
    queries: QueryQueue,
    /// Runs query batches, so they never queue behind bulk batches on `pool` (the bulk
    /// threads wait at their next operation while a query batch runs).
    query_pool: rayon::ThreadPool,
}

impl BertEmbedder {
    /// Loads the model in `dir` (a sentence-transformers folder).
    pub fn load(dir: &Path, options: EmbedOptions) -> Result<Self> {
        let folder = ModelDir::open(dir)?;
        let fail = |reason: String| EmbedError::ModelFolder {
            path: dir.display().to_string(),
            reason,
        };
        let config_bytes = std::fs::read(dir.join("config.json"))
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let config: BertConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| fail(format!("config.json is not a BERT config: {e}")))?;
        let max_len = options
            .max_seq_length
            .unwrap_or(folder.max_seq_length)
            .min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        let weights = dir.join("model.safetensors");
        let encoder = Encoder::load(&weights, &config)?;
        let pool = if options.concurrent_batches > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(options.concurrent_batches)
                    .thread_name(|i| format!("embed-{i}"))
                    .build()
                    .map_err(|e| fail(format!("cannot start embedding threads: {e}")))?,
            )
        } else {
            None
        };
        let query_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name(|i| format!("embed-query-{i}"))
            .build()
            .map_err(|e| fail(format!("cannot start query threads: {e}")))?;
        let tokenizer_bytes = std::fs::read(dir.join("tokenizer.json")).unwrap_or_default();
        let weights_len = std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0);
        let fingerprint = sha256_hex(
            &[
                config_bytes.as_slice(),
                tokenizer_bytes.as_slice(),
                format!("{:?}|{max_len}|{weights_len}", folder.pooling).as_bytes(),
            ]
            .concat(),
        );
        let model_id = format!("{}@{}", folder.name, &fingerprint[..12]);
        tracing::info!(model = %model_id, max_len, pooling = ?folder.pooling, "embedder loaded");
        Ok(Self {
            encoder,
            tokenizer,
            pooling: folder.pooling,
            dimension: config.hidden_size,
            model_id,
            queries: QueryQueue::new(options.queries),
            options,
            pool,
            query_pool,
        })
    }

    fn embed_batch(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .encoder
            .embed(ids, self.pooling, &|| self.queries.yield_to_queries()))
    }
}

impl Embedder for BertEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens()
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_for_model(texts)?;
        // Longest first, so each batch pads to a length close to all of its members.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let batches: Vec<&[usize]> = order.chunks(self.options.batch_size.max(1)).collect();
        let run = |members: &&[usize]| -> Result<Vec<Vec<f32>>> {
            let ids: Vec<&[u32]> = members.iter().map(|&i| encodings[i].get_ids()).collect();
            self.embed_batch(&ids)
        };
        let results: Vec<Result<Vec<Vec<f32>>>> = match &self.pool {
            Some(pool) => pool.install(|| batches.par_iter().map(run).collect()),
            None => batches.iter().map(run).collect(),
        };
        let mut out = vec![Vec::new(); texts.len()];
        for (members, vectors) in batches.iter().zip(results) {
            for (&i, v) in members.iter().zip(vectors?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.queries.submit(text, |texts| {
            let encodings = self.tokenizer.encode_for_model(texts)?;
            let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
            Ok(self
                .query_pool
                .install(|| self.encoder.embed(&ids, self.pooling, &|| ())))
        })
    }
}
