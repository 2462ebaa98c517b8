//! The candle BERT encoder: tokenise, batch by length, encode, pool, normalise.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rayon::prelude::*;

use super::model_dir::{ModelDir, Pooling};
use super::tokenizer::TextTokenizer;
use super::{l2_normalize, EmbedError, Embedder, Result};
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
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_seq_length: None,
            concurrent_batches: 1,
        }
    }
}

/// A BERT-family sentence encoder on the CPU.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    dimension: usize,
    model_id: String,
    device: Device,
    options: EmbedOptions,
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
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| fail(format!("config.json is not a BERT config: {e}")))?;
        let max_len = options
            .max_seq_length
            .unwrap_or(folder.max_seq_length)
            .min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len)?;
        let weights = dir.join("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the weights file is mapped read-only; it must not be modified while loaded,
        // which holds for model folders managed by `models/fetch.py` or the user.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config)?;
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
            model,
            tokenizer,
            pooling: folder.pooling,
            dimension: config.hidden_size,
            model_id,
            device,
            options,
        })
    }

    fn embed_batch(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let batch = ids.len();
        let width = ids.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut input = vec![0u32; batch * width];
        let mut mask = vec![0f32; batch * width];
        for (row, tokens) in ids.iter().enumerate() {
            input[row * width..row * width + tokens.len()].copy_from_slice(tokens);
            mask[row * width..row * width + tokens.len()].fill(1.0);
        }
        let input = Tensor::from_vec(input, (batch, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, width), &self.device)?;
        let types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Max => {
                let m = mask.unsqueeze(2)?;
                // Padding positions get a large negative value so they never win the max.
                let penalty = ((m.ones_like()? - &m)? * -1e9)?;
                hidden.broadcast_add(&penalty)?.max(D::Minus2)?
            }
        };
        let mut rows = pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
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
        let results: Vec<Result<Vec<Vec<f32>>>> = if self.options.concurrent_batches > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.options.concurrent_batches)
                .build()
                .map_err(|e| EmbedError::Tokenizer(format!("thread pool: {e}")))?;
            pool.install(|| batches.par_iter().map(run).collect())
        } else {
            batches.iter().map(run).collect()
        };
        let mut out = vec![Vec::new(); texts.len()];
        for (members, vectors) in batches.iter().zip(results) {
            for (&i, v) in members.iter().zip(vectors?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
