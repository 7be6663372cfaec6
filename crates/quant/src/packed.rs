//! `PackedMatrix`: Q4_0, Q4_1 and Q8_0 weights repacked once at load time into 16-row
//! interleaved groups, and `matmul_packed`, which streams them with AVX-512 (VNNI) kernels that
//! need no shuffles or horizontal sums: one `vpdpbusd` multiplies 4 columns of 16 rows at once,
//! and the 16 lanes of the result are the 16 rows' outputs.
//!
//! Layout of one group of [`GROUP_ROWS`] rows with `nb` blocks per row (all regions 64-byte
//! aligned, groups back to back):
//! - scales: for each block, the 16 rows' f16 `d` (32 bytes); Q4_1 then the 16 rows' f16 `m`;
//! - quants: for each block, `64 / 4`-byte chunks `c`: row `j`'s bytes `4c..4c+4` of the block's
//!   quants at offset `64c + 4j` — 4 chunks for Q4_0/Q4_1 (nibbles as stored by ggml), 8 for
//!   Q8_0 (stored `q ^ 0x80`, i.e. `q + 128` as unsigned, since `vpdpbusd` wants one unsigned
//!   operand; the kernel subtracts `128 · Σ a` per block).
//!
//! Every output is `Σ_blocks (d_w · d_a) · isum` accumulated block by block in order (plus
//! `m_w · s_a` for Q4_1), for one activation row or many, so decode and prefill agree exactly.

use crate::act::{ActBuf, ActType};
use crate::error::QuantError;
use crate::matmul::QMatrix;
use crate::q4_0::BlockQ4_0;
use crate::q4_1::BlockQ4_1;
use crate::q8_0::BlockQ8_0;
use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;
use kiln_tensor::ThreadPool;
use std::mem::size_of;

/// Weight rows per interleaved group (one 512-bit vector of f32 outputs).
pub const GROUP_ROWS: usize = 16;

/// Gate rows (and as many up rows) per unit of a [`PackedMatrix::pack_glu`] matrix: one
/// 32-value activation block of `silu(gate) · up`.
pub const GLU_UNIT: usize = 32;

/// Elements per block of every packable type.
const QK: usize = 32;

/// Below this many multiply-adds a packed matmul runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 1 << 15;
/// The smallest piece of a packed matmul a pool thread claims is its share over this: each
/// thread streams its own share of the rows, claiming half of what is left at a time, and one
/// done early takes half of the rest of another share ([`ThreadPool::par_ranges`]), so a late
/// or slow thread costs at most about one piece. Two fixed chunks per thread from one shared
/// counter (the earlier split) left the caller waiting 1.5–5 µs per matmul at 2 threads.
const PIECES_PER_THREAD: usize = 16;

/// One cache line, the allocation unit, so every group starts 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([u8; 64]);

/// A weight matrix repacked for one kernel family; see the module docs for the layout.
#[derive(Clone)]
pub struct PackedMatrix {
    ty: QuantType,
    choice: KernelChoice,
    rows: usize,
    cols: usize,
    /// Bytes of the scale region of one group (a multiple of 64).
    scale_bytes: usize,
    /// Bytes of one group (a multiple of 64).
    group_bytes: usize,
    /// Packed by [`PackedMatrix::pack_glu`]: rows alternate [`GLU_UNIT`] gate and up rows.
    glu: bool,
    data: Vec<Line>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("choice", &self.choice)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// Bytes of one block's quants for 16 rows.
fn quant_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q8_0 => 32 * GROUP_ROWS,
        _ => 16 * GROUP_ROWS,
    }
}

/// Scale arrays (16 f16 each) per block.
fn scale_arrays(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_1 => 2,
        _ => 1,
    }
}

impl PackedMatrix {
    /// Whether [`PackedMatrix::pack`] supports weights of `ty` for kernel family `choice`.
    /// Q8_0 needs VNNI: its unsigned-offset quants overflow the 16-bit pair sums of the plain
    /// AVX-512 multiply-add.
    pub fn supports(choice: KernelChoice, ty: QuantType) -> bool {
        if !cfg!(target_arch = "x86_64") || crate::dispatch::check_choice(choice).is_err() {
            return false;
        }
        match choice {
            KernelChoice::Avx512Vnni => {
                matches!(ty, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q8_0)
            }
            KernelChoice::Avx512 => matches!(ty, QuantType::Q4_0 | QuantType::Q4_1),
            _ => false,
        }
    }

