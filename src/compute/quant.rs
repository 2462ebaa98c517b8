//! Int8 block weights (32 values share one scale, as GGML's Q8_0) and the matrix-vector
//! product on them with f32 activations: a weight row is read as int8 — a quarter of the bytes
//! of f32, which is what one token at a time is bound by — and widened to f32 in registers, so
//! the product is the exact f32 product of the stored weights (no activation rounding).
//!
//! On x86-64 the dot product runs on AVX-512 or AVX2+FMA, chosen at run time; elsewhere a
//! portable loop.

use rayon::prelude::*;

/// Values sharing one scale.
pub(crate) const BLOCK: usize = 32;

/// A row-major `[rows × cols]` matrix in int8 blocks (`cols` a multiple of [`BLOCK`]).
pub(crate) struct QMatrix {
    q: Vec<i8>,
    d: Vec<f32>,
    rows: usize,
    cols: usize,
}

fn quantize_into(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xs, qs), d) in x.chunks(BLOCK).zip(q.chunks_mut(BLOCK)).zip(d.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        // The scale is kept at f16 precision, as Q8_0 stores it, so weights that came from a
        // Q8_0 tensor quantize back to exactly the values they had.
        let scale = half::f16::from_f32(amax / 127.0).to_f32();
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (qv, v) in qs.iter_mut().zip(xs) {
            *qv = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        *d = scale;
    }
}

impl QMatrix {
    /// Quantizes a row-major `[rows × cols]` f32 matrix; `None` when `cols` is not a multiple
    /// of [`BLOCK`].
    pub(crate) fn quantize(w: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return None;
        }
        let mut q = vec![0i8; rows * cols];
        let mut d = vec![0f32; rows * cols / BLOCK];
        q.par_chunks_mut(cols)
            .zip(d.par_chunks_mut(cols / BLOCK))
            .zip(w.par_chunks(cols))
            .for_each(|((q, d), w)| quantize_into(w, q, d));
        Some(Self { q, d, rows, cols })
    }

    /// Rows of the matrix.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The matrix as f32 (what the int8 blocks stand for).
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        self.q
            .chunks(BLOCK)
            .zip(&self.d)
            .flat_map(|(q, d)| q.iter().map(move |v| *v as f32 * d))
            .collect()
    }

    /// `out[r] = Σ_c W[r, c] · x[c]` for every row, in parallel on the rayon pool.
    pub(crate) fn matvec(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.cols);
        let blocks = self.cols / BLOCK;
        // Enough rows per task to amortise scheduling, few enough to balance two or more cores.
        let per_task = (self.rows / (4 * rayon::current_num_threads().max(1))).clamp(16, 1024);
        out[..self.rows]
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(t, out)| {
                let first = t * per_task;
                for (i, o) in out.iter_mut().enumerate() {
                    let r = first + i;
                    *o = dot(
                        &self.q[r * self.cols..(r + 1) * self.cols],
                        &self.d[r * blocks..(r + 1) * blocks],
                        x,
                    );
                }
            });
    }
}

/// `Σ_b d[b] · Σ_i w[b·32 + i] · x[b·32 + i]`.
fn dot(w: &[i8], d: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F; the slices hold `d.len()` whole blocks.
            return unsafe { dot_avx512(w, d, x) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA; the slices hold `d.len()` whole blocks.
            return unsafe { dot_avx2(w, d, x) };
        }
    }
    dot_portable(w, d, x)
}

fn dot_portable(w: &[i8], d: &[f32], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (b, (wb, xb)) in w.chunks_exact(BLOCK).zip(x.chunks_exact(BLOCK)).enumerate() {
        let s: f32 = wb.iter().zip(xb).map(|(a, c)| *a as f32 * c).sum();
        acc += s * d[b];
    }
    acc
}

