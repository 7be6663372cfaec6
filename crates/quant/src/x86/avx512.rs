//! AVX-512 (F/BW/VL) dot kernels for the 32-element block formats and the float types, each
//! quantized kernel in a plain and a VNNI (`vpdpbusd`) build. Two blocks share one 512-bit
//! vector; their scales are converted together and spread over the matching lanes.
//!
//! # Safety
//! Every function here requires AVX-512 F/BW/VL plus AVX2, FMA and F16C (the `_vnni` builds
//! also AVX-512 VNNI); they read only the whole blocks both input slices hold.

use super::whole_blocks;
use crate::q4_0::{BlockQ4_0, QK4_0};
use crate::q4_1::{BlockQ4_1, QK4_1};
use crate::q8_0::{BlockQ8_0, QK8_0};
use crate::q8_1::BlockQ8_1;
use std::arch::x86_64::*;
use std::mem::size_of;

const Q40: usize = size_of::<BlockQ4_0>();
const Q41: usize = size_of::<BlockQ4_1>();
const Q80: usize = size_of::<BlockQ8_0>();
const Q81: usize = size_of::<BlockQ8_1>();

/// Σ u·s over groups of 4 byte pairs (u unsigned, s signed) as 16 i32 lanes.
#[inline(always)]
pub(super) unsafe fn dot_us8<const VNNI: bool>(u: __m512i, s: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s)
    } else {
        _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1))
    }
}

/// Two 16-byte nibble arrays → 64 nibbles: block 0 (low, high), block 1 (low, high).
#[inline(always)]
pub(super) unsafe fn nibbles_64(p0: *const u8, p1: *const u8) -> __m512i {
    let a = _mm_loadu_si128(p0 as *const __m128i);
    let b = _mm_loadu_si128(p1 as *const __m128i);
    let ab = _mm256_set_m128i(b, a);
    let v = _mm512_inserti64x4(_mm512_castsi256_si512(ab), _mm256_srli_epi16(ab, 4), 1);
    // Lanes [a, b, a>>4, b>>4] → [a, a>>4, b, b>>4].
    let v = _mm512_shuffle_i64x2(v, v, 0b11_01_10_00);
    _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
}

/// 32 bytes at `p0` then 32 bytes at `p1`.
#[inline(always)]
pub(super) unsafe fn load_2x32(p0: *const u8, p1: *const u8) -> __m512i {
    let a = _mm256_loadu_si256(p0 as *const __m256i);
    let b = _mm256_loadu_si256(p1 as *const __m256i);
    _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)
}

/// The f16 values at `p0` and `p1` widened into lanes 0 and 1 (lanes 2, 3 zero).
#[inline(always)]
pub(super) unsafe fn f16_pair(p0: *const u8, p1: *const u8) -> __m128 {
    let a = p0.cast::<u16>().read_unaligned() as u32;
    let b = p1.cast::<u16>().read_unaligned() as u32;
    _mm_cvtph_ps(_mm_cvtsi32_si128((a | (b << 16)) as i32))
}

/// Spreads lane `a` of `d` over lanes 0..8 and lane `b` over lanes 8..16.
#[inline(always)]
pub(super) unsafe fn spread_pair<const A: i32, const B: i32>(d: __m128) -> __m512 {
    let idx = _mm512_set_epi32(B, B, B, B, B, B, B, B, A, A, A, A, A, A, A, A);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d))
}

/// The 4 bytes at `p0` and the 4 at `p1` as two f16 pairs widened to `[p0.0, p0.1, p1.0, p1.1]`.
#[inline(always)]
pub(super) unsafe fn f16x2_pair(p0: *const u8, p1: *const u8) -> __m128 {
    let a = _mm_cvtsi32_si128(p0.cast::<i32>().read_unaligned());
    let b = _mm_cvtsi32_si128(p1.cast::<i32>().read_unaligned());
    _mm_cvtph_ps(_mm_unpacklo_epi32(a, b))
}

/// Runs `$step` (an expression of `$i`, the first block of a pair, and `$acc`) over every pair
/// of blocks below `$nb` with two interleaved accumulators; evaluates to (their sum, the first
/// block not processed). A macro rather than a closure so the body keeps the caller's target
/// features.
macro_rules! pairs_unrolled {
    ($nb:expr, |$i:ident, $acc:ident| $step:expr) => {{
        let nb = $nb;
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut base = 0usize;
        while base + 4 <= nb {
            acc0 = {
                let ($i, $acc) = (base, acc0);
                $step
            };
            acc1 = {
                let ($i, $acc) = (base + 2, acc1);
                $step
            };
            base += 4;
        }
        if base + 2 <= nb {
            acc0 = {
                let ($i, $acc) = (base, acc0);
                $step
            };
            base += 2;
        }
        (_mm512_add_ps(acc0, acc1), base)
    }};
}

