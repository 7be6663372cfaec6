//! Multi-row dot kernels for Q4_0, Q4_1 and Q8_0: one weight row against 2–4 activation rows
//! (prefill: each weight block is loaded, unpacked and its scales converted once per group), in
//! AVX2 and AVX-512 (plain and VNNI) builds, and 2–4 weight rows against one activation row
//! (decode: the activation block is loaded once per group; AVX-512 only). Every output keeps the
//! single-row kernels' accumulation schedule, so results are bit-identical to them.
//!
//! # Safety
//! The `avx2` functions require AVX2, FMA and F16C, the `avx512` ones also AVX-512 F/BW/VL (and
//! VNNI for `_vnni`). Activation rows sit `stride` bytes apart, weight rows `row_bytes` apart;
//! kernels read only whole blocks that every row involved holds.

use super::avx2::{dot_us8 as dot_us8_256, f16x2, hsum_ps, nibbles_32};
use super::avx512::{dot_us8, f16_pair, f16x2_pair, load_2x32, nibbles_64, spread_pair};
use super::load_f16;
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

/// Whole blocks that the weight row and all `r` activation rows hold (at most `n / block`),
/// and the activation row pointers.
#[inline(always)]
unsafe fn rows_setup<const R: usize>(
    n: usize,
    block: usize,
    w: &[u8],
    wb: usize,
    a: &[u8],
    ab: usize,
    stride: usize,
) -> (usize, [*const u8; R]) {
    let last = stride.saturating_mul(R - 1);
    let avail = a.len().saturating_sub(last);
    let nb = (n / block).min(w.len() / wb).min(avail / ab);
    let nb = if R > 1 && a.len() < last { 0 } else { nb };
    let mut y = [a.as_ptr(); R];
    for (r, p) in y.iter_mut().enumerate() {
        *p = a.as_ptr().wrapping_add(r * stride);
    }
    (nb, y)
}

/// Calls `$kernel::<{R}>` for `out.len()` in 2..=4 and the single-row `$single` otherwise.
macro_rules! by_rows {
    ($kernel:ident, $single:path, $n:ident, $w:ident, $a:ident, $stride:ident, $out:ident) => {
        match $out.len() {
            4 => $kernel::<4>($n, $w, $a, $stride, $out),
            3 => $kernel::<3>($n, $w, $a, $stride, $out),
            2 => $kernel::<2>($n, $w, $a, $stride, $out),
            _ => {
                for (t, o) in $out.iter_mut().enumerate() {
                    let start = (t * $stride).min($a.len());
                    *o = $single($n, $w, &$a[start..]);
                }
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// AVX2. Block k of every row goes to accumulator k mod 2, then the two are added: the schedule
// of the single-row kernels (`unrolled2`), so results are bit-identical to them.

/// Runs `$step` (a block of `$i`, the block index, and `$acc`, the row accumulators) over blocks
/// `0..$nb` with the single-row schedule and writes the per-row sums to `$out`. A macro rather
/// than a closure so the body keeps the caller's target features.
macro_rules! schedule_avx2 {
    ($r:expr, $nb:expr, $out:expr, |$i:ident, $acc:ident| $step:block) => {{
        let nb = $nb;
        let mut acc0 = [_mm256_setzero_ps(); $r];
        let mut acc1 = [_mm256_setzero_ps(); $r];
        let mut base = 0usize;
        while base + 2 <= nb {
            {
                let ($i, $acc) = (base, &mut acc0);
                $step
            }
            {
                let ($i, $acc) = (base + 1, &mut acc1);
                $step
            }
            base += 2;
        }
        if base < nb {
            let ($i, $acc) = (base, &mut acc0);
            $step
        }
        for (o, (a0, a1)) in $out.iter_mut().zip(acc0.iter().zip(&acc1)) {
            *o = hsum_ps(_mm256_add_ps(*a0, *a1));
        }
    }};
}

#[inline(always)]
unsafe fn q4_0_avx2<const R: usize>(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    let (nb, y) = rows_setup::<R>(n, QK4_0, w, Q40, a, Q80, stride);
    let x = w.as_ptr();
    schedule_avx2!(R, nb, out, |i, acc| {
        let bx = x.add(i * Q40);
        let dx = load_f16(bx);
        let qx = _mm256_sub_epi8(nibbles_32(bx.add(2)), _mm256_set1_epi8(8));
        let ax = _mm256_sign_epi8(qx, qx);
        for r in 0..R {
            let by = y[r].add(i * Q80);
            let d = _mm256_set1_ps(dx * load_f16(by));
            let qy = _mm256_loadu_si256(by.add(2) as *const __m256i);
            let p = dot_us8_256(ax, _mm256_sign_epi8(qy, qx));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
        }
    });
}

#[inline(always)]
unsafe fn q4_1_avx2<const R: usize>(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    let (nb, y) = rows_setup::<R>(n, QK4_1, w, Q41, a, Q81, stride);
    let x = w.as_ptr();
    schedule_avx2!(R, nb, out, |i, acc| {
        let bx = x.add(i * Q41);
        let dmx = f16x2(bx);
        let qx = nibbles_32(bx.add(4));
        for r in 0..R {
            let by = y[r].add(i * Q81);
            let ds = _mm_mul_ps(dmx, f16x2(by));
            let m = _mm256_zextps128_ps256(_mm_blend_ps(_mm_setzero_ps(), ds, 0b0010));
            let qy = _mm256_loadu_si256(by.add(4) as *const __m256i);
            let p = _mm256_cvtepi32_ps(dot_us8_256(qx, qy));
            acc[r] = _mm256_add_ps(acc[r], _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), p, m));
        }
    });
}

#[inline(always)]
unsafe fn q8_0_avx2<const R: usize>(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    let (nb, y) = rows_setup::<R>(n, QK8_0, w, Q80, a, Q80, stride);
    let x = w.as_ptr();
    schedule_avx2!(R, nb, out, |i, acc| {
        let bx = x.add(i * Q80);
        let dx = load_f16(bx);
        let qx = _mm256_loadu_si256(bx.add(2) as *const __m256i);
        let ax = _mm256_sign_epi8(qx, qx);
        for r in 0..R {
            let by = y[r].add(i * Q80);
            let d = _mm256_set1_ps(dx * load_f16(by));
            let qy = _mm256_loadu_si256(by.add(2) as *const __m256i);
            let p = dot_us8_256(ax, _mm256_sign_epi8(qy, qx));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
        }
    });
}

/// Q4_0 weights · 1–4 Q8_0 activation rows (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_q4_0_avx2(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    by_rows!(q4_0_avx2, super::avx2::dot_q4_0, n, w, a, stride, out);
}

/// Q4_1 weights · 1–4 Q8_1 activation rows (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_q4_1_avx2(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    by_rows!(q4_1_avx2, super::avx2::dot_q4_1, n, w, a, stride, out);
}

