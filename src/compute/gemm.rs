//! Matrix products on candle's GEMM kernels (the `gemm` crate, AVX2/AVX-512 chosen at run
//! time), with row-major operands given as pointers and strides so views into fused buffers
//! need no copy.

pub(crate) use gemm::Parallelism;

/// A raw pointer that may cross threads; used where parallel tasks write disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: every use writes regions no other task touches (documented at the use sites).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// The right-hand operand of a product: a row-major matrix used as is or transposed.
#[derive(Clone, Copy)]
pub(crate) enum Rhs {
    /// `b[k×n]` with row stride `rs`.
    Plain { ptr: *const f32, rs: usize },
    /// `Wᵀ` for `W[n×k]` with row stride `rs` (a PyTorch `Linear` weight).
    Transposed { ptr: *const f32, rs: usize },
}

/// `dst[m×n] = scale · a[m×k] · rhs`, row-major with the given row strides.
///
/// # Safety
/// The pointers must address matrices of the stated shapes and strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    a_rs: usize,
    rhs: Rhs,
    dst: *mut f32,
    dst_rs: usize,
    scale: f32,
    par: Parallelism,
) {
    let (b, b_cs, b_rs) = match rhs {
        Rhs::Plain { ptr, rs } => (ptr, 1, rs as isize),
        Rhs::Transposed { ptr, rs } => (ptr, rs as isize, 1),
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            a,
            1,
            a_rs as isize,
            b,
            b_cs,
            b_rs,
            0.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// Every rayon thread, or none when the pool has one.
pub(crate) fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}
