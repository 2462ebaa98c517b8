//! Numeric kernels shared by the local models (the embedder and the chat model): matrix
//! products, element-wise functions, and int8 block quantization with its dot products.
//!
//! Owns only arithmetic on slices: it must never know about models, files or threads beyond
//! the rayon pool a caller runs it on.

pub(crate) mod gemm;
pub(crate) mod kernels;
pub(crate) mod qgemm;
pub(crate) mod quant;

/// Seeded values for the kernels' tests.
#[cfg(test)]
mod test_values {
    /// The next value in [-1, 1) of a linear congruential sequence.
    pub(super) fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}
