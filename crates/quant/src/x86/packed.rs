//! AVX-512 kernels for [`crate::PackedMatrix`]: 16 weight rows × 1–4 activation rows per step,
//! one `vpdpbusd` (or its BW emulation) per 4 columns of 16 rows, activations broadcast 4 bytes
//! at a time, results stored as one 16-lane vector per activation row.
//!
//! # Safety
//! The entry points require AVX-512 F/BW/VL, AVX2, FMA and F16C (and VNNI for `_vnni`), and a
//! [`PackedJob`] that describes its buffers truthfully (checked by `matmul_packed`).

// Tiles keep parallel per-row arrays (activation pointers, block constants, outputs,
// accumulators).
#![allow(clippy::needless_range_loop)]

use crate::types::QuantType;
use kiln_tensor::cpu::KernelChoice;
use kiln_tensor::stream::{prefetch_stream_line, STREAM_PREFETCH_BYTES};
use std::arch::x86_64::*;

/// One packed matmul: the weights, the activation rows and where the outputs go.
pub(crate) struct PackedJob<'a> {
    /// Blocks per row.
    pub nb: usize,
    /// All groups, `group_bytes` apart.
    pub weights: &'a [u8],
    pub group_bytes: usize,
    pub scale_bytes: usize,
    /// Activation rows (Q8_0 or Q8_1 blocks), `act_stride` bytes apart.
    pub acts: &'a [u8],
    pub act_stride: usize,
    /// Each activation block's scale as f32, `nb` per row.
    pub d: &'a [f32],
    /// Each Q8_0 activation block's `−128 · Σ q`, `nb` per row (empty for Q8_1).
    pub offsets: &'a [i32],
    /// Each Q8_1 activation block's `s` as f32, `nb` per row (empty for Q8_0).
    pub s: &'a [f32],
    pub n_act: usize,
    /// Weight rows (the output row stride).
    pub rows: usize,
    /// `n_act * rows` floats.
    pub out: *mut f32,
}

// SAFETY: the job is shared read-only between pool threads; each thread writes only the output
// elements of its own groups through `out`.
unsafe impl Sync for PackedJob<'_> {}

/// Computes groups `g0..g1` of a job, prefetching ahead up to group `prefetch_end` (at least
/// `g1`: where this thread's stream of groups is expected to end).
pub(crate) type PackedFn = unsafe fn(job: &PackedJob, g0: usize, g1: usize, prefetch_end: usize);

/// The packed kernel for (`choice`, `ty`), if there is one.
pub(crate) fn kernel(choice: KernelChoice, ty: QuantType) -> Option<PackedFn> {
    let f: PackedFn = match (choice, ty) {
        (KernelChoice::Avx512Vnni, QuantType::Q4_0) => q4_0_vnni,
        (KernelChoice::Avx512Vnni, QuantType::Q4_1) => q4_1_vnni,
        (KernelChoice::Avx512Vnni, QuantType::Q8_0) => q8_0_vnni,
        (KernelChoice::Avx512, QuantType::Q4_0) => q4_0_bw,
        (KernelChoice::Avx512, QuantType::Q4_1) => q4_1_bw,
        _ => return None,
    };
    Some(f)
}

/// Prefetches, [`STREAM_PREFETCH_BYTES`] ahead, block `b`'s share of the group at `grp`: `step`
/// bytes (the group's bytes over its blocks, rounded up), so that over a group the prefetches
/// cover every line of it — its scale region as well as its quants — and carry on into the
/// next groups in memory order. Lines at or past `end` (where this thread's stream of groups
/// ends) are left alone. The hardware prefetcher alone leaves single-token decode waiting on
/// memory, and prefetching the quants only left a fifth of every Q4_1 group (its scales) to
/// demand misses.
///
/// `LINES` is the most lines a step of the kernel's type spans: such a step is `LINES`
/// prefetches at fixed offsets, with one predictable branch and no loop (whose counting cost
/// the decode kernels nearly as many instructions as their arithmetic). A step that spans
/// fewer lines asks early for a line of the next step (the same line again when that step
/// comes: an instruction, no traffic); one that would reach `end`, or span more, takes the
/// loop.
#[inline(always)]
unsafe fn prefetch_step<const LINES: usize>(grp: *const u8, step: usize, b: usize, end: *const u8) {
    let from = grp as usize + STREAM_PREFETCH_BYTES + b * step;
    let first = from & !63;
    let last = (from + step - 1) & !63;
    if last - first < 64 * LINES && first + 64 * (LINES - 1) < end as usize {
        for i in 0..LINES {
            prefetch_stream_line(first + 64 * i);
        }
        return;
    }
    let to = (from + step).min(end as usize);
    let mut line = first;
    while line < to {
        prefetch_stream_line(line);
        line += 64;
    }
}

