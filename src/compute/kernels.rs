//! Element-wise kernels of the local models: GELU, SiLU, softmax, layer and RMS norm, bias add.
//!
//! Written as plain loops over `f32` slices that the compiler vectorises; on x86-64 each entry
//! point dispatches at run time to a copy compiled for AVX2+FMA. `exp` and `erf` are polynomial
//! approximations (relative error below 2e-6, absolute error below 1e-6 in f32) because the libm
//! versions are scalar calls that block vectorisation.

macro_rules! dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if has_avx512() {
                    // SAFETY: the CPU supports the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// Whether this CPU runs the AVX-512 copies (16 lanes instead of 8).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::arch::is_x86_feature_detected as has;
    // std caches the detection; each check is an atomic load.
    has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq")
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5 · 2^23 rounds an f32 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x for x in roughly [-87, 88]; inputs outside are clamped.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // The low mantissa bits of `shifted` hold n (two's complement): 2^n is n + 127 in the
    // exponent field — no float-to-int conversion, so the loop stays vectorised.
    let two_n = (shifted
        .to_bits()
        .wrapping_add(127)
        .wrapping_sub(ROUND.to_bits()))
        << 23;
    f32::from_bits(two_n) * p
}

/// erf(x) by Abramowitz & Stegun 7.1.26.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

dispatch! {
    /// GELU with the exact (erf) formulation, in place.
    pub fn gelu_erf(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

dispatch! {
    /// GELU with the tanh approximation, in place.
    pub fn gelu_tanh(x: &mut [f32]) {
        for v in x.iter_mut() {
            let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
            *v = 0.5 * *v * (1.0 + t);
        }
    }
}

dispatch! {
    /// ReLU in place.
    pub fn relu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Maximum with eight independent lanes.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

dispatch! {
    /// Softmax of one row in place.
    pub fn softmax(x: &mut [f32]) {
        let max = lane_max(x);
        for v in x.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / lane_sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

dispatch! {
    /// `x = layer_norm(x + residual) * gamma + beta` for one row, in place.
    pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = x.len() as f32;
        for (v, r) in x.iter_mut().zip(residual) {
            *v += *r;
        }
        let mean = lane_sum(x) / n;
        let mut acc = [0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for i in 0..8 {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        let var = acc.iter().sum::<f32>()
            + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
        let inv = 1.0 / (var / n + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * *g + *b;
        }
    }
}

dispatch! {
    /// Quantizes one row symmetrically to `[-max_q, max_q]`, stored as `q + max_q + 1` (unsigned,
    /// as integer dot products with one unsigned operand need), and returns the scale
    /// (`x ≈ scale · q`; 0 for a zero row). Rounds to nearest, ties to even. The row quantized
    /// is `x · times` (per-channel smoothing, see `qgemm`).
    pub fn quantize_row(x: &[f32], times: &[f32], max_q: f32, q: &mut [u8]) -> f32 {
        let mut acc = [0f32; 16];
        let mut tail = 0f32;
        let (mut xs, mut ms) = (x.chunks_exact(16), times.chunks_exact(16));
        for (c, mc) in (&mut xs).zip(&mut ms) {
            for i in 0..16 {
                let a = (c[i] * mc[i]).abs();
                acc[i] = if a > acc[i] { a } else { acc[i] };
            }
        }
        for (v, m) in xs.remainder().iter().zip(ms.remainder()) {
            tail = tail.max((v * m).abs());
        }
        let amax = acc.iter().copied().fold(tail, f32::max);
        let scale = amax / max_q;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        // Adding ROUND rounds to an integer held in the low mantissa bits (ties to even), so
        // no float-to-int conversion breaks the vector loop.
        let offset = max_q + 1.0 + ROUND;
        let base = ROUND.to_bits();
        let one = |v: f32| ((v.clamp(-max_q, max_q) + offset).to_bits().wrapping_sub(base)) as u8;
        for ((o, v), m) in q.iter_mut().zip(x).zip(times) {
            *o = one(*v * *m * inv);
        }
        scale
    }
}

dispatch! {
    /// `row += bias`.
    pub fn add_bias(row: &mut [f32], bias: &[f32]) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

dispatch! {
    /// `out = x / sqrt(mean(x²) + eps) · w` for one row (RMS norm, as llama-family models use).
    pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
        let mut acc = [0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for i in 0..8 {
                acc[i] += c[i] * c[i];
            }
        }
        let sum = acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>();
        let inv = 1.0 / (sum / x.len() as f32 + eps).sqrt();
        for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
            *o = *v * inv * *g;
        }
    }
}

dispatch! {
    /// `gate = silu(gate) · up` (the gated feed-forward of llama-family models), in place.
    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp(-*g)) * *u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst: f32 = 0.0;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2e-6, "relative error {worst}");
    }

    #[test]
    fn erf_is_accurate() {
        for i in -350..350 {
            let x = i as f32 / 100.0;
            let exact = libm_erf(x as f64);
            assert!(
                (erf(x) as f64 - exact).abs() < 1e-6,
                "x={x}: {}",
                erf(x) as f64 - exact
            );
        }
    }

    /// Reference erf by its Taylor series (accurate in f64 for |x| ≤ 3.5).
    fn libm_erf(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut row = vec![1.0, 2.0, 3.0];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, &[0.0; 4], &[1.0; 4], &[0.0; 4], 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-4);
    }

    #[test]
    fn rms_norm_and_silu_match_definitions() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let mut out = [0f32; 4];
        rms_norm(&mut out, &x, &w, 1e-5);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 4.0 + 1e-5).sqrt();
        for i in 0..4 {
            assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
        }
        let mut g = [-3.0f32, 0.0, 1.5];
        silu_mul(&mut g, &[2.0, 1.0, -1.0]);
        let expect = [
            -3.0 / (1.0 + 3f32.exp()) * 2.0,
            0.0,
            -1.5 / (1.0 + (-1.5f32).exp()),
        ];
        for (a, b) in g.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn gelu_matches_definition() {
        let mut x = vec![-3.0, -1.0, 0.0, 0.5, 2.0];
        let expect: Vec<f32> = x
            .iter()
            .map(|v: &f32| 0.5 * v * (1.0 + libm_erf(*v as f64 / 2f64.sqrt()) as f32))
            .collect();
        gelu_erf(&mut x);
        for (a, b) in x.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
