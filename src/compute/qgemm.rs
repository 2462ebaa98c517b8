//! Int8 products for dense layers, `y = x Wᵀ + b`: W is quantized once per output row
//! (symmetric int8, one f32 scale per row), x per input row at call time, and the dot products
//! run on integer units — four int8 products per 32-bit lane and instruction with VNNI, against
//! one f32 product per lane with FMA.
//!
//! Activations are stored unsigned (`q + offset`, as the VNNI instruction multiplies unsigned
//! by signed bytes); the offset's contribution, `offset · Σ_k w`, is subtracted per output.
//! Kernels are chosen at run time ([`Kernel::detect`]):
//! - AVX-512 VNNI: 8 rows × 32 outputs per tile;
//! - AVX-VNNI (256-bit, on CPUs that have it without AVX-512): 6 × 16;
//! - a portable loop, the reference the others are tested against (bit-identical results).
//!
//! There is no plain-AVX2 kernel: `vpmaddubsw` saturates 16-bit pair sums of 8-bit products,
//! and with 7-bit weights to avoid that the embedder's vectors fell to cosine 0.994 of f32
//! (below the 0.995 bound its tests hold), while the 8-bit workaround (sign tricks, one more
//! instruction per product) runs no faster than f32 FMA. CPUs without VNNI use f32.
//!
//! Owns only arithmetic: callers keep the f32 weights' meaning (which layer, which model).

use rayon::prelude::*;

use super::gemm::SendPtr;

/// Largest magnitude of a quantized value (weights and activations): symmetric int8.
const MAX_Q: i32 = 127;

/// The integer kernel a matrix is packed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// 512-bit `vpdpbusd`.
    Avx512Vnni,
    /// 256-bit `vpdpbusd` (VEX encoded).
    AvxVnni,
    /// Plain loops.
    Portable,
}

impl Kernel {
    /// The fastest integer kernel this CPU runs, `None` without VNNI (the portable loop is a
    /// reference, too slow to serve).
    pub fn detect() -> Option<Self> {
        Self::available().into_iter().find(|k| *k != Self::Portable)
    }

    /// Every kernel this CPU runs, fastest first.
    pub fn available() -> Vec<Self> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                out.push(Self::Avx512Vnni);
            }
            if has!("avx2") && has!("avxvnni") {
                out.push(Self::AvxVnni);
            }
        }
        out.push(Self::Portable);
        out
    }

    /// The name used in logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512Vnni => "avx512vnni",
            Self::AvxVnni => "avxvnni",
            Self::Portable => "portable",
        }
    }

    /// Outputs per packed panel.
    fn nr(self) -> usize {
        match self {
            Self::Avx512Vnni => 32,
            _ => 16,
        }
    }

    /// Where input `k` of output `n` sits in a matrix packed for this kernel with `kp` inputs
    /// per row.
    fn packed_at(self, kp: usize, n: usize, k: usize) -> usize {
        let nr = self.nr();
        (n / nr) * nr * kp + (k / 4) * nr * 4 + (n % nr) * 4 + k % 4
    }

    /// Rows per tile.
    fn mr(self) -> usize {
        match self {
            Self::Avx512Vnni => 8,
            Self::AvxVnni => 6,
            Self::Portable => 4,
        }
    }
}

/// A weight matrix `W[outputs × inputs]` in int8, packed in panels of the kernel's width: for
/// each group of four inputs, `nr` outputs × 4 bytes, so one vector load holds four inputs of
/// each of its outputs.
pub struct QLinear {
    kernel: Kernel,
    packed: Vec<i8>,
    /// Per output (padded to whole panels): the row's scale, `offset · Σ_k q`, and the bias.
    scale: Vec<f32>,
    offset_sum: Vec<i32>,
    bias: Vec<f32>,
    /// Per input, `s`: the weights' column is multiplied by it and activations by its inverse
    /// (kept here) before quantization (SmoothQuant), which moves outlier channels' range
    /// into the weights. All ones without an activation range.
    smooth_inv: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// `inputs` rounded up to a multiple of 4.
    kp: usize,
}

/// Quantized activations, reused across calls so a batch allocates them once.
#[derive(Default)]
pub struct Scratch {
    q: Vec<u8>,
    scales: Vec<f32>,
}