/// The most lines one block's prefetch step spans for Q4_0 and Q4_1 groups (288 and 320 bytes
/// per block; with SmolLM2-like widths a step starts on a 64- or 32-byte boundary).
const Q4_STEP_LINES: usize = 5;
/// The same for Q8_0 (544 bytes per block).
const Q8_STEP_LINES: usize = 9;

/// Q8_0 activation block bytes (f16 d, 32 × i8).
const A80: usize = 34;
/// Q8_1 activation block bytes (f16 d, f16 s, 32 × i8).
const A81: usize = 36;

/// `acc + Σ u·s` over groups of 4 byte pairs (u unsigned, s signed), 16 i32 lanes.
#[inline(always)]
unsafe fn dpbusd<const VNNI: bool>(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpbusd_epi32(acc, u, s)
    } else {
        let p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
        _mm512_add_epi32(acc, p)
    }
}

/// The 4 bytes at `p` in every 32-bit lane.
#[inline(always)]
unsafe fn bcast4(p: *const u8) -> __m512i {
    _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Everything one group × activation-tile step needs.
struct Tile<const T: usize> {
    /// Activation row starts.
    y: [*const u8; T],
    /// The rows' block scales, offsets (Q8_0) and `s` (Q8_1): see [`PackedJob`].
    d: [*const f32; T],
    off: [*const i32; T],
    s: [*const f32; T],
    /// Output starts (16 floats each).
    o: [*mut f32; T],
}

#[inline(always)]
unsafe fn tile<const T: usize>(job: &PackedJob, g: usize, t0: usize) -> Tile<T> {
    let mut tile = Tile {
        y: [std::ptr::null(); T],
        d: [std::ptr::null(); T],
        off: [std::ptr::null(); T],
        s: [std::ptr::null(); T],
        o: [std::ptr::null_mut(); T],
    };
    for t in 0..T {
        let row = t0 + t;
        tile.y[t] = job.acts.as_ptr().add(row * job.act_stride);
        tile.d[t] = job.d.as_ptr().wrapping_add(row * job.nb);
        tile.off[t] = job.offsets.as_ptr().wrapping_add(row * job.nb);
        tile.s[t] = job.s.as_ptr().wrapping_add(row * job.nb);
        tile.o[t] = job.out.add(row * job.rows + g * 16);
    }
    tile
}

/// Q4_0 / Q4_1 (`ASYM`) group `g` against activation rows `t0..t0 + T`.
#[inline(always)]
unsafe fn q4_tile<const VNNI: bool, const ASYM: bool, const T: usize>(
    job: &PackedJob,
    g: usize,
    t0: usize,
    end: *const u8,
) {
    let nb = job.nb;
    let grp = job.weights.as_ptr().add(g * job.group_bytes);
    let qp = grp.add(job.scale_bytes);
    let step = job.group_bytes.div_ceil(nb);
    let tl = tile::<T>(job, g, t0);
    let ab = if ASYM { A81 } else { A80 };
    let qa_at = if ASYM { 4 } else { 2 };
    let mask = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let q = qp.add(b * 256);
        prefetch_step::<Q4_STEP_LINES>(grp, step, b, end);
        let mut lo = [_mm512_setzero_si512(); 4];
        let mut hi = [_mm512_setzero_si512(); 4];
        for c in 0..4 {
            let w = _mm512_load_si512(q.add(c * 64).cast());
            lo[c] = _mm512_and_si512(w, mask);
            // With VNNI the high nibbles stay in place (16·q, still unsigned bytes) and the
            // block's sum of their products is shifted down once: one op per vector instead of
            // two. `vpdpbusd` does not saturate, and 4 · 240 · 128 per lane is far from i32's
            // limit; the BW emulation's 16-bit pair sums would saturate, so it shifts first.
            hi[c] = if VNNI {
                _mm512_andnot_si512(mask, w)
            } else {
                _mm512_and_si512(_mm512_srli_epi16(w, 4), mask)
            };
        }
        let dw = _mm512_cvtph_ps(_mm256_load_si256(grp.add(b * 32).cast()));
        for t in 0..T {
            let qa = tl.y[t].add(b * ab + qa_at);
            // Q4_0 quants are q − 8: Σ (q − 8)·a = Σ q·a − 8·Σ a, and the block's offset is
            // −128·Σ a = 16·(−8·Σ a). With VNNI the high nibbles' sum starts from it: the
            // shift that scales their 16·q products down then leaves exactly −8·Σ a too.
            let mut s0 = _mm512_setzero_si512();
            let mut s1 = if VNNI && !ASYM {
                _mm512_set1_epi32(*tl.off[t].add(b))
            } else {
                _mm512_setzero_si512()
            };
            for c in 0..4 {
                s0 = dpbusd::<VNNI>(s0, lo[c], bcast4(qa.add(4 * c)));
                s1 = dpbusd::<VNNI>(s1, hi[c], bcast4(qa.add(16 + 4 * c)));
            }
            let isum = if VNNI {
                _mm512_add_epi32(s0, _mm512_srai_epi32(s1, 4))
            } else if ASYM {
                _mm512_add_epi32(s0, s1)
            } else {
                let minus_8_sum = _mm512_set1_epi32(*tl.off[t].add(b) >> 4);
                _mm512_add_epi32(_mm512_add_epi32(s0, s1), minus_8_sum)
            };
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(*tl.d[t].add(b)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[t]);
            if ASYM {
                let mw = _mm512_cvtph_ps(_mm256_load_si256(grp.add(nb * 32 + b * 32).cast()));
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*tl.s[t].add(b)), acc[t]);
            }
        }
    }
    for t in 0..T {
        _mm512_storeu_ps(tl.o[t], acc[t]);
    }
}

