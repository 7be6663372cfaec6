//! `QueryTile`: attention for up to 16 queries that read the same KV head, one query per SIMD
//! lane. Queries are held transposed (one 16-lane vector per head dimension), so a score, a
//! softmax step or an output update for all 16 queries is one vector operation with the key or
//! value element broadcast — no horizontal sums — and each key and value row is read once for
//! all of them. Online softmax over chunks of at most 16 positions, in any order of chunks whose
//! positions increase.

/// Queries per tile (one per lane of a 512-bit f32 vector).
pub const LANES: usize = 16;

/// Positions per [`QueryTile::attend`] call.
pub const CHUNK: usize = 16;

type Lanes = [f32; LANES];

/// The running state of up to [`LANES`] queries of head size `hd`.
#[derive(Debug, Clone)]
pub struct QueryTile {
    hd: usize,
    /// `qt[d][lane]`: query `lane`'s element `d`, already scaled.
    qt: Vec<Lanes>,
    /// `acc[d][lane]`: unnormalized output of query `lane`.
    acc: Vec<Lanes>,
    max: Lanes,
    sum: Lanes,
    /// Query `lane` sees positions `< limit[lane]` (0 for unused lanes).
    limit: [usize; LANES],
}

impl QueryTile {
    /// An empty tile for head size `hd`.
    pub fn new(hd: usize) -> QueryTile {
        QueryTile {
            hd,
            qt: vec![[0.0; LANES]; hd],
            acc: vec![[0.0; LANES]; hd],
            max: [f32::NEG_INFINITY; LANES],
            sum: [0.0; LANES],
            limit: [0; LANES],
        }
    }

    /// The head size the tile was made for.
    pub fn head_dim(&self) -> usize {
        self.hd
    }

    /// Starts over with `queries` (at most [`LANES`], each `hd` long; query `i` multiplied by
    /// `scale` and seeing positions `< limits[i]`). Panics on more than [`LANES`] queries or
    /// a query of the wrong length (caller bugs).
    pub fn reset<'a>(&mut self, queries: impl IntoIterator<Item = (&'a [f32], usize)>, scale: f32) {
        for row in self.qt.iter_mut().chain(self.acc.iter_mut()) {
            *row = [0.0; LANES];
        }
        self.max = [f32::NEG_INFINITY; LANES];
        self.sum = [0.0; LANES];
        self.limit = [0; LANES];
        for (lane, (q, limit)) in queries.into_iter().enumerate() {
            assert!(
                lane < LANES && q.len() == self.hd,
                "QueryTile::reset: bad query"
            );
            for (row, &v) in self.qt.iter_mut().zip(q) {
                row[lane] = v * scale;
            }
            self.limit[lane] = limit;
        }
    }

    /// Attends over positions `pos0..pos0 + n` (`n ≤ CHUNK`) whose keys and values are rows of
    /// `hd` values in `k` and `v` (`n * hd` each). With `round_weights` the softmax weights are
    /// rounded to f16 before they meet the values (as with an f16 cache).
    pub fn attend(&mut self, pos0: usize, k: &[f32], v: &[f32], round_weights: bool) {
        let n = (k.len() / self.hd.max(1))
            .min(v.len() / self.hd.max(1))
            .min(CHUNK);
        if n == 0 {
            return;
        }
        super::dispatch_fma!(
            attend_body::<false>(self, pos0, n, k, v, round_weights),
            x86::attend_avx2,
            x86::attend_avx512,
            (self, pos0, n, k, v, round_weights)
        )
    }

    /// Writes query `lane`'s normalized output (`hd` values) for every lane `< n` via `out`.
    pub fn finish(&self, n: usize, mut out: impl FnMut(usize, &mut dyn Iterator<Item = f32>)) {
        for lane in 0..n.min(LANES) {
            let s = self.sum[lane];
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            out(lane, &mut self.acc.iter().map(|row| row[lane] * inv));
        }
    }
}

