//! Format tests: type metadata, round trips of known bytes, quantization error budgets, errors.

use crate::common::{dequant, Rng, Tol};
use half::f16;
use kiln_quant::{dequantize_row, quantize_row, QuantError, QuantType};

const ALL: [QuantType; 8] = QuantType::ALL;

/// ggml's (id, name, block size, block bytes) for every supported type.
const GGML_TABLE: [(u32, &str, usize, usize); 8] = [
    (0, "f32", 1, 4),
    (1, "f16", 1, 2),
    (2, "q4_0", 32, 18),
    (3, "q4_1", 32, 20),
    (8, "q8_0", 32, 34),
    (12, "q4_K", 256, 144),
    (14, "q6_K", 256, 210),
    (30, "bf16", 1, 2),
];

#[test]
fn metadata_matches_ggml() {
    for (id, name, bs, bb) in GGML_TABLE {
        let ty = QuantType::from_ggml_id(id).unwrap();
        assert_eq!(ty.ggml_id(), id);
        assert_eq!(ty.name(), name);
        assert_eq!(QuantType::from_name(name), Some(ty));
        assert_eq!(QuantType::from_name(&name.to_uppercase()), Some(ty));
        assert_eq!(ty.block_size(), bs);
        assert_eq!(ty.block_bytes(), bb);
        assert_eq!(ty.row_bytes(3 * bs).unwrap(), 3 * bb);
        assert_eq!(ty.row_bytes(0).unwrap(), 0);
    }
    for id in [4, 5, 6, 7, 9, 10, 11, 13, 15, 16, 29, 31, 1000] {
        assert_eq!(QuantType::from_ggml_id(id), None);
    }
    assert_eq!(QuantType::from_name("q5_K"), None);
    assert_eq!(QuantType::from_name(""), None);
}

#[test]
fn row_bytes_rejects_partial_blocks() {
    for ty in ALL.into_iter().filter(|t| t.is_quantized()) {
        let bs = ty.block_size();
        for n in [1, bs - 1, bs + 1, 2 * bs - 1] {
            assert!(matches!(
                ty.row_bytes(n),
                Err(QuantError::NotBlockMultiple { n: got, .. }) if got == n
            ));
        }
    }
    assert!(matches!(
        QuantType::Q8_0.row_bytes(usize::MAX / 32 * 32),
        Err(QuantError::Overflow { .. })
    ));
}

