//! Element-wise parts of the recurrent cells (LSTM and GRU state updates) with a vectorizable
//! `exp`, so the gate non-linearities run as SIMD instead of one libm call per value.
//!
//! `exp` is [`crate::ops::exp::exp_fast`] (the AVX2 build) or its AVX-512 form `exp512` (the
//! AVX-512 cells, written in intrinsics with masked tails and gate blocks at a given stride):
//! within 2 ulp of libm over the range the cells use, which keeps the RTNeural conformance
//! tests (1e-6 absolute) passing. The scalar references use libm (`f32::exp`, `f32::tanh`);
//! tests compare every family against them.

use crate::ops::exp::exp_fast;

#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[inline(always)]
fn tanh_fast(x: f32) -> f32 {
    let e = exp_fast(-2.0 * x.abs());
    let t = (1.0 - e) / (1.0 + e);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

/// Reference and fast math, selected at compile time by the bodies below.
trait Math {
    fn sigmoid(x: f32) -> f32;
    fn tanh(x: f32) -> f32;
}
struct Libm;
struct Fast;
impl Math for Libm {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }
    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        x.tanh()
    }
}
impl Math for Fast {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        sigmoid_fast(x)
    }
    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        tanh_fast(x)
    }
}

/// Values per unrolled step: fixed-size inner loops are what the vectorizer handles reliably.
const W: usize = 16;

#[inline(always)]
fn lstm_one<M: Math>(i: f32, f: f32, g: f32, o: f32, c: &mut f32, h: &mut f32) {
    let cn = M::sigmoid(f) * *c + M::sigmoid(i) * M::tanh(g);
    *c = cn;
    *h = M::sigmoid(o) * M::tanh(cn);
}

/// LSTM update: `gates` holds the pre-activations `[i | f | g | o]` (biases included), gate
/// block `b` starting at `b · stride`; `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`.
#[inline(always)]
fn lstm_body<M: Math>(gates: &[f32], stride: usize, c: &mut [f32], h: &mut [f32]) {
    let u = c.len().min(h.len());
    if stride < u || gates.len() < 3 * stride + u {
        return;
    }
    let block = |b: usize| &gates[b * stride..b * stride + u];
    let (i, f, g, o) = (block(0), block(1), block(2), block(3));
    let full = u - u % W;
    for k in (0..full).step_by(W) {
        let (i, f, g, o) = (&i[k..k + W], &f[k..k + W], &g[k..k + W], &o[k..k + W]);
        let (cs, hs) = (&mut c[k..k + W], &mut h[k..k + W]);
        for l in 0..W {
            lstm_one::<M>(i[l], f[l], g[l], o[l], &mut cs[l], &mut hs[l]);
        }
    }
    for k in full..u {
        lstm_one::<M>(i[k], f[k], g[k], o[k], &mut c[k], &mut h[k]);
    }
}

#[inline(always)]
fn gru_one<M: Math>(z: f32, r: f32, n: [f32; 2], h: &mut f32) {
    let z = M::sigmoid(z);
    let r = M::sigmoid(r);
    let n = M::tanh(n[0] + r * n[1]);
    *h = (1.0 - z) * n + z * *h;
}