/// # Safety
/// The CPU must support AVX-512 F; `w` and `x` hold `d.len()` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(w: &[i8], d: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let blocks = d.len();
    assert!(w.len() >= blocks * BLOCK && x.len() >= blocks * BLOCK);
    let mut acc = _mm512_setzero_ps();
    for (b, scale) in d.iter().enumerate() {
        let at = b * BLOCK;
        // SAFETY: 32 bytes of w and 32 floats of x at `at` lie inside the slices (asserted).
        let (w0, w1, x0, x1) = unsafe {
            (
                _mm_loadu_si128(w.as_ptr().add(at) as *const __m128i),
                _mm_loadu_si128(w.as_ptr().add(at + 16) as *const __m128i),
                _mm512_loadu_ps(x.as_ptr().add(at)),
                _mm512_loadu_ps(x.as_ptr().add(at + 16)),
            )
        };
        let part = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w0)), x0);
        let part = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w1)), x1, part);
        acc = _mm512_fmadd_ps(part, _mm512_set1_ps(*scale), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA; `w` and `x` hold `d.len()` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[i8], d: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let blocks = d.len();
    assert!(w.len() >= blocks * BLOCK && x.len() >= blocks * BLOCK);
    let mut acc = _mm256_setzero_ps();
    for (b, scale) in d.iter().enumerate() {
        let mut part = _mm256_setzero_ps();
        for j in 0..BLOCK / 8 {
            let at = b * BLOCK + j * 8;
            // SAFETY: 8 bytes of w and 8 floats of x at `at` lie inside the slices (asserted).
            let (wv, xv) = unsafe {
                (
                    _mm_loadl_epi64(w.as_ptr().add(at) as *const __m128i),
                    _mm256_loadu_ps(x.as_ptr().add(at)),
                )
            };
            let wf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(wv));
            part = _mm256_fmadd_ps(wf, xv, part);
        }
        acc = _mm256_fmadd_ps(part, _mm256_set1_ps(*scale), acc);
    }
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s = _mm_add_ps(hi, lo);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[cfg(test)]
mod tests {
    use super::super::test_values::lcg;
    use super::*;

    #[test]
    fn matvec_is_the_f32_product_of_the_stored_weights() {
        let (rows, cols) = (67, 96);
        let mut seed = 7;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed) * 3.0).collect();
        let m = QMatrix::quantize(&w, rows, cols).expect("whole blocks");
        let stored = m.dequantize();
        for (a, b) in w.iter().zip(&stored) {
            // Half a quantization step of a block whose values lie in [-1, 1].
            assert!((a - b).abs() <= 0.5 / 127.0 + 1e-3);
        }
        let mut out = vec![0f32; rows];
        m.matvec(&x, &mut out);
        for r in 0..rows {
            let exact: f32 = (0..cols).map(|c| stored[r * cols + c] * x[c]).sum();
            assert!(
                (out[r] - exact).abs() < 1e-4,
                "row {r}: {} vs {exact}",
                out[r]
            );
            let blocks = cols / BLOCK;
            let portable = dot_portable(
                &m.q[r * cols..(r + 1) * cols],
                &m.d[r * blocks..(r + 1) * blocks],
                &x,
            );
            assert!((portable - out[r]).abs() < 1e-4);
        }
        assert!(QMatrix::quantize(&w[..rows * 90], rows, 90).is_none());
    }

    #[test]
    fn q8_0_values_quantize_back_to_themselves() {
        let mut seed = 3;
        let w: Vec<f32> = (0..4 * 64).map(|_| lcg(&mut seed)).collect();
        let once = QMatrix::quantize(&w, 4, 64).expect("blocks").dequantize();
        let twice = QMatrix::quantize(&once, 4, 64)
            .expect("blocks")
            .dequantize();
        assert_eq!(once, twice);
        let zero = QMatrix::quantize(&[0.0; 64], 1, 64).expect("blocks");
        assert!(zero.dequantize().iter().all(|v| *v == 0.0));
    }
}
