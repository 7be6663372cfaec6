//! Log-softmax helpers over raw logits, for logprobs in responses and for perplexity.
//!
//! These describe the model's raw distribution (temperature 1, no penalties or truncation);
//! [`Sampler::candidates`](crate::Sampler::candidates) describes the post-chain one.

use crate::math::{exp_nonpositive, rank, sanitize};

/// `(max, ln(sum(exp(l - max))))` over the sanitized logits, or `None` when there is no
/// finite logit to normalize against (empty, or every logit `-inf`/NaN).
fn log_normalizer(logits: &[f32]) -> Option<(f64, f64)> {
    let max = logits
        .iter()
        .map(|&l| sanitize(l))
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let max = f64::from(max);
    let sum: f64 = logits
        .iter()
        .map(|&l| exp_nonpositive(f64::from(sanitize(l)) - max))
        .sum();
    Some((max, sum.ln()))
}

/// `ln softmax(logits)[token]`, computed stably (max subtraction, `f64` accumulation).
///
/// NaN logits count as `-inf` and `+inf` ones as `f32::MAX`, as in the sampler. Returns
/// `-inf` when `token` is out of range, when its logit is `-inf`/NaN, or when every logit is
/// `-inf`/NaN (the distribution is undefined). Costs one pass over the vocabulary; summing it
/// over a sequence gives the log-likelihood used for perplexity.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    let Some(&raw) = logits.get(token as usize) else {
        return f32::NEG_INFINITY;
    };
    match log_normalizer(logits) {
        Some((max, ln_sum)) => ((f64::from(sanitize(raw)) - max) - ln_sum) as f32,
        None => f32::NEG_INFINITY,
    }
}

/// Writes `ln softmax(logits)` into `out` (same length; extra elements of the longer slice
/// are ignored), with the conventions of [`log_softmax_at`]; every value is `-inf` when the
/// distribution is undefined. One normalizer pass plus one write pass.
pub fn log_softmax_into(logits: &[f32], out: &mut [f32]) {
    let norm = log_normalizer(logits);
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = match norm {
            Some((max, ln_sum)) => ((f64::from(sanitize(l)) - max) - ln_sum) as f32,
            None => f32::NEG_INFINITY,
        };
    }
}

/// The `k` most likely tokens with their log-probabilities, most likely first (ties: lower
/// id first). Returns `min(k, logits.len())` entries; logprobs are `-inf` where
/// [`log_softmax_at`] would give `-inf`. Uses a partial selection, not a full sort.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let mut pairs: Vec<(u32, f32)> = (0u32..)
        .zip(logits)
        .map(|(id, &l)| (id, sanitize(l)))
        .collect();
    let order = |a: &(u32, f32), b: &(u32, f32)| rank(a.1, a.0, b.1, b.0);
    if k < pairs.len() {
        pairs.select_nth_unstable_by(k - 1, order);
        pairs.truncate(k);
    }
    pairs.sort_unstable_by(order);
    let norm = log_normalizer(logits);
    for p in &mut pairs {
        p.1 = match norm {
            Some((max, ln_sum)) => ((f64::from(p.1) - max) - ln_sum) as f32,
            None => f32::NEG_INFINITY,
        };
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agreement of f32 logprobs with an f64 reference computed independently.
    const LOGPROB_TOL: f64 = 1e-6;

    #[test]
    fn matches_direct_formula() {
        let logits = [1.0f32, 2.0, 3.0, -1.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let want = (f64::from(l).exp() / z).ln();
            let got = f64::from(log_softmax_at(&logits, i as u32));
            assert!((got - want).abs() < LOGPROB_TOL, "{i}: {got} vs {want}");
        }
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let logits = [1e30f32, 1e30, -1e30];
        let half = std::f64::consts::LN_2;
        assert!((f64::from(log_softmax_at(&logits, 0)) + half).abs() < LOGPROB_TOL);
        // Finite but astronomically unlikely: the exact value, not an overflow.
        assert_eq!(log_softmax_at(&logits, 2), -2e30);
    }

    #[test]
    fn special_values() {
        assert_eq!(log_softmax_at(&[], 0), f32::NEG_INFINITY);
        assert_eq!(log_softmax_at(&[0.0, 0.0], 2), f32::NEG_INFINITY);
        assert_eq!(log_softmax_at(&[f32::NAN, 0.0], 0), f32::NEG_INFINITY);
        assert_eq!(log_softmax_at(&[f32::NAN, 0.0], 1), 0.0);
        assert_eq!(
            log_softmax_at(&[f32::NEG_INFINITY; 3], 0),
            f32::NEG_INFINITY
        );
        let two_inf = [f32::INFINITY, 5.0, f32::INFINITY];
        let lp = f64::from(log_softmax_at(&two_inf, 2));
        assert!((lp + std::f64::consts::LN_2).abs() < LOGPROB_TOL, "{lp}");
    }

    #[test]
    fn top_logprobs_orders_and_truncates() {
        let logits = [0.5f32, 3.0, 3.0, -2.0, 1.0];
        let top = top_logprobs(&logits, 3);
        let ids: Vec<u32> = top.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 2, 4]);
        for &(id, lp) in &top {
            assert_eq!(lp, log_softmax_at(&logits, id));
        }
        assert_eq!(top_logprobs(&logits, 0), vec![]);
        assert_eq!(top_logprobs(&logits, 99).len(), 5);
        assert_eq!(top_logprobs(&[], 3), vec![]);
        let dead = top_logprobs(&[f32::NAN, f32::NEG_INFINITY], 2);
        assert_eq!(dead, vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]);
    }
}