    /// Repacks `w` for kernel family `choice`; `None` when that family has no packed kernel for
    /// `w.ty` or `w.rows` is not a positive multiple of [`GROUP_ROWS`] (the caller then keeps
    /// the plain layout and [`crate::matmul`]).
    pub fn pack(choice: KernelChoice, w: &QMatrix) -> Option<PackedMatrix> {
        Self::pack_stacked(choice, std::slice::from_ref(w))
    }

    /// Packs the rows of several matrices of one type and width, stacked in order, as one
    /// matrix (so one matmul computes all of them); `None` as for [`PackedMatrix::pack`], or
    /// when the parts differ in type or width (each part's rows a multiple of
    /// [`GROUP_ROWS`]). No plain copy of the stack is made.
    pub fn pack_stacked(choice: KernelChoice, parts: &[QMatrix]) -> Option<PackedMatrix> {
        let rows = parts
            .iter()
            .flat_map(|w| (0..w.rows).map(move |r| w.row(r)));
        Self::pack_rows(choice, parts, rows, false)
    }

    /// Packs a SwiGLU feed-forward's gate and up weights (one type, one shape) for
    /// [`matmul_packed_glu`]: the packed rows alternate [`GLU_UNIT`] gate rows and the same
    /// [`GLU_UNIT`] up rows, so each unit of the output yields one whole block of
    /// `silu(gate) · up`. `None` as for [`PackedMatrix::pack`], or when the shapes differ or
    /// the row count is not a multiple of [`GLU_UNIT`].
    pub fn pack_glu(choice: KernelChoice, gate: &QMatrix, up: &QMatrix) -> Option<PackedMatrix> {
        if gate.rows != up.rows || !gate.rows.is_multiple_of(GLU_UNIT) {
            return None;
        }
        let rows = (0..gate.rows / GLU_UNIT).flat_map(|u| {
            let unit = u * GLU_UNIT..(u + 1) * GLU_UNIT;
            (unit.clone().map(|r| gate.row(r))).chain(unit.map(|r| up.row(r)))
        });
        Self::pack_rows(choice, &[*gate, *up], rows, true)
    }

