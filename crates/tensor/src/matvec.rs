//! Small f32 matrix-vector kernels for the real-time nets (dense layers, recurrent gates, conv taps).
//!
//! Two layouts, because small nets have both shapes: `matvec` reads row-major `[rows][cols]`
//! (a dot per output, good for a few long rows, e.g. a 24→1 output layer) and `matvec_packed`
//! reads the packed column layout of [`pack_cols`] (one vector FMA per input and 16 outputs, no
//! horizontal sums, good for everything else: recurrent gates, dense 16→16, conv taps). Both
//! accumulate into `y` (`y += W·x`) so a bias or a second matrix adds without another pass. The bodies are written for
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

/// Rows per panel of the packed layout: one AVX-512 vector of f32 (two AVX2 vectors).
pub const PANEL: usize = 16;

/// Panels computed in one pass over `x` (64 rows): with two accumulator sets (even and odd
/// inputs, so no FMA waits on the previous one) that is 8 AVX-512 registers.
const BLOCK: usize = 4;

/// Floats [`pack_cols`] produces for a `rows × cols` matrix.
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(PANEL) * PANEL * cols
}

/// Packs row-major `w` (`[rows][cols]`) for [`matvec_packed`]: blocks of up to 64 rows; block
/// `b` starts at `b * 64 * cols` and holds, for each input column in turn, its rows rounded up
/// to a whole number of 16-row panels (the padding is zero). Panics if `w` is shorter than
/// `rows * cols`.
pub fn pack_cols(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert!(w.len() >= rows * cols, "pack_cols: too few weights");
    let mut p = vec![0.0; packed_len(rows, cols)];
    for (b, r0) in (0..rows).step_by(BLOCK * PANEL).enumerate() {
        let width = (rows - r0).min(BLOCK * PANEL).div_ceil(PANEL) * PANEL;
        let base = b * BLOCK * PANEL * cols;
        for r in r0..(r0 + BLOCK * PANEL).min(rows) {
            for i in 0..cols {
                p[base + i * width + (r - r0)] = w[r * cols + i];
            }
        }
    }
    p
}

/// The weight at row `r`, column `i` of a [`pack_cols`] layout.
pub fn packed_get(p: &[f32], rows: usize, cols: usize, r: usize, i: usize) -> f32 {
    let (b, rr) = (r / (BLOCK * PANEL), r % (BLOCK * PANEL));
    let r0 = b * BLOCK * PANEL;
    let width = (rows - r0).min(BLOCK * PANEL).div_ceil(PANEL) * PANEL;
    p[b * BLOCK * PANEL * cols + i * width + rr]
}

/// One product of a sum: a [`pack_cols`] matrix of `y.len()` rows and its input.
pub type Term<'a> = (&'a [f32], &'a [f32]);

/// One block of `G` panels (rows `r0 ..`, `y.len() <= G * PANEL` of them): `y = start +
/// Σ W·x` over the terms, `start` the block's rows of `init` (empty: zeros) or, when `init`
/// is `None`, `y` itself. Even and odd inputs go to separate accumulators, summed at the end,
/// so consecutive FMAs never depend on each other.
#[inline(always)]
fn block_body<const G: usize, const FUSED: bool>(
    terms: &[Term],
    r0: usize,
    init: Option<&[f32]>,
    y: &mut [f32],
) {
    let mut a = [[0.0f32; PANEL]; G];
    let mut b = [[0.0f32; PANEL]; G];
    let start = init.unwrap_or(y);
    for (g, s) in start.chunks(PANEL).enumerate() {
        a[g][..s.len()].copy_from_slice(s);
    }
    let width = G * PANEL;
    for &(p, x) in terms {
        let p = &p[r0 * x.len()..][..width * x.len()];
        for (w, xs) in p.chunks_exact(2 * width).zip(x.chunks_exact(2)) {
            let (w0, w1) = w.split_at(width);
            for g in 0..G {
                let (c0, c1) = (&w0[g * PANEL..][..PANEL], &w1[g * PANEL..][..PANEL]);
                for l in 0..PANEL {
                    a[g][l] = fmadd::<FUSED>(c0[l], xs[0], a[g][l]);
                    b[g][l] = fmadd::<FUSED>(c1[l], xs[1], b[g][l]);
                }
            }
        }
        if x.len() % 2 == 1 {
            let (w, xi) = (&p[(x.len() - 1) * width..][..width], x[x.len() - 1]);
            for g in 0..G {
                for l in 0..PANEL {
                    a[g][l] = fmadd::<FUSED>(w[g * PANEL + l], xi, a[g][l]);
                }
            }
        }
    }
    for (g, ys) in y.chunks_mut(PANEL).enumerate() {
        for (l, o) in ys.iter_mut().enumerate() {
            *o = a[g][l] + b[g][l];
        }
    }
}