impl QLinear {
    /// Quantizes the row-major `w[outputs × inputs]` and `bias[outputs]` for `kernel`, which
    /// must be one of [`Kernel::available`] (panics otherwise).
    /// `act_range`, the typical magnitude of each input, balances the quantization error
    /// between activations and weights channel by channel (factor `√(act / max|w|)`).
    pub fn new(
        kernel: Kernel,
        w: &[f32],
        bias: &[f32],
        (inputs, outputs): (usize, usize),
        act_range: Option<&[f32]>,
    ) -> Self {
        assert_eq!(w.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        // The kernels are called on the strength of this check (see `tile`).
        assert!(
            Kernel::available().contains(&kernel),
            "this CPU cannot run the {} kernel",
            kernel.name()
        );
        let smooth: Vec<f32> = match act_range {
            Some(act) => {
                assert_eq!(act.len(), inputs);
                (0..inputs)
                    .map(|k| {
                        let wmax = (0..outputs).fold(0f32, |m, n| m.max(w[n * inputs + k].abs()));
                        let s = (act[k] / wmax).sqrt();
                        if s.is_finite() && s > 0.0 {
                            s
                        } else {
                            1.0
                        }
                    })
                    .collect()
            }
            None => vec![1.0; inputs],
        };
        let nr = kernel.nr();
        let kp = inputs.div_ceil(4) * 4;
        let panels = outputs.div_ceil(nr);
        let offset = MAX_Q + 1;
        let mut packed = vec![0i8; panels * nr * kp];
        let mut scale = vec![0f32; panels * nr];
        let mut offset_sum = vec![0i32; panels * nr];
        let mut padded_bias = vec![0f32; panels * nr];
        for n in 0..outputs {
            let row: Vec<f32> = w[n * inputs..(n + 1) * inputs]
                .iter()
                .zip(&smooth)
                .map(|(v, s)| v * s)
                .collect();
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = amax / MAX_Q as f32;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            let mut sum = 0i32;
            for (k, v) in row.iter().enumerate() {
                let q = (v * inv).round().clamp(-MAX_Q as f32, MAX_Q as f32) as i8;
                sum += q as i32;
                packed[kernel.packed_at(kp, n, k)] = q;
            }
            scale[n] = s;
            offset_sum[n] = offset * sum;
            padded_bias[n] = bias[n];
        }
        Self {
            kernel,
            packed,
            scale,
            offset_sum,
            bias: padded_bias,
            smooth_inv: smooth.iter().map(|v| 1.0 / v).collect(),
            inputs,
            outputs,
            kp,
        }
    }

    /// Inputs per row.
    #[cfg(test)]
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The weights as f32 (what the int8 values stand for), row-major `[outputs × inputs]`.
    #[cfg(test)]
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.outputs * self.inputs];
        for n in 0..self.outputs {
            for k in 0..self.inputs {
                let q = self.packed[self.kernel.packed_at(self.kp, n, k)];
                w[n * self.inputs + k] = q as f32 * self.scale[n] * self.smooth_inv[k];
            }
        }
        w
    }

    /// `out[rows × outputs] = x[rows × inputs] Wᵀ + b`, on the rayon pool.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch) {
        self.run(x, rows, out, scratch, true);
    }

    /// [`QLinear::forward`] on the calling thread only (for callers that parallelise over
    /// blocks of rows themselves).
    pub fn forward_serial(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch) {
        self.run(x, rows, out, scratch, false);
    }

    fn run(&self, x: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch, par: bool) {
        assert!(x.len() >= rows * self.inputs && out.len() >= rows * self.outputs);
        if rows == 0 {
            return;
        }
        let (mr, nr) = (self.kernel.mr(), self.kernel.nr());
        let tiles = rows.div_ceil(mr);
        self.quantize_rows(x, rows, tiles * mr, scratch, par);
        let panels = self.outputs.div_ceil(nr);
        // Row blocks of up to 8 tiles; outputs split too when there are few rows, so both cores
        // work on a short query as well as on a long batch.
        let tiles_per_block = 8;
        let blocks = tiles.div_ceil(tiles_per_block);
        let want = if par {
            4 * rayon::current_num_threads().max(1)
        } else {
            1
        };
        let splits = want.div_ceil(blocks).clamp(1, panels);
        let panels_per_split = panels.div_ceil(splits);
        let tasks: Vec<(usize, usize)> = (0..blocks)
            .flat_map(|b| (0..panels.div_ceil(panels_per_split)).map(move |s| (b, s)))
            .collect();
        let dst = SendPtr(out.as_mut_ptr());
        let (q, scales) = (&scratch.q, &scratch.scales);
        let outputs = self.outputs;
        let work = |&(block, split): &(usize, usize)| {
            let mut tile = [0f32; 8 * 32];
            let first_tile = block * tiles_per_block;
            for t in first_tile..(first_tile + tiles_per_block).min(tiles) {
                let row0 = t * mr;
                let valid_rows = mr.min(rows - row0);
                let a = &q[row0 * self.kp..(row0 + mr) * self.kp];
                let sa = &scales[row0..row0 + mr];
                let p0 = split * panels_per_split;
                for p in p0..(p0 + panels_per_split).min(panels) {
                    let col0 = p * nr;
                    let valid_cols = nr.min(outputs - col0);
                    self.tile(a, sa, p, &mut tile[..mr * nr]);
                    for r in 0..valid_rows {
                        // SAFETY: row row0 + r < rows and columns col0..col0 + valid_cols <
                        // outputs lie inside `out`; each (tile, panel) is written by one task.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                tile.as_ptr().add(r * nr),
                                dst.get().add((row0 + r) * outputs + col0),
                                valid_cols,
                            );
                        }
                    }
                }
            }
        };
        if par {
            tasks.par_iter().for_each(work);
        } else {
            tasks.iter().for_each(work);
        }
    }

    /// Quantizes `rows` rows of `x` per row into `scratch`, sized for `padded_rows` rows of
    /// `kp` bytes. The padding is left as it is: padded inputs meet zero weights, and padded
    /// rows' outputs are never copied out.
    fn quantize_rows(
        &self,
        x: &[f32],
        rows: usize,
        padded_rows: usize,
        scratch: &mut Scratch,
        par: bool,
    ) {
        let (k, kp) = (self.inputs, self.kp);
        let max_q = MAX_Q as f32;
        if scratch.q.len() < padded_rows * kp {
            scratch.q.resize(padded_rows * kp, 0);
        }
        if scratch.scales.len() < padded_rows {
            scratch.scales.resize(padded_rows, 0.0);
        }
        // Sixteen rows per task when parallel.
        let group = |(q, s, x): (&mut [u8], &mut [f32], &[f32])| {
            for ((qrow, s), xrow) in q.chunks_mut(kp).zip(s).zip(x.chunks(k)) {
                *s = super::kernels::quantize_row(xrow, &self.smooth_inv, max_q, &mut qrow[..k]);
            }
        };
        let (q, s, x) = (
            &mut scratch.q[..rows * kp],
            &mut scratch.scales[..rows],
            &x[..rows * k],
        );
        if par {
            q.par_chunks_mut(kp * 16)
                .zip(s.par_chunks_mut(16))
                .zip(x.par_chunks(k * 16))
                .for_each(|((q, s), x)| group((q, s, x)));
        } else {
            group((q, s, x));
        }
    }

    /// One tile: `mr` rows of quantized activations against panel `p`, written as f32 with
    /// scales and bias applied to `tile[mr × nr]`.
    fn tile(&self, a: &[u8], sa: &[f32], p: usize, tile: &mut [f32]) {
        let nr = self.kernel.nr();
        let w = &self.packed[p * nr * self.kp..(p + 1) * nr * self.kp];
        let per = Epilogue {
            sa,
            scale: &self.scale[p * nr..(p + 1) * nr],
            offset_sum: &self.offset_sum[p * nr..(p + 1) * nr],
            bias: &self.bias[p * nr..(p + 1) * nr],
        };
        let groups = self.kp / 4;
        match self.kernel {
            // SAFETY (both): `new` asserted that this CPU has the kernel's features; `a` holds
            // mr rows of kp bytes, `w` one panel of kp/4 groups of nr × 4 bytes, `tile` mr × nr
            // floats.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe {
                x86::tile_avx512vnni(a, self.kp, w, groups, &per, tile)
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { x86::tile_avxvnni(a, self.kp, w, groups, &per, tile) },
            _ => tile_portable(self.kernel.mr(), nr, a, self.kp, w, groups, &per, tile),
        }
    }
}

