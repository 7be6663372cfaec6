//! f32 kernels used by the layers: norms, softmax, activations, rotary embedding, dot products.
//!
//! These are small next to the matmuls; they are written so the compiler vectorizes them.

use half::f16;

/// `out[i] = x[i] / rms(x) * weight[i]`, with `rms(x) = sqrt(mean(x²) + eps)`.
/// Shapes: `x`, `weight` and `out` have the same length.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), weight.len());
    debug_assert_eq!(x.len(), out.len());
    // Σx² in f64 over eight independent lanes: one serial chain of f64 adds took 0.7 µs per
    // 576-value row, on the critical path between every layer's matmuls.
    let mut lanes = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in lanes.iter_mut().zip(c) {
            *a += (v as f64) * (v as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    let sum = lanes.iter().sum::<f64>() + tail;
    let mean = (sum / x.len().max(1) as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// In-place softmax over `x` (numerically stable); an empty slice is left alone.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU(x) = x · sigmoid(x), with the crate's vectorizable `exp` (`exp::exp_fast`), so loops
/// over it compile to SIMD.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp::exp_fast(-x))
}

/// `out[i] = silu(gate[i]) * up[i]` (the SwiGLU combination), written where the next
/// matmul reads its input; the same bits whichever kernel family runs it.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    dispatch_fma!(
        silu_mul_body(gate, up, out),
        x86::silu_mul_avx2,
        x86::silu_mul_avx512,
        (gate, up, out)
    )
}

#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// `a += b`.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Lanes of independent accumulators in `dot`, so the loop vectorizes (and, where FMA is
/// enabled, fuses) without a serial dependency.
const DOT_LANES: usize = 16;

/// `dot` and `axpy` bodies; `FUSED` uses `mul_add`, which is one instruction only where the
/// function is compiled with FMA enabled (elsewhere it is a slow library call).
#[inline(always)]
fn dot_body<const FUSED: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; DOT_LANES];
    let mut ca = a.chunks_exact(DOT_LANES);
    let mut cb = b.chunks_exact(DOT_LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for i in 0..DOT_LANES {
            acc[i] = if FUSED {
                xa[i].mul_add(xb[i], acc[i])
            } else {
                acc[i] + xa[i] * xb[i]
            };
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn axpy_body<const FUSED: bool>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = if FUSED {
            alpha.mul_add(v, *o)
        } else {
            *o + alpha * v
        };
    }
}

/// `out[r] = dot(q, data[r*stride + offset ..][..q.len()])` for every `r` in `0..out.len()`.
#[inline(always)]
fn dot_rows_body<const FUSED: bool>(
    q: &[f32],
    data: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let d = q.len();
    for (r, o) in out.iter_mut().enumerate() {
        let start = r * stride + offset;
        *o = dot_body::<FUSED>(q, &data[start..start + d]);
    }
}

