//! The one vectorizable `exp` of kiln and the kernels built on it: `exp` range-reduced to
//! `2^n · e^r` (`|r| ≤ ln2/2`) with a degree-6 polynomial for `e^r` (Cephes' `expf`
//! coefficients), within 2 ulp of libm over `[-80, 88)` (below, results turn subnormal and
//! lose relative precision, never sign or finiteness; inputs are clamped to `[-87, 88]`),
//! written with float operations and bit casts only so loops over it compile to SIMD; and the
//! unnormalized softmax weights that single-query attention needs.

/// Coefficients of `P` in `e^r ≈ 1 + r + r²·P(r)`, lowest first (Cephes' `expf`).
const P: [f32; 6] = [
    0.5,
    1.666_666_5e-1,
    4.166_579_6e-2,
    8.333_452e-3,
    1.398_199_9e-3,
    1.987_569_1e-4,
];

#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it leaves round-to-even(x·log2e) in the low mantissa bits, so n and
    // 2^n come from bit operations alone (float→int casts would stop vectorization).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r ≈ 1 + r + r²·P(r), P by Horner's rule. (exp512 uses Estrin's scheme for its
    // latency; here, in throughput-bound loops, Horner is as fast, and it keeps the exact
    // rounding that attention had when perplexity was checked against llama.cpp: evaluating
    // the same polynomial in Estrin's order moved GPL-3 perplexity by 0.17%, because the
    // attention output's 8-bit quantization turns last-bit differences into whole steps.)
    let mut p = P[5];
    for k in (0..5).rev() {
        p = p * r + P[k];
    }
    let e = p * r * r + r + 1.0;
    // n is in [-126, 127] after the clamp; its bits sit in t's low mantissa.
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    e * scale
}

/// [`exp_fast`]'s algorithm on the 16 lanes of an AVX-512 vector, for kernels written in
/// intrinsics (the recurrent cells, which wait on it every frame): the range-reduction
/// multiply-add is fused and the polynomial is evaluated by Estrin's scheme (three dependent
/// steps instead of five), so results agree with `exp_fast` within an ulp or two.
///
/// # Safety
/// AVX-512F and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
pub(crate) unsafe fn exp512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), _mm512_set1_ps(MAGIC));
    let n = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let c = |k: usize| _mm512_set1_ps(P[k]);
    let r2 = _mm512_mul_ps(r, r);
    let a = _mm512_fmadd_ps(c(1), r, c(0));
    let b = _mm512_fmadd_ps(c(3), r, c(2));
    let q = _mm512_fmadd_ps(c(5), r, c(4));
    let p = _mm512_fmadd_ps(_mm512_mul_ps(r2, r2), q, _mm512_fmadd_ps(r2, b, a));
    let one = _mm512_set1_ps(1.0);
    let e = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, one));
    let ni = _mm512_sub_epi32(
        _mm512_castps_si512(t),
        _mm512_set1_epi32(MAGIC.to_bits() as i32),
    );
    let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(ni, _mm512_set1_epi32(127)));
    _mm512_mul_ps(e, _mm512_castsi512_ps(scale))
}

/// `x[i] = exp(x[i] · scale − shift)` for every element; returns their sum. With `shift` the
/// maximum of `x · scale` these are a softmax's weights before normalization (each ≤ 1).
pub fn exp_shifted_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    super::dispatch_fma!(
        {
            let mut sum = 0.0;
            for v in x.iter_mut() {
                *v = (*v * scale - shift).exp();
                sum += *v;
            }
            sum
        },
        x86::exp_shifted_sum_avx2,
        x86::exp_shifted_sum_avx512,
        (x, scale, shift)
    )
}

/// Lanes of independent partial sums, so the loop vectorizes without a serial dependency.
const SUM_LANES: usize = 16;

#[inline(always)]
fn exp_shifted_sum_fast(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0.0f32; SUM_LANES];
    let mut chunks = x.chunks_exact_mut(SUM_LANES);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v = exp_fast(*v * scale - shift);
            *a += *v;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_fast(*v * scale - shift);
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub fn exp_shifted_sum_avx2(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        super::exp_shifted_sum_fast(x, scale, shift)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub fn exp_shifted_sum_avx512(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        super::exp_shifted_sum_fast(x, scale, shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_within_a_few_ulp_of_libm_and_saturates() {
        let mut worst = 0.0f32;
        for i in -80_000..=87_900 {
            let x = i as f32 * 0.001;
            worst = worst.max((exp_fast(x) - x.exp()).abs() / x.exp());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp_fast(-1000.0).is_finite() && exp_fast(-1000.0) >= 0.0);
        assert!(exp_fast(1000.0).is_finite());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp512_matches_exp_fast() {
        use std::arch::x86_64::*;
        let f = crate::cpu::features();
        if !(f.avx512f && f.fma) {
            return;
        }
        let xs: Vec<f32> = (-1000..1000).map(|i| i as f32 * 0.093).collect();
        for c in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: features checked above; `c` and `got` hold 16 floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr()))) };
            for (g, &x) in got.iter().zip(c) {
                let want = exp_fast(x);
                assert!((g - want).abs() <= 2.5e-7 * want, "{x}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn every_family_matches_the_libm_reference() {
        for n in [0usize, 1, 15, 16, 17, 100, 513] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
                .collect();
            let scale = 0.125;
            let shift = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
            let mut want = x.clone();
            let want_sum: f32 = want
                .iter_mut()
                .map(|v| {
                    *v = (*v * scale - shift).exp();
                    *v
                })
                .sum();
            let mut fast = x.clone();
            let sum = exp_shifted_sum_fast(&mut fast, scale, shift);
            let mut dispatched = x.clone();
            let dsum = exp_shifted_sum(&mut dispatched, scale, shift);
            for ((a, b), c) in fast.iter().zip(&want).zip(&dispatched) {
                assert!((a - b).abs() <= 1e-6 * b.max(1e-30), "n={n}: {a} vs {b}");
                assert!((c - b).abs() <= 1e-6 * b.max(1e-30), "n={n}: {c} vs {b}");
            }
            assert!((sum - want_sum).abs() <= 1e-5 * want_sum.max(1.0), "n={n}");
            assert!((dsum - want_sum).abs() <= 1e-5 * want_sum.max(1.0), "n={n}");
        }
    }
}
