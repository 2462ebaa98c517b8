//! A BERT encoder forward pass for CPU inference, on the GEMM kernels candle itself uses.
//!
//! Why not candle-transformers' `BertModel`: on two cores its forward pass spent most of its
//! time outside matrix products — a fresh, page-faulting buffer per tensor op, scalar `erf`
//! and `exp`, and attention over padding. Here:
//! - batches are *ragged*: the tokens of all passages are stacked into one `[tokens, hidden]`
//!   matrix, so the linear layers (90% of the FLOPs) run as a few large GEMMs with no padding;
//! - attention runs per (passage, head) on that passage's own tokens, in parallel, so it needs
//!   no mask;
//! - Q, K and V are one fused projection; buffers are allocated once per batch and reused by
//!   every layer; element-wise work is vectorised ([`crate::compute::kernels`]).
//!
//! Weights are read with candle from `model.safetensors` (BERT names, with or without a `bert.`
//! prefix). The output matches sentence-transformers (see the reference-vector test).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use serde::Deserialize;

use super::{EmbedError, Pooling, Result};
use crate::compute::gemm::{matmul, parallelism, Rhs, SendPtr};
use crate::compute::kernels;
use crate::compute::qgemm::{Kernel, QLinear, Scratch};

/// Rows per task of the int8 feed-forward block (their intermediate fits a core's L2 cache).
const FFN_BLOCK: usize = 64;

/// The fields of a BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

/// A dense layer, `y = x Wᵀ + b`.
struct Linear {
    inputs: usize,
    outputs: usize,
    math: Dense,
}

/// The arithmetic a dense layer runs on.
enum Dense {
    /// `W` row-major `[out, in]` and `b`, on the f32 GEMM.
    F32 { w: Vec<f32>, b: Vec<f32> },
    /// Both quantized, on the integer kernels.
    Int8(QLinear),
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

#[derive(Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

/// The loaded encoder.
pub struct Encoder {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Activation,
    max_positions: usize,
    vocab: usize,
}

struct Weights {
    tensors: std::collections::HashMap<String, Tensor>,
    prefix: String,
    path: String,
}

impl Weights {
    fn get(&self, names: &[&str]) -> Result<Vec<f32>> {
        for name in names {
            if let Some(t) = self.tensors.get(&format!("{}{name}", self.prefix)) {
                return Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Err(EmbedError::ModelFolder {
            path: self.path.clone(),
            reason: format!("weights have no tensor {}{}", self.prefix, names[0]),
        })
    }

    fn linear(&self, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
        let w = self.get(&[&format!("{name}.weight")])?;
        let b = self.get(&[&format!("{name}.bias")])?;
        if w.len() != inputs * outputs || b.len() != outputs {
            return Err(EmbedError::ModelFolder {
                path: self.path.clone(),
                reason: format!("{name} has an unexpected shape"),
            });
        }
        Ok(Linear {
            inputs,
            outputs,
            math: Dense::F32 { w, b },
        })
    }

    fn norm(&self, name: &str) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&[&format!("{name}.weight"), &format!("{name}.gamma")])?,
            beta: self.get(&[&format!("{name}.bias"), &format!("{name}.beta")])?,
        })
    }
}

/// One layer computing the outputs of three f32 layers with the same inputs, side by side.
fn concat_linear(parts: [Linear; 3]) -> Linear {
    let inputs = parts[0].inputs;
    let outputs = parts.iter().map(|p| p.outputs).sum();
    let mut w = Vec::with_capacity(inputs * outputs);
    let mut b = Vec::with_capacity(outputs);
    for p in parts {
        if let Dense::F32 { w: pw, b: pb } = p.math {
            w.extend(pw);
            b.extend(pb);
        }
    }
    Linear {
        inputs,
        outputs,
        math: Dense::F32 { w, b },
    }
}

impl Linear {
    /// Moves the layer to int8 on `kernel` (int8 weights replace the f32 ones). `act_range`
    /// is the typical magnitude of each input, when known.
    fn quantize(&mut self, kernel: Kernel, act_range: Option<&[f32]>) {
        if let Dense::F32 { w, b } = &self.math {
            let shape = (self.inputs, self.outputs);
            self.math = Dense::Int8(QLinear::new(kernel, w, b, shape, act_range));
        }
    }