/// `out = Σ_r w[r] · data[r*stride + offset ..][..out.len()]`.
#[inline(always)]
fn weighted_rows_body<const FUSED: bool>(
    w: &[f32],
    data: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let d = out.len();
    out.fill(0.0);
    for (r, &wr) in w.iter().enumerate() {
        let start = r * stride + offset;
        axpy_body::<FUSED>(wr, &data[start..start + d], out);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    // No FMA contraction happens without an explicit `mul_add`, so these give the generic
    // loop's bits, vectorized.
    #[target_feature(enable = "avx2,fma")]
    pub fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::silu_mul_body(gate, up, out)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn silu_mul_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        super::silu_mul_body(gate, up, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_rows_avx2(q: &[f32], data: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
        super::dot_rows_body::<true>(q, data, stride, offset, out)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn dot_rows_avx512(q: &[f32], data: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
        let hd = q.len();
        let base = data.as_ptr();
        let done = dot_rows16_avx512(q, out, |r, c| {
            // SAFETY: the caller checked that every row `r < out.len()` (`hd` values at
            // `r * stride + offset`) lies in `data`, and `c + 16 <= hd`.
            unsafe { _mm512_loadu_ps(base.add(r * stride + offset + c)) }
        });
        for (r, o) in out.iter_mut().enumerate().skip(done) {
            let start = r * stride + offset;
            *o = dot_f32_avx512(q, &data[start..start + hd]);
        }
    }

    /// Dot product of two f32 slices of the same length; where that is a multiple of 16,
    /// summed as [`dot_rows16_avx512`] sums each row.
    #[target_feature(enable = "avx512f,fma")]
    fn dot_f32_avx512(q: &[f32], k: &[f32]) -> f32 {
        let n = q.len().min(k.len());
        let body = n / 16 * 16;
        let tail: f32 = (body..n).map(|j| q[j] * k[j]).sum();
        // SAFETY: `dot16_avx512` loads 16 values at columns `c + 16 <= n`.
        dot16_avx512(q, n, |c| unsafe { _mm512_loadu_ps(k.as_ptr().add(c)) }) + tail
    }

    /// `Σ q[c] · load(c)` over the first `n / 16 * 16` columns (`n <= q.len()`), 16 columns
    /// per `load`, the lanes summed by [`lane_sum`]: one row's score as [`dot_rows16_avx512`]
    /// computes each of its 16.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    fn dot16_avx512(q: &[f32], n: usize, load: impl Fn(usize) -> __m512) -> f32 {
        let mut acc = _mm512_setzero_ps();
        for c in (0..n.min(q.len()) / 16 * 16).step_by(16) {
            // SAFETY: c + 16 <= q.len().
            let qc = unsafe { _mm512_loadu_ps(q.as_ptr().add(c)) };
            acc = _mm512_fmadd_ps(qc, load(c), acc);
        }
        lane_sum(acc)
    }

    /// The sum of `v`'s 16 lanes, added in the order [`lane_sums16`] adds each vector's.
    #[target_feature(enable = "avx512f")]
    fn lane_sum(v: __m512) -> f32 {
        let h = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0xEE>(v, v));
        let h = _mm512_add_ps(h, _mm512_shuffle_f32x4::<0x55>(h, h));
        let h = _mm512_add_ps(h, _mm512_permute_ps::<0xEE>(h));
        let h = _mm512_add_ps(h, _mm512_permute_ps::<0x55>(h));
        _mm512_cvtss_f32(h)
    }

    /// The lane sums of `v[0..16]`, in order, as one vector: a transpose-and-add tree, 46
    /// shuffles and adds for the 16 where one reduction each takes about 130. Each vector's
    /// lanes are added in [`lane_sum`]'s order (128-bit quarters 0 + 2 and 1 + 3, then those
    /// two, then within the quarter elements 0 + 2 and 1 + 3, then those two), so a row's
    /// result does not depend on whether it was summed in a group of 16 or alone.
    #[target_feature(enable = "avx512f")]
    fn lane_sums16(v: &[__m512; 16]) -> __m512 {
        // w[i]: quarters (a0 + a2, a1 + a3, b0 + b2, b1 + b3) of rows a = 2i, b = 2i + 1.
        let mut w = [_mm512_setzero_ps(); 8];
        for (i, wi) in w.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            *wi = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            );
        }
        // x[i]: quarter L holds the four partial sums of row 4i + L.
        let mut x = [_mm512_setzero_ps(); 4];
        for (i, xi) in x.iter_mut().enumerate() {
            let (c, d) = (w[2 * i], w[2 * i + 1]);
            *xi = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(c, d),
                _mm512_shuffle_f32x4::<0xDD>(c, d),
            );
        }
        let y01 = _mm512_add_ps(
            _mm512_unpacklo_ps(x[0], x[1]),
            _mm512_unpackhi_ps(x[0], x[1]),
        );
        let y23 = _mm512_add_ps(
            _mm512_unpacklo_ps(x[2], x[3]),
            _mm512_unpackhi_ps(x[2], x[3]),
        );
        let (a, b) = (_mm512_castps_pd(y01), _mm512_castps_pd(y23));
        // z: element e of quarter L is the sum of row 4e + L.
        let z = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        );
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_ps(order, z)
    }

    /// Scores of `q` (a multiple of 16 long) against rows `0..16k` of `out.len()` rows, 16 at
    /// a time: `load(r, c)` gives 16 values of row `r` from column `c`. Each row's lanes are
    /// accumulated column chunk by column chunk and the 16 rows are reduced together
    /// ([`lane_sums16`]). Returns how many rows it did (the rest are left to the caller).
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    fn dot_rows16_avx512(
        q: &[f32],
        out: &mut [f32],
        load: impl Fn(usize, usize) -> __m512,
    ) -> usize {
        let hd = q.len();
        if hd == 0 || !hd.is_multiple_of(16) {
            return 0;
        }
        let mut r0 = 0;
        while r0 + 16 <= out.len() {
            let mut acc = [_mm512_setzero_ps(); 16];
            for c in (0..hd).step_by(16) {
                // SAFETY: c + 16 <= hd = q.len().
                let qc = unsafe { _mm512_loadu_ps(q.as_ptr().add(c)) };
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(qc, load(r0 + j, c), *a);
                }
            }
            // SAFETY: r0 + 16 <= out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r0), lane_sums16(&acc)) };
            r0 += 16;
        }
        r0
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn weighted_rows_avx2(
        w: &[f32],
        data: &[f32],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        super::weighted_rows_body::<true>(w, data, stride, offset, out)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn weighted_rows_avx512(
        w: &[f32],
        data: &[f32],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        super::weighted_rows_body::<true>(w, data, stride, offset, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body::<true>(a, b)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body::<true>(a, b)
    }

    use half::f16;
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot_f16_avx2(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let (qp, kp) = (q.as_ptr(), k.as_ptr() as *const __m128i);
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n, so both 8-lane loads of each operand are in bounds; f16 is
            // a 2-byte transparent wrapper of u16, so 8 of them form one unaligned __m128i.
            unsafe {
                let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.byte_add(2 * i)));
                let k1 = _mm256_cvtph_ps(_mm_loadu_si128(kp.byte_add(2 * i + 16)));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), k0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i + 8)), k1, a1);
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: i + 8 <= n, as above.
            unsafe {
                let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.byte_add(2 * i)));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), k0, a0);
            }
            i += 8;
        }
        let mut s = hsum256(_mm256_add_ps(a0, a1));
        for j in i..n {
            s += q[j] * k[j].to_f32();
        }
        s
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn dot_f16_avx512(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let kp = k.as_ptr() as *const __m256i;
        // SAFETY: `dot16_avx512` loads 16 values (one __m256i of f16) at columns
        // `c + 16 <= n`.
        let mut s = dot16_avx512(q, n, |c| unsafe {
            _mm512_cvtph_ps(_mm256_loadu_si256(kp.byte_add(2 * c)))
        });
        for j in n / 16 * 16..n {
            s += q[j] * k[j].to_f32();
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot_rows_f16_avx2(
        q: &[f32],
        data: &[f16],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        for (r, o) in out.iter_mut().enumerate() {
            let s = r * stride + offset;
            *o = dot_f16_avx2(q, &data[s..s + q.len()]);
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn dot_rows_f16_avx512(
        q: &[f32],
        data: &[f16],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        let base = data.as_ptr();
        let done = dot_rows16_avx512(q, out, |r, c| {
            // SAFETY: the caller checked that every row `r < out.len()` (`q.len()` values at
            // `r * stride + offset`) lies in `data`, and `c + 16 <= q.len()`.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(base.add(r * stride + offset + c).cast())) }
        });
        for (r, o) in out.iter_mut().enumerate().skip(done) {
            let s = r * stride + offset;
            *o = dot_f16_avx512(q, &data[s..s + q.len()]);
        }
    }

    /// `out += Σ_r w[r] · row r`, a column tile of `out` at a time held in registers over all
    /// the rows (each element's FMAs in row order, as a per-row axpy would do them, without
    /// its store and reload per row).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn add_weighted_rows_f16_avx2(
        w: &[f32],
        data: &[f16],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        let d = out.len();
        // Every row `r * stride + offset .. + d` lies in `data` (checked by the caller).
        assert!(w.is_empty() || (w.len() - 1) * stride + offset + d <= data.len());
        let (xp, yp) = (data.as_ptr() as *const __m128i, out.as_mut_ptr());
        let mut c = 0;
        while c + 32 <= d {
            // SAFETY: c + 32 <= d, and every row holds `d` values from its start (asserted).
            unsafe {
                let mut a = [_mm256_setzero_ps(); 4];
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm256_loadu_ps(yp.add(c + 8 * j));
                }
                for (r, &wr) in w.iter().enumerate() {
                    let row = xp.byte_add(2 * (r * stride + offset + c));
                    let wv = _mm256_set1_ps(wr);
                    for (j, aj) in a.iter_mut().enumerate() {
                        let v = _mm256_cvtph_ps(_mm_loadu_si128(row.byte_add(16 * j)));
                        *aj = _mm256_fmadd_ps(wv, v, *aj);
                    }
                }
                for (j, aj) in a.iter().enumerate() {
                    _mm256_storeu_ps(yp.add(c + 8 * j), *aj);
                }
            }
            c += 32;
        }
        if c < d {
            for (r, &wr) in w.iter().enumerate() {
                let s = r * stride + offset;
                axpy_f16_avx2(wr, &data[s + c..s + d], &mut out[c..]);
            }
        }
    }

    /// The AVX-512 form of [`add_weighted_rows_f16_avx2`]: column tiles of 64.
    #[target_feature(enable = "avx512f,fma")]
    pub fn add_weighted_rows_f16_avx512(
        w: &[f32],
        data: &[f16],
        stride: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        let d = out.len();
        assert!(w.is_empty() || (w.len() - 1) * stride + offset + d <= data.len());
        let (xp, yp) = (data.as_ptr() as *const __m256i, out.as_mut_ptr());
        let mut c = 0;
        while c + 64 <= d {
            // SAFETY: c + 64 <= d, and every row holds `d` values from its start (asserted).
            unsafe {
                let mut a = [_mm512_setzero_ps(); 4];
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm512_loadu_ps(yp.add(c + 16 * j));
                }
                for (r, &wr) in w.iter().enumerate() {
                    let row = xp.byte_add(2 * (r * stride + offset + c));
                    let wv = _mm512_set1_ps(wr);
                    for (j, aj) in a.iter_mut().enumerate() {
                        let v = _mm512_cvtph_ps(_mm256_loadu_si256(row.byte_add(32 * j)));
                        *aj = _mm512_fmadd_ps(wv, v, *aj);
                    }
                }
                for (j, aj) in a.iter().enumerate() {
                    _mm512_storeu_ps(yp.add(c + 16 * j), *aj);
                }
            }
            c += 64;
        }
        if c < d {
            for (r, &wr) in w.iter().enumerate() {
                let s = r * stride + offset;
                axpy_f16_avx512(wr, &data[s + c..s + d], &mut out[c..]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn axpy_f16_avx2(alpha: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (xp, yp) = (x.as_ptr() as *const __m128i, y.as_mut_ptr());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n: 8 f16 and 8 f32 are in bounds of `x` and `y`.
            unsafe {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(xp.byte_add(2 * i)));
                let o = _mm256_fmadd_ps(a, v, _mm256_loadu_ps(yp.add(i)));
                _mm256_storeu_ps(yp.add(i), o);
            }
            i += 8;
        }
        for j in i..n {
            y[j] += alpha * x[j].to_f32();
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn axpy_f16_avx512(alpha: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (xp, yp) = (x.as_ptr() as *const __m256i, y.as_mut_ptr());
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n: 16 f16 and 16 f32 are in bounds of `x` and `y`.
            unsafe {
                let v = _mm512_cvtph_ps(_mm256_loadu_si256(xp.byte_add(2 * i)));
                let o = _mm512_fmadd_ps(a, v, _mm512_loadu_ps(yp.add(i)));
                _mm512_storeu_ps(yp.add(i), o);
            }
            i += 16;
        }
        for j in i..n {
            y[j] += alpha * x[j].to_f32();
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body::<true>(alpha, x, y)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body::<true>(alpha, x, y)
    }
}

/// Runs the AVX-512 or AVX2 FMA build of a kernel when `kernel_choice()` selects that family
/// (returning its result), and otherwise evaluates the portable expression `$generic`.
macro_rules! dispatch_fma {
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

pub(crate) use dispatch_fma;

pub mod exp;
pub mod tile;

/// Dot product of two f32 slices (over the shorter length), with the kernel family chosen
/// by `KILN_KERNELS` / the CPU.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dispatch_fma!(
        dot_body::<false>(a, b),
        x86::dot_avx2,
        x86::dot_avx512,
        (a, b)
    )
}

/// Rows `r` of `data` start at `r * stride + offset`; checks that `n_rows` rows of `width`
/// values fit.
fn rows_fit(data: &[f32], stride: usize, offset: usize, n_rows: usize, width: usize) -> bool {
    n_rows == 0 || (n_rows - 1) * stride + offset + width <= data.len()
}

/// Dot products of `q` with `out.len()` rows of `data` (row `r` starts at
/// `r * stride + offset`, `q.len()` values each): attention scores in one call.
/// Panics if the rows do not fit in `data` (a caller bug, not an input error).
pub fn dot_rows(q: &[f32], data: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
    assert!(
        rows_fit(data, stride, offset, out.len(), q.len()),
        "dot_rows: rows out of range"
    );
    dispatch_fma!(
        dot_rows_body::<false>(q, data, stride, offset, out),
        x86::dot_rows_avx2,
        x86::dot_rows_avx512,
        (q, data, stride, offset, out)
    )
}

/// `out = Σ_r w[r] · row r of data` (row `r` starts at `r * stride + offset`, `out.len()`
/// values each): the attention-weighted sum of values in one call.
/// Panics if the rows do not fit in `data` (a caller bug, not an input error).
pub fn weighted_rows(w: &[f32], data: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
    assert!(
        rows_fit(data, stride, offset, w.len(), out.len()),
        "weighted_rows: rows out of range"
    );
    dispatch_fma!(
        weighted_rows_body::<false>(w, data, stride, offset, out),
        x86::weighted_rows_avx2,
        x86::weighted_rows_avx512,
        (w, data, stride, offset, out)
    )
}

/// `y += alpha * x` (over the shorter length).
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    dispatch_fma!(
        axpy_body::<false>(alpha, x, y),
        x86::axpy_avx2,
        x86::axpy_avx512,
        (alpha, x, y)
    )
}

/// Scalar reference of [`dot_f16`].
fn dot_f16_generic(q: &[f32], k: &[f16]) -> f32 {
    q.iter().zip(k).map(|(&a, &b)| a * b.to_f32()).sum()
}

/// Scalar reference of [`axpy_f16`].
fn axpy_f16_generic(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v.to_f32();
    }
}

/// Dot product of f32 `q` with f16 `k` (over the shorter length), each f16 widened in
/// registers: attention scores straight from an f16 KV cache, no converted copy.
pub fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
    dispatch_fma!(
        dot_f16_generic(q, k),
        x86::dot_f16_avx2,
        x86::dot_f16_avx512,
        (q, k)
    )
}