/// Q8_0 weights · 1–4 Q8_0 activation rows (AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_q8_0_avx2(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
    by_rows!(q8_0_avx2, super::avx2::dot_q8_0, n, w, a, stride, out);
}

// ---------------------------------------------------------------------------------------------
// AVX-512: two blocks per 512-bit vector. Pair k of every row goes to accumulator k mod 2, an odd
// last block through the AVX2 single-row kernel: the schedule of the single-row kernels
// (`pairs_unrolled`), so results are bit-identical to them.

/// Runs `$step` (a block of `$i`, the first block of a pair, and `$acc`, the row accumulators)
/// over the pairs below `$nb` with the single-row schedule; writes the per-row sums to `$out`
/// and evaluates to the first block not processed. A macro rather than a closure so the body
/// keeps the caller's target features.
macro_rules! schedule_512 {
    ($r:expr, $nb:expr, $out:expr, |$i:ident, $acc:ident| $step:block) => {{
        let nb = $nb;
        let mut acc0 = [_mm512_setzero_ps(); $r];
        let mut acc1 = [_mm512_setzero_ps(); $r];
        let mut base = 0usize;
        while base + 4 <= nb {
            {
                let ($i, $acc) = (base, &mut acc0);
                $step
            }
            {
                let ($i, $acc) = (base + 2, &mut acc1);
                $step
            }
            base += 4;
        }
        if base + 2 <= nb {
            {
                let ($i, $acc) = (base, &mut acc0);
                $step
            }
            base += 2;
        }
        for (o, (a0, a1)) in $out.iter_mut().zip(acc0.iter().zip(&acc1)) {
            *o = _mm512_reduce_add_ps(_mm512_add_ps(*a0, *a1));
        }
        base
    }};
}

/// Adds the odd last block `i` (if `i < nb`) of every row with the AVX2 single-row kernel.
#[inline(always)]
unsafe fn odd_tail<const R: usize>(
    i: usize,
    nb: usize,
    w: &[u8],
    (wb, ab, qk): (usize, usize, usize),
    y: &[*const u8; R],
    out: &mut [f32],
    single: unsafe fn(usize, &[u8], &[u8]) -> f32,
) {
    if i >= nb {
        return;
    }
    for (o, yr) in out.iter_mut().zip(y) {
        // SAFETY: `i < nb`, and every activation row holds `nb` whole blocks (`rows_setup`).
        let by = std::slice::from_raw_parts(yr.add(i * ab), ab);
        *o += single(qk, &w[i * wb..], by);
    }
}

