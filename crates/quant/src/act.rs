//! `ActBuf`: activation rows quantized into the format a weight type's dot kernel consumes
//! (Q8_0, Q8_1, Q8_K blocks in ggml layout, or f16/bf16/f32 values), reusing its allocation.

use crate::common::f16_to_f32;
use crate::dispatch;
use crate::error::QuantError;
use crate::types::QuantType;
use crate::{q8_0, q8_1, q8_k};
use kiln_tensor::cpu::KernelChoice;

/// The activation ("vec dot") format a weight type is multiplied with, as in ggml.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActType {
    /// ggml's `vec_dot_type` for weights of type `ty`.
    pub fn for_weight(ty: QuantType) -> ActType {
        match ty {
            QuantType::F32 => ActType::F32,
            QuantType::F16 => ActType::F16,
            QuantType::BF16 => ActType::BF16,
            QuantType::Q8_0 | QuantType::Q4_0 => ActType::Q8_0,
            QuantType::Q4_1 => ActType::Q8_1,
            QuantType::Q4_K | QuantType::Q6_K => ActType::Q8_K,
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            ActType::F32 | ActType::F16 | ActType::BF16 => 1,
            ActType::Q8_0 => q8_0::QK8_0,
            ActType::Q8_1 => q8_1::QK8_1,
            ActType::Q8_K => q8_k::QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            ActType::F32 => 4,
            ActType::F16 | ActType::BF16 => 2,
            ActType::Q8_0 => std::mem::size_of::<q8_0::BlockQ8_0>(),
            ActType::Q8_1 => std::mem::size_of::<q8_1::BlockQ8_1>(),
            ActType::Q8_K => std::mem::size_of::<q8_k::BlockQ8_K>(),
        }
    }

    /// Bytes of a row of `n` elements (`n` a multiple of the block size); saturates at
    /// `usize::MAX` for impossible sizes.
    pub fn row_bytes(self, n: usize) -> usize {
        self.checked_row_bytes(n).unwrap_or(usize::MAX)
    }

    /// Bytes of a row of `n` elements, `None` on overflow.
    pub fn checked_row_bytes(self, n: usize) -> Option<usize> {
        (n / self.block_size()).checked_mul(self.block_bytes())
    }
}

/// One cache line; the unit of `ActBuf` storage so every row starts 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([u8; 64]);

/// Activations (`n_rows` rows of `cols` f32) quantized into the format that `weight_ty`'s dot
/// kernel consumes. Rows start on 64-byte boundaries. Reuses its allocation across calls.
#[derive(Clone)]
pub struct ActBuf {
    ty: ActType,
    weight_ty: QuantType,
    n_rows: usize,
    cols: usize,
    row_bytes: usize,
    stride: usize,
    data: Vec<Line>,
    /// Per block of every row (`cols / 32` per row), the constants the packed kernels apply to
    /// each block's integer dot product, already in the form they use (empty for other
    /// formats).
    consts: BlockConsts,
}

/// Per-block constants of Q8_0 and Q8_1 rows, unpacked once per activation instead of once per
/// weight group: a decode matmul applies every activation block to every 16-row group, so a
/// form its inner loop broadcasts straight from memory saves it the f16 conversion and the
/// integer arithmetic in each of them.
#[derive(Clone, Default)]
struct BlockConsts {
    /// The block's scale `d` as f32 (Q8_0 and Q8_1).
    d: Vec<f32>,
    /// Q8_0: `−128 · Σ q` over the block's quants, the term that undoes the packed kernels'
    /// unsigned weight offsets (Q8_0 weights are stored `q + 128`; Q4_0's high nibbles are read
    /// as `16 · q`, and `−128 · Σ a = 16 · (−8 · Σ a)` undoes both their scale and the −8).
    offset: Vec<i32>,
    /// Q8_1: the block's `s` (`d · Σ q`) as f32.
    s: Vec<f32>,
}

impl Default for ActBuf {
    fn default() -> Self {
        ActBuf::new()
    }
}

