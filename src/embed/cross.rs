//! A cross-encoder: a BERT-family sequence classifier that reads a query and a passage together
//! and scores how well the passage answers it — what sentence-transformers saves as a
//! `CrossEncoder` folder (`config.json`, `model.safetensors`, `tokenizer.json`; one output).
//!
//! The pair `[CLS] query [SEP] passage [SEP]` (passage as token type 1, the longer side
//! truncated first) runs through the same encoder as the embedder; the head is
//! `classifier(tanh(pooler(h_[CLS])))` and the score its sigmoid, as sentence-transformers'
//! `CrossEncoder.predict` gives for one-output models. Must never be used as an embedder.

use std::path::Path;

use candle_core::{DType, Device};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use super::encoder::{BertConfig, Encoder};
use super::{EmbedError, Result};

/// Pairs per forward pass.
const BATCH: usize = 16;

/// A loaded cross-encoder.
pub struct CrossEncoder {
    encoder: Encoder,
    /// `[h, h]` row-major and `[h]`; absent in models trained without a pooler.
    pooler: Option<(Vec<f32>, Vec<f32>)>,
    /// `[h]` and the bias of the one output.
    classifier: (Vec<f32>, f32),
    tokenizer: Tokenizer,
    id: String,
}

#[derive(serde::Deserialize)]
struct HeadConfig {
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<std::collections::BTreeMap<String, String>>,
}

fn folder_error(dir: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::ModelFolder {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

impl CrossEncoder {
    /// Loads a cross-encoder folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| folder_error(dir, format!("{name}: {e}")))
        };
        let config_text = read("config.json")?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|e| folder_error(dir, format!("config.json: {e}")))?;
        let head: HeadConfig = serde_json::from_str(&config_text)
            .map_err(|e| folder_error(dir, format!("config.json: {e}")))?;
        let labels = head
            .num_labels
            .or(head.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(1);
        if labels != 1 {
            return Err(folder_error(
                dir,
                format!("a reranker has one output (relevance); this model has {labels}"),
            ));
        }
        let weights = dir.join("model.safetensors");
        let encoder = Encoder::load(&weights, &config)?;
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
        let get = |names: &[&str]| -> Result<Option<Vec<f32>>> {
            for n in names {
                if let Some(t) = tensors.get(*n) {
                    return Ok(Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?));
                }
            }
            Ok(None)
        };
        let h = encoder.hidden();
        let pooler = match (
            get(&["bert.pooler.dense.weight", "pooler.dense.weight"])?,
            get(&["bert.pooler.dense.bias", "pooler.dense.bias"])?,
        ) {
            (Some(w), Some(b)) if w.len() == h * h && b.len() == h => Some((w, b)),
            (None, None) => None,
            _ => return Err(folder_error(dir, "the pooler has an unexpected shape")),
        };
        let classifier =
            match (get(&["classifier.weight"])?, get(&["classifier.bias"])?) {
                (Some(w), Some(b)) if w.len() == h && b.len() == 1 => (w, b[0]),
                _ => return Err(folder_error(
                    dir,
                    "no classifier.weight [1, hidden] and classifier.bias [1]: not a cross-encoder",
                )),
            };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| folder_error(dir, format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings.min(512),
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let digest = crate::util::sha256_hex(config_text.as_bytes());
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cross-encoder".into());
        Ok(Self {
            encoder,
            pooler,
            classifier,
            tokenizer,
            id: format!("{name}@{}", &digest[..12]),
        })
    }

    /// `name@config-digest`.
    pub fn model_id(&self) -> &str {
        &self.id
    }

    /// Tokens the pairs of `query` with `passages` hold (special tokens included, after
    /// truncation), for usage records.
    pub fn count_tokens(&self, query: &str, passages: &[&str]) -> Result<usize> {
        Ok(self
            .encode(query, passages)?
            .iter()
            .map(|(ids, _)| ids.len())
            .sum())
    }

    fn encode(&self, query: &str, passages: &[&str]) -> Result<Vec<(Vec<u32>, usize)>> {
        passages
            .iter()
            .map(|p| {
                let e = self
                    .tokenizer
                    .encode((query, *p), true)
                    .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
                let second = e
                    .get_type_ids()
                    .iter()
                    .position(|&t| t == 1)
                    .unwrap_or(e.get_ids().len());
                Ok((e.get_ids().to_vec(), second))
            })
            .collect()
    }

    /// The relevance of each passage to `query`, in (0, 1), in order.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let pairs = self.encode(query, passages)?;
        let mut out = Vec::with_capacity(pairs.len());
        for batch in pairs.chunks(BATCH) {
            let seqs: Vec<&[u32]> = batch.iter().map(|(ids, _)| ids.as_slice()).collect();
            let second: Vec<usize> = batch.iter().map(|(_, s)| *s).collect();
            for cls in self.encoder.cls_of_pairs(&seqs, &second) {
                out.push(sigmoid(self.logit(&cls)));
            }
        }
        Ok(out)
    }

    /// The classifier's output for one `[CLS]` state.
    fn logit(&self, cls: &[f32]) -> f32 {
        let pooled: Vec<f32> = match &self.pooler {
            Some((w, b)) => w
                .chunks(cls.len())
                .zip(b)
                .map(|(row, bias)| (dot(row, cls) + bias).tanh())
                .collect(),
            None => cls.to_vec(),
        };
        dot(&self.classifier.0, &pooled) + self.classifier.1
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
