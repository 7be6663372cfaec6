//! Numeric helpers shared by the chain and the log-softmax functions: logit sanitizing, the
//! canonical candidate order, and an `exp` built from basic IEEE operations only.

use std::cmp::Ordering;

/// Maps a raw logit into the range the chain works in: NaN becomes `-inf` (never chosen),
/// `+inf` becomes `f32::MAX` (so several `+inf` tokens share the mass instead of producing
/// `inf - inf`), and `-0.0` becomes `0.0` (so ordering is purely numeric).
#[inline]
#[allow(clippy::manual_clamp)]
pub(crate) fn sanitize(x: f32) -> f32 {
    // `+ 0.0` turns -0.0 into 0.0; `max` drops NaN in favour of -inf (`clamp` would keep the
    // NaN); `min` clamps +inf. Branch-free, so the loop over a vocabulary vectorizes.
    (x + 0.0).max(f32::NEG_INFINITY).min(f32::MAX)
}

/// Canonical candidate order: higher logit first, then lower token id. Inputs are sanitized,
/// so `total_cmp` agrees with numeric order and the order is total; any sort or selection
/// therefore gives the same sequence regardless of algorithm.
#[inline]
pub(crate) fn rank(a_logit: f32, a_id: u32, b_logit: f32, b_id: u32) -> Ordering {
    b_logit.total_cmp(&a_logit).then(a_id.cmp(&b_id))
}

/// `e^x` for `x <= 0`, from additions, multiplications and bit manipulation only.
///
/// The standard library's `exp` calls the platform libm, whose last bit may differ between
/// systems; sampling compares cumulative sums against a random threshold, so that bit could
/// change a chosen token. This version gives identical bits everywhere (relative error
/// below 1e-15) and has no branches or calls, so it is cheap over a whole vocabulary.
///
/// Results below `e^-708` (about 3e-308) are flushed to 0, as are `-inf` and NaN (NaN stands
/// for `-inf` in the chain). Only non-positive inputs occur (logits minus their maximum);
/// positive ones are clamped to 0.
pub(crate) fn exp_nonpositive(x: f64) -> f64 {
    // ln 2 split in two: LN2_HI has its low 21 mantissa bits clear, so k * LN2_HI is exact
    // for every k used here; LN2_LO carries the rest.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // e^CUTOFF is still a normal f64, so 2^k below needs no subnormal handling.
    const CUTOFF: f64 = -708.0;
    // Adding 1.5 * 2^52 rounds to an integer (ties to even) and leaves it in the low bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    debug_assert!(x <= 0.0 || x.is_nan(), "exp_nonpositive({x})");

    let live = x > CUTOFF; // false for NaN and -inf too
    let xc = if live { x.min(0.0) } else { CUTOFF };
    let shifted = xc * LOG2_E + SHIFT;
    let k = shifted - SHIFT; // round(xc / ln 2), in [-1022, 0]
    let r = (xc - k * LN2_HI) - k * LN2_LO; // |r| <= ln(2) / 2

    // Taylor series to r^13 (truncation error < 0.347^14 / 14! ~ 4e-18), evaluated by
    // Estrin's scheme: same operation count as Horner but a far shorter dependency chain, so
    // a loop over many tokens is not latency-bound.
    let c = &INV_FACTORIAL;
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2;
    let q1 = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2;
    let q2 = (c[8] + c[9] * r) + (c[10] + c[11] * r) * r2;
    let q3 = c[12] + c[13] * r;
    let p = (q0 + q1 * r4) + (q2 + q3 * r4) * r8;
    // The bits of `shifted` are SHIFT's plus k (two's complement), so the biased exponent
    // k + 1023 of 2^k is pure integer arithmetic on them; 2^k is a normal number here.
    let biased = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(1023);
    let scale = f64::from_bits(biased << 52);
    if live {
        p * scale
    } else {
        0.0
    }
}

/// `1 / i!` for i in 0..=13, the Taylor coefficients of `exp`.
const INV_FACTORIAL: [f64; 14] = {
    let mut a = [1.0; 14];
    let mut i = 1;
    while i < 14 {
        a[i] = a[i - 1] / i as f64;
        i += 1;
    }
    a
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative agreement between our `exp` and the platform's (which is itself ~1 ulp).
    const EXP_REL_TOL: f64 = 1e-14;

    #[test]
    fn exp_agrees_with_std_exp() {
        let mut x = -707.9;
        while x < 0.0 {
            let (ours, std) = (exp_nonpositive(x), x.exp());
            assert!(
                ((ours - std) / std).abs() < EXP_REL_TOL,
                "x={x} ours={ours} std={std}"
            );
            x += 0.013_205_7;
        }
        for &x in &[
            -1e-300, -0.0, -0.5, -1.0, -0.346, -0.347, -0.3466, -100.5, -707.99,
        ] {
            let (ours, std) = (exp_nonpositive(x), f64::exp(x));
            assert!(((ours - std) / std).abs() < EXP_REL_TOL, "x={x}");
        }
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(f64::NAN), 0.0);
        assert_eq!(exp_nonpositive(-708.0), 0.0);
        assert_eq!(exp_nonpositive(-1e6), 0.0);
        assert!(exp_nonpositive(-707.9) > 0.0);
    }

    #[test]
    fn sanitize_maps_specials() {
        assert_eq!(sanitize(f32::NAN), f32::NEG_INFINITY);
        assert_eq!(sanitize(f32::INFINITY), f32::MAX);
        assert_eq!(sanitize(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(sanitize(-0.0).is_sign_positive());
        assert_eq!(sanitize(1.5), 1.5);
    }

    #[test]
    fn rank_prefers_higher_logit_then_lower_id() {
        assert_eq!(rank(2.0, 5, 1.0, 0), Ordering::Less);
        assert_eq!(rank(1.0, 0, 1.0, 5), Ordering::Less);
        assert_eq!(rank(1.0, 5, 1.0, 5), Ordering::Equal);
        assert_eq!(rank(f32::NEG_INFINITY, 0, -1e30, 9), Ordering::Greater);
    }
}
