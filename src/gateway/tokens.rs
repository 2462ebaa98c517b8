//! Token-id inputs. OpenAI's embeddings API also takes texts already split into the token ids
//! of a tiktoken encoding (LangChain's `OpenAIEmbeddings` sends nothing else by default); they
//! are turned back into text here, so that every model — local or remote — is given text.
//!
//! The encoding is the one the request's model name implies to tiktoken (`text-embedding-3-small`
//! → cl100k_base, `gpt-4o` → o200k_base), else the one the ids' range implies: cl100k_base, or
//! o200k_base when an id is past cl100k_base's last. Owns the decoding tables (built once, on
//! first use — call from a blocking thread). Must never tokenize for a model.

use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
use tiktoken_rs::CoreBPE;

use super::types::EmbeddingInput;
use super::GatewayError;

/// One past cl100k_base's last id (its special tokens included).
const CL100K_END: u32 = 100_277;
/// One past o200k_base's last id (its special tokens included).
const O200K_END: u32 = 200_019;

/// The encodings token ids are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Cl100k,
    O200k,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Cl100k => "cl100k_base",
            Encoding::O200k => "o200k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
        }
    }

    /// The encoding for `model` (as a client named it) and ids up to `max_id`.
    fn choose(model: &str, max_id: u32) -> Result<Self, GatewayError> {
        let named = match get_tokenizer(model.rsplit('/').next().unwrap_or(model)) {
            Some(Tokenizer::Cl100kBase) => Some(Encoding::Cl100k),
            Some(Tokenizer::O200kBase) => Some(Encoding::O200k),
            _ => None,
        };
        let enc = match named {
            Some(e) => e,
            None if max_id < CL100K_END => Encoding::Cl100k,
            None => Encoding::O200k,
        };
        let end = if enc == Encoding::Cl100k {
            CL100K_END
        } else {
            O200K_END
        };
        if max_id >= end {
            return Err(GatewayError::Invalid(format!(
                "input holds token id {max_id}, past the end of {} (token ids are read as \
                 cl100k_base, or o200k_base past id {}); send the text instead",
                enc.name(),
                CL100K_END - 1
            )));
        }
        Ok(enc)
    }
}

/// True when `input` is token ids (decoding them builds a table: keep it off async threads).
pub fn has_ids(input: &EmbeddingInput) -> bool {
    matches!(
        input,
        EmbeddingInput::Tokens(_) | EmbeddingInput::ManyTokens(_)
    )
}

/// The input's texts, token ids decoded in the encoding `model` or their range implies.
pub fn texts(model: &str, input: EmbeddingInput) -> Result<Vec<String>, GatewayError> {
    let lists = match input {
        EmbeddingInput::One(s) => return Ok(vec![s]),
        EmbeddingInput::Many(v) => return Ok(v),
        EmbeddingInput::Tokens(ids) => vec![ids],
        EmbeddingInput::ManyTokens(v) => v,
    };
    let max_id = lists.iter().flatten().copied().max().unwrap_or(0);
    let enc = Encoding::choose(model, max_id)?;
    let bpe = enc.bpe();
    lists
        .iter()
        .map(|ids| {
            let bytes = bpe.decode_bytes(ids).map_err(|e| {
                GatewayError::Invalid(format!(
                    "input holds token id {}, which {} does not define; send the text instead",
                    e.token,
                    enc.name()
                ))
            })?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(enc: Encoding, text: &str) -> Vec<u32> {
        enc.bpe().encode_ordinary(text)
    }

    #[test]
    fn ids_of_either_encoding_decode_to_their_text() {
        let text = "Ferris the crab — ünïcode and 数字 42";
        let cl = ids(Encoding::Cl100k, text);
        let o = ids(Encoding::O200k, text);
        assert_ne!(cl, o);
        // The model name decides where it is known to tiktoken ...
        let got =
            texts("text-embedding-3-small", EmbeddingInput::Tokens(cl.clone())).expect("accepted");
        assert_eq!(got, [text]);
        let got = texts("gpt-4o", EmbeddingInput::ManyTokens(vec![o.clone()])).expect("accepted");
        assert_eq!(got, [text]);
        // ... else the range: these cl100k ids are all below its end.
        let got =
            texts("embed", EmbeddingInput::ManyTokens(vec![cl.clone(), cl])).expect("accepted");
        assert_eq!(got, [text, text]);
    }

    #[test]
    fn ids_past_every_encoding_are_refused_naming_the_fix() {
        let err =
            texts("embed", EmbeddingInput::Tokens(vec![15339, 250_000])).expect_err("refused");
        assert!(err.to_string().contains("250000"), "{err}");
        assert!(err.to_string().contains("send the text"), "{err}");
        // An o200k id under a cl100k model's name.
        let err = texts(
            "text-embedding-ada-002",
            EmbeddingInput::Tokens(vec![150_000]),
        );
        assert!(err
            .expect_err("refused")
            .to_string()
            .contains("cl100k_base"));
        // A hole between cl100k's regular and special ids.
        let err = texts("embed", EmbeddingInput::Tokens(vec![100_270])).expect_err("refused");
        assert!(err.to_string().contains("does not define"), "{err}");
    }

    #[test]
    fn texts_pass_through() {
        let got =
            texts("embed", EmbeddingInput::Many(vec!["a".into(), "b".into()])).expect("accepted");
        assert_eq!(got, ["a", "b"]);
    }
}