#[inline(always)]
unsafe fn q4_0_body<const VNNI: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK4_0, w, Q40, a, Q80);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let eights = _mm512_set1_epi8(8);
    let (acc, i) = pairs_unrolled!(nb, |i, acc| {
        let (x0, x1) = (x.add(i * Q40), x.add((i + 1) * Q40));
        let (y0, y1) = (y.add(i * Q80), y.add((i + 1) * Q80));
        let d = _mm_mul_ps(f16_pair(x0, x1), f16_pair(y0, y1));
        let qx = nibbles_64(x0.add(2), x1.add(2));
        let qy = load_2x32(y0.add(2), y1.add(2));
        // Σ (q − 8)·a = Σ q·a − 8·Σ a.
        let p = _mm512_sub_epi32(dot_us8::<VNNI>(qx, qy), dot_us8::<VNNI>(eights, qy));
        _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc)
    });
    let mut sum = _mm512_reduce_add_ps(acc);
    if i < nb {
        sum += super::avx2::dot_q4_0(QK4_0, &w[i * Q40..], &a[i * Q80..]);
    }
    sum
}

#[inline(always)]
unsafe fn q4_1_body<const VNNI: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK4_1, w, Q41, a, Q81);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let (acc, i) = pairs_unrolled!(nb, |i, acc| {
        let (x0, x1) = (x.add(i * Q41), x.add((i + 1) * Q41));
        let (y0, y1) = (y.add(i * Q81), y.add((i + 1) * Q81));
        // [dx0·dy0, mx0·sy0, dx1·dy1, mx1·sy1]: (d, m) and (d, s) sit side by side.
        let ds = _mm_mul_ps(f16x2_pair(x0, x1), f16x2_pair(y0, y1));
        // The offset terms ride along in lanes 1 and 3, so one reduction serves both.
        let ms = _mm512_zextps128_ps512(_mm_blend_ps(_mm_setzero_ps(), ds, 0b1010));
        let qx = nibbles_64(x0.add(4), x1.add(4));
        let qy = load_2x32(y0.add(4), y1.add(4));
        let p = _mm512_cvtepi32_ps(dot_us8::<VNNI>(qx, qy));
        _mm512_add_ps(acc, _mm512_fmadd_ps(spread_pair::<0, 2>(ds), p, ms))
    });
    let mut sum = _mm512_reduce_add_ps(acc);
    if i < nb {
        sum += super::avx2::dot_q4_1(QK4_1, &w[i * Q41..], &a[i * Q81..]);
    }
    sum
}

#[inline(always)]
unsafe fn q8_0_body<const VNNI: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK8_0, w, Q80, a, Q80);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let zero = _mm512_setzero_si512();
    let (acc, i) = pairs_unrolled!(nb, |i, acc| {
        let (x0, x1) = (x.add(i * Q80), x.add((i + 1) * Q80));
        let (y0, y1) = (y.add(i * Q80), y.add((i + 1) * Q80));
        let d = _mm_mul_ps(f16_pair(x0, x1), f16_pair(y0, y1));
        let qx = load_2x32(x0.add(2), x1.add(2));
        let qy = load_2x32(y0.add(2), y1.add(2));
        // Move the weights' signs onto the activations so the weights can be unsigned.
        let neg = _mm512_movepi8_mask(qx);
        let sy = _mm512_mask_sub_epi8(qy, neg, zero, qy);
        let p = dot_us8::<VNNI>(_mm512_abs_epi8(qx), sy);
        _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc)
    });
    let mut sum = _mm512_reduce_add_ps(acc);
    if i < nb {
        sum += super::avx2::dot_q8_0(QK8_0, &w[i * Q80..], &a[i * Q80..]);
    }
    sum
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
    dot_q4_0,
    dot_q4_0_vnni,
    q4_0_body,
    "Q4_0 weights · Q8_0 activations"
);
avx512_pair!(
    dot_q4_1,
    dot_q4_1_vnni,
    q4_1_body,
    "Q4_1 weights · Q8_1 activations"
);
avx512_pair!(
    dot_q8_0,
    dot_q8_0_vnni,
    q8_0_body,
    "Q8_0 weights · Q8_0 activations"
);

/// Shared loop of the float dots over `n` elements: `load(p, i, mask)` widens the 16 values
/// from element `i` of `p` selected by `mask` (the rest zero, not read).
#[inline(always)]
unsafe fn float_dot(
    n: usize,
    x: *const u8,
    y: *const u8,
    load: impl Fn(*const u8, usize, u16) -> __m512,
) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *a = _mm512_fmadd_ps(load(x, j, !0), load(y, j, !0), *a);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(load(x, i, !0), load(y, i, !0), acc[0]);
        i += 16;
    }
    if i < n {
        let mask = ((1u32 << (n - i)) - 1) as u16;
        acc[1] = _mm512_fmadd_ps(load(x, i, mask), load(y, i, mask), acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// f32 weights · f32 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 4).min(a.len() / 4);
    float_dot(n, w.as_ptr(), a.as_ptr(), |p, i, m| {
        _mm512_maskz_loadu_ps(m, (p as *const f32).add(i))
    })
}

/// f16 weights · f16 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    float_dot(n, w.as_ptr(), a.as_ptr(), |p, i, m| {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16))
    })
}

/// bf16 weights · bf16 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    float_dot(n, w.as_ptr(), a.as_ptr(), |p, i, m| {
        let h = _mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    })
}
