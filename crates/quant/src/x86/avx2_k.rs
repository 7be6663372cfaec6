//! AVX2+FMA+F16C dot kernels for the K-quants (Q4_K, Q6_K) against Q8_K activations.
//!
//! # Safety
//! Every function here requires AVX2, FMA and F16C; they read only the whole blocks that both
//! input slices hold (`whole_blocks`).

use super::avx2::hsum_ps;
use super::{load_f16, load_f32, whole_blocks};
use crate::q4_k::BlockQ4_K;
use crate::q6_k::BlockQ6_K;
use crate::q8_k::{BlockQ8_K, QK_K};
use std::arch::x86_64::*;
use std::mem::size_of;

const Q4K: usize = size_of::<BlockQ4_K>();
const Q6K: usize = size_of::<BlockQ6_K>();
const Q8K: usize = size_of::<BlockQ8_K>();
/// Byte offsets inside a Q8_K block.
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 4 + QK_K;

/// The 12 packed scale bytes of a Q4_K block as four little-endian words: eight 6-bit scales in
/// bytes 0..8 and eight 6-bit mins in bytes 8..16 (same decoding as `scale_min_k4`).
#[inline(always)]
pub(super) unsafe fn unpack_k4_scales(p: *const u8) -> [u32; 4] {
    let w0 = p.cast::<u32>().read_unaligned();
    let w1 = p.add(4).cast::<u32>().read_unaligned();
    let w2 = p.add(8).cast::<u32>().read_unaligned();
    let sc_lo = w0 & 0x3f3f_3f3f;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let m_lo = w1 & 0x3f3f_3f3f;
    let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    [sc_lo, sc_hi, m_lo, m_hi]
}

/// Q4_K weights · Q8_K activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK_K, w, Q4K, a, Q8K);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let mask = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q4K), y.add(i * Q8K));
        let dy = load_f32(by);
        let d = load_f16(bx) * dy;
        let dmin = -load_f16(bx.add(2)) * dy;
        let u = unpack_k4_scales(bx.add(4));
        // Mins: Σ_j m[j]·(bsum[2j] + bsum[2j+1]).
        let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
        let bs = _mm256_loadu_si256(by.add(Q8K_BSUMS) as *const __m256i);
        let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        let prod = _mm_madd_epi16(mins, pairs);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        // Scales: one per 32-element sub-block.
        let sc = [u[0].to_le_bytes(), u[1].to_le_bytes()];
        let mut sumi = _mm256_setzero_si256();
        for g in 0..4 {
            let q4 = _mm256_loadu_si256(bx.add(16 + 32 * g) as *const __m256i);
            let lo = _mm256_and_si256(q4, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask);
            let qy = by.add(Q8K_QS + 64 * g);
            let ql = _mm256_loadu_si256(qy as *const __m256i);
            let qh = _mm256_loadu_si256(qy.add(32) as *const __m256i);
            let (s_lo, s_hi) = (sc[g / 2][2 * (g % 2)], sc[g / 2][2 * (g % 2) + 1]);
            let p_lo =
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ql), _mm256_set1_epi16(s_lo as i16));
            let p_hi =
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, qh), _mm256_set1_epi16(s_hi as i16));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum_ps(acc) + _mm_cvtss_f32(m)
}

/// 32 six-bit quants of quarter `k` from 32 `ql` bytes (nibble `k/2`) and 32 `qh` bytes.
#[inline(always)]
unsafe fn q6_quarter<const K: i32>(ql: __m256i, qh: __m256i) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    let lo = if K < 2 {
        _mm256_and_si256(ql, m4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
    };
    // Bits 2k..2k+2 of qh moved to bits 4..6.
    let hi = match K {
        0 => _mm256_slli_epi16(qh, 4),
        1 => _mm256_slli_epi16(qh, 2),
        2 => qh,
        _ => _mm256_srli_epi16(qh, 2),
    };
    _mm256_or_si256(lo, _mm256_and_si256(hi, m2))
}

/// Q6_K weights · Q8_K activations: `Σ sc·Σ q·a − 32·Σ sc·bsum` with q = stored 0..63 value.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK_K, w, Q6K, a, Q8K);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q6K), y.add(i * Q8K));
        let d = load_f16(bx.add(208)) * load_f32(by);
        let sc8 = _mm_loadu_si128(bx.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let bs = _mm256_loadu_si256(by.add(Q8K_BSUMS) as *const __m256i);
        let bsum_sc = _mm256_madd_epi16(bs, sc16);
        let sc: [i8; 16] = std::mem::transmute(sc8);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let qh = _mm256_loadu_si256(bx.add(128 + 32 * h) as *const __m256i);
            let ql0 = _mm256_loadu_si256(bx.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(bx.add(64 * h + 32) as *const __m256i);
            let qs = [
                q6_quarter::<0>(ql0, qh),
                q6_quarter::<1>(ql1, qh),
                q6_quarter::<2>(ql0, qh),
                q6_quarter::<3>(ql1, qh),
            ];
            for (k, q) in qs.into_iter().enumerate() {
                let qy = _mm256_loadu_si256(by.add(Q8K_QS + 128 * h + 32 * k) as *const __m256i);
                let s = 8 * h + 2 * k;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, qy), scale);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        let total = _mm256_sub_epi32(sumi, _mm256_slli_epi32(bsum_sc, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(total), acc);
    }
    hsum_ps(acc)
}
