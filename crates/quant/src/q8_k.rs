//! Q8_K: the activation format the K-quants dot against: 256 signed 8-bit values, an f32 scale
//! and the sums of each group of 16 quants (`bsums`), which fold the weights' offsets cheaply.

use crate::common::nearest_int;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// ggml's `block_q8_K`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_K {
    /// Scale (f32, may be negative: ggml maps the largest-magnitude value to −127).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of each consecutive group of 16 quants.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8_K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 4 + QK_K + QK_K / 16 * 2);

/// Quantizes one block as ggml's `quantize_row_q8_K_ref`: `iscale = −127/max` (max = the value
/// of largest magnitude), `q = min(127, nearest_int(iscale·x))`, `d = 1/iscale`.
#[inline]
#[allow(non_snake_case)]
pub fn quantize_block_q8_K(x: &[f32; QK_K]) -> BlockQ8_K {
    let mut y = BlockQ8_K::default();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return y;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
    y.d = 1.0 / iscale;
    y
}

/// Reference quantizer; `src.len()` is `dst.len() * QK_K`.
#[allow(non_snake_case)]
pub fn quantize_row_q8_K_ref(src: &[f32], dst: &mut [BlockQ8_K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        if let Ok(x) = <&[f32; QK_K]>::try_from(x) {
            *y = quantize_block_q8_K(x);
        }
    }
}

/// `dst = d·q`, block by block.
#[allow(non_snake_case)]
pub fn dequantize_row_q8_K(src: &[BlockQ8_K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * b.d;
        }
    }
}