/// What turns a tile's integer sums into outputs: `y = (acc − offset_sum) · (sa · scale) + bias`.
struct Epilogue<'a> {
    sa: &'a [f32],
    scale: &'a [f32],
    offset_sum: &'a [i32],
    bias: &'a [f32],
}

impl Epilogue<'_> {
    fn apply(&self, r: usize, n: usize, acc: i32) -> f32 {
        ((acc - self.offset_sum[n]) as f32).mul_add(self.sa[r] * self.scale[n], self.bias[n])
    }
}

#[allow(clippy::too_many_arguments)]
fn tile_portable(
    mr: usize,
    nr: usize,
    a: &[u8],
    lda: usize,
    w: &[i8],
    groups: usize,
    per: &Epilogue,
    tile: &mut [f32],
) {
    for r in 0..mr {
        for n in 0..nr {
            let mut acc = 0i32;
            for g in 0..groups {
                for i in 0..4 {
                    acc += a[r * lda + 4 * g + i] as i32 * w[g * nr * 4 + n * 4 + i] as i32;
                }
            }
            tile[r * nr + n] = per.apply(r, n, acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Epilogue;

    /// Four activation bytes of row `r`, group `g`, broadcast to every 32-bit lane.
    macro_rules! bcast4 {
        ($set1:ident, $a:expr, $lda:expr, $r:expr, $g:expr) => {
            $set1(($a.as_ptr().add($r * $lda + 4 * $g) as *const i32).read_unaligned())
        };
    }

    /// # Safety
    /// AVX-512 F/BW/VNNI present; shapes as in `QLinear::tile` (8 rows, 32 outputs).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512vnni(
        a: &[u8],
        lda: usize,
        w: &[i8],
        groups: usize,
        per: &Epilogue,
        tile: &mut [f32],
    ) {
        const MR: usize = 8;
        assert!(a.len() >= MR * lda && w.len() >= groups * 128 && tile.len() >= MR * 32);
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        for g in 0..groups {
            // SAFETY: group g of the panel is 128 bytes at g·128 (asserted above).
            let (w0, w1) = unsafe {
                let p = w.as_ptr().add(g * 128);
                (
                    _mm512_loadu_si512(p as *const _),
                    _mm512_loadu_si512(p.add(64) as *const _),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row r, bytes 4g..4g+4 lie inside `a`.
                let av = unsafe { bcast4!(_mm512_set1_epi32, a, lda, r, g) };
                acc[0] = _mm512_dpbusd_epi32(acc[0], av, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], av, w1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let sa = _mm512_set1_ps(per.sa[r]);
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: 16 values of each per-output slice at 16j, and of the tile at r·32+16j.
                unsafe {
                    let off = _mm512_loadu_si512(per.offset_sum.as_ptr().add(16 * j) as *const _);
                    let scale = _mm512_mul_ps(sa, _mm512_loadu_ps(per.scale.as_ptr().add(16 * j)));
                    let bias = _mm512_loadu_ps(per.bias.as_ptr().add(16 * j));
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(*acc, off));
                    _mm512_storeu_ps(
                        tile.as_mut_ptr().add(r * 32 + 16 * j),
                        _mm512_fmadd_ps(v, scale, bias),
                    );
                }
            }
        }
    }

    /// Writes 16 outputs of row `r` from two 8-lane accumulators.
    ///
    /// # Safety
    /// AVX2 and FMA present; `per` slices hold 16 values; `tile` holds row r of 16.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store16(acc: &[__m256i; 2], per: &Epilogue, r: usize, tile: &mut [f32]) {
        let sa = _mm256_set1_ps(per.sa[r]);
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: as documented above.
            unsafe {
                let off = _mm256_loadu_si256(per.offset_sum.as_ptr().add(8 * j) as *const _);
                let scale = _mm256_mul_ps(sa, _mm256_loadu_ps(per.scale.as_ptr().add(8 * j)));
                let bias = _mm256_loadu_ps(per.bias.as_ptr().add(8 * j));
                let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(*acc, off));
                _mm256_storeu_ps(
                    tile.as_mut_ptr().add(r * 16 + 8 * j),
                    _mm256_fmadd_ps(v, scale, bias),
                );
            }
        }
    }

    /// # Safety
    /// AVX2 and AVX-VNNI present; shapes as in `QLinear::tile` (6 rows, 16 outputs).
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) unsafe fn tile_avxvnni(
        a: &[u8],
        lda: usize,
        w: &[i8],
        groups: usize,
        per: &Epilogue,
        tile: &mut [f32],
    ) {
        const MR: usize = 6;
        assert!(a.len() >= MR * lda && w.len() >= groups * 64 && tile.len() >= MR * 16);
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        for g in 0..groups {
            // SAFETY: group g of the panel is 64 bytes at g·64.
            let (w0, w1) = unsafe {
                let p = w.as_ptr().add(g * 64);
                (
                    _mm256_loadu_si256(p as *const _),
                    _mm256_loadu_si256(p.add(32) as *const _),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row r, bytes 4g..4g+4 lie inside `a`.
                let av = unsafe { bcast4!(_mm256_set1_epi32, a, lda, r, g) };
                acc[0] = _mm256_dpbusd_avx_epi32(acc[0], av, w0);
                acc[1] = _mm256_dpbusd_avx_epi32(acc[1], av, w1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: forwarded shapes.
            unsafe { store16(acc, per, r, tile) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values::lcg;
    use super::*;
    use proptest::prelude::*;

    fn run(
        kernel: Kernel,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        shape: (usize, usize, usize),
    ) -> Vec<f32> {
        let (rows, inputs, outputs) = shape;
        let q = QLinear::new(kernel, w, b, (inputs, outputs), None);
        let mut out = vec![f32::NAN; rows * outputs];
        q.forward(x, rows, &mut out, &mut Scratch::default());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every kernel this CPU has gives exactly the portable loop's outputs (the integer sums
        /// are exact and the epilogue is the same arithmetic), with or without smoothing,
        /// serial or parallel, whatever the shape (tails of rows, outputs and inputs), and a
        /// scratch reused from a larger call changes nothing.
        #[test]
        fn kernels_agree_with_the_portable_loop(
            rows in 1usize..21, inputs in 1usize..150, outputs in 1usize..70, seed in any::<u64>(),
            smooth in any::<bool>()
        ) {
            let mut s = seed;
            let w: Vec<f32> = (0..inputs * outputs).map(|_| lcg(&mut s)).collect();
            let b: Vec<f32> = (0..outputs).map(|_| lcg(&mut s)).collect();
            let x: Vec<f32> = (0..rows * inputs).map(|_| lcg(&mut s) * 4.0).collect();
            let range: Vec<f32> = (0..inputs).map(|_| lcg(&mut s).abs() * 8.0).collect();
            let range = smooth.then_some(range.as_slice());
            let portable = QLinear::new(Kernel::Portable, &w, &b, (inputs, outputs), range);
            let mut expected = vec![f32::NAN; rows * outputs];
            portable.forward(&x, rows, &mut expected, &mut Scratch::default());
            for kernel in Kernel::available() {
                let q = QLinear::new(kernel, &w, &b, (inputs, outputs), range);
                let mut scratch = Scratch::default();
                let mut wide = vec![0f32; 40 * outputs];
                let big: Vec<f32> = (0..40 * inputs).map(|_| lcg(&mut s) * 9.0).collect();
                q.forward(&big, 40, &mut wide, &mut scratch);
                for serial in [false, true] {
                    let mut got = vec![f32::NAN; rows * outputs];
                    if serial {
                        q.forward_serial(&x, rows, &mut got, &mut scratch);
                    } else {
                        q.forward(&x, rows, &mut got, &mut scratch);
                    }
                    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                        prop_assert_eq!(g.to_bits(), e.to_bits(), "{:?} output {}", kernel, i);
                    }
                }
            }
        }
    }

    #[test]
    fn product_is_close_to_the_f32_product() {
        let (rows, inputs, outputs) = (37, 384, 100);
        let mut s = 11;
        let w: Vec<f32> = (0..inputs * outputs).map(|_| lcg(&mut s) * 0.1).collect();
        let b: Vec<f32> = (0..outputs).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..rows * inputs).map(|_| lcg(&mut s) * 3.0).collect();
        for kernel in Kernel::available() {
            let got = run(kernel, &w, &b, &x, (rows, inputs, outputs));
            let q = QLinear::new(kernel, &w, &b, (inputs, outputs), None);
            assert_eq!((q.inputs(), q.outputs()), (inputs, outputs));
            let stored = q.dequantize();
            let (mut err, mut norm) = (0f64, 0f64);
            for r in 0..rows {
                for n in 0..outputs {
                    let exact: f64 = (0..inputs)
                        .map(|k| x[r * inputs + k] as f64 * w[n * inputs + k] as f64)
                        .sum::<f64>()
                        + b[n] as f64;
                    let with_stored: f64 = (0..inputs)
                        .map(|k| x[r * inputs + k] as f64 * stored[n * inputs + k] as f64)
                        .sum::<f64>()
                        + b[n] as f64;
                    // Weight rounding alone is within half a step per product.
                    let step = 0.1 / 127.0;
                    let bound: f64 = (0..inputs)
                        .map(|k| x[r * inputs + k].abs() as f64 * step / 2.0)
                        .sum();
                    assert!((exact - with_stored).abs() <= bound + 1e-9);
                    err += (got[r * outputs + n] as f64 - exact).powi(2);
                    norm += exact * exact;
                }
            }
            let rel = (err / norm).sqrt();
            assert!(rel < 0.01, "{kernel:?}: relative error {rel}");
        }
    }
}
