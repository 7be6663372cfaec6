//! Q6_K: 256-element super-blocks of sixteen 16-element sub-blocks, 6-bit quants (low 4 bits in
//! `ql`, high 2 bits in `qh`), a signed 8-bit scale per sub-block and an f16 super-scale;
//! `x = d·sc·(q − 32)`. Dots against Q8_K activations.

#![allow(non_snake_case)]

use crate::common::{f16_to_f32, f32_to_f16, nearest_int};
use crate::q8_k::{BlockQ8_K, QK_K};
use half::f16;

/// ggml's `block_q6_K`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6_K {
    /// Low 4 bits: for half `h` and quarter `k`, element `128h + 32k + l` sits in byte
    /// `64h + 32(k mod 2) + l`, low nibble for k < 2, high nibble otherwise.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: element `128h + 32k + l` in bits `2k..2k+2` of byte `32h + l`.
    pub qh: [u8; QK_K / 4],
    /// Scale of each 16-element sub-block.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

impl Default for BlockQ6_K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2);

/// The 256 quants of a block, unpacked to `q − 32` (−32..=31).
#[inline]
pub fn unpack_q6_K(b: &BlockQ6_K) -> [i8; QK_K] {
    let mut out = [0i8; QK_K];
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let lo = b.ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2)) & 0x0f;
                let hi = (b.qh[32 * h + l] >> (2 * k)) & 3;
                out[128 * h + 32 * k + l] = (lo | (hi << 4)) as i8 - 32;
            }
        }
    }
    out
}

/// ggml's `make_qx_quants` with `rmse_type = 1`: a symmetric `nmax`-level grid, trying 18
/// scales around `−nmax/max` with least squares weighted by `weights` (one per element;
/// `None` = x², the reference's choice). Fills `l` with `q + nmax` and returns the scale.
pub(crate) fn fit_symmetric(x: &[f32], weights: Option<&[f32]>, l: &mut [u8], nmax: i32) -> f32 {
    let n = x.len().min(l.len());
    let (x, l) = (&x[..n], &mut l[..n]);
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    let weight = |j: usize, v: f32| weights.map_or(v * v, |w| w[j]);
    for (j, (li, &v)) in l.iter_mut().zip(x).enumerate() {
        let q = quant(iscale, v);
        *li = (q + nmax) as u8;
        let w = weight(j, v);
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (j, &v) in x.iter().enumerate() {
            let q = quant(iscale, v) as f32;
            let w = weight(j, v);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (quant(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes one super-block as ggml's `quantize_row_q6_K_ref`.
pub fn quantize_block_q6_K(x: &[f32; QK_K]) -> BlockQ6_K {
    quantize_block_q6_K_weighted(x, None, 1.0)
}

/// [`quantize_block_q6_K`] with the sub-block scales fitted to `importance` (least squares
/// weighted by it instead of x²) and the super-block scale multiplied by `d_factor` before the
/// sub-block scales are rounded to it. `(None, 1.0)` is the reference.
pub fn quantize_block_q6_K_weighted(
    x: &[f32; QK_K],
    importance: Option<&[f32; QK_K]>,
    d_factor: f32,
) -> BlockQ6_K {
    let mut y = BlockQ6_K::default();
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, s) in scales.iter_mut().enumerate() {
        let r = 16 * ib..16 * ib + 16;
        *s = fit_symmetric(
            &x[r.clone()],
            importance.map(|w| &w[r.clone()]),
            &mut l[r],
            32,
        );
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    if max_abs_scale < 1e-15 {
        return y;
    }
    let iscale = -128.0 / (max_scale * d_factor);
    y.d = f32_to_f16(1.0 / iscale);
    for (q, s) in y.scales.iter_mut().zip(&scales) {
        *q = nearest_int(iscale * s).clamp(-128, 127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = f16_to_f32(y.d) * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as u8;
        }
    }
    for h in 0..2 {
        let lh = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            y.ql[64 * h + i] = (lh[i] & 0x0f) | ((lh[i + 64] & 0x0f) << 4);
            y.ql[64 * h + 32 + i] = (lh[i + 32] & 0x0f) | ((lh[i + 96] & 0x0f) << 4);
            y.qh[32 * h + i] = (lh[i] >> 4)
                | ((lh[i + 32] >> 4) << 2)
                | ((lh[i + 64] >> 4) << 4)
                | ((lh[i + 96] >> 4) << 6);
        }
    }
    y
}

/// Reference quantizer; `src.len()` is `dst.len() * QK_K`.
pub fn quantize_row_q6_K_ref(src: &[f32], dst: &mut [BlockQ6_K]) {
    for (x, y) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        if let Ok(x) = <&[f32; QK_K]>::try_from(x) {
            *y = quantize_block_q6_K(x);
        }
    }
}

/// `dst = d·sc·(q − 32)`, block by block.
pub fn dequantize_row_q6_K(src: &[BlockQ6_K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let q = unpack_q6_K(b);
        for (e, o) in y.iter_mut().enumerate() {
            *o = d * b.scales[e / 16] as f32 * q[e] as f32;
        }
    }
}

/// Reference dot of Q6_K weights with Q8_K activations: exact integer sums per 16-element
/// sub-block weighted by the sub-block scales, then `d·dy·Σ` per super-block in f32.
pub fn vec_dot_q6_K_q8_K(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack_q6_K(bx);
        let mut sumi = 0i32;
        for s in 0..QK_K / 16 {
            let isum: i32 = (16 * s..16 * s + 16)
                .map(|e| q[e] as i32 * by.qs[e] as i32)
                .sum();
            sumi += bx.scales[s] as i32 * isum;
        }
        sumf += f16_to_f32(bx.d) * by.d * sumi as f32;
    }
    sumf
}
