//! Packed (16-row interleaved) weights: the layout round-trips to ggml's bytes, and
//! `matmul_packed` matches the scalar reference for every family that packs, every activation
//! count and thread count, with batched rows bit-identical to one row at a time.

use crate::common::{abs_dot, choices, dequant, quantize_matrix, Rng, Tol};
use kiln_quant::{
    matmul_packed, matmul_packed_glu, vec_dot, ActBuf, KernelChoice, PackedMatrix, QMatrix,
    QuantType, GROUP_ROWS,
};
use kiln_tensor::ThreadPool;

const PACKABLE: [QuantType; 3] = [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q8_0];

#[test]
fn pack_round_trips_every_row() {
    let mut rng = Rng::new(400);
    for choice in choices() {
        for ty in PACKABLE {
            if !PackedMatrix::supports(choice, ty) {
                continue;
            }
            for (rows, cols) in [(16, 32), (32, 96), (48, 64)] {
                let bytes = quantize_matrix(ty, &rng.vec(rows * cols, 1.0), cols);
                let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
                let p = PackedMatrix::pack(choice, &w).unwrap();
                assert_eq!((p.rows(), p.cols(), p.ty()), (rows, cols, ty));
                for r in 0..rows {
                    assert_eq!(p.unpack_row(r), w.row(r), "{ty:?} {choice:?} row {r}");
                }
                assert!(p.unpack_row(rows).is_empty());
            }
        }
    }
}

#[test]
fn pack_declines_what_it_cannot_run() {
    let mut rng = Rng::new(401);
    for ty in QuantType::ALL {
        for rows in [15usize, 16, 17] {
            let bytes = quantize_matrix(ty, &rng.vec(rows * 256, 1.0), 256);
            let w = QMatrix::new(ty, rows, 256, &bytes).unwrap();
            for choice in [KernelChoice::Generic, KernelChoice::Avx2] {
                assert!(
                    PackedMatrix::pack(choice, &w).is_none(),
                    "{ty:?} {choice:?}"
                );
            }
            for choice in choices() {
                let packed = PackedMatrix::pack(choice, &w);
                let expect = PackedMatrix::supports(choice, ty) && rows % GROUP_ROWS == 0;
                assert_eq!(packed.is_some(), expect, "{ty:?} {choice:?} rows {rows}");
            }
        }
    }
    // Q8_0 needs VNNI; Q4_K and the float types never pack.
    assert!(!PackedMatrix::supports(
        KernelChoice::Avx512,
        QuantType::Q8_0
    ));
    assert!(!PackedMatrix::supports(
        KernelChoice::Avx512Vnni,
        QuantType::Q4_K
    ));
}

