//! Kernel tests: every supported family's activation quantizer and dot against the scalar
//! reference, on seeded random inputs at edge lengths.

use crate::common::{abs_dot, choices, dequant, dot64, quantize_matrix, Rng, Tol};
use kiln_quant::{
    dequantize_act_row, vec_dot, ActBuf, ActType, KernelChoice, QuantError, QuantType,
};

const ALL: [QuantType; 8] = QuantType::ALL;

/// Lengths in blocks: empty, one block, one more, and odd counts that exercise every unrolled
/// tail of the SIMD loops.
const BLOCK_COUNTS: [usize; 9] = [0, 1, 2, 3, 4, 5, 7, 8, 19];
/// Lengths for the float types (block size 1), around the vector widths.
const FLOAT_LENS: [usize; 10] = [0, 1, 7, 8, 15, 16, 17, 33, 64, 131];

fn lengths(ty: QuantType) -> Vec<usize> {
    if ty.is_quantized() {
        BLOCK_COUNTS.iter().map(|b| b * ty.block_size()).collect()
    } else {
        FLOAT_LENS.to_vec()
    }
}

#[test]
fn activation_quantizers_match_reference_bytes() {
    let mut rng = Rng::new(100);
    for ty in ALL {
        for n in lengths(ty) {
            let rows = 3;
            let x = rng.vec(n * rows, 2.0);
            let mut want = ActBuf::new();
            want.quantize_with(KernelChoice::Generic, ty, &x, n)
                .unwrap_or_else(|e| panic!("{ty:?} n={n}: {e}"));
            for choice in choices() {
                let mut got = ActBuf::new();
                got.quantize_with(choice, ty, &x, n).unwrap();
                assert_eq!(got.n_rows(), want.n_rows());
                for t in 0..got.n_rows() {
                    assert_eq!(got.row(t), want.row(t), "{ty:?} {choice:?} n={n} row {t}");
                }
            }
        }
    }
}

#[test]
fn prepare_and_quantize_gives_the_bytes_of_quantize() {
    // The fused producer path (each row prepared, then quantized while in L1) must give the
    // same bytes as preparing all rows first and quantizing after.
    let mut rng = Rng::new(101);
    for ty in [
        QuantType::Q8_0,
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::F16,
    ] {
        let n = 256;
        let src = rng.vec(n * 4, 3.0);
        let prepare = |t: usize, row: &mut [f32]| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = src[t * n + i] * 0.5 + (i % 7) as f32 * 0.01;
            }
        };
        let mut prepared = vec![0.0f32; src.len()];
        for (t, row) in prepared.chunks_exact_mut(n).enumerate() {
            prepare(t, row);
        }
        let mut want = ActBuf::new();
        want.quantize(ty, &prepared, n).unwrap();
        let mut x = vec![f32::NAN; src.len()];
        let mut got = ActBuf::new();
        got.prepare_and_quantize(ty, &mut x, n, prepare).unwrap();
        assert_eq!(x, prepared, "{ty:?}: the prepared rows are kept");
        assert_eq!(got.n_rows(), want.n_rows());
        for t in 0..got.n_rows() {
            assert_eq!(got.row(t), want.row(t), "{ty:?} row {t}");
        }
    }
    let mut acts = ActBuf::new();
    let mut ragged = vec![0.0f32; 100];
    assert!(acts
        .prepare_and_quantize(QuantType::Q8_0, &mut ragged, 32, |_, _| {})
        .is_err());
}

#[test]
fn activation_quantizers_handle_extremes() {
    // Zeros, a single spike, equal magnitudes of both signs, and exact .5 ties after scaling.
    let n = 256;
    let mut cases: Vec<Vec<f32>> = vec![vec![0.0; n], vec![-1.0; n]];
    let mut spike = vec![0.0; n];
    spike[77] = -5.0;
    cases.push(spike);
    cases.push(
        (0..n)
            .map(|i| if i % 2 == 0 { 3.0 } else { -3.0 })
            .collect(),
    );
    cases.push(
        (0..n)
            .map(|i| (i % 32) as f32 * 0.5 * 127.0 / 15.5 / 127.0 * 127.0)
            .collect(),
    );
    cases.push((0..n).map(|i| (i as f32 - 128.0) * 0.5).collect());
    for ty in ALL {
        for x in &cases {
            let mut want = ActBuf::new();
            want.quantize_with(KernelChoice::Generic, ty, x, n).unwrap();
            for choice in choices() {
                let mut got = ActBuf::new();
                got.quantize_with(choice, ty, x, n).unwrap();
                assert_eq!(got.row(0), want.row(0), "{ty:?} {choice:?}");
            }
        }
    }
}

