//! Small f32 matrix-vector kernels for the real-time nets (dense layers, recurrent gates, conv taps).
//!
//! Two layouts, because small nets have both shapes: `matvec` reads row-major `[rows][cols]`
//! (dot per output, good when rows are long) and `matvec_cols` reads column-major
//! `[cols][rows]` (one axpy per input, good when inputs are few, e.g. a 1→32 gate matrix, where
//! a dot over 1–8 values never fills a vector). Both accumulate into `y` (`y += W·x`) so a bias
//! or a second matrix can be added without another pass. The bodies are written for
//! auto-vectorization and compiled three times (scalar reference, AVX2+FMA, AVX-512+FMA); the
//! family is chosen by `crate::cpu::kernel_choice()` like the other f32 kernels.

/// Independent accumulators per row in `matvec` (one AVX-512 register, two AVX2 registers).
const LANES: usize = 16;

/// Rows `matvec` computes together, so each load of `x` serves several rows.
const ROWS: usize = 4;

/// Sums the lanes pairwise (log-depth, vectorizable) instead of one long dependent chain.
#[inline(always)]
fn hsum(mut a: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            a[l] += a[l + w];
        }
        w /= 2;
    }
    a[0]
}

#[inline(always)]
fn fmadd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// `y[r] += Σ_i w[r*cols + i] · x[i]`. Four rows share each load of `x`; `chunks_exact`
/// gives the compiler fixed-size slices, so the inner loop has no bounds checks and becomes
/// straight vector FMAs.
#[inline(always)]
fn matvec_body<const FUSED: bool>(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    let x = &x[..cols];
    let full = cols - cols % LANES;
    let tail = |row: &[f32], mut s: f32| {
        for (a, b) in row[full..].iter().zip(&x[full..]) {
            s = fmadd::<FUSED>(*a, *b, s);
        }
        s
    };
    let done = y.len() - y.len() % ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS);
    for (bi, out) in (&mut blocks).enumerate() {
        let base = bi * ROWS * cols;
        let w0 = &w[base..base + cols];
        let w1 = &w[base + cols..base + 2 * cols];
        let w2 = &w[base + 2 * cols..base + 3 * cols];
        let w3 = &w[base + 3 * cols..base + 4 * cols];
        let (mut a0, mut a1, mut a2, mut a3) = (
            [0.0f32; LANES],
            [0.0f32; LANES],
            [0.0f32; LANES],
            [0.0f32; LANES],
        );
        for ((((xs, c0), c1), c2), c3) in x
            .chunks_exact(LANES)
            .zip(w0.chunks_exact(LANES))
            .zip(w1.chunks_exact(LANES))
            .zip(w2.chunks_exact(LANES))
            .zip(w3.chunks_exact(LANES))
        {
            for l in 0..LANES {
                a0[l] = fmadd::<FUSED>(c0[l], xs[l], a0[l]);
                a1[l] = fmadd::<FUSED>(c1[l], xs[l], a1[l]);
                a2[l] = fmadd::<FUSED>(c2[l], xs[l], a2[l]);
                a3[l] = fmadd::<FUSED>(c3[l], xs[l], a3[l]);
            }
        }
        out[0] += tail(w0, hsum(a0));
        out[1] += tail(w1, hsum(a1));
        out[2] += tail(w2, hsum(a2));
        out[3] += tail(w3, hsum(a3));
    }
    for (k, o) in blocks.into_remainder().iter_mut().enumerate() {
        let row = &w[(done + k) * cols..(done + k + 1) * cols];
        let mut acc = [0.0f32; LANES];
        for (xs, ws) in x.chunks_exact(LANES).zip(row.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] = fmadd::<FUSED>(ws[l], xs[l], acc[l]);
            }
        }
        *o += tail(row, hsum(acc));
    }
}

/// Outputs `matvec_cols` keeps in registers at once (one AVX2 register).
const COL_LANES: usize = 8;

