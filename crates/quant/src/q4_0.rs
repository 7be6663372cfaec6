//! Q4_0: blocks of 32 4-bit values with one f16 scale (`x = d·(q − 8)`); element `j` sits in the
//! low nibble of byte `j`, element `j + 16` in its high nibble. Dots against Q8_0 activations.

use crate::common::{f16_to_f32, f32_to_f16};
use crate::q8_0::BlockQ8_0;
use half::f16;

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;

/// ggml's `block_q4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: low = elements 0..16, high = elements 16..32.
    pub qs: [u8; QK4_0 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK4_0 / 2);

/// ggml's reference quantizer: `d = max/−8` where `max` is the value of largest magnitude,
/// `q = min(15, trunc(x/d + 8.5))`.
pub fn quantize_row_q4_0_ref(src: &[f32], dst: &mut [BlockQ4_0]) {
    for (x, y) in src.chunks_exact(QK4_0).zip(dst.iter_mut()) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f32_to_f16(d);
        for j in 0..QK4_0 / 2 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + QK4_0 / 2] * id + 8.5) as i8).min(15) as u8;
            y.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// `dst = d·(q − 8)`, block by block.
pub fn dequantize_row_q4_0(src: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK4_0)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + QK4_0 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Reference dot of Q4_0 weights with Q8_0 activations.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            sumi += ((q & 0x0f) as i32 - 8) * by.qs[j] as i32;
            sumi += ((q >> 4) as i32 - 8) * by.qs[j + QK4_0 / 2] as i32;
        }
        sumf += sumi as f32 * (f16_to_f32(bx.d) * f16_to_f32(by.d));
    }
    sumf
}