    /// Packs `rows` (every row of `parts`, in the order given) as one matrix; see
    /// [`PackedMatrix::pack_stacked`] for when that is `None`.
    fn pack_rows<'a>(
        choice: KernelChoice,
        parts: &[QMatrix],
        rows: impl Iterator<Item = &'a [u8]>,
        glu: bool,
    ) -> Option<PackedMatrix> {
        let first = parts.first()?;
        let (ty, cols) = (first.ty, first.cols);
        if !Self::supports(choice, ty)
            || parts.iter().any(|w| {
                w.ty != ty
                    || w.cols != cols
                    || w.rows == 0
                    || !w.rows.is_multiple_of(GROUP_ROWS)
                    || w.validate().is_err()
            })
        {
            return None;
        }
        let n_rows: usize = parts.iter().map(|w| w.rows).sum();
        let nb = cols / QK;
        let scale_bytes = (nb * 32 * scale_arrays(ty)).div_ceil(64) * 64;
        let group_bytes = scale_bytes + nb * quant_bytes(ty);
        let total = group_bytes.checked_mul(n_rows / GROUP_ROWS)?;
        let mut data = vec![Line([0; 64]); total / 64];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data[..]);
        let mut rows = rows.peekable();
        let mut groups = bytes.chunks_exact_mut(group_bytes);
        while rows.peek().is_some() {
            let group = groups.next()?;
            let (scales, quants) = group.split_at_mut(scale_bytes);
            for j in 0..GROUP_ROWS {
                let row = rows.next()?;
                pack_row(ty, nb, row, j, scales, quants);
            }
        }
        Some(PackedMatrix {
            ty,
            choice,
            rows: n_rows,
            cols,
            scale_bytes,
            group_bytes,
            glu,
            data,
        })
    }

    pub fn ty(&self) -> QuantType {
        self.ty
    }

    /// The kernel family the layout was packed for (and that `matmul_packed` runs).
    pub fn choice(&self) -> KernelChoice {
        self.choice
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the packed weights occupy (read once per full pass).
    pub fn byte_len(&self) -> usize {
        self.data.len() * 64
    }

    /// Row `r` back in ggml's block layout (the exact bytes it was packed from); empty when
    /// `r >= rows`. For tests and diagnostics.
    pub fn unpack_row(&self, r: usize) -> Vec<u8> {
        if r >= self.rows {
            return Vec::new();
        }
        let nb = self.cols / QK;
        let bytes: &[u8] = bytemuck::cast_slice(&self.data[..]);
        let group = &bytes[(r / GROUP_ROWS) * self.group_bytes..][..self.group_bytes];
        let (scales, quants) = group.split_at(self.scale_bytes);
        let j = r % GROUP_ROWS;
        let block_bytes = self.ty.block_bytes();
        let mut out = vec![0u8; nb * block_bytes];
        for (b, dst) in out.chunks_exact_mut(block_bytes).enumerate() {
            dst[..2].copy_from_slice(&scales[b * 32 + 2 * j..][..2]);
            let qs_at = if self.ty == QuantType::Q4_1 {
                dst[2..4].copy_from_slice(&scales[nb * 32 + b * 32 + 2 * j..][..2]);
                4
            } else {
                2
            };
            let q = &quants[b * quant_bytes(self.ty)..];
            for (c, chunk) in dst[qs_at..].chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&q[c * 64 + 4 * j..][..4]);
                if self.ty == QuantType::Q8_0 {
                    chunk.iter_mut().for_each(|v| *v ^= 0x80);
                }
            }
        }
        out
    }
}

/// Scatters row `j` of a group (ggml blocks in `row`) into the group's scale and quant regions.
fn pack_row(ty: QuantType, nb: usize, row: &[u8], j: usize, scales: &mut [u8], quants: &mut [u8]) {
    let (block_bytes, qs_at) = match ty {
        QuantType::Q4_0 => (size_of::<BlockQ4_0>(), 2),
        QuantType::Q4_1 => (size_of::<BlockQ4_1>(), 4),
        _ => (size_of::<BlockQ8_0>(), 2),
    };
    for (b, block) in row.chunks_exact(block_bytes).take(nb).enumerate() {
        scales[b * 32 + 2 * j..][..2].copy_from_slice(&block[..2]);
        if ty == QuantType::Q4_1 {
            scales[nb * 32 + b * 32 + 2 * j..][..2].copy_from_slice(&block[2..4]);
        }
        let q = &mut quants[b * quant_bytes(ty)..];
        for (c, chunk) in block[qs_at..].chunks_exact(4).enumerate() {
            let dst = &mut q[c * 64 + 4 * j..][..4];
            dst.copy_from_slice(chunk);
            if ty == QuantType::Q8_0 {
                dst.iter_mut().for_each(|v| *v ^= 0x80);
            }
        }
    }
}

/// `out[t * w.rows() + r] = dot(row r of w, activation row t)` for every activation row, with
/// the kernel family `w` was packed for. Same contract as [`crate::matmul`].
pub fn matmul_packed(
    pool: &ThreadPool,
    w: &PackedMatrix,
    acts: &ActBuf,
    out: &mut [f32],
) -> Result<(), QuantError> {
    crate::dispatch::check_choice(w.choice)?;
    if !crate::matmul::check_args(w.ty, w.rows, w.cols, acts, out)? {
        return Ok(());
    }
    run(pool, w, acts, out, 1, |_, _, _| {})
}

