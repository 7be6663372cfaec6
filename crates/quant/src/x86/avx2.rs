//! AVX2+FMA+F16C dot kernels for the 32-element block formats (Q4_0, Q4_1, Q8_0) and the float
//! types. One block per 256-bit vector; integer products via `maddubs` (u8×i8 → i16 pairs).
//!
//! # Safety
//! Every function here requires AVX2, FMA and F16C; they read only the whole blocks that both
//! input slices hold (`whole_blocks`).

use super::{load_f16, whole_blocks};
use crate::q4_0::{BlockQ4_0, QK4_0};
use crate::q4_1::{BlockQ4_1, QK4_1};
use crate::q8_0::{BlockQ8_0, QK8_0};
use crate::q8_1::BlockQ8_1;
use std::arch::x86_64::*;
use std::mem::size_of;

/// Horizontal sum of 8 f32 lanes.
#[inline(always)]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of 8 i32 lanes.
#[inline(always)]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// The two f16 values at `p` widened into lanes 0 and 1.
#[inline(always)]
pub(super) unsafe fn f16x2(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()))
}

/// 16 packed bytes → 32 nibbles in element order: low nibbles then high nibbles.
#[inline(always)]
pub(super) unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Σ u·s over 32 byte pairs (u unsigned, s signed) as 8 i32 partial sums.
#[inline(always)]
pub(super) unsafe fn dot_us8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Σ x·y over 32 signed byte pairs as 8 i32 partial sums (sign moved onto `y`).
#[inline(always)]
pub(super) unsafe fn dot_ss8(x: __m256i, y: __m256i) -> __m256i {
    dot_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// Runs `$step` (an expression of block index `$i` and accumulator `$acc`) for every block
/// below `$nb` over two interleaved accumulators, so consecutive blocks' FMAs do not wait on
/// each other; evaluates to their sum. A macro rather than a closure so the body keeps the
/// caller's target features.
macro_rules! unrolled2 {
    ($nb:expr, |$i:ident, $acc:ident| $step:expr) => {{
        let nb = $nb;
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut base = 0usize;
        while base + 2 <= nb {
            acc0 = {
                let ($i, $acc) = (base, acc0);
                $step
            };
            acc1 = {
                let ($i, $acc) = (base + 1, acc1);
                $step
            };
            base += 2;
        }
        if base < nb {
            acc0 = {
                let ($i, $acc) = (base, acc0);
                $step
            };
        }
        _mm256_add_ps(acc0, acc1)
    }};
}

const Q40: usize = size_of::<BlockQ4_0>();
const Q41: usize = size_of::<BlockQ4_1>();
const Q80: usize = size_of::<BlockQ8_0>();
const Q81: usize = size_of::<BlockQ8_1>();

/// Q4_0 weights · Q8_0 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK4_0, w, Q40, a, Q80);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let sum = unrolled2!(nb, |i, acc| {
        let (bx, by) = (x.add(i * Q40), y.add(i * Q80));
        let d = _mm256_set1_ps(load_f16(bx) * load_f16(by));
        let qx = _mm256_sub_epi8(nibbles_32(bx.add(2)), _mm256_set1_epi8(8));
        let qy = _mm256_loadu_si256(by.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_ss8(qx, qy)), acc)
    });
    hsum_ps(sum)
}

/// Q4_1 weights · Q8_1 activations: `Σ dx·dy·Σq·a + mx·sy`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK4_1, w, Q41, a, Q81);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    // Lane 0 carries Σ mx·sy alongside the quant sums, so one reduction serves both.
    let sum = unrolled2!(nb, |i, acc| {
        let (bx, by) = (x.add(i * Q41), y.add(i * Q81));
        // [dx·dy, mx·sy]: (d, m) and (d, s) sit side by side.
        let ds = _mm_mul_ps(f16x2(bx), f16x2(by));
        let d = _mm256_broadcastss_ps(ds);
        let m = _mm256_zextps128_ps256(_mm_blend_ps(_mm_setzero_ps(), ds, 0b0010));
        let qx = nibbles_32(bx.add(4));
        let qy = _mm256_loadu_si256(by.add(4) as *const __m256i);
        _mm256_add_ps(
            acc,
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_us8(qx, qy)), m),
        )
    });
    hsum_ps(sum)
}

/// Q8_0 weights · Q8_0 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = whole_blocks(n, QK8_0, w, Q80, a, Q80);
    let (x, y) = (w.as_ptr(), a.as_ptr());
    let sum = unrolled2!(nb, |i, acc| {
        let (bx, by) = (x.add(i * Q80), y.add(i * Q80));
        let d = _mm256_set1_ps(load_f16(bx) * load_f16(by));
        let qx = _mm256_loadu_si256(bx.add(2) as *const __m256i);
        let qy = _mm256_loadu_si256(by.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_ss8(qx, qy)), acc)
    });
    hsum_ps(sum)
}

/// Shared loop of the float dots over `n` elements of `x` and `y`: `load(p, i)` widens 8 values
/// from element `i` of `p`, `scalar(p, i)` one value.
#[inline(always)]
unsafe fn float_dot(
    n: usize,
    x: *const u8,
    y: *const u8,
    load: impl Fn(*const u8, usize) -> __m256,
    scalar: impl Fn(*const u8, usize) -> f32,
) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            *a = _mm256_fmadd_ps(load(x, j), load(y, j), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(x, i), load(y, i), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(s);
    for j in i..n {
        sum += scalar(x, j) * scalar(y, j);
    }
    sum
}

/// f32 weights · f32 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 4).min(a.len() / 4);
    float_dot(
        n,
        w.as_ptr(),
        a.as_ptr(),
        |p, i| _mm256_loadu_ps((p as *const f32).add(i)),
        |p, i| (p as *const f32).add(i).read_unaligned(),
    )
}

/// f16 weights · f16 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    float_dot(
        n,
        w.as_ptr(),
        a.as_ptr(),
        |p, i| _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i)),
        |p, i| load_f16(p.add(2 * i)),
    )
}

/// Widens 8 bf16 values (a 16-bit shift).
#[inline(always)]
unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    let h = _mm_loadu_si128(p as *const __m128i);
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
}

/// bf16 weights · bf16 activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    float_dot(
        n,
        w.as_ptr(),
        a.as_ptr(),
        |p, i| load_bf16x8(p.add(2 * i)),
        |p, i| f32::from_bits((p.add(2 * i).cast::<u16>().read_unaligned() as u32) << 16),
    )
}