    /// `out[rows×outputs] = x[rows×inputs] Wᵀ + b`.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch) {
        debug_assert!(x.len() >= rows * self.inputs && out.len() >= rows * self.outputs);
        let (w, b) = match &self.math {
            Dense::F32 { w, b } => (w, b),
            Dense::Int8(q) => return q.forward(x, rows, out, scratch),
        };
        // SAFETY: x is rows×inputs, w is outputs×inputs, out is rows×outputs, all row-major.
        unsafe {
            matmul(
                (rows, self.outputs, self.inputs),
                x.as_ptr(),
                self.inputs,
                Rhs::Transposed {
                    ptr: w.as_ptr(),
                    rs: self.inputs,
                },
                out.as_mut_ptr(),
                self.outputs,
                1.0,
                parallelism(),
            );
        }
        out[..rows * self.outputs]
            .par_chunks_mut(self.outputs * 64)
            .for_each(|block| {
                block
                    .chunks_mut(self.outputs)
                    .for_each(|r| kernels::add_bias(r, b))
            });
    }
}

impl Encoder {
    /// Loads weights from a safetensors file for the given config, in f32.
    pub fn load(weights: &Path, config: &BertConfig) -> Result<Self> {
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu)?;
        let prefix = if tensors.keys().any(|k| k.starts_with("bert.")) {
            "bert.".to_owned()
        } else {
            String::new()
        };
        let w = Weights {
            tensors,
            prefix,
            path: weights.display().to_string(),
        };
        let h = config.hidden_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: concat_linear([
                    w.linear(&format!("{p}.attention.self.query"), h, h)?,
                    w.linear(&format!("{p}.attention.self.key"), h, h)?,
                    w.linear(&format!("{p}.attention.self.value"), h, h)?,
                ]),
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: w.linear(
                    &format!("{p}.intermediate.dense"),
                    h,
                    config.intermediate_size,
                )?,
                ffn_out: w.linear(&format!("{p}.output.dense"), config.intermediate_size, h)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let embed_norm = w.norm("embeddings.LayerNorm")?;
        let word = w.get(&["embeddings.word_embeddings.weight"])?;
        let act = match config.hidden_act.as_str() {
            "gelu" | "gelu_python" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(EmbedError::ModelFolder {
                    path: w.path.clone(),
                    reason: format!("unsupported activation {other:?}"),
                })
            }
        };
        Ok(Self {
            vocab: word.len() / h,
            word,
            position: w.get(&["embeddings.position_embeddings.weight"])?,
            token_type: w.get(&["embeddings.token_type_embeddings.weight"])?,
            embed_norm,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            act,
            max_positions: config.max_position_embeddings,
        })
    }

    /// Encodes `seqs` (token ids with special tokens, each at most the model's position limit)
    /// and pools each into one L2-normalised vector. `pause` is called between operations (bulk
    /// work waits there while queries run).
    pub fn embed(&self, seqs: &[&[u32]], pooling: Pooling, pause: &dyn Fn()) -> Vec<Vec<f32>> {
        let mut out = self.run(seqs, None, pooling, pause, &mut |_, _, _| ());
        out.iter_mut().for_each(|v| super::l2_normalize(v));
        out
    }

    /// The last hidden state of each sequence's first token (`[CLS]`), as it is (a
    /// cross-encoder's head reads it). `second[i]` is where sequence `i`'s second segment
    /// (token type 1) begins: a pair is `[CLS] query [SEP] passage [SEP]`.
    pub fn cls_of_pairs(&self, seqs: &[&[u32]], second: &[usize]) -> Vec<Vec<f32>> {
        self.run(seqs, Some(second), Pooling::Cls, &|| (), &mut |_, _, _| ())
    }

    /// Hidden size.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Moves the dense layers to int8 on `kernel` (embeddings, norms and attention stay f32).
    /// `calibration` (token ids, as for [`Encoder::embed`]) is encoded once in f32 first: the
    /// largest magnitude each input channel of each layer reaches there sets how that layer's
    /// quantization error is split between activations and weights (SmoothQuant, α = ½).
    pub fn quantize(&mut self, kernel: Kernel, calibration: &[&[u32]]) {
        let mut ranges: Vec<[Vec<f32>; 4]> = self
            .layers
            .iter()
            .map(|l| [&l.qkv, &l.attn_out, &l.ffn_in, &l.ffn_out].map(|lin| vec![0f32; lin.inputs]))
            .collect();
        self.run(
            calibration,
            None,
            Pooling::Cls,
            &|| (),
            &mut |layer, site, x| {
                let range = &mut ranges[layer][site];
                for row in x.chunks(range.len()) {
                    range
                        .iter_mut()
                        .zip(row)
                        .for_each(|(m, v)| *m = m.max(v.abs()));
                }
            },
        );
        for (layer, ranges) in self.layers.iter_mut().zip(&ranges) {
            let sites = [
                &mut layer.qkv,
                &mut layer.attn_out,
                &mut layer.ffn_in,
                &mut layer.ffn_out,
            ];
            for (linear, range) in sites.into_iter().zip(ranges) {
                linear.quantize(kernel, Some(range));
            }
        }
    }

    /// The forward pass, pooled (not normalised); `second` marks where each sequence's token
    /// type 1 begins (none: all type 0). `observe(layer, site, input)` sees the input of each
    /// dense layer (sites 0–3: QKV, attention output, feed-forward in, feed-forward out).
    fn run(
        &self,
        seqs: &[&[u32]],
        second: Option<&[usize]>,
        pooling: Pooling,
        pause: &dyn Fn(),
        observe: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let starts: Vec<usize> = seqs
            .iter()
            .scan(0, |acc, s| {
                let start = *acc;
                *acc += s.len().min(self.max_positions);
                Some(start)
            })
            .collect();
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.len().min(self.max_positions))
            .collect();
        let total: usize = lens.iter().sum();
        if total == 0 {
            return vec![vec![0.0; h]; seqs.len()];
        }
        let mut x = vec![0f32; total * h];
        let types = self.token_type.len() / h;
        // Embeddings: word + position + token type, then layer norm.
        x.par_chunks_mut(h).enumerate().for_each(|(row, out)| {
            let seq = starts.partition_point(|&s| s <= row) - 1;
            let pos = row - starts[seq];
            let id = (seqs[seq][pos] as usize).min(self.vocab - 1);
            let word = &self.word[id * h..(id + 1) * h];
            let position = &self.position[pos * h..(pos + 1) * h];
            for i in 0..h {
                out[i] = word[i] + position[i];
            }
            let t = match second {
                Some(b) if pos >= b[seq] && types > 1 => 1,
                _ => 0,
            };
            kernels::add_layer_norm(
                out,
                &self.token_type[t * h..(t + 1) * h],
                &self.embed_norm.gamma,
                &self.embed_norm.beta,
                self.eps,
            );
        });
        let inter = self.layers.first().map_or(0, |l| l.ffn_in.outputs);
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        // Allocated at the first layer that needs it (the int8 path keeps its intermediate in
        // per-thread blocks).
        let mut ffn = Vec::new();
        let mut scratch = Scratch::default();
        for (i, layer) in self.layers.iter().enumerate() {
            pause();
            observe(i, 0, &x);
            layer.qkv.forward(&x, total, &mut qkv, &mut scratch);
            self.attention(&qkv, &starts, &lens, &mut ctx);
            pause();
            observe(i, 1, &ctx);
            layer.attn_out.forward(&ctx, total, &mut tmp, &mut scratch);
            self.residual_norm(&mut tmp, &x, &layer.attn_norm);
            std::mem::swap(&mut x, &mut tmp);
            pause();
            if let (Dense::Int8(up), Dense::Int8(down), true) = (
                &layer.ffn_in.math,
                &layer.ffn_out.math,
                total >= 2 * FFN_BLOCK,
            ) {
                self.ffn_blocked(up, down, &x, total, &mut tmp);
            } else {
                observe(i, 2, &x);
                if ffn.is_empty() {
                    ffn = vec![0f32; total * inter];
                }
                layer.ffn_in.forward(&x, total, &mut ffn, &mut scratch);
                ffn.par_chunks_mut(inter * 16)
                    .for_each(|c| self.activate(c));
                pause();
                observe(i, 3, &ffn);
                layer.ffn_out.forward(&ffn, total, &mut tmp, &mut scratch);
            }
            self.residual_norm(&mut tmp, &x, &layer.ffn_norm);
            std::mem::swap(&mut x, &mut tmp);
        }
        starts
            .iter()
            .zip(&lens)
            .map(|(&start, &len)| {
                let rows = &x[start * h..(start + len) * h];
                let mut v = vec![0f32; h];
                match pooling {
                    Pooling::Cls => v.copy_from_slice(&rows[..h]),
                    Pooling::Mean => {
                        rows.chunks(h).for_each(|r| kernels::add_bias(&mut v, r));
                        v.iter_mut().for_each(|x| *x /= len.max(1) as f32);
                    }
                    Pooling::Max => {
                        v.fill(f32::NEG_INFINITY);
                        for r in rows.chunks(h) {
                            v.iter_mut().zip(r).for_each(|(a, b)| *a = a.max(*b));
                        }
                    }
                }
                v
            })
            .collect()
    }

    fn activate(&self, x: &mut [f32]) {
        match self.act {
            Activation::GeluErf => kernels::gelu_erf(x),
            Activation::GeluTanh => kernels::gelu_tanh(x),
            Activation::Relu => kernels::relu(x),
        }
    }

    /// `out = down(act(up(x)))` for int8 layers, [`FFN_BLOCK`] rows at a time per thread, so
    /// the wide intermediate (4 × hidden per row) stays in cache instead of making a round
    /// trip through memory between the two products, the activation and the quantization.
    fn ffn_blocked(&self, up: &QLinear, down: &QLinear, x: &[f32], total: usize, out: &mut [f32]) {
        let h = self.hidden;
        let inter = up.outputs();
        out[..total * h]
            .par_chunks_mut(FFN_BLOCK * h)
            .zip(x[..total * h].par_chunks(FFN_BLOCK * h))
            .for_each_init(
                || (vec![0f32; FFN_BLOCK * inter], Scratch::default()),
                |(mid, scratch), (out, x)| {
                    let rows = x.len() / h;
                    up.forward_serial(x, rows, mid, scratch);
                    self.activate(&mut mid[..rows * inter]);
                    down.forward_serial(mid, rows, out, scratch);
                },
            );
    }

    /// `out = layer_norm(out + residual)`, row by row in parallel.
    fn residual_norm(&self, out: &mut [f32], residual: &[f32], norm: &Norm) {
        let h = self.hidden;
        out.par_chunks_mut(h * 32)
            .zip(residual.par_chunks(h * 32))
            .for_each(|(o, r)| {
                for (orow, rrow) in o.chunks_mut(h).zip(r.chunks(h)) {
                    kernels::add_layer_norm(orow, rrow, &norm.gamma, &norm.beta, self.eps);
                }
            });
    }

    /// Scaled dot-product attention per (passage, head) over the fused `[tokens, 3h]` QKV.
    fn attention(&self, qkv: &[f32], starts: &[usize], lens: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let out = SendPtr(ctx.as_mut_ptr());
        let tasks: Vec<(usize, usize)> = (0..starts.len())
            .flat_map(|s| (0..self.heads).map(move |head| (s, head)))
            .collect();
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores, &(s, head)| {
                let (start, len) = (starts[s], lens[s]);
                if len == 0 {
                    return;
                }
                scores.resize(len * len, 0.0);
                let base = start * 3 * h + head * d;
                // SAFETY: q, k, v are len×d views (row stride 3h) inside qkv; scores is len×len;
                // the destination is the len×d block of rows start.. and columns head*d.. of ctx,
                // which no other (passage, head) task writes.
                unsafe {
                    let q = qkv.as_ptr().add(base);
                    let k = qkv.as_ptr().add(base + h);
                    let v = qkv.as_ptr().add(base + 2 * h);
                    let keys = Rhs::Transposed { ptr: k, rs: 3 * h };
                    let scores_ptr = scores.as_mut_ptr();
                    matmul(
                        (len, len, d),
                        q,
                        3 * h,
                        keys,
                        scores_ptr,
                        len,
                        scale,
                        Parallelism::None,
                    );
                    scores.chunks_mut(len).for_each(kernels::softmax);
                    let dst = out.get().add(start * h + head * d);
                    let values = Rhs::Plain { ptr: v, rs: 3 * h };
                    matmul(
                        (len, d, len),
                        scores.as_ptr(),
                        len,
                        values,
                        dst,
                        h,
                        1.0,
                        Parallelism::None,
                    );
                }
            });
    }
}