#[inline(always)]
fn fma<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn attend_body<const FUSED: bool>(
    t: &mut QueryTile,
    pos0: usize,
    n: usize,
    k: &[f32],
    v: &[f32],
    round_weights: bool,
) {
    let hd = t.hd;
    // Scores, one lane per query; masked positions are −∞.
    let mut s = [[0f32; LANES]; CHUNK];
    for (j, sj) in s.iter_mut().enumerate().take(n) {
        let krow = &k[j * hd..(j + 1) * hd];
        // Four interleaved partial sums over the head dimension: shorter rounding chains
        // (and FMA latency chains) than one running sum.
        let (mut a0, mut a1, mut a2, mut a3) =
            ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let mut qs = t.qt.chunks_exact(4);
        let mut ks = krow.chunks_exact(4);
        for (q, kv) in (&mut qs).zip(&mut ks) {
            for l in 0..LANES {
                a0[l] = fma::<FUSED>(q[0][l], kv[0], a0[l]);
                a1[l] = fma::<FUSED>(q[1][l], kv[1], a1[l]);
                a2[l] = fma::<FUSED>(q[2][l], kv[2], a2[l]);
                a3[l] = fma::<FUSED>(q[3][l], kv[3], a3[l]);
            }
        }
        for (q, &kv) in qs.remainder().iter().zip(ks.remainder()) {
            for l in 0..LANES {
                a0[l] = fma::<FUSED>(q[l], kv, a0[l]);
            }
        }
        let mut a = [0f32; LANES];
        for l in 0..LANES {
            a[l] = (a0[l] + a1[l]) + (a2[l] + a3[l]);
        }
        for l in 0..LANES {
            sj[l] = if pos0 + j < t.limit[l] {
                a[l]
            } else {
                f32::NEG_INFINITY
            };
        }
    }
    let mut new_max = t.max;
    for sj in &s[..n] {
        for l in 0..LANES {
            new_max[l] = new_max[l].max(sj[l]);
        }
    }
    // Rescale what was accumulated under the old maximum (a lane with nothing visible yet has
    // zero accumulators and keeps factor 1).
    let mut factor = [1f32; LANES];
    let mut rescale = false;
    for l in 0..LANES {
        if new_max[l] > t.max[l] && t.max[l] != f32::NEG_INFINITY {
            factor[l] = super::exp::exp_fast(t.max[l] - new_max[l]);
            rescale = true;
        }
    }
    if rescale {
        for row in t.acc.iter_mut() {
            for l in 0..LANES {
                row[l] *= factor[l];
            }
        }
    }
    let mut p = [[0f32; LANES]; CHUNK];
    let mut sum = [0f32; LANES];
    for l in 0..LANES {
        sum[l] = t.sum[l] * factor[l];
    }
    for (pj, sj) in p.iter_mut().zip(&s).take(n) {
        for l in 0..LANES {
            pj[l] = if sj[l] == f32::NEG_INFINITY {
                0.0
            } else {
                super::exp::exp_fast(sj[l] - new_max[l])
            };
            sum[l] += pj[l];
        }
    }
    t.max = new_max;
    t.sum = sum;
    if round_weights {
        super::round_to_f16_in_place(p[..n].as_flattened_mut());
    }
    // The chunk's weighted values are summed on their own, then added to the running output.
    for (d, row) in t.acc.iter_mut().enumerate() {
        let mut o = [0f32; LANES];
        for (j, pj) in p.iter().enumerate().take(n) {
            let vv = v[j * hd + d];
            for l in 0..LANES {
                o[l] = fma::<FUSED>(pj[l], vv, o[l]);
            }
        }
        for l in 0..LANES {
            row[l] += o[l];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QueryTile;

    #[target_feature(enable = "avx2,fma")]
    pub fn attend_avx2(t: &mut QueryTile, pos0: usize, n: usize, k: &[f32], v: &[f32], r: bool) {
        super::attend_body::<true>(t, pos0, n, k, v, r)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub fn attend_avx512(t: &mut QueryTile, pos0: usize, n: usize, k: &[f32], v: &[f32], r: bool) {
        super::attend_body::<true>(t, pos0, n, k, v, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-pass softmax attention in f64 for one query over positions `< limit`.
    fn naive(
        q: &[f32],
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        limit: usize,
        scale: f32,
    ) -> Vec<f64> {
        let s: Vec<f64> = keys[..limit]
            .iter()
            .map(|k| {
                q.iter()
                    .zip(k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..q.len())
            .map(|d| {
                e.iter()
                    .zip(values)
                    .map(|(w, v)| w * v[d] as f64)
                    .sum::<f64>()
                    / z
            })
            .collect()
    }

    #[test]
    fn tile_matches_naive_with_ragged_limits_and_chunks() {
        let hd = 24;
        let val = |i: usize, salt: f32| ((i as f32) * 0.37 + salt).sin();
        let n_pos = 53;
        let keys: Vec<Vec<f32>> = (0..n_pos)
            .map(|p| (0..hd).map(|d| val(p * 31 + d, 0.5) * 3.0).collect())
            .collect();
        let values: Vec<Vec<f32>> = (0..n_pos)
            .map(|p| (0..hd).map(|d| val(p * 17 + d, 1.5)).collect())
            .collect();
        let queries: Vec<Vec<f32>> = (0..13)
            .map(|i| (0..hd).map(|d| val(i * 7 + d, 2.5)).collect())
            .collect();
        // Causal limits of a prefill tile, plus a query that sees a single position.
        let limits: Vec<usize> = (0..13).map(|i| if i == 12 { 1 } else { 41 + i }).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut tile = QueryTile::new(hd);
        tile.reset(
            queries
                .iter()
                .map(|q| q.as_slice())
                .zip(limits.iter().copied()),
            scale,
        );
        // Uneven chunks: 16, 5, 16, 16.
        let mut p0 = 0;
        for n in [16, 5, 16, 16] {
            let k: Vec<f32> = keys[p0..p0 + n].concat();
            let v: Vec<f32> = values[p0..p0 + n].concat();
            tile.attend(p0, &k, &v, false);
            p0 += n;
        }
        let mut outs = vec![Vec::new(); 13];
        tile.finish(13, |lane, it| outs[lane] = it.collect());
        for (i, q) in queries.iter().enumerate() {
            let want = naive(q, &keys, &values, limits[i], scale);
            for (g, w) in outs[i].iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 2e-5, "query {i}: {g} vs {w}");
            }
        }
    }
}
