//! The native forward pass of llama-family GGUF models (SmolLM2, Llama, Mistral-style dense
//! models), built for two cores:
//! - weights are dequantized once at load into an int8 block copy (Q8_0's values) for decoding
//!   one token at a time, where reading the weights is the cost (widened to f32 in registers,
//!   activations are never rounded), and an f32 copy of the same values for prefill, where a
//!   prompt's tokens run through each layer as one large GEMM (the embedder's kernels);
//! - Q, K and V are one fused projection, gate and up another; buffers are reused across layers;
//! - the KV cache keeps the tokens it was computed for, so a prompt that begins like the last
//!   one (the same system prompt and grounding, the conversation so far) only computes its new
//!   tail. Only positions computed by prefill are kept between prompts (the caller truncates
//!   the generated ones), and a prefill row's result does not depend on how many rows ran with
//!   it, so an answer never depends on what was asked before;
//! - logits are computed for the last position only.
//!
//! Owns the arithmetic of one model and its cache; must never know about sampling, chat
//! templates or threads.

use candle_core::quantized::gguf_file;
use candle_core::Device;
use rayon::prelude::*;

use super::LocalError;
use crate::compute::gemm::{matmul, parallelism, Parallelism, Rhs, SendPtr};
use crate::compute::kernels;
use crate::compute::quant::QMatrix;

/// A linear layer `y = x Wᵀ` (no bias in llama-family models) in both layouts.
struct Weight {
    f32: Vec<f32>,
    int8: QMatrix,
    inputs: usize,
    outputs: usize,
}

struct Block {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// Q, K and V stacked: `[(heads + 2·kv_heads)·head_dim × hidden]`.
    qkv: Weight,
    wo: Weight,
    /// Gate and up stacked: `[2·ffn × hidden]`.
    gate_up: Weight,
    down: Weight,
}

/// The shape of the model.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    eps: f32,
    /// Rotary embedding on pairs `(i, i + d/2)` instead of `(2i, 2i + 1)`.
    neox: bool,
}

/// Keys and values of every position read so far, per layer, `[position × kv_heads·head_dim]`.
#[derive(Default)]
struct Cache {
    tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// A loaded model with its KV cache.
pub(super) struct Llama {
    shape: Shape,
    embed: Vec<f32>,
    blocks: Vec<Block>,
    out_norm: Vec<f32>,
    output: QMatrix,
    /// cos and sin of every position's rotation angles, `[position × head_dim/2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    context: usize,
    cache: Cache,
    /// Single rows through the int8 weights (false: f32 everywhere, the exact reference).
    int8_decode: bool,
}

fn meta_u32(ct: &gguf_file::Content, key: &str) -> Result<usize, LocalError> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .ok_or_else(|| LocalError::Model(format!("GGUF metadata has no `{key}`")))
}

/// Architectures whose GGUF weights use the NEOX rotary layout (as llama.cpp maps them).
const NEOX: [&str; 6] = ["qwen2", "qwen3", "phi3", "stablelm", "starcoder2", "olmo2"];