/// For `w` packed by [`PackedMatrix::pack_glu`] (gate and up, `n_ff = w.rows() / 2` rows
/// each): sets `dst` (`n_act × n_ff`) to `silu(gate · x) · (up · x)` for every activation row
/// `x` of `acts`, with [`kiln_tensor::ops::silu_mul`]'s arithmetic, and `dst_acts` to `dst`
/// quantized for weights of type `down_ty` (the bytes [`ActBuf::quantize`] gives). Each
/// thread finishes its own 32-value blocks right after computing their dot products, while
/// they are in L1, so the SiLU·mul and the quantization run in parallel instead of after the
/// matmul. `scratch` receives the gate and up products (interleaved per unit). Fails if `w`
/// is not a GLU packing or `down_ty`'s activation blocks do not divide [`GLU_UNIT`] (see
/// [`glu_fits`]).
pub fn matmul_packed_glu(
    pool: &ThreadPool,
    w: &PackedMatrix,
    acts: &ActBuf,
    scratch: &mut Vec<f32>,
    down_ty: QuantType,
    dst: &mut [f32],
    dst_acts: &mut ActBuf,
) -> Result<(), QuantError> {
    crate::dispatch::check_choice(w.choice)?;
    let n_act = acts.n_rows();
    let n_ff = w.rows / 2;
    if !w.glu || !glu_fits(down_ty) {
        return Err(QuantError::Length {
            ty: down_ty,
            what: "fused gate/up (not a GLU packing, or activation blocks wider than 32)",
            expected: GLU_UNIT,
            got: ActType::for_weight(down_ty).block_size(),
        });
    }
    let expected = n_act.checked_mul(n_ff).ok_or(QuantError::Overflow {
        ty: w.ty,
        rows: n_act,
        cols: n_ff,
    })?;
    if dst.len() != expected {
        return Err(QuantError::Output {
            ty: w.ty,
            act_rows: n_act,
            weight_rows: n_ff,
            got: dst.len(),
        });
    }
    scratch.resize(n_act * w.rows, 0.0);
    let quant = dst_acts.layout(w.choice, down_ty, dst.len(), n_ff)?;
    if !crate::matmul::check_args(w.ty, w.rows, w.cols, acts, scratch)? {
        dst_acts.compute_block_consts();
        return Ok(());
    }
    let out = GluOut {
        dst: dst.as_mut_ptr(),
        acts: dst_acts.bytes_mut().as_mut_ptr(),
        stride: dst_acts.stride(),
        block_bytes: ActType::for_weight(down_ty).row_bytes(GLU_UNIT),
        rows: w.rows,
        n_ff,
        n_act,
        quant,
    };
    // Groups per unit: the gate and up groups of GLU_UNIT rows each.
    let unit_groups = 2 * GLU_UNIT / GROUP_ROWS;
    run(pool, w, acts, scratch, unit_groups, |products, u0, u1| {
        // SAFETY: `run` calls this on the thread that just computed units `u0..u1` into
        // `products`, and no other thread touches those units.
        unsafe { out.finish(products, u0, u1) }
    })?;
    dst_acts.compute_block_consts();
    Ok(())
}

/// Whether [`matmul_packed_glu`] can prepare the input of a down projection of `down_ty`
/// (its activation blocks must tile a [`GLU_UNIT`]-value block: not Q8_K).
pub fn glu_fits(down_ty: QuantType) -> bool {
    GLU_UNIT.is_multiple_of(ActType::for_weight(down_ty).block_size())
}

/// Where [`matmul_packed_glu`]'s threads finish their units.
struct GluOut {
    /// `n_act × n_ff` values of `silu(gate) · up`.
    dst: *mut f32,
    /// The quantized rows, `stride` bytes apart; a unit's block at `u * block_bytes`.
    acts: *mut u8,
    stride: usize,
    block_bytes: usize,
    rows: usize,
    n_ff: usize,
    n_act: usize,
    quant: crate::dispatch::ActQuantFn,
}

// SAFETY: shared read-only between pool threads; each thread reads and writes only the
// elements of its own units.
unsafe impl Sync for GluOut {}