#[inline(always)]
unsafe fn q4_0_512<const VNNI: bool, const R: usize>(
    n: usize,
    w: &[u8],
    a: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    let (nb, y) = rows_setup::<R>(n, QK4_0, w, Q40, a, Q80, stride);
    let x = w.as_ptr();
    let eights = _mm512_set1_epi8(8);
    let i = schedule_512!(R, nb, out, |i, acc| {
        let (x0, x1) = (x.add(i * Q40), x.add((i + 1) * Q40));
        let dx = f16_pair(x0, x1);
        let qx = nibbles_64(x0.add(2), x1.add(2));
        for r in 0..R {
            let (y0, y1) = (y[r].add(i * Q80), y[r].add((i + 1) * Q80));
            let d = _mm_mul_ps(dx, f16_pair(y0, y1));
            let qy = load_2x32(y0.add(2), y1.add(2));
            let p = _mm512_sub_epi32(dot_us8::<VNNI>(qx, qy), dot_us8::<VNNI>(eights, qy));
            acc[r] = _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc[r]);
        }
    });
    odd_tail(i, nb, w, (Q40, Q80, QK4_0), &y, out, super::avx2::dot_q4_0);
}

#[inline(always)]
unsafe fn q4_1_512<const VNNI: bool, const R: usize>(
    n: usize,
    w: &[u8],
    a: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    let (nb, y) = rows_setup::<R>(n, QK4_1, w, Q41, a, Q81, stride);
    let x = w.as_ptr();
    let i = schedule_512!(R, nb, out, |i, acc| {
        let (x0, x1) = (x.add(i * Q41), x.add((i + 1) * Q41));
        let dmx = f16x2_pair(x0, x1);
        let qx = nibbles_64(x0.add(4), x1.add(4));
        for r in 0..R {
            let (y0, y1) = (y[r].add(i * Q81), y[r].add((i + 1) * Q81));
            let ds = _mm_mul_ps(dmx, f16x2_pair(y0, y1));
            let ms = _mm512_zextps128_ps512(_mm_blend_ps(_mm_setzero_ps(), ds, 0b1010));
            let qy = load_2x32(y0.add(4), y1.add(4));
            let p = _mm512_cvtepi32_ps(dot_us8::<VNNI>(qx, qy));
            acc[r] = _mm512_add_ps(acc[r], _mm512_fmadd_ps(spread_pair::<0, 2>(ds), p, ms));
        }
    });
    odd_tail(i, nb, w, (Q41, Q81, QK4_1), &y, out, super::avx2::dot_q4_1);
}

#[inline(always)]
unsafe fn q8_0_512<const VNNI: bool, const R: usize>(
    n: usize,
    w: &[u8],
    a: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    let (nb, y) = rows_setup::<R>(n, QK8_0, w, Q80, a, Q80, stride);
    let x = w.as_ptr();
    let zero = _mm512_setzero_si512();
    let i = schedule_512!(R, nb, out, |i, acc| {
        let (x0, x1) = (x.add(i * Q80), x.add((i + 1) * Q80));
        let dx = f16_pair(x0, x1);
        let qx = load_2x32(x0.add(2), x1.add(2));
        let neg = _mm512_movepi8_mask(qx);
        let ax = _mm512_abs_epi8(qx);
        for r in 0..R {
            let (y0, y1) = (y[r].add(i * Q80), y[r].add((i + 1) * Q80));
            let d = _mm_mul_ps(dx, f16_pair(y0, y1));
            let qy = load_2x32(y0.add(2), y1.add(2));
            let p = dot_us8::<VNNI>(ax, _mm512_mask_sub_epi8(qy, neg, zero, qy));
            acc[r] = _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc[r]);
        }
    });
    odd_tail(i, nb, w, (Q80, Q80, QK8_0), &y, out, super::avx2::dot_q8_0);
}

/// Whole blocks that all `W` weight rows (`row_bytes` apart) and the activation row hold, and
/// the weight row pointers.
#[inline(always)]
unsafe fn wrows_setup<const W: usize>(
    n: usize,
    block: usize,
    w: &[u8],
    row_bytes: usize,
    wb: usize,
    a: &[u8],
    ab: usize,
) -> (usize, [*const u8; W]) {
    let last = row_bytes.saturating_mul(W - 1);
    let avail = w.len().saturating_sub(last);
    let nb = (n / block).min(avail / wb).min(a.len() / ab);
    let nb = if W > 1 && w.len() < last { 0 } else { nb };
    let mut x = [w.as_ptr(); W];
    for (k, p) in x.iter_mut().enumerate() {
        *p = w.as_ptr().wrapping_add(k * row_bytes);
    }
    (nb, x)
}

