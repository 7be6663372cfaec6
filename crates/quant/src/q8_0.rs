//! Q8_0: blocks of 32 signed 8-bit values with one f16 scale (`x = d·q`). Used both as a weight
//! type and as the activation format that Q4_0 and Q8_0 weights dot against.

use crate::common::{f16_to_f32, f32_to_f16, round_i8};
use half::f16;

/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;

/// ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK8_0],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 2 + QK8_0);

/// Quantizes one block exactly as ggml's `quantize_row_q8_0_ref`: `d = amax/127`,
/// `q = roundf(x/d)` (half away from zero).
#[inline]
pub fn quantize_block_q8_0(x: &[f32; QK8_0]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_i8(v * id);
    }
    BlockQ8_0 {
        d: f32_to_f16(d),
        qs,
    }
}

/// Reference quantizer; `src.len()` is `dst.len() * QK8_0` (extra elements are ignored).
pub fn quantize_row_q8_0_ref(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, y) in src.chunks_exact(QK8_0).zip(dst.iter_mut()) {
        if let Ok(x) = <&[f32; QK8_0]>::try_from(x) {
            *y = quantize_block_q8_0(x);
        }
    }
}

/// `dst[i] = d·q[i]`, block by block.
pub fn dequantize_row_q8_0(src: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Reference dot of Q8_0 weights with Q8_0 activations: per block the integer sum times
/// `dx·dy`, accumulated in f32 in block order.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf += sumi as f32 * (f16_to_f32(bx.d) * f16_to_f32(by.d));
    }
    sumf
}
