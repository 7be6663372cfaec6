//! AVX2 and AVX-512 activation quantizers (Q8_0, Q8_1, Q8_K, f16). They produce exactly the
//! bytes of the scalar reference: same scale arithmetic, `roundf` (half away from zero) for
//! Q8_0/Q8_1 via truncation of `v + copysign(0.5 − 2⁻²⁵, v)`, round-half-even for Q8_K.
//!
//! # Safety
//! The `_avx2` functions require AVX2, FMA and F16C; the `_avx512` ones also AVX-512 F/BW/VL.
//! They write only the whole blocks `dst` holds and read only the values `src` holds.

use crate::common::f32_to_f16;
use crate::q8_0::{BlockQ8_0, QK8_0};
use crate::q8_1::{BlockQ8_1, QK8_1};
use crate::q8_k::{BlockQ8_K, QK_K};
use std::arch::x86_64::*;
use std::mem::size_of;

/// The largest f32 below ½: adding it (with the value's sign) and truncating rounds half away
/// from zero exactly, like C's `roundf`.
const HALF_DOWN: f32 = 0.499_999_97;

/// Scale and inverse scale of a Q8_0/Q8_1 block, as the reference computes them.
#[inline(always)]
fn q8_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

#[inline(always)]
unsafe fn round_away_256(v: __m256) -> __m256i {
    let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
    _mm256_cvttps_epi32(_mm256_add_ps(
        v,
        _mm256_or_ps(sign, _mm256_set1_ps(HALF_DOWN)),
    ))
}

#[inline(always)]
unsafe fn hmax_256(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// Packs 4×8 i32 (each within i8 range) into 32 bytes in order.
#[inline(always)]
unsafe fn pack_32(q: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(q[0], q[1]);
    let b = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// One Q8_0/Q8_1 block with AVX2: returns (d, Σq) and writes 32 quants to `qs`.
#[inline(always)]
unsafe fn q8_block_avx2(x: *const f32, qs: *mut u8) -> (f32, i32) {
    let abs = _mm256_set1_ps(-0.0);
    let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.add(o)));
    let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
        _mm256_max_ps(m, _mm256_andnot_ps(abs, x))
    });
    let (d, id) = q8_scale(hmax_256(m));
    let idv = _mm256_set1_ps(id);
    let q = v.map(|x| round_away_256(_mm256_mul_ps(x, idv)));
    _mm256_storeu_si256(qs as *mut __m256i, pack_32(q));
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    (d, super::avx2::hsum_epi32(s))
}

/// Q8_0 activations (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0_avx2(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_0>();
    let nb = (src.len() / QK8_0).min(dst.len() / B);
    for i in 0..nb {
        let y = dst.as_mut_ptr().add(i * B);
        let (d, _) = q8_block_avx2(src.as_ptr().add(i * QK8_0), y.add(2));
        y.cast::<u16>().write_unaligned(f32_to_f16(d).to_bits());
    }
}

/// Q8_1 activations (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1_avx2(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_1>();
    let nb = (src.len() / QK8_1).min(dst.len() / B);
    for i in 0..nb {
        let y = dst.as_mut_ptr().add(i * B);
        let (d, sum) = q8_block_avx2(src.as_ptr().add(i * QK8_1), y.add(4));
        y.cast::<u16>().write_unaligned(f32_to_f16(d).to_bits());
        y.add(2)
            .cast::<u16>()
            .write_unaligned(f32_to_f16(sum as f32 * d).to_bits());
    }
}

/// Index of the first element of largest magnitude, given that magnitude.
#[inline(always)]
fn first_with_abs(x: &[f32], amax: f32) -> usize {
    x.iter().position(|v| v.abs() == amax).unwrap_or(0)
}

/// Q8_K activations (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k_avx2(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_K>();
    let nb = (src.len() / QK_K).min(dst.len() / B);
    let abs = _mm256_set1_ps(-0.0);
    for i in 0..nb {
        let xs = &src[i * QK_K..(i + 1) * QK_K];
        let x = xs.as_ptr();
        let y = dst.as_mut_ptr().add(i * B);
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(m, _mm256_andnot_ps(abs, _mm256_loadu_ps(x.add(8 * k))));
        }
        let amax = hmax_256(m);
        if amax == 0.0 {
            std::ptr::write_bytes(y, 0, B);
            continue;
        }
        let iscale = -127.0 / xs[first_with_abs(xs, amax)];
        let iv = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        for g in 0..QK_K / 32 {
            let q = [0, 8, 16, 24].map(|o| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(x.add(32 * g + o)), iv);
                _mm256_min_epi32(_mm256_cvtps_epi32(v), cap)
            });
            _mm256_storeu_si256(y.add(4 + 32 * g) as *mut __m256i, pack_32(q));
            let s0 = super::avx2::hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            let s1 = super::avx2::hsum_epi32(_mm256_add_epi32(q[2], q[3]));
            let bs = y.add(4 + QK_K + 4 * g).cast::<i16>();
            bs.write_unaligned(s0 as i16);
            bs.add(1).write_unaligned(s1 as i16);
        }
        y.cast::<f32>().write_unaligned(1.0 / iscale);
    }
}

