//! What a GGUF file carries besides weights: the tokenizer (a byte-level BPE rebuilt from
//! `tokenizer.ggml.*` with the `tokenizers` crate) and the Jinja chat template.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::LocalError;
use crate::gateway::types::Message;

/// `tokenizer.ggml.token_type` of control tokens (`<|im_start|>`, `<|im_end|>`, ...).
const CONTROL: i32 = 3;

/// The model's tokenizer and chat format.
pub struct ChatFormat {
    /// Byte-level BPE.
    pub tokenizer: Tokenizer,
    /// Tokens that end a turn.
    pub eos: Vec<u32>,
    template: minijinja::Environment<'static>,
    bos_text: String,
    eos_text: String,
}

fn get<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, LocalError> {
    ct.metadata
        .get(key)
        .ok_or_else(|| LocalError::Model(format!("GGUF metadata has no `{key}`")))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, LocalError> {
    v.to_vec()
        .map_err(|e| LocalError::Model(format!("{key}: {e}")))?
        .iter()
        .map(|x| {
            x.to_string()
                .cloned()
                .map_err(|e| LocalError::Model(format!("{key}: {e}")))
        })
        .collect()
}

impl ChatFormat {
    /// Reads the tokenizer and template out of GGUF metadata.
    pub fn from_gguf(ct: &Content) -> Result<Self, LocalError> {
        let model = get(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| LocalError::Model(e.to_string()))?;
        if model != "gpt2" {
            return Err(LocalError::Model(format!(
                "tokenizer `{model}` is not supported (byte-level BPE `gpt2` only)"
            )));
        }
        let tokens = strings(get(ct, "tokenizer.ggml.tokens")?, "tokens")?;
        let merges: Vec<(String, String)> = strings(get(ct, "tokenizer.ggml.merges")?, "merges")?
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect();
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| LocalError::Model(e.to_string()))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => Vec::new(),
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| LocalError::Model(format!("BPE: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter())
            .filter(|(_, t)| **t == CONTROL)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| LocalError::Model(format!("special tokens: {e}")))?;

        let id = |key: &str| ct.metadata.get(key).and_then(|v| v.to_u32().ok());
        let text_of = |i: Option<u32>| {
            i.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        let mut eos = Vec::new();
        if let Some(e) = id("tokenizer.ggml.eos_token_id") {
            eos.push(e);
        }
        // Chat models end a turn with `<|im_end|>` / `<|eot_id|>` even where eos differs.
        for end in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"] {
            if let Some(i) = tokens.iter().position(|t| t == end) {
                if !eos.contains(&(i as u32)) {
                    eos.push(i as u32);
                }
            }
        }
        let source = match ct.metadata.get("tokenizer.chat_template") {
            Some(v) => v
                .to_string()
                .map_err(|e| LocalError::Model(e.to_string()))?
                .clone(),
            None => CHATML.to_owned(),
        };
        let mut template = minijinja::Environment::new();
        template.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        template
            .add_template_owned("chat", source)
            .map_err(|e| LocalError::Model(format!("chat template: {e}")))?;
        Ok(Self {
            tokenizer,
            eos,
            template,
            bos_text: text_of(id("tokenizer.ggml.bos_token_id")),
            eos_text: text_of(id("tokenizer.ggml.eos_token_id")),
        })
    }

    /// The prompt text for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[Message]) -> Result<String, LocalError> {
        let msgs: Vec<_> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    crate::gateway::types::Role::Developer => "system",
                    crate::gateway::types::Role::Tool => "user",
                    r => r.as_str(),
                };
                minijinja::context! { role => role, content => m.content }
            })
            .collect();
        let tmpl = self
            .template
            .get_template("chat")
            .map_err(|e| LocalError::Model(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos_text,
            eos_token => self.eos_text,
        })
        .map_err(|e| LocalError::Invalid(format!("chat template: {e}")))
    }

    /// Token ids of `text` (control tokens in the text become their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| LocalError::Invalid(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LocalError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| LocalError::Model(format!("tokenizer: {e}")))
    }
}

/// Used when a GGUF file carries no template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
    message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\n' }}{% endif %}";