/// Adds the odd last block `i` (if `i < nb`) of every weight row with the AVX2 kernel.
#[inline(always)]
unsafe fn odd_tail_w<const W: usize>(
    i: usize,
    nb: usize,
    x: &[*const u8; W],
    a: &[u8],
    (wb, ab, qk): (usize, usize, usize),
    out: &mut [f32],
    single: unsafe fn(usize, &[u8], &[u8]) -> f32,
) {
    if i >= nb {
        return;
    }
    for (o, xr) in out.iter_mut().zip(x) {
        // SAFETY: `i < nb`, and every weight row holds `nb` whole blocks (`wrows_setup`).
        let bx = std::slice::from_raw_parts(xr.add(i * wb), wb);
        *o += single(qk, bx, &a[i * ab..]);
    }
}

#[inline(always)]
unsafe fn q4_0_w512<const VNNI: bool, const W: usize>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let (nb, x) = wrows_setup::<W>(n, QK4_0, w, row_bytes, Q40, a, Q80);
    let y = a.as_ptr();
    let eights = _mm512_set1_epi8(8);
    let i = schedule_512!(W, nb, out, |i, acc| {
        let (y0, y1) = (y.add(i * Q80), y.add((i + 1) * Q80));
        let dy = f16_pair(y0, y1);
        let qy = load_2x32(y0.add(2), y1.add(2));
        let e = dot_us8::<VNNI>(eights, qy);
        for k in 0..W {
            let (x0, x1) = (x[k].add(i * Q40), x[k].add((i + 1) * Q40));
            let d = _mm_mul_ps(f16_pair(x0, x1), dy);
            let qx = nibbles_64(x0.add(2), x1.add(2));
            let p = _mm512_sub_epi32(dot_us8::<VNNI>(qx, qy), e);
            acc[k] = _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc[k]);
        }
    });
    odd_tail_w(i, nb, &x, a, (Q40, Q80, QK4_0), out, super::avx2::dot_q4_0);
}

#[inline(always)]
unsafe fn q4_1_w512<const VNNI: bool, const W: usize>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let (nb, x) = wrows_setup::<W>(n, QK4_1, w, row_bytes, Q41, a, Q81);
    let y = a.as_ptr();
    let i = schedule_512!(W, nb, out, |i, acc| {
        let (y0, y1) = (y.add(i * Q81), y.add((i + 1) * Q81));
        let dsy = f16x2_pair(y0, y1);
        let qy = load_2x32(y0.add(4), y1.add(4));
        for k in 0..W {
            let (x0, x1) = (x[k].add(i * Q41), x[k].add((i + 1) * Q41));
            let ds = _mm_mul_ps(f16x2_pair(x0, x1), dsy);
            let ms = _mm512_zextps128_ps512(_mm_blend_ps(_mm_setzero_ps(), ds, 0b1010));
            let qx = nibbles_64(x0.add(4), x1.add(4));
            let p = _mm512_cvtepi32_ps(dot_us8::<VNNI>(qx, qy));
            acc[k] = _mm512_add_ps(acc[k], _mm512_fmadd_ps(spread_pair::<0, 2>(ds), p, ms));
        }
    });
    odd_tail_w(i, nb, &x, a, (Q41, Q81, QK4_1), out, super::avx2::dot_q4_1);
}

#[inline(always)]
unsafe fn q8_0_w512<const VNNI: bool, const W: usize>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let (nb, x) = wrows_setup::<W>(n, QK8_0, w, row_bytes, Q80, a, Q80);
    let y = a.as_ptr();
    let zero = _mm512_setzero_si512();
    let i = schedule_512!(W, nb, out, |i, acc| {
        let (y0, y1) = (y.add(i * Q80), y.add((i + 1) * Q80));
        let dy = f16_pair(y0, y1);
        let qy = load_2x32(y0.add(2), y1.add(2));
        for k in 0..W {
            let (x0, x1) = (x[k].add(i * Q80), x[k].add((i + 1) * Q80));
            let d = _mm_mul_ps(f16_pair(x0, x1), dy);
            let qx = load_2x32(x0.add(2), x1.add(2));
            let neg = _mm512_movepi8_mask(qx);
            let sy = _mm512_mask_sub_epi8(qy, neg, zero, qy);
            let p = dot_us8::<VNNI>(_mm512_abs_epi8(qx), sy);
            acc[k] = _mm512_fmadd_ps(spread_pair::<0, 1>(d), _mm512_cvtepi32_ps(p), acc[k]);
        }
    });
    odd_tail_w(i, nb, &x, a, (Q80, Q80, QK8_0), out, super::avx2::dot_q8_0);
}