/// GRU update (`reset_after`): `gi = W_i·x + b_i`, `gh = W_h·h + b_h`, blocks `[z | r | n]`
/// starting at multiples of `stride`; `z = σ(gi_z + gh_z)`, `r = σ(gi_r + gh_r)`,
/// `n = tanh(gi_n + r·gh_n)`, `h' = (1−z)·n + z·h`.
#[inline(always)]
fn gru_body<M: Math>(gi: &[f32], gh: &[f32], stride: usize, h: &mut [f32]) {
    let u = h.len();
    if stride < u || gi.len() < 2 * stride + u || gh.len() < 2 * stride + u {
        return;
    }
    let (iz, ir, inn) = (
        &gi[..u],
        &gi[stride..stride + u],
        &gi[2 * stride..2 * stride + u],
    );
    let (hz, hr, hn) = (
        &gh[..u],
        &gh[stride..stride + u],
        &gh[2 * stride..2 * stride + u],
    );
    let full = u - u % W;
    for k in (0..full).step_by(W) {
        let hs = &mut h[k..k + W];
        let (iz, hz, ir, hr) = (&iz[k..k + W], &hz[k..k + W], &ir[k..k + W], &hr[k..k + W]);
        let (inn, hn) = (&inn[k..k + W], &hn[k..k + W]);
        for l in 0..W {
            gru_one::<M>(iz[l] + hz[l], ir[l] + hr[l], [inn[l], hn[l]], &mut hs[l]);
        }
    }
    for k in full..u {
        gru_one::<M>(iz[k] + hz[k], ir[k] + hr[k], [inn[k], hn[k]], &mut h[k]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Fast;

    #[target_feature(enable = "avx2,fma")]
    pub fn lstm_avx2(gates: &[f32], stride: usize, c: &mut [f32], h: &mut [f32]) {
        super::lstm_body::<Fast>(gates, stride, c, h)
    }
    /// [`super::lstm_body`] in AVX-512 intrinsics: 16 units per step, the last step through
    /// a lane mask, so 4 or 24 units run no scalar tail (LSTM 4×4 spent half its time there).
    #[target_feature(enable = "avx512f,fma")]
    pub fn lstm_avx512(gates: &[f32], stride: usize, c: &mut [f32], h: &mut [f32]) {
        use super::v512::{sigmoid, tanh};
        use std::arch::x86_64::*;
        let u = c.len().min(h.len());
        if stride < u || gates.len() < 3 * stride + u {
            return;
        }
        if stride == u && 4 * u <= 16 && gates.len() >= 16 {
            // SAFETY: `gates` holds 16 floats and `c`, `h` hold `u`; `in_one_vector`
            // loads 16 and stores `u` of each.
            return unsafe { lstm_in_one_vector(gates, u, c, h) };
        }
        for k in (0..u).step_by(16) {
            let n = (u - k).min(16);
            let m = crate::simd512::first_lanes(n);
            // SAFETY: lanes below `n` address units `k..k + n` of each gate block, `c` and `h`
            // (all checked above); the masks keep the loads there and `store_first` writes
            // exactly `n` floats.
            unsafe {
                let g = gates.as_ptr().add(k);
                let i = _mm512_maskz_loadu_ps(m, g);
                let f = _mm512_maskz_loadu_ps(m, g.add(stride));
                let gg = _mm512_maskz_loadu_ps(m, g.add(2 * stride));
                let o = _mm512_maskz_loadu_ps(m, g.add(3 * stride));
                let cv = _mm512_maskz_loadu_ps(m, c.as_ptr().add(k));
                let cn = _mm512_fmadd_ps(sigmoid(f), cv, _mm512_mul_ps(sigmoid(i), tanh(gg)));
                let hn = _mm512_mul_ps(sigmoid(o), tanh(cn));
                crate::simd512::store_first(c.as_mut_ptr().add(k), cn, n);
                crate::simd512::store_first(h.as_mut_ptr().add(k), hn, n);
            }
        }
    }
    #[target_feature(enable = "avx2,fma")]
    pub fn gru_avx2(gi: &[f32], gh: &[f32], stride: usize, h: &mut [f32]) {
        super::gru_body::<Fast>(gi, gh, stride, h)
    }
    /// Gate `b` (of `u` values, gates back to back in `v`) moved to lanes `0..u`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn gate(v: std::arch::x86_64::__m512, b: usize, u: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let idx = _mm512_add_epi32(lanes, _mm512_set1_epi32((b * u) as i32));
        _mm512_permutexvar_ps(idx, v)
    }

    /// An LSTM of at most 4 units whose gates lie back to back in one vector: one load, the
    /// gates taken apart with permutes (a load at offset `u` of the vector the gate product
    /// just stored could not be forwarded and would wait for the cache).
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn lstm_in_one_vector(gates: &[f32], u: usize, c: &mut [f32], h: &mut [f32]) {
        use super::v512::{sigmoid, tanh};
        use std::arch::x86_64::*;
        let v = _mm512_loadu_ps(gates.as_ptr());
        let m = crate::simd512::first_lanes(u);
        let cv = _mm512_maskz_loadu_ps(m, c.as_ptr());
        let (f, g, o) = (gate(v, 1, u), gate(v, 2, u), gate(v, 3, u));
        let cn = _mm512_fmadd_ps(sigmoid(f), cv, _mm512_mul_ps(sigmoid(v), tanh(g)));
        let hn = _mm512_mul_ps(sigmoid(o), tanh(cn));
        crate::simd512::store_first(c.as_mut_ptr(), cn, u);
        crate::simd512::store_first(h.as_mut_ptr(), hn, u);
    }

    /// A GRU of at most 5 units, its gates in one vector of `gi` and one of `gh` (as in
    /// [`lstm_in_one_vector`]).
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn gru_in_one_vector(gi: &[f32], gh: &[f32], u: usize, h: &mut [f32]) {
        use super::v512::{sigmoid, tanh};
        use std::arch::x86_64::*;
        let (a, b) = (_mm512_loadu_ps(gi.as_ptr()), _mm512_loadu_ps(gh.as_ptr()));
        let zr = _mm512_add_ps(a, b);
        let z = sigmoid(zr);
        let r = sigmoid(gate(zr, 1, u));
        let nn = tanh(_mm512_fmadd_ps(r, gate(b, 2, u), gate(a, 2, u)));
        let hv = _mm512_maskz_loadu_ps(crate::simd512::first_lanes(u), h.as_ptr());
        let hn = _mm512_fmadd_ps(z, _mm512_sub_ps(hv, nn), nn);
        crate::simd512::store_first(h.as_mut_ptr(), hn, u);
    }

    /// [`super::gru_body`] in AVX-512 intrinsics, masked like [`lstm_avx512`].
    #[target_feature(enable = "avx512f,fma")]
    pub fn gru_avx512(gi: &[f32], gh: &[f32], stride: usize, h: &mut [f32]) {
        use super::v512::{sigmoid, tanh};
        use std::arch::x86_64::*;
        let u = h.len();
        if stride < u || gi.len() < 2 * stride + u || gh.len() < 2 * stride + u {
            return;
        }
        if stride == u && 3 * u <= 16 && gi.len() >= 16 && gh.len() >= 16 {
            // SAFETY: `gi` and `gh` hold 16 floats and `h` holds `u`.
            return unsafe { gru_in_one_vector(gi, gh, u, h) };
        }
        for k in (0..u).step_by(16) {
            let n = (u - k).min(16);
            let m = crate::simd512::first_lanes(n);
            // SAFETY: as in `lstm_avx512`: units `k..k + n` of every block, masked loads,
            // `store_first` writes exactly `n` floats.
            unsafe {
                let (a, b) = (gi.as_ptr().add(k), gh.as_ptr().add(k));
                let ld = |p: *const f32| _mm512_maskz_loadu_ps(m, p);
                let z = sigmoid(_mm512_add_ps(ld(a), ld(b)));
                let r = sigmoid(_mm512_add_ps(ld(a.add(stride)), ld(b.add(stride))));
                let nn = tanh(_mm512_fmadd_ps(
                    r,
                    ld(b.add(2 * stride)),
                    ld(a.add(2 * stride)),
                ));
                let hv = _mm512_maskz_loadu_ps(m, h.as_ptr().add(k));
                // (1 − z)·n + z·h = n + z·(h − n)
                let hn = _mm512_fmadd_ps(z, _mm512_sub_ps(hv, nn), nn);
                crate::simd512::store_first(h.as_mut_ptr().add(k), hn, n);
            }
        }
    }
}

/// The fast sigmoid and tanh of this module on AVX-512 vectors (same formulas).
#[cfg(target_arch = "x86_64")]
mod v512 {
    use crate::ops::exp::exp512;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    pub(super) fn sigmoid(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        // SAFETY: this function's own target features are exp512's.
        let e = unsafe { exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)) };
        _mm512_div_ps(one, _mm512_add_ps(one, e))
    }

    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    pub(super) fn tanh(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_epi32(i32::MIN);
        let ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
        // SAFETY: as above.
        let e = unsafe { exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0), ax)) };
        let t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
        let xs = _mm512_and_si512(sign, _mm512_castps_si512(x));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), xs))
    }
}