impl std::fmt::Debug for ActBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActBuf")
            .field("ty", &self.ty)
            .field("n_rows", &self.n_rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl ActBuf {
    /// An empty buffer (0 rows).
    pub fn new() -> ActBuf {
        ActBuf {
            ty: ActType::F32,
            weight_ty: QuantType::F32,
            n_rows: 0,
            cols: 0,
            row_bytes: 0,
            stride: 0,
            data: Vec::new(),
            consts: BlockConsts::default(),
        }
    }

    /// Quantizes `x` (rows of `cols` values, `x.len()` a multiple of `cols`) for weights of type
    /// `weight_ty`, with the process-wide kernel family. `cols` must be a multiple of the
    /// activation format's block size (32 for Q8_0/Q8_1, 256 for Q8_K).
    pub fn quantize(
        &mut self,
        weight_ty: QuantType,
        x: &[f32],
        cols: usize,
    ) -> Result<(), QuantError> {
        self.quantize_with(kiln_tensor::cpu::kernel_choice(), weight_ty, x, cols)
    }

    /// Same as [`ActBuf::quantize`] with an explicit kernel family (all families produce
    /// identical bytes; tests check that).
    pub fn quantize_with(
        &mut self,
        choice: KernelChoice,
        weight_ty: QuantType,
        x: &[f32],
        cols: usize,
    ) -> Result<(), QuantError> {
        let quant = self.layout(choice, weight_ty, x.len(), cols)?;
        let (row_bytes, stride) = (self.row_bytes, self.stride);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.data[..]);
        if stride > 0 {
            for (src, dst) in x.chunks_exact(cols).zip(bytes.chunks_exact_mut(stride)) {
                // SAFETY: `layout` checked that this CPU runs `choice`'s kernels; `dst` holds
                // at least `row_bytes(cols)` bytes for the `cols` values of `src`.
                unsafe { quant(src, &mut dst[..row_bytes]) };
            }
        }
        self.compute_block_consts();
        Ok(())
    }

    /// Fills each row of `x` (rows of `cols` values) with `prepare(row_index, row)` and
    /// quantizes it right away for `weight_ty`, while it is still in L1: a producer such as
    /// RMSNorm and the activation quantization become one pass over the rows instead of two.
    /// The bytes are those [`ActBuf::quantize`] gives for the prepared `x`.
    pub fn prepare_and_quantize(
        &mut self,
        weight_ty: QuantType,
        x: &mut [f32],
        cols: usize,
        mut prepare: impl FnMut(usize, &mut [f32]),
    ) -> Result<(), QuantError> {
        let quant = self.layout(kiln_tensor::cpu::kernel_choice(), weight_ty, x.len(), cols)?;
        let (row_bytes, stride) = (self.row_bytes, self.stride);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.data[..]);
        if stride > 0 {
            let rows = x.chunks_exact_mut(cols).zip(bytes.chunks_exact_mut(stride));
            for (t, (src, dst)) in rows.enumerate() {
                prepare(t, src);
                // SAFETY: as in `quantize_with`.
                unsafe { quant(src, &mut dst[..row_bytes]) };
            }
        }
        self.compute_block_consts();
        Ok(())
    }

    /// Checks the shapes, sizes the buffer for `len / cols` rows of `weight_ty`'s activation
    /// format and returns the row quantizer of `choice`.
    pub(crate) fn layout(
        &mut self,
        choice: KernelChoice,
        weight_ty: QuantType,
        len: usize,
        cols: usize,
    ) -> Result<dispatch::ActQuantFn, QuantError> {
        dispatch::check_choice(choice)?;
        let ty = ActType::for_weight(weight_ty);
        if cols == 0 && len != 0 {
            return Err(QuantError::Length {
                ty: weight_ty,
                what: "activation row length",
                expected: len,
                got: 0,
            });
        }
        let n_rows = len.checked_div(cols).unwrap_or(0);
        if n_rows * cols != len {
            return Err(QuantError::Length {
                ty: weight_ty,
                what: "activations (not whole rows)",
                expected: n_rows * cols,
                got: len,
            });
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(QuantError::NotBlockMultiple {
                ty: weight_ty,
                n: cols,
                block: ty.block_size(),
            });
        }
        let overflow = QuantError::Overflow {
            ty: weight_ty,
            rows: n_rows,
            cols,
        };
        let row_bytes = ty.checked_row_bytes(cols).ok_or(overflow.clone())?;
        let lines = row_bytes.div_ceil(64);
        let stride = lines.checked_mul(64).ok_or(overflow.clone())?;
        let lines = lines.checked_mul(n_rows).ok_or(overflow)?;
        self.data.resize(lines, Line([0; 64]));
        self.ty = ty;
        self.weight_ty = weight_ty;
        self.n_rows = n_rows;
        self.cols = cols;
        self.row_bytes = row_bytes;
        self.stride = stride;
        Ok(dispatch::act_quant_fn(choice, ty))
    }

    /// Fills [`BlockConsts`] for Q8_0 and Q8_1 rows (clears it for other formats).
    pub(crate) fn compute_block_consts(&mut self) {
        let c = &mut self.consts;
        c.d.clear();
        c.offset.clear();
        c.s.clear();
        if !matches!(self.ty, ActType::Q8_0 | ActType::Q8_1) || self.stride == 0 {
            return;
        }
        let bytes: &[u8] = bytemuck::cast_slice(&self.data[..]);
        let bb = self.ty.block_bytes();
        let f16_at = |b: &[u8], i: usize| f16_to_f32(half::f16::from_le_bytes([b[i], b[i + 1]]));
        for row in bytes.chunks_exact(self.stride).take(self.n_rows) {
            for b in row[..self.row_bytes].chunks_exact(bb) {
                c.d.push(f16_at(b, 0));
                if self.ty == ActType::Q8_0 {
                    // Bytes 2.. of a Q8_0 block are its 32 signed quants.
                    let sum: i32 = b[2..].iter().map(|&q| q as i8 as i32).sum();
                    c.offset.push(-128 * sum);
                } else {
                    // A Q8_1 block: f16 d, f16 s, 32 quants.
                    c.s.push(f16_at(b, 2));
                }
            }
        }
    }

    /// Number of activation rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The activation format the rows are stored in.
    pub fn act_type(&self) -> ActType {
        self.ty
    }

    /// The weight type the rows were prepared for.
    pub fn weight_type(&self) -> QuantType {
        self.weight_ty
    }

    /// Bytes of row `t` in the activation format (empty when `t >= n_rows`).
    pub fn row(&self, t: usize) -> &[u8] {
        if t >= self.n_rows {
            return &[];
        }
        let bytes: &[u8] = bytemuck::cast_slice(&self.data[..]);
        let start = t * self.stride;
        bytes.get(start..start + self.row_bytes).unwrap_or(&[])
    }

    /// Byte distance between consecutive rows (a multiple of 64).
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// Each block's scale as f32, `cols / 32` per row (Q8_0 and Q8_1 rows; empty otherwise).
    pub(crate) fn block_d(&self) -> &[f32] {
        &self.consts.d
    }

    /// Each Q8_0 block's `−128 · Σ q` (see [`BlockConsts`]); empty for other formats.
    pub(crate) fn block_offsets(&self) -> &[i32] {
        &self.consts.offset
    }

    /// Each Q8_1 block's `s` as f32; empty for other formats.
    pub(crate) fn block_s(&self) -> &[f32] {
        &self.consts.s
    }

    /// All rows, `stride()` bytes apart.
    pub(crate) fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data[..])
    }

    /// All rows, mutable (for producers that write blocks in place after `layout`).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.data[..])
    }
}