impl Llama {
    /// Reads a dense llama-family model; `Ok(None)` when the file is a shape this pass does
    /// not run (mixture of experts, partial rotary), so the caller can use another engine.
    pub(super) fn load<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        context: usize,
    ) -> Result<Option<Self>, LocalError> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = meta_u32(ct, &key("embedding_length"))?;
        let heads = meta_u32(ct, &key("attention.head_count"))?;
        let kv_heads = meta_u32(ct, &key("attention.head_count_kv")).unwrap_or(heads);
        let layers = meta_u32(ct, &key("block_count"))?;
        let experts = meta_u32(ct, &key("expert_count")).unwrap_or(0);
        let head_dim = hidden / heads.max(1);
        let rope_dim = meta_u32(ct, &key("rope.dimension_count")).unwrap_or(head_dim);
        if experts > 1
            || rope_dim != head_dim
            || head_dim * heads != hidden
            || kv_heads == 0
            || heads % kv_heads != 0
            || hidden % 32 != 0
        {
            return Ok(None);
        }
        let eps = ct
            .metadata
            .get(&key("attention.layer_norm_rms_epsilon"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5);
        let base = ct
            .metadata
            .get(&key("rope.freq_base"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10_000.0);
        let mut read = |name: &str| -> Result<(Vec<f32>, usize, usize), LocalError> {
            let t = ct
                .tensor(reader, name, &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            let (rows, cols) = match t.dims() {
                [n] => (1, *n),
                [r, c] => (*r, *c),
                other => {
                    return Err(LocalError::Model(format!(
                        "{name}: unexpected shape {other:?}"
                    )))
                }
            };
            Ok((t.flatten_all()?.to_vec1::<f32>()?, rows, cols))
        };
        let (embed, vocab, embed_cols) = read("token_embd.weight")?;
        if embed_cols != hidden {
            return Err(LocalError::Model(
                "token_embd.weight: unexpected shape".into(),
            ));
        }
        let output = match ct.tensor_infos.contains_key("output.weight") {
            true => read("output.weight")?.0,
            false => embed.clone(),
        };
        let ffn = meta_u32(ct, &key("feed_forward_length"))?;
        if ffn % 32 != 0 {
            return Ok(None);
        }
        let kv = kv_heads * head_dim;
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let p = format!("blk.{l}");
            let stacked = |parts: Vec<(Vec<f32>, usize, usize)>,
                           outputs: usize|
             -> Result<Weight, LocalError> {
                let mut w = Vec::with_capacity(outputs * hidden);
                for (part, _, cols) in parts {
                    if cols != hidden {
                        return Err(LocalError::Model(format!("{p}: unexpected shape")));
                    }
                    w.extend(part);
                }
                weight(w, outputs, hidden)
            };
            let qkv = stacked(
                vec![
                    read(&format!("{p}.attn_q.weight"))?,
                    read(&format!("{p}.attn_k.weight"))?,
                    read(&format!("{p}.attn_v.weight"))?,
                ],
                hidden + 2 * kv,
            )?;
            let gate_up = stacked(
                vec![
                    read(&format!("{p}.ffn_gate.weight"))?,
                    read(&format!("{p}.ffn_up.weight"))?,
                ],
                2 * ffn,
            )?;
            blocks.push(Block {
                attn_norm: read(&format!("{p}.attn_norm.weight"))?.0,
                ffn_norm: read(&format!("{p}.ffn_norm.weight"))?.0,
                qkv,
                wo: weight(read(&format!("{p}.attn_output.weight"))?.0, hidden, hidden)?,
                gate_up,
                down: weight(read(&format!("{p}.ffn_down.weight"))?.0, hidden, ffn)?,
            });
        }
        let out_norm = read("output_norm.weight")?.0;
        let output = QMatrix::quantize(&output, vocab, hidden)
            .ok_or_else(|| LocalError::Model("output.weight: unexpected shape".into()))?;
        // Angles as candle and llama.cpp compute them (f32 throughout).
        let half = head_dim / 2;
        let theta: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = vec![0f32; context * half];
        let mut sin = vec![0f32; context * half];
        for pos in 0..context {
            for (i, t) in theta.iter().enumerate() {
                let a = pos as f32 * t;
                cos[pos * half + i] = a.cos();
                sin[pos * half + i] = a.sin();
            }
        }
        Ok(Some(Self {
            shape: Shape {
                hidden,
                heads,
                kv_heads,
                head_dim,
                ffn,
                vocab,
                eps,
                neox: NEOX.contains(&arch.as_str()),
            },
            embed,
            blocks,
            out_norm,
            output,
            cos,
            sin,
            context,
            cache: Cache::default(),
            int8_decode: true,
        }))
    }

    /// Logits after reading `prompt` from its start. Positions already in the cache for the
    /// same tokens are reused; at least the last token is computed.
    pub(super) fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>, LocalError> {
        if prompt.is_empty() || prompt.len() > self.context {
            return Err(LocalError::Invalid(format!(
                "a prompt of {} tokens (the context holds {})",
                prompt.len(),
                self.context
            )));
        }
        let common = self
            .cache
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.truncate(common);
        tracing::debug!(
            reused = common,
            computed = prompt.len() - common,
            "local model prefill"
        );
        self.forward(&prompt[common..])
    }

    /// Logits after one more token.
    pub(super) fn step(&mut self, token: u32) -> Result<Vec<f32>, LocalError> {
        if self.cache.tokens.len() >= self.context {
            return Err(LocalError::Invalid("the context is full".into()));
        }
        self.forward(&[token])
    }

    /// Computes single tokens in f32 too: slower, the exact pass tests compare with.
    #[cfg(test)]
    pub(super) fn exact(&mut self) {
        self.int8_decode = false;
    }

    /// Forgets every position from `len` on.
    pub(super) fn truncate(&mut self, len: usize) {
        let kv = self.shape.kv_heads * self.shape.head_dim;
        self.cache.tokens.truncate(len);
        self.cache.k.iter_mut().for_each(|k| k.truncate(len * kv));
        self.cache.v.iter_mut().for_each(|v| v.truncate(len * kv));
    }

    /// Runs `tokens` at the positions after the cache, appends their keys and values, and
    /// returns the logits of the last one.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        let s = self.shape;
        let n = tokens.len();
        let start = self.cache.tokens.len();
        let (h, kv) = (s.hidden, s.kv_heads * s.head_dim);
        let qkv_w = h + 2 * kv;
        if self.cache.k.len() != self.blocks.len() {
            self.cache.k = vec![Vec::new(); self.blocks.len()];
            self.cache.v = vec![Vec::new(); self.blocks.len()];
        }
        let mut x = vec![0f32; n * h];
        for (row, &t) in x.chunks_mut(h).zip(tokens) {
            let t = (t as usize).min(s.vocab - 1);
            row.copy_from_slice(&self.embed[t * h..(t + 1) * h]);
        }
        let mut xn = vec![0f32; n * h];
        let mut qkv = vec![0f32; n * qkv_w];
        let mut attn = vec![0f32; n * h];
        let mut tmp = vec![0f32; n * h];
        let mut gu = vec![0f32; n * 2 * s.ffn];
        let mut act = vec![0f32; n * s.ffn];
        for (l, b) in self.blocks.iter().enumerate() {
            norm_rows(&mut xn, &x, &b.attn_norm, s.eps, h);
            linear(&b.qkv, &xn, n, &mut qkv, self.int8_decode);
            for (r, row) in qkv.chunks_mut(qkv_w).enumerate() {
                let pos = start + r;
                let (cos, sin) = (
                    &self.cos[pos * s.head_dim / 2..(pos + 1) * s.head_dim / 2],
                    &self.sin[pos * s.head_dim / 2..(pos + 1) * s.head_dim / 2],
                );
                for head in row[..h + kv].chunks_mut(s.head_dim) {
                    rope(head, cos, sin, s.neox);
                }
            }
            let (kc, vc) = (&mut self.cache.k[l], &mut self.cache.v[l]);
            for row in qkv.chunks(qkv_w) {
                kc.extend_from_slice(&row[h..h + kv]);
                vc.extend_from_slice(&row[h + kv..]);
            }
            attention(&s, &qkv, n, start, kc, vc, &mut attn);
            linear(&b.wo, &attn, n, &mut tmp, self.int8_decode);
            add_rows(&mut x, &tmp);
            norm_rows(&mut xn, &x, &b.ffn_norm, s.eps, h);
            linear(&b.gate_up, &xn, n, &mut gu, self.int8_decode);
            act.par_chunks_mut(s.ffn * 8)
                .zip(gu.par_chunks(2 * s.ffn * 8))
                .for_each(|(a, g)| {
                    for (a, g) in a.chunks_mut(s.ffn).zip(g.chunks(2 * s.ffn)) {
                        a.copy_from_slice(&g[..s.ffn]);
                        kernels::silu_mul(a, &g[s.ffn..]);
                    }
                });
            linear(&b.down, &act, n, &mut tmp, self.int8_decode);
            add_rows(&mut x, &tmp);
        }
        self.cache.tokens.extend_from_slice(tokens);
        let mut last = vec![0f32; h];
        kernels::rms_norm(&mut last, &x[(n - 1) * h..], &self.out_norm, s.eps);
        let mut logits = vec![0f32; self.output.rows()];
        self.output.matvec(&last, &mut logits);
        Ok(logits)
    }
}

