//! Reading a sentence-transformers model folder: which files, which pooling, how long an input.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EmbedError, Result};

/// How token vectors are pooled into one passage vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the non-padding token vectors.
    Mean,
    /// The first ([CLS]) token's vector.
    Cls,
    /// Element-wise maximum over non-padding tokens.
    Max,
}

/// A located model folder: `config.json`, `tokenizer.json`, `model.safetensors` and, when present,
/// `1_Pooling/config.json` and `sentence_bert_config.json`.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder itself.
    pub path: PathBuf,
    /// Pooling read from `1_Pooling/config.json` (mean when that file is absent).
    pub pooling: Pooling,
    /// Longest input in tokens: `max_seq_length` of `sentence_bert_config.json`, else the model's
    /// `max_position_embeddings`.
    pub max_seq_length: usize,
    /// Human-readable name (the folder name).
    pub name: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PositionsConfig {
    max_position_embeddings: Option<usize>,
}

impl ModelDir {
    /// Inspects `path` and checks that the files an encoder needs are there.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fail = |reason: String| EmbedError::ModelFolder {
            path: path.display().to_string(),
            reason,
        };
        for needed in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !path.join(needed).is_file() {
                return Err(fail(format!(
                    "{needed} is missing (expected a sentence-transformers folder; \
                     run `python3 models/fetch.py` for the default model)"
                )));
            }
        }
        let pooling = match read_json::<PoolingConfig>(&path.join("1_Pooling/config.json")) {
            Some(Ok(cfg)) if cfg.pooling_mode_cls_token => Pooling::Cls,
            Some(Ok(cfg)) if cfg.pooling_mode_max_tokens && !cfg.pooling_mode_mean_tokens => {
                Pooling::Max
            }
            Some(Ok(_)) | None => Pooling::Mean,
            Some(Err(e)) => return Err(fail(format!("1_Pooling/config.json: {e}"))),
        };
        let positions = match read_json::<PositionsConfig>(&path.join("config.json")) {
            Some(Ok(cfg)) => cfg.max_position_embeddings.unwrap_or(512),
            Some(Err(e)) => return Err(fail(format!("config.json: {e}"))),
            None => 512,
        };
        let max_seq_length =
            match read_json::<SentenceBertConfig>(&path.join("sentence_bert_config.json")) {
                Some(Ok(cfg)) => cfg.max_seq_length.unwrap_or(positions).min(positions),
                Some(Err(e)) => return Err(fail(format!("sentence_bert_config.json: {e}"))),
                None => positions,
            };
        let name = path
            .canonicalize()
            .unwrap_or_else(|_| path.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            path,
            pooling,
            max_seq_length,
            name,
        })
    }

    /// The project's default embedder folder, `models/all-MiniLM-L6-v2` under `root`.
    pub fn default_path(root: &Path) -> PathBuf {
        root.join("models").join("all-MiniLM-L6-v2")
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<Result<T, String>> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, body).expect("write");
        }
        dir
    }

    #[test]
    fn reads_pooling_and_max_length() {
        let dir = folder(&[
            ("config.json", r#"{"max_position_embeddings": 512}"#),
            ("tokenizer.json", "{}"),
            ("model.safetensors", ""),
            ("sentence_bert_config.json", r#"{"max_seq_length": 256}"#),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_cls_token": true}"#,
            ),
        ]);
        let m = ModelDir::open(dir.path()).expect("open");
        assert_eq!(m.pooling, Pooling::Cls);
        assert_eq!(m.max_seq_length, 256);
    }

    #[test]
    fn defaults_to_mean_and_position_limit() {
        let dir = folder(&[
            ("config.json", r#"{"max_position_embeddings": 128}"#),
            ("tokenizer.json", "{}"),
            ("model.safetensors", ""),
        ]);
        let m = ModelDir::open(dir.path()).expect("open");
        assert_eq!(m.pooling, Pooling::Mean);
        assert_eq!(m.max_seq_length, 128);
    }

    #[test]
    fn missing_weights_is_a_clear_error() {
        let dir = folder(&[("config.json", "{}"), ("tokenizer.json", "{}")]);
        let err = ModelDir::open(dir.path()).expect_err("must fail");
        assert!(
            err.to_string().contains("model.safetensors is missing"),
            "{err}"
        );
    }
}