/// Decodes one activation row (`src` in format `ty`) back to f32; `dst.len()` is the element
/// count. For tests and diagnostics.
pub fn dequantize_act_row(ty: ActType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use crate::common::blocks;
    let weight_ty = match ty {
        ActType::F32 => QuantType::F32,
        ActType::F16 => QuantType::F16,
        ActType::BF16 => QuantType::BF16,
        ActType::Q8_0 => QuantType::Q8_0,
        ActType::Q8_1 => QuantType::Q4_1,
        ActType::Q8_K => QuantType::Q4_K,
    };
    if !dst.len().is_multiple_of(ty.block_size()) {
        return Err(QuantError::NotBlockMultiple {
            ty: weight_ty,
            n: dst.len(),
            block: ty.block_size(),
        });
    }
    let expected = ty.row_bytes(dst.len());
    if src.len() != expected {
        return Err(QuantError::Length {
            ty: weight_ty,
            what: "activation row",
            expected,
            got: src.len(),
        });
    }
    match ty {
        ActType::F32 => crate::float::dequantize_row_f32(&blocks(src), dst),
        ActType::F16 => crate::float::dequantize_row_f16(&blocks(src), dst),
        ActType::BF16 => crate::float::dequantize_row_bf16(&blocks(src), dst),
        ActType::Q8_0 => q8_0::dequantize_row_q8_0(&blocks(src), dst),
        ActType::Q8_1 => q8_1::dequantize_row_q8_1(&blocks(src), dst),
        ActType::Q8_K => q8_k::dequantize_row_q8_K(&blocks(src), dst),
    }
    Ok(())
}
