//! Q4_K: 256-element super-blocks of eight 32-element sub-blocks, 4-bit quants, each sub-block
//! with a 6-bit scale and 6-bit min packed into 12 bytes; `x = d·sc·q − dmin·m`.
//! Dots against Q8_K activations.

#![allow(non_snake_case)]

use crate::common::{f16_to_f32, f32_to_f16, nearest_int};
use crate::q8_k::{BlockQ8_K, QK_K};
use half::f16;

/// Bytes of packed 6-bit scales and mins.
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `block_q4_K`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins (see [`scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// Quants: byte `32·g + l` holds element `64·g + l` (low nibble) and `64·g + 32 + l` (high).
    pub qs: [u8; QK_K / 2],
}

impl Default for BlockQ4_K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 4 + K_SCALE_SIZE + QK_K / 2);

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes (ggml's `get_scale_min_k4`):
/// sub-blocks 0..4 keep 6 bits in bytes `j` and `j+4`; 4..8 keep their low 4 bits in byte `j+4`
/// and their top 2 bits in the top bits of bytes `j−4` (scale) and `j` (min).
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs.
#[inline]
pub fn scales_mins_k4(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

/// ggml's `make_qkx2_quants` for one 32-element sub-block: a weighted least-squares search over
/// candidate scales for an asymmetric `nmax`-level grid. Returns (scale, −min) and fills `l`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len().min(weights.len()).min(l.len());
    if n == 0 {
        return (0.0, 0.0);
    }
    let (x, weights, l) = (&x[..n], &weights[..n], &mut l[..n]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n.min(32)];
    if laux.len() < n {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes one super-block as ggml's `quantize_row_q4_K_ref`.
pub fn quantize_block_q4_K(x: &[f32; QK_K]) -> BlockQ4_K {
    quantize_block_q4_K_weighted(x, None)
}

/// [`quantize_block_q4_K`] whose sub-block scale search also weighs each element by a
/// per-element importance (`importance[i]` multiplies ggml's `av_x + |x|` weight); `None` is
/// exactly the reference quantizer.
pub fn quantize_block_q4_K_weighted(x: &[f32; QK_K], importance: Option<&[f32]>) -> BlockQ4_K {
    let mut y = BlockQ4_K::default();
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (i, (w, v)) in weights.iter_mut().zip(xs).enumerate() {
            let imp = importance.and_then(|m| m.get(32 * j + i)).copied();
            *w = (av_x + v.abs()) * imp.unwrap_or(1.0);
        }
        let (s, m) = make_qkx2_quants(xs, &weights, &mut l[32 * j..32 * j + 32], 15, -1.0, 0.1, 20);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            y.scales[j] = ls;
            y.scales[j + 4] = lm;
        } else {
            y.scales[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            y.scales[j - 4] |= (ls >> 4) << 6;
            y.scales[j] |= (lm >> 4) << 6;
        }
    }
    y.d = f32_to_f16(max_scale / 63.0);
    y.dmin = f32_to_f16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &y.scales);
        let d = f16_to_f32(y.d) * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = f16_to_f32(y.dmin) * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
        }
    }
    for g in 0..4 {
        for i in 0..32 {
            y.qs[32 * g + i] = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
        }
    }
    y
}

/// Reference quantizer; `src.len()` is `dst.len() * QK_K`.
pub fn quantize_row_q4_K_ref(src: &[f32], dst: &mut [BlockQ4_K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        if let Ok(x) = <&[f32; QK_K]>::try_from(x) {
            *y = quantize_block_q4_K(x);
        }
    }
}

/// `dst = d·sc·q − dmin·m`, block by block.
pub fn dequantize_row_q4_K(src: &[BlockQ4_K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        for g in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * g, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, &b.scales);
            let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
            for i in 0..32 {
                let q = b.qs[32 * g + i];
                y[64 * g + i] = d1 * (q & 0x0f) as f32 - mm1;
                y[64 * g + 32 + i] = d2 * (q >> 4) as f32 - mm2;
            }
        }
    }
}

/// Reference dot of Q4_K weights with Q8_K activations: exact integer sums per sub-block,
/// then `d·dy·Σ sc·Σqa − dmin·dy·Σ m·bsum` per super-block in f32.
pub fn vec_dot_q4_K_q8_K(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (sc, m) = scales_mins_k4(&bx.scales);
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for j in 0..8 {
            let (g, shift) = (j / 2, 4 * (j % 2));
            let mut isum = 0i32;
            for i in 0..32 {
                let q = ((bx.qs[32 * g + i] >> shift) & 0x0f) as i32;
                isum += q * by.qs[32 * j + i] as i32;
            }
            sumi += sc[j] as i32 * isum;
            summ += m[j] as i32 * (by.bsums[2 * j] as i32 + by.bsums[2 * j + 1] as i32);
        }
        let d = f16_to_f32(bx.d) * by.d;
        let dmin = f16_to_f32(bx.dmin) * by.d;
        sumf += d * sumi as f32 - dmin * summ as f32;
    }
    sumf
}