fn weight(w: Vec<f32>, outputs: usize, inputs: usize) -> Result<Weight, LocalError> {
    let int8 = QMatrix::quantize(&w, outputs, inputs)
        .ok_or_else(|| LocalError::Model("a weight has an unexpected shape".into()))?;
    // Prefill computes with exactly the values decoding reads (those of a Q8_0 file, or a
    // file requantized to Q8_0, are unchanged by this), so a position's keys and values are
    // the same whichever way it was computed.
    Ok(Weight {
        f32: int8.dequantize(),
        int8,
        inputs,
        outputs,
    })
}

/// `out[n×outputs] = x[n×inputs] Wᵀ`: one int8 matrix-vector product for a single row (bound
/// by reading the weights), an f32 GEMM for more.
fn linear(w: &Weight, x: &[f32], n: usize, out: &mut [f32], int8: bool) {
    if n == 1 && int8 {
        w.int8.matvec(&x[..w.inputs], &mut out[..w.outputs]);
        return;
    }
    // SAFETY: x is n×inputs, the weight outputs×inputs, out n×outputs, all row-major.
    unsafe {
        matmul(
            (n, w.outputs, w.inputs),
            x.as_ptr(),
            w.inputs,
            Rhs::Transposed {
                ptr: w.f32.as_ptr(),
                rs: w.inputs,
            },
            out.as_mut_ptr(),
            w.outputs,
            1.0,
            parallelism(),
        );
    }
}

