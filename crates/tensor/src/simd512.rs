//! AVX-512 pieces the hand-written kernels share: lane masks and stores of a vector's first
//! lanes. Results are stored with plain (unmasked) stores because a masked store cannot
//! forward its data to the loads that read the result next; on Zen 4 such a load waits for the
//! store to retire, which cost more than the whole product of a 4×4 dense layer.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The mask of the first `n` lanes (all 16 for `n >= 16`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn first_lanes(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

/// Stores lanes `0..n` of `v` (`n <= 16`) at `out` with plain 32-, 16-, 8- and 4-byte stores.
///
/// # Safety
/// AVX-512F must be available and `out` valid for `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn store_first(out: *mut f32, v: __m512, n: usize) {
    if n >= 16 {
        _mm512_storeu_ps(out, v);
        return;
    }
    let mut k = 0;
    let mut oct = _mm512_castps512_ps256(v);
    if n >= 8 {
        _mm256_storeu_ps(out, oct);
        oct = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        k = 8;
    }
    let mut quad = _mm256_castps256_ps128(oct);
    if n - k >= 4 {
        _mm_storeu_ps(out.add(k), quad);
        quad = _mm256_extractf128_ps::<1>(oct);
        k += 4;
    }
    if n - k >= 2 {
        _mm_store_sd(out.add(k) as *mut f64, _mm_castps_pd(quad));
        quad = _mm_movehl_ps(quad, quad);
        k += 2;
    }
    if n > k {
        _mm_store_ss(out.add(k), quad);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn store_first_writes_exactly_n_lanes() {
        if !crate::cpu::features().avx512f {
            return;
        }
        let src: Vec<f32> = (0..16).map(|i| i as f32 + 1.0).collect();
        for n in 0..=16 {
            let mut out = [-1.0f32; 17];
            // SAFETY: AVX-512F checked above; `out` has 17 floats.
            unsafe { store_first(out.as_mut_ptr(), _mm512_loadu_ps(src.as_ptr()), n) };
            assert_eq!(&out[..n], &src[..n], "n={n}");
            assert!(out[n..].iter().all(|&v| v == -1.0), "n={n}");
            assert_eq!(first_lanes(n).count_ones() as usize, n);
        }
    }
}