#[test]
fn packed_matmul_matches_reference() {
    let mut rng = Rng::new(402);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for choice in choices() {
        for ty in PACKABLE {
            if !PackedMatrix::supports(choice, ty) {
                continue;
            }
            for (rows, cols) in [(16, 32), (32, 96), (64, 576), (48, 1024)] {
                let wf = rng.vec(rows * cols, 0.5);
                let bytes = quantize_matrix(ty, &wf, cols);
                let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
                let wdq: Vec<f32> = (0..rows)
                    .flat_map(|r| dequant(ty, w.row(r), cols))
                    .collect();
                let p = PackedMatrix::pack(choice, &w).unwrap();
                for n_act in [1usize, 2, 3, 4, 5, 9] {
                    let x = rng.vec(n_act * cols, 1.0);
                    let mut acts = ActBuf::new();
                    acts.quantize(ty, &x, cols).unwrap();
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n_act * rows];
                        matmul_packed(pool, &p, &acts, &mut out).unwrap();
                        for t in 0..n_act {
                            for r in 0..rows {
                                let want =
                                    vec_dot(KernelChoice::Generic, ty, cols, w.row(r), acts.row(t))
                                        .unwrap();
                                let xr = &x[t * cols..(t + 1) * cols];
                                let scale = 2.0 * abs_dot(&wdq[r * cols..(r + 1) * cols], xr);
                                Tol::Close.check(
                                    out[t * rows + r],
                                    want,
                                    scale + 1e-30,
                                    &format!("{ty:?} {choice:?} {rows}x{cols} t={t} r={r}"),
                                );
                            }
                        }
                        // Each batched row is bit-identical to that row computed alone.
                        for t in 0..n_act {
                            let mut one = ActBuf::new();
                            one.quantize(ty, &x[t * cols..(t + 1) * cols], cols)
                                .unwrap();
                            let mut single = vec![0.0; rows];
                            matmul_packed(pool, &p, &one, &mut single).unwrap();
                            for r in 0..rows {
                                Tol::Exact.check(
                                    out[t * rows + r],
                                    single[r],
                                    0.0,
                                    &format!("{ty:?} {choice:?} batch vs single t={t} r={r}"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_matmul_rejects_mismatches() {
    let mut rng = Rng::new(403);
    let (rows, cols) = (32, 64);
    let bytes = quantize_matrix(QuantType::Q4_1, &rng.vec(rows * cols, 1.0), cols);
    let w = QMatrix::new(QuantType::Q4_1, rows, cols, &bytes).unwrap();
    let Some(choice) = choices()
        .into_iter()
        .find(|&c| PackedMatrix::supports(c, QuantType::Q4_1))
    else {
        // A CPU without AVX-512 has no packed kernels: packing must decline.
        assert!(PackedMatrix::pack(KernelChoice::Avx2, &w).is_none());
        return;
    };
    let p = PackedMatrix::pack(choice, &w).unwrap();
    let pool = ThreadPool::new(1);
    let x = rng.vec(2 * cols, 1.0);
    let mut acts = ActBuf::new();
    acts.quantize(QuantType::Q4_1, &x, cols).unwrap();
    let mut out = vec![0.0; 2 * rows];
    assert!(matmul_packed(&pool, &p, &acts, &mut out[1..]).is_err());
    acts.quantize(QuantType::Q8_0, &x, cols).unwrap();
    assert!(matmul_packed(&pool, &p, &acts, &mut out).is_err());
    acts.quantize(QuantType::Q4_1, &x, 32).unwrap();
    let mut out4 = vec![0.0; 4 * rows];
    assert!(matmul_packed(&pool, &p, &acts, &mut out4).is_err());
}

#[test]
fn stacked_parts_pack_like_one_matrix() {
    let mut rng = Rng::new(404);
    let cols = 96;
    for choice in choices() {
        for ty in PACKABLE {
            if !PackedMatrix::supports(choice, ty) {
                continue;
            }
            let a_bytes = quantize_matrix(ty, &rng.vec(16 * cols, 1.0), cols);
            let b_bytes = quantize_matrix(ty, &rng.vec(32 * cols, 1.0), cols);
            let a = QMatrix::new(ty, 16, cols, &a_bytes).unwrap();
            let b = QMatrix::new(ty, 32, cols, &b_bytes).unwrap();
            let p = PackedMatrix::pack_stacked(choice, &[a, b]).unwrap();
            assert_eq!(p.rows(), 48);
            for r in 0..16 {
                assert_eq!(
                    p.unpack_row(r),
                    a.row(r),
                    "{ty:?} {choice:?} part a row {r}"
                );
            }
            for r in 0..32 {
                assert_eq!(
                    p.unpack_row(16 + r),
                    b.row(r),
                    "{ty:?} {choice:?} part b row {r}"
                );
            }
            // Parts that differ in width, or a part of 17 rows, are declined.
            let c_bytes = quantize_matrix(ty, &rng.vec(16 * 64, 1.0), 64);
            let c = QMatrix::new(ty, 16, 64, &c_bytes).unwrap();
            assert!(PackedMatrix::pack_stacked(choice, &[a, c]).is_none());
            let d_bytes = quantize_matrix(ty, &rng.vec(17 * cols, 1.0), cols);
            let d = QMatrix::new(ty, 17, cols, &d_bytes).unwrap();
            assert!(PackedMatrix::pack_stacked(choice, &[a, d]).is_none());
        }
    }
}

#[test]
fn fused_glu_matches_the_stacked_matmul_then_silu_mul_then_quantize() {
    let mut rng = Rng::new(405);
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    let (n_ff, cols) = (96, 64);
    for choice in choices() {
        for ty in PACKABLE {
            if !PackedMatrix::supports(choice, ty) {
                continue;
            }
            let g_bytes = quantize_matrix(ty, &rng.vec(n_ff * cols, 0.5), cols);
            let u_bytes = quantize_matrix(ty, &rng.vec(n_ff * cols, 0.5), cols);
            let gate = QMatrix::new(ty, n_ff, cols, &g_bytes).unwrap();
            let up = QMatrix::new(ty, n_ff, cols, &u_bytes).unwrap();
            let stacked = PackedMatrix::pack_stacked(choice, &[gate, up]).unwrap();
            let glu = PackedMatrix::pack_glu(choice, &gate, &up).unwrap();
            assert_eq!(glu.rows(), 2 * n_ff);
            // Units of 32 gate rows, then the same 32 up rows.
            assert_eq!(glu.unpack_row(32), up.row(0));
            assert_eq!(glu.unpack_row(64), gate.row(32));
            for n_act in [1usize, 3, 6] {
                let x = rng.vec(n_act * cols, 1.0);
                let mut acts = ActBuf::new();
                acts.quantize_with(choice, ty, &x, cols).unwrap();
                for down in [
                    QuantType::Q4_0,
                    QuantType::Q4_1,
                    QuantType::F32,
                    QuantType::F16,
                ] {
                    // The separate path: one stacked matmul, SiLU·mul, then quantization.
                    let mut both = vec![0.0; n_act * 2 * n_ff];
                    matmul_packed(&pools[0], &stacked, &acts, &mut both).unwrap();
                    let mut want = vec![0.0; n_act * n_ff];
                    for t in 0..n_act {
                        let row = &both[t * 2 * n_ff..][..2 * n_ff];
                        let (g, u) = row.split_at(n_ff);
                        kiln_tensor::ops::silu_mul(g, u, &mut want[t * n_ff..][..n_ff]);
                    }
                    let mut want_acts = ActBuf::new();
                    want_acts.quantize_with(choice, down, &want, n_ff).unwrap();
                    for pool in &pools {
                        let (mut scratch, mut got) = (Vec::new(), vec![f32::NAN; n_act * n_ff]);
                        let mut got_acts = ActBuf::new();
                        matmul_packed_glu(
                            pool,
                            &glu,
                            &acts,
                            &mut scratch,
                            down,
                            &mut got,
                            &mut got_acts,
                        )
                        .unwrap();
                        let what = format!("{ty:?} {choice:?} rows {n_act} down {down:?}");
                        assert_eq!(
                            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{what}"
                        );
                        assert_eq!(got_acts.n_rows(), n_act, "{what}");
                        for t in 0..n_act {
                            assert_eq!(got_acts.row(t), want_acts.row(t), "{what} row {t}");
                        }
                        // The Q8_0 block sums the Q4_0 kernels read are those of `quantize`.
                        if down == QuantType::Q4_0 {
                            let w_down = quantize_matrix(down, &rng.vec(16 * n_ff, 0.5), n_ff);
                            let w_down = QMatrix::new(down, 16, n_ff, &w_down).unwrap();
                            let p_down = PackedMatrix::pack(choice, &w_down).unwrap();
                            let mut y_got = vec![0.0; n_act * 16];
                            let mut y_want = vec![0.0; n_act * 16];
                            matmul_packed(pool, &p_down, &got_acts, &mut y_got).unwrap();
                            matmul_packed(pool, &p_down, &want_acts, &mut y_want).unwrap();
                            assert_eq!(y_got, y_want, "{what}");
                        }
                    }
                }
            }
            // A plain packing, or a down type with 256-value activation blocks, is refused.
            let x = rng.vec(cols, 1.0);
            let mut acts = ActBuf::new();
            acts.quantize_with(choice, ty, &x, cols).unwrap();
            let (mut scratch, mut got, mut got_acts) = (Vec::new(), vec![0.0; n_ff], ActBuf::new());
            let pool = &pools[1];
            assert!(matmul_packed_glu(
                pool,
                &stacked,
                &acts,
                &mut scratch,
                QuantType::Q4_0,
                &mut got,
                &mut got_acts
            )
            .is_err());
            assert!(!kiln_quant::glu_fits(QuantType::Q6_K));
            assert!(matmul_packed_glu(
                pool,
                &glu,
                &acts,
                &mut scratch,
                QuantType::Q6_K,
                &mut got,
                &mut got_acts
            )
            .is_err());
            // So is an output of the wrong size, and gate/up of different shapes.
            let mut short = vec![0.0; n_ff - 1];
            assert!(matmul_packed_glu(
                pool,
                &glu,
                &acts,
                &mut scratch,
                QuantType::Q4_0,
                &mut short,
                &mut got_acts
            )
            .is_err());
            let h_bytes = quantize_matrix(ty, &rng.vec(64 * cols, 0.5), cols);
            let h = QMatrix::new(ty, 64, cols, &h_bytes).unwrap();
            assert!(PackedMatrix::pack_glu(choice, &gate, &h).is_none());
        }
    }
}
