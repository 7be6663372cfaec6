//! AVX-512 (F/BW/VL, optionally VNNI) dot kernels for the K-quants against Q8_K activations.
//! Two sub-blocks share one 512-bit vector; per-sub-block scales are applied to the i16 pair
//! sums with `vpmaddwd` (or VNNI's accumulating `vpdpwssd`).
//!
//! # Safety
//! Every function here requires AVX-512 F/BW/VL plus AVX2, FMA and F16C (the `_vnni` builds
//! also AVX-512 VNNI); they read only the whole blocks both input slices hold.

use super::avx2_k::unpack_k4_scales;
use super::{load_f16, load_f32, whole_blocks};
use crate::q4_k::BlockQ4_K;
use crate::q6_k::BlockQ6_K;
use crate::q8_k::{BlockQ8_K, QK_K};
use std::arch::x86_64::*;
use std::mem::size_of;

const Q4K: usize = size_of::<BlockQ4_K>();
const Q6K: usize = size_of::<BlockQ6_K>();
const Q8K: usize = size_of::<BlockQ8_K>();
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 4 + QK_K;

/// `acc + Σ pairs of p·s` (i16 × i16 → i32).
#[inline(always)]
unsafe fn madd_acc<const VNNI: bool>(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpwssd_epi32(acc, p, s)
    } else {
        _mm512_add_epi32(acc, _mm512_madd_epi16(p, s))
    }
}

/// Index vector for `vpermw`: 32 lanes, `run` consecutive lanes per index, starting at `base`.
#[inline(always)]
unsafe fn spread_idx(base: i16, run: usize) -> __m512i {
    let mut idx = [0i16; 32];
    for (l, v) in idx.iter_mut().enumerate() {
        *v = base + (l / run) as i16;
    }
    _mm512_loadu_si512(idx.as_ptr() as *const _)
}

#[inline(always)]
unsafe fn q4_k_body<const VNNI: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK_K, w, Q4K, a, Q8K);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let mask = _mm256_set1_epi8(0x0f);
    let idx = [
        spread_idx(0, 16),
        spread_idx(2, 16),
        spread_idx(4, 16),
        spread_idx(6, 16),
    ];
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q4K), y.add(i * Q8K));
        let dy = load_f32(by);
        let d = load_f16(bx) * dy;
        let dmin = -load_f16(bx.add(2)) * dy;
        let u = unpack_k4_scales(bx.add(4));
        let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
        let bs = _mm256_loadu_si256(by.add(Q8K_BSUMS) as *const __m256i);
        let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        acc_m = _mm_fmadd_ps(
            _mm_set1_ps(dmin),
            _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs)),
            acc_m,
        );
        let scales = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[1] as i32, u[0] as i32));
        let scales = _mm512_castsi128_si512(scales);
        let mut sumi = _mm512_setzero_si512();
        for (g, ix) in idx.iter().enumerate() {
            let q4 = _mm256_loadu_si256(bx.add(16 + 32 * g) as *const __m256i);
            let lo = _mm256_and_si256(q4, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask);
            let qx = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let qy = _mm512_loadu_si512(by.add(Q8K_QS + 64 * g) as *const _);
            let p = _mm512_maddubs_epi16(qx, qy);
            sumi = madd_acc::<VNNI>(sumi, p, _mm512_permutexvar_epi16(*ix, scales));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(m)
}

#[inline(always)]
unsafe fn q6_k_body<const VNNI: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK_K, w, Q6K, a, Q8K);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm512_set1_epi8(0x0f);
    let m2 = _mm512_set1_epi8(0x30);
    // Half h, part p (quarters 2p, 2p+1) covers sub-blocks 8h + 4p .. 8h + 4p + 4.
    let idx = [
        [spread_idx(0, 8), spread_idx(4, 8)],
        [spread_idx(8, 8), spread_idx(12, 8)],
    ];
    let mut acc = _mm512_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (x.add(i * Q6K), y.add(i * Q8K));
        let d = load_f16(bx.add(208)) * load_f32(by);
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bx.add(192) as *const __m128i));
        let bs = _mm256_loadu_si256(by.add(Q8K_BSUMS) as *const __m256i);
        let bsum_sc = _mm256_madd_epi16(bs, sc16);
        let scales = _mm512_castsi256_si512(sc16);
        let mut sumi = _mm512_setzero_si512();
        for (h, ix) in idx.iter().enumerate() {
            let ql = _mm512_loadu_si512(bx.add(64 * h) as *const _);
            let qh = _mm256_loadu_si256(bx.add(128 + 32 * h) as *const __m256i);
            // [qh, qh >> 2]: bits for quarters (0, 1) at 0..2, quarters (2, 3) at 4..6.
            let qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            let q_lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_slli_epi16(qh2, 4), m2),
            );
            let q_hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                _mm512_and_si512(qh2, m2),
            );
            let qy = by.add(Q8K_QS + 128 * h);
            let y_lo = _mm512_loadu_si512(qy as *const _);
            let y_hi = _mm512_loadu_si512(qy.add(64) as *const _);
            let s_lo = _mm512_permutexvar_epi16(ix[0], scales);
            let s_hi = _mm512_permutexvar_epi16(ix[1], scales);
            sumi = madd_acc::<VNNI>(sumi, _mm512_maddubs_epi16(q_lo, y_lo), s_lo);
            sumi = madd_acc::<VNNI>(sumi, _mm512_maddubs_epi16(q_hi, y_hi), s_hi);
        }
        // Stored quants are q + 32: subtract 32·Σ sc·bsum.
        let corr = _mm512_zextsi256_si512(_mm256_slli_epi32(bsum_sc, 5));
        let total = _mm512_sub_epi32(sumi, corr);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(total), acc);
    }
    _mm512_reduce_add_ps(acc)
}

macro_rules! avx512_pair {
    ($plain:ident, $vnni:ident, $body:ident, $what:literal) => {
        #[doc = concat!($what, " (AVX-512 BW).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(crate) unsafe fn $plain(n: usize, w: &[u8], a: &[u8]) -> f32 {
            $body::<false>(n, w, a)
        }

        #[doc = concat!($what, " (AVX-512 VNNI).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $vnni(n: usize, w: &[u8], a: &[u8]) -> f32 {
            $body::<true>(n, w, a)
        }
    };
}

avx512_pair!(
    dot_q4_k,
    dot_q4_k_vnni,
    q4_k_body,
    "Q4_K weights · Q8_K activations"
);
avx512_pair!(
    dot_q6_k,
    dot_q6_k_vnni,
    q6_k_body,
    "Q6_K weights · Q8_K activations"
);