/// `y += alpha * x` for f16 `x` (over the shorter length): the attention-weighted sum of
/// values straight from an f16 KV cache.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    dispatch_fma!(
        axpy_f16_generic(alpha, x, y),
        x86::axpy_f16_avx2,
        x86::axpy_f16_avx512,
        (alpha, x, y)
    )
}

/// Rows `r` of f16 `data` start at `r * stride + offset`; checks that `n_rows` rows of
/// `width` values fit.
fn rows_fit_f16(data: &[f16], stride: usize, offset: usize, n_rows: usize, width: usize) -> bool {
    n_rows == 0 || (n_rows - 1) * stride + offset + width <= data.len()
}

/// [`dot_rows`] over f16 rows (each widened in registers): the scores of one KV block.
/// Panics if the rows do not fit in `data` (a caller bug, not an input error).
pub fn dot_rows_f16(q: &[f32], data: &[f16], stride: usize, offset: usize, out: &mut [f32]) {
    assert!(
        rows_fit_f16(data, stride, offset, out.len(), q.len()),
        "dot_rows_f16: rows out of range"
    );
    dispatch_fma!(
        for (r, o) in out.iter_mut().enumerate() {
            let s = r * stride + offset;
            *o = dot_f16_generic(q, &data[s..s + q.len()]);
        },
        x86::dot_rows_f16_avx2,
        x86::dot_rows_f16_avx512,
        (q, data, stride, offset, out)
    )
}