/// f16 activations (AVX2, F16C round-to-nearest-even).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_f16_avx2(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let (x, y) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph(_mm256_loadu_ps(x.add(i)), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(y.add(2 * i) as *mut __m128i, h);
        i += 8;
    }
    for (j, &v) in src.iter().enumerate().take(n).skip(i) {
        y.add(2 * j)
            .cast::<u16>()
            .write_unaligned(f32_to_f16(v).to_bits());
    }
}

#[inline(always)]
unsafe fn round_away_512(v: __m512) -> __m512i {
    let bits = _mm512_castps_si512(v);
    let sign = _mm512_and_si512(bits, _mm512_set1_epi32(i32::MIN));
    let half = _mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(HALF_DOWN)));
    _mm512_cvttps_epi32(_mm512_add_ps(v, _mm512_castsi512_ps(half)))
}

#[inline(always)]
unsafe fn abs_512(v: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(v),
        _mm512_set1_epi32(i32::MAX),
    ))
}

/// One Q8_0/Q8_1 block with AVX-512: returns (d, Σq) and writes 32 quants to `qs`.
#[inline(always)]
unsafe fn q8_block_avx512(x: *const f32, qs: *mut u8) -> (f32, i32) {
    let v0 = _mm512_loadu_ps(x);
    let v1 = _mm512_loadu_ps(x.add(16));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_512(v0), abs_512(v1)));
    let (d, id) = q8_scale(amax);
    let idv = _mm512_set1_ps(id);
    let q0 = round_away_512(_mm512_mul_ps(v0, idv));
    let q1 = round_away_512(_mm512_mul_ps(v1, idv));
    _mm_storeu_si128(qs as *mut __m128i, _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(qs.add(16) as *mut __m128i, _mm512_cvtsepi32_epi8(q1));
    (d, _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)))
}

/// Q8_0 activations (AVX-512).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0_avx512(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_0>();
    let nb = (src.len() / QK8_0).min(dst.len() / B);
    for i in 0..nb {
        let y = dst.as_mut_ptr().add(i * B);
        let (d, _) = q8_block_avx512(src.as_ptr().add(i * QK8_0), y.add(2));
        y.cast::<u16>().write_unaligned(f32_to_f16(d).to_bits());
    }
}

/// Q8_1 activations (AVX-512).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1_avx512(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_1>();
    let nb = (src.len() / QK8_1).min(dst.len() / B);
    for i in 0..nb {
        let y = dst.as_mut_ptr().add(i * B);
        let (d, sum) = q8_block_avx512(src.as_ptr().add(i * QK8_1), y.add(4));
        y.cast::<u16>().write_unaligned(f32_to_f16(d).to_bits());
        y.add(2)
            .cast::<u16>()
            .write_unaligned(f32_to_f16(sum as f32 * d).to_bits());
    }
}

/// Q8_K activations (AVX-512): one 16-lane vector per `bsums` group.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k_avx512(src: &[f32], dst: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_K>();
    let nb = (src.len() / QK_K).min(dst.len() / B);
    for i in 0..nb {
        let xs = &src[i * QK_K..(i + 1) * QK_K];
        let x = xs.as_ptr();
        let y = dst.as_mut_ptr().add(i * B);
        let mut m = _mm512_setzero_ps();
        for k in 0..QK_K / 16 {
            m = _mm512_max_ps(m, abs_512(_mm512_loadu_ps(x.add(16 * k))));
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            std::ptr::write_bytes(y, 0, B);
            continue;
        }
        let iscale = -127.0 / xs[first_with_abs(xs, amax)];
        let iv = _mm512_set1_ps(iscale);
        let cap = _mm512_set1_epi32(127);
        for g in 0..QK_K / 16 {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.add(16 * g)), iv);
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(v), cap);
            _mm_storeu_si128(y.add(4 + 16 * g) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
            let s = _mm512_reduce_add_epi32(q) as i16;
            y.add(4 + QK_K + 2 * g).cast::<i16>().write_unaligned(s);
        }
        y.cast::<f32>().write_unaligned(1.0 / iscale);
    }
}

/// f16 activations (AVX-512, round-to-nearest-even).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_f16_avx512(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let (x, y) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i < n {
        let left = n - i;
        let mask = if left >= 16 {
            u16::MAX
        } else {
            ((1u32 << left) - 1) as u16
        };
        let v = _mm512_maskz_loadu_ps(mask, x.add(i));
        let h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(y.add(2 * i) as *mut i16, mask, h);
        i += 16;
    }
}
