//! The embedder's tokenizer, shared with the chunker so chunk limits are in the model's tokens.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::{EmbedError, Result};

/// A model's tokenizer, configured twice: truncating to the model's input length for embedding,
/// and unbounded for measuring text when chunking.
pub struct TextTokenizer {
    for_model: Tokenizer,
    for_counting: Tokenizer,
    special_tokens: usize,
    max_tokens: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing the file's own truncation and padding: models such as
    /// all-MiniLM-L6-v2 ship a tokenizer that truncates at 128 tokens although the model reads 256,
    /// and fixed padding would waste compute. We truncate at `max_tokens` and pad per batch.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let mut base = Tokenizer::from_file(path)
            .map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", path.display())))?;
        base.with_padding(None);
        let mut for_counting = base.clone();
        for_counting
            .with_truncation(None)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut for_model = base;
        for_model
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let special_tokens = for_model
            .encode("", true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?
            .len();
        Ok(Self {
            for_model,
            for_counting,
            special_tokens,
            max_tokens,
        })
    }

    /// Tokens the model reads at most, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens added around every input ([CLS] and [SEP] for BERT).
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// Encodes model inputs: special tokens added, truncated, not padded, offsets skipped.
    pub fn encode_for_model(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        self.for_model
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))
    }

    /// Byte spans of the tokens of `text` (no special tokens, no truncation).
    pub fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self
            .for_counting
            .encode(text, false)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// Number of tokens in `text` (no special tokens).
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self
            .for_counting
            .encode(text, false)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?
            .len())
    }
}