/// `out += Σ_r w[r] · row r` over f16 rows (row `r` at `r * stride + offset`): one KV block's
/// attention-weighted values added straight into the running accumulator.
/// Panics if the rows do not fit in `data` (a caller bug, not an input error).
pub fn add_weighted_rows_f16(
    w: &[f32],
    data: &[f16],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    assert!(
        rows_fit_f16(data, stride, offset, w.len(), out.len()),
        "add_weighted_rows_f16: rows out of range"
    );
    dispatch_fma!(
        {
            let d = out.len();
            for (r, &wr) in w.iter().enumerate() {
                let s = r * stride + offset;
                axpy_f16_generic(wr, &data[s..s + d], out);
            }
        },
        x86::add_weighted_rows_f16_avx2,
        x86::add_weighted_rows_f16_avx512,
        (w, data, stride, offset, out)
    )
}

/// Rounds every value to the nearest f16 and back (models an f16 operand in f32 math).
pub fn round_to_f16_in_place(x: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let mut buf = [f16::ZERO; 64];
    for chunk in x.chunks_mut(64) {
        let b = &mut buf[..chunk.len()];
        b.convert_from_f32_slice(chunk);
        b.convert_to_f32_slice(chunk);
    }
}

/// Converts f32 values to f16 (`src` and `dst` of equal length).
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    dst.convert_from_f32_slice(src);
}

