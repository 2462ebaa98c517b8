//! Numeric kernels shared by the local models (the embedder and the chat model): matrix
//! products, element-wise functions, and int8 block quantization with its dot products.
//!
//! Owns only arithmetic on slices: it must never know about models, files or threads beyond
//! the rayon pool a caller runs it on.

pub(crate) mod gemm;
pub(crate) mod kernels;
pub(crate) mod qgemm;
pub(crate) mod quant;