/// Calls `$kernel::<{W}>` for `out.len()` in 2..=4 weight rows and the single-row `$single`
/// otherwise.
macro_rules! by_wrows {
    ($kernel:ident, $single:path, $n:ident, $w:ident, $rb:ident, $a:ident, $out:ident) => {
        match $out.len() {
            4 => $kernel::<4>($n, $w, $rb, $a, $out),
            3 => $kernel::<3>($n, $w, $rb, $a, $out),
            2 => $kernel::<2>($n, $w, $rb, $a, $out),
            _ => {
                for (k, o) in $out.iter_mut().enumerate() {
                    let start = (k * $rb).min($w.len());
                    *o = $single($n, &$w[start..], $a);
                }
            }
        }
    };
}

macro_rules! wrows_512 {
    ($plain:ident, $vnni:ident, $body:ident, $single:ident, $single_vnni:ident, $what:literal) => {
        #[doc = concat!($what, " (AVX-512 BW).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(crate) unsafe fn $plain(n: usize, w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
            #[inline(always)]
            unsafe fn k<const W: usize>(n: usize, w: &[u8], rb: usize, a: &[u8], o: &mut [f32]) {
                $body::<false, W>(n, w, rb, a, o)
            }
            by_wrows!(k, super::avx512::$single, n, w, rb, a, out);
        }

        #[doc = concat!($what, " (AVX-512 VNNI).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $vnni(n: usize, w: &[u8], rb: usize, a: &[u8], out: &mut [f32]) {
            #[inline(always)]
            unsafe fn k<const W: usize>(n: usize, w: &[u8], rb: usize, a: &[u8], o: &mut [f32]) {
                $body::<true, W>(n, w, rb, a, o)
            }
            by_wrows!(k, super::avx512::$single_vnni, n, w, rb, a, out);
        }
    };
}

wrows_512!(
    wrows_q4_0_512,
    wrows_q4_0_512_vnni,
    q4_0_w512,
    dot_q4_0,
    dot_q4_0_vnni,
    "2–4 Q4_0 weight rows · one Q8_0 activation row"
);
wrows_512!(
    wrows_q4_1_512,
    wrows_q4_1_512_vnni,
    q4_1_w512,
    dot_q4_1,
    dot_q4_1_vnni,
    "2–4 Q4_1 weight rows · one Q8_1 activation row"
);
wrows_512!(
    wrows_q8_0_512,
    wrows_q8_0_512_vnni,
    q8_0_w512,
    dot_q8_0,
    dot_q8_0_vnni,
    "2–4 Q8_0 weight rows · one Q8_0 activation row"
);

macro_rules! rows_512 {
    ($plain:ident, $vnni:ident, $body:ident, $single:ident, $single_vnni:ident, $what:literal) => {
        #[doc = concat!($what, " (AVX-512 BW).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(crate) unsafe fn $plain(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
            #[inline(always)]
            unsafe fn k<const R: usize>(n: usize, w: &[u8], a: &[u8], s: usize, o: &mut [f32]) {
                $body::<false, R>(n, w, a, s, o)
            }
            by_rows!(k, super::avx512::$single, n, w, a, stride, out);
        }

        #[doc = concat!($what, " (AVX-512 VNNI).")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $vnni(n: usize, w: &[u8], a: &[u8], stride: usize, out: &mut [f32]) {
            #[inline(always)]
            unsafe fn k<const R: usize>(n: usize, w: &[u8], a: &[u8], s: usize, o: &mut [f32]) {
                $body::<true, R>(n, w, a, s, o)
            }
            by_rows!(k, super::avx512::$single_vnni, n, w, a, stride, out);
        }
    };
}

rows_512!(
    rows_q4_0_512,
    rows_q4_0_512_vnni,
    q4_0_512,
    dot_q4_0,
    dot_q4_0_vnni,
    "Q4_0 weights · 1–4 Q8_0 activation rows"
);
rows_512!(
    rows_q4_1_512,
    rows_q4_1_512_vnni,
    q4_1_512,
    dot_q4_1,
    dot_q4_1_vnni,
    "Q4_1 weights · 1–4 Q8_1 activation rows"
);
rows_512!(
    rows_q8_0_512,
    rows_q8_0_512_vnni,
    q8_0_512,
    dot_q8_0,
    dot_q8_0_vnni,
    "Q8_0 weights · 1–4 Q8_0 activation rows"
);