impl GluOut {
    /// SiLU·mul and quantization of units `u0..u1` of every activation row; `products` is the
    /// matmul's output (per activation row `rows` values, unit `u` at `u * 2 * GLU_UNIT`: gate
    /// products, then up products).
    ///
    /// # Safety
    /// The products of those units are computed and no other thread touches the units.
    unsafe fn finish(&self, products: *const f32, u0: usize, u1: usize) {
        for t in 0..self.n_act {
            for u in u0..u1 {
                let at = t * self.rows + u * 2 * GLU_UNIT;
                let gate = std::slice::from_raw_parts(products.add(at), GLU_UNIT);
                let up = std::slice::from_raw_parts(products.add(at + GLU_UNIT), GLU_UNIT);
                let d = std::slice::from_raw_parts_mut(
                    self.dst.add(t * self.n_ff + u * GLU_UNIT),
                    GLU_UNIT,
                );
                kiln_tensor::ops::silu_mul(gate, up, d);
                let q = std::slice::from_raw_parts_mut(
                    self.acts.add(t * self.stride + u * self.block_bytes),
                    self.block_bytes,
                );
                (self.quant)(d, q);
            }
        }
    }
}

/// The packed kernel for `w` and the job describing `w`, `acts` and `out` (checked by the
/// callers).
#[cfg(target_arch = "x86_64")]
fn kernel_job<'a>(
    w: &'a PackedMatrix,
    acts: &'a ActBuf,
    out: &mut [f32],
) -> Result<
    (
        crate::x86::packed::PackedFn,
        crate::x86::packed::PackedJob<'a>,
    ),
    QuantError,
> {
    let Some(kernel) = crate::x86::packed::kernel(w.choice, w.ty) else {
        return Err(QuantError::UnsupportedKernel { choice: w.choice });
    };
    let job = crate::x86::packed::PackedJob {
        nb: w.cols / QK,
        weights: bytemuck::cast_slice(&w.data[..]),
        group_bytes: w.group_bytes,
        scale_bytes: w.scale_bytes,
        acts: acts.bytes(),
        act_stride: acts.stride(),
        d: acts.block_d(),
        offsets: acts.block_offsets(),
        s: acts.block_s(),
        n_act: acts.n_rows(),
        rows: w.rows,
        out: out.as_mut_ptr(),
    };
    Ok((kernel, job))
}

/// Runs `w`'s kernel into `out` over the pool in units of `unit_groups` groups (pieces of
/// each thread's share, see [`PIECES_PER_THREAD`]), and on the same thread, right after units
/// `u0..u1` are computed, calls `after(out, u0, u1)` (the fused GLU finishes its blocks there
/// while they are in L1).
#[cfg(target_arch = "x86_64")]
fn run(
    pool: &ThreadPool,
    w: &PackedMatrix,
    acts: &ActBuf,
    out: &mut [f32],
    unit_groups: usize,
    after: impl Fn(*const f32, usize, usize) + Sync,
) -> Result<(), QuantError> {
    let (kernel, job) = kernel_job(w, acts, out)?;
    let n_units = w.rows / GROUP_ROWS / unit_groups;
    let work = w.rows.saturating_mul(w.cols).saturating_mul(job.n_act);
    let nth = pool.n_threads();
    let units = |u: std::ops::Range<usize>, prefetch_end: usize| {
        // SAFETY: `check_choice` passed for `w.choice`; `job` describes `w`, `acts` and `out`
        // as the callers validated them; the pool hands out disjoint unit ranges, so threads
        // write disjoint outputs.
        unsafe {
            kernel(
                &job,
                u.start * unit_groups,
                u.end * unit_groups,
                prefetch_end * unit_groups,
            )
        };
        after(job.out, u.start, u.end);
    };
    if nth <= 1 || work < PARALLEL_MIN_WORK || n_units == 1 {
        units(0..n_units, n_units);
        return Ok(());
    }
    pool.par_ranges(n_units, n_units.div_ceil(nth * PIECES_PER_THREAD), units);
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn run(
    _pool: &ThreadPool,
    w: &PackedMatrix,
    _acts: &ActBuf,
    _out: &mut [f32],
    _unit_groups: usize,
    _after: impl Fn(*const f32, usize, usize) + Sync,
) -> Result<(), QuantError> {
    // `PackedMatrix::pack*` never succeeds off x86-64.
    Err(QuantError::UnsupportedKernel { choice: w.choice })
}