macro_rules! dispatch {
    ($generic:expr, $avx2:path, $avx512:path, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use crate::cpu::KernelChoice::*;
            match crate::cpu::kernel_choice() {
                // SAFETY: kernel_choice() only returns families this CPU supports.
                Avx512 | Avx512Vnni => return unsafe { $avx512($($arg),*) },
                // SAFETY: as above.
                Avx2 => return unsafe { $avx2($($arg),*) },
                Generic => {}
            }
        }
        $generic
    }};
}

/// LSTM state update (see the body above for the formula): gate block `b` of `gates` starts at
/// `b · stride` (`stride >= u`; a stride that is a multiple of 16 lets every gate load read
/// exactly one vector the gate product stored, which the CPU forwards without waiting),
/// `h.len() == c.len() == u`. The generic family uses libm.
pub fn lstm_update(gates: &[f32], stride: usize, c: &mut [f32], h: &mut [f32]) {
    dispatch!(
        lstm_body::<Libm>(gates, stride, c, h),
        x86::lstm_avx2,
        x86::lstm_avx512,
        (gates, stride, c, h)
    )
}

/// GRU state update, gate blocks at multiples of `stride` in `gi` and `gh` (as in
/// [`lstm_update`]). The generic family uses libm.
pub fn gru_update(gi: &[f32], gh: &[f32], stride: usize, h: &mut [f32]) {
    dispatch!(
        gru_body::<Libm>(gi, gh, stride, h),
        x86::gru_avx2,
        x86::gru_avx512,
        (gi, gh, stride, h)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_math_is_close_to_libm() {
        let mut worst = (0.0f32, 0.0f32, 0.0f32);
        for i in -20000..=20000 {
            let x = i as f32 * 0.001;
            let e = (exp_fast(x) - x.exp()).abs() / x.exp();
            let s = (sigmoid_fast(x) - Libm::sigmoid(x)).abs();
            let t = (tanh_fast(x) - x.tanh()).abs();
            worst = (worst.0.max(e), worst.1.max(s), worst.2.max(t));
        }
        assert!(
            worst.0 < 3e-7 && worst.1 < 2e-7 && worst.2 < 3e-7,
            "{worst:?}"
        );
        assert!(exp_fast(-1000.0).is_finite());
        assert!(exp_fast(1000.0).is_finite() && sigmoid_fast(-1000.0) >= 0.0);
        assert_eq!(tanh_fast(0.0), 0.0);
    }

    fn seeded(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn cell_updates_match_the_libm_reference_on_edge_lengths() {
        for (u, stride) in [
            (0, 0),
            (1, 1),
            (7, 7),
            (8, 8),
            (15, 15),
            (16, 16),
            (17, 17),
            (33, 33),
            (4, 16),
            (24, 32),
            (3, 3),
            (4, 4),
            (5, 5),
        ] {
            // At least 16 values: the AVX-512 cells read all gates of up to 4 units as one vector.
            let gates = seeded((3 * stride + u).max(16), u as u32 + 1);
            let (c0, h0) = (seeded(u, 99), seeded(u, 98));
            let (mut c_ref, mut h_ref) = (c0.clone(), h0.clone());
            lstm_body::<Libm>(&gates, stride, &mut c_ref, &mut h_ref);
            let (mut c, mut h) = (c0.clone(), h0.clone());
            lstm_update(&gates, stride, &mut c, &mut h);
            let (mut c_f, mut h_f) = (c0.clone(), h0.clone());
            lstm_body::<Fast>(&gates, stride, &mut c_f, &mut h_f);
            for k in 0..u {
                for (a, b) in [
                    (c[k], c_ref[k]),
                    (h[k], h_ref[k]),
                    (c_f[k], c_ref[k]),
                    (h_f[k], h_ref[k]),
                ] {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "lstm u={u}: {a} vs {b}"
                    );
                }
            }
            let (gi, gh) = (
                seeded((2 * stride + u).max(16), 5),
                seeded((2 * stride + u).max(16), 6),
            );
            let mut g_ref = h0.clone();
            gru_body::<Libm>(&gi, &gh, stride, &mut g_ref);
            let mut g = h0.clone();
            gru_update(&gi, &gh, stride, &mut g);
            let mut g_f = h0.clone();
            gru_body::<Fast>(&gi, &gh, stride, &mut g_f);
            for k in 0..u {
                assert!(
                    (g[k] - g_ref[k]).abs() <= 1e-6 && (g_f[k] - g_ref[k]).abs() <= 1e-6,
                    "gru u={u}"
                );
            }
        }
    }
}
