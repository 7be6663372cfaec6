//! The importance-weighted quantizers: error budgets per type on seeded data, never worse than
//! round-to-nearest on the weighted error, clipping, and argument checks.

use crate::common::Rng;
use kiln_quant::{
    clip_threshold, dequantize_row, quantize_row, quantize_row_searched, ErrorStats, QuantType,
    SearchOptions,
};

fn roundtrip(ty: QuantType, x: &[f32], opts: Option<&SearchOptions<'_>>) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    match opts {
        Some(o) => quantize_row_searched(ty, x, o, &mut bytes).unwrap(),
        None => quantize_row(ty, x, &mut bytes).unwrap(),
    }
    let mut out = vec![0.0; x.len()];
    dequantize_row(ty, &bytes, &mut out).unwrap();
    out
}

/// Relative RMSE budget of each type on roughly normal data: about the uniform-rounding error
/// step/√12 of its bit width, with headroom for the outliers the generator adds.
fn budget(ty: QuantType) -> f64 {
    match ty {
        QuantType::F32 => 0.0,
        QuantType::F16 => 1e-3,
        QuantType::BF16 => 5e-3,
        QuantType::Q8_0 => 0.01,
        QuantType::Q6_K => 0.04,
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q4_K => 0.15,
    }
}

#[test]
fn every_type_meets_its_error_budget() {
    let mut rng = Rng::new(11);
    let x = rng.vec(256 * 16, 0.02);
    for ty in QuantType::ALL {
        for searched in [false, true] {
            let opts = SearchOptions::default();
            let y = roundtrip(ty, &x, searched.then_some(&opts));
            let mut s = ErrorStats::default();
            s.add_row(&x, &y, None);
            let rel = (s.sum_sq_err / s.sum_sq_ref).sqrt();
            assert!(
                rel <= budget(ty),
                "{ty} searched={searched}: relative RMSE {rel} over budget {}",
                budget(ty)
            );
        }
    }
}

#[test]
fn weighted_search_never_worse_than_round_to_nearest() {
    let mut rng = Rng::new(5);
    for ty in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        for trial in 0..20 {
            let n = ty.block_size().max(32) * (1 + trial % 7);
            let x = rng.vec(n, 0.05);
            // Heavy-tailed importance, as activation mean squares are.
            let w: Vec<f32> = (0..n)
                .map(|_| {
                    let u = rng.uniform().abs() + 1e-3;
                    u * u * u * 100.0
                })
                .collect();
            let plain = roundtrip(ty, &x, None);
            let opts = SearchOptions {
                importance: Some(&w),
                clip: None,
            };
            let searched = roundtrip(ty, &x, Some(&opts));
            let (mut a, mut b) = (ErrorStats::default(), ErrorStats::default());
            a.add_row(&x, &plain, Some(&w));
            b.add_row(&x, &searched, Some(&w));
            assert!(
                b.weighted_sq_err <= a.weighted_sq_err * (1.0 + 1e-12),
                "{ty} trial {trial}: searched {} > round-to-nearest {}",
                b.weighted_sq_err,
                a.weighted_sq_err
            );
        }
    }
}

#[test]
fn weighted_search_improves_on_average() {
    // The search must actually find something better than round-to-nearest (else the
    // "never worse" property would hold trivially).
    let mut rng = Rng::new(9);
    let n = 32 * 64;
    let x = rng.vec(n, 0.05);
    let w: Vec<f32> = (0..n).map(|_| rng.uniform().abs() * 10.0).collect();
    for ty in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        let plain = roundtrip(ty, &x, None);
        let opts = SearchOptions {
            importance: Some(&w),
            clip: None,
        };
        let searched = roundtrip(ty, &x, Some(&opts));
        let (mut a, mut b) = (ErrorStats::default(), ErrorStats::default());
        a.add_row(&x, &plain, Some(&w));
        b.add_row(&x, &searched, Some(&w));
        assert!(
            b.weighted_sq_err < 0.95 * a.weighted_sq_err,
            "{ty}: {} vs {}",
            b.weighted_sq_err,
            a.weighted_sq_err
        );
    }
}

#[test]
fn clipping_helps_only_where_the_outlier_is_unimportant() {
    let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.01).collect();
    x[3] = 10.0;
    let t = clip_threshold(&x, 90.0).unwrap();
    assert!(t < 1.0, "threshold {t}");
    let werr = |ty: QuantType, w: &[f32], clip: Option<f32>| -> f64 {
        let opts = SearchOptions {
            importance: Some(w),
            clip,
        };
        let y = roundtrip(ty, &x, Some(&opts));
        let mut s = ErrorStats::default();
        s.add_row(&x, &y, Some(w));
        s.weighted_sq_err
    };
    for ty in [QuantType::Q4_0, QuantType::Q4_1] {
        // A low-importance outlier: clipping it buys finer steps for everything else.
        let mut w = vec![1.0f32; 32];
        w[3] = 1e-6;
        let (plain, clipped) = (werr(ty, &w, None), werr(ty, &w, Some(t)));
        assert!(clipped < 0.5 * plain, "{ty}: clipped {clipped} vs {plain}");
        // An important outlier is kept: clipping never makes the weighted error worse.
        let w = vec![1.0f32; 32];
        let (plain, clipped) = (werr(ty, &w, None), werr(ty, &w, Some(t)));
        assert!(clipped <= plain, "{ty}: clipped {clipped} vs {plain}");
    }
    // K-quants keep the better of the raw and the clipped reference per super-block.
    let mut rng = Rng::new(3);
    let mut xk = rng.vec(256, 0.02);
    xk[17] = 3.0;
    let mut w = vec![1.0f32; 256];
    w[17] = 1e-6;
    let tk = clip_threshold(&xk, 99.0).unwrap();
    for ty in [QuantType::Q4_K, QuantType::Q6_K] {
        let run = |clip| {
            let opts = SearchOptions {
                importance: Some(&w),
                clip,
            };
            let y = roundtrip(ty, &xk, Some(&opts));
            let mut s = ErrorStats::default();
            s.add_row(&xk, &y, Some(&w));
            s.weighted_sq_err
        };
        let (clipped, plain) = (run(Some(tk)), run(None));
        assert!(clipped <= plain, "{ty}: {clipped} vs {plain}");
        if ty == QuantType::Q4_K {
            // Q4_K's one scale per 32 values is stretched by the outlier; Q6_K's per-16 scales
            // contain it well enough that the raw reference may win.
            assert!(clipped < plain, "{ty}: {clipped} vs {plain}");
        }
    }
    assert_eq!(clip_threshold(&[], 99.0), None);
    assert_eq!(clip_threshold(&x, 0.0), None);
    assert_eq!(clip_threshold(&x, 101.0), None);
}

#[test]
fn searched_rejects_bad_lengths() {
    let x = vec![0.5f32; 64];
    let mut dst = vec![0u8; QuantType::Q4_0.row_bytes(64).unwrap()];
    let w = vec![1.0f32; 63];
    let opts = SearchOptions {
        importance: Some(&w),
        clip: None,
    };
    assert!(quantize_row_searched(QuantType::Q4_0, &x, &opts, &mut dst).is_err());
    let opts = SearchOptions::default();
    assert!(quantize_row_searched(QuantType::Q4_0, &x[..40], &opts, &mut dst).is_err());
    assert!(quantize_row_searched(QuantType::Q4_0, &x, &opts, &mut dst[1..]).is_err());
    // All-zero blocks stay exactly zero.
    let z = vec![0.0f32; 64];
    for ty in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0] {
        assert!(roundtrip(ty, &z, Some(&opts)).iter().all(|&v| v == 0.0));
    }
}
