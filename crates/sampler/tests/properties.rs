//! Property tests of the sampling chain's invariants (top-k, top-p, min-p, temperature,
//! penalties) and of the log-softmax helpers, against naive references.

mod common;

use common::{argmax, clean, penalized, reference_chain, softmax};
use kiln_sampler::{log_softmax_at, top_logprobs, Sampler, SamplingParams};
use proptest::prelude::*;

/// Slack for comparing probabilities computed two independent ways in f64.
const PROB_TOL: f64 = 1e-9;
/// Slack for f32 probabilities returned by `candidates` against an f64 reference.
const F32_PROB_TOL: f64 = 1e-6;

/// Finite logits, sometimes with repeated values so ties get exercised.
fn logits(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -12.0f32..12.0,
            1 => Just(1.5f32),
            1 => Just(-3.0f32),
        ],
        1..max_len,
    )
}

/// Logits that may hold NaN and infinities.
fn wild_logits(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            6 => -20.0f32..20.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => prop::num::f32::ANY,
        ],
        0..max_len,
    )
}

fn sampled(temperature: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplingParams::default()
    }
}

fn sampler(p: SamplingParams) -> Sampler {
    match Sampler::new(p) {
        Ok(s) => s,
        Err(e) => panic!("valid params rejected: {e}"),
    }
}

