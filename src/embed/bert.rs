//! The local BERT-family embedder: tokenise, batch by length, encode, pool, normalise.

use std::path::Path;

use rayon::prelude::*;

use super::encoder::{BertConfig, Encoder};
use super::model_dir::{ModelDir, Pooling};
use super::priority::{QueryQueue, QueueOptions};
use super::tokenizer::TextTokenizer;
use super::{EmbedError, Embedder, Int8Kernel, Precision, Result};
use crate::util::sha256_hex;

/// Text encoded once in f32 when the encoder moves to int8, to measure each layer's input
/// ranges: short queries and passages of prose, code, numbers and other languages.
const CALIBRATION: &[&str] = &[
    "hello",
    "How do I reset my password?",
    "what is the capital of France",
    "Vectors are compared with the cosine of the angle between them; the index keeps the nearest \
     neighbours of each passage in a graph, so a search visits a few hundred of them instead of \
     every vector in the collection.",
    "fn main() { let v: Vec<u32> = (0..10).map(|i| i * 2).collect(); println!(\"{v:?}\"); }",
    "Revenue grew 12.5% year over year to $4.2 billion in Q3 2024, while operating costs fell \
     from 1,830 to 1,702 million.",
    "The patient presented with fever (38.9 °C), elevated CRP and a cough lasting 3 weeks; \
     antibiotics were started after the chest X-ray showed consolidation.",
    "Größere Straßen führen über die Brücke nach Köln, où l'on parle aussi français.",
    "Section 4.2 — Termination. Either party may terminate this Agreement upon thirty (30) \
     days' written notice if the other party materially breaches it.",
    "SELECT name, count(*) FROM documents WHERE status = 'ready' GROUP BY name ORDER BY 2 DESC;",
];

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
    /// Arithmetic of the dense layers.
    pub precision: Precision,
    /// The int8 kernel, when not the fastest this CPU has (tests and benchmarks of the
    /// fallbacks).
    pub int8_kernel: Option<Int8Kernel>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_seq_length: None,
            concurrent_batches: 2,
            queries: QueueOptions::default(),
            precision: Precision::default(),
            int8_kernel: None,
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
    /// The arithmetic in use (`Auto` resolved).
    precision: Precision,
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
        if let Some(k) = options.int8_kernel {
            if !Int8Kernel::available().contains(&k) {
                return Err(fail(format!("this CPU cannot run the {} kernel", k.name())));
            }
        }
        let detected = options.int8_kernel.or_else(Int8Kernel::detect);
        let kernel = match options.precision {
            Precision::F32 => None,
            Precision::Auto => detected,
            Precision::Int8 => Some(detected.ok_or_else(|| {
                fail(
                    "precision int8 needs a CPU with AVX-512 VNNI or AVX-VNNI; this one has \
                     neither (use precision \"auto\" or \"f32\")"
                        .into(),
                )
            })?),
        };
        let precision = if kernel.is_some() {
            Precision::Int8
        } else {
            Precision::F32
        };
        let mut encoder = Encoder::load(&weights, &config)?;
        if let Some(kernel) = kernel {
            let calibration = tokenizer.encode_for_model(CALIBRATION)?;
            let ids: Vec<&[u32]> = calibration.iter().map(|e| e.get_ids()).collect();
            encoder.quantize(kernel, &ids);
        }
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
        let kernel = kernel.map_or("f32 gemm", Int8Kernel::name);
        tracing::info!(
            model = %model_id, max_len, pooling = ?folder.pooling, ?precision,
            kernel, "embedder loaded"
        );
        Ok(Self {
            encoder,
            tokenizer,
            pooling: folder.pooling,
            dimension: config.hidden_size,
            model_id,
            precision,
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

    fn precision(&self) -> Precision {
        self.precision
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_for_model(texts)?;
        // Longest first, so each batch pads to a length close to all of its members.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        // As few batches as the batch size allows, of equal sizes (65 texts are 22 + 22 + 21,
        // not 32 + 32 + 1: a sliver of a batch pays a whole pass's fixed costs).
        let count = texts.len().div_ceil(self.options.batch_size.max(1));
        let batches: Vec<&[usize]> = order.chunks(texts.len().div_ceil(count)).collect();
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