/// `y = start + Σ W·x` over [`pack_cols`] layouts of `y.len()` rows (`start` as in
/// [`block_body`]; `init`, when given, is empty or `y.len()` long).
#[inline(always)]
fn packed_body<const FUSED: bool>(terms: &[Term], init: Option<&[f32]>, y: &mut [f32]) {
    for (blk, ys) in y.chunks_mut(BLOCK * PANEL).enumerate() {
        let r0 = blk * BLOCK * PANEL;
        let init = init.map(|v| v.get(r0..r0 + ys.len()).unwrap_or(&[]));
        match ys.len().div_ceil(PANEL) {
            1 => block_body::<1, FUSED>(terms, r0, init, ys),
            2 => block_body::<2, FUSED>(terms, r0, init, ys),
            3 => block_body::<3, FUSED>(terms, r0, init, ys),
            _ => block_body::<BLOCK, FUSED>(terms, r0, init, ys),
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

    use super::Term;

    #[target_feature(enable = "avx2,fma")]
    pub fn matvec_packed_avx2(terms: &[Term], init: Option<&[f32]>, y: &mut [f32]) {
        super::packed_body::<true>(terms, init, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn matvec_packed_frames_avx2(
        w: &[f32],
        shape: (usize, usize),
        xs: &[f32],
        step: usize,
        bias: &[f32],
        ys: &mut [f32],
    ) {
        super::frames_body(w, shape, xs, step, ys, |t, y| {
            super::packed_body::<true>(t, Some(bias), y)
        })
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn matvec_packed_frames_avx512(
        w: &[f32],
        shape: (usize, usize),
        xs: &[f32],
        step: usize,
        bias: &[f32],
        ys: &mut [f32],
    ) {
        let (cols, rows) = shape;
        if rows <= 16 && cols <= FRAME_COLS {
            // SAFETY: `matvec_packed_frames` checked that `w` holds the one 16-row panel of
            // `cols` columns, that every frame's input and output lie in `xs` and `ys`, and
            // that `bias` is empty or `rows` long.
            return unsafe { frames_one_panel(w, shape, xs, step, bias, ys) };
        }
        super::frames_body(w, shape, xs, step, ys, |t, y| {
            matvec_packed_avx512(t, Some(bias), y)
        })
    }

    /// Widest matrix whose columns [`frames_one_panel`] loads once per block.
    const FRAME_COLS: usize = 32;

    /// [`super::matvec_packed_frames`] for one panel (at most 16 rows, at most `FRAME_COLS`
    /// columns): the bias and the weight columns are loaded once for the block, and each
    /// frame is its FMAs and one store — the FMAs of `block::<1, 4>` in the same order, so
    /// every frame has the bits of a single call.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn frames_one_panel(
        w: &[f32],
        (cols, rows): (usize, usize),
        xs: &[f32],
        step: usize,
        bias: &[f32],
        ys: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_ps();
        let start = if bias.is_empty() {
            zero
        } else {
            _mm512_maskz_loadu_ps(mask(0, rows), bias.as_ptr())
        };
        let mut wc = [zero; FRAME_COLS];
        for (j, c) in wc.iter_mut().enumerate().take(cols) {
            *c = _mm512_loadu_ps(w.as_ptr().add(j * 16));
        }
        for (f, y) in ys.chunks_exact_mut(rows).enumerate() {
            let x = xs.as_ptr().add(f * step);
            let mut acc = [start, zero, zero, zero];
            let mut i = 0;
            while i + 4 <= cols {
                for (s, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(wc[i + s], _mm512_set1_ps(*x.add(i + s)), *a);
                }
                i += 4;
            }
            for (s, a) in acc.iter_mut().enumerate().take(cols - i) {
                *a = _mm512_fmadd_ps(wc[i + s], _mm512_set1_ps(*x.add(i + s)), *a);
            }
            let sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]), acc[3]);
            crate::simd512::store_first(y.as_mut_ptr(), sum, rows);
        }
    }

    /// [`super::packed_body`] in AVX-512 intrinsics: the edge panel loads through a lane
    /// mask, so a 4-row or 24-row matrix costs no scalar loops or copies (the
    /// auto-vectorized body spent most of a 4×4 product there); results go out through
    /// plain stores (`simd512::store_first`).
    /// The caller checks the shapes (`super::packed`).
    #[target_feature(enable = "avx512f,fma")]
    pub fn matvec_packed_avx512(terms: &[Term], init: Option<&[f32]>, y: &mut [f32]) {
        use super::{BLOCK, PANEL};
        let rows = y.len();
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(BLOCK * PANEL);
            let start = match init {
                None => Some(y[r0..].as_ptr()),
                Some([]) => None,
                Some(v) => Some(v[r0..].as_ptr()),
            };
            let out = y[r0..].as_mut_ptr();
            // SAFETY: every term's matrix holds block `r0 / 64` of its layout,
            // `n.div_ceil(16) * 16` rows by `x.len()` columns, at `r0 * x.len()` (checked by
            // `packed`); `start` and `out` have `n` floats from `r0`, and the masks keep every
            // access to a row below `n`.
            unsafe {
                match n.div_ceil(PANEL) {
                    1 => block::<1, 4>(terms, r0, start, out, n),
                    2 => block::<2, 2>(terms, r0, start, out, n),
                    3 => block::<3, 2>(terms, r0, start, out, n),
                    _ => block::<BLOCK, 2>(terms, r0, start, out, n),
                }
            }
            r0 += n;
        }
    }

    /// Lane mask of panel `g` of a block of `n` rows.
    #[inline(always)]
    fn mask(g: usize, n: usize) -> u16 {
        crate::simd512::first_lanes(n.saturating_sub(g * 16))
    }

    /// `S` accumulator sets take inputs `i ≡ s (mod S)`: with one panel (`G = 1`) four sets
    /// keep four FMAs in flight, which is what the FMA latency needs (a 16×240 conv tap
    /// matrix is latency-bound with two).
    #[inline(always)]
    unsafe fn block<const G: usize, const S: usize>(
        terms: &[Term],
        r0: usize,
        start: Option<*const f32>,
        out: *mut f32,
        n: usize,
    ) {
        use std::arch::x86_64::*;
        let width = G * 16;
        let mut acc = [[_mm512_setzero_ps(); G]; S];
        if let Some(s) = start {
            for (g, ag) in acc[0].iter_mut().enumerate() {
                *ag = _mm512_maskz_loadu_ps(mask(g, n), s.add(g * 16));
            }
        }
        for &(p, x) in terms {
            let cols = x.len();
            let w = p.as_ptr().add(r0 * cols);
            let mut i = 0;
            while i + S <= cols {
                for (s, set) in acc.iter_mut().enumerate() {
                    let xs = _mm512_set1_ps(*x.get_unchecked(i + s));
                    let c = w.add((i + s) * width);
                    for (g, ag) in set.iter_mut().enumerate() {
                        *ag = _mm512_fmadd_ps(_mm512_loadu_ps(c.add(g * 16)), xs, *ag);
                    }
                }
                i += S;
            }
            for (s, set) in acc.iter_mut().enumerate().take(cols - i) {
                let xs = _mm512_set1_ps(*x.get_unchecked(i + s));
                let c = w.add((i + s) * width);
                for (g, ag) in set.iter_mut().enumerate() {
                    *ag = _mm512_fmadd_ps(_mm512_loadu_ps(c.add(g * 16)), xs, *ag);
                }
            }
        }
        let mut sum = acc[0];
        for set in &acc[1..] {
            for (t, v) in sum.iter_mut().zip(set) {
                *t = _mm512_add_ps(*t, *v);
            }
        }
        for (g, v) in sum.iter().enumerate() {
            crate::simd512::store_first(out.add(g * 16), *v, n.saturating_sub(g * 16).min(16));
        }
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

/// `y += W·x` with `W` (`y.len() × x.len()`) in the layout of [`pack_cols`]. Panics if `p`
/// is shorter than [`packed_len`] (a caller bug: layers pack their weights when built).
pub fn matvec_packed(p: &[f32], x: &[f32], y: &mut [f32]) {
    packed(&[(p, x)], None, y)
}

/// `y = bias + Σ W·x` over the terms (each a matrix as in [`matvec_packed`] with `y.len()`
/// rows, and its input), `bias` empty for none, else `y.len()` long. The bias is the
/// accumulators' start and all terms share the accumulators, so an LSTM's `W_ih·x + W_hh·h
/// + b` is one pass with one store.
#[inline]
pub fn matvec_packed_sum(terms: &[Term], bias: &[f32], y: &mut [f32]) {
    assert!(
        bias.is_empty() || bias.len() == y.len(),
        "matvec_packed_sum: bias length"
    );
    packed(terms, Some(bias), y)
}

#[inline]
fn packed(terms: &[Term], init: Option<&[f32]>, y: &mut [f32]) {
    assert!(
        terms
            .iter()
            .all(|(p, x)| p.len() >= packed_len(y.len(), x.len())),
        "matvec_packed: shapes do not fit"
    );
    dispatch!(
        packed_body::<false>(terms, init, y),
        x86::matvec_packed_avx2,
        x86::matvec_packed_avx512,
        (terms, init, y)
    )
}

/// [`matvec_packed_sum`] with one term, for consecutive frames: `ys[f] = bias + W·x_f` with
/// `x_f = xs[f·step .. f·step + cols]` (`step == cols` for frames back to back; smaller for
/// the overlapping windows of a convolution), `ys` frames of `rows`, `bias` empty or `rows`
/// long. Every frame is computed exactly as a single call would; the kernel is chosen once
/// for all frames, so a small layer pays its dispatch per block instead of per frame.
pub fn matvec_packed_frames(
    w: &[f32],
    (cols, rows): (usize, usize),
    xs: &[f32],
    step: usize,
    bias: &[f32],
    ys: &mut [f32],
) {
    let n = ys.len().checked_div(rows).unwrap_or(0);
    assert!(
        cols > 0
            && rows > 0
            && step > 0
            && (bias.is_empty() || bias.len() == rows)
            && ys.len() == n * rows
            && (n == 0 || xs.len() >= (n - 1) * step + cols)
            && w.len() >= packed_len(rows, cols),
        "matvec_packed_frames: shapes do not fit"
    );
    dispatch!(
        frames_body(w, (cols, rows), xs, step, ys, |t, y| packed_body::<false>(
            t,
            Some(bias),
            y
        )),
        x86::matvec_packed_frames_avx2,
        x86::matvec_packed_frames_avx512,
        (w, (cols, rows), xs, step, bias, ys)
    )
}

/// Runs `one(terms, y)` for every frame (see [`matvec_packed_frames`]).
#[inline(always)]
fn frames_body(
    w: &[f32],
    (cols, rows): (usize, usize),
    xs: &[f32],
    step: usize,
    ys: &mut [f32],
    mut one: impl FnMut(&[Term], &mut [f32]),
) {
    for (f, y) in ys.chunks_exact_mut(rows).enumerate() {
        one(&[(w, &xs[f * step..f * step + cols])], y);
    }
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

    #[test]
    fn packed_frames_give_the_bits_of_one_call_per_frame() {
        for (rows, cols) in [(4, 4), (1, 24), (70, 33), (16, 16)] {
            let w = seeded(rows * cols, 7);
            let p = pack_cols(&w, rows, cols);
            let n = 5;
            let xs = seeded(n * cols, 8);
            // Frames back to back, and overlapping windows one third of a frame apart.
            for (bias, step) in [
                (Vec::new(), cols),
                (seeded(rows, 9), cols),
                (seeded(rows, 9), cols.div_ceil(3)),
            ] {
                let m = if step == cols {
                    n
                } else {
                    (xs.len() - cols) / step + 1
                };
                let mut want = vec![0.0; m * rows];
                for (f, y) in want.chunks_exact_mut(rows).enumerate() {
                    matvec_packed_sum(&[(&p, &xs[f * step..f * step + cols])], &bias, y);
                }
                let mut got = vec![f32::NAN; m * rows];
                matvec_packed_frames(&p, (cols, rows), &xs, step, &bias, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{rows}x{cols} bias {} step {step}",
                    bias.len()
                );
            }
        }
        let r = std::panic::catch_unwind(|| {
            let p = pack_cols(&[0.0; 16], 4, 4);
            matvec_packed_frames(&p, (4, 4), &[0.0; 6], 4, &[], &mut [0.0; 8]);
        });
        assert!(r.is_err(), "a partial frame must be refused");
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
    fn matvec_packed_variants_match_reference_on_edge_shapes() {
        type Packed = fn(&[Term], Option<&[f32]>, &mut [f32]);
        let mut variants: Vec<(&str, Packed)> =
            vec![("dispatched", packed), ("generic", packed_body::<false>)];
        #[cfg(target_arch = "x86_64")]
        {
            let f = crate::cpu::features();
            if f.avx2 && f.fma {
                // SAFETY: features checked before this variant is listed.
                variants.push(("avx2", |t, i, y| unsafe {
                    x86::matvec_packed_avx2(t, i, y)
                }));
            }
            if f.avx512f && f.fma {
                // SAFETY: as above.
                variants.push(("avx512", |t, i, y| unsafe {
                    x86::matvec_packed_avx512(t, i, y)
                }));
            }
        }
        for rows in [0, 1, 7, 16, 17, 33, 48, 64, 65, 130] {
            for cols in [0, 1, 2, 3, 8, 9, 24] {
                let w = seeded(rows * cols, (rows + 31 * cols) as u64);
                let p = pack_cols(&w, rows, cols);
                assert_eq!(p.len(), packed_len(rows, cols));
                for r in 0..rows {
                    for i in 0..cols {
                        assert_eq!(packed_get(&p, rows, cols, r, i), w[r * cols + i]);
                    }
                }
                // A second term with another width (an LSTM's recurrent matrix).
                let cols2 = cols / 2 + 1;
                let w2 = seeded(rows * cols2, 77 + rows as u64);
                let p2 = pack_cols(&w2, rows, cols2);
                let x = seeded(cols, 3);
                let x2 = seeded(cols2, 4);
                let bias = seeded(rows, 5);
                let mut want = vec![0.5f32; rows];
                matvec_ref(&w, cols, &x, &mut want);
                let mut want_bias = bias.clone();
                matvec_ref(&w, cols, &x, &mut want_bias);
                let want_zero: Vec<f32> = want.iter().map(|v| v - 0.5).collect();
                let mut want_two = want_bias.clone();
                matvec_ref(&w2, cols2, &x2, &mut want_two);
                let one = [(&p[..], &x[..])];
                let two = [(&p[..], &x[..]), (&p2[..], &x2[..])];
                for (name, f) in &variants {
                    // Accumulate into y; start from a bias; from zero; two terms. A guard
                    // value after the rows proves the partial stores stay inside `y`.
                    for (terms, init, expect) in [
                        (&one[..], None, &want),
                        (&one[..], Some(&bias[..]), &want_bias),
                        (&one[..], Some(&[][..]), &want_zero),
                        (&two[..], Some(&bias[..]), &want_two),
                    ] {
                        let mut got = vec![0.5f32; rows + 1];
                        f(terms, init, &mut got[..rows]);
                        assert_eq!(got[rows], 0.5, "{name} wrote past y");
                        for r in 0..rows {
                            assert!(
                                (got[r] - expect[r]).abs() <= 1e-5 * (1.0 + expect[r].abs()),
                                "{name} rows={rows} cols={cols} r={r} terms={} init={init:?}",
                                terms.len()
                            );
                        }
                    }
                }
            }
        }
    }
}