/// Q8_0 group `g` against activation rows `t0..t0 + T` (VNNI only).
#[inline(always)]
unsafe fn q8_tile<const T: usize>(job: &PackedJob, g: usize, t0: usize, end: *const u8) {
    let nb = job.nb;
    let grp = job.weights.as_ptr().add(g * job.group_bytes);
    let qp = grp.add(job.scale_bytes);
    let step = job.group_bytes.div_ceil(nb);
    let tl = tile::<T>(job, g, t0);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let q = qp.add(b * 512);
        prefetch_step::<Q8_STEP_LINES>(grp, step, b, end);
        let dw = _mm512_cvtph_ps(_mm256_load_si256(grp.add(b * 32).cast()));
        let mut w = [_mm512_setzero_si512(); 8];
        for (c, wc) in w.iter_mut().enumerate() {
            *wc = _mm512_load_si512(q.add(c * 64).cast());
        }
        for t in 0..T {
            let qa = tl.y[t].add(b * A80 + 2);
            // Quants are stored as q + 128: Σ (q + 128)·a − 128·Σ a = Σ q·a, so the sum
            // starts from the block's offset −128·Σ a.
            let mut s0 = _mm512_set1_epi32(*tl.off[t].add(b));
            let mut s1 = _mm512_setzero_si512();
            for c in (0..8).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, w[c], bcast4(qa.add(4 * c)));
                s1 = _mm512_dpbusd_epi32(s1, w[c + 1], bcast4(qa.add(4 * c + 4)));
            }
            let isum = _mm512_add_epi32(s0, s1);
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(*tl.d[t].add(b)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[t]);
        }
    }
    for t in 0..T {
        _mm512_storeu_ps(tl.o[t], acc[t]);
    }
}

/// Runs `$tile::<…, T>` over groups `g0..g1` and every activation row, four rows at a time,
/// prefetching up to group `$pf`.
macro_rules! groups {
    ($job:ident, $g0:ident, $g1:ident, $pf:ident, |$g:ident, $t:ident, $n:ident, $end:ident| $call:expr) => {{
        let $end = $job
            .weights
            .as_ptr()
            .wrapping_add($pf.max($g1) * $job.group_bytes);
        for $g in $g0..$g1 {
            let mut $t = 0;
            while $t < $job.n_act {
                let $n = ($job.n_act - $t).min(4);
                $call;
                $t += $n;
            }
        }
    }};
}

macro_rules! q4_entry {
    ($name:ident, $vnni:literal, $asym:literal, $features:literal, $what:literal) => {
        #[doc = $what]
        #[target_feature(enable = $features)]
        unsafe fn $name(job: &PackedJob, g0: usize, g1: usize, prefetch_end: usize) {
            groups!(job, g0, g1, prefetch_end, |g, t, n, end| match n {
                4 => q4_tile::<$vnni, $asym, 4>(job, g, t, end),
                3 => q4_tile::<$vnni, $asym, 3>(job, g, t, end),
                2 => q4_tile::<$vnni, $asym, 2>(job, g, t, end),
                _ => q4_tile::<$vnni, $asym, 1>(job, g, t, end),
            })
        }
    };
}

q4_entry!(
    q4_0_vnni,
    true,
    false,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "Packed Q4_0 · Q8_0 rows (AVX-512 VNNI)."
);
q4_entry!(
    q4_1_vnni,
    true,
    true,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "Packed Q4_1 · Q8_1 rows (AVX-512 VNNI)."
);
q4_entry!(
    q4_0_bw,
    false,
    false,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    "Packed Q4_0 · Q8_0 rows (AVX-512 BW)."
);
q4_entry!(
    q4_1_bw,
    false,
    true,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    "Packed Q4_1 · Q8_1 rows (AVX-512 BW)."
);

/// Packed Q8_0 · Q8_0 rows (AVX-512 VNNI).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_vnni(job: &PackedJob, g0: usize, g1: usize, prefetch_end: usize) {
    groups!(job, g0, g1, prefetch_end, |g, t, n, end| match n {
        4 => q8_tile::<4>(job, g, t, end),
        3 => q8_tile::<3>(job, g, t, end),
        2 => q8_tile::<2>(job, g, t, end),
        _ => q8_tile::<1>(job, g, t, end),
    })
}