#[test]
fn length_errors_carry_context() {
    for ty in ALL {
        let bs = ty.block_size();
        let rb = ty.row_bytes(bs).unwrap();
        let mut out = vec![0.0f32; bs];
        let e = dequantize_row(ty, &vec![0u8; rb + 1], &mut out).unwrap_err();
        assert!(
            matches!(e, QuantError::Length { expected, got, .. } if expected == rb && got == rb + 1)
        );
        let mut bytes = vec![0u8; rb - 1];
        assert!(quantize_row(ty, &out, &mut bytes).is_err());
        if bs > 1 {
            let mut short = vec![0.0f32; bs - 1];
            assert!(matches!(
                dequantize_row(ty, &vec![0u8; rb], &mut short),
                Err(QuantError::NotBlockMultiple { .. })
            ));
        }
        // Empty rows are fine.
        dequantize_row(ty, &[], &mut []).unwrap();
        quantize_row(ty, &[], &mut []).unwrap();
        assert!(e.to_string().contains(ty.name()) || e.to_string().contains(&format!("{ty:?}")));
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Dequantize known bytes, check against hand-computed values, re-quantize to the same bytes.
fn known_round_trip(ty: QuantType, bytes: &[u8], want: &[f32]) {
    let got = dequant(ty, bytes, want.len());
    assert_eq!(got, want, "{ty:?} dequantize");
    let mut again = vec![0u8; bytes.len()];
    quantize_row(ty, &got, &mut again).unwrap();
    assert_eq!(again, bytes, "{ty:?} re-quantize");
}

#[test]
fn q8_0_known_bytes() {
    let mut b = f16_bytes(0.5).to_vec();
    let qs: Vec<i8> = (0..32)
        .map(|i| if i == 5 { -127 } else { (i * 7 - 100) as i8 })
        .collect();
    b.extend(qs.iter().map(|&q| q as u8));
    let want: Vec<f32> = qs.iter().map(|&q| q as f32 * 0.5).collect();
    known_round_trip(QuantType::Q8_0, &b, &want);
}

#[test]
fn q4_0_known_bytes() {
    let mut b = f16_bytes(0.25).to_vec();
    let lo: Vec<u8> = (0..16).map(|i| (i * 5 % 16) as u8).collect(); // includes 0 (value −8d)
    let hi: Vec<u8> = (0..16).map(|i| (15 - i) as u8).collect();
    b.extend(lo.iter().zip(&hi).map(|(l, h)| l | (h << 4)));
    let mut want = vec![0.0; 32];
    for j in 0..16 {
        want[j] = (lo[j] as f32 - 8.0) * 0.25;
        want[j + 16] = (hi[j] as f32 - 8.0) * 0.25;
    }
    known_round_trip(QuantType::Q4_0, &b, &want);
}

#[test]
fn q4_1_known_bytes() {
    let mut b = f16_bytes(0.5).to_vec();
    b.extend(f16_bytes(-2.0));
    let lo: Vec<u8> = (0..16).map(|i| i as u8).collect();
    let hi: Vec<u8> = (0..16).map(|i| (i * 3 % 16) as u8).collect();
    b.extend(lo.iter().zip(&hi).map(|(l, h)| l | (h << 4)));
    let mut want = vec![0.0; 32];
    for j in 0..16 {
        want[j] = lo[j] as f32 * 0.5 - 2.0;
        want[j + 16] = hi[j] as f32 * 0.5 - 2.0;
    }
    known_round_trip(QuantType::Q4_1, &b, &want);
}

#[test]
fn float_known_bytes() {
    let vals = [1.0f32, -2.5, 0.0, 65504.0];
    let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    known_round_trip(QuantType::F32, &f32b, &vals);
    let f16b: Vec<u8> = [0x3c00u16, 0xc100, 0x0000, 0x7bff]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    known_round_trip(QuantType::F16, &f16b, &vals);
    let bf16b: Vec<u8> = [0x3f80u16, 0xc020, 0x0000, 0x477f]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    known_round_trip(QuantType::BF16, &bf16b, &[1.0, -2.5, 0.0, 65280.0]);
}

/// Packs eight 6-bit scales and mins as ggml's Q4_K layout describes it: bytes 0–3 hold scales
/// 0–3 in their low 6 bits, bytes 4–7 mins 0–3; bytes 8–11 hold the low 4 bits of scale 4+i
/// (low nibble) and min 4+i (high nibble); the top 2 bits of bytes 0–3 / 4–7 carry bits 4–5 of
/// scales / mins 4–7.
fn pack_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
    let mut b = [0u8; 12];
    for i in 0..4 {
        b[i] = sc[i] | ((sc[i + 4] >> 4) << 6);
        b[i + 4] = m[i] | ((m[i + 4] >> 4) << 6);
        b[i + 8] = (sc[i + 4] & 15) | ((m[i + 4] & 15) << 4);
    }
    b
}

#[test]
fn q4_k_known_layout() {
    let sc: [u8; 8] = [3, 10, 17, 24, 31, 45, 52, 63];
    let m: [u8; 8] = [63, 58, 0, 48, 43, 16, 33, 1];
    let (d, dmin) = (0.5f32, 0.25f32);
    let mut q = [0u8; 256];
    let mut rng = Rng::new(7);
    for v in q.iter_mut() {
        *v = (rng.next_u64() % 16) as u8;
    }
    let mut b = Vec::new();
    b.extend(f16_bytes(d));
    b.extend(f16_bytes(dmin));
    b.extend(pack_k4(sc, m));
    for g in 0..4 {
        for l in 0..32 {
            b.push(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
        }
    }
    assert_eq!(b.len(), 144);
    let want: Vec<f32> = (0..256)
        .map(|e| d * sc[e / 32] as f32 * q[e] as f32 - dmin * m[e / 32] as f32)
        .collect();
    let got = dequant(QuantType::Q4_K, &b, 256);
    assert_eq!(got, want);
    for j in 0..8 {
        assert_eq!(
            kiln_quant::q4_k::scale_min_k4(j, &pack_k4(sc, m)),
            (sc[j], m[j])
        );
    }
}

#[test]
fn q6_k_known_layout() {
    let mut rng = Rng::new(11);
    let q: Vec<u8> = (0..256).map(|_| (rng.next_u64() % 64) as u8).collect();
    let sc: Vec<i8> = (0..16).map(|i| (i * 17 - 128) as i8).collect();
    let d = 0.125f32;
    // ggml layout: element 128h + 32k + l → ql[64h + 32(k%2) + l] nibble k/2, qh[32h + l] bits 2k.
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (e, &v) in q.iter().enumerate() {
        let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
        ql[64 * h + 32 * (k % 2) + l] |= (v & 15) << (4 * (k / 2));
        qh[32 * h + l] |= (v >> 4) << (2 * k);
    }
    let mut b = Vec::new();
    b.extend(ql);
    b.extend(qh);
    b.extend(sc.iter().map(|&s| s as u8));
    b.extend(f16_bytes(d));
    assert_eq!(b.len(), 210);
    let want: Vec<f32> = (0..256)
        .map(|e| d * sc[e / 16] as f32 * (q[e] as f32 - 32.0))
        .collect();
    assert_eq!(dequant(QuantType::Q6_K, &b, 256), want);
}

/// Per-type error budget for quantize → dequantize, relative to a per-block scale.
fn budget(ty: QuantType) -> (Tol, fn(&[f32]) -> f64) {
    fn amax(x: &[f32]) -> f64 {
        x.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64))
    }
    fn range(x: &[f32]) -> f64 {
        let mx = x.iter().fold(f32::MIN, |m, &v| m.max(v));
        let mn = x.iter().fold(f32::MAX, |m, &v| m.min(v));
        (mx - mn) as f64
    }
    match ty {
        QuantType::F32 => (Tol::Exact, amax),
        QuantType::F16 => (Tol::Quant(12), amax),
        QuantType::BF16 => (Tol::Quant(9), amax),
        QuantType::Q8_0 => (Tol::Quant(8), amax),
        QuantType::Q4_0 => (Tol::Quant(4), amax),
        QuantType::Q4_1 => (Tol::Quant(4), range),
        QuantType::Q4_K => (Tol::Quant(4), range),
        QuantType::Q6_K => (Tol::Quant(6), amax),
    }
}

