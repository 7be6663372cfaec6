//! Statistical tests: sampling frequencies match the intended probabilities (chi-square with
//! fixed seeds, so the outcome is deterministic).

mod common;

use common::{pseudo_logits, softmax};
use kiln_sampler::{Sampler, SamplingParams};

/// Standard-normal quantile for 0.999.
const Z_999: f64 = 3.090;

/// 99.9th percentile of the chi-square distribution with `df` degrees of freedom
/// (Wilson-Hilferty approximation; within about 1% for df >= 3, slightly strict below). A
/// correct sampler exceeds it about once in a thousand seeds; the seeds here are fixed.
fn chi2_critical(df: usize) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + Z_999 * a.sqrt()).powi(3)
}

fn sampler(p: SamplingParams) -> Sampler {
    match Sampler::new(p) {
        Ok(s) => s,
        Err(e) => panic!("valid params rejected: {e}"),
    }
}

/// Draws `n` tokens and returns Pearson's chi-square statistic against `probs` (indexed by
/// token id) plus the number of draws that landed on a zero-probability token.
fn chi_square(s: &mut Sampler, logits: &[f32], probs: &[f64], n: usize) -> (f64, usize) {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[s.sample(logits) as usize] += 1;
    }
    let mut chi2 = 0.0;
    let mut impossible = 0;
    for (&c, &p) in counts.iter().zip(probs) {
        if p == 0.0 {
            impossible += c;
        } else {
            let e = p * n as f64;
            chi2 += (c as f64 - e).powi(2) / e;
        }
    }
    (chi2, impossible)
}

#[test]
fn critical_values_match_tables() {
    // Published 99.9% points; the approximation must be close where the tests use it.
    for (df, table) in [(9, 27.88), (20, 45.31), (40, 73.40), (100, 149.45)] {
        let rel = (chi2_critical(df) - table) / table;
        assert!(
            rel.abs() < 0.01,
            "df {df}: {} vs {table}",
            chi2_critical(df)
        );
    }
}

#[test]
fn frequencies_match_softmax_probabilities() {
    let logits = [1.0f32, 0.5, -0.3, 2.0, 0.0, -1.5, 1.2, 0.8, -0.7, 0.1];
    for (seed, t) in [(1u64, 1.0f32), (2, 0.7), (3, 1.8)] {
        let params = SamplingParams {
            temperature: t,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplingParams::default()
        };
        let probs = softmax(&logits, t);
        let (chi2, impossible) = chi_square(&mut sampler(params), &logits, &probs, 200_000);
        assert_eq!(impossible, 0);
        let df = logits.len() - 1;
        assert!(
            chi2 < chi2_critical(df),
            "seed {seed} T {t}: chi2 {chi2:.2} (df {df})"
        );
    }
}

#[test]
fn frequencies_match_candidates_after_truncation() {
    let configs = [
        SamplingParams {
            seed: 10,
            ..SamplingParams::default()
        },
        SamplingParams {
            seed: 11,
            top_k: 0,
            top_p: 0.8,
            min_p: 0.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            seed: 12,
            top_k: 12,
            top_p: 1.0,
            min_p: 0.1,
            ..SamplingParams::default()
        },
        SamplingParams {
            seed: 13,
            repeat_penalty: 1.4,
            presence_penalty: 0.3,
            frequency_penalty: 0.2,
            ..SamplingParams::default()
        },
    ];
    for params in configs {
        let seed = params.seed;
        let logits = pseudo_logits(200, seed, 3.0);
        let mut s = sampler(params);
        s.accept_all(&[3, 3, 17, 42, 150, 150, 150]);
        let mut probs = vec![0.0f64; logits.len()];
        let cands = s.candidates(&logits);
        for &(id, p) in &cands {
            probs[id as usize] = f64::from(p);
        }
        let df = cands.len() - 1;
        assert!(df >= 3, "seed {seed}: only {df} df");
        let (chi2, impossible) = chi_square(&mut s, &logits, &probs, 200_000);
        assert_eq!(impossible, 0, "seed {seed}: drew a truncated token");
        assert!(
            chi2 < chi2_critical(df),
            "seed {seed}: chi2 {chi2:.2} (df {df})"
        );
    }
}