/// Converts f16 values to f32 (`src` and `dst` of equal length).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    src.convert_to_f32_slice(dst);
}

/// Precomputed rotary-embedding frequencies for the "normal" (adjacent pairs) layout that GGUF
/// llama files use: pair `(x[2i], x[2i+1])` of a head rotates by `pos * base^(-2i/n_dims)`.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// `n_dims` (≤ `head_dim`, even) leading dimensions of each head are rotated.
    pub fn new(head_dim: usize, n_dims: usize, freq_base: f32) -> Rope {
        // Heads wider than 512 rotate only their first 512 dimensions.
        let n_dims = n_dims.min(head_dim).min(512) & !1;
        let inv_freq = (0..n_dims / 2)
            .map(|i| freq_base.powf(-2.0 * i as f32 / n_dims as f32))
            .collect();
        Rope { inv_freq, head_dim }
    }

    /// Rotates every head of `x` (a multiple of `head_dim` long) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let mut angles = [0f32; 2 * Rope::MAX_PAIRS];
        let angles = &mut angles[..self.angles_len()];
        self.angles(pos, angles);
        self.rotate(x, angles);
    }

    /// Most frequencies a rotation uses (heads rotate at most 512 dimensions).
    const MAX_PAIRS: usize = 256;

    /// Length of a position's [`Rope::angles`]: a sine and a cosine per rotated pair.
    pub fn angles_len(&self) -> usize {
        2 * self.inv_freq.len().min(Rope::MAX_PAIRS)
    }

    /// Sets `out` ([`Rope::angles_len`] values) to position `pos`'s sines, then cosines, one
    /// per frequency: computed once per token, they serve every layer's queries and keys.
    pub fn angles(&self, pos: usize, out: &mut [f32]) {
        let p = pos as f32;
        let (sin, cos) = out.split_at_mut(out.len() / 2);
        for ((s, c), &f) in sin.iter_mut().zip(cos.iter_mut()).zip(&self.inv_freq) {
            (*s, *c) = (p * f).sin_cos();
        }
    }

    /// Rotates every head of `x` (a multiple of `head_dim` long) by `angles` (a position's
    /// [`Rope::angles`]).
    pub fn rotate(&self, x: &mut [f32], angles: &[f32]) {
        let (sin, cos) = angles.split_at(angles.len() / 2);
        for head in x.chunks_exact_mut(self.head_dim) {
            for (pair, (&s, &c)) in head.chunks_exact_mut(2).zip(sin.iter().zip(cos)) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.37).collect();
        let w = vec![1.0; 64];
        let mut out = vec![0.0; 64];
        rms_norm(&x, &w, 0.0, &mut out);
        let ms: f32 = out.iter().map(|v| v * v).sum::<f32>() / 64.0;
        assert!((ms - 1.0).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = vec![1.0, 3.0, -2.0, 0.5];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[3] && x[3] > x[2]);
    }

    #[test]
    fn dot_and_axpy_variants_match_naive_on_odd_lengths() {
        for n in [0, 1, 15, 16, 17, 63, 64, 65] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let mut variants: Vec<f32> = vec![dot(&a, &b), dot_body::<false>(&a, &b)];
            let mut ys = vec![b.clone(), b.clone()];
            axpy(0.5, &a, &mut ys[0]);
            axpy_body::<false>(0.5, &a, &mut ys[1]);
            #[cfg(target_arch = "x86_64")]
            {
                let f = crate::cpu::features();
                if f.avx2 && f.fma {
                    // SAFETY: features checked just above.
                    variants.push(unsafe { x86::dot_avx2(&a, &b) });
                    let mut y = b.clone();
                    // SAFETY: as above.
                    unsafe { x86::axpy_avx2(0.5, &a, &mut y) };
                    ys.push(y);
                }
                if f.avx512f && f.fma {
                    // SAFETY: as above.
                    variants.push(unsafe { x86::dot_avx512(&a, &b) });
                    let mut y = b.clone();
                    // SAFETY: as above.
                    unsafe { x86::axpy_avx512(0.5, &a, &mut y) };
                    ys.push(y);
                }
            }
            for v in variants {
                assert!((v - naive).abs() < 1e-4, "n={n}: {v} vs {naive}");
            }
            for y in &ys {
                for i in 0..n {
                    assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn silu_mul_is_one_set_of_bits_close_to_libm() {
        let n = 1000;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) * 0.21).collect();
        let up: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut want = vec![0f32; n];
        silu_mul_body(&gate, &up, &mut want);
        for (i, w) in want.iter().enumerate() {
            let (g, u) = (gate[i] as f64, up[i] as f64);
            let exact = g / (1.0 + (-g).exp()) * u;
            assert!(
                (*w as f64 - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                "i={i}"
            );
        }
        let mut got = vec![0f32; n];
        silu_mul(&gate, &up, &mut got);
        assert_eq!(got, want);
        #[cfg(target_arch = "x86_64")]
        {
            let f = crate::cpu::features();
            if f.avx2 && f.fma {
                // SAFETY: features checked just above.
                unsafe { x86::silu_mul_avx2(&gate, &up, &mut got) };
                assert_eq!(got, want);
            }
            if f.avx512f && f.fma {
                // SAFETY: as above.
                unsafe { x86::silu_mul_avx512(&gate, &up, &mut got) };
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn strided_row_kernels_match_naive() {
        let (stride, offset, width, rows) = (24, 5, 16, 7);
        let data: Vec<f32> = (0..stride * rows + offset)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let q: Vec<f32> = (0..width).map(|i| (i as f32 * 0.11).cos()).collect();
        let w: Vec<f32> = (0..rows).map(|i| 0.1 * i as f32).collect();
        let row = |r: usize| &data[r * stride + offset..r * stride + offset + width];
        let mut scores = vec![0.0; rows];
        dot_rows(&q, &data, stride, offset, &mut scores);
        let mut generic = vec![0.0; rows];
        dot_rows_body::<false>(&q, &data, stride, offset, &mut generic);
        let mut summed = vec![0.0; width];
        weighted_rows(&w, &data, stride, offset, &mut summed);
        for r in 0..rows {
            let naive: f32 = q.iter().zip(row(r)).map(|(a, b)| a * b).sum();
            assert!((scores[r] - naive).abs() < 1e-5 && (generic[r] - naive).abs() < 1e-5);
        }
        for (i, got) in summed.iter().enumerate() {
            let naive: f32 = (0..rows).map(|r| w[r] * row(r)[i]).sum();
            assert!((got - naive).abs() < 1e-5);
        }
        let mut x = vec![1.0f32 / 3.0, 65504.0, 1e-8];
        round_to_f16_in_place(&mut x);
        assert_eq!(x[0], f16::from_f32(1.0 / 3.0).to_f32());
        assert_eq!(x[1], 65504.0);
    }

    #[test]
    fn f16_row_kernels_match_the_scalar_reference() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 65, 100] {
            let q: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let k: Vec<f16> = (0..n)
                .map(|i| f16::from_f32((i as f32 * 0.3).cos()))
                .collect();
            let want = dot_f16_generic(&q, &k);
            let mut got = vec![dot_f16(&q, &k)];
            let y0: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let mut want_y = y0.clone();
            axpy_f16_generic(-0.5, &k, &mut want_y);
            let mut ys = vec![y0.clone()];
            axpy_f16(-0.5, &k, &mut ys[0]);
            #[cfg(target_arch = "x86_64")]
            {
                let f = crate::cpu::features();
                if f.avx2 && f.fma && f.f16c {
                    // SAFETY: features checked just above.
                    got.push(unsafe { x86::dot_f16_avx2(&q, &k) });
                    let mut y = y0.clone();
                    // SAFETY: as above.
                    unsafe { x86::axpy_f16_avx2(-0.5, &k, &mut y) };
                    ys.push(y);
                }
                if f.avx512f && f.fma {
                    // SAFETY: as above.
                    got.push(unsafe { x86::dot_f16_avx512(&q, &k) });
                    let mut y = y0.clone();
                    // SAFETY: as above.
                    unsafe { x86::axpy_f16_avx512(-0.5, &k, &mut y) };
                    ys.push(y);
                }
            }
            for g in got {
                assert!((g - want).abs() < 1e-4, "n={n}: {g} vs {want}");
            }
            // Strided rows: three rows of `n` values, `n + 3` apart, from offset 2.
            let data: Vec<f16> = (0..3 * (n + 3) + 2)
                .map(|i| f16::from_f32((i as f32 * 0.13).sin()))
                .collect();
            let row = |r: usize| &data[r * (n + 3) + 2..r * (n + 3) + 2 + n];
            let mut scores = [0f32; 3];
            dot_rows_f16(&q, &data, n + 3, 2, &mut scores);
            let mut summed = vec![1f32; n];
            add_weighted_rows_f16(&[0.5, -1.0, 2.0], &data, n + 3, 2, &mut summed);
            for (r, got) in scores.iter().enumerate() {
                assert!((got - dot_f16_generic(&q, row(r))).abs() < 1e-4);
            }
            // The register-tiled weighted sums do each element's FMAs in row order, so they
            // equal a per-row axpy of the same width bit for bit.
            #[cfg(target_arch = "x86_64")]
            {
                let f = crate::cpu::features();
                let w = [0.5, -1.0, 2.0];
                let check = |tiled: unsafe fn(&[f32], &[f16], usize, usize, &mut [f32]),
                             axpy: unsafe fn(f32, &[f16], &mut [f32])| {
                    let (mut a, mut b) = (vec![1f32; n], vec![1f32; n]);
                    // SAFETY: the caller checked the features of both kernels.
                    unsafe {
                        tiled(&w, &data, n + 3, 2, &mut a);
                        for (r, &wr) in w.iter().enumerate() {
                            axpy(wr, row(r), &mut b);
                        }
                    }
                    assert_eq!(a, b, "n={n}");
                };
                if f.avx2 && f.fma && f.f16c {
                    check(x86::add_weighted_rows_f16_avx2, x86::axpy_f16_avx2);
                }
                if f.avx512f && f.fma {
                    check(x86::add_weighted_rows_f16_avx512, x86::axpy_f16_avx512);
                }
            }
            for (i, got) in summed.iter().enumerate() {
                let naive =
                    1.0 + 0.5 * row(0)[i].to_f32() - row(1)[i].to_f32() + 2.0 * row(2)[i].to_f32();
                assert!((got - naive).abs() < 1e-5);
            }
            for y in &ys {
                for i in 0..n {
                    assert!((y[i] - want_y[i]).abs() < 1e-6, "n={n} i={i}");
                }
            }
        }
    }

    #[test]
    fn row_scores_do_not_depend_on_how_rows_are_grouped() {
        // 37 rows: two groups of 16 summed together (on AVX-512) and a tail of 5 one by one;
        // head sizes that are not a multiple of 16 take the single-row path throughout.
        for hd in [16, 24, 40, 64, 80, 128] {
            let (rows, stride, offset) = (37, hd + 8, 3);
            let f: Vec<f32> = (0..rows * stride + offset)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let h: Vec<f16> = f.iter().map(|&v| f16::from_f32(v)).collect();
            let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.11).cos()).collect();
            let (mut all_f, mut all_h) = (vec![0.0; rows], vec![0.0; rows]);
            dot_rows(&q, &f, stride, offset, &mut all_f);
            dot_rows_f16(&q, &h, stride, offset, &mut all_h);
            for r in 0..rows {
                let (mut one_f, mut one_h) = ([0f32], [0f32]);
                dot_rows(&q, &f, stride, r * stride + offset, &mut one_f);
                dot_rows_f16(&q, &h, stride, r * stride + offset, &mut one_h);
                assert_eq!(all_f[r].to_bits(), one_f[0].to_bits(), "f32 hd={hd} r={r}");
                assert_eq!(all_h[r].to_bits(), one_h[0].to_bits(), "f16 hd={hd} r={r}");
                let at = r * stride + offset;
                let naive: f64 = (0..hd).map(|i| q[i] as f64 * f[at + i] as f64).sum();
                assert!((all_f[r] as f64 - naive).abs() < 1e-4, "f32 hd={hd} r={r}");
                let naive_h: f64 = (0..hd).map(|i| q[i] as f64 * h[at + i].to_f64()).sum();
                assert!(
                    (all_h[r] as f64 - naive_h).abs() < 1e-4,
                    "f16 hd={hd} r={r}"
                );
            }
        }
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let rope = Rope::new(8, 8, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 - 4.0).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 0);
        assert_eq!(x, orig);
        rope.apply(&mut x, 17);
        for (h0, h1) in orig.chunks(2).zip(x.chunks(2)) {
            let n0 = h0[0] * h0[0] + h0[1] * h0[1];
            let n1 = h1[0] * h1[0] + h1[1] * h1[1];
            assert!((n0 - n1).abs() < 1e-3);
        }
    }
}