/// f16 rounding error floor for values in the subnormal range.
const F16_SUBNORMAL_HALF_ULP: f64 = 1.0 / (1u64 << 25) as f64;

#[test]
fn quantization_error_within_budget() {
    let mut rng = Rng::new(42);
    for ty in ALL {
        let bs = ty.block_size().max(32);
        for nblocks in [0usize, 1, 2, 3, 7] {
            for scale in [1.0f32, 1e-3, 300.0] {
                let n = nblocks * bs;
                let x = rng.vec(n, scale);
                let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
                quantize_row(ty, &x, &mut bytes).unwrap();
                let y = dequant(ty, &bytes, n);
                let (tol, scale_of) = budget(ty);
                for (bx, by) in x.chunks(bs).zip(y.chunks(bs)) {
                    let s = scale_of(bx);
                    for (a, b) in bx.iter().zip(by) {
                        if matches!(tol, Tol::Exact) {
                            tol.check(*b, *a, s, &format!("{ty:?}"));
                        } else {
                            let err = (*a as f64 - *b as f64).abs();
                            let bound = if matches!(ty, QuantType::F16 | QuantType::BF16) {
                                tol.bound(a.abs() as f64) + F16_SUBNORMAL_HALF_ULP
                            } else {
                                tol.bound(s)
                            };
                            assert!(
                                err <= bound,
                                "{ty:?} n={n}: {a} -> {b} (err {err} > {bound})"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// llama.cpp's `test-quantize-fns` bound on sqrt(Σ err²)/n for its synthetic data.
const GGML_MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;

#[test]
fn ggml_synthetic_data_error() {
    let n = 32 * 128;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    for ty in ALL {
        let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
        quantize_row(ty, &x, &mut bytes).unwrap();
        let y = dequant(ty, &bytes, n);
        let sum: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let err = sum.sqrt() / n as f64;
        assert!(err < GGML_MAX_QUANTIZATION_TOTAL_ERROR, "{ty:?}: {err}");
    }
}

#[test]
fn misaligned_source_and_destination() {
    let mut rng = Rng::new(3);
    for ty in ALL {
        let n = 512;
        let x = rng.vec(n, 1.0);
        let rb = ty.row_bytes(n).unwrap();
        let mut aligned = vec![0u8; rb];
        quantize_row(ty, &x, &mut aligned).unwrap();
        let mut buf = vec![0u8; rb + 1];
        quantize_row(ty, &x, &mut buf[1..]).unwrap();
        assert_eq!(&buf[1..], &aligned[..], "{ty:?}");
        assert_eq!(
            dequant(ty, &buf[1..], n),
            dequant(ty, &aligned, n),
            "{ty:?}"
        );
    }
}

#[test]
fn zero_and_constant_blocks() {
    for ty in ALL {
        let n = 256;
        for v in [0.0f32, 1.5, -3.0] {
            let x = vec![v; n];
            let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row(ty, &x, &mut bytes).unwrap();
            let y = dequant(ty, &bytes, n);
            for b in y {
                assert!((b - v).abs() <= v.abs() * 0.01 + 1e-6, "{ty:?} {v} -> {b}");
            }
        }
    }
}

#[test]
fn q8_k_block_sums_and_sign() {
    let mut rng = Rng::new(5);
    let x = rng.vec(512, 2.0);
    let mut blocks = vec![kiln_quant::q8_k::BlockQ8_K::default(); 2];
    kiln_quant::q8_k::quantize_row_q8_K_ref(&x, &mut blocks);
    for (b, xs) in blocks.iter().zip(x.chunks(256)) {
        for (g, s) in b.qs.chunks(16).zip(&b.bsums) {
            assert_eq!(g.iter().map(|&q| q as i16).sum::<i16>(), *s);
        }
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((b.d.abs() - amax / 127.0).abs() <= 1e-6 * amax);
        for (q, v) in b.qs.iter().zip(xs) {
            Tol::Quant(8).check(*q as f32 * b.d, *v, amax as f64, "q8_K");
        }
    }
}

mod props {
    use kiln_quant::{dequantize_row, quantize_row, ActBuf, QMatrix, QuantType};
    use proptest::prelude::*;

    fn any_type() -> impl Strategy<Value = QuantType> {
        (0..QuantType::ALL.len()).prop_map(|i| QuantType::ALL[i])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Arbitrary shapes and buffer lengths give `Ok` exactly when consistent, never a panic.
        #[test]
        fn shapes_and_lengths_never_panic(
            ty in any_type(),
            rows in 0usize..40,
            cols in 0usize..600,
            extra in -3i64..3,
        ) {
            let rb = ty.row_bytes(cols);
            let len = rb.as_ref().map(|rb| rb * rows).unwrap_or(rows * 7);
            let len = (len as i64 + extra).max(0) as usize;
            let data = vec![0u8; len];
            let m = QMatrix::new(ty, rows, cols, &data);
            prop_assert_eq!(m.is_ok(), rb.as_ref().is_ok_and(|rb| rb * rows == len));
            let mut out = vec![0.0f32; cols];
            let want = rb.clone().unwrap_or(0);
            let d = dequantize_row(ty, &data[..len.min(want)], &mut out);
            prop_assert_eq!(d.is_ok(), rb.is_ok() && len >= want);
            let mut bytes = vec![0u8; len];
            let q = quantize_row(ty, &out, &mut bytes);
            prop_assert_eq!(q.is_ok(), rb.is_ok() && Ok(len) == rb);
            let x = vec![0.25f32; rows * cols];
            let mut acts = ActBuf::new();
            let a = acts.quantize(ty, &x, cols);
            if a.is_ok() {
                prop_assert_eq!(acts.n_rows() * acts.cols(), x.len());
            }
        }
    }
}