proptest! {
    #[test]
    fn greedy_is_argmax(l in wild_logits(200)) {
        let mut s = sampler(SamplingParams::greedy());
        let clean_l: Vec<f32> = l.iter().map(|&x| clean(x)).collect();
        let want = if l.is_empty() { 0 } else { argmax(&clean_l) };
        prop_assert_eq!(s.sample(&l), want);
    }

    #[test]
    fn top_k_stays_within_the_k_largest(
        l in logits(300), k in 1usize..50, t in 0.1f32..3.0, seed: u64
    ) {
        let mut s = sampler(SamplingParams { top_k: k, ..sampled(t, seed) });
        for _ in 0..4 {
            let tok = s.sample(&l) as usize;
            let larger = l.iter().filter(|&&x| x > l[tok]).count();
            prop_assert!(larger < k, "token {} has {} larger logits, k = {}", tok, larger, k);
        }
    }

    #[test]
    fn top_p_stays_within_the_nucleus(
        l in logits(300), top_p in 0.01f32..1.0, t in 0.2f32..3.0, seed: u64
    ) {
        let mut s = sampler(SamplingParams { top_p, ..sampled(t, seed) });
        let probs = softmax(&l, t);
        for _ in 0..4 {
            let tok = s.sample(&l) as usize;
            // The token is in the smallest prefix with mass >= top_p exactly when the mass of
            // strictly more probable tokens is still below top_p.
            let above: f64 = probs.iter().filter(|&&q| q > probs[tok]).sum();
            prop_assert!(above < f64::from(top_p) + PROB_TOL, "mass above = {}", above);
        }
    }

    #[test]
    fn min_p_never_returns_an_improbable_token(
        l in logits(300), min_p in 0.0f32..=1.0, t in 0.2f32..3.0, seed: u64
    ) {
        let mut s = sampler(SamplingParams { min_p, ..sampled(t, seed) });
        let probs = softmax(&l, t);
        let p_max = probs.iter().copied().fold(0.0, f64::max);
        for _ in 0..4 {
            let tok = s.sample(&l) as usize;
            prop_assert!(probs[tok] >= f64::from(min_p) * p_max * (1.0 - PROB_TOL));
        }
    }

    #[test]
    fn vanishing_temperature_is_greedy(
        ids in Just((0..64u32).collect::<Vec<u32>>()).prop_shuffle(),
        n in 1usize..64, seed: u64, default_chain: bool
    ) {
        // Distinct logits (0.25 apart), so the argmax is unique.
        let l: Vec<f32> = ids[..n].iter().map(|&i| i as f32 * 0.25 - 8.0).collect();
        let base = if default_chain { SamplingParams::default() } else { sampled(1.0, 0) };
        let mut s = sampler(SamplingParams { temperature: 1e-4, seed, ..base });
        let mut g = sampler(SamplingParams::greedy());
        prop_assert_eq!(s.sample(&l), g.sample(&l));
    }

    #[test]
    fn repeat_penalty_lowers_a_repeated_token(
        l in logits(60), pick in any::<prop::sample::Index>(), penalty in 1.05f32..3.0
    ) {
        let tok = pick.index(l.len()) as u32;
        let params = SamplingParams { repeat_penalty: penalty, ..sampled(1.0, 0) };
        let before = prob_of(&mut sampler(params.clone()), &l, tok);
        let mut s = sampler(params);
        s.accept(tok);
        let after = prob_of(&mut s, &l, tok);
        if l.len() > 1 && l[tok as usize] != 0.0 && before < 1.0 {
            prop_assert!(after < before, "{} -> {}", before, after);
        } else {
            prop_assert!(after <= before);
        }
    }

    #[test]
    fn presence_and_frequency_penalties_lower_a_repeated_token(
        l in logits(60), pick in any::<prop::sample::Index>(),
        presence in 0.0f32..2.0, frequency in 0.05f32..2.0, repeats in 1usize..4
    ) {
        let tok = pick.index(l.len()) as u32;
        let params = SamplingParams {
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..sampled(1.0, 0)
        };
        let before = prob_of(&mut sampler(params.clone()), &l, tok);
        let mut s = sampler(params);
        s.accept_all(&vec![tok; repeats]);
        let after = prob_of(&mut s, &l, tok);
        if l.len() > 1 && before < 1.0 {
            prop_assert!(after < before, "{} -> {}", before, after);
        } else {
            prop_assert!(after <= before);
        }
    }

    #[test]
    fn candidates_match_the_reference_chain(
        l in wild_logits(400),
        t in prop_oneof![Just(0.0f32), 0.1f32..2.5],
        top_k in prop_oneof![Just(0usize), 1usize..100],
        top_p in prop_oneof![Just(1.0f32), 0.05f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.0f32..0.5],
        repeat_penalty in prop_oneof![Just(1.0f32), 0.5f32..2.0],
        presence in -1.0f32..1.0,
        history in prop::collection::vec(0u32..450, 0..20),
        repeat_last_n in 0usize..16,
    ) {
        let p = SamplingParams {
            temperature: t, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
            presence_penalty: presence, frequency_penalty: 0.1, seed: 1,
        };
        let mut s = sampler(p.clone());
        s.accept_all(&history);
        let got = s.candidates(&l);
        let want = reference_chain(&l, &p, &history);
        let got_ids: Vec<u32> = got.iter().map(|c| c.0).collect();
        let want_ids: Vec<u32> = want.iter().map(|c| c.0).collect();
        prop_assert_eq!(got_ids, want_ids);
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((f64::from(g.1) - w.1).abs() < F32_PROB_TOL, "{:?} vs {:?}", g, w);
        }
    }

    #[test]
    fn sampled_tokens_come_from_the_candidates(
        l in wild_logits(300), seed: u64, default_chain: bool
    ) {
        let base = if default_chain { SamplingParams::default() } else { sampled(0.9, 0) };
        let mut s = sampler(SamplingParams { seed, ..base });
        let cands = s.candidates(&l);
        let total: f32 = cands.iter().map(|c| c.1).sum();
        if l.is_empty() {
            prop_assert!(cands.is_empty());
            prop_assert_eq!(s.sample(&l), 0);
        } else {
            prop_assert!((f64::from(total) - 1.0).abs() < F32_PROB_TOL * 10.0);
            for _ in 0..8 {
                let tok = s.sample(&l);
                prop_assert!(cands.iter().any(|c| c.0 == tok && c.1 > 0.0), "{}", tok);
            }
        }
    }

    #[test]
    fn odd_inputs_never_panic(
        l in prop::collection::vec(prop::num::f32::ANY, 0..100),
        t in 0.0f32..1e6, k in 0usize..200, top_p in 0.001f32..=1.0, min_p in 0.0f32..=1.0,
        rp in 0.01f32..100.0, presence in -1e30f32..1e30, frequency in -1e30f32..1e30,
        history in prop::collection::vec(any::<u32>(), 0..10),
    ) {
        let p = SamplingParams {
            temperature: t, top_k: k, top_p, min_p, repeat_penalty: rp, repeat_last_n: 8,
            presence_penalty: presence, frequency_penalty: frequency, seed: 3,
        };
        let mut s = sampler(p);
        s.accept_all(&history);
        let tok = s.sample(&l);
        prop_assert!(l.is_empty() && tok == 0 || (tok as usize) < l.len());
        let _ = s.candidates(&l);
    }

    #[test]
    fn log_softmax_exponentiates_to_one(l in wild_logits(300)) {
        let has_finite = l.iter().any(|&x| clean(x) > f32::NEG_INFINITY);
        let total: f64 = (0..l.len() as u32)
            .map(|i| f64::from(log_softmax_at(&l, i)).exp())
            .sum();
        if has_finite {
            prop_assert!((total - 1.0).abs() < 1e-5, "sum = {}", total);
        } else {
            prop_assert_eq!(total, 0.0);
        }
    }

    #[test]
    fn log_softmax_matches_softmax(l in logits(100), t in any::<prop::sample::Index>()) {
        let i = t.index(l.len());
        let want = softmax(&l, 1.0)[i].ln();
        let got = f64::from(log_softmax_at(&l, i as u32));
        prop_assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "{} vs {}", got, want);
    }

    #[test]
    fn top_logprobs_are_the_k_best_in_order(l in wild_logits(200), k in 0usize..30) {
        let top = top_logprobs(&l, k);
        prop_assert_eq!(top.len(), k.min(l.len()));
        // Ordered by logit (then id); logprobs follow, though rounding can make them equal.
        for w in top.windows(2) {
            prop_assert!(w[0].1 >= w[1].1);
        }
        let clean_l: Vec<f32> = l.iter().map(|&x| clean(x)).collect();
        for &(id, lp) in &top {
            prop_assert_eq!(lp, log_softmax_at(&l, id));
            let larger = clean_l.iter().filter(|&&x| x > clean_l[id as usize]).count();
            prop_assert!(larger < k);
        }
    }

    #[test]
    fn penalties_outside_the_window_are_forgotten(
        l in logits(40), window in 1usize..8, old in 0u32..40
    ) {
        let p = SamplingParams { repeat_penalty: 2.0, repeat_last_n: window, ..sampled(1.0, 0) };
        let mut s = sampler(p.clone());
        s.accept(old);
        // `window` tokens outside the vocabulary push `old` out without penalizing anything.
        s.accept_all(&vec![u32::MAX; window]);
        let history: Vec<u32> = s.history().collect();
        prop_assert_eq!(history.len(), window);
        let got = s.candidates(&l);
        let want = reference_chain(&l, &p, &[]);
        let got_ids: Vec<u32> = got.iter().map(|c| c.0).collect();
        let want_ids: Vec<u32> = want.iter().map(|c| c.0).collect();
        prop_assert_eq!(got_ids, want_ids);
        prop_assert_eq!(penalized(&l, &p, &history), l.iter().map(|&x| clean(x)).collect::<Vec<_>>());
    }
}

/// Probability of `tok` in the post-chain distribution (0 when it was cut).
fn prob_of(s: &mut Sampler, l: &[f32], tok: u32) -> f32 {
    s.candidates(l)
        .iter()
        .find(|c| c.0 == tok)
        .map_or(0.0, |c| c.1)
}
