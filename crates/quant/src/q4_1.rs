//! Q4_1: blocks of 32 4-bit values with f16 scale and f16 minimum (`x = d·q + m`); nibble order
//! as Q4_0. Dots against Q8_1 activations, whose `s` field carries the offset term.

use crate::common::{f16_to_f32, f32_to_f16};
use crate::q8_1::BlockQ8_1;
use half::f16;

/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;

/// ggml's `block_q4_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles: low = elements 0..16, high = elements 16..32.
    pub qs: [u8; QK4_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 4 + QK4_1 / 2);

/// ggml's reference quantizer: `d = (max − min)/15`, `m = min`, `q = min(15, trunc((x−min)/d + ½))`.
pub fn quantize_row_q4_1_ref(src: &[f32], dst: &mut [BlockQ4_1]) {
    for (x, y) in src.chunks_exact(QK4_1).zip(dst.iter_mut()) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f32_to_f16(d);
        y.m = f32_to_f16(min);
        for j in 0..QK4_1 / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + QK4_1 / 2] - min) * id + 0.5) as i8).min(15) as u8;
            y.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// `dst = d·q + m`, block by block.
pub fn dequantize_row_q4_1(src: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK4_1)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + QK4_1 / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Reference dot of Q4_1 weights with Q8_1 activations:
/// per block `dx·dy·Σ q·a + mx·sy`, accumulated in f32 in block order.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            sumi += (q & 0x0f) as i32 * by.qs[j] as i32;
            sumi += (q >> 4) as i32 * by.qs[j + QK4_1 / 2] as i32;
        }
        sumf += (f16_to_f32(bx.d) * f16_to_f32(by.d)) * sumi as f32
            + f16_to_f32(bx.m) * f16_to_f32(by.s);
    }
    sumf
}