/// Weight and activation rows for `ty` with `n` elements: quantized from random values, plus
/// a variant with raw random bytes (every bit pattern of the quants; finite scales).
fn weight_rows(rng: &mut Rng, ty: QuantType, n: usize) -> Vec<Vec<u8>> {
    let x = rng.vec(n, 1.0);
    let quantized = quantize_matrix(ty, &x, n);
    let mut raw = rng.bytes(quantized.len());
    // Overwrite the f16/f32 scale fields with sane values so results stay finite.
    let bb = ty.block_bytes();
    for blk in raw.chunks_mut(bb) {
        match ty {
            QuantType::F32 => blk.copy_from_slice(&rng.weight(1.0).to_le_bytes()),
            QuantType::F16 => {
                blk.copy_from_slice(&half::f16::from_f32(rng.weight(1.0)).to_le_bytes())
            }
            QuantType::BF16 => {
                blk.copy_from_slice(&half::bf16::from_f32(rng.weight(1.0)).to_le_bytes())
            }
            QuantType::Q8_0 | QuantType::Q4_0 => {
                blk[..2].copy_from_slice(&half::f16::from_f32(rng.weight(0.01)).to_le_bytes())
            }
            QuantType::Q4_1 | QuantType::Q4_K => {
                blk[..2].copy_from_slice(&half::f16::from_f32(rng.weight(0.01)).to_le_bytes());
                blk[2..4].copy_from_slice(&half::f16::from_f32(rng.weight(0.01)).to_le_bytes());
            }
            QuantType::Q6_K => {
                let at = bb - 2;
                blk[at..].copy_from_slice(&half::f16::from_f32(rng.weight(0.01)).to_le_bytes())
            }
        }
    }
    vec![quantized, raw]
}

#[test]
fn dots_match_reference_for_every_family() {
    let mut rng = Rng::new(200);
    for ty in ALL {
        for n in lengths(ty) {
            for w in weight_rows(&mut rng, ty, n) {
                let x = rng.vec(n, 1.5);
                let mut acts = ActBuf::new();
                acts.quantize_with(KernelChoice::Generic, ty, &x, n)
                    .unwrap();
                let a = if n == 0 { &[][..] } else { acts.row(0) };
                let wf = dequant(ty, &w, n);
                let mut af = vec![0.0; n];
                dequantize_act_row(ActType::for_weight(ty), a, &mut af).unwrap();
                let scale = abs_dot(&wf, &af) + 1e-30;
                let reference = vec_dot(KernelChoice::Generic, ty, n, &w, a).unwrap();
                let exact = dot64(&wf, &af) as f32;
                // The reference folds the Q8_1 offset through its f16 `s`, hence Quant(11).
                let ref_tol = if ty == QuantType::Q4_1 {
                    Tol::Quant(11)
                } else {
                    Tol::Close
                };
                let ref_scale = if ty == QuantType::Q4_1 {
                    scale + q4_1_offset_scale(&w, &af)
                } else {
                    scale
                };
                ref_tol.check(
                    reference,
                    exact,
                    ref_scale,
                    &format!("{ty:?} n={n} reference vs f64"),
                );
                for choice in choices() {
                    let got = vec_dot(choice, ty, n, &w, a).unwrap();
                    Tol::Close.check(got, reference, scale, &format!("{ty:?} {choice:?} n={n}"));
                }
            }
        }
    }
}

/// Σ over blocks of |m|·Σ|a|: the size of the Q4_1 offset term that goes through an f16.
fn q4_1_offset_scale(w: &[u8], a: &[f32]) -> f64 {
    w.chunks(20)
        .zip(a.chunks(32))
        .map(|(b, a)| {
            let m = half::f16::from_le_bytes([b[2], b[3]]).to_f32() as f64;
            m.abs() * a.iter().map(|v| v.abs() as f64).sum::<f64>()
        })
        .sum()
}

#[test]
fn vec_dot_rejects_bad_lengths() {
    for ty in ALL {
        let bs = ty.block_size();
        let n = 2 * bs.max(32);
        let w = vec![0u8; ty.row_bytes(n).unwrap()];
        let a = vec![0u8; ActType::for_weight(ty).row_bytes(n)];
        for choice in choices() {
            assert!(vec_dot(choice, ty, n, &w, &a).is_ok());
            assert!(matches!(
                vec_dot(choice, ty, n, &w[1..], &a),
                Err(QuantError::Length { .. })
            ));
            assert!(matches!(
                vec_dot(choice, ty, n, &w, &a[1..]),
                Err(QuantError::Length { .. })
            ));
            if bs > 1 {
                assert!(matches!(
                    vec_dot(choice, ty, n - 1, &w, &a),
                    Err(QuantError::NotBlockMultiple { .. })
                ));
            }
        }
    }
}

#[test]
fn act_buf_rejects_bad_shapes_and_reuses_storage() {
    let mut acts = ActBuf::new();
    assert_eq!(acts.n_rows(), 0);
    let x = vec![1.0f32; 512];
    // Partial rows, partial blocks, zero columns with data.
    assert!(acts.quantize(QuantType::Q8_0, &x, 96 + 1).is_err());
    assert!(matches!(
        acts.quantize(QuantType::Q4_K, &x, 128),
        Err(QuantError::NotBlockMultiple { block: 256, .. })
    ));
    assert!(acts.quantize(QuantType::Q4_1, &x, 0).is_err());
    acts.quantize(QuantType::Q4_1, &[], 0).unwrap();
    assert_eq!(acts.n_rows(), 0);
    acts.quantize(QuantType::Q4_1, &x, 64).unwrap();
    assert_eq!(
        (acts.n_rows(), acts.cols(), acts.act_type()),
        (8, 64, ActType::Q8_1)
    );
    acts.quantize(QuantType::Q6_K, &x, 256).unwrap();
    assert_eq!(
        (acts.n_rows(), acts.cols(), acts.act_type()),
        (2, 256, ActType::Q8_K)
    );
    assert!(acts.row(2).is_empty());
    assert_eq!(acts.row(1).len(), 292);
}