/// `y[r] += Σ_i wt[i*stride + r] · x[i]` for `r` in `0..y.len()`: for each group of eight
/// outputs, every input's column slice is accumulated in registers, so `y` is read and
/// written once and even eight outputs fill a vector.
#[inline(always)]
fn matvec_cols_body<const FUSED: bool>(wt: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
    let full = y.len() - y.len() % COL_LANES;
    let (head, tail) = y.split_at_mut(full);
    for (c, yc) in head.chunks_exact_mut(COL_LANES).enumerate() {
        let mut acc = [0.0f32; COL_LANES];
        acc.copy_from_slice(yc);
        for (i, &xi) in x.iter().enumerate() {
            let w = &wt[i * stride + c * COL_LANES..][..COL_LANES];
            for l in 0..COL_LANES {
                acc[l] = fmadd::<FUSED>(w[l], xi, acc[l]);
            }
        }
        yc.copy_from_slice(&acc);
    }
    for (r, o) in tail.iter_mut().enumerate() {
        for (i, &xi) in x.iter().enumerate() {
            *o = fmadd::<FUSED>(wt[i * stride + full + r], xi, *o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub fn matvec_avx2(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
        super::matvec_body::<true>(w, cols, x, y)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn matvec_avx512(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
        super::matvec_body::<true>(w, cols, x, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn matvec_cols_avx2(wt: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
        super::matvec_cols_body::<true>(wt, stride, x, y)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn matvec_cols_avx512(wt: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
        super::matvec_cols_body::<true>(wt, stride, x, y)
    }
}

/// Runs `$avx512` / `$avx2` when the process-wide family selects it, else `$generic`.
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

/// `y += W·x` with `W` row-major `[y.len()][cols]` (`w.len() >= y.len() * cols`,
/// `x.len() >= cols`). Panics if the shapes do not fit (a caller bug: layers check shapes
/// when they are built).
pub fn matvec(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() >= cols && w.len() >= y.len() * cols,
        "matvec: shapes do not fit"
    );
    dispatch!(
        matvec_body::<false>(w, cols, x, y),
        x86::matvec_avx2,
        x86::matvec_avx512,
        (w, cols, x, y)
    )
}

/// `y += W·x` with `W` stored column-major: input `i`'s column starts at `wt[i*stride]` and
/// holds `y.len()` values (`stride >= y.len()`; a row sub-range is addressed by offsetting
/// `wt`). Panics if the shapes do not fit.
pub fn matvec_cols(wt: &[f32], stride: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        stride >= y.len() && (x.is_empty() || wt.len() >= (x.len() - 1) * stride + y.len()),
        "matvec_cols: shapes do not fit"
    );
    dispatch!(
        matvec_cols_body::<false>(wt, stride, x, y),
        x86::matvec_cols_avx2,
        x86::matvec_cols_avx512,
        (wt, stride, x, y)
    )
}

/// The scalar reference of [`matvec`] (tests and benches compare against it).
pub fn matvec_ref(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (r, o) in y.iter_mut().enumerate() {
        let mut s = 0.0f32;
        for i in 0..cols {
            s += w[r * cols + i] * x[i];
        }
        *o += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) from a 64-bit LCG.
    fn seeded(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    type Kernel = fn(&[f32], usize, &[f32], &mut [f32]);

    fn variants() -> Vec<(&'static str, Kernel)> {
        let mut v: Vec<(&'static str, Kernel)> =
            vec![("dispatched", matvec), ("generic", matvec_body::<false>)];
        #[cfg(target_arch = "x86_64")]
        {
            let f = crate::cpu::features();
            if f.avx2 && f.fma {
                v.push(("avx2", |w, c, x, y| {
                    // SAFETY: features checked before this variant is listed.
                    unsafe { x86::matvec_avx2(w, c, x, y) }
                }));
            }
            if f.avx512f && f.fma {
                v.push(("avx512", |w, c, x, y| {
                    // SAFETY: features checked before this variant is listed.
                    unsafe { x86::matvec_avx512(w, c, x, y) }
                }));
            }
        }
        v
    }

    #[test]
    fn matvec_variants_match_reference_on_edge_shapes() {
        for rows in [0, 1, 3, 4, 5, 17, 32] {
            for cols in [0, 1, 8, 15, 16, 17, 33, 64] {
                let w = seeded(rows * cols, (rows * 100 + cols) as u64);
                let x = seeded(cols, 7);
                let y0 = seeded(rows, 9);
                let mut want = y0.clone();
                matvec_ref(&w, cols, &x, &mut want);
                for (name, f) in variants() {
                    let mut y = y0.clone();
                    f(&w, cols, &x, &mut y);
                    for r in 0..rows {
                        assert!(
                            (y[r] - want[r]).abs() <= 1e-5 * (1.0 + want[r].abs()),
                            "{name} rows={rows} cols={cols} r={r}: {} vs {}",
                            y[r],
                            want[r]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matvec_cols_matches_row_major_reference() {
        for rows in [1, 7, 8, 16, 33] {
            for cols in [0, 1, 2, 8, 9] {
                let w = seeded(rows * cols, (rows + 31 * cols) as u64);
                // Column-major copy inside a wider stride, offset by 2, to exercise sub-ranges.
                let stride = rows + 3;
                let mut wt = vec![0.0f32; cols * stride + 2];
                for r in 0..rows {
                    for i in 0..cols {
                        wt[2 + i * stride + r] = w[r * cols + i];
                    }
                }
                let x = seeded(cols, 3);
                let mut want = vec![0.5f32; rows];
                matvec_ref(&w, cols, &x, &mut want);
                let mut got = vec![0.5f32; rows];
                matvec_cols(&wt[2..], stride, &x, &mut got);
                let mut generic = vec![0.5f32; rows];
                matvec_cols_body::<false>(&wt[2..], stride, &x, &mut generic);
                for r in 0..rows {
                    assert!((got[r] - want[r]).abs() <= 1e-5, "rows={rows} cols={cols}");
                    assert!((generic[r] - want[r]).abs() <= 1e-5);
                }
            }
        }
    }
}