fn norm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, h: usize) {
    out.par_chunks_mut(h * 16)
        .zip(x.par_chunks(h * 16))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(h).zip(x.chunks(h)) {
                kernels::rms_norm(o, x, w, eps);
            }
        });
}

fn add_rows(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| kernels::add_bias(x, y));
}

/// Rotates one head's vector by its position's angles.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], neox: bool) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = if neox {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos[i] - x1 * sin[i];
        x[b] = x0 * sin[i] + x1 * cos[i];
    }
}

/// Causal attention of `n` new queries (rows of `qkv`, at positions `start..start+n`) over
/// every cached key and value, one task per head; grouped heads share their key/value head.
fn attention(
    s: &Shape,
    qkv: &[f32],
    n: usize,
    start: usize,
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    let (h, d) = (s.hidden, s.head_dim);
    let kv = s.kv_heads * d;
    let qkv_w = h + 2 * kv;
    let total = start + n;
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let dst = SendPtr(out.as_mut_ptr());
    let par = if n == 1 {
        // One query: the work per head is too small to share out.
        1
    } else {
        s.heads
    };
    (0..s.heads)
        .into_par_iter()
        .with_min_len(s.heads / par)
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, head| {
            let g = head / group;
            scores.resize(n * total, 0.0);
            // SAFETY: q is an n×d view (row stride qkv_w) of qkv; keys and values are
            // total×d views (row stride kv) of the cache; scores is n×total; the destination is
            // the n×d block at column head·d of out, which no other head writes.
            unsafe {
                matmul(
                    (n, total, d),
                    qkv.as_ptr().add(head * d),
                    qkv_w,
                    Rhs::Transposed {
                        ptr: k.as_ptr().add(g * d),
                        rs: kv,
                    },
                    scores.as_mut_ptr(),
                    total,
                    scale,
                    Parallelism::None,
                );
                for (i, row) in scores.chunks_mut(total).enumerate() {
                    let seen = start + i + 1;
                    kernels::softmax(&mut row[..seen]);
                    row[seen..].fill(0.0);
                }
                matmul(
                    (n, d, total),
                    scores.as_ptr(),
                    total,
                    Rhs::Plain {
                        ptr: v.as_ptr().add(g * d),
                        rs: kv,
                    },
                    dst.get().add(head * d),
                    h,
                    1.0,
                    Parallelism::None,
                );
            }
        });
}
