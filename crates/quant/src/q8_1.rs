//! Q8_1: the activation format Q4_1 weights dot against: 32 signed 8-bit values, f16 scale `d`
//! and f16 `s = d·Σq` (so the weight's offset term needs no pass over the quants).

use crate::common::{f32_to_f16, round_i8};
use half::f16;

/// Elements per Q8_1 block.
pub const QK8_1: usize = 32;

/// ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d · Σ qs` (with the unrounded f32 `d`, as ggml computes it).
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK8_1],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 4 + QK8_1);

/// Quantizes one block as ggml's `quantize_row_q8_1_ref`.
#[inline]
pub fn quantize_block_q8_1(x: &[f32; QK8_1]) -> BlockQ8_1 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_1];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_i8(v * id);
        sum += *q as i32;
    }
    BlockQ8_1 {
        d: f32_to_f16(d),
        s: f32_to_f16(sum as f32 * d),
        qs,
    }
}

/// Reference quantizer; `src.len()` is `dst.len() * QK8_1`.
pub fn quantize_row_q8_1_ref(src: &[f32], dst: &mut [BlockQ8_1]) {
    for (x, y) in src.chunks_exact(QK8_1).zip(dst.iter_mut()) {
        if let Ok(x) = <&[f32; QK8_1]>::try_from(x) {
            *y = quantize_block_q8_1(x);
        }
    }
}

/// `dst = d·q`, block by block.
pub fn dequantize_row_q8_1(src: &[BlockQ8_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}
