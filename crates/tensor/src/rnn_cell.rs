//! Element-wise parts of the recurrent cells (LSTM and GRU state updates) with a vectorizable
//! `exp`, so the gate non-linearities run as SIMD instead of one libm call per value.
//!
//! `exp` is range-reduced to `2^n · e^r` (`|r| ≤ ln2/2`) with a degree-6 polynomial for `e^r`
//! (Cephes' `expf` coefficients): within 2 ulp of libm over the range the cells use, which
//! keeps the RTNeural conformance tests (1e-6 absolute) passing. The scalar references use
//! libm (`f32::exp`, `f32::tanh`); tests compare every family against them.

#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n through the exponent bits; n is in [-126, 127] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

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

/// LSTM update: `gates` holds the pre-activations `[i | f | g | o]` (`4u` values, biases
/// included); `c' = σ(f)·c + σ(i)·tanh(g)`, `h' = σ(o)·tanh(c')`.
#[inline(always)]
fn lstm_body<M: Math>(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let u = c.len();
    let (i, rest) = gates.split_at(u);
    let (f, rest) = rest.split_at(u);
    let (g, o) = rest.split_at(u);
    for k in 0..u.min(h.len()).min(o.len()) {
        let cn = M::sigmoid(f[k]) * c[k] + M::sigmoid(i[k]) * M::tanh(g[k]);
        c[k] = cn;
        h[k] = M::sigmoid(o[k]) * M::tanh(cn);
    }
}

/// GRU update (`reset_after`): `gi = W_i·x + b_i`, `gh = W_h·h + b_h`, blocks `[z | r | n]`;
/// `z = σ(gi_z + gh_z)`, `r = σ(gi_r + gh_r)`, `n = tanh(gi_n + r·gh_n)`, `h' = (1−z)·n + z·h`.
#[inline(always)]
fn gru_body<M: Math>(gi: &[f32], gh: &[f32], h: &mut [f32]) {
    let u = h.len();
    if gi.len() < 3 * u || gh.len() < 3 * u {
        return;
    }
    for k in 0..u {
        let z = M::sigmoid(gi[k] + gh[k]);
        let r = M::sigmoid(gi[u + k] + gh[u + k]);
        let n = M::tanh(gi[2 * u + k] + r * gh[2 * u + k]);
        h[k] = (1.0 - z) * n + z * h[k];
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Fast;

    #[target_feature(enable = "avx2,fma")]
    pub fn lstm_avx2(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        super::lstm_body::<Fast>(gates, c, h)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub fn lstm_avx512(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        super::lstm_body::<Fast>(gates, c, h)
    }
    #[target_feature(enable = "avx2,fma")]
    pub fn gru_avx2(gi: &[f32], gh: &[f32], h: &mut [f32]) {
        super::gru_body::<Fast>(gi, gh, h)
    }
    #[target_feature(enable = "avx512f,fma")]
    pub fn gru_avx512(gi: &[f32], gh: &[f32], h: &mut [f32]) {
        super::gru_body::<Fast>(gi, gh, h)
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

/// LSTM state update (see the body above for the formula); `gates.len() == 4 · c.len()`,
/// `h.len() == c.len()`. The generic family uses libm.
pub fn lstm_update(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    dispatch!(
        lstm_body::<Libm>(gates, c, h),
        x86::lstm_avx2,
        x86::lstm_avx512,
        (gates, c, h)
    )
}

/// GRU state update; `gi.len() == gh.len() == 3 · h.len()`. The generic family uses libm.
pub fn gru_update(gi: &[f32], gh: &[f32], h: &mut [f32]) {
    dispatch!(
        gru_body::<Libm>(gi, gh, h),
        x86::gru_avx2,
        x86::gru_avx512,
        (gi, gh, h)
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
        for u in [0, 1, 7, 8, 15, 16, 17, 33] {
            let gates = seeded(4 * u, u as u32 + 1);
            let (c0, h0) = (seeded(u, 99), seeded(u, 98));
            let (mut c_ref, mut h_ref) = (c0.clone(), h0.clone());
            lstm_body::<Libm>(&gates, &mut c_ref, &mut h_ref);
            let (mut c, mut h) = (c0.clone(), h0.clone());
            lstm_update(&gates, &mut c, &mut h);
            let (mut c_f, mut h_f) = (c0.clone(), h0.clone());
            lstm_body::<Fast>(&gates, &mut c_f, &mut h_f);
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
            let (gi, gh) = (seeded(3 * u, 5), seeded(3 * u, 6));
            let mut g_ref = h0.clone();
            gru_body::<Libm>(&gi, &gh, &mut g_ref);
            let mut g = h0.clone();
            gru_update(&gi, &gh, &mut g);
            let mut g_f = h0.clone();
            gru_body::<Fast>(&gi, &gh, &mut g_f);
            for k in 0..u {
                assert!(
                    (g[k] - g_ref[k]).abs() <= 1e-6 && (g_f[k] - g_ref[k]).abs() <= 1e-6,
                    "gru u={u}"
                );
            }
        }
    }
}
