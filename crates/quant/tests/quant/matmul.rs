//! matmul tests: every family and thread count against per-element reference dots, shape and
//! type errors, misaligned weights, and `matmul` following the process-wide kernel choice.

use crate::common::{choices, quantize_matrix, Rng, Tol};
use kiln_quant::{
    matmul, matmul_with, vec_dot, ActBuf, KernelChoice, QMatrix, QuantError, QuantType,
};
use kiln_tensor::ThreadPool;

const ALL: [QuantType; 8] = QuantType::ALL;

/// out[t·rows + r] computed one reference dot at a time.
fn reference(w: &QMatrix, acts: &ActBuf) -> Vec<f32> {
    let mut out = vec![0.0; acts.n_rows() * w.rows];
    for t in 0..acts.n_rows() {
        for r in 0..w.rows {
            out[t * w.rows + r] =
                vec_dot(KernelChoice::Generic, w.ty, w.cols, w.row(r), acts.row(t)).unwrap();
        }
    }
    out
}

/// Σ|w|·|a| per output, for tolerance scaling.
fn abs_scales(ty: QuantType, wf: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let _ = ty;
    let n_act = x.len() / cols;
    let mut s = vec![0.0; n_act * rows];
    for t in 0..n_act {
        for r in 0..rows {
            s[t * rows + r] =
                crate::common::abs_dot(&wf[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
        }
    }
    s
}

#[test]
fn matmul_matches_reference_all_families_and_threads() {
    let mut rng = Rng::new(300);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for ty in ALL {
        let col_choices: &[usize] = if ty.block_size() == 256 {
            &[256, 512]
        } else {
            &[32, 96, 128]
        };
        for (&cols, rows) in col_choices
            .iter()
            .cycle()
            .zip([1usize, 15, 16, 17, 33, 100])
        {
            let wf = rng.vec(rows * cols, 0.5);
            let bytes = quantize_matrix(ty, &wf, cols);
            let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let wdq: Vec<f32> = (0..rows)
                .flat_map(|r| crate::common::dequant(ty, w.row(r), cols))
                .collect();
            for n_act in [1usize, 2, 3, 4, 5, 9] {
                let x = rng.vec(n_act * cols, 1.0);
                let mut acts = ActBuf::new();
                acts.quantize(ty, &x, cols).unwrap();
                let want = reference(&w, &acts);
                // Activation quantization error is not at stake here; scale with 2x margin.
                let scales = abs_scales(ty, &wdq, &x, rows, cols);
                for pool in &pools {
                    for choice in choices() {
                        let mut out = vec![f32::NAN; n_act * rows];
                        matmul_with(choice, pool, &w, &acts, &mut out).unwrap();
                        for (i, (&g, &e)) in out.iter().zip(&want).enumerate() {
                            Tol::Close.check(
                                g,
                                e,
                                2.0 * scales[i] + 1e-30,
                                &format!(
                                    "{ty:?} {choice:?} rows={rows} n_act={n_act} threads={} i={i}",
                                    pool.n_threads()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn large_parallel_matmul_matches_serial() {
    // Big enough to take the threaded path with many chunks (and misaligned out starts).
    let mut rng = Rng::new(301);
    let (rows, cols) = (1000, 256);
    for ty in [QuantType::Q4_1, QuantType::Q8_0, QuantType::Q6_K] {
        let wf = rng.vec(rows * cols, 0.3);
        let bytes = quantize_matrix(ty, &wf, cols);
        let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        let x = rng.vec(3 * cols, 1.0);
        let mut acts = ActBuf::new();
        acts.quantize(ty, &x, cols).unwrap();
        for choice in choices() {
            let mut serial = vec![0.0; 3 * rows];
            matmul_with(choice, &ThreadPool::new(1), &w, &acts, &mut serial).unwrap();
            let mut buf = vec![0.0; 3 * rows + 3];
            for off in 0..3 {
                let out = &mut buf[off..off + 3 * rows];
                matmul_with(choice, &ThreadPool::new(4), &w, &acts, out).unwrap();
                for (a, b) in out.iter().zip(&serial) {
                    Tol::Exact.check(*a, *b, 0.0, &format!("{ty:?} {choice:?} off={off}"));
                }
            }
        }
    }
}

#[test]
fn matmul_follows_process_kernel_choice() {
    let mut rng = Rng::new(302);
    let (rows, cols) = (40, 64);
    let bytes = quantize_matrix(QuantType::Q4_0, &rng.vec(rows * cols, 1.0), cols);
    let w = QMatrix::new(QuantType::Q4_0, rows, cols, &bytes).unwrap();
    let mut acts = ActBuf::new();
    acts.quantize(QuantType::Q4_0, &rng.vec(2 * cols, 1.0), cols)
        .unwrap();
    let pool = ThreadPool::new(2);
    let mut a = vec![0.0; 2 * rows];
    let mut b = vec![0.0; 2 * rows];
    matmul(&pool, &w, &acts, &mut a).unwrap();
    matmul_with(kiln_tensor::cpu::kernel_choice(), &pool, &w, &acts, &mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn misaligned_weights_give_identical_results() {
    let mut rng = Rng::new(303);
    let (rows, cols) = (20, 256);
    for ty in ALL {
        let bytes = quantize_matrix(ty, &rng.vec(rows * cols, 1.0), cols);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let w0 = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        let w1 = QMatrix::new(ty, rows, cols, &shifted[1..]).unwrap();
        let mut acts = ActBuf::new();
        acts.quantize(ty, &rng.vec(cols, 1.0), cols).unwrap();
        let pool = ThreadPool::new(1);
        for choice in choices() {
            let mut a = vec![0.0; rows];
            let mut b = vec![0.0; rows];
            matmul_with(choice, &pool, &w0, &acts, &mut a).unwrap();
            matmul_with(choice, &pool, &w1, &acts, &mut b).unwrap();
            assert_eq!(a, b, "{ty:?} {choice:?}");
        }
    }
}

#[test]
fn matmul_rejects_mismatches() {
    let pool = ThreadPool::new(1);
    let (rows, cols) = (4, 64);
    let bytes = vec![0u8; QuantType::Q4_1.row_bytes(cols).unwrap() * rows];
    assert!(matches!(
        QMatrix::new(QuantType::Q4_1, rows, cols, &bytes[1..]),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        QMatrix::new(QuantType::Q4_1, rows, cols + 1, &bytes),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    let w = QMatrix::new(QuantType::Q4_1, rows, cols, &bytes).unwrap();
    assert!(w.row(rows).is_empty());
    let x = vec![0.5f32; 2 * cols];
    let mut acts = ActBuf::new();
    // Empty activations: nothing to do, empty output.
    matmul(&pool, &w, &acts, &mut []).unwrap();
    acts.quantize(QuantType::Q4_1, &x, cols).unwrap();
    let mut out = vec![0.0; 2 * rows];
    matmul(&pool, &w, &acts, &mut out).unwrap();
    assert!(matches!(
        matmul(&pool, &w, &acts, &mut out[1..]),
        Err(QuantError::Output { .. })
    ));
    // Activations prepared for another type.
    acts.quantize(QuantType::Q8_0, &x, cols).unwrap();
    assert!(matches!(
        matmul(&pool, &w, &acts, &mut out),
        Err(QuantError::ActivationType { .. })
    ));
    // Column mismatch.
    acts.quantize(QuantType::Q4_1, &x, 32).unwrap();
    let mut out4 = vec![0.0; 4 * rows];
    assert!(matches!(
        matmul(&pool, &w, &acts, &mut out4),
        Err(QuantError::Cols { .. })
    ));
    // A hand-built QMatrix with inconsistent fields is rejected, not read out of bounds.
    let bad = QMatrix {
        ty: QuantType::Q4_1,
        rows: rows + 1,
        cols,
        data: &bytes,
    };
    acts.quantize(QuantType::Q4_1, &x, cols).unwrap();
    let mut out5 = vec![0.0; 2 * (rows + 1)];
    assert!(matmul(&pool, &bad, &acts, &mut out5).is_err());
}

/// Batched activation rows must give bit-identical results to one row at a time (decode and
/// prefill agree exactly), for every family and block-count parity.
#[test]
fn batched_rows_match_single_rows_exactly() {
    let mut rng = Rng::new(304);
    let pool = ThreadPool::new(1);
    for ty in ALL {
        let col_choices: &[usize] = if ty.block_size() == 256 {
            &[256, 768]
        } else {
            &[32, 64, 96, 160, 576]
        };
        for (&cols, rows) in col_choices
            .iter()
            .zip([7usize, 2, 5, 7, 6].into_iter().cycle())
        {
            let bytes = quantize_matrix(ty, &rng.vec(rows * cols, 1.0), cols);
            let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            for n_act in [2usize, 3, 4, 6, 9] {
                let x = rng.vec(n_act * cols, 1.0);
                let mut acts = ActBuf::new();
                acts.quantize(ty, &x, cols).unwrap();
                for choice in choices() {
                    let mut batched = vec![0.0; n_act * rows];
                    matmul_with(choice, &pool, &w, &acts, &mut batched).unwrap();
                    for t in 0..n_act {
                        let mut one = ActBuf::new();
                        one.quantize(ty, &x[t * cols..(t + 1) * cols], cols)
                            .unwrap();
                        let mut single = vec![0.0; rows];
                        matmul_with(choice, &pool, &w, &one, &mut single).unwrap();
                        for r in 0..rows {
                            let what =
                                format!("{ty:?} {choice:?} cols={cols} n_act={n_act} t={t} r={r}");
                            Tol::Exact.check(batched[t * rows + r], single[r], 0.0, &what);
                            let dot = vec_dot(choice, ty, cols, w.row(r), one.row(0)).unwrap();
                            Tol::Exact.check(single[r], dot, 0.0, &what);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn huge_sizes_error_instead_of_panicking() {
    let big = usize::MAX / 32 * 32;
    for ty in ALL {
        assert!(QMatrix::new(ty, big, 32, &[]).is_err());
        assert!(QMatrix::new(ty, 2, big, &[]).is_err());
        let m = QMatrix {
            ty,
            rows: big,
            cols: big,
            data: &[],
        };
        assert!(m.row(big - 1).is_empty());
        assert!(m.validate().is_err());
        let mut acts = ActBuf::new();
        let _ = acts.quantize(ty, &[], big);
        for choice in choices() {
            assert!(vec_dot(choice, ty, big, &[], &[]).is_err());
        }
    }
}
